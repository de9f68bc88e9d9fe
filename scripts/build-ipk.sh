#!/bin/bash
# Build OpenWrt .ipk packages of btcagent from already-built binaries, without the
# OpenWrt SDK (which builds them from openwrt/Makefile, and .apk for OpenWrt 25.x).
#
#   scripts/build-ipk.sh ARCH BINARY [OUTDIR]   one package, e.g. mips_24kc
#   scripts/build-ipk.sh --all [OUTDIR]         every arch whose binary exists under
#                                               $CARGO_TARGET_DIR/<rust-target>/release/
#
# OUTDIR defaults to $CARGO_TARGET_DIR/ipk (target/ipk). The result is what opkg reads:
# a gzip'd tar of ./debian-binary, ./data.tar.gz, ./control.tar.gz (not Debian's ar),
# files owned by root, and byte-for-byte reproducible: entries sorted, mtimes set to
# SOURCE_DATE_EPOCH (default: the last commit's time).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MAKEFILE=$ROOT/openwrt/Makefile
PACKAGE=btcagent

die() {
	echo "build-ipk: $*" >&2
	exit 1
}

usage() {
	sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

# The package's metadata comes from openwrt/Makefile (and the version from Cargo.toml),
# so an SDK build and this script describe the same package.
makefile_var() {
	sed -n "s/^$1:=//p" "$MAKEFILE" | head -n 1
}
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)
RELEASE=$(makefile_var PKG_RELEASE)
LICENSE=$(makefile_var PKG_LICENSE)
MAINTAINER=$(makefile_var PKG_MAINTAINER)
[ -n "$VERSION" ] || die "no version in Cargo.toml"
[ -n "$RELEASE" ] || die "no PKG_RELEASE in $MAKEFILE"
# The SDK writes the description with each line's indent turned into one space.
DESCRIPTION=$(sed -n '/^define Package\/btcagent\/description$/,/^endef$/p' "$MAKEFILE" |
	sed '1d;$d; s/^[[:space:]]*/ /')
[ -n "$DESCRIPTION" ] || die "no Package/btcagent/description in $MAKEFILE"
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}

# Refuse a binary for another CPU: the ELF header's byte order (byte 5) and machine
# (bytes 18-19) must fit the OpenWrt arch. Non-ELF files (test stand-ins) only warn.
check_elf() {
	local arch=$1 binary=$2 header want_order want_machine order machine
	header=$(od -An -tu1 -N20 -v "$binary" | tr -s ' \n' ' ')
	read -r -a bytes <<<"$header"
	if [ "${#bytes[@]}" -lt 20 ] || [ "${bytes[*]:0:4}" != "127 69 76 70" ]; then
		echo "build-ipk: warning: $binary is not an ELF binary" >&2
		return 0
	fi
	case $arch in
	mips_* | mips64_*) want_order=2 want_machine=8 ;;
	mipsel_* | mips64el_*) want_order=1 want_machine=8 ;;
	aarch64_*) want_order=1 want_machine=183 ;;
	arm_*) want_order=1 want_machine=40 ;;
	x86_64) want_order=1 want_machine=62 ;;
	i386_*) want_order=1 want_machine=3 ;;
	*) return 0 ;;
	esac
	order=${bytes[5]}
	if [ "$order" = 1 ]; then
		machine=$((bytes[18] + 256 * bytes[19]))
	else
		machine=$((256 * bytes[18] + bytes[19]))
	fi
	if [ "$order" != "$want_order" ] || [ "$machine" != "$want_machine" ]; then
		die "$binary is an ELF for machine $machine (byte order $order), not for $arch"
	fi
}

# tar_gz DIR OUT [ENTRY...]: a reproducible tar.gz of DIR (or of the ENTRYs in it).
tar_gz() {
	local dir=$1 out=$2
	shift 2
	[ $# -gt 0 ] || set -- .
	tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
		--mtime="@$EPOCH" -C "$dir" -cf - "$@" | gzip -9n >"$out"
}

build_ipk() {
	local arch=$1 binary=$2 outdir=$3 stage size ipk
	[[ $arch =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "'$arch' is not an OpenWrt package arch (like mips_24kc)"
	[ -f "$binary" ] || die "$binary: no such file"
	check_elf "$arch" "$binary"

	stage=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now: $stage is local
	trap "rm -rf '$stage'" RETURN
	mkdir -p "$stage/data/usr/bin" "$stage/data/etc/init.d" "$stage/data/etc/config" \
		"$stage/control" "$stage/ipk"
	install -m 0755 "$binary" "$stage/data/usr/bin/btcagent"
	install -m 0755 "$ROOT/openwrt/files/btcagent.init" "$stage/data/etc/init.d/btcagent"
	# 0600 like the SDK's INSTALL_CONF: proxy passwords may be in it.
	install -m 0600 "$ROOT/openwrt/files/btcagent.config" "$stage/data/etc/config/btcagent"
	find "$stage/data" -type d -exec chmod 0755 {} +

	size=$(find "$stage/data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
	{
		echo "Package: $PACKAGE"
		echo "Version: $VERSION-r$RELEASE"
		echo "Depends: libc, ca-bundle"
		echo "Source: feeds/btcagent/btcagent"
		echo "SourceName: $PACKAGE"
		echo "License: $LICENSE"
		echo "Section: net"
		echo "SourceDateEpoch: $EPOCH"
		echo "Maintainer: $MAINTAINER"
		echo "Architecture: $arch"
		echo "Installed-Size: $size"
		echo "Description: $DESCRIPTION"
	} >"$stage/control/control"
	echo /etc/config/btcagent >"$stage/control/conffiles"
	install -m 0755 "$ROOT/openwrt/ipk/postinst" "$stage/control/postinst"
	install -m 0755 "$ROOT/openwrt/ipk/prerm" "$stage/control/prerm"
	chmod 0644 "$stage/control/control" "$stage/control/conffiles"
	chmod 0755 "$stage/control"

	echo 2.0 >"$stage/ipk/debian-binary"
	tar_gz "$stage/data" "$stage/ipk/data.tar.gz"
	tar_gz "$stage/control" "$stage/ipk/control.tar.gz"
	chmod 0644 "$stage/ipk/"*

	mkdir -p "$outdir"
	ipk="$outdir/${PACKAGE}_$VERSION-r${RELEASE}_$arch.ipk"
	# opkg expects this order (the SDK's ipkg-build writes the same).
	tar_gz "$stage/ipk" "$ipk.tmp" ./debian-binary ./data.tar.gz ./control.tar.gz
	mv "$ipk.tmp" "$ipk"
	echo "$ipk"
}

# Rust target -> OpenWrt package arch(es) built from it.
ARCHES_OF_TARGET=(
	"mips-unknown-linux-musl mips_24kc"
	"mipsel-unknown-linux-musl mipsel_24kc"
	"aarch64-unknown-linux-musl aarch64_cortex-a53 aarch64_generic"
	"armv7-unknown-linux-musleabihf arm_cortex-a7_neon-vfpv4"
	"x86_64-unknown-linux-musl x86_64"
)

build_all() {
	local outdir=$1 line rust_target arches arch binary built=0
	for line in "${ARCHES_OF_TARGET[@]}"; do
		read -r rust_target arches <<<"$line"
		binary=$TARGET_DIR/$rust_target/release/btcagent
		if [ ! -f "$binary" ]; then
			echo "build-ipk: skipping $rust_target: no $binary" >&2
			continue
		fi
		for arch in $arches; do
			build_ipk "$arch" "$binary" "$outdir"
			built=$((built + 1))
		done
	done
	[ "$built" -gt 0 ] || die "no binary found under $TARGET_DIR/<rust-target>/release/"
}

case ${1:-} in
--all)
	[ $# -le 2 ] || usage
	build_all "${2:-$TARGET_DIR/ipk}"
	;;
'' | -h | --help) usage ;;
*)
	if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
	build_ipk "$1" "$2" "${3:-$TARGET_DIR/ipk}"
	;;
esac
