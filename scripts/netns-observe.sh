#!/usr/bin/env bash
# Seeing into running nodes (issue 11): `umbra status` / `umbra flows` over
# the control socket, the JSON flow log (allowed, dropped, rejected,
# audited, reload-cut flows; policy ids; Community IDs joining both ends;
# SIGUSR1 reopen), Prometheus metrics, `wg show` over the WireGuard UAPI,
# and hostile control-socket clients. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet || exit 1
UMBRA=$PWD/target/debug/umbra
NS=uo$$
source scripts/lib/netns.sh
netns_init
D=$NETNS_DIR
# Interface names of their own: UAPI sockets live in the shared
# /var/run/wireguard, so they must not collide with other runs.
IW=uo$$w IB=uo$$b

netns_host web 198.51.100.1
netns_host db 198.51.100.3
W=$(umbra_key web) B=$(umbra_key db)

write_policy() { # $1: extra lines
    cat <<P
node web key $W addr 10.30.0.1/24 endpoint 198.51.100.1:51820 roles web,frontend
node db  key $B addr 10.30.0.3/24 endpoint 198.51.100.3:51820 roles db
service pg    role:db tcp/5432 ping
service bulk  role:db tcp/5201 ping
service mgmt  role:db tcp/9000
service admin role:db tcp/22
allow role:web -> bulk as web-bulk
deny role:web -> mgmt reject as no-mgmt
audit allow role:web -> admin as try-ssh
$1
P
}
write_policy "allow role:web -> pg as web-pg" >"$D/mesh.policy"
pid_of() { cat "$D/$1.pid"; }
policy_id() { "$UMBRA" policy check "$1" 2>&1 | sed -n 's/^.*policy \([0-9a-f]\{16\}\) (.*/\1/p' | tail -1; }
ID1=$(policy_id "$D/mesh.policy")

start() { # NAME IFACE ARGS...
    local name=$1 ifc=$2
    shift 2
    bg "$name" "$D/$name.log" "$UMBRA" up --policy "$D/mesh.policy" --key "$D/$name.key" \
        --interface "$ifc" --control "$D/$name.sock" --flow-log "$D/$name.flows" "$@"
    echo "$LAST_PID" >"$D/$name.pid"
    wait_for 10 test -S "$D/$name.sock" || { cat "$D/$name.log"; return 1; }
}
start web "$IW" --log-level debug || exit 1
# db's metrics address comes from the environment (every setting but
# --no-confine may: docs/userspace.md "Settings").
UMBRA_METRICS=127.0.0.1:9586 start db "$IB" || exit 1
st() { "$UMBRA" status --control "$D/$1.sock" "${@:2}"; }
fl() { "$UMBRA" flows --control "$D/$1.sock" "${@:2}"; }
# jq-free JSON checks: py EXPR FILE... evaluates EXPR with `j` the parsed
# JSON of stdin (or `recs` the JSON lines of FILE).
pyj() { python3 -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }
recs() { # FILE EXPR: some record of FILE satisfies EXPR (over `r`)
    python3 -c '
import json, sys
ok = False
for line in open(sys.argv[1]):
    r = json.loads(line)
    if eval(sys.argv[2]):
        ok = True
sys.exit(0 if ok else 1)' "$1" "$2"
}
export UMBRA D
export -f st fl pyj recs

bg db "$D/pg.srv" ncat -lk 10.30.0.3 5432 --sh-exec 'cat'
bg db "$D/mgmt.srv" ncat -lk 10.30.0.3 9000 --sh-exec 'echo mgmt'
bg db "$D/ssh.srv" ncat -lk 10.30.0.3 22 --sh-exec 'echo ssh'
wait_for 5 on db ncat -z 10.30.0.3 5432

echo "status"
check "web -> db ping (handshake)" on web ping -c 2 -W 2 10.30.0.3
check "umbra status --check exits 0 on a running node" st web --check
check "umbra status --check exits 1 without a node" fails "$UMBRA" status --check --control "$D/none.sock"
st web >"$D/status.txt"
check "status names the node, its data plane and the policy id" \
    bash -c "grep -q '^node: web' $D/status.txt && grep -q 'data plane: tun ($IW), up' $D/status.txt && grep -q 'policy: $ID1' $D/status.txt"
check "status shows peer db with a recent handshake" \
    bash -c "grep -A6 '^peer: db ($B)' $D/status.txt | grep -Eq 'latest handshake: [0-9]s ago'"
st web --json >"$D/s1.json"
on web ping -c 5 -i 0.2 -W 2 10.30.0.3 >/dev/null
st web --json >"$D/s2.json"
check "status --json: rx/tx bytes and packets to db grow" python3 - "$D/s1.json" "$D/s2.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
p = lambda s: next(x for x in s["peers"] if x["name"] == "db")
pa, pb = p(a), p(b)
ok = all(pb[k] > pa[k] > 0 for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"))
ok &= pb["session"] and pb["latest_handshake_ms"] < 10000 and pb["roles"] == ["db"]
ok &= b["policy_id"] and b["data_plane_up"] and b["node"] == "web"
sys.exit(0 if ok else 1)
PY

echo "flows"
bg web "$D/pg.client" python3 -c '
import socket, time
s = socket.create_connection(("10.30.0.3", 5432), timeout=5)
s.settimeout(5)
while True:
    s.sendall(b"x" * 1000 + b"\n"); s.recv(4096); time.sleep(0.2)
'
sleep 1.5
fl db >"$D/flows.txt"
check "umbra flows on db lists the open connection with its rule" \
    grep -Eq '^tcp +10\.30\.0\.1:[0-9]+ -> 10\.30\.0\.3:5432 +web +ingress +web-pg +established' "$D/flows.txt"
check "umbra flows --json --peer web: bytes both ways, direction, rule" bash -c "
    '$UMBRA' flows --json --peer web --control '$D/db.sock' | pyj '
        any(f[\"dst_port\"] == 5432 and f[\"rule\"] == \"web-pg\" and f[\"direction\"] == \"ingress\"
            and f[\"bytes\"][0] > 1000 and f[\"bytes\"][1] > 1000 and f[\"packets\"][1] > 1 for f in j[\"flows\"])'"
check "umbra flows --peer NOBODY is a clear error" bash -c "fl db --peer nobody 2>&1 | grep -q \"no node named 'nobody'\""
check "web's view: the same connection, egress" bash -c "fl web --peer db | grep -Eq '5432 +db +egress +web-pg'"

echo "refused and audited flows"
check "web -> db tcp/8080 (no rule) is dropped" fails on web ncat -w 1 10.30.0.3 8080 </dev/null
check "web -> db tcp/9000 is rejected at once" bash -c "on web ncat -w 3 10.30.0.3 9000 </dev/null 2>&1 | grep -q 'refused'"
check "web -> db tcp/22 (audit only) is dropped" fails on web ncat -w 1 10.30.0.3 22 </dev/null
check "human log line for a refusal carries the policy id" wait_for 3 grep -q "rejected by rule 'no-mgmt' (policy $ID1)" "$D/web.log"
check "human log line for an audit carries the policy id" wait_for 3 grep -q "audit rule 'try-ssh' (policy $ID1) would allow" "$D/web.log"

echo "reload cuts the connection"
write_policy "" >"$D/mesh.policy.new" && mv "$D/mesh.policy.new" "$D/mesh.policy"
ID2=$(policy_id "$D/mesh.policy")
wait_for 5 grep -q '"umbra.end_reason":"policy"' "$D/db.flows"

echo "flow log"
F=$D/web.flows G=$D/db.flows
check "every line of both logs is JSON of schema 1" python3 - "$F" "$G" <<'PY'
import json, sys
for f in sys.argv[1:]:
    for line in open(f):
        r = json.loads(line)
        assert r["umbra.schema"] == 1 and r["observer.name"] in ("web", "db"), line
        assert r["@timestamp"].endswith("Z") and len(r["@timestamp"]) == 24, line
PY
check "allowed: flow-start, rule web-pg, policy $ID1, on both nodes" bash -c "
    recs $F 'r[\"event.action\"]==\"flow-start\" and r[\"rule.name\"]==\"web-pg\" and r[\"umbra.policy_id\"]==\"$ID1\" and r[\"network.direction\"]==\"egress\" and r[\"umbra.peer.name\"]==\"db\" and r[\"umbra.peer.key\"]==\"$B\"' &&
    recs $G 'r[\"event.action\"]==\"flow-start\" and r[\"rule.name\"]==\"web-pg\" and r[\"umbra.policy_id\"]==\"$ID1\" and r[\"network.direction\"]==\"ingress\" and r[\"umbra.peer.roles\"]==[\"web\",\"frontend\"]'"
check "dropped: flow-denied, default-deny" recs "$F" 'r["event.action"]=="flow-denied" and r["umbra.verdict"]=="drop" and r["rule.name"]=="default-deny" and r["destination.port"]==8080'
check "rejected: flow-denied, reject, no-mgmt" recs "$F" 'r["event.action"]=="flow-denied" and r["umbra.verdict"]=="reject" and r["rule.name"]=="no-mgmt" and r["destination.port"]==9000'
check "audited: flow-audit, try-ssh, would allow" recs "$F" 'r["event.action"]=="flow-audit" and r["umbra.verdict"]=="audit" and r["umbra.audit_would"]=="allow" and r["rule.name"]=="try-ssh"'
check "reload-cut: flow-end, reason policy, rule web-pg, new policy $ID2, counters, on both" bash -c "
    recs $F 'r[\"event.action\"]==\"flow-end\" and r[\"umbra.end_reason\"]==\"policy\" and r[\"rule.name\"]==\"web-pg\" and r[\"umbra.policy_id\"]==\"$ID2\" and r[\"source.bytes\"]>1000 and r[\"destination.bytes\"]>1000' &&
    recs $G 'r[\"event.action\"]==\"flow-end\" and r[\"umbra.end_reason\"]==\"policy\" and r[\"rule.name\"]==\"web-pg\" and r[\"umbra.policy_id\"]==\"$ID2\" and r[\"event.duration\"]>1e9'"
check "the cut connection has the same Community ID on both nodes" python3 - "$F" "$G" <<'PY'
import json, sys
ids = []
for f in sys.argv[1:]:
    ids.append({r["network.community_id"] for r in map(json.loads, open(f))
                if r["event.action"] == "flow-end" and r["umbra.end_reason"] == "policy"
                and r["network.transport"] == "tcp"})
sys.exit(0 if len(ids[0]) == 1 and ids[0] == ids[1] and next(iter(ids[0])).startswith("1:") else 1)
PY

echo "flow log reopened on SIGUSR1 (logrotate)"
mv "$F" "$F.1"
kill -USR1 "$(pid_of web)"
wait_for 5 grep -q "flow log reopened" "$D/web.log"
on web ncat -w 1 10.30.0.3 8080 </dev/null 2>/dev/null
check "after SIGUSR1 new records go to a new $F" wait_for 5 recs "$F" 'r["destination.port"]==8080'
check "and the web node is still forwarding" on web ping -c 1 -W 2 10.30.0.3 >/dev/null

echo "metrics"
on db curl -s -m 5 http://127.0.0.1:9586/metrics >"$D/metrics.txt"
check "GET /metrics passes a strict text-format parser" python3 - "$D/metrics.txt" <<'PY'
import re, sys
fam = None; seen = set(); n = 0
name_re = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# HELP "): continue
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ")
        assert kind in ("counter", "gauge") and name_re.match(name), line
        fam = name; continue
    series, value = line.rsplit(" ", 1)
    float(value)
    name, _, labels = series.partition("{")
    assert name == fam, line
    if labels:
        assert labels.endswith("}"), line
        body = labels[:-1]; pos = 0
        while pos < len(body):
            m = label_re.match(body, pos)
            assert m, line
            pos = m.end()
    assert series not in seen, line
    seen.add(series); n += 1
assert n > 10
PY
check "metrics: per-peer bytes, handshake time, policy info, decisions, reloads, handshakes" \
    python3 - "$D/metrics.txt" "$W" "$ID2" <<'PY'
import sys, time
text, key, pid = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
v = {}
for line in text.splitlines():
    if not line.startswith("#"):
        series, value = line.rsplit(" ", 1)
        v[series] = float(value)
peer = '{public_key="%s",name="web"}' % key
assert v["wireguard_peer_receive_bytes_total" + peer] > 0
assert v["wireguard_peer_transmit_bytes_total" + peer] > 0
assert abs(v["wireguard_peer_last_handshake_seconds" + peer] - time.time()) < 120
assert v['umbra_policy_info{id="%s"}' % pid] == 1
assert v['umbra_decisions_total{verdict="allow",rule="web-pg"}'] >= 1
assert v['umbra_policy_reloads_total{result="ok"}'] == 1
assert v['umbra_handshakes_total{result="completed"}'] >= 1
assert v["umbra_up"] == 1
PY
check "metrics: batched packet I/O with UDP GSO/GRO and TUN offloads, counters moving" \
    python3 - "$D/metrics.txt" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]).read().splitlines():
    if not line.startswith("#"):
        series, value = line.rsplit(" ", 1)
        v[series] = float(value)
for off in ("udp-gso", "udp-gro", "tun-tso"):
    assert v.get('umbra_offload{offload="%s"}' % off) == 1, off
io = lambda c: v['umbra_packet_io_total{counter="%s"}' % c]
assert io("udp_rx_calls") > 0 and io("udp_rx_datagrams") >= io("udp_rx_calls")
assert io("udp_tx_calls") > 0 and io("udp_tx_datagrams") >= io("udp_tx_messages") >= io("udp_tx_calls")
assert io("tun_rx_packets") > 0 and io("tun_tx_writes") > 0
assert io("udp_rx_dropped") == 0 and io("tun_rx_dropped") == 0
assert io("tun_queue_dropped") >= 0  # the kernel's count, read over rtnetlink
PY
check "umbra status: tun_queue_dropped is the kernel's tx_dropped of the TUN device" bash -c \
    "[[ \$(st db | grep -o '[0-9]* tun_queue_dropped' | cut -d' ' -f1) == \$(on db cat /sys/class/net/$IB/statistics/tx_dropped) ]]"
check "umbra status shows the offloads in use" bash -c "st db | grep -q '^offloads: udp-gso, udp-gro, tun-tso'"
check "GET /healthz says ok" bash -c "on db curl -sf -m 5 http://127.0.0.1:9586/healthz | grep -q '^ok'"
check "an unknown path is a 404" bash -c "on db curl -s -o /dev/null -w '%{http_code}' -m 5 http://127.0.0.1:9586/x | grep -q 404"

echo "wg show over the WireGuard UAPI"
on db wg show "$IB" dump >"$D/wg.dump" 2>"$D/wg.err"
check "wg show $IB dump lists web: key, endpoint, allowed ips, handshake, transfer" python3 - "$D/wg.dump" "$D/db.sock" "$UMBRA" <<'PY'
import json, subprocess, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
st = json.loads(subprocess.run([sys.argv[3], "status", "--json", "--control", sys.argv[2]], capture_output=True, text=True).stdout)
peers = {p["public_key"]: p for p in st["peers"]}
assert rows[0][2] == str(st["listen_port"]), rows[0]
assert len(rows) - 1 == len(peers) >= 1, rows
for r in rows[1:]:
    pub, _psk, endpoint, allowed, hs, rx, tx, _ka = r
    p = peers[pub]
    assert endpoint == p["endpoint"], (endpoint, p)
    assert sorted(allowed.split(",")) == sorted(p["allowed_ips"]), (allowed, p)
    assert abs(int(hs) - p["latest_handshake_unix"]) <= 2 and int(hs) > 0, (hs, p)
    assert 0 < int(rx) <= p["rx_bytes"] and 0 < int(tx) <= p["tx_bytes"], (rx, tx, p)
PY
check "wg show $IB (human output) names web's key" bash -c "on db wg show $IB | grep -q 'peer: $W'"
on db wg set "$IB" listen-port 1 >"$D/wgset.out" 2>&1
check "wg set is refused: Operation not permitted" grep -q 'Operation not permitted' "$D/wgset.out"
check "UAPI socket is root-only (0600)" bash -c "stat -c %a /var/run/wireguard/$IB.sock | grep -qx 600"
check "control socket is 0600" bash -c "stat -c %a $D/db.sock | grep -qx 600"

echo "hostile control-socket clients"
bg web "$D/ping.long" ping -i 0.1 -c 60 -W 1 10.30.0.3
python3 - "$D/db.sock" <<'PY' >"$D/hostile.out" 2>&1
import os, socket, struct, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(path); return s
# Random bytes, an oversized length prefix, a wrong version: an error
# answer each; then more silent clients than the node serves at once.
for payload in (os.urandom(70000), struct.pack(">I", 1 << 30) + b"x" * 100, b"\0\0\0\x03\0\x09\0"):
    s = conn()
    try:
        s.sendall(payload)
    except OSError:
        pass
    s.settimeout(5)
    try:
        print("answer", len(s.recv(65536)))
    except OSError as e:
        print("closed", e)
    s.close()
silent = [conn() for _ in range(20)]
time.sleep(3)
for s in silent:
    s.settimeout(1)
    try:
        print("silent got", len(s.recv(10)))
    except OSError as e:
        print("silent", e)
PY
check "garbage, oversized and wrong-version requests got an error answer" bash -c "grep -c '^answer [1-9]' $D/hostile.out | grep -qx 3"
check "the node is alive and answers status after the abuse" st db --check
check "silent clients were dropped (EOF, not left hanging)" bash -c "grep -c 'silent got 0' $D/hostile.out | grep -qx 20"
sleep 4
lost=$(sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p' "$D/ping.long")
check "db kept forwarding during the abuse (ping loss ${lost}%)" test "${lost:-100}" -le 5

echo "shutdown"
kill -TERM "$(pid_of db)"
check "db removed its sockets" wait_for 5 fails test -e "$D/db.sock" -o -e "/var/run/wireguard/$IB.sock"
check "db wrote flow-end records at shutdown" recs "$G" 'r["event.action"]=="flow-end" and r["umbra.end_reason"]=="shutdown"'
echo
echo "netns-observe: $T_PASS passed, $T_FAIL failed"
[[ $T_FAIL -eq 0 ]] || { echo "logs kept in $D"; KEEP_LOGS=1; exit 1; }
