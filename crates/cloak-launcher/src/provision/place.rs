//! Where the launcher may write, and how: every write walks the path one component at a time
//! from the image root with `openat(O_NOFOLLOW)` (missing directories made with `mkdirat`), so
//! a symbolic link in the image, or one the app plants later for a renewal, never carries a
//! write as root outside the path that was named. What may be written depends on who chose
//! the path ([`Origin`]): the measured run configuration (certificate files, the trust store)
//! or the manager (config files, which one account writer can set).
//!
//! The rule for config files: a config file is written only at a path that does not exist in
//! the image, or that this launcher wrote earlier in this boot; never at a certificate's key,
//! certificate or chain path; never under the system's code and loader paths or the launcher's
//! own files ([`RESERVED`]). So the manager can add files to an approved image but not replace
//! any of its code.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Paths (and everything below them) no config file may be written to: code, the dynamic
/// loader's configuration, the launcher's own files, and kernel file systems.
pub const RESERVED: &[&str] = &[
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/etc/ld.so.preload",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/init",
    "/cloak",
    "/cloak-data",
    "/cloak-simulation",
    "/dev",
    "/proc",
    "/sys",
];

/// Who chose the path being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The image's measured run configuration (key, certificate, chain, trust store): may
    /// replace a regular file.
    Measured,
    /// The manager's app configs: may create a file, or replace one this launcher wrote.
    Config,
}

/// Why a write was refused or failed.
#[derive(Debug)]
pub enum PlaceError {
    /// The path is not allowed (the reason says which rule and what to do).
    Refused(String),
    /// The file system failed.
    Io(std::io::Error),
}

/// The image root and what the launcher wrote under it in this boot (shared with the renewal
/// process, which is forked with a copy).
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    written: Arc<Mutex<BTreeSet<String>>>,
}

/// The components of an absolute path with no `.`, `..` or empty component, or why not.
pub fn components(p: &str) -> Result<Vec<&str>, String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err("not an absolute path".into());
    };
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err("has an empty, `.` or `..` component (write it as /dir/file)".into());
    }
    Ok(parts)
}

/// Whether `p` (already split by [`components`]) is `reserved` or below it.
fn under(parts: &[&str], reserved: &str) -> bool {
    let r: Vec<&str> = reserved.trim_start_matches('/').split('/').collect();
    parts.len() >= r.len() && parts[..r.len()] == r[..]
}

/// The reserved path `parts` falls under, if any.
pub fn reserved(parts: &[&str]) -> Option<&'static str> {
    RESERVED.iter().copied().find(|r| under(parts, r))
}

fn cstr(s: &str) -> Result<CString, PlaceError> {
    CString::new(s).map_err(|_| PlaceError::Refused("contains a NUL byte".into()))
}

fn last_err() -> PlaceError {
    PlaceError::Io(std::io::Error::last_os_error())
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the file type bits, or None when absent.
fn kind(dir: &OwnedFd, name: &CString) -> Result<Option<libc::mode_t>, PlaceError> {
    // SAFETY: a valid descriptor, a NUL-terminated name and a zeroed stat buffer we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(PlaceError::Io(e));
        }
        Ok(Some(st.st_mode & libc::S_IFMT))
    }
}

fn open_dir_at(dir: &OwnedFd, name: &CString) -> Result<OwnedFd, std::io::Error> {
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A file written beside its place, not yet renamed into it.
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    tmp: Option<CString>,
    name: CString,
    path: String,
    written: Arc<Mutex<BTreeSet<String>>>,
}

impl Staged {
    /// Rename the temporary over the file (atomic: readers see the old or the new file).
    pub fn commit(mut self) -> Result<(), PlaceError> {
        let tmp = self.tmp.take().expect("committed once");
        // SAFETY: valid descriptor and NUL-terminated names.
        let r = unsafe {
            libc::renameat(
                self.dir.as_raw_fd(),
                tmp.as_ptr(),
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
            )
        };
        if r != 0 {
            self.tmp = Some(tmp);
            return Err(last_err());
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(self.path.clone());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            // SAFETY: valid descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), tmp.as_ptr(), 0) };
        }
    }
}

impl Root {
    /// The image root at `dir` (`/` in an image), nothing written yet.
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root {
            dir: dir.into(),
            written: Arc::default(),
        }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Open the directory holding `parts`' last component, making missing directories (0755),
    /// refusing any component that is a symbolic link or not a directory.
    fn parent(&self, p: &str, parts: &[&str]) -> Result<OwnedFd, PlaceError> {
        let root = std::fs::File::open(&self.dir).map_err(PlaceError::Io)?;
        let mut dir = OwnedFd::from(root);
        for (i, c) in parts[..parts.len() - 1].iter().enumerate() {
            let name = cstr(c)?;
            let shown = format!("/{}", parts[..=i].join("/"));
            match kind(&dir, &name)? {
                None => {
                    // SAFETY: a valid descriptor and a NUL-terminated name.
                    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(PlaceError::Io(e));
                        }
                    }
                }
                Some(libc::S_IFDIR) => {}
                Some(libc::S_IFLNK) => {
                    return Err(PlaceError::Refused(format!(
                        "{shown} is a symbolic link in the image, and {p} is not written through one (the launcher writes as root); use a path whose directories are real directories"
                    )))
                }
                Some(_) => {
                    return Err(PlaceError::Refused(format!(
                        "{shown} is not a directory"
                    )))
                }
            }
            // O_NOFOLLOW also catches a link swapped in between the check and the open.
            dir = open_dir_at(&dir, &name).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => PlaceError::Refused(format!(
                    "{shown} is a symbolic link or not a directory; use a path whose directories are real directories"
                )),
                _ => PlaceError::Io(e),
            })?;
        }
        Ok(dir)
    }

    /// Write `data` at `p` (a temporary beside it, then `renameat` over it) with `mode`, owned
    /// by `owner` when running as root, under the rules of `origin`.
    pub fn write(
        &self,
        p: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
        origin: Origin,
    ) -> Result<(), PlaceError> {
        self.stage(p, data, mode, owner, origin)?.commit()
    }

    /// Check `p` and write `data` into a temporary beside it; [`Staged::commit`] renames it
    /// into place. Dropping a staged file removes the temporary.
    pub fn stage(
        &self,
        p: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
        origin: Origin,
    ) -> Result<Staged, PlaceError> {
        let parts = components(p).map_err(PlaceError::Refused)?;
        let dir = self.parent(p, &parts)?;
        let file = parts[parts.len() - 1];
        let name = cstr(file)?;
        let ours = self.written.lock().map(|w| w.contains(p)).unwrap_or(false);
        match kind(&dir, &name)? {
            None => {}
            Some(libc::S_IFREG) if ours || origin == Origin::Measured => {}
            Some(libc::S_IFREG) => {
                return Err(PlaceError::Refused(format!(
                    "{p} exists in the image: a config file may add a file, never replace one of the approved image's; name a path that does not exist"
                )))
            }
            Some(libc::S_IFLNK) => {
                return Err(PlaceError::Refused(format!(
                    "{p} is a symbolic link in the image; name the file itself"
                )))
            }
            Some(_) => {
                return Err(PlaceError::Refused(format!(
                    "{p} exists and is not a regular file"
                )))
            }
        }
        let tmp = cstr(&format!(".{file}.cloak-tmp"))?;
        // SAFETY: valid descriptor and NUL-terminated names; the new descriptor is owned below.
        let fd = unsafe {
            libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0);
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(last_err());
        }
        // SAFETY: a descriptor we just opened and own.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(PlaceError::Io)?;
        // SAFETY: geteuid has no preconditions.
        if let (Some((uid, gid)), 0) = (owner, unsafe { libc::geteuid() }) {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(PlaceError::Io)?;
        }
        drop(f);
        Ok(Staged {
            dir,
            tmp: Some(tmp),
            name,
            path: p.to_string(),
            written: self.written.clone(),
        })
    }

    /// Read a regular file at `p` without following symbolic links; None when absent or not a
    /// regular file.
    pub fn read(&self, p: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let parts = components(p).ok()?;
        let mut dir = OwnedFd::from(std::fs::File::open(&self.dir).ok()?);
        for c in &parts[..parts.len() - 1] {
            dir = open_dir_at(&dir, &cstr(c).ok()?).ok()?;
        }
        let name = cstr(parts[parts.len() - 1]).ok()?;
        // SAFETY: valid descriptor and NUL-terminated name; the descriptor is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor we just opened and own.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut out = Vec::new();
        f.read_to_end(&mut out).ok()?;
        Some(out)
    }
}
