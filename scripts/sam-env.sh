#!/usr/bin/env bash
# Writes .local/sam-env.json, the `--env-vars` file for `sam local` against `make dev`'s
# PostgreSQL and Redis (see docs/development.md, "sam local"). Installs the SAM CLI if missing.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_tools
SECRET_FILE="$ROOT/.local/dev-jwt-secret"
mkdir -p "$ROOT/.local"
# The same dev-only secret `make dev` uses, so tokens from either work in both.
[ -s "$SECRET_FILE" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' >"$SECRET_FILE"
OUT="${1:-$ROOT/.local/sam-env.json}"
JWT_SECRET_FILE="$SECRET_FILE" "$ROOT/.local/venv-tools/bin/python" "$ROOT/scripts/sam_env.py" template.yaml "$OUT"
