//! cloak-nitro
