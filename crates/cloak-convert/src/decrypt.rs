//! `cloak decrypt`: an ocicrypt-encrypted image back to plain layers, verified three ways before
//! anything is written: the ciphertext's digest (as every blob), its HMAC, and the plaintext's
//! `diff_id` from the config. The nonce is taken only from the private options; public cipher
//! options that try to set it are refused (the reference silently decrypts to garbage).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use cloak_crypt::jwe::{self, PrivateKey};
use cloak_crypt::{blockcipher::Decryptor, spec};
use cloak_image::copy::{copy_blob, Progress};
use cloak_image::image::{resolve, Dest, RawManifest, Source};
use cloak_image::layer::decompress;
use cloak_image::spec::{Descriptor, ImageManifest};
use cloak_image::{Digest, ImageRef, PlatformSpec, RegistryOptions};
use serde::Serialize;
use sha2::Digest as _;

use crate::error::{Error, Result};

/// One decryption.
pub struct DecryptRequest {
    /// Encrypted image.
    pub input: ImageRef,
    /// Where to write the plain image.
    pub output: ImageRef,
    /// Registry settings of the input.
    pub source_options: RegistryOptions,
    /// Registry settings of the output.
    pub dest_options: RegistryOptions,
    /// Private key files (PEM).
    pub keys: Vec<PathBuf>,
    /// Platform selected from a multi-arch input.
    pub platform: PlatformSpec,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptReport {
    /// Output reference.
    pub destination: String,
    /// Output manifest digest.
    pub digest: String,
    /// Layers that were decrypted (their new digests).
    pub decrypted_layers: Vec<String>,
}

fn meta(layer: &Descriptor, reason: impl Into<String>) -> Error {
    Error::Crypt(cloak_crypt::Error::Metadata {
        layer: layer.digest.to_string(),
        reason: reason.into(),
    })
}

/// Summary of the recipients of a layer, for the missing-key message.
pub fn recipients(annotations: &BTreeMap<String, String>) -> String {
    let keys = spec::wrapped_keys(annotations);
    if keys.is_empty() {
        return "no recipients".into();
    }
    keys.iter()
        .map(|(scheme, entries)| {
            // One JWE message can hold several recipients.
            let n: usize = entries
                .iter()
                .map(|e| {
                    serde_json::from_slice::<serde_json::Value>(e)
                        .ok()
                        .and_then(|v| v.get("recipients").and_then(|r| r.as_array()).map(Vec::len))
                        .unwrap_or(1)
                })
                .sum();
            format!("{scheme} ({n} recipient{})", if n == 1 { "" } else { "s" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decrypt `req.input` into `req.output`.
pub async fn decrypt(req: DecryptRequest) -> Result<DecryptReport> {
    let keys = req
        .keys
        .iter()
        .map(|k| PrivateKey::from_pem_file(k).map_err(Error::Crypt))
        .collect::<Result<Vec<_>>>()?;
    let src = Source::open(&req.input, &req.source_options).await?;
    let image = resolve(&src, &req.platform).await?;
    let work = tempfile::tempdir()
        .map_err(|e| Error::Options(format!("cannot create a temporary directory: {e}")))?;
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut files: BTreeMap<Digest, PathBuf> = BTreeMap::new();
    let mut decrypted = Vec::new();
    for (i, desc) in image.manifest.layers.iter().enumerate() {
        let Some(plain_type) = spec::decrypted_media_type(&desc.media_type) else {
            layers.push(desc.clone());
            continue;
        };
        let pubopts = spec::public_options(&desc.annotations)
            .ok_or_else(|| {
                meta(
                    desc,
                    "no public cipher options (org.opencontainers.image.enc.pubopts)",
                )
            })?
            .map_err(|e| meta(desc, e))?;
        if pubopts.cipher != "AES_256_CTR_HMAC_SHA256" {
            return Err(meta(desc, format!("unsupported cipher {}", pubopts.cipher)));
        }
        if pubopts.cipher_options.contains_key("nonce") {
            return Err(meta(
                desc,
                "the public cipher options try to set the nonce; refusing (only the wrapped private options may)",
            ));
        }
        let mut privopts = None;
        for entry in spec::wrapped_keys(&desc.annotations)
            .get("jwe")
            .into_iter()
            .flatten()
        {
            if let Some(p) = jwe::unwrap(entry, &keys).map_err(Error::Crypt)? {
                privopts = Some(p);
                break;
            }
        }
        let privopts = privopts.ok_or_else(|| {
            Error::Crypt(cloak_crypt::Error::MissingKey {
                layer: desc.digest.to_string(),
                recipients: recipients(&desc.annotations),
                keys: keys.len(),
            })
        })?;
        let privopts: spec::PrivateOptions = serde_json::from_slice(&privopts)
            .map_err(|e| meta(desc, format!("private options: {e}")))?;
        let nonce = privopts
            .nonce()
            .ok_or_else(|| meta(desc, "the private options carry no 16-byte nonce"))?;
        if privopts.symkey.len() != 32 {
            return Err(meta(desc, "the symmetric key is not 32 bytes"));
        }
        // Ciphertext (digest-verified) → CTR → temporary file, hashing the plaintext blob.
        let reader = src.blob(desc).await?;
        let tmp = work.path().join(format!("layer{i}"));
        let (tmp_path, key, hmac) = (tmp.clone(), privopts.symkey.clone(), pubopts.hmac.clone());
        let layer_name = desc.digest.to_string();
        let (digest, size) = tokio::task::spawn_blocking(move || -> Result<(Digest, u64)> {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let mut dec =
                Decryptor::new(bridge, &key, &nonce).expect("key and nonce lengths checked");
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&tmp_path)
                    .map_err(|e| Error::Options(format!("writing a temporary layer: {e}")))?,
            );
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = dec
                    .read(&mut buf)
                    .map_err(|e| Error::Options(format!("reading layer {layer_name}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::Options(format!("writing a temporary layer: {e}")))?;
                size += n as u64;
            }
            out.flush()
                .map_err(|e| Error::Options(format!("writing a temporary layer: {e}")))?;
            if !dec.verify(&hmac) {
                return Err(Error::Crypt(cloak_crypt::Error::Hmac { layer: layer_name }));
            }
            Ok((Digest::from_sha256(hasher.finalize().into()), size))
        })
        .await
        .map_err(|e| Error::Options(format!("decryption worker failed: {e}")))??;
        // The plaintext must be the layer the config names.
        let expected = image.config.rootfs.diff_ids.get(i).copied();
        let tmp_check = tmp.clone();
        let diff_id = tokio::task::spawn_blocking(move || -> std::io::Result<Digest> {
            let mut r = decompress(std::fs::File::open(&tmp_check)?)?;
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut r, &mut h)?;
            Ok(Digest::from_sha256(h.finalize().into()))
        })
        .await
        .map_err(|e| Error::Options(format!("verification worker failed: {e}")))?
        .map_err(|e| {
            meta(
                desc,
                format!("the decrypted layer does not decompress: {e}"),
            )
        })?;
        if Some(diff_id) != expected {
            return Err(meta(
                desc,
                format!(
                    "the decrypted layer's diff_id {diff_id} is not the config's {} (a layer was swapped or the config edited)",
                    expected.map(|d| d.to_string()).unwrap_or_else(|| "(none)".into())
                ),
            ));
        }
        let mut plain = Descriptor::new(plain_type, digest, size);
        plain.annotations = desc
            .annotations
            .iter()
            .filter(|(k, _)| !k.starts_with(spec::ENC_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        decrypted.push(digest.to_string());
        files.insert(digest, tmp);
        layers.push(plain);
    }
    // package: blobs first, manifest last
    let dst = Dest::open(&req.output, &req.dest_options).await?;
    copy_blob(&src, &dst, &image.manifest.config, &req.progress).await?;
    for l in &layers {
        match files.get(&l.digest) {
            Some(path) => {
                if !dst.has_blob(l).await? {
                    let f = tokio::fs::File::open(path)
                        .await
                        .map_err(|e| Error::Options(format!("reading a decrypted layer: {e}")))?;
                    dst.put_blob(l, Box::new(tokio::io::BufReader::new(f)))
                        .await?;
                }
            }
            None => {
                copy_blob(&src, &dst, l, &req.progress).await?;
            }
        }
    }
    let manifest = ImageManifest {
        layers,
        ..image.manifest.clone()
    };
    let media_type = image.raw_manifest.media_type.clone();
    let raw = RawManifest::new(cloak_image::spec::to_canonical_json(&manifest), media_type);
    dst.commit(&raw).await?;
    Ok(DecryptReport {
        destination: dst.describe(),
        digest: raw.digest.to_string(),
        decrypted_layers: decrypted,
    })
}
