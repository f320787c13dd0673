//! Errors of `cloak-nitro`.

use std::path::PathBuf;

/// Result alias of `cloak-nitro`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building or reading ramdisks and EIFs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file or value is not usable; the message says which and why.
    #[error("{0}")]
    Input(String),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
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
}
