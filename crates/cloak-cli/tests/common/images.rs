//! Test images built here, without Docker or network: OCI layouts written directly (exact,
//! reproducible bytes). Busybox comes from Debian's `busybox-static` (`/bin/busybox`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug)]
pub enum Comp {
    Tar,
    Gzip,
    Zstd,
}

/// One tar entry of a test layer. Names are written raw, so hostile names survive.
pub enum T<'a> {
    Dir(&'a str, u32, u64),
    File(&'a str, u32, u64, &'a [u8]),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Fifo(&'a str),
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Build a tar stream from entries (mtime 1_700_000_000, as a real build would stamp).
pub fn tar(entries: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        let (name, link, data): (&str, Option<&str>, &[u8]) = match e {
            T::Dir(p, mode, uid) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                (p, None, &[])
            }
            T::File(p, mode, uid, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                (p, None, data)
            }
            T::Sym(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                (p, Some(t), &[])
            }
            T::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                (p, Some(t), &[])
            }
            T::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                (p, None, &[])
            }
        };
        h.set_size(data.len() as u64);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            gnu.linkname = [0; 100];
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes an OCI layout one layer at a time.
pub struct Layout {
    pub dir: PathBuf,
    layers: Vec<serde_json::Value>,
    diff_ids: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            layers: Vec::new(),
            diff_ids: Vec::new(),
        }
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    pub fn layer(mut self, comp: Comp, tar_bytes: Vec<u8>) -> Self {
        self.diff_ids.push(sha(&tar_bytes));
        let (data, mt) = match comp {
            Comp::Tar => (tar_bytes, "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar_bytes).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Comp::Zstd => (
                zstd::encode_all(tar_bytes.as_slice(), 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let d = self.blob(&data);
        self.layers
            .push(json!({"mediaType": mt, "digest": d, "size": data.len()}));
        self
    }

    /// Write config, manifest and index; returns the manifest descriptor.
    pub fn finish(self, tag: &str, arch: &str, runtime: serde_json::Value) -> serde_json::Value {
        let desc = self.manifest(arch, runtime);
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [d]});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        desc
    }

    /// Write config and manifest only; returns the manifest descriptor with its platform.
    pub fn manifest(&self, arch: &str, runtime: serde_json::Value) -> serde_json::Value {
        let config = json!({
            "architecture": arch, "os": "linux", "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
            "history": self.diff_ids.iter().map(|_| json!({"created_by": "cloak test fixture"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap();
        let cd = self.blob(&config);
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": self.layers,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let md = self.blob(&manifest);
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
               "platform": {"architecture": arch, "os": "linux"}})
    }
}

/// busybox: `/bin/busybox` with applet symlinks, `/etc/passwd`, an entrypoint. Tag `1`.
pub fn busybox(dir: &Path) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
    let l = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
        T::Sym("bin/echo", "/bin/busybox"),
        T::Sym("bin/cat", "busybox"),
        T::Dir("etc/", 0o755, 0),
        T::File(
            "etc/passwd",
            0o644,
            0,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        T::File("etc/group", 0o644, 0, b"root:x:0:\napp:x:1000:\n"),
    ]);
    let layout = Layout::new(dir).layer(Comp::Gzip, l);
    layout.finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hello"], "Env": ["PATH=/bin"]}),
    );
    dir.to_path_buf()
}

/// Three layers (gzip, tar, gzip) exercising modes, owners, symlinks, a hardlink, a fifo,
/// a whiteout, an opaque directory and overwrites; `zstd = true` makes the middle layer zstd.
pub fn multilayer(dir: &Path, zstd: bool) -> PathBuf {
    let l1 = tar(&[
        T::Dir("app/", 0o755, 0),
        T::File("app/run.sh", 0o755, 0, b"#!/bin/sh\necho multi\n"),
        T::File("app/data.txt", 0o640, 1000, b"payload one"),
        T::Hard("app/data-link.txt", "app/data.txt"),
        T::Sym("app/abs-link", "/app/run.sh"),
        T::Sym("app/rel-link", "../app/data.txt"),
        T::Dir("old/", 0o700, 1000),
        T::File("old/gone.txt", 0o600, 1000, b"deleted later"),
        T::File("old/kept.txt", 0o600, 1000, b"kept"),
        T::Dir("opq/", 0o755, 0),
        T::File("opq/lower.txt", 0o644, 0, b"hidden by opaque"),
        T::Dir("home/app/", 0o750, 1000),
        T::Fifo("app/pipe"),
    ]);
    let l2 = tar(&[
        T::File("old/.wh.gone.txt", 0o644, 0, b""),
        T::Dir("opq/", 0o711, 0),
        T::File("opq/.wh..wh..opq", 0o644, 0, b""),
        T::File("opq/upper.txt", 0o644, 0, b"from layer two"),
        T::File("app/data.txt", 0o644, 0, b"payload two, overwritten"),
    ]);
    let l3 = tar(&[
        T::File("usr/bin/setuid-tool", 0o4755, 0, b"#!/bin/sh\n"),
        T::Sym("app/rel-link", "data.txt"),
        T::File(".wh.home", 0o644, 0, b""),
    ]);
    let layout = Layout::new(dir)
        .layer(Comp::Gzip, l1)
        .layer(if zstd { Comp::Zstd } else { Comp::Tar }, l2)
        .layer(Comp::Gzip, l3);
    layout.finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/app/run.sh"], "WorkingDir": "/app", "User": "1000"}),
    );
    dir.to_path_buf()
}

/// An index with linux/amd64 and linux/arm64 images, each with a marker file. Tag `1`.
pub fn multiarch(dir: &Path) -> PathBuf {
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let l = tar(&[T::File("arch.txt", 0o644, 0, arch.as_bytes())]);
        let layout = Layout::new(dir).layer(Comp::Gzip, l);
        manifests.push(layout.manifest(arch, json!({"Cmd": ["/bin/true"]})));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let bytes = serde_json::to_vec(&index).unwrap();
    let d = sha(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), &bytes).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    dir.to_path_buf()
}

/// A layout whose single layer is `entries` (for hostile cases). Tag `1`.
pub fn single_layer(dir: &Path, entries: &[T]) -> PathBuf {
    Layout::new(dir)
        .layer(Comp::Gzip, tar(entries))
        .finish("1", "amd64", json!({"Cmd": ["/x"]}));
    dir.to_path_buf()
}

fn gcc_shared(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = dir.join(name);
    let status = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-nostdlib", "-O1", "-o"])
        .arg(&out)
        .arg(&c)
        .status()
        .expect("gcc is installed");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// A Gramine runtime image built from real ELF files, as no Gramine build is reachable here:
/// a PAL and a libsysdb compiled with gcc, the host's `/bin/true` as the untrusted loader (its
/// real library closure, libc and ld.so, is in the image), a stand-in `runtime/glibc`.
/// `with_libpal = false` leaves the PAL out. Tag `1`.
pub fn gramine_runtime(dir: &Path, with_libpal: bool) -> PathBuf {
    let work = dir.with_extension("src");
    std::fs::create_dir_all(&work).unwrap();
    let pal = gcc_shared(&work, "libpal.so", "int pal_data[1024] = {1}; int pal_bss[4096]; int pal_entry(void) { return pal_data[0] + pal_bss[0]; }\n");
    let sysdb = gcc_shared(
        &work,
        "libsysdb.so",
        "int libos_init(void) { return 42; }\n",
    );
    let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let ld = std::fs::read("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap();
    let loader = std::fs::read("/bin/true").unwrap();
    let g = "usr/lib/x86_64-linux-gnu/gramine";
    let mut entries = vec![
        T::Dir("usr/", 0o755, 0),
        T::Dir("usr/lib/", 0o755, 0),
        T::Dir("usr/lib/x86_64-linux-gnu/", 0o755, 0),
        T::Dir("lib/", 0o755, 0),
        T::Dir("lib/x86_64-linux-gnu/", 0o755, 0),
        T::File("lib/x86_64-linux-gnu/libc.so.6", 0o755, 0, &libc),
        T::File("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o755, 0, &ld),
        T::Dir("lib64/", 0o755, 0),
        T::Sym(
            "lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ),
    ];
    let names: Vec<String> = [
        "/",
        "/sgx/",
        "/runtime/",
        "/runtime/glibc/",
        "/sgx/loader",
        "/libsysdb.so",
        "/runtime/glibc/libc.so.6",
        "/sgx/libpal.so",
    ]
    .iter()
    .map(|p| format!("{g}{p}"))
    .collect();
    entries.push(T::Dir(&names[0], 0o755, 0));
    entries.push(T::Dir(&names[1], 0o755, 0));
    entries.push(T::Dir(&names[2], 0o755, 0));
    entries.push(T::Dir(&names[3], 0o755, 0));
    entries.push(T::File(&names[4], 0o755, 0, &loader));
    entries.push(T::File(&names[5], 0o755, 0, &sysdb));
    entries.push(T::File(&names[6], 0o755, 0, &sysdb));
    if with_libpal {
        entries.push(T::File(&names[7], 0o755, 0, &pal));
    }
    Layout::new(dir).layer(Comp::Gzip, tar(&entries)).finish(
        "1",
        "amd64",
        json!({"Cmd": ["/bin/true"]}),
    );
    dir.to_path_buf()
}

/// A hostile image from `scripts/lib/hostile_layers.py KIND` (Python's tarfile and raw tar
/// headers, the way an attacker would write them), as an OCI layout with tag `1`.
pub fn hostile(dir: &Path, kind: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/hostile_layers.py");
    super::ok(
        std::process::Command::new("python3")
            .arg(script)
            .arg(kind)
            .arg(dir),
    );
    dir.to_path_buf()
}
