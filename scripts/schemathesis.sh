#!/usr/bin/env bash
# An independent API fuzzer against the manager: schemathesis (PyPI, installed by
# scripts/install-deps.sh) reads the served /openapi.json and sends generated requests to every
# operation with an administrator's bearer token. Any 5xx, any status code the document does not
# list, any response whose content type or body contradicts the document is a finding; the
# script exits non-zero on any finding (and on any failure of its own).
#
# A real `cloak manager serve` on SQLite in a temporary directory, on a free loopback port, with
# TLS (its self-signed certificate, which schemathesis verifies as the CA).
#
# Environment: CLOAK_BIN (a built `cloak`; default: build the debug binary), ST_MAX_EXAMPLES
# (per operation and pass, default 25), ST_TIME_LIMIT (wall clock in seconds, default 240).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${ST_MAX_EXAMPLES:-25}
time_limit=${ST_TIME_LIMIT:-240}

if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "schemathesis is not installed: run scripts/install-deps.sh" >&2
  exit 2
fi
if [ -z "${CLOAK_BIN:-}" ]; then
  cargo build --quiet --locked -p cloak-cli
  CLOAK_BIN="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/cloak"
fi

work=$(mktemp -d -t cloak-schemathesis-XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

: >"$work/manager.log"
admin_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
CLOAK_ADMIN_PASSWORD="$admin_password" CLOAK_LOG="info,sqlx=warn" "$CLOAK_BIN" manager serve \
  --data-dir "$work/data" --listen 127.0.0.1:0 --admin-user admin \
  </dev/null >/dev/null 2>"$work/manager.log" &
pid=$!
url=
for _ in $(seq 1 600); do
  url=$(sed -n 's/^cloak manager: listening on //p' "$work/manager.log" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/manager.log" >&2; echo "the manager exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/manager.log" >&2; echo "the manager did not start" >&2; exit 1; }
ca="$work/data/tls.crt"
echo "manager at $url (pid $pid)"

# A JSON request with the token; fails the script on a non-2xx answer.
api() {
  local method=$1 path=$2 body=${3:-}
  curl -sS --fail-with-body --cacert "$ca" -X "$method" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' ${body:+--data "$body"} "$url$path"
}

# The password goes to curl on stdin, not on its command line.
token=$(printf 'user = "admin:%s"\n' "$admin_password" |
  curl -sS --fail-with-body --cacert "$ca" -K - -X POST "$url/v1/sys/auth" | jq -er .access_token)

# Fixtures: every path id below names one (--set-path), so that the operations on one object
# reach their handlers; bodies and query parameters are generated (valid and invalid ones).
hex() { printf "%0${2}d" 0 | tr 0 "$1"; }
app_id=$(api POST /v1/apps '{"name":"fuzz","input_image_name":"registry.example.com/fuzz:in","output_image_name":"registry.example.com/fuzz:out"}' | jq -er .app_id)
build=$(api POST /v1/builds "{\"app_id\":\"$app_id\",\"docker_info\":{\"docker_image_name\":\"registry.example.com/fuzz\",\"docker_version\":\"1\"},\"mrenclave\":\"$(hex a 64)\",\"mrsigner\":\"$(hex b 64)\",\"isvprodid\":1,\"isvsvn\":1}")
build_id=$(jq -er .build_id <<<"$build")
task_id=$(jq -er .pending_task_id <<<"$build")
user_id=$(api POST /v1/users '{"user_name":"fuzz-reader","password":"a password for the fuzzer","role":"READER"}' | jq -er .user_id)
registry_id=$(api POST /v1/registry '{"url":"registry.example.com","credential":{"default":{"username":"u","password":"fuzz-secret"}}}' | jq -er .registry_id)
key_id=$(api POST /v1/api_keys '{"name":"fuzz","role":"READER"}' | jq -er .key_id)

# `terminate` is left out: it would end the very session the fuzzer uses (the API tests cover
# it). DELETEs run in a second pass, so that the other operations find the fixtures.
deadline=$(( $(date +%s) + time_limit ))
fuzz() {
  local left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 0 ] || return 124
  timeout --signal=TERM "$left" python3 -m schemathesis.cli run "$url/openapi.json" \
    --request-tls-verify "$ca" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --exclude-operation-id terminate \
    --set-path "app_id=$app_id" --set-path "build_id=$build_id" --set-path "task_id=$task_id" \
    --set-path "user_id=$user_id" --set-path "registry_id=$registry_id" --set-path "key_id=$key_id" \
    --data-generation-method all \
    --hypothesis-max-examples "$max_examples" \
    --hypothesis-database none \
    --hypothesis-suppress-health-check all \
    --generation-allow-x00 false \
    --schemathesis-io-telemetry false \
    --no-color \
    "$@"
}
rc=0
fuzz --exclude-method DELETE || rc=$?
if [ "$rc" -eq 0 ]; then fuzz --include-method DELETE || rc=$?; fi
# schemathesis: 0 = no findings, 1 = findings or errors in its run (both shown above); anything
# else is its own failure (usage); 124 is the time bound.
case $rc in
  0) echo "schemathesis: no findings" ;;
  1) echo "schemathesis found problems (above); the manager's warnings and errors:" >&2
     grep -E 'ERROR|WARN' "$work/manager.log" | tail -n 50 >&2 || true
     exit 1 ;;
  124) echo "schemathesis did not finish within ${time_limit} s (ST_TIME_LIMIT)" >&2; exit 1 ;;
  *) echo "schemathesis failed to run (exit status $rc)" >&2; exit 1 ;;
esac
