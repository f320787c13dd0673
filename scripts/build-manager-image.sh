#!/usr/bin/env bash
# Build the manager's container image with cloak itself (no Docker, no base image):
#   the static `cloak` binary (glibc, crt-static, as scripts/build-launcher.sh builds the
#   launcher), Debian's CA bundle, /etc/passwd and /etc/group with the non-root user
#   cloak (65532), a data directory it owns, entrypoint `cloak manager serve`, and OCI labels
#   with the version and the source revision.
#
# Usage: [CLOAK_STATIC_BIN=path/to/static/cloak] scripts/build-manager-image.sh [DESTINATION]
#   DESTINATION: oci:DIR[:TAG] (default oci:target/manager-image:VERSION) or docker://HOST/REPO:TAG
#   (extra `cloak assemble` flags, e.g. --dest-tls-verify=false, in $CLOAK_ASSEMBLE_FLAGS).
# Prints the image digest on stdout.
#
# Reproducible: the layer is written sorted with mtime = the commit's time (SOURCE_DATE_EPOCH),
# without gzip timestamps, and the binary is built with the source paths remapped, so the same
# commit, toolchain and CA bundle give the same digest (tested by scripts/deploy-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
repository=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD)
# A build from a modified tree must not claim to be the commit.
git diff --quiet HEAD -- 2>/dev/null || revision="$revision-dirty"
dest=${1:-oci:$root/target/manager-image:$version}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

# CLOAK_STATIC_PROFILE: the cargo profile of the static build (release; the test suite uses
# static-test, which compiles in a third of the time and makes the same image bytes for a given
# binary: reproducibility is a property of the assembly, checked by building twice).
profile=${CLOAK_STATIC_PROFILE:-release}
if [ -n "${CLOAK_STATIC_BIN:-}" ]; then
  # A static `cloak` built before (CI artefact): assembled as given.
  bin=$CLOAK_STATIC_BIN
else
  # A target dir of its own: these RUSTFLAGS would otherwise rebuild the launcher's dependencies.
  export CARGO_TARGET_DIR=$root/target/static
  RUSTFLAGS="-C target-feature=+crt-static -C debuginfo=0 -C strip=symbols \
--remap-path-prefix=$root=/src --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
    cargo build --quiet --profile "$profile" --locked -p cloak-cli --target x86_64-unknown-linux-gnu >&2
  bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/$profile/cloak
fi
if ! file -L "$bin" | grep -Eq 'statically linked|static-pie linked'; then
  echo "build-manager-image: $bin is dynamically linked; the image has no libc" >&2
  exit 1
fi
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "build-manager-image: $ca missing: apt-get install ca-certificates" >&2; exit 1; }

etc=$(mktemp -d)
trap 'rm -rf "$etc"' EXIT
printf 'root:x:0:0:root:/root:/sbin/nologin\ncloak:x:65532:65532:cloak manager:/var/lib/cloak:/sbin/nologin\n' >"$etc/passwd"
printf 'root:x:0:\ncloak:x:65532:\n' >"$etc/group"
# Static glibc resolves host names itself from these (no NSS modules in the image).
printf 'hosts: files dns\n' >"$etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$etc/hosts"

# shellcheck disable=SC2086
"$bin" assemble "$dest" ${CLOAK_ASSEMBLE_FLAGS:-} -o json \
  --dir /etc --dir /etc/ssl --dir /etc/ssl/certs --dir /usr --dir /usr/local --dir /usr/local/bin \
  --dir /tmp:1777 --dir /var --dir /var/lib --dir /var/lib/cloak:0700:65532:65532 \
  --file "$bin:/usr/local/bin/cloak:0755" \
  --file "$ca:/etc/ssl/certs/ca-certificates.crt:0644" \
  --file "$etc/passwd:/etc/passwd:0644" --file "$etc/group:/etc/group:0644" \
  --file "$etc/nsswitch.conf:/etc/nsswitch.conf:0644" --file "$etc/hosts:/etc/hosts:0644" \
  --user 65532:65532 --workdir /var/lib/cloak \
  --env PATH=/usr/local/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env CLOAK_MANAGER_DATA_DIR=/var/lib/cloak/data \
  --env CLOAK_MANAGER_LISTEN=0.0.0.0:8443 \
  --entrypoint /usr/local/bin/cloak --entrypoint manager --entrypoint serve \
  --label "org.opencontainers.image.title=cloak manager" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=$repository" \
  --label "org.opencontainers.image.licenses=Apache-2.0" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])'
