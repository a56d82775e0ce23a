#!/usr/bin/env bash
# The whole API on one machine: private PostgreSQL and Redis, migrations, and the
# local server mounting every function's router, with the reply worker in-process.
# Ctrl-C stops what this started.
set -euo pipefail
source "$(dirname "$0")/dev-env.sh"

API_PORT="${API_PORT:-3000}"
export LOCAL_ADDR="127.0.0.1:$API_PORT"
URL="http://$LOCAL_ADDR/"
port_busy "$API_PORT" && die "port $API_PORT is taken by another program; set API_PORT to a free port"

# Cargo's own progress lines, not silence: the first build on a fresh machine takes minutes.
log "building the local server (the first build takes a few minutes; later ones seconds)"
cargo build -p local-server --bin local-server
"${CARGO_TARGET_DIR:-$ROOT/target}/debug/local-server" &
SERVER=$!
STARTED_PIDS+=("$SERVER")

# The URL only once the server answers (migrations run first).
for _ in $(seq 600); do
    kill -0 "$SERVER" 2>/dev/null || die "the local server stopped during start-up (see its log above)"
    curl -sf -o /dev/null "${URL}config.json" && break
    sleep 0.1
done
curl -sf -o /dev/null "${URL}config.json" || die "the local server did not answer on $URL"
log "ready: open $URL in a browser (the web client; the API answers on the same address). Ctrl-C stops everything."
wait "$SERVER"
