//! Image sources and destinations across transports, and resolving a reference to one image.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::archive::ArchiveSource;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout::{LayoutDest, LayoutSource};
use crate::reference::ImageRef;
use crate::registry::{BlobReader, Registry, RegistryOptions};
use crate::spec::{
    self, Descriptor, ImageConfig, ImageIndex, ImageManifest, ManifestKind, Platform,
};

/// Config blobs larger than this are refused.
const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

/// A manifest or index exactly as stored, with its media type and digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The bytes; never re-serialised when copied, so the digest is preserved.
    pub bytes: Bytes,
    /// Its media type.
    pub media_type: String,
    /// `sha256` of `bytes`.
    pub digest: Digest,
}

impl RawManifest {
    /// Wrap bytes that cloak produced.
    pub fn new(bytes: impl Into<Bytes>, media_type: impl Into<String>) -> Self {
        let bytes = bytes.into();
        RawManifest {
            digest: Digest::of(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    /// Whether this is an index or a single image manifest.
    pub fn kind(&self) -> ManifestKind {
        spec::manifest_kind(&self.media_type).unwrap_or(ManifestKind::Image)
    }

    /// A descriptor pointing at this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest,
            self.bytes.len() as u64,
        )
    }
}

/// Determine the media type of a manifest body: its `mediaType` field, or for OCI documents
/// without one, whether it has `manifests` or `layers`. Unknown types are refused.
pub fn sniff_media_type(body: &[u8], what: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| Error::json(what, e))?;
    let media_type = match (probe.media_type, probe.manifests, probe.layers) {
        (Some(mt), _, _) => mt,
        (None, Some(_), _) => spec::OCI_INDEX.to_string(),
        (None, None, Some(_)) => spec::OCI_MANIFEST.to_string(),
        (None, None, None) => String::new(),
    };
    if spec::manifest_kind(&media_type).is_none() || probe.schema_version != Some(2) {
        return Err(Error::UnsupportedMediaType {
            what: format!("manifest of {what}"),
            media_type: if media_type.is_empty() {
                format!("(none; schemaVersion {:?})", probe.schema_version)
            } else {
                media_type
            },
        });
    }
    Ok(media_type)
}

/// Where images are read from.
pub enum Source {
    /// A registry repository.
    Registry {
        /// The client.
        registry: Registry,
        /// The reference (tag or digest).
        reference: oci_client::Reference,
    },
    /// An OCI layout.
    Layout(LayoutSource),
    /// A docker archive.
    Archive(ArchiveSource),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Source {
    /// Open `image` for reading.
    pub async fn open(image: &ImageRef, opts: &RegistryOptions) -> Result<Self> {
        Ok(match image {
            ImageRef::Registry(reference) => {
                let registry = Registry::connect(reference, opts).await?;
                registry
                    .login(reference, oci_client::RegistryOperation::Pull)
                    .await?;
                Source::Registry {
                    registry,
                    reference: reference.clone(),
                }
            }
            ImageRef::Layout { dir, tag } => {
                Source::Layout(LayoutSource::open(dir, tag.as_deref())?)
            }
            ImageRef::Archive { path, tag } => {
                Source::Archive(ArchiveSource::open(path, tag.as_deref())?)
            }
        })
    }

    /// The reference in transport syntax, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Registry { reference, .. } => format!("docker://{}", reference.whole()),
            Source::Layout(l) => l.describe(),
            Source::Archive(a) => a.describe(),
        }
    }

    /// The manifest or index the reference points at.
    pub async fn top_manifest(&self) -> Result<RawManifest> {
        match self {
            Source::Registry {
                registry,
                reference,
            } => {
                let (bytes, media_type, digest) = registry.manifest(reference).await?;
                Ok(RawManifest {
                    bytes,
                    media_type,
                    digest,
                })
            }
            Source::Layout(l) => l.top_manifest(),
            Source::Archive(a) => Ok(a.manifest().clone()),
        }
    }

    /// A manifest referenced by an index.
    pub async fn child_manifest(&self, desc: &Descriptor) -> Result<RawManifest> {
        match self {
            Source::Registry {
                registry,
                reference,
            } => {
                let child = reference.clone_with_digest(desc.digest.to_string());
                let (bytes, media_type, digest) = registry.manifest(&child).await?;
                Ok(RawManifest {
                    bytes,
                    media_type,
                    digest,
                })
            }
            Source::Layout(l) => l.manifest_blob(desc),
            Source::Archive(_) => Err(Error::NotFound {
                what: format!("manifest {} in {}", desc.digest, self.describe()),
                hint: "docker archives hold no image indexes".into(),
            }),
        }
    }

    /// Stream a blob, verified against `desc`.
    pub async fn blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        match self {
            Source::Registry {
                registry,
                reference,
            } => registry.blob(reference, desc).await,
            Source::Layout(l) => l.blob(desc).await,
            Source::Archive(a) => a.blob(desc).await,
        }
    }

    /// Read a small blob (a config) whole, verified, refusing anything over 8 MiB.
    pub async fn small_blob(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(Error::Invalid(format!(
                "{}: blob {} is {} bytes, over the {MAX_CONFIG_SIZE}-byte limit for configs",
                self.describe(),
                desc.digest,
                desc.size
            )));
        }
        let mut reader = self.blob(desc).await?;
        let mut buf = Vec::with_capacity(desc.size as usize);
        reader.read_to_end(&mut buf).await.map_err(|e| {
            Error::from_stream(format!("blob {} of {}", desc.digest, self.describe()), e)
        })?;
        Ok(buf.into())
    }
}

/// One platform image, resolved from a reference (through an index when there is one).
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it was resolved from, in transport syntax.
    pub reference: String,
    /// The index it was selected from, if any.
    pub index: Option<RawManifest>,
    /// The image manifest as stored.
    pub raw_manifest: RawManifest,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The config as stored.
    pub raw_config: Bytes,
    /// The parsed config.
    pub config: ImageConfig,
}

/// A platform to select from an index: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// `amd64`.
    pub architecture: String,
    /// `v8`, optional.
    pub variant: Option<String>,
}

impl Default for PlatformSpec {
    fn default() -> Self {
        PlatformSpec {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for PlatformSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(Error::Invalid(format!(
                "invalid platform {s:?}: use OS/ARCH[/VARIANT], e.g. linux/amd64"
            ))),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformSpec {
    fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && (self.variant.is_none() || self.variant == p.variant)
    }
}

/// Pick the entry of an index that matches `platform`.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    platform: &PlatformSpec,
    what: &str,
) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: what.to_string(),
            platform: platform.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("(none)".to_string(), |p| p.to_string())
                })
                .collect(),
        })
}

/// Parse an image manifest.
pub fn parse_manifest(raw: &RawManifest, what: &str) -> Result<ImageManifest> {
    serde_json::from_slice(&raw.bytes).map_err(|e| Error::json(format!("manifest of {what}"), e))
}

/// Parse an index.
pub fn parse_index(raw: &RawManifest, what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(&raw.bytes).map_err(|e| Error::json(format!("index of {what}"), e))
}

/// Resolve the source's reference to one image for `platform`.
pub async fn resolve(src: &Source, platform: &PlatformSpec) -> Result<Image> {
    let what = src.describe();
    let top = src.top_manifest().await?;
    let (index, raw_manifest) = match top.kind() {
        ManifestKind::Index => {
            let index = parse_index(&top, &what)?;
            let desc = select_platform(&index, platform, &what)?;
            let child = src.child_manifest(desc).await?;
            if child.kind() != ManifestKind::Image {
                return Err(Error::UnsupportedMediaType {
                    what: format!("{what}: nested index {}", desc.digest),
                    media_type: child.media_type,
                });
            }
            (Some(top), child)
        }
        ManifestKind::Image => (None, top),
    };
    let manifest = parse_manifest(&raw_manifest, &what)?;
    let raw_config = src.small_blob(&manifest.config).await?;
    let config: ImageConfig = serde_json::from_slice(&raw_config)
        .map_err(|e| Error::json(format!("config of {what}"), e))?;
    Ok(Image {
        reference: what,
        index,
        raw_manifest,
        manifest,
        raw_config,
        config,
    })
}

/// A directory for staging blobs before `image` is opened for writing, on the same
/// filesystem as an OCI layout destination (next to it) so [`Dest::put_file`] can rename;
/// the system's temporary directory for a registry. Removed when dropped.
pub fn staging_dir_for(image: &ImageRef) -> Result<tempfile::TempDir> {
    let parent = match image {
        ImageRef::Layout { dir, .. } => match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        },
        _ => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
    tempfile::Builder::new()
        .prefix(".cloak-staging-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("create a staging directory in", &parent, e))
}

/// Where images are written.
pub enum Dest {
    /// A registry repository; the manifest is pushed last, after every blob.
    Registry {
        /// The client.
        registry: Registry,
        /// The target reference (tag or digest).
        reference: oci_client::Reference,
    },
    /// An OCI layout; `index.json` is replaced atomically at commit.
    Layout(LayoutDest),
}

impl std::fmt::Debug for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Dest {
    /// Open `image` for writing.
    pub async fn open(image: &ImageRef, opts: &RegistryOptions) -> Result<Self> {
        Ok(match image {
            ImageRef::Registry(reference) => {
                let registry = Registry::connect(reference, opts).await?;
                registry.login(reference, oci_client::RegistryOperation::Push).await?;
                Dest::Registry {
                    registry,
                    reference: reference.clone(),
                }
            }
            ImageRef::Layout { dir, tag } => Dest::Layout(LayoutDest::open(dir, tag.as_deref())?),
            ImageRef::Archive { path, .. } => {
                return Err(Error::Invalid(format!(
                    "writing docker-archive:{} is not supported yet; write oci:DIR or docker://… instead",
                    path.display()
                )))
            }
        })
    }

    /// The reference in transport syntax, for messages.
    pub fn describe(&self) -> String {
        match self {
            Dest::Registry { reference, .. } => format!("docker://{}", reference.whole()),
            Dest::Layout(l) => l.describe(),
        }
    }

    /// Whether the destination already has this blob.
    pub async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        match self {
            Dest::Registry {
                registry,
                reference,
            } => registry.has_blob(reference, &desc.digest).await,
            Dest::Layout(l) => Ok(l.has_blob(desc)),
        }
    }

    /// Try a cross-repository mount from `src` (same registry only).
    pub async fn try_mount(&self, src: &Source, desc: &Descriptor) -> bool {
        match (self, src) {
            (
                Dest::Registry {
                    registry,
                    reference,
                },
                Source::Registry {
                    registry: src_registry,
                    reference: src_ref,
                },
            ) if registry.name() == src_registry.name()
                && reference.repository() != src_ref.repository() =>
            {
                registry.mount_blob(reference, src_ref, &desc.digest).await
            }
            _ => false,
        }
    }

    /// Write a blob from a verified stream.
    pub async fn put_blob(&self, desc: &Descriptor, data: BlobReader) -> Result<()> {
        match self {
            Dest::Registry {
                registry,
                reference,
            } => registry.push_blob(reference, desc, data).await,
            Dest::Layout(l) => l.put_blob(desc, data).await,
        }
    }

    /// Write a blob from a finished local file whose digest and size `desc` gives (computed
    /// by the caller while writing it). A layout destination renames it into place.
    pub async fn put_file(&self, desc: &Descriptor, path: &std::path::Path) -> Result<()> {
        match self {
            Dest::Layout(l) => l.put_file(desc, path),
            Dest::Registry { .. } => {
                if self.has_blob(desc).await? {
                    return Ok(());
                }
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| Error::io("open", path, e))?;
                self.put_blob(
                    desc,
                    Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)),
                )
                .await
            }
        }
    }

    /// Write a manifest that an index refers to (by digest, untagged).
    pub async fn put_child_manifest(&self, m: &RawManifest) -> Result<()> {
        match self {
            Dest::Registry {
                registry,
                reference,
            } => {
                let by_digest = reference.clone_with_digest(m.digest.to_string());
                registry
                    .push_manifest(&by_digest, m.bytes.clone(), &m.media_type)
                    .await
            }
            Dest::Layout(l) => l.put_manifest_blob(m),
        }
    }

    /// Write the top-level manifest and point the tag at it. Call only after every blob and
    /// child manifest is written: this is what makes the image visible.
    pub async fn commit(&self, top: &RawManifest) -> Result<()> {
        match self {
            Dest::Registry {
                registry,
                reference,
            } => {
                registry
                    .push_manifest(reference, top.bytes.clone(), &top.media_type)
                    .await
            }
            Dest::Layout(l) => {
                l.put_manifest_blob(top)?;
                l.commit(top)
            }
        }
    }
}
