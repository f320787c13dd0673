use super::*;

/// A tar entry for building test layers.
enum T<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn layer(entries: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(5);
        match e {
            T::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            T::File(p, data) => {
                h.set_size(data.len() as u64);
                // Write the name raw so hostile names survive the builder's own checks.
                h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            T::Sym(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
            T::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn flatten_layers(layers: &[Vec<u8>]) -> Result<FlatFs> {
    let mut f = Flattener::new(ContentMode::HashOnly)?;
    for (i, l) in layers.iter().enumerate() {
        f.apply_layer(&format!("L{i}"), l.as_slice())?;
    }
    Ok(f.finish())
}

fn paths(fs: &FlatFs) -> Vec<&str> {
    fs.entries().iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn whiteout_removes_file_and_subtree_from_lower_layers() {
    let l1 = layer(&[
        T::Dir("a/"),
        T::File("a/x", b"1"),
        T::Dir("d/"),
        T::File("d/y", b"2"),
        T::File("keep", b"k"),
    ]);
    let l2 = layer(&[T::File("a/.wh.x", b""), T::File(".wh.d", b"")]);
    let fs = flatten_layers(&[l1, l2]).unwrap();
    assert_eq!(paths(&fs), ["/a", "/keep"]);
}

#[test]
fn opaque_dir_hides_lower_children_but_keeps_same_layer_ones() {
    let l1 = layer(&[
        T::Dir("o/"),
        T::File("o/old", b"1"),
        T::Dir("o/sub/"),
        T::File("o/sub/old2", b"1"),
    ]);
    let l2 = layer(&[
        T::Dir("o/"),
        T::File("o/new", b"2"),
        T::File("o/.wh..wh..opq", b""),
        T::File("o/sub/new2", b"3"),
    ]);
    let fs = flatten_layers(&[l1, l2]).unwrap();
    assert_eq!(paths(&fs), ["/o", "/o/new", "/o/sub", "/o/sub/new2"]);
}

#[test]
fn upper_file_replaces_lower_dir_and_content_hash_is_recorded() {
    let l1 = layer(&[T::Dir("p/"), T::File("p/child", b"c")]);
    let l2 = layer(&[T::File("p", b"now a file")]);
    let fs = flatten_layers(&[l1, l2]).unwrap();
    assert_eq!(paths(&fs), ["/p"]);
    let e = fs.get("/p").unwrap();
    assert_eq!(e.kind, EntryKind::File);
    assert_eq!(e.sha256, Some(Digest::of(b"now a file")));
    assert_eq!(e.size, 10);
}

#[test]
fn hardlinks_share_content_and_survive_deletion_of_the_first_name() {
    let l1 = layer(&[
        T::File("f", b"data"),
        T::Hard("g", "f"),
        T::Hard("h", "./f"),
    ]);
    let fs = flatten_layers(std::slice::from_ref(&l1)).unwrap();
    assert_eq!(fs.get("/f").unwrap().kind, EntryKind::File);
    assert_eq!(
        fs.get("/g").unwrap().kind,
        EntryKind::Hardlink {
            target: "/f".into()
        }
    );
    assert_eq!(fs.get("/h").unwrap().sha256, Some(Digest::of(b"data")));
    let l2 = layer(&[T::File(".wh.f", b"")]);
    let fs = flatten_layers(&[l1, l2]).unwrap();
    assert_eq!(
        fs.get("/g").unwrap().kind,
        EntryKind::File,
        "g becomes the group's first name"
    );
    assert_eq!(
        fs.get("/h").unwrap().kind,
        EntryKind::Hardlink {
            target: "/g".into()
        }
    );
}

#[test]
fn dotdot_and_absolute_names_are_clamped_inside_the_root() {
    let l = layer(&[T::File("../../escape", b"x"), T::File("/abs/file", b"y")]);
    let fs = flatten_layers(&[l]).unwrap();
    assert_eq!(paths(&fs), ["/abs", "/abs/file", "/escape"]);
    assert_eq!(fs.warnings().len(), 2, "{:?}", fs.warnings());
}

#[test]
fn writes_through_symlinks_stay_inside_the_root() {
    // link -> / (absolute) and up -> ../../.. (relative escape): both resolve to the image root.
    let l = layer(&[
        T::Sym("link", "/"),
        T::Sym("up", "../../.."),
        T::Dir("etc/"),
        T::Sym("etc/evil", "/etc/shadow"),
        T::File("link/tmp/x", b"1"),
        T::File("up/y", b"2"),
    ]);
    let fs = flatten_layers(&[l]).unwrap();
    assert_eq!(
        paths(&fs),
        ["/etc", "/etc/evil", "/link", "/tmp", "/tmp/x", "/up", "/y"]
    );
    assert_eq!(
        fs.get("/etc/evil").unwrap().kind,
        EntryKind::Symlink {
            target: "/etc/shadow".into()
        }
    );
}

#[test]
fn hardlink_to_outside_is_refused_with_a_clear_error() {
    let l = layer(&[T::File("inside", b"x"), T::Hard("h", "../../outside")]);
    let err = flatten_layers(&[l]).unwrap_err().to_string();
    assert!(
        err.contains("L0") && err.contains("../../outside") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn symlink_loop_is_an_error_not_a_hang() {
    let l = layer(&[T::Sym("a", "b"), T::Sym("b", "a"), T::File("a/x", b"")]);
    let err = flatten_layers(&[l]).unwrap_err().to_string();
    assert!(err.contains("too many levels"), "{err}");
}

#[test]
fn spooled_content_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Flattener::new(ContentMode::Spool(dir.path().join("s"))).unwrap();
    f.apply_layer(
        "L",
        layer(&[T::File("a", b"alpha"), T::File("b", b"beta")]).as_slice(),
    )
    .unwrap();
    f.apply_layer("M", layer(&[T::File("a", b"replaced")]).as_slice())
        .unwrap();
    let fs = f.finish();
    let mut s = String::new();
    fs.open(fs.get("/a").unwrap())
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "replaced");
    // The overwritten content's spool file is gone: two files remain.
    assert_eq!(std::fs::read_dir(dir.path().join("s")).unwrap().count(), 2);
}

#[test]
fn gzip_and_zstd_layers_give_the_same_tree_and_diff_id() {
    let tarball = layer(&[T::File("z", b"zzz")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(tarball.as_slice(), 3).unwrap();
    for blob in [&tarball, &gz, &zs] {
        let mut f = Flattener::new(ContentMode::HashOnly).unwrap();
        let diff_id = f.apply_layer("L", blob.as_slice()).unwrap();
        assert_eq!(diff_id, Digest::of(&tarball));
        assert_eq!(paths(&f.finish()), ["/z"]);
    }
}

#[test]
fn truncated_layer_is_an_error() {
    let tarball = layer(&[T::File("big", &[1u8; 4096])]);
    let err = flatten_layers(&[tarball[..1024].to_vec()]).unwrap_err();
    assert!(err.to_string().contains("L0"), "{err}");
}

#[test]
fn resolve_follows_symlinks_inside_the_root() {
    let l = layer(&[
        T::Dir("lib/"),
        T::File("lib/libc.so.6", b"libc"),
        T::Sym("lib/libc.so", "libc.so.6"),
        T::Sym("lib64", "/lib"),
        T::Sym("escape", "../../../lib/libc.so"),
        T::Sym("loop", "loop"),
        T::Sym("dangling", "/nope"),
    ]);
    let fs = flatten_layers(&[l]).unwrap();
    let target = |p: &str| fs.resolve(p).map(|e| e.path.clone());
    assert_eq!(target("/lib64/libc.so").as_deref(), Some("/lib/libc.so.6"));
    assert_eq!(target("/escape").as_deref(), Some("/lib/libc.so.6"));
    assert_eq!(target("/loop"), None);
    assert_eq!(target("/dangling"), None);
    assert_eq!(target("/lib/libc.so.6/x"), None);
}

/// What a streaming flattener handed out: (content number, bytes).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records what a streaming flattener hands out.
struct Recorder(Seen);

impl ContentSink for Recorder {
    fn content(&mut self, id: u64, _: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        assert_eq!(v.len() as u64, size);
        self.0.lock().unwrap().push((id, v));
        Ok(())
    }
}

#[test]
fn streaming_hands_out_every_content_in_layer_order_and_the_tree_names_the_final_ones() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut f = Flattener::streaming(Box::new(Recorder(seen.clone())));
    f.apply_layer(
        "L",
        layer(&[
            T::File("a", b"alpha"),
            T::File("b", b"beta"),
            T::Hard("c", "a"),
            T::File("empty", b""),
        ])
        .as_slice(),
    )
    .unwrap();
    f.apply_layer("M", layer(&[T::File("b", b"replaced")]).as_slice())
        .unwrap();
    assert!(f.take_sink().is_some());
    let fs = f.finish();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (0, b"alpha".to_vec()),
            (1, b"beta".to_vec()),
            (2, Vec::new()),
            (3, b"replaced".to_vec())
        ]
    );
    let id = |p: &str| fs.get(p).unwrap().content_id();
    assert_eq!(
        (id("/a"), id("/c"), id("/b"), id("/empty")),
        (Some(0), Some(0), Some(3), Some(2))
    );
    assert!(fs.get("/a").unwrap().sha256.is_none());
}

/// A sink that stops reading half-way (as a failing writer would).
struct Quitter;

impl ContentSink for Quitter {
    fn content(&mut self, _: u64, _: &str, _: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut b = [0u8; 2];
        data.read_exact(&mut b)?;
        Err(io::Error::other("disk full"))
    }
}

#[test]
fn a_failing_sink_stops_the_layer_with_its_error() {
    let mut f = Flattener::streaming(Box::new(Quitter));
    let err = f
        .apply_layer("L", layer(&[T::File("a", b"alpha")]).as_slice())
        .unwrap_err()
        .to_string();
    assert!(err.contains("disk full"), "{err}");
}
