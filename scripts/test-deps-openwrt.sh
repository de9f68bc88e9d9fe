#!/bin/sh
# Installs what tests/openwrt/*.sh need: busybox (OpenWrt's shell, to run the init
# script in), the shellcheck linter and GNU make (to read openwrt/Makefile); GNU tar
# and gzip come with Debian; python3 compares the procd JSON. Idempotent.
set -eu

missing=
command -v busybox >/dev/null 2>&1 || missing="$missing busybox"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
command -v make >/dev/null 2>&1 || missing="$missing make"
# Turns the init script's recorded procd calls into procd's JSON for the comparison.
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
[ -z "$missing" ] && exit 0

export DEBIAN_FRONTEND=noninteractive
# apt may be busy with another install on a shared machine: wait for it.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
	# shellcheck disable=SC2086 # $missing is a list of package names
	if apt-get update -q && apt-get install -y -q --no-install-recommends $missing; then
		exit 0
	fi
	echo "test-deps-openwrt: apt failed (attempt $attempt), retrying in 15 s" >&2
	sleep 15
done
exit 1
