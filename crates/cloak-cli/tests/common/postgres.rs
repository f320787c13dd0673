//! A real PostgreSQL server (Debian's), started once per test binary: `initdb` into a temporary
//! directory owned by `postgres`, `pg_ctl` on a loopback port chosen at run time. A watchdog
//! shell stops it when the test process exits. Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The shared server of this test binary.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/install-deps.sh")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/install-deps.sh")
}

fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

fn check(mut c: Command) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// The server of this test binary (started on first use).
    pub fn shared() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    fn start() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("cloak-pg-")
            .tempdir()
            .unwrap()
            .keep();
        check({
            let mut c = Command::new("chown");
            c.args(["postgres:postgres"]).arg(&dir);
            c
        });
        let data = dir.join("data");
        check(as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            dir.display()
        );
        let log = dir.join("server.log");
        check(as_postgres(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]));
        // Stop the server (and remove its files) when this test process ends.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display()
        );
        // Deliberately never waited for: it must outlive this process.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("watchdog");
        Postgres { port, dir, bin }
    }

    /// A fresh, empty database; returns its URL.
    pub fn database(&self) -> String {
        let name = format!("t_{}", uuid_like());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL with `psql` (a real client), returning its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        check(as_postgres(&[
            self.bin.join("psql").to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-c",
            sql,
        ]))
    }

    /// `pg_dump` of a database, as text.
    pub fn dump(&self, db: &str) -> String {
        check(as_postgres(&[
            self.bin.join("pg_dump").to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            db,
        ]))
    }

    /// Restarts the server (fast shutdown), keeping its data.
    pub fn restart(&self) {
        // With its log file: a server started without one inherits this command's stdout
        // pipe, and `output()` would wait for it to end.
        check(as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-l",
            self.dir.join("server.log").to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "restart",
        ]));
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

/// The database name of a URL made by [`Postgres::database`].
pub fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}
