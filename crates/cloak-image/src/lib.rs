//! Daemonless OCI image engine used by every cloak command.
//!
//! - [`reference`]: skopeo-style references (`docker://`, `oci:`, `docker-archive:`).
//! - [`image`]: sources and destinations over those transports; resolving one image.
//! - [`copy`]: blobs first, manifest last, so no tag ever names a partial image.
//! - [`flatten`]: the root file system with whiteouts applied, safe against tar hazards.
//! - [`layer`]: decompression and the deterministic layer writer.
//!
//! Every blob is verified (digest and size) while it streams; no layer is held in memory.
#![deny(missing_docs)]

pub mod archive;
pub mod auth;
pub mod build;
pub mod copy;
pub mod destination;
pub mod digest;
pub mod error;
pub mod flatten;
pub mod image;
pub mod layer;
pub mod layout;
pub mod name;
pub mod reference;
pub mod registry;
pub mod spec;

pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{Dest, Image, PlatformSpec, RawManifest, Source};
pub use reference::ImageRef;
pub use registry::RegistryOptions;
