#!/usr/bin/env bash
# One-command demo: simulated pool <- btcagent <- simulated miners, all on loopback.
# Builds the release binaries (about 3 minutes on a fresh 2-core machine, seconds once
# built), runs 20 miners for 20 seconds, then shows what the pool saw (valid shares
# per sub-account and worker). Every process started here is stopped on exit, also on
# Ctrl-C.
#   MINERS=20 DURATION=20 SHARE_INTERVAL=1 scripts/demo.sh
#   scripts/demo.sh --stratum     the same in front of a plain Stratum V1 pool (ckpool-like)
set -euo pipefail
STRATUM=0
case "${1:-}" in
--stratum) STRATUM=1 ;;
"") ;;
*) echo "usage: scripts/demo.sh [--stratum]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

MINERS=${MINERS:-20}
DURATION=${DURATION:-20}
SHARE_INTERVAL=${SHARE_INTERVAL:-1}
BIN="${CARGO_TARGET_DIR:-target}/release"

echo "== building (cargo build --release -p btcagent -p btcagent-sim; a first build takes minutes)"
cargo build --release -p btcagent -p btcagent-sim

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    exit 1
}

echo "== starting poolsim"
if [ "$STRATUM" = 1 ]; then
    # The pool at 2^-26, the miners at 2^-30: 1 share in 16 meets the pool's target and
    # is forwarded; the agent accepts the rest itself after hashing them.
    "$BIN/poolsim" --stratum --difficulty 0.00000001490116119384765625 \
        --listen 127.0.0.1:0 --job-interval 5 --stats-interval 5 >"$WORK/pool.log" 2>&1 &
else
    "$BIN/poolsim" --listen 127.0.0.1:0 --job-interval 5 --stats-interval 5 >"$WORK/pool.log" 2>&1 &
fi
POOL_PID=$!
PIDS+=("$POOL_PID")
for _ in $(seq 100); do
    grep -q 'listening on' "$WORK/pool.log" && break
    sleep 0.1
done
POOL_ADDR=$(awk '/listening on/ {print $4; exit}' "$WORK/pool.log")
if [ -z "$POOL_ADDR" ]; then
    echo "poolsim did not start:" >&2
    cat "$WORK/pool.log" >&2
    exit 1
fi
POOL_PORT=${POOL_ADDR##*:}
AGENT_PORT=$(free_port)
echo "   pool at $POOL_ADDR"

if [ "$STRATUM" = 1 ]; then
    cat >"$WORK/agent_conf.json" <<CONF
{
    "multi_user_mode": true,
    "submit_response_from_server": true,
    "agent_listen_ip": "127.0.0.1",
    "agent_listen_port": $AGENT_PORT,
    "pools": [{"protocol": "stratum", "host": "127.0.0.1", "port": $POOL_PORT, "user": "{sub}.farm"}],
    "advanced": {"stratum_start_difficulty": 0.000000000931322574615478515625,
                 "stratum_min_difficulty": 0.000000000931322574615478515625}
}
CONF
else
    cat >"$WORK/agent_conf.json" <<CONF
{
    "multi_user_mode": true,
    "submit_response_from_server": true,
    "agent_listen_ip": "127.0.0.1",
    "agent_listen_port": $AGENT_PORT,
    "pools": [["127.0.0.1", $POOL_PORT, "demo"]]
}
CONF
fi
echo "== starting btcagent on 127.0.0.1:$AGENT_PORT with $WORK/agent_conf.json"
cat "$WORK/agent_conf.json"
"$BIN/btcagent" -c "$WORK/agent_conf.json" -l stderr >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
for _ in $(seq 100); do
    port_in_use "$AGENT_PORT" && break
    if ! kill -0 "$AGENT_PID" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! port_in_use "$AGENT_PORT"; then
    echo "btcagent is not listening on $AGENT_PORT; its log:" >&2
    cat "$WORK/agent.log" >&2
    exit 1
fi

echo "== running $MINERS miners for ${DURATION}s (half of them roll versions)"
echo "   Logins are demo.wN and demo2.wN: in multi-user mode SUB.WORKER picks the sub-account."
echo "   job_latency: pool sends a job -> miner has it. response_latency: share -> verdict, about"
echo "   50 ms of it the agent batching shares into one packet (advanced.submit_coalesce_ms)."
MINER_RC=0
"$BIN/minersim" --agent "127.0.0.1:$AGENT_PORT" --miners "$MINERS" \
    --subaccounts demo,demo2 --user '{sub}.w{i}' \
    --share-interval "$SHARE_INTERVAL" --version-rolling-fraction 0.5 \
    --duration "$DURATION" --stats-interval 5 || MINER_RC=$?

echo "== what the pool saw"
kill -TERM "$POOL_PID" 2>/dev/null || true
wait "$POOL_PID" 2>/dev/null || true
sed -n '/poolsim final/,$p' "$WORK/pool.log"
if [ "$STRATUM" = 1 ]; then
    echo "   (a plain Stratum pool sees one user per sub-account, demo.farm and demo2.farm;"
    echo "   the agent forwarded only the shares that met the pool's difficulty)"
fi
echo "== last lines of the agent log"
tail -n 5 "$WORK/agent.log"
if [ "$MINER_RC" -ne 0 ]; then
    echo "demo FAILED: minersim exited $MINER_RC (no accepted shares?)" >&2
    exit 1
fi
echo "demo OK"
