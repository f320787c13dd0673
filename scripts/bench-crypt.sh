#!/usr/bin/env bash
# Benchmark: `cloak encrypt` / `cloak decrypt` against `skopeo copy --encryption-key` /
# `--decryption-key` on the same ~1 GiB multi-layer image (OCI layout → OCI layout, JWE with
# an RSA-2048 recipient), in one run. Each case runs RUNS times (default 5) alternating the
# tools (skopeo's blob-info cache cleared before each of its runs); the median wall time, the
# throughput (MiB of layer blobs per second), the cloak/skopeo throughput ratio and the highest
# peak RSS of all runs (GNU time) are printed as a Markdown table.
# Both decryptions start from the same cloak-encrypted image; cloak's also decompresses every
# layer to check it against the config's diff_ids, skopeo's does not.
# Usage: scripts/bench-crypt.sh [SIZE_MIB] ; environment: RUNS, BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
source scripts/lib/images.sh
source scripts/lib/bench.sh
bench_setup
image="$bench/image-${size_mib}m"
bench_image "$image" "$size_mib"
keys="$bench/crypt-keys"
mkdir -p "$keys"
[ -f "$keys/rsa.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa.pem" 2>/dev/null
openssl pkey -in "$keys/rsa.pem" -pubout -out "$keys/rsa.pub"
blob_bytes=$(du -sb "$image/blobs" | cut -f1)
enc="$bench/crypt-enc"
rm -rf "$enc"
"$cloak" encrypt --quiet --recipient "jwe:$keys/rsa.pub" "oci:$image:bench" "oci:$enc:1" >/dev/null

rm -f "$bench"/*.samples
for r in $(seq 1 "$runs"); do
  for tool in cloak skopeo; do
    rm -rf "$bench/crypt-out"
    if [ "$tool" = cloak ]; then
      measure cloak-encrypt "$cloak" encrypt --quiet --recipient "jwe:$keys/rsa.pub" "oci:$image:bench" "oci:$bench/crypt-out:1"
      rm -rf "$bench/crypt-out"
      measure cloak-decrypt "$cloak" decrypt --quiet --key "$keys/rsa.pem" "oci:$enc:1" "oci:$bench/crypt-out:1"
    else
      skopeo_fresh
      measure skopeo-encrypt env HOME="$bench/home" skopeo copy --quiet --encryption-key "jwe:$keys/rsa.pub" "oci:$image:bench" "oci:$bench/crypt-out:1"
      rm -rf "$bench/crypt-out"
      skopeo_fresh
      measure skopeo-decrypt env HOME="$bench/home" skopeo copy --quiet --decryption-key "$keys/rsa.pem" "oci:$enc:1" "oci:$bench/crypt-out:1"
    fi
  done
done
rm -rf "$bench/crypt-out"

echo
echo "Image: $(( blob_bytes >> 20 )) MiB of blobs in 5 layers (3/4 random, 1/4 text), OCI layout → OCI layout, $runs runs each, median wall time, highest peak RSS of all runs. CPU: $(cpu_model)."
echo
echo "| case | cloak wall (s) | skopeo wall (s) | cloak MiB/s | skopeo MiB/s | throughput cloak/skopeo | cloak max peak RSS (MiB) | skopeo max peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|---|"
for case in encrypt decrypt; do
  read -r cw cr < <(stats "$bench/cloak-$case.samples")
  read -r sw sr < <(stats "$bench/skopeo-$case.samples")
  awk -v n="$case" -v cw="$cw" -v sw="$sw" -v cr="$cr" -v sr="$sr" -v b="$blob_bytes" \
    'BEGIN { m = b / 1048576; printf "| %s | %.2f | %.2f | %.0f | %.0f | %.2f× | %.1f | %.1f |\n", n, cw, sw, m/cw, m/sw, sw/cw, cr/1024, sr/1024 }'
done
