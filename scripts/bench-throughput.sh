#!/usr/bin/env bash
# Tunnel throughput benchmark: umbra vs boringtun-cli vs Debian's
# wireguard-go, in the same run and the same two network namespaces (one
# tunnel at a time, same tunnel addresses, MTU 1420, veth/bridge underlay),
# plus the bare underlay for scale. Each leg runs three iperf3 tests from a
# to b through the tunnel:
#   tcp1  TCP, 1 stream
#   tcp4  TCP, 4 streams (iperf3 -P 4)
#   udp   UDP at a fixed offered rate ($UDP_RATE, 1392-byte payloads that
#         fill the 1420-byte tunnel MTU), with the loss iperf3's receiver saw
# and for each test the CPU seconds both tunnel daemons spent per GB
# carried (user+system from /proc/PID/stat, all threads), which depends
# far less than throughput on what else the machine runs. The order of
# the implementations rotates every round (machine load drifts). Ends with
# a Markdown table of the means and the ratios against boringtun-cli.
# Not part of the test suite; results go to BENCHMARKS.md ("Tunnel
# throughput").
#
# Usage: sudo scripts/bench-throughput.sh
#   UMBRA=path       binary to measure (default: cargo build --release)
#   SECONDS_PER_RUN  seconds per iperf3 test (default 10)
#   ROUNDS           rounds (default 3)
#   UDP_RATE         iperf3 -b for the UDP test (default 1G)
#   IMPLS            which tunnels, in round-1 order (default
#                    "umbra boringtun wireguard-go")
#   BT_THREADS=N     boringtun-cli --threads (default: its own, 4)
#   OBSERVE=1        add a leg "umbra-observe": both nodes write a JSON flow
#                    log and serve /metrics, scraped every second during
#                    the run (the cost of observability)
#
# Short smoke run: sudo SECONDS_PER_RUN=3 ROUNDS=1 scripts/bench-throughput.sh
#
# umbra runs one thread; boringtun-cli its thread pool; wireguard-go one
# goroutine pipeline per direction (Go schedules them on both cores). All
# share the machine's cores with iperf3 at both ends.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${UMBRA:-} ]]; then
    cargo build --release --locked --quiet
    UMBRA=$PWD/target/release/umbra
fi
export UMBRA
DURATION=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
UDP_RATE=${UDP_RATE:-1G}
read -r -a IMPL_LIST <<<"${IMPLS:-umbra boringtun wireguard-go}"
[[ ${OBSERVE:-0} == 1 ]] && IMPL_LIST+=(umbra-observe)
TESTS=(tcp1 tcp4 udp)

. scripts/lib/netns.sh
. scripts/lib/foreign.sh

netns_init
trap 'netns_cleanup; foreign_cleanup' EXIT
trap 'netns_cleanup; foreign_cleanup; exit 130' INT TERM

netns_host a 198.51.100.1
netns_host b 198.51.100.2
bg b "$NETNS_DIR/iperf3-server.log" iperf3 -s -p 5201
wait_for 10 on b bash -c 'exec 3<>/dev/tcp/127.0.0.1/5201'

# iperf_run TEST DST: one iperf3 test from a to DST; prints "Gbit/s loss%"
# as the receiver saw them (loss "-" for TCP), or "- -" if it failed.
iperf_run() {
    local args=(-c "$2" -p 5201 -t "$DURATION" -J) out
    case $1 in
    tcp1) ;;
    tcp4) args+=(-P 4) ;;
    # -w: 2 MB socket buffers, so bursts are not lost in iperf3 itself.
    udp) args+=(-u -b "$UDP_RATE" -l 1392 -w 2M) ;;
    esac
    # stdout only: iperf3 warns on stderr, which would break the JSON.
    if ! out=$(on a iperf3 "${args[@]}" 2>"$NETNS_DIR/iperf3-client.err"); then
        echo "iperf3 $1 to $2 failed:" >&2
        tail -5 <<<"$out" >&2
        cat "$NETNS_DIR/iperf3-client.err" >&2
        echo "- -"
        return
    fi
    python3 -c '
import json, sys
text = sys.stdin.read()
try:
    s = json.loads(text)["end"]["sum_received"]
except (ValueError, KeyError) as e:
    print("iperf3 output not understood (%s): %s" % (e, text[:400]), file=sys.stderr)
    print("- -")
    sys.exit()
loss = "%.2f" % s["lost_percent"] if "lost_percent" in s else "-"
print("%.3f %s" % (s["bits_per_second"] / 1e9, loss))' <<<"$out"
}

K_A=$(umbra_key a)
K_B=$(umbra_key b)
cat >"$NETNS_DIR/mesh.policy" <<EOF
node a  key $K_A  addr 10.30.0.1/24  endpoint 198.51.100.1:51820  roles bench
node b  key $K_B  addr 10.30.0.2/24  endpoint 198.51.100.2:51820  roles bench
service iperf  role:bench  tcp/5201 udp/5201 ping
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

# Each start_* brings one tunnel up in both namespaces and sets LEG_PIDS
# (the two daemons) and LEG_EXTRA (helpers to stop with them).
LEG_PIDS=() LEG_EXTRA=()

start_umbra() {
    local extra_a=() extra_b=()
    if [[ ${1:-} == observe ]]; then
        extra_a=(--flow-log "$NETNS_DIR/a.flows" --metrics 127.0.0.1:9586)
        extra_b=(--flow-log "$NETNS_DIR/b.flows" --metrics 127.0.0.1:9586)
    fi
    umbra_up a --control none "${extra_a[@]}"
    LEG_PIDS=("$LAST_PID")
    umbra_up b --control none "${extra_b[@]}"
    LEG_PIDS+=("$LAST_PID")
    LEG_EXTRA=()
    if [[ ${1:-} == observe ]]; then
        bash -c 'while :; do for h in a b; do on $h curl -sf -m 2 -o /dev/null http://127.0.0.1:9586/metrics || echo "scrape of $h failed" >&2; done; sleep 1; done' &
        LEG_EXTRA=($!)
    fi
}

start_umbra-observe() { start_umbra observe; }

FOREIGN_N=0
# start_foreign KIND: boringtun-cli or wireguard-go on both ends,
# configured with `wg` (new keys each time).
start_foreign() {
    local kind=$1
    FOREIGN_N=$((FOREIGN_N + 1))
    local tag=bt
    [[ $kind == wireguard-go ]] && tag=wg
    local ifa=${tag}a$$x$FOREIGN_N ifb=${tag}b$$x$FOREIGN_N
    local threads=()
    [[ $kind == boringtun && -n ${BT_THREADS:-} ]] && threads=(--threads "$BT_THREADS")
    (umask 077 && wg genkey >"$NETNS_DIR/fa.key" && wg genkey >"$NETNS_DIR/fb.key")
    local pub_a pub_b
    pub_a=$(wg pubkey <"$NETNS_DIR/fa.key")
    pub_b=$(wg pubkey <"$NETNS_DIR/fb.key")
    FOREIGN_IFS+=("$ifa" "$ifb")
    LEG_PIDS=() LEG_EXTRA=()
    local h ifname key peer endpoint addr
    for h in a b; do
        if [[ $h == a ]]; then
            ifname=$ifa key=fa peer=$pub_b endpoint=198.51.100.2:51820 addr=10.30.0.1/24
        else
            ifname=$ifb key=fb peer=$pub_a endpoint=198.51.100.1:51820 addr=10.30.0.2/24
        fi
        if [[ $kind == boringtun ]]; then
            bg "$h" "$NETNS_DIR/$kind-$h.log" boringtun-cli --foreground --disable-drop-privileges "${threads[@]}" "$ifname"
        else
            bg "$h" "$NETNS_DIR/$kind-$h.log" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifname"
        fi
        LEG_PIDS+=("$LAST_PID")
        wait_for 10 test -S "/var/run/wireguard/$ifname.sock" || {
            echo "$kind did not come up in $h:" >&2
            cat "$NETNS_DIR/$kind-$h.log" >&2
            return 1
        }
        on "$h" wg set "$ifname" private-key "$NETNS_DIR/$key.key" listen-port 51820 \
            peer "$peer" endpoint "$endpoint" allowed-ips 10.30.0.0/24
        on "$h" ip addr add "$addr" dev "$ifname"
        on "$h" ip link set "$ifname" mtu 1420 up
    done
}

start_boringtun() { start_foreign boringtun; }
start_wireguard-go() { start_foreign wireguard-go; }

label() {
    case $1 in
    umbra) echo "umbra" ;;
    umbra-observe) echo "umbra + flow log + metrics" ;;
    boringtun) echo "boringtun-cli" ;;
    wireguard-go) echo "wireguard-go" ;;
    underlay) echo "underlay (veth, no tunnel)" ;;
    esac
}

# Results: RES["impl test metric"] = one value per round, space-separated.
declare -A RES=()
record() { RES["$1 $2 $3"]+="$4 "; }

# leg IMPL: brings IMPL's tunnel up, runs the tests, takes it down.
leg() {
    local impl=$1 t g loss t0 t1 cpu
    "start_$impl"
    wait_for 10 on a ping -c 1 -W 1 10.30.0.2 || {
        echo "$impl: no ping through the tunnel" >&2
        return 1
    }
    for t in "${TESTS[@]}"; do
        t0=$(cpu_ticks "${LEG_PIDS[@]}")
        read -r g loss < <(iperf_run "$t" 10.30.0.2)
        t1=$(cpu_ticks "${LEG_PIDS[@]}")
        cpu=-
        if [[ $g != - ]]; then
            cpu=$(awk -v t=$((t1 - t0)) -v g="$g" -v d="$DURATION" 'BEGIN { if (g > 0) printf "%.2f", (t / 100) / (g * d / 8); else print "-" }')
        fi
        record "$impl" "$t" gbps "$g"
        record "$impl" "$t" loss "$loss"
        record "$impl" "$t" cpu "$cpu"
        printf '  %-28s %-5s %7s Gbit/s  loss %6s %%  %6s CPU s/GB\n' "$(label "$impl")" "$t" "$g" "$loss" "$cpu"
    done
    # SIGTERM: each daemon removes its interface on a clean exit.
    ((${#LEG_EXTRA[@]})) && kill "${LEG_EXTRA[@]}" 2>/dev/null
    kill "${LEG_PIDS[@]}"
    wait "${LEG_PIDS[@]}" "${LEG_EXTRA[@]}" 2>/dev/null || true
}

echo "bench-throughput: ${DURATION} s per test, UDP offered $UDP_RATE, $ROUNDS round(s); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-throughput: umbra $UMBRA; $(boringtun-cli --version) (threads: ${BT_THREADS:-default}); wireguard-go $(wireguard-go --version 2>&1 | awk '{ print $NF; exit }')"
for t in "${TESTS[@]}"; do
    read -r g loss < <(iperf_run "$t" 198.51.100.2)
    record underlay "$t" gbps "$g"
    record underlay "$t" loss "$loss"
    printf '  %-28s %-5s %7s Gbit/s  loss %6s %%\n' "$(label underlay)" "$t" "$g" "$loss"
done
n=${#IMPL_LIST[@]}
for ((r = 0; r < ROUNDS; r++)); do
    echo "round $((r + 1)):"
    for ((i = 0; i < n; i++)); do
        leg "${IMPL_LIST[$(((i + r) % n))]}"
    done
done

# mean VALUES...: mean of the numeric values ("-" skipped), or "-".
mean() {
    awk -v v="$*" 'BEGIN { n = split(v, a, " "); c = 0; s = 0; for (i = 1; i <= n; i++) if (a[i] != "-") { s += a[i]; c++ } if (c) printf "%.2f", s / c; else print "-" }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}
m() { mean ${RES["$1 $2 $3"]:-}; }

echo
echo "bench-throughput: means of $ROUNDS round(s), ${DURATION} s per test (CPU: both daemons, seconds per GB carried; UDP offered $UDP_RATE)"
echo
echo "| | TCP 1 stream Gbit/s | CPU s/GB | TCP 4 streams Gbit/s | CPU s/GB | UDP Gbit/s | UDP loss % | CPU s/GB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for impl in underlay "${IMPL_LIST[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$impl")" \
        "$(m "$impl" tcp1 gbps)" "$(m "$impl" tcp1 cpu)" \
        "$(m "$impl" tcp4 gbps)" "$(m "$impl" tcp4 cpu)" \
        "$(m "$impl" udp gbps)" "$(m "$impl" udp loss)" "$(m "$impl" udp cpu)"
done
if [[ " ${IMPL_LIST[*]} " == *" boringtun "* ]]; then
    for impl in "${IMPL_LIST[@]}"; do
        [[ $impl == boringtun ]] && continue
        # Throughput: higher is better; CPU per GB: lower is better.
        printf '| %s / boringtun-cli | %s× | %s× | %s× | %s× | %s× | | %s× |\n' "$(label "$impl")" \
            "$(ratio "$(m "$impl" tcp1 gbps)" "$(m boringtun tcp1 gbps)")" \
            "$(ratio "$(m "$impl" tcp1 cpu)" "$(m boringtun tcp1 cpu)")" \
            "$(ratio "$(m "$impl" tcp4 gbps)" "$(m boringtun tcp4 gbps)")" \
            "$(ratio "$(m "$impl" tcp4 cpu)" "$(m boringtun tcp4 cpu)")" \
            "$(ratio "$(m "$impl" udp gbps)" "$(m boringtun udp gbps)")" \
            "$(ratio "$(m "$impl" udp cpu)" "$(m boringtun udp cpu)")"
    done
fi
if [[ ${OBSERVE:-0} == 1 ]]; then
    echo
    echo "bench-throughput: observability on/off, TCP 1 stream: $(ratio "$(m umbra-observe tcp1 gbps)" "$(m umbra tcp1 gbps)")× throughput, $(ratio "$(m umbra-observe tcp1 cpu)" "$(m umbra tcp1 cpu)")× CPU per GB"
    echo "bench-throughput: flow-log lines written: $(cat "$NETNS_DIR"/a.flows "$NETNS_DIR"/b.flows 2>/dev/null | wc -l)"
fi
