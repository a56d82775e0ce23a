#!/usr/bin/env bash
# The stack deployed and walked without an AWS account: `sam deploy` of the packages that
# `sam build` made (the run's one release build, in .aws-sam/build) onto ministack, a local
# AWS emulator that runs the real provided.al2023 bootstraps as processes, in `existing`
# mode against a local PostgreSQL and Redis; then scripts/smoke.py against its API and
# stream URLs, signing in through the emulator's SES mailbox (and once more with a token
# signed by the stack's JWT key, the AWS path). The reply comes through the real SQS event
# source and worker bootstrap, with Gemini pointed at the browser tests' fake.
#
# What the emulator does not model, and how this run deals with it:
#   - metric-math alarms: MetricMathAlarms=false (a template parameter);
#   - the HTTP API's OpenAPI Body: routes are made after deploy (scripts/emulator.py);
#   - incremental Function URL streaming: responses arrive whole (the stream's
#     incremental delivery is proven by the tests and the browser suite instead).
#
# Expects a running PostgreSQL and Redis (scripts/test.sh): TEST_DATABASE_URL (admin URL),
# TEST_REDIS_URL. EMULATOR_PORT (default 55566) and EMULATOR_GEMINI_PORT (55567).
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
: "${TEST_DATABASE_URL:?}" "${TEST_REDIS_URL:?}"
BUILD="${SAM_BUILD_DIR:-.aws-sam/build}"
[ -f "$BUILD/template.yaml" ] || die "$BUILD/template.yaml is missing: run sam build first (scripts/sam-check.sh)"
PORT="${EMULATOR_PORT:-55566}"
GEMINI_PORT="${EMULATOR_GEMINI_PORT:-55567}"
STACK="chatroom-emulator"
WORK="$(state_dir emulator)"
started=$(date +%s)

ensure_tools
ensure_ministack
command -v node >/dev/null || apt_install nodejs
trap stop_started EXIT
trap 'exit 130' INT TERM

# The emulator with an empty environment: functions inherit it, so nothing of this shell
# (or of CI) can stand in for a setting the template fails to declare. AWS_ENDPOINT_URL
# is the emulator's own address, which it hands its functions so that their AWS SDKs
# reach it (on AWS the SDKs find the regional endpoints themselves).
port_busy "$PORT" && die "port $PORT is taken; set EMULATOR_PORT"
rm -rf "$WORK/ministack" && mkdir -p "$WORK/ministack"
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/ministack" LANG=C.UTF-8 \
    GATEWAY_PORT="$PORT" BIND_HOST=127.0.0.1 AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" \
    "$ROOT/.local/venv-ministack/bin/ministack" >"$WORK/ministack.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/_localstack/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/_localstack/health" >/dev/null || { tail -20 "$WORK/ministack.log" >&2; die "ministack did not start"; }
log "ministack on 127.0.0.1:$PORT"

port_busy "$GEMINI_PORT" && die "port $GEMINI_PORT is taken; set EMULATOR_GEMINI_PORT"
node tests/web/fake-gemini-server.mjs "$GEMINI_PORT" >"$WORK/gemini.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 100); do port_busy "$GEMINI_PORT" && break; sleep 0.1; done

# The stores of `existing` mode: a fresh database with the migrations, a key prefix in Redis.
DB="emulator_$$"
psql "$TEST_DATABASE_URL" -qtA -c "CREATE DATABASE $DB" >/dev/null
trap 'psql "$TEST_DATABASE_URL" -qtA -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; stop_started' EXIT
DATABASE_URL="${TEST_DATABASE_URL%/*}/$DB"
for f in $(ls migrations/V*.sql | sort -V); do psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done

export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1 SAM_CLI_TELEMETRY=0
SENDER="noreply@smoke.example.com"
PY="$ROOT/.local/venv-tools/bin/python"
"$PY" -c "import boto3; boto3.client('sesv2').create_email_identity(EmailIdentity='$SENDER')" >/dev/null

log "sam deploy $BUILD/template.yaml (stack $STACK)"
deploy_started=$(date +%s)
sam deploy --template-file "$BUILD/template.yaml" --stack-name "$STACK" --resolve-s3 \
    --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-confirm-changeset \
    --no-fail-on-empty-changeset --no-progressbar \
    --parameter-overrides OtpEmailFrom="$SENDER" MetricMathAlarms=false \
        GeminiBaseUrl="http://127.0.0.1:$GEMINI_PORT" FrontendUrl="http://127.0.0.1:$PORT" \
    >"$WORK/deploy.log" 2>&1 || { tail -40 "$WORK/deploy.log" >&2; die "sam deploy onto the emulator failed"; }
resources=$("$PY" -c "import boto3; print(len(boto3.client('cloudformation').describe_stack_resources(StackName='$STACK')['StackResources']))")
log "deployed $resources resources in $(( $(date +%s) - deploy_started )) s"

SECRET_DATABASE_URL="$DATABASE_URL" SECRET_REDIS_URL="${TEST_REDIS_URL%/}/" \
    SECRET_GOOGLE_API_KEY="fake-gemini-key" SECRET_STRIPE_API_KEY="sk_test_emulator" \
    SECRET_STRIPE_WEBHOOK_SECRET="whsec_emulator" \
    "$PY" scripts/emulator.py "$STACK" "$BUILD/template.yaml"

log "make smoke against the emulator's stack (code from its SES mailbox)"
STACK="$STACK" SMOKE_MAILBOX_URL="$AWS_ENDPOINT_URL/_ministack/ses/messages" "$PY" scripts/smoke.py \
    || { tail -30 "$WORK/ministack.log" >&2; die "smoke against the emulator failed"; }
log "make smoke again, signed in as an operator on AWS would (token from the stack's JWT secret)"
STACK="$STACK" SMOKE_SIGN_IN=token "$PY" scripts/smoke.py \
    || { tail -30 "$WORK/ministack.log" >&2; die "smoke (token) against the emulator failed"; }
log "emulator: deployed and walked end to end in $(( $(date +%s) - started )) s"
