#!/usr/bin/env bash
# Release packages, one per function: target/lambda/<function>/bootstrap(.zip).
# Each function is built on its own so that Cargo's feature unification does not pull
# every other function's dependencies (AWS SDKs, Stripe, reqwest) into it.
# Usage: scripts/package.sh [--arm64]   (x86_64 by default; arm64 needs that target installed)
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_packages
ensure_tools

ARCH_FLAG="--x86-64"
[ "${1:-}" = "--arm64" ] && ARCH_FLAG="--arm64"
FUNCTIONS="auth user chatroom subscription stripe-webhook reply-worker stream"

for f in $FUNCTIONS; do
    log "building $f ($ARCH_FLAG, release)"
    cargo lambda build --release "$ARCH_FLAG" -p "$f-fn" --bin "$f" --output-format zip >/dev/null
done

printf '%-16s %12s %12s\n' function bootstrap zip
for f in $FUNCTIONS; do
    zip="target/lambda/$f/bootstrap.zip"
    size_zip=$(stat -c%s "$zip")
    size_bin=$(unzip -p "$zip" bootstrap | wc -c)
    printf '%-16s %9.1f MB %9.1f MB\n' "$f" "$(echo "$size_bin/1048576" | bc -l)" "$(echo "$size_zip/1048576" | bc -l)"
done
