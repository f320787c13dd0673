# Test images for the demo and the benchmarks, built with umoci (no Docker) and cached.

# bench_image DIR SIZE_MIB: a 5-layer image of SIZE_MIB MiB of files (3/4 random, 1/4 text).
bench_image() {
  local image=$1 size_mib=$2
  if [ ! -f "$image/.complete" ]; then
    echo "building a ${size_mib} MiB test image in $image (once; cached)" >&2
    rm -rf "$image" "$image.bundle"
    umoci init --layout "$image" >/dev/null
    umoci new --image "$image:bench"
    layers=5
    per=$((size_mib / layers))
    for i in $(seq 1 $layers); do
      umoci unpack --rootless --image "$image:bench" "$image.bundle" >/dev/null
      d="$image.bundle/rootfs/data/layer$i"
      mkdir -p "$d"
      # Three quarters incompressible, one quarter text, in files of 8 MiB.
      for j in $(seq 1 $((per / 8))); do
        if [ $((j % 4)) -eq 0 ]; then
          head -c $((8 << 20)) < <(yes "cloak benchmark line $i $j: the quick brown fox jumps over the lazy dog") > "$d/text$j.txt"
        else
          head -c $((8 << 20)) /dev/urandom > "$d/random$j.bin"
        fi
      done
      umoci repack --image "$image:bench" "$image.bundle"
      rm -rf "$image.bundle"
    done
    umoci config --image "$image:bench" --config.cmd /bin/true
    touch "$image/.complete"
  fi
}

# gramine_runtime_image DIR: a Gramine runtime image from real ELF files (no Gramine build is
# reachable here): gcc-built PAL and libsysdb, the host's /bin/true as the loader with its libraries.
gramine_runtime_image() {
  local dir=$1 b
  [ -f "$dir/.complete" ] && return 0
  rm -rf "$dir" "$dir.bundle"
  umoci init --layout "$dir" >/dev/null
  umoci new --image "$dir:1"
  umoci unpack --rootless --image "$dir:1" "$dir.bundle" >/dev/null
  b="$dir.bundle/rootfs"
  g="$b/usr/lib/x86_64-linux-gnu/gramine"
  mkdir -p "$g/sgx" "$g/runtime/glibc" "$b/lib/x86_64-linux-gnu" "$b/lib64"
  printf 'int pal_data[1024] = {1}; int pal_bss[4096]; int pal_entry(void) { return pal_data[0] + pal_bss[0]; }\n' > "$dir.pal.c"
  printf 'int libos_init(void) { return 42; }\n' > "$dir.sysdb.c"
  gcc -shared -fPIC -nostdlib -O1 -o "$g/sgx/libpal.so" "$dir.pal.c"
  gcc -shared -fPIC -nostdlib -O1 -o "$g/libsysdb.so" "$dir.sysdb.c"
  cp "$g/libsysdb.so" "$g/runtime/glibc/libc.so.6"
  cp /bin/true "$g/sgx/loader"
  cp /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$b/lib/x86_64-linux-gnu/"
  ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$b/lib64/ld-linux-x86-64.so.2"
  umoci repack --image "$dir:1" "$dir.bundle"
  rm -rf "$dir.bundle" "$dir.pal.c" "$dir.sysdb.c"
  touch "$dir/.complete"
}
