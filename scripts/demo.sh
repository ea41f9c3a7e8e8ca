#!/usr/bin/env bash
# A local umbra mesh in network namespaces, from policy-examples/three-tier.policy.
#
# Builds umbra, gives four of the example's nodes (web-1, api-1, db-1 and
# ops-laptop) fresh keys and a namespace each, starts `umbra up` in every
# one, then shows an allowed connection succeeding, a rejected one refused
# at once, and a denied one vanishing without a trace. Cleans up after
# itself, also on Ctrl-C. Needs root (namespaces, TUN devices).
#
# On a fresh Debian machine it installs what it is missing with apt-get
# (iproute2 for `ip`, ncat for the demo's services and clients), and only
# that. It builds umbra with cargo, or uses UMBRA=/path/to/umbra.
#
#   sudo scripts/demo.sh            # KEEP=1 leaves the mesh running until Enter
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: needs root for network namespaces and TUN devices: sudo $0" >&2
    exit 1
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# tool -> Debian package
declare -A PACKAGE=([ip]=iproute2 [ncat]=ncat)
missing=()
for tool in ip ncat; do
    command -v "$tool" >/dev/null || missing+=("${PACKAGE[$tool]}")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null ||
        { echo "demo: needs ${missing[*]} (not installed) and this machine has no apt-get: install them, then rerun" >&2; exit 1; }
    say "installing ${missing[*]} (apt-get; only what is missing)"
    apt-get update -qq || { echo "demo: apt-get update failed: install ${missing[*]} by hand, then rerun" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for tool in ip ncat; do
        command -v "$tool" >/dev/null || { echo "demo: '$tool' still missing after installing ${missing[*]}" >&2; exit 1; }
    done
fi
if [[ ! -c /dev/net/tun ]]; then
    modprobe tun 2>/dev/null || true
    [[ -c /dev/net/tun ]] || { echo "demo: no /dev/net/tun (TUN driver): load it (modprobe tun), then rerun" >&2; exit 1; }
fi

if [[ -n ${UMBRA:-} ]]; then
    [[ -x $UMBRA ]] || { echo "demo: UMBRA=$UMBRA is not an executable" >&2; exit 1; }
else
    cargo=$(command -v cargo || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo")
    [[ -x $cargo ]] || { echo "demo: no cargo to build umbra: install Rust (https://rustup.rs) or pass UMBRA=/path/to/umbra" >&2; exit 1; }
    say "building umbra (release)"
    "$cargo" build --release --quiet
    UMBRA=$PWD/target/release/umbra
fi
NS=demo
source scripts/lib/netns.sh
netns_init

# Underlay addresses are the example's endpoints; the laptop has none and
# dials out. The bridge is one L2 segment for both subnets.
declare -A UNDERLAY=([web-1]=198.51.100.11 [api-1]=10.1.0.21 [db-1]=10.1.0.31 [ops-laptop]=198.51.100.100)
policy=$NETNS_DIR/mesh.policy
cp policy-examples/three-tier.policy "$policy"
for node in web-1 api-1 db-1 ops-laptop; do
    netns_host "$node" "${UNDERLAY[$node]}"
    on "$node" ip route add 10.1.0.0/24 dev eth0 2>/dev/null || true
    on "$node" ip route add 198.51.100.0/24 dev eth0 2>/dev/null || true
    pub=$(umbra_key "$node")
    sed -i -E "s|^(node +$node +key +)[^ ]+|\1$pub|" "$policy"
done

say "policy $(basename "$policy") — checked like every node will on load"
"$UMBRA" policy check "$policy" | tail -3

say "starting umbra in each namespace"
for node in web-1 api-1 db-1 ops-laptop; do
    umbra_up "$node" --log-level debug
    echo "  $node: $(on "$node" ip -brief addr show umbra0 | awk '{print $3, $4}')"
done

# Services: the API on api-1, Postgres and SSH on db-1.
bg api-1 "$NETNS_DIR/api.srv" ncat -lk 10.20.0.21 8080 --sh-exec 'echo "hello from api-1"'
bg db-1 "$NETNS_DIR/pg.srv" ncat -lk 10.20.0.31 5432 --sh-exec 'echo "postgres on db-1"'
bg db-1 "$NETNS_DIR/ssh.srv" ncat -lk 10.20.0.31 22 --sh-exec 'echo "ssh on db-1"'
wait_for 5 on api-1 ncat -z 10.20.0.21 8080

say "allowed: web-1 -> api-1:8080/tcp"
"$UMBRA" policy explain "$policy" web-1 api-1:8080/tcp | sed -n 3p
on web-1 ncat --recv-only -w 5 10.20.0.21 8080 </dev/null

say "rejected: web-1 -> db-1:5432/tcp (rule 'web-never-db' says reject: refused at once)"
"$UMBRA" policy explain "$policy" web-1 db-1:5432/tcp | sed -n 3p
if on web-1 ncat -w 5 10.20.0.31 5432 </dev/null 2>&1; then echo "unexpected: connected"; else echo "  -> connection refused, as the policy says"; fi

say "denied: api-1 -> web-1:22/tcp (no rule allows it: api-1's own node refuses at once, web-1 never sees it)"
"$UMBRA" policy explain "$policy" api-1 web-1:22/tcp | sed -n 3p
start=$SECONDS
if on api-1 ncat -w 3 10.20.0.11 22 </dev/null 2>&1; then echo "unexpected: connected"; else echo "  -> refused locally after $((SECONDS - start)) s; nothing was sent to web-1"; fi

say "time-boxed grant: ops-laptop -> db-1:22/tcp"
on ops-laptop ncat --recv-only -w 5 10.20.0.31 22 </dev/null

say "stateful: api-1 -> db-1:5432 works, and its replies need no reverse rule"
on api-1 ncat --recv-only -w 5 10.20.0.31 5432 </dev/null

say "audit (dry run): ops-laptop -> db-1:5432/tcp is logged, not enforced"
on ops-laptop ncat -w 2 10.20.0.31 5432 </dev/null 2>&1 || true

say "what the nodes logged about these decisions"
grep -h -E "audit|rejected|dropped" "$NETNS_DIR"/web-1.log "$NETNS_DIR"/api-1.log "$NETNS_DIR"/ops-laptop.log | cut -c1-160

if [[ ${KEEP:-0} == 1 ]]; then
    say "mesh running: try 'ip netns exec demo-web-1 ping 10.20.0.21'; press Enter to tear down"
    read -r _
fi
say "tearing down"
