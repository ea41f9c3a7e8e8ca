#!/usr/bin/env bash
# An umbra gateway: node gw `serves` 10.77.0.0/24, a network in a third
# namespace (backend) that runs no umbra. Allowed peers reach it through
# the kernel's forwarding; others, and new flows from the backend, do not.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet || exit 1
UMBRA=$PWD/target/debug/umbra
NS=ug$$
source scripts/lib/netns.sh
netns_init
D=$NETNS_DIR

netns_host client 198.51.100.1
netns_host gw 198.51.100.2
netns_host other 198.51.100.3
# The served LAN: a veth from gw to the backend namespace.
ip netns add "$NS-backend"
NETNS_HOSTS+=("$NS-backend")
ip -n "$NS-gw" link add lan0 type veth peer name eth0 netns "$NS-backend"
ip -n "$NS-gw" addr add 10.77.0.1/24 dev lan0
ip -n "$NS-gw" link set lan0 up
on backend ip link set lo up
on backend ip addr add 10.77.0.10/24 dev eth0
on backend ip link set eth0 up

C=$(umbra_key client) G=$(umbra_key gw) O=$(umbra_key other)
cat >"$D/mesh.policy" <<P
node client key $C addr 10.20.0.1/24 endpoint 198.51.100.1:51820 roles client
node gw     key $G addr 10.20.0.2/24 endpoint 198.51.100.2:51820 roles gateway serves 10.77.0.0/24
node other  key $O addr 10.20.0.3/24 endpoint 198.51.100.3:51820 roles other
service backend-http 10.77.0.0/24 tcp/80 ping
service gw-ping      role:gateway ping
allow role:client -> backend-http as client-backend
allow role:other  -> gw-ping      as other-gw
expect client -> 10.77.0.10:80/tcp is allow
expect other -> 10.77.0.10:80/tcp is deny
P
for n in client gw other; do umbra_up "$n" --log-level debug || exit 1; done
on gw bash scripts/gateway-setup.sh lan0 10.20.0.0/24 >/dev/null
on backend ip route add 10.20.0.0/24 via 10.77.0.1
bg backend "$D/http.srv" ncat -lk 10.77.0.10 80 --sh-exec 'echo backend-hello'
bg client "$D/client.srv" ncat -lk 10.20.0.1 22 --sh-exec 'echo client-ssh'
wait_for 5 on backend ncat -z 10.77.0.10 80

echo "gateway forwarding"
check "client's umbra routes the served network into the tunnel" bash -c "on client ip route get 10.77.0.10 | grep -q umbra0"
check "client -> backend tcp/80 through gw" bash -c "on client ncat --recv-only -w 5 10.77.0.10 80 </dev/null | grep -q backend-hello"
check "client -> backend ping through gw" on client ping -c 2 -W 2 10.77.0.10
check "other may ping gw itself" on other ping -c 2 -W 2 10.20.0.2
check "other -> backend is denied" fails on other ncat -w 2 10.77.0.10 80 </dev/null
# The served network is gw's local side: a flow from it the policy does not
# allow is refused back to it at once (fail fast locally), never sent.
check "backend -> client (a new flow the policy does not allow) is refused at gw" fails on backend ncat -w 2 10.20.0.1 22 </dev/null
check "gw logged the refused backend flow with the policy id" wait_for 3 grep -q "refused locally by rule 'default-deny' of policy [0-9a-f]*: tcp 10.77.0.10 -> 10.20.0.1 port 22" "$D/gw.log"

echo
echo "netns-gateway: $T_PASS passed, $T_FAIL failed"
[[ $T_FAIL -eq 0 ]] || { echo "logs kept in $D"; KEEP_LOGS=1; exit 1; }
