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
# fc-list (fontconfig) is how this script sees the font; without recommends nothing
# else brings it.
command -v fc-list >/dev/null 2>&1 || missing="$missing fontconfig"
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
	missing="$missing fonts-wqy-microhei"
fi
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# Without recommends: chromium's pull in avahi, cups helpers, upower and more
	# (399 packages instead of 239 on an empty system); headless runs need none of
	# them (tests/luci/run.sh passes in a bookworm chroot installed this way).
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi
luci_tests="$here/../tests/luci"
want=$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' "$luci_tests/package.json" | head -n 1)
have=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$luci_tests/node_modules/playwright-core/package.json" 2>/dev/null | head -n 1 || true)
if [ "$have" != "$want" ]; then
	(cd "$luci_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
