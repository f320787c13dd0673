//! `cloak manager`: run and administer the manager service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloak_manager::config::Settings;
use cloak_manager::Config;

use crate::output::Format;

#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager: REST API, audit log, approvals (TLS by default), conversion workers.
    Serve(Box<ServeArgs>),
    /// Run conversion workers only (no API): scale conversion capacity apart from the API.
    /// Needs the managers' database, master key and audit key.
    Worker(Box<WorkerArgs>),
    /// Apply the database migrations this manager needs, then exit.
    Migrate(StoreArgs),
    /// Audit log tools (offline: reads the database directly).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Generate a new master key and re-encrypt every stored secret with it.
    RotateMasterKey(StoreArgs),
    /// Write a consistent snapshot of the database and the audit key, encrypted under the
    /// master key (safe while the manager serves; the master key itself is not included).
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file to write (mode 0600; replaced atomically).
        file: PathBuf,
    },
    /// Restore a backup into an empty database. With --database-url postgres://… a backup of
    /// a SQLite install moves it to PostgreSQL. Needs the master key file that made it.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file to read.
        file: PathBuf,
    },
    /// Print the OpenAPI document of the API (the same as GET /openapi.json).
    Openapi,
    /// The manager's certificate authority (offline, with no replica running).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// DCAP collateral cache (offline: writes the database directly).
    Collateral {
        #[command(subcommand)]
        command: CollateralCommand,
    },
    /// Accounts (tenants): created offline by the operator, never through the API.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create an account and its first MANAGER (password from CLOAK_ADMIN_PASSWORD, else
    /// generated and printed once on stderr).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The account's name.
        #[arg(long)]
        name: String,
        /// Its first administrator's user name.
        #[arg(long)]
        admin_user: String,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Use an existing CA instead of the one the manager creates: its issuing certificate (and
    /// root), and the issuing key as a PEM file or a PKCS#11 URI (the key stays in the token;
    /// the URI is stored sealed under the master key: prefer pin-source=file:PATH to pin-value).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The issuing CA certificate (PEM), optionally followed by its root.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The root CA certificate (PEM), when --cert holds only the issuing one.
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// The issuing key: a PEM file, or pkcs11:token=…;object=…?module-path=…&pin-source=file:…
        #[arg(long, value_name = "FILE|URI")]
        key: String,
        /// Replace an existing CA (its certificates stop verifying against the new chain).
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CollateralCommand {
    /// Load DCAP collateral (QuoteCollateralV3 JSON: a file, or every *.json of a directory)
    /// into the cache, for sites without a PCCS; each file is keyed by the FMSPC and PCK CA it
    /// names, and replaces a cached entry unless that one stays valid longer.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Collateral file or directory.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Report format.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every account's hash chain; exit 1 naming the first altered record.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Report format.
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: Format,
    },
}

/// Where the state lives (shared by every subcommand).
#[derive(Debug, Clone, clap::Args)]
struct StoreArgs {
    /// Settings file (TOML; keys as the flags without `--`). Flags and environment win.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, keys, TLS material); created with mode 0700.
    #[arg(long, value_name = "DIR", env = "CLOAK_MANAGER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database instead of the embedded SQLite: postgres://user@host:port/db.
    #[arg(
        long,
        value_name = "URL",
        env = "CLOAK_MANAGER_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Master key file (hex lines, mode 0600); default DATA_DIR/master.key.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Audit HMAC key file (mode 0600; the same for every replica); default DATA_DIR/audit.key.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_AUDIT_KEY_FILE")]
    audit_key_file: Option<PathBuf>,
}

#[derive(Debug, Parser)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT", env = "CLOAK_MANAGER_LISTEN")]
    listen: Option<String>,
    /// TLS certificate chain (PEM); without it a self-signed one is kept in the data dir.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Plain HTTP: for loopback development, or behind a TLS-terminating ingress.
    #[arg(long, env = "CLOAK_MANAGER_INSECURE_HTTP")]
    insecure_http: bool,
    /// The first administrator's user name (created on an empty database).
    #[arg(long, value_name = "NAME", env = "CLOAK_MANAGER_ADMIN_USER")]
    admin_user: Option<String>,
    /// File holding the first administrator's password (else CLOAK_ADMIN_PASSWORD, else one
    /// is generated and printed once on stderr).
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    /// Session lifetime in seconds.
    #[arg(long, value_name = "SECONDS", env = "CLOAK_MANAGER_SESSION_TTL")]
    session_ttl: Option<i64>,
    /// Database connections of this process (size it so that all replicas fit the server).
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// Take the client address from X-Forwarded-For (only behind a proxy you trust).
    #[arg(long, env = "CLOAK_MANAGER_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Accept SIMULATED attestation evidence (machines without a TEE; never in production).
    /// Every certificate, record and audit entry it touches is marked SIMULATED.
    #[arg(long, env = "CLOAK_MANAGER_ALLOW_SIMULATED_ATTESTATION")]
    allow_simulated_attestation: bool,
    /// The ECDSA P-256 public key simulated evidence is signed with (PEM or DER).
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_SIMULATION_PUBLIC_KEY")]
    simulation_public_key: Option<PathBuf>,
    /// PCCS or Intel PCS base URL DCAP collateral is fetched from (v4 API); it is cached in the
    /// database, refreshed ahead of its nextUpdate, and used through PCCS outages until then.
    #[arg(long, value_name = "URL", env = "CLOAK_MANAGER_PCCS_URL")]
    pccs_url: Option<String>,
    /// Nonces (POST /v1/attestation/nonce, unauthenticated) one client address may get per
    /// minute, counted in the database across replicas (default 60).
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_NONCE_RATE_PER_MINUTE")]
    nonce_rate_per_minute: Option<i64>,
    /// Unexpired nonces kept at most, all clients together (default 100000).
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_MAX_OUTSTANDING_NONCES")]
    max_outstanding_nonces: Option<i64>,
    /// Conversion workers in this process (0: only `cloak manager worker` processes convert).
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_WORKERS")]
    workers: Option<u32>,
    /// Conversion calls without `Prefer: respond-async` that may wait for their job at once in
    /// this process (default 64); beyond it they are answered 429 with their queued job.
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_MAX_SYNC_WAITERS")]
    max_sync_waiters: Option<u32>,
    /// The same per account (default 8).
    #[arg(
        long,
        value_name = "N",
        env = "CLOAK_MANAGER_MAX_SYNC_WAITERS_PER_ACCOUNT"
    )]
    max_sync_waiters_per_account: Option<u32>,
    /// Seconds such a call waits before it answers 202 and its job (default 600).
    #[arg(long, value_name = "SECONDS", env = "CLOAK_MANAGER_SYNC_WAIT_SECONDS")]
    sync_wait_seconds: Option<u64>,
    #[command(flatten)]
    jobs: JobArgs,
}

#[derive(Debug, Parser)]
struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Conversion workers in this process.
    #[arg(long, value_name = "N", default_value_t = 1)]
    workers: u32,
    /// Database connections of this process.
    #[arg(long, value_name = "N", env = "CLOAK_MANAGER_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    #[command(flatten)]
    jobs: JobArgs,
}

/// What conversions use, set once by the operator (requests never name files of this host).
#[derive(Debug, Clone, clap::Args)]
struct JobArgs {
    /// SGX: the Gramine runtime image (docker://HOST/REPO:TAG).
    #[arg(long, value_name = "IMAGE", env = "CLOAK_MANAGER_SGX_RUNTIME_IMAGE")]
    sgx_runtime_image: Option<String>,
    /// SGX: the key for `signingKey: {"default": {}}`: file:KEY.pem or a pkcs11: URI (default:
    /// cloak's default key of this host).
    #[arg(long, value_name = "KEY", env = "CLOAK_MANAGER_SGX_SIGNING_KEY")]
    sgx_signing_key: Option<String>,
    /// Nitro: the kernel bzImage.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_NITRO_KERNEL")]
    nitro_kernel: Option<PathBuf>,
    /// Nitro: a nitro-cli blobs folder (bzImage, bzImage.config, cmdline, nsm.ko).
    #[arg(long, value_name = "DIR", env = "CLOAK_MANAGER_NITRO_BLOBS")]
    nitro_blobs: Option<PathBuf>,
    /// A registry reached over plain HTTP, HOST:PORT (repeatable; every other needs TLS).
    #[arg(long, value_name = "HOST:PORT")]
    insecure_registry: Vec<String>,
    /// A registry jobs may reach although it resolves to an internal address (loopback,
    /// private, link-local, CGNAT, ULA), HOST:PORT (repeatable; every other internal address
    /// is refused, redirects and token services included).
    #[arg(long, value_name = "HOST:PORT")]
    allow_private_registry: Vec<String>,
    /// A CA certificate (PEM) trusted for registries besides the system roots.
    #[arg(long, value_name = "FILE", env = "CLOAK_MANAGER_REGISTRY_CA")]
    registry_ca: Option<PathBuf>,
    /// The static launcher shipped in converted images (default: as `cloak convert` finds it).
    #[arg(long, value_name = "FILE", env = "CLOAK_LAUNCHER")]
    launcher: Option<PathBuf>,
    /// Seconds a worker's claim on a job lasts without renewal (a dead worker's job is taken
    /// again after it).
    #[arg(long, value_name = "SECONDS")]
    job_lease_seconds: Option<u64>,
    /// Seconds one attempt of a conversion may run before it is FAILED (default 7200).
    #[arg(long, value_name = "SECONDS")]
    job_timeout_seconds: Option<u64>,
    /// Attempts of a job before it fails.
    #[arg(long, value_name = "N")]
    job_max_attempts: Option<u32>,
    /// Queued + running jobs one account may have (more are refused with 429).
    #[arg(long, value_name = "N")]
    max_jobs_per_account: Option<u32>,
    /// Running jobs of one account at a time.
    #[arg(long, value_name = "N")]
    max_running_jobs_per_account: Option<u32>,
    /// Most bytes a job's input image may take, compressed or uncompressed (bytes, or 16G,
    /// 500M…; default 16G): checked while the layers stream, so a tenant's image (a gzip
    /// bomb) cannot fill this host's disk; a bigger image fails its job, naming this flag.
    #[arg(long, value_name = "SIZE", env = "CLOAK_MANAGER_JOB_MAX_IMAGE_BYTES")]
    job_max_image_bytes: Option<String>,
}

impl JobArgs {
    fn settings(&self) -> Settings {
        Settings {
            sgx_runtime_image: self.sgx_runtime_image.clone(),
            sgx_signing_key: self.sgx_signing_key.clone(),
            nitro_kernel: self.nitro_kernel.clone(),
            nitro_blobs: self.nitro_blobs.clone(),
            insecure_registry: (!self.insecure_registry.is_empty())
                .then(|| self.insecure_registry.clone()),
            allow_private_registry: (!self.allow_private_registry.is_empty())
                .then(|| self.allow_private_registry.clone()),
            registry_ca: self.registry_ca.clone(),
            launcher: self.launcher.clone(),
            job_lease_seconds: self.job_lease_seconds,
            job_timeout_seconds: self.job_timeout_seconds,
            job_max_attempts: self.job_max_attempts,
            max_jobs_per_account: self.max_jobs_per_account,
            max_running_jobs_per_account: self.max_running_jobs_per_account,
            job_max_image_bytes: self.job_max_image_bytes.clone(),
            ..Default::default()
        }
    }
}

impl StoreArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let flags = Settings {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            master_key_file: self.master_key_file.clone(),
            audit_key_file: self.audit_key_file.clone(),
            ..Default::default()
        };
        Ok(match &self.config {
            Some(f) => flags.or(Settings::from_file(f)?),
            None => flags,
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(a) => serve(*a),
        Command::Worker(a) => {
            let flags = Settings {
                max_connections: a.max_connections,
                ..a.jobs.settings()
            };
            let config = Config::resolve(flags.or(a.store.settings()?))?;
            runtime()?.block_on(cloak_manager::server::run_workers(
                config,
                a.workers as usize,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(s) => {
            let config = Config::resolve(s.settings()?)?;
            config.prepare_data_dir()?;
            runtime()?.block_on(async {
                let db = cloak_manager::server::open_db(&config).await?;
                let n = db.migrate().await?;
                outln!("applied {n} migrations");
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { store, output },
        } => audit_verify(store, output),
        Command::RotateMasterKey(s) => rotate(s),
        Command::Ca {
            command:
                CaCommand::Import {
                    store,
                    cert,
                    root,
                    key,
                    replace,
                },
        } => ca_import(store, &cert, root.as_deref(), &key, replace),
        Command::Collateral {
            command:
                CollateralCommand::Import {
                    store,
                    path,
                    output,
                },
        } => collateral_import(store, &path, output),
        Command::Backup { store, file } => backup(store, &file),
        Command::Restore { store, file } => restore(store, &file),
        Command::Openapi => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&cloak_manager::http::openapi())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Account {
            command:
                AccountCommand::Create {
                    store,
                    name,
                    admin_user,
                },
        } => create_account(store, &name, &admin_user),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let flags = Settings {
        listen: a.listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        insecure_http: a.insecure_http.then_some(true),
        admin_user: a.admin_user,
        admin_password_file: a.admin_password_file,
        session_ttl: a.session_ttl,
        max_connections: a.max_connections,
        trust_forwarded_for: a.trust_forwarded_for.then_some(true),
        allow_simulated_attestation: a.allow_simulated_attestation.then_some(true),
        simulation_public_key: a.simulation_public_key,
        pccs_url: a.pccs_url,
        nonce_rate_per_minute: a.nonce_rate_per_minute,
        max_outstanding_nonces: a.max_outstanding_nonces,
        workers: a.workers,
        max_sync_waiters: a.max_sync_waiters,
        max_sync_waiters_per_account: a.max_sync_waiters_per_account,
        sync_wait_seconds: a.sync_wait_seconds,
        ..a.jobs.settings()
    };
    let config = Config::resolve(flags.or(a.store.settings()?))?;
    runtime()?.block_on(cloak_manager::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(store: StoreArgs, output: Format) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(store.settings()?)?;
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.ready().await?;
        let accounts: Vec<(String, String)> = sqlx_accounts(&db)
            .await
            .context("cannot list the accounts")?;
        let mut all_ok = true;
        let mut reports = Vec::new();
        for (id, name) in accounts {
            let v = cloak_manager::audit::verify(&db, &id).await?;
            all_ok &= v.ok;
            if output == Format::Text {
                match &v.problem {
                    None => outln!(
                        "account {name}: audit chain verified ({} records)",
                        v.records
                    ),
                    Some(p) => outln!(
                        "account {name}: AUDIT CHAIN BROKEN at record {}: {p}",
                        v.first_bad_seq.unwrap_or(0)
                    ),
                }
            }
            reports.push(serde_json::json!({"account_id": id, "account": name, "verification": v}));
        }
        if output == Format::Json {
            crate::output::print_json(&reports)?;
        }
        Ok(if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

async fn sqlx_accounts(
    db: &cloak_manager::store::Db,
) -> cloak_manager::Result<Vec<(String, String)>> {
    cloak_manager::accounts::list_all(db).await
}

fn ca_import(
    s: StoreArgs,
    cert: &std::path::Path,
    root: Option<&std::path::Path>,
    key: &str,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    use cloak_manager::ca::ImportKey;
    let config = Config::resolve(s.settings()?)?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let cert_pem = read(cert)?;
    let root_pem = root.map(read).transpose()?;
    let key = if key.starts_with("pkcs11:") {
        ImportKey::Pkcs11(key.to_string())
    } else {
        ImportKey::Pem(read(std::path::Path::new(key))?)
    };
    // Every replica loads the CA once: none may run while it changes.
    let _lock = if config.database_url.starts_with("sqlite:") {
        Some(cloak_manager::server::lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    runtime()?.block_on(async {
        let (db, master) = cloak_manager::server::open(&config).await?;
        let _exclusive = match db.no_replica_running().await? {
            Some(guard) => guard,
            None => anyhow::bail!(
                "a manager replica is running on this database: stop every replica, import, start them again"
            ),
        };
        let done = cloak_manager::ca::import(
            &db,
            &master,
            &cert_pem,
            root_pem.as_deref(),
            key,
            replace,
            cloak_manager::now(),
        )
        .await?;
        outln!(
            "{} the CA: issuing {} (key {}), root {}",
            if done.replaced { "replaced" } else { "imported" },
            done.issuing_subject,
            if done.key_in_token { "in the PKCS#11 token" } else { "sealed under the master key" },
            done.root_subject
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn collateral_import(
    s: StoreArgs,
    path: &std::path::Path,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(s.settings()?)?;
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.ready().await?;
        let done = cloak_manager::collateral::import(&db, path, cloak_manager::now()).await?;
        if output == Format::Json {
            crate::output::print_json(&done)?;
        } else {
            for i in &done {
                outln!(
                    "{}: {} for {} (valid until {} by its {})",
                    i.file,
                    if i.stored {
                        "imported"
                    } else {
                        "kept the cached collateral, valid longer; not imported"
                    },
                    i.key,
                    i.not_after,
                    i.not_after_item
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn rotate(s: StoreArgs) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(s.settings()?)?;
    // SQLite: a running manager holds the data-dir lock.
    let _lock = if config.database_url.starts_with("sqlite:") {
        Some(cloak_manager::server::lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.ready().await?;
        let n = cloak_manager::secrets::rotate(&db, &config.master_key_file).await?;
        outln!(
            "re-encrypted {n} secrets under a new master key in {}",
            config.master_key_file.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn backup(s: StoreArgs, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(s.settings()?)?;
    for (what, path) in [
        ("master key", &config.master_key_file),
        ("audit key", &config.audit_key_file),
    ] {
        if !path.exists() {
            anyhow::bail!(
                "{}: no {what} file: point --data-dir (or --{}-file) at the installation to back up",
                path.display(),
                what.replace(' ', "-")
            );
        }
    }
    let master = cloak_manager::secrets::MasterKey::load(&config.master_key_file)?;
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.ready().await?;
        let (bytes, summary) = cloak_manager::backup::backup(&db, &master).await?;
        cloak_manager::backup::write_file(file, &bytes)?;
        outln!(
            "backed up {} rows of {} tables (schema {}) to {}, encrypted under master key {}",
            summary.rows(),
            summary.tables.len(),
            summary.schema_version,
            file.display(),
            master.primary_id()
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn restore(s: StoreArgs, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use cloak_manager::secrets::MasterKey;
    let config = Config::resolve(s.settings()?)?;
    config.prepare_data_dir()?;
    let _lock = if config.database_url.starts_with("sqlite:") {
        Some(cloak_manager::server::lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    if !config.master_key_file.exists() {
        anyhow::bail!(
            "{}: no master key file: copy the master key file of the installation that made \
             the backup there (mode 0600), or name it with --master-key-file",
            config.master_key_file.display()
        );
    }
    let master = MasterKey::load(&config.master_key_file)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let audit_key = cloak_manager::backup::audit_key(&bytes, &master, file)?;
    if config.audit_key_file.exists() {
        if MasterKey::load(&config.audit_key_file)?.primary_bytes() != audit_key {
            anyhow::bail!(
                "{}: this audit key differs from the backup's, and the restored audit chain \
                 would not verify: move it away (the restore writes the backup's key there)",
                config.audit_key_file.display()
            );
        }
    } else {
        MasterKey::from_bytes(audit_key).save(&config.audit_key_file)?;
    }
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.migrate().await?;
        let summary = cloak_manager::backup::restore(&db, &master, &bytes, file).await?;
        outln!(
            "restored {} rows of {} tables from {} (audit key in {})",
            summary.rows(),
            summary.tables.len(),
            file.display(),
            config.audit_key_file.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn create_account(s: StoreArgs, name: &str, admin_user: &str) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(s.settings()?)?;
    runtime()?.block_on(async {
        let db = cloak_manager::server::open_db(&config).await?;
        db.ready().await?;
        let password = cloak_manager::server::admin_password(&config)?;
        let (account, generated) =
            cloak_manager::accounts::create_with_admin(&db, name, admin_user, password).await?;
        outln!("created account {name} ({account}) with administrator {admin_user}");
        if let Some(p) = generated {
            eprintln!("cloak manager: generated password of {admin_user}: {p} (shown once)");
        }
        Ok(ExitCode::SUCCESS)
    })
}
