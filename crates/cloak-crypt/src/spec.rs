//! Media types, annotations and option shapes, as Go's ocicrypt writes them.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Go's `[]byte` JSON: standard base64 with padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Public cipher options (`org.opencontainers.image.enc.pubopts`).
pub const PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Prefix of the wrapped-key annotations (`…keys.jwe`, `…keys.pkcs7`, …).
pub const KEYS_PREFIX: &str = "org.opencontainers.image.enc.keys.";
/// Every encryption annotation starts with this.
pub const ENC_PREFIX: &str = "org.opencontainers.image.enc.";

/// The encrypted media type of a plain layer type, or `None` when ocicrypt has none for it.
pub fn encrypted_media_type(media_type: &str) -> Option<String> {
    const PLAIN: [&str; 8] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    ];
    if !PLAIN.contains(&media_type) {
        return None;
    }
    // Docker layer types have no encrypted form: ocicrypt writes the OCI one.
    Some(match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar+encrypted".into()
        }
        m => format!("{m}+encrypted"),
    })
}

/// The plain media type of an encrypted one (`…tar+gzip+encrypted` → `…tar+gzip`).
pub fn decrypted_media_type(media_type: &str) -> Option<&str> {
    media_type.strip_suffix("+encrypted")
}

/// Decode Go's `[]byte` JSON form.
pub fn b64(s: &str) -> Option<Vec<u8>> {
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

/// The public options ocicrypt writes: the cipher and the HMAC, never a nonce.
pub fn public_options_json(hmac: &[u8]) -> String {
    #[derive(Serialize)]
    struct P<'a> {
        cipher: &'a str,
        hmac: String,
        cipheroptions: BTreeMap<String, String>,
    }
    let json = serde_json::to_vec(&P {
        cipher: "AES_256_CTR_HMAC_SHA256",
        hmac: b64_encode(hmac),
        cipheroptions: BTreeMap::new(),
    })
    .expect("JSON");
    b64_encode(&json)
}

/// The private options JSON for one layer (the bytes every recipient's wrapper carries).
pub fn private_options_json(symkey: &[u8; 32], digest: &str, nonce: &[u8; 16]) -> Vec<u8> {
    #[derive(Serialize)]
    struct P<'a> {
        symkey: String,
        digest: &'a str,
        cipheroptions: BTreeMap<&'a str, String>,
    }
    serde_json::to_vec(&P {
        symkey: b64_encode(symkey),
        digest,
        cipheroptions: [("nonce", b64_encode(nonce))].into_iter().collect(),
    })
    .expect("JSON")
}

/// The annotation value for a list of wrapped-key entries.
pub fn join_entries(entries: &[Vec<u8>]) -> String {
    entries
        .iter()
        .map(|e| b64_encode(e))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_options_have_gos_shape_and_round_trip() {
        let json = private_options_json(&[1; 32], "sha256:ab", &[2; 16]);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["digest"], "sha256:ab");
        assert_eq!(v["cipheroptions"]["nonce"], "AgICAgICAgICAgICAgICAg==");
        let p: PrivateOptions = serde_json::from_slice(&json).unwrap();
        assert_eq!(p.nonce(), Some([2; 16]));
        assert_eq!(p.symkey, vec![1; 32]);
        let mut a = BTreeMap::new();
        a.insert(PUBOPTS.to_string(), public_options_json(&[5; 32]));
        let o = public_options(&a).unwrap().unwrap();
        assert_eq!(o.hmac, vec![5; 32]);
        assert!(o.cipher_options.is_empty());
    }

    #[test]
    fn docker_layers_become_oci_encrypted_types() {
        assert_eq!(
            encrypted_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").as_deref(),
            Some("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
        );
        assert_eq!(
            encrypted_media_type("application/vnd.oci.image.layer.v1.tar+zstd").as_deref(),
            Some("application/vnd.oci.image.layer.v1.tar+zstd+encrypted")
        );
        assert_eq!(
            encrypted_media_type("application/vnd.oci.image.config.v1+json"),
            None
        );
    }
}
