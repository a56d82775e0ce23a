#!/usr/bin/env bash
# Contract fuzzing: schemathesis drives the local server (every route group) from the
# OpenAPI document with a valid token: no 5xx, every answer matches the document, bad
# input gets a 4xx with the JSON error envelope. Bounded in examples and time.
# Expects the test services (scripts/test.sh provides TEST_DATABASE_URL, TEST_REDIS_URL).
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_schemathesis

PORT="${FUZZ_PORT:-55092}"
BASE="http://127.0.0.1:$PORT"
ADMIN_URL="${TEST_DATABASE_URL:?}"
DB_URL="${ADMIN_URL%/*}/fuzz_$$"
psql "$ADMIN_URL" -qtA -c "CREATE DATABASE fuzz_$$" >/dev/null

# --workspace: the features the test build resolved (cargo test --workspace), so nothing
# recompiles; `-p local-server` alone resolves others and rebuilds most of the tree.
cargo build -q --workspace --bin local-server
port_busy "$PORT" && die "port $PORT is taken; set FUZZ_PORT"
# One client from one address: per-IP throttles (tested in signin.rs) are off, or most
# auth calls would be 429s and the logic behind them untested.
DATABASE_URL="$DB_URL" REDIS_URL="${TEST_REDIS_URL:?}" REDIS_KEY_PREFIX="fuzz$$:" \
    JWT_SECRET_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')" OTP_DELIVERY=response \
    STRIPE_WEBHOOK_SECRET=whsec_fuzz STRIPE_API_KEY=sk_test_fuzz STRIPE_PRO_PRICE_ID=price_fuzz \
    STRIPE_API_BASE=http://127.0.0.1:9/ LOCAL_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
    IP_SIGNUPS_PER_HOUR=0 IP_CODE_REQUESTS_PER_HOUR=0 IP_SIGN_IN_ATTEMPTS_PER_HOUR=0 \
    "$ROOT/target/debug/local-server" >"$(state_dir fuzz)/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do port_busy "$PORT" && break; sleep 0.1; done

json() { curl -sf -X POST "$BASE$1" -H 'content-type: application/json' -d "$2"; }
EMAIL="fuzz-$$@example.com"
# With a password set, change-password needs it, so the fuzzer cannot revoke its own token
# (the password is kept by sending it with the first code).
PASSWORD="$(head -c 24 /dev/urandom | base64)"
json /auth/signup "{\"email\": \"$EMAIL\", \"password\": \"$PASSWORD\"}" >/dev/null
OTP="$(json /auth/send-otp "{\"email\": \"$EMAIL\"}" | jq -r .otp)"
TOKEN="$(json /auth/verify-otp "{\"email\": \"$EMAIL\", \"otp\": \"$OTP\", \"password\": \"$PASSWORD\"}" | jq -r .access_token)"
# Pro, so that the daily cap does not turn most sends into 429s (and Checkout answers 409
# without calling Stripe, which this run does not fake).
psql "$DB_URL" -qtA -c "UPDATE users SET tier = 'pro'" >/dev/null

# /auth/logout is left out: it would revoke the fuzzer's own token (tests cover it).
log "schemathesis against $BASE (bounded: ${FUZZ_MAX_EXAMPLES:-25} examples per operation, ${FUZZ_MAX_TIME:-240} s)"
"$ROOT/.local/venv-fuzz/bin/schemathesis" run "$BASE/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks all \
    --exclude-checks positive_data_acceptance,ensure_resource_availability \
    --phases examples,fuzzing \
    --max-examples "${FUZZ_MAX_EXAMPLES:-25}" \
    --max-time "${FUZZ_MAX_TIME:-240}" \
    --request-timeout 30 \
    --workers 2 \
    --seed "${FUZZ_SEED:-20261125}" \
    --exclude-path /auth/logout \
    --no-color
