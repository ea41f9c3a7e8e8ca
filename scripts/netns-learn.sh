#!/usr/bin/env bash
# Learn, stage, enforce on a real mesh (issue 15): nodes write flow logs
# under a lenient policy; `umbra policy suggest` learns rules from those
# logs; the learnt policy passes `check` with its expects, `replay` of the
# recorded logs cuts nothing (and does cut when the policy is broken on
# purpose), and applied to the running mesh it allows exactly the observed
# flows. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet || exit 1
UMBRA=$PWD/target/debug/umbra
NS=ul$$
source scripts/lib/netns.sh
netns_init
D=$NETNS_DIR

netns_host web 198.51.100.1
netns_host api 198.51.100.2
netns_host db 198.51.100.3
netns_host ops 198.51.100.4
W=$(umbra_key web) A=$(umbra_key api) B=$(umbra_key db) O=$(umbra_key ops)

nodes() {
    cat <<P
node web key $W addr 10.40.0.1/24 endpoint 198.51.100.1:51820 roles web
node api key $A addr 10.40.0.2/24 endpoint 198.51.100.2:51820 roles api
node db  key $B addr 10.40.0.3/24 endpoint 198.51.100.3:51820 roles db
node ops key $O addr 10.40.0.4/24 endpoint 198.51.100.4:51820 roles ops
P
}
# The young mesh: web may call the API, ops may reach anything (a broad
# rule), and api -> db is not allowed yet.
BROAD="allow role:ops -> everything as ops-anything"
{
    nodes
    echo "service everything * any"
    echo "service http role:api tcp/8080"
    echo "allow role:web -> http as web-http"
    echo "$BROAD"
} >"$D/learn.policy"

# start NAME POLICY: umbra with a flow log; an interface name of its own.
start() {
    bg "$1" "$D/$1.log" "$UMBRA" up --policy "$2" --key "$D/$1.key" --interface "ul$$${1:0:1}" \
        --flow-log "$D/$1.flows" --log-level debug
    UMBRA_PID[$1]=$LAST_PID
    wait_for 10 on "$1" ip link show "ul$$${1:0:1}" || { cat "$D/$1.log"; return 1; }
}
stop_all() {
    local n
    for n in web api db ops; do kill -TERM "${UMBRA_PID[$n]}" 2>/dev/null; done
    for n in web api db ops; do wait_for 5 fails on "$n" ip link show "ul$$${n:0:1}"; done
}
for n in web api db ops; do start "$n" "$D/learn.policy" || exit 1; done

bg api "$D/http.srv" ncat -lk 10.40.0.2 8080 --sh-exec 'echo http-hello'
bg db "$D/pg.srv" ncat -lk 10.40.0.3 5432 --sh-exec 'echo pg-hello'
bg db "$D/ssh.srv" ncat -lk 10.40.0.3 22 --sh-exec 'echo ssh-hello'
wait_for 5 on api ncat -z 10.40.0.2 8080
wait_for 5 on db ncat -z 10.40.0.3 5432

# quiet CMD...: CMD's output only when it fails.
quiet() { "$@" >"$D/quiet.out" 2>&1 || { cat "$D/quiet.out"; return 1; }; }

echo "learn: traffic under the lenient policy"
get() { on "$1" ncat --recv-only -w 5 "$2" "$3" </dev/null 2>/dev/null | grep -q "$4"; }
for i in 1 2 3; do check "web -> api tcp/8080 ($i)" get web 10.40.0.2 8080 http-hello; done
for i in 1 2; do check "ops -> db tcp/22 through the broad rule ($i)" get ops 10.40.0.3 22 ssh-hello; done
check "ops -> api ping through the broad rule" quiet on ops ping -c 2 -W 2 10.40.0.2
for i in 1 2; do check "api -> db tcp/5432 is refused ($i)" fails get api 10.40.0.3 5432 pg-hello; done
stop_all
for n in web api db ops; do check "$n wrote a flow log" test -s "$D/$n.flows"; done
LOGS=("$D"/web.flows "$D"/api.flows "$D"/db.flows "$D"/ops.flows)

echo "stage: suggest audit rules"
"$UMBRA" policy suggest "$D/learn.policy" "${LOGS[@]}" >"$D/staged.txt" 2>"$D/suggest.err"
check "suggest read every record cleanly" grep -q "; 0 malformed lines skipped" "$D/staged.txt"
check "no malformed line reported" test ! -s "$D/suggest.err"
check "api -> db: one role rule from 2 flows" grep -qx "audit allow role:api -> db-tcp5432  as api-to-db-tcp5432" "$D/staged.txt"
check "the db rule's comment counts 2 flows" grep -B1 "as api-to-db-tcp5432" "$D/staged.txt" | grep -q "^# 2 flows, 0 B,"
check "ops -> db ssh, allowed only by the broad rule: a narrow rule" grep -qx "audit allow role:ops -> db-tcp22  as ops-to-db-tcp22" "$D/staged.txt"
check "ops -> api ping: icmp/8" grep -qx "service api-icmp8 role:api icmp/8" "$D/staged.txt"
check "web -> api is explicit already: no rule" fails grep -q "allow role:web" "$D/staged.txt"
check "both ends of web -> api count once: 3 flows in the coverage" grep -q "^# coverage: of 8 observed flows" "$D/staged.txt"
{ cat "$D/learn.policy" "$D/staged.txt"; } >"$D/staged.policy"
check "the staged policy passes check" quiet "$UMBRA" policy check "$D/staged.policy"
check "replay of the staged policy cuts nothing" quiet "$UMBRA" policy replay "$D/staged.policy" "${LOGS[@]}"

echo "enforce: allow rules with expects, the broad rule removed"
"$UMBRA" policy suggest "$D/staged.policy" "${LOGS[@]}" --enforce >"$D/enforce.txt"
cat "$D/staged.policy" "$D/enforce.txt" |
    grep -v -e '^audit ' -e "^$BROAD\$" -e '^service everything ' >"$D/mesh.policy"
check "the learnt policy passes check --strict with its expects" quiet "$UMBRA" policy check --strict "$D/mesh.policy"
check "it has an expect per learnt rule" test "$(grep -c '^expect .* is allow$' "$D/mesh.policy")" -eq 3
"$UMBRA" policy replay "$D/mesh.policy" "${LOGS[@]}" >"$D/replay.txt"
check "replay of the recorded logs: exit 0" test $? -eq 0
check "replay: nothing cut" grep -q "^cut: 0 flows, 0 B" "$D/replay.txt"
check "replay: api -> db newly allowed" grep -q "^  api -> db 10.40.0.3 5432/tcp: 2 flows.*now allow by api-to-db-tcp5432" "$D/replay.txt"
grep -v "^allow role:web -> http" "$D/mesh.policy" >"$D/broken.policy"
"$UMBRA" policy replay "$D/broken.policy" "${LOGS[@]}" >"$D/broken.txt"
check "replay of a broken policy: exit 1" test $? -eq 1
check "replay of a broken policy: exactly web's 3 flows cut" grep -q "^cut: 3 flows" "$D/broken.txt"

echo "apply the learnt policy to the mesh"
for n in web api db ops; do rm -f "$D/$n.flows"; start "$n" "$D/mesh.policy" || exit 1; done
check "web -> api tcp/8080 still works" get web 10.40.0.2 8080 http-hello
check "ops -> db tcp/22 works without the broad rule" wait_for 10 get ops 10.40.0.3 22 ssh-hello
check "ops -> api ping works" quiet on ops ping -c 2 -W 2 10.40.0.2
check "api -> db tcp/5432 works now" wait_for 10 get api 10.40.0.3 5432 pg-hello
check "web -> db tcp/5432 was never seen: refused" fails get web 10.40.0.3 5432 pg-hello
check "ops -> web tcp/8080 was never seen: refused" fails get ops 10.40.0.1 8080 http-hello
stop_all
"$UMBRA" policy replay "$D/mesh.policy" "$D"/web.flows "$D"/api.flows "$D"/db.flows "$D"/ops.flows >"$D/replay2.txt"
check "replay of the new run under the learnt policy cuts nothing" test $? -eq 0

echo
echo "netns-learn: $T_PASS passed, $T_FAIL failed"
[[ $T_FAIL -eq 0 ]] || { echo "logs kept in $D"; KEEP_LOGS=1; exit 1; }
