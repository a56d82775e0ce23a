#!/usr/bin/env bash
# Release packages, one per function and architecture:
#   x86_64: target/lambda/<function>/bootstrap(.zip)        (what the template deploys)
#   arm64:  target/lambda-arm64/<function>/bootstrap(.zip)  (cross-built with zig)
# Each function is built on its own (-p), as `sam build` builds it from its folder; all of
# them build `shared` with the same features, and each binary links only the clients its
# main.rs wires (scripts/sam-check.sh checks both).
# Usage: scripts/package.sh [x86_64|arm64|both]   (x86_64 by default; `make package`: both)
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_packages
ensure_tools

case "${1:-x86_64}" in
    x86_64) ARCHES="x86_64" ;;
    arm64 | --arm64) ARCHES="arm64" ;;
    both) ARCHES="x86_64 arm64" ;;
    *) die "usage: scripts/package.sh [x86_64|arm64|both]" ;;
esac
FUNCTIONS="auth user chatroom subscription stripe-webhook reply-worker stream migrate"
TARGET="${CARGO_TARGET_DIR:-target}"

lambda_dir() { if [ "$1" = arm64 ]; then echo "$TARGET/lambda-arm64"; else echo "$TARGET/lambda"; fi; }

for arch in $ARCHES; do
    if [ "$arch" = arm64 ] && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
        log "installing the aarch64-unknown-linux-gnu target (rustup)"
        rustup target add aarch64-unknown-linux-gnu >/dev/null
    fi
    flag="--x86-64"; [ "$arch" = arm64 ] && flag="--arm64"
    for f in $FUNCTIONS; do
        log "building $f ($arch, release)"
        cargo lambda build --release "$flag" --lambda-dir "$(lambda_dir "$arch")" \
            -p "$f-fn" --bin "$f" --output-format zip >/dev/null
    done
done

printf '%-16s %-8s %12s %12s\n' function arch bootstrap zip
for arch in $ARCHES; do
    for f in $FUNCTIONS; do
        zip="$(lambda_dir "$arch")/$f/bootstrap.zip"
        size_zip=$(stat -c%s "$zip")
        size_bin=$(unzip -p "$zip" bootstrap | wc -c)
        printf '%-16s %-8s %9.1f MB %9.1f MB\n' "$f" "$arch" \
            "$(echo "$size_bin/1048576" | bc -l)" "$(echo "$size_zip/1048576" | bc -l)"
    done
done
