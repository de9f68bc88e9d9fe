#!/bin/sh
# Installs what tests/luci/run.sh needs: Debian's chromium, a CJK font, node + npm, and
# playwright-core (pinned by tests/luci/package-lock.json). Idempotent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# A CJK font, so the zh_Hans screenshots show characters rather than boxes.
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
	missing="$missing fonts-wqy-microhei"
fi
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q $missing
fi
luci_tests="$here/../tests/luci"
want=$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' "$luci_tests/package.json" | head -n 1)
have=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$luci_tests/node_modules/playwright-core/package.json" 2>/dev/null | head -n 1 || true)
if [ "$have" != "$want" ]; then
	(cd "$luci_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
