#!/usr/bin/env bash
# The main job on embedded defaults: build an example image without Docker, push it to a local
# registry started for the purpose (loopback, port chosen at run time), inspect it, list its
# files, copy it back into an OCI layout, encrypt and decrypt it (cross-checked with skopeo),
# convert it for SGX and for Nitro Enclaves and boot the Nitro image under qemu. Everything lives under .work/demo and is removed
# at the next run; the registry is stopped on exit.
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
trap 'registry_stop "$work/registry"' EXIT
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
  2>&1 | tee "$work/sgx-report.json" || { echo "SGX conversion failed"; exit 1; }
"$cloak" measure --tls-verify=false "docker://$reg/demo/example-sgx:1.0"

echo "== cloak convert --target nitro (Debian cloud kernel), then boot it under qemu"
kernel=$(bash "$root/scripts/fetch-kernel.sh")
"$cloak" convert --target nitro --quiet --src-tls-verify=false --dest-tls-verify=false \
  --kernel "$kernel" --launcher "$launcher" --eif "$work/example.eif" \
  "docker://$reg/demo/example:1.0" "docker://$reg/demo/example-nitro:1.0" -o text
"$cloak" describe-eif "$work/example.eif"
echo "-- booting (console follows)"
"$cloak" run --target nitro --tls-verify=false "docker://$reg/demo/example-nitro:1.0" | tail -n 8
echo "== done: results in $work"
