#!/usr/bin/env bash
# The userspace data plane (umbra up --userspace): nodes "us" and "ugw" run
# as user nobody, with no capabilities and /dev/net/tun hidden, so no TUN
# device can exist. Covers: --forward to an umbra TUN node and to a
# boringtun-cli peer; --expose of a local HTTP server to an allowed peer
# while a denied peer gets silence (capture); a userspace gateway reaching a
# service in a third namespace; 1,000 concurrent connections with bulk
# transfers checksummed end to end both ways; 200 and 1,000 concurrent
# two-way transfers (each client sends 256 KiB while reading the echo) in
# bounded time; a UDP forward round trip.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet || exit 1
UMBRA=$PWD/target/debug/umbra
NS=uu$$
source scripts/lib/netns.sh
source scripts/lib/foreign.sh
netns_init
trap 'netns_cleanup; foreign_cleanup' EXIT
D=$NETNS_DIR
chmod 755 "$D"
BULK=$PWD/scripts/lib/bulk.py
IF_BT=ubt$$
IF_OT=uot$$

netns_host srv 198.51.100.1
netns_host us 198.51.100.2
netns_host bt 198.51.100.3
netns_host other 198.51.100.4
netns_host ugw 198.51.100.5
# The kernel TCP on srv (the echo server's sockets in the two-way checks)
# runs Reno whatever the host's default: a namespace inherits it (bbr on
# some hosts, cubic on Debian), and with bbr the N=1000 tail was set by
# BBR's pacing, which collapsed to a few kbit/s on the last sockets after
# losses (issue 10's note) -- not by umbra. Reno is always allowed in a
# namespace.
on srv sysctl -qw net.ipv4.tcp_congestion_control=reno
# The network ugw serves: a veth to the backend namespace. ugw itself is
# an ordinary host there (no forwarding, no NAT).
ip netns add "$NS-backend"
NETNS_HOSTS+=("$NS-backend")
ip -n "$NS-ugw" link add lan0 type veth peer name eth0 netns "$NS-backend"
ip -n "$NS-ugw" addr add 10.88.0.1/24 dev lan0
ip -n "$NS-ugw" link set lan0 up
on backend ip link set lo up
on backend ip addr add 10.88.0.10/24 dev eth0
on backend ip link set eth0 up

S=$(umbra_key srv) U=$(umbra_key us) O=$(wg_key other) G=$(umbra_key ugw) B=$(wg_key bt)
chown nobody "$D/us.key" "$D/ugw.key"
cat >"$D/mesh.policy" <<P
node srv   key $S addr 10.30.0.1/24 endpoint 198.51.100.1:51820 roles server
node us    key $U addr 10.30.0.2/24 endpoint 198.51.100.2:51820 roles app
node bt    key $B addr 10.30.0.3/24 endpoint 198.51.100.3:51820 roles server
node other key $O addr 10.30.0.4/24 endpoint 198.51.100.4:51820 roles other
node ugw   key $G addr 10.30.0.5/24 endpoint 198.51.100.5:51820 roles gateway serves 10.88.0.0/24
service srv-svc role:server tcp/8000,9000,9001 udp/7000
service app-web role:app tcp/80 ping
service app-ping role:app ping
service backend 10.88.0.0/24 tcp/80
allow role:app    -> srv-svc as app-srv
allow role:server -> app-web, backend as server-app
# other (a boringtun peer, so nothing filters on its side) may ping us but
# not reach tcp/80: us's engine must drop it.
allow role:other  -> app-ping as other-ping-only
P
chmod 644 "$D/mesh.policy"

# userspace_up NAME ARGS...: umbra --userspace in NAME as nobody, no
# capabilities, /dev/net/tun hidden by an empty tmpfs.
userspace_up() {
    local name=$1
    shift
    bg "$name" "$D/$name.log" bash -c 'ulimit -n 8192; mount -t tmpfs none /dev/net &&
        exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all \
        "$@"' _ "$UMBRA" up --userspace --policy "$D/mesh.policy" --key "$D/$name.key" "$@"
    UMBRA_PID[$name]=$LAST_PID
    wait_for 10 grep -q "umbra up:" "$D/$name.log" || {
        echo "umbra --userspace did not come up in $name:" >&2
        cat "$D/$name.log" >&2
        return 1
    }
}

umbra_up srv || exit 1
foreign_up bt boringtun "$IF_BT" 10.30.0.3/24 51820 "$U" "198.51.100.2:51820" 10.30.0.2/32
foreign_up other boringtun "$IF_OT" 10.30.0.4/24 51820 "$U" "198.51.100.2:51820" 10.30.0.2/32
# http server for --expose, run as nobody too.
bg us "$D/http.log" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$PWD/docs" 8080
userspace_up us --log-level debug \
    --forward 18000=10.30.0.1:8000 --forward 18001=10.30.0.3:8000 \
    --forward 18002=10.30.0.1:9000 --forward 18003=10.30.0.1:9001 --forward 18004=10.30.0.1:9999 \
    --forward 17000=10.30.0.1:7000/udp \
    --expose 80=127.0.0.1:8080 || exit 1
# The gateway's settings come from a config file and the environment.
cat >"$D/ugw.conf" <<C
# userspace gateway
policy = $D/mesh.policy
userspace = true
log_level = debug
C
chmod 644 "$D/ugw.conf"
bg ugw "$D/ugw.log" env UMBRA_KEY="$D/ugw.key" bash -c 'mount -t tmpfs none /dev/net &&
    exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all "$@"' \
    _ "$UMBRA" up --config "$D/ugw.conf"
wait_for 10 grep -q "umbra up:" "$D/ugw.log" || { cat "$D/ugw.log"; exit 1; }

bg srv "$D/srv8000.log" ncat -lk 10.30.0.1 8000 --sh-exec 'echo srv-hello from $NCAT_REMOTE_ADDR'
bg bt "$D/bt8000.log" ncat -lk 10.30.0.3 8000 --sh-exec 'echo bt-hello'
bg srv "$D/bulk.srv" python3 "$BULK" server 10.30.0.1 9000
bg srv "$D/udp.srv" python3 "$BULK" udp-echo 10.30.0.1 7000
bg srv "$D/echo.srv" bash -c "ulimit -n 8192; exec python3 '$BULK' echo-threads 10.30.0.1 9001"
bg backend "$D/backend.log" ncat -lk 10.88.0.10 80 --sh-exec 'echo backend-hello'
wait_for 5 on srv ncat -z 10.30.0.1 9000
wait_for 5 on srv ncat -z 10.30.0.1 9001
wait_for 5 on backend ncat -z 10.88.0.10 80

echo "userspace node: unprivileged, no TUN"
check "us and ugw run as nobody" bash -c "[[ \$(ps -eo user=,args= | grep '[u]mbra up --userspace\\|[u]mbra up --config' | awk '{print \$1}' | sort -u) == nobody ]]"
check "no umbra0 (or any tun) interface in us" fails bash -c "on us ip -o link | grep -q -e umbra0 -e tun"
check "us has no /dev/net/tun to open" grep -q "userspace stack" "$D/us.log"

echo "forward"
check "us 127.0.0.1:18000 -> srv (umbra TUN) tcp/8000, arriving from us's tunnel address" \
    bash -c "on us ncat --recv-only -w 5 127.0.0.1 18000 </dev/null | grep -q 'srv-hello from 10.30.0.2'"
check "us 127.0.0.1:18001 -> bt (boringtun-cli) tcp/8000" \
    bash -c "on us ncat --recv-only -w 5 127.0.0.1 18001 </dev/null | grep -q bt-hello"
check "UDP forward round trip us:17000 -> srv udp/7000" on us python3 "$BULK" udp-ping 127.0.0.1 17000

echo "expose"
check "srv (allowed) fetches us's exposed HTTP server at 10.30.0.2:80" \
    bash -c "on srv curl -sf --max-time 5 http://10.30.0.2/userspace.md -o /dev/null || on srv curl -sf --max-time 5 http://10.30.0.2/ | grep -q policy"
check "other may ping us (it is a peer)" on other ping -c 2 -i 0.3 -W 2 10.30.0.2
cap_start other "$IF_OT" denied "tcp and host 10.30.0.2"
check "other (denied) cannot reach 10.30.0.2:80" fails on other ncat -w 3 10.30.0.2 80 </dev/null
cap_stop
check "capture on other: its SYNs went out" test "$(cap_count denied dst host 10.30.0.2)" -gt 0
check "capture on other: no reply at all from 10.30.0.2 (no SYN-ACK, no RST)" \
    test "$(cap_count denied src host 10.30.0.2)" -eq 0
check "us logged the refused flow" grep -q "dropped (no rule allows it; policy [0-9a-f]*): tcp 10.30.0.4 -> 10.30.0.2 port 80" "$D/us.log"

echo "fail fast locally, stay silent remotely"
# Locally originated traffic the policy denies is refused back to the local
# application at once; the peer never sees it.
check "us: a --forward to a denied target (srv tcp/9999) is reset in < 1 s" on us python3 -c '
import socket, sys, time
t = time.monotonic()
try:
    # The reset may even beat connect() back to the client.
    s = socket.create_connection(("127.0.0.1", 18004), timeout=5)
    got = s.recv(100)
except ConnectionResetError:
    got = b""
took = time.monotonic() - t
print(f"      reset after {took:.3f} s")
sys.exit(0 if got == b"" and took < 1.0 else 1)
'
check "us logged it with the rule (default-deny) and the policy id" wait_for 3 \
    grep -q "refused locally by rule 'default-deny' of policy [0-9a-f]*: tcp 10.30.0.2 -> 10.30.0.1 port 9999 (to srv)" "$D/us.log"
check "srv (TUN): a denied TCP connect to us is refused in < 1 s (RST into the TUN device)" on srv python3 -c '
import socket, sys, time
t = time.monotonic()
try:
    socket.create_connection(("10.30.0.2", 12345), timeout=5)
    sys.exit(1)
except ConnectionRefusedError:
    pass
took = time.monotonic() - t
print(f"      refused after {took:.3f} s")
sys.exit(0 if took < 1.0 else 1)
'
check "srv (TUN): a denied UDP datagram gets ICMP administratively prohibited in < 1 s" on srv python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect(("10.30.0.2", 5353))
t = time.monotonic()
s.send(b"q")
try:
    s.recv(100)
    sys.exit(1)
except TimeoutError:
    sys.exit(1)
except OSError as e:
    took = time.monotonic() - t
    print(f"      {e.strerror} after {took:.3f} s")
    sys.exit(0 if e.errno == 113 and took < 1.0 else 1)
'
check "srv logged the refusal with the policy id" wait_for 3 \
    grep -q "refused locally by rule 'default-deny' of policy [0-9a-f]*: tcp 10.30.0.1 -> 10.30.0.2 port 12345 (to us)" "$D/srv.log"

echo "userspace gateway"
check "srv -> backend 10.88.0.10:80 through ugw (userspace proxy)" \
    bash -c "on srv ncat --recv-only -w 5 10.88.0.10 80 </dev/null | grep -q backend-hello"
check "ugw runs with no TUN either" fails bash -c "on ugw ip -o link | grep -q umbra0"

echo "load"
check "1000 concurrent connections, 64 KiB each way, sha256-checked" \
    bash -c "ulimit -n 8192; on us timeout 300 python3 '$BULK' client 127.0.0.1 18002 1000 65536 | tee '$D/bulk.out' | tail -1 | grep -q '^ok 1000'"
tail -3 "$D/bulk.out" | sed 's/^/      /'
# Two-way at once (issue 10): each client sends 256 KiB while it reads the
# echo of a thread-per-connection server on srv (a TUN node), then
# half-closes and checks the sha256 of what came back. Before smoltcp ran
# congestion control, N=50 already stalled for a minute: every connection
# burst its whole window, the receiving node's UDP buffer overflowed, and
# smoltcp's retransmission timer (1 s minimum, doubling) fired for all of
# them together and lost again. Then, at N=1000, some connections hung for
# minutes: after timeouts smoltcp's ACKs carried a rewound sequence number
# the peer dropped, and a reopened zero window left data in flight without
# a retransmission timer (vendor/smoltcp/PATCHES.md). Last, the echo flows
# back through srv's TUN device: the kernel queues what srv's TCP sends
# there for umbra to read and drops what does not fit. With the kernel's
# default queue (500 packets) srv's umbra, CPU-bound at N=1000, lost a
# third of them: 8,400 retransmission timeouts per batch and a 7-15 s tail
# with the CPUs idle. umbra sets 10,000 (daemon::TUN_TX_QUEUE_LEN). On 2
# cores (debug build) N=200 now takes ~3 s and N=1000 15-19 s, CPU-bound
# throughout (BENCHMARKS.md); the bounds leave room for a slower machine.
tun_stat() { on srv cat "/sys/class/net/umbra0/statistics/$1"; }
check "srv's TUN device queues 10000 packets for umbra" \
    bash -c "on srv ip -o link show umbra0 | grep -q 'qlen 10000'"
tx0=$(tun_stat tx_packets) drop0=$(tun_stat tx_dropped)
for spec in 200:20 1000:60; do
    n=${spec%%:*} limit=${spec#*:}
    check "$n concurrent two-way transfers, 256 KiB each way, sha256-checked, within $limit s" \
        bash -c "ulimit -n 8192; on us timeout $limit python3 '$BULK' duplex 127.0.0.1 18003 $n 262144 $limit | tee '$D/duplex$n.out' | tail -1 | grep -q '^ok $n'"
    tail -3 "$D/duplex$n.out" | sed 's/^/      /'
    # CPU-bound, not timer-bound: the machine never sat mostly idle (under
    # 25 % busy, sampled every 0.5 s) for 2 s while connections were still
    # waiting for their data (the old tail: 7-14 s with the TUN queue at
    # 500 packets; 1-2 s in some batches while smoltcp forgot a FIN that
    # arrived ahead of a hole, vendor/smoltcp/PATCHES.md 5).
    check "$n two-way: the CPUs never sat idle for 2 s while transfers waited" \
        bash -c "grep -o 'idle at most [0-9.]* s' '$D/duplex$n.out' | awk '{ exit !(\$4 < 2.0) }'"
done
tx=$(($(tun_stat tx_packets) - tx0)) drop=$(($(tun_stat tx_dropped) - drop0))
echo "      srv's TUN queue: $tx packets to umbra, $drop dropped by the kernel"
check "srv's TUN queue dropped under 5 % of the echo (a third with the default queue)" \
    test $((drop * 20)) -lt "$tx"
sleep 0.5
check "srv's umbra status counts the same kernel drops (tun_queue_dropped)" bash -c \
    "[[ \$(on srv '$UMBRA' status | grep -o '[0-9]* tun_queue_dropped' | cut -d' ' -f1) == $(tun_stat tx_dropped) ]]"
# A burst longer than the forward listener's accept queue makes the kernel
# fall back to SYN cookies and reset some clients: the queue must hold it.
check "the burst never overflowed the forward listener's accept queue" \
    bash -c "on us nstat -az TcpExtListenOverflows | awk '\$1 == \"TcpExtListenOverflows\" { exit \$2 != 0 }'"
# An established connection that stays quiet longer than smoltcp's 60 s
# socket timeout must survive (keep-alives), until --idle-timeout decides.
check "a forwarded connection idle for 65 s still works" on us python3 -c '
import hashlib, socket, sys, time
s = socket.create_connection(("127.0.0.1", 18002), timeout=10)
first, second = b"a" * 1000, b"b" * 1000
s.sendall(first)
time.sleep(65)
s.sendall(second)
s.shutdown(socket.SHUT_WR)
got = b""
while len(got) < 32:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
sys.exit(0 if got[:32] == hashlib.sha256(first + second).digest() else 1)
'
check "us still alive" kill -0 "${UMBRA_PID[us]}"
sleep 2
check "sockets reclaimed: us holds only its listeners after the load" \
    bash -c "n=\$(on us ss -tanp | grep -c 'pid=${UMBRA_PID[us]}\\|umbra' ); (( n <= 10 ))"

echo
echo "netns-userspace: $T_PASS passed, $T_FAIL failed"
[[ $T_FAIL -eq 0 ]] || { echo "logs kept in $D"; KEEP_LOGS=1; exit 1; }
