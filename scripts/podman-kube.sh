#!/usr/bin/env bash
# Runs the Kubernetes example (deploy/kubernetes/example) for real under
# podman: builds the umbra image, plays the server and client pods from the
# manifests on a podman network, and checks that
#   - the image holds only the binary and the non-root user's passwd/group;
#   - the allowed flow works (client -> server web port), also for 8
#     concurrent 2 MiB downloads checked by SHA-256;
#   - the denied flow gets nothing back (client -> admin port), and a pod
#     with a forged policy (its own key in client-1's place) gets no answer
#     at all from the server: tcpdump on the bridge sees its handshake
#     initiations and not one packet back;
#   - a policy update made the kubelet's way (a new ..data symlink swapped
#     over the old one) takes effect without a restart, and a broken update
#     is refused while the last good policy keeps working (the
#     node stays ready on its last good policy and says so in `umbra status`);
#   - the umbra processes run as UID/GID 65532 with no capabilities at all,
#     no-new-privs and seccomp, on a read-only root (from /proc/PID/status);
#   - a pod whose policy is broken never starts: its policy gate init
#     container fails with file:line:col and neither umbra nor the app runs;
#   - the TUN DaemonSet's pod (twice, hostNetwork off): TUN mode works with
#     CAP_NET_ADMIN as the only capability, allowed ping through, denied not.
#
# What podman 4.3 cannot express is translated by scripts/lib/kube.py
# (podmanize: native sidecar -> ordinary container listed first; ConfigMap
# and Secret -> host directories laid out as the kubelet does, the key
# root:65532 mode 0440 as fsGroup makes it; hostAliases -> the server pod's
# address, as podman has no Services; restartPolicy Never, emptyDir names
# per pod). The real manifests are validated as they are by
# scripts/kube-validate.sh. For the DaemonSet, hostNetwork is off and the
# host's key directory is a test directory.
#
# Needs root, podman, runc, catatonit, tcpdump, busybox-static and the
# kubernetes-validate venv (for PyYAML): scripts/ci-deps.sh installs them.
#   KEEP_LOGS=1 keeps the work directory; UMBRA_STATIC=path skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

say() { echo "podman-kube: $*"; }
die() { say "FAIL: $*"; exit 1; }
PASS=0
FAIL=0
check() {
    local what=$1
    shift
    if "$@"; then
        echo "  ok   - $what"
        PASS=$((PASS + 1))
    else
        echo "  FAIL - $what"
        FAIL=$((FAIL + 1))
    fi
}
fails() { ! "$@"; }

[[ $(id -u) -eq 0 ]] || die "needs root (podman networks, /proc of the pods' processes)"
PY=${UMBRA_VENV:-/opt/umbra-venv}/bin/python
for need in podman tcpdump catatonit; do
    command -v "$need" >/dev/null || die "'$need' is missing: run scripts/ci-deps.sh"
done
[[ -x $PY ]] || die "no python venv at ${PY%/bin/python}: run scripts/ci-deps.sh"
[[ -x /bin/busybox ]] && file -b /bin/busybox | grep -q 'statically linked' ||
    die "no static /bin/busybox (Debian busybox-static) for the example's app image: run scripts/ci-deps.sh"

P=ut$$ # pod name prefix: pods are $P-server, $P-client, $P-intruder, $P-broken
W=$(mktemp -d /tmp/umbra-podman.XXXXXX)
NET=""
TCPDUMP=""
cleanup() {
    set +e
    [[ -n $TCPDUMP ]] && kill "$TCPDUMP" 2>/dev/null
    local pods
    pods=$(podman pod ls --filter "name=^$P-" --format '{{.Name}}' 2>/dev/null || true)
    [[ -n $pods ]] && podman pod rm -f -t 0 $pods >/dev/null 2>&1
    podman volume ls --format '{{.Name}}' | grep "^$P-" | xargs -r podman volume rm -f >/dev/null 2>&1
    [[ -n $NET ]] && podman network rm -f "$NET" >/dev/null 2>&1
    if [[ ${KEEP_LOGS:-0} == 1 ]]; then say "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images --------------------------------------------------------------------
bin=${UMBRA_STATIC:-$(scripts/build-static.sh)}
IMAGE=localhost/umbra:latest
IMAGE=$IMAGE scripts/image-build.sh "$bin" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "image $IMAGE: $size bytes"

# The example's app image is public busybox; here the same applets come from
# Debian's static busybox in a FROM scratch image (nothing is pulled).
APP_IMAGE=localhost/umbra-test-busybox:latest
mkdir "$W/bb"
cp /bin/busybox "$W/bb/busybox"
cat >"$W/bb/Containerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
USER 65532:65532
EOF
podman build --quiet --pull=never -t "$APP_IMAGE" "$W/bb" >/dev/null

echo "image contents:"
ctr=$(podman create "$IMAGE")
contents=$(podman export "$ctr" | tar -t | grep -v '/$' | sort | tr '\n' ' ')
podman rm "$ctr" >/dev/null
echo "  $contents"
check "the image holds only the binary, /etc/passwd and /etc/group" \
    [ "$contents" == "etc/group etc/passwd usr/local/bin/umbra " ]
check "the image runs as 65532:65532 by default" \
    [ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" == "65532:65532" ]
check "the image's umbra runs read-only with no capabilities (genkey)" \
    bash -c "[[ \$(podman run --rm --cap-drop=all --read-only $IMAGE genkey | wc -c) -eq 45 ]]"

# --- the kubelet's view of the ConfigMap and Secrets -------------------------
# atomic DIR FILE SOURCE MODE: writes FILE into DIR the way the kubelet's
# atomic writer does (a timestamped directory, ..data swapped to it by a
# rename, FILE -> ..data/FILE), root-owned, group 65532 (the pod's fsGroup).
atomic() {
    local dir=$1 file=$2 src=$3 mode=$4 ts
    ts="..$(date -u +%Y_%m_%d_%H_%M_%S.%N)"
    mkdir -p "$dir/$ts"
    install -m "$mode" -o 0 -g 65532 "$src" "$dir/$ts/$file"
    ln -sfn "$ts" "$dir/..data_tmp"
    mv -T "$dir/..data_tmp" "$dir/..data"
    [[ -L $dir/$file ]] || ln -s "..data/$file" "$dir/$file"
}

UMBRA=$bin deploy/kubernetes/example/keys.sh "$W/keys" 2>&1 | sed 's/^/  /'
policy=$W/keys/mesh.policy
policy_id() { "$bin" policy check "$1" 2>/dev/null | grep -o 'policy [0-9a-f]\{16\}' | head -1 | cut -d' ' -f2; }
v1=$(policy_id "$policy")
atomic "$W/policy" mesh.policy "$policy" 0644
atomic "$W/client-secret" key "$W/keys/client.key" 0440
atomic "$W/server-secret" key "$W/keys/server.key" 0440

# The intruder: a pod with a forged policy naming its own key as client-1's.
(umask 077 && "$bin" genkey >"$W/keys/intruder.key")
client_pub=$("$bin" pubkey <"$W/keys/client.key")
intruder_pub=$("$bin" pubkey <"$W/keys/intruder.key")
sed "s|key $client_pub|key $intruder_pub|" "$policy" >"$W/keys/forged.policy"
atomic "$W/forged-policy" mesh.policy "$W/keys/forged.policy" 0644
atomic "$W/intruder-secret" key "$W/keys/intruder.key" 0440

# A broken policy: a typo on the first rule.
sed 's/^allow role:frontend/allow rol:frontend/' "$policy" >"$W/keys/broken.policy"
atomic "$W/broken-policy" mesh.policy "$W/keys/broken.policy" 0644

# --- network and pods ----------------------------------------------------------
for third in $(seq 77 99); do
    if podman network create --subnet "10.89.$third.0/24" "$P-net" >/dev/null 2>&1; then
        NET=$P-net
        break
    fi
done
[[ -n $NET ]] || die "could not create a podman network in 10.89.77-99.0/24"
SERVER_IP=10.89.$third.21 CLIENT_IP=10.89.$third.11 INTRUDER_IP=10.89.$third.66
BRIDGE=$(podman network inspect --format '{{.NetworkInterface}}' "$NET")
say "network $NET ($BRIDGE, 10.89.$third.0/24)"

# render MANIFEST NAME CONFIGMAP_DIR SECRET_NAME SECRET_DIR > pod yaml
render() {
    "$PY" scripts/lib/kube.py podman "deploy/kubernetes/example/$1" --name "$P-$2" \
        --configmap "mesh-policy=$3" --secret "$4=$5" --alias "umbra-server=$SERVER_IP" \
        --image "docker.io/library/busybox:1.36=$APP_IMAGE"
}
render server.yaml server "$W/policy" umbra-server-key "$W/server-secret" >"$W/server.yaml"
render client.yaml client "$W/policy" umbra-client-key "$W/client-secret" >"$W/client.yaml"
render client.yaml intruder "$W/forged-policy" umbra-client-key "$W/intruder-secret" >"$W/intruder.yaml"
render server.yaml broken "$W/broken-policy" umbra-server-key "$W/server-secret" >"$W/broken.yaml"

play() { podman kube play --network "$NET" ${2:+--ip "$2"} "$W/$1.yaml" >"$W/play-$1.log" 2>&1; }
play server "$SERVER_IP" || { cat "$W/play-server.log"; die "server pod did not start"; }
play client "$CLIENT_IP" || { cat "$W/play-client.log"; die "client pod did not start"; }

wait_log() { # CONTAINER PATTERN SECONDS
    local deadline=$((SECONDS + $3))
    until podman logs "$1" 2>&1 | grep -q -- "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
echo "pods up:"
check "server-1's umbra is up with policy $v1" wait_log "$P-server-umbra" "umbra up: node server-1 .*policy $v1" 20
check "client-1's umbra is up with policy $v1" wait_log "$P-client-umbra" "umbra up: node client-1 .*policy $v1" 20
podman ps -a --filter "name=^$P-" --format '  {{.Names}}: {{.Status}}'
# The kubelet-style Secret mount is root:65532 0440, which `umbra up`
# refuses; the umbra-key init container copies it with `umbra installkey`.
run_dir() { # CONTAINER: the host directory behind its /run/umbra
    podman inspect "$1" --format '{{range .Mounts}}{{if eq .Destination "/run/umbra"}}{{.Source}}{{end}}{{end}}'
}
for pod in server client; do
    check "$pod: umbra-key (umbra installkey) left the key as 65532 mode 600 (the Secret is 0440)" \
        bash -c "[[ \$(stat -c '%u %a' '$(run_dir "$P-$pod-umbra")/key') == '65532 600' ]]"
done

probe() { podman exec "$1" /usr/local/bin/umbra status --check --control /run/umbra/control.sock >/dev/null 2>&1; }
status_of() { podman exec "$1" /usr/local/bin/umbra status --control /run/umbra/control.sock 2>&1; }
check "the sidecars' startup/readiness probe command passes" bash -c "$(declare -f probe); probe $P-client-umbra && probe $P-server-umbra"

# get PORT [PATH]: an HTTP/1.0 GET from inside the client pod through its forward,
# the body on stdout (nothing if nothing came back within 5 s).
get() {
    podman exec "$P-client-app" sh -c \
        "printf 'GET /${2:-} HTTP/1.0\r\n\r\n' | timeout ${3:-5} nc 127.0.0.1 $1 | sed '1,/^\r\$/d'" 2>/dev/null || true
}
retry_get() { # PORT WANT SECONDS
    local deadline=$((SECONDS + $3))
    until [[ $(get "$1") == "$2" ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

echo "policy $v1: client-1 may reach the web port only"
check "allowed: client -> server:8080 answers 'web: hello from server'" retry_get 8080 "web: hello from server" 20
podman exec "$P-server-app" sh -c 'head -c 2097152 /dev/urandom > /srv/web/big && sha256sum /srv/web/big' >"$W/big.sum"
want=$(cut -d' ' -f1 "$W/big.sum")
podman exec "$P-client-app" sh -c "
    for i in 1 2 3 4 5 6 7 8; do
        (printf 'GET /big HTTP/1.0\r\n\r\n' | timeout 60 nc 127.0.0.1 8080 | sed '1,/^\r\$/d' | sha256sum) &
    done; wait" >"$W/got.sums" 2>/dev/null || true
check "allowed: 8 concurrent 2 MiB downloads arrive intact (SHA-256)" \
    [ "$(grep -c "^$want " "$W/got.sums")" -eq 8 ]
admin_requests() { podman logs "$P-server-app" 2>&1 | grep -c '^admin ' || true; }
check "denied: client -> server:9090 gets nothing back" [ -z "$(get 9090)" ]
check "denied: no request reached the server's admin page" [ "$(admin_requests)" -eq 0 ]

echo "an intruder pod with a forged policy (its own key as client-1):"
tcpdump -i "$BRIDGE" -n -l -w "$W/bridge.pcap" "udp and host $INTRUDER_IP" >"$W/tcpdump.log" 2>&1 &
TCPDUMP=$!
sleep 1
play intruder "$INTRUDER_IP" || { cat "$W/play-intruder.log"; die "intruder pod did not start"; }
wait_log "$P-intruder-umbra" "umbra up: node client-1" 20 || true
check "intruder: client -> server:8080 gets nothing back" [ -z "$(podman exec "$P-intruder-app" sh -c \
    "printf 'GET / HTTP/1.0\r\n\r\n' | timeout 8 nc 127.0.0.1 8080" 2>/dev/null || true)" ]
sleep 1
kill "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null || true
TCPDUMP=""
sent=$(tcpdump -n -r "$W/bridge.pcap" "src host $INTRUDER_IP and dst host $SERVER_IP and udp dst port 51820" 2>/dev/null | wc -l)
back=$(tcpdump -n -r "$W/bridge.pcap" "src host $SERVER_IP and dst host $INTRUDER_IP" 2>/dev/null | wc -l)
echo "  bridge: $sent datagrams intruder -> server:51820, $back server -> intruder"
check "intruder: its handshake initiations reached the server" [ "$sent" -gt 0 ]
check "intruder: the server never answered (cloaked)" [ "$back" -eq 0 ]
podman pod rm -f -t 0 "$P-intruder" >/dev/null

# --- live policy update --------------------------------------------------------
state() { podman inspect --format '{{.State.Pid}} {{.State.StartedAt}} {{.RestartCount}}' "$1"; }
server_state=$(state "$P-server-umbra")
client_state=$(state "$P-client-umbra")
sed -e 's/^allow role:frontend -> web    as frontend-to-web/allow role:frontend -> admin  as frontend-to-admin/' \
    -e 's|8080/tcp is allow|8080/tcp is drop|' -e 's|9090/tcp is drop|9090/tcp is allow|' "$policy" >"$W/keys/v2.policy"
v2=$(policy_id "$W/keys/v2.policy")
[[ -n $v2 && $v2 != "$v1" ]] || die "the updated policy does not check: $("$bin" policy check "$W/keys/v2.policy" 2>&1)"
echo "policy update $v1 -> $v2 (ConfigMap-style symlink swap): the admin port instead of the web port"
atomic "$W/policy" mesh.policy "$W/keys/v2.policy" 0644
check "server-1 applied $v2" wait_log "$P-server-umbra" "policy $v2 applied" 15
check "client-1 applied $v2" wait_log "$P-client-umbra" "policy $v2 applied" 15
check "now allowed: client -> server:9090 answers 'admin: server internals'" retry_get 9090 "admin: server internals" 20
check "the server's admin page logged those requests" [ "$(admin_requests)" -gt 0 ]
check "now denied: client -> server:8080 gets nothing back" [ -z "$(get 8080)" ]
check "server-1's umbra was not restarted" [ "$(state "$P-server-umbra")" == "$server_state" ]
check "client-1's umbra was not restarted" [ "$(state "$P-client-umbra")" == "$client_state" ]

echo "a broken policy update is refused:"
atomic "$W/policy" mesh.policy "$W/keys/broken.policy" 0644
check "server-1 rejected it and kept $v2" wait_log "$P-server-umbra" "reload rejected.*$v2" 15
check "the node stays ready on its last good policy (probe passes)" probe "$P-server-umbra"
check "umbra status shows $v2 still in force and the rejected reload" bash -c "$(declare -f status_of); st=\$(status_of $P-server-umbra); grep -q '$v2' <<<\"\$st\" && grep -Eq '[1-9][0-9]* rejected' <<<\"\$st\""
check "still allowed under $v2: client -> server:9090" retry_get 9090 "admin: server internals" 10
atomic "$W/policy" mesh.policy "$W/keys/v2.policy" 0644

# --- privileges ------------------------------------------------------------------
echo "the umbra processes (from /proc/PID/status on the host):"
for node in server client; do
    pid=$(podman inspect --format '{{.State.Pid}}' "$P-$node-umbra")
    status=$(cat "/proc/$pid/status")
    grep -E '^(Name|Uid|Gid|Groups|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' <<<"$status" | tr '\n' ' ' | sed "s/^/  $node: /;s/\t/ /g"
    echo
    field() { awk -v k="$1:" '$1 == k { $1 = ""; print substr($0, 2) }' <<<"$status" | tr -s ' \t' ' ' | sed 's/ $//'; }
    check "$node: the process is umbra" [ "$(readlink "/proc/$pid/exe")" == /usr/local/bin/umbra ]
    check "$node: UID 65532 (real, effective, saved, fs)" [ "$(field Uid)" == "65532 65532 65532 65532" ]
    check "$node: GID 65532, no other groups" [ "$(field Gid) / $(field Groups)" == "65532 65532 65532 65532 / 65532" ]
    check "$node: no capabilities (permitted, effective, bounding, ambient, inheritable)" \
        [ "$(field CapPrm)$(field CapEff)$(field CapBnd)$(field CapAmb)$(field CapInh)" == "$(printf '0%.0s' {1..80})" ]
    check "$node: no-new-privs" [ "$(field NoNewPrivs)" == 1 ]
    check "$node: seccomp filter" [ "$(field Seccomp)" == 2 ]
    check "$node: read-only root file system" [ "$(awk '$5 == "/" { split($6, o, ","); print o[1] }' "/proc/$pid/mountinfo")" == ro ]
done

# --- the policy gate -------------------------------------------------------------
echo "a pod whose mounted policy is broken:"
check "kube play reports the failed init container" fails play broken ""
gate=$(podman logs "$P-broken-umbra-policy-gate" 2>&1 || true)
echo "$gate" | head -3 | sed 's/^/  gate: /'
check "the gate names the error as file:line:col" grep -q 'mesh.policy:[0-9]*:[0-9]*: error' <<<"$gate"
check "umbra never started in that pod" [ "$(podman inspect --format '{{.State.Status}}' "$P-broken-umbra")" == created ]
check "the app never started in that pod" [ "$(podman inspect --format '{{.State.Status}}' "$P-broken-app")" == created ]

# --- the TUN DaemonSet (the privileged option) ------------------------------------
# Two node pods from deploy/kubernetes/daemonset/umbra-node.yaml, each with its
# own key directory in place of the host's /etc/umbra, on the podman network
# instead of the host's (hostNetwork off): the TUN data plane in a container
# that holds CAP_NET_ADMIN and nothing else.
echo "the TUN DaemonSet's pod, twice (node-a may ping node-b, not the reverse):"
mkdir -p "$W/node-a" "$W/node-b"
for n in a b; do (umask 077 && "$bin" genkey >"$W/node-$n/node.key"); done
NODE_A_IP=10.89.$third.31 NODE_B_IP=10.89.$third.32
cat >"$W/keys/nodes.policy" <<EOF
node node-a key $("$bin" pubkey <"$W/node-a/node.key") addr 10.55.0.1/24 endpoint $NODE_A_IP:51820 roles edge
node node-b key $("$bin" pubkey <"$W/node-b/node.key") addr 10.55.0.2/24 endpoint $NODE_B_IP:51820 roles core
service ping-core role:core ping
allow role:edge -> ping-core as edge-pings-core
expect node-b -> node-a is deny
EOF
atomic "$W/node-policy" mesh.policy "$W/keys/nodes.policy" 0644
for n in a b; do
    "$PY" scripts/lib/kube.py podman deploy/kubernetes/daemonset/umbra-node.yaml --name "$P-node-$n" \
        --configmap "mesh-policy=$W/node-policy" --hostpath "node-key=$W/node-$n" >"$W/node-$n.yaml"
done
play node-a "$NODE_A_IP" || { cat "$W/play-node-a.log"; die "node-a pod did not start"; }
play node-b "$NODE_B_IP" || { cat "$W/play-node-b.log"; die "node-b pod did not start"; }
check "node-a is up in TUN mode" wait_log "$P-node-a-umbra" "umbra up: node node-a .*interface umbra0" 20
check "node-b is up in TUN mode" wait_log "$P-node-b-umbra" "umbra up: node node-b .*interface umbra0" 20
pid_a=$(podman inspect --format '{{.State.Pid}}' "$P-node-a-umbra")
pid_b=$(podman inspect --format '{{.State.Pid}}' "$P-node-b-umbra")
check "allowed: node-a pings node-b through the tunnel" nsenter -t "$pid_a" -n ping -c 2 -W 3 10.55.0.2
check "denied: node-b's ping to node-a gets nothing back" fails nsenter -t "$pid_b" -n ping -c 2 -W 2 10.55.0.1
status=$(cat "/proc/$pid_a/status")
grep -E '^(Uid|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' <<<"$status" | tr '\n' ' ' | sed "s/^/  node-a: /;s/\t/ /g"
echo
field() { awk -v k="$1:" '$1 == k { $1 = ""; print substr($0, 2) }' <<<"$status" | tr -s ' \t' ' ' | sed 's/ $//'; }
check "node-a: exactly CAP_NET_ADMIN (permitted, effective, bounding), nothing ambient" \
    [ "$(field CapPrm) $(field CapEff) $(field CapBnd) $(field CapAmb)" == "0000000000001000 0000000000001000 0000000000001000 0000000000000000" ]
check "node-a: no-new-privs, seccomp filter" [ "$(field NoNewPrivs) $(field Seccomp)" == "1 2" ]
check "node-a: read-only root file system" [ "$(awk '$5 == "/" { split($6, o, ","); print o[1] }' "/proc/$pid_a/mountinfo")" == ro ]

if ((FAIL)); then
    for c in server-umbra client-umbra server-app client-app; do
        echo "--- $P-$c"
        podman logs "$P-$c" 2>&1 | tail -15
    done
fi
say "image $size bytes; $PASS passed, $FAIL failed in $((SECONDS - t0)) s"
((FAIL == 0))
