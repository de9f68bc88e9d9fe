#!/bin/sh
# Cross-build btcagent for a big-endian 32-bit router (MIPS, mips_24kc) and an
# ARM router (armv7), check the binaries are what they claim, and run the
# end-to-end tests against them under qemu user-mode emulation.
#
# Usage: scripts/test-qemu.sh [TARGET...]
#   default targets: mips-unknown-linux-musl armv7-unknown-linux-musleabihf
#   x86_64-unknown-linux-musl (the static server binary) runs natively, no qemu.
#
# Big-endian MIPS is the target that catches byte-order and 32-bit mistakes
# (no AtomicU64, no usize-sized wire fields); armv7 is the common ARM router.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() {
	echo "test-qemu: FAIL: $*" >&2
	exit 1
}

# shellcheck source=scripts/stages.sh
. "$ROOT/scripts/stages.sh"

# ---- portability guard ------------------------------------------------------
portability_guard() {
	# 32-bit MIPS has no 64-bit atomics: AtomicU64/AtomicI64 do not exist there and
	# the build would fail only on the router targets. Catch it early, by name.
	if grep -rnE '\bAtomic[UI]64\b' src/ sim/src/ 2>/dev/null; then
		die "64-bit atomics are not available on 32-bit MIPS; use a Cell/RefCell on the single-threaded executor or a 32-bit counter"
	fi
	# Transmutes of wire data depend on host byte order; encode explicitly instead.
	if grep -rnE '\btransmute\b' src/ 2>/dev/null; then
		die "transmute found in src/: use explicit to_le_bytes/from_le_bytes"
	fi
}

TARGETS=${*:-mips-unknown-linux-musl armv7-unknown-linux-musleabihf}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# qemu binary and the `file` description each target must match; "" runs natively.
qemu_for() {
	case "$1" in
	x86_64-unknown-linux-musl) echo "" ;;
	mips-unknown-linux-musl) echo qemu-mips ;;
	mipsel-unknown-linux-musl) echo qemu-mipsel ;;
	aarch64-unknown-linux-musl) echo qemu-aarch64 ;;
	armv7-unknown-linux-musleabihf) echo qemu-arm ;;
	*) return 1 ;;
	esac
}
# The OpenWrt arch of the package built from each target (one of them for aarch64).
openwrt_arch_for() {
	case "$1" in
	mips-unknown-linux-musl) echo mips_24kc ;;
	mipsel-unknown-linux-musl) echo mipsel_24kc ;;
	aarch64-unknown-linux-musl) echo aarch64_cortex-a53 ;;
	armv7-unknown-linux-musleabihf) echo arm_cortex-a7_neon-vfpv4 ;;
	x86_64-unknown-linux-musl) echo x86_64 ;;
	esac
}
file_pattern_for() {
	case "$1" in
	mips-unknown-linux-musl) echo 'ELF 32-bit MSB executable, MIPS' ;;
	mipsel-unknown-linux-musl) echo 'ELF 32-bit LSB executable, MIPS' ;;
	aarch64-unknown-linux-musl) echo 'ELF 64-bit LSB executable, ARM aarch64' ;;
	armv7-unknown-linux-musleabihf) echo 'ELF 32-bit LSB executable, ARM, EABI5' ;;
	x86_64-unknown-linux-musl) echo 'ELF 64-bit LSB executable, x86-64' ;;
	esac
}

# The binary is what it claims, and starts and exits cleanly under emulation.
check_binary() {
	t=$1
	bin="$CARGO_TARGET_DIR/$t/release/btcagent"
	qemu=$(qemu_for "$t") || die "no qemu known for $t"
	if [ -n "$qemu" ]; then
		command -v "$qemu" >/dev/null 2>&1 || die "$qemu not found (scripts/test-deps-cross.sh)"
	fi
	desc=$(file -b "$bin")
	echo "$desc" | grep -qF "$(file_pattern_for "$t")" ||
		die "$bin: file says '$desc', expected '$(file_pattern_for "$t")'"
	echo "$desc" | grep -qF 'statically linked' ||
		die "$bin is not statically linked: $desc"
	echo "test-qemu: $t: $desc" >&2
	version=$($qemu "$bin" --version) || die "${qemu:-native} $bin --version exited with $?"
	echo "test-qemu: $t: --version under ${qemu:-native}: ${version:-<no output>}" >&2
}

# The e2e tests spawn `$BTCAGENT_RUNNER $BTCAGENT_BIN -c conf.json` instead of the host
# binary; the test harness itself runs natively. The harness is an ordinary host build
# (same as `cargo test`), so it reuses the normal test build instead of compiling a
# second profile.
e2e_under_qemu() {
	t=$1
	BTCAGENT_BIN="$CARGO_TARGET_DIR/$t/release/btcagent" BTCAGENT_RUNNER=$(qemu_for "$t") \
		cargo test --test e2e --test stratum_e2e
}

# The ipk for this target, as opkg would unpack it: its binary, run from the package's
# own UCI defaults (pool and port rewritten by the test), serves miners.
packaged_binary_under_qemu() {
	t=$1
	arch=$(openwrt_arch_for "$t")
	ipk_dir=$(mktemp -d)
	trap 'rm -rf "$ipk_dir"' EXIT
	bash "$ROOT/scripts/build-ipk.sh" "$arch" "$CARGO_TARGET_DIR/$t/release/btcagent" "$ipk_dir" ||
		die "build-ipk.sh $arch failed"
	mkdir -p "$ipk_dir/outer" "$ipk_dir/root"
	tar -xzf "$ipk_dir"/btcagent_*_"$arch".ipk -C "$ipk_dir/outer" || die "$arch ipk is not a gzip'd tar"
	tar -xzf "$ipk_dir/outer/data.tar.gz" -C "$ipk_dir/root" || die "$arch ipk has no data.tar.gz"
	cmp -s "$ipk_dir/root/etc/config/btcagent" "$ROOT/openwrt/files/btcagent.config" ||
		die "$arch ipk: etc/config/btcagent differs from openwrt/files/btcagent.config"
	runner=$(qemu_for "$t")
	echo "test-qemu: $t: the $arch ipk's binary, from its UCI config, under ${runner:-native}" >&2
	BTCAGENT_BIN="$ipk_dir/root/usr/bin/btcagent" BTCAGENT_RUNNER=$(qemu_for "$t") \
		cargo test --test e2e runs_from_the_packaged_uci_config
}

stage "portability guard (no 64-bit atomics, no transmute)" portability_guard
# Every target is built, checked and tested on its own: one that fails does not keep
# the others from running.
for t in $TARGETS; do
	stage "$t: cross build" sh "$ROOT/scripts/cross-build.sh" "$t"
	if [ "$stage_rc" -ne 0 ]; then
		stage_skip "$t: binary, e2e and packaged binary" "the build failed"
		continue
	fi
	stage "$t: binary format and --version" check_binary "$t"
	runner=$(qemu_for "$t")
	stage "$t: end-to-end tests under ${runner:-native}" e2e_under_qemu "$t"
	stage "$t: packaged binary (ipk) under ${runner:-native}" packaged_binary_under_qemu "$t"
done

stages_summary "test-qemu summary ($TARGETS)"
