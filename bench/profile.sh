#!/usr/bin/env bash
# `make profile`: where the time of list, detail and send goes. Runs the warm part of the
# bench (bench/run.sh, BENCH_ONLY=warm by default) on a release server that keeps its
# symbols (Cargo profile `profiling`), with one extra run per route recorded by `perf`
# across the whole machine (the server, PostgreSQL, Redis and wrk share its 2 cores).
# Writes bench/results/flame-<route>.svg (inferno) and bench/results/profile-<route>.txt:
# CPU share per program and the server's hottest functions. PROFILE_SUFFIX=-before names
# them for a before/after pair.
set -euo pipefail
source "$(dirname "$0")/../scripts/services.sh"
cd "$ROOT"

command -v perf >/dev/null || apt_install linux-perf
TOOLS="$ROOT/.local/inferno"
if [ ! -x "$TOOLS/bin/inferno-flamegraph" ]; then
    cargo install -q --locked inferno --version "^0.12" --root "$TOOLS"
fi
DATA="$(state_dir profile)"
rm -rf "$DATA" && mkdir -p "$DATA"
BENCH_ONLY="${BENCH_ONLY:-warm}" BENCH_PERF_DIR="$DATA" bash bench/run.sh

OUT="$ROOT/bench/results"
for data in "$DATA"/*.data; do
    route="$(basename "$data" .data)"
    # --no-inline: resolving inlined frames runs addr2line over every address (minutes).
    folded="$DATA/$route.folded"
    perf script -i "$data" --no-inline 2>/dev/null | "$TOOLS/bin/inferno-collapse-perf" --all >"$folded"
    "$TOOLS/bin/inferno-flamegraph" --title "$route: whole machine under wrk -c50" --width 1600 --minwidth 0.05 \
        <"$folded" >"$OUT/flame-$route${PROFILE_SUFFIX:-}.svg"
    {
        echo "# $route: share of all CPU samples, by program (threads of one program summed)"
        perf report -i "$data" --no-inline -g none --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' || true
        echo
        echo "# $route: share of all CPU samples spent under (inclusive; a sample can count twice)"
        awk -v OFS='\t' '
            BEGIN { n = split("live stream writer|chat::live::writer::append;reply worker|chat::worker::Worker;PostgreSQL client|tokio_postgres;Redis client|redis::;HTTP (hyper)|hyper::proto;JSON|serde_json;JWT|jsonwebtoken;tracing|tracing_subscriber|tracing_core;malloc/free|malloc|_int_free|cfree", parts, ";")
                    for (i = 1; i <= n; i++) { split(parts[i], kv, "|"); name[i] = kv[1]; pat[i] = substr(parts[i], length(kv[1]) + 2) } }
            { c = $NF; total += c; if ($0 ~ /^tokio-rt-worker/) server += c
              for (i = 1; i <= n; i++) if ($0 ~ pat[i]) hit[i] += c }
            END { printf "%8.2f%%  the server (all of it)\n", 100 * server / total
                  for (i = 1; i <= n; i++) printf "%8.2f%%  %s\n", 100 * hit[i] / total, name[i] }' "$folded"
        echo
        echo "# $route: the server's hottest functions (self time, share of all samples)"
        perf report -i "$data" --no-inline --no-children -g none --comms tokio-rt-worker,local-server.ru \
            --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 || true
    } >"$OUT/profile-$route${PROFILE_SUFFIX:-}.txt"
    echo "profile: bench/results/{flame,profile}-$route${PROFILE_SUFFIX:-}.{svg,txt}"
done
rm -rf "$DATA"
