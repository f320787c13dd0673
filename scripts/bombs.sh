#!/usr/bin/env bash
# Resource bounds: each hostile layer of scripts/lib/hostile_layers.py (built with --big, so
# the bombs carry their data) goes through `cloak ls-files` and `cloak convert --target nitro`
# under GNU time; prints, as a Markdown table, how each run ended (exit status and the limit
# named), its wall time and cloak's peak RSS. Goal: peak RSS under 128 MiB, bounded time.
# Usage: scripts/bombs.sh [KIND...] ; environment: CLOAK (binary; default: release build),
# BENCH_DIR (where the bombs are built, default .work/bombs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${BENCH_DIR:-$root/.work/bombs}
mkdir -p "$dir"
if [ -z "${CLOAK:-}" ]; then
  cargo build --release --locked -p cloak-cli >/dev/null
  CLOAK=$root/target/release/cloak
fi
kernel=$root/.work/kernel/vmlinuz
[ -f "$kernel" ] || bash scripts/fetch-kernel.sh >/dev/null
kinds=("$@")
if [ ${#kinds[@]} -eq 0 ]; then
  kinds=(deep-path long-path huge-gnu-long-name huge-pax-record many-opaque-markers
         many-whiteouts-deep many-entries)
fi

echo "| bomb | blob size | command | result | wall s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for kind in "${kinds[@]}"; do
  image="$dir/$kind"
  if [ ! -f "$image/index.json" ]; then
    rm -rf "$image"
    python3 scripts/lib/hostile_layers.py "$kind" "$image" --big
  fi
  blobs=$(find "$image/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}' | numfmt --to=iec)
  for cmd in ls-files nitro; do
    case $cmd in
      ls-files) args=(ls-files "oci:$image:1") ;;
      nitro) args=(convert --target nitro --quiet --kernel "$kernel" --eif "$dir/out.eif"
                   "oci:$image:1" -) ;;
    esac
    status=0
    /usr/bin/time -f "%e %M" -o "$dir/time" "$CLOAK" "${args[@]}" >/dev/null 2>"$dir/err" || status=$?
    rm -f "$dir/out.eif"
    read -r wall rss < <(tail -1 "$dir/time")
    if [ "$status" -eq 0 ]; then
      result="processed"
    else
      # The limit or reason cloak named, without the layer digest.
      result="exit $status: $(tail -1 "$dir/err" | sed -e 's/.*layer sha256:[0-9a-f]*: //' \
        -e 's/^entry .*… ([0-9]* bytes) /entry … /' | cut -c1-100)"
    fi
    printf '| %s | %s | %s | %s | %s | %d |\n' "$kind" "$blobs" "$cmd" "$result" "$wall" "$((rss / 1024))"
  done
done
