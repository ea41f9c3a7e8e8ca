#!/usr/bin/env bash
# Prepares a host to be an umbra gateway: a node whose policy entry says
# `serves CIDR` and that forwards allowed mesh traffic to that local network.
#
#   sudo scripts/gateway-setup.sh LAN_IFACE [TUNNEL_SUBNET]
#
# umbra itself enforces the policy on every packet before the kernel sees
# it; the kernel only has to forward. What this does:
#   1. enables IPv4/IPv6 forwarding;
#   2. sets reverse-path filtering on LAN_IFACE and umbra's interface to
#      "loose", since replies from the LAN arrive on a different interface
#      than the requests left by;
#   3. prints the route the LAN's hosts (or its router) need back to the
#      tunnel subnet: umbra does no NAT, so served hosts see real mesh
#      source addresses — which is what their own logs and firewalls want.
set -euo pipefail
lan=${1:?usage: $0 LAN_IFACE [TUNNEL_SUBNET] [UMBRA_IFACE]}
tunnel=${2:-10.20.0.0/24}
umbra_if=${3:-umbra0}
[[ $(id -u) -eq 0 ]] || { echo "needs root" >&2; exit 1; }

sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1 2>/dev/null || true
for ifc in "$lan" "$umbra_if"; do
    [[ -e /proc/sys/net/ipv4/conf/$ifc ]] && sysctl -qw "net.ipv4.conf.$ifc.rp_filter=2"
done
gw_ip=$(ip -4 -o addr show dev "$lan" | awk '{print $4}' | cut -d/ -f1 | head -1)
echo "forwarding enabled on this gateway."
echo "on the served network, route the mesh back through this host:"
echo "  ip route add $tunnel via ${gw_ip:-<the LAN address of this host>}"
