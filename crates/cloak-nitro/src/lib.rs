//! AWS Nitro Enclaves for cloak: deterministic newc ramdisks and EIF v4 files with their PCRs,
//! following `shared/notes/nitro-eif.md`.
#![deny(missing_docs)]

pub mod appdisk;
pub mod cpio;
pub mod eif;
pub mod error;
pub mod sha384x2;
pub mod sign;
pub mod vm;

pub use error::{Error, Result};
