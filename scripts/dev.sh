#!/usr/bin/env bash
# The whole API on one machine: private PostgreSQL and Redis, migrations, and the
# local server mounting every function's router. Ctrl-C stops what this started.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

PG_PORT="${PG_PORT:-55432}"
REDIS_PORT="${REDIS_PORT:-56379}"
API_PORT="${API_PORT:-3000}"

ensure_packages
trap stop_started EXIT
trap 'exit 130' INT TERM

STATE="$(state_dir dev)"
start_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"

psql_admin() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'chatroom'")" != "1" ]; then
    psql_admin -c "CREATE DATABASE chatroom" >/dev/null
fi

# A dev-only JWT secret, generated once and kept in the git-ignored state folder.
SECRET_FILE="$ROOT/.local/dev-jwt-secret"
mkdir -p "$ROOT/.local"
[ -s "$SECRET_FILE" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' >"$SECRET_FILE"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/chatroom}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/}"
export JWT_SECRET_KEY="${JWT_SECRET_KEY:-$(cat "$SECRET_FILE")}"
export OTP_DELIVERY="${OTP_DELIVERY:-response}"
export LOCAL_ADDR="127.0.0.1:$API_PORT"

log "settings (local defaults; override any by environment):"
log "  DATABASE_URL=$DATABASE_URL"
log "  REDIS_URL=$REDIS_URL"
log "  JWT_SECRET_KEY=<dev secret in .local/dev-jwt-secret>"
log "  OTP_DELIVERY=$OTP_DELIVERY (codes are returned in responses: local use only)"
log "  API on http://$LOCAL_ADDR"

cargo build -q -p local-server --bin local-server
"$ROOT/target/debug/local-server" &
SERVER=$!
STARTED_PIDS+=("$SERVER")
wait "$SERVER"
