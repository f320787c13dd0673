# Shell helpers to run Debian's docker-registry on a loopback port chosen at run time.
# Source this file. `registry_start DIR` prints HOST:PORT and records the process in DIR/pid;
# `registry_stop DIR` stops it. Callers set an EXIT trap that stops every registry they started.

# free_port: print a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# registry_start DIR: start a plain-HTTP registry storing in DIR/data; prints HOST:PORT.
registry_start() {
  local dir=$1 port
  mkdir -p "$dir"
  port=$(free_port)
  cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
      echo "127.0.0.1:$port"
      return 0
    fi
    sleep 0.05
  done
  echo "registry in $dir did not start; see $dir/registry.log" >&2
  return 1
}

# registry_stop DIR...: stop the registries started in these directories.
registry_stop() {
  local dir pid
  for dir in "$@"; do
    [ -f "$dir/pid" ] || continue
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$dir/pid"
  done
}
