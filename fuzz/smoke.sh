#!/usr/bin/env bash
# Fuzz smoke test: builds every fuzz target and runs each one for a short, bounded
# time on a copy of its seed corpus (the checked-in corpus is left as it is). Fails if
# any target crashes, times out, runs out of memory or does not build.
#
#   bash fuzz/smoke.sh              # from the repository root (or from anywhere)
#   FUZZ_SMOKE_SECONDS=60 bash fuzz/smoke.sh
#
# Needs only stable Rust: cargo-fuzz runs on it with RUSTC_BOOTSTRAP=1, and is
# installed (`cargo install cargo-fuzz --locked`) when missing. Builds go to
# fuzz/target (the fuzz crate is its own workspace); the input that made a target
# fail is kept in fuzz/artifacts/<target>/.
set -euo pipefail

seconds="${FUZZ_SMOKE_SECONDS:-20}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "smoke: building the fuzz targets"
cargo fuzz build

work="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mapfile -t targets < <(cargo fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "smoke: no fuzz targets found" >&2
    exit 1
fi

failed=()
start=$SECONDS
for target in "${targets[@]}"; do
    corpus="$work/corpus-$target"
    mkdir -p "$corpus"
    if [ -d "corpus/$target" ]; then
        cp -R "corpus/$target/." "$corpus/"
    fi
    log="$work/$target.log"
    # -timeout: one input taking this long is a hang; -rss_limit_mb: libFuzzer's default.
    if cargo fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 >"$log" 2>&1; then
        echo "smoke: $target ok: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    else
        echo "smoke: $target FAILED; the end of its log:" >&2
        tail -n 60 "$log" >&2
        failed+=("$target")
    fi
done

echo "smoke: fuzzed ${#targets[@]} targets in $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "smoke: failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
