//! The cloak manager: accounts and users, apps, builds with their measurements, quorum approval
//! tasks, registry credentials sealed under a master key, and a hash-chained audit log, on
//! SQLite (embedded default) or PostgreSQL (several replicas), behind a REST API.
//!
//! Layers: `http` maps requests to the domain modules (`accounts`, `users`, `apps`, `builds`,
//! `tasks`, `registry`, `audit`, `auth`) and their errors to one JSON shape; the domain modules
//! hold the rules and talk to `store` (one set of SQL for both databases).

pub mod accounts;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod builds;
pub mod ca;
mod ca_token;
pub mod cache;
pub mod certs;
pub mod collateral;
pub mod config;
pub mod configs;
pub mod console;
pub mod error;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod registry;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod signing;
pub mod store;
pub mod tasks;
pub mod users;
mod validate;
pub mod worker;

use std::sync::{Arc, RwLock};

pub use config::Config;
pub use error::{Error, Result};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time the service decides by: the system clock, or a fixed one in tests (never a flag).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        now()
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    pub db: store::Db,
    pub master: Arc<RwLock<secrets::MasterKey>>,
    pub config: Arc<Config>,
    pub metrics: Arc<metrics::Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Principals of recently authenticated tokens.
    pub principals: Arc<auth::PrincipalCache>,
    /// The CA, loaded on first use (see `ca::get`).
    pub ca: Arc<tokio::sync::OnceCell<Arc<ca::Ca>>>,
    /// Outstanding nonces as last counted (see `certs::nonce`).
    pub nonce_gauge: Arc<certs::NonceGauge>,
    /// Synchronous conversion calls waiting for their jobs in this process.
    pub waiters: Arc<jobs::Waiters>,
}

impl State {
    /// The current master key set.
    pub fn master(&self) -> secrets::MasterKey {
        self.master.read().expect("master key lock").clone()
    }
}
