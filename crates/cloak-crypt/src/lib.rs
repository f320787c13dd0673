//! cloak-crypt
