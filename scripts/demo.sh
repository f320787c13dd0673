#!/usr/bin/env bash
# The main job on embedded defaults: build an example image without Docker, push it to a local
# registry started for the purpose (loopback, port chosen at run time), inspect it, list its
# files, copy it back into an OCI layout, encrypt and decrypt it (cross-checked with skopeo),
# convert it for SGX and for Nitro Enclaves and boot the Nitro image under qemu; then start the
# manager on its embedded default (SQLite), register both builds with their measurements, approve
# them, boot an attested Nitro image that gets its certificate from the manager after approval
# (simulated evidence under qemu) and verify the audit chain. Everything lives under .work/demo and is removed at the next
# run; the registry and the manager are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/install-deps.sh
cargo build --release --locked -p cloak-cli
cloak="$root/target/release/cloak"

work="$root/.work/demo"
rm -rf "$work" && mkdir -p "$work"
cd "$work"

openssl genrsa -3 -out "$work/enclave-key.pem" 3072 2>/dev/null
echo "== building the example image (busybox from Debian's busybox-static, with umoci)"
umoci init --layout example >/dev/null
umoci new --image example:1.0
umoci unpack --rootless --image example:1.0 bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/etc bundle/rootfs/srv
cp /bin/busybox bundle/rootfs/bin/busybox
for app in sh echo cat ls env id; do ln -sf busybox "bundle/rootfs/bin/$app"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n' > bundle/rootfs/etc/passwd
printf 'root:x:0:\napp:x:1000:\n' > bundle/rootfs/etc/group
printf 'hello from a cloak demo image\n' > bundle/rootfs/srv/greeting.txt
umoci repack --image example:1.0 bundle
umoci config --image example:1.0 --config.entrypoint /bin/sh --config.cmd -c \
  --config.cmd 'cat /srv/greeting.txt; id' --config.workingdir /srv --config.env GREETING=hello

echo "== starting a registry on a free loopback port"
source "$root/scripts/lib/registry.sh"
manager_pid=
cleanup() {
  if [ -n "$manager_pid" ]; then kill "$manager_pid" 2>/dev/null || true; wait "$manager_pid" 2>/dev/null || true; fi
  registry_stop "$work/registry"
}
trap cleanup EXIT
reg=$(registry_start "$work/registry")

echo "== cloak copy oci:example:1.0 docker://$reg/demo/example:1.0"
"$cloak" copy --dest-tls-verify=false oci:example:1.0 "docker://$reg/demo/example:1.0"
echo "== cloak inspect docker://$reg/demo/example:1.0"
"$cloak" inspect --tls-verify=false "docker://$reg/demo/example:1.0"
echo "== cloak ls-files docker://$reg/demo/example:1.0"
"$cloak" ls-files --tls-verify=false "docker://$reg/demo/example:1.0" | head -n 20
echo "== cloak copy docker://$reg/demo/example:1.0 oci:copied:1.0"
"$cloak" copy --src-tls-verify=false "docker://$reg/demo/example:1.0" oci:copied:1.0

echo "== cloak encrypt for an EC P-384 key (ocicrypt JWE), pushed; then decrypted by cloak and by skopeo"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$work/image-key.pem" 2>/dev/null
openssl pkey -in "$work/image-key.pem" -pubout -out "$work/image-key.pub"
"$cloak" encrypt --quiet --dest-tls-verify=false --recipient "jwe:$work/image-key.pub" \
  oci:example:1.0 "docker://$reg/demo/example-encrypted:1.0"
"$cloak" inspect --tls-verify=false "docker://$reg/demo/example-encrypted:1.0" | tail -n 2
"$cloak" decrypt --quiet --src-tls-verify=false --key "$work/image-key.pem" \
  "docker://$reg/demo/example-encrypted:1.0" oci:decrypted:1.0
skopeo copy --quiet --src-tls-verify=false --decryption-key "$work/image-key.pem" \
  "docker://$reg/demo/example-encrypted:1.0" oci:decrypted-by-skopeo:1.0
echo "layers: original $("$cloak" inspect -o json oci:example:1.0 | jq -c '[.layers[].digest]')"
echo "        cloak    $("$cloak" inspect -o json oci:decrypted:1.0 | jq -c '[.layers[].digest]')"
echo "        skopeo   $("$cloak" inspect -o json oci:decrypted-by-skopeo:1.0 | jq -c '[.layers[].digest]')"

echo "== cloak convert --target sgx (Gramine runtime image built from real ELF files: no Gramine build is reachable here)"
source "$root/scripts/lib/images.sh"
gramine_runtime_image "$work/gramine-runtime"
launcher=$(bash "$root/scripts/build-launcher.sh")
"$cloak" convert --target sgx --quiet --src-tls-verify=false --dest-tls-verify=false \
  --runtime-image "oci:$work/gramine-runtime:1" --launcher "$launcher" \
  --signing-key "file:$work/enclave-key.pem" --isvprodid 1 --isvsvn 1 \
  "docker://$reg/demo/example:1.0" "docker://$reg/demo/example-sgx:1.0" \
  | tee "$work/sgx-report.json" || { echo "SGX conversion failed"; exit 1; }
"$cloak" measure --tls-verify=false "docker://$reg/demo/example-sgx:1.0"

echo "== cloak convert --target nitro (Debian cloud kernel), then boot it under qemu"
kernel=$(bash "$root/scripts/fetch-kernel.sh")
"$cloak" convert --target nitro --quiet --src-tls-verify=false --dest-tls-verify=false \
  --kernel "$kernel" --launcher "$launcher" --eif "$work/example.eif" \
  "docker://$reg/demo/example:1.0" "docker://$reg/demo/example-nitro:1.0" -o json > "$work/nitro-report.json"
jq -r '.attributes.nitro_enclave | "PCR0: \(.pcr0)\nPCR1: \(.pcr1)\nPCR2: \(.pcr2)"' "$work/nitro-report.json"
"$cloak" describe-eif "$work/example.eif"
echo "-- booting (console follows)"
"$cloak" run --target nitro --tls-verify=false "docker://$reg/demo/example-nitro:1.0" | tail -n 8

echo "== cloak manager serve on its embedded default (SQLite in $work/manager, TLS, a free loopback port)"
# The administrator's password is generated here and only ever passed through the environment
# and stdin; the session token lands in a 0600 file under this demo's own config directory.
# Its TLS certificate also names 10.0.2.2, where a qemu guest reaches this host; it accepts
# simulated attestation (no TEE here) signed by a key made for the demo.
export XDG_CONFIG_HOME="$work/config"
admin_password=$(openssl rand -hex 16)
(umask 077
 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=cloak-demo-manager \
   -addext "subjectAltName=IP:127.0.0.1,IP:10.0.2.2" \
   -addext basicConstraints=critical,CA:FALSE -keyout "$work/manager-tls.key" \
   -out "$work/manager-tls.crt" 2>/dev/null
 openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/simulation.pem")
openssl pkey -in "$work/simulation.pem" -pubout -out "$work/simulation.pub"
CLOAK_ADMIN_PASSWORD="$admin_password" "$cloak" manager serve --data-dir "$work/manager" \
  --listen 127.0.0.1:0 --admin-user admin --tls-cert "$work/manager-tls.crt" \
  --tls-key "$work/manager-tls.key" --allow-simulated-attestation \
  --simulation-public-key "$work/simulation.pub" 2> "$work/manager.log" &
manager_pid=$!
url=
for _ in $(seq 1 600); do
  url=$(sed -n 's/.*cloak manager: listening on //p' "$work/manager.log" | head -n 1)
  [ -n "$url" ] && break
  kill -0 "$manager_pid" 2>/dev/null || { cat "$work/manager.log"; echo "the manager did not start"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/manager.log"; echo "the manager did not start in 60 s"; exit 1; }
printf '%s\n' "$admin_password" | "$cloak" login --url "$url" --cacert "$work/manager-tls.crt" \
  --user admin --password-stdin

echo "== cloak app create, cloak build register (the measurements of the two conversions above)"
"$cloak" app create --name demo-sgx --input-image "$reg/demo/example:1.0" \
  --output-image "$reg/demo/example-sgx:1.0" >/dev/null
"$cloak" app create --name demo-nitro --input-image "$reg/demo/example:1.0" \
  --output-image "$reg/demo/example-nitro:1.0" >/dev/null
sgx=$work/sgx-report.json nitro=$work/nitro-report.json
sgx_task=$("$cloak" build register -o json --app demo-sgx --image "$reg/demo/example-sgx" --version 1.0 \
  --sha "$(jq -r .imageDigest "$sgx")" --mrenclave "$(jq -r .mrenclave "$sgx")" \
  --mrsigner "$(jq -r .mrsigner "$sgx")" --isvprodid "$(jq -r .isvprodid "$sgx")" \
  --isvsvn "$(jq -r .isvsvn "$sgx")" | jq -r .pending_task_id)
nitro_task=$("$cloak" build register -o json --app demo-nitro --image "$reg/demo/example-nitro" \
  --version 1.0 --pcr0 "$(jq -r .attributes.nitro_enclave.pcr0 "$nitro")" \
  --pcr1 "$(jq -r .attributes.nitro_enclave.pcr1 "$nitro")" \
  --pcr2 "$(jq -r .attributes.nitro_enclave.pcr2 "$nitro")" | jq -r .pending_task_id)
"$cloak" build list
echo "== cloak task approve (the default policy: one approval by a WRITER or MANAGER)"
"$cloak" task approve "$sgx_task" | grep -E "^(Approvals|Build)"
"$cloak" task approve "$nitro_task" | grep -E "^(Approvals|Build)"
"$cloak" build list
source "$root/scripts/lib/attested-demo.sh"
attested_nitro_demo
echo "== cloak audit verify"
"$cloak" audit verify
"$cloak" audit list --limit 8
"$cloak" logout
echo "== done: results in $work"
