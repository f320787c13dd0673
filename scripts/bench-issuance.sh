#!/usr/bin/env bash
# Benchmark: attested certificate issuance over HTTP against its in-process ceiling, in one run
# (crates/cloak-manager/examples/bench_issuance.rs). The manager runs in-process on SQLite with
# its clock injected inside each vector's window (the vectors' collateral and chains have
# expired; no production flag changes time); wrk (Debian) POSTs /v1/certificates over HTTPS with
# 16 connections for SECONDS (10); the ceiling is the same verification + binding check +
# extension + P-384 signature in-process on every core, no HTTP, no database.
# Cases: the Gramine RA-TLS certificate (DCAP quote inside, collateral from the database cache)
# and a real Nitro document: the vectors that bind a key (the raw DCAP quote vectors bind
# "Hello, world!" and cannot get a certificate).
# Prints a Markdown table: certs/s, p50/p99, non-2xx, ceiling, ratio; and the peak RSS.
# Usage: scripts/bench-issuance.sh [SECONDS]; BENCH_PROFILE=release (default) or dev.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
profile=${BENCH_PROFILE:-release}
command -v wrk >/dev/null || { echo "wrk is missing: run scripts/install-deps.sh" >&2; exit 2; }
cargo build --quiet --locked --profile "$profile" -p cloak-manager --example bench_issuance
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
echo "profile $profile, $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/$dir/examples/bench_issuance" crates/cloak-attest/tests/vectors "$secs"
