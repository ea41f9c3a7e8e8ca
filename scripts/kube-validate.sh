#!/usr/bin/env bash
# Validates every Kubernetes manifest in deploy/kubernetes offline:
#   - kubernetes-validate --strict (unknown fields are errors) against 1.29,
#     the first version with native sidecars, and the newest schema the
#     package ships; the classic-sidecar variant also against 1.27;
#   - the validator is strict for real: the native-sidecar manifests must
#     FAIL against 1.27, which has no initContainers[].restartPolicy;
#   - the example and classic pods pass the PodSecurity "restricted"
#     profile, checked field by field (scripts/lib/kube.py), and the checker
#     catches each forbidden change made to a passing manifest; the TUN
#     DaemonSet must fail it (it is the documented privileged option);
#   - umbra's pod shape: a policy gate before the node, the node userspace
#     with a forward or expose, read-only root, policy mounted as a whole
#     directory (ConfigMap updates arrive), probes that run umbra;
#   - the kustomization names files that exist or that keys.sh writes.
# Needs the kubernetes-validate venv from scripts/ci-deps.sh (no network,
# no cluster, no kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${UMBRA_VENV:-/opt/umbra-venv}
PY=$venv/bin/python
KV=$venv/bin/kubernetes-validate
[[ -x $KV ]] || { echo "kube-validate: no kubernetes-validate in $venv: run scripts/ci-deps.sh" >&2; exit 1; }

newest=$("$PY" - <<'EOF'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
vs = [tuple(map(int, m.groups())) for m in (re.match(r"v(\d+)\.(\d+)\.(\d+)-local-strict$", n) for n in os.listdir(d)) if m]
print("%d.%d.%d" % max(vs))
EOF
)
echo "kube-validate: kubernetes-validate $("$KV" --version 2>&1 | awk '{print $NF}'), schemas 1.29.0 and $newest (newest shipped)"

K=deploy/kubernetes
native=("$K"/example/namespace.yaml "$K"/example/server.yaml "$K"/example/client.yaml "$K"/daemonset/umbra-node.yaml)
classic=("$K"/classic/server.yaml "$K"/classic/client.yaml)
all=("${native[@]}" "${classic[@]}")
# Every YAML file is covered (kustomization.yaml is kustomize's, not an API object).
mapfile -t found < <(find "$K" -name '*.yaml' ! -name kustomization.yaml | sort)
mapfile -t listed < <(printf '%s\n' "${all[@]}" | sort)
[[ "${found[*]}" == "${listed[*]}" ]] || { echo "kube-validate: FAIL: manifests not covered: ${found[*]} vs ${listed[*]}" >&2; exit 1; }

fail=0
run() {
    echo "--- $*"
    "$@" || { echo "kube-validate: FAIL: $*"; fail=1; }
}
for version in 1.29.0 "$newest"; do
    run "$KV" --strict --quiet -k "$version" "${all[@]}"
done
run "$KV" --strict --quiet -k 1.27.0 "${classic[@]}"
echo "--- the native sidecars must not validate against 1.27 (no restartPolicy on containers there)"
for f in "$K"/example/server.yaml "$K"/example/client.yaml; do
    if out=$("$KV" --strict --quiet -k 1.27.0 "$f" 2>&1); then
        echo "kube-validate: FAIL: $f validates against 1.27: the validator is not strict"
        fail=1
    else
        grep -q "'restartPolicy' was unexpected" <<<"$out" || { echo "$out"; fail=1; }
        echo "$f: rejected by 1.27 as expected ('restartPolicy' was unexpected)"
    fi
done
run "$PY" scripts/lib/kube.py restricted "$K"/example/server.yaml "$K"/example/client.yaml "${classic[@]}"
run "$PY" scripts/lib/kube.py selftest "$K"/example/client.yaml
run "$PY" scripts/lib/kube.py privileged "$K"/daemonset/umbra-node.yaml
run "$PY" scripts/lib/kube.py sidecar "$K"/example/server.yaml "$K"/example/client.yaml "${classic[@]}"
run "$PY" scripts/lib/kube.py kustomization "$K"/example/kustomization.yaml
echo "--- the namespace enforces restricted"
ns=$("$PY" -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["labels"].get("pod-security.kubernetes.io/enforce"))' "$K"/example/namespace.yaml)
[[ $ns == restricted ]] && echo "umbra-demo: pod-security.kubernetes.io/enforce=restricted" || { echo "kube-validate: FAIL: umbra-demo enforces '$ns'"; fail=1; }

((fail == 0)) && echo "kube-validate: ok" || echo "kube-validate: FAILED"
exit "$fail"
