#!/usr/bin/env bash
# Manager benchmark (a script, not a test): a release `cloak manager serve` (TLS with its
# self-signed certificate, default settings) on SQLite in a temporary data dir and on a
# PostgreSQL server this script starts itself (initdb into a temporary directory owned by
# `postgres`, pg_ctl on a free loopback port, stopped at the end), each holding 10,000 builds.
#
# Load generator: wrk (Debian), keep-alive, 32 connections, a bearer token, BENCH_SECONDS (10)
# per case: GET /v1/builds/{id} (random ids of the stored builds), GET /v1/builds?limit=50, and
# the same server's /healthz, the ceiling of its HTTP stack on this machine. Then 64 writers
# registering builds with unique measurements (POST /v1/builds) for BENCH_WRITE_SECONDS (30).
# Prints requests/s, p50/p99, the ratio to the ceiling, non-2xx answers and the manager's peak
# RSS (VmHWM). Seeding: one build through the API, the others copied from it in SQL (see seed).
#
# Usage: scripts/bench-manager.sh [sqlite|postgres]...   (default: both)
# Environment: CLOAK_BIN (a release `cloak`; default: build it), BENCH_BUILDS (10000).
set -euo pipefail
cd "$(dirname "$0")/.."

builds=${BENCH_BUILDS:-10000}
secs=${BENCH_SECONDS:-10}
write_secs=${BENCH_WRITE_SECONDS:-30}
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite postgres)

for tool in wrk jq curl python3 runuser sqlite3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 2; }
done
if [ -z "${CLOAK_BIN:-}" ]; then
  cargo build --release --quiet --locked -p cloak-cli
  CLOAK_BIN="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/cloak"
fi

work=$(mktemp -d -t cloak-bench-manager-XXXXXX)
chmod 755 "$work"
manager_pid=
pg_ctl=
cleanup() {
  stop_manager
  if [ -n "$pg_ctl" ]; then
    runuser -u postgres -- "$pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
stop_manager() {
  if [ -n "$manager_pid" ]; then
    kill "$manager_pid" 2>/dev/null || true
    wait "$manager_pid" 2>/dev/null || true
    manager_pid=
  fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  pg_bin=$bin
  pg_ctl="$bin/pg_ctl"
  mkdir -p "$work/pg" && chown postgres:postgres "$work/pg"
  runuser -u postgres -- "$bin/initdb" -D "$work/pg/data" -A trust -U postgres --no-sync >/dev/null
  pg_port=$(free_port)
  runuser -u postgres -- "$pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on" \
    start >/dev/null
  runuser -u postgres -- "$bin/psql" -h 127.0.0.1 -p "$pg_port" -d postgres -qc "CREATE DATABASE bench"
  pg_url="postgres://postgres@127.0.0.1:$pg_port/bench"
}

# start_manager NAME [serve arguments...]: sets url, ca, manager_pid.
start_manager() {
  local name=$1; shift
  local log="$work/$name.log"
  : >"$log"
  admin_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  CLOAK_ADMIN_PASSWORD="$admin_password" "$CLOAK_BIN" manager serve --data-dir "$work/$name" \
    --listen 127.0.0.1:0 --admin-user admin "$@" </dev/null >/dev/null 2>"$log" &
  manager_pid=$!
  url=
  for _ in $(seq 1 600); do
    url=$(sed -n 's/^cloak manager: listening on //p' "$log" | head -n1)
    [ -n "$url" ] && break
    kill -0 "$manager_pid" 2>/dev/null || { cat "$log" >&2; echo "the manager exited" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log" >&2; echo "the manager did not start" >&2; exit 1; }
  ca="$work/$name/tls.crt"
  token=$(printf 'user = "admin:%s"\n' "$admin_password" |
    curl -sS --fail-with-body --cacert "$ca" -K - -X POST "$url/v1/sys/auth" | jq -er .access_token)
}

api() {
  curl -sS --fail-with-body --cacert "$ca" -X "$1" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' ${3:+--data "$3"} "$url$2"
}

# seed N APP_ID IDS_FILE: registers one build through the API, then N-1 copies of it (each with
# its own task, ids and measurements) in one SQL transaction through the database's own client
# (sqlite3 or psql): registering through the API costs an fsync each (about 10 ms here), too
# slow to store 10,000. The copies have no audit records; nothing here verifies the chain.
seed() {
  local n=$1 app=$2 out=$3 template
  template=$(api POST /v1/builds "{\"app_id\":\"$app\",\"docker_info\":{\"docker_image_name\":\"registry.example.com/seed\",\"docker_version\":\"0\"},\"mrenclave\":\"$(printf '%064x' 0)\",\"mrsigner\":\"$(printf '%064d' 22)\",\"isvprodid\":1,\"isvsvn\":1}")
  python3 - "$n" "$(jq -er .build_id <<<"$template")" "$(jq -er .task_id <<<"$template")" \
    "$out" >"$work/seed.sql" <<'PY'
import sys, uuid
n, build, task, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ids = [build]
print("BEGIN;")
for i in range(1, n):
    b, t = str(uuid.uuid4()), str(uuid.uuid4())
    ids.append(b)
    print(f"INSERT INTO tasks (task_id, account_id, task_type, entity_id, status, requester, description, "
          f"policy, created_at, status_updated_at) SELECT '{t}', account_id, task_type, '{b}', status, requester, "
          f"description, policy, created_at, status_updated_at FROM tasks WHERE task_id = '{task}';")
    print(f"INSERT INTO builds (build_id, account_id, app_id, status, status_updated_at, docker_image_name, "
          f"docker_version, docker_image_sha, mrenclave, mrsigner, isvprodid, isvsvn, pcr0, pcr1, pcr2, pcr8, "
          f"measurement_key, debug, body, task_id, created_at, updated_at) SELECT '{b}', account_id, app_id, "
          f"status, status_updated_at, docker_image_name, '{i}', docker_image_sha, '{i:064x}', mrsigner, "
          f"isvprodid, isvsvn, pcr0, pcr1, pcr2, pcr8, measurement_key || '-{i}', debug, body, '{t}', "
          f"created_at + {i}, updated_at + {i} FROM builds WHERE build_id = '{build}';")
print("COMMIT;")
# Statistics for the planner, as PostgreSQL's autovacuum keeps them on a live database.
print("ANALYZE;")
open(out, "w").write("\n".join(ids) + "\n")
PY
  chmod 644 "$work/seed.sql"
  case $backend in
    sqlite) sqlite3 -bail "$work/sqlite/manager.db" <"$work/seed.sql" >/dev/null ;;
    postgres) runuser -u postgres -- "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -d bench -q \
                -v ON_ERROR_STOP=1 -f "$work/seed.sql" >/dev/null ;;
  esac
}

# Lua for wrk: the token, a result line from done(), and per-thread status counts.
lua_common() {
  cat <<LUA
token = "$token"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
  bad = 0
  if prepare then prepare() end
end
function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if bad == 1 then io.stderr:write("non-2xx: " .. status .. " " .. body .. "\n") end
  end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, b, e.connect + e.read + e.write + e.timeout))
end
LUA
}

# load NAME CONNECTIONS SECONDS LUA PATH: runs wrk, prints nothing, sets the r_* variables.
load() {
  local name=$1 conns=$2 dur=$3 lua=$4 path=$5 line
  wrk -t 2 -c "$conns" -d "${dur}s" --timeout 10s -s "$lua" "$url$path" >"$work/wrk-$name.out" 2>&1 ||
    { cat "$work/wrk-$name.out" >&2; exit 1; }
  line=$(grep '^RESULT ' "$work/wrk-$name.out") || { cat "$work/wrk-$name.out" >&2; exit 1; }
  read -r _ r_rps r_p50 r_p99 r_bad r_err <<<"$line"
  grep '^non-2xx: ' "$work/wrk-$name.out" | head -n 2 >&2 || true
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
peak_rss_mib() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$manager_pid/status"; }

status=0
for backend in "${backends[@]}"; do
  case $backend in
    sqlite) start_manager sqlite ;;
    postgres) start_postgres; start_manager postgres --database-url "$pg_url" ;;
    *) echo "unknown backend $backend (sqlite or postgres)" >&2; exit 2 ;;
  esac
  app_id=$(api POST /v1/apps '{"name":"bench","input_image_name":"registry.example.com/bench:in","output_image_name":"registry.example.com/bench:out"}' | jq -er .app_id)
  t0=$(date +%s%N)
  seed "$builds" "$app_id" "$work/ids"
  seed_secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN {print (b - a) / 1e9}')
  stored=$(api GET '/v1/builds?limit=1' | jq -er .metadata.total_count)

  lua_common >"$work/plain.lua"
  { lua_common; cat <<LUA; } >"$work/one.lua"
function prepare()
  ids = {}
  for l in io.lines("$work/ids") do ids[#ids + 1] = l end
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end
function request()
  return wrk.format("GET", "/v1/builds/" .. ids[math.random(#ids)])
end
LUA
  { lua_common; cat <<LUA; } >"$work/write.lua"
function prepare()
  n = 0
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
  prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end
function request()
  n = n + 1
  local body = string.format('{"app_id":"$app_id","docker_info":{"docker_image_name":"registry.example.com/w","docker_version":"%d"},"mrenclave":"%s%048x","mrsigner":"%s","isvprodid":2,"isvsvn":2}', n, prefix, n, string.rep("33", 32))
  return wrk.format("POST", "/v1/builds", nil, body)
end
LUA

  printf '\n== %s: %d builds stored (seeded in %.1f s)\n' "$backend" "$stored" "$seed_secs"
  printf '%-34s %10s %9s %9s %8s %7s\n' case 'req/s' 'p50 ms' 'p99 ms' ceiling non-2xx
  load healthz 32 "$secs" "$work/plain.lua" /healthz
  ceil=$r_rps
  printf '%-34s %10.0f %9.2f %9.2f %8s %7d\n' "GET /healthz (ceiling)" "$r_rps" "$r_p50" "$r_p99" "1.00" "$r_bad"
  load one 32 "$secs" "$work/one.lua" /v1/builds
  one_rps=$r_rps one_p99=$r_p99 one_bad=$r_bad
  printf '%-34s %10.0f %9.2f %9.2f %8s %7d\n' "GET /v1/builds/{id}" "$r_rps" "$r_p50" "$r_p99" "$(ratio "$r_rps" "$ceil")" "$r_bad"
  load list 32 "$secs" "$work/plain.lua" '/v1/builds?limit=50'
  printf '%-34s %10.0f %9.2f %9.2f %8s %7d\n' "GET /v1/builds?limit=50" "$r_rps" "$r_p50" "$r_p99" "$(ratio "$r_rps" "$ceil")" "$r_bad"
  read_rss=$(peak_rss_mib)
  load write 64 "$write_secs" "$work/write.lua" /v1/builds
  write_bad=$((r_bad + r_err))
  printf '%-34s %10.0f %9.2f %9.2f %8s %7d\n' "POST /v1/builds (64 writers)" "$r_rps" "$r_p50" "$r_p99" "" "$r_bad"
  locked=$(grep -c 'database is locked' "$work/$backend.log" || true)
  printf 'socket errors during writes: %d; "database is locked" in the log: %d\n' "$r_err" "$locked"
  printf 'peak RSS (VmHWM): %s MiB after the reads, %s MiB after the writes\n' "$read_rss" "$(peak_rss_mib)"
  goal_ratio=$(awk -v a="$one_rps" -v c="$ceil" 'BEGIN {print (a / c >= 0.5) ? 1 : 0}')
  goal_p99=$(awk -v p="$one_p99" 'BEGIN {print (p <= 20) ? 1 : 0}')
  if [ "$goal_ratio" = 1 ] && [ "$goal_p99" = 1 ] && [ "$one_bad" = 0 ] && [ "$write_bad" = 0 ] && [ "$locked" = 0 ]; then
    echo "goals met: GET one build >= 50% of the ceiling, p99 <= 20 ms, no failed request"
  else
    echo "GOAL MISSED on $backend (ratio >= 0.5: $goal_ratio, p99 <= 20 ms: $goal_p99, failed reads: $one_bad, failed writes: $write_bad, locked: $locked)"
    status=1
  fi
  stop_manager
done
exit $status
