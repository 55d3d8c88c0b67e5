#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after the other, each for a given
# time, and prints the executions and crashes of each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain
# (`cargo +nightly`); without one, RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept cargo-fuzz's -Z flags.
#
# One fuzzing process at a time (the equivalent of -jobs=1 without libFuzzer's
# worker/log-file indirection): these machines have 2 cores shared with the
# builds of others. Seeds are read from fuzz/corpus/TARGET (committed, never
# written here); what the fuzzer finds grows fuzz/artifacts/corpus/TARGET, and
# crashing inputs land in fuzz/artifacts/TARGET/ (both ignored by git).
# Reproduce a crash with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`
# (with ASAN_OPTIONS=detect_leaks=0).
#
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_path policy vault_file audit_line mcp_stdin)
fi
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p fuzz/artifacts
echo "building the fuzz targets..."
if ! cargo "${toolchain[@]}" fuzz build >fuzz/artifacts/build.log 2>&1; then
    tail -n 30 fuzz/artifacts/build.log >&2
    echo "the fuzz targets do not build (fuzz/artifacts/build.log)" >&2
    exit 2
fi
# LeakSanitizer's scan at exit faults on the guard pages (PROT_NONE) around
# SecretBuf's locked memory: that is not a leak, and libFuzzer's own
# -detect_leaks=0 below does not reach the at-exit check.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# Run the binaries built above directly (what `cargo fuzz run` does after its
# build), so a source change during the run cannot trigger a rebuild midway.
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="fuzz/target/$triple/release"

logs=fuzz/artifacts/logs
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
    work="fuzz/artifacts/corpus/$t"
    mkdir -p "$work" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    before=$(find "fuzz/artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    echo "fuzzing $t for ${secs}s (log: $logs/$t.log)"
    set +e
    # -timeout: one input taking 30 s is a hang (a vault_file input runs argon2
    # at 8 MiB at most; an mcp_stdin session is bounded by 20 s in the target).
    "$bindir/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 -detect_leaks=0 \
        "$work" "fuzz/corpus/$t" >"$logs/$t.log" 2>&1
    rc=$?
    set -e
    after=$(find "fuzz/artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        # libFuzzer stopped on an error without writing an artifact (or the
        # build failed): count it, the log says what happened.
        crashes=1
    fi
    # libFuzzer's own count: the final stats (also printed on a crash), else "Done N runs".
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -n 1 | grep -o '[0-9]*$' || true)
    if [ -z "$execs" ]; then
        execs=$(grep -a -o 'Done [0-9]* runs' "$logs/$t.log" | tail -n 1 | grep -o '[0-9][0-9]*' || true)
    fi
    corpus=$(find "$work" -type f | wc -l)
    summary+=("$(printf '%-14s %12s %8s %8s' "$t" "${execs:-?}" "$crashes" "$corpus")")
    if [ "$crashes" -ne 0 ]; then
        failed=1
        grep -a -m 5 -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$logs/$t.log" | sed 's/^/    /' || true
    fi
done

echo
printf '%-14s %12s %8s %8s\n' target executions crashes corpus
printf '%s\n' "${summary[@]}"
exit "$failed"
