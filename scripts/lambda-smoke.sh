#!/usr/bin/env bash
# Smoke test of `cargo lambda watch`: the Lambda emulator serves the HTTP functions on
# one port through the workspace router, and each answers one of its routes.
# Expects DATABASE_URL / REDIS_URL of running services (scripts/test.sh provides them),
# and optionally AWS_ENDPOINT (moto) to serve them through Secrets Manager.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_tools

PORT="${LAMBDA_PORT:-55090}"
ENV_FILE="$(state_dir smoke)/lambda.env"
JWT_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')"

# A database of its own with the schema applied: signup and send-otp below write to it.
: "${DATABASE_URL:?}"
SMOKE_DB="smoke_$$"
psql "$DATABASE_URL" -qtA -c "CREATE DATABASE $SMOKE_DB" >/dev/null
DATABASE_URL="${DATABASE_URL%/*}/$SMOKE_DB"
for f in $(ls migrations/V*.sql | sort -V); do psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done

# With AWS_ENDPOINT (moto; scripts/test.sh passes it) the functions cold-start as deployed:
# their secrets come from Secrets Manager, and the environment holds only the ARNs.
# create_secret NAME VALUE: prints the new secret's ARN.
create_secret() {
    curl -sf -X POST "$AWS_ENDPOINT/" -H 'X-Amz-Target: secretsmanager.CreateSecret' \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0' \
        -d "$(jq -nc --arg n "smoke/$(date +%s%N)/$1" --arg v "$2" '{Name: $n, SecretString: $v}')" | jq -r .ARN
}
if [ -n "${AWS_ENDPOINT:-}" ]; then
    cat >"$ENV_FILE" <<ENV
DATABASE_URL_SECRET_ARN=$(create_secret database-url "${DATABASE_URL:?}")
REDIS_URL_SECRET_ARN=$(create_secret redis-url "${REDIS_URL:?}")
JWT_SECRET_KEY_SECRET_ARN=$(create_secret jwt "$JWT_KEY")
STRIPE_WEBHOOK_SECRET_SECRET_ARN=$(create_secret stripe-webhook whsec_smoke_test)
GOOGLE_API_KEY_SECRET_ARN=$(create_secret gemini smoke-test-key)
AWS_ENDPOINT_URL=$AWS_ENDPOINT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
ENV
    log "secrets in Secrets Manager (moto); the functions get only their ARNs"
else
    cat >"$ENV_FILE" <<ENV
DATABASE_URL=${DATABASE_URL:?}
REDIS_URL=${REDIS_URL:?}
JWT_SECRET_KEY=$JWT_KEY
STRIPE_WEBHOOK_SECRET=whsec_smoke_test
GOOGLE_API_KEY=smoke-test-key
ENV
fi
cat >>"$ENV_FILE" <<ENV
OTP_DELIVERY=log
OTP_HASH_KEY=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
# The test stores are plaintext; a deployed function refuses them (TLS required).
ALLOW_PLAINTEXT_STORES=true
GEMINI_BASE_URL=http://127.0.0.1:9
RUST_LOG=warn
ENV

port_busy "$PORT" && die "port $PORT is taken; set LAMBDA_PORT"
log "starting cargo lambda watch on 127.0.0.1:$PORT"
# The URLs must reach the functions only through Secrets Manager (setting both is refused).
if [ -n "${AWS_ENDPOINT:-}" ]; then unset DATABASE_URL REDIS_URL; fi
setsid cargo lambda watch --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$PORT" \
    --env-file "$ENV_FILE" >"$(dirname "$ENV_FILE")/watch.log" 2>&1 &
WATCH=$!
trap 'kill -- -$WATCH 2>/dev/null || true; wait $WATCH 2>/dev/null || true' EXIT

for _ in $(seq 600); do
    port_busy "$PORT" && break
    sleep 0.5
done

# check METHOD PATH STATUS CODE [BODY]: the function itself answered (our JSON envelope).
failures=0
check() {
    local method="$1" path="$2" want_status="$3" want_code="$4" body="${5:-}" out status code
    out="$(mktemp)"
    status="$(curl -s -o "$out" -w '%{http_code}' --max-time 600 -X "$method" \
        -H 'content-type: application/json' ${body:+--data "$body"} "http://127.0.0.1:$PORT$path" || true)"
    code="$(jq -r '.error.code // empty' <"$out" 2>/dev/null || true)"
    if [ "$status" = "$want_status" ] && [ "$code" = "$want_code" ]; then
        log "ok   $method $path -> $status $code"
    else
        log "FAIL $method $path -> $status $(head -c 300 "$out") (wanted $want_status $want_code)"
        failures=$((failures + 1))
    fi
    rm -f "$out"
}
check POST /auth/signup 422 validation_error '{"email": "not-an-email"}'
check GET /user/me 401 unauthorized
check GET /chatroom 401 unauthorized
check GET /subscription/status 401 unauthorized
check GET /models 401 unauthorized
check GET '/search?q=oslo' 401 unauthorized
check GET /user/export 401 unauthorized
check DELETE /user/me 401 unauthorized '{"otp": "123456"}'
check POST /webhook/stripe 400 invalid_signature '{}'
# PostgreSQL and Redis reached with the URLs the functions were given (from Secrets Manager).
SMOKE_EMAIL="smoke-$(date +%s%N)@example.com"
check POST /auth/signup 201 "" "{\"email\": \"$SMOKE_EMAIL\", \"name\": \"Smoke\"}"
check POST /auth/send-otp 200 "" "{\"email\": \"$SMOKE_EMAIL\"}"
# The stream function runs under run_with_streaming_response (a Function URL on AWS).
check GET /chatroom/0190a0b2-0000-7000-8000-000000000001/messages/0190a0b2-0000-7000-8000-000000000002/stream 401 unauthorized

# cargo lambda invoke with sample events (placeholders left unfilled on purpose: the
# token is then invalid, and the batch's records are unreadable and dropped).
invoke() {
    local function="$1" file="$2" jq_check="$3" out
    out="$(cargo lambda invoke "$function" -A 127.0.0.1 -P "$PORT" --data-file "$file" 2>&1 || true)"
    if printf '%s' "$out" | jq -e "$jq_check" >/dev/null 2>&1; then
        log "ok   cargo lambda invoke $function --data-file $file"
    else
        log "FAIL cargo lambda invoke $function --data-file $file: $(printf '%s' "$out" | head -c 300)"
        failures=$((failures + 1))
    fi
}
invoke user events/user/me.json '.statusCode == 401'
invoke reply-worker events/reply-worker/sqs-batch.json '.batchItemFailures == []'

if [ "$failures" -ne 0 ]; then
    tail -40 "$(dirname "$ENV_FILE")/watch.log" >&2
    echo "lambda smoke: 0 passed, $failures failed"
    exit 1
fi
log "cargo lambda watch serves every HTTP function"
