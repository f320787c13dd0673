//! Which files the enclave trusts (hashed into the manifest), which it may use unprotected,
//! and which are encrypted: roDirs, rwDirs and encryptedDirs of the EnclaveOS options.

use cloak_image::flatten::{EntryKind, FlatFs};

use crate::error::{Error, Result};

/// Never trusted: kernel-provided pseudo file systems.
const PSEUDO: &[&str] = &["/proc", "/sys", "/dev"];

/// The three directory classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirClasses {
    /// Integrity-protected (trusted files).
    pub ro: Vec<String>,
    /// Unprotected read-write (allowed files).
    pub rw: Vec<String>,
    /// Encrypted with keys provisioned at run time.
    pub encrypted: Vec<String>,
}

/// Normalise and validate an option path (absolute, no `.`/`..`, no trailing slash).
pub fn normalise(path: &str, option: &str) -> Result<String> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "." || c == "..") {
        return Err(Error::Options(format!(
            "{option} entry {path:?} must be an absolute path without . or .."
        )));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    })
}

/// Whether `path` is `dir` or inside it.
pub fn under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

impl DirClasses {
    /// Build from the options, with the seed's defaults for what is not given.
    pub fn new(
        ro: Option<&[String]>,
        rw: Option<&[String]>,
        encrypted: Option<&[String]>,
    ) -> Result<Self> {
        let norm = |v: Option<&[String]>, default: &[&str], option: &str| -> Result<Vec<String>> {
            match v {
                Some(v) => v.iter().map(|p| normalise(p, option)).collect(),
                None => Ok(default.iter().map(|s| s.to_string()).collect()),
            }
        };
        let classes = DirClasses {
            ro: norm(ro, &["/"], "roDirs")?,
            rw: norm(
                rw,
                &["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"],
                "rwDirs",
            )?,
            encrypted: norm(
                encrypted,
                &["/tmp", "/run", "/cloak/app-config/rw"],
                "encryptedDirs",
            )?,
        };
        for e in &classes.encrypted {
            if e == "/" {
                return Err(Error::Options(
                    "encryptedDirs cannot contain / (the root holds the runtime)".into(),
                ));
            }
            if let Some(r) = classes.rw.iter().find(|r| under(e, r) || under(r, e)) {
                return Err(Error::Options(format!(
                    "{e} is both encrypted and read-write ({r}); pick one class"
                )));
            }
        }
        Ok(classes)
    }

    /// Whether a file at `path` is trusted.
    pub fn trusted(&self, path: &str) -> bool {
        self.ro.iter().any(|d| under(path, d))
            && !self.rw.iter().any(|d| under(path, d))
            && !self.encrypted.iter().any(|d| under(path, d))
            && !PSEUDO.iter().any(|d| under(path, d))
    }
}

/// `(path, sha256 hex)` of every trusted regular file of `fs`; a symlink to a regular file is
/// its own entry hashed through the link (as Gramine's signer does), a dangling one is skipped.
pub fn trusted_files(fs: &FlatFs, classes: &DirClasses) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in fs.entries() {
        if !classes.trusted(&e.path) {
            continue;
        }
        let sha = match &e.kind {
            EntryKind::File | EntryKind::Hardlink { .. } => e.sha256,
            EntryKind::Symlink { .. } => fs
                .resolve(&e.path)
                .filter(|t| t.has_content())
                .and_then(|t| t.sha256),
            _ => None,
        };
        if let Some(sha) = sha {
            out.push((e.path.clone(), sha.hex()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[rstest::rstest]
    #[case::plain("/bin/sh", true)]
    #[case::rw_file("/etc/hosts", false)]
    #[case::encrypted_dir("/tmp/x", false)]
    #[case::encrypted_prefix_only("/tmpfile", true)]
    #[case::proc("/proc/self", false)]
    #[case::dev("/dev/null", false)]
    fn default_classes(#[case] path: &str, #[case] trusted: bool) {
        assert_eq!(
            DirClasses::new(None, None, None).unwrap().trusted(path),
            trusted
        );
    }

    #[test]
    fn ro_dirs_restrict_what_is_trusted() {
        let c =
            DirClasses::new(Some(&strings(&["/app/", "/usr/lib"])), Some(&[]), Some(&[])).unwrap();
        assert!(c.trusted("/app/bin/x") && c.trusted("/usr/lib/libc.so"));
        assert!(!c.trusted("/etc/passwd"));
    }

    #[rstest::rstest]
    #[case::relative(&["tmp"], "absolute")]
    #[case::dotdot(&["/a/../b"], "absolute")]
    #[case::root(&["/"], "cannot contain /")]
    fn bad_encrypted_dirs(#[case] dirs: &[&str], #[case] msg: &str) {
        let err = DirClasses::new(None, None, Some(&strings(dirs)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(msg), "{err}");
    }

    #[test]
    fn a_dir_cannot_be_rw_and_encrypted() {
        let err = DirClasses::new(
            None,
            Some(&strings(&["/data"])),
            Some(&strings(&["/data/secret"])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("both encrypted and read-write"));
    }
}
