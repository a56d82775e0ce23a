#!/usr/bin/env bash
# The arm64 packages (`scripts/package.sh arm64`, cross-built with zig) started under
# qemu-user with the sample events, as scripts/sam-check.sh does for x86_64: real
# PostgreSQL, Redis and moto, started here and stopped after. Not part of `make test`:
# the arm64 release build of every function is a second full release build.
# Usage: scripts/arm64-check.sh   (after scripts/package.sh arm64, or `make package`)
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

PG_PORT="${ARM64_PG_PORT:-55437}"
REDIS_PORT="${ARM64_REDIS_PORT:-56384}"
MOTO_PORT="${ARM64_MOTO_PORT:-55003}"

ensure_packages
ensure_moto
trap stop_started EXIT
trap 'exit 130' INT TERM
STATE="$(state_dir arm64-check)"
fresh_postgres "$STATE/pg" "$PG_PORT"
start_redis "$STATE" "$REDIS_PORT"
start_moto "$STATE" "$MOTO_PORT"

TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
    TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" \
    TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT" \
    SAM_CHECK_ARCH=arm64 bash scripts/sam-check.sh
