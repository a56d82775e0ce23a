#!/usr/bin/env bash
# `make bench` (full: release packages, long runs) or `make bench-quick` (debug build,
# short runs: proves the suite works, judges nothing; with BENCH_PACKAGES=.aws-sam/build,
# as in CI, the functions are the release packages `sam build` made instead). Starts its own PostgreSQL, Redis
# and local server, prints one table and writes bench/results/latest.json.
# BENCH_ONLY=deletion (a comma list of cold, startup, warm, sustained, worker, live, growth, deletion, search, floor, sizes) runs
# only those parts and replaces only their figures.
set -euo pipefail
source "$(dirname "$0")/../scripts/services.sh"
cd "$ROOT"

QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
PG_PORT="${BENCH_PG_PORT:-55435}"
REDIS_PORT="${BENCH_REDIS_PORT:-56382}"
PORT="${BENCH_PORT:-55095}"
FUNCTIONS="auth user chatroom subscription stripe-webhook reply-worker"

ensure_packages
command -v wrk >/dev/null || apt_install wrk
trap stop_started EXIT
trap 'exit 130' INT TERM

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$(state_dir bench)/bin"
mkdir -p "$BIN_DIR"
if [ -n "$QUICK" ] && [ -n "${BENCH_PACKAGES:-}" ]; then
    # CI (.ci/run): the functions as `sam build` built them in this run (its one release
    # build of each function, in BENCH_PACKAGES/<Function>/bootstrap); the local server and
    # the bench in debug with the features the test build resolved (--workspace: nothing recompiles).
    PACKAGES="$BENCH_PACKAGES"
    [[ "$PACKAGES" = /* ]] || PACKAGES="$ROOT/$PACKAGES"
    [ -d "$PACKAGES" ] || die "BENCH_PACKAGES=$BENCH_PACKAGES is not a sam build directory"
    cargo build -q --workspace --bin local-server --bin bench --bin hello
    PROFILE=debug
    while read -r logical binary; do
        case " $FUNCTIONS " in *" $binary "*) ln -sf "$PACKAGES/$logical/bootstrap" "$BIN_DIR/$binary" ;; esac
    done < <(awk '/^  [A-Za-z]+Function:$/ {f=$1; sub(":", "", f)} /Binary: / {print f, $2}' template.yaml)
    for f in $FUNCTIONS; do [ -x "$BIN_DIR/$f" ] || die "no $f bootstrap in $BENCH_PACKAGES"; done
    ln -sf "$TARGET/debug/hello" "$BIN_DIR/hello"
elif [ -n "$QUICK" ] || [ "${BENCH_PROFILE:-}" = debug ]; then
    # BENCH_PROFILE=debug: full sizes on a debug build (for figures bound by PostgreSQL,
    # e.g. BENCH_ONLY=deletion, when a release build is not worth its time; noted).
    cargo build -q $(for f in $FUNCTIONS; do printf -- '-p %s-fn ' "$f"; done) -p bench -p local-server --bins
    PROFILE=debug
    for f in $FUNCTIONS hello; do ln -sf "$TARGET/debug/$f" "$BIN_DIR/$f"; done
elif [ -n "${BENCH_ONLY:-}" ] && ! grep -qE '(^|,)(cold|sizes)(,|$)' <<<"$BENCH_ONLY"; then
    # A partial run without cold starts or sizes needs no Lambda packages.
    PROFILE=release
    if [ -n "${BENCH_PERF_DIR:-}" ]; then
        # bench/profile.sh: the server is the same release code with its symbols, for perf.
        cargo build -q --release -p bench --bins
        cargo build -q --profile profiling -p local-server --bin local-server
        SERVER_PROFILE=profiling
    else
        cargo build -q --release -p bench -p local-server --bins
    fi
else
    # Both architectures' sizes are reported; BENCH_ARCHES=x86_64 skips the arm64 build
    # (a second release build of every function).
    bash scripts/package.sh "${BENCH_ARCHES:-both}"
    cargo build -q --release -p bench -p local-server --bins
    PROFILE=release
    # Measure exactly what ships: the bootstrap inside each function's zip.
    for f in $FUNCTIONS; do
        unzip -o -q "$TARGET/lambda/$f/bootstrap.zip" bootstrap -d "$BIN_DIR/$f.pkg"
        ln -sf "$BIN_DIR/$f.pkg/bootstrap" "$BIN_DIR/$f"
    done
    for f in $FUNCTIONS stream; do
        zip="$TARGET/lambda-arm64/$f/bootstrap.zip"
        if [ -f "$zip" ] && [ "${BENCH_ARCHES:-both}" = both ]; then
            unzip -o -q "$zip" bootstrap -d "$BIN_DIR/$f.arm64"
        else
            rm -rf "$BIN_DIR/$f.arm64"
        fi
    done
    unzip -o -q "$TARGET/lambda/stream/bootstrap.zip" bootstrap -d "$BIN_DIR/stream.pkg"
    ln -sf "$TARGET/release/hello" "$BIN_DIR/hello"
fi
# Copies, so that another build into a shared target directory cannot swap them mid-run.
cp "$TARGET/${SERVER_PROFILE:-$PROFILE}/local-server" "$BIN_DIR/local-server.run"
cp "$TARGET/$PROFILE/bench" "$BIN_DIR/bench.run"

STATE="$(state_dir bench)"
# BENCH_PG_SHARED_BUFFERS sizes PostgreSQL's buffer cache (its own default is 128MB).
# pg_stat_statements counts the warm routes' statements (bench/src/statements.rs); it
# tracks nothing outside those counted runs.
PG_EXTRA_OPTS="-c shared_buffers=${BENCH_PG_SHARED_BUFFERS:-128MB} -c shared_preload_libraries=pg_stat_statements" \
    fresh_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA -c "CREATE DATABASE bench" >/dev/null

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export JWT_SECRET_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
export STRIPE_WEBHOOK_SECRET="whsec_bench_$$"
port_busy "$PORT" && die "port $PORT is taken; set BENCH_PORT"
# BENCH_RUST_LOG=info measures at the functions' deployed log level (template.yaml).
# The merged local server stands in for the HTTP functions under load; a larger pool
# than a Lambda container's, since one process serves all 50 connections here.
# STREAMS_PER_USER=0: the live-reply part holds hundreds of streams for one bench user;
# the per-account cap (5) is a product rule, tested in tests/tests/api/stream.rs.
REDIS_KEY_PREFIX="bench:" OTP_DELIVERY=log DB_POOL_SIZE=8 STREAMS_PER_USER=0 LOCAL_ADDR="127.0.0.1:$PORT" RUST_LOG="${BENCH_RUST_LOG:-error}" \
    "$BIN_DIR/local-server.run" >"$STATE/server.log" 2>&1 &
SERVER_PID=$!
STARTED_PIDS+=("$SERVER_PID")
for _ in $(seq 100); do port_busy "$PORT" && break; sleep 0.1; done

BENCH_SERVER_PID="$SERVER_PID" BENCH_BIN_DIR="$BIN_DIR" BENCH_BASE="http://127.0.0.1:$PORT" "$BIN_DIR/bench.run" $QUICK
