//! Media types, annotations and option shapes, as Go's ocicrypt writes them.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

/// Public cipher options (`org.opencontainers.image.enc.pubopts`).
pub const PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Prefix of the wrapped-key annotations (`…keys.jwe`, `…keys.pkcs7`, …).
pub const KEYS_PREFIX: &str = "org.opencontainers.image.enc.keys.";
/// Every encryption annotation starts with this.
pub const ENC_PREFIX: &str = "org.opencontainers.image.enc.";

/// The plain media type of an encrypted one (`…tar+gzip+encrypted` → `…tar+gzip`).
pub fn decrypted_media_type(media_type: &str) -> Option<&str> {
    media_type.strip_suffix("+encrypted")
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn de_b64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    b64(&s).ok_or_else(|| serde::de::Error::custom("not base64"))
}

/// `PublicLayerBlockCipherOptions`.
#[derive(Debug, Deserialize)]
pub struct PublicOptions {
    /// Always `AES_256_CTR_HMAC_SHA256`.
    #[serde(rename = "cipher")]
    pub cipher: String,
    /// HMAC-SHA256 of the ciphertext.
    #[serde(rename = "hmac", deserialize_with = "de_b64")]
    pub hmac: Vec<u8>,
    /// Cipher options; a nonce here is an injection attempt.
    #[serde(rename = "cipheroptions", default)]
    pub cipher_options: BTreeMap<String, serde_json::Value>,
}

/// `PrivateLayerBlockCipherOptions`, wrapped for each recipient.
#[derive(Deserialize)]
pub struct PrivateOptions {
    /// The AES-256 key.
    #[serde(rename = "symkey", deserialize_with = "de_b64")]
    pub symkey: Vec<u8>,
    /// Digest of the source blob, as the encrypting tool saw it.
    #[serde(rename = "digest", default)]
    pub digest: String,
    /// `{"nonce": base64}`.
    #[serde(rename = "cipheroptions", default)]
    pub cipher_options: BTreeMap<String, String>,
}

impl std::fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateOptions")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PrivateOptions {
    /// The 16-byte nonce (the full initial counter block).
    pub fn nonce(&self) -> Option<[u8; 16]> {
        b64(self.cipher_options.get("nonce")?)?.try_into().ok()
    }
}

/// Decode the public options annotation.
pub fn public_options(
    annotations: &BTreeMap<String, String>,
) -> Option<std::result::Result<PublicOptions, String>> {
    let raw = annotations.get(PUBOPTS)?;
    Some(
        b64(raw)
            .ok_or_else(|| "pubopts is not base64".to_string())
            .and_then(|j| serde_json::from_slice(&j).map_err(|e| format!("pubopts: {e}"))),
    )
}

/// `scheme → entries` of the wrapped keys (comma-separated base64 in each annotation).
pub fn wrapped_keys(annotations: &BTreeMap<String, String>) -> BTreeMap<String, Vec<Vec<u8>>> {
    annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(KEYS_PREFIX)?.to_string(), v)))
        .map(|(scheme, v)| (scheme, v.split(',').filter_map(b64).collect()))
        .collect()
}
