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
