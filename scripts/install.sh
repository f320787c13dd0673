#!/usr/bin/env bash
# Install cloak and its static launcher: PREFIX/bin/cloak and PREFIX/lib/cloak/cloak-launcher,
# where cloak looks for the launcher. PREFIX defaults to /usr/local (~/.local when not root).
#   bash scripts/install.sh [PREFIX]
# CLOAK_PROFILE=debug installs a debug build of cloak instead of a release one (development and
# the install test); the launcher is always the static release build of scripts/build-launcher.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then default=/usr/local; else default="$HOME/.local"; fi
prefix="${1:-$default}"
profile="${CLOAK_PROFILE:-release}"
case "$profile" in
  release) cargo build --quiet --release --locked -p cloak-cli; bin=target/release/cloak ;;
  debug) cargo build --quiet --locked -p cloak-cli; bin=target/debug/cloak ;;
  *) echo "install.sh: CLOAK_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
launcher="$(bash scripts/build-launcher.sh)"
install -d "$prefix/bin" "$prefix/lib/cloak"
# Copy under temporary names and rename, so that a failed copy never leaves a half binary.
install -m 0755 "$bin" "$prefix/bin/.cloak.new"
install -m 0755 "$launcher" "$prefix/lib/cloak/.cloak-launcher.new"
mv -f "$prefix/lib/cloak/.cloak-launcher.new" "$prefix/lib/cloak/cloak-launcher"
mv -f "$prefix/bin/.cloak.new" "$prefix/bin/cloak"
"$prefix/bin/cloak" --version >/dev/null
echo "installed $prefix/bin/cloak and $prefix/lib/cloak/cloak-launcher"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "add $prefix/bin to PATH to run cloak" ;; esac
