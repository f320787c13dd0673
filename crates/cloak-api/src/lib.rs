//! The cloak manager's REST API: the request and response types (shared by the service, the
//! CLI and the tests, so the API is exercised the way users call it) and a blocking client.
//!
//! Names and shapes follow Fortanix CCM's public API (`/v1/builds`, `/v1/tasks`, `/v1/apps`,
//! `/v1/registry`, `/v1/sys/auth`) and IBM Data Shield's flat build body; cloak's additions
//! (approval quorums, API keys, the audit chain) are marked as such.

pub mod client;
mod configs;
mod jobs;
mod types;

pub use client::{Client, ClientError};
pub use configs::*;
pub use jobs::*;
pub use types::*;
