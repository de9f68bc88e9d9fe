#!/usr/bin/env bash
# Load benchmark of btcagent at farm scale (see docs/bench.md): builds the release
# binaries, runs every size RUNS times and prints the median table of each.
#
#   scripts/bench.sh               1k, 10k and 19k miners; 10k with the pool's share
#                                  responses, with a 50 ms coalescing window, with
#                                  one pool connection cut, with the pool failing
#                                  over, with a reload to another pool and with a
#                                  handoff to a new program (SIGUSR2); 3 runs each
#   SIZES="1000" RUNS=1 WINDOW=30 scripts/bench.sh      a quicker look
#   scripts/bench.sh smoke         50 miners for 5 s: only checks every share is valid
#
# Results (one JSON and one log per run, *-median.md tables) go to $OUT
# [bench-results]. perf, when it works, adds exact system-call counts; the script
# installs Debian's linux-perf for that unless NO_PERF=1.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${CARGO_TARGET_DIR:-target}/release"
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"1000 10000 19000"}
WINDOW=${WINDOW:-60}

echo "== building (cargo build --release -p btcagent -p btcagent-sim)"
cargo build --release -p btcagent -p btcagent-sim

if [ "${1:-}" = smoke ]; then
    exec "$BIN/loadtest" --miners 50 --probe 5 --seconds 5 --warmup 2 \
        --share-interval 1 --job-interval 2 --check
fi

if [ "${NO_PERF:-0}" != 1 ] && ! command -v perf >/dev/null 2>&1; then
    echo "== installing linux-perf (system-call counts; NO_PERF=1 skips)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q linux-perf; } ||
        echo "   linux-perf not installed: tables will lack system-call counts"
fi

mkdir -p "$OUT"
ls -l "$BIN/btcagent" | awk '{print "agent binary: " $5 " bytes (release, stripped)"}' |
    tee "$OUT/binary-size.txt"
FAILED=()

# run NAME [loadtest options]: RUNS runs, then the median table.
run() {
    local name=$1
    shift
    local i
    for i in $(seq "$RUNS"); do
        echo "== $name, run $i of $RUNS: loadtest $*"
        if ! "$BIN/loadtest" "$@" --json "$OUT/$name-$i.json" >"$OUT/$name-$i.log" 2>&1; then
            FAILED+=("$name-$i")
            tail -n 5 "$OUT/$name-$i.log"
        fi
        grep -E '^\| (agent RSS|agent CPU|job fan-out, probe|shares, whole run) ' "$OUT/$name-$i.log" || true
    done
    "$BIN/loadtest" --median "$OUT/$name"-[0-9]*.json --json "$OUT/$name-median.json" |
        tee "$OUT/$name-median.md"
}

# Each size's runs end with the fan-out floor (one writer thread, the same sockets);
# the other scenarios leave it out (--floor-jobs 0): it does not depend on them.
for n in $SIZES; do
    run "miners-$n" --miners "$n" --seconds "$WINDOW" --check
done
if [ -z "${SKIP_EXTRA:-}" ]; then
    run responses-10000 --miners 10000 --seconds "$WINDOW" --server-responses --check --floor-jobs 0
    # A shorter submit-coalescing window than the default 50 ms, for comparison.
    run coalesce5-10000 --miners 10000 --seconds "$WINDOW" --coalesce-ms 5 --check --floor-jobs 0
    # Correctness is reported, not checked: shares in flight on the cut connection
    # may be lost, and that is one of the figures.
    run cut-10000 --miners 10000 --seconds "$WINDOW" --cut-pool-at $((WINDOW / 3)) --floor-jobs 0
    # The farm's pool goes away for good (the next of the list is up), and a reload
    # that moves the agent to another pool: miners must not be disconnected.
    run failover-10000 --miners 10000 --seconds "$WINDOW" --after-window pool-fails --floor-jobs 0
    run reload-10000 --miners 10000 --seconds "$WINDOW" --after-window reload --floor-jobs 0
    # The agent execs its binary in place and the new program takes the miners over:
    # same pid, no miner disconnected, every miner registered again at the pool.
    run handoff-10000 --miners 10000 --seconds "$WINDOW" --after-window handoff --floor-jobs 0
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "bench: runs with problems (see their logs in $OUT): ${FAILED[*]}" >&2
    exit 1
fi
echo "bench: done; tables in $OUT/*-median.md"
