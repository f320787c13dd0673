#!/usr/bin/env bash
# Benchmark (a script, not a test): the launcher's start-up overhead in simulated mode against
# the manager's own issuance time, in one run, with the manager in-process on a loopback port
# (SQLite); and RSA-3072 key generation on its own. See crates/cloak-cli/examples/bench_launcher.rs.
# Goal (issue 14): overhead <= 50 ms beyond issuance with an EC key.
# Usage: scripts/bench-launcher.sh ; environment: RUNS (30), BENCH_PROFILE (release, the
# default, or dev: dependencies optimised at opt-level 2, cloak's own crates not).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked --profile "${BENCH_PROFILE:-release}" -p cloak-cli --example bench_launcher
