#!/bin/sh
# Cross-build btcagent.exe (x86_64-pc-windows-gnu, Debian's mingw-w64), check it is a
# static console program that needs only Windows' own DLLs, and run the end-to-end
# tests against it under wine, the way scripts/test-qemu.sh runs the router binaries
# under qemu-user.
#
# Usage: scripts/test-wine.sh
# Environment: CARGO_TARGET_DIR (default ./target), WINE (default /usr/lib/wine/wine64).
#
# The wine prefix lives in $CARGO_TARGET_DIR/wine-prefix, not in ~/.wine, and its
# wineserver is started here (persistent for the run, so every test's agent does not
# pay for a wineserver start) and stopped at the end.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() {
	echo "test-wine: FAIL: $*" >&2
	exit 1
}

# shellcheck source=scripts/stages.sh
. "$ROOT/scripts/stages.sh"

T=x86_64-pc-windows-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
EXE="$CARGO_TARGET_DIR/$T/release/btcagent.exe"
# Debian's /usr/bin/wine looks for the 32-bit wine first and prints a hint about it;
# the 64-bit loader is all a 64-bit .exe needs.
WINE=${WINE:-/usr/lib/wine/wine64}
WINESERVER=$(dirname "$WINE")/wineserver
export WINEPREFIX="$CARGO_TARGET_DIR/wine-prefix"
# wine's own fixme/err chatter (no display, no sound) is not the agent's log.
export WINEDEBUG=-all
# The .exe and its test-only bcryptprimitives.dll (tests/wine/bcryptprimitives.c).
RUN_DIR="$CARGO_TARGET_DIR/wine-run"

# Windows' own DLLs: anything else (libgcc_s_seh-1.dll, libwinpthread-1.dll) would
# mean the .exe is not static and would not start on a plain Windows.
SYSTEM_DLLS="kernel32.dll advapi32.dll ntdll.dll ws2_32.dll msvcrt.dll bcrypt.dll bcryptprimitives.dll userenv.dll api-ms-win-core-synch-l1-2-0.dll"

check_binary() {
	desc=$(file -b "$EXE")
	echo "$desc" | grep -qF 'PE32+ executable (console) x86-64' ||
		die "$EXE: file says '$desc', expected a PE32+ x86-64 console executable"
	dlls=$(x86_64-w64-mingw32-objdump -p "$EXE" | sed -n 's/^[[:space:]]*DLL Name: //p' | tr '[:upper:]' '[:lower:]' | sort -u)
	for dll in $dlls; do
		case " $SYSTEM_DLLS " in
		*" $dll "*) ;;
		*) die "$EXE imports $dll, which Windows does not have: not a static build" ;;
		esac
	done
	echo "test-wine: $desc; imports: $(echo "$dlls" | tr '\n' ' ')" >&2
}

# Wine 8 (Debian 12) has no bcryptprimitives.dll (Wine 9 added it), which Rust's std
# needs for ProcessPrng; a fixture DLL next to the .exe stands in for Windows' own.
prepare_run_dir() {
	rm -rf "$RUN_DIR"
	mkdir -p "$RUN_DIR"
	cp "$EXE" "$RUN_DIR/btcagent.exe"
	x86_64-w64-mingw32-gcc -O2 -shared -s -o "$RUN_DIR/bcryptprimitives.dll" \
		"$ROOT/tests/wine/bcryptprimitives.c" -ladvapi32
}

start_wine() {
	[ -x "$WINE" ] || die "$WINE not found (scripts/test-deps-windows.sh)"
	echo "test-wine: $("$WINE" --version), prefix $WINEPREFIX" >&2
	mkdir -p "$WINEPREFIX"
	# Fails when a server of this prefix runs already (an earlier run that was
	# interrupted): that one serves as well.
	"$WINESERVER" -p 2>/dev/null || echo "test-wine: reusing the running wineserver" >&2
	# The first start of a prefix creates it (some seconds); wait for that here.
	"$WINE" wineboot -i
	version=$("$WINE" "$RUN_DIR/btcagent.exe" --version) || die "btcagent.exe --version exited with $?"
	echo "test-wine: --version under wine: $version" >&2
	[ "$version" = "btcagent $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ] ||
		die "unexpected --version output: '$version'"
}

stop_wine() {
	"$WINESERVER" -k 2>/dev/null || true
}

# One test is left out, measured: the flood test pushes jobs as fast as the simulator
# can make them and needs the agent to keep within 4 MiB of the pool, with a stalled
# miner whose socket absorbs what the platform buffers. Under wine the stalled socket
# took 7,600-21,000 jobs before it refused more (native Linux: 3,300-5,500) and the
# agent, whose every socket call goes through wine, fell behind: the simulator dropped
# it in 3 runs out of 6. What it checks (a bounded per-miner queue) is the same code on
# every platform and is tested natively and under qemu.
e2e_under_wine() {
	BTCAGENT_BIN="$RUN_DIR/btcagent.exe" BTCAGENT_RUNNER="$WINE" cargo test --test e2e -- \
		--skip a_miner_that_stops_reading_is_cut_off_not_buffered_forever
}

stage "scripts/test-deps-windows.sh (mingw-w64, wine64)" sh "$ROOT/scripts/test-deps-windows.sh"
stage "$T: cross build" sh "$ROOT/scripts/cross-build.sh" "$T"
if [ "$stage_rc" -ne 0 ]; then
	stage_skip "$T: binary, wine and e2e" "the build failed"
else
	stage "$T: static console .exe, system DLLs only" check_binary
	stage "$T: run directory (with Wine 8's missing bcryptprimitives.dll)" prepare_run_dir
	stage "$T: wine prefix and --version" start_wine
	if [ "$stage_rc" -ne 0 ]; then
		stage_skip "$T: end-to-end tests under wine" "wine did not start the .exe"
	else
		stage "$T: end-to-end tests under wine" e2e_under_wine
	fi
	stop_wine
fi

stages_summary "test-wine summary ($T)"
