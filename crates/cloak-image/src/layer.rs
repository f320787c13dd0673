//! Layer blobs: compression detection, decompression, and the deterministic layer writer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::spec::{self, Compression, Descriptor};

/// Compression from a blob's first bytes (media types lie more often than magic numbers).
pub fn sniff_compression(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Wrap a layer blob in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered.fill_buf()?;
    Ok(match sniff_compression(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    })
}

/// A reader fed by a thread of `scope` that runs `open()` and reads the stream it returns in
/// 256 KiB chunks, up to `depth` chunks ahead: decompression (and the blob's own digest
/// check) then runs on one core while the consumer parses and hashes on another. Errors
/// arrive in order, after the data that preceded them; dropping the reader stops the thread
/// at its next chunk.
pub fn read_ahead<'scope, R, F>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    open: F,
    depth: usize,
) -> ReadAhead
where
    R: Read,
    F: FnOnce() -> io::Result<R> + Send + 'scope,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(depth.max(1));
    scope.spawn(move || {
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    ReadAhead::from_channel(rx)
}

/// The consuming end of [`read_ahead`], or of any channel of chunks.
pub struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    /// Read the chunks another thread sends; end of stream when every sender is dropped.
    pub fn from_channel(rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        ReadAhead {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `SOURCE_DATE_EPOCH` if set and valid, else 0: the mtime cloak stamps on what it writes.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Content of a file in a layer cloak writes.
#[derive(Debug, Clone)]
pub enum FileContent {
    /// Bytes in memory (small generated files).
    Bytes(Vec<u8>),
    /// A file on disk, streamed.
    Path(PathBuf),
}

/// What kind of entry a [`LayerEntry`] is.
#[derive(Debug, Clone)]
pub enum LayerEntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File(FileContent),
    /// A symbolic link to the given target.
    Symlink(String),
}

/// One entry of a layer cloak writes.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    /// Absolute path inside the image (`/usr/lib/x`).
    pub path: String,
    /// Entry kind and content.
    pub kind: LayerEntryKind,
    /// Permission bits (e.g. 0o755).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

impl LayerEntry {
    /// A root-owned regular file.
    pub fn file(path: impl Into<String>, mode: u32, content: FileContent) -> Self {
        LayerEntry {
            path: path.into(),
            kind: LayerEntryKind::File(content),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned directory.
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        LayerEntry {
            path: path.into(),
            kind: LayerEntryKind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// A layer written to disk.
#[derive(Debug)]
pub struct WrittenLayer {
    /// Descriptor of the compressed blob (`tar+gzip`).
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (for the config's `diff_ids`).
    pub diff_id: Digest,
    /// The blob file.
    pub path: PathBuf,
}

fn tar_path(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/');
    if !path.starts_with('/')
        || rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Invalid(format!(
            "layer entry path {path:?} must be absolute and normalised (no '.', '..' or '//')"
        )));
    }
    Ok(rel.to_string())
}

/// Write `entries` as a reproducible `tar+gzip` layer into `dir`: entries sorted by path,
/// mtime `mtime` (use [`source_date_epoch`]), owners as given, no user/group names, gzip header
/// without time or name. The same entries always give the same bytes.
pub fn write_layer(dir: &Path, entries: &[LayerEntry], mtime: u64) -> Result<WrittenLayer> {
    let mut sorted: Vec<(String, &LayerEntry)> = entries
        .iter()
        .map(|e| Ok((tar_path(&e.path)?, e)))
        .collect::<Result<_>>()?;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Invalid(format!(
            "layer entry /{} is given twice",
            w[0].0
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create layer file in", dir, e))?;
    let io_err = |e| Error::io("write layer", tmp.path(), e);
    let file = tmp.reopen().map_err(io_err)?;
    let blob_hash = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(blob_hash, flate2::Compression::default());
    let tar_hash = HashingWriter::new(gz);
    let mut builder = tar::Builder::new(tar_hash);
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in sorted {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mode(entry.mode & 0o7777);
        match &entry.kind {
            LayerEntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), io::empty())
                    .map_err(io_err)?;
            }
            LayerEntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &path, target)
                    .map_err(io_err)?;
            }
            LayerEntryKind::File(FileContent::Bytes(b)) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(b.len() as u64);
                builder
                    .append_data(&mut header, &path, b.as_slice())
                    .map_err(io_err)?;
            }
            LayerEntryKind::File(FileContent::Path(p)) => {
                let f =
                    std::fs::File::open(p).map_err(|e| Error::io("open layer content", p, e))?;
                let len = f
                    .metadata()
                    .map_err(|e| Error::io("stat layer content", p, e))?
                    .len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len);
                builder
                    .append_data(&mut header, &path, f.take(len))
                    .map_err(io_err)?;
            }
        }
    }
    let tar_hash = builder.into_inner().map_err(io_err)?;
    let (diff_id, _, gz) = tar_hash.finish();
    let blob_hash = gz.finish().map_err(io_err)?;
    let (digest, size, mut out) = blob_hash.finish();
    out.flush().map_err(io_err)?;
    drop(out);
    let path = dir.join(format!("{}.tar.gz", digest.hex()));
    tmp.persist(&path)
        .map_err(|e| Error::io("rename layer into place", &path, e.error))?;
    Ok(WrittenLayer {
        descriptor: Descriptor::new(spec::OCI_LAYER_GZIP, digest, size),
        diff_id,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in small pieces, then fails.
    struct ThenFail(Vec<u8>, usize);
    impl Read for ThenFail {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 == self.0.len() {
                return Err(io::Error::other("digest mismatch at the end"));
            }
            let n = buf.len().min(1000).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn read_ahead_delivers_everything_then_the_error() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let err = std::thread::scope(|s| {
            let mut r = read_ahead(s, || Ok(ThenFail(data.clone(), 0)), 2);
            r.read_to_end(&mut got).unwrap_err()
        });
        assert_eq!(got, data);
        assert_eq!(err.to_string(), "digest mismatch at the end");
        // An error opening the source comes first; a reader dropped early stops the thread.
        std::thread::scope(|s| {
            let mut r = read_ahead(s, || Err::<&[u8], _>(io::Error::other("not gzip")), 2);
            assert!(r.read(&mut [0u8; 4]).is_err());
            let mut early = read_ahead(s, || Ok(io::repeat(7)), 1);
            let mut b = [0u8; 10];
            early.read_exact(&mut b).unwrap();
            drop(early);
        });
    }

    fn sample() -> Vec<LayerEntry> {
        vec![
            LayerEntry::file("/b/file", 0o644, FileContent::Bytes(b"hello".to_vec())),
            LayerEntry::dir("/b", 0o755),
            LayerEntry {
                path: "/a-link".into(),
                kind: LayerEntryKind::Symlink("b/file".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
            LayerEntry {
                path: format!("/{}/long", "x".repeat(120)),
                kind: LayerEntryKind::File(FileContent::Bytes(vec![7; 1000])),
                mode: 0o600,
                uid: 1000,
                gid: 1000,
            },
        ]
    }

    #[test]
    fn same_entries_give_identical_bytes_whatever_the_order() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = write_layer(d1.path(), &sample(), 0).unwrap();
        let mut rev = sample();
        rev.reverse();
        let b = write_layer(d2.path(), &rev, 0).unwrap();
        assert_eq!(a.descriptor.digest, b.descriptor.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        let c = write_layer(d2.path(), &sample(), 1).unwrap();
        assert_ne!(a.diff_id, c.diff_id, "mtime is part of the layer");
    }

    #[test]
    fn layer_reads_back_sorted_with_metadata() {
        let d = tempfile::tempdir().unwrap();
        let w = write_layer(d.path(), &sample(), 42).unwrap();
        let blob = std::fs::read(&w.path).unwrap();
        assert_eq!(Digest::of(&blob), w.descriptor.digest);
        let mut plain = Vec::new();
        decompress(blob.as_slice())
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(Digest::of(&plain), w.diff_id);
        let mut ar = tar::Archive::new(plain.as_slice());
        let names: Vec<(String, u32, u64, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(names[0].0, "a-link");
        assert_eq!(names[1], ("b/".to_string(), 0o755, 0, 42));
        assert_eq!(names[2], ("b/file".to_string(), 0o644, 0, 42));
        assert!(names[3].0.ends_with("/long") && names[3].0.len() > 100);
        assert_eq!((names[3].1, names[3].2), (0o600, 1000));
    }

    #[rstest::rstest]
    #[case::relative("etc/x")]
    #[case::dotdot("/etc/../x")]
    #[case::empty("/")]
    #[case::double_slash("/etc//x")]
    fn refuses_unnormalised_paths(#[case] path: &str) {
        let d = tempfile::tempdir().unwrap();
        let e = LayerEntry::file(path, 0o644, FileContent::Bytes(vec![]));
        let msg = write_layer(d.path(), &[e], 0).unwrap_err().to_string();
        assert!(msg.contains(path), "{msg}");
    }

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(sniff_compression(b"usta"), Compression::None);
        assert_eq!(sniff_compression(&[]), Compression::None);
    }
}
