//! The one error type of the image engine.

use std::path::PathBuf;

/// Result alias used throughout `cloak-image`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, copying or writing an image.
///
/// Every variant names the input it failed on and, where there is one, what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller cancelled the transfer before the manifest was written (no tag names it).
    #[error("{what}: cancelled before the manifest was written; no tag points at a partial image")]
    Cancelled {
        /// The destination.
        what: String,
    },

    /// An image reference could not be parsed.
    #[error("invalid image reference {input:?}: {reason} (use docker://HOST/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE)")]
    InvalidReference {
        /// The reference as given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// A registry request failed.
    #[error("registry {registry}: {action} failed: {source}")]
    Registry {
        /// `host[:port]` of the registry.
        registry: String,
        /// What was being done (`pull manifest of repo:tag`, `push blob sha256:…`).
        action: String,
        /// The client's error.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },

    /// The address policy refused a registry before it was connected to.
    #[error("registry {registry}: {reason} (the operator lists internal registries with --allow-private-registry HOST:PORT)")]
    Destination {
        /// `host[:port]` of the registry.
        registry: String,
        /// Which rule refused it.
        reason: String,
    },

    /// The registry refused our credentials.
    #[error("registry {registry}: authentication failed: {reason} (check --creds / --src-creds / --dest-creds or the auths entry in your docker config)")]
    Authentication {
        /// `host[:port]` of the registry.
        registry: String,
        /// What the registry said.
        reason: String,
    },

    /// A credentials source (docker config, credential helper) could not be used.
    #[error("credentials for {registry}: {reason}")]
    Credentials {
        /// `host[:port]` of the registry.
        registry: String,
        /// What went wrong (never the secret itself).
        reason: String,
    },

    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing a stream failed.
    #[error("{what}: {source}")]
    Stream {
        /// Which blob or stream.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Content did not hash to the digest that names it.
    #[error("{what}: digest mismatch: expected {expected}, got {actual} (the source is corrupt or was modified; fetch it again)")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest in the descriptor.
        expected: String,
        /// The digest of what we received.
        actual: String,
    },

    /// Content did not have the size its descriptor announced.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}{} (the source is truncated or corrupt)", if *.more { " or more" } else { "" })]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// Size in the descriptor.
        expected: u64,
        /// Bytes received.
        actual: u64,
        /// The source sent more than `actual` bytes (reading was stopped).
        more: bool,
    },

    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A manifest is larger than any sane manifest.
    #[error("{reference}: manifest is {size} bytes, over the {limit}-byte limit (this is not a real image manifest)")]
    ManifestTooLarge {
        /// The image.
        reference: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A manifest or layer has a media type cloak does not handle.
    #[error("{what}: unsupported media type {media_type:?} (cloak handles OCI and Docker schema-2 images)")]
    UnsupportedMediaType {
        /// The manifest or layer.
        what: String,
        /// Its media type.
        media_type: String,
    },

    /// A JSON document could not be parsed.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// Something required is missing from an image or a layout.
    #[error("{what}: not found{}", if hint.is_empty() { String::new() } else { format!(" ({hint})") })]
    NotFound {
        /// What was looked for.
        what: String,
        /// What to do about it.
        hint: String,
    },

    /// An image index has no manifest for the requested platform.
    #[error("{reference}: no image for platform {platform}; available: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The index.
        reference: String,
        /// The requested platform.
        platform: String,
        /// The platforms the index has.
        available: Vec<String>,
    },

    /// An image is larger than the caller lets one conversion read (see
    /// `flatten::ImageLimit`); nothing past the limit was read or written.
    #[error("{image}: its layers take more than {} {what} (the limit for one conversion): the conversion stopped there and tagged no image. To convert it, {raise}", human_bytes(*limit))]
    ImageTooLarge {
        /// The image.
        image: String,
        /// `compressed` (as its manifest announces) or `uncompressed` (as read).
        what: String,
        /// The limit in bytes.
        limit: u64,
        /// How the limit is raised.
        raise: String,
    },

    /// A layer could not be applied to the root file system.
    #[error("layer {layer}: {reason}")]
    Layer {
        /// The layer digest.
        layer: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An image or option is not valid for the requested operation.
    #[error("{0}")]
    Invalid(String),
}

/// `16 GiB (17179869184 bytes)`: sizes said in errors, exact and readable.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let whole = n / size;
            let tenths = (n % size) * 10 / size;
            return if n.is_multiple_of(size) {
                format!("{whole} {unit} ({n} bytes)")
            } else {
                format!("{whole}.{tenths} {unit} ({n} bytes)")
            };
        }
    }
    format!("{n} bytes")
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }

    /// Turn an I/O error raised inside a verifying stream back into the typed error it carries.
    pub(crate) fn from_stream(what: impl Into<String>, err: std::io::Error) -> Self {
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        // oci-client verifies pulled blobs too; report its verdict in our words.
        if let Some(oci_client::errors::DigestError::VerificationError { expected, actual }) =
            err.get_ref().and_then(|e| e.downcast_ref())
        {
            return Error::DigestMismatch {
                what: what.into(),
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        Error::Stream {
            what: what.into(),
            source: err,
        }
    }
}
