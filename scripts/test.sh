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
step "cargo test: build"; cargo test --workspace --locked --no-run; done_step
# The deployment test (its own static build in target/static, then podman) runs beside the test
# binaries: both spend much of their time waiting (qemu, registries, podman), and one after the
# other they took most of CI's budget. Its output is printed when it ends.
deploy_log=$(mktemp); deploy_rc=$(mktemp)
( set +e; CLOAK_STATIC_PROFILE=static-test bash scripts/deploy-test.sh >"$deploy_log" 2>&1
  echo $? >"$deploy_rc" ) &
deploy_pid=$!
step "cargo test (beside it: the deployment test)"
test_rc=0; cargo test --workspace --locked || test_rc=$?; done_step
step "deployment: kustomize renders, reproducible manager image, podman kube play"
wait "$deploy_pid" || true
cat "$deploy_log"; rc=$(cat "$deploy_rc" 2>/dev/null); rc=${rc:-1}; rm -f "$deploy_log" "$deploy_rc"
echo "   (deployment test exit status $rc)"
[ "$test_rc" -eq 0 ] || { echo "cargo test failed (exit $test_rc)" >&2; exit "$test_rc"; }
[ "$rc" -eq 0 ] || { echo "the deployment test failed (exit $rc)" >&2; exit "$rc"; }
step "schemathesis against the manager's /openapi.json (bounded)"; bash scripts/schemathesis.sh; done_step
