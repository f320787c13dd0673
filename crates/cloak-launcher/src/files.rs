//! The regular files of a streamed Nitro application ramdisk (cloak-nitro's `appdisk`).
//!
//! Such a ramdisk carries every file content as `cloak-data/<n>`, written while the layers
//! download, then the sorted tree of directories, symlinks and devices, then
//! `cloak-data/index`: one record per regular file of the image, sorted by path, naming its
//! content. Before it enters `/rootfs`, the init moves each content to its first path,
//! hard-links the other names of a hardlink group, sets owner, mode and time
//! ([`place_files`]), then removes `cloak-data` (freeing the contents that later layers
//! overwrote or deleted). The index is part of the measured ramdisk (PCR2).
//!
//! Index format: the line `cloak-files 1 <mtime>\n`, then per file the NUL-terminated fields
//! kind (`d`: content `cloak-data/<id>`; `e`: empty, the names of one id share an inode), id,
//! mode (octal, permission bits), uid, gid and path (relative to the ramdisk root, e.g.
//! `rootfs/bin/sh`).

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the contents are, relative to the ramdisk root.
pub const DATA_DIR: &str = "cloak-data";
/// The index, relative to the ramdisk root.
pub const INDEX: &str = "cloak-data/index";
const MAGIC: &str = "cloak-files 1";

/// One regular file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its content number (shared by the names of a hardlink group).
    pub id: u64,
    /// An empty file (no `cloak-data/<id>`).
    pub empty: bool,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Path relative to the ramdisk root (`rootfs/…`).
    pub path: String,
}

/// Encodes the index.
#[derive(Debug)]
pub struct IndexWriter {
    out: Vec<u8>,
}

impl IndexWriter {
    /// Start an index whose files all get modification time `mtime`.
    pub fn new(mtime: u32) -> Self {
        IndexWriter {
            out: format!("{MAGIC} {mtime}\n").into_bytes(),
        }
    }

    /// Add a file (callers give them sorted by path); paths with NUL are refused.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        if r.path.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?}: a path with a NUL byte", r.path),
            ));
        }
        let kind = if r.empty { "e" } else { "d" };
        let rec = format!(
            "{kind}\0{}\0{:o}\0{}\0{}\0{}\0",
            r.id,
            r.mode & 0o7777,
            r.uid,
            r.gid,
            r.path
        );
        self.out.extend_from_slice(rec.as_bytes());
        Ok(())
    }

    /// The encoded index.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{INDEX}: {}", why.into()),
    )
}

/// Decode an index: the files' mtime and records.
pub fn parse(index: &[u8]) -> io::Result<(u32, Vec<Record>)> {
    let nl = index
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header = std::str::from_utf8(&index[..nl]).map_err(|_| bad("header is not text"))?;
    let mtime = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| bad(format!("unknown header {header:?}")))?;
    let body = &index[nl + 1..];
    let mut fields = body.split(|b| *b == 0);
    let mut out = Vec::new();
    while let Some(kind) = fields.next() {
        if kind.is_empty() {
            // The terminator after the last record.
            if fields.next().is_none() {
                break;
            }
            return Err(bad("an empty record"));
        }
        let mut next = |what: &str| {
            fields
                .next()
                .and_then(|f| std::str::from_utf8(f).ok())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("a record without its {what}")))
        };
        // Every value is checked against its type's range, never truncated: a uid of 2^32
        // must not become root, nor a mode outside 0o7777 another file type.
        let num = |s: String, radix: u32, what: &str, max: u64| {
            u64::from_str_radix(&s, radix)
                .ok()
                .filter(|v| *v <= max)
                .ok_or_else(|| bad(format!("{what} {s:?}")))
        };
        let id = num(next("id")?, 10, "id", u64::MAX)?;
        let mode = num(next("mode")?, 8, "mode", 0o7777)? as u32;
        let uid = num(next("uid")?, 10, "uid", u32::MAX.into())? as u32;
        let gid = num(next("gid")?, 10, "gid", u32::MAX.into())? as u32;
        let path = next("path")?;
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(bad(format!("path {path:?}")));
        }
        out.push(Record {
            id,
            empty: match kind {
                b"d" => false,
                b"e" => true,
                _ => return Err(bad("unknown record kind")),
            },
            mode,
            uid,
            gid,
            path,
        });
    }
    Ok((mtime, out))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with NUL"))
}

fn set_time(p: &Path, mtime: u32) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    let c = cpath(p)?;
    // SAFETY: a valid path and two timespecs; AT_SYMLINK_NOFOLLOW touches the entry itself.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Put every regular file of the index under `root` in place (contents moved to their first
/// name, hard links for the others, owner, mode, the index's mtime, and the mtime of the
/// directories that received them),
/// then remove `cloak-data`. Does nothing when there is no index (a ramdisk with the files
/// in its tree). Returns the number of files placed; any failure stops it (the caller must
/// not start the application on a partial tree).
pub fn place_files(root: &Path) -> io::Result<usize> {
    let index_path = root.join(INDEX);
    let index = match std::fs::read(&index_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (mtime, records) = parse(&index)?;
    let data = root.join(DATA_DIR);
    // The first name of a content takes it (rename: on tmpfs every extra link costs an inode
    // slot); later names of the same content are hard links to that first name.
    let mut first: HashMap<(bool, u64), PathBuf> = HashMap::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let fail = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    for r in &records {
        let target = root.join(&r.path);
        match first.get(&(r.empty, r.id)) {
            Some(name) => {
                std::fs::hard_link(name, &target).map_err(|e| fail("linking", &target, e))?
            }
            None => {
                if r.empty {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)
                        .map_err(|e| fail("creating", &target, e))?;
                } else {
                    let content = data.join(r.id.to_string());
                    std::fs::rename(&content, &target).map_err(|e| fail("moving", &target, e))?;
                }
                first.insert((r.empty, r.id), target.clone());
            }
        }
        // Owner before mode: chown clears the setuid and setgid bits.
        std::os::unix::fs::chown(&target, Some(r.uid), Some(r.gid))
            .map_err(|e| fail("chown", &target, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(r.mode))
            .map_err(|e| fail("chmod", &target, e))?;
        set_time(&target, mtime).map_err(|e| fail("setting the time of", &target, e))?;
        if let Some(parent) = target.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    std::fs::remove_dir_all(&data).map_err(|e| fail("removing", &data, e))?;
    for d in dirs {
        set_time(&d, mtime).map_err(|e| fail("setting the time of", &d, e))?;
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, empty: bool, path: &str) -> Record {
        Record {
            id,
            empty,
            mode: 0o4755,
            uid: 7,
            gid: 8,
            path: path.into(),
        }
    }

    #[test]
    fn the_index_round_trips() {
        let mut w = IndexWriter::new(1234);
        let records = vec![rec(3, false, "rootfs/a b\nc"), rec(4, true, "rootfs/é")];
        for r in &records {
            w.push(r).unwrap();
        }
        assert_eq!(parse(&w.finish()).unwrap(), (1234, records));
        assert_eq!(parse(&IndexWriter::new(0).finish()).unwrap(), (0, vec![]));
    }

    #[test]
    fn hostile_indexes_are_refused() {
        for (body, why) in [
            (&b"cloak-files 2 0\n"[..], "unknown header"),
            (
                b"cloak-files 1 0\nd\x001\x00644\x000\x000\x00rootfs/../etc/x\x00",
                "path",
            ),
            (
                b"cloak-files 1 0\nd\x001\x00644\x000\x000\x00/etc/x\x00",
                "path",
            ),
            (
                b"cloak-files 1 0\nx\x001\x00644\x000\x000\x00rootfs/x\x00",
                "kind",
            ),
            (
                b"cloak-files 1 0\nd\x00one\x00644\x000\x000\x00rootfs/x\x00",
                "id",
            ),
            (b"cloak-files 1 0\nd\x001\x00644\x000\x00", "gid"),
            // Out of range: never truncated (2^32 would become uid 0, 0o17777 a type bit).
            (
                b"cloak-files 1 0\nd\x001\x00644\x004294967296\x000\x00rootfs/x\x00",
                "uid",
            ),
            (
                b"cloak-files 1 0\nd\x001\x0017777\x000\x000\x00rootfs/x\x00",
                "mode",
            ),
        ] {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let mut w = IndexWriter::new(0);
        assert!(w.push(&rec(1, false, "rootfs/a\0b")).is_err());
    }

    #[test]
    fn a_missing_content_stops_placing_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cloak-data")).unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        let mut w = IndexWriter::new(0);
        w.push(&rec(9, false, "rootfs/app")).unwrap();
        std::fs::write(dir.path().join(INDEX), w.finish()).unwrap();
        let err = place_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("rootfs/app"), "{err}");
        // No index: nothing to do.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(place_files(empty.path()).unwrap(), 0);
    }
}
