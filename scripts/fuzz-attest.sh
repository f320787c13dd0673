#!/usr/bin/env bash
# Mutation-fuzz cloak-attest with the full counts: 100,000 mutated inputs per parser (quote,
# COSE/Nitro payload, RA-TLS certificate; certificate requests with their signature check) and
# 100,000 per kind through the whole verifier (signatures included), asserting no panic and no
# accept (about 40 minutes wall, 75 s of CPU, on the loaded 2-core build machine). The normal
# test suite runs the parsers at 100,000 too but the verifiers at 500 per kind.
# Usage: scripts/fuzz-attest.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
CLOAK_ATTEST_FUZZ_PARSE="$n" CLOAK_ATTEST_FUZZ_VERIFY="$n" \
  cargo test -p cloak-attest --lib fuzz -- --nocapture
