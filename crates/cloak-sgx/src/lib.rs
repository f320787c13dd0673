//! SGX for cloak: Gramine manifests, MRENCLAVE, SIGSTRUCT and signing keys, computed in Rust
//! exactly as Gramine's signer does (see `shared/notes/sgx-gramine.md`).
#![deny(missing_docs)]

pub mod elf;
pub mod error;
pub mod key;
pub mod manifest;
pub mod measure;
pub mod pkcs11;
pub mod sigstruct;

pub use error::{Error, Result};

/// MRENCLAVE and MRSIGNER of a signed manifest, with the SIGSTRUCT.
#[derive(Debug, Clone)]
pub struct Signed {
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// The SIGSTRUCT bytes.
    pub sigstruct: [u8; sigstruct::SIZE],
}

/// Measure `manifest` with `libpal` and sign the result with `signer`, dated `date`.
pub fn measure_and_sign(
    manifest: &[u8],
    libpal: &[u8],
    signer: &dyn key::Signer,
    date: (u16, u8, u8),
) -> Result<Signed> {
    let measured = manifest::read(manifest, "manifest")?;
    let mrenclave = measure::mrenclave(manifest, libpal, &measured.layout())?;
    let sig = sigstruct::sign(&measured.sigstruct_body(mrenclave, date), signer)?;
    Ok(Signed {
        mrenclave,
        mrsigner: sigstruct::mrsigner(&sig),
        sigstruct: sig,
    })
}
