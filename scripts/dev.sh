#!/usr/bin/env bash
# The whole API on one machine: private PostgreSQL and Redis, migrations, and the
# local server mounting every function's router, with the reply worker in-process.
# Ctrl-C stops what this started.
set -euo pipefail
source "$(dirname "$0")/dev-env.sh"

API_PORT="${API_PORT:-3000}"
export LOCAL_ADDR="127.0.0.1:$API_PORT"
log "  API on http://$LOCAL_ADDR"

cargo build -q -p local-server --bin local-server
"$ROOT/target/debug/local-server" &
SERVER=$!
STARTED_PIDS+=("$SERVER")
wait "$SERVER"
