#!/bin/bash
# Checks systemd/btcagent.service:
#  1. `systemd-analyze verify` accepts it (no warning either), and
#     `systemd-analyze security --offline` rates its sandbox at most 2.0 ("OK");
#  2. the settings the agent relies on are there (Restart=always, LimitNOFILE=65536,
#     DynamicUser, the directories, journal logging) and agree with the agent's own
#     defaults (the status file lies in RuntimeDirectory);
#  3. its ExecStart command line, run the way systemd would run it (an unprivileged
#     user, the unit's open-files limit, its working directory, its directories under a
#     scratch root), starts the agent: it listens, writes its status file where
#     `btcagent status` finds it, logs to standard error (the journal), tells
#     $NOTIFY_SOCKET READY=1 (Type=notify) and STOPPING=1, and stops cleanly on SIGTERM
#     (KillSignal).
#
# No systemd runs in this container (PID 1 is not systemd, cgroups v1 without
# delegation: `systemd --user` does not start), so step 3 stands in for
# `systemctl start`; on a systemd machine, docs/systemd.md's steps are the real thing.
#
# Usage: tests/systemd/check-unit.sh [BINARY]   (default: target/release/btcagent, else
# the static x86-64 build, else target/release/btcagent built now)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UNIT="$ROOT/systemd/btcagent.service"
fail() {
	echo "check-unit: FAIL: $*" >&2
	exit 1
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >/dev/null ||
		fail "systemd-analyze missing (apt-get install systemd)"
fi

BIN=${1:-}
if [ -z "$BIN" ]; then
	# scripts/test.sh builds target/release/btcagent just before: the current source.
	BIN="$ROOT/target/release/btcagent"
	[ -x "$BIN" ] || BIN="$ROOT/target/x86_64-unknown-linux-musl/release/btcagent"
	if [ ! -x "$BIN" ]; then
		(cd "$ROOT" && cargo build --release -p btcagent) || fail "cargo build --release"
		BIN="$ROOT/target/release/btcagent"
	fi
fi
[ -x "$BIN" ] || fail "$BIN is not executable"

SCRATCH=$(mktemp -d)
AGENT_PID=
NOTIFY_PID=
cleanup() {
	[ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null
	[ -n "$NOTIFY_PID" ] && kill "$NOTIFY_PID" 2>/dev/null
	rm -rf "$SCRATCH"
}
trap cleanup EXIT

# The value of KEY in the unit (the last assignment wins, as in systemd).
setting() {
	sed -n "s/^$1=//p" "$UNIT" | tail -n 1
}
expect() {
	have=$(setting "$1")
	[ "$have" = "$2" ] || fail "$1=$have in the unit, expected $1=$2"
}

# ---- 1. systemd's own checks --------------------------------------------------
# verify wants ExecStart's binary to exist: check a copy that names this build.
exec_start=$(setting ExecStart)
unit_bin=${exec_start%% *}
[ "$unit_bin" = /usr/local/bin/btcagent ] || fail "ExecStart runs $unit_bin, docs/systemd.md installs /usr/local/bin/btcagent"
mkdir -p "$SCRATCH/unit"
sed "s|^ExecStart=$unit_bin |ExecStart=$BIN |" "$UNIT" >"$SCRATCH/unit/btcagent.service"
if ! out=$(systemd-analyze verify "$SCRATCH/unit/btcagent.service" 2>&1); then
	fail "systemd-analyze verify: $out"
fi
# Unknown keys and bad values are only warnings to verify: none is accepted here.
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
echo "check-unit: systemd-analyze verify: ok ($(systemd-analyze --version | head -n 1))"
exposure=$(systemd-analyze security --offline=yes "$SCRATCH/unit/btcagent.service" 2>&1 |
	sed -n 's/.*Overall exposure level for btcagent.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security printed no exposure level"
awk "BEGIN { exit !($exposure <= 2.0) }" || fail "sandbox exposure $exposure, more than 2.0"
echo "check-unit: systemd-analyze security: exposure $exposure"

# ---- 2. the settings ------------------------------------------------------------
expect Restart always
expect LimitNOFILE 65536
expect DynamicUser yes
expect ConfigurationDirectory btcagent
expect RuntimeDirectory btcagent
expect StateDirectory btcagent
expect LogsDirectory btcagent
expect WorkingDirectory /var/lib/btcagent
expect KillSignal SIGTERM
expect Type notify
expect NotifyAccess main
case " $exec_start " in
*" -c /etc/btcagent/agent_conf.json "*) ;;
*) fail "ExecStart does not read /etc/btcagent/agent_conf.json (ConfigurationDirectory): $exec_start" ;;
esac
case " $exec_start " in
*" -l stderr "*) ;;
*) fail "ExecStart does not log to standard error (the journal): $exec_start" ;;
esac
# The agent reloads its config on SIGHUP (run for real below).
expect ExecReload '/bin/kill -HUP $MAINPID'
"$BIN" --help | grep -q SIGHUP || fail "btcagent --help does not say what SIGHUP does"

# The default status file must be in RuntimeDirectory (/var/run is /run).
printf '{"pools": [["127.0.0.1", 9, "x"]]}\n' >"$SCRATCH/minimal.json"
default_status=$("$BIN" -c "$SCRATCH/minimal.json" --print-config |
	sed -n 's/^ *"status_file": *"\(.*\)",*$/\1/p')
case "$default_status" in
/var/run/btcagent/* | /run/btcagent/*) ;;
*) fail "the agent's default status_file '$default_status' is not in /run/btcagent (RuntimeDirectory)" ;;
esac
echo "check-unit: settings: ok (default status file $default_status)"

# ---- 3. ExecStart, run as systemd would -------------------------------------------
# The unit's directories under a scratch root, owned by the service's user as systemd
# makes them; the configuration directory stays root's and read-only.
R="$SCRATCH/root"
mkdir -p "$R/etc/btcagent" "$R/run/btcagent" "$R/var/lib/btcagent" "$R/var/log/btcagent"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e 's/"agent_listen_ip": "0.0.0.0"/"agent_listen_ip": "127.0.0.1"/' \
	-e "s/\"agent_listen_port\": 3333/\"agent_listen_port\": $port/" \
	-e "s|^{|{\n    \"status_file\": \"$R/run/btcagent/status.json\", \"status_interval_seconds\": 1,|" \
	"$ROOT/agent_conf.default.json" >"$R/etc/btcagent/agent_conf.json"
chmod 0644 "$R/etc/btcagent/agent_conf.json"
# The command line, word for word, with the unit's paths moved under the scratch root.
args=$(echo "$exec_start" | sed -e "s|^$unit_bin ||" -e "s| /etc/btcagent/| $R/etc/btcagent/|g" \
	-e "s| /var/log/btcagent| $R/var/log/btcagent|g")
# DynamicUser: an unprivileged user and group of their own; nobody stands in.
if [ "$(id -u)" = 0 ]; then
	chown 65534:65534 "$R/run/btcagent" "$R/var/lib/btcagent" "$R/var/log/btcagent"
	chmod 0755 "$SCRATCH" "$R" "$R/etc" "$R/etc/btcagent" "$R/run" "$R/var" "$R/var/lib"
	as_service_user="setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs"
else
	as_service_user=""
fi
log="$SCRATCH/journal.txt"
: >"$log"
# Type=notify: systemd's notification socket, played by a datagram socket that records
# what it receives, one line per datagram.
notified="$SCRATCH/notified.txt"
: >"$notified"
python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
open(sys.argv[2] + ".up", "w").close()
while True:
    with open(sys.argv[2], "ab") as f:
        f.write(s.recv(4096) + b"\n")
' "$SCRATCH/notify.sock" "$notified" &
NOTIFY_PID=$!
i=0
until [ -e "$notified.up" ]; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || fail "the notify socket did not come up"
	sleep 0.1
done
# LimitNOFILE: systemd sets soft and hard. This container's own hard limit may be
# lower (20000 here) and cannot be raised without CAP_SYS_RESOURCE: then the highest
# the container allows, and say so.
nofile=$(setting LimitNOFILE)
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$nofile" ]; then
	echo "check-unit: this container caps open files at $hard: running with $hard, not $nofile"
	nofile=$hard
fi
# shellcheck disable=SC2086 # $args and $as_service_user are word lists, as systemd splits them
(cd "$R/var/lib/btcagent" && export NOTIFY_SOCKET="$SCRATCH/notify.sock" &&
	exec prlimit --nofile="$nofile:$nofile" $as_service_user "$BIN" $args) 2>"$log" &
AGENT_PID=$!

# Waits (up to 30 s) for a condition, polling: the agent's start, not a fixed time.
wait_for() {
	what=$1
	shift
	i=0
	until "$@"; do
		i=$((i + 1))
		[ "$i" -lt 300 ] || fail "timed out waiting for: $what; log:
$(cat "$log")"
		kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent exited while waiting for: $what; log:
$(cat "$log")"
		sleep 0.1
	done
}
wait_for "the agent listens on 127.0.0.1:$port" grep -q "listening for miners on 127.0.0.1:$port" "$log"
wait_for "READY=1 on the notify socket" grep -qx "READY=1" "$notified"
wait_for "the status file in the runtime directory" test -s "$R/run/btcagent/status.json"
summary=$("$BIN" status --file "$R/run/btcagent/status.json") || fail "btcagent status: $summary"
echo "check-unit: btcagent status: $(echo "$summary" | head -n 1)"
# The limits and the user the process has are the unit's.
pid=$(pgrep -P "$AGENT_PID" btcagent || echo "$AGENT_PID")
grep -q "^Max open files *$nofile *$nofile" "/proc/$pid/limits" || fail "open-files limit: $(grep 'open files' "/proc/$pid/limits")"
if [ -n "$as_service_user" ]; then
	uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
	[ "$uid" = 65534 ] || fail "the agent runs as uid $uid, not the unprivileged user"
fi
# systemctl reload: ExecReload with $MAINPID, as systemd runs it; the agent takes the
# (unchanged) config again and says RELOADING=1, then READY=1.
reload_cmd=$(setting ExecReload | sed "s/\$MAINPID/$AGENT_PID/")
$reload_cmd || fail "ExecReload failed: $reload_cmd"
wait_for "the reload in the log" grep -q "reload: the config is unchanged" "$log"
wait_for "RELOADING=1 then READY=1" sh -c "sed -n '/^RELOADING=1\$/,\$p' '$notified' | grep -qx READY=1"
kill -TERM "$AGENT_PID"
status=0
wait "$AGENT_PID" || status=$?
AGENT_PID=
[ "$status" = 0 ] || fail "exit status $status after SIGTERM; log:
$(cat "$log")"
grep -qx "STOPPING=1" "$notified" || fail "no STOPPING=1 on the notify socket after SIGTERM: $(cat "$notified")"
grep -q "stopped" "$log" || fail "no 'stopped' line after SIGTERM; log:
$(cat "$log")"
echo "check-unit: ExecStart as the unit runs it: listened, notified READY=1, wrote $R/run/btcagent/status.json, reloaded by ExecReload, stopped on SIGTERM with status 0"
echo "check-unit: ok"
