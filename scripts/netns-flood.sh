#!/usr/bin/env bash
# Cloaking under a handshake flood (issue 9, defect 1). Three namespaces:
#
#   a         198.51.100.1  10.20.0.1  umbra, the target; iperf3 server
#   b         198.51.100.2  10.20.0.2  umbra, a peer allowed to reach a
#   stranger  198.51.100.9             not in the policy, but holding it: it
#                                      floods a with mac1-valid initiations
#
# Measures and checks: datagrams a sends to the stranger during the flood
# (must be 0: the load mode never answers an address no peer is associated
# with); b -> a iperf3 throughput with and without the flood (reported as a
# fraction; the machine is shared, so only "still flows" is checked); how
# long b takes to handshake again when it restarts during the flood (must be
# well under stock WireGuard's 5 s REKEY_TIMEOUT wait after a cookie reply).
# Prints a "flood:" summary line for BENCHMARKS.md. FLOOD_SECS (default 6)
# sets the flood length, FLOOD_RATE its rate (default 20000: far above the
# 1,000/s load threshold, yet what a debug build on a busy CI machine
# receives without its socket buffer overflowing — an overflow drops the
# restarting peer's packets too, which is not what is tested; BENCHMARKS.md
# used FLOOD_RATE=75000, the issue's rate; 0: as fast as python can).
# UMBRA=path overrides the binary. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${UMBRA:-} ]]; then
    cargo build --locked --quiet || exit 1
    UMBRA=$PWD/target/debug/umbra
fi
FLOOD_SECS=${FLOOD_SECS:-6}
FLOOD_RATE=${FLOOD_RATE:-20000}
source scripts/lib/netns.sh
netns_init
D=$NETNS_DIR

netns_host a 198.51.100.1
netns_host b 198.51.100.2
netns_host stranger 198.51.100.9
KA=$(umbra_key a) KB=$(umbra_key b)
cat >"$D/mesh.policy" <<P
node a key $KA addr 10.20.0.1/24 endpoint 198.51.100.1:51820 roles srv
node b key $KB addr 10.20.0.2/24 endpoint 198.51.100.2:51820 roles cli
service perf role:srv tcp/5201 ping
allow role:cli -> perf
P
umbra_up a || exit 1
umbra_up b || exit 1
bg a "$D/iperf.srv" iperf3 -s -B 10.20.0.1 -p 5201
wait_for 10 on b ping -c 1 -W 1 10.20.0.1 || { echo "no tunnel"; cat "$D"/*.log; exit 1; }

udp_in() { # UDP datagrams a namespace has received, delivered or not
    on "$1" awk '/^Udp:/ && !h {h=1; next} /^Udp:/ {print $2 + $3 + $4; exit}' /proc/net/snmp
}
mbps() {
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$1" 2>/dev/null || echo 0
}
flood() { # flood SECONDS: floods a from the stranger in the background
    bg stranger "$D/flood.out" python3 scripts/lib/flood.py "$KA" 198.51.100.1 51820 "$1" "$FLOOD_RATE"
    FLOOD_PID=$LAST_PID
}

echo "baseline"
on b iperf3 -c 10.20.0.1 -p 5201 -t 4 --json >"$D/base.json" 2>&1
base=$(mbps "$D/base.json")
echo "  b -> a: $base Mbit/s"

echo "flood: $FLOOD_SECS s of mac1-valid initiations from the stranger"
before=$(udp_in stranger)
flood "$FLOOD_SECS"
sleep 0.5
on b iperf3 -c 10.20.0.1 -p 5201 -t 4 --json >"$D/flood.json" 2>&1
under=$(mbps "$D/flood.json")
wait "$FLOOD_PID"
sleep 0.5
replies=$(($(udp_in stranger) - before))
echo "  $(cat "$D/flood.out"); b -> a under flood: $under Mbit/s"
check "a sent nothing to the stranger during the flood ($replies datagrams)" test "$replies" -eq 0
check "legitimate traffic still flows under the flood ($under Mbit/s)" test "$under" -gt 0

echo "restart: b restarts during a flood and must handshake again"
before=$(udp_in stranger)
flood "$FLOOD_SECS"
sleep 1
kill "${UMBRA_PID[b]}"
wait "${UMBRA_PID[b]}" 2>/dev/null
t0=$(date +%s.%N)
umbra_up b || exit 1
wait_for 15 on b ping -c 1 -W 1 10.20.0.1
t1=$(date +%s.%N)
restart=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
wait "$FLOOD_PID"
sleep 0.5
replies2=$(($(udp_in stranger) - before))
check "restarted b reached a within 3 s of its start during the flood (${restart} s)" python3 -c "import sys; sys.exit(not $restart < 3)"
check "still nothing to the stranger ($replies2 datagrams)" test "$replies2" -eq 0
echo "flood: replies to stranger $replies+$replies2, throughput $under/$base Mbit/s ($(python3 -c "print(f'{$under/max($base,1):.2f}')")), restart to first ping ${restart} s, $(cat "$D/flood.out")"

echo "netns-flood: $T_PASS passed, $T_FAIL failed"
((T_FAIL == 0))
