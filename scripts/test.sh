#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace (unit tests and the
# end-to-end suites against a real registry, skopeo and umoci), then the API fuzzer against a real
# manager. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; start=$(date +%s); }
done_step() { echo "   ($(( $(date +%s) - start )) s)"; }

step "installing test dependencies"; bash scripts/install-deps.sh; done_step
step "cargo fmt --check"; cargo fmt --all --check; done_step
step "cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings; done_step
step "static launcher (used by conversion and launcher tests)"; bash scripts/build-launcher.sh; done_step
step "kernel for Nitro boot tests (Debian cloud kernel)"; bash scripts/fetch-kernel.sh; done_step
step "EIF oracle (aws-nitro-enclaves-image-format, own lock file)"
cargo build --release --quiet --locked --manifest-path tools/eif-oracle/Cargo.toml; done_step
step "NSM oracle (aws-nitro-enclaves-nsm-api, own lock file)"
cargo build --release --quiet --locked --manifest-path tools/nsm-oracle/Cargo.toml; done_step
# Tests whose path depends on the CPU or the host (AVX-512VL, O_DIRECT, ...) append one line per
# path to this file: "tested" or "NOT TESTED", the path, why. Summarised below, pass or fail.
export CLOAK_TEST_PATHS; CLOAK_TEST_PATHS=$(mktemp); : >"$CLOAK_TEST_PATHS"
paths_summary() {
  printf '\n== CPU- and host-specific paths (%s tested, %s NOT tested)\n' \
    "$(sort -u "$CLOAK_TEST_PATHS" | grep -c '^tested' || true)" \
    "$(sort -u "$CLOAK_TEST_PATHS" | grep -c '^NOT TESTED' || true)"
  sort -u "$CLOAK_TEST_PATHS" | sed 's/^/   /'
  rm -f "$CLOAK_TEST_PATHS"
}
trap paths_summary EXIT
step "cargo test"; cargo test --workspace --locked; done_step
# After the tests, not beside them: its second `podman kube play` publishes the port of the
# first again, and a test running beside it once took that port in between.
step "deployment: kustomize renders, reproducible manager image, podman kube play"; CLOAK_STATIC_PROFILE=static-test bash scripts/deploy-test.sh; done_step
step "schemathesis against the manager's /openapi.json (bounded)"; bash scripts/schemathesis.sh; done_step
