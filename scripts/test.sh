#!/usr/bin/env bash
# Every test of the project, on a fresh Debian machine: installs what the tests need
# (apt packages, PyPI and npm tools, cargo-fuzz) when missing, then runs the Rust tests,
# the hostile end-to-end test against the release binary, the fuzz targets for a
# bounded time, the shell tests of the OpenWrt package, the LuCI page in headless
# Chromium, and the end-to-end tests against the MIPS (big-endian) and ARMv7 binaries
# under qemu-user.
#
# Every stage runs even when an earlier one failed; a summary with each stage's result
# and time comes at the end, and the exit status is non-zero if any stage failed.
#
#   scripts/test.sh               everything
#   SKIP_QEMU=1 scripts/test.sh   without the cross builds (quicker while developing)
#   FUZZ_SECONDS=N scripts/test.sh  seconds per fuzz target (docs/fuzzing.md)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/stages.sh
. scripts/stages.sh

for deps in scripts/test-deps-*.sh; do
    # wine and mingw-w64 serve scripts/test-wine.sh only, which is not a stage (yet:
    # docs/windows.md says why); it installs them itself.
    [ "$deps" = scripts/test-deps-windows.sh ] && continue
    stage "$deps" bash "$deps"
done

check_format() {
    if ! cargo fmt --version >/dev/null 2>&1; then
        rustup component add rustfmt >/dev/null 2>&1 || true
    fi
    if cargo fmt --version >/dev/null 2>&1; then
        cargo fmt --all --check
        cargo fmt --all --check --manifest-path fuzz/Cargo.toml
    else
        echo "rustfmt is not installable here: formatting not checked"
    fi
}
stage "cargo fmt --check" check_format

# --no-fail-fast: a failing test binary does not hide the ones after it.
stage "cargo test (workspace)" cargo test --workspace --no-fail-fast

stage "cargo build --release (the binary the ipk, hostile and demo tests run)" \
    cargo build --release -p btcagent

# The flood test opens as many sockets as this process may hold: run it alone, against
# the release binary (the quick tests of the same file ran above).
if [ -x target/release/btcagent ]; then
    stage "hostile end-to-end test (release binary)" \
        env BTCAGENT_BIN="$PWD/target/release/btcagent" \
        cargo test --test hostile_e2e -- --ignored --nocapture
else
    stage_skip "hostile end-to-end test (release binary)" "no release binary"
fi

# Every parser reachable from a socket or a config file, FUZZ_SECONDS (10) each.
stage "fuzz targets (scripts/fuzz.sh)" sh scripts/fuzz.sh

# The systemd unit: systemd-analyze verify/security and its ExecStart as systemd runs it.
for t in tests/systemd/*.sh; do
    [ -e "$t" ] || continue
    stage "$t" bash "$t"
done

for t in tests/openwrt/*.sh; do
    [ -e "$t" ] || continue
    stage "$t" bash "$t"
done

if [ -x tests/luci/run.sh ]; then
    stage "tests/luci/run.sh" bash tests/luci/run.sh
fi

if [ "${SKIP_QEMU:-0}" != 1 ] && [ -f scripts/test-qemu.sh ]; then
    stage "scripts/test-qemu.sh (MIPS and ARMv7 under qemu-user)" bash scripts/test-qemu.sh
fi

stages_summary "scripts/test.sh summary"
