#!/usr/bin/env bash
# Every test of the project, on a fresh Debian machine: installs what the tests need
# (apt packages, PyPI and npm tools) when missing, then runs the Rust tests, the shell
# tests of the OpenWrt package, the LuCI page in headless Chromium, and the end-to-end
# tests against the MIPS (big-endian) and ARMv7 binaries under qemu-user.
#
#   scripts/test.sh            everything
#   SKIP_QEMU=1 scripts/test.sh   without the cross builds (quicker while developing)
set -euo pipefail
cd "$(dirname "$0")/.."

for deps in scripts/test-deps-*.sh; do
    echo "== $deps"
    bash "$deps"
done

echo "== cargo fmt --check"
if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt >/dev/null 2>&1 || true
fi
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "rustfmt is not installable here: formatting not checked"
fi

echo "== cargo test (workspace)"
cargo test --workspace

echo "== cargo build --release (the binary the ipk and demo tests package and run)"
cargo build --release -p btcagent

for t in tests/openwrt/*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    bash "$t"
done

if [ -x tests/luci/run.sh ]; then
    echo "== tests/luci/run.sh"
    bash tests/luci/run.sh
fi

if [ "${SKIP_QEMU:-0}" != 1 ] && [ -f scripts/test-qemu.sh ]; then
    echo "== scripts/test-qemu.sh"
    bash scripts/test-qemu.sh
fi
echo "== all test suites passed"
