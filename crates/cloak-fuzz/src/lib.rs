//! The bodies of cloak's fuzz targets.
//!
//! `fuzz/` (cargo-fuzz, outside the workspace) calls these functions from its
//! `fuzz_targets/<name>.rs`; `tests/regressions.rs` replays every input under
//! `fuzz/regressions/<name>/` through the same functions in the ordinary test suite, so an
//! input that once crashed or hung keeps being checked without cargo-fuzz. A target "fails" by
//! panicking: each one feeds hostile bytes to a parser and asserts what its callers rely on
//! (round trips, paths that stay inside the root, no panic on any input).
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::OnceLock;

pub mod seeds;

/// A target: panics when the input breaks what its callers rely on.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and regression folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("flatten", flatten),
    ("cpio", cpio),
    ("files_index", files_index),
    ("eif", eif),
    ("sigstruct", sigstruct),
    ("jwe", jwe),
    ("pkcs7", pkcs7),
    ("annotations", annotations),
];

/// Reads structured values off the fuzzer's bytes (zeros once they run out).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A short string: a length byte, then that many bytes (lossy UTF-8).
    fn string(&mut self, max: usize) -> String {
        let n = usize::from(self.u8()) % (max + 1);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// The tar flattener (`cloak_image::flatten`) over one layer stream (tar, gzip or zstd),
/// applied twice so the second pass meets the tree the first one left (whiteouts, links,
/// overwrites). Every path it keeps must be absolute and free of `.` and `..` components.
pub fn flatten(data: &[u8]) {
    use cloak_image::flatten::{ContentMode, Flattener};
    let mut f = Flattener::new(ContentMode::HashOnly).expect("hash-only flattener");
    for layer in ["fuzz-1", "fuzz-2"] {
        if f.apply_layer(layer, data).is_err() {
            // The conversion stops at the first bad layer; so does the target.
            return;
        }
    }
    let fs = f.finish();
    for e in fs.entries() {
        assert!(e.path.starts_with('/'), "relative path {:?}", e.path);
        assert!(
            !e.path.split('/').any(|c| c == ".." || c == "."),
            "unnormalised path {:?}",
            e.path
        );
        // Resolution goes through the image's own symlinks: it must terminate.
        let _ = fs.resolve(&e.path);
    }
}

/// One header of a newc archive as the kernel's initramfs unpacker reads it.
#[derive(Debug, PartialEq, Eq)]
struct NewcEntry {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    name: String,
    data: Vec<u8>,
}

/// A newc reader written from the format description (and the kernel's `init/initramfs.c`
/// behaviour: names end at their first NUL).
fn read_newc(mut b: &[u8]) -> Vec<NewcEntry> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        assert!(b.len() >= 110, "truncated header at {at}");
        assert_eq!(&b[..6], b"070701", "bad magic at {at}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).expect("hex field");
            u32::from_str_radix(s, 16).expect("hex field")
        };
        let (namesize, filesize) = (field(11) as usize, field(6) as usize);
        let name_end = 110 + namesize;
        let raw_name = &b[110..name_end];
        let cut = raw_name.iter().position(|c| *c == 0).expect("name NUL");
        let name = String::from_utf8(raw_name[..cut].to_vec()).expect("UTF-8 name");
        let data_at = name_end.next_multiple_of(4);
        let data_end = data_at + filesize;
        let e = NewcEntry {
            ino: field(0),
            mode: field(1),
            uid: field(2),
            gid: field(3),
            nlink: field(4),
            mtime: field(5),
            rdev: (field(9), field(10)),
            name,
            data: b[data_at..data_end].to_vec(),
        };
        let next = data_end.next_multiple_of(4);
        at += next;
        b = &b[next.min(b.len())..];
        if e.name == "TRAILER!!!" {
            assert!(b.is_empty(), "bytes after the trailer");
            return out;
        }
        out.push(e);
    }
}

/// The newc writer (`cloak_nitro::cpio`): entries built from the input are written, read
/// back the way the kernel reads them, and must come out as given (names, types, modes,
/// owners, hardlink groups, data), or be refused by the writer.
pub fn cpio(data: &[u8]) {
    use cloak_nitro::cpio::{Entry, Kind, Writer};
    let mut c = Cursor(data);
    let n = usize::from(c.u8() % 10);
    let mut entries = Vec::new();
    for _ in 0..n {
        let name = c.string(40);
        let selector = c.u8();
        let (kind, content, group) = match selector % 6 {
            0 => (Kind::Dir, Vec::new(), None),
            1 => (Kind::Fifo, Vec::new(), None),
            2 => (Kind::Char(c.u32(), c.u32()), Vec::new(), None),
            3 => (Kind::Block(c.u32(), c.u32()), Vec::new(), None),
            4 => (Kind::Symlink(c.string(40)), Vec::new(), None),
            _ => {
                let len = usize::from(c.u8());
                let content = c.take(len).to_vec();
                let group = (selector & 0x80 != 0).then_some(u64::from(selector & 3));
                (
                    Kind::File {
                        size: content.len() as u64,
                    },
                    content,
                    group,
                )
            }
        };
        let e = Entry {
            name,
            kind,
            mode: c.u32(),
            uid: c.u32(),
            gid: c.u32(),
            mtime: c.u32(),
            link_group: group,
        };
        entries.push((e, content));
    }
    let mut group_size = BTreeMap::<u64, u32>::new();
    let mut last_of = BTreeMap::<u64, usize>::new();
    for (i, (e, _)) in entries.iter().enumerate() {
        if let Some(g) = e.link_group {
            *group_size.entry(g).or_default() += 1;
            last_of.insert(g, i);
        }
    }
    let mut w = Writer::new(Vec::new());
    let mut expected = Vec::new();
    for (i, (e, content)) in entries.iter().enumerate() {
        let (nlink, carries) = match e.link_group {
            Some(g) => (group_size[&g], last_of[&g] == i),
            None => (1, true),
        };
        let mut reader: &[u8] = content;
        if w.entry(e, nlink, carries, Some(&mut reader as &mut dyn Read))
            .is_err()
        {
            // Refused (e.g. a name the kernel would cut): nothing to compare.
            return;
        }
        expected.push((e.clone(), nlink, carries, content.clone()));
    }
    let (archive, len) = w.finish().expect("trailer");
    assert_eq!(archive.len() as u64, len, "reported length");
    let read = read_newc(&archive);
    assert_eq!(read.len(), expected.len(), "entry count");
    let mut inode_of_group = BTreeMap::new();
    let mut seen_inodes = BTreeMap::new();
    for (r, (e, nlink, carries, content)) in read.iter().zip(&expected) {
        assert_eq!(r.name, e.name, "name");
        assert_eq!(
            (r.uid, r.gid, r.mtime),
            (e.uid, e.gid, e.mtime),
            "owner/time"
        );
        let perm = e.mode & 0o7777;
        let (mode, data, rdev) = match &e.kind {
            Kind::Dir => (0o040000 | perm, Vec::new(), (0, 0)),
            Kind::Fifo => (0o010000 | perm, Vec::new(), (0, 0)),
            Kind::Char(a, b) => (0o020000 | perm, Vec::new(), (*a, *b)),
            Kind::Block(a, b) => (0o060000 | perm, Vec::new(), (*a, *b)),
            Kind::Symlink(t) => (0o120777, t.as_bytes().to_vec(), (0, 0)),
            Kind::File { .. } => (
                0o100000 | perm,
                if *carries {
                    content.clone()
                } else {
                    Vec::new()
                },
                (0, 0),
            ),
        };
        assert_eq!((r.mode, &r.data, r.rdev), (mode, &data, rdev), "{}", e.name);
        if matches!(e.kind, Kind::File { .. }) {
            assert_eq!(r.nlink, *nlink, "nlink of {}", e.name);
        }
        match e.link_group {
            Some(g) => {
                assert_eq!(
                    *inode_of_group.entry(g).or_insert(r.ino),
                    r.ino,
                    "group inode"
                );
                assert!(seen_inodes
                    .insert(r.ino, Some(g))
                    .is_none_or(|o| o == Some(g)));
            }
            None => assert!(seen_inodes.insert(r.ino, None).is_none(), "shared inode"),
        }
    }
}

/// The files index of streamed Nitro ramdisks (`cloak_launcher::files`): any bytes parse or
/// fail cleanly; what parses re-encodes to the same records; records built from the input
/// survive a write and a parse unchanged (or are refused by the writer).
pub fn files_index(data: &[u8]) {
    use cloak_launcher::files::{parse, IndexWriter, Record};
    let reencode = |mtime: u32, records: &[Record]| {
        let mut w = IndexWriter::new(mtime);
        for r in records {
            w.push(r).ok()?;
        }
        Some(w.finish())
    };
    if let Ok((mtime, records)) = parse(data) {
        let again = reencode(mtime, &records).expect("parsed records re-encode");
        assert_eq!(
            parse(&again).expect("re-encoded index parses"),
            (mtime, records)
        );
    }
    let mut c = Cursor(data);
    let mtime = c.u32();
    let records: Vec<Record> = (0..c.u8() % 8)
        .map(|_| Record {
            id: u64::from(c.u32()),
            empty: c.u8() & 1 == 1,
            mode: c.u32() & 0o7777,
            uid: c.u32(),
            gid: c.u32(),
            path: format!("rootfs/{}", c.string(40)),
        })
        .collect();
    if let Some(index) = reencode(mtime, &records) {
        // The reader may refuse paths the writer accepted (e.g. `..`): the init then stops
        // the boot, which is safe; only a silent change would not be.
        if let Ok(parsed) = parse(&index) {
            assert_eq!(parsed, (mtime, records));
        }
    }
}

/// A fixed PCR0 the signature target checks against.
const PCR0: [u8; 48] = [7; 48];

/// The EIF reader (`cloak_nitro::eif::read`, which also checks the signature section) on a
/// file of the input's bytes after the first, or (first byte odd) the signature section
/// parser (`cloak_nitro::sign::check`) on them directly.
pub fn eif(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let _ = cloak_nitro::sign::check(body, &PCR0);
        return;
    }
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("cloak-fuzz-eif-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temporary directory");
        d
    });
    let path = dir.join(format!("{:?}.eif", std::thread::current().id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(body))
        .expect("write the EIF under test");
    let _ = cloak_nitro::eif::read(&path);
}

/// The SIGSTRUCT parser (`cloak_sgx::sigstruct`): the length check, then the display view
/// and the signature verification of the input padded to 1808 bytes.
pub fn sigstruct(data: &[u8]) {
    use cloak_sgx::sigstruct::{parse, verify, view, SIZE};
    let _ = parse(data, "fuzz input");
    let mut s = [0u8; SIZE];
    let n = data.len().min(SIZE);
    s[..n].copy_from_slice(&data[..n]);
    let _ = view(&s, "fuzz input");
    let _ = verify(&s, "fuzz input");
}

/// Fixed keys (the same on every run, so a saved input reproduces): RSA-1024 (small keeps
/// the fuzzer fast; the code paths are those of any size) and P-256.
fn keys() -> &'static [cloak_crypt::keys::PrivateKey] {
    use cloak_crypt::keys::{PrivateKey, Secret};
    use rand::SeedableRng;
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xC10A);
        let rsa = rsa::RsaPrivateKey::new(&mut rng, 1024).expect("RSA key");
        vec![
            PrivateKey {
                secret: Secret::Rsa(Box::new(rsa)),
                source: "fuzz RSA-1024".into(),
            },
            PrivateKey {
                secret: Secret::P256(p256::SecretKey::random(&mut rng)),
                source: "fuzz P-256".into(),
            },
        ]
    })
}

/// The PKCS7 recipient certificate of the fixed RSA key (issuer and serial are arbitrary DER).
fn certificate() -> cloak_crypt::keys::Certificate {
    let cloak_crypt::keys::Secret::Rsa(k) = &keys()[0].secret else {
        unreachable!("the first fixed key is RSA")
    };
    cloak_crypt::keys::Certificate {
        issuer: seeds::ISSUER.to_vec(),
        serial: seeds::SERIAL.to_vec(),
        key: Box::new(k.to_public_key()),
    }
}

/// JWE parsing (`cloak_crypt::jwe`): recipient counting, recipient removal and unwrapping
/// with the fixed keys; removal must never add recipients.
pub fn jwe(data: &[u8]) {
    use cloak_crypt::{jwe, keywrap};
    let n = jwe::recipient_count(data);
    let kid = keywrap::thumbprint(&keys()[0].public());
    let (rest, removed) = jwe::without_kid(data, &kid);
    if let Some(rest) = rest {
        assert!(jwe::recipient_count(&rest) + removed <= n.max(1));
    }
    let _ = jwe::unwrap(data, keys());
}

/// PKCS7 parsing (`cloak_crypt::pkcs7`): counting, removal and unwrapping with the fixed
/// RSA key; removing a recipient from a well-formed message leaves a well-formed one.
pub fn pkcs7(data: &[u8]) {
    use cloak_crypt::pkcs7;
    let _ = pkcs7::recipient_count(data);
    let well_formed = |m: &[u8]| pkcs7::unwrap(m, &[]).is_ok();
    let (rest, removed) = pkcs7::without_recipient(data, seeds::ISSUER, seeds::SERIAL);
    if let Some(rest) = rest {
        if removed > 0 && well_formed(data) {
            assert!(well_formed(&rest), "removal broke a well-formed message");
        }
    }
    let _ = pkcs7::unwrap(data, keys());
}

/// The ocicrypt annotations of a layer (`cloak_crypt::spec`, `keywrap`): lines `key=value`
/// (a key without a dot gets the `org.opencontainers.image.enc.` prefix) go through public
/// options decoding, the recipient summary, unwrapping with the fixed keys, and recipient
/// removal, which must leave no fewer other annotations than it found.
pub fn annotations(data: &[u8]) {
    use cloak_crypt::keyprovider::Config;
    use cloak_crypt::keywrap::{self, Recipient};
    use cloak_crypt::spec;
    let text = String::from_utf8_lossy(data);
    let mut a = BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        let k = if k.contains('.') {
            k.to_string()
        } else {
            format!("{}{k}", spec::ENC_PREFIX)
        };
        a.insert(k, v.to_string());
    }
    let _ = spec::public_options(&a);
    let _ = keywrap::describe(&a);
    if let Ok(Some(opened)) = keywrap::unwrap(&a, keys(), &Config::default()) {
        let _ = serde_json::from_slice::<spec::PrivateOptions>(&opened.privopts).map(|p| p.nonce());
    }
    let recipients = [
        Recipient::Jwe {
            spec: "jwe:fuzz".into(),
            key: keys()[0].public(),
            alg: None,
        },
        Recipient::Pkcs7 {
            spec: "pkcs7:fuzz".into(),
            cert: certificate(),
        },
        Recipient::Provider {
            name: "fuzz".into(),
            params: None,
        },
    ];
    for r in &recipients {
        let mut after = a.clone();
        keywrap::remove(&mut after, r);
        let own = format!("{}{}", spec::KEYS_PREFIX, r.scheme());
        for (k, v) in &a {
            if *k != own {
                assert_eq!(after.get(k), Some(v), "removing {} touched {k}", r.scheme());
            }
        }
    }
}

/// Make the fixed keys before fuzzing starts (the crypto targets' `init`), so that their
/// generation is not timed as the first input.
pub fn init() {
    let _ = keys();
}

/// The fixed keys the crypto targets use (for the seed tests).
pub fn keys_for_tests() -> &'static [cloak_crypt::keys::PrivateKey] {
    keys()
}
