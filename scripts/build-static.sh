#!/usr/bin/env bash
# Builds a fully static x86_64 umbra binary and prints its path.
#
# Static glibc needs the target spelled out, so RUSTFLAGS apply to the binary
# but not to build scripts and proc macros (which must stay dynamic).
# getrandom 0.3 is told to call getrandom(2) directly: its default backend
# would fall back to /dev/urandom, which a scratch container does not have.
# (getrandom 0.2, pulled in by ring, is pinned to the syscall in Cargo.toml.)
#
# Usage: scripts/build-static.sh [extra cargo args, e.g. --profile bench]
#
# Release profile choice, measured on the 2-core dev machine with the crate
# skeleton (clean build of the static target, rust 1.95, machine shared):
#   lto = "fat",  codegen-units = 1   26.4 s   1,217,856 bytes   <- chosen
#   lto = "thin", codegen-units = 1   16.5 s   1,249,344 bytes
#   lto = false,  codegen-units = 1   13.4 s   1,303,080 bytes
#   lto = false,  codegen-units = 16  14.3 s   1,310,664 bytes
# Fat LTO costs ~10 s per release build and buys cross-crate inlining on the
# packet path; re-measure with `cargo bench` once the tunnel core exists.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
profile=release
args=("$@")
have_profile=0
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --profile) profile="${args[i + 1]:-release}"; have_profile=1 ;;
        --profile=*) profile="${args[i]#--profile=}"; have_profile=1 ;;
    esac
done

export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
((have_profile)) || args=(--release "${args[@]}")
cargo build --locked --target "$target" --bin umbra "${args[@]}" >&2

dir=$profile
[[ $profile == dev ]] && dir=debug
bin="$PWD/target/$target/$dir/umbra"
[[ -x $bin ]] || { echo "build-static: expected $bin" >&2; exit 1; }
echo "$bin"
