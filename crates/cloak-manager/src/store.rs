//! Storage: one set of SQL statements for SQLite and PostgreSQL (through sqlx's `Any` driver,
//! `$N` placeholders work on both), versioned migrations applied under a lock, and the few
//! places where the two dialects differ.
//!
//! SQLite runs in WAL mode with `synchronous=FULL` (an acknowledged change survives a crash or
//! a power cut) and one writer connection: every write transaction goes through it, so there is
//! no "database is locked" under load, while readers use their own pool.
//! PostgreSQL shares one pool; rows that decide a race are locked with `FOR UPDATE`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::cache::{ReadCache, WriteMark};
use crate::error::{Error, Result};

/// Which database the service talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

type PragmaFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// SQLite settings of every connection: WAL, full sync, foreign keys, and a busy wait.
fn pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> PragmaFuture<'_> {
    Box::pin(async move {
        conn.execute(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
             PRAGMA foreign_keys=ON; PRAGMA busy_timeout=30000;",
        )
        .await?;
        Ok(())
    })
}

/// A transaction on the write pool. While it lives the read cache keeps nothing new; when it
/// ends after a commit was attempted the cache is emptied (a rollback or a drop without commit
/// changed nothing and keeps it), and on PostgreSQL its commit notifies
/// the other replicas' caches (`NOTIFY`, delivered at commit). `&mut *tx` is the connection.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    notify: bool,
    mark: WriteMark<axum::body::Bytes>,
}

/// The channel on which every PostgreSQL write transaction notifies the replicas' read caches.
const CACHE_CHANNEL: &str = "cloak_read_cache";

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.mark.committing();
        if self.notify {
            self.inner
                .execute(format!("NOTIFY {CACHE_CHANNEL}").as_str())
                .await?;
        }
        self.inner.commit().await
        // `mark` drops here, after the commit: the local cache forgets what it read before.
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

/// The database of one installation.
#[derive(Debug, Clone)]
pub struct Db {
    pub dialect: Dialect,
    read: AnyPool,
    write: AnyPool,
    /// The key of the audit chain's HMACs (kept outside the database).
    audit_key: std::sync::Arc<[u8; 32]>,
    /// `GET /v1/builds/{id}`'s cache (see cache.rs); off until `start_read_cache`.
    pub(crate) cache: std::sync::Arc<ReadCache<axum::body::Bytes>>,
}

/// Pool sizes: with N replicas and W workers on one PostgreSQL, keep
/// `N × (max_connections + 1) + W × (1 + workers) + superuser_reserved ≤ max_connections` of the
/// server (each replica also holds one connection listening for the read cache).
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    pub max_connections: u32,
}

impl Default for PoolSize {
    fn default() -> Self {
        PoolSize {
            max_connections: 10,
        }
    }
}

impl Db {
    /// Opens `url` (`sqlite:///path/db.sqlite` or `postgres://…`).
    pub async fn open(url: &str, size: PoolSize) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let acquire = Duration::from_secs(10);
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
        {
            // Created private: the database holds hashes and sealed secrets.
            use std::os::unix::fs::OpenOptionsExt;
            if !path.is_empty() && !std::path::Path::new(path).exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
            }
        }
        if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            let opts = AnyConnectOptions::from_str(&url)
                .map_err(|e| Error::Config(format!("--database-url: {e}")))?;
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(pragmas)
                .connect_with(opts.clone())
                .await?;
            let read = AnyPoolOptions::new()
                .max_connections(size.max_connections.max(2))
                .acquire_timeout(acquire)
                .after_connect(pragmas)
                .connect_with(opts)
                .await?;
            Ok(Db {
                dialect: Dialect::Sqlite,
                read,
                write,
                audit_key: Default::default(),
                cache: Default::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = AnyConnectOptions::from_str(url)
                .map_err(|e| Error::Config(format!("--database-url: {e}")))?;
            let pool = AnyPoolOptions::new()
                .max_connections(size.max_connections)
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await?;
            Ok(Db {
                dialect: Dialect::Postgres,
                read: pool.clone(),
                write: pool,
                audit_key: Default::default(),
                cache: Default::default(),
            })
        } else {
            Err(Error::Config(
                "--database-url must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    /// Uses `key` for the audit chain's HMACs.
    pub fn with_audit_key(mut self, key: [u8; 32]) -> Db {
        self.audit_key = std::sync::Arc::new(key);
        self
    }

    /// The audit chain's HMAC key.
    pub fn audit_key(&self) -> &[u8; 32] {
        &self.audit_key
    }

    /// PostgreSQL: a connection holding the shared "a replica is running" lock for as long as
    /// it lives, so offline key operations can tell that replicas are up. None on SQLite (the
    /// data-dir lock does that).
    pub async fn replica_guard(&self) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut conn = self.write.acquire().await?;
        conn.execute("SELECT pg_advisory_lock_shared(7243012)")
            .await?;
        Ok(Some(conn))
    }

    /// PostgreSQL: whether no replica is running (takes the exclusive lock for this
    /// connection's life). Always true on SQLite (check the data-dir lock instead).
    #[allow(clippy::type_complexity)]
    pub async fn no_replica_running(
        &self,
    ) -> Result<Option<Option<sqlx::pool::PoolConnection<sqlx::Any>>>> {
        if self.dialect != Dialect::Postgres {
            return Ok(Some(None));
        }
        let mut conn = self.write.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(7243012)")
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(Some(conn)))
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for single-statement writes outside a transaction.
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let mark = self.cache.write();
        Ok(Tx {
            inner: self.write.begin().await?,
            notify: self.dialect == Dialect::Postgres,
            mark,
        })
    }

    /// Turns the read cache on for a process that sees every write: on SQLite, the one that
    /// holds the data-dir lock (`sole_writer`); on PostgreSQL, while a listener on the
    /// notification channel is connected (`url`), off whenever it is not.
    pub fn start_read_cache(&self, url: &str, sole_writer: bool) {
        match self.dialect {
            Dialect::Sqlite => self.cache.set_enabled(sole_writer),
            Dialect::Postgres => {
                let cache = self.cache.clone();
                let url = url.to_string();
                tokio::spawn(async move {
                    loop {
                        follow_writes(&url, &cache).await;
                        cache.set_enabled(false);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
            }
        }
    }

    /// `FOR UPDATE` where the dialect has it (SQLite's single writer already serialises).
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The collation that orders text byte by byte, for prefix ranges (`x >= p AND x < p || U+10FFFF`):
    /// SQLite's default (BINARY) already is; PostgreSQL's database collation may not be (en_US
    /// ignores punctuation at first), so its indexes and comparisons name "C". Migrations write
    /// `{collate_c}` where an index needs it.
    pub fn collate_c(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => r#" COLLATE "C""#,
        }
    }

    /// Connections in use and idle (for `/metrics`).
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.read.size(), self.read.num_idle())
    }

    /// Whether the database answers and the schema is current.
    pub async fn ready(&self) -> Result<()> {
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&self.read)
            .await?;
        if v as usize != MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "schema version {v}, this manager needs {}: run `cloak manager migrate`",
                MIGRATIONS.len()
            )));
        }
        Ok(())
    }

    /// Applies the migrations this database lacks, under a lock so that replicas starting together
    /// migrate once (PostgreSQL: an advisory lock; SQLite: `BEGIN IMMEDIATE`). Returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let mut conn = self.write.acquire().await?;
        match self.dialect {
            Dialect::Postgres => {
                conn.execute("SELECT pg_advisory_lock(7243011)").await?;
            }
            Dialect::Sqlite => {
                conn.execute("BEGIN IMMEDIATE").await?;
            }
        }
        let result = self.migrate_locked(&mut conn).await;
        match self.dialect {
            Dialect::Postgres => {
                conn.execute("SELECT pg_advisory_unlock(7243011)").await?;
            }
            Dialect::Sqlite => {
                conn.execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
                    .await?;
            }
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<usize> {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await?;
        if current as usize > MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "the database has schema version {current}, newer than this manager ({}): \
                 upgrade cloak",
                MIGRATIONS.len()
            )));
        }
        let mut ran = 0;
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let sql = match self.dialect {
                Dialect::Sqlite => sql.replace("{blob}", "BLOB"),
                Dialect::Postgres => sql.replace("{blob}", "BYTEA"),
            }
            .replace("{collate_c}", self.collate_c());
            if self.dialect == Dialect::Postgres {
                conn.execute("BEGIN").await?;
            }
            let step = async {
                for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    conn.execute(stmt).await?;
                }
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(i as i64 + 1)
                .bind(*name)
                .bind(crate::now())
                .execute(&mut *conn)
                .await?;
                Ok::<_, sqlx::Error>(())
            }
            .await;
            if self.dialect == Dialect::Postgres {
                conn.execute(if step.is_ok() { "COMMIT" } else { "ROLLBACK" })
                    .await?;
            }
            step?;
            tracing::info!(version = i + 1, name, "schema migration applied");
            ran += 1;
        }
        Ok(ran)
    }
}

/// Empties `cache` at every write notification; returns when the listener's connection is lost.
async fn follow_writes(url: &str, cache: &ReadCache<axum::body::Bytes>) {
    let mut listener = match sqlx::postgres::PgListener::connect(url).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "read cache: cannot listen for writes; cache off");
            return;
        }
    };
    if let Err(e) = listener.listen(CACHE_CHANNEL).await {
        tracing::warn!(error = %e, "read cache: LISTEN failed; cache off");
        return;
    }
    // Writes before the listener was connected are not known: start empty.
    cache.set_enabled(true);
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => cache.invalidate(),
            Ok(None) => {
                tracing::warn!("read cache: listener connection lost; cache off");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "read cache: listener failed; cache off");
                return;
            }
        }
    }
}

/// The schema, one entry per version. Never edit an applied entry: add one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial schema",
        r#"
CREATE TABLE accounts (account_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL);
CREATE TABLE users (user_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  user_name TEXT NOT NULL UNIQUE, user_email TEXT NOT NULL, password_hash TEXT NOT NULL, role TEXT NOT NULL,
  status TEXT NOT NULL, created_at BIGINT NOT NULL, last_logged_in_at BIGINT);
CREATE TABLE sessions (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(user_id),
  account_id TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  name TEXT NOT NULL, role TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL, revoked_at BIGINT, last_used_at BIGINT);
CREATE TABLE login_failures (throttle_key TEXT PRIMARY KEY, failures BIGINT NOT NULL, last_failure_at BIGINT NOT NULL);
CREATE TABLE apps (app_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  name TEXT NOT NULL, output_image_name TEXT NOT NULL, body TEXT NOT NULL, approval_policy TEXT NOT NULL,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, UNIQUE (account_id, name));
CREATE TABLE tasks (task_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  task_type TEXT NOT NULL, entity_id TEXT NOT NULL, status TEXT NOT NULL, requester TEXT NOT NULL,
  description TEXT NOT NULL, policy TEXT NOT NULL, denial_reason TEXT, created_at BIGINT NOT NULL,
  status_updated_at BIGINT NOT NULL);
CREATE INDEX tasks_account_status ON tasks (account_id, status, created_at);
CREATE TABLE approvals (task_id TEXT NOT NULL REFERENCES tasks(task_id), user_id TEXT NOT NULL,
  user_name TEXT NOT NULL, status TEXT NOT NULL, denial_reason TEXT, created_at BIGINT NOT NULL,
  PRIMARY KEY (task_id, user_id));
CREATE TABLE builds (build_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  app_id TEXT NOT NULL REFERENCES apps(app_id), status TEXT NOT NULL, status_updated_at BIGINT NOT NULL,
  status_reason TEXT, docker_image_name TEXT NOT NULL, docker_version TEXT NOT NULL, docker_image_sha TEXT,
  mrenclave TEXT, mrsigner TEXT, isvprodid BIGINT, isvsvn BIGINT, pcr0 TEXT, pcr1 TEXT, pcr2 TEXT, pcr8 TEXT,
  measurement_key TEXT NOT NULL, debug BIGINT NOT NULL, body TEXT NOT NULL,
  task_id TEXT NOT NULL REFERENCES tasks(task_id), created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
  UNIQUE (app_id, measurement_key));
CREATE INDEX builds_account_created ON builds (account_id, created_at);
CREATE INDEX builds_account_status ON builds (account_id, status);
CREATE TABLE registries (registry_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  url TEXT NOT NULL, host TEXT NOT NULL, username TEXT NOT NULL, secret {blob} NOT NULL, description TEXT NOT NULL,
  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, UNIQUE (account_id, host));
CREATE TABLE audit_log (account_id TEXT NOT NULL, seq BIGINT NOT NULL, time BIGINT NOT NULL,
  actor_type TEXT NOT NULL, actor_id TEXT NOT NULL, actor_name TEXT NOT NULL, action TEXT NOT NULL,
  entity_type TEXT NOT NULL, entity_id TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL, PRIMARY KEY (account_id, seq));
CREATE TABLE audit_heads (account_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL)
"#,
    ),
    (
        "certificate authority, nonces, certificates, revocation list, approver snapshots",
        r#"
CREATE TABLE ca_keys (name TEXT PRIMARY KEY, cert_pem TEXT NOT NULL, key_sealed {blob} NOT NULL,
  created_at BIGINT NOT NULL);
CREATE TABLE nonces (nonce_hash TEXT PRIMARY KEY, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
  used_at BIGINT);
CREATE INDEX nonces_expiry ON nonces (expires_at);
CREATE TABLE certificates (certificate_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  app_id TEXT NOT NULL, build_id TEXT, status TEXT NOT NULL, reason_code TEXT, detail TEXT NOT NULL, tee TEXT,
  simulated BIGINT NOT NULL, tcb_status TEXT, advisory_ids TEXT NOT NULL, subject TEXT, not_after BIGINT,
  cert_pem TEXT, request_id TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE INDEX certificates_account ON certificates (account_id, created_at);
CREATE TABLE revoked_measurements (account_id TEXT NOT NULL, measurement_key TEXT NOT NULL, build_id TEXT NOT NULL,
  reason TEXT NOT NULL, revoked_at BIGINT NOT NULL, PRIMARY KEY (account_id, measurement_key));
ALTER TABLE users ADD COLUMN role_changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN created_by_user_id TEXT NOT NULL DEFAULT ''
"#,
    ),
    (
        // GET /v1/builds orders by (created_at DESC, build_id): with the tiebreaker in the index,
        // a page is read off the index instead of sorting every build of the account.
        "builds listing order index",
        r#"
CREATE INDEX builds_account_created_id ON builds (account_id, created_at DESC, build_id);
DROP INDEX builds_account_created
"#,
    ),
    (
        // One row per platform (tee:fmspc:pck-ca), shared by every replica; see collateral.rs.
        "DCAP collateral cache",
        r#"
CREATE TABLE dcap_collateral (cache_key TEXT PRIMARY KEY, collateral TEXT NOT NULL, not_after BIGINT NOT NULL,
  not_after_item TEXT NOT NULL, fetched_at BIGINT NOT NULL, source TEXT NOT NULL)
"#,
    ),
    (
        // Per-client-address nonce counts (fixed one-minute windows), shared by every replica.
        "nonce rate limit",
        r#"
CREATE TABLE nonce_rate (client TEXT PRIMARY KEY, window_start BIGINT NOT NULL, count BIGINT NOT NULL);
CREATE INDEX nonce_rate_window ON nonce_rate (window_start)
"#,
    ),
    (
        // Conversion jobs: a durable queue. A worker owns a RUNNING job while its lease
        // (lease_owner, attempts, lease_expires_at in ms) holds; every change a worker makes is
        // guarded by owner and attempt. `credentials` holds the request's auth configs sealed
        // under the master key, erased when the job ends. job_attempts is the history.
        "conversion jobs",
        r#"
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  app_id TEXT, target TEXT NOT NULL, state TEXT NOT NULL, stage TEXT, bytes_done BIGINT NOT NULL,
  bytes_total BIGINT, attempts BIGINT NOT NULL, max_attempts BIGINT NOT NULL, request TEXT NOT NULL,
  credentials {blob}, requester TEXT NOT NULL, idempotency_key TEXT, lease_owner TEXT,
  lease_expires_at BIGINT, cancel_requested BIGINT NOT NULL, error_stage TEXT, error_message TEXT,
  build_id TEXT, result TEXT, input_image TEXT NOT NULL, output_image TEXT NOT NULL,
  created_at BIGINT NOT NULL, started_at BIGINT, finished_at BIGINT,
  UNIQUE (account_id, idempotency_key));
CREATE INDEX jobs_queue ON jobs (state, created_at);
CREATE INDEX jobs_account_created ON jobs (account_id, created_at DESC, job_id);
CREATE TABLE job_attempts (job_id TEXT NOT NULL REFERENCES jobs(job_id), attempt BIGINT NOT NULL,
  worker TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT, outcome TEXT, error TEXT,
  PRIMARY KEY (job_id, attempt))
"#,
    ),
    (
        // The SGX key `signingKey: {"default": {}}` signs with, per account: generated on first
        // use, sealed under the master key; key_id is SHA-256 of the modulus (never secret).
        "account signing keys",
        r#"
CREATE TABLE signing_keys (account_id TEXT NOT NULL REFERENCES accounts(account_id), kind TEXT NOT NULL,
  key_sealed {blob} NOT NULL, key_id TEXT NOT NULL, created_at BIGINT NOT NULL,
  PRIMARY KEY (account_id, kind))
"#,
    ),
    (
        // The console's pages at 10,000 builds: a measurement search is a prefix (an index range
        // per measurement column instead of LIKE over every build); an app's builds and a tab of
        // tasks are read in their listing order off an index instead of sorted.
        "console listing indexes",
        r#"
CREATE INDEX builds_mrenclave ON builds (mrenclave);
CREATE INDEX builds_mrsigner ON builds (mrsigner);
CREATE INDEX builds_pcr0 ON builds (pcr0);
CREATE INDEX builds_app_created_id ON builds (app_id, created_at DESC, build_id);
CREATE INDEX tasks_account_status_created_id ON tasks (account_id, status, created_at DESC, task_id)
"#,
    ),
    (
        "app configs (entries sealed under the master key; names kept for operators)",
        r#"
CREATE TABLE app_configs (config_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
  app_id TEXT NOT NULL, build_id TEXT, name TEXT NOT NULL, description TEXT NOT NULL, labels TEXT NOT NULL,
  ports TEXT NOT NULL, entry_names TEXT NOT NULL, sealed {blob} NOT NULL, created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL);
CREATE INDEX app_configs_app ON app_configs (account_id, app_id)
"#,
    ),
    (
        // The console's build listings at 10,000 builds, each read in listing order off one
        // index (no sort, no table row per candidate): by status, by app (the account's and the
        // app's equality both in the index), and the image filter as a prefix of the lower-cased
        // image name (an index range; `{collate_c}` makes PostgreSQL's order bytewise, as the
        // range needs). (account_id, status, ...) covers what builds_account_status did.
        "console build listing indexes: status, app, image prefix",
        r#"
CREATE INDEX builds_account_status_created_id ON builds (account_id, status, created_at DESC, build_id);
CREATE INDEX builds_account_app_created_id ON builds (account_id, app_id, created_at DESC, build_id);
CREATE INDEX builds_account_image ON builds (account_id, LOWER(docker_image_name){collate_c}, created_at, build_id);
DROP INDEX builds_account_status
"#,
    ),
];
