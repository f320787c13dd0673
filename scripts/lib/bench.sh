# Shared by the benchmark scripts (source after `cd` to the repository root).

# bench_setup: build cloak (release) and the static launcher; sets $root, $cloak, $launcher,
# $bench (cache and samples directory; BENCH_DIR overrides) and $runs (RUNS overrides, default 5).
bench_setup() {
  root=$PWD
  runs=${RUNS:-5}
  bench=${BENCH_DIR:-$root/.work/bench}
  mkdir -p "$bench"
  cargo build --release --locked -p cloak-cli >/dev/null
  launcher=$(bash scripts/build-launcher.sh)
  cloak="$root/target/release/cloak"
}

# skopeo_fresh: forget everything skopeo remembers between runs, so that every skopeo run starts
# cold like every cloak run. As root, skopeo keeps its blob-info cache (which blobs a registry
# already has, which compressed digest belongs to which uncompressed one) in
# /var/lib/containers/cache, whatever HOME is; otherwise under $HOME/.local/share. With that cache
# warm, skopeo skips or reorders work and looks faster (or slower) than a first copy is.
# Run it before every measured skopeo command.
skopeo_fresh() {
  rm -rf "$bench/home"
  mkdir -p "$bench/home"
  if [ "$(id -u)" -eq 0 ]; then
    rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
  fi
}

# measure LABEL CMD...: run CMD under GNU time, append "wall_seconds peak_rss_kib" to
# LABEL.samples; CMD's stdout is kept in LABEL.out (the last run's).
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$bench/$label.last" "$@" >"$bench/$label.out"
  cat "$bench/$label.last" >> "$bench/$label.samples"
}

# median_wall FILE: the median wall time of the samples.
median_wall() { sort -n -k1 "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# max_rss FILE: the highest peak RSS (KiB) of all samples (not the median run's).
max_rss() { sort -n -k2 "$1" | awk 'END {print $2}'; }

# stats FILE: "median_wall max_rss_kib" of the samples.
stats() { echo "$(median_wall "$1") $(max_rss "$1")"; }

# cpu_model: the CPU's model name and whether it has AVX-512VL and SHA-NI (which decide cloak's
# hashing paths: the PCRs' SHA-384 engine, and SHA-256 of blobs).
cpu_model() {
  local model flags
  model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  flags=$(awk -F': ' '/^flags/ {print $2; exit}' /proc/cpuinfo)
  printf '%s, %s vCPUs' "$model" "$(nproc)"
  for f in avx512vl sha_ni; do
    case " $flags " in *" $f "*) printf ', %s' "$f";; *) printf ', no %s' "$f";; esac
  done
  echo
}
