//! Hostile layers written as raw tar bytes, the way an attacker would: names with NUL or
//! invalid UTF-8, records that announce gigabytes, paths past PATH_MAX, whiteout storms.
//! Each must end in a clear error naming the limit, or in a safe result.

use super::*;

const MTIME: u64 = 1_700_000_000;

/// A raw GNU header (sizes too big for octal use GNU base-256, as GNU tar writes them).
fn header(name: &[u8], size: u64, kind: u8, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 8u64.pow(11) {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(format!("{MTIME:011o}\0").as_bytes());
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar  \0");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn member(name: &[u8], kind: u8, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = header(name, data.len() as u64, kind, link);
    m.extend_from_slice(data);
    m.resize(m.len() + (512 - data.len() % 512) % 512, 0);
    m
}

fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
    member(name, b'0', b"", data)
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = 3 + k.len() + v.len(); // ' ', '=', '\n'
        let mut n = rest + 1;
        while n.to_string().len() + rest != n {
            n = n.to_string().len() + rest;
        }
        body.extend_from_slice(format!("{n} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    member(b"PaxHeaders/x", b'x', b"", &body)
}

fn gnu_long(name: &[u8], kind: u8) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    member(b"././@LongLink", kind, b"", &data)
}

fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = parts.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn apply(layers: &[Vec<u8>]) -> Result<FlatFs> {
    let mut f = Flattener::new(ContentMode::HashOnly)?;
    for (i, l) in layers.iter().enumerate() {
        f.apply_layer(&format!("L{i}"), l.as_slice())?;
    }
    Ok(f.finish())
}

fn refused(layers: &[Vec<u8>]) -> String {
    match apply(layers) {
        Ok(fs) => panic!(
            "accepted: {:?}",
            fs.entries().iter().map(|e| &e.path).collect::<Vec<_>>()
        ),
        Err(e) => e.to_string(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[rstest::rstest]
#[case::gnu_long_name(vec![gnu_long(b"cloak\0x/run.json", b'L'), file(b"x", b"{}")], "entry cloak\\0x/run.json contains a NUL byte")]
#[case::pax_path(vec![pax(&[("path", b"cloak\0/run.json")]), file(b"x", b"{}")], "entry cloak\\0/run.json contains a NUL byte")]
#[case::pax_linkpath(vec![pax(&[("linkpath", b"/etc\0/../cloak")]), member(b"l", b'2', b"x", b"")], "link target /etc\\0/../cloak contains a NUL byte")]
#[case::gnu_long_link(vec![gnu_long(b"/x\0y", b'K'), member(b"h", b'1', b"x", b"")], "link target /x\\0y contains a NUL byte")]
#[case::latin1(vec![file(b"caf\xe9", b"1")], "entry caf\\xe9 is not UTF-8")]
#[case::latin1_target(vec![member(b"l", b'2', b"caf\xe9", b"")], "link target caf\\xe9 is not UTF-8")]
fn nul_and_non_utf8_names_are_refused_naming_layer_and_entry(
    #[case] parts: Vec<Vec<u8>>,
    #[case] want: &str,
) {
    let err = refused(&[archive(&parts)]);
    assert!(err.starts_with("layer L0: "), "{err}");
    assert!(err.contains(want), "{err}");
}

#[test]
fn trailing_nuls_end_a_name_as_every_reader_agrees() {
    // A GNU long name padded with several NULs, and a PAX path with one.
    let mut long = [&b"usr/share/"[..], &[b'n'; 120]].concat();
    let mut data = long.clone();
    data.extend_from_slice(&[0, 0, 0]);
    let fs = apply(&[archive(&[
        member(b"././@LongLink", b'L', b"", &data),
        file(b"x", b"1"),
        pax(&[("path", b"etc/hosts\0")]),
        file(b"y", b"2"),
    ])])
    .unwrap();
    long.insert(0, b'/');
    let want = String::from_utf8(long).unwrap();
    assert_eq!(
        paths(&fs),
        ["/etc", "/etc/hosts", "/usr", "/usr/share", &want]
    );
}

fn paths(fs: &FlatFs) -> Vec<&str> {
    fs.entries().iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn control_characters_are_kept_distinct_and_escaped_in_messages() {
    let fs = apply(&[archive(&[
        file(b"a\nb", b"1"),
        file(b"a\rb", b"2"),
        file(b"a\\nb", b"3"),
    ])])
    .unwrap();
    assert_eq!(paths(&fs), ["/a\nb", "/a\rb", "/a\\nb"]);
    let err = refused(&[archive(&[
        file(b"evil\n\x1b[31m", b"1"),
        member(b"evil\n\x1b[31m/x", b'0', b"", b""),
    ])]);
    assert!(
        err.contains("/evil\\n\\u{1b}[31m is not a directory"),
        "{err}"
    );
    assert!(!err.contains('\n') && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn records_announcing_gigabytes_are_refused_from_their_header() {
    // Only the header is there: a reader that believed it would wait for a terabyte.
    for (kind, want) in [
        (
            b'L',
            "a GNU long name of 1099511627776 bytes, over the limit of 4096 bytes",
        ),
        (b'K', "a GNU long link name of 1099511627776 bytes"),
        (
            b'x',
            "a PAX extended header of 1099511627776 bytes, over the limit of 1048576",
        ),
        (b'g', "a PAX extended header of 1099511627776 bytes"),
    ] {
        let mut blob = header(b"././@LongLink", 1 << 40, kind, b"");
        blob.extend_from_slice(&[b'a'; 4096]);
        let err = refused(&[blob]);
        assert!(err.contains(want), "{err}");
        assert!(err.starts_with("layer L0: entry #1: "), "{err}");
    }
    // Just over and just under the limits.
    let long = vec![b'n'; 4096];
    let err = refused(&[archive(&[gnu_long(&long, b'L'), file(b"x", b"")])]);
    assert!(err.contains("GNU long name of 4097 bytes"), "{err}");
    let ok = vec![b'n'; 4095];
    assert!(apply(&[archive(&[gnu_long(&ok, b'L'), file(b"x", b"")])]).is_ok());
    let big = vec![b'v'; (1 << 20) - 64];
    let fs = apply(&[archive(&[pax(&[("comment", &big)]), file(b"x", b"1")])]).unwrap();
    assert_eq!(paths(&fs), ["/x"]);
}

#[rstest::rstest]
#[case::long_path(vec![b'p'; 200_000], "is 200000 bytes long, over the limit of 4095 bytes")]
#[case::just_too_long(vec![b'p'; 4096], "is 4096 bytes long")]
#[case::deep_path(b"d/".repeat(300), "has 300 components, over the limit of 256 directory levels")]
fn paths_over_path_max_or_too_deep_are_refused(#[case] name: Vec<u8>, #[case] want: &str) {
    let err = refused(&[archive(&[pax(&[("path", &name)]), file(b"x", b"")])]);
    assert!(err.contains(want), "{err}");
    assert!(
        err.len() < 1000,
        "the message quotes a bounded part of the name"
    );
}

#[test]
fn a_200_kb_path_fits_in_a_few_hundred_bytes_of_gzip_and_is_refused() {
    let layer = archive(&[pax(&[("path", &vec![b'p'; 200_000])]), file(b"x", b"")]);
    let blob = gzip(&layer);
    assert!(blob.len() < 1000, "{} bytes", blob.len());
    let err = refused(&[blob]);
    assert!(err.contains("200000 bytes long"), "{err}");
}

#[test]
fn the_longest_and_deepest_names_allowed_still_work() {
    let long = vec![b'a'; 4095];
    let deep = [b"d/".repeat(255), b"f".to_vec()].concat();
    let fs = apply(&[archive(&[
        pax(&[("path", &long)]),
        file(b"x", b"1"),
        pax(&[("path", &deep)]),
        file(b"y", b"2"),
    ])])
    .unwrap();
    assert_eq!(fs.entries().len(), 1 + 255 + 1);
    assert!(fs.get(&format!("/{}", "a".repeat(4095))).is_some());
}

#[test]
fn symlinks_cannot_make_a_resolved_path_longer_than_path_max() {
    // `l` -> a 3765-byte directory path: `l/<502 bytes>/f` is short, where it lands is not.
    let dir = vec!["d".repeat(250); 15].join("/");
    let name = format!("l/{}/{}/f", "e".repeat(250), "e".repeat(250));
    let err = refused(&[archive(&[
        member(format!("{dir}/").as_bytes(), b'5', b"", b""),
        pax(&[("path", format!("{dir}/").as_bytes())]),
        member(b"d/", b'5', b"", b""),
        pax(&[("linkpath", format!("/{dir}").as_bytes())]),
        member(b"l", b'2', b"x", b""),
        pax(&[("path", name.as_bytes())]),
        file(b"x", b"1"),
    ])]);
    assert!(err.contains("reaches a path of over 4095 bytes"), "{err}");
}

#[test]
fn a_pax_size_record_keeps_the_guard_in_step_with_tar_rs() {
    // The header says 0 bytes, PAX says 600: tar-rs reads 600 (two blocks); a guard that
    // took the header's word would take the second block for a header.
    let mut data = vec![b'z'; 600];
    data[512..524].copy_from_slice(&header(b"fake", 1 << 40, b'L', b"")[..12]);
    let mut fake = header(b"x", 0, b'0', b"");
    fake.extend_from_slice(&data);
    fake.resize(512 + 1024, 0);
    let fs = apply(&[archive(&[
        pax(&[("size", b"600")]),
        fake,
        file(b"y", b"after"),
    ])])
    .unwrap();
    assert_eq!(paths(&fs), ["/x", "/y"]);
    assert_eq!(fs.get("/x").unwrap().size, 600);
}

#[test]
fn data_after_the_end_of_the_archive_is_bounded() {
    let mut ok = archive(&[file(b"x", b"1")]);
    ok.resize(ok.len() + 9 * 1024, 0);
    assert!(apply(&[ok]).is_ok());
    let mut bomb = archive(&[file(b"x", b"1")]);
    bomb.resize(bomb.len() + (2 << 20), 0);
    let err = refused(&[gzip(&bomb)]);
    assert!(
        err.contains("more than 1048576 bytes follow the end"),
        "{err}"
    );
}

#[test]
fn repeated_opaque_markers_and_whiteouts_are_one_range_each() {
    let mut lower = vec![
        member(b"d/", b'5', b"", b""),
        member(b"d/sub/", b'5', b"", b""),
    ];
    for i in 0..2000 {
        lower.push(file(format!("d/{i}").as_bytes(), b""));
        lower.push(file(format!("d/sub/{i}").as_bytes(), b""));
    }
    let mut upper = vec![file(b"d/sub/new", b"n")];
    for _ in 0..20_000 {
        upper.push(file(b"d/.wh..wh..opq", b""));
        upper.push(file(b".wh.d", b""));
        upper.push(file(b"d/sub/.wh.0", b""));
    }
    let fs = apply(&[archive(&lower), archive(&upper)]).unwrap();
    // `d` and `d/sub` lead to what this layer added, so they stay; nothing else lower does.
    assert_eq!(paths(&fs), ["/d", "/d/sub", "/d/sub/new"]);
}

#[test]
fn a_whiteout_of_a_directory_keeps_the_way_to_what_its_own_layer_added() {
    let lower = archive(&[member(b"a/", b'5', b"", b""), file(b"a/old", b"1")]);
    let upper = archive(&[file(b"a/new", b"2"), file(b".wh.a", b"")]);
    let fs = apply(&[lower, upper]).unwrap();
    assert_eq!(paths(&fs), ["/a", "/a/new"]);
}

/// A reader that counts what is read from it (shared with the test).
struct Tally<R>(R, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn limited(max_bytes: u64) -> Flattener {
    let mut f = Flattener::new(ContentMode::HashOnly).unwrap();
    f.limit(
        ImageLimit {
            max_bytes,
            raise: "raise --max-image-bytes".into(),
        },
        "registry.example/bomb:1",
    );
    f
}

#[test]
fn a_gzip_bomb_is_refused_while_it_decompresses_not_after() {
    // One file announcing 1 GiB of zeros, compressed while it is read (about 1 MiB of gzip):
    // the flattener must stop near the 4 MiB limit, long before the encoder is asked for
    // the gigabyte.
    const FILE: u64 = 1 << 30;
    let plain = io::Cursor::new(header(b"bomb", FILE, b'0', b""))
        .chain(io::repeat(0).take(FILE))
        .chain(io::Cursor::new(vec![0u8; 1024]));
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gz =
        flate2::read::GzEncoder::new(Tally(plain, consumed.clone()), flate2::Compression::fast());
    let mut f = limited(4 << 20);
    let err = f.apply_layer("sha256:bomb", gz).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ImageTooLarge { .. }), "{err:?}");
    for part in [
        "registry.example/bomb:1",
        "4 MiB (4194304 bytes) uncompressed",
        "raise --max-image-bytes",
        "tagged no image",
    ] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }
    // What was decompressed: the limit, the read-ahead (8 chunks of 256 KiB) and buffers.
    let n = consumed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        n < 16 << 20,
        "{n} bytes were decompressed before the refusal"
    );
}

#[test]
fn the_limit_counts_every_layer_of_the_image_and_an_exact_fit_passes() {
    let layer = archive(&[file(b"a", &[1u8; 1000])]);
    let size = layer.len() as u64; // header, data padded to 1024, two end blocks
    let mut f = limited(2 * size);
    f.apply_layer("L0", gzip(&layer).as_slice()).unwrap();
    f.apply_layer("L1", layer.as_slice()).unwrap();
    assert_eq!(f.unpacked_bytes(), 2 * size);
    let mut f = limited(2 * size - 1);
    f.apply_layer("L0", layer.as_slice()).unwrap();
    let err = f.apply_layer("L1", gzip(&layer).as_slice()).unwrap_err();
    assert!(
        matches!(err, Error::ImageTooLarge { limit, .. } if limit == 2 * size - 1),
        "{err:?}"
    );
}

#[test]
fn sizes_are_read_as_operators_write_them() {
    for (text, bytes) in [
        ("1048576", 1u64 << 20),
        ("16G", 16 << 30),
        ("16GiB", 16 << 30),
        ("500M", 500 << 20),
        ("2 TB", 2 << 40),
        ("4k", 4096),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in ["", "G", "1.5G", "-1", "0", "16X", "99999999999T"] {
        let e = parse_size(bad).unwrap_err();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}
