#!/bin/sh
# Entry point for the luci-app-btcagent tests: installs what is missing
# (chromium, node modules), then runs every check in headless Chromium.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sh "$here/../../scripts/test-deps-luci.sh"
cd "$here"
exec node test.js "$@"
