#!/usr/bin/env bash
# Runs umbra's fuzz targets (fuzz/, cargo-fuzz + libFuzzer + ASan) for a
# bounded time each, and fails if any input crashes, hangs (>10 s) or leaks.
# For a failure it prints the reproducer's path and bytes (hex); replay it
# with `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O TARGET PATH`, then turn
# it into a regression test in tests/fuzz_regressions.rs.
#
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]   (default: all, 60 s each)
#
# Inputs that add coverage go to fuzz/target/found/<target>/ (not committed);
# scripts/fuzz-seeds.sh minimizes them into the committed corpus. The
# committed corpus itself is only read. Needs cargo-fuzz (scripts/ci-deps.sh
# installs it); RUSTC_BOOTSTRAP lets it use its nightly-only flags (sanitizer,
# coverage instrumentation) on the stable compiler.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

want=${1:-all}
secs=${2:-60}
[[ $secs =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a number, not '$secs'" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing (run scripts/ci-deps.sh)" >&2; exit 1; }

mapfile -t all < <(cargo fuzz list)
if [[ $want == all ]]; then
    targets=("${all[@]}")
elif printf '%s\n' "${all[@]}" | grep -qx -- "$want"; then
    targets=("$want")
else
    echo "fuzz: unknown target '$want'; targets: ${all[*]}" >&2
    exit 2
fi

# -O: optimised, without debug assertions for every crate (dependencies'
# overflow checks slow the handshake targets 1.5x); fuzz/Cargo.toml turns
# debug assertions and overflow checks back on for umbra itself.
flags=(-O)
echo "fuzz: building ${#targets[@]} target(s)"
start=$SECONDS
if [[ $want == all ]]; then
    cargo fuzz build "${flags[@]}"
else
    cargo fuzz build "${flags[@]}" "$want"
fi
echo "fuzz: built in $((SECONDS - start)) s"

failed=()
summary=()
mkdir -p target/fuzz-logs
for t in "${targets[@]}"; do
    found=target/found/$t
    artifacts=artifacts/$t
    log=target/fuzz-logs/$t.log
    mkdir -p "$found" "$artifacts"
    [[ -d corpus/$t ]] || { echo "fuzz: $t has no corpus/$t" >&2; failed+=("$t"); continue; }
    marker=$(mktemp)
    args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$artifacts/")
    [[ -f dict/$t.dict ]] && args+=(-dict="dict/$t.dict")
    echo
    echo "=== fuzz $t: $secs s"
    rc=0
    cargo fuzz run "${flags[@]}" "$t" "$found" "corpus/$t" -- "${args[@]}" >"$log" 2>&1 || rc=$?
    inited=$(grep -m1 -o 'INITED cov: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    last=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    new=$(grep -o 'stat::new_units_added: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    line="$t: $execs execs, $rate exec/s, cov $inited -> $last, $new new inputs"
    if ((rc == 0)); then
        echo "=== fuzz $t: ok ($line)"
        summary+=("ok     $line")
    else
        echo "=== fuzz $t: FAILED (exit $rc; $line); log $PWD/$log:"
        # The panic or sanitizer report, then libFuzzer's summary.
        grep -m3 -A6 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" || true
        echo ...
        grep -v -E '^#[0-9]+\s' "$log" | tail -25
        while IFS= read -r f; do
            echo "reproducer: $PWD/$f ($(stat -c %s "$f") bytes)"
            od -An -v -tx1 "$f" | tr -d ' \n' | fold -w 128
            echo
        done < <(find "$artifacts" -type f -newer "$marker")
        failed+=("$t")
        summary+=("FAILED $line")
    fi
    rm -f "$marker"
done

echo
printf 'fuzz: %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran clean"
