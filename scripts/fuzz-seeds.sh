#!/usr/bin/env bash
# Rebuilds the committed fuzz corpora (fuzz/corpus/<target>/) from the seed
# generator in tests/fuzz_seeds.rs (real handshakes, data messages, inner
# packets, policy examples) plus the small inputs (<= 256 bytes) that local
# fuzz runs found (fuzz/target/found/<target>/, see scripts/fuzz.sh), then
# minimizes them with `cargo fuzz cmin` so only inputs adding coverage stay.
# The size cap keeps the committed corpus to a few hundred KB; the larger
# finds stay in fuzz/target/found and keep feeding local runs.
#
# Usage: scripts/fuzz-seeds.sh [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1 # cargo-fuzz's sanitizer flags need it on stable

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
UMBRA_FUZZ_SEEDS_OUT="$seeds" cargo test --quiet --test fuzz_seeds -- --ignored write_seeds >/dev/null

targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cd fuzz && cargo fuzz list)
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    rm -rf "$corpus"
    mkdir -p "$corpus"
    [[ -d $seeds/$t ]] && cp "$seeds/$t"/* "$corpus/"
    [[ -d fuzz/target/found/$t ]] && find "fuzz/target/found/$t" -type f -size -257c -exec cp {} "$corpus/" \;
    before=$(find "$corpus" -type f | wc -l)
    (cd fuzz && cargo fuzz cmin "$t" "corpus/$t" >/dev/null 2>&1)
    echo "fuzz-seeds: $t: $before inputs -> $(find "$corpus" -type f | wc -l) after cmin ($(du -s --apparent-size -k "$corpus" | cut -f1) KB)"
done
