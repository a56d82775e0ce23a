#!/usr/bin/env bash
# Uploads the web client to the deployed stack (after `sam deploy`): web/ with a
# config.json generated from the stack's outputs (ApiUrl, and StreamUrl where the stack
# has live replies) into WebBucketName, then invalidates WebDistributionId.
# Usage: STACK_NAME=chatroom-lambda AWS_REGION=eu-west-1 make deploy-web
# (defaults: samconfig.toml's stack_name and region). AWS credentials from the environment.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

conf() { sed -n "s/^$1 *= *\"\(.*\)\".*/\1/p" samconfig.toml | head -1; }
STACK="${STACK_NAME:-$(conf stack_name)}"
export AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(conf region)}}"
command -v jq >/dev/null || apt_install jq
if ! command -v aws >/dev/null; then
    ensure_venv venv-aws aws awscli
    export PATH="$ROOT/.local/venv-aws/bin:$PATH"
fi

log "reading the outputs of stack $STACK ($AWS_REGION)"
OUTPUTS="$(aws cloudformation describe-stacks --stack-name "$STACK" --query 'Stacks[0].Outputs' --output json)"
output() { jq -r --arg k "$1" 'map(select(.OutputKey == $k))[0].OutputValue // empty' <<<"$OUTPUTS"; }
API_URL="$(output ApiUrl)"
STREAM_URL="$(output StreamUrl)"
BUCKET="$(output WebBucketName)"
DISTRIBUTION="$(output WebDistributionId)"
WEB_URL="$(output WebUrl)"
[ -n "$API_URL" ] && [ -n "$BUCKET" ] && [ -n "$DISTRIBUTION" ] ||
    die "stack $STACK has no ApiUrl/WebBucketName/WebDistributionId output: deploy template.yaml first (sam deploy)"

SITE="$(mktemp -d)"
trap 'rm -rf "$SITE"' EXIT
cp -R web/. "$SITE/"
# An empty stream_url makes the client use api_url, and long-poll where there is no stream route.
jq -n --arg api "$API_URL" --arg stream "$STREAM_URL" '{api_url: $api, stream_url: $stream}' >"$SITE/config.json"
log "config.json: $(jq -c . "$SITE/config.json")"
# The page may connect to its own origin and exactly the stack's API and stream origins
# (the CloudFront policy allows this region's API Gateway and Function URL hosts; the
# browser enforces both policies).
origin() { sed -E 's#^(https?://[^/]+).*#\1#' <<<"$1"; }
CONNECT="'self' $(origin "$API_URL")${STREAM_URL:+ $(origin "$STREAM_URL")}"
META="<meta http-equiv=\"Content-Security-Policy\" content=\"connect-src $CONNECT\">"
sed -i "s#<meta charset=\"utf-8\">#<meta charset=\"utf-8\">\n  $META#" "$SITE/index.html"
grep -qF "connect-src $CONNECT" "$SITE/index.html" || die "could not write the page's connect-src policy"
log "index.html: connect-src $CONNECT"

# Every file revalidates (no-cache + ETag): the files are small and their names are not
# versioned, so a deploy must never leave an old module beside a new one.
aws s3 sync "$SITE/" "s3://$BUCKET/" --delete --cache-control no-cache --only-show-errors
aws cloudfront create-invalidation --distribution-id "$DISTRIBUTION" --paths '/*' \
    --query 'Invalidation.Id' --output text >/dev/null
log "uploaded; open $WEB_URL"
