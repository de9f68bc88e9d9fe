#!/bin/sh
# Build static, stripped, size-optimised btcagent binaries for OpenWrt routers,
# on a Debian machine, without Docker.
#
# Usage: scripts/cross-build.sh [TARGET...]
#   TARGET is a Rust target triple; default: all four router targets below.
#   Also: x86_64-unknown-linux-musl, a static binary for any Linux server
#   (aarch64-unknown-linux-musl serves ARM servers as well as routers), and
#   x86_64-pc-windows-gnu (linked by Debian's mingw-w64, see docs/windows.md).
#   Output: $CARGO_TARGET_DIR/<target>/release/btcagent (CARGO_TARGET_DIR
#   defaults to ./target), then a size table and `file` output.
#
# Why this recipe: the MIPS musl targets are tier 3 (no prebuilt std from
# rustup), so std is rebuilt from Debian's rust-web-src with -Zbuild-std
# (RUSTC_BOOTSTRAP=1 unlocks the nightly flag on Debian's stable 1.96).
# zig (pip package "ziglang") is the C linker and provides musl + crt objects
# for every target, so no per-target gcc toolchain is needed.
#
# Environment:
#   CARGO_TARGET_DIR      where to build (default: <repo>/target)
#   BTCAGENT_NO_INSTALL=1 never install missing tools, just fail
#   BTCAGENT_PROFILE      cargo profile (default: release)
#   BTCAGENT_EXAMPLE      build this example (examples/NAME.rs) instead of the agent,
#                         e.g. share_check_bench to run under qemu-user
#   BTCAGENT_PANIC_MESSAGES=1  keep panic messages (panic=abort, as in
#                         Cargo.toml) instead of panic=immediate-abort
#
# Panic strategy: by default the router binaries use
# -Cpanic=immediate-abort (std rebuilt without its panic formatting and
# backtrace machinery): about 40% smaller (mipsel, representative main: 814 KiB
# -> 476 KiB). The cost: a panic kills the process by a trap signal (SIGTRAP
# on MIPS, shell status 133) without printing message and location. No panic is meant to be reachable, and procd
# restarts the agent; set BTCAGENT_PANIC_MESSAGES=1 to diagnose one. Nothing in
# the code may depend on either strategy (the OpenWrt SDK build uses unwind).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ALL_TARGETS="mips-unknown-linux-musl mipsel-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"
# Built on request only (not routers): Linux servers.
# Windows PCs next to the miners: linked by Debian's mingw-w64 instead of zig.
SERVER_TARGETS="x86_64-unknown-linux-musl x86_64-pc-windows-gnu"
PROFILE=${BTCAGENT_PROFILE:-release}
if [ -n "${BTCAGENT_EXAMPLE:-}" ]; then
	ARTIFACT="--example $BTCAGENT_EXAMPLE"
	ARTIFACT_PATH="examples/$BTCAGENT_EXAMPLE"
else
	ARTIFACT="--bin btcagent"
	ARTIFACT_PATH="btcagent"
fi
# The file cargo writes for a target: Windows executables end in .exe.
artifact_path() {
	case "$1" in
	*-windows-*) echo "$ARTIFACT_PATH.exe" ;;
	*) echo "$ARTIFACT_PATH" ;;
	esac
}

die() {
	echo "cross-build: error: $*" >&2
	exit 1
}

# zig's target triple for each Rust target.
zig_triple() {
	case "$1" in
	mips-unknown-linux-musl) echo mips-linux-musleabi ;;
	mipsel-unknown-linux-musl) echo mipsel-linux-musleabi ;;
	aarch64-unknown-linux-musl) echo aarch64-linux-musl ;;
	armv7-unknown-linux-musleabihf) echo arm-linux-musleabihf ;;
	x86_64-unknown-linux-musl) echo x86_64-linux-musl ;;
	x86_64-pc-windows-gnu) echo "none: linked by mingw-w64" ;;
	*) return 1 ;;
	esac
}

# zig's -mcpu for each target: the CPU OpenWrt builds for, so zig's own
# objects (crt, musl) match what rustc emits.
zig_cpu() {
	case "$1" in
	mips-unknown-linux-musl | mipsel-unknown-linux-musl) echo mips32r2 ;;
	aarch64-unknown-linux-musl) echo generic ;;
	armv7-unknown-linux-musleabihf) echo generic+v7a+vfp3d16 ;;
	# The x86-64 baseline rustc itself targets: runs on any 64-bit PC or server.
	x86_64-unknown-linux-musl) echo x86_64 ;;
	esac
}

# ---- tools ------------------------------------------------------------------
# Debian's rustc-web/cargo-web (1.96) are /usr/bin/rustc and /usr/bin/cargo;
# rustup's shims in ~/.cargo/bin must not be picked up, so use full paths.
RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
SYSROOT_SRC=/usr/lib/rustlib/src/rust/library

install_missing() {
	[ "${BTCAGENT_NO_INSTALL:-0}" = 1 ] && die "$1 missing and BTCAGENT_NO_INSTALL=1"
	sh "$ROOT/scripts/test-deps-cross.sh" || die "installing cross-build dependencies failed"
}

if [ ! -x "$RUSTC" ] || [ ! -x "$CARGO" ] || [ ! -d "$SYSROOT_SRC" ]; then
	install_missing "Debian rustc-web/cargo-web/rust-web-src"
fi
if ! python3 -m ziglang version >/dev/null 2>&1; then
	install_missing "zig (pip ziglang)"
fi
[ -x "$RUSTC" ] || die "$RUSTC not found (apt-get install rustc-web)"
[ -x "$CARGO" ] || die "$CARGO not found (apt-get install cargo-web)"
[ -d "$SYSROOT_SRC" ] || die "$SYSROOT_SRC not found (apt-get install rust-web-src)"
python3 -m ziglang version >/dev/null 2>&1 || die "zig not usable (pip install ziglang)"
command -v file >/dev/null 2>&1 || die "'file' not found (apt-get install file)"
case " $* " in
*-windows-gnu*)
	if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
		[ "${BTCAGENT_NO_INSTALL:-0}" = 1 ] && die "x86_64-w64-mingw32-gcc missing and BTCAGENT_NO_INSTALL=1"
		sh "$ROOT/scripts/test-deps-windows.sh" || die "installing mingw-w64 failed"
	fi
	command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 ||
		die "x86_64-w64-mingw32-gcc not found (apt-get install gcc-mingw-w64-x86-64)"
	;;
esac

if [ "${BTCAGENT_PANIC_MESSAGES:-0}" = 1 ]; then
	PANIC_FLAGS=""
else
	# Unstable flag on a stable compiler: allowed by RUSTC_BOOTSTRAP=1 below.
	PANIC_FLAGS="-Zunstable-options -Cpanic=immediate-abort"
fi

# Size, for the routers' flash (mipsel, TLS included: 1,645,976 -> ~1,556,000 bytes):
# no file/line locations, derived Debug output reduced to type names (messages that
# quote strings with {:?} are unaffected), and std's size-optimised algorithms.
# BTCAGENT_SIZE_FLAGS= (empty) turns these off.
SIZE_FLAGS=${BTCAGENT_SIZE_FLAGS-"-Zlocation-detail=none -Zfmt-debug=shallow"}
BTCAGENT_STD_FEATURES=${BTCAGENT_STD_FEATURES-optimize_for_size}

TARGETS=${*:-$ALL_TARGETS}
for t in $TARGETS; do
	zig_triple "$t" >/dev/null || die "unsupported target '$t' (supported: $ALL_TARGETS $SERVER_TARGETS)"
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$CARGO_TARGET_DIR"
CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
WRAPPERS="$CARGO_TARGET_DIR/cross-linkers"
mkdir -p "$WRAPPERS"

# zig keeps a cache of built musl/crt objects; keep it with the build so that
# parallel engineers/CI jobs do not fight over ~/.cache.
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$CARGO_TARGET_DIR/zig-cache}"
export ZIG_LOCAL_CACHE_DIR="${ZIG_LOCAL_CACHE_DIR:-$ZIG_GLOBAL_CACHE_DIR}"

# Linker wrapper: rustc calls a gcc-style "cc" with gcc flags; zig cc accepts
# all the flags rustc 1.96 passes for these four targets (checked by logging
# them). Only a clang-style --target= is dropped: rustc adds it when it takes
# the linker for clang, and zig wants its own -target instead.
write_wrapper() {
	target=$1
	wrapper="$WRAPPERS/$target-cc"
	cat >"$wrapper" <<EOF
#!/bin/sh
# Generated by scripts/cross-build.sh: zig cc as the linker for $target.
first=1
for arg in "\$@"; do
	if [ \$first = 1 ]; then set --; first=0; fi
	case "\$arg" in
	--target=*) ;;
	*) set -- "\$@" "\$arg" ;;
	esac
done
exec python3 -m ziglang cc -target $(zig_triple "$target") -mcpu=$(zig_cpu "$target") "\$@"
EOF
	chmod +x "$wrapper"
	echo "$wrapper"
}

# Archiver for C code built by crates (ring, for TLS): zig's llvm-ar.
write_ar_wrapper() {
	wrapper="$WRAPPERS/zig-ar"
	printf '#!/bin/sh\nexec python3 -m ziglang ar "$@"\n' >"$wrapper"
	chmod +x "$wrapper"
	echo "$wrapper"
}

# Flags a target needs to be correct, not just smaller.
# 32-bit MIPS: rustix (under async-io's reactor) uses its libc backend there and hands
# its own itimerspec (64-bit seconds) to the libc crate's 32-bit timerfd_settime, so the
# kernel is given 4 bytes of padding as the timeout: reactor timers never fire, fire at
# random, or make every wait fail with EINVAL. `--cfg fix_y2038` selects rustix's
# converting path (src/timer_check.rs has the details and refuses builds without it).
target_flags() {
	case "$1" in
	mips-unknown-linux-musl | mipsel-unknown-linux-musl) echo "--cfg fix_y2038" ;;
	*-windows-gnu) echo "-C link-arg=-static" ;;
	esac
}

# ---- build ------------------------------------------------------------------
ar_wrapper=$(write_ar_wrapper)
for t in $TARGETS; do
	case "$t" in
	*-windows-gnu)
		# zig's MinGW would do too, but Debian's mingw-w64 is the maintained
		# toolchain there; gcc links its runtime (libgcc, winpthreads) statically
		# with -static, so the .exe needs only the DLLs every Windows has.
		wrapper=$(command -v x86_64-w64-mingw32-gcc)
		t_ar=$(command -v x86_64-w64-mingw32-ar)
		linker_desc="mingw-w64 gcc"
		;;
	*)
		wrapper=$(write_wrapper "$t")
		t_ar=$ar_wrapper
		linker_desc="zig $(zig_triple "$t")"
		;;
	esac
	env_t=$(echo "$t" | tr 'a-z-' 'A-Z_')
	cc_t=$(echo "$t" | tr '-' '_')
	echo "cross-build: building $t (linker: $linker_desc)" >&2
	start=$(date +%s)
	env -u CARGO_ENCODED_RUSTFLAGS \
		RUSTC="$RUSTC" \
		RUSTC_BOOTSTRAP=1 \
		"CARGO_TARGET_${env_t}_LINKER=$wrapper" \
		"CC_${cc_t}=$wrapper" \
		"AR_${cc_t}=$t_ar" \
		RUSTFLAGS="-C target-feature=+crt-static -C link-self-contained=no $PANIC_FLAGS $SIZE_FLAGS $(target_flags "$t") ${RUSTFLAGS:-}" \
		"$CARGO" build --profile "$PROFILE" --target "$t" $ARTIFACT \
		-Zbuild-std=std,panic_abort ${BTCAGENT_STD_FEATURES:+-Zbuild-std-features=$BTCAGENT_STD_FEATURES} ||
		die "cargo build for $t failed"
	end=$(date +%s)
	echo "cross-build: $t built in $((end - start)) s" >&2
done

# ---- report -----------------------------------------------------------------
echo
printf '%-34s %10s %8s\n' target bytes KiB
for t in $TARGETS; do
	bin="$CARGO_TARGET_DIR/$t/$PROFILE/$(artifact_path "$t")"
	[ -f "$bin" ] || die "$bin missing after build"
	bytes=$(wc -c <"$bin")
	printf '%-34s %10d %8d\n' "$t" "$bytes" $(((bytes + 1023) / 1024))
done
echo
for t in $TARGETS; do
	file "$CARGO_TARGET_DIR/$t/$PROFILE/$(artifact_path "$t")"
done
