#!/usr/bin/env bash
# Interop: an umbra node meshed with real WireGuard implementations, each
# in its own network namespace, all listed in one shared policy file:
#
#   umbra     198.51.100.1  10.20.0.1  umbra up (role mesh)
#   bt        198.51.100.2  10.20.0.2  boringtun-cli  (role foreign; endpoint
#                                       in the policy: umbra initiates)
#   wgo       198.51.100.3  10.20.0.3  wireguard-go   (role foreign; no
#                                       endpoint: it must contact umbra first)
#   stranger  198.51.100.4  10.20.0.4  boringtun-cli with a key that is not
#                                       in the policy
#
# For each foreign peer: ping (IPv4 and IPv6) and iperf3 (TCP) in both
# directions; umbra's policy enforced against it — the peer's allowed-ips
# cover the whole tunnel subnet, yet a connection to a port the policy does not allow times
# out and a capture on umbra's underlay shows no reply; umbra does not even
# send its own denied probe (egress check); spoofed inner source addresses
# never reach umbra's TUN device. Then wireguard-go and umbra are restarted
# and must handshake again. The stranger's handshakes get no UDP reply at
# all (capture), nor does junk sent to umbra's port. Takes about 45 s.
#
# Needs root and the tools from scripts/ci-deps.sh. UMBRA=path overrides
# the binary (default: a debug build). KEEP_LOGS=1 keeps the scratch
# directory (logs, captures). Exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if [[ -z ${UMBRA:-} ]]; then
    cargo build --locked --quiet
    UMBRA=$PWD/target/debug/umbra
fi
export UMBRA

. scripts/lib/netns.sh
. scripts/lib/foreign.sh

for tool in wg wireguard-go boringtun-cli iperf3 tcpdump ncat ping; do
    command -v "$tool" >/dev/null || { echo "netns-interop: $tool is missing (scripts/ci-deps.sh installs it)" >&2; exit 1; }
done

netns_init
trap 'netns_cleanup; foreign_cleanup' EXIT
trap 'netns_cleanup; foreign_cleanup; exit 130' INT TERM

UNDER_UMBRA=198.51.100.1
IF_BT=wgb$$ IF_WGO=wgg$$ IF_STRANGER=wgs$$
netns_host umbra "$UNDER_UMBRA"
netns_host bt 198.51.100.2
netns_host wgo 198.51.100.3
netns_host stranger 198.51.100.4

K_UMBRA=$(umbra_key umbra)
K_BT=$(wg_key bt)
K_WGO=$(wg_key wgo)
K_STRANGER=$(wg_key stranger)

cat >"$NETNS_DIR/mesh.policy" <<EOF
node umbra  key $K_UMBRA  addr 10.20.0.1/24,fd20::1/64  endpoint $UNDER_UMBRA:51820  roles mesh
node bt     key $K_BT     addr 10.20.0.2/24,fd20::2/64  endpoint 198.51.100.2:51820  roles foreign
node wgo    key $K_WGO    addr 10.20.0.3/24,fd20::3/64  roles foreign

service mesh-iperf     role:mesh     tcp/5201 ping
service foreign-iperf  role:foreign  tcp/5201 ping

allow role:foreign -> mesh-iperf     as foreign-to-mesh
allow role:mesh    -> foreign-iperf  as mesh-to-foreign

expect bt  -> umbra:5201/tcp is allow
expect wgo -> umbra:5201/tcp is allow
expect bt  -> umbra:5202/tcp is drop
expect umbra -> wgo:5202/tcp is drop
EOF

# Every foreign peer routes the whole tunnel subnet to umbra.
TUNNEL=10.20.0.0/24,fd20::/64
foreign_up bt boringtun "$IF_BT" 10.20.0.2/24 51820 "$K_UMBRA" "$UNDER_UMBRA:51820" "$TUNNEL"
foreign_up wgo wireguard-go "$IF_WGO" 10.20.0.3/24 51820 "$K_UMBRA" "$UNDER_UMBRA:51820" "$TUNNEL"
foreign_up stranger boringtun "$IF_STRANGER" 10.20.0.4/24 51820 "$K_UMBRA" "$UNDER_UMBRA:51820" "$TUNNEL"
on bt ip addr add fd20::2/64 dev "$IF_BT" nodad
on wgo ip addr add fd20::3/64 dev "$IF_WGO" nodad
umbra_up umbra --log-level debug

# Services everywhere: iperf3 on 5201 (allowed), a listener on 5202 (not
# in the policy: only umbra's enforcement keeps it dark).
for h in umbra bt wgo; do
    bg "$h" "$NETNS_DIR/$h-iperf3.log" iperf3 -s -p 5201
    bg "$h" "$NETNS_DIR/$h-ncat.log" ncat -l -k 5202
done
wait_for 10 on umbra ncat -z 127.0.0.1 5202
wait_for 10 on umbra ncat -z 127.0.0.1 5201

# WireGuard transport data messages (type 4) from umbra to HOST, longer than
# a keepalive (32 bytes of WireGuard payload, UDP length 40): anything that
# carries a packet back.
data_to() { echo "udp and src host $UNDER_UMBRA and dst host $1 and udp[8:4] = 0x04000000 and udp[4:2] > 40"; }

# iperf_run FROM DST: 3 s of TCP; sets RATE ("N Mbits/sec") or prints why not.
iperf_run() {
    local out
    RATE=""
    if ! out=$(on "$1" iperf3 -c "$2" -p 5201 -t 3 -f m 2>&1); then
        echo "$out" | tail -5 | sed 's/^/      /'
        return 0
    fi
    RATE=$(awk '/receiver/ { print $(NF-2), $(NF-1) }' <<<"$out")
}

# timed_out FROM DST PORT: a TCP connection attempt that gets no answer at
# all (ncat's connect timeout), as opposed to a refusal or a connection.
timed_out() {
    local out
    if out=$(on "$1" ncat -w 3 "$2" "$3" </dev/null 2>&1); then
        echo "      connected: $out"
        return 1
    fi
    [[ $out == *TIMEOUT* ]] || { echo "      not a timeout: $out"; return 1; }
}

# refused_at_once FROM DST PORT: a TCP connection attempt refused (RST) in
# under a second -- what a node answers its own applications when its
# policy (the receiver's view) denies the flow: fail fast locally.
refused_at_once() {
    local out start=$EPOCHREALTIME
    if out=$(on "$1" ncat -w 3 "$2" "$3" </dev/null 2>&1); then
        echo "      connected: $out"
        return 1
    fi
    [[ $out == *"Connection refused"* ]] || { echo "      not refused: $out"; return 1; }
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a < 1) }'
}

# wait_quiet HOST FILTER: waits (up to 5 s) until HOST's eth0 carries no
# packet matching FILTER for half a second.
wait_quiet() {
    local i
    for i in {1..10}; do
        [[ -z $(on "$1" timeout 0.5 tcpdump -nni eth0 -c 1 "$2" 2>/dev/null) ]] && return 0
    done
    echo "      $1 still sending ($2) after 5 s"
}

# quiet CMD...: runs CMD, shows its output only if it fails.
quiet() {
    local out
    out=$("$@" 2>&1) || { local rc=$?; echo "$out" | tail -8 | sed 's/^/      /'; return "$rc"; }
}
# silent CMD...: runs CMD without output (for checks expected to fail).
silent() { "$@" >/dev/null 2>&1; }

count_is() { # WANT NAME [FILTER]
    local want=$1 got
    got=$(cap_count "${@:2}")
    [[ $got -eq $want ]] || { echo "      $got packets, want $want:"; cap_show "$2"; return 1; }
}
count_positive() { # NAME [FILTER]
    local got
    got=$(cap_count "$@")
    ((got > 0)) || { echo "      no packets"; return 1; }
}

# peer_checks NAME KIND IFNAME UNDERLAY ADDR OTHER_ADDR
peer_checks() {
    local name=$1 kind=$2 ifname=$3 under=$4 addr=$5 other=$6
    echo "--- umbra <-> $kind ($name, $addr)"

    cap_start umbra eth0 "allowed-$name" udp
    check "$kind -> umbra: ping" quiet on "$name" ping -c 3 -i 0.2 -w 10 10.20.0.1
    cap_stop
    check "capture control: umbra's replies to $name show up as data messages" count_positive "allowed-$name" "$(data_to "$under")"
    check "umbra -> $kind: ping" quiet on umbra ping -c 3 -i 0.2 -w 10 "$addr"
    check "$kind -> umbra: ping over IPv6" quiet on "$name" ping -6 -c 3 -i 0.2 -w 10 fd20::1
    check "umbra -> $kind: ping over IPv6" quiet on umbra ping -6 -c 3 -i 0.2 -w 10 "fd20::${addr##*.}"

    iperf_run "$name" 10.20.0.1
    check "$kind -> umbra: iperf3 TCP 3 s (${RATE:-failed})" test -n "$RATE"
    iperf_run umbra "$addr"
    check "umbra -> $kind: iperf3 TCP 3 s (${RATE:-failed})" test -n "$RATE"

    # Enforcement: 5202 listens on umbra but no rule allows it. The iperf3
    # runs' last segments (FIN retransmissions, final ACKs) must be over
    # first, or the capture below would count them as replies.
    wait_quiet umbra "$(data_to "$under")"
    cap_start umbra eth0 "denied-$name" udp
    check "$kind -> umbra:5202/tcp (not in the policy) times out" timed_out "$name" 10.20.0.1 5202
    cap_stop
    check "capture on umbra's eth0: no reply to the denied probe" count_is 0 "denied-$name" "$(data_to "$under")"

    # Egress check: umbra does not even send what $name's policy would drop.
    cap_start umbra eth0 "egress-$name" udp
    check "umbra -> $kind:5202/tcp (not in the policy) is refused locally at once" refused_at_once umbra "$addr" 5202
    cap_stop
    check "capture on umbra's eth0: the denied probe was never sent" count_is 0 "egress-$name" "$(data_to "$under")"

    # Spoofing: extra source addresses on the peer's interface — one that
    # no node owns, and another node's.
    on "$name" ip addr add 10.20.0.99/32 dev "$ifname"
    on "$name" ip addr add "$other/32" dev "$ifname"
    cap_start umbra umbra0 "spoof-$name" icmp
    check "$kind: ping from unowned source 10.20.0.99 gets no answer" \
        fails silent on "$name" ping -c 2 -i 0.2 -W 1 -I 10.20.0.99 10.20.0.1
    check "$kind: ping from another node's source $other gets no answer" \
        fails silent on "$name" ping -c 2 -i 0.2 -W 1 -I "$other" 10.20.0.1
    check "$kind: ping from its own source $addr works" \
        quiet on "$name" ping -c 2 -i 0.2 -w 5 -I "$addr" 10.20.0.1
    cap_stop
    check "capture on umbra0: spoofed packets never reach umbra's TUN" \
        count_is 0 "spoof-$name" "src host 10.20.0.99 or src host $other"
    check "capture on umbra0: the legit pings did" count_positive "spoof-$name" "src host $addr"
    on "$name" ip addr del 10.20.0.99/32 dev "$ifname"
    on "$name" ip addr del "$other/32" dev "$ifname"
}

echo "netns-interop: $(boringtun-cli --version), wireguard-go $(wireguard-go --version | awk 'NR==1 {print $2}')"
peer_checks bt boringtun-cli "$IF_BT" 198.51.100.2 10.20.0.2 10.20.0.3
peer_checks wgo wireguard-go "$IF_WGO" 198.51.100.3 10.20.0.3 10.20.0.2

echo "--- restarts (fresh handshakes over live sessions)"
# wireguard-go restarts with the same key and no session: it initiates
# again and umbra must accept the newer handshake.
kill "$PID_wgo"
wait_for 10 fails test -S "/var/run/wireguard/$IF_WGO.sock"
foreign_up wgo wireguard-go "$IF_WGO" 10.20.0.3/24 51820 "$K_UMBRA" "$UNDER_UMBRA:51820" "$TUNNEL"
check "wireguard-go restarted: handshakes again, ping works" quiet on wgo ping -c 2 -i 0.2 -w 10 10.20.0.1
# umbra restarts: it initiates to bt (endpoint in the policy), which still
# holds a session with the old umbra.
kill "${UMBRA_PID[umbra]}"
wait "${UMBRA_PID[umbra]}" 2>/dev/null || true
umbra_up umbra --log-level debug
check "umbra restarted: handshakes with boringtun again, ping works" quiet on umbra ping -c 2 -i 0.2 -w 10 10.20.0.2
check "boringtun -> restarted umbra: iperf3 TCP 2 s" quiet on bt iperf3 -c 10.20.0.1 -p 5201 -t 2

echo "--- a key outside the policy"
cap_start umbra eth0 stranger "host 198.51.100.4"
# Its pings make boringtun send handshake initiations (valid mac1: it
# knows umbra's public key), retried while the pings last.
check "stranger -> umbra: ping gets no answer" fails silent on stranger ping -c 3 -i 1 -W 1 10.20.0.1
# Junk without a valid mac1: a short datagram and a fake initiation.
on stranger bash -c "printf 'hello?' | ncat -u -w 1 $UNDER_UMBRA 51820" || true
on stranger bash -c "{ printf '\\x01\\x00\\x00\\x00'; head -c 144 /dev/urandom; } | ncat -u -w 1 $UNDER_UMBRA 51820" || true
cap_stop
check "capture on umbra's eth0: the stranger's handshakes arrived" \
    count_positive stranger "udp and src host 198.51.100.4 and dst port 51820 and udp[8:4] = 0x01000000"
check "capture on umbra's eth0: umbra sent nothing at all back (UDP or ICMP)" \
    count_is 0 stranger "ip and src host $UNDER_UMBRA"
check "stranger's wg shows no handshake" \
    test "$(on stranger wg show "$IF_STRANGER" latest-handshakes | awk '{print $2}')" = 0
check "umbra is still alive" kill -0 "${UMBRA_PID[umbra]}"

echo "netns-interop: $T_PASS passed, $T_FAIL failed ($((SECONDS - start)) s)"
if ((T_FAIL > 0)); then
    echo "--- umbra log (last 40 lines)"
    tail -40 "$NETNS_DIR/umbra.log"
fi
((T_FAIL == 0))
