#!/usr/bin/env bash
# Proves the release binary is fully static and runs with nothing around it:
# it is copied alone into an empty directory (no /dev, no /etc, no libc) and
# `umbra genkey | umbra pubkey` runs there under chroot. Needs root (chroot).
#
# Usage: scripts/test-static.sh [path/to/umbra]   (default: build it)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-static: FAIL: $*" >&2; exit 1; }

bin=${1:-$(scripts/build-static.sh)}
[[ -x $bin ]] || fail "no binary at $bin"
echo "test-static: binary $bin ($(stat -c %s "$bin") bytes)"

# 1. The linker says so.
kind=$(file -b "$bin")
echo "test-static: file: $kind"
[[ $kind == *"statically linked"* || $kind == *"static-pie linked"* ]] || fail "file does not call it static"
[[ $kind != *"interpreter"* ]] || fail "binary names a dynamic loader"
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "test-static: ldd: ${ldd_out//$'\n'/ }"
[[ $ldd_out == *"statically linked"* || $ldd_out == *"not a dynamic executable"* ]] || fail "ldd lists libraries"
if readelf -d "$bin" 2>/dev/null | grep -q NEEDED; then fail "binary has NEEDED entries"; fi

# 2. It runs in an empty root.
if [[ $(id -u) -ne 0 ]]; then
    fail "the chroot check needs root (CI runs as root); rerun with sudo"
fi
root=$(mktemp -d /tmp/umbra-chroot.XXXXXX)
trap 'rm -rf "$root"' EXIT
cp "$bin" "$root/umbra"
echo "test-static: chroot contents: $(cd "$root" && find . -mindepth 1 | tr '\n' ' ')"

private=$(chroot "$root" /umbra genkey) || fail "genkey failed inside the empty chroot"
public=$(printf '%s\n' "$private" | chroot "$root" /umbra pubkey) || fail "pubkey failed inside the empty chroot"
piped=$(chroot "$root" /umbra genkey | chroot "$root" /umbra pubkey) || fail "genkey | pubkey failed inside the empty chroot"
[[ ${#private} -eq 44 && ${#public} -eq 44 && ${#piped} -eq 44 ]] || fail "unexpected key lengths"
# The same key outside the chroot must give the same public key.
outside=$(printf '%s\n' "$private" | "$bin" pubkey)
[[ $outside == "$public" ]] || fail "pubkey differs inside and outside the chroot"
echo "test-static: genkey | pubkey in an empty chroot -> $piped"
echo "test-static: ok"
