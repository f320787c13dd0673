//! The SGX target: a Gramine enclave image with cloak's own manifest, measurement and signature.

pub mod runtime;
