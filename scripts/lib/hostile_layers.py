#!/usr/bin/env python3
"""Hostile image layers, built the way an attacker would: Python's tarfile and raw tar headers,
gzip-compressed, written as an OCI layout (tag 1) that cloak reads with oci:DIR:1.

    hostile_layers.py KIND OUTDIR [--big]

KIND is one of the names in KINDS below. Without --big the bombs are small (a header that
announces a huge record, followed by little data): enough for the tests, where cloak must
refuse them from the header. With --big they carry their data (scripts/bombs.sh), so a
reader that does not check sizes first really reads gigabytes.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import zlib

MTIME = 1_700_000_000


def octal(n, width):
    return b"%0*o\0" % (width - 1, n)


def header(name, size, typeflag, linkname=b"", mode=0o644):
    """A raw GNU tar header; sizes beyond the octal field use GNU base-256."""
    h = bytearray(512)
    h[0 : min(len(name), 100)] = name[:100]
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    if size < 8**11:
        h[124:136] = octal(size, 12)
    else:
        h[124:136] = b"\x80" + size.to_bytes(11, "big")
    h[136:148] = octal(MTIME, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157 : 157 + len(linkname)] = linkname[:100]
    h[257:265] = b"ustar  \0"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(n):
    return b"\0" * (-n % 512)


def member(name, data=b"", typeflag=b"0", linkname=b""):
    """One entry; names over 100 bytes get a GNU long name record first, as GNU tar writes."""
    long = gnu_long(name) if len(name) > 100 else b""
    return long + header(name, len(data), typeflag, linkname) + data + pad(len(data))


def pax(records, name=b"PaxHeaders/x"):
    body = b""
    for k, v in records:
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec)
        while len(b"%d" % n) + len(rec) != n:
            n = len(b"%d" % n) + len(rec)
        body += b"%d" % n + rec
    return member(name, body, b"x")


def gnu_long(name, typeflag=b"L"):
    data = name + b"\0"
    return header(b"././@LongLink", len(data), typeflag) + data + pad(len(data))


END = b"\0" * 1024


class Layer:
    """Streams tar bytes into a gzip blob while hashing both (blob digest and diff_id)."""

    def __init__(self):
        self.plain = hashlib.sha256()
        self.blob = io.BytesIO()
        self.gz = zlib.compressobj(9, zlib.DEFLATED, 31)

    def write(self, data):
        self.plain.update(data)
        self.blob.write(self.gz.compress(data))

    def zeros(self, n):
        chunk = b"\0" * (1 << 20)
        while n > 0:
            self.write(chunk[: min(n, len(chunk))])
            n -= len(chunk)

    def finish(self):
        self.blob.write(self.gz.flush())
        return self.blob.getvalue(), "sha256:" + self.plain.hexdigest()


def tarfile_layer(add):
    """A layer written by Python's tarfile (PAX format): add(tf) adds the members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf)
    layer = Layer()
    layer.write(buf.getvalue())
    return layer


def tf_file(tf, name, data=b""):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    tf.addfile(info, io.BytesIO(data))


# --- the kinds -------------------------------------------------------------------------


def nul_gnu_long_name(big):
    layer = Layer()
    layer.write(member(b"cloak/", typeflag=b"5"))
    layer.write(gnu_long(b"cloak\0x/run.json"))
    layer.write(member(b"placeholder", b'{"evil":true}'))
    layer.write(END)
    return [layer]


def nul_pax_path(big):
    layer = Layer()
    layer.write(pax([(b"path", b"cloak\0/run.json")]))
    layer.write(member(b"placeholder", b'{"evil":true}'))
    layer.write(END)
    return [layer]


def nul_pax_linkpath(big):
    layer = Layer()
    layer.write(pax([(b"linkpath", b"/etc\0/../cloak")]))
    layer.write(member(b"link", typeflag=b"2", linkname=b"x"))
    layer.write(END)
    return [layer]


def not_utf8(big):
    # Two names that a lossy decoder would merge into one.
    layer = Layer()
    layer.write(member(b"caf\xe9", b"latin-1"))
    layer.write(member(b"caf\xff", b"other"))
    layer.write(END)
    return [layer]


def control_chars(big):
    # Kept (the kernel and runtimes keep them), escaped wherever cloak prints them.
    def add(tf):
        tf_file(tf, "x", b"x")
        tf_file(tf, "evil\n-rw-r--r-- 0:0 forged\x1b[31m", b"data")

    return [tarfile_layer(add)]


def deep_path(big):
    def add(tf):
        tf_file(tf, "d/" * 2000 + "f", b"deep")

    return [tarfile_layer(add)]


def long_path(big):
    # A 200 KB path in a PAX record: a few hundred bytes of gzip.
    def add(tf):
        tf_file(tf, "p" * 200_000, b"long")

    return [tarfile_layer(add)]


def huge_gnu_long_name(big):
    n = (1 << 30) if big else (1 << 40)
    layer = Layer()
    layer.write(header(b"././@LongLink", n, b"L"))
    if big:
        layer.zeros(n)
        layer.write(pad(n))
        layer.write(member(b"f", b"x"))
        layer.write(END)
    else:
        layer.write(b"a" * 4096)
    return [layer]


def huge_pax_record(big):
    n = (1 << 30) if big else (1 << 40)
    layer = Layer()
    layer.write(header(b"PaxHeaders/f", n, b"x"))
    if big:
        rec_head = b"%d comment=" % n
        layer.write(rec_head)
        layer.zeros(n - len(rec_head) - 1)
        layer.write(b"\n")
        layer.write(pad(n))
        layer.write(member(b"f", b"x"))
        layer.write(END)
    else:
        layer.write(b"99 comment=" + b"a" * 4000)
    return [layer]


def many_opaque_markers(big):
    # A lower layer of files in DIRS directories; an upper layer that adds some files, then
    # opaque markers on the root, on d and on every d/sJ in turn. A flattener that scans
    # every node per marker does MARKERS x FILES steps (10^11 with --big).
    dirs, per_dir = 100 if big else 20, 1000
    markers = 900_000 if big else 50_000
    lower = Layer()
    lower.write(member(b"d/", typeflag=b"5"))
    for j in range(dirs):
        lower.write(member(b"d/s%d/" % j, typeflag=b"5"))
        for i in range(per_dir):
            lower.write(member(b"d/s%d/f%d" % (j, i)))
    lower.write(END)
    upper = Layer()
    for j in range(dirs):
        for i in range(per_dir // 2):
            upper.write(member(b"d/s%d/new%d" % (j, i)))
    targets = [b".wh..wh..opq", b"d/.wh..wh..opq"] + [b"d/s%d/.wh..wh..opq" % j for j in range(dirs)]
    for i in range(markers):
        upper.write(member(targets[i % len(targets)]))
    upper.write(END)
    return [lower, upper]


def many_entries(big):
    n = 1_100_000 if big else (1 << 20) + 1
    layer = Layer()
    for i in range(n):
        layer.write(member(b"f%07d" % i))
    layer.write(END)
    return [layer]


def many_whiteouts_deep(big):
    # Whiteouts of nested directories from the innermost out, each over a big subtree.
    depth = 200
    files = 30_000 if big else 2_000
    base = b"/".join(b"n%d" % i for i in range(depth))
    lower = Layer()
    for i in range(files):
        lower.write(member(base + b"/f%d" % i))
    lower.write(END)
    upper = Layer()
    for i in range(files):
        upper.write(member(base + b"/g%d" % i))
    parts = base.split(b"/")
    for k in range(depth, 0, -1):
        upper.write(member(b"/".join(parts[:k]) + b"/.wh..wh..opq"))
    upper.write(END)
    return [lower, upper]


KINDS = {
    "nul-gnu-long-name": nul_gnu_long_name,
    "nul-pax-path": nul_pax_path,
    "nul-pax-linkpath": nul_pax_linkpath,
    "not-utf8": not_utf8,
    "control-chars": control_chars,
    "deep-path": deep_path,
    "long-path": long_path,
    "huge-gnu-long-name": huge_gnu_long_name,
    "huge-pax-record": huge_pax_record,
    "many-opaque-markers": many_opaque_markers,
    "many-entries": many_entries,
    "many-whiteouts-deep": many_whiteouts_deep,
}


def write_layout(out, layers, entrypoint):
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(out, "blobs", "sha256", d), "wb") as f:
            f.write(data)
        return "sha256:" + d, len(data)

    descs, diff_ids = [], []
    for layer in layers:
        data, diff_id = layer.finish()
        d, n = blob(data)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    cd, cn = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": descs,
    }).encode()
    md, mn = blob(manifest)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in KINDS:
        sys.exit("usage: hostile_layers.py {%s} OUTDIR [--big]" % ",".join(KINDS))
    kind, out = sys.argv[1], sys.argv[2]
    big = "--big" in sys.argv[3:]
    write_layout(out, KINDS[kind](big), ["/bin/sh"])


if __name__ == "__main__":
    main()
