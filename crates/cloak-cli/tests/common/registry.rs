//! A real registry process (Debian's `docker-registry`) on a loopback port chosen at run time.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// TLS + htpasswd credentials of a secured registry.
pub struct Secured {
    pub user: String,
    pub password: String,
}

/// A running registry, killed on drop.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    secured: Option<Secured>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::start(None)
    }

    /// HTTPS with a CA generated now, and htpasswd (bcrypt) auth for `user`.
    pub fn tls_htpasswd(user: &str, password: &str) -> Self {
        Self::start(Some(Secured {
            user: user.into(),
            password: password.into(),
        }))
    }

    fn start(secured: Option<Secured>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut extra = String::new();
        if let Some(s) = &secured {
            let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d));
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=cloak test CA",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]);
            std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ]);
            let out = Command::new("htpasswd")
                .args(["-Bbn", &s.user, &s.password])
                .output()
                .expect("htpasswd (apache2-utils) is installed");
            std::fs::write(d.join("htpasswd"), out.stdout).unwrap();
            std::fs::create_dir_all(d.join("certs")).unwrap();
            std::fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).unwrap();
            std::fs::create_dir_all(d.join("docker")).unwrap();
            extra = format!(
                "  tls:\n    certificate: {0}/srv.crt\n    key: {0}/srv.key\nauth:\n  htpasswd:\n    realm: cloak\n    path: {0}/htpasswd\n",
                d.display()
            );
        }
        let mut reg = Registry {
            dir,
            port: 0,
            child: None,
            secured,
        };
        reg.port = free_port();
        reg.write_config(&extra);
        reg.spawn();
        if let Some(s) = &reg.secured {
            let cfg = format!(
                r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
                reg.addr(),
                base64_encode(format!("{}:{}", s.user, s.password).as_bytes())
            );
            std::fs::write(reg.dir.path().join("docker/config.json"), cfg).unwrap();
        }
        reg
    }

    fn write_config(&self, extra: &str) {
        let d = self.dir.path();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{extra}",
            d.display(),
            self.port
        );
        std::fs::write(d.join("config.yml"), cfg).unwrap();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (run scripts/install-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Directory with `ca.crt` (secured registries only).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Directory with a docker `config.json` holding the credentials (secured registries only).
    pub fn docker_config_dir(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    /// Where the registry stores repositories.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kill the process (SIGKILL), as a crash would.
    /// Sends `sig` (`-STOP`, `-CONT`…) to the registry process: a frozen registry accepts
    /// connections (the kernel's backlog) and answers nothing.
    pub fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("the registry is running");
        let st = std::process::Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill {sig} the registry");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every blob in the registry's storage (layers, configs and manifests alike), as
    /// `sha256:<hex>`, read from its file system rather than asked over HTTP: a blob pushed
    /// without a tag, or an upload left behind, is found too.
    pub fn stored_blobs(&self) -> std::collections::BTreeSet<String> {
        let root = self.storage().join("docker/registry/v2/blobs/sha256");
        let mut out = std::collections::BTreeSet::new();
        for prefix in std::fs::read_dir(&root).into_iter().flatten() {
            for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
                let blob = blob.unwrap().path();
                if blob.join("data").is_file() {
                    let hex = blob.file_name().unwrap().to_string_lossy().to_string();
                    out.insert(format!("sha256:{hex}"));
                }
            }
        }
        out
    }

    /// Every repository the registry's storage knows, with a manifest, a layer link or an
    /// upload in progress (`nitro/encrypted`, …), read from its file system.
    pub fn stored_repositories(&self) -> std::collections::BTreeSet<String> {
        fn walk(dir: &Path, name: &str, out: &mut std::collections::BTreeSet<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let e = e.unwrap();
                let file = e.file_name().to_string_lossy().to_string();
                if ["_manifests", "_layers", "_uploads"].contains(&file.as_str()) {
                    out.insert(name.to_string());
                } else if e.file_type().unwrap().is_dir() {
                    let sub = if name.is_empty() {
                        file
                    } else {
                        format!("{name}/{file}")
                    };
                    walk(&e.path(), &sub, out);
                }
            }
        }
        let mut out = std::collections::BTreeSet::new();
        walk(
            &self.storage().join("docker/registry/v2/repositories"),
            "",
            &mut out,
        );
        out
    }

    /// Whether `repo:tag` resolves to a manifest (asked with skopeo, an independent client).
    pub fn has_tag(&self, repo_tag: &str) -> bool {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").arg("--raw");
        if self.secured.is_some() {
            cmd.arg("--cert-dir")
                .arg(self.cert_dir())
                .arg("--authfile")
                .arg(self.docker_config_dir().join("config.json"));
        } else {
            cmd.arg("--tls-verify=false");
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.addr()));
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
