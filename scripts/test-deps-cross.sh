#!/bin/sh
# Install what scripts/cross-build.sh and scripts/test-qemu.sh need on Debian:
# Debian's Rust 1.96 with std sources (for -Zbuild-std), qemu user-mode
# emulators, `file`, and zig (pip package "ziglang") as the cross C linker.
# Idempotent: installs only what is missing.
set -eu

missing=""
[ -x /usr/bin/rustc ] || missing="$missing rustc-web"
[ -x /usr/bin/cargo ] || missing="$missing cargo-web"
[ -d /usr/lib/rustlib/src/rust/library ] || missing="$missing rust-web-src"
command -v qemu-mips >/dev/null 2>&1 || missing="$missing qemu-user"
command -v file >/dev/null 2>&1 || missing="$missing file"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -m pip --version >/dev/null 2>&1 || missing="$missing python3-pip"

if [ -n "$missing" ]; then
	echo "test-deps-cross: installing:$missing" >&2
	apt-get update -q
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

if ! python3 -m ziglang version >/dev/null 2>&1; then
	echo "test-deps-cross: installing ziglang (pip)" >&2
	# Debian marks its Python as externally managed (PEP 668); zig is a
	# self-contained binary wheel, so a system-wide install is harmless here.
	python3 -m pip install -q ziglang ||
		python3 -m pip install -q --break-system-packages ziglang
fi

python3 -m ziglang version >/dev/null
echo "test-deps-cross: ok (rustc $(/usr/bin/rustc --version | cut -d' ' -f2), zig $(python3 -m ziglang version))" >&2
