#!/usr/bin/env bash
# Makes the example's secrets and policy: client.key and server.key (new
# WireGuard keys, mode 600, kept if they already exist) and mesh.policy
# (mesh.policy.in with their public keys), then checks the policy as the
# pods' policy gate will. kustomization.yaml turns these three files into
# the umbra-client-key / umbra-server-key Secrets and the mesh-policy
# ConfigMap. The keys are secrets: they are git-ignored, never commit them.
#
# Usage: deploy/kubernetes/example/keys.sh [OUTDIR]    (default: beside this file)
#   UMBRA=/path/to/umbra   the binary to use (default: `umbra` on PATH, else
#                          this checkout's target/release/umbra)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"

umbra=${UMBRA:-$(command -v umbra || echo "$here/../../../target/release/umbra")}
[[ -x $umbra ]] || { echo "keys.sh: no umbra binary at $umbra: build it (cargo build --release) or set UMBRA=" >&2; exit 1; }

for node in client server; do
    if [[ ! -s $out/$node.key ]]; then
        (umask 077 && "$umbra" genkey >"$out/$node.key")
        echo "keys.sh: new key $out/$node.key" >&2
    fi
done
client=$("$umbra" pubkey <"$out/client.key")
server=$("$umbra" pubkey <"$out/server.key")
sed -e "s|@CLIENT_KEY@|$client|" -e "s|@SERVER_KEY@|$server|" "$here/mesh.policy.in" >"$out/mesh.policy"
"$umbra" policy check "$out/mesh.policy" >&2
echo "keys.sh: wrote $out/mesh.policy (client-1 $client, server-1 $server)" >&2
