//! `cloak decrypt`: an ocicrypt-encrypted image back to plain layers, verified three ways before
//! anything is written: the ciphertext's digest (as every blob), its HMAC, and the plaintext's
//! `diff_id` from the config. The nonce is taken only from the private options; public cipher
//! options that try to set it are refused (the reference silently decrypts to garbage). Layers
//! are decrypted in parallel into a staging directory; the output is opened only once every
//! layer has passed, so a failure leaves nothing behind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloak_crypt::keyprovider::Config as ProviderConfig;
use cloak_crypt::keys::PrivateKey;
use cloak_crypt::{blockcipher::Decryptor, spec};
use cloak_image::image::{resolve, staging_dir_for, RawManifest, Source};
use cloak_image::layer::{decompress, ReadAhead};
use cloak_image::spec::{Descriptor, ImageManifest};
use cloak_image::Digest;
use serde::Serialize;
use sha2::Digest as _;

use crate::crypt::{bounded, meta, open_layer, worker_count, write_image, KeyMaterial, Transfer};
use crate::error::{Error, Result};

/// One decryption.
pub struct DecryptRequest {
    /// Input, output and how.
    pub transfer: Transfer,
    /// Keys that open the layers.
    pub keys: KeyMaterial,
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

/// Decrypt one blob into `path`: `(blob digest, size, diff_id)`. The plaintext is
/// decompressed and hashed on a second thread in the same pass; the HMAC is checked at the end.
fn decrypt_to_file(
    reader: cloak_image::registry::BlobReader,
    path: &Path,
    key: &[u8],
    nonce: &[u8; 16],
    hmac: &[u8],
    layer: &str,
) -> Result<(Digest, u64, std::io::Result<Digest>)> {
    let io = |e: std::io::Error| Error::Operation(format!("decrypting layer {layer}: {e}"));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let mut dec = Decryptor::new(bridge, key, nonce).expect("key and nonce lengths checked");
    let mut out = std::fs::File::create(path).map_err(io)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    let differ = std::thread::spawn(move || -> std::io::Result<Digest> {
        let mut r = decompress(ReadAhead::from_channel(rx))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut r, &mut h)?;
        Ok(Digest::from_sha256(h.finalize().into()))
    });
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = dec.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        out.write_all(&buf).map_err(io)?;
        size += n as u64;
        // The decompressor may stop early on garbage; its verdict comes from join below.
        let _ = tx.send(Ok(buf));
    }
    drop(tx);
    out.sync_data().map_err(io)?;
    let diff_id = differ
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("decompressor panicked")));
    if !dec.verify(hmac) {
        return Err(Error::Crypt(cloak_crypt::Error::Hmac {
            layer: layer.to_string(),
        }));
    }
    Ok((Digest::from_sha256(hasher.finalize().into()), size, diff_id))
}

/// Decrypt and verify one layer into `dir`.
async fn decrypt_layer(
    src: Arc<Source>,
    desc: Descriptor,
    index: usize,
    expected_diff_id: Option<Digest>,
    dir: PathBuf,
    keys: Arc<Vec<PrivateKey>>,
    providers: Arc<ProviderConfig>,
) -> Result<(Descriptor, PathBuf)> {
    let plain_type = spec::decrypted_media_type(&desc.media_type)
        .expect("only encrypted layers are decrypted")
        .to_string();
    let pubopts = spec::public_options(&desc.annotations)
        .ok_or_else(|| {
            meta(
                &desc,
                "no public cipher options (org.opencontainers.image.enc.pubopts)",
            )
        })?
        .map_err(|e| meta(&desc, e))?;
    if pubopts.cipher != "AES_256_CTR_HMAC_SHA256" {
        return Err(meta(
            &desc,
            format!("unsupported cipher {}", pubopts.cipher),
        ));
    }
    if pubopts.cipher_options.contains_key("nonce") {
        return Err(meta(
            &desc,
            "the public cipher options try to set the nonce; refusing (only the wrapped private options may)",
        ));
    }
    let d = desc.clone();
    let privopts = tokio::task::spawn_blocking(move || open_layer(&d, &keys, &providers))
        .await
        .map_err(|e| Error::Operation(format!("key unwrapping worker failed: {e}")))??;
    let privopts: spec::PrivateOptions = serde_json::from_slice(&privopts)
        .map_err(|e| meta(&desc, format!("private options: {e}")))?;
    let nonce = privopts
        .nonce()
        .ok_or_else(|| meta(&desc, "the private options carry no 16-byte nonce"))?;
    if privopts.symkey.len() != 32 {
        return Err(meta(&desc, "the symmetric key is not 32 bytes"));
    }
    let reader = src.blob(&desc).await?;
    let path = dir.join(format!("layer{index}"));
    let (p, key, hmac, name) = (
        path.clone(),
        privopts.symkey.clone(),
        pubopts.hmac.clone(),
        desc.digest.to_string(),
    );
    let (digest, size, diff_id) = tokio::task::spawn_blocking(move || {
        decrypt_to_file(reader, &p, &key, &nonce, &hmac, &name)
    })
    .await
    .map_err(|e| Error::Operation(format!("decryption worker failed: {e}")))??;
    // The plaintext must be the layer the config names.
    let diff_id = diff_id.map_err(|e| {
        meta(
            &desc,
            format!("the decrypted layer does not decompress: {e}"),
        )
    })?;
    if Some(diff_id) != expected_diff_id {
        return Err(meta(
            &desc,
            format!(
                "the decrypted layer's diff_id {diff_id} is not the config's {} (a layer was swapped or the config edited)",
                expected_diff_id.map(|d| d.to_string()).unwrap_or_else(|| "(none)".into())
            ),
        ));
    }
    // The private options name the blob that was handed to the encryptor. skopeo records the
    // source blob even when it recompresses on the way: an uncompressed source (whose digest
    // is the diff_id) or a gzip source recompressed to zstd. Those cases are accepted (the
    // diff_id above already matched); any other mismatch means the blob is not the one the
    // key was made for.
    let recorded = privopts.digest.as_str();
    if !recorded.is_empty() && recorded != digest.to_string() && recorded != diff_id.to_string() {
        if plain_type.ends_with("+zstd") {
            tracing::warn!(layer = %desc.digest, recorded, actual = %digest,
                "the private options record another digest (skopeo does this when it recompresses to zstd); the diff_id matched");
        } else {
            return Err(meta(
                &desc,
                format!(
                    "the decrypted blob is {digest} but the private options were made for {recorded}"
                ),
            ));
        }
    }
    let mut plain = Descriptor::new(plain_type, digest, size);
    plain.annotations = desc
        .annotations
        .iter()
        .filter(|(k, _)| !k.starts_with(spec::ENC_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((plain, path))
}

/// Decrypt the input into the output.
pub async fn decrypt(req: DecryptRequest) -> Result<DecryptReport> {
    let t = &req.transfer;
    let (keys, providers) = req.keys.load()?;
    let (keys, providers) = (Arc::new(keys), Arc::new(providers));
    if keys.is_empty() && providers.providers.is_empty() {
        return Err(Error::Operation(
            "no keys: give --key PRIVATE-KEY (or configure a key provider)".into(),
        ));
    }
    let src = Arc::new(Source::open(&t.input, &t.source_options).await?);
    let image = resolve(&src, &t.platform).await?;
    let staging = staging_dir_for(&t.output)?;
    let futures: Vec<_> = image
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, desc)| {
            let work = spec::decrypted_media_type(&desc.media_type).map(|_| {
                decrypt_layer(
                    src.clone(),
                    desc.clone(),
                    i,
                    image.config.rootfs.diff_ids.get(i).copied(),
                    staging.path().to_path_buf(),
                    keys.clone(),
                    providers.clone(),
                )
            });
            async move {
                match work {
                    Some(w) => w.await.map(Some),
                    None => Ok(None),
                }
            }
        })
        .collect();
    let results = bounded(worker_count(t.jobs), futures).await;
    let mut layers = Vec::new();
    let mut files: BTreeMap<Digest, PathBuf> = BTreeMap::new();
    let mut decrypted = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r? {
            Some((plain, path)) => {
                decrypted.push(plain.digest.to_string());
                files.insert(plain.digest, path);
                layers.push(plain);
            }
            None => layers.push(image.manifest.layers[i].clone()),
        }
    }
    let manifest = ImageManifest {
        layers: layers.clone(),
        ..image.manifest.clone()
    };
    let media_type = image.raw_manifest.media_type.clone();
    let raw = RawManifest::new(cloak_image::spec::to_canonical_json(&manifest), media_type);
    if decrypted.is_empty() {
        tracing::warn!(
            "{} has no encrypted layer: it is copied as it is",
            src.describe()
        );
    }
    let destination = write_image(t, &src, &image, &layers, &files, &raw).await?;
    drop(staging);
    Ok(DecryptReport {
        destination,
        digest: raw.digest.to_string(),
        decrypted_layers: decrypted,
    })
}
