//! Writing a derived image: the base image's layers untouched, new layers appended, a new
//! config and manifest. Used by every conversion target.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::copy::Progress;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Dest, Image, RawManifest, Source};
use crate::layer::WrittenLayer;
use crate::spec::{self, Descriptor, ImageConfig, ImageManifest};

/// The result of pushing a derived image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedImage {
    /// Destination in transport syntax.
    pub reference: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Config digest (the "image ID").
    pub config_digest: Digest,
    /// Sum of config and layer sizes.
    pub size: u64,
    /// The manifest as written.
    #[serde(skip)]
    pub manifest: RawManifest,
}

/// What to change in the base image.
#[derive(Debug, Default)]
pub struct Amendment<'a> {
    /// Layers to append, in order.
    pub layers: &'a [WrittenLayer],
    /// One history line per appended layer (`created_by`).
    pub history: Vec<String>,
    /// Replace the runtime config's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replace the runtime config's cmd (`Some(vec![])` clears it).
    pub cmd: Option<Vec<String>>,
    /// Labels to add to the config.
    pub labels: BTreeMap<String, String>,
    /// Annotations on the new manifest.
    pub annotations: BTreeMap<String, String>,
}

/// Build the new config and manifest from `base` and `amend` (pure; no I/O).
pub fn derive(base: &Image, amend: &Amendment<'_>) -> Result<(Vec<u8>, RawManifest)> {
    let mut config: ImageConfig = base.config.clone();
    for l in amend.layers {
        config.rootfs.diff_ids.push(l.diff_id);
    }
    let mut rc = config.config.take().unwrap_or_default();
    if let Some(ep) = &amend.entrypoint {
        rc.entrypoint = Some(ep.clone());
    }
    if let Some(cmd) = &amend.cmd {
        rc.cmd = if cmd.is_empty() {
            None
        } else {
            Some(cmd.clone())
        };
    }
    if !amend.labels.is_empty() {
        let labels = rc.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(amend.labels.clone());
    }
    config.config = Some(rc);
    if !amend.history.is_empty() {
        let history = config
            .extra
            .entry("history".to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(items) = history {
            for line in &amend.history {
                items.push(serde_json::json!({ "created_by": line, "comment": "cloak" }));
            }
        }
    }
    let config_bytes = spec::to_canonical_json(&config);
    let docker = base.raw_manifest.media_type == spec::DOCKER_MANIFEST;
    let (manifest_type, config_type, layer_type) = if docker {
        (
            spec::DOCKER_MANIFEST,
            spec::DOCKER_CONFIG,
            spec::DOCKER_LAYER_GZIP,
        )
    } else {
        (spec::OCI_MANIFEST, spec::OCI_CONFIG, spec::OCI_LAYER_GZIP)
    };
    let mut layers = base.manifest.layers.clone();
    for l in amend.layers {
        let mut d = l.descriptor.clone();
        d.media_type = layer_type.to_string();
        layers.push(d);
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        config: Descriptor::new(
            config_type,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        ),
        layers,
        annotations: amend.annotations.clone(),
        extra: BTreeMap::new(),
    };
    if base
        .manifest
        .layers
        .iter()
        .any(|l| l.media_type.ends_with("+encrypted"))
    {
        return Err(Error::Invalid(format!(
            "{} has encrypted layers; decrypt it first (cloak decrypt)",
            base.reference
        )));
    }
    Ok((
        config_bytes,
        RawManifest::new(spec::to_canonical_json(&manifest), manifest_type),
    ))
}

async fn file_reader(path: &Path) -> Result<crate::registry::BlobReader> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("open layer", path, e))?;
    Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, f)))
}

/// Copy the base image's layers to `dst` (skipped when present, mounted or streamed from `src`).
/// Converters run this concurrently with their own reading of the layers; until the manifest is
/// written the blobs are invisible, so this never publishes anything by itself.
pub async fn copy_base_layers(
    src: &Source,
    base: &Image,
    dst: &Dest,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    for desc in &base.manifest.layers {
        crate::copy::copy_blob(src, dst, desc, progress).await?;
    }
    Ok(())
}

/// Write the derived image to `dst`: base layers (see [`copy_base_layers`]), then new layers,
/// then the config, and the manifest last.
pub async fn push(
    src: &Source,
    base: &Image,
    amend: &Amendment<'_>,
    dst: &Dest,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage> {
    let (config_bytes, manifest) = derive(base, amend)?;
    copy_base_layers(src, base, dst, &progress).await?;
    write_new_parts(amend, config_bytes, manifest, dst, progress.as_ref()).await
}

/// An image with no layers whose runtime config is `runtime`: the base of an image assembled
/// from files alone (`cloak assemble`), with nothing to copy from anywhere.
pub fn scratch(reference: &str, architecture: &str, runtime: spec::RuntimeConfig) -> Image {
    let config = ImageConfig {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: None,
        config: Some(runtime),
        rootfs: spec::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        extra: BTreeMap::new(),
    };
    let raw_config = spec::to_canonical_json(&config);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(spec::OCI_MANIFEST.into()),
        config: Descriptor::new(
            spec::OCI_CONFIG,
            Digest::of(&raw_config),
            raw_config.len() as u64,
        ),
        layers: Vec::new(),
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    Image {
        reference: reference.into(),
        index: None,
        raw_manifest: RawManifest::new(spec::to_canonical_json(&manifest), spec::OCI_MANIFEST),
        manifest,
        raw_config: raw_config.into(),
        config,
    }
}

/// Write an image built on a [`scratch`] base (no base layers to copy): new layers, config,
/// and the manifest last.
pub async fn push_scratch(base: &Image, amend: &Amendment<'_>, dst: &Dest) -> Result<PushedImage> {
    if !base.manifest.layers.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has layers: push_scratch only writes images assembled from files",
            base.reference
        )));
    }
    let (config_bytes, manifest) = derive(base, amend)?;
    write_new_parts(amend, config_bytes, manifest, dst, &crate::copy::NoProgress).await
}

/// The new layers and the config, then the manifest (unless cancelled by then).
async fn write_new_parts(
    amend: &Amendment<'_>,
    config_bytes: Vec<u8>,
    manifest: RawManifest,
    dst: &Dest,
    progress: &dyn Progress,
) -> Result<PushedImage> {
    for l in amend.layers {
        if !dst.has_blob(&l.descriptor).await? {
            dst.put_blob(&l.descriptor, file_reader(&l.path).await?)
                .await?;
        }
    }
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes).expect("we just wrote it");
    let config_desc = parsed.config.clone();
    if !dst.has_blob(&config_desc).await? {
        dst.put_blob(&config_desc, Box::new(std::io::Cursor::new(config_bytes)))
            .await?;
    }
    if !progress.may_commit() {
        return Err(Error::Cancelled {
            what: dst.describe(),
        });
    }
    dst.commit(&manifest).await?;
    Ok(PushedImage {
        reference: dst.describe(),
        digest: manifest.digest,
        config_digest: config_desc.digest,
        size: config_desc.size + parsed.layers.iter().map(|l| l.size).sum::<u64>(),
        manifest,
    })
}
