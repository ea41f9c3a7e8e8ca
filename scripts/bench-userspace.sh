#!/usr/bin/env bash
# Userspace data plane benchmark: umbra up --userspace --forward versus
# onetun (crates.io), in the same run and the same namespaces. Node "a"
# runs the userspace proxy (one after the other: umbra, then onetun) with a
# local forward 127.0.0.1:15201 -> 10.40.0.1:5201; node "b" is an umbra TUN
# node running iperf3 -s and a TCP echo server. Measures:
#   - TCP throughput: iperf3 -c 127.0.0.1 -p 15201 for SECONDS_PER_RUN s
#     (a -> b, then -R for b -> a)
#   - memory per connection: RSS of the proxy process while N connections
#     (each having echoed 16 KiB) are held open, minus RSS before, over N.
#   - concurrent throughput at N = 1, 100, 1000 (CONCURRENCY): one way
#     (each connection uploads SIZE bytes to a sink on b, which answers the
#     sha256) and two-way (each sends SIZE bytes to a threaded echo server
#     on b while reading the echo, sha256-checked); payload Mbit/s over the
#     wall time of the whole batch. SIZE: 32 MiB at N=1, else 256 KiB.
# Not part of the test suite; results go to BENCHMARKS.md ("Userspace data
# plane"). Installs onetun into /tmp/onetun if it is not on PATH.
#
# Usage: sudo scripts/bench-userspace.sh
#   UMBRA=path (default: cargo build --release), SECONDS_PER_RUN=10, CONNS=1000,
#   PROXIES="umbra onetun" (either or both)
#   MODE=duplex: only umbra's two-way batches (ROUNDS, DUPLEX_N, CC; below)
# No -e: a proxy that fails a leg must still get its line printed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${UMBRA:-} ]]; then
    cargo build --release --locked --quiet
    UMBRA=$PWD/target/release/umbra
fi
export UMBRA
ONETUN=$(command -v onetun || echo /tmp/onetun/bin/onetun)
[[ -x $ONETUN ]] || cargo install --locked onetun --root /tmp/onetun
DURATION=${SECONDS_PER_RUN:-10}
CONNS=${CONNS:-1000}
BULK=$PWD/scripts/lib/bulk.py

. scripts/lib/netns.sh
netns_init
D=$NETNS_DIR
netns_host a 198.51.100.1
netns_host b 198.51.100.2
A=$(umbra_key a) B=$(umbra_key b) O=$(umbra_key onetun)
cat >"$D/mesh.policy" <<P
node a      key $A addr 10.40.0.2/24 endpoint 198.51.100.1:51820 roles client
node onetun key $O addr 10.40.0.3/24 roles client
node b      key $B addr 10.40.0.1/24 endpoint 198.51.100.2:51820 roles server
service bench role:server tcp/5201,7777,7778,7779
allow role:client -> bench
P
umbra_up b
bg b "$D/iperf3.log" iperf3 -s -p 5201
bg b "$D/echo.log" python3 "$BULK" echo 10.40.0.1 7777
bg b "$D/echo2.log" bash -c "ulimit -n 16384; exec python3 '$BULK' echo-threads 10.40.0.1 7778"
bg b "$D/sink.log" python3 "$BULK" sink 10.40.0.1 7779
wait_for 10 on b ncat -z 10.40.0.1 7777
wait_for 10 on b ncat -z 10.40.0.1 7778
wait_for 10 on b ncat -z 10.40.0.1 7779
CONCURRENCY=${CONCURRENCY:-1 100 1000}
# onetun holds none of 150 or more concurrent connections (see
# BENCHMARKS.md): its batches stop at 100 unless told otherwise.
ONETUN_CONCURRENCY=${ONETUN_CONCURRENCY:-1 100}

# mbps BYTES OUTPUT: payload Mbit/s from a bulk.py "in X s" line, or the failure.
mbps() {
    local secs
    secs=$(grep -o 'in [0-9.]* s' <<<"$2" | head -1 | cut -d' ' -f2)
    if [[ -z $secs ]]; then
        echo "failed ($(tail -1 <<<"$2"))"
        return
    fi
    echo "$(echo "$1 * 8 / $secs / 1000000" | bc -l | xargs printf '%.0f') Mbit/s (${secs} s)"
}

# concurrent NAME: one-way and two-way batches at each N.
concurrent() {
    local name=$1 n size out
    for n in $2; do
        size=262144
        ((n == 1)) && size=33554432
        out=$(on a bash -c "ulimit -n 16384; timeout 300 python3 '$BULK' upload 127.0.0.1 17779 $n $size 240" 2>&1)
        printf '%-8s N=%-5s one-way  %s\n' "$name" "$n" "$(mbps $((n * size)) "$out")"
        out=$(on a bash -c "ulimit -n 16384; timeout 300 python3 '$BULK' duplex 127.0.0.1 17778 $n $size 240" 2>&1)
        printf '%-8s N=%-5s two-way  %s\n' "$name" "$n" "$(mbps $((2 * n * size)) "$out")"
    done
}

# iperf3 -J on stdin -> Gbit/s received, or "failed".
GBPS='import json,sys
try:
    r = json.load(sys.stdin)
    print("%.3f" % (r["end"]["sum_received"]["bits_per_second"] / 1e9) if "error" not in r else "failed")
except Exception:
    print("failed")'
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# measure NAME PID: memory per connection on the fresh process (onetun
# stops serving new connections once its event bus lags, which a
# throughput run makes it do), then throughput both ways.
measure() {
    local name=$1 pid=$2 up down before during held
    wait_for 10 on a ncat -z 127.0.0.1 15201
    before=$(rss_kb "$pid")
    on a bash -c "ulimit -n 16384; exec python3 '$BULK' hold 127.0.0.1 17777 $CONNS 16384 6" >"$D/hold-$name.log" 2>&1 &
    local hp=$!
    wait_for 70 grep -q holding "$D/hold-$name.log"
    sleep 2
    during=$(rss_kb "$pid")
    wait "$hp"
    held=$(grep -o 'holding [0-9]*' "$D/hold-$name.log" | cut -d' ' -f2)
    up=$(on a timeout $((DURATION + 20)) iperf3 -c 127.0.0.1 -p 15201 -t "$DURATION" -J | python3 -c "$GBPS")
    down=$(on a timeout $((DURATION + 20)) iperf3 -c 127.0.0.1 -p 15201 -t "$DURATION" -R -J | python3 -c "$GBPS")
    if [[ -z $before || -z $during || -z $held || $held -eq 0 ]]; then
        printf '%-8s up %s Gbit/s  down %s Gbit/s  held %s of %s conns (no memory figure)\n' \
            "$name" "$up" "$down" "${held:-0}" "$CONNS"
        return
    fi
    printf '%-8s up %s Gbit/s  down %s Gbit/s  RSS idle %d KiB, with %s of %s conns %d KiB: %.1f KiB/conn\n' \
        "$name" "$up" "$down" "$before" "$held" "$CONNS" "$during" \
        "$(echo "($during - $before) / $held" | bc -l)"
}

# MODE=duplex: only umbra's two-way batches, ROUNDS times at each N of
# DUPLEX_N (default 200 1000), each with the wall time and the kernel's
# counters in both namespaces (UDP receive-buffer drops, TCP retransmissions
# and timeouts of b's kernel TCP) -- the issue 10 measurements.
if [[ ${MODE:-} == duplex ]]; then
    bg a "$D/a.log" bash -c "ulimit -n 16384; exec '$UMBRA' up --userspace --policy '$D/mesh.policy' --key '$D/a.key' \
        --forward 17778=10.40.0.1:7778 --log-level warn"
    wait_for 10 on a ncat -z 127.0.0.1 17778
    # The kernel TCP's congestion control in both namespaces: inherited from
    # the host unless CC is set (a namespace may only pick one listed in
    # net.ipv4.tcp_allowed_congestion_control; reno always is). With bbr the
    # echo server's sockets on b gave N=1000 a long tail (BENCHMARKS.md).
    if [[ -n ${CC:-} ]]; then
        on a sysctl -qw net.ipv4.tcp_congestion_control="$CC"
        on b sysctl -qw net.ipv4.tcp_congestion_control="$CC"
    fi
    echo "kernel TCP congestion control: $(on b sysctl -n net.ipv4.tcp_congestion_control)"
    COUNTERS="UdpRcvbufErrors TcpRetransSegs TcpExtTCPTimeouts"
    for ((r = 1; r <= ${ROUNDS:-3}; r++)); do
        for n in ${DUPLEX_N:-200 1000}; do
            on a env NSTAT_HISTORY="$D/nstat.a" nstat -n
            on b env NSTAT_HISTORY="$D/nstat.b" nstat -n
            out=$(on a bash -c "ulimit -n 16384; timeout 600 python3 '$BULK' duplex 127.0.0.1 17778 $n 262144 590" 2>&1)
            printf 'N=%-5s %s | a: %s | b: %s | load %s\n' "$n" "$(tail -1 <<<"$out")" \
                "$(on a env NSTAT_HISTORY="$D/nstat.a" nstat -z $COUNTERS | awk 'NR > 1 {printf "%s %s ", $1, $2}')" \
                "$(on b env NSTAT_HISTORY="$D/nstat.b" nstat -z $COUNTERS | awk 'NR > 1 {printf "%s %s ", $1, $2}')" \
                "$(cut -d' ' -f1 /proc/loadavg)"
        done
    done
    echo "umbra: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src vendor Cargo.toml || echo +changes)"
    exit 0
fi
PROXIES=${PROXIES:-umbra onetun}
if [[ " $PROXIES " == *" umbra "* ]]; then
bg a "$D/a.log" bash -c "ulimit -n 16384; exec '$UMBRA' up --userspace --policy '$D/mesh.policy' --key '$D/a.key' \
    --forward 15201=10.40.0.1:5201 --forward 17777=10.40.0.1:7777 \
    --forward 17778=10.40.0.1:7778 --forward 17779=10.40.0.1:7779 --log-level warn"
UPID=$LAST_PID
sleep 1
measure umbra "$UPID"
concurrent umbra "$CONCURRENCY"
kill "$UPID"
sleep 0.5
fi

if [[ " $PROXIES " == *" onetun "* ]]; then
# onetun: one process per forward (one port-forward argument each is
# supported in one process too).
bg a "$D/onetun.log" bash -c "ulimit -n 16384; exec '$ONETUN' 127.0.0.1:15201:10.40.0.1:5201:TCP 127.0.0.1:17777:10.40.0.1:7777:TCP \
    127.0.0.1:17778:10.40.0.1:7778:TCP 127.0.0.1:17779:10.40.0.1:7779:TCP \
    --endpoint-addr 198.51.100.2:51820 --endpoint-public-key '$B' --private-key-file '$D/onetun.key' \
    --source-peer-ip 10.40.0.3 --keep-alive 10 --log warn"
OPID=$LAST_PID
sleep 1
measure onetun "$OPID"
concurrent onetun "$ONETUN_CONCURRENCY"
grep -c "Failed to read event bus" "$D/onetun.log" | sed 's/^/onetun "Failed to read event bus" errors: /'
kill "$OPID"
fi
echo "umbra: $("$UMBRA" --help >/dev/null 2>&1; git rev-parse --short HEAD), onetun: $("$ONETUN" --version 2>&1 | head -1)"
