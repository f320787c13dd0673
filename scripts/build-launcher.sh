#!/usr/bin/env bash
# Build the static cloak-launcher (glibc, crt-static; no musl toolchain is needed) and print its
# path. An explicit --target keeps these RUSTFLAGS away from host artefacts (proc-macros).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static -C debuginfo=0 -C strip=symbols" cargo build --quiet --release --locked \
  -p cloak-launcher --target x86_64-unknown-linux-gnu >&2
echo "$PWD/target/x86_64-unknown-linux-gnu/release/cloak-launcher"
