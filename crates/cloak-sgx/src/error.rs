//! Errors of `cloak-sgx`.

use std::path::PathBuf;

/// Result alias of `cloak-sgx`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while generating, measuring or signing an enclave.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ELF file (the PAL, the loader or a library) cannot be used.
    #[error("{what} is not a usable x86_64 ELF file: {reason}")]
    Elf {
        /// Which file.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The enclave is too small for its fixed areas.
    #[error("sgx.enclave_size {enclave_size:#x} is too small for {threads} threads, the manifest and the PAL (areas would fall below 0x10000); raise memSize")]
    EnclaveTooSmall {
        /// The size.
        enclave_size: u64,
        /// The thread count.
        threads: u64,
    },
    /// A manifest value is invalid or conflicting.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A SIGSTRUCT is malformed or its signature does not verify.
    #[error("SIGSTRUCT {what}: {reason}")]
    Sigstruct {
        /// Which file.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A signing key cannot be used.
    #[error("signing key {key}: {reason}")]
    Key {
        /// Where the key is (never the key itself).
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file could not be read or written.
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
