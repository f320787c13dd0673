//! OCI image layouts (`oci:DIR[:TAG]`): read and write.
//!
//! Writes never expose a partial image: blobs land under a temporary name and are renamed
//! once their digest is verified, and `index.json` is replaced atomically only at commit.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::{AsyncVerifyingReader, Digest, Verifier};
use crate::error::{Error, Result};
use crate::image::{sniff_media_type, RawManifest};
use crate::registry::{BlobReader, MAX_MANIFEST_SIZE};
use crate::spec::{self, Descriptor, ImageIndex};

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

fn describe(dir: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    }
}

/// Read a small file whole, refusing it past `limit` bytes before more is read (the size
/// is not taken from metadata: the file may be a pipe, or change while it is read).
pub(crate) fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::ManifestTooLarge {
            reference: format!("{what} ({})", path.display()),
            size: std::fs::metadata(path)
                .map_or(0, |m| m.len())
                .max(bytes.len() as u64),
            limit,
        });
    }
    Ok(bytes)
}

fn read_index(dir: &Path) -> Result<ImageIndex> {
    let path = dir.join("index.json");
    let bytes = read_limited(&path, MAX_MANIFEST_SIZE, "OCI layout index")?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
}

/// Reading side of a layout.
#[derive(Debug)]
pub struct LayoutSource {
    dir: PathBuf,
    tag: Option<String>,
    top: Descriptor,
}

impl LayoutSource {
    /// Open the layout at `dir` and select `tag` (or its only image).
    pub fn open(dir: &Path, tag: Option<&str>) -> Result<Self> {
        let what = describe(dir, tag);
        if !dir.join("oci-layout").is_file() {
            return Err(Error::NotFound {
                what: format!("{}/oci-layout", dir.display()),
                hint: format!("{what} is not an OCI image layout"),
            });
        }
        let index = read_index(dir)?;
        let tags = || -> Vec<String> {
            index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(spec::ANNOTATION_REF_NAME).cloned())
                .collect()
        };
        let top = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| {
                    d.annotations
                        .get(spec::ANNOTATION_REF_NAME)
                        .map(String::as_str)
                        == Some(t)
                })
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    what: what.clone(),
                    hint: format!("tags in the layout: {}", tags().join(", ")),
                })?,
            None => match index.manifests.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(Error::NotFound {
                        what: format!("an image in {what}"),
                        hint: "the layout is empty".into(),
                    })
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "{what} holds {} images; name one as oci:{}:TAG (tags: {})",
                        index.manifests.len(),
                        dir.display(),
                        tags().join(", ")
                    )))
                }
            },
        };
        Ok(LayoutSource {
            dir: dir.to_path_buf(),
            tag: tag.map(str::to_string),
            top,
        })
    }

    /// `oci:DIR[:TAG]`.
    pub fn describe(&self) -> String {
        describe(&self.dir, self.tag.as_deref())
    }

    /// The selected manifest or index.
    pub fn top_manifest(&self) -> Result<RawManifest> {
        self.manifest_blob(&self.top.clone())
    }

    /// Read and verify a manifest blob.
    pub fn manifest_blob(&self, desc: &Descriptor) -> Result<RawManifest> {
        let what = format!("manifest {} in {}", desc.digest, self.describe());
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                reference: what,
                size: desc.size,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let path = blob_path(&self.dir, &desc.digest);
        let bytes = read_limited(&path, MAX_MANIFEST_SIZE, &what)?;
        let mut v = Verifier::new(what.clone(), desc.digest, Some(desc.size));
        v.update(&bytes)?;
        v.finish()?;
        let media_type = sniff_media_type(&bytes, &self.describe())?;
        Ok(RawManifest {
            bytes: bytes.into(),
            media_type,
            digest: desc.digest,
        })
    }

    /// Stream a blob, verified against `desc`.
    pub async fn blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let path = blob_path(&self.dir, &desc.digest);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io("open blob", &path, e))?;
        let what = format!("blob {} in {}", desc.digest, self.describe());
        Ok(Box::new(AsyncVerifyingReader::new(
            tokio::io::BufReader::with_capacity(256 * 1024, file),
            Verifier::new(what, desc.digest, Some(desc.size)),
        )))
    }
}

/// Writing side of a layout.
#[derive(Debug)]
pub struct LayoutDest {
    dir: PathBuf,
    tag: Option<String>,
}

impl LayoutDest {
    /// Create (or reuse) the layout at `dir`; the image is tagged `tag` at commit.
    pub fn open(dir: &Path, tag: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(|e| Error::io("create OCI layout", dir, e))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            std::fs::write(&marker, OCI_LAYOUT).map_err(|e| Error::io("write", &marker, e))?;
        }
        Ok(LayoutDest {
            dir: dir.to_path_buf(),
            tag: tag.map(str::to_string),
        })
    }

    /// `oci:DIR[:TAG]`.
    pub fn describe(&self) -> String {
        describe(&self.dir, self.tag.as_deref())
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the blob is present with the right size.
    pub fn has_blob(&self, desc: &Descriptor) -> bool {
        std::fs::metadata(blob_path(&self.dir, &desc.digest)).is_ok_and(|m| m.len() == desc.size)
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.dir.join("blobs/sha256");
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create temporary blob in", &dir, e))
    }

    fn persist(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        let path = blob_path(&self.dir, digest);
        tmp.persist(&path)
            .map_err(|e| Error::io("rename blob into place", &path, e.error))?;
        Ok(())
    }

    /// Stream a blob into place; on any error nothing is left under its final name.
    /// `data` must already be verified against `desc` (every [`crate::Source`] stream is);
    /// only its size is checked again here.
    pub async fn put_blob(&self, desc: &Descriptor, data: BlobReader) -> Result<()> {
        let tmp = self.temp_file()?;
        let file = tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?;
        let what = format!("blob {} for {}", desc.digest, self.describe());
        let size = desc.size;
        let checked = AsyncVerifyingReader::new(data, Verifier::size_only(what.clone(), size));
        // Blocking writes on a worker thread: tokio's file type would hop threads per write.
        let tmp = tokio::task::spawn_blocking(move || -> Result<tempfile::NamedTempFile> {
            let mut reader = tokio_util::io::SyncIoBridge::new(checked);
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            std::io::copy(&mut reader, &mut out)
                .map_err(|e| Error::from_stream(what.clone(), e))?;
            out.flush().map_err(|e| Error::io("write", tmp.path(), e))?;
            Ok(tmp)
        })
        .await
        .map_err(|e| Error::Invalid(format!("blob writer failed: {e}")))??;
        self.persist(tmp, &desc.digest)
    }

    /// Move a finished file (its digest and size already computed by the caller) into place.
    pub fn put_file(&self, desc: &Descriptor, path: &Path) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if meta.len() != desc.size {
            return Err(Error::Invalid(format!(
                "staged blob {} is {} bytes, its descriptor says {}",
                desc.digest,
                meta.len(),
                desc.size
            )));
        }
        let target = blob_path(&self.dir, &desc.digest);
        if std::fs::rename(path, &target).is_err() {
            let tmp = self.temp_file()?;
            std::fs::copy(path, tmp.path()).map_err(|e| Error::io("copy", path, e))?;
            self.persist(tmp, &desc.digest)?;
        }
        Ok(())
    }

    /// Write a manifest (or any small blob) whose bytes are in memory.
    pub fn put_manifest_blob(&self, m: &RawManifest) -> Result<()> {
        self.put_bytes(&m.bytes, &m.digest)
    }

    /// Write a small in-memory blob.
    pub fn put_bytes(&self, bytes: &[u8], digest: &Digest) -> Result<()> {
        if std::fs::metadata(blob_path(&self.dir, digest))
            .is_ok_and(|m| m.len() == bytes.len() as u64)
        {
            return Ok(());
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes)
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        self.persist(tmp, digest)
    }

    /// Point the tag at `top` by rewriting `index.json` atomically.
    pub fn commit(&self, top: &RawManifest) -> Result<()> {
        let index_path = self.dir.join("index.json");
        let mut index = if index_path.exists() {
            read_index(&self.dir)?
        } else {
            ImageIndex {
                schema_version: 2,
                media_type: Some(spec::OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: Default::default(),
                extra: Default::default(),
            }
        };
        let mut desc = top.descriptor();
        match &self.tag {
            Some(tag) => {
                index
                    .manifests
                    .retain(|d| d.annotations.get(spec::ANNOTATION_REF_NAME) != Some(tag));
                desc.annotations
                    .insert(spec::ANNOTATION_REF_NAME.into(), tag.clone());
            }
            None => index.manifests.retain(|d| d.digest != top.digest),
        }
        index.manifests.push(desc);
        let mut tmp = tempfile::Builder::new()
            .prefix(".index-")
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io("create temporary index in", &self.dir, e))?;
        tmp.write_all(&spec::to_canonical_json(&index))
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        tmp.persist(&index_path)
            .map_err(|e| Error::io("replace", &index_path, e.error))?;
        Ok(())
    }
}
