//! A streaming, deterministic newc (`070701`) cpio writer, as the Linux initramfs unpacker reads it.
//!
//! The caller gives entries in the order to write (cloak sorts by path). Inode numbers are
//! assigned 1, 2, 3… in that order; the names of one hardlink group share an inode and `nlink`,
//! and the group's data travels with its last name (GNU cpio's convention, which the kernel
//! also accepts: earlier names are created empty and linked, the last one fills the inode).

use std::io::{self, Read, Write};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes (its data is given to [`Writer::entry`]).
    File {
        /// Size in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink(String),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry's metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the archive, without a leading `/` (e.g. `rootfs/bin/sh`).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// Hardlink group: entries with the same `Some(id)` share an inode.
    pub link_group: Option<u64>,
}

/// Streams entries into a newc archive.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    groups: std::collections::HashMap<u64, u32>,
}

/// The fields of a newc header (device numbers of the archive itself are always 0).
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Inode number; regular files with `nlink >= 2` and equal numbers are one file.
    pub ino: u32,
    /// File type and permission bits (`0o100644`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (the kernel only asks whether it is at least 2).
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Size of the data that follows (the symlink target for symlinks).
    pub size: u64,
    /// Device numbers of character and block devices.
    pub rdev: (u32, u32),
}

/// Refuse a symlink target with a NUL byte (the kernel would cut the target there).
pub fn check_symlink_target(name: &str, target: &str) -> io::Result<()> {
    if target.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: a symlink target with a NUL byte ({target:?})"),
        ));
    }
    Ok(())
}

/// Write one header, its name and the padding after it; returns the bytes written. The
/// data (and its padding, [`pad4`] of its length) is the caller's.
pub fn write_header<W: Write + ?Sized>(out: &mut W, h: &Header, name: &str) -> io::Result<u64> {
    // The kernel's unpacker ends a name at its first NUL: a name with one inside would
    // land somewhere else than the name says (cloak-image refuses such names already).
    if name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: a cpio name with a NUL byte"),
        ));
    }
    if h.size > u32::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?}: {} bytes is over the 4 GiB newc limit per file",
                h.size
            ),
        ));
    }
    let text = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.size,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        name.len() + 1,
        0
    );
    out.write_all(text.as_bytes())?;
    out.write_all(name.as_bytes())?;
    let p = pad4(110 + name.len() as u64 + 1);
    out.write_all(&[0u8; 5][..1 + p])?;
    Ok((110 + name.len() + 1 + p) as u64)
}

/// Zero bytes after `n` bytes of data up to a multiple of four.
pub fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

impl<W: Write> Writer<W> {
    /// Start an archive.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            next_ino: 1,
            groups: Default::default(),
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        e: &Entry,
        nlink: u32,
        size: u64,
        rdev: (u32, u32),
        name: &str,
    ) -> io::Result<()> {
        let h = Header {
            ino,
            mode,
            uid: e.uid,
            gid: e.gid,
            nlink,
            mtime: e.mtime,
            size,
            rdev,
        };
        self.written += write_header(&mut self.out, &h, name)?;
        Ok(())
    }

    /// Write one entry. `nlink` is the size of its hardlink group (1 when alone); `data` must
    /// yield exactly the file's size for the entry that carries the group's data (`carries`),
    /// and is not read otherwise.
    pub fn entry(
        &mut self,
        e: &Entry,
        nlink: u32,
        carries: bool,
        data: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        let ino = match e.link_group {
            Some(g) => match self.groups.get(&g) {
                Some(ino) => *ino,
                None => {
                    let ino = self.next_ino;
                    self.next_ino += 1;
                    self.groups.insert(g, ino);
                    ino
                }
            },
            None => {
                let ino = self.next_ino;
                self.next_ino += 1;
                ino
            }
        };
        if e.name == "TRAILER!!!" {
            // The kernel would stop unpacking here.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an entry named TRAILER!!! would end the archive",
            ));
        }
        let perm = e.mode & 0o7777;
        match &e.kind {
            Kind::Dir => self.header(ino, 0o040000 | perm, e, 2, 0, (0, 0), &e.name),
            Kind::Fifo => self.header(ino, 0o010000 | perm, e, 1, 0, (0, 0), &e.name),
            Kind::Char(a, b) => self.header(ino, 0o020000 | perm, e, 1, 0, (*a, *b), &e.name),
            Kind::Block(a, b) => self.header(ino, 0o060000 | perm, e, 1, 0, (*a, *b), &e.name),
            Kind::Symlink(target) => {
                check_symlink_target(&e.name, target)?;
                self.header(
                    ino,
                    0o120000 | 0o777,
                    e,
                    1,
                    target.len() as u64,
                    (0, 0),
                    &e.name,
                )?;
                self.put(target.as_bytes())?;
                self.put(&[0u8; 4][..pad4(target.len() as u64)])
            }
            Kind::File { size } => {
                let size_here = if carries { *size } else { 0 };
                self.header(ino, 0o100000 | perm, e, nlink, size_here, (0, 0), &e.name)?;
                if size_here > 0 {
                    let data = data.ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: no content", e.name),
                        )
                    })?;
                    let mut limited = data.take(size_here);
                    let n = io::copy(&mut limited, &mut self.out)?;
                    self.written += n;
                    if n != size_here {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{}: content has {n} bytes, {size_here} announced", e.name),
                        ));
                    }
                    let mut probe = [0u8; 1];
                    if limited.into_inner().read(&mut probe)? != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: content is longer than the {size_here} bytes announced",
                                e.name
                            ),
                        ));
                    }
                    self.put(&[0u8; 4][..pad4(size_here)])?;
                }
                Ok(())
            }
        }
    }

    /// Write the trailer and return the writer and the archive's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let t = Entry {
            name: "TRAILER!!!".into(),
            kind: Kind::Fifo,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            link_group: None,
        };
        let h = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            t.name.len() + 1,
            0
        );
        self.put(h.as_bytes())?;
        self.put(t.name.as_bytes())?;
        self.put(&[0])?;
        let p = pad4(110 + t.name.len() as u64 + 1);
        self.put(&[0u8; 4][..p])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn e(name: &str, kind: Kind, mode: u32) -> Entry {
        Entry {
            name: name.into(),
            kind,
            mode,
            uid: 1000,
            gid: 1000,
            mtime: 0,
            link_group: None,
        }
    }

    #[test]
    fn gnu_cpio_extracts_what_we_write() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Writer::new(Vec::new());
        w.entry(&e("d", Kind::Dir, 0o750), 1, true, None).unwrap();
        w.entry(
            &e("d/f", Kind::File { size: 5 }, 0o640),
            1,
            true,
            Some(&mut &b"hello"[..]),
        )
        .unwrap();
        let mut a = e("d/a", Kind::File { size: 3 }, 0o644);
        a.link_group = Some(9);
        let mut b = e("d/b", Kind::File { size: 3 }, 0o644);
        b.link_group = Some(9);
        w.entry(&a, 2, false, None).unwrap();
        w.entry(&b, 2, true, Some(&mut &b"abc"[..])).unwrap();
        w.entry(&e("d/l", Kind::Symlink("f".into()), 0o777), 1, true, None)
            .unwrap();
        let (bytes, len) = w.finish().unwrap();
        assert_eq!(len as usize, bytes.len());
        std::fs::write(tmp.path().join("a.cpio"), &bytes).unwrap();
        let out = Command::new("cpio")
            .args(["-idm", "--no-absolute-filenames", "-F"])
            .arg(tmp.path().join("a.cpio"))
            .current_dir(tmp.path())
            .output()
            .expect("cpio is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::read(tmp.path().join("d/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(tmp.path().join("d/f")).unwrap().mode() & 0o7777,
            0o640
        );
        assert_eq!(std::fs::read(tmp.path().join("d/a")).unwrap(), b"abc");
        assert_eq!(std::fs::read(tmp.path().join("d/b")).unwrap(), b"abc");
        let ia = std::fs::metadata(tmp.path().join("d/a")).unwrap().ino();
        assert_eq!(
            ia,
            std::fs::metadata(tmp.path().join("d/b")).unwrap().ino(),
            "hardlinked"
        );
        assert_eq!(
            std::fs::read_link(tmp.path().join("d/l")).unwrap().to_str(),
            Some("f")
        );
    }

    #[test]
    fn names_and_symlink_targets_with_nul_are_an_error_not_a_panic() {
        let mut w = Writer::new(Vec::new());
        let err = w
            .entry(&e("rootfs/cloak\0x", Kind::Dir, 0o755), 1, false, None)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("NUL"), "{err}");
        let err = w
            .entry(
                &e("rootfs/l", Kind::Symlink("/etc\0/../cloak".into()), 0o777),
                1,
                false,
                None,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("symlink target with a NUL"),
            "{err}"
        );
        let mut out = Vec::new();
        let h = Header {
            ino: 1,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        };
        assert!(write_header(&mut out, &h, "a\0b").is_err());
        assert!(out.is_empty(), "nothing is written for a refused name");
    }

    #[test]
    fn names_the_kernel_would_read_differently_are_refused() {
        let entry = |name: &str, kind: Kind| Entry {
            name: name.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            link_group: None,
        };
        for e in [
            entry("rootfs/cloak\0x", Kind::Dir),
            entry("TRAILER!!!", Kind::Fifo),
            entry("rootfs/l", Kind::Symlink("/etc\0x".into())),
        ] {
            let mut w = Writer::new(Vec::new());
            let err = w.entry(&e, 1, true, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{}", e.name);
        }
    }

    #[test]
    fn content_of_the_wrong_length_is_refused() {
        let mut w = Writer::new(Vec::new());
        let short = w.entry(
            &e("x", Kind::File { size: 5 }, 0o644),
            1,
            true,
            Some(&mut &b"abc"[..]),
        );
        assert!(short
            .unwrap_err()
            .to_string()
            .contains("3 bytes, 5 announced"));
        let mut w = Writer::new(Vec::new());
        let long = w.entry(
            &e("x", Kind::File { size: 2 }, 0o644),
            1,
            true,
            Some(&mut &b"abc"[..]),
        );
        assert!(long.unwrap_err().to_string().contains("longer"));
    }
}
