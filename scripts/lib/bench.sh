# Shared by the benchmark scripts (source after `cd` to the repository root).

# bench_setup: build cloak (release) and the static launcher; sets $root, $cloak, $launcher,
# $bench (cache and samples directory; BENCH_DIR overrides) and $runs (RUNS overrides).
bench_setup() {
  root=$PWD
  runs=${RUNS:-3}
  bench=${BENCH_DIR:-$root/.work/bench}
  mkdir -p "$bench"
  cargo build --release --locked -p cloak-cli >/dev/null
  launcher=$(bash scripts/build-launcher.sh)
  cloak="$root/target/release/cloak"
}

# measure LABEL CMD...: run CMD under GNU time, append "wall_seconds peak_rss_kib" to LABEL.samples.
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$bench/$label.last" "$@" >/dev/null
  cat "$bench/$label.last" >> "$bench/$label.samples"
}

# median FILE: the sample with the median wall time.
median() { sort -n -k1 "$1" | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
