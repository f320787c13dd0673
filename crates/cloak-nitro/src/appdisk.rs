//! The application ramdisk written while the image downloads.
//!
//! A single sorted archive can only start once the last layer is read (a later layer may
//! change any path), and the EIF's two SHA-384 passes over it would then come on top of the
//! download. This newc archive is instead laid out so that file contents are written, hashed
//! and measured as they arrive, and only the small sorted tree waits for the end:
//!
//! 1. `cloak-data/` and then, in layer order, one entry `cloak-data/<n>` per regular-file
//!    content the layers carry (`n` = its number in arrival order, inode `n + 1`);
//! 2. the flattened tree without its regular files, sorted by path: directories, symlinks,
//!    devices, fifos, and the small files cloak adds (`rootfs/cloak/run.json`);
//! 3. `cloak-data/index` ([`cloak_launcher::files`]): the regular files, sorted by path, each
//!    naming its content, owner and mode;
//! 4. the trailer.
//!
//! cloak's init moves the contents into place from the index (hard links for the further
//! names of a hardlink group), then removes `/cloak-data`, which frees the contents that later
//! layers overwrote or deleted. Every entry has `nlink` 1: the kernel's unpacker keeps a
//! 4 KiB record per entry with more links until the archive ends (gigabytes for large images),
//! and on tmpfs every extra link of a file takes an inode slot. The archive is
//! deterministic: it depends only on the layers and the tree.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use cloak_launcher::files::{IndexWriter, Record, INDEX};

use crate::cpio::{pad4, write_header, Header, Kind};
use crate::eif::Part;

/// The directory that holds the contents (outside `rootfs/`, removed by the init).
pub use cloak_launcher::files::DATA_DIR;

/// Chunks sent to the EIF writer.
const CHUNK: usize = 1 << 20;

/// A writer that sends 1 MiB chunks down a channel. Dropped without [`Chunks::finish`], it
/// sends an error instead, so the receiving EIF writer can never mistake an abandoned
/// archive for a complete one. Buffers the receiver gives back are reused (no allocation
/// or zeroing per chunk).
pub struct Chunks {
    tx: Option<SyncSender<io::Result<Vec<u8>>>>,
    spent: Receiver<Vec<u8>>,
    /// The chunk being filled: always `CHUNK` long, filled up to `fill`.
    buf: Vec<u8>,
    fill: usize,
}

/// A stream of chunks from a [`Chunks`] writer into [`crate::eif::write`]: `depth` chunks
/// in flight at most.
pub fn channel(depth: usize) -> (Chunks, Part) {
    let (tx, rx) = std::sync::mpsc::sync_channel(depth);
    let (spent_tx, spent) = std::sync::mpsc::sync_channel(depth + 2);
    (
        Chunks {
            tx: Some(tx),
            spent,
            buf: Vec::new(),
            fill: 0,
        },
        Part::Stream {
            chunks: rx,
            spent: Some(spent_tx),
        },
    )
}

impl Chunks {
    /// Make room: send a full chunk, start a new one.
    fn room(&mut self) -> io::Result<&mut [u8]> {
        if self.fill == CHUNK {
            self.send()?;
        }
        if self.buf.len() != CHUNK {
            let mut b = self.spent.try_recv().unwrap_or_default();
            b.resize(CHUNK, 0);
            self.buf = b;
            self.fill = 0;
        }
        Ok(&mut self.buf[self.fill..])
    }

    fn send(&mut self) -> io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let mut full = std::mem::take(&mut self.buf);
        full.truncate(self.fill);
        self.fill = 0;
        let tx = self.tx.as_ref().expect("not finished");
        tx.send(Ok(full))
            .map_err(|_| io::Error::other("the EIF writer stopped"))
    }

    /// Send what is left and end the stream.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.tx = None;
        Ok(())
    }

    /// Fill chunks straight from `data` (one copy), up to `n` bytes; returns the bytes read.
    fn copy_from(&mut self, data: &mut dyn Read, mut n: u64) -> io::Result<u64> {
        let mut copied = 0;
        while n > 0 {
            let room = self.room()?;
            let want = room.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = match data.read(&mut room[..want]) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.fill += got;
            n -= got as u64;
            copied += got as u64;
        }
        Ok(copied)
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.room()?;
        let n = data.len().min(room.len());
        room[..n].copy_from_slice(&data[..n]);
        self.fill += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(io::Error::other(
                "the application ramdisk was abandoned before its end",
            )));
        }
    }
}

/// What a tree entry carries.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Nothing (directories, symlinks, devices, fifos).
    None,
    /// A regular file whose content was given to [`AppRamdisk::content`] under this number
    /// (`size` bytes; 0-byte contents have no data entry): it goes into the index.
    Content {
        /// The number.
        id: u64,
        /// Its size.
        size: u64,
    },
    /// A regular file written here with these bytes (small files cloak adds).
    Inline(&'a [u8]),
}

/// One entry of the sorted tree.
#[derive(Debug, Clone)]
pub struct TreeEntry<'a> {
    /// Metadata (`kind` and `link_group` are ignored for regular files: see `body`).
    pub meta: crate::cpio::Entry,
    /// Content.
    pub body: Body<'a>,
}

/// Writes the archive: contents first, as they come, then the tree.
pub struct AppRamdisk {
    out: Chunks,
    mtime: u32,
    written: u64,
    /// Content numbers that have a data entry (non-empty contents).
    stored: std::collections::HashSet<u64>,
    next_content: u64,
    content_bytes: u64,
    paths: std::collections::HashMap<u64, String>,
}

impl AppRamdisk {
    /// Start the archive (writes the contents directory).
    pub fn new(out: Chunks, mtime: u32) -> io::Result<Self> {
        let mut a = AppRamdisk {
            out,
            mtime,
            written: 0,
            stored: Default::default(),
            next_content: 0,
            content_bytes: 0,
            paths: Default::default(),
        };
        let h = Header {
            ino: 0,
            mode: 0o040700,
            uid: 0,
            gid: 0,
            nlink: 2,
            mtime,
            size: 0,
            rdev: (0, 0),
        };
        // The directory's inode number is irrelevant to the unpacker (it looks up only
        // regular files with several links), and the contents' come after it: 0.
        a.written += write_header(&mut a.out, &h, DATA_DIR)?;
        Ok(a)
    }

    /// Add content number `id` of `size` bytes read from `data` (exactly `size` bytes).
    /// `path` (the file's path in the image) is kept for messages and [`Self::path_of`].
    pub fn content(
        &mut self,
        id: u64,
        path: &str,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        if id < self.next_content {
            return Err(io::Error::other(format!(
                "content {id} given after {}",
                self.next_content
            )));
        }
        self.next_content = id + 1;
        if size == 0 {
            return Ok(());
        }
        let name = format!("{DATA_DIR}/{id}");
        let h = Header {
            ino: ino_of(id)?,
            mode: 0o100600,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: self.mtime,
            size,
            rdev: (0, 0),
        };
        self.written += write_header(&mut self.out, &h, &name)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        let n = self.out.copy_from(data, size)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: {n} bytes of content, {size} announced"),
            ));
        }
        self.paths.insert(id, path.to_string());
        self.out.write_all(&[0u8; 4][..pad4(size)])?;
        self.written += size + pad4(size) as u64;
        self.stored.insert(id);
        self.content_bytes += size;
        Ok(())
    }

    /// Bytes of file content written so far (every version the layers carried).
    pub fn content_bytes(&self) -> u64 {
        self.content_bytes
    }

    /// The image path a content was written for.
    pub fn path_of(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// The numbers of the contents written (non-empty ones).
    pub fn stored(&self) -> impl Iterator<Item = u64> + '_ {
        self.stored.iter().copied()
    }

    fn entry(&mut self, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
        self.written += write_header(&mut self.out, h, name)?;
        self.out.write_all(data)?;
        self.out.write_all(&[0u8; 4][..pad4(data.len() as u64)])?;
        self.written += (data.len() + pad4(data.len() as u64)) as u64;
        Ok(())
    }

    /// Write the sorted tree, the index of regular files and the trailer, and end the
    /// stream; returns the archive's length. Every non-empty content the tree names must
    /// have been given.
    pub fn finish<'a>(mut self, tree: impl IntoIterator<Item = TreeEntry<'a>>) -> io::Result<u64> {
        // Inodes for everything that is not a content, after the contents' numbers.
        let mut next_ino = ino_of(self.next_content)?;
        let mut fresh = || {
            let i = next_ino;
            next_ino = next_ino.checked_add(1).ok_or_else(|| {
                io::Error::other("more than 4 billion entries in the application ramdisk")
            })?;
            Ok::<u32, io::Error>(i)
        };
        let mut index = IndexWriter::new(self.mtime);
        for t in tree {
            let e = &t.meta;
            let perm = e.mode & 0o7777;
            let mut h = Header {
                ino: 0,
                mode: 0,
                uid: e.uid,
                gid: e.gid,
                nlink: 1,
                mtime: e.mtime,
                size: 0,
                rdev: (0, 0),
            };
            let mut data: &[u8] = &[];
            match t.body {
                Body::Content { id, size } => {
                    if size > 0 && !self.stored.contains(&id) {
                        return Err(io::Error::other(format!(
                            "{}: its content {id} was never given",
                            e.name
                        )));
                    }
                    index.push(&Record {
                        id,
                        empty: size == 0,
                        mode: perm,
                        uid: e.uid,
                        gid: e.gid,
                        path: e.name.clone(),
                    })?;
                    continue;
                }
                Body::Inline(bytes) => {
                    h.mode = 0o100000 | perm;
                    h.ino = fresh()?;
                    h.size = bytes.len() as u64;
                    data = bytes;
                }
                Body::None => {
                    h.ino = fresh()?;
                    match &e.kind {
                        Kind::Dir => {
                            h.mode = 0o040000 | perm;
                            h.nlink = 2;
                        }
                        Kind::Fifo => h.mode = 0o010000 | perm,
                        Kind::Char(a, b) => {
                            h.mode = 0o020000 | perm;
                            h.rdev = (*a, *b);
                        }
                        Kind::Block(a, b) => {
                            h.mode = 0o060000 | perm;
                            h.rdev = (*a, *b);
                        }
                        Kind::Symlink(target) => {
                            crate::cpio::check_symlink_target(&e.name, target)?;
                            h.mode = 0o120777;
                            h.size = target.len() as u64;
                            data = target.as_bytes();
                        }
                        Kind::File { .. } => {
                            return Err(io::Error::other(format!(
                                "{}: a regular file needs a body",
                                e.name
                            )))
                        }
                    }
                }
            }
            self.entry(&h, &e.name, data)?;
        }
        let index = index.finish();
        let h = Header {
            ino: fresh()?,
            mode: 0o100400,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: self.mtime,
            size: index.len() as u64,
            rdev: (0, 0),
        };
        self.entry(&h, INDEX, &index)?;
        let trailer = Header {
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        };
        self.entry(&trailer, "TRAILER!!!", &[])?;
        let len = self.written;
        self.out.finish()?;
        Ok(len)
    }
}

fn ino_of(id: u64) -> io::Result<u32> {
    u32::try_from(id + 1)
        .map_err(|_| io::Error::other("more than 4 billion files in the application ramdisk"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::Entry;

    fn meta(name: &str, kind: Kind, mode: u32) -> Entry {
        // SAFETY: plain system calls without arguments.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Entry {
            name: name.into(),
            kind,
            mode,
            uid,
            gid,
            mtime: 0,
            link_group: None,
        }
    }

    /// The archive as the channel delivers it.
    fn build(
        contents: &[(u64, &[u8])],
        tree: Vec<TreeEntry<'_>>,
    ) -> (io::Result<u64>, Vec<io::Result<Vec<u8>>>) {
        let (chunks, part) = channel(1024);
        let Part::Stream { chunks: rx, .. } = part else {
            unreachable!()
        };
        let result = (|| {
            let mut a = AppRamdisk::new(chunks, 0)?;
            for (id, c) in contents {
                a.content(*id, "/f", c.len() as u64, &mut &c[..])?;
            }
            a.finish(tree)
        })();
        (result, rx.into_iter().collect())
    }

    /// GNU cpio unpacks the archive, the launcher's `place_files` (what the init runs) puts
    /// the regular files in place: the tree the entries describe, nothing else.
    #[test]
    fn unpacked_and_placed_it_is_the_tree_with_shared_inodes_and_no_contents_dir() {
        let tree = vec![
            TreeEntry {
                meta: meta("rootfs", Kind::Dir, 0o755),
                body: Body::None,
            },
            TreeEntry {
                meta: meta("rootfs/a", Kind::File { size: 0 }, 0o640),
                body: Body::Content { id: 1, size: 5 },
            },
            TreeEntry {
                meta: meta("rootfs/b", Kind::File { size: 0 }, 0o4755),
                body: Body::Content { id: 1, size: 5 },
            },
            TreeEntry {
                meta: meta("rootfs/e", Kind::File { size: 0 }, 0o644),
                body: Body::Content { id: 2, size: 0 },
            },
            TreeEntry {
                meta: meta("rootfs/e2", Kind::File { size: 0 }, 0o644),
                body: Body::Content { id: 2, size: 0 },
            },
            TreeEntry {
                meta: meta("rootfs/l", Kind::Symlink("a".into()), 0o777),
                body: Body::None,
            },
            TreeEntry {
                meta: meta("rootfs/run.json", Kind::File { size: 0 }, 0o644),
                body: Body::Inline(b"{}"),
            },
        ];
        let (len, chunks) = build(&[(0, b"overwritten"), (1, b"alpha"), (2, b"")], tree);
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
        assert_eq!(len.unwrap(), bytes.len() as u64);
        // Every header says nlink 1 except directories (the kernel keeps a record per entry
        // with more links until the archive ends).
        let align = |x: usize| x + pad4(x as u64);
        let mut at = 0;
        loop {
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap() as usize
            };
            let (mode, nlink, size, namesize) = (field(1), field(4), field(6), field(11));
            let name = &bytes[at + 110..at + 110 + namesize - 1];
            if name == b"TRAILER!!!" {
                break;
            }
            assert!(
                nlink == 1 || mode & 0o170000 == 0o040000,
                "{}: nlink {nlink}",
                String::from_utf8_lossy(name)
            );
            at = align(align(at + 110 + namesize) + size);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(cloak_launcher::files::place_files(dir.path()).unwrap(), 4);
        let root = dir.path().join("rootfs");
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(root.join("b")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(root.join("e")).unwrap(), b"");
        assert_eq!(std::fs::read(root.join("run.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read_link(root.join("l")).unwrap().to_str(),
            Some("a")
        );
        use std::os::unix::fs::MetadataExt;
        let m = |p: &str| std::fs::metadata(root.join(p)).unwrap();
        assert_eq!(m("a").ino(), m("b").ino(), "a and b are one file");
        assert_eq!(m("a").nlink(), 2);
        assert_eq!(m("e").ino(), m("e2").ino(), "e and e2 are one file");
        // b's mode was applied last to the shared inode.
        assert_eq!(m("a").mode() & 0o7777, 0o4755);
        assert_eq!(m("e").mtime(), 0);
        assert!(!dir.path().join(DATA_DIR).exists(), "contents dir removed");
    }

    #[test]
    fn a_tree_naming_content_never_given_is_an_error_and_the_stream_says_so() {
        let tree = vec![TreeEntry {
            meta: meta("rootfs/a", Kind::File { size: 0 }, 0o644),
            body: Body::Content { id: 7, size: 3 },
        }];
        let (len, chunks) = build(&[(0, b"x")], tree);
        assert!(len.unwrap_err().to_string().contains("never given"));
        assert!(
            chunks.last().unwrap().is_err(),
            "the receiver sees an error last"
        );
    }

    #[test]
    fn short_content_is_an_error() {
        let (chunks, _part) = channel(16);
        let mut a = AppRamdisk::new(chunks, 0).unwrap();
        let err = a.content(0, "/etc/x", 10, &mut &b"abc"[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/x: 3 bytes of content, 10 announced"),
            "{err}"
        );
    }
}
