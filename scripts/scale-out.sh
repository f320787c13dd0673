#!/usr/bin/env bash
# Scale-out under faults and the load benchmark (crates/cloak-cli/tests/scale_out.rs): a real
# PostgreSQL, three `cloak manager serve --workers 0` replicas behind Debian's HAProxy
# round-robin, two `cloak manager worker` processes converting jobs the load submits (against a
# real docker-registry), SIGKILLs of replicas and of a worker (mid-conversion) at random times
# and one PostgreSQL restart, then the checks (every 2xx reflected in the database, no build
# twice, exact quorum counts, every job ended exactly once with one build and one tag per
# success and none otherwise, audit verify), with the counts printed.
#
# Usage: scripts/scale-out.sh [short|full|bench]
#   short  the bounded run the test suite also does (`cargo test` runs it)
#   full   CLOAK_SCALE_OUT_SECONDS (120) of load and faults, 8 clients
#   bench  requests/s and p99 of build reads, registrations and issuance with 1 and 3 replicas
#          (both up at once; a BENCH_WARMUP_SECONDS=2 warm-up per case, then BENCH_RUNS=3
#          rounds alternating 1 and 3 replicas, BENCH_SECONDS=5 per case, BENCH_CLIENTS=8):
#          medians, min-max, ratios, CPU of PostgreSQL vs the replicas, peak RSS
# CLOAK_BIN: the `cloak` the replicas run (default for full/bench: the static release binary
# of scripts/build-manager-image.sh, built if missing; short: the test build's).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-short}
for tool in haproxy runuser; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 2; }
done
case $mode in
  short) unset CLOAK_SCALE_OUT ;;
  full|bench)
    export CLOAK_SCALE_OUT=$mode
    if [ -z "${CLOAK_BIN:-}" ]; then
      CLOAK_BIN=$PWD/target/static/x86_64-unknown-linux-gnu/release/cloak
      [ -x "$CLOAK_BIN" ] || bash scripts/build-manager-image.sh >/dev/null
    fi
    export CLOAK_BIN ;;
  *) echo "usage: $0 [short|full|bench]" >&2; exit 2 ;;
esac
cargo test --quiet --locked -p cloak-cli --test scale_out -- --nocapture
