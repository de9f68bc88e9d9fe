# shellcheck shell=sh
# Stages for the test scripts (sourced by scripts/test.sh and scripts/test-qemu.sh;
# POSIX sh). Every stage runs, whatever happened before it; each one's result and time
# are kept for a summary at the end, and the summary fails if any stage failed.
#
#   stage NAME COMMAND [ARG...]   runs COMMAND in a subshell with `set -e`
#   stage_skip NAME WHY           records a stage that could not run (counts as failed)
#   stages_summary TITLE          prints the table; returns 1 if any stage failed

STAGES_FILE=$(mktemp "${TMPDIR:-/tmp}/btcagent-stages.XXXXXX")
STAGES_FAILED=0

stage() {
	stage_name=$1
	shift
	echo
	echo "== $stage_name"
	stage_start=$(date +%s)
	# `set -e` holds inside the subshell only when the subshell is not itself tested
	# by `if`/`||`, so run it bare, with the caller's errexit off for the moment.
	set +e
	(
		set -e
		"$@"
	)
	stage_rc=$?
	set -e
	stage_secs=$(($(date +%s) - stage_start))
	if [ "$stage_rc" -eq 0 ]; then
		stage_result=PASS
	else
		stage_result="FAIL (exit $stage_rc)"
		STAGES_FAILED=$((STAGES_FAILED + 1))
	fi
	printf '%s\t%s\t%s\n' "$stage_result" "$stage_secs" "$stage_name" >>"$STAGES_FILE"
	echo "-- $stage_name: $stage_result in ${stage_secs} s"
}

stage_skip() {
	STAGES_FAILED=$((STAGES_FAILED + 1))
	printf '%s\t%s\t%s\n' "SKIPPED ($2)" 0 "$1" >>"$STAGES_FILE"
	echo
	echo "== $1: skipped: $2"
}

stages_summary() {
	echo
	echo "== $1"
	while IFS="$(printf '\t')" read -r result secs name; do
		printf '%-28s %6s s  %s\n' "$result" "$secs" "$name"
	done <"$STAGES_FILE"
	rm -f "$STAGES_FILE"
	if [ "$STAGES_FAILED" -ne 0 ]; then
		echo "$STAGES_FAILED stage(s) failed"
		return 1
	fi
	echo "all stages passed"
}
