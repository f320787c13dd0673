#!/usr/bin/env bash
# Fuzz campaign: scripts/fuzz.sh [MINUTES] [TARGET...]
#
# Runs each target (all of fuzz/fuzz_targets/ when none is named) for MINUTES (default 10),
# one after the other, with libFuzzer via cargo-fuzz, and prints per target: minutes,
# executions, coverage (cov: edges, ft: features), corpus size, peak RSS and crashes.
# Inputs that crash, leak or hang (> FUZZ_TIMEOUT s, default 10) are copied to
# fuzz/regressions/<target>/, which `cargo test -p cloak-fuzz` replays in the normal suite;
# the script then exits with status 1. Reuses the corpus of earlier runs (fuzz/corpus/).
#
# Stable toolchain only: cargo-fuzz needs no nightly with FUZZ_SANITIZER=none (the default:
# coverage instrumentation, debug assertions and overflow checks, all stable `-C` flags).
# AddressSanitizer (FUZZ_SANITIZER=address) needs `-Zsanitizer`, which a stable rustc accepts
# only with RUSTC_BOOTSTRAP=1; the script sets it then. The targets are safe Rust, so ASan
# adds little beyond the panics, overflows, hangs and huge allocations found without it.
# Environment: FUZZ_SANITIZER, FUZZ_TIMEOUT (s per input), FUZZ_RSS_MB (default 2048),
# FUZZ_NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
minutes=${1:-10}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
per_input=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-2048}
niceness=${FUZZ_NICE:-19}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz --version 0.13.2
fi
flags=(-O --debug-assertions -s "$sanitizer")
if [ "$sanitizer" != none ]; then export RUSTC_BOOTSTRAP=1; fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "== building ${targets[*]} (sanitizer: $sanitizer)"
(cd fuzz && nice -n "$niceness" cargo fuzz build "${flags[@]}")
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$triple/release

echo "== seed corpus (cloak's own writers)"
rm -rf fuzz/seeds
nice -n "$niceness" cargo run -q --locked -p cloak-fuzz --example write-seeds -- fuzz/seeds

mkdir -p fuzz/logs
summary=fuzz/logs/summary.tsv
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"
  log=fuzz/logs/$t.log
  echo "== $t: $minutes min"
  start=$(date +%s)
  set +e
  nice -n "$niceness" "$bin_dir/$t" \
    -max_total_time=$((minutes * 60)) -timeout="$per_input" -rss_limit_mb="$rss" \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    "fuzz/corpus/$t" "fuzz/seeds/$t" >"$log" 2>&1
  rc=$?
  set -e
  ran=$(( $(date +%s) - start ))
  # (A run that stops at once prints no status line: no grep below may end the script.)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rss_peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -aE '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=0
  for a in "fuzz/artifacts/$t"/*; do
    [ -e "$a" ] || continue
    crashes=$((crashes + 1))
    cp "$a" "fuzz/regressions/$t/"
  done
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "   FAILED (exit $rc, $crashes saved input(s) in fuzz/regressions/$t); see $log"
    grep -m5 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | sed 's/^/   /' || true
  fi
  printf '%s\t%s\t%.1f min\t%s execs\tcov %s\tft %s\tcorpus %s\tpeak %s MiB\t%s crash(es)\t%s\n' \
    "$(date -u +%FT%TZ)" "$t" "$(awk "BEGIN { print $ran / 60 }")" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "${rss_peak:-?}" "$crashes" "$sanitizer" | tee -a "$summary"
done
echo "== summary in $root/$summary"
exit $failed
