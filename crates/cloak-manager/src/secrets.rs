//! Secrets at rest: AES-256-GCM under a key-encryption key (the master key) that never enters
//! the database. A sealed value is `version(1) ‖ key id(8) ‖ nonce(12) ‖ ciphertext+tag`, with
//! what it is (e.g. `registry:<id>:password`) as associated data, so a ciphertext copied onto
//! another row does not open.
//!
//! The master key file holds one or more keys, one hex line each; the first seals, all open.
//! Rotation writes the new key first, re-seals every row in one transaction, then drops the
//! old key: at every instant the file opens every row.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const VERSION: u8 = 1;

/// The master keys of an installation.
#[derive(Clone)]
pub struct MasterKey {
    keys: Vec<([u8; 8], [u8; 32])>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({} keys, *****)", self.keys.len())
    }
}

fn key_id(key: &[u8; 32]) -> [u8; 8] {
    let d = Sha256::digest([b"cloak-master-key-id:".as_slice(), key].concat());
    d[..8].try_into().expect("8 bytes")
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey {
            keys: vec![(key_id(&k), k)],
        }
    }

    /// One key given by its bytes (e.g. the audit key carried in a backup).
    pub fn from_bytes(k: [u8; 32]) -> MasterKey {
        MasterKey {
            keys: vec![(key_id(&k), k)],
        }
    }

    /// Reads a key file (hex lines; `#` comments), refusing one readable by others.
    pub fn load(path: &Path) -> Result<MasterKey> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.mode() & 0o077 != 0 {
            return Err(Error::Config(format!(
                "{}: the master key file is readable by group or others (mode {:o}); \
                 run `chmod 600 {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: each key line must be 64 hex digits (32 bytes)",
                        path.display()
                    ))
                })?;
            let k: [u8; 32] = bytes.try_into().expect("32 bytes");
            keys.push((key_id(&k), k));
        }
        if keys.is_empty() {
            return Err(Error::Config(format!(
                "{}: no key in the master key file",
                path.display()
            )));
        }
        Ok(MasterKey { keys })
    }

    /// Loads the key file, creating it (mode 0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<MasterKey> {
        if path.exists() {
            return MasterKey::load(path);
        }
        let key = MasterKey::generate();
        key.save(path)?;
        tracing::info!(path = %path.display(), "created a new master key");
        Ok(key)
    }

    /// Writes the key file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = tmp_path(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let mut text = String::from("# cloak manager master keys: the first seals, all open\n");
        for (_, k) in &self.keys {
            text.push_str(&hex::encode(k));
            text.push('\n');
        }
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(())
    }

    /// This key set with `new` in front (it seals from now on).
    pub fn with_primary(&self, new: &MasterKey) -> MasterKey {
        let mut keys = vec![new.keys[0]];
        keys.extend(self.keys.iter().filter(|(id, _)| *id != new.keys[0].0));
        MasterKey { keys }
    }

    /// Only the primary key.
    pub fn primary_only(&self) -> MasterKey {
        MasterKey {
            keys: vec![self.keys[0]],
        }
    }

    /// The sealing key's bytes (for keys of other purposes kept in the same file format).
    pub fn primary_bytes(&self) -> [u8; 32] {
        self.keys[0].1
    }

    /// Hex id of the sealing key (for logs: identifies, reveals nothing).
    pub fn primary_id(&self) -> String {
        hex::encode(self.keys[0].0)
    }

    /// Encrypts `plain`, bound to `context`.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(key.into());
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + 8 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a sealed value, checking it was sealed for `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let fail = || Error::Decrypt {
            what: context.to_string(),
        };
        if sealed.len() < 1 + 8 + 12 + 16 || sealed[0] != VERSION {
            return Err(fail());
        }
        let id = &sealed[1..9];
        let (_, key) = self
            .keys
            .iter()
            .find(|(kid, _)| kid == id)
            .ok_or_else(fail)?;
        Aes256Gcm::new(key.into())
            .decrypt(
                Nonce::from_slice(&sealed[9..21]),
                Payload {
                    msg: &sealed[21..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| fail())
    }

    /// Whether a sealed value was sealed with the primary key.
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.len() > 9 && sealed[1..9] == self.keys[0].0
    }
}

/// `cloak manager rotate-master-key`: a new key is written in front of the old one, every
/// stored secret is re-sealed under it in one transaction, then the old key is dropped. Running
/// managers keep the old key in memory: restart them afterwards.
pub async fn rotate(db: &crate::store::Db, path: &Path) -> Result<usize> {
    // Running managers seal with the key they loaded: rotating under them would leave rows
    // sealed with a key the new file lacks.
    let _exclusive = db.no_replica_running().await?.ok_or_else(|| {
        Error::Config(
            "manager replicas are running on this database: stop every replica, rotate, then \
             start them with the new key file"
                .into(),
        )
    })?;
    let old = MasterKey::load(path)?;
    let both = old.with_primary(&MasterKey::generate());
    both.save(path)?;
    // Every sealed row (before the old key leaves the file): registry passwords, the accounts'
    // signing keys, live jobs' credentials, app configs and the CA keys.
    let n = crate::registry::reseal_all(db, &both).await?
        + crate::signing::reseal_all(db, &both).await?
        + crate::jobs::reseal_all(db, &both).await?
        + crate::configs::reseal_all(db, &both).await?
        + crate::ca::reseal_all(db, &both).await?;
    both.primary_only().save(path)?;
    tracing::info!(key_id = %both.primary_id(), resealed = n, "master key rotated");
    Ok(n)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context_and_with_their_key() {
        let k = MasterKey::generate();
        let sealed = k.seal("registry:1:password", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("registry:1:password", &sealed).unwrap(), b"hunter2");
        assert!(k.open("registry:2:password", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(k.open("registry:1:password", &flipped).is_err());
        assert!(MasterKey::generate()
            .open("registry:1:password", &sealed)
            .is_err());
    }

    #[test]
    fn rotation_keeps_old_values_readable_until_resealed() {
        let old = MasterKey::generate();
        let sealed = old.seal("x", b"v");
        let both = old.with_primary(&MasterKey::generate());
        assert_eq!(both.open("x", &sealed).unwrap(), b"v");
        assert!(!both.is_current(&sealed));
        let resealed = both.seal("x", b"v");
        assert!(both.primary_only().open("x", &resealed).is_ok());
        assert!(both.primary_only().open("x", &sealed).is_err());
    }

    #[test]
    fn key_files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k = MasterKey::load_or_create(&path).unwrap();
        let again = MasterKey::load(&path).unwrap();
        assert_eq!(again.primary_id(), k.primary_id());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!format!("{k:?}").contains(&hex::encode(k.keys[0].1)));
    }
}
