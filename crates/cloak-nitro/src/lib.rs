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

/// Say whether a CPU- or host-specific path was exercised by a test: one line on stderr (shown
/// with `--nocapture`) and, when `CLOAK_TEST_PATHS` names a file (scripts/test.sh sets it and
/// prints a summary of tested and untested paths at the end), one line appended there.
#[cfg(test)]
pub(crate) fn test_path(path: &str, tested: bool, why: &str) {
    let line = format!(
        "{}\t{path}\t{why}\n",
        if tested { "tested" } else { "NOT TESTED" }
    );
    eprint!("cloak test path: {line}");
    if let Some(file) = std::env::var_os("CLOAK_TEST_PATHS") {
        use std::io::Write;
        // One short write with O_APPEND: lines from parallel tests do not interleave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .expect("CLOAK_TEST_PATHS is writable");
        f.write_all(line.as_bytes()).unwrap();
    }
}
