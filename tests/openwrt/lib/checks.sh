# Shared by the shell tests of tests/openwrt (POSIX sh; sourced after WORK is set):
# counters, one line per check, and the closing "N passed, M failed" line.
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
# fail NAME [FILE]: FILE (e.g. the command's output) is shown indented.
fail() {
	failed=$((failed + 1))
	echo "FAIL $1"
	if [ -n "${2:-}" ] && [ -f "$2" ]; then sed 's/^/     | /' "$2"; fi
}
# check NAME COMMAND...: pass when the command succeeds.
check() {
	_name=$1
	shift
	if "$@" >"$WORK/check.out" 2>&1; then pass "$_name"; else fail "$_name" "$WORK/check.out"; fi
}
# same NAME EXPECTED ACTUAL
same() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		printf 'expected: %s\nactual:   %s\n' "$2" "$3" >"$WORK/same.out"
		fail "$1" "$WORK/same.out"
	fi
}
