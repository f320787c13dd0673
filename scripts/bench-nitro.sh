#!/usr/bin/env bash
# Benchmark: `cloak convert --target nitro` of a ~1 GiB image into an EIF, against `skopeo copy`
# of the same image from the same registry to an OCI layout, in one run. Prints a Markdown row
# with both wall times, the ratio and both peak RSS. Usage: scripts/bench-nitro.sh [SIZE_MIB]
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
for _ in $(seq 1 "$runs"); do
  rm -rf "$bench/nitro.eif" "$bench/oci-dst" "$bench/home"; mkdir -p "$bench/home"
  measure nitro-cloak "$cloak" convert --target nitro --quiet --src-tls-verify=false \
    --kernel "$kernel" --launcher "$launcher" --eif "$bench/nitro.eif" "docker://$src/bench/image:1" -
  measure nitro-skopeo env HOME="$bench/home" skopeo copy --quiet --src-tls-verify=false \
    "docker://$src/bench/image:1" "oci:$bench/oci-dst:1"
done
read -r cw cr < <(median "$bench/nitro-cloak.samples")
read -r sw sr < <(median "$bench/nitro-skopeo.samples")
eif_mib=$(( $(stat -c %s "$bench/nitro.eif") >> 20 ))
blobs_mib=$(( $(du -sb "$image/blobs" | cut -f1) >> 20 ))
echo
echo "| benchmark | cloak wall (s) | peer | peer wall (s) | ratio | cloak peak RSS (MiB) | peer peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|"
awk -v cw="$cw" -v sw="$sw" -v cr="$cr" -v sr="$sr" -v b="$blobs_mib" -v e="$eif_mib" -v f="$size_mib" \
  'BEGIN { printf "| convert --target nitro, %d MiB of files (%d MiB blobs) → %d MiB EIF | %.2f | skopeo copy → OCI layout | %.2f | %.2f | %.1f | %.1f |\n", f, b, e, cw, sw, cw/sw, cr/1024, sr/1024 }'
