#!/usr/bin/env bash
# The stack deployed and walked without an AWS account, in both data-store modes: `sam
# deploy` of the packages that `sam build` made (the run's one release build, in
# .aws-sam/build) onto ministack, a local AWS emulator that runs the real provided.al2023
# bootstraps as processes.
#
#   existing mode, against a local PostgreSQL and Redis: the first deploy meets the
#   placeholder secrets; scripts/emulator.py fills them, runs the migrations with the
#   deployed migrate function, makes the routes; then scripts/smoke.py against its API and
#   stream URLs, signing in through the emulator's SES mailbox (and once more with a token
#   signed by the stack's JWT key, the AWS path). The reply comes through the real SQS event
#   source and worker bootstrap, with Gemini pointed at the browser tests' fake.
#   create mode, as far as the emulator models it: the VPC, subnets, route tables,
#   security groups, generated credentials, Aurora cluster and instance, and the
#   Migrations custom resource, answered by the real migrate function against a fresh
#   local database during the deploy; the emulator's PostgreSQL and Redis stand in for RDS
#   Proxy and ElastiCache Serverless. Checked resource by resource, then make smoke once.
#   The template's Rules are tried on the emulator's CloudFormation too.
#
# What the emulator does not model, and how this run deals with it:
#   - metric-math alarms: MetricMathAlarms=false (a template parameter);
#   - the HTTP API's OpenAPI Body: routes are made after deploy (scripts/emulator.py);
#   - incremental Function URL streaming: responses arrive whole (the stream's
#     incremental delivery is proven by the tests and the browser suite instead);
#   - TLS to the stores: AllowPlaintextStores=true (the local stores speak plaintext);
#   - create mode: Elastic IPs, NAT gateways, RDS Proxy and its target group, ElastiCache
#     Serverless are no-op stand-ins (scripts/emulator.py, EMULATOR_CANNOT); functions'
#     VpcConfig is not kept (they run as local processes); security groups and routes are
#     recorded, not enforced.
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

# The stores: two fresh, empty databases (the migrate function of each stack migrates its
# own). create mode's functions sign in as the user of the generated credentials secret
# (`chatroom`; the local server trusts loopback, so its password is not checked here).
DB="emulator_$$"
CREATE_DB="emulator_create_$$"
psql "$TEST_DATABASE_URL" -qtA -v ON_ERROR_STOP=1 \
    -c "DO \$\$ BEGIN CREATE ROLE chatroom LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
    -c "CREATE DATABASE $DB" -c "CREATE DATABASE $CREATE_DB OWNER chatroom" >/dev/null
trap 'psql "$TEST_DATABASE_URL" -qtA -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $CREATE_DB WITH (FORCE)" >/dev/null 2>&1 || true; stop_started' EXIT
DATABASE_URL="${TEST_DATABASE_URL%/*}/$DB"
MIGRATIONS=$(ls migrations/V*.sql | wc -l)

export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1 SAM_CLI_TELEMETRY=0
SENDER="noreply@smoke.example.com"
PY="$ROOT/.local/venv-tools/bin/python"
"$PY" -c "import boto3; boto3.client('sesv2').create_email_identity(EmailIdentity='$SENDER')" >/dev/null

# deploy STACK TEMPLATE PARAMETER...: sam deploy onto the emulator, with the settings both
# modes share (no metric-math alarms, the fake Gemini, plaintext local stores).
deploy() {
    local stack="$1" template="$2" started resources
    shift 2
    started=$(date +%s)
    log "sam deploy $template (stack $stack: $*)"
    sam deploy --template-file "$template" --stack-name "$stack" --resolve-s3 \
        --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-confirm-changeset \
        --no-fail-on-empty-changeset --no-progressbar \
        --parameter-overrides OtpEmailFrom="$SENDER" MetricMathAlarms=false AllowPlaintextStores=true \
            GeminiBaseUrl="http://127.0.0.1:$GEMINI_PORT" FrontendUrl="http://127.0.0.1:$PORT" "$@" \
        >"$WORK/deploy-$stack.log" 2>&1 || { tail -40 "$WORK/deploy-$stack.log" >&2; tail -30 "$WORK/ministack.log" >&2; die "sam deploy of $stack onto the emulator failed"; }
    resources=$("$PY" -c "import boto3; print(len(boto3.client('cloudformation').describe_stack_resources(StackName='$stack')['StackResources']))")
    log "deployed $resources resources in $(( $(date +%s) - started )) s"
}
export SECRET_DATABASE_URL="$DATABASE_URL" SECRET_REDIS_URL="${TEST_REDIS_URL%/}/" \
    SECRET_GOOGLE_API_KEY="fake-gemini-key" SECRET_STRIPE_API_KEY="sk_test_emulator" \
    SECRET_STRIPE_WEBHOOK_SECRET="whsec_emulator"

# existing mode (DataStores=existing given explicitly: the template's default is create).
deploy "$STACK" "$BUILD/template.yaml" DataStores=existing
"$PY" scripts/emulator.py existing "$STACK" "$BUILD/template.yaml"
applied=$(psql "$DATABASE_URL" -qtA -c "SELECT count(*) FROM refinery_schema_history")
[ "$applied" = "$MIGRATIONS" ] || die "existing mode: $applied of $MIGRATIONS migrations applied"

log "make smoke against the emulator's stack (code from its SES mailbox)"
STACK="$STACK" SMOKE_MAILBOX_URL="$AWS_ENDPOINT_URL/_ministack/ses/messages" "$PY" scripts/smoke.py \
    || { tail -30 "$WORK/ministack.log" >&2; die "smoke against the emulator failed"; }
log "make smoke again, signed in as an operator on AWS would (token from the stack's JWT secret)"
STACK="$STACK" SMOKE_SIGN_IN=token "$PY" scripts/smoke.py \
    || { tail -30 "$WORK/ministack.log" >&2; die "smoke (token) against the emulator failed"; }

# create mode, as far as the emulator models it (stand-ins for what it cannot create).
CREATE_STACK="$STACK-create"
create_started=$(date +%s)
EMULATOR_DATABASE_URL="${TEST_DATABASE_URL%/*}/$CREATE_DB?sslmode=disable" EMULATOR_REDIS_URL="${TEST_REDIS_URL%/}/" \
    "$PY" scripts/emulator.py create-template "$BUILD/template.yaml" "$WORK/create-template.yaml"
deploy "$CREATE_STACK" "$WORK/create-template.yaml" DataStores=create
"$PY" scripts/emulator.py create "$CREATE_STACK" "$BUILD/template.yaml"
applied=$(psql "${TEST_DATABASE_URL%/*}/$CREATE_DB" -qtA -c "SELECT count(*) FROM refinery_schema_history")
[ "$applied" = "$MIGRATIONS" ] || die "create mode: the Migrations custom resource applied $applied of $MIGRATIONS migrations"
log "create mode: the deploy's Migrations custom resource applied all $MIGRATIONS migrations"
"$PY" scripts/emulator.py rules "$STACK" "$CREATE_STACK"
log "make smoke against the create-mode stack"
STACK="$CREATE_STACK" SMOKE_MAILBOX_URL="$AWS_ENDPOINT_URL/_ministack/ses/messages" "$PY" scripts/smoke.py \
    || { tail -30 "$WORK/ministack.log" >&2; die "smoke against the create-mode stack failed"; }
log "create mode: deployed, checked and walked in $(( $(date +%s) - create_started )) s"
log "emulator: both modes deployed and walked end to end in $(( $(date +%s) - started )) s"
