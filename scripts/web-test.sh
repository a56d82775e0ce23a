#!/usr/bin/env bash
# The web client in a real headless Chromium (Debian's chromium package, driven by npm
# playwright-core) against the local server, whose Gemini is a local fake with delays.
# Run by scripts/test.sh (which provides TEST_DATABASE_URL and TEST_REDIS_URL); on its own
# (`make test-web`) it starts a private PostgreSQL and Redis first.
# Screenshots go to the git-ignored tests/web/screenshots/; WEB_TEST_README_SHOT=docs/web-chat.png
# also refreshes the README's.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

ensure_packages browser
ensure_npm_tools

if [ -z "${TEST_DATABASE_URL:-}" ]; then
    trap stop_started EXIT
    trap 'exit 130' INT TERM
    STATE="$(state_dir web)"
    fresh_postgres "$STATE/pg" "${WEB_PG_PORT:-55434}"
    start_redis "$STATE" "${WEB_REDIS_PORT:-56381}"
    TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${WEB_PG_PORT:-55434}/postgres"
    TEST_REDIS_URL="redis://127.0.0.1:${WEB_REDIS_PORT:-56381}/"
fi

STATE="$(state_dir web)"
DB="web_$$"
psql "$TEST_DATABASE_URL" -qtA -c "CREATE DATABASE $DB" >/dev/null

# The same debug build scripts/fuzz.sh uses: built once per run. A private copy, since a
# shared CARGO_TARGET_DIR may be rebuilt by another checkout meanwhile.
cargo build -q --workspace --bin local-server
cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/local-server" "$STATE/local-server"

PORT="${WEB_TEST_PORT:-55093}"
port_busy "$PORT" && die "port $PORT is taken; set WEB_TEST_PORT"
log "browser tests: headless $(/usr/bin/chromium --version 2>/dev/null | head -1) against 127.0.0.1:$PORT"
WEB_TEST_SERVER="$STATE/local-server" \
WEB_TEST_DATABASE_URL="${TEST_DATABASE_URL%/*}/$DB" \
WEB_TEST_REDIS_URL="$TEST_REDIS_URL" \
WEB_TEST_PORT="$PORT" \
WEB_TEST_DIR="$ROOT/web" \
WEB_TEST_SCREENSHOTS="$ROOT/tests/web/screenshots" \
    node --test --test-concurrency=1 --test-reporter=spec tests/web/web.test.mjs tests/web/deploy-web.test.mjs
