//! `cloak encrypt`: ocicrypt layer encryption, and recipient changes without re-encryption.
//!
//! Each selected layer gets a fresh 32-byte key and 16-byte nonce, is encrypted with
//! `AES_256_CTR_HMAC_SHA256` while streaming from the source into a staging file (hashing the
//! ciphertext on the way), and its private options are wrapped for every recipient. Layers are
//! processed in parallel. Public options never carry a nonce. Nothing becomes visible before
//! every blob is written: the manifest (and tag) go last.
//!
//! With `--add-recipient`/`--remove-recipient` the image must already be encrypted: the layer
//! keys are unwrapped with `--key` (or a provider), rewrapped, and the blobs copied unchanged.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloak_crypt::keyprovider::Config as ProviderConfig;
use cloak_crypt::keywrap::{self, Recipient};
use cloak_crypt::{blockcipher::Encryptor, spec};
use cloak_image::image::{resolve, staging_dir_for, Image, RawManifest, Source};
use cloak_image::spec::{Descriptor, ImageManifest};
use cloak_image::Digest;
use rand::RngCore;
use serde::Serialize;
use sha2::Digest as _;

use crate::crypt::{bounded, meta, open_layer, worker_count, write_image, KeyMaterial, Transfer};
use crate::error::{Error, Result};

/// One encryption (or recipient change).
pub struct EncryptRequest {
    /// Input (plain, or encrypted to change recipients), output and how.
    pub transfer: Transfer,
    /// `--recipient` arguments (encrypting a plain image).
    pub recipients: Vec<String>,
    /// Layer indices to encrypt (negative counts from the top); all when empty.
    pub layers: Vec<i64>,
    /// `--add-recipient` arguments (rewrapping an encrypted image).
    pub add: Vec<String>,
    /// `--remove-recipient` arguments.
    pub remove: Vec<String>,
    /// Keys that open the existing recipients (rewrapping), and providers.
    pub keys: KeyMaterial,
}

/// One layer of the result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// Digest in the output.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Schemes and recipient counts (`jwe (2 recipients)`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub recipients: String,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptReport {
    /// Output reference.
    pub destination: String,
    /// Output manifest digest.
    pub digest: String,
    /// Every layer.
    pub layers: Vec<LayerReport>,
    /// What the user should know (e.g. encryption annotations dropped from plain layers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn parse_recipients(specs: &[String]) -> Result<Vec<Recipient>> {
    specs
        .iter()
        .map(|s| Recipient::parse(s).map_err(Error::Crypt))
        .collect()
}

/// Which layer indices `selectors` pick out of `n` (negative = from the top).
pub fn select_layers(selectors: &[i64], n: usize) -> Result<Vec<bool>> {
    if selectors.is_empty() {
        return Ok(vec![true; n]);
    }
    let mut picked = vec![false; n];
    for &s in selectors {
        let i = if s < 0 { n as i64 + s } else { s };
        if i < 0 || i >= n as i64 {
            return Err(Error::Operation(format!(
                "--layer {s}: the image has {n} layer(s), so use 0..{} or -1..-{n}",
                n.saturating_sub(1)
            )));
        }
        picked[i as usize] = true;
    }
    Ok(picked)
}

/// A staged encrypted layer.
struct Staged {
    desc: Descriptor,
    path: PathBuf,
    warning: Option<String>,
}

/// The annotations of a plain layer that its encrypted form keeps, and a warning naming the
/// `org.opencontainers.image.enc.*` ones it drops. A plain layer has no recipients: such
/// annotations were planted (a wrapped key for someone else, forged public options) and,
/// copied, would sit beside the real recipients' entries.
fn plain_annotations(
    desc: &Descriptor,
    index: usize,
) -> (BTreeMap<String, String>, Option<String>) {
    let (planted, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = desc
        .annotations
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with(spec::ENC_PREFIX));
    let warning = (!planted.is_empty()).then(|| {
        format!(
            "layer {index} ({}) is not encrypted but carries encryption annotations; dropped them: {}",
            desc.digest,
            planted
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    (kept, warning)
}

fn encrypt_to_file(
    reader: cloak_image::registry::BlobReader,
    path: &Path,
    key: &[u8; 32],
    nonce: &[u8; 16],
    what: &str,
) -> Result<(Digest, u64, [u8; 32])> {
    let io = |e: std::io::Error| Error::Operation(format!("{what}: {e}"));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let mut enc = Encryptor::new(bridge, key, nonce);
    let mut out = std::fs::File::create(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = enc.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
        size += n as u64;
    }
    out.sync_data().map_err(io)?;
    Ok((
        Digest::from_sha256(hasher.finalize().into()),
        size,
        enc.finish(),
    ))
}

/// Encrypt one layer into `dir`, wrapping its key for `recipients`.
async fn encrypt_layer(
    src: Arc<Source>,
    desc: Descriptor,
    index: usize,
    dir: PathBuf,
    recipients: Arc<Vec<Recipient>>,
    providers: Arc<ProviderConfig>,
) -> Result<Staged> {
    let enc_type = spec::encrypted_media_type(&desc.media_type).ok_or_else(|| {
        Error::Operation(format!(
            "layer {index} ({}) has media type {}, which ocicrypt cannot encrypt; leave it out with --layer",
            desc.digest, desc.media_type
        ))
    })?;
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let reader = src.blob(&desc).await?;
    let path = dir.join(format!("layer{index}"));
    let what = format!("encrypting layer {index} ({})", desc.digest);
    let p = path.clone();
    let (digest, size, hmac) =
        tokio::task::spawn_blocking(move || encrypt_to_file(reader, &p, &key, &nonce, &what))
            .await
            .map_err(|e| Error::Operation(format!("encryption worker failed: {e}")))??;
    let privopts = spec::private_options_json(&key, &desc.digest.to_string(), &nonce);
    let wrapped =
        tokio::task::spawn_blocking(move || keywrap::wrap(&privopts, &recipients, &providers))
            .await
            .map_err(|e| Error::Operation(format!("key wrapping worker failed: {e}")))??;
    let mut out = Descriptor::new(enc_type, digest, size);
    let (annotations, warning) = plain_annotations(&desc, index);
    out.annotations = annotations;
    out.annotations
        .insert(spec::PUBOPTS.into(), spec::public_options_json(&hmac));
    keywrap::append(&mut out.annotations, wrapped);
    Ok(Staged {
        desc: out,
        path,
        warning,
    })
}

/// The OCI manifest of the result: Docker manifests become OCI ones (ocicrypt's encrypted
/// layer types exist only in OCI), the config bytes are kept.
fn output_manifest(image: &Image, layers: Vec<Descriptor>) -> RawManifest {
    let mut config = image.manifest.config.clone();
    if config.media_type == cloak_image::spec::DOCKER_CONFIG {
        config.media_type = cloak_image::spec::OCI_CONFIG.into();
    }
    let manifest = ImageManifest {
        media_type: Some(cloak_image::spec::OCI_MANIFEST.into()),
        config,
        layers,
        ..image.manifest.clone()
    };
    RawManifest::new(
        cloak_image::spec::to_canonical_json(&manifest),
        cloak_image::spec::OCI_MANIFEST,
    )
}

fn layer_reports(layers: &[Descriptor]) -> Vec<LayerReport> {
    layers
        .iter()
        .map(|l| LayerReport {
            digest: l.digest.to_string(),
            media_type: l.media_type.clone(),
            encrypted: l.media_type.ends_with("+encrypted"),
            recipients: if l.media_type.ends_with("+encrypted") {
                keywrap::describe(&l.annotations)
            } else {
                String::new()
            },
        })
        .collect()
}

/// Encrypt the input into the output, or change the input's recipients.
pub async fn encrypt(req: EncryptRequest) -> Result<EncryptReport> {
    let rewrap = !req.add.is_empty() || !req.remove.is_empty();
    if rewrap && !req.recipients.is_empty() {
        return Err(Error::Operation(
            "--recipient encrypts a plain image; --add-recipient/--remove-recipient change the recipients of an encrypted one: use one or the other".into(),
        ));
    }
    if !rewrap && req.recipients.is_empty() {
        return Err(Error::Operation(
            "no recipients: give --recipient jwe:PUBLIC-KEY (or pkcs7:CERT, provider:NAME)".into(),
        ));
    }
    let t = &req.transfer;
    let (keys, providers) = req.keys.load()?;
    let providers = Arc::new(providers);
    let src = Arc::new(Source::open(&t.input, &t.source_options).await?);
    let image = resolve(&src, &t.platform).await?;
    if rewrap {
        return rewrap_image(&req, &src, &image, &keys, &providers).await;
    }
    let recipients = Arc::new(parse_recipients(&req.recipients)?);
    let picked = select_layers(&req.layers, image.manifest.layers.len())?;
    for (i, l) in image.manifest.layers.iter().enumerate() {
        if picked[i] && spec::decrypted_media_type(&l.media_type).is_some() {
            return Err(Error::Operation(format!(
                "layer {i} ({}) is already encrypted; change its recipients with --add-recipient/--remove-recipient and --key",
                l.digest
            )));
        }
    }
    let staging = staging_dir_for(&t.output)?;
    let mut work = Vec::new();
    for (i, l) in image.manifest.layers.iter().enumerate() {
        if picked[i] {
            work.push(Some(encrypt_layer(
                src.clone(),
                l.clone(),
                i,
                staging.path().to_path_buf(),
                recipients.clone(),
                providers.clone(),
            )));
        } else {
            work.push(None);
        }
    }
    let futures = work.into_iter().map(|w| async move {
        match w {
            Some(f) => f.await.map(Some),
            None => Ok(None),
        }
    });
    let staged = bounded(worker_count(t.jobs), futures.collect()).await;
    let mut layers = Vec::new();
    let mut files = BTreeMap::new();
    let mut warnings = Vec::new();
    for (i, s) in staged.into_iter().enumerate() {
        match s? {
            Some(s) => {
                warnings.extend(s.warning);
                files.insert(s.desc.digest, s.path);
                layers.push(s.desc);
            }
            None => layers.push(image.manifest.layers[i].clone()),
        }
    }
    let raw = output_manifest(&image, layers.clone());
    let destination = write_image(t, &src, &image, &layers, &files, &raw).await?;
    drop(staging);
    Ok(EncryptReport {
        destination,
        digest: raw.digest.to_string(),
        layers: layer_reports(&layers),
        warnings,
    })
}

async fn rewrap_image(
    req: &EncryptRequest,
    src: &Source,
    image: &Image,
    keys: &[cloak_crypt::keys::PrivateKey],
    providers: &ProviderConfig,
) -> Result<EncryptReport> {
    let t = &req.transfer;
    let add = parse_recipients(&req.add)?;
    let remove = parse_recipients(&req.remove)?;
    if !add.is_empty() && keys.is_empty() && providers.providers.is_empty() {
        return Err(Error::Operation(
            "adding a recipient needs the layer keys: give --key with a private key of a current recipient".into(),
        ));
    }
    let mut removed = vec![0usize; remove.len()];
    let mut layers = Vec::new();
    let mut any = false;
    for (i, l) in image.manifest.layers.iter().enumerate() {
        if spec::decrypted_media_type(&l.media_type).is_none() {
            layers.push(l.clone());
            continue;
        }
        any = true;
        let mut out = l.clone();
        if !add.is_empty() {
            let privopts = open_layer(l, keys, providers)?;
            let wrapped = keywrap::wrap(&privopts, &add, providers)?;
            keywrap::append(&mut out.annotations, wrapped);
        }
        for (j, r) in remove.iter().enumerate() {
            removed[j] += keywrap::remove(&mut out.annotations, r);
        }
        if keywrap::summary(&out.annotations).is_empty() {
            return Err(meta(
                l,
                format!("removing these recipients would leave layer {i} with none; nobody could decrypt it"),
            ));
        }
        layers.push(out);
    }
    if !any {
        return Err(Error::Operation(format!(
            "{} has no encrypted layer: encrypt it with --recipient",
            src.describe()
        )));
    }
    for (j, r) in remove.iter().enumerate() {
        if removed[j] == 0 {
            return Err(Error::Operation(format!(
                "--remove-recipient {}: no layer has this recipient (cloak finds JWE recipients by the key id it writes, PKCS7 ones by issuer and serial; images from other tools need a full re-encryption)",
                req.remove[j]
            )));
        }
        let _ = r;
    }
    let raw = output_manifest(image, layers.clone());
    let destination = write_image(t, src, image, &layers, &BTreeMap::new(), &raw).await?;
    Ok(EncryptReport {
        destination,
        digest: raw.digest.to_string(),
        layers: layer_reports(&layers),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_selection_counts_from_both_ends() {
        assert_eq!(select_layers(&[], 3).unwrap(), vec![true; 3]);
        assert_eq!(select_layers(&[-1], 3).unwrap(), vec![false, false, true]);
        assert_eq!(select_layers(&[0, 2], 3).unwrap(), vec![true, false, true]);
        let e = select_layers(&[3], 3).unwrap_err().to_string();
        assert!(e.contains("0..2 or -1..-3"), "{e}");
        assert!(select_layers(&[-4], 3).is_err());
    }
}
