#!/usr/bin/env bash
# Install (with apt) everything the demo and the test suite need. Idempotent: apt runs only
# when something is missing. The list is the single place to add a system dependency.
set -euo pipefail
packages=(
  docker-registry   # the real OCI registry the tests and the demo push to
  skopeo umoci      # independent peers the tests compare against
  buildah           # the README's other ocicrypt peer: builds, encrypts and decrypts images in tests/readme.rs
  busybox-static    # the example/test images' userland
  apache2-utils     # htpasswd for the TLS + auth registry
  openssl curl jq time python3 gcc libssl-dev pkg-config
  cpio zstd file
  softhsm2          # PKCS#11 token for signing-key tests
  qemu-system-x86   # boots Nitro EIF kernels for `cloak run`
  postgresql-15 postgresql-client-15  # the manager's PostgreSQL tests (a server per test run, no service)
  sqlite3           # a real client to read and tamper with the manager's SQLite database in tests
  wrk               # HTTP load generator for the manager benchmarks
  chromium chromium-driver  # headless browser (WebDriver) for the console's browser tests
  haproxy           # round-robin in front of the manager replicas (scripts/scale-out.sh)
  podman runc       # `podman kube play` of the rendered evaluation manifests (runc: crun fails here)
  catatonit         # the pause process podman's kube play pods need
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # PostgreSQL is started by the tests themselves (initdb into a temporary directory): no
  # packaged cluster, no system service.
  mkdir -p /etc/postgresql-common 2>/dev/null || true
  if [ -w /etc/postgresql-common ] && ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl (for `kubectl kustomize` in scripts/deploy-test.sh) is not in Debian: install it from
# the Kubernetes apt repository (pkgs.k8s.io) or as the static binary; deploy-test.sh names it
# when it is missing.

# grpcio: an independent gRPC peer for the keyprovider tests, installed for the python3 on PATH
# (which may not be Debian's, so python3-grpcio would not be seen); the wheel takes seconds.
if ! python3 -c 'import grpc' 2>/dev/null; then
  echo "installing: grpcio (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check grpcio 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
  python3 -c 'import grpc'
fi

# schemathesis: the independent API fuzzer of scripts/schemathesis.sh (run against the manager's
# served /openapi.json). Pinned with the hypothesis it works with: hypothesis-jsonschema, which
# schemathesis 3 uses, calls an internal API that later hypothesis releases removed.
if ! python3 -c 'import schemathesis, sys; sys.exit(schemathesis.__version__ != "3.39.16")' 2>/dev/null; then
  echo "installing: schemathesis (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check schemathesis==3.39.16 hypothesis==6.131.0 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
  python3 -c 'import schemathesis'
fi

# axe-core: the accessibility checker the console's browser tests inject into each page (npm,
# pinned by tests/browser/package-lock.json). Node and npm come from Debian if absent.
if ! command -v npm >/dev/null; then
  echo "installing: nodejs npm" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
browser_dir="$(dirname "$0")/../tests/browser"
if ! (cd "$browser_dir" && node -e 'process.exit(require("./node_modules/axe-core/package.json").version === require("./package.json").dependencies["axe-core"] ? 0 : 1)' 2>/dev/null); then
  echo "installing: axe-core (npm ci, tests/browser)" >&2
  npm ci --prefix "$browser_dir" --no-audit --no-fund --loglevel=error >&2
fi
