#!/usr/bin/env bash
# Benchmark: `cloak copy` against `skopeo copy` on the same multi-layer image (default 640 MiB of files, ~480 MiB of gzip blobs), in one run:
# registry→registry (two separate registries, so nothing can be mounted) and registry→OCI layout.
# Each case runs RUNS times (default 5) alternating the two tools, skopeo's blob-info cache
# cleared before each of its runs; the median wall time and the highest peak RSS of all runs
# (GNU time) are printed with the cloak/skopeo ratio, as a Markdown table.
# Usage: scripts/bench-copy.sh [SIZE_MIB] ; environment: RUNS, BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-640}
source scripts/lib/registry.sh
source scripts/lib/images.sh
source scripts/lib/bench.sh
trap 'registry_stop "$bench"/reg-*' EXIT
bench_setup
image="$bench/image-${size_mib}m"

bench_image "$image" "$size_mib"

src=$(registry_start "$bench/reg-src")
skopeo copy --quiet --dest-tls-verify=false "oci:$image:bench" "docker://$src/bench/image:1"
blob_bytes=$(du -sb "$image/blobs" | cut -f1)


rm -f "$bench"/*.samples
for r in $(seq 1 "$runs"); do
  # Fresh destinations for every run; skopeo starts without its blob-info cache.
  for tool in cloak skopeo; do
    rm -rf "$bench/reg-dst" "$bench/oci-dst"
    dst=$(registry_start "$bench/reg-dst")
    if [ "$tool" = cloak ]; then
      measure cloak-r2r "$cloak" copy --quiet --src-tls-verify=false --dest-tls-verify=false \
        "docker://$src/bench/image:1" "docker://$dst/bench/copy:1"
      measure cloak-r2o "$cloak" copy --quiet --src-tls-verify=false \
        "docker://$src/bench/image:1" "oci:$bench/oci-dst:1"
    else
      skopeo_fresh
      measure skopeo-r2r env HOME="$bench/home" skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
        "docker://$src/bench/image:1" "docker://$dst/bench/copy:1"
      skopeo_fresh
      measure skopeo-r2o env HOME="$bench/home" skopeo copy --quiet --src-tls-verify=false \
        "docker://$src/bench/image:1" "oci:$bench/oci-dst:1"
    fi
    registry_stop "$bench/reg-dst"
  done
done

echo
echo "Image: $(( blob_bytes >> 20 )) MiB of blobs in 5 layers (3/4 random, 1/4 text), $runs runs each, median wall time, highest peak RSS of all runs. CPU: $(cpu_model)."
echo
echo "| case | cloak wall (s) | skopeo wall (s) | ratio cloak/skopeo | cloak max peak RSS (MiB) | skopeo max peak RSS (MiB) |"
echo "|---|---|---|---|---|---|"
for case in r2r r2o; do
  read -r cw cr < <(stats "$bench/cloak-$case.samples")
  read -r sw sr < <(stats "$bench/skopeo-$case.samples")
  name=$([ $case = r2r ] && echo "registry → registry" || echo "registry → OCI layout")
  awk -v n="$name" -v cw="$cw" -v sw="$sw" -v cr="$cr" -v sr="$sr" \
    'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %.1f | %.1f |\n", n, cw, sw, cw/sw, cr/1024, sr/1024 }'
done
