#!/usr/bin/env bash
# `make soak`: a few minutes of concurrent users against the local server and its worker,
# then the invariants. Not part of `make test`. Usage: SOAK_SECONDS=120 SOAK_USERS=40 make soak
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

PG_PORT="${SOAK_PG_PORT:-55434}"
REDIS_PORT="${SOAK_REDIS_PORT:-56381}"
PORT="${SOAK_PORT:-55094}"

ensure_packages
trap stop_started EXIT
trap 'exit 130' INT TERM
STATE="$(state_dir soak)"
fresh_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA -c "CREATE DATABASE soak" >/dev/null

cargo build -q --release -p local-server --bin local-server
cargo build -q --release -p api-tests --bin soak
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/soak"
export STRIPE_WEBHOOK_SECRET="whsec_soak_$$"
port_busy "$PORT" && die "port $PORT is taken; set SOAK_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" JWT_SECRET_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')" \
    OTP_DELIVERY=response OTP_MIN_INTERVAL_SECONDS=0 DB_POOL_SIZE=8 LOCAL_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
    "$ROOT/target/release/local-server" >"$STATE/server.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 100); do port_busy "$PORT" && break; sleep 0.1; done

SOAK_BASE="http://127.0.0.1:$PORT" "$ROOT/target/release/soak"
