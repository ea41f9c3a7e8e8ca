#!/usr/bin/env bash
# Tunnel throughput smoke benchmark: iperf3 TCP for 10 s through the tunnel
# between two network namespaces, umbra<->umbra versus
# boringtun-cli<->boringtun-cli, in the same run and the same namespaces
# (one after the other, same tunnel addresses, MTU 1420), plus the bare
# underlay (veth over a bridge) for scale. Prints Gbit/s for each and the
# umbra/boringtun ratio. Not part of the test suite; results go to
# BENCHMARKS.md ("Tunnel throughput").
#
# Usage: sudo scripts/bench-throughput.sh
#   UMBRA=path   binary to measure (default: cargo build --release)
#   SECONDS_PER_RUN=10, ROUNDS=1 (rounds alternate umbra and boringtun)
#   BT_THREADS=N boringtun-cli --threads (default: its own default, 4)
#   OBSERVE=1    add a leg "umbra + flow log + metrics" to each round: both
#                nodes write a JSON flow log and serve /metrics, scraped
#                every second during the run (the cost of observability)
#
# umbra runs one thread; boringtun-cli runs its default thread pool. Both
# ends of each tunnel share the machine's cores with iperf3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${UMBRA:-} ]]; then
    cargo build --release --locked --quiet
    UMBRA=$PWD/target/release/umbra
fi
export UMBRA
DURATION=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-1}

. scripts/lib/netns.sh
. scripts/lib/foreign.sh

netns_init
trap 'netns_cleanup; foreign_cleanup' EXIT
trap 'netns_cleanup; foreign_cleanup; exit 130' INT TERM

netns_host a 198.51.100.1
netns_host b 198.51.100.2
bg b "$NETNS_DIR/iperf3-server.log" iperf3 -s -p 5201
wait_for 10 on b bash -c 'exec 3<>/dev/tcp/127.0.0.1/5201'

# iperf_gbps DST: one TCP run from a to DST; prints Gbit/s (receiver side).
iperf_gbps() {
    local out
    out=$(on a iperf3 -c "$1" -p 5201 -t "$DURATION" -f g 2>&1) || {
        echo "iperf3 to $1 failed:" >&2
        echo "$out" >&2
        return 1
    }
    awk '/receiver/ { print $(NF-2) }' <<<"$out"
}

K_A=$(umbra_key a)
K_B=$(umbra_key b)
cat >"$NETNS_DIR/mesh.policy" <<EOF
node a  key $K_A  addr 10.30.0.1/24  endpoint 198.51.100.1:51820  roles bench
node b  key $K_B  addr 10.30.0.2/24  endpoint 198.51.100.2:51820  roles bench
service iperf  role:bench  tcp/5201 ping
allow role:bench -> iperf
EOF

# cpu_ticks PID...: user+system clock ticks (1/100 s) the processes used.
cpu_ticks() {
    local p sum=0
    for p in "$@"; do
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$sum"
}

# run_umbra [observe]: with "observe", both nodes log flows and serve
# metrics, and a scraper fetches /metrics from both every second.
run_umbra() {
    local extra_a=() extra_b=() scraper=
    if [[ ${1:-} == observe ]]; then
        extra_a=(--flow-log "$NETNS_DIR/a.flows" --metrics 127.0.0.1:9586)
        extra_b=(--flow-log "$NETNS_DIR/b.flows" --metrics 127.0.0.1:9586)
    fi
    umbra_up a --control none "${extra_a[@]}"
    local pa=$LAST_PID
    umbra_up b --control none "${extra_b[@]}"
    local pb=$LAST_PID
    wait_for 10 on a ping -c 1 -W 1 10.30.0.2
    if [[ ${1:-} == observe ]]; then
        bash -c 'while :; do for h in a b; do on $h curl -sf -m 2 -o /dev/null http://127.0.0.1:9586/metrics || echo "scrape of $h failed" >&2; done; sleep 1; done' &
        scraper=$!
    fi
    local t0 g t1
    t0=$(cpu_ticks "$pa" "$pb")
    g=$(iperf_gbps 10.30.0.2)
    t1=$(cpu_ticks "$pa" "$pb")
    [[ -n $scraper ]] && kill "$scraper"
    # SIGTERM: clean shutdown removes umbra0 in both namespaces.
    kill "$pa" "$pb"
    wait "$pa" "$pb" 2>/dev/null || true
    # Gbit/s, then CPU seconds both umbra processes spent per GB carried:
    # less sensitive than throughput to what else the machine runs. Printed
    # last: the caller reads it and starts the next leg at once.
    echo "$g $(awk -v t=$((t1 - t0)) -v g="$g" -v d="$DURATION" 'BEGIN { printf "%.2f", (t / 100) / (g * d / 8) }')"
}

BT_N=0
run_boringtun() {
    BT_N=$((BT_N + 1))
    local ifa=bta$$x$BT_N ifb=btb$$x$BT_N
    local threads=()
    [[ -n ${BT_THREADS:-} ]] && threads=(--threads "$BT_THREADS")
    (umask 077 && wg genkey >"$NETNS_DIR/bta.key" && wg genkey >"$NETNS_DIR/btb.key")
    local pub_a pub_b
    pub_a=$(wg pubkey <"$NETNS_DIR/bta.key")
    pub_b=$(wg pubkey <"$NETNS_DIR/btb.key")
    FOREIGN_IFS+=("$ifa" "$ifb")
    local h ifname key peer endpoint addr pids=()
    for h in a b; do
        if [[ $h == a ]]; then
            ifname=$ifa key=bta peer=$pub_b endpoint=198.51.100.2:51820 addr=10.30.0.1/24
        else
            ifname=$ifb key=btb peer=$pub_a endpoint=198.51.100.1:51820 addr=10.30.0.2/24
        fi
        bg "$h" "$NETNS_DIR/bt-$h.log" boringtun-cli --foreground --disable-drop-privileges "${threads[@]}" "$ifname"
        pids+=("$LAST_PID")
        wait_for 10 test -S "/var/run/wireguard/$ifname.sock"
        on "$h" wg set "$ifname" private-key "$NETNS_DIR/$key.key" listen-port 51820 \
            peer "$peer" endpoint "$endpoint" allowed-ips 10.30.0.0/24
        on "$h" ip addr add "$addr" dev "$ifname"
        on "$h" ip link set "$ifname" mtu 1420 up
    done
    wait_for 10 on a ping -c 1 -W 1 10.30.0.2
    iperf_gbps 10.30.0.2
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
}

echo "bench-throughput: iperf3 TCP ${DURATION} s, a -> b, $ROUNDS round(s); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-throughput: umbra $UMBRA; $(boringtun-cli --version) (threads: ${BT_THREADS:-default})"
underlay=$(iperf_gbps 198.51.100.2)
printf '  %-28s %6s Gbit/s\n' "underlay (veth, no tunnel)" "$underlay"
u_all=() b_all=() o_all=() oc_all=() uc_all=()
for ((r = 1; r <= ROUNDS; r++)); do
    # With OBSERVE=1 the two umbra legs swap order every round, so neither
    # always runs first (machine load drifts).
    if [[ ${OBSERVE:-0} == 1 ]] && ((r % 2 == 0)); then
        read -r o oc < <(run_umbra observe)
        printf '  %-28s %6s Gbit/s  %5s CPU s/GB\n' "umbra + flow log + metrics" "$o" "$oc"
    fi
    read -r u uc < <(run_umbra)
    printf '  %-28s %6s Gbit/s  %5s CPU s/GB\n' "umbra <-> umbra" "$u" "$uc"
    if [[ ${OBSERVE:-0} == 1 ]] && ((r % 2 == 1)); then
        read -r o oc < <(run_umbra observe)
        printf '  %-28s %6s Gbit/s  %5s CPU s/GB\n' "umbra + flow log + metrics" "$o" "$oc"
    fi
    [[ ${OBSERVE:-0} == 1 ]] && o_all+=("$o") && oc_all+=("$oc") && uc_all+=("$uc")
    b=$(run_boringtun)
    printf '  %-28s %6s Gbit/s\n' "boringtun <-> boringtun" "$b"
    u_all+=("$u") b_all+=("$b")
done
u_mean=$(awk -v v="${u_all[*]}" 'BEGIN { n = split(v, a, " "); for (i in a) s += a[i]; printf "%.2f", s / n }')
b_mean=$(awk -v v="${b_all[*]}" 'BEGIN { n = split(v, a, " "); for (i in a) s += a[i]; printf "%.2f", s / n }')
ratio=$(awk -v u="$u_mean" -v b="$b_mean" 'BEGIN { printf "%.2f", u / b }')
echo "bench-throughput: umbra $u_mean Gbit/s, boringtun-cli $b_mean Gbit/s, ratio umbra/boringtun $ratio (underlay $underlay Gbit/s)"
if [[ ${OBSERVE:-0} == 1 ]]; then
    o_mean=$(awk -v v="${o_all[*]}" 'BEGIN { n = split(v, a, " "); for (i in a) s += a[i]; printf "%.2f", s / n }')
    echo "bench-throughput: observability on $o_mean Gbit/s vs off $u_mean Gbit/s: $(awk -v o="$o_mean" -v u="$u_mean" 'BEGIN { printf "%+.1f %%", (o - u) / u * 100 }')"
    # The median of the per-round on/off ratios: one disturbed round moves
    # it less than it moves the means.
    ratios=$(paste -d' ' <(printf '%s\n' "${o_all[@]}") <(printf '%s\n' "${u_all[@]}") | awk '{ printf "%.3f\n", $1 / $2 }')
    median=$(sort -n <<<"$ratios" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%+.1f %%", (m - 1) * 100 }')
    echo "bench-throughput: per-round on/off ratios: $(tr '\n' ' ' <<<"$ratios")(median $median)"
    cpu_on=$(awk -v v="${oc_all[*]}" 'BEGIN { n = split(v, a, " "); for (i in a) s += a[i]; printf "%.2f", s / n }')
    cpu_off=$(awk -v v="${uc_all[*]}" 'BEGIN { n = split(v, a, " "); for (i in a) s += a[i]; printf "%.2f", s / n }')
    echo "bench-throughput: umbra CPU per GB: observability on $cpu_on s, off $cpu_off s: $(awk -v o="$cpu_on" -v u="$cpu_off" 'BEGIN { printf "%+.1f %%", (o - u) / u * 100 }')"
    echo "bench-throughput: flow-log lines written: $(cat "$NETNS_DIR"/a.flows "$NETNS_DIR"/b.flows 2>/dev/null | wc -l)"
fi
