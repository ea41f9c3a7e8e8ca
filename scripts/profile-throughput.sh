#!/usr/bin/env bash
# Where umbra's time goes while it carries a TCP stream: two umbra nodes in
# network namespaces (as scripts/bench-throughput.sh sets them up), one
# iperf3 TCP stream a -> b, and `perf record` sampling both daemons. Prints
# the top symbols (user and kernel) per node: the sender encrypts
# (TUN read, segmentation, seal, UDP send), the receiver decrypts (UDP
# receive, open, coalescing, TUN write). Not part of the test suite;
# results go to BENCHMARKS.md ("Where the time goes").
#
# Usage: sudo scripts/profile-throughput.sh
#   UMBRA=path       binary to profile (default: a release build with
#                    symbols in target/profile, built here)
#   SECONDS_PER_RUN  seconds of iperf3 (default 10)
#   TOP              symbols to print per node (default 25)
#   EXTRA            more `umbra up` arguments (e.g. --no-offload)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${UMBRA:-} ]]; then
    # Same optimisation as the shipped binary, but keep the symbols.
    CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        cargo build --release --locked --quiet --target-dir target/profile
    UMBRA=$PWD/target/profile/release/umbra
fi
export UMBRA
DURATION=${SECONDS_PER_RUN:-10}
TOP=${TOP:-25}
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }


. scripts/lib/netns.sh
netns_init

netns_host a 198.51.100.1
netns_host b 198.51.100.2
bg b "$NETNS_DIR/iperf3-server.log" iperf3 -s -p 5201
wait_for 10 on b bash -c 'exec 3<>/dev/tcp/127.0.0.1/5201'

K_A=$(umbra_key a)
K_B=$(umbra_key b)
cat >"$NETNS_DIR/mesh.policy" <<POLICY
node a  key $K_A  addr 10.30.0.1/24  endpoint 198.51.100.1:51820  roles bench
node b  key $K_B  addr 10.30.0.2/24  endpoint 198.51.100.2:51820  roles bench
service iperf  role:bench  tcp/5201 ping
allow role:bench -> iperf
POLICY
# shellcheck disable=SC2086
umbra_up a --control none ${EXTRA:-}
# shellcheck disable=SC2086
umbra_up b --control none ${EXTRA:-}
wait_for 10 on a ping -c1 -W1 10.30.0.2 >/dev/null

perf record -q -F 1999 -o "$NETNS_DIR/a.perf" -p "${UMBRA_PID[a]}" -- sleep "$DURATION" 2>/dev/null &
PA=$!
perf record -q -F 1999 -o "$NETNS_DIR/b.perf" -p "${UMBRA_PID[b]}" -- sleep "$DURATION" 2>/dev/null &
PB=$!
on a iperf3 -c 10.30.0.2 -p 5201 -t "$DURATION" -f g | awk '/receiver/ { print "iperf3: " $(NF-2) " Gbit/s" }'
wait "$PA" "$PB" || true

for n in a b; do
    [[ $n == a ]] && role="sender (TUN -> seal -> UDP)" || role="receiver (UDP -> open -> TUN)"
    echo
    echo "== node $n, $role: top $TOP symbols by samples"
    perf report -q -i "$NETNS_DIR/$n.perf" --no-children --sort symbol --percent-limit 0.5 2>/dev/null \
        | sed -e 's/[[:space:]]*$//' | grep -v '^$' | head -n "$TOP"
done
