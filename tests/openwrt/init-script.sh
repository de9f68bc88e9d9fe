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
# One write a line: ubus and jsonfilter record from the two ends of a pipe at once.
record() {
	_line=$1
	shift
	for arg in "$@"; do _line="$_line [$arg]"; done
	printf '%s\n' "$_line" >>"$RECORD"
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
# procd.sh's procd_running SERVICE [INSTANCE] asks procd whether the instance runs;
# procd_send_signal SERVICE [INSTANCE] [SIGNAL] sends it a signal (ubus call service
# signal). Here STUB_RUNNING=1 makes it run, STUB_SIGNAL_RC fails the signal.
procd_running() { record procd_running "$@"; [ "${STUB_RUNNING:-0}" = 1 ]; }
procd_send_signal() { record procd_send_signal "$@"; return "${STUB_SIGNAL_RC:-0}"; }
# rc.common's start and stop for a procd script (defined after it sources the script).
start() { record start "$@"; }
stop() { record stop "$@"; }
# ubus call service list {"name":...} as procd answers it (instance_dump: "pid" only
# while the instance runs), STUB_PID being the pid; jsonfilter picks that pid, for the
# one expression the init script uses (run with the real jsonfilter:
# tests/openwrt/recorded/README).
ubus() {
	record ubus "$@"
	if [ "$*" = 'call service list {"name":"btcagent"}' ] && [ -n "${STUB_PID:-}" ]; then
		printf '{"btcagent":{"instances":{"instance1":{"running":true,"pid":%s}}}}\n' "$STUB_PID"
	fi
}
jsonfilter() {
	record jsonfilter "$@"
	[ "$*" = "-l 1 -e @['btcagent'].instances[*].pid" ] || return 1
	sed -n 's/.*"pid":\([0-9]*\).*/\1/p' | grep .
}
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
	expect_line defaults "procd_set_param [file] [/etc/config/btcagent] [/usr/bin/btcagent]"
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

# --- restart: a handoff (SIGUSR2) while the agent runs, is enabled and would get the
# same command line; rc.common's stop + start otherwise.
# fake_proc PID WORD...: a /proc/PID/cmdline holding these words, as the kernel writes it.
fake_proc() {
	_pid=$1
	shift
	busybox mkdir -p "$WORK/proc/$_pid"
	printf '%s\0' "$@" >"$WORK/proc/$_pid/cmdline"
}
fake_proc 4242 /usr/bin/btcagent --uci /etc/config/btcagent -v 0 -l syslog
# A process whose command line carries more words after procd's (what a handed-over
# agent would show, should the handoff add any).
fake_proc 4343 /usr/bin/btcagent --uci /etc/config/btcagent -v 0 -l syslog --handed-over
restart="PROC_DIR='$WORK/proc'; restart"
# expect_restarted NAME: stop, then start, and no signal.
expect_restarted() {
	order=$(grep -E '^(stop|start|procd_send_signal)( |$)' "$WORK/$1" | sed 's/ .*//' | tr '\n' ' ')
	same "$1: stop, then start, no handoff" "stop start " "$order"
}
if run_init restart-handoff "$restart" CONFIG_main_enabled=1 STUB_RUNNING=1 STUB_PID=4242; then
	expect_line restart-handoff "procd_running [btcagent]"
	expect_line restart-handoff "ubus [call] [service] [list] [{\"name\":\"btcagent\"}]"
	expect_line restart-handoff "jsonfilter [-l] [1] [-e] [@['btcagent'].instances[*].pid]"
	expect_line restart-handoff "procd_send_signal [btcagent] [*] [USR2]"
	expect_line restart-handoff "logger [-t] [btcagent] [restart: asked the agent (pid 4242) to hand its miners over to /usr/bin/btcagent; logread -e btcagent says whether it did; stop, then start, to begin afresh (drops the miners)]"
	if grep -Eq '^(stop|start)( |$)' "$WORK/restart-handoff"; then
		fail "restart-handoff: stopped or started" "$WORK/restart-handoff"
	else
		pass "restart-handoff: neither stop nor start"
	fi
fi
run_init restart-handed-over "$restart" CONFIG_main_enabled=1 STUB_RUNNING=1 STUB_PID=4343 &&
	expect_line restart-handed-over "procd_send_signal [btcagent] [*] [USR2]"
run_init restart-stopped "$restart" CONFIG_main_enabled=1 STUB_RUNNING=0 &&
	expect_restarted restart-stopped
run_init restart-disabled "$restart" CONFIG_main_enabled=0 STUB_RUNNING=1 STUB_PID=4242 &&
	expect_restarted restart-disabled
run_init restart-bad-bool "$restart" CONFIG_main_enabled=TRUE STUB_RUNNING=1 STUB_PID=4242 &&
	expect_restarted restart-bad-bool
# The handed-over process would keep -l syslog: a new process is the only way.
run_init restart-new-target "$restart" CONFIG_main_enabled=1 CONFIG_main_log_target=stderr \
	STUB_RUNNING=1 STUB_PID=4242 && expect_restarted restart-new-target
run_init restart-new-verbosity "$restart" CONFIG_main_enabled=1 CONFIG_main_log_verbosity=2 \
	STUB_RUNNING=1 STUB_PID=4242 && expect_restarted restart-new-verbosity
# procd says running but gives no pid, or the process is gone: stop + start.
run_init restart-no-pid "$restart" CONFIG_main_enabled=1 STUB_RUNNING=1 &&
	expect_restarted restart-no-pid
run_init restart-gone "$restart" CONFIG_main_enabled=1 STUB_RUNNING=1 STUB_PID=999999 &&
	expect_restarted restart-gone
if run_init restart-signal-fails "$restart" CONFIG_main_enabled=1 STUB_RUNNING=1 STUB_PID=4242 \
	STUB_SIGNAL_RC=1; then
	order=$(grep -E '^(stop|start|procd_send_signal)( |$)' "$WORK/restart-signal-fails" | sed 's/ .*//' | tr '\n' ' ')
	same "restart-signal-fails: the signal, then stop and start" "procd_send_signal stop start " "$order"
fi
if run_init restart-args "$restart extra" CONFIG_main_enabled=1 STUB_RUNNING=0; then
	expect_line restart-args "stop [extra]"
	expect_line restart-args "start [extra]"
fi
run_init running service_running STUB_RUNNING=1 && expect_line running "procd_running [btcagent]"
# stop on a package upgrade of a running agent (the SDK-generated prerm's
# default_prerm): stop_service leaves the script before rc.common's procd_kill.
if run_init stop-upgrade 'stop_service; echo killed' STUB_RUNNING=1 PKG_UPGRADE=1; then
	expect_line stop-upgrade "logger [-t] [btcagent] [package upgrade: not stopping the agent; the new package's start hands its miners over to the new binary]"
	if grep -qx killed "$WORK/stop-upgrade.out"; then
		fail "stop-upgrade: went on to procd_kill" "$WORK/stop-upgrade.out"
	else
		pass "stop-upgrade: left before procd_kill"
	fi
fi
for case in "stop-plain STUB_RUNNING=1" "stop-upgrade-stopped STUB_RUNNING=0 PKG_UPGRADE=1" \
	"stop-removal STUB_RUNNING=1 PKG_UPGRADE=0"; do
	name=${case%% *}
	# shellcheck disable=SC2086 # the case's assignments, one word each
	if run_init "$name" 'stop_service; echo killed' ${case#* } &&
		grep -qx killed "$WORK/$name.out" && ! grep -q '^logger' "$WORK/$name"; then
		pass "$name: stops as rc.common does"
	else
		fail "$name: did not go on to procd_kill" "$WORK/$name.out"
	fi
done
if run_init not-running 'service_running || echo stopped' STUB_RUNNING=0 &&
	grep -qx stopped "$WORK/not-running.out"; then
	pass "not-running: service_running fails"
else
	fail "not-running: service_running succeeded" "$WORK/not-running.out"
fi

# --- the package's prerm (openwrt/ipk/prerm), on an upgrade and on removal. It runs on
# the router with an empty IPKG_INSTROOT, so /lib/functions.sh and /etc/init.d/btcagent
# are absolute: a copy with both moved under $WORK/root stands in, its functions.sh
# recording default_prerm (OpenWrt's disables, unless PKG_UPGRADE=1, then stops) and
# its init script answering "running" as STUB_RUNNING says.
busybox mkdir -p "$WORK/root/lib" "$WORK/root/etc/init.d"
cat >"$WORK/root/lib/functions.sh" <<'FUNCS'
default_prerm() { echo "default_prerm $* PKG_UPGRADE=${PKG_UPGRADE:-}" >>"$RECORD"; }
FUNCS
cat >"$WORK/root/etc/init.d/btcagent" <<'INIT'
#!/bin/sh
echo "init.d $*" >>"$RECORD"
[ "$1" = running ] && [ "${STUB_RUNNING:-0}" = 1 ]
INIT
busybox mkdir -p "$WORK/bin"
# shellcheck disable=SC2016 # expanded when the stand-in runs
printf '#!/bin/sh\necho "logger $*" >>"$RECORD"\n' >"$WORK/bin/logger"
chmod +x "$WORK/root/etc/init.d/btcagent" "$WORK/bin/logger"
sed -e "s|/lib/functions.sh|$WORK/root/lib/functions.sh|g" \
	-e "s|/etc/init.d/btcagent running|$WORK/root/etc/init.d/btcagent running|" \
	"$ROOT/openwrt/ipk/prerm" >"$WORK/prerm"
same "prerm: the copy moves the three paths" 3 \
	"$(diff "$ROOT/openwrt/ipk/prerm" "$WORK/prerm" | grep -c '^>')"
# prerm NAME "VAR=value ..." ARGS...: the copy under busybox sh; the record in $WORK/NAME.
prerm() {
	name=$1 vars=$2
	shift 2
	: >"$WORK/$name"
	# shellcheck disable=SC2086 # $vars is a list of assignments
	if env -i PATH="$WORK/bin:$PATH" RECORD="$WORK/$name" $vars busybox sh "$WORK/prerm" "$@" \
		>"$WORK/$name.out" 2>&1; then
		pass "$name: exits 0"
	else
		fail "$name: exits non-zero" "$WORK/$name.out"
	fi
}
prerm prerm-upgrade-running "PKG_UPGRADE=1 STUB_RUNNING=1" upgrade 0.2.0-r1
same "prerm-upgrade-running: asks whether it runs, stops nothing, says so" "init.d running
logger -t btcagent package upgrade: the agent keeps running; the new package's start hands its miners over to the new binary" \
	"$(cat "$WORK/prerm-upgrade-running")"
prerm prerm-upgrade-stopped "PKG_UPGRADE=1 STUB_RUNNING=0" upgrade 0.2.0-r1
same "prerm-upgrade-stopped: default_prerm as before" \
	"init.d running
default_prerm $WORK/prerm upgrade 0.2.0-r1 PKG_UPGRADE=1" "$(cat "$WORK/prerm-upgrade-stopped")"
prerm prerm-remove "PKG_UPGRADE=0 STUB_RUNNING=1" remove
same "prerm-remove: default_prerm (disable, stop), running or not" \
	"default_prerm $WORK/prerm remove PKG_UPGRADE=0" "$(cat "$WORK/prerm-remove")"
prerm prerm-offline "PKG_UPGRADE=1 STUB_RUNNING=1 IPKG_INSTROOT=/" upgrade 0.2.0-r1
same "prerm-offline: an image build goes to default_prerm" \
	"default_prerm $WORK/prerm upgrade 0.2.0-r1 PKG_UPGRADE=1" "$(cat "$WORK/prerm-offline")"

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
