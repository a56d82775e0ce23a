#!/usr/bin/env bash
# `make smoke`: scripts/smoke.py against a running stack. With neither STACK nor API_URL
# set, the stack is `make dev` on 127.0.0.1:${API_PORT:-3000}. STACK needs boto3 (the tools
# venv) and the AWS credentials of an operator of that stack.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
PYTHON=python3
if [ -n "${STACK:-}" ]; then
    ensure_tools
    PYTHON="$ROOT/.local/venv-tools/bin/python"
elif [ -z "${API_URL:-}" ]; then
    export API_URL="http://127.0.0.1:${API_PORT:-3000}/"
fi
exec "$PYTHON" scripts/smoke.py
