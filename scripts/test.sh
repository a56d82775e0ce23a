#!/usr/bin/env bash
# Runs the whole test suite against real services it starts (and stops) itself, and prints
# each step's duration at the end.
# Usage: scripts/test.sh [cargo test arguments]
#   With arguments: those tests only (PostgreSQL, Redis and moto started; no fuzzing,
#   browser, release build or emulator deploy).
#
# The order is chosen for a fresh 2-core machine: one apt-get run; the debug build of the
# tests while the Python and npm tools download; the one release build (`sam build`) at the
# lowest CPU priority while the tests run, since they mostly wait on PostgreSQL, Redis, the
# browser and timers; then what needs that build: sam-check and the emulator deploy.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

PG_PORT="${TEST_PG_PORT:-55433}"
REDIS_PORT="${TEST_REDIS_PORT:-56380}"
MOTO_PORT="${TEST_MOTO_PORT:-55001}"
# What starts after the tests have opened and closed thousands of connections listens
# below 32768, outside Linux's ephemeral range (32768-60999): a test's client socket once
# held 55110 as its own port when the cluster's first node tried to bind it.
CLUSTER_PORT="${TEST_REDIS_CLUSTER_PORT:-21110}"
FULL=0
[ $# -eq 0 ] && FULL=1
STATE="$(state_dir test)"
OWN_TIMES=0
if [ -z "${STEP_TIMES:-}" ]; then
    export STEP_TIMES="$STATE/step-times.tsv"
    : >"$STEP_TIMES"
    OWN_TIMES=1
fi
BACKGROUND=()
stop_background() {
    local pid
    for pid in "${BACKGROUND[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
}
trap 'stop_background; stop_started' EXIT
trap 'exit 130' INT TERM

# wait_job PID LOG WHAT: waits for a background job; on failure shows its log and stops.
wait_job() {
    wait "$1" || { tail -60 "$2" >&2; die "$3 failed (log: $2)"; }
}

# 1. Packages, the test build and the tools.
if [ "$FULL" = 1 ]; then timed "apt packages" ensure_packages browser; else timed "apt packages" ensure_packages; fi
log "compiling the tests (debug) while the tools install"
setsid cargo test --workspace --no-run >"$STATE/test-build.log" 2>&1 &
TEST_BUILD=$!
BACKGROUND+=("$TEST_BUILD")
install_tools() {
    local pids=() pid
    ensure_moto & pids+=($!)
    ensure_tools & pids+=($!)
    if [ "$FULL" = 1 ]; then
        ensure_schemathesis & pids+=($!)
        ensure_checkov & pids+=($!)
        ensure_ministack & pids+=($!)
        ensure_npm_tools & pids+=($!)
    fi
    for pid in "${pids[@]}"; do wait "$pid" || die "installing the test tools failed"; done
}
timed "Python and npm tools (beside the test build)" install_tools
ensure_tools # PATH (the install above ran in a subshell)

# 2. Static checks (while the build goes on).
static_checks() {
    log "linting template.yaml (cfn-lint, sam validate --lint)"
    cfn-lint template.yaml
    SAM_CLI_TELEMETRY=0 sam validate --lint --template template.yaml >/dev/null
    # The template against the code: per-function builds, quota features, CORS, metric
    # names, worker concurrency, the sam local env file, events/.
    "$ROOT/.local/venv-tools/bin/python" scripts/check_template.py >/dev/null \
        || { "$ROOT/.local/venv-tools/bin/python" scripts/check_template.py | grep -v '^ok'; die "template checks failed"; }
    # What AWS really gets: the template through SAM's translator (CORS block, routes).
    "$ROOT/.local/venv-tools/bin/python" scripts/check_sam_translation.py "$STATE/translated.json" >"$STATE/translation.log" \
        || { grep -v '^ok' "$STATE/translation.log"; die "SAM translation checks failed"; }
    # Every relative link and #anchor in README.md and docs/*.md resolves.
    python3 scripts/check_links.py || die "broken links in README.md or docs/"
    if [ -f scripts/check_imports.py ]; then
        python3 scripts/check_imports.py || die "import cycles in shared/src"
    fi
    if [ "$FULL" = 1 ]; then
        policy_check
    fi
}
# checkov over the translated template: no failure beyond the skips scripts/checkov.yaml
# justifies; prints which checks ran.
policy_check() {
    local out="$STATE/checkov.json"
    "$ROOT/.local/venv-checkov/bin/checkov" --config-file scripts/checkov.yaml -f "$STATE/translated.json" \
        -o json >"$out" 2>"$STATE/checkov.err" || true
    jq -e '.summary.failed == 0 and .summary.passed > 0' "$out" >/dev/null || {
        jq -r '.results.failed_checks[]? | "FAIL \(.check_id) \(.resource): \(.check_name)"' "$out" >&2
        tail -5 "$STATE/checkov.err" >&2
        die "policy check (checkov) failed"
    }
    log "policy check (checkov): $(jq -r '.summary.passed' "$out") passed, 0 failed; checks run: $(jq -r '[.results.passed_checks[].check_id] | unique | join(" ")' "$out")"
}
timed "static checks (template, SAM translation, policy, links, imports)" static_checks

# 3. Services. A fresh cluster every run: each test creates its own database in it.
# Small WAL: the suite's hundreds of test databases otherwise leave about 1 GB of it on disk.
PG_EXTRA_OPTS="-c max_wal_size=64MB -c min_wal_size=32MB" fresh_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"
start_moto "$STATE" "$MOTO_PORT"
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export RUST_LOG="${RUST_LOG:-warn}"
timed "test build (what remained after the tools)" wait_job "$TEST_BUILD" "$STATE/test-build.log" "the test build"

# 4. The one release build, in the background at the lowest priority. It locks
# target/release and target/<triple>/release, not target/debug, so the tests run beside it.
if [ "$FULL" = 1 ]; then
    log "sam build (release, x86_64) in the background (nice 19) while the tests run"
    SAM_STARTED=$(date +%s)
    rm -rf .aws-sam/build
    SAM_CLI_TELEMETRY=0 setsid nice -n 19 sam build --beta-features --no-cached --template template.yaml \
        --build-dir .aws-sam/build >"$STATE/sam-build.log" 2>&1 &
    SAM_BUILD=$!
    BACKGROUND+=("$SAM_BUILD")
fi

# 5. The tests.
timed "cargo test" cargo test --workspace "$@"

# The Redis-touching tests again (quota, cache, codes, throttles), against a Redis Cluster
# of three shards through the cluster client: every multi-key command and script must keep
# its keys in one slot (CROSSSLOT otherwise). `--workspace` as above, so nothing is rebuilt.
# With arguments, only when TEST_CLUSTER=1.
if [ "$FULL" = 1 ] || [ "${TEST_CLUSTER:-}" = 1 ]; then
    start_redis_cluster "$STATE/cluster" "$CLUSTER_PORT"
    TEST_REDIS_URL="redis://127.0.0.1:$CLUSTER_PORT/" TEST_REDIS_CLUSTER=true \
        timed "cargo test against a Redis Cluster" \
        cargo test --workspace --test api -- --include-ignored quota:: chat:: auth:: abuse:: cluster:: signin:: stream:: idempotency::
fi

if [ "$FULL" = 1 ]; then
    FUZZ_PORT="${TEST_FUZZ_PORT:-21092}" FUZZ_MAX_TIME="${FUZZ_MAX_TIME:-120}" timed "contract fuzzing (schemathesis)" bash scripts/fuzz.sh
    DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" LAMBDA_PORT="${TEST_LAMBDA_PORT:-21091}" \
        AWS_ENDPOINT="$TEST_AWS_ENDPOINT" \
        timed "cargo lambda watch smoke" bash scripts/lambda-smoke.sh
    # The web client in headless Chromium (reuses fuzz.sh's local-server build).
    WEB_TEST_PORT="${TEST_WEB_PORT:-21093}" timed "browser tests (headless Chromium)" bash scripts/web-test.sh

    # 6. What SAM deploys, from the one release build: sizes, start-up, EMF output; then
    # the stack deployed on the emulator and walked end to end (make smoke).
    timed "sam build (what remained after the tests)" wait_job "$SAM_BUILD" "$STATE/sam-build.log" "sam build"
    log "sam build took $(( $(date +%s) - SAM_STARTED )) s in all (beside the tests)"
    SAM_CHECK_REUSE=1 timed "sam-check (sizes, start-up, EMF of the built packages)" bash scripts/sam-check.sh
    EMULATOR_PORT="${TEST_EMULATOR_PORT:-21566}" EMULATOR_GEMINI_PORT="${TEST_EMULATOR_GEMINI_PORT:-21567}" \
        timed "emulator deploy and make smoke" bash scripts/emulator.sh
fi

# Everything passed: the cluster (one database per test, over 1 GB) has served its purpose;
# a failed run keeps it for inspection. The next run starts a fresh one either way.
stop_started
rm -rf "$STATE/pg"
[ "$OWN_TIMES" = 1 ] && print_times
log "tests passed"
