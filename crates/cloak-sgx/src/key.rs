//! Enclave signing keys: `default` (generated once into cloak's config directory, mode 0600),
//! `file:key.pem` (PKCS#1 or PKCS#8), and `pkcs11:` URIs (the key never leaves the token).
//! Every key must be RSA-3072 with public exponent 3.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Something that signs SIGSTRUCTs.
pub trait Signer {
    /// The RSA modulus, big-endian.
    fn modulus_be(&self) -> Vec<u8>;
    /// The public exponent.
    fn exponent(&self) -> u64;
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data`; the signature, big-endian, modulus-sized.
    fn sign_pkcs1v15_sha256(&self, data: &[u8]) -> Result<Vec<u8>>;
    /// Where the key lives, for messages (never key material).
    fn describe(&self) -> String;
}

/// A private key in memory, read from a PEM file.
pub struct FileSigner {
    key: RsaPrivateKey,
    source: String,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSigner")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

const KEY_HINT: &str = "SGX needs RSA-3072 with public exponent 3; create one with `openssl genrsa -3 -out key.pem 3072`";

fn check(key: &RsaPrivateKey, source: &str) -> Result<()> {
    if key.size() != 384 || key.e() != &rsa::BigUint::from(3u32) {
        return Err(Error::Key {
            key: source.into(),
            reason: format!(
                "an RSA-{} key with exponent {}; {KEY_HINT}",
                key.size() * 8,
                key.e()
            ),
        });
    }
    Ok(())
}

impl FileSigner {
    /// Read a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let source = format!("file:{}", path.display());
        let pem = std::fs::read_to_string(path).map_err(|e| Error::Io {
            action: "read signing key",
            path: path.into(),
            source: e,
        })?;
        Self::from_pem(&pem, source)
    }

    /// A PEM private key held in memory; `source` names it in messages (never key material).
    pub fn from_pem(pem: &str, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let key = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| Error::Key {
                key: source.clone(),
                reason: format!(
                    "not an unencrypted RSA private key in PEM (PKCS#1 or PKCS#8); {KEY_HINT}"
                ),
            })?;
        check(&key, &source)?;
        Ok(FileSigner { key, source })
    }

    /// Wrap a key (tests, generated keys).
    pub fn from_key(key: RsaPrivateKey, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        check(&key, &source)?;
        Ok(FileSigner { key, source })
    }
}

impl Signer for FileSigner {
    fn modulus_be(&self) -> Vec<u8> {
        self.key.n().to_bytes_be()
    }
    fn exponent(&self) -> u64 {
        3
    }
    fn sign_pkcs1v15_sha256(&self, data: &[u8]) -> Result<Vec<u8>> {
        let digest = Sha256::digest(data);
        self.key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map_err(|e| Error::Key {
                key: self.source.clone(),
                reason: format!("signing failed: {e}"),
            })
    }
    fn describe(&self) -> String {
        self.source.clone()
    }
}

/// Generate an RSA-3072, e = 3 key.
pub fn generate() -> Result<RsaPrivateKey> {
    RsaPrivateKey::new_with_exp(&mut rand::thread_rng(), 3072, &rsa::BigUint::from(3u32)).map_err(
        |e| Error::Key {
            key: "(new key)".into(),
            reason: format!("generation failed: {e}"),
        },
    )
}

/// A new RSA-3072, e = 3 key as PKCS#1 PEM (for keys kept elsewhere, e.g. sealed by the manager).
pub fn generate_pem() -> Result<String> {
    let key = generate()?;
    Ok(key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| Error::Key {
            key: "(new key)".into(),
            reason: format!("encoding failed: {e}"),
        })?
        .to_string())
}

/// `$XDG_CONFIG_HOME/cloak/sgx-signing-key.pem`, or `~/.config/cloak/…`.
pub fn default_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cloak/sgx-signing-key.pem")
}

/// The default key at `path`: generated on first use (mode 0600), reused afterwards.
pub fn default_signer(path: &Path) -> Result<FileSigner> {
    if !path.exists() {
        let key = generate()?;
        let pem = key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| Error::Key {
                key: path.display().to_string(),
                reason: format!("encoding failed: {e}"),
            })?;
        let io = |action, e| Error::Io {
            action,
            path: path.into(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("create signing key", e))?;
        f.write_all(pem.as_bytes())
            .map_err(|e| io("write signing key", e))?;
    }
    FileSigner::from_pem_file(path)
}

/// Open a signer from `default`, `file:PATH` (or a bare path) or a `pkcs11:` URI.
pub fn open(spec: &str) -> Result<Box<dyn Signer>> {
    if spec == "default" {
        return Ok(Box::new(default_signer(&default_key_path())?));
    }
    if spec.starts_with("pkcs11:") {
        return Ok(Box::new(crate::pkcs11::Pkcs11Signer::open(spec)?));
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    Ok(Box::new(FileSigner::from_pem_file(Path::new(path))?))
}
