#!/usr/bin/env bash
# Benchmark: `cloak convert --target nitro` of a ~1 GiB image into an EIF, against `skopeo copy`
# of the same image from the same registry to an OCI layout, in one run, alternating the tools.
# On a CPU with AVX-512VL cloak runs twice per round: with its default engine for the PCRs'
# SHA-384 (two lanes of AVX-512VL) and with CLOAK_NO_AVX512=1 (ring's SHA-384 on two threads).
# skopeo's blob-info cache is cleared before each of its runs (skopeo_fresh). Prints Markdown
# rows: median wall times of RUNS (default 5) runs, their ratio, the highest peak RSS of all
# runs, the engine as cloak's report names it, and the CPU.
# Usage: scripts/bench-nitro.sh [SIZE_MIB]; environment: RUNS, BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1280}
source scripts/lib/registry.sh
source scripts/lib/images.sh
source scripts/lib/bench.sh
trap 'registry_stop "$bench"/reg-*' EXIT
bench_setup
kernel=$(bash scripts/fetch-kernel.sh)
image="$bench/image-${size_mib}m"
bench_image "$image" "$size_mib"
rm -f "$bench"/nitro-*.samples
src=$(registry_start "$bench/reg-src")
skopeo copy --quiet --dest-tls-verify=false "oci:$image:bench" "docker://$src/bench/image:1"
engines=(default)
grep -qw avx512vl /proc/cpuinfo && engines+=(ring)
for _ in $(seq 1 "$runs"); do
  for engine in "${engines[@]}"; do
    rm -f "$bench/nitro.eif"
    if [ "$engine" = ring ]; then e=(env CLOAK_NO_AVX512=1); else e=(env); fi
    measure "nitro-cloak-$engine" "${e[@]}" "$cloak" convert --target nitro --quiet --src-tls-verify=false \
      --kernel "$kernel" --launcher "$launcher" --eif "$bench/nitro.eif" "docker://$src/bench/image:1" -
  done
  rm -rf "$bench/oci-dst"; skopeo_fresh
  measure nitro-skopeo env HOME="$bench/home" skopeo copy --quiet --src-tls-verify=false \
    "docker://$src/bench/image:1" "oci:$bench/oci-dst:1"
done
read -r sw sr < <(stats "$bench/nitro-skopeo.samples")
eif_mib=$(( $(stat -c %s "$bench/nitro.eif") >> 20 ))
blobs_mib=$(( $(du -sb "$image/blobs" | cut -f1) >> 20 ))
echo
echo "CPU: $(cpu_model). $runs runs each; median wall time; highest peak RSS of all runs."
echo
echo "| benchmark | PCR engine | cloak wall (s) | peer | peer wall (s) | ratio | cloak max peak RSS (MiB) | peer max peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|---|"
for engine in "${engines[@]}"; do
  read -r cw cr < <(stats "$bench/nitro-cloak-$engine.samples")
  name=$(jq -r .pcr_engine "$bench/nitro-cloak-$engine.out")
  awk -v cw="$cw" -v sw="$sw" -v cr="$cr" -v sr="$sr" -v b="$blobs_mib" -v e="$eif_mib" -v f="$size_mib" -v n="$name" \
    'BEGIN { printf "| convert --target nitro, %d MiB of files (%d MiB blobs) → %d MiB EIF | %s | %.2f | skopeo copy → OCI layout | %.2f | %.2f | %.1f | %.1f |\n", f, b, e, n, cw, sw, cw/sw, cr/1024, sr/1024 }'
done
