# Helpers for tests that run umbra against foreign WireGuard
# implementations (boringtun-cli, wireguard-go) and for packet captures.
# Source after scripts/lib/netns.sh.
#
# This machine's kernel has no WireGuard module, so foreign peers are
# userspace daemons configured with `wg`. Their UAPI sockets live in one
# global directory (/var/run/wireguard), whatever the namespace: interface
# names must be unique per run, hence the $$ in the names callers choose.

FOREIGN_IFS=()

foreign_cleanup() {
    local ifname
    # The daemons remove their socket on a clean exit; a killed one leaves
    # it behind, and a stale socket would confuse the next `wg`.
    for ifname in "${FOREIGN_IFS[@]}"; do rm -f "/var/run/wireguard/$ifname.sock"; done
}

# wg_key NAME: writes $NETNS_DIR/NAME.key (wg genkey, mode 600) and prints
# the public key.
wg_key() {
    local f="$NETNS_DIR/$1.key"
    (umask 077 && wg genkey >"$f")
    wg pubkey <"$f"
}

# foreign_up HOST KIND IFNAME ADDR/LEN LISTEN_PORT PEER_PUB PEER_ENDPOINT ALLOWED
#   KIND: boringtun | wireguard-go. Starts the daemon in HOST, waits for its
#   UAPI socket, configures it with `wg` (key from $NETNS_DIR/HOST.key, one
#   peer) and brings the interface up with ADDR at MTU 1420. PEER_ENDPOINT
#   may be empty (no endpoint: the peer must contact us first). The
#   daemon's pid: $PID_HOST.
foreign_up() {
    local host=$1 kind=$2 ifname=$3 addr=$4 port=$5 peer=$6 endpoint=$7 allowed=$8
    local log="$NETNS_DIR/$host.log"
    FOREIGN_IFS+=("$ifname")
    case $kind in
    boringtun)
        # --disable-drop-privileges: it otherwise tries to switch to the
        # invoking sudo user and fails when run by plain root. Foreground
        # so it dies with the test and logs into $log.
        bg "$host" "$log" boringtun-cli --foreground --disable-drop-privileges \
            --verbosity info "$ifname"
        ;;
    wireguard-go)
        # WG_PROCESS_FOREGROUND=1 is what `-f` sets; set both to be safe
        # across versions.
        bg "$host" "$log" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifname"
        ;;
    *)
        echo "foreign_up: unknown kind $kind" >&2
        return 1
        ;;
    esac
    eval "PID_$host=$LAST_PID"
    wait_for 10 test -S "/var/run/wireguard/$ifname.sock" || {
        echo "$kind did not come up in $host:" >&2
        cat "$log" >&2
        return 1
    }
    local args=(peer "$peer" allowed-ips "$allowed")
    [[ -n $endpoint ]] && args+=(endpoint "$endpoint")
    on "$host" wg set "$ifname" private-key "$NETNS_DIR/$host.key" listen-port "$port" "${args[@]}"
    on "$host" ip addr add "$addr" dev "$ifname"
    on "$host" ip link set "$ifname" mtu 1420 up
}

# cap_start HOST IFACE NAME FILTER...: starts tcpdump in HOST writing
# $NETNS_DIR/NAME.pcap; returns once it is capturing. Its pid: $CAP_PID.
cap_start() {
    local host=$1 iface=$2 name=$3
    shift 3
    # -Z root: tcpdump otherwise drops to user tcpdump before opening the
    # file, which cannot write into the root-only scratch directory.
    # --immediate-mode: without it libpcap hands packets over in blocks
    # with a 1 s timeout, and the packets of the last second are lost when
    # tcpdump is stopped ("6 packets received by filter, 0 captured") —
    # which would make a "no reply" capture pass vacuously.
    # -U: write every packet at once, so nothing is lost when it is stopped.
    bg "$host" "$NETNS_DIR/$name.tcpdump.log" tcpdump -i "$iface" -n -U -Z root --immediate-mode \
        -w "$NETNS_DIR/$name.pcap" "$@"
    CAP_PID=$LAST_PID
    wait_for 10 grep -q "listening on" "$NETNS_DIR/$name.tcpdump.log" || {
        echo "tcpdump did not start:" >&2
        cat "$NETNS_DIR/$name.tcpdump.log" >&2
        return 1
    }
}

# cap_stop: stops the capture started last.
cap_stop() {
    # Let packets in flight reach the capture first.
    sleep 0.3
    kill -INT "$CAP_PID" 2>/dev/null || true
    wait "$CAP_PID" 2>/dev/null || true
}

# cap_count NAME [FILTER...]: number of packets in NAME.pcap matching FILTER.
cap_count() {
    local name=$1
    shift
    tcpdump -r "$NETNS_DIR/$name.pcap" -n "$@" 2>/dev/null | wc -l
}

# cap_show NAME: prints the capture (for the log of a failed check).
cap_show() {
    tcpdump -r "$NETNS_DIR/$1.pcap" -n 2>/dev/null | sed 's/^/      /' | head -20
}
