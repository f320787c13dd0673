//! Starting the service: the data dir (0700, locked against a second manager), the master key,
//! the database (migrated under a lock), the first administrator, TLS (given, or a self-signed
//! certificate kept in the data dir), and the accept loop with graceful shutdown on SIGTERM.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::accounts::{self, Bootstrap};
use crate::configs::ClientCert;
use crate::error::{Error, Result};
use crate::http::ClientAddr;
use crate::secrets::MasterKey;
use crate::store::{Db, PoolSize};
use crate::{Clock, Config, State};

/// Connections served at once by one process.
pub const MAX_CONNECTIONS: usize = 4096;
/// Time a client has for a TLS handshake, and for each request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// An exclusive lock on the data dir, held for the life of the process.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

/// Locks `dir/lock` so that two managers never share one SQLite database.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::Config(format!(
            "{}: another cloak manager is using this data dir (stop it, or use PostgreSQL \
             with --database-url for several replicas)",
            dir.display()
        )));
    }
    Ok(DataDirLock(f))
}

/// Opens the database with its audit key (created on first use), without migrating.
pub async fn open_db(config: &Config) -> Result<Db> {
    let audit_key = MasterKey::load_or_create(&config.audit_key_file)?.primary_bytes();
    Ok(Db::open(
        &config.database_url,
        PoolSize {
            max_connections: config.max_connections,
        },
    )
    .await?
    .with_audit_key(audit_key))
}

/// Opens the database, applies migrations, and loads the master key.
pub async fn open(config: &Config) -> Result<(Db, MasterKey)> {
    let db = open_db(config).await?;
    db.migrate().await?;
    let key = MasterKey::load_or_create(&config.master_key_file)?;
    Ok((db, key))
}

/// The admin password given by the operator (`--admin-password-file`, else
/// `CLOAK_ADMIN_PASSWORD`), if any.
pub fn admin_password(config: &Config) -> Result<Option<String>> {
    if let Some(f) = &config.admin_password_file {
        let p = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        return Ok(Some(p.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(std::env::var("CLOAK_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty()))
}

/// Everything but the listener: state ready to serve (database migrated, admin created).
pub async fn prepare(config: Config, clock: Arc<dyn Clock>) -> Result<State> {
    let (db, key) = open(&config).await?;
    match accounts::bootstrap(
        &db,
        &config.admin_user,
        admin_password(&config)?,
        clock.now(),
    )
    .await?
    {
        Bootstrap::Existing => {}
        Bootstrap::Created { generated_password } => {
            tracing::info!(user = %config.admin_user, "created the default account and its administrator");
            if let Some(p) = generated_password {
                // Shown once, on stderr only (never through the log, which may be shipped).
                eprintln!(
                    "cloak manager: created administrator {:?} with the generated password: {p}\n\
                     cloak manager: this password is not shown again; change it with `cloak user passwd`.",
                    config.admin_user
                );
            }
        }
    }
    Ok(State {
        db,
        master: Arc::new(RwLock::new(key)),
        config: Arc::new(config),
        metrics: Default::default(),
        clock,
        principals: Default::default(),
        nonce_gauge: Default::default(),
        ca: Default::default(),
        waiters: Default::default(),
    })
}

/// The TLS server configuration: the given certificate, or a self-signed one kept in the data
/// dir. Returns it with the certificate's SHA-256 fingerprint.
pub fn tls_config(config: &Config) -> Result<(Arc<rustls::ServerConfig>, String)> {
    tls_config_with(config, None)
}

/// [`tls_config`] with optional client authentication: a client may present a certificate
/// chaining to this manager CA's root (a launcher fetching its app configs); the verified
/// chain reaches the handlers as [`crate::configs::ClientCert`]. Clients without one are
/// served as before.
pub async fn tls_config_with_client_auth(
    config: &Config,
    state: &State,
) -> Result<(Arc<rustls::ServerConfig>, String)> {
    use rustls_pki_types::pem::PemObject;
    let ca = crate::ca::load_or_create(&state.db, &state.master(), state.clock.now()).await?;
    let root = rustls_pki_types::CertificateDer::from_pem_slice(ca.root_pem.as_bytes())
        .map_err(|e| Error::Internal(format!("the CA root: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(root)
        .map_err(|e| Error::Internal(format!("the CA root: {e}")))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Internal(format!("client certificate verifier: {e}")))?;
    tls_config_with(config, Some(verifier))
}

fn tls_config_with(
    config: &Config,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<(Arc<rustls::ServerConfig>, String)> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let c = config.data_dir.join("tls.crt");
            let k = config.data_dir.join("tls.key");
            if !c.exists() || !k.exists() {
                self_signed(config, &c, &k)?;
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "{}: not a PEM certificate chain: {e}",
                cert_path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no certificate in it",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        Error::Config(format!(
            "{}: not a PEM private key: {e}",
            key_path.display()
        ))
    })?;
    let fingerprint = hex::encode(Sha256::digest(certs[0].as_ref()));
    let builder = rustls::ServerConfig::builder();
    let builder = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("TLS certificate and key: {e}")))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(sc), fingerprint))
}

fn self_signed(config: &Config, cert: &Path, key: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some((host, _)) = config.listen.rsplit_once(':') {
        let host = host.trim_matches(['[', ']']);
        if !host.is_empty() && host != "0.0.0.0" && host != "::" && !names.iter().any(|n| n == host)
        {
            names.push(host.to_string());
        }
    }
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Internal(format!("self-signed certificate: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| Error::io(key, e))?;
    f.write_all(ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| Error::io(key, e))?;
    std::fs::write(cert, ck.cert.pem()).map_err(|e| Error::io(cert, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// Serves `state` on `listener` (TLS unless `tls` is None) until `shutdown` resolves, then lets
/// in-flight requests finish (at most 30 s).
pub async fn serve(
    state: State,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    crate::collateral::spawn_refresher(state.clone());
    let router = crate::http::router(state);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // At most this many connections at once (each holds a descriptor): past it, new ones wait
    // in the kernel's backlog instead of exhausting the process.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_accept_warning = std::time::Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    if last_accept_warning.elapsed() > Duration::from_secs(1) {
                        tracing::warn!(error = %e, "accept failed");
                        last_accept_warning = std::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = move |cert: Option<ClientCert>| {
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                if let Some(c) = &cert {
                    req.extensions_mut().insert(c.clone());
                }
                router.clone().oneshot(req.map(axum::body::Body::new))
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client gets HEADER_TIMEOUT to send each request's headers (slow-loris guard, also
        // between keep-alive requests).
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(64);
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let tls =
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    // A chain here was verified by the TLS layer against the CA's root.
                    let cert = tls.get_ref().1.peer_certificates().map(|c| {
                        ClientCert(Arc::new(c.iter().map(|d| d.as_ref().to_vec()).collect()))
                    });
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls), service(cert));
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service(None))
                    .into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = fut.await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within 30 s");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// `cloak manager worker`: conversion workers without the API, until SIGTERM. The database
/// must be migrated (by a manager, or `cloak manager migrate`); the master and audit keys must
/// be the managers' (the worker opens sealed credentials and appends audit records).
pub async fn run_workers(config: Config, workers: usize) -> Result<()> {
    if workers == 0 {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    let db = open_db(&config).await?;
    db.ready().await?;
    let key = MasterKey::load(&config.master_key_file)?;
    let state = State {
        db,
        master: Arc::new(RwLock::new(key)),
        config: Arc::new(config),
        metrics: Default::default(),
        clock: Arc::new(crate::SystemClock),
        principals: Default::default(),
        nonce_gauge: Default::default(),
        ca: Default::default(),
        waiters: Default::default(),
    };
    // Held like a replica's: master key rotation refuses while workers run.
    let _replica = state.db.replica_guard().await?;
    let handles = crate::worker::spawn(state, workers);
    eprintln!("cloak manager: {workers} conversion worker(s) running");
    shutdown_signal().await;
    for h in handles {
        h.abort();
    }
    Ok(())
}

/// `cloak manager serve`: runs until SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    config.prepare_data_dir()?;
    let _lock = if config.database_url.starts_with("sqlite:") {
        Some(lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    let listen = config.listen.clone();
    let insecure = config.insecure_http;
    let tls_settings = config.clone();
    let database_url = config.database_url.clone();
    // On SQLite, the process holding the data-dir lock is the only writer of the data dir's
    // database (a database elsewhere could be shared: no cache then).
    let sole_writer = _lock.is_some()
        && database_url == format!("sqlite://{}", config.data_dir.join("manager.db").display());
    let state = prepare(config, Arc::new(crate::SystemClock)).await?;
    let tls = if insecure {
        None
    } else {
        let (tls, fp) = tls_config_with_client_auth(&tls_settings, &state).await?;
        tracing::info!(sha256 = %fp, "TLS certificate");
        eprintln!("cloak manager: TLS certificate SHA-256 fingerprint {fp}");
        Some(tls)
    };
    let _replica = state.db.replica_guard().await?;
    state.db.start_read_cache(&database_url, sole_writer);
    let workers = crate::worker::spawn(state.clone(), state.config.jobs.workers);
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| Error::Config(format!("--listen {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("--listen {listen}: {e}")))?;
    tracing::info!(%addr, tls = !insecure, "manager listening");
    eprintln!(
        "cloak manager: listening on {}://{addr}",
        if insecure { "http" } else { "https" }
    );
    let served = serve(state, listener, tls, shutdown_signal()).await;
    for w in workers {
        w.abort();
    }
    served
}
