#!/bin/sh
# Test dependencies of the status tests (tests/status_*.rs): a python3 with
# prometheus_client, whose text parser checks the /metrics output. The tests try
# `python3` from PATH, then /usr/bin/python3 (Debian's, where the apt package lands).
set -eu
has_parser() {
    python3 -c 'import prometheus_client' >/dev/null 2>&1 ||
        /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1
}
has_parser && exit 0
if ! apt-cache show python3-prometheus-client >/dev/null 2>&1; then
    apt-get update -q
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-prometheus-client || true
has_parser && exit 0
python3 -m pip install -q prometheus_client ||
    python3 -m pip install -q --break-system-packages prometheus_client
has_parser
