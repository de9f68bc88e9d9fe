#!/bin/sh
# The procd init script, run by busybox sh (OpenWrt's shell) against recording
# stand-ins for /etc/rc.common, /lib/functions.sh and procd's shell API.
# Usage: tests/openwrt/init-script.sh   (needs busybox and shellcheck:
# scripts/test-deps-openwrt.sh installs them)
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
INIT="$ROOT/openwrt/files/btcagent.init"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=tests/openwrt/lib/checks.sh
. "$ROOT/tests/openwrt/lib/checks.sh"

# The stand-ins. config_get/config_get_bool behave like OpenWrt's functions.sh over
# CONFIG_<section>_<option> variables (config_load would set them from the file);
# every procd_*, logger and mkdir call is written to $RECORD, one argument per [].
cat >"$WORK/stubs.sh" <<'STUBS'
record() {
	printf '%s' "$1" >>"$RECORD"
	shift
	for arg in "$@"; do printf ' [%s]' "$arg" >>"$RECORD"; done
	echo >>"$RECORD"
}
config_load() { record config_load "$@"; }
config_get() {
	eval "_value=\${CONFIG_${2}_${3}:-\${4:-}}"
	eval "$1=\$_value"
}
config_get_bool() {
	config_get _bool "$2" "$3" "${4:-}"
	case "$_bool" in
	1 | on | true | yes | enabled) _bool=1 ;;
	0 | off | false | no | disabled) _bool=0 ;;
	*) _bool="${4:-}" ;;
	esac
	eval "$1=\$_bool"
}
procd_open_instance() { record procd_open_instance "$@"; }
procd_set_param() { record procd_set_param "$@"; }
procd_append_param() { record procd_append_param "$@"; }
procd_close_instance() { record procd_close_instance "$@"; }
procd_add_reload_trigger() { record procd_add_reload_trigger "$@"; }
logger() { record logger "$@"; }
mkdir() { record mkdir "$@"; }
STUBS

# run_init NAME FUNCTION [CONFIG_x=y ...]: source the init script in busybox sh with the
# given UCI values and call FUNCTION; the record is left in $WORK/NAME.
run_init() {
	name=$1 function=$2
	shift 2
	: >"$WORK/$name"
	if ! env -i PATH="$PATH" RECORD="$WORK/$name" "$@" busybox sh -c \
		". '$WORK/stubs.sh'; . '$INIT'; $function" >"$WORK/$name.out" 2>&1; then
		fail "$name: $function exited non-zero" "$WORK/$name.out"
		return 1
	fi
}

# has NAME LINE: the record of NAME contains exactly this line.
has() { grep -Fxq -- "$2" "$WORK/$1"; }

expect_line() {
	if has "$1" "$2"; then pass "$1: $2"; else fail "$1: missing: $2" "$WORK/$1"; fi
}

expect_not_started() {
	if grep -q '^procd_' "$WORK/$1"; then
		fail "$1: an instance was started" "$WORK/$1"
	else
		pass "$1: no instance"
	fi
	if grep -q '^logger \[-t\] \[btcagent\] \[not starting: disabled' "$WORK/$1"; then
		pass "$1: reason logged"
	else
		fail "$1: reason not logged" "$WORK/$1"
	fi
}

if ! command -v busybox >/dev/null; then
	echo "busybox is missing: run scripts/test-deps-openwrt.sh"
	exit 1
fi

if busybox sh -n "$INIT"; then pass "busybox sh parses the script"; else fail "busybox sh -n"; fi

run_init disabled start_service CONFIG_main_enabled=0 CONFIG_main_log_verbosity=3 &&
	expect_not_started disabled
run_init unset start_service && expect_not_started unset
# OpenWrt's config_get_bool is case-sensitive: 'TRUE' is no boolean, and the log says so.
for spelling in maybe TRUE Yes ON; do
	if run_init "bad-bool-$spelling" start_service CONFIG_main_enabled=$spelling; then
		if grep -q '^procd_' "$WORK/bad-bool-$spelling"; then
			fail "bad-bool-$spelling: an instance was started" "$WORK/bad-bool-$spelling"
		else
			expect_line "bad-bool-$spelling" "logger [-t] [btcagent] [not starting: enabled '$spelling' is not a boolean; use 1 or 0 (OpenWrt reads only 1/0, on/off, true/false, yes/no, enabled/disabled, in lower case)]"
		fi
	fi
done
for spelling in 1 on true yes enabled; do
	run_init "bool-$spelling" start_service CONFIG_main_enabled=$spelling &&
		expect_line "bool-$spelling" "procd_set_param [respawn] [3600] [5] [5]"
done

if run_init defaults start_service CONFIG_main_enabled=1; then
	expect_line defaults "config_load [btcagent]"
	expect_line defaults "mkdir [-p] [/var/run/btcagent]"
	expect_line defaults "procd_set_param [command] [/usr/bin/btcagent] [--uci] [/etc/config/btcagent] [-v] [0] [-l] [syslog]"
	expect_line defaults "procd_set_param [respawn] [3600] [5] [5]"
	expect_line defaults "procd_set_param [limits] [nofile=65536 65536]"
	expect_line defaults "procd_set_param [stdout] [1]"
	expect_line defaults "procd_set_param [stderr] [1]"
	expect_line defaults "procd_set_param [file] [/etc/config/btcagent]"
	expect_line defaults "procd_set_param [reload_signal] [HUP]"
	# Every parameter sits between one open and one close.
	order=$(grep '^procd_' "$WORK/defaults" | sed 's/ .*//' | uniq | tr '\n' ' ')
	if [ "$order" = "procd_open_instance procd_set_param procd_close_instance " ]; then
		pass "defaults: one instance, opened then closed"
	else
		fail "defaults: instance calls out of order: $order" "$WORK/defaults"
	fi
	if grep -q '^logger' "$WORK/defaults"; then
		fail "defaults: logged a complaint" "$WORK/defaults"
	else
		pass "defaults: nothing logged"
	fi
fi

run_init triggers service_triggers &&
	expect_line triggers "procd_add_reload_trigger [btcagent]"

# The stand-in record of the defaults run, turned into the JSON procd.sh builds from
# those calls (arrays for command/respawn/file, a table for limits, booleans for
# stdout/stderr, config.change for the reload trigger), must equal what the real
# procd.sh + jshn sent (tests/openwrt/recorded/procd-start.json).
if command -v python3 >/dev/null; then
	if python3 - "$WORK/defaults" "$WORK/triggers" "$ROOT/tests/openwrt/recorded/procd-start.json" >"$WORK/procd-json.out" 2>&1 <<'PY'; then
import json, re, sys
def calls(path):
    for line in open(path):
        name, *args = line.rstrip("\n").split(" ", 1)
        yield name, re.findall(r"\[([^]]*)\]", args[0] if args else "")
instance = {}
for name, args in calls(sys.argv[1]):
    if name != "procd_set_param":
        continue
    key, values = args[0], args[1:]
    if key in ("command", "respawn", "file"):
        instance[key] = values
    elif key == "limits":
        instance[key] = dict(v.split("=", 1) for v in values)
    elif key in ("stdout", "stderr"):
        instance[key] = values[0] == "1"
    elif key == "reload_signal":
        # procd.sh: json_add_int reload_signal $(kill -l NAME)
        instance[key] = {"HUP": 1, "USR1": 10, "USR2": 12}[values[0]]
    else:
        raise SystemExit("no rule for procd_set_param " + key)
triggers = [["config.change", ["if", ["eq", "package", a[0]], ["run_script", "/etc/init.d/btcagent", "reload"]], 1000]
            for n, a in calls(sys.argv[2]) if n == "procd_add_reload_trigger"]
built = {"name": "btcagent", "script": "/etc/init.d/btcagent", "instances": {"instance1": instance}, "triggers": triggers}
recorded = json.load(open(sys.argv[3]))
if built != recorded:
    raise SystemExit("built " + json.dumps(built) + "\nrecorded " + json.dumps(recorded))
PY
		pass "defaults: the procd JSON matches the real procd.sh recording"
	else
		fail "defaults: the procd JSON differs from the real procd.sh recording" "$WORK/procd-json.out"
	fi
else
	fail "python3 is missing (compares the procd JSON): run scripts/test-deps-openwrt.sh"
fi

if run_init stderr start_service CONFIG_main_enabled=yes CONFIG_main_log_verbosity=2 \
	CONFIG_main_log_target=stderr; then
	expect_line stderr "procd_set_param [command] [/usr/bin/btcagent] [--uci] [/etc/config/btcagent] [-v] [2] [-l] [stderr]"
fi

if run_init bad-values start_service CONFIG_main_enabled=on CONFIG_main_log_verbosity=loud \
	CONFIG_main_log_target=/tmp; then
	expect_line bad-values "procd_set_param [command] [/usr/bin/btcagent] [--uci] [/etc/config/btcagent] [-v] [0] [-l] [syslog]"
	expect_line bad-values "logger [-t] [btcagent] [log_verbosity 'loud' is not a number, using 0]"
	expect_line bad-values "logger [-t] [btcagent] [log_target '/tmp' is neither syslog nor stderr, using syslog]"
fi


if ! command -v shellcheck >/dev/null; then
	fail "shellcheck is missing: run scripts/test-deps-openwrt.sh"
else
	for script in "$INIT" "$ROOT/openwrt/ipk/postinst" "$ROOT/openwrt/ipk/prerm"; do
		if shellcheck -s sh "$script" >"$WORK/shellcheck.out" 2>&1; then
			pass "shellcheck -s sh ${script#"$ROOT"/}"
		else
			fail "shellcheck -s sh ${script#"$ROOT"/}" "$WORK/shellcheck.out"
		fi
	done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
