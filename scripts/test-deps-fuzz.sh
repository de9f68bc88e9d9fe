#!/bin/sh
# What scripts/fuzz.sh needs: cargo-fuzz (pinned, from crates.io, built with the
# machine's Rust) and a C++ compiler for libFuzzer itself (libfuzzer-sys builds it).
# Idempotent.
set -eu
CARGO_FUZZ_VERSION=0.13.2

if ! command -v c++ >/dev/null 2>&1; then
	echo "test-deps-fuzz: installing g++" >&2
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++
fi
have=$(cargo fuzz --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$CARGO_FUZZ_VERSION" ]; then
	echo "test-deps-fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (had: ${have:-none})" >&2
	cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
echo "test-deps-fuzz: ok ($(cargo fuzz --version))" >&2
