#!/usr/bin/env bash
# Runs one libFuzzer target for the test suite (tests/fuzz/README.md).
#   run_fuzzer.sh replay BIN WORK CORPUS REGRESSIONS
#       every seed and regression input once
#   run_fuzzer.sh fuzz BIN WORK CORPUS REGRESSIONS SECONDS
#       fuzz for SECONDS from those inputs; new inputs go to WORK/corpus
#       (never into the source tree), a crash to WORK/crash-*
# Exit status non-zero on any crash, leak, timeout or failed property.
set -euo pipefail
mode=$1 bin=$2 work=$3 corpus=$4 regressions=$5
[ -x "$bin" ] || { echo "run_fuzzer: $bin missing (did fuzz_build run?)" >&2; exit 1; }
[ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || { echo "run_fuzzer: no seeds in $corpus" >&2; exit 1; }
mkdir -p "$work/corpus"
dirs=("$corpus")
[ -d "$regressions" ] && dirs+=("$regressions")
common=(-timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$work/" -print_final_stats=1)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
case "$mode" in
  replay)
    exec "$bin" "${common[@]}" -runs=0 "${dirs[@]}"
    ;;
  fuzz)
    seconds=$6
    exec "$bin" "${common[@]}" -max_total_time="$seconds" -max_len=8192 "$work/corpus" "${dirs[@]}"
    ;;
  *)
    echo "usage: $0 replay|fuzz BIN WORK CORPUS REGRESSIONS [SECONDS]" >&2
    exit 2
    ;;
esac
