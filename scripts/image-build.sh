#!/usr/bin/env bash
# Builds umbra's OCI image with podman (buildah underneath), offline: FROM
# scratch, holding only the static binary and a one-line /etc/passwd and
# /etc/group for the non-root user 65532 (deploy/image/). Nothing is pulled.
# The build context is a scratch directory with just those files, and
# --timestamp 0 makes the image ID depend on the content only.
#
# Usage: scripts/image-build.sh [path/to/static/umbra]   (default: build it)
#   IMAGE=localhost/umbra:dev scripts/image-build.sh      (default tag below)
# Prints the image name on stdout, the rest on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/umbra:latest}
say() { echo "image-build: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

command -v podman >/dev/null || fail "podman is missing: run scripts/ci-deps.sh (apt-get install podman runc buildah)"
bin=${1:-$(scripts/build-static.sh)}
[[ -x $bin ]] || fail "no binary at $bin"
kind=$(file -b "$bin")
[[ $kind == *"statically linked"* || $kind == *"static-pie linked"* ]] ||
    fail "$bin is not static ($kind): a FROM scratch image has no libc; use scripts/build-static.sh"

ctx=$(mktemp -d /tmp/umbra-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
install -m 0755 "$bin" "$ctx/umbra"
install -m 0644 deploy/image/Containerfile deploy/image/passwd deploy/image/group "$ctx/"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
say "building $IMAGE from $bin ($(stat -c %s "$bin") bytes), umbra $version at $revision"
podman build --quiet --timestamp 0 --pull=never \
    --label org.opencontainers.image.title=umbra \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label org.opencontainers.image.description="umbra mesh VPN: static binary, non-root, nothing else" \
    -t "$IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
say "$IMAGE: $size bytes ($((size / 1024)) KiB), user $user, id $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)"
echo "$IMAGE"
