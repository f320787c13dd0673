//! Errors of `cloak-crypt`.

/// Result alias of `cloak-crypt`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while decrypting a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No given key opens any recipient of the layer.
    #[error("missing private key needed for decryption: layer {layer} is encrypted for {recipients}; none of the {keys} key(s) given opens it (pass the matching --key)")]
    MissingKey {
        /// Layer digest.
        layer: String,
        /// Schemes and recipient counts present.
        recipients: String,
        /// How many keys were tried.
        keys: usize,
    },
    /// The layer's encryption metadata is malformed or unsafe.
    #[error("layer {layer}: {reason}")]
    Metadata {
        /// Layer digest.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// The ciphertext does not authenticate.
    #[error("layer {layer}: HMAC mismatch: the encrypted blob was modified or the options do not belong to it")]
    Hmac {
        /// Layer digest.
        layer: String,
    },
    /// Wrapping a layer key for a recipient failed.
    #[error("cannot wrap the layer key: {0}")]
    Wrap(String),
    /// A wrapped key is malformed.
    #[error("malformed wrapped key: {0}")]
    Unwrap(String),
    /// A recipient argument cannot be used.
    #[error("recipient {spec}: {reason}")]
    Recipient {
        /// The argument as given.
        spec: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A key provider failed.
    #[error("key provider {name}: {reason}")]
    Provider {
        /// Provider name.
        name: String,
        /// What happened.
        reason: String,
    },
    /// A key file cannot be used.
    #[error("key {path}: {reason}")]
    Key {
        /// The file (never its content).
        path: String,
        /// What is wrong.
        reason: String,
    },
}
