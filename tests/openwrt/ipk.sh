#!/bin/bash
# scripts/build-ipk.sh: the .ipk's tar structure, control fields, conffiles, scripts,
# permissions and reproducibility; then the packaged binary run on the packaged config.
# Uses ${CARGO_TARGET_DIR:-target}/release/btcagent when it exists (cargo build
# --release), else a stand-in file for the structure checks.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="$ROOT/scripts/build-ipk.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SOURCE_DATE_EPOCH=1700000000
# shellcheck source=tests/openwrt/lib/checks.sh
. "$ROOT/tests/openwrt/lib/checks.sh"

VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)
PKG_VERSION=$(sed -n 's/^PKG_VERSION:=//p' "$ROOT/openwrt/Makefile")
PKG_RELEASE=$(sed -n 's/^PKG_RELEASE:=//p' "$ROOT/openwrt/Makefile")
same "openwrt/Makefile PKG_VERSION = Cargo.toml version" "$VERSION" "$PKG_VERSION"
check "PKG_RELEASE is a positive integer (valid for opkg and apk)" \
	grep -Eqx '[1-9][0-9]*' <<<"$PKG_RELEASE"
check "PKG_VERSION is plain dotted numbers (valid for apk)" \
	grep -Eqx '[0-9]+(\.[0-9]+)*' <<<"$PKG_VERSION"

REAL_BINARY=${CARGO_TARGET_DIR:-$ROOT/target}/release/btcagent
if [ -x "$REAL_BINARY" ]; then
	BINARY=$REAL_BINARY
	ARCH=x86_64
	echo "using $BINARY"
else
	BINARY=$WORK/stand-in
	printf '#!/bin/sh\necho stand-in\n' >"$BINARY"
	chmod 0700 "$BINARY"
	ARCH=mips_24kc
	echo "no $REAL_BINARY: packaging a stand-in file"
fi

IPK="$WORK/out/btcagent_$VERSION-r${PKG_RELEASE}_$ARCH.ipk"
if ! "$BUILD" "$ARCH" "$BINARY" "$WORK/out" >"$WORK/build.out" 2>&1 || [ ! -f "$IPK" ]; then
	fail "build-ipk.sh $ARCH built $IPK" "$WORK/build.out"
	echo "$passed passed, $failed failed"
	exit 1
fi
pass "build-ipk.sh $ARCH built $(basename "$IPK")"

# --- outer archive: a gzip'd tar, as opkg reads it
same "outer file is gzip" "1f8b" "$(od -An -tx1 -N2 "$IPK" | tr -d ' \n')"
same "outer entries, in opkg's order" "./debian-binary ./data.tar.gz ./control.tar.gz" \
	"$(tar -tzf "$IPK" | tr '\n' ' ' | sed 's/ $//')"
same "outer entries owned by 0/0, mode 0644" "0/0 -rw-r--r-- 0/0 -rw-r--r-- 0/0 -rw-r--r--" \
	"$(tar --numeric-owner -tvzf "$IPK" | awk '{ printf "%s %s ", $2, $1 }' | sed 's/ $//')"
mkdir -p "$WORK/ipk" "$WORK/control" "$WORK/root"
tar -C "$WORK/ipk" -xzf "$IPK"
same "debian-binary is 2.0" "2.0" "$(cat "$WORK/ipk/debian-binary")"

# --- data.tar.gz
listing() { tar --numeric-owner -tvzf "$1" | awk '{ print $1, $2, $NF }'; }
expected_data="drwxr-xr-x 0/0 ./
drwxr-xr-x 0/0 ./etc/
drwxr-xr-x 0/0 ./etc/config/
-rw------- 0/0 ./etc/config/btcagent
drwxr-xr-x 0/0 ./etc/init.d/
-rwxr-xr-x 0/0 ./etc/init.d/btcagent
drwxr-xr-x 0/0 ./usr/
drwxr-xr-x 0/0 ./usr/bin/
-rwxr-xr-x 0/0 ./usr/bin/btcagent"
same "data: files, modes, root:root, sorted" "$expected_data" "$(listing "$WORK/ipk/data.tar.gz")"
tar -C "$WORK/root" -xzf "$WORK/ipk/data.tar.gz"
check "data: binary is the one given" cmp "$BINARY" "$WORK/root/usr/bin/btcagent"
check "data: init script is openwrt/files/btcagent.init" \
	cmp "$ROOT/openwrt/files/btcagent.init" "$WORK/root/etc/init.d/btcagent"
check "data: config is openwrt/files/btcagent.config" \
	cmp "$ROOT/openwrt/files/btcagent.config" "$WORK/root/etc/config/btcagent"
same "data: every mtime is SOURCE_DATE_EPOCH" "@$SOURCE_DATE_EPOCH" \
	"$(tar --full-time -tvzf "$WORK/ipk/data.tar.gz" | awk '{ print $4 " " $5 }' | sort -u |
		while read -r when; do echo "@$(date -ud "$when" +%s)"; done | sort -u | tr '\n' ' ' | sed 's/ $//')"

# --- control.tar.gz
expected_control="drwxr-xr-x 0/0 ./
-rw-r--r-- 0/0 ./conffiles
-rw-r--r-- 0/0 ./control
-rwxr-xr-x 0/0 ./postinst
-rwxr-xr-x 0/0 ./prerm"
same "control: files, modes, root:root" "$expected_control" "$(listing "$WORK/ipk/control.tar.gz")"
tar -C "$WORK/control" -xzf "$WORK/ipk/control.tar.gz"
field() { sed -n "s/^$1: //p" "$WORK/control/control"; }
installed_size=$(find "$WORK/root" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
same "control: Package" "btcagent" "$(field Package)"
same "control: Version" "$VERSION-r$PKG_RELEASE" "$(field Version)"
same "control: Depends" "libc, ca-bundle" "$(field Depends)"
same "control: SourceName" "btcagent" "$(field SourceName)"
same "control: License" "MIT" "$(field License)"
same "control: Section" "net" "$(field Section)"
same "control: Architecture" "$ARCH" "$(field Architecture)"
same "control: Installed-Size is the data's bytes" "$installed_size" "$(field Installed-Size)"
for name in Source Maintainer Description; do
	check "control: $name is set" test -n "$(field "$name")"
done
check "control: description lines continue with a space" \
	awk 'found && !/^ / { exit 1 } /^Description: / { found = 1 } END { exit !found }' \
	"$WORK/control/control"
same "conffiles" "/etc/config/btcagent" "$(cat "$WORK/control/conffiles")"
for script in postinst prerm; do
	check "$script is openwrt/ipk/$script" cmp "$ROOT/openwrt/ipk/$script" "$WORK/control/$script"
	# Runs as the SDK's do: sources the target's functions.sh and hands over to it.
	mkdir -p "$WORK/instroot/lib"
	cat >"$WORK/instroot/lib/functions.sh" <<'FUNCS'
default_postinst() { echo "default_postinst $*"; }
default_prerm() { echo "default_prerm $*"; }
FUNCS
	same "$script calls default_$script with its arguments" \
		"default_$script $WORK/control/$script configure" \
		"$(IPKG_INSTROOT="$WORK/instroot" sh "$WORK/control/$script" configure)"
	rm -rf "$WORK/instroot"
	check "$script exits 0 when the root has no functions.sh" \
		env IPKG_INSTROOT="$WORK/instroot" sh "$WORK/control/$script"
done

# --- reproducible: same bytes from another copy of the binary with another mtime
cp "$BINARY" "$WORK/copy"
touch -d '2001-02-03 04:05:06' "$WORK/copy"
"$BUILD" "$ARCH" "$WORK/copy" "$WORK/again" >/dev/null 2>&1
check "reproducible: a second build is byte-identical" cmp "$IPK" "$WORK/again/$(basename "$IPK")"

# --- arch checks
if [ "$(uname -m)" = x86_64 ] && host_elf=$(type -P true) && [ -f "$host_elf" ]; then
	if "$BUILD" mips_24kc "$host_elf" "$WORK/wrong" >"$WORK/wrong.out" 2>&1; then
		fail "an x86-64 ELF is refused for mips_24kc"
	else
		check "an x86-64 ELF is refused for mips_24kc, naming the arch" grep -q "not for mips_24kc" "$WORK/wrong.out"
	fi
	check "an x86-64 ELF is accepted for x86_64" "$BUILD" x86_64 "$host_elf" "$WORK/right"
fi
if "$BUILD" 'MIPS 24kc' "$BINARY" "$WORK/bad" >/dev/null 2>&1; then
	fail "a malformed arch name is refused"
else
	pass "a malformed arch name is refused"
fi

# --- --all: every Rust target with a binary, mapped to OpenWrt arches
mkdir -p "$WORK/target/mips-unknown-linux-musl/release" "$WORK/target/aarch64-unknown-linux-musl/release"
# Stand-ins, not the host binary: an x86-64 ELF is rightly refused for these arches.
printf '#!/bin/sh\necho stand-in\n' >"$WORK/standin"
cp "$WORK/standin" "$WORK/target/mips-unknown-linux-musl/release/btcagent"
cp "$WORK/standin" "$WORK/target/aarch64-unknown-linux-musl/release/btcagent"
CARGO_TARGET_DIR=$WORK/target "$BUILD" --all "$WORK/all" >/dev/null 2>&1
same "--all builds the arches of the targets present" \
	"aarch64_cortex-a53 aarch64_generic mips_24kc" \
	"$(cd "$WORK/all" && printf '%s\n' *.ipk | sed "s/^btcagent_$VERSION-r${PKG_RELEASE}_//; s/\.ipk\$//" |
		sort | tr '\n' ' ' | sed 's/ $//')"
if CARGO_TARGET_DIR=$WORK/empty "$BUILD" --all "$WORK/none" >/dev/null 2>&1; then
	fail "--all without any binary fails"
else
	pass "--all without any binary fails"
fi

# --- the packaged binary reads the packaged UCI config
if [ "$BINARY" = "$REAL_BINARY" ]; then
	# The JSON on standard output; warnings (the shipped config's placeholder
	# sub-account) go to the log, standard error here.
	if (cd "$WORK/root" && usr/bin/btcagent --uci etc/config/btcagent --print-config) \
		>"$WORK/print.out" 2>"$WORK/print.err"; then
		check "--print-config prints the config as JSON with the pools" \
			grep -q '"us.ss.btc.com"' "$WORK/print.out"
		check "--print-config output is a JSON object" \
			sh -c "tr -d ' \n\t' <'$WORK/print.out' | grep -q '^{.*}\$'"
		check "the shipped config's placeholder sub-account is warned about" \
			grep -q 'YourSubAccountName' "$WORK/print.err"
	else
		fail "usr/bin/btcagent --uci etc/config/btcagent --print-config" "$WORK/print.err"
	fi
else
	echo "skip --print-config: no real binary (cargo build --release builds $REAL_BINARY)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
