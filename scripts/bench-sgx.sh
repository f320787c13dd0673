#!/usr/bin/env bash
# Benchmarks of the SGX target, in one run:
#  1. MRENCLAVE of a 64 GiB non-EDMM enclave (≈16.7 M EADD records) with `cloak sgx mrenclave`;
#  2. `cloak convert --target sgx` of the copy benchmark's image, registry → registry, against
#     `skopeo copy` of the same image between the same two registries (fresh destination each
#     run, skopeo's blob-info cache cleared before each of its runs).
# RUNS runs each (default 5): median wall time, highest peak RSS of all runs.
# Prints Markdown tables. Usage: scripts/bench-sgx.sh [SIZE_MIB]; environment: RUNS, BENCH_DIR.
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
gramine_runtime_image "$bench/gramine-runtime"
rm -f "$bench"/*.samples

# 1. 64 GiB measurement
printf '[sgx]\nenclave_size = "64G"\nmax_threads = 8\n' > "$bench/big.manifest.sgx"
pal_dir=$(mktemp -d)
printf 'int d[1024] = {1}; int b[4096]; int e(void) { return d[0] + b[0]; }\n' > "$pal_dir/pal.c"
gcc -shared -fPIC -nostdlib -O1 -o "$pal_dir/libpal.so" "$pal_dir/pal.c"
for _ in $(seq 1 "$runs"); do
  measure mrenclave64 "$cloak" sgx mrenclave --manifest "$bench/big.manifest.sgx" --libpal "$pal_dir/libpal.so"
done
rm -rf "$pal_dir"

# 2. conversion vs copy
openssl genrsa -3 -out "$bench/enclave-key.pem" 3072 2>/dev/null
src=$(registry_start "$bench/reg-src")
skopeo copy --quiet --dest-tls-verify=false "oci:$image:bench" "docker://$src/bench/image:1"
for r in $(seq 1 "$runs"); do
  for tool in cloak skopeo; do
    rm -rf "$bench/reg-dst"
    dst=$(registry_start "$bench/reg-dst")
    if [ "$tool" = cloak ]; then
      measure cloak-sgx "$cloak" convert --target sgx --quiet --src-tls-verify=false --dest-tls-verify=false \
        --runtime-image "oci:$bench/gramine-runtime:1" --launcher "$launcher" \
        --signing-key "file:$bench/enclave-key.pem" "docker://$src/bench/image:1" "docker://$dst/bench/sgx:1"
    else
      skopeo_fresh
      measure skopeo-copy env HOME="$bench/home" skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
        "docker://$src/bench/image:1" "docker://$dst/bench/copy:1"
    fi
    registry_stop "$bench/reg-dst"
  done
done

read -r mw mr < <(stats "$bench/mrenclave64.samples")
read -r cw cr < <(stats "$bench/cloak-sgx.samples")
read -r sw sr < <(stats "$bench/skopeo-copy.samples")
echo
echo "CPU: $(cpu_model). $runs runs each; median wall time; highest peak RSS of all runs."
echo
echo "| benchmark | cloak wall (s) | peer | peer wall (s) | ratio | cloak max peak RSS (MiB) | peer max peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|"
awk -v w="$mw" -v r="$mr" 'BEGIN { printf "| MRENCLAVE, 64 GiB non-EDMM enclave, 8 threads | %.2f | no peer (goal 5 s) | - | - | %.1f | - |\n", w, r/1024 }'
awk -v cw="$cw" -v sw="$sw" -v cr="$cr" -v sr="$sr" -v m="$(( $(du -sb "$image/blobs" | cut -f1) >> 20 ))" \
  'BEGIN { printf "| convert --target sgx, %d MiB image, registry → registry | %.2f | skopeo copy | %.2f | %.2f | %.1f | %.1f |\n", m, cw, sw, cw/sw, cr/1024, sr/1024 }'
