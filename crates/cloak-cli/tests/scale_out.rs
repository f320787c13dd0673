//! Scale-out under faults, on this machine: a real PostgreSQL, three `cloak manager serve`
//! replicas started at once on the empty database (migrations under the advisory lock) with no
//! in-process workers (`--workers 0`, as the production overlay runs them), two `cloak manager
//! worker` processes that do every conversion, Debian's HAProxy round-robin in front, and a load
//! of registrations, quorum-of-two approvals, certificate issuance (simulated evidence), reads
//! and asynchronous conversion jobs (against a real `docker-registry`), while replicas and a
//! worker are SIGKILLed at random times and restarted and PostgreSQL is restarted once. Then the
//! database must reflect every 2xx answer, hold no build twice, count every quorum exactly,
//! have ended every job exactly once (scale_out/jobs.rs), and its audit chain must verify.
//!
//! Modes (`CLOAK_SCALE_OUT`): unset = the short run of the test suite; `full` = a longer run
//! (`CLOAK_SCALE_OUT_SECONDS`, default 120); `bench` = the load benchmark of
//! docs/benchmarks.md (1 and 3 replicas behind HAProxy). scripts/scale-out.sh runs them with a
//! release binary (`CLOAK_BIN`).

mod common;
// The conversion-job load and checks (a directory of its own: tests/*.rs are test crates).
#[path = "scale_out/jobs.rs"]
mod jobs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_attest::Measurements;
use common::postgres::{db_name, Postgres};
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-password-for-scale-out";
const USER_PASSWORD: &str = "approver-password-123";

fn cloak_bin() -> PathBuf {
    std::env::var_os("CLOAK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cloak")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The files every replica shares: keys, simulation public key, admin password.
struct Install {
    dir: tempfile::TempDir,
    database_url: String,
    sim_key: Arc<SimulationSigningKey>,
}

impl Install {
    fn new(pg: &Postgres) -> Install {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for k in ["master.key", "audit.key"] {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
                .unwrap();
            let p = dir.path().join(k);
            std::fs::write(&p, format!("{}\n", hex::encode(key))).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sim_key = SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap();
        std::fs::write(dir.path().join("simulation.pub"), sim_key.public_sec1()).unwrap();
        Install {
            database_url: pg.database(),
            dir,
            sim_key: Arc::new(sim_key),
        }
    }

    fn store_args(&self, data: &Path) -> Vec<String> {
        let p = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            "--data-dir".into(),
            data.display().to_string(),
            "--database-url".into(),
            self.database_url.clone(),
            "--master-key-file".into(),
            p("master.key"),
            "--audit-key-file".into(),
            p("audit.key"),
        ]
    }
}

/// One `cloak manager serve` on a fixed loopback port (kept across restarts for HAProxy), or
/// one `cloak manager worker` (no port).
struct Replica {
    name: String,
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Replica {
    fn new(install: &Install, name: &str, max_connections: u32) -> Replica {
        let dir = install.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let port = free_port();
        let mut args: Vec<String> = [
            "manager",
            "serve",
            "--insecure-http",
            "--admin-user",
            "admin",
            "--allow-simulated-attestation",
            // Conversions are the workers' (`cloak manager worker`) alone.
            "--workers",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--max-connections".into(),
            max_connections.to_string(),
            "--simulation-public-key".into(),
            install
                .dir
                .path()
                .join("simulation.pub")
                .display()
                .to_string(),
        ]);
        args.extend(install.store_args(&dir.join("data")));
        Replica {
            name: name.into(),
            port,
            args,
            dir,
            child: None,
            starts: 0,
        }
    }

    /// A `cloak manager worker` with the operator's conversion flags `job_args`.
    fn worker(install: &Install, name: &str, job_args: Vec<String>) -> Replica {
        let dir = install.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let mut args: Vec<String> = vec!["manager".into(), "worker".into()];
        args.extend(install.store_args(&dir.join("data")));
        args.extend(job_args);
        Replica {
            name: name.into(),
            port: 0,
            args,
            dir,
            child: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        self.child = Some(
            Command::new(cloak_bin())
                .args(&self.args)
                .env("CLOAK_ADMIN_PASSWORD", ADMIN_PASSWORD)
                // Workers log their opaque ids at info (the test finds a killed worker's job).
                .env(
                    "CLOAK_LOG",
                    if self.port == 0 {
                        "info,sqlx=warn"
                    } else {
                        "warn"
                    },
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start cloak manager serve"),
        );
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until /readyz answers 200 (or panics with the log after a minute).
    fn wait_ready(&mut self, http: &reqwest::blocking::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
            {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{} exited ({st}):\n{}", self.name, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("run-{start}.log"))
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The worker ids this (worker) process runs under, once it has logged them.
    fn worker_ids(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let ids = jobs::worker_ids(&log);
            if !ids.is_empty() {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "{} logged no worker id:\n{log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// HAProxy (Debian's), round-robin over `ports`, retrying only refused connections (a request
/// that reached a replica is never sent twice).
struct Haproxy {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(ports: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 4096\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\n  retries 3\n  option redispatch\n  retry-on conn-failure\n\n\
             frontend api\n  bind 127.0.0.1:{port}\n  default_backend managers\n\n\
             backend managers\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             timeout check 10s\n  default-server inter 500ms fall 2 rise 1\n"
        );
        for (i, p) in ports.iter().enumerate() {
            cfg.push_str(&format!("  server r{i} 127.0.0.1:{p} check\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy (run scripts/install-deps.sh)");
        Haproxy {
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A bearer-token API client through HAProxy; answers (status, JSON) or None when no HTTP
/// answer came back (connection reset by a killed replica, …).
#[derive(Clone)]
struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Api {
    fn login(base: &str, user: &str, password: &str) -> Api {
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = http
                .post(format!("{base}/v1/sys/auth"))
                .basic_auth(user, Some(password))
                .send();
            if let Ok(r) = r {
                if r.status().is_success() {
                    let v: Value = r.json().unwrap();
                    return Api {
                        http,
                        base: base.into(),
                        token: v["access_token"].as_str().unwrap().into(),
                    };
                }
            }
            assert!(Instant::now() < deadline, "cannot log in as {user}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().ok()?;
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().unwrap_or(Value::Null);
        Some((status, v))
    }

    fn post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn patch(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        self.call(reqwest::Method::PATCH, path, Some(body))
    }

    fn get(&self, path: &str) -> Option<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None)
    }

    /// Retries until a 2xx (setup only, before any fault).
    fn must(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        for _ in 0..50 {
            if let Some((s, v)) = self.call(method.clone(), path, Some(body)) {
                if (200..300).contains(&s) {
                    return v;
                }
                assert!(s >= 500, "{method} {path}: {s} {v}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{method} {path} never succeeded");
    }
}

fn ok(s: Option<(u16, Value)>) -> Option<Value> {
    match s {
        Some((c, v)) if (200..300).contains(&c) => Some(v),
        _ => None,
    }
}

fn pcr(b: u64, salt: u8) -> String {
    let mut v = vec![salt; 48];
    v[..8].copy_from_slice(&b.to_be_bytes());
    hex::encode(v)
}

fn build_body(app_id: &str, n: u64) -> Value {
    json!({"app_id": app_id,
           "docker_info": {"docker_image_name": "registry.example.com/svc", "docker_version": format!("v{n}")},
           "attributes": {"nitro_enclave": {"pcr0": pcr(n, 0xa0), "pcr1": pcr(0, 0xa1), "pcr2": pcr(0, 0xa2)}},
           "advanced_settings": {"certificates": [{"issuer": "MANAGER_CA", "subject": "svc"}]}})
}

/// A CSR for a fresh P-256 key; (CSR PEM, SPKI DER).
fn csr() -> (String, Vec<u8>) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "svc");
    let req = params.serialize_request(&kp).unwrap();
    (
        req.pem().unwrap(),
        rcgen::PublicKeyData::subject_public_key_info(&kp),
    )
}

/// One certificate request with fresh simulated evidence: nonce, then evidence bound to it.
fn issue(
    anon: &Api,
    sim: &SimulationSigningKey,
    app_id: &str,
    n: u64,
    csr: &(String, Vec<u8>),
) -> Option<(u16, Value)> {
    let nonce = ok(anon.post("/v1/attestation/nonce", &json!({})))?;
    let nonce = hex::decode(nonce["nonce"].as_str()?).ok()?;
    let mut pcrs = BTreeMap::new();
    for (i, salt) in [(0u16, 0xa0u8), (1, 0xa1), (2, 0xa2)] {
        pcrs.insert(
            i,
            hex::decode(pcr(if i == 0 { n } else { 0 }, salt)).unwrap(),
        );
    }
    let evidence = produce(
        sim,
        &Document {
            timestamp_ms: cloak_manager::now_ms() as u64,
            measurements: Measurements::Pcrs(pcrs),
            user_data: None,
            nonce: Some(nonce.clone()),
            public_key: Some(csr.1.clone()),
        },
    )
    .unwrap();
    anon.post(
        "/v1/certificates",
        &json!({"app_id": app_id, "csr": csr.0, "evidence": b64(&evidence), "nonce": hex::encode(&nonce)}),
    )
}

/// What the load saw acknowledged (2xx) and what it sent.
#[derive(Default)]
struct Acked {
    builds: BTreeMap<String, (String, u64)>, // build_id → (task_id, n)
    approvals: BTreeSet<(String, String)>,   // (task_id, user_id)
    certificates: BTreeSet<String>,
    reads: u64,
    sent: u64,
    failed: u64,
}

struct Setup {
    admin: Api,
    approvers: Vec<(Api, String)>,
    anon: Api,
    app_id: String,
}

fn setup(base: &str) -> Setup {
    let admin = Api::login(base, "admin", ADMIN_PASSWORD);
    let mut approvers = Vec::new();
    for name in ["approver-1", "approver-2"] {
        let u = admin.must(
            reqwest::Method::POST,
            "/v1/users",
            &json!({"user_name": name, "password": USER_PASSWORD, "role": "WRITER"}),
        );
        approvers.push((
            Api::login(base, name, USER_PASSWORD),
            u["user_id"].as_str().unwrap().to_string(),
        ));
    }
    let app = admin.must(
        reqwest::Method::POST,
        "/v1/apps",
        &json!({"name": "svc", "input_image_name": "registry.example.com/svc:in",
                "output_image_name": "registry.example.com/svc:out",
                "approval_policy": {"n": 2, "approvers": ["role:WRITER"], "exclude_requester": true}}),
    );
    Setup {
        anon: Api {
            token: String::new(),
            ..admin.clone()
        },
        app_id: app["app_id"].as_str().unwrap().to_string(),
        admin,
        approvers,
    }
}

/// One client's loop: register a build, both approvals, a certificate, a read; every 2xx
/// recorded. Errors and non-2xx answers are outcomes the client does not know: not recorded.
fn client_loop(
    s: &Setup,
    sim: &SimulationSigningKey,
    id: u64,
    stop: &AtomicBool,
    acked: &Mutex<Acked>,
) {
    let key = csr();
    let mut n = id << 32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut sent = 1;
        let mut failed = 0;
        let Some(b) = ok(s.admin.post("/v1/builds", &build_body(&s.app_id, n))) else {
            acked.lock().unwrap().failed += 1;
            continue;
        };
        let (build_id, task_id) = (
            b["build_id"].as_str().unwrap().to_string(),
            b["task_id"].as_str().unwrap().to_string(),
        );
        acked
            .lock()
            .unwrap()
            .builds
            .insert(build_id.clone(), (task_id.clone(), n));
        let mut approved = 0;
        for (api, user_id) in &s.approvers {
            sent += 1;
            if ok(api.patch(
                &format!("/v1/tasks/{task_id}"),
                &json!({"status": "APPROVED"}),
            ))
            .is_some()
            {
                acked
                    .lock()
                    .unwrap()
                    .approvals
                    .insert((task_id.clone(), user_id.clone()));
                approved += 1;
            } else {
                failed += 1;
            }
        }
        if approved == 2 {
            sent += 1;
            match ok(issue(&s.anon, sim, &s.app_id, n, &key)) {
                Some(c) => {
                    acked
                        .lock()
                        .unwrap()
                        .certificates
                        .insert(c["certificate_id"].as_str().unwrap_or_default().to_string());
                }
                None => failed += 1,
            }
        }
        sent += 1;
        let read = ok(s.admin.get(&format!("/v1/builds/{build_id}")));
        let mut a = acked.lock().unwrap();
        a.sent += sent;
        a.failed += failed + u64::from(read.is_none());
        a.reads += u64::from(read.is_some());
    }
}

fn psql(pg: &Postgres, url: &str, sql: &str) -> String {
    pg.psql(db_name(url), sql)
}

fn faults_run(seconds: u64, clients: u64, backlog: usize) {
    let pg = Postgres::shared();
    let install = Install::new(pg);
    let url = &install.database_url;
    // Conversions: a registry with the input image, and two workers (the replicas convert
    // nothing); a 3 s lease, so that a killed worker's job is taken over within seconds.
    let job_env = Arc::new(jobs::JobEnv::new());
    let mut workers: Vec<Replica> = (0..2)
        .map(|i| Replica::worker(&install, &format!("worker-{i}"), job_env.worker_args(3)))
        .collect();
    let http = http_client();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::new(&install, &format!("replica-{i}"), 8))
        .collect();
    // All three at once on the empty database: the migrations run once, under the lock.
    for r in replicas.iter_mut() {
        r.start();
    }
    for r in replicas.iter_mut() {
        r.wait_ready(&http);
    }
    let migrations = psql(
        pg,
        &install.database_url,
        "SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations",
    );
    let (all, distinct) = migrations.trim().split_once('|').unwrap();
    assert_eq!(all, distinct, "each migration applied once");
    let accounts = psql(pg, &install.database_url, "SELECT COUNT(*) FROM accounts");
    assert_eq!(
        accounts.trim(),
        "1",
        "one default account although three replicas bootstrapped"
    );

    for w in workers.iter_mut() {
        w.start();
    }
    let proxy = Haproxy::start(&replicas.iter().map(|r| r.port).collect::<Vec<_>>());
    let s = Arc::new(setup(&proxy.url()));
    let stop = Arc::new(AtomicBool::new(false));
    let jobs_acked = Arc::new(Mutex::new(jobs::JobsAcked::default()));
    let job_client = {
        let (s, stop, acked, env) = (s.clone(), stop.clone(), jobs_acked.clone(), job_env.clone());
        std::thread::spawn(move || jobs::job_loop(&s.admin, &env, backlog, &stop, &acked))
    };
    let acked = Arc::new(Mutex::new(Acked::default()));
    let sim = Arc::new(install.sim_key.clone());
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (s, stop, acked, sim) = (s.clone(), stop.clone(), acked.clone(), sim.clone());
            std::thread::spawn(move || client_loop(&s, &sim, i + 1, &stop, &acked))
        })
        .collect();

    // Faults: kill a random replica or worker at random times, restart it; restart
    // PostgreSQL once. Each kind happens at least once (replicas twice).
    let started = Instant::now();
    let mut kills = 0;
    let mut worker_kills = 0;
    let mut killed_under: Vec<(String, String)> = Vec::new();
    let mut pg_restarted = false;
    let mut rng = Xorshift(cloak_manager::now_ms() as u64 | 1);
    let wait_for = |min_builds: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().builds.len() < min_builds && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    while started.elapsed() < Duration::from_secs(seconds)
        || kills < 2
        || worker_kills < 1
        || !pg_restarted
    {
        let before = acked.lock().unwrap().builds.len();
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 900));
        let overtime = started.elapsed() >= Duration::from_secs(seconds);
        let fault = match rng.next() % 4 {
            _ if overtime && !pg_restarted => Fault::Postgres,
            _ if overtime && worker_kills == 0 => Fault::Worker,
            3 if !pg_restarted => Fault::Postgres,
            2 => Fault::Worker,
            _ => Fault::Replica,
        };
        match fault {
            Fault::Postgres => {
                eprintln!(
                    "scale-out: {:?}: restarting PostgreSQL ({before} builds acknowledged)",
                    started.elapsed()
                );
                pg.restart();
                pg_restarted = true;
            }
            Fault::Replica => {
                let r = &mut replicas[(rng.next() % 3) as usize];
                eprintln!(
                    "scale-out: {:?}: SIGKILL {} ({before} builds acknowledged)",
                    started.elapsed(),
                    r.name
                );
                r.kill();
                kills += 1;
                std::thread::sleep(Duration::from_millis(rng.next() % 700));
                r.start();
                r.wait_ready(&http);
            }
            Fault::Worker => {
                let w = &mut workers[(rng.next() % 2) as usize];
                let ids = w.worker_ids();
                // Frozen at a moment it holds a job (one conversion at a time; the job load
                // keeps the queue full), so that the kill lands mid-conversion and the
                // takeover can be checked; killed idle if that moment does not come in 30 s.
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut held = None;
                while held.is_none() && Instant::now() < deadline {
                    w.signal("-STOP");
                    // Not twice under one job: its attempts are limited (3).
                    held = jobs::job_held_by(pg, url, &ids)
                        .filter(|(j, _)| killed_under.iter().all(|(k, _)| k != j));
                    if held.is_none() {
                        w.signal("-CONT");
                        std::thread::sleep(Duration::from_millis(20 + rng.next() % 100));
                    }
                }
                eprintln!(
                    "scale-out: {:?}: SIGKILL {} ({})",
                    started.elapsed(),
                    w.name,
                    held.as_ref()
                        .map_or("idle".to_string(), |(j, _)| format!("holding job {j}"))
                );
                w.kill();
                worker_kills += 1;
                killed_under.extend(held);
                std::thread::sleep(Duration::from_millis(rng.next() % 700));
                w.start();
            }
        }
        // Progress between faults, so each one lands on running load.
        wait_for(before + 3);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    job_client.join().unwrap();
    // The restarted workers drain the queue; the killed worker's job is taken over.
    jobs::wait_all_ended(pg, url);
    let a = acked.lock().unwrap();

    // Every acknowledged registration, approval and certificate is in the database.
    let db_builds: BTreeMap<String, (String, String, String)> = psql(
        pg,
        url,
        "SELECT build_id, task_id, status, measurement_key FROM builds",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            (f[1].to_string(), f[2].to_string(), f[3].to_string()),
        )
    })
    .collect();
    let missing: Vec<_> = a
        .builds
        .keys()
        .filter(|b| !db_builds.contains_key(*b))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged builds missing: {missing:?}"
    );
    let measurements: BTreeSet<&String> = db_builds.values().map(|(_, _, m)| m).collect();
    assert_eq!(
        measurements.len(),
        db_builds.len(),
        "a build registered twice"
    );
    let db_approvals: BTreeSet<(String, String)> = psql(
        pg,
        url,
        "SELECT task_id, user_id FROM approvals WHERE status = 'APPROVED'",
    )
    .lines()
    .map(|l| {
        let (t, u) = l.split_once('|').unwrap();
        (t.to_string(), u.to_string())
    })
    .collect();
    let lost: Vec<_> = a.approvals.difference(&db_approvals).collect();
    assert!(lost.is_empty(), "acknowledged approvals lost: {lost:?}");
    let issued: BTreeSet<String> = psql(
        pg,
        url,
        "SELECT certificate_id FROM certificates WHERE status = 'ISSUED'",
    )
    .lines()
    .map(str::to_string)
    .collect();
    let lost: Vec<_> = a.certificates.difference(&issued).collect();
    assert!(
        lost.is_empty(),
        "acknowledged certificates missing: {lost:?}"
    );
    // Quorums: a task is SUCCESS exactly when it has two approvals, never more; its build is
    // WHITELISTED exactly then.
    let tasks: BTreeMap<String, (String, u64)> = psql(
        pg,
        url,
        "SELECT t.task_id, t.status, (SELECT COUNT(*) FROM approvals a WHERE a.task_id = t.task_id AND a.status = 'APPROVED') FROM tasks t",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].to_string(), (f[1].to_string(), f[2].parse().unwrap()))
    })
    .collect();
    let mut success = 0;
    for (build, (task, status, _)) in &db_builds {
        let (t_status, count) = &tasks[task];
        assert!(
            *count <= 2,
            "task {task}: {count} approvals counted for a quorum of 2"
        );
        assert_eq!(
            t_status == "SUCCESS",
            *count == 2,
            "task {task}: {t_status} with {count} approvals"
        );
        assert_eq!(
            status == "WHITELISTED",
            t_status == "SUCCESS",
            "build {build}: {status}, task {t_status}"
        );
        success += u64::from(*count == 2);
    }
    assert_eq!(tasks.len(), db_builds.len(), "one task per build");
    let not_whitelisted = psql(
        pg,
        url,
        "SELECT COUNT(*) FROM certificates c JOIN builds b ON b.build_id = c.build_id WHERE c.status = 'ISSUED' AND b.status <> 'WHITELISTED'",
    );
    assert_eq!(
        not_whitelisted.trim(),
        "0",
        "certificates only for whitelisted builds"
    );
    let reused = psql(pg, url, "SELECT COUNT(*) FROM (SELECT request_id FROM certificates GROUP BY request_id HAVING COUNT(*) > 1) d");
    assert_eq!(reused.trim(), "0", "one record per certificate request");
    let j = jobs::check(
        pg,
        url,
        &job_env,
        &jobs_acked.lock().unwrap(),
        &killed_under,
    );
    drop(proxy);
    for r in replicas.iter_mut().chain(workers.iter_mut()) {
        r.kill();
    }
    let verify = Command::new(cloak_bin())
        .args(["manager", "audit", "verify"])
        .args(install.store_args(&install.dir.path().join("verify")))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("verified"),
        "audit verify: {report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    println!(
        "scale-out: {}s, {clients} clients + 1 job client, 3 replicas behind HAProxy, 2 workers; {kills} replica SIGKILLs, \
         {worker_kills} worker SIGKILLs ({} mid-conversion), 1 PostgreSQL restart\n\
         scale-out: requests sent {}, without a 2xx answer {} (killed replica, database restart)\n\
         scale-out: checked {} acknowledged builds present (database holds {}, no measurement twice), \
         {} acknowledged approvals present, {} tasks with exactly 2 approvals = SUCCESS = WHITELISTED builds, \
         {} acknowledged certificates ISSUED ({} issued in all, none for a non-whitelisted build), {} reads\n\
         scale-out: jobs: {} requests (submissions, cancels), {} without a 2xx answer; checked {} acknowledged jobs present as submitted \
         (database holds {}), every one ended once: {} SUCCEEDED (one SUCCEEDED attempt, one build, the output tagged), \
         {} FAILED and {} CANCELLED (no build, no tag); {} attempts, {} taken over after a lease expired, {} retried\n\
         scale-out: audit verify: {}",
        started.elapsed().as_secs(),
        killed_under.len(),
        a.sent,
        a.failed,
        a.builds.len(),
        db_builds.len(),
        a.approvals.len(),
        success,
        a.certificates.len(),
        issued.len(),
        a.reads,
        j.sent,
        j.failed,
        j.acked,
        j.in_db,
        j.succeeded,
        j.failed_jobs,
        j.cancelled,
        j.attempts,
        j.taken_over,
        j.retried,
        report.trim().replace('\n', "; ")
    );
}

/// One fault of the scale-out run.
enum Fault {
    Replica,
    Worker,
    Postgres,
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn replicas_killed_and_a_database_restart_lose_no_acknowledged_request() {
    match std::env::var("CLOAK_SCALE_OUT").as_deref() {
        Ok("bench") => bench::run(),
        Ok("full") => faults_run(
            std::env::var("CLOAK_SCALE_OUT_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(120),
            8,
            4,
        ),
        _ => faults_run(8, 3, 3),
    }
}

// The load benchmark (CLOAK_SCALE_OUT=bench).
#[path = "scale_out/bench.rs"]
mod bench;
