//! The conversion pipeline shared by the SGX and Nitro targets:
//! resolve → flatten → amend → measure → package.
#![deny(missing_docs)]

pub mod app;
pub mod crypt;
pub mod decrypt;
pub mod encrypt;
pub mod error;
pub mod launcher;
pub mod manager;
pub mod nitro;
pub mod options;
pub mod sgx;

pub use error::{Error, Result};

/// Enters a named stage: reports it, and stops here when the caller cancelled.
pub(crate) fn stage(progress: &dyn cloak_image::copy::Progress, name: &str) -> Result<()> {
    if progress.cancelled() {
        return Err(Error::Image(cloak_image::Error::Cancelled {
            what: format!("the conversion, before {name}"),
        }));
    }
    progress.stage(name);
    Ok(())
}
