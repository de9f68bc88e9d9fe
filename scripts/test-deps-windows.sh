#!/bin/sh
# What the Windows build and its test need (scripts/cross-build.sh x86_64-pc-windows-gnu,
# scripts/test-wine.sh): Debian's mingw-w64 (linker, C compiler for ring and the test's
# DLL) and wine64 to run the .exe. Idempotent.
set -eu
missing=""
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing="$missing gcc-mingw-w64-x86-64"
[ -x /usr/lib/wine/wine64 ] || missing="$missing wine64 wine"
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
# apt may be busy with another install on a shared machine: wait for it.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
	# shellcheck disable=SC2086 # $missing is a list of package names
	if apt-get update -q && apt-get install -y -q --no-install-recommends $missing; then
		exit 0
	fi
	echo "test-deps-windows: apt failed (attempt $attempt), retrying in 15 s" >&2
	sleep 15
done
exit 1
