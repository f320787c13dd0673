#!/usr/bin/env bash
# Deployment tests (run by scripts/test.sh):
#  1. the Kustomize overlays render with `kubectl kustomize` and their objects have the
#     properties operators rely on (scripts/lib/check_manifests.py);
#  2. the manager image (scripts/build-manager-image.sh) is reproducible: assembled twice from
#     the same source into two OCI layouts, the same digest; labels, user and entrypoint as
#     promised (skopeo reads them, an independent peer);
#  3. the rendered evaluation overlay runs under `podman kube play` (Debian's podman with runc):
#     the pod answers /readyz and the API on its published port, and a build registered
#     before `podman kube down` is still there after a new `play` (SQLite on the volume).
# Needs root for podman (this machine runs containers as root only, with runc).
# Usage: scripts/deploy-test.sh [render]   (render: step 1 only, in seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case $mode in all|render) ;; *) echo "usage: $0 [render]" >&2; exit 2 ;; esac
root=$PWD
for tool in kubectl python3 skopeo podman jq curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 2; }
done
work=$(mktemp -d -t cloak-deploy-test-XXXXXX)
pod_yaml=
secrets=()
image=localhost/cloak-manager:deploy-test-$$
cleanup() {
  if [ -n "$pod_yaml" ]; then podman kube down "$pod_yaml" >/dev/null 2>&1 || true; fi
  podman volume rm -f cloak-data-test-$$ >/dev/null 2>&1 || true
  # kube play keeps a volume per ConfigMap it mounted.
  if [ -s "$work/configmaps.txt" ]; then
    while read -r v; do podman volume rm -f "$v" >/dev/null 2>&1 || true; done <"$work/configmaps.txt"
  fi
  for s in "${secrets[@]}"; do podman secret rm "$s" >/dev/null 2>&1 || true; done
  podman rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== kustomize: render both overlays and check them"
cp -r deploy/kubernetes "$work/kubernetes"
bash "$work/kubernetes/make-secrets.sh" >/dev/null
for overlay in evaluation production; do
  kubectl kustomize "$work/kubernetes/overlays/$overlay" >"$work/$overlay.yaml"
  python3 scripts/lib/check_manifests.py "$overlay" <"$work/$overlay.yaml"
done
[ "$mode" = render ] && { echo "render checks passed"; exit 0; }

echo "== manager image: build twice, compare digests"
d1=$(bash scripts/build-manager-image.sh "oci:$work/image-1:test")
d2=$(bash scripts/build-manager-image.sh "oci:$work/image-2:test")
[ "$d1" = "$d2" ] || { echo "not reproducible: $d1 then $d2" >&2; exit 1; }
cmp "$work/image-1/index.json" "$work/image-2/index.json"
echo "   both builds: $d1"
config=$(skopeo inspect --config "oci:$work/image-1:test")
jq -e '.config.User == "65532:65532"' <<<"$config" >/dev/null || { echo "image user: $config" >&2; exit 1; }
jq -e '.config.Entrypoint == ["/usr/local/bin/cloak","manager","serve"]' <<<"$config" >/dev/null ||
  { echo "image entrypoint: $config" >&2; exit 1; }
revision=$(git rev-parse HEAD)
jq -e --arg r "$revision" '.config.Labels["org.opencontainers.image.revision"] | startswith($r)' <<<"$config" >/dev/null ||
  { echo "image revision label: $config" >&2; exit 1; }
jq -e '.config.Labels["org.opencontainers.image.version"] | length > 0' <<<"$config" >/dev/null
echo "   user 65532, entrypoint cloak manager serve, revision $revision"

echo "== podman kube play: the evaluation overlay"
if [ "$(id -u)" -ne 0 ]; then
  echo "NOT TESTED: podman kube play needs root on this machine" >&2
  [ -n "${CLOAK_TEST_PATHS:-}" ] && echo "NOT TESTED podman kube play of the evaluation overlay (not root)" >>"$CLOAK_TEST_PATHS"
  exit 0
fi
# podman 4.3 here: runc (crun fails), ulimits within the hard limits of this machine.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$work/containers.conf
skopeo copy -q "oci:$work/image-1:test" "containers-storage:$image"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# podman mishandles `kind: Secret` inside the played YAML: each Secret becomes a podman secret
# holding its data as JSON (what podman 4.3's secretKeyRef reads), the rest is played. The image
# is the one just built, the volume unique to this run, the manager's port published on a
# loopback port chosen now.
python3 - "$work/evaluation.yaml" "$work" "$image" "$port" "cloak-data-test-$$" <<'PY'
import json, sys, yaml
src, work, image, port, volume = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
rest = []
for d in docs:
    if d["kind"] == "Secret":
        # podman 4.3 reads a secretKeyRef's secret as JSON {key: base64}: the Secret's data.
        open(f"{work}/secret-{d['metadata']['name']}.yaml", "w").write(json.dumps(d["data"]))
        continue
    if d["kind"] == "ConfigMap":
        open(f"{work}/configmaps.txt", "a").write(d["metadata"]["name"] + "\n")
    if d["kind"] == "PersistentVolumeClaim":
        continue  # the claim is a named podman volume, created below
    if d["kind"] == "Deployment":
        pod = d["spec"]["template"]["spec"]
        for v in pod["volumes"]:
            if "persistentVolumeClaim" in v:
                v["persistentVolumeClaim"]["claimName"] = volume
        for c in pod["containers"]:
            c["image"] = image
            for p in c.get("ports", []):
                p["hostPort"] = int(port)
                p["hostIP"] = "127.0.0.1"
    rest.append(d)
open(f"{work}/play.yaml", "w").write(yaml.safe_dump_all(rest))
PY
for f in "$work"/secret-*.yaml; do
  name=$(basename "$f" .yaml); name=${name#secret-}
  podman secret create "$name" "$f" >/dev/null
  secrets+=("$name")
done
password=$(cat "$work/kubernetes/base/secrets/admin-password")
podman volume create cloak-data-test-$$ >/dev/null
pod_yaml=$work/play.yaml
base=http://127.0.0.1:$port

play() {
  podman kube play "$pod_yaml" >/dev/null
  for _ in $(seq 1 300); do
    if curl -fsS "$base/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  podman ps -a >&2
  for c in $(podman ps -a --format '{{.Names}}' | grep -- '-manager$'); do podman logs --tail 30 "$c" >&2 || true; done
  echo "the manager pod did not answer /readyz on $base" >&2
  exit 1
}
auth() { curl -fsS -X POST -u "admin:$password" "$base/v1/sys/auth" | jq -er .access_token; }

play
echo "   /readyz: $(curl -fsS "$base/readyz")"
token=$(auth)
app=$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' -X POST "$base/v1/apps" \
  --data '{"name":"kube-play","input_image_name":"r.example.com/a:in","output_image_name":"r.example.com/a:out"}' | jq -er .app_id)
build=$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' -X POST "$base/v1/builds" \
  --data "{\"app_id\":\"$app\",\"docker_info\":{\"docker_image_name\":\"r.example.com/a\",\"docker_version\":\"1\"},\"mrenclave\":\"$(printf 'ab%.0s' {1..32})\",\"mrsigner\":\"$(printf 'cd%.0s' {1..32})\",\"isvprodid\":1,\"isvsvn\":1}" |
  jq -er .build_id)
echo "   registered build $build through $base"
podman kube down "$pod_yaml" >/dev/null
if curl -fsS "$base/readyz" >/dev/null 2>&1; then echo "the pod still answers after kube down" >&2; exit 1; fi
play
token=$(auth)
status=$(curl -fsS -H "authorization: Bearer $token" "$base/v1/builds/$build" | jq -er .status.status)
[ "$status" = PENDING ] || { echo "build $build after a new play: $status" >&2; exit 1; }
echo "   after kube down and a new play: build $build is there ($status), the same admin password logs in"
[ -n "${CLOAK_TEST_PATHS:-}" ] && echo "tested podman kube play of the evaluation overlay" >>"$CLOAK_TEST_PATHS"
echo "deploy tests passed"
