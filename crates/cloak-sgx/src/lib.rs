//! cloak-sgx
