//! ocicrypt-compatible layer decryption, stricter than the reference: the nonce comes only from
//! the private options, the HMAC must verify before any output is kept, and callers check the
//! plaintext against the config's `diff_ids`. Module names follow Go's ocicrypt
//! (`blockcipher`, `keywrap/jwe`, `spec`) so the two can be read side by side.
#![deny(missing_docs)]

pub mod blockcipher;
pub mod error;
pub mod jwe;
pub mod keyprovider;
pub mod keys;
pub mod keywrap;
pub mod pkcs7;
pub mod spec;

pub use error::{Error, Result};
