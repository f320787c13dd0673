//! A real `cloak manager serve` process on a loopback port chosen at run time (TLS with its
//! self-signed certificate), on SQLite in a temporary data dir or on a fresh PostgreSQL database.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloak_api::Client;

use super::postgres::Postgres;

/// The administrator's password in every test manager.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests-1";

/// Which database a test manager uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running manager, killed on drop.
pub struct Manager {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub database_url: Option<String>,
    pub backend: Backend,
    child: Option<Child>,
    extra: Vec<String>,
    log_no: usize,
}

impl Manager {
    /// Starts a manager on a new database of `backend`.
    pub fn start(backend: Backend) -> Manager {
        Manager::start_with(backend, &[])
    }

    /// Starts a manager with extra `serve` arguments.
    pub fn start_with(backend: Backend, extra: &[&str]) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Postgres::shared().database()),
        };
        let mut m = Manager {
            dir,
            url: String::new(),
            database_url,
            backend,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_no: 0,
        };
        m.spawn();
        m
    }

    /// Another replica of this installation: same PostgreSQL database, a copy of this data dir's
    /// keys (master key, audit key, TLS), its own process and port.
    pub fn replica(&self) -> Manager {
        assert!(
            matches!(self.backend, Backend::Postgres),
            "replicas share a PostgreSQL database"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        for e in std::fs::read_dir(self.data_dir()).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() && e.file_name() != "lock" {
                std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
            }
        }
        let mut m = Manager {
            dir,
            url: String::new(),
            database_url: self.database_url.clone(),
            backend: self.backend,
            child: None,
            extra: self.extra.clone(),
            log_no: 0,
        };
        m.spawn();
        m
    }

    /// Starts a manager on an existing data dir (`dir/data`) and database (e.g. a restored one).
    pub fn start_on(dir: tempfile::TempDir, database_url: Option<String>) -> Manager {
        let backend = match database_url {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        };
        let mut m = Manager {
            dir,
            url: String::new(),
            database_url,
            backend,
            child: None,
            extra: Vec::new(),
            log_no: 0,
        };
        m.spawn();
        m
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Arguments that select this manager's database for offline subcommands.
    pub fn store_args(&self) -> Vec<String> {
        let mut a = vec![
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
        ];
        if let Some(u) = &self.database_url {
            a.push("--database-url".into());
            a.push(u.clone());
        }
        a
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("manager-{n}.log"))
    }

    fn spawn(&mut self) {
        self.log_no += 1;
        let log = std::fs::File::create(self.log_path(self.log_no)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloak"));
        cmd.args([
            "manager",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-user",
            "admin",
        ])
        .args(self.store_args())
        .args(&self.extra)
        .env("CLOAK_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("CLOAK_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        self.child = Some(cmd.spawn().expect("cannot start cloak manager serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(self.log_path(self.log_no)).unwrap_or_default();
            if let Some(line) = text
                .lines()
                .find(|l| l.contains("cloak manager: listening on "))
            {
                self.url = line
                    .split("listening on ")
                    .nth(1)
                    .unwrap()
                    .trim()
                    .to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the manager exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the manager did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The self-signed CA certificate of this manager (PEM).
    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(self.data_dir().join("tls.crt")).unwrap()
    }

    /// An anonymous client.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(&self.ca())).unwrap()
    }

    /// A client logged in as `user`.
    pub fn login(&self, user: &str, password: &str) -> Client {
        let mut c = self.client();
        c.login(user, password)
            .unwrap_or_else(|e| panic!("login as {user}: {e}"));
        c
    }

    /// A client logged in as the administrator.
    pub fn admin(&self) -> Client {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// Everything the manager has logged so far (all runs).
    pub fn log(&self) -> String {
        (1..=self.log_no)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe { libc_kill(c.id() as i32, 15) };
        c.wait().unwrap()
    }

    /// Starts again on the same database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `cloak manager …` offline against this manager's database.
    pub fn offline(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloak"));
        cmd.arg("manager").args(args).args(self.store_args());
        cmd.output().unwrap()
    }

    /// Like [`Manager::offline`], with extra environment variables.
    pub fn offline_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloak"));
        cmd.arg("manager").args(args).args(self.store_args());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca()).unwrap()])
            // Below the manager's 10 s idle close, as cloak-api's client does.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// A raw request (any method, any body bytes); the status and the JSON answer.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.url),
            )
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        let v =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, v)
    }

    /// The text of a GET with a bearer token.
    pub fn raw_get(&self, path: &str, token: &str) -> String {
        self.http()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The text of an unauthenticated GET.
    pub fn raw_text(&self, path: &str) -> String {
        self.http()
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Runs SQL against this manager's database with a real client (sqlite3 or psql).
    pub fn sql(&self, sql: &str) -> String {
        match &self.database_url {
            None => {
                let out = Command::new("sqlite3")
                    .arg(self.data_dir().join("manager.db"))
                    .arg(sql)
                    .output()
                    .expect("sqlite3 (run scripts/install-deps.sh)");
                assert!(
                    out.status.success(),
                    "sqlite3: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Some(url) => Postgres::shared().psql(super::postgres::db_name(url), sql),
        }
    }

    /// Every byte the database holds, as a real dump tool or the raw files show it.
    pub fn raw_database(&self) -> Vec<u8> {
        match &self.database_url {
            None => {
                let mut all = Vec::new();
                for f in ["manager.db", "manager.db-wal", "manager.db-shm"] {
                    if let Ok(mut file) = std::fs::File::open(self.data_dir().join(f)) {
                        file.read_to_end(&mut all).unwrap();
                    }
                }
                all
            }
            Some(url) => Postgres::shared()
                .dump(super::postgres::db_name(url))
                .into_bytes(),
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A POST with headers and a bearer token, waiting up to 15 minutes (synchronous conversions);
/// the status, the headers and the JSON answer.
pub fn post(
    m: &Manager,
    token: &str,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&m.ca()).unwrap()])
        .timeout(std::time::Duration::from_secs(900))
        .build()
        .unwrap();
    let mut req = http
        .post(format!("{}{path}", m.url))
        .bearer_auth(token)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = resp.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, h, v)
}
