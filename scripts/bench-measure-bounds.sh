#!/usr/bin/env bash
# The cost of the largest enclave `cloak measure` accepts, and of the refusal above it: MRENCLAVE
# of a non-EDMM manifest with sgx.enclave_size = "1024G" (every heap page is an EADD record:
# 16 GiB of SHA-256 input, the worst case) and of one naming 2^62 bytes (refused before any
# hashing), under GNU time (wall seconds, peak RSS). The PAL is a small shared object built with
# gcc, as in the test fixtures. Usage: scripts/bench-measure-bounds.sh [CLOAK]
set -euo pipefail
cd "$(dirname "$0")/.."
cloak="${1:-target/release/cloak}"
[ -x "$cloak" ] || { echo "no $cloak: cargo build --release -p cloak-cli, or pass the binary" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo 'int pal_data[1024] = {1}; int pal_entry(void) { return pal_data[0]; }' > "$work/pal.c"
gcc -shared -fPIC -O2 -o "$work/libpal.so" "$work/pal.c"
printf '[sgx]\nenclave_size = "1024G"\nmax_threads = 4\n' > "$work/max.manifest.sgx"
printf '[sgx]\nenclave_size = "0x4000000000000000"\n' > "$work/huge.manifest.sgx"
echo "| manifest | result | wall s | peak RSS MiB |"
echo "|---|---|---|---|"
for m in max huge; do
  set +e
  /usr/bin/time -f '%e %M' -o "$work/time" "$cloak" sgx mrenclave --manifest "$work/$m.manifest.sgx" \
    --libpal "$work/libpal.so" > "$work/out" 2> "$work/err"
  rc=$?
  set -e
  read -r secs kib < <(tail -n 1 "$work/time")
  if [ "$rc" = 0 ]; then result="measured"; else result="refused: $(grep -o 'exceeds 1024G' "$work/err" || cat "$work/err")"; fi
  echo "| $m | $result | $secs | $(( kib / 1024 )) |"
done
