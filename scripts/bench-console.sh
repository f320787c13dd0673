#!/usr/bin/env bash
# Console benchmark (a script, not a test): a `cloak manager serve` (TLS, self-signed, SQLite in a
# temporary data dir) holding BENCH_BUILDS (10,000) builds, each with its PENDING task; every
# console page fetched BENCH_REQUESTS (30) times over one keep-alive connection with the session
# cookie of a console sign-in. Prints per page the median and p90 server time (curl's
# time_starttransfer - time_pretransfer: request sent to first byte) and the transfer size, and
# checks the issue's budget: median <= 20 ms and <= 200 KiB per page (exit 1 otherwise).
# Seeding: one build through the API, the others copied from it in SQL (as bench-manager.sh).
#
# Usage: scripts/bench-console.sh
# Environment: CLOAK_BIN (a `cloak`; default: build a release one), BENCH_BUILDS, BENCH_REQUESTS.
set -euo pipefail
cd "$(dirname "$0")/.."

builds=${BENCH_BUILDS:-10000}
requests=${BENCH_REQUESTS:-30}
for tool in curl jq python3 sqlite3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 2; }
done
if [ -z "${CLOAK_BIN:-}" ]; then
  cargo build --release --quiet --locked -p cloak-cli
  CLOAK_BIN="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/cloak"
fi

work=$(mktemp -d -t cloak-bench-console-XXXXXX)
manager_pid=
cleanup() {
  if [ -n "$manager_pid" ]; then kill "$manager_pid" 2>/dev/null || true; wait "$manager_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

password=bench-admin-password-1
CLOAK_ADMIN_PASSWORD=$password CLOAK_LOG=warn,cloak_manager=info "$CLOAK_BIN" manager serve \
  --listen 127.0.0.1:0 --admin-user admin --data-dir "$work/data" 2>"$work/manager.log" &
manager_pid=$!
for _ in $(seq 600); do
  url=$(sed -n 's/.*cloak manager: listening on \(https\?:\/\/[^ ]*\).*/\1/p' "$work/manager.log" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$manager_pid" 2>/dev/null || { cat "$work/manager.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the manager did not start" >&2; exit 1; }
ca="$work/data/tls.crt"
c() { curl -sS --fail-with-body --cacert "$ca" "$@"; }
token=$(c -X POST -u "admin:$password" "$url/v1/sys/auth" | jq -er .access_token)
api() { c -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' "$url$2" ${3:+--data "$3"}; }

app=$(api POST /v1/apps '{"name":"bench","input_image_name":"registry.example.com/bench:1","output_image_name":"registry.example.com/bench:nitro"}' | jq -er .app_id)
template=$(api POST /v1/builds "{\"app_id\":\"$app\",\"docker_info\":{\"docker_image_name\":\"registry.example.com/bench\",\"docker_version\":\"0\"},\"attributes\":{\"nitro_enclave\":{\"pcr0\":\"$(printf '%096x' 0)\",\"pcr1\":\"$(printf '%096x' 1)\",\"pcr2\":\"$(printf '%096x' 2)\"}}}")
t0=$(date +%s)
python3 - "$builds" "$(jq -er .build_id <<<"$template")" "$(jq -er .task_id <<<"$template")" >"$work/seed.sql" <<'PY'
import sys, uuid
n, build, task = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print("BEGIN;")
for i in range(1, n):
    b, t = str(uuid.uuid4()), str(uuid.uuid4())
    print(f"INSERT INTO tasks (task_id, account_id, task_type, entity_id, status, requester, description, "
          f"policy, created_at, status_updated_at) SELECT '{t}', account_id, task_type, '{b}', status, requester, "
          f"description, policy, created_at, status_updated_at FROM tasks WHERE task_id = '{task}';")
    print(f"INSERT INTO builds (build_id, account_id, app_id, status, status_updated_at, docker_image_name, "
          f"docker_version, docker_image_sha, mrenclave, mrsigner, isvprodid, isvsvn, pcr0, pcr1, pcr2, pcr8, "
          f"measurement_key, debug, body, task_id, created_at, updated_at) SELECT '{b}', account_id, app_id, "
          f"status, status_updated_at, docker_image_name, '{i}', docker_image_sha, mrenclave, mrsigner, "
          f"isvprodid, isvsvn, '{i:096x}', pcr1, pcr2, pcr8, measurement_key || '-{i}', debug, body, '{t}', "
          f"created_at + {i}, updated_at + {i} FROM builds WHERE build_id = '{build}';")
print("COMMIT;")
PY
sqlite3 -bail "$work/data/manager.db" <"$work/seed.sql" >/dev/null
echo "seeded $builds builds in $(( $(date +%s) - t0 )) s"
build=$(jq -er .build_id <<<"$template")

# Sign in through the console's form (its login cookie and token, then the session cookie).
jar="$work/cookies"
csrf=$(c -c "$jar" "$url/login" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -n1)
c -b "$jar" -c "$jar" -o /dev/null --data-urlencode "csrf=$csrf" --data-urlencode "next=/" \
  --data-urlencode "user_name=admin" --data-urlencode "password=$password" "$url/login"
grep -q cloak_session "$jar" || { echo "console sign-in failed" >&2; exit 1; }

pages=(
  "/" "/apps" "/apps/$app" "/builds" "/builds?status=PENDING" "/builds?measurement=0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000271" "/builds?image=registry.example.com/bench"
  "/builds?offset=9950" "/builds/$build" "/tasks" "/tasks?tab=approved" "/convert" "/registries"
  "/certificates" "/audit" "/users" "/login"
)
fail=0
printf '%-44s %9s %9s %10s %s\n' page "median ms" "p90 ms" "bytes" verdict
for p in "${pages[@]}"; do
  args=()
  for _ in $(seq "$requests"); do args+=(-o /dev/null "$url$p"); done
  out=$(c -b "$jar" -w '%{http_code} %{time_pretransfer} %{time_starttransfer} %{size_download}\n' "${args[@]}")
  read -r med p90 size codes < <(python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin.read().split("\n") if l.strip()]
t = sorted((float(r[2]) - float(r[1])) * 1000 for r in rows)
codes = ",".join(sorted({r[0] for r in rows}))
print(f"{statistics.median(t):.2f} {t[int(len(t) * 0.9) - 1]:.2f} {max(int(r[3]) for r in rows)} {codes}")
' <<<"$out")
  verdict=ok
  if [ "$codes" != 200 ] || python3 -c "import sys; sys.exit(0 if $med > 20 or $size > 204800 else 1)"; then
    verdict="OVER BUDGET (status $codes)"; fail=1
  fi
  printf '%-44s %9s %9s %10s %s\n' "${p:0:44}" "$med" "$p90" "$size" "$verdict"
done
exit $fail
