//! The service's settings: command-line flags win over `CLOAK_MANAGER_*` environment variables
//! (both handled by the CLI), which win over the TOML file given with `--config`, which wins over
//! the defaults here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Settings as they may appear in a TOML file or on the command line (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: Option<bool>,
    pub admin_user: Option<String>,
    pub admin_password_file: Option<PathBuf>,
    pub master_key_file: Option<PathBuf>,
    pub audit_key_file: Option<PathBuf>,
    pub session_ttl: Option<i64>,
    pub max_connections: Option<u32>,
    pub trust_forwarded_for: Option<bool>,
    pub log_format: Option<String>,
    pub allow_simulated_attestation: Option<bool>,
    pub simulation_public_key: Option<PathBuf>,
    pub pccs_url: Option<String>,
    pub nonce_rate_per_minute: Option<i64>,
    pub max_outstanding_nonces: Option<i64>,
    pub sgx_runtime_image: Option<String>,
    pub nitro_kernel: Option<PathBuf>,
    pub nitro_blobs: Option<PathBuf>,
    pub insecure_registry: Option<Vec<String>>,
    pub allow_private_registry: Option<Vec<String>>,
    pub registry_ca: Option<PathBuf>,
    pub launcher: Option<PathBuf>,
    pub sgx_signing_key: Option<String>,
    pub job_lease_seconds: Option<u64>,
    pub job_timeout_seconds: Option<u64>,
    pub job_max_attempts: Option<u32>,
    pub max_jobs_per_account: Option<u32>,
    pub max_running_jobs_per_account: Option<u32>,
    pub job_max_image_bytes: Option<String>,
    pub max_sync_waiters: Option<u32>,
    pub max_sync_waiters_per_account: Option<u32>,
    pub sync_wait_seconds: Option<u64>,
    pub workers: Option<u32>,
}

impl Settings {
    /// `self` where set, else `other`.
    pub fn or(self, other: Settings) -> Settings {
        Settings {
            listen: self.listen.or(other.listen),
            data_dir: self.data_dir.or(other.data_dir),
            database_url: self.database_url.or(other.database_url),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            insecure_http: self.insecure_http.or(other.insecure_http),
            admin_user: self.admin_user.or(other.admin_user),
            admin_password_file: self.admin_password_file.or(other.admin_password_file),
            master_key_file: self.master_key_file.or(other.master_key_file),
            audit_key_file: self.audit_key_file.or(other.audit_key_file),
            session_ttl: self.session_ttl.or(other.session_ttl),
            max_connections: self.max_connections.or(other.max_connections),
            trust_forwarded_for: self.trust_forwarded_for.or(other.trust_forwarded_for),
            log_format: self.log_format.or(other.log_format),
            allow_simulated_attestation: self
                .allow_simulated_attestation
                .or(other.allow_simulated_attestation),
            simulation_public_key: self.simulation_public_key.or(other.simulation_public_key),
            pccs_url: self.pccs_url.or(other.pccs_url),
            nonce_rate_per_minute: self.nonce_rate_per_minute.or(other.nonce_rate_per_minute),
            max_outstanding_nonces: self.max_outstanding_nonces.or(other.max_outstanding_nonces),
            sgx_runtime_image: self.sgx_runtime_image.or(other.sgx_runtime_image),
            nitro_kernel: self.nitro_kernel.or(other.nitro_kernel),
            nitro_blobs: self.nitro_blobs.or(other.nitro_blobs),
            insecure_registry: self.insecure_registry.or(other.insecure_registry),
            allow_private_registry: self.allow_private_registry.or(other.allow_private_registry),
            registry_ca: self.registry_ca.or(other.registry_ca),
            launcher: self.launcher.or(other.launcher),
            sgx_signing_key: self.sgx_signing_key.or(other.sgx_signing_key),
            job_lease_seconds: self.job_lease_seconds.or(other.job_lease_seconds),
            job_timeout_seconds: self.job_timeout_seconds.or(other.job_timeout_seconds),
            job_max_attempts: self.job_max_attempts.or(other.job_max_attempts),
            max_jobs_per_account: self.max_jobs_per_account.or(other.max_jobs_per_account),
            max_running_jobs_per_account: self
                .max_running_jobs_per_account
                .or(other.max_running_jobs_per_account),
            job_max_image_bytes: self.job_max_image_bytes.or(other.job_max_image_bytes),
            max_sync_waiters: self.max_sync_waiters.or(other.max_sync_waiters),
            max_sync_waiters_per_account: self
                .max_sync_waiters_per_account
                .or(other.max_sync_waiters_per_account),
            sync_wait_seconds: self.sync_wait_seconds.or(other.sync_wait_seconds),
            workers: self.workers.or(other.workers),
        }
    }

    /// Reads a TOML settings file (keys as the flags, without `--`).
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))
    }
}

/// The resolved configuration of a running manager.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: bool,
    pub admin_user: String,
    pub admin_password_file: Option<PathBuf>,
    pub master_key_file: PathBuf,
    /// The audit chain's HMAC key (0600; every replica needs the same one).
    pub audit_key_file: PathBuf,
    /// Session lifetime in seconds.
    pub session_ttl: i64,
    pub max_connections: u32,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Request bodies larger than this are refused with 413.
    pub body_limit: usize,
    /// Accept simulated attestation evidence (machines without a TEE; never in production).
    pub allow_simulated_attestation: bool,
    /// The key simulated evidence must be signed with.
    pub simulation_key: Option<cloak_attest::SimulationPublicKey>,
    /// The PCCS or Intel PCS that DCAP collateral is fetched from (cached in the database).
    pub pccs_url: Option<String>,
    /// Nonces one client address may get per minute (`POST /v1/attestation/nonce`).
    pub nonce_rate_per_minute: i64,
    /// Unexpired nonces kept at most (all clients): past it, new ones wait for expiries.
    pub max_outstanding_nonces: i64,
    /// What conversion jobs use (set once by the operator; requests never name host files).
    pub jobs: JobSettings,
}

/// The operator's settings of conversion jobs.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The Gramine runtime image of SGX conversions.
    pub sgx_runtime_image: Option<String>,
    /// The Nitro kernel (bzImage); else `nitro_blobs/bzImage`.
    pub nitro_kernel: Option<PathBuf>,
    /// A nitro-cli blobs folder (bzImage, bzImage.config, cmdline, nsm.ko).
    pub nitro_blobs: Option<PathBuf>,
    /// Registries reached over plain HTTP (HOST:PORT, docker's rule); all others need TLS.
    pub insecure_registries: Vec<String>,
    /// Registries (HOST:PORT) jobs may reach at an internal address (loopback, private,
    /// link-local…); every other internal destination is refused, redirects and token
    /// services included. The insecure registries are allowed too.
    pub private_registries: Vec<String>,
    /// A CA certificate (PEM) trusted for registries, besides the system roots.
    pub registry_ca: Option<PathBuf>,
    /// The static launcher shipped in converted images (default: as `cloak convert` finds it).
    pub launcher: Option<PathBuf>,
    /// The SGX key for `signingKey: {"default": {}}`: `file:KEY.pem` or a `pkcs11:` URI
    /// (default: the account's key, generated on first use and sealed in the database).
    pub sgx_signing_key: Option<String>,
    /// How long a worker's claim on a job lasts without renewal, in milliseconds.
    pub lease_ms: i64,
    /// How long one attempt of a job may run before it is FAILED.
    pub timeout: std::time::Duration,
    /// Attempts of a job before it fails (a worker that died, a transient registry error).
    pub max_attempts: i64,
    /// QUEUED + RUNNING jobs an account may have; more are refused with 429.
    pub max_jobs_per_account: i64,
    /// RUNNING jobs of one account at a time; the rest wait in the queue.
    pub max_running_per_account: i64,
    /// Bytes an input image's layers may take, compressed or uncompressed (checked while
    /// they stream: a tenant's image cannot fill the worker's disk or keep it busy past it).
    pub max_image_bytes: u64,
    /// Synchronous conversion calls (no `Prefer: respond-async`) waiting at once in this
    /// process; more are answered 429 with their job, which stays queued.
    pub max_sync_waiters: usize,
    /// The same, per account.
    pub max_sync_waiters_per_account: usize,
    /// How long a synchronous call waits before it answers 202 and its job.
    pub sync_wait: std::time::Duration,
    /// Workers `cloak manager serve` runs in its process.
    pub workers: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            sgx_runtime_image: None,
            nitro_kernel: None,
            nitro_blobs: None,
            insecure_registries: Vec::new(),
            private_registries: Vec::new(),
            registry_ca: None,
            launcher: None,
            sgx_signing_key: None,
            lease_ms: 30_000,
            timeout: std::time::Duration::from_secs(2 * 3600),
            max_attempts: 3,
            max_jobs_per_account: 50,
            max_running_per_account: 4,
            max_image_bytes: 16 << 30,
            max_sync_waiters: 64,
            max_sync_waiters_per_account: 8,
            sync_wait: std::time::Duration::from_secs(600),
            workers: 1,
        }
    }
}

impl Config {
    /// Fills defaults in; the data dir defaults to `./cloak-manager-data`.
    pub fn resolve(s: Settings) -> Result<Config> {
        let data_dir = s
            .data_dir
            .unwrap_or_else(|| PathBuf::from("cloak-manager-data"));
        let database_url = s
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("manager.db").display()));
        let session_ttl = s.session_ttl.unwrap_or(3600);
        if !(60..=30 * 86400).contains(&session_ttl) {
            return Err(Error::Config(
                "session-ttl must be between 60 and 2592000 seconds".into(),
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(Error::Config(
                "--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate"
                    .into(),
            ));
        }
        let allow_simulated_attestation = s.allow_simulated_attestation.unwrap_or(false);
        let simulation_key = match &s.simulation_public_key {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                Some(
                    cloak_attest::SimulationPublicKey::from_bytes(&bytes).map_err(|e| {
                        Error::Config(format!("--simulation-public-key {}: {e}", path.display()))
                    })?,
                )
            }
            None => None,
        };
        if allow_simulated_attestation && simulation_key.is_none() {
            return Err(Error::Config(
                "--allow-simulated-attestation needs --simulation-public-key FILE (the key the \
                 launchers' simulated evidence is signed with)"
                    .into(),
            ));
        }
        if allow_simulated_attestation {
            tracing::warn!(
                "SIMULATED attestation is accepted: certificates will be marked SIMULATED"
            );
        }
        if let Some(u) = &s.pccs_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(Error::Config(format!(
                    "--pccs-url {u:?}: give the PCCS's http(s) base URL, e.g. \
                     https://pccs.example:8081 or https://api.trustedservices.intel.com"
                )));
            }
        }
        let nonce_rate_per_minute = s.nonce_rate_per_minute.unwrap_or(60);
        let max_outstanding_nonces = s.max_outstanding_nonces.unwrap_or(100_000);
        if !(1..=1_000_000).contains(&nonce_rate_per_minute)
            || !(1..=100_000_000).contains(&max_outstanding_nonces)
        {
            return Err(Error::Config(
                "nonce-rate-per-minute must be 1 to 1000000 and max-outstanding-nonces 1 to 100000000"
                    .into(),
            ));
        }
        Ok(Config {
            nonce_rate_per_minute,
            max_outstanding_nonces,
            pccs_url: s.pccs_url,
            allow_simulated_attestation,
            simulation_key,
            listen: s.listen.unwrap_or_else(|| "127.0.0.1:8443".into()),
            master_key_file: s
                .master_key_file
                .unwrap_or_else(|| data_dir.join("master.key")),
            audit_key_file: s
                .audit_key_file
                .unwrap_or_else(|| data_dir.join("audit.key")),
            data_dir,
            database_url,
            tls_cert: s.tls_cert,
            tls_key: s.tls_key,
            insecure_http: s.insecure_http.unwrap_or(false),
            admin_user: s.admin_user.unwrap_or_else(|| "admin".into()),
            admin_password_file: s.admin_password_file,
            session_ttl,
            max_connections: s.max_connections.unwrap_or(10).clamp(2, 500),
            trust_forwarded_for: s.trust_forwarded_for.unwrap_or(false),
            body_limit: 1 << 20,
            jobs: {
                let d = JobSettings::default();
                let lease = s.job_lease_seconds.unwrap_or(30);
                if !(1..=3600).contains(&lease) {
                    return Err(Error::Config(
                        "job-lease-seconds must be between 1 and 3600".into(),
                    ));
                }
                let timeout = s.job_timeout_seconds.unwrap_or(2 * 3600);
                if !(1..=7 * 24 * 3600).contains(&timeout) {
                    return Err(Error::Config(
                        "job-timeout-seconds must be between 1 and 604800 (a week)".into(),
                    ));
                }
                let attempts = s.job_max_attempts.unwrap_or(3);
                if !(1..=100).contains(&attempts) {
                    return Err(Error::Config(
                        "job-max-attempts must be between 1 and 100".into(),
                    ));
                }
                let max_image_bytes = match &s.job_max_image_bytes {
                    Some(t) => cloak_image::flatten::parse_size(t)
                        .map_err(|e| Error::Config(format!("--job-max-image-bytes: {e}")))?,
                    None => d.max_image_bytes,
                };
                let sync_wait = s.sync_wait_seconds.unwrap_or(d.sync_wait.as_secs());
                if !(1..=3600).contains(&sync_wait) {
                    return Err(Error::Config(
                        "sync-wait-seconds must be between 1 and 3600".into(),
                    ));
                }
                let max_sync_waiters = s
                    .max_sync_waiters
                    .map_or(d.max_sync_waiters, |n| n as usize);
                let max_sync_waiters_per_account = s
                    .max_sync_waiters_per_account
                    .map_or(d.max_sync_waiters_per_account, |n| n as usize)
                    .min(max_sync_waiters);
                JobSettings {
                    max_image_bytes,
                    max_sync_waiters,
                    max_sync_waiters_per_account,
                    sync_wait: std::time::Duration::from_secs(sync_wait),
                    sgx_runtime_image: s.sgx_runtime_image,
                    nitro_kernel: s.nitro_kernel,
                    nitro_blobs: s.nitro_blobs,
                    insecure_registries: s.insecure_registry.unwrap_or_default(),
                    private_registries: s.allow_private_registry.unwrap_or_default(),
                    registry_ca: s.registry_ca,
                    launcher: s.launcher,
                    sgx_signing_key: s.sgx_signing_key,
                    lease_ms: lease as i64 * 1000,
                    timeout: std::time::Duration::from_secs(timeout),
                    max_attempts: i64::from(attempts),
                    max_jobs_per_account: s
                        .max_jobs_per_account
                        .map_or(d.max_jobs_per_account, i64::from),
                    max_running_per_account: s
                        .max_running_jobs_per_account
                        .map_or(d.max_running_per_account, i64::from),
                    workers: s.workers.map_or(d.workers, |w| w as usize),
                }
            },
        })
    }

    /// Creates the data dir with mode 0700; refuses an existing one that others can read
    /// (it holds the keys), rather than changing a directory the operator chose.
    pub fn prepare_data_dir(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if !self.data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.data_dir)
                .map_err(|e| Error::io(&self.data_dir, e))?;
        }
        let meta = std::fs::metadata(&self.data_dir).map_err(|e| Error::io(&self.data_dir, e))?;
        if meta.mode() & 0o077 != 0 {
            return Err(Error::Config(format!(
                "{}: the data dir is open to group or others (mode {:o}) and would hold the \
                 manager's keys: use a directory of its own, or `chmod 700 {}`",
                self.data_dir.display(),
                meta.mode() & 0o777,
                self.data_dir.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str("listen = \"0.0.0.0:1\"\nsession-ttl = 120\n").unwrap();
        let flags = Settings {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = Config::resolve(flags.or(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.session_ttl, 120);
        assert!(c.database_url.starts_with("sqlite://"));
        assert!(toml::from_str::<Settings>("nope = 1").is_err());
    }
}
