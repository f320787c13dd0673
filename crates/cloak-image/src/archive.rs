//! `docker save` archives (`docker-archive:FILE[:REF]`), read side.
//!
//! The archive is indexed once (entry offsets only); blobs are then streamed straight from
//! the file. The archive has no manifest of its own, so an OCI manifest is synthesised
//! deterministically from `manifest.json`, the config and the layers' first bytes.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::io::AsyncSeekExt;

use crate::digest::{AsyncVerifyingReader, Digest, Verifier};
use crate::error::{Error, Result};
use crate::image::RawManifest;
use crate::layer::sniff_compression;
use crate::registry::BlobReader;
use crate::spec::{self, Compression, Descriptor, ImageConfig, ImageManifest};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reading side of a docker archive.
#[derive(Debug)]
pub struct ArchiveSource {
    path: PathBuf,
    tag: Option<String>,
    manifest: RawManifest,
    /// digest → (offset, size) of the blob inside the tar file.
    blobs: BTreeMap<Digest, (u64, u64)>,
}

fn normalize(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl ArchiveSource {
    /// Index the archive at `path` and select `tag` (or its only image).
    pub fn open(path: &Path, tag: Option<&str>) -> Result<Self> {
        let what = match tag {
            Some(t) => format!("docker-archive:{}:{t}", path.display()),
            None => format!("docker-archive:{}", path.display()),
        };
        let mut file =
            std::fs::File::open(path).map_err(|e| Error::io("open docker archive", path, e))?;
        let mut entries: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut links: BTreeMap<String, String> = BTreeMap::new();
        {
            // Checked as layers are: tar-rs reads long names and PAX headers whole.
            let guarded =
                crate::flatten::TarGuard::archive(std::io::BufReader::new(&mut file), &what);
            let mut archive = tar::Archive::new(guarded);
            let read_err = |e: std::io::Error| {
                if e.get_ref().is_some_and(|i| i.is::<Error>()) {
                    Error::from_stream(what.clone(), e)
                } else {
                    Error::io("read docker archive", path, e)
                }
            };
            let iter = archive.entries().map_err(read_err)?;
            for entry in iter {
                let entry = entry.map_err(read_err)?;
                let name = normalize(
                    &entry
                        .path()
                        .map_err(|e| Error::io("read docker archive", path, e))?
                        .to_string_lossy(),
                );
                match entry.header().entry_type() {
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Ok(Some(target)) = entry.link_name() {
                            let target = target.to_string_lossy().to_string();
                            let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                            let resolved = if entry.header().entry_type() == tar::EntryType::Symlink
                            {
                                lexical_join(base, &target)
                            } else {
                                normalize(&target)
                            };
                            links.insert(name, resolved);
                        }
                    }
                    _ => {
                        entries.insert(name, (entry.raw_file_position(), entry.size()));
                    }
                }
            }
        }
        let locate = |name: &str| -> Result<(u64, u64)> {
            let mut n = normalize(name);
            for _ in 0..8 {
                if let Some(hit) = entries.get(&n) {
                    return Ok(*hit);
                }
                match links.get(&n) {
                    Some(next) => n = next.clone(),
                    None => break,
                }
            }
            Err(Error::NotFound {
                what: format!("{name} in {what}"),
                hint: "the archive is incomplete or not a docker save archive".into(),
            })
        };
        let read_small =
            |file: &mut std::fs::File, (off, size): (u64, u64), limit: u64| -> Result<Vec<u8>> {
                if size > limit {
                    return Err(Error::Invalid(format!(
                        "{what}: metadata file of {size} bytes is too large"
                    )));
                }
                let mut buf = vec![0; size as usize];
                file.seek(SeekFrom::Start(off))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|e| Error::io("read docker archive", path, e))?;
                Ok(buf)
            };
        let manifest_json = read_small(&mut file, locate("manifest.json")?, 1 << 20)?;
        let images: Vec<ArchiveEntry> = serde_json::from_slice(&manifest_json)
            .map_err(|e| Error::json(format!("manifest.json of {what}"), e))?;
        let image = match tag {
            Some(t) => images
                .iter()
                .find(|i| {
                    i.repo_tags
                        .iter()
                        .flatten()
                        .any(|rt| rt == t || rt.rsplit_once(':').map(|(_, tt)| tt) == Some(t))
                })
                .ok_or_else(|| Error::NotFound {
                    what: what.clone(),
                    hint: "no RepoTags entry matches".into(),
                })?,
            None if images.len() == 1 => &images[0],
            None => {
                return Err(Error::Invalid(format!(
                    "{what} holds {} images; name one as docker-archive:{}:REPO:TAG",
                    images.len(),
                    path.display()
                )))
            }
        };
        let config_loc = locate(&image.config)?;
        let config_bytes = read_small(&mut file, config_loc, 8 << 20)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::json(format!("config of {what}"), e))?;
        if config.rootfs.diff_ids.len() != image.layers.len() {
            return Err(Error::Invalid(format!(
                "{what}: the config lists {} diff_ids but manifest.json {} layers",
                config.rootfs.diff_ids.len(),
                image.layers.len()
            )));
        }
        let mut blobs = BTreeMap::new();
        let config_digest = Digest::of(&config_bytes);
        blobs.insert(config_digest, config_loc);
        let mut layers = Vec::new();
        for (name, diff_id) in image.layers.iter().zip(&config.rootfs.diff_ids) {
            let (off, size) = locate(name)?;
            let mut head = [0u8; 4];
            let n = read_small(&mut file, (off, size.min(4)), 4)?;
            head[..n.len()].copy_from_slice(&n);
            let compression = sniff_compression(&head[..n.len()]);
            // Uncompressed layers are named by their diff_id; others must be hashed once.
            let digest = match compression {
                Compression::None => *diff_id,
                _ => hash_range(&mut file, off, size)
                    .map_err(|e| Error::io("hash layer in", path, e))?,
            };
            let media_type = match compression {
                Compression::None => spec::OCI_LAYER_TAR,
                Compression::Gzip => spec::OCI_LAYER_GZIP,
                Compression::Zstd => spec::OCI_LAYER_ZSTD,
            };
            blobs.insert(digest, (off, size));
            layers.push(Descriptor::new(media_type, digest, size));
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(spec::OCI_MANIFEST.into()),
            config: Descriptor::new(spec::OCI_CONFIG, config_digest, config_bytes.len() as u64),
            layers,
            annotations: Default::default(),
            extra: Default::default(),
        };
        Ok(ArchiveSource {
            path: path.to_path_buf(),
            tag: tag.map(str::to_string),
            manifest: RawManifest::new(spec::to_canonical_json(&manifest), spec::OCI_MANIFEST),
            blobs,
        })
    }

    /// `docker-archive:FILE[:REF]`.
    pub fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("docker-archive:{}:{t}", self.path.display()),
            None => format!("docker-archive:{}", self.path.display()),
        }
    }

    /// The synthesised OCI manifest.
    pub fn manifest(&self) -> &RawManifest {
        &self.manifest
    }

    /// Stream a blob from the archive, verified.
    pub async fn blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let (off, size) = *self
            .blobs
            .get(&desc.digest)
            .ok_or_else(|| Error::NotFound {
                what: format!("blob {} in {}", desc.digest, self.describe()),
                hint: String::new(),
            })?;
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| Error::io("open docker archive", &self.path, e))?;
        file.seek(SeekFrom::Start(off))
            .await
            .map_err(|e| Error::io("seek in docker archive", &self.path, e))?;
        let limited = tokio::io::AsyncReadExt::take(
            tokio::io::BufReader::with_capacity(256 * 1024, file),
            size,
        );
        Ok(Box::new(AsyncVerifyingReader::new(
            limited,
            Verifier::new(
                format!("blob {} in {}", desc.digest, self.describe()),
                desc.digest,
                Some(desc.size),
            ),
        )))
    }
}

fn lexical_join(base: &Path, target: &str) -> String {
    let mut parts: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.iter()
            .map(|c| c.to_string_lossy().to_string())
            .collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other.to_string()),
        }
    }
    parts.join("/")
}

fn hash_range(file: &mut std::fs::File, off: u64, size: u64) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    file.seek(SeekFrom::Start(off))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file.take(size), &mut hasher)?;
    Ok(Digest::from_sha256(hasher.finalize().into()))
}
