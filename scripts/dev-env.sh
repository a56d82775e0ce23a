# Starts the local PostgreSQL and Redis and exports the local settings.
# Sourced by dev.sh (local server) and watch.sh (cargo lambda watch).
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"

PG_PORT="${PG_PORT:-55432}"
REDIS_PORT="${REDIS_PORT:-56379}"

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
# One person trying things from one address: per-IP throttles off (0) unless set.
export IP_SIGNUPS_PER_HOUR="${IP_SIGNUPS_PER_HOUR:-0}"
export IP_CODE_REQUESTS_PER_HOUR="${IP_CODE_REQUESTS_PER_HOUR:-0}"
export IP_SIGN_IN_ATTEMPTS_PER_HOUR="${IP_SIGN_IN_ATTEMPTS_PER_HOUR:-0}"
# What a chatroom may choose (GET /models), as the template's defaults.
export GEMINI_MODEL="${GEMINI_MODEL:-gemini-2.5-flash}"
export GEMINI_MODELS="${GEMINI_MODELS:-gemini-2.5-flash,gemini-2.5-pro}"
export GEMINI_PRO_ONLY_MODELS="${GEMINI_PRO_ONLY_MODELS:-gemini-2.5-pro}"

log "settings (local defaults; override any by environment):"
log "  DATABASE_URL=$DATABASE_URL"
log "  REDIS_URL=$REDIS_URL"
log "  JWT_SECRET_KEY=<dev secret in .local/dev-jwt-secret>"
log "  OTP_DELIVERY=$OTP_DELIVERY (response: codes are returned in responses, local use only)"
log "  IP_*_PER_HOUR: per-IP throttles off (0) for local use"
[ -n "${GOOGLE_API_KEY:-}" ] || log "  GOOGLE_API_KEY unset: replies come from the offline provider"
[ -n "${STRIPE_API_KEY:-}" ] || log "  STRIPE_API_KEY unset: billing routes answer 503 billing_unavailable"
