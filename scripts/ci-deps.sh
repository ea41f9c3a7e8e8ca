#!/usr/bin/env bash
# Installs what umbra's tests need on a fresh Debian machine, each thing only
# when it is missing, and says what it does. Safe to run again (idempotent).
# Needs root for apt-get (CI runs as root).
#
# Measured on the 2-core dev machine (shared with other builds): with iproute2
# and file present and nothing else, 1 min 36 s in all (apt update + 6 packages,
# then boringtun-cli and cargo-fuzz compiled from source); 0.25 s when
# everything is already there.
set -euo pipefail

say() { echo "ci-deps: $*"; }

# g++: cargo-fuzz's libfuzzer-sys compiles libFuzzer (C++) from source.
# podman runc iptables buildah catatonit: the container image and pod test
# (scripts/podman-kube.sh; catatonit is podman's pause process for pods);
# busybox-static: the example app's image there; python3-venv: the
# kubernetes-validate venv below.
apt_packages=(iproute2 iperf3 tcpdump ncat iputils-ping wireguard-tools wireguard-go file g++
    podman runc iptables buildah catatonit busybox-static python3-venv)

missing=()
for pkg in "${apt_packages[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        say "apt: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        say "need root to install: ${missing[*]}" >&2
        exit 1
    fi
    say "apt: updating package lists"
    apt-get update -qq
    say "apt: installing ${missing[*]}"
    # iperf3 asks whether to start a daemon: answer no, without a prompt.
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Podman on these machines needs runc, cgroupfs, a file events logger and an
# open-files limit the VM allows (deploy/podman/containers.conf says why).
# A machine with its own settings keeps them.
if [[ -e /etc/containers/containers.conf ]]; then
    say "podman: /etc/containers/containers.conf present, left as it is"
else
    say "podman: installing deploy/podman/containers.conf as /etc/containers/containers.conf"
    install -D -m 0644 "$(dirname "$0")/../deploy/podman/containers.conf" /etc/containers/containers.conf
fi

# kubernetes-validate (PyPI) in its own venv: offline schema validation of the
# manifests in deploy/kubernetes (scripts/kube-validate.sh). Pinned: its
# bundled schemas decide what "the newest schema" means.
kv_version=1.37.0
venv=${UMBRA_VENV:-/opt/umbra-venv}
if [[ -x $venv/bin/kubernetes-validate ]] && "$venv/bin/kubernetes-validate" --version 2>&1 | grep -q "$kv_version"; then
    say "pip: kubernetes-validate $kv_version already in $venv"
else
    say "pip: installing kubernetes-validate $kv_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version"
fi

# cargo install puts binaries here; make sure this script and its callers see them.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$cargo_bin:"*) ;; *) export PATH="$cargo_bin:$PATH" ;; esac

for tool in cargo rustc; do
    command -v "$tool" >/dev/null || { say "$tool not found: this machine has no Rust toolchain" >&2; exit 1; }
done
for sub in fmt clippy; do
    cargo "$sub" --version >/dev/null 2>&1 || { say "cargo $sub is missing: rustup component add ${sub/fmt/rustfmt}" >&2; exit 1; }
done

# crate name -> binary it installs
cargo_tools=("boringtun-cli:boringtun-cli" "cargo-fuzz:cargo-fuzz")
for entry in "${cargo_tools[@]}"; do
    crate=${entry%%:*} bin=${entry#*:}
    if command -v "$bin" >/dev/null; then
        say "cargo: $crate already installed ($(command -v "$bin"))"
    else
        say "cargo: installing $crate (compiles from source, a few minutes)"
        cargo install --locked --quiet "$crate"
    fi
done

say "ready: $(podman --version); kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}'); $(wg --version 2>&1 | head -1); wireguard-go $(wireguard-go --version 2>&1 | head -1 | awk '{print $NF}'); $(boringtun-cli --version 2>&1 | head -1); $(cargo fuzz --version 2>&1 | head -1)"
