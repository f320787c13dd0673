#!/usr/bin/env bash
# Create the per-installation secret files kustomize reads (base/secrets/, never committed):
# a master key and an audit key (one 64-hex-digit line each), an admin password, and the
# database URL (given as the first argument, or CLOAK_MANAGER_DATABASE_URL; the evaluation
# overlay does not use it). Existing files are kept: regenerating a key would make the
# database's sealed secrets and audit chain unreadable.
# Usage: deploy/kubernetes/make-secrets.sh [postgres://user:password@host:5432/cloak]
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/base/secrets"
umask 077
mkdir -p "$dir"
new() { [ -s "$dir/$1" ] && { echo "kept $dir/$1"; return 1; }; echo "wrote $dir/$1"; }
if new master.key; then openssl rand -hex 32 >"$dir/master.key"; fi
if new audit.key; then openssl rand -hex 32 >"$dir/audit.key"; fi
# No trailing newline: the password reaches the manager as an environment variable verbatim.
if new admin-password; then printf '%s' "$(openssl rand -base64 24)" >"$dir/admin-password"; fi
url=${1:-${CLOAK_MANAGER_DATABASE_URL:-}}
if [ -n "$url" ]; then
  printf '%s' "$url" >"$dir/database-url"; echo "wrote $dir/database-url"
elif new database-url; then
  # A placeholder the evaluation overlay never reads; production fails to connect until set.
  printf '%s' "postgres://cloak@postgres.invalid:5432/cloak" >"$dir/database-url"
fi
