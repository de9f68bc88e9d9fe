#!/bin/sh
# Runs the fuzz targets of fuzz/ (one per parser reachable from a socket or a config
# file) for a bounded time each, starting from the seed corpus of real lines in
# fuzz/seeds/. Fails if any target crashes (a panic, an assertion of the target, a
# hang over 10 s on one input, or over 1 GB of memory).
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (10) each
#   FUZZ_SECONDS=3600 scripts/fuzz.sh stratum_line pool_frames   a long run
#
# Inputs found to be interesting are kept in fuzz/corpus/<target>/ (not in git), so a
# later run goes on from there; a crash is written to fuzz/artifacts/<target>/ and
# the command that replays it is printed. Built without a sanitizer (the code under
# test is safe Rust) and with debug assertions, so overflows are crashes too.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT/fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-10}

command -v cargo-fuzz >/dev/null 2>&1 || sh "$ROOT/scripts/test-deps-fuzz.sh"

TARGETS=${*:-$(cargo fuzz list)}
echo "fuzz: building $(echo "$TARGETS" | wc -w) targets" >&2
# shellcheck disable=SC2086 # one argument per target
if [ $# -eq 0 ]; then cargo fuzz build -s none -a; else for t in $TARGETS; do cargo fuzz build -s none -a "$t"; done; fi

failed=""
report=""
for t in $TARGETS; do
	[ -d "seeds/$t" ] || { echo "fuzz: no seeds/$t" >&2; failed="$failed $t"; continue; }
	mkdir -p "corpus/$t" "artifacts/$t"
	log=$(mktemp)
	if cargo fuzz run -s none -a "$t" "corpus/$t" "seeds/$t" -- \
		-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 \
		-print_final_stats=1 >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		cov=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p' | tail -n 1)
		line="ok    $t: $runs runs in ${SECONDS_EACH} s, coverage $cov"
	else
		artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 >&2
		line="FAIL  $t: crash in $artifact (replay: cd fuzz && cargo fuzz run -s none -a $t $artifact)"
		failed="$failed $t"
	fi
	rm -f "$log"
	echo "fuzz: $line" >&2
	report="$report
$line"
done

echo "fuzz summary:$report" >&2
[ -z "$failed" ] || { echo "fuzz: failed:$failed" >&2; exit 1; }
