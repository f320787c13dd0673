//! Test support for cloak's suites.
