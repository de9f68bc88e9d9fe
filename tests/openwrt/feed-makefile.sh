#!/bin/bash
# openwrt/Makefile read by GNU make inside a stand-in OpenWrt tree: the package linked
# in through a feed (as ./scripts/feeds install does), with small stand-ins for
# rules.mk, package.mk and the rust feed's rust-package.mk that expose what the real
# ones would use. Checks the package metadata, that the source tree is found through
# the feed's symlinks, what Build/Prepare copies, and what Package/install installs.
# It cannot check the real SDK's behaviour; the SDK build is documented in docs/openwrt.md.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TOP=$WORK/openwrt
# shellcheck source=tests/openwrt/lib/checks.sh
. "$ROOT/tests/openwrt/lib/checks.sh"

if ! command -v make >/dev/null; then
	echo "make is missing: run scripts/test-deps-openwrt.sh"
	exit 1
fi

mkdir -p "$TOP/include" "$TOP/feeds/packages/lang/rust" "$TOP/package/feeds/btcagent" "$WORK/feed"
ln -s "$ROOT/openwrt" "$WORK/feed/btcagent"
ln -s "$WORK/feed" "$TOP/feeds/btcagent"
ln -s ../../../feeds/btcagent/btcagent "$TOP/package/feeds/btcagent/btcagent"

cat >"$TOP/rules.mk" <<'MK'
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build_dir
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_CONF:=install -m0600
MK
# package.mk's parts the Makefile relies on: PKG_BUILD_DIR/PKG_INSTALL_DIR, the
# default Build/Prepare (a link to USE_SOURCE_DIR when given), and BuildPackage, here
# turned into targets that print or run what the real one would.
cat >"$TOP/include/package.mk" <<'MK'
PKG_BUILD_DIR:=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR:=$(PKG_BUILD_DIR)/ipkg-install
ifneq ($(strip $(USE_SOURCE_DIR)),)
define Build/Prepare
	mkdir -p $(BUILD_DIR)
	ln -snf $(USE_SOURCE_DIR) $(PKG_BUILD_DIR)
endef
else
define Build/Prepare
	false default Build/Prepare has no source
endef
endif
define BuildPackage
$$(eval $$(Package/$(1)))
dump:
	@echo 'PKG_NAME=$$(PKG_NAME)'
	@echo 'PKG_VERSION=$$(PKG_VERSION)'
	@echo 'PKG_RELEASE=$$(PKG_RELEASE)'
	@echo 'PKG_LICENSE=$$(PKG_LICENSE)'
	@echo 'PKG_LICENSE_FILES=$$(PKG_LICENSE_FILES)'
	@echo 'PKG_MAINTAINER=$$(PKG_MAINTAINER)'
	@echo 'PKG_BUILD_DEPENDS=$$(PKG_BUILD_DEPENDS)'
	@echo 'SECTION=$$(SECTION)'
	@echo 'CATEGORY=$$(CATEGORY)'
	@echo 'DEPENDS=$$(strip $$(DEPENDS))'
	@echo 'CONFFILES=$$(strip $$(Package/$(1)/conffiles))'
	@echo 'SOURCE_DIR=$$(BTCAGENT_SOURCE_DIR)'
	@echo 'DESCRIPTION=$$(if $$(strip $$(Package/$(1)/description)),set,empty)'
prepare:
	$$(Build/Prepare)
install:
	$$(call Package/$(1)/install,$$(DEST))
endef
MK
cat >"$TOP/feeds/packages/lang/rust/rust-package.mk" <<'MK'
RUST_ARCH_DEPENDS:=@(aarch64||arm||mips||mipsel||x86_64)
define RustBinPackage
  ifndef Package/$(1)/install
    $$(error the package must install its init script and config itself)
  endif
endef
MK

PKGDIR=$TOP/package/feeds/btcagent/btcagent
mk() { make --no-print-directory -C "$PKGDIR" TOPDIR="$TOP" "$@"; }

if ! mk dump >"$WORK/dump" 2>&1; then
	fail "make dump" "$WORK/dump"
	echo "$passed passed, $failed failed"
	exit 1
fi
value() { sed -n "s/^$1=//p" "$WORK/dump"; }
same "PKG_NAME" btcagent "$(value PKG_NAME)"
same "PKG_RELEASE" 1 "$(value PKG_RELEASE)"
same "PKG_LICENSE" MIT "$(value PKG_LICENSE)"
same "PKG_LICENSE_FILES" LICENSE "$(value PKG_LICENSE_FILES)"
check "the license file is in the tree" test -f "$ROOT/$(value PKG_LICENSE_FILES)"
# The packages feed wants "Name <address>".
check "PKG_MAINTAINER has a name and an address" \
	sh -c 'printf %s "$1" | grep -Eq "^[^<]+ <[^<>@ ]+@[^<>@ ]+>$"' _ "$(value PKG_MAINTAINER)"
same "PKG_BUILD_DEPENDS" rust/host "$(value PKG_BUILD_DEPENDS)"
same "SECTION" net "$(value SECTION)"
same "CATEGORY" Network "$(value CATEGORY)"
same "DEPENDS: rust's arches and ca-bundle" "@(aarch64||arm||mips||mipsel||x86_64) +ca-bundle" \
	"$(value DEPENDS)"
same "conffiles" /etc/config/btcagent "$(value CONFFILES)"
same "description" set "$(value DESCRIPTION)"
same "source tree found through the feed's symlinks" "$ROOT" "$(value SOURCE_DIR)"

if mk prepare >"$WORK/prepare.out" 2>&1; then
	build=$(echo "$TOP"/build_dir/btcagent-*)
	check "Build/Prepare copies the tree" cmp "$ROOT/src/uci.rs" "$build/src/uci.rs"
	check "Build/Prepare copies Cargo.lock (cargo install --locked)" test -f "$build/Cargo.lock"
	check "Build/Prepare leaves out target/ and .git" \
		test ! -e "$build/target" -a ! -e "$build/.git"
else
	fail "make prepare" "$WORK/prepare.out"
fi
rm -rf "$TOP/build_dir"
if mk prepare USE_SOURCE_DIR="$ROOT" >"$WORK/prepare.out" 2>&1; then
	same "with USE_SOURCE_DIR the build dir is package.mk's link" "$ROOT" \
		"$(readlink "$TOP"/build_dir/btcagent-*)"
else
	fail "make prepare USE_SOURCE_DIR=..." "$WORK/prepare.out"
fi
rm -rf "$TOP/build_dir"

# Package/install, with what cargo install would have left in PKG_INSTALL_DIR.
mkdir -p "$TOP/build_dir/btcagent-0.1.0/ipkg-install/bin"
printf 'binary' >"$TOP/build_dir/btcagent-0.1.0/ipkg-install/bin/btcagent"
if mk install DEST="$WORK/dest" >"$WORK/install.out" 2>&1; then
	same "installed files and modes" \
		"600 etc/config/btcagent
755 etc/init.d/btcagent
755 usr/bin/btcagent" \
		"$(cd "$WORK/dest" && find . -type f -printf '%m %P\n' | sort)"
	check "installed init script is files/btcagent.init" \
		cmp "$ROOT/openwrt/files/btcagent.init" "$WORK/dest/etc/init.d/btcagent"
	check "installed config is files/btcagent.config" \
		cmp "$ROOT/openwrt/files/btcagent.config" "$WORK/dest/etc/config/btcagent"
else
	fail "make install" "$WORK/install.out"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
