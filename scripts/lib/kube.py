#!/usr/bin/env python3
"""Checks and translations of umbra's Kubernetes manifests (deploy/kubernetes).

  kube.py restricted FILE...   every pod template must pass the PodSecurity
                               "restricted" profile (latest); prints each
                               violation, exits 1 if there is one
  kube.py privileged FILE...   the opposite: every pod template must FAIL it
                               (the TUN DaemonSet is the documented
                               privileged option)
  kube.py sidecar FILE...      umbra-specific shape: policy gate before the
                               node, native sidecar (or classic container),
                               read-only root, policy mounted as a directory
  kube.py selftest FILE        mutates a passing manifest in every way the
                               profile forbids and checks each mutant fails
  kube.py kustomization FILE  the files it names exist, or are the ones
                               keys.sh writes (listed in .gitignore beside it)
  kube.py podman FILE [opts]   rewrites a manifest for `podman kube play`
                               (see podmanize below), YAML on stdout

The profile follows the Pod Security Standards, restricted, version latest:
https://kubernetes.io/docs/concepts/security/pod-security-standards/
Needs PyYAML (the kubernetes-validate venv from scripts/ci-deps.sh has it).
"""

import copy
import sys

import yaml

# --- loading ---------------------------------------------------------------

WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_specs(docs):
    """(name, pod spec) for every Pod and pod template in docs."""
    out = []
    for d in docs:
        kind = d.get("kind")
        name = "%s/%s" % (kind, d.get("metadata", {}).get("name", "?"))
        if kind == "Pod":
            out.append((name, d["spec"]))
        elif kind in WORKLOADS:
            out.append((name, d["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            out.append((name, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def containers(spec):
    """(kind, container) for init, regular and ephemeral containers."""
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield kind, c


# --- PodSecurity restricted (includes baseline) -----------------------------

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec):
    """Every way this pod spec breaks the restricted profile, as strings."""
    v = []
    psc = spec.get("securityContext") or {}

    # baseline: host namespaces, ports, paths, privileged, capabilities, ...
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            v.append("%s: true" % field)
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v.append("pod windowsOptions.hostProcess")
    for vol in spec.get("volumes") or []:
        kinds = [k for k in vol if k != "name"]
        for k in kinds:
            if k not in RESTRICTED_VOLUMES:
                v.append("volume %s: type %s not allowed" % (vol.get("name"), k))
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            v.append("unsafe sysctl %s" % s.get("name"))
    if (psc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
        v.append("pod seLinuxOptions.type")
    for f in ("user", "role"):
        if (psc.get("seLinuxOptions") or {}).get(f):
            v.append("pod seLinuxOptions.%s set" % f)
    pod_apparmor = (psc.get("appArmorProfile") or {}).get("type")
    if pod_apparmor not in (None, "RuntimeDefault", "Localhost"):
        v.append("pod appArmorProfile %s" % pod_apparmor)

    # restricted: non-root, seccomp, at pod level or in every container
    pod_nonroot = psc.get("runAsNonRoot") is True
    if psc.get("runAsNonRoot") is False:
        v.append("pod runAsNonRoot: false")
    if psc.get("runAsUser") == 0:
        v.append("pod runAsUser: 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append("pod seccompProfile %s" % pod_seccomp)

    for kind, c in containers(spec):
        n = "%s %s" % (kind, c.get("name"))
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append("%s: privileged" % n)
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append("%s: hostProcess" % n)
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append("%s: hostPort %s" % (n, p["hostPort"]))
        if sc.get("procMount") not in (None, "Default"):
            v.append("%s: procMount %s" % (n, sc["procMount"]))
        if (sc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
            v.append("%s: seLinuxOptions.type" % n)
        for f in ("user", "role"):
            if (sc.get("seLinuxOptions") or {}).get(f):
                v.append("%s: seLinuxOptions.%s set" % (n, f))
        aa = (sc.get("appArmorProfile") or {}).get("type")
        if aa not in (None, "RuntimeDefault", "Localhost"):
            v.append("%s: appArmorProfile %s" % (n, aa))
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append("%s: allowPrivilegeEscalation must be false" % n)
        if sc.get("runAsNonRoot") is False or not (pod_nonroot or sc.get("runAsNonRoot") is True):
            v.append("%s: runAsNonRoot must be true (pod or container)" % n)
        if sc.get("runAsUser") == 0:
            v.append("%s: runAsUser: 0" % n)
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None:
            if pod_seccomp is None:
                v.append("%s: seccompProfile must be RuntimeDefault or Localhost (pod or container)" % n)
        elif seccomp not in ("RuntimeDefault", "Localhost"):
            v.append("%s: seccompProfile %s" % (n, seccomp))
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append("%s: capabilities.drop must include ALL" % n)
        for cap in caps.get("add") or []:
            if cap != "NET_BIND_SERVICE":
                v.append("%s: capability %s added" % (n, cap))
    return v


# --- umbra's own requirements for its pods ------------------------------------

def is_umbra(c):
    return "umbra" in (c.get("image") or "").split("/")[-1].split(":")[0]


def sidecar_violations(spec):
    v = []
    inits = spec.get("initContainers") or []
    node = [c for _, c in containers(spec) if is_umbra(c) and (c.get("args") or [None])[0] == "up"]
    gate = [c for c in inits if is_umbra(c) and (c.get("args") or [])[:2] == ["policy", "check"]]
    if len(node) != 1:
        return ["expected one umbra container running `up`, found %d" % len(node)]
    node = node[0]
    env = {e["name"]: e.get("value") for e in node.get("env") or []}
    if env.get("UMBRA_USERSPACE") != "true":
        v.append("umbra: UMBRA_USERSPACE must be \"true\" (no privileges)")
    if not (env.get("UMBRA_FORWARD") or env.get("UMBRA_EXPOSE")):
        v.append("umbra: neither UMBRA_FORWARD nor UMBRA_EXPOSE")
    native = node in inits
    if native and node.get("restartPolicy") != "Always":
        v.append("umbra: an init container without restartPolicy: Always would block the pod")
    if not gate:
        v.append("no policy gate (`umbra policy check`) init container")
    elif native and inits.index(gate[0]) > inits.index(node):
        v.append("the policy gate must run before the umbra sidecar")
    elif gate and gate[0]["args"][2] != env.get("UMBRA_POLICY"):
        v.append("the policy gate checks %s, the node loads %s" % (gate[0]["args"][2], env.get("UMBRA_POLICY")))
    for c in [node] + gate:
        if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            v.append("%s: readOnlyRootFilesystem must be true" % c["name"])
    for m in node.get("volumeMounts") or []:
        if env.get("UMBRA_POLICY", "").startswith(m["mountPath"].rstrip("/") + "/") and m.get("subPath"):
            v.append("umbra: the policy is mounted with subPath (ConfigMap updates never arrive)")
    args = node.get("args") or []
    ctl = args[args.index("--control") + 1] if "--control" in args[:-1] else None
    for p in ("startupProbe", "readinessProbe"):
        cmd = ((node.get(p) or {}).get("exec") or {}).get("command") or []
        if not cmd or "umbra" not in cmd[0]:
            v.append("umbra: %s must run umbra" % p)
        elif cmd[1:3] != ["status", "--check"] or ctl is None or cmd[3:5] != ["--control", ctl]:
            v.append("umbra: %s must ask the node (`umbra status --check --control` its socket)" % p)
    return v


# --- self test: the checker must catch each forbidden change ----------------

def mutants(spec):
    """(description, mutated spec) for each thing the profile forbids."""
    def first(s, kind="containers"):
        return s[kind][0]

    def sc(c):
        return c.setdefault("securityContext", {})

    muts = [
        ("hostNetwork", lambda s: s.__setitem__("hostNetwork", True)),
        ("hostPath volume", lambda s: s.setdefault("volumes", []).append({"name": "h", "hostPath": {"path": "/"}})),
        ("pod runs as root", lambda s: s["securityContext"].__setitem__("runAsUser", 0)),
        ("no runAsNonRoot", lambda s: s["securityContext"].pop("runAsNonRoot")),
        ("seccomp Unconfined", lambda s: s["securityContext"].__setitem__("seccompProfile", {"type": "Unconfined"})),
        ("no seccomp", lambda s: s["securityContext"].pop("seccompProfile")),
        ("privileged app", lambda s: sc(first(s)).__setitem__("privileged", True)),
        ("escalation allowed", lambda s: sc(first(s, "initContainers")).pop("allowPrivilegeEscalation")),
        ("caps not dropped", lambda s: sc(first(s)).pop("capabilities")),
        ("NET_ADMIN added", lambda s: sc(s["initContainers"][-1]).setdefault("capabilities", {}).__setitem__("add", ["NET_ADMIN"])),
        ("hostPort", lambda s: first(s).setdefault("ports", []).append({"containerPort": 1, "hostPort": 1})),
    ]
    for desc, f in muts:
        m = copy.deepcopy(spec)
        f(m)
        yield desc, m


# --- podman translation ------------------------------------------------------

def podmanize(docs, name, configmaps, secrets, aliases, images, hostpaths=None):
    """One Pod for `podman kube play` from the first workload in docs.

    What podman 4.3 cannot express is rewritten, nothing else:
    - native sidecars (initContainers with restartPolicy: Always) become
      ordinary containers, listed first: podman would wait for them to exit;
    - ConfigMap and Secret volumes become hostPath directories that the test
      lays out like the kubelet does (..data symlink swap, root:fsGroup 0440),
      so the test can replace the mounted policy as a ConfigMap update would;
    - hostAliases point at the podman network address instead of a Service
      cluster IP (podman has no Services);
    - image names map to locally built images (the test pulls nothing);
    - the pod's restartPolicy becomes Never: podman 4.3 applies it to init
      containers too (Kubernetes does not), restarting a finished policy
      gate forever, so the app never starts;
    - emptyDir volumes get the pod's name in front: podman 4.3 makes them
      named volumes, which two pods with the same volume name would share
      (a pod's key copy would be the other pod's);
    - containerPort lists are dropped: podman 4.3 publishes each one on the
      host's port of the same number (Kubernetes only documents them);
    - for the DaemonSet: hostNetwork is turned off (each test pod gets its
      own address on the podman network instead of the CI machine's
      network), and hostPath volumes named in `hostpaths` point at test
      directories (the per-node key).
    """
    hostpaths = hostpaths or {}
    (wname, spec), = [p for p in pod_specs(docs)][:1] or [(None, None)]
    if spec is None:
        raise SystemExit("kube.py: no pod template found")
    spec = copy.deepcopy(spec)
    labels = {}
    for d in docs:
        if d.get("kind") in WORKLOADS:
            labels = d["spec"]["template"].get("metadata", {}).get("labels", {})
            break
    inits = spec.get("initContainers") or []
    native = [c for c in inits if c.get("restartPolicy") == "Always"]
    spec["initContainers"] = [c for c in inits if c not in native]
    for c in native:
        del c["restartPolicy"]
    spec["containers"] = native + spec["containers"]
    for _, c in containers(spec):
        c["image"] = images.get(c["image"], c["image"])
        c.pop("ports", None)
    spec["restartPolicy"] = "Never"
    if spec.pop("hostNetwork", False):
        spec.pop("dnsPolicy", None)
    spec.pop("priorityClassName", None)
    spec.pop("tolerations", None)
    renamed = {}
    for vol in spec.get("volumes") or []:
        if "emptyDir" in vol:
            renamed[vol["name"]] = "%s-%s" % (name, vol["name"])
            vol["name"] = renamed[vol["name"]]
    for _, c in containers(spec):
        for m in c.get("volumeMounts") or []:
            m["name"] = renamed.get(m["name"], m["name"])
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            path = configmaps[vol.pop("configMap")["name"]]
            vol["hostPath"] = {"path": path, "type": "Directory"}
        elif "hostPath" in vol and vol["name"] in hostpaths:
            vol["hostPath"]["path"] = hostpaths[vol["name"]]
        elif "secret" in vol:
            path = secrets[vol.pop("secret")["secretName"]]
            vol["hostPath"] = {"path": path, "type": "Directory"}
    for ha in spec.get("hostAliases") or []:
        for h in ha["hostnames"]:
            if h in aliases:
                ha["ip"] = aliases[h]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": spec}


def check_kustomization(path):
    import os
    base = os.path.dirname(path)
    k = load(path)[0]
    generated = set()
    ignore = os.path.join(base, ".gitignore")
    if os.path.exists(ignore):
        generated = {l.strip() for l in open(ignore) if l.strip()}
    bad = 0
    names = list(k.get("resources") or [])
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        names += [f.split("=", 1)[-1] for f in gen.get("files") or []]
    for name in names:
        full = os.path.join(base, name)
        if os.path.exists(full):
            print("%s: %s exists" % (path, name))
        elif name in generated:
            print("%s: %s is written by keys.sh" % (path, name))
        else:
            print("%s: %s: no such file" % (path, name))
            bad += 1
    images = {i["name"] for i in k.get("images") or []}
    for name in k.get("resources") or []:
        full = os.path.join(base, name)
        if os.path.isfile(full):
            for _, spec in pod_specs(load(full)):
                for _, c in containers(spec):
                    if is_umbra(c) and c["image"].rsplit(":", 1)[0] not in images:
                        print("%s: %s uses %s, which images: does not map" % (path, name, c["image"]))
                        bad += 1
    return 1 if bad else 0


def pairs(values):
    out = {}
    for v in values:
        k, _, val = v.partition("=")
        out[k] = val
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, files = argv[1], argv[2:]
    if cmd == "podman":
        opts = {"--configmap": [], "--secret": [], "--alias": [], "--image": [], "--name": [], "--hostpath": []}
        path, rest = files[0], files[1:]
        for flag, value in zip(rest[::2], rest[1::2]):
            opts[flag].append(value)
        pod = podmanize(load(path), opts["--name"][0], pairs(opts["--configmap"]),
                        pairs(opts["--secret"]), pairs(opts["--alias"]), pairs(opts["--image"]),
                        pairs(opts["--hostpath"]))
        yaml.safe_dump(pod, sys.stdout, sort_keys=False)
        return 0
    if cmd == "kustomization":
        return check_kustomization(files[0])
    bad = 0
    for path in files:
        specs = pod_specs(load(path))
        if not specs:
            print("%s: no pod template" % path)
            bad += 1
        for name, spec in specs:
            if cmd == "restricted":
                v = restricted_violations(spec)
                bad += len(v)
                for x in v:
                    print("%s: %s: restricted: %s" % (path, name, x))
                if not v:
                    print("%s: %s: passes PodSecurity restricted" % (path, name))
            elif cmd == "privileged":
                v = restricted_violations(spec)
                if v:
                    print("%s: %s: privileged as documented (%d restricted violations, e.g. %s)" % (path, name, len(v), v[0]))
                else:
                    print("%s: %s: passes restricted, but is documented as privileged" % (path, name))
                    bad += 1
            elif cmd == "sidecar":
                v = sidecar_violations(spec)
                bad += len(v)
                for x in v:
                    print("%s: %s: sidecar: %s" % (path, name, x))
                if not v:
                    print("%s: %s: umbra sidecar shape ok" % (path, name))
            elif cmd == "selftest":
                for desc, m in mutants(spec):
                    if restricted_violations(m):
                        print("%s: %s: mutant '%s' caught" % (path, name, desc))
                    else:
                        print("%s: %s: mutant '%s' NOT caught" % (path, name, desc))
                        bad += 1
            else:
                print(__doc__, file=sys.stderr)
                return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
