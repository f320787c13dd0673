//! Key material: private keys that open recipients and the recipients layers are encrypted for.
//!
//! Private keys: PEM or DER in PKCS#1, PKCS#8, SEC1 or password-protected PKCS#8, or a JWK;
//! RSA and EC P-256/P-384/P-521. Public keys: SPKI or PKCS#1 PEM/DER, a JWK, or an X.509
//! certificate. Nothing here ever prints key bytes: `Debug` shows the source file only.

use std::path::Path;

use base64::Engine;
use pkcs8::der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::jwe::B64URL;

const OID_RSA: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The secret part of a key pair.
#[derive(Clone)]
pub enum Secret {
    /// RSA (any size the `rsa` crate accepts).
    Rsa(Box<RsaPrivateKey>),
    /// NIST P-256.
    P256(p256::SecretKey),
    /// NIST P-384.
    P384(p384::SecretKey),
    /// NIST P-521.
    P521(p521::SecretKey),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Rsa(_) => "Secret(RSA)",
            Secret::P256(_) => "Secret(P-256)",
            Secret::P384(_) => "Secret(P-384)",
            Secret::P521(_) => "Secret(P-521)",
        })
    }
}

/// A private key and where it came from.
#[derive(Clone)]
pub struct PrivateKey {
    /// The key.
    pub secret: Secret,
    /// The file it was read from (for messages; never the content).
    pub source: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, {})", self.kind(), self.source)
    }
}

/// A public key JWE recipients are wrapped for.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// RSA: wrapped with RSA-OAEP.
    Rsa(Box<RsaPublicKey>),
    /// P-256: wrapped with ECDH-ES+A256KW.
    P256(p256::PublicKey),
    /// P-384.
    P384(p384::PublicKey),
    /// P-521.
    P521(p521::PublicKey),
}

impl PublicKey {
    /// `RSA-2048`, `EC P-384`, …
    pub fn kind(&self) -> String {
        use rsa::traits::PublicKeyParts;
        match self {
            PublicKey::Rsa(k) => format!("RSA-{}", k.size() * 8),
            PublicKey::P256(_) => "EC P-256".into(),
            PublicKey::P384(_) => "EC P-384".into(),
            PublicKey::P521(_) => "EC P-521".into(),
        }
    }
}

/// An X.509 certificate usable as a PKCS7 recipient (RSA only, as in ocicrypt).
#[derive(Clone, Debug)]
pub struct Certificate {
    /// DER of the issuer `Name`.
    pub issuer: Vec<u8>,
    /// DER of the serial number `INTEGER` (tag, length and content).
    pub serial: Vec<u8>,
    /// The subject's RSA key.
    pub key: Box<RsaPublicKey>,
}

impl PrivateKey {
    /// `RSA-2048`, `EC P-256`, …
    pub fn kind(&self) -> String {
        use rsa::traits::PublicKeyParts;
        match &self.secret {
            Secret::Rsa(k) => format!("RSA-{}", k.size() * 8),
            Secret::P256(_) => "EC P-256".into(),
            Secret::P384(_) => "EC P-384".into(),
            Secret::P521(_) => "EC P-521".into(),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        match &self.secret {
            Secret::Rsa(k) => PublicKey::Rsa(Box::new(k.to_public_key())),
            Secret::P256(k) => PublicKey::P256(k.public_key()),
            Secret::P384(k) => PublicKey::P384(k.public_key()),
            Secret::P521(k) => PublicKey::P521(k.public_key()),
        }
    }

    /// Read a key file; `password` opens a password-protected PKCS#8 key.
    pub fn from_file(path: &Path, password: Option<&[u8]>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| key_err(path, e.to_string()))?;
        let secret = parse_private(&bytes, password).map_err(|reason| key_err(path, reason))?;
        Ok(PrivateKey {
            secret,
            source: path.display().to_string(),
        })
    }

    /// Read the key a `--key` argument names.
    pub fn from_spec(spec: &KeySpec) -> Result<Self> {
        Self::from_file(&spec.path, spec.password.as_deref().map(str::as_bytes))
    }
}

/// A `--key` argument: `FILE`, `FILE:pass:PASSWORD`, `FILE:file:PWFILE` or `FILE:env:VAR`.
#[derive(Clone)]
pub struct KeySpec {
    /// The key file.
    pub path: std::path::PathBuf,
    /// Its password, if any (never printed).
    password: Option<String>,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeySpec({}{})",
            self.path.display(),
            if self.password.is_some() {
                ", with password"
            } else {
                ""
            }
        )
    }
}

impl std::str::FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        for (marker, kind) in [(":pass:", 0), (":file:", 1), (":env:", 2)] {
            if let Some((path, rest)) = s.split_once(marker) {
                let password = match kind {
                    0 => rest.to_string(),
                    1 => std::fs::read_to_string(rest)
                        .map_err(|e| format!("password file {rest}: {e}"))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    _ => std::env::var(rest).map_err(|_| {
                        format!("environment variable {rest} (the key's password) is not set")
                    })?,
                };
                return Ok(KeySpec {
                    path: path.into(),
                    password: Some(password),
                });
            }
        }
        Ok(KeySpec {
            path: s.into(),
            password: None,
        })
    }
}

fn key_err(path: &Path, reason: String) -> Error {
    Error::Key {
        path: path.display().to_string(),
        reason,
    }
}

/// PEM blocks of `bytes` as `(label, der)`, or `None` when it is not PEM.
fn pem_blocks(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("-----BEGIN ") {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_string();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after.find(&end_marker) else {
            break;
        };
        let body = &after[label_end + 5..end];
        if body.contains("Proc-Type:") {
            out.push((format!("{label} (legacy OpenSSL encryption)"), Vec::new()));
        } else {
            let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
                out.push((label, der));
            }
        }
        rest = &after[end + end_marker.len()..];
    }
    Some(out)
}

fn pkcs8_secret(der: &[u8]) -> std::result::Result<Secret, String> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| format!("not PKCS#8: {e}"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        return RsaPrivateKey::from_pkcs8_der(der)
            .map(|k| Secret::Rsa(Box::new(k)))
            .map_err(|e| format!("bad RSA PKCS#8 key: {e}"));
    }
    if oid != OID_EC {
        return Err(format!(
            "unsupported key algorithm {oid} (RSA and EC P-256/P-384/P-521 are supported; ocicrypt has no X25519)"
        ));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|_| "EC key without a named curve".to_string())?;
    match curve {
        c if c == OID_P256 => p256::SecretKey::from_pkcs8_der(der).map(Secret::P256),
        c if c == OID_P384 => p384::SecretKey::from_pkcs8_der(der).map(Secret::P384),
        c if c == OID_P521 => p521::SecretKey::from_pkcs8_der(der).map(Secret::P521),
        c => {
            return Err(format!(
                "unsupported EC curve {c} (P-256, P-384 and P-521 are supported)"
            ))
        }
    }
    .map_err(|e| format!("bad EC PKCS#8 key: {e}"))
}

fn sec1_secret(der: &[u8]) -> std::result::Result<Secret, String> {
    p256::SecretKey::from_sec1_der(der)
        .map(Secret::P256)
        .or_else(|_| p384::SecretKey::from_sec1_der(der).map(Secret::P384))
        .or_else(|_| p521::SecretKey::from_sec1_der(der).map(Secret::P521))
        .map_err(|_| "not a SEC1 EC key on P-256, P-384 or P-521".to_string())
}

fn encrypted_pkcs8(der: &[u8], password: Option<&[u8]>) -> std::result::Result<Secret, String> {
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der)
        .map_err(|e| format!("not an encrypted PKCS#8 key: {e}"))?;
    let password = password.ok_or_else(|| {
        "the key is password-protected: give its password as FILE:pass:PASSWORD, FILE:file:PWFILE or FILE:env:VAR".to_string()
    })?;
    let doc = info.decrypt(password).map_err(|_| {
        "wrong password for the encrypted key (or an unsupported PBES2 scheme)".to_string()
    })?;
    pkcs8_secret(doc.as_bytes())
}

fn jwk_bytes(v: &Value, k: &str) -> std::result::Result<Vec<u8>, String> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| B64URL.decode(s).ok())
        .ok_or_else(|| format!("JWK without a valid \"{k}\""))
}

/// Only the members elliptic-curve's JWK reader accepts (it refuses `alg`, `kid`, `use`…).
fn ec_jwk_text(v: &Value) -> String {
    let mut m = serde_json::Map::new();
    for k in ["kty", "crv", "x", "y", "d"] {
        if let Some(x) = v.get(k) {
            m.insert(k.into(), x.clone());
        }
    }
    Value::Object(m).to_string()
}

fn jwk_private(v: &Value) -> std::result::Result<Secret, String> {
    let text = ec_jwk_text(v);
    match v.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = |k| jwk_bytes(v, k).map(|b| rsa::BigUint::from_bytes_be(&b));
            let key =
                RsaPrivateKey::from_components(n("n")?, n("e")?, n("d")?, vec![n("p")?, n("q")?])
                    .map_err(|e| format!("bad RSA JWK: {e}"))?;
            Ok(Secret::Rsa(Box::new(key)))
        }
        Some("EC") => match v.get("crv").and_then(Value::as_str) {
            Some("P-256") => p256::SecretKey::from_jwk_str(&text).map(Secret::P256),
            Some("P-384") => p384::SecretKey::from_jwk_str(&text).map(Secret::P384),
            Some("P-521") => p521::SecretKey::from_jwk_str(&text).map(Secret::P521),
            other => return Err(format!("unsupported JWK curve {other:?}")),
        }
        .map_err(|_| "bad EC JWK (a private JWK needs \"d\")".to_string()),
        other => Err(format!(
            "unsupported JWK key type {other:?} (RSA and EC are supported)"
        )),
    }
}

fn parse_private(bytes: &[u8], password: Option<&[u8]>) -> std::result::Result<Secret, String> {
    if let Some(blocks) = pem_blocks(bytes) {
        let mut last = "no private key in the PEM file".to_string();
        for (label, der) in blocks {
            let r = match label.as_str() {
                "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(&der)
                    .map(|k| Secret::Rsa(Box::new(k)))
                    .map_err(|e| format!("bad PKCS#1 key: {e}")),
                "PRIVATE KEY" => pkcs8_secret(&der),
                "EC PRIVATE KEY" => sec1_secret(&der),
                "ENCRYPTED PRIVATE KEY" => encrypted_pkcs8(&der, password),
                l if l.ends_with("(legacy OpenSSL encryption)") => Err(
                    "legacy OpenSSL-encrypted PEM is not supported: convert it with `openssl pkcs8 -topk8 -in KEY -out KEY.p8`".into(),
                ),
                "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => Err(format!(
                    "this is a {}, not a private key: decryption needs the private key",
                    label.to_lowercase()
                )),
                _ => continue,
            };
            match r {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        return Err(last);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        if v.get("d").is_none() {
            return Err("this JWK is a public key: decryption needs the private key".into());
        }
        return jwk_private(&v);
    }
    pkcs8_secret(bytes)
        .or_else(|_| {
            RsaPrivateKey::from_pkcs1_der(bytes)
                .map(|k| Secret::Rsa(Box::new(k)))
                .map_err(|_| String::new())
        })
        .or_else(|_| sec1_secret(bytes))
        .or_else(|_| encrypted_pkcs8(bytes, password).map_err(|e| {
            if e.starts_with("not an encrypted") {
                "not a private key in any supported form (PEM or DER: PKCS#1, PKCS#8, SEC1, encrypted PKCS#8; or a JWK)".to_string()
            } else {
                e
            }
        }))
}

fn spki_public(der: &[u8]) -> std::result::Result<PublicKey, String> {
    let spki = pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| format!("not SPKI: {e}"))?;
    if spki.algorithm.oid == OID_RSA {
        return RsaPublicKey::from_public_key_der(der)
            .map(|k| PublicKey::Rsa(Box::new(k)))
            .map_err(|e| format!("bad RSA public key: {e}"));
    }
    if spki.algorithm.oid != OID_EC {
        return Err(format!(
            "unsupported public key algorithm {} (RSA and EC P-256/P-384/P-521 are supported)",
            spki.algorithm.oid
        ));
    }
    let curve = spki
        .algorithm
        .parameters_oid()
        .map_err(|_| "EC key without a named curve".to_string())?;
    match curve {
        c if c == OID_P256 => p256::PublicKey::from_public_key_der(der).map(PublicKey::P256),
        c if c == OID_P384 => p384::PublicKey::from_public_key_der(der).map(PublicKey::P384),
        c if c == OID_P521 => p521::PublicKey::from_public_key_der(der).map(PublicKey::P521),
        c => return Err(format!("unsupported EC curve {c}")),
    }
    .map_err(|e| format!("bad EC public key: {e}"))
}

fn cert_public(der: &[u8]) -> std::result::Result<PublicKey, String> {
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    spki_public(&spki)
}

fn jwk_public(v: &Value) -> std::result::Result<PublicKey, String> {
    let mut public = v.clone();
    if let Some(o) = public.as_object_mut() {
        o.remove("d");
    }
    let text = ec_jwk_text(&public);
    match v.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = |k| jwk_bytes(v, k).map(|b| rsa::BigUint::from_bytes_be(&b));
            RsaPublicKey::new(n("n")?, n("e")?)
                .map(|k| PublicKey::Rsa(Box::new(k)))
                .map_err(|e| format!("bad RSA JWK: {e}"))
        }
        Some("EC") => match v.get("crv").and_then(Value::as_str) {
            Some("P-256") => p256::PublicKey::from_jwk_str(&text).map(PublicKey::P256),
            Some("P-384") => p384::PublicKey::from_jwk_str(&text).map(PublicKey::P384),
            Some("P-521") => p521::PublicKey::from_jwk_str(&text).map(PublicKey::P521),
            other => return Err(format!("unsupported JWK curve {other:?}")),
        }
        .map_err(|_| "bad EC JWK".to_string()),
        other => Err(format!("unsupported JWK key type {other:?}")),
    }
}

/// Read a recipient's public key: SPKI or PKCS#1 PEM/DER, an X.509 certificate, a JWK, or a
/// private key file (its public half is used).
pub fn public_key_from_file(path: &Path) -> Result<PublicKey> {
    Ok(recipient_key_from_file(path)?.0)
}

/// [`public_key_from_file`], with the `alg` a JWK names (if the file is a JWK that has one).
pub fn recipient_key_from_file(path: &Path) -> Result<(PublicKey, Option<String>)> {
    let bytes = std::fs::read(path).map_err(|e| key_err(path, e.to_string()))?;
    let key = parse_public(&bytes).map_err(|reason| key_err(path, reason))?;
    let alg = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_string));
    Ok((key, alg))
}

fn parse_public(bytes: &[u8]) -> std::result::Result<PublicKey, String> {
    if let Some(blocks) = pem_blocks(bytes) {
        for (label, der) in blocks {
            return match label.as_str() {
                "PUBLIC KEY" => spki_public(&der),
                "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(&der)
                    .map(|k| PublicKey::Rsa(Box::new(k)))
                    .map_err(|e| format!("bad PKCS#1 public key: {e}")),
                "CERTIFICATE" => cert_public(&der),
                _ => continue,
            };
        }
        // A private key file: use its public half.
        return parse_private(bytes, None)
            .map(|s| {
                PrivateKey {
                    secret: s,
                    source: String::new(),
                }
                .public()
            })
            .map_err(|_| "no public key, certificate or private key in the PEM file".into());
    }
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return jwk_public(&v);
    }
    spki_public(bytes)
        .or_else(|_| cert_public(bytes))
        .or_else(|_| {
            RsaPublicKey::from_pkcs1_der(bytes)
                .map(|k| PublicKey::Rsa(Box::new(k)))
                .map_err(|_| String::new())
        })
        .map_err(|_| {
            "not a public key in any supported form (SPKI or PKCS#1 PEM/DER, X.509 certificate, JWK)"
                .to_string()
        })
}

/// Read an X.509 certificate (PEM or DER) for a PKCS7 recipient.
pub fn certificate_from_file(path: &Path) -> Result<Certificate> {
    let bytes = std::fs::read(path).map_err(|e| key_err(path, e.to_string()))?;
    let der = match pem_blocks(&bytes) {
        Some(blocks) => blocks
            .into_iter()
            .find(|(l, _)| l == "CERTIFICATE")
            .map(|(_, d)| d)
            .ok_or_else(|| {
                key_err(
                    path,
                    "no CERTIFICATE in the PEM file (pkcs7 recipients are X.509 certificates)"
                        .into(),
                )
            })?,
        None => bytes,
    };
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| key_err(path, format!("not an X.509 certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| key_err(path, e.to_string()))?;
    let key = match spki_public(&spki).map_err(|e| key_err(path, e))? {
        PublicKey::Rsa(k) => k,
        other => {
            return Err(key_err(
                path,
                format!(
                    "pkcs7 recipients must hold an RSA key (ocicrypt's PKCS7 has RSA key transport only), this certificate has {}; use jwe: for EC keys",
                    other.kind()
                ),
            ))
        }
    };
    Ok(Certificate {
        issuer: tbs
            .issuer
            .to_der()
            .map_err(|e| key_err(path, e.to_string()))?,
        serial: tbs
            .serial_number
            .to_der()
            .map_err(|e| key_err(path, e.to_string()))?,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_keep_passwords_out_of_debug() {
        let s: KeySpec = "k.pem:pass:hunter2".parse().unwrap();
        assert_eq!(s.path, Path::new("k.pem"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let s: KeySpec = "plain.pem".parse().unwrap();
        assert!(s.password.is_none());
    }

    #[test]
    fn jwk_keys_round_trip_for_every_curve_and_rsa() {
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let mut rng = rand::rngs::OsRng;
        let p256 = p256::SecretKey::random(&mut rng);
        let p384 = p384::SecretKey::random(&mut rng);
        let p521 = p521::SecretKey::random(&mut rng);
        let rsa = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let b64 = |n: &rsa::BigUint| B64URL.encode(n.to_bytes_be());
        let rsa_jwk = serde_json::json!({
            "kty": "RSA",
            "n": b64(rsa.n()),
            "e": b64(rsa.e()),
            "d": b64(rsa.d()),
            "p": b64(&rsa.primes()[0]),
            "q": b64(&rsa.primes()[1]),
        });
        type Check<'a> = Box<dyn Fn(&Secret, &PublicKey) -> bool + 'a>;
        let cases: [(&str, String, Check); 4] = [
            (
                "P-256",
                p256.to_jwk_string().to_string(),
                Box::new(|s, p| {
                    matches!((s, p), (Secret::P256(s), PublicKey::P256(p))
                        if s.to_bytes() == p256.to_bytes() && *p == p256.public_key())
                }),
            ),
            (
                "P-384",
                p384.to_jwk_string().to_string(),
                Box::new(|s, p| {
                    matches!((s, p), (Secret::P384(s), PublicKey::P384(p))
                        if s.to_bytes() == p384.to_bytes() && *p == p384.public_key())
                }),
            ),
            (
                "P-521",
                p521.to_jwk_string().to_string(),
                Box::new(|s, p| {
                    matches!((s, p), (Secret::P521(s), PublicKey::P521(p))
                        if s.to_bytes() == p521.to_bytes() && *p == p521.public_key())
                }),
            ),
            (
                "RSA",
                rsa_jwk.to_string(),
                Box::new(|s, p| {
                    matches!((s, p), (Secret::Rsa(s), PublicKey::Rsa(p))
                        if **s == rsa && **p == rsa.to_public_key())
                }),
            ),
        ];
        for (name, text, same_key) in cases {
            let jwk: Value = serde_json::from_str(&text).unwrap();
            let secret = jwk_private(&jwk).unwrap();
            let mut public = jwk.clone();
            for k in ["d", "p", "q", "dp", "dq", "qi"] {
                public.as_object_mut().unwrap().remove(k);
            }
            let public_key = jwk_public(&public).unwrap();
            assert!(
                same_key(&secret, &public_key),
                "{name}: another key came back"
            );
            assert!(
                parse_private(public.to_string().as_bytes(), None)
                    .unwrap_err()
                    .contains("public key"),
                "{name}: a public JWK is not a private key"
            );
        }
    }
}
