#!/usr/bin/env bash
# The confinement of a running node (issue 9, defect 7), in network
# namespaces. umbra starts as root and confines itself after setup:
#
#   a  198.51.100.1  10.40.0.1  TUN mode, --user nobody: must keep only
#                                CAP_NET_ADMIN, no-new-privs, seccomp filter
#   b  198.51.100.2  10.40.0.2  TUN mode, default (root, CAP_NET_ADMIN only)
#   u  198.51.100.3  10.40.0.3  userspace mode, --user nobody: no capability
#
# Every run-time path is exercised under the confinement: traffic both ways,
# b's endpoint resolved by name through a hosts file (no DNS), a reload that
# adds and then removes a route (a served network), SIGHUP, a userspace
# forward, and SIGTERM. No "Operation not permitted" may appear in any log:
# that is how a system call missing from the seccomp list would show.
# Needs root. Exits non-zero if any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet || exit 1
UMBRA=$PWD/target/debug/umbra
source scripts/lib/netns.sh
netns_init
D=$NETNS_DIR
# nobody must be able to read the policy and hosts files on reload.
chmod 755 "$D"

netns_host a 198.51.100.1
netns_host b 198.51.100.2
netns_host u 198.51.100.3
KA=$(umbra_key a) KB=$(umbra_key b) KU=$(umbra_key u)
printf '198.51.100.2 b.underlay\n' >"$D/hosts"
write_policy() { # $1: extra attributes for b
    cat <<P
node a key $KA addr 10.40.0.1/24 endpoint 198.51.100.1:51820 roles web
node b key $KB addr 10.40.0.2/24 endpoint b.underlay:51820 roles api $1
node u key $KU addr 10.40.0.3/24 endpoint 198.51.100.3:51820 roles web
service http role:api tcp/8080 ping
allow role:web -> http
P
}
write_policy "" >"$D/mesh.policy.new" && mv "$D/mesh.policy.new" "$D/mesh.policy"
chmod 644 "$D/mesh.policy" "$D/hosts"

umbra_up a --user nobody --hosts-file "$D/hosts" --log-level debug || exit 1
umbra_up b --hosts-file "$D/hosts" || exit 1
bg u "$D/u.log" "$UMBRA" up --userspace --user nobody --policy "$D/mesh.policy" \
    --key "$D/u.key" --hosts-file "$D/hosts" --forward 18080=10.40.0.2:8080
UMBRA_PID[u]=$LAST_PID
wait_for 10 grep -q "umbra up:" "$D/u.log" || { cat "$D/u.log"; exit 1; }
bg b "$D/http.srv" ncat -lk 10.40.0.2 8080 --sh-exec 'echo api-hello'
wait_for 5 on b ncat -z 10.40.0.2 8080

field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
echo "confinement in force"
pa=${UMBRA_PID[a]} pb=${UMBRA_PID[b]} pu=${UMBRA_PID[u]}
check "a runs as nobody" test "$(field "$pa" Uid)" = 65534
check "a keeps only CAP_NET_ADMIN ($(field "$pa" CapEff))" test "$(field "$pa" CapEff)" = 0000000000001000
check "a has an empty bounding set but CAP_NET_ADMIN" test "$(field "$pa" CapBnd)" = 0000000000001000
check "a: no-new-privs" test "$(field "$pa" NoNewPrivs)" = 1
check "a: seccomp filter" test "$(field "$pa" Seccomp)" = 2
check "b (no --user) keeps only CAP_NET_ADMIN" test "$(field "$pb" CapEff)" = 0000000000001000
check "u (userspace) runs as nobody with no capability" \
    test "$(field "$pu" Uid)/$(field "$pu" CapEff)" = "65534/0000000000000000"
check "u: seccomp filter" test "$(field "$pu" Seccomp)" = 2
check "a logged what it applied" grep -q "confined: uid 65534" "$D/a.log"

echo "traffic under confinement"
check "a -> b ping (b's endpoint from the hosts file)" on a ping -c 2 -W 2 10.40.0.2
check "a -> b:8080" bash -c "on a ncat --recv-only -w 5 10.40.0.2 8080 </dev/null | grep -q api-hello"
check "u forward -> b:8080 (userspace connect as nobody)" \
    bash -c "on u ncat --recv-only -w 5 127.0.0.1 18080 </dev/null | grep -q api-hello"

echo "reload under confinement: a route appears and goes"
write_policy "serves 10.41.0.0/24" >"$D/mesh.policy.new" && chmod 644 "$D/mesh.policy.new" &&
    mv "$D/mesh.policy.new" "$D/mesh.policy"
check "a installed the route to b's served network" \
    wait_for 5 bash -c "on a ip route show 10.41.0.0/24 | grep -q umbra0"
kill -HUP "$pa"
sleep 0.5
write_policy "" >"$D/mesh.policy.new" && chmod 644 "$D/mesh.policy.new" &&
    mv "$D/mesh.policy.new" "$D/mesh.policy"
check "a removed it again" wait_for 5 bash -c "! on a ip route show 10.41.0.0/24 | grep -q ."
check "a -> b still works after the reloads" on a ping -c 1 -W 2 10.40.0.2
check "SIGHUP answered" grep -q "SIGHUP: re-reading" "$D/a.log"

echo "shutdown under confinement"
kill "$pa"
check "a stops on SIGTERM" wait_for 5 bash -c "! kill -0 $pa 2>/dev/null"
check "a's interface is gone" wait_for 5 bash -c "! on a ip link show umbra0 2>/dev/null"
check "no system call was refused (no EPERM in any log)" \
    bash -c "! grep -il 'operation not permitted\\|permission denied' '$D'/a.log '$D'/b.log '$D'/u.log"

echo "netns-confine: $T_PASS passed, $T_FAIL failed"
((T_FAIL == 0)) || { echo "logs kept in $D"; KEEP_LOGS=1; }
((T_FAIL == 0))
