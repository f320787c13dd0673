//! `cloak copy`: move an image between transports, blobs first, manifest last.

use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::Result;
use crate::image::{
    parse_index, parse_manifest, select_platform, Dest, PlatformSpec, RawManifest, Source,
};
use crate::registry::BlobReader;
use crate::spec::{Descriptor, ManifestKind};

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// The destination already had it.
    Skipped,
    /// Linked from another repository of the same registry.
    Mounted,
    /// Streamed from source to destination.
    Copied,
}

/// Progress callbacks; the CLI draws bars with them. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// A blob transfer starts.
    fn start(&self, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of a blob went through.
    fn advance(&self, _digest: &Digest, _n: u64) {}
    /// A blob is done.
    fn finish(&self, _digest: &Digest, _action: BlobAction) {}
    /// A conversion stage starts (`resolve`, `flatten`, `amend`, `measure`, `package`).
    fn stage(&self, _name: &str) {}
    /// Whether the caller wants the work stopped: checked between stages and before a
    /// manifest is written (a cancelled image never gets its tag).
    fn cancelled(&self) -> bool {
        false
    }
    /// Asked once, right before a manifest is written: whether the image may get its tag.
    /// The default is `!cancelled()`; a caller whose cancellations live elsewhere (the
    /// manager's database) looks there, so that a cancel acknowledged before this point
    /// always wins over the tag.
    fn may_commit(&self) -> bool {
        !self.cancelled()
    }
}

/// Progress that reports nothing.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Options of a copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Platform selected from an index (ignored with `all`).
    pub platform: PlatformSpec,
    /// Copy every image of an index, and the index itself.
    pub all: bool,
    /// Blobs transferred at once.
    pub jobs: usize,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platform: PlatformSpec::default(),
            all: false,
            jobs: 4,
            progress: Arc::new(NoProgress),
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("platform", &self.platform)
            .field("all", &self.all)
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// One blob in a copy report.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// What was done.
    pub action: BlobAction,
}

/// The result of a copy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// Source reference.
    pub source: String,
    /// Destination reference.
    pub destination: String,
    /// Digest of the manifest (or index) written.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Every blob, in manifest order.
    pub blobs: Vec<BlobReport>,
}

struct Counting {
    inner: BlobReader,
    digest: Digest,
    progress: Arc<dyn Progress>,
}

impl tokio::io::AsyncRead for Counting {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.progress.advance(&self.digest, n);
        }
        res
    }
}

/// Copy one blob: skipped when present, mounted within a registry, otherwise streamed.
pub async fn copy_blob(
    src: &Source,
    dst: &Dest,
    desc: &Descriptor,
    progress: &Arc<dyn Progress>,
) -> Result<BlobReport> {
    let report = |action| BlobReport {
        digest: desc.digest,
        size: desc.size,
        action,
    };
    progress.start(&desc.digest, desc.size);
    let action = if dst.has_blob(desc).await? {
        BlobAction::Skipped
    } else if dst.try_mount(src, desc).await {
        BlobAction::Mounted
    } else {
        let reader = src.blob(desc).await?;
        let counted = Counting {
            inner: reader,
            digest: desc.digest,
            progress: progress.clone(),
        };
        dst.put_blob(desc, Box::new(counted)).await?;
        BlobAction::Copied
    };
    progress.finish(&desc.digest, action);
    Ok(report(action))
}

/// Copy the blobs of one image manifest (config first in the report, then layers).
async fn copy_image_blobs(
    src: &Source,
    dst: &Dest,
    m: &RawManifest,
    opts: &CopyOptions,
) -> Result<Vec<BlobReport>> {
    let manifest = parse_manifest(m, &src.describe())?;
    let descs: Vec<Descriptor> = std::iter::once(manifest.config)
        .chain(manifest.layers)
        .collect();
    stream::iter(descs.iter())
        .map(|d| copy_blob(src, dst, d, &opts.progress))
        .buffered(opts.jobs.max(1))
        .try_collect()
        .await
}

/// Copy an image. Blobs go first; the manifest that makes the image visible under its tag is
/// written last, only when everything it references is in place.
pub async fn copy(src: &Source, dst: &Dest, opts: &CopyOptions) -> Result<CopyReport> {
    let what = src.describe();
    let top = src.top_manifest().await?;
    let (written, blobs) = match top.kind() {
        ManifestKind::Index if opts.all => {
            let index = parse_index(&top, &what)?;
            let mut blobs = Vec::new();
            for desc in &index.manifests {
                let child = src.child_manifest(desc).await?;
                blobs.extend(copy_image_blobs(src, dst, &child, opts).await?);
                dst.put_child_manifest(&child).await?;
            }
            dst.commit(&top).await?;
            (top, blobs)
        }
        ManifestKind::Index => {
            let index = parse_index(&top, &what)?;
            let desc = select_platform(&index, &opts.platform, &what)?;
            let child = src.child_manifest(desc).await?;
            let blobs = copy_image_blobs(src, dst, &child, opts).await?;
            dst.commit(&child).await?;
            (child, blobs)
        }
        ManifestKind::Image => {
            let blobs = copy_image_blobs(src, dst, &top, opts).await?;
            dst.commit(&top).await?;
            (top, blobs)
        }
    };
    Ok(CopyReport {
        source: what,
        destination: dst.describe(),
        digest: written.digest,
        media_type: written.media_type,
        blobs,
    })
}
