#!/usr/bin/env bash
# Runs the whole test suite against real services it starts (and stops) itself.
# Usage: scripts/test.sh [cargo test arguments]
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

PG_PORT="${TEST_PG_PORT:-55433}"
REDIS_PORT="${TEST_REDIS_PORT:-56380}"
MOTO_PORT="${TEST_MOTO_PORT:-55001}"
CLUSTER_PORT="${TEST_REDIS_CLUSTER_PORT:-55110}"

ensure_packages
ensure_moto
ensure_tools
ensure_schemathesis

log "linting template.yaml (cfn-lint, sam validate --lint)"
cfn-lint template.yaml
SAM_CLI_TELEMETRY=0 sam validate --lint --template template.yaml >/dev/null
# The template against the code: per-function builds, quota features, CORS, metric
# names, worker concurrency, the sam local env file, events/.
"$ROOT/.local/venv-tools/bin/python" scripts/check_template.py >/dev/null \
    || { "$ROOT/.local/venv-tools/bin/python" scripts/check_template.py | grep -v '^ok'; die "template checks failed"; }
# No import circles between the files of shared/src (a module and its own children aside).
python3 scripts/check_imports.py || die "import cycles in shared/src"
# Every relative link and #anchor in README.md and docs/*.md resolves.
python3 scripts/check_links.py || die "broken links in README.md or docs/"
trap stop_started EXIT
trap 'exit 130' INT TERM

# A fresh cluster every run: each test creates its own database in it.
STATE="$(state_dir test)"
# Small WAL: the suite's hundreds of test databases otherwise leave about 1 GB of it on disk.
PG_EXTRA_OPTS="-c max_wal_size=64MB -c min_wal_size=32MB" fresh_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"
start_moto "$STATE" "$MOTO_PORT"

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export RUST_LOG="${RUST_LOG:-warn}"

cargo test --workspace "$@"

# The Redis-touching tests again (quota, cache, codes, throttles), against a Redis Cluster
# of three shards through the cluster client: every multi-key command and script must keep
# its keys in one slot (CROSSSLOT otherwise). `--workspace` as above, so nothing is rebuilt.
# With arguments, only when TEST_CLUSTER=1.
if [ $# -eq 0 ] || [ "${TEST_CLUSTER:-}" = 1 ]; then
    start_redis_cluster "$STATE/cluster" "$CLUSTER_PORT"
    TEST_REDIS_URL="redis://127.0.0.1:$CLUSTER_PORT/" TEST_REDIS_CLUSTER=true \
        cargo test --workspace --test api -- --include-ignored quota:: chat:: auth:: abuse:: cluster:: signin:: stream:: idempotency::
fi

# With arguments (a subset of tests) the contract fuzzing and emulator smoke are skipped.
if [ $# -eq 0 ]; then
    FUZZ_MAX_TIME="${FUZZ_MAX_TIME:-120}" bash scripts/fuzz.sh
    DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" LAMBDA_PORT="${TEST_LAMBDA_PORT:-55091}" \
        AWS_ENDPOINT="$TEST_AWS_ENDPOINT" \
        bash scripts/lambda-smoke.sh
    # The web client in headless Chromium (reuses fuzz.sh's local-server build).
    WEB_TEST_PORT="${TEST_WEB_PORT:-55093}" bash scripts/web-test.sh
    # What SAM deploys: sam build (release, once), sizes, start-up, EMF output.
    bash scripts/sam-check.sh
fi

# Everything passed: the cluster (one database per test, over 1 GB) has served its purpose;
# a failed run keeps it for inspection. The next run starts a fresh one either way.
stop_started
rm -rf "$STATE/pg"
log "tests passed"
