#!/usr/bin/env bash
# Fetch Debian 12's cloud kernel (a bzImage with the serial console and initramfs support built
# in) as the kernel for local Nitro test boots, and print its path. Cached in .work/kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-$PWD/.work/kernel}
if [ -f "$dest/vmlinuz" ] && [ -d "$dest/modules" ]; then echo "$dest/vmlinuz"; exit 0; fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# The meta package names the current ABI's image package.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq >/dev/null
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
apt-get download "$pkg" >/dev/null 2>&1
dpkg-deb -x ./*.deb extracted
# virtio-net and its dependencies, in load order (from their modinfo depends=), for `cloak run --publish` (Debian 12's modules
# are uncompressed .ko files; the launcher loads them with finit_module).
mkdir -p "$dest/modules"
n=10
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net; do
  cp extracted/lib/modules/*/kernel/$m.ko "$dest/modules/$n-$(basename $m).ko"
  n=$((n + 1))
done
cp extracted/boot/vmlinuz-* "$dest/vmlinuz"
cp extracted/boot/config-* "$dest/config" 2>/dev/null || true
echo "$pkg" > "$dest/package"
echo "$dest/vmlinuz"
