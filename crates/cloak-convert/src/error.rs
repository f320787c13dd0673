//! Errors of the conversion pipeline.

/// Result alias of `cloak-convert`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a conversion; each message names the input and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options are invalid or contradict the image.
    #[error("invalid conversion options: {0}")]
    Options(String),
    /// An encryption or decryption cannot go on (the message says why and what to do).
    #[error("{0}")]
    Operation(String),
    /// Measuring or signing the enclave failed.
    #[error(transparent)]
    Sgx(#[from] cloak_sgx::Error),
    /// Building the ramdisks or the EIF failed.
    #[error(transparent)]
    Nitro(#[from] cloak_nitro::Error),
    /// Decrypting a layer failed.
    #[error(transparent)]
    Crypt(#[from] cloak_crypt::Error),
    /// Reading or writing an image failed.
    #[error(transparent)]
    Image(#[from] cloak_image::Error),
}
