//! What an operator sets up once for conversions through the manager: a TLS + htpasswd
//! registry holding the test images, a Gramine runtime image, an SGX signing key, the Nitro
//! kernel; and the `serve`/`worker` flags that point at them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::images::gramine_runtime;
use super::manager::{Backend, Manager};
use super::registry::Registry;
use super::{cloak, ok};

pub struct Operator {
    pub reg: Registry,
    pub tmp: tempfile::TempDir,
    pub runtime: PathBuf,
    pub key: PathBuf,
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kernel Nitro conversions boot (fetched by scripts/fetch-kernel.sh if missing).
pub fn kernel() -> PathBuf {
    let k = workspace().join(".work/kernel/vmlinuz");
    if !k.exists() {
        ok(Command::new("bash").arg(workspace().join("scripts/fetch-kernel.sh")));
    }
    k
}

impl Operator {
    /// A registry whose only account is `user`/`password`, a runtime image and a key.
    pub fn new(user: &str, password: &str) -> Operator {
        let reg = Registry::tls_htpasswd(user, password);
        let tmp = tempfile::tempdir().unwrap();
        let runtime = gramine_runtime(&tmp.path().join("runtime"), true);
        let key = tmp.path().join("enclave-key.pem");
        ok(Command::new("openssl")
            .args(["genrsa", "-3", "-out"])
            .arg(&key)
            .arg("3072"));
        Operator {
            reg,
            tmp,
            runtime,
            key,
        }
    }

    /// Pushes an OCI layout's tag `1` to `name` in the registry; returns `host:port/name`.
    pub fn push(&self, layout: &Path, name: &str) -> String {
        let image = format!("{}/{name}", self.reg.addr());
        ok(cloak()
            .env("DOCKER_CONFIG", self.reg.docker_config_dir())
            .args(["copy", "--dest-cert-dir"])
            .arg(self.reg.cert_dir())
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{image}")));
        image
    }

    /// The operator's flags of a manager or worker converting against this registry (`ca`:
    /// another registry CA bundle than this registry's).
    pub fn operator_args(&self, ca: Option<&str>) -> Vec<String> {
        let mut a = self.keyless_args(ca);
        a.push("--sgx-signing-key".into());
        a.push(format!("file:{}", self.key.display()));
        a
    }

    /// The operator's flags without a signing key (the account keys sign).
    pub fn keyless_args(&self, ca: Option<&str>) -> Vec<String> {
        let ca = ca
            .map(String::from)
            .unwrap_or_else(|| self.reg.cert_dir().join("ca.crt").display().to_string());
        vec![
            "--sgx-runtime-image".into(),
            format!("oci:{}:1", self.runtime.display()),
            "--registry-ca".into(),
            ca,
            "--nitro-kernel".into(),
            kernel().display().to_string(),
            // The test registry is on loopback, which the address policy refuses unless listed.
            "--allow-private-registry".into(),
            self.reg.addr(),
        ]
    }

    pub fn manager(&self, backend: Backend, extra: &[&str]) -> Manager {
        self.manager_with_ca(backend, None, extra)
    }

    pub fn manager_with_ca(&self, backend: Backend, ca: Option<&str>, extra: &[&str]) -> Manager {
        let mut args = self.operator_args(ca);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Manager::start_with(backend, &args)
    }
}
