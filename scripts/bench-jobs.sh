#!/usr/bin/env bash
# Conversion through the manager (an asynchronous job, polled as a client would) against
# `cloak convert` of the same image in the same run: SGX, registry → registry, a fresh
# destination registry for each conversion. The job runs in a separate `cloak manager worker`
# process (the API in `cloak manager serve --workers 0`, SQLite); its wall time runs from the
# POST to the poll that sees SUCCEEDED, its peak RSS is the worker process's (GNU time).
# Goal (issue 12): ≤ 5 % more wall time, worker peak RSS ≤ the CLI's + 32 MiB.
# Prints a Markdown table. Usage: scripts/bench-jobs.sh [SIZE_MIB]; environment: RUNS,
# BENCH_DIR, PROFILE (release, the default, or debug: both sides use the same build).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-500}
profile=${PROFILE:-release}
source scripts/lib/registry.sh
source scripts/lib/images.sh
root=$PWD
runs=${RUNS:-3}
bench=${BENCH_DIR:-$root/.work/bench}
mkdir -p "$bench"
if [ "$profile" = release ]; then
  cargo build --release --locked -p cloak-cli >/dev/null
else
  cargo build --locked -p cloak-cli >/dev/null
fi
cloak="$root/target/$profile/cloak"
launcher=$(bash scripts/build-launcher.sh)
mgr="$bench/jobs-manager"
cleanup() {
  [ -n "${manager_pid:-}" ] && kill "$manager_pid" 2>/dev/null || true
  [ -n "${worker_pid:-}" ] && pkill -TERM -P "$worker_pid" 2>/dev/null || true
  registry_stop "$bench"/reg-*
  rm -rf "$mgr" "$bench/reg-dst"
}
trap cleanup EXIT

image="$bench/image-${size_mib}m"
bench_image "$image" "$size_mib"
gramine_runtime_image "$bench/gramine-runtime"
[ -f "$bench/enclave-key.pem" ] || openssl genrsa -3 -out "$bench/enclave-key.pem" 3072 2>/dev/null
rm -f "$bench"/jobs-*.samples
src=$(registry_start "$bench/reg-src")
skopeo copy --quiet --dest-tls-verify=false "oci:$image:bench" "docker://$src/bench/image:1"

# The API: plain HTTP on loopback, no workers of its own.
rm -rf "$mgr"
mkdir -p "$mgr"
chmod 700 "$mgr"
password=bench-admin-password-1
: > "$mgr/serve.log"
CLOAK_ADMIN_PASSWORD=$password "$cloak" manager serve --insecure-http --listen 127.0.0.1:0 \
  --data-dir "$mgr/data" --workers 0 --max-jobs-per-account 1000 > /dev/null 2> "$mgr/serve.log" &
manager_pid=$!
for _ in $(seq 1 200); do
  url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$mgr/serve.log" | head -1)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "the manager did not start; see $mgr/serve.log" >&2; exit 1; }
token=$(curl -fsS -X POST -u "admin:$password" "$url/v1/sys/auth" | jq -r .access_token)

for r in $(seq 1 "$runs"); do
  for tool in cli job; do
    rm -rf "$bench/reg-dst"
    dst=$(registry_start "$bench/reg-dst")
    if [ "$tool" = cli ]; then
      /usr/bin/time -f "%e %M" -o "$bench/jobs-cli.last" "$cloak" convert --target sgx --quiet \
        --src-tls-verify=false --dest-tls-verify=false --isvsvn "$r" \
        --runtime-image "oci:$bench/gramine-runtime:1" --launcher "$launcher" \
        --signing-key "file:$bench/enclave-key.pem" \
        "docker://$src/bench/image:1" "docker://$dst/bench/sgx:1" > /dev/null
      cat "$bench/jobs-cli.last" >> "$bench/jobs-cli.samples"
    else
: > "$mgr/worker.log"
      /usr/bin/time -f "%M" -o "$bench/jobs-worker.rss" "$cloak" manager worker --workers 1 \
        --data-dir "$mgr/data" --sgx-runtime-image "oci:$bench/gramine-runtime:1" \
        --launcher "$launcher" --sgx-signing-key "file:$bench/enclave-key.pem" \
        --insecure-registry "$src" --insecure-registry "$dst" 2> "$mgr/worker.log" &
      worker_pid=$!
      # The worker is up once it says so; the clock starts at the POST.
      for _ in $(seq 1 200); do
        grep -q "conversion worker(s) running" "$mgr/worker.log" && break
        sleep 0.05
      done
      start=$(date +%s.%N)
      job=$(curl -fsS -X POST "$url/convert-image" -H "Authorization: Bearer $token" \
        -H 'Prefer: respond-async' -H 'Content-Type: application/json' \
        -d "{\"inputImageName\": \"$src/bench/image:1\", \"outputImageName\": \"$dst/bench/sgx:1\", \"isvsvn\": $((100 + r))}" |
        jq -r .job_id)
      while :; do
        state=$(curl -fsS "$url/v1/jobs/$job" -H "Authorization: Bearer $token" | jq -r .state)
        case $state in
          SUCCEEDED) break ;;
          FAILED|CANCELLED)
            curl -fsS "$url/v1/jobs/$job" -H "Authorization: Bearer $token" >&2
            exit 1 ;;
        esac
        sleep 0.2
      done
      end=$(date +%s.%N)
      # SIGTERM to the worker itself (GNU time's child): time then writes its numbers.
      pkill -TERM -P "$worker_pid"
      wait "$worker_pid" || true
      worker_pid=
      echo "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }') $(tail -1 "$bench/jobs-worker.rss")" \
        >> "$bench/jobs-job.samples"
    fi
    registry_stop "$bench/reg-dst"
  done
done

median() { sort -n -k1 "$1" | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
read -r cw cr < <(median "$bench/jobs-cli.samples")
read -r jw jr < <(median "$bench/jobs-job.samples")
echo
echo "samples (wall s, peak RSS KiB): cli: $(tr '\n' ';' < "$bench/jobs-cli.samples") job: $(tr '\n' ';' < "$bench/jobs-job.samples")"
echo
echo "| benchmark ($profile build) | manager job wall (s) | cloak convert wall (s) | ratio | worker peak RSS (MiB) | CLI peak RSS (MiB) | RSS difference (MiB) |"
echo "|---|---|---|---|---|---|---|"
awk -v jw="$jw" -v cw="$cw" -v jr="$jr" -v cr="$cr" -v m="$(( $(du -sb "$image/blobs" | cut -f1) >> 20 ))" \
  'BEGIN { printf "| SGX, %d MiB image, registry → registry, median of %d | %.2f | %.2f | %.3f | %.1f | %.1f | %+.1f |\n", m, '"$runs"', jw, cw, jw/cw, jr/1024, cr/1024, (jr-cr)/1024 }'
