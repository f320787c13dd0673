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

/// Deterministic pseudo-random bytes (xorshift) for the unit tests.
#[cfg(test)]
pub(crate) fn test_noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
