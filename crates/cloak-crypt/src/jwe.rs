//! JWE key unwrapping (`keywrap/jwe`): compact, flattened and general JSON forms; every key is
//! tried against every recipient. This slice reads RSA recipients (`RSA-OAEP`, which ocicrypt
//! emits for RSA keys, and `RSA-OAEP-256`) with `A128GCM`/`A256GCM` content encryption.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::{alphabet, Engine};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Oaep, RsaPrivateKey};
use serde_json::Value;

use crate::error::{Error, Result};

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A private key that can open JWE recipients.
pub struct PrivateKey {
    rsa: RsaPrivateKey,
    /// Where it came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.source)
    }
}

impl PrivateKey {
    /// Read an RSA private key in PEM (PKCS#1 or PKCS#8).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self> {
        let err = |reason: String| Error::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let rsa = RsaPrivateKey::from_pkcs1_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(&pem))
            .map_err(|_| err("not an unencrypted RSA private key in PEM (EC, JWK and encrypted keys are not supported yet)".into()))?;
        Ok(PrivateKey {
            rsa,
            source: path.display().to_string(),
        })
    }
}

fn field(v: &Value, k: &str) -> Option<Vec<u8>> {
    B64URL.decode(v.get(k)?.as_str()?).ok()
}

/// Try to open one JWE message with `keys`; `Ok(None)` when no key fits any recipient.
pub fn unwrap(jwe: &[u8], keys: &[PrivateKey]) -> Result<Option<Vec<u8>>> {
    let text = std::str::from_utf8(jwe).unwrap_or("").trim();
    let json: Value = if text.starts_with('{') {
        serde_json::from_str(text).map_err(|e| Error::Metadata {
            layer: String::new(),
            reason: format!("a JWE is not valid JSON: {e}"),
        })?
    } else {
        let p: Vec<&str> = text.split('.').collect();
        if p.len() != 5 {
            return Ok(None);
        }
        serde_json::json!({"protected": p[0], "encrypted_key": p[1], "iv": p[2], "ciphertext": p[3], "tag": p[4]})
    };
    let protected_b64 = json.get("protected").and_then(Value::as_str).unwrap_or("");
    let protected: Value = B64URL
        .decode(protected_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let recipients: Vec<Value> = match json.get("recipients").and_then(Value::as_array) {
        Some(r) => r.clone(),
        None => vec![json.clone()],
    };
    let (iv, ciphertext, tag) = (
        field(&json, "iv"),
        field(&json, "ciphertext"),
        field(&json, "tag"),
    );
    let (Some(iv), Some(ciphertext), Some(tag)) = (iv, ciphertext, tag) else {
        return Ok(None);
    };
    let enc = protected.get("enc").and_then(Value::as_str).unwrap_or("");
    let mut aad = protected_b64.as_bytes().to_vec();
    if let Some(extra) = json.get("aad").and_then(Value::as_str) {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }
    for r in &recipients {
        let alg = r
            .get("header")
            .and_then(|h| h.get("alg"))
            .or_else(|| protected.get("alg"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(wrapped) = field(r, "encrypted_key") else {
            continue;
        };
        for key in keys {
            let cek = match alg {
                "RSA-OAEP" => key.rsa.decrypt(Oaep::new::<sha1::Sha1>(), &wrapped),
                "RSA-OAEP-256" => key.rsa.decrypt(Oaep::new::<sha2::Sha256>(), &wrapped),
                _ => continue,
            };
            let Ok(cek) = cek else { continue };
            let mut ct = ciphertext.clone();
            ct.extend_from_slice(&tag);
            let payload = Payload {
                msg: &ct,
                aad: &aad,
            };
            let nonce = aes_gcm::Nonce::from_slice(&iv);
            let plain = match (enc, cek.len()) {
                ("A256GCM", 32) => aes_gcm::Aes256Gcm::new_from_slice(&cek)
                    .ok()
                    .and_then(|c| c.decrypt(nonce, payload).ok()),
                ("A128GCM", 16) => aes_gcm::Aes128Gcm::new_from_slice(&cek)
                    .ok()
                    .and_then(|c| c.decrypt(nonce, payload).ok()),
                _ => None,
            };
            if let Some(p) = plain {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}
