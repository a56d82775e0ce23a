#!/usr/bin/env bash
# What SAM deploys, built once and checked: `sam build` (release, each function's crate
# alone), then for every function
#   - its bootstrap is within 3% of the same crate built by `make package`
#     (scripts/package.sh; the same cargo build, so a mismatch means the features differ);
#   - it starts under the bench's Runtime API emulator and answers sample events from
#     events/, with QUOTA_BACKEND=dynamodb (moto) on the functions that read the quota;
#   - its stdout carries the EMF metric lines of what it did.
# Expects a running PostgreSQL, Redis and moto (scripts/test.sh): TEST_DATABASE_URL (admin
# URL), TEST_REDIS_URL, TEST_AWS_ENDPOINT. Prints the time `sam build` took.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_tools
: "${TEST_DATABASE_URL:?}" "${TEST_REDIS_URL:?}" "${TEST_AWS_ENDPOINT:?}"

TARGET="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
WORK="$(state_dir sam-check)"

failures=0
fail() { log "FAIL $*"; failures=$((failures + 1)); }
ok() { log "ok   $*"; }

# 0. Features: what cargo resolves in a function's folder (sam build's CodeUri) is what it
# resolves for `-p <crate>` (make package), not the workspace's unified set.
for dir in functions/*/; do
    crate="$(basename "$dir")-fn"
    in_dir="$(cd "$dir" && cargo tree -e features --prefix none | sort -u)"
    alone="$(cargo tree -p "$crate" -e features --prefix none | sort -u)"
    if [ "$in_dir" = "$alone" ]; then ok "$crate: same features in its folder as with -p"
    else fail "$crate: cargo resolves other features in $dir than for -p $crate"; fi
done

# SAM_CHECK_REUSE=1 checks the build of an earlier run (in SAM_BUILD_DIR) instead of building.
BUILD="${SAM_BUILD_DIR:-.aws-sam/build}"
# SAM_CHECK_ARCH=arm64 (scripts/arm64-check.sh): no sam build and no size comparison; the
# arm64 packages of `scripts/package.sh arm64` are started under qemu-user instead.
ARCH="${SAM_CHECK_ARCH:-x86_64}"
if [ "$ARCH" = arm64 ]; then
    command -v qemu-aarch64-static >/dev/null || apt_install qemu-user-static
    [ -d /usr/aarch64-linux-gnu/lib ] || apt_install libc6-arm64-cross
    BUILD="$WORK/arm64"
    SAM_SECONDS="(none: arm64 packages under qemu)"
    log "arm64: the packages in $TARGET/lambda-arm64, each started under qemu-aarch64-static"
elif [ "${SAM_CHECK_REUSE:-}" = 1 ] && [ -d "$BUILD" ]; then
    SAM_SECONDS="(reused)"
    log "checking the existing $BUILD (SAM_CHECK_REUSE=1)"
else
    log "sam build (release, x86_64; cargo target $TARGET)"
    started=$(date +%s)
    SAM_CLI_TELEMETRY=0 sam build --beta-features --no-cached --template template.yaml --build-dir "$BUILD" >"$WORK/sam-build.log" 2>&1 \
        || { tail -40 "$WORK/sam-build.log" >&2; die "sam build failed"; }
    SAM_SECONDS=$(( $(date +%s) - started ))
    log "sam build took ${SAM_SECONDS} s"
fi

# function logical id -> binary, from the template's BuildProperties.
declare -A BINARY
while read -r logical binary; do BINARY[$logical]=$binary; done < <(
    awk '/^  [A-Za-z]+Function:$/ {f=$1; sub(":", "", f)} /Binary: / {print f, $2}' template.yaml)
[ "${#BINARY[@]}" -ge 6 ] || die "found ${#BINARY[@]} functions in template.yaml"

if [ "$ARCH" = arm64 ]; then
    for logical in "${!BINARY[@]}"; do
        zip="$TARGET/lambda-arm64/${BINARY[$logical]}/bootstrap.zip"
        [ -f "$zip" ] || die "$zip is missing: run scripts/package.sh arm64 first"
        mkdir -p "$BUILD/$logical"
        unzip -o -q "$zip" bootstrap -d "$BUILD/$logical/aarch64"
        printf '#!/bin/sh\nexec qemu-aarch64-static -L /usr/aarch64-linux-gnu "$(dirname "$0")/aarch64/bootstrap"\n' \
            >"$BUILD/$logical/bootstrap"
        chmod +x "$BUILD/$logical/bootstrap"
        # The ELF header's e_machine (offset 18): 183 is EM_AARCH64.
        machine=$(od -An -j18 -N2 -tu2 "$BUILD/$logical/aarch64/bootstrap" | tr -d ' ')
        if [ "$machine" = 183 ]; then ok "$logical: the arm64 package holds an aarch64 bootstrap"
        else fail "$logical: the arm64 package's bootstrap is for ELF machine $machine"; fi
    done
fi

# 1. Sizes: sam build against make package (which must find everything already built).
if [ "$ARCH" = x86_64 ]; then
started=$(date +%s)
bash scripts/package.sh >"$WORK/package.log" 2>&1 || { cat "$WORK/package.log" >&2; die "make package failed"; }
log "make package after sam build took $(( $(date +%s) - started )) s (nothing to rebuild when the features agree)"
printf '%-24s %12s %12s\n' function "sam build" "make package" >&2
for logical in "${!BINARY[@]}"; do
    bin="${BINARY[$logical]}"
    sam_size=$(stat -c%s "$BUILD/$logical/bootstrap")
    pkg_size=$(unzip -p "$TARGET/lambda/$bin/bootstrap.zip" bootstrap | wc -c)
    printf '%-24s %9.2f MB %9.2f MB\n' "$logical" "$(echo "$sam_size/1048576" | bc -l)" "$(echo "$pkg_size/1048576" | bc -l)" >&2
    diff=$(( sam_size > pkg_size ? sam_size - pkg_size : pkg_size - sam_size ))
    if [ $(( diff * 100 )) -le $(( pkg_size * 3 )) ]; then ok "$logical: sam build size within 3% of make package"
    else fail "$logical: sam build $sam_size bytes, make package $pkg_size bytes"; fi
done
fi

# 1b. Each bootstrap holds the SDKs its main wires and no other: every function compiles
# `shared` with the same features (one release build for all), so what keeps a binary lean
# is that the linker drops every client its `Adapters` do not name (section GC). A mark is a string only that
# client's code holds.
declare -A MARK=([sqs]=AmazonSQS.SendMessage [dynamodb]=DynamoDB_20120810 [ses]=/v2/email/outbound-emails
    [stripe]=api.stripe.com [gemini]=:streamGenerateContent [secrets]=secretsmanager.BatchGetSecretValue)
declare -A WANT=([AuthFunction]="secrets ses" [UserFunction]="secrets stripe" [ChatroomFunction]="secrets sqs dynamodb"
    [StreamFunction]="secrets" [SubscriptionFunction]="secrets stripe dynamodb"
    [StripeWebhookFunction]="secrets stripe" [ReplyWorkerFunction]="secrets gemini dynamodb sqs" [MigrateFunction]="secrets")
for logical in "${!BINARY[@]}"; do
    [ "$ARCH" = x86_64 ] || break
    has=""
    for client in sqs dynamodb ses stripe gemini secrets; do
        grep -qaF "${MARK[$client]}" "$BUILD/$logical/bootstrap" && has="$has $client"
    done
    want=" $(tr ' ' '\n' <<<"${WANT[$logical]:-?}" | sort | tr '\n' ' ' | sed 's/ $//')"
    has=" $(tr ' ' '\n' <<<"${has# }" | sort | tr '\n' ' ' | sed 's/ $//')"
    if [ "$has" = "$want" ]; then ok "$logical links only the clients it wires:$has"
    else fail "$logical links$has, its main wires$want"; fi
done

# 2. Start-up: real services, a fresh database, DynamoDB quota table and SQS queue in moto.
cargo build -q --workspace --bin invoke  # the test build's features: nothing recompiles
INVOKE="$TARGET/debug/invoke"
DB="samcheck_$$"
psql "$TEST_DATABASE_URL" -qtA -c "CREATE DATABASE $DB" >/dev/null
trap 'psql "$TEST_DATABASE_URL" -qtA -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
DATABASE_URL="${TEST_DATABASE_URL%/*}/$DB"
for f in $(ls migrations/V*.sql | sort -V); do psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done

aws_call() { # SERVICE TARGET JSON: moto's JSON protocol
    curl -sf -X POST "$TEST_AWS_ENDPOINT/" -H "X-Amz-Target: $2" -H 'Content-Type: application/x-amz-json-1.0' \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/eu-west-1/$1/aws4_request, SignedHeaders=host, Signature=0" \
        --data "$3"
}
TABLE="samcheck-quota-$$"
aws_call dynamodb DynamoDB_20120810.CreateTable "{\"TableName\":\"$TABLE\",\"BillingMode\":\"PAY_PER_REQUEST\",\"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"}],\"KeySchema\":[{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"}]}" >/dev/null
QUEUE_URL=$(aws_call sqs AmazonSQS.CreateQueue "{\"QueueName\":\"samcheck-replies-$$\"}" | jq -r .QueueUrl)
DLQ_ARN="arn:aws:sqs:eu-west-1:123456789012:chatroom-lambda-replies-dlq"
WEBHOOK_SECRET="whsec_samcheck_$$"

export DATABASE_URL REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="samcheck$$:" \
    JWT_SECRET_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')" OTP_DELIVERY=log \
    OTP_HASH_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')" ALLOW_PLAINTEXT_STORES=true \
    AWS_ENDPOINT_URL="$TEST_AWS_ENDPOINT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=eu-west-1 \
    METRICS_NAMESPACE=samcheck STRIPE_WEBHOOK_SECRET="$WEBHOOK_SECRET" GOOGLE_API_KEY=samcheck \
    GEMINI_BASE_URL=http://127.0.0.1:9 DEAD_LETTER_QUEUE_ARN="$DLQ_ARN"
QUOTA=(QUOTA_BACKEND=dynamodb QUOTA_TABLE="$TABLE")

# fill FILE KEY=VALUE...: a copy of an event with its {{KEY}} placeholders filled.
fill() {
    local file="$1" out
    shift
    out="$(mktemp "$WORK/event-XXXXXX.json")"
    cp "$file" "$out"
    for kv in "$@"; do sed -i "s|{{${kv%%=*}}}|${kv#*=}|g" "$out"; done
    echo "$out"
}
# run LOGICAL [ENV=VALUE...] -- EVENT...: the bootstrap sam built, under the emulator.
run() {
    local logical="$1" envs=() out
    shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    out="$WORK/$logical.json"
    env "${envs[@]}" "$INVOKE" "$BUILD/$logical/bootstrap" "$@" >"$out" 2>"$WORK/$logical.err" \
        || { cat "$WORK/$logical.err" >&2; fail "$logical did not start and answer"; echo '{}' >"$out"; }
    echo "$out"
}
# expect NAME FILE JQ: the check passes when JQ is true of the invoke output.
expect() {
    if jq -e "$3" "$2" >/dev/null 2>&1; then ok "$1"; else fail "$1: $(head -c 600 "$2")"; fi
}
# emf FUNCTION METRIC: a jq test that the output has an EMF line with METRIC for FUNCTION.
emf() {
    echo "[.stdout[] | fromjson? | select(._aws.CloudWatchMetrics[0].Namespace == \"samcheck\" and .function == \"$1\" and .$2 >= 1)] | length >= 1"
}
body() { echo "(.responses[$1].body | fromjson)"; }

# The code goes out through SES (moto), as on AWS: a Lambda refuses OTP_DELIVERY=response.
SENDER="noreply-$$@example.com"
curl -sf -X POST "$TEST_AWS_ENDPOINT/v2/email/identities" -H 'Content-Type: application/json' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/eu-west-1/ses/aws4_request, SignedHeaders=host, Signature=0' \
    --data "{\"EmailIdentity\": \"$SENDER\"}" >/dev/null || die "moto did not verify the SES sender"
RECIPIENT="$(jq -r '.body | fromjson | .email' events/auth/send-otp.json)"
out=$(run AuthFunction OTP_DELIVERY=ses OTP_EMAIL_FROM="$SENDER" -- events/auth/signup.json events/auth/send-otp.json)
expect "auth: signup 201, send-otp 200 (SES), OtpCodesSent emitted" "$out" \
    ".responses[0].statusCode == 201 and .responses[1].statusCode == 200 and ($(emf auth OtpCodesSent))"
# The newest e-mail moto's SES accepted for that address: its six-digit code.
OTP=$(curl -sf "$TEST_AWS_ENDPOINT/moto-api/data.json" | jq -r --arg to "$RECIPIENT" \
    '[.ses.Message[]? | select(.destinations.ToAddresses | index($to))] | last | .body // ""' \
    | grep -oE '(^|[^0-9])[0-9]{6}([^0-9]|$)' | grep -oE '[0-9]{6}' | head -1 || true)
[ -n "$OTP" ] || fail "auth: no code reached moto's SES for $RECIPIENT"
out=$(run AuthFunction -- "$(fill events/auth/verify-otp.json OTP="$OTP")")
expect "auth: verify-otp gives a token" "$out" ".responses[0].statusCode == 200"
TOKEN=$(jq -r "$(body 0).access_token" "$out")

out=$(run UserFunction -- "$(fill events/user/me.json TOKEN="$TOKEN")")
expect "user: GET /user/me 200" "$out" ".responses[0].statusCode == 200"
USER_ID=$(jq -r "$(body 0).id // $(body 0).user.id" "$out")

out=$(run ChatroomFunction "${QUOTA[@]}" REPLY_QUEUE_URL="$QUEUE_URL" -- "$(fill events/chatroom/create.json TOKEN="$TOKEN")")
expect "chatroom (QUOTA_BACKEND=dynamodb): create 201" "$out" ".responses[0].statusCode == 201"
ROOM=$(jq -r "$(body 0).chatroom.id" "$out")
LIST="$(fill events/chatroom/list.json TOKEN="$TOKEN")"
out=$(run ChatroomFunction "${QUOTA[@]}" REPLY_QUEUE_URL="$QUEUE_URL" -- \
    "$(fill events/chatroom/send-message.json TOKEN="$TOKEN" CHATROOM_ID="$ROOM")" "$LIST" "$LIST")
expect "chatroom (QUOTA_BACKEND=dynamodb): send 202 through DynamoDB and SQS, MessagesQueued emitted" "$out" \
    ".responses[0].statusCode == 202 and ($(emf chatroom MessagesQueued))"
expect "chatroom: list miss then hit, cache metrics emitted" "$out" \
    "(.responses[1].headers[\"x-cache\"] == \"miss\") and (.responses[2].headers[\"x-cache\"] == \"hit\") and ($(emf chatroom ChatroomCacheHits)) and ($(emf chatroom ChatroomCacheMisses))"
MESSAGE_ID=$(jq -r "$(body 0).message.id" "$out")
items=$(aws_call dynamodb DynamoDB_20120810.Scan "{\"TableName\":\"$TABLE\"}" | jq -r .Count)
[ "$items" = "1" ] && ok "the daily unit was counted in DynamoDB" || fail "DynamoDB quota table holds $items items, wanted 1"

out=$(run SubscriptionFunction "${QUOTA[@]}" -- "$(fill events/subscription/status.json TOKEN="$TOKEN")")
expect "subscription (QUOTA_BACKEND=dynamodb): status reads used_today = 1 from DynamoDB" "$out" \
    ".responses[0].statusCode == 200 and $(body 0).usage.used_today == 1"

# A genuinely signed webhook, delivered twice, then a forged one.
EVENT="$(fill events/stripe-webhook/subscription-created.json USER_ID="$USER_ID")"
PAYLOAD="$(jq -r .body "$EVENT")"
SIGNATURE="$(PAYLOAD="$PAYLOAD" SECRET="$WEBHOOK_SECRET" python3 -c '
import hashlib, hmac, os, time
t = str(int(time.time()))
mac = hmac.new(os.environ["SECRET"].encode(), (t + "." + os.environ["PAYLOAD"]).encode(), hashlib.sha256)
print(f"t={t},v1={mac.hexdigest()}")')"
SIGNED="$(fill "$EVENT" STRIPE_SIGNATURE="$SIGNATURE")"
FORGED="$(fill events/stripe-webhook/subscription-created.json STRIPE_SIGNATURE="t=1,v1=00" USER_ID="$USER_ID")"
out=$(run StripeWebhookFunction -- "$SIGNED" "$SIGNED" "$FORGED")
expect "stripe-webhook: applied, duplicate, rejected (400), each counted in EMF" "$out" \
    "($(body 0).outcome == \"applied\") and ($(body 1).outcome == \"duplicate\") and .responses[2].statusCode == 400 and ($(emf stripe-webhook WebhookEventsApplied)) and ($(emf stripe-webhook WebhookEventsDuplicate)) and ($(emf stripe-webhook WebhookEventsRejected))"

out=$(run ReplyWorkerFunction -- "$(fill events/reply-worker/dead-letter-batch.json MESSAGE_ID_3="$MESSAGE_ID")")
expect "reply-worker: a dead-lettered job fails its message, RepliesFailed emitted" "$out" \
    ".responses[0].batchItemFailures == [] and ($(emf reply-worker RepliesFailed))"

for logical in "${!BINARY[@]}"; do
    [ -f "$WORK/$logical.json" ] && jq -r --arg f "$logical" '"\($f): init \(.init_ms*100|round/100) ms, first response \(.first_response_ms*100|round/100) ms, peak RSS \(.peak_rss_kb) KB"' "$WORK/$logical.json" >&2 || true
done
if [ "$failures" -ne 0 ]; then
    echo "sam check: $failures failed"
    exit 1
fi
if [ "$ARCH" = arm64 ]; then
    log "arm64 check: every arm64 package starts under qemu and answers (peak RSS above is qemu's)"
else
    log "sam check: every function built by sam build has the expected size, starts and answers (sam build ${SAM_SECONDS} s)"
fi
