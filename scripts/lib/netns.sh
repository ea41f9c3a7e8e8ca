# Helpers for umbra's network-namespace tests and demo. Source this file.
#
# Each host is a network namespace named "$NS-<host>", wired to a bridge in
# "$NS-hub" through a veth pair. The underlay uses 198.51.100.0/24
# (TEST-NET-2) and never leaves the namespaces. Everything is removed by
# netns_cleanup (registered on EXIT/INT/TERM by netns_init).

NS=${NS:-u$$}
NETNS_HOSTS=()
NETNS_PIDS=()
NETNS_DIR=""
declare -A UMBRA_PID=()

netns_cleanup() {
    local pid ns
    for pid in "${NETNS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NETNS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NETNS_HOSTS[@]}" "$NS-hub"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    [[ -n $NETNS_DIR && -d $NETNS_DIR && ${KEEP_LOGS:-0} != 1 ]] && rm -rf "$NETNS_DIR"
    NETNS_PIDS=()
    NETNS_HOSTS=()
}

# netns_init: creates the hub and a scratch directory ($NETNS_DIR).
netns_init() {
    [[ $(id -u) -eq 0 ]] || { echo "netns tests need root" >&2; exit 1; }
    trap 'netns_cleanup' EXIT
    trap 'netns_cleanup; exit 130' INT TERM
    NETNS_DIR=$(mktemp -d "/tmp/umbra-$NS.XXXX")
    ip netns add "$NS-hub"
    ip -n "$NS-hub" link add br0 type bridge
    ip -n "$NS-hub" link set br0 up
}

# netns_host NAME UNDERLAY_IP: a namespace with eth0 on the hub bridge.
netns_host() {
    local name=$1 addr=$2 ns="$NS-$1"
    ip netns add "$ns"
    NETNS_HOSTS+=("$ns")
    ip -n "$NS-hub" link add "h-$name" type veth peer name eth0 netns "$ns"
    ip -n "$NS-hub" link set "h-$name" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# on NAME CMD...: runs a command inside host NAME's namespace.
on() {
    local name=$1
    shift
    ip netns exec "$NS-$name" "$@"
}

# bg NAME LOG CMD...: runs a command in the background inside NAME,
# output to LOG; its pid is killed on cleanup.
bg() {
    local name=$1 log=$2
    shift 2
    ip netns exec "$NS-$name" "$@" >"$log" 2>&1 &
    NETNS_PIDS+=($!)
    LAST_PID=$!
}

# umbra_key NAME: writes $NETNS_DIR/NAME.key (mode 600) and prints the public key.
umbra_key() {
    local f="$NETNS_DIR/$1.key"
    (umask 077 && "$UMBRA" genkey >"$f")
    "$UMBRA" pubkey <"$f"
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# umbra_up NAME [ARGS...]: starts umbra in NAME with its key and the shared
# policy ($NETNS_DIR/mesh.policy); waits for its interface.
umbra_up() {
    local name=$1
    shift
    bg "$name" "$NETNS_DIR/$name.log" "$UMBRA" up --policy "$NETNS_DIR/mesh.policy" --key "$NETNS_DIR/$name.key" "$@"
    UMBRA_PID[$name]=$LAST_PID
    wait_for 10 on "$name" ip link show umbra0 || {
        echo "umbra did not come up in $name:" >&2
        cat "$NETNS_DIR/$name.log" >&2
        return 1
    }
}

# Counters for tests.
T_PASS=0
T_FAIL=0
check() {
    local what=$1
    shift
    if "$@"; then
        echo "  ok   - $what"
        T_PASS=$((T_PASS + 1))
    else
        echo "  FAIL - $what"
        T_FAIL=$((T_FAIL + 1))
    fi
}
fails() { ! "$@"; }
