#!/usr/bin/env bash
# umbra's test command (CI runs it through .ci/run). Runs every check, keeps
# going after a failure so one run shows everything, and ends with a
# "N passed, N failed" line. Exits non-zero if anything failed.
#
# Runs scripts/ci-deps.sh first (installs the tools when missing); needs
# root for that, the chroot, network-namespace and podman tests.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()

step() {
    local name=$1
    shift
    echo
    echo "=== $name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "=== $name: ok ($((SECONDS - start)) s)"
        passed=$((passed + 1))
    else
        echo "=== $name: FAILED ($((SECONDS - start)) s)"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

# On a fresh machine this installs what the tests need (scripts/ci-deps.sh is
# idempotent: under a second when everything is there).
step deps bash scripts/ci-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
step fmt cargo fmt --check
step clippy cargo clippy --locked --all-targets -- -D warnings
# The library and binary as shipped, without the test-only features that the
# dev-dependency on itself turns on above (fuzzing, internals): code that only
# tests use shows up here as dead code.
step clippy-shipped cargo clippy --locked --lib --bins -- -D warnings
step cargo-test cargo test --locked
step static scripts/test-static.sh
# Kubernetes manifests, offline; then the image and the example pods under podman.
step kube-validate bash scripts/kube-validate.sh
step podman-kube bash scripts/podman-kube.sh

shopt -s nullglob
for t in scripts/netns-*.sh; do
    step "$(basename "$t" .sh)" bash "$t"
done

echo
((failed == 0)) || echo "failed: ${failures[*]}"
echo "summary: $passed passed, $failed failed"
((failed == 0))
