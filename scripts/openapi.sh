#!/usr/bin/env bash
# Regenerate docs/openapi.json from the code (the manager serves the same document at
# /openapi.json; a test fails when the two differ).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked -p cloak-cli -- manager openapi > docs/openapi.json
echo "wrote docs/openapi.json"
