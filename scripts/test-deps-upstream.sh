#!/bin/sh
# Real servers for tests/upstream_*.rs: SOCKS5 (dante), HTTP CONNECT (tinyproxy),
# TLS terminator (stunnel4) and openssl to make test certificates. Idempotent.
set -eu
missing=""
command -v danted >/dev/null 2>&1 || missing="$missing dante-server"
command -v tinyproxy >/dev/null 2>&1 || missing="$missing tinyproxy"
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing="$missing stunnel4"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
[ -z "$missing" ] && exit 0
# apt may be busy (another installer, unattended upgrades): wait for the lock.
i=0
while ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; do
    i=$((i + 1))
    [ "$i" -ge 60 ] && { echo "test-deps-upstream: could not install$missing" >&2; exit 1; }
    if [ "$i" -eq 1 ]; then apt-get update -q || true; fi
    sleep 5
done
