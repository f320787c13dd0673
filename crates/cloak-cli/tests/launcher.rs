//! The launcher's half of attestation against a real manager (in-process, on a real loopback
//! port, SQLite, simulated attestation allowed): SGX without hardware, in exec mode, with a
//! test evidence source that writes and reads a fake `/dev/attestation` tree (Gramine's
//! protocol) and hands the manager simulated evidence for the same key and nonce; and the
//! manager's app configs released over mutual TLS, checked with curl as an independent client.
//!
//! The launcher runs as a library call (`cloak_launcher::launch`) with a `Sys` whose `exec`
//! records instead of replacing the test process; everything between the run configuration and
//! exec is the launcher's real code (key generation, HTTPS pinned to the CA, files, configs).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cloak_api::{App, Build, Client, Task};
use cloak_attest::simulated::SimulationSigningKey;
use cloak_launcher::provision::evidence::{
    AttestationDir, AttestationFs, EvidenceSource, Gramine, Simulated,
};
use cloak_launcher::provision::{self, Client as ManagerClient, Failure, Target};
use cloak_launcher::{CertSpec, KeySpec, ManagerConfig, RunConfig, Sys};
use cloak_manager::config::Settings;
use cloak_manager::Config;
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-password-for-tests-1";
const SECRET: &str = "s3cret-db-password-7f1c";
const MOUNT_KEY: &str = "00112233445566778899aabbccddeeff";

#[derive(Debug)]
struct WallClock;

impl cloak_manager::Clock for WallClock {
    fn now(&self) -> i64 {
        cloak_manager::now()
    }
}

struct Server {
    url: String,
    /// The manager's TLS certificate (what images pin with --manager-ca).
    tls_ca: String,
    dir: tempfile::TempDir,
    db: PathBuf,
    sim_key_pem: String,
}

impl Server {
    fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), true)
    }

    /// A second manager on this one's database (this one keeps running), simulated
    /// attestation off: what an operator restarting without --allow-simulated-attestation runs.
    fn without_simulation(self) -> Server {
        Server::start_in(self.dir, false)
    }

    /// A manager on the data dir in `dir` (made on first use).
    fn start_in(dir: tempfile::TempDir, simulated: bool) -> Server {
        let data = dir.path().join("data");
        let pw = dir.path().join("admin-password");
        std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sim_key = SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap();
        let sim_pub = dir.path().join("simulation.pub");
        std::fs::write(&sim_pub, sim_key.public_sec1()).unwrap();
        let settings = Settings {
            data_dir: Some(data.clone()),
            admin_user: Some("admin".into()),
            admin_password_file: Some(pw),
            allow_simulated_attestation: Some(simulated),
            simulation_public_key: simulated.then_some(sim_pub),
            ..Default::default()
        };
        let config = Config::resolve(settings).unwrap();
        config.prepare_data_dir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = rt
            .block_on(cloak_manager::server::prepare(
                config.clone(),
                Arc::new(WallClock),
            ))
            .unwrap();
        let (tls, _) = rt
            .block_on(cloak_manager::server::tls_config_with_client_auth(
                &config, &state,
            ))
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            rt.block_on(cloak_manager::server::serve(
                state,
                listener,
                Some(tls),
                std::future::pending(),
            ))
        });
        let db = data.join("manager.db");
        Server {
            url: format!("https://{addr}"),
            tls_ca: std::fs::read_to_string(config.data_dir.join("tls.crt")).unwrap(),
            dir,
            db,
            sim_key_pem: kp.serialize_pem(),
        }
    }

    fn admin(&self) -> Client {
        let mut c = Client::new(&self.url, Some(self.tls_ca.as_bytes())).unwrap();
        c.login("admin", ADMIN_PASSWORD).unwrap();
        c
    }
}

fn approve(admin: &Client, build: &Build) {
    let t: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    assert_eq!(t.status.status, "SUCCESS");
}

/// Records every access to the attestation tree, in order, and delegates to the directory.
struct Recording {
    dir: AttestationDir,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl AttestationFs for Recording {
    fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.log.lock().unwrap().push(format!("write {name}"));
        self.dir.write(name, data)
    }
    fn read(&mut self, name: &str) -> std::io::Result<Vec<u8>> {
        self.log.lock().unwrap().push(format!("read {name}"));
        self.dir.read(name)
    }
}

/// The test evidence source: Gramine's protocol on the fake tree (REPORTDATA written, then the
/// quote read; encrypted-mount keys written to keys/<name>), and simulated evidence for the
/// same key and nonce for the manager (which cannot verify the fake quote).
struct FakeSgx {
    gramine: Gramine<Recording>,
    sim: Simulated,
    tree: PathBuf,
    bindings: Vec<(Vec<u8>, [u8; 64])>,
}

impl EvidenceSource for FakeSgx {
    fn name(&self) -> String {
        "fake /dev/attestation".into()
    }
    fn evidence(&mut self, spki: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        let quote = self.gramine.evidence(spki, nonce)?;
        assert_eq!(quote, b"FAKE-QUOTE");
        let rd: [u8; 64] = std::fs::read(self.tree.join("user_report_data"))
            .unwrap()
            .try_into()
            .unwrap();
        self.bindings.push((spki.to_vec(), rd));
        self.sim.evidence(spki, nonce)
    }
    fn install_mount_key(&mut self, name: &str, key: &[u8; 16]) -> Result<(), String> {
        self.gramine.install_mount_key(name, key)
    }
}

/// The launcher's system with a recorded exec, provisioning through `source`.
struct TestSys {
    root: PathBuf,
    client: ManagerClient,
    source: FakeSgx,
    calls: Vec<String>,
    /// At exec: was the encrypted-mount key in the tree, and the certificate in place?
    at_exec: Option<(bool, bool)>,
}

impl Sys for TestSys {
    fn read(&mut self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/')))
    }
    fn chdir(&mut self, dir: &str) -> std::io::Result<()> {
        self.calls.push(format!("chdir {dir}"));
        Ok(())
    }
    fn set_ids(&mut self, uid: u32, gid: u32, _: &[u32]) -> std::io::Result<()> {
        self.calls.push(format!("ids {uid}:{gid}"));
        Ok(())
    }
    fn exec(&mut self, argv: &[String], env: &[String]) -> std::io::Error {
        self.calls.push(format!("exec {argv:?} {env:?}"));
        self.at_exec = Some((
            self.source.tree.join("keys/default").exists(),
            self.root.join("appcert.pem").exists(),
        ));
        std::io::Error::other("recorded")
    }
    fn provision(
        &mut self,
        manager: &ManagerConfig,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<String>, Failure> {
        self.calls.push("provision".into());
        let target = Target::new(self.root.clone(), owner);
        provision::provision(manager, &self.client, &mut self.source, &target).map(|(i, _)| i.env)
    }
}

const MRENCLAVE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const MRSIGNER: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

fn new_app(admin: &Client, name: &str) -> App {
    admin
        .post(
            "/v1/apps",
            &json!({"name": name, "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap()
}

/// `POST /v1/app_configs` with `body`.
fn add_config(admin: &Client, body: Value) {
    let _: Value = admin.post("/v1/app_configs", &body).unwrap();
}

fn register(admin: &Client, app: &App, mrenclave: &str) -> Build {
    admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": mrenclave[..8]},
                    "attributes": {"sgx": {"mrenclave": mrenclave, "mrsigner": MRSIGNER, "isvprodid": 1, "isvsvn": 1}},
                    "advanced_settings": {"certificates": [{"issuer": "MANAGER_CA", "subject": "SGX-Application"}]}}),
        )
        .unwrap()
}

/// An image root with run.json (the seed's certificate), a fake attestation tree, a launcher
/// system for it. `ca` is what the image pins.
fn image(s: &Server, app: &App, mrenclave: &str, ca: &str, name: &str) -> TestSys {
    let root = s.dir.path().join(name);
    let tree = s.dir.path().join(format!("{name}-attestation"));
    std::fs::create_dir_all(root.join("cloak")).unwrap();
    std::fs::create_dir_all(tree.join("keys")).unwrap();
    std::fs::write(tree.join("user_report_data"), []).unwrap();
    std::fs::write(tree.join("quote"), "FAKE-QUOTE").unwrap();
    std::fs::write(tree.join("keys/default"), []).unwrap();
    let manager = ManagerConfig {
        url: s.url.clone(),
        ca_pem: ca.into(),
        app_id: app.app_id.clone(),
        certificates: vec![CertSpec {
            subject: "SGX-Application".into(),
            key: KeySpec::Rsa { bits: 2048 },
            key_path: "/appkey.pem".into(),
            cert_path: "/appcert.pem".into(),
            chain_path: None,
        }],
        allow_simulated: true,
        retry_seconds: 2,
        vsock_port: None,
        add_ca_to_trust_store: false,
        renew_before_seconds: 0,
    };
    let run = RunConfig {
        argv: vec!["/bin/app".into()],
        env: vec!["PATH=/bin".into()],
        mutable_env: vec![],
        workdir: "/".into(),
        user: String::new(),
        allow_cmdline_args: false,
        manager: Some(manager.clone()),
    };
    std::fs::write(
        root.join("cloak/run.json"),
        serde_json::to_string(&run).unwrap(),
    )
    .unwrap();
    let sim_dir = s.dir.path().join(format!("{name}-sim"));
    std::fs::create_dir_all(&sim_dir).unwrap();
    std::fs::write(sim_dir.join("key.pem"), &s.sim_key_pem).unwrap();
    std::fs::write(
        sim_dir.join("measurements.json"),
        json!({"mrenclave": mrenclave, "mrsigner": MRSIGNER, "isvprodid": 1, "isvsvn": 1})
            .to_string(),
    )
    .unwrap();
    TestSys {
        client: ManagerClient::new(&manager, None).unwrap(),
        source: FakeSgx {
            gramine: Gramine {
                fs: Recording {
                    dir: AttestationDir(tree.clone()),
                    log: Default::default(),
                },
            },
            sim: Simulated::from_dir(&sim_dir).unwrap(),
            tree,
            bindings: Vec::new(),
        },
        root,
        calls: Vec::new(),
        at_exec: None,
    }
}

/// GET /v1/runtime/app_configs with curl, optionally authenticated by `cert_dir`'s files.
fn curl_configs(s: &Server, client: Option<&Path>) -> (u16, Value) {
    let ca = s.dir.path().join("manager-tls.pem");
    std::fs::write(&ca, &s.tls_ca).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca);
    if let Some(d) = client {
        cmd.arg("--cert").arg(d.join("client-chain.pem"));
        cmd.arg("--key").arg(d.join("appkey.pem"));
    }
    let out = cmd
        .arg(format!("{}/v1/runtime/app_configs", s.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The leaf the launcher installed plus the manager's chain, for curl's --cert.
fn client_chain(s: &Server, root: &Path) {
    let chain: Value = Client::new(&s.url, Some(s.tls_ca.as_bytes()))
        .unwrap()
        .get("/v1/ca")
        .unwrap();
    let leaf = std::fs::read_to_string(root.join("appcert.pem")).unwrap();
    std::fs::write(
        root.join("client-chain.pem"),
        format!("{leaf}{}", chain["chain"].as_str().unwrap()),
    )
    .unwrap();
}

#[test]
fn sgx_exec_mode_attests_installs_key_cert_configs_and_mount_key_before_the_app() {
    let s = Server::start();
    let admin = s.admin();
    let app = new_app(&admin, "sgx-app");
    let build = register(&admin, &app, MRENCLAVE);
    add_config(
        &admin,
        json!({"name": "db", "description": "database access", "app_id": app.app_id,
                    "app_config": {"/etc/app/db.conf": {"contents": format!("password={SECRET}\n")},
                                   "env:APP_MODE": {"contents": "production"},
                                   "sgx-key:default": {"contents": MOUNT_KEY}}}),
    );

    // Before approval: the app does not start; the reason is the manager's.
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "pending");
    let err = cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    let text = err.to_string();
    assert!(
        text.contains("not whitelisted (not_whitelisted)") && text.contains("PENDING"),
        "{text}"
    );
    assert!(text.contains("the application is not started"), "{text}");
    assert_eq!(err.exit_status(), provision::EXIT_REFUSED);
    assert_eq!(sys.calls, ["provision"], "nothing of the app ran");
    assert!(!sys.root.join("appkey.pem").exists());

    approve(&admin, &build);
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "approved");
    cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    // Order: attestation before the app's working directory, user and exec.
    assert_eq!(sys.calls[0], "provision");
    assert!(
        sys.calls.last().unwrap().starts_with("exec [\"/bin/app\"]"),
        "{:?}",
        sys.calls
    );
    assert!(
        sys.calls
            .last()
            .unwrap()
            .contains("\"APP_MODE=production\""),
        "{:?}",
        sys.calls
    );
    assert_eq!(
        sys.at_exec,
        Some((true, true)),
        "mount key and certificate before exec"
    );
    // Gramine's protocol: user_report_data before quote; the binding is SHA-256(SPKI) ‖ SHA-256(nonce).
    let log = sys.source.gramine.fs.log.lock().unwrap().clone();
    assert_eq!(
        log,
        ["write user_report_data", "read quote", "write keys/default"]
    );
    let (spki, rd) = &sys.source.bindings[0];
    use sha2::Digest;
    assert_eq!(&rd[..32], sha2::Sha256::digest(spki).as_slice());
    assert_eq!(
        std::fs::read(sys.source.tree.join("keys/default")).unwrap(),
        hex::decode(MOUNT_KEY).unwrap()
    );
    // Files and modes; chainPath "none" is not written.
    let mode = |p: &str| {
        std::fs::metadata(sys.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("appkey.pem"), 0o600);
    assert_eq!(mode("appcert.pem"), 0o644);
    assert_eq!(mode("etc/app/db.conf"), 0o600);
    assert_eq!(
        std::fs::read_to_string(sys.root.join("etc/app/db.conf")).unwrap(),
        format!("password={SECRET}\n")
    );
    let listing: Vec<String> = std::fs::read_dir(&sys.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !listing
            .iter()
            .any(|n| n.contains("chain") || n.contains("cloak-tmp")),
        "{listing:?}"
    );
    // The certificate is for the installed key and the seed's subject (openssl as the judge).
    let cert_pub = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-subject", "-in"])
        .arg(sys.root.join("appcert.pem"))
        .output()
        .unwrap();
    let key_pub = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(sys.root.join("appkey.pem"))
        .output()
        .unwrap();
    let cert_out = String::from_utf8_lossy(&cert_pub.stdout);
    assert!(
        cert_out.contains(&*String::from_utf8_lossy(&key_pub.stdout)),
        "{cert_out}"
    );
    assert!(cert_out.contains("CN = SGX-Application"), "{cert_out}");

    // App configs over mutual TLS (curl as the client).
    client_chain(&s, &sys.root);
    let (code, body) = curl_configs(&s, Some(&sys.root));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["config"]["app_config"]["env:APP_MODE"]["contents"],
        "production"
    );
    let (code, body) = curl_configs(&s, None);
    assert_eq!(
        (code, body["type"].as_str()),
        (401, Some("client_certificate_required")),
        "{body}"
    );

    // Another build of the app: its own config is not released to the first build's
    // certificate, and the first build's certificate does not get it.
    let other = register(&admin, &app, &"c3".repeat(32));
    approve(&admin, &other);
    add_config(
        &admin,
        json!({"name": "other-only", "build_id": other.build_id,
                    "app_config": {"env:OTHER_ONLY": {"contents": "for the other build"}}}),
    );
    let (code, body) = curl_configs(&s, Some(&sys.root));
    assert_eq!(code, 200);
    assert!(
        body["config"]["app_config"].get("env:OTHER_ONLY").is_none(),
        "{body}"
    );
    let mut sys2 = image(&s, &app, &"c3".repeat(32), &s.tls_ca, "other");
    cloak_launcher::launch(&mut sys2, &BTreeMap::new(), &[]);
    client_chain(&s, &sys2.root);
    let (_, body) = curl_configs(&s, Some(&sys2.root));
    assert_eq!(
        body["config"]["app_config"]["env:OTHER_ONLY"]["contents"],
        "for the other build"
    );

    // Operators see entry names, never values; the database holds no plaintext.
    let listed: Value = admin
        .get(&format!("/v1/app_configs?app_id={}", app.app_id))
        .unwrap();
    assert!(
        !listed.to_string().contains(SECRET) && listed.to_string().contains("/etc/app/db.conf"),
        "{listed}"
    );
    let dump = Command::new("sqlite3")
        .arg(&s.db)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(
        dump.status.success() && dump.stdout.len() > 1000,
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("app_configs") && !dump.contains(SECRET) && !dump.contains(MOUNT_KEY));
    let audit: Value = admin.get("/v1/audit").unwrap();
    assert!(audit.to_string().contains("App Config Created"));
    assert!(audit
        .to_string()
        .contains("App Config Released to Application"));
    assert!(!audit.to_string().contains(SECRET));

    // After revocation: no configs for that certificate, and a new boot is refused.
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", build.build_id),
            &json!({"reason": "test revocation"}),
        )
        .unwrap();
    let (code, body) = curl_configs(&s, Some(&sys.root));
    assert_eq!(
        (code, body["type"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "revoked");
    let err = cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    assert!(err.to_string().contains("(revoked)"), "{err}");
    assert_eq!(sys.calls, ["provision"]);
}

/// A certificate stays valid for its lifetime, but the secrets it unlocks follow the policy of
/// now: once the manager stops accepting simulated evidence, a certificate issued for
/// simulated evidence gets no configs (nor would a debug or TCB status the app's policy no
/// longer accepts), and the CRL lists it.
#[test]
fn configs_follow_the_evidence_policy_of_now_not_of_issuance() {
    let s = Server::start();
    let admin = s.admin();
    let app = new_app(&admin, "sim-app");
    let build = register(&admin, &app, MRENCLAVE);
    approve(&admin, &build);
    add_config(
        &admin,
        json!({"name": "db", "app_id": app.app_id,
                    "app_config": {"env:DB_PASSWORD": {"contents": SECRET}}}),
    );
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "simulated");
    cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    assert!(sys.root.join("appcert.pem").exists(), "{:?}", sys.calls);
    client_chain(&s, &sys.root);
    let (code, body) = curl_configs(&s, Some(&sys.root));
    assert_eq!(code, 200, "{body}");

    let crl_lists_the_leaf = |s: &Server| -> bool {
        let crl = s.dir.path().join("crl.pem");
        let out = Command::new("curl")
            .args(["-sSf", "-H", "Accept: application/x-pem-file", "--cacert"])
            .arg(s.dir.path().join("manager-tls.pem"))
            .arg("-o")
            .arg(&crl)
            .arg(format!("{}/v1/ca/crl", s.url))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let leaf = sys.root.join("appcert.pem");
        let serial = text(&["x509", "-in", leaf.to_str().unwrap(), "-noout", "-serial"]);
        let serial = serial
            .trim()
            .strip_prefix("serial=")
            .unwrap()
            .to_ascii_uppercase();
        text(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"])
            .contains(&format!("Serial Number: {serial}"))
    };
    assert!(!crl_lists_the_leaf(&s));

    let s = s.without_simulation();
    let (code, body) = curl_configs(&s, Some(&sys.root));
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["type"], "simulation_not_allowed", "{body}");
    assert!(!body.to_string().contains(SECRET));
    // And relying parties other than the manager learn it from the CRL.
    assert!(crl_lists_the_leaf(&s));
}

#[test]
fn a_manager_without_the_pinned_ca_is_refused_before_any_key_material_is_sent() {
    let s = Server::start();
    let admin = s.admin();
    let app = new_app(&admin, "sgx-app");
    approve(&admin, &register(&admin, &app, MRENCLAVE));
    // Another manager's CA (same host names).
    let other =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let mut sys = image(&s, &app, MRENCLAVE, &other.cert.pem(), "pinned");
    let err = cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    let text = err.to_string();
    assert!(text.contains("(tls)") && text.contains("pinned"), "{text}");
    assert_eq!(err.exit_status(), provision::EXIT_UNREACHABLE);
    // No evidence was produced (so no key was bound or sent) and the manager recorded nothing.
    assert!(sys.source.bindings.is_empty());
    assert!(sys.source.gramine.fs.log.lock().unwrap().is_empty());
    let n = Command::new("sqlite3")
        .arg(&s.db)
        .arg("SELECT count(*) FROM nonces; SELECT count(*) FROM certificates;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&n.stdout), "0\n0\n");
}

/// Renewal's clock: the wall clock, with waits replaced by `on_sleep` (the test acts there).
struct Steps<F: FnMut(usize, std::time::Duration)> {
    calls: usize,
    on_sleep: F,
}

impl<F: FnMut(usize, std::time::Duration)> provision::renew::Timer for Steps<F> {
    fn now(&mut self) -> i64 {
        cloak_manager::now()
    }
    fn sleep(&mut self, d: std::time::Duration) {
        self.calls += 1;
        (self.on_sleep)(self.calls, d)
    }
}

#[test]
fn sixty_second_certificates_are_renewed_atomically_until_the_build_is_revoked() {
    use std::os::unix::fs::MetadataExt;
    let s = Server::start();
    let admin = s.admin();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "short-lived", "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"validity_seconds": 60}}),
        )
        .unwrap();
    let build = register(&admin, &app, MRENCLAVE);
    approve(&admin, &build);
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "renewing");
    cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    assert!(
        sys.calls.last().unwrap().starts_with("exec"),
        "{:?}",
        sys.calls
    );
    let cert_path = sys.root.join("appcert.pem");
    let first = std::fs::read_to_string(&cert_path).unwrap();
    let first_inode = std::fs::metadata(&cert_path).unwrap().ino();
    let cfg: RunConfig =
        serde_json::from_str(&std::fs::read_to_string(sys.root.join("cloak/run.json")).unwrap())
            .unwrap();
    let manager = cfg.manager.unwrap();
    let target = Target::new(sys.root.clone(), None);
    let now = cloak_manager::now();
    let certs = vec![(manager.certificates[0].clone(), now, now + 60)];
    let mut waits = Vec::new();
    let mut renewed = Vec::new();
    let refusal = {
        let mut timer = Steps {
            calls: 0,
            on_sleep: |n: usize, d: std::time::Duration| {
                waits.push(d.as_secs());
                let text = std::fs::read_to_string(&cert_path).unwrap();
                renewed.push((text, std::fs::metadata(&cert_path).unwrap().ino()));
                // Before the second renewal is due, the build is revoked.
                if n == 2 {
                    let _: Build = admin
                        .post(
                            &format!("/v1/builds/{}/revoke", build.build_id),
                            &json!({"reason": "compromised"}),
                        )
                        .unwrap();
                }
            },
        };
        provision::renew::renew_until_refused(
            &manager,
            &sys.client,
            &mut sys.source,
            &target,
            certs,
            &mut timer,
        )
    };
    // Due when a third of the 60 s is left (the schedule, not a measured time).
    assert!(waits[0] <= 40 && waits[0] >= 35, "{waits:?}");
    assert_eq!(waits.len(), 2, "one renewal, then the refusal: {waits:?}");
    // The file seen at the second wait is the renewed certificate: replaced by rename (a new
    // inode, never a partly written file), for a new key that matches it.
    assert_eq!(renewed[0].0, first);
    assert_ne!(renewed[1].0, first);
    assert_ne!(renewed[1].1, first_inode);
    let cert_pub = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&cert_path)
        .output()
        .unwrap();
    let key_pub = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(sys.root.join("appkey.pem"))
        .output()
        .unwrap();
    assert_eq!(cert_pub.stdout, key_pub.stdout);
    assert_eq!(refusal.code, "revoked", "{refusal}");
    // Renewal stopped: the files are those of the last renewal.
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), renewed[1].0);
}

/// The launcher's own HTTPS client through `cloak proxy` to the manager, as on a Nitro parent:
/// nonce, certificate and the configs over mutual TLS all pass through the one-destination
/// forwarder. Its TCP mode: this kernel has no vsock loopback (tests/proxy.rs checks and says).
#[test]
fn the_launcher_provisions_through_cloak_proxy() {
    use std::io::Read;
    let s = Server::start();
    let admin = s.admin();
    let app = new_app(&admin, "proxied-app");
    let build = register(&admin, &app, MRENCLAVE);
    add_config(
        &admin,
        json!({"name": "mode", "app_id": app.app_id,
                    "app_config": {"env:APP_MODE": {"contents": "through-the-proxy"}}}),
    );
    approve(&admin, &build);
    let log = s.dir.path().join("proxy.log");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--to"])
        .arg(s.url.strip_prefix("https://").unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = Vec::new();
    let mut out = proxy.stdout.take().unwrap();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") && out.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("cloak proxy said {line:?}"))
        .to_string();

    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "proxied");
    let run: RunConfig =
        serde_json::from_slice(&std::fs::read(sys.root.join("cloak/run.json")).unwrap()).unwrap();
    sys.client = ManagerClient::new(
        run.manager.as_ref().unwrap(),
        Some(provision::http::Route::Tcp(addr)),
    )
    .unwrap();
    cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let last = sys.calls.last().unwrap().clone();
    assert!(last.starts_with("exec [\"/bin/app\"]"), "{:?}", sys.calls);
    assert!(last.contains("\"APP_MODE=through-the-proxy\""), "{last}");
    assert!(sys.root.join("appcert.pem").exists());
    // Nonce, certificate, configs: three connections, each forwarded to the manager.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("forwarding to").count(), 3, "{text}");
}

/// One account writer sets a config that would replace the approved image's program: the
/// launcher refuses it before the app starts, with the entry and the reason, and the program
/// stays the one that was measured.
#[test]
fn a_config_that_would_replace_the_images_code_stops_the_launch() {
    let s = Server::start();
    let admin = s.admin();
    let app = new_app(&admin, "guarded");
    let build = register(&admin, &app, MRENCLAVE);
    approve(&admin, &build);
    add_config(
        &admin,
        json!({"name": "evil", "description": "replaces the program", "app_id": app.app_id,
                    "app_config": {"/bin/app": {"contents": "#!/bin/sh\necho unapproved\n"}}}),
    );
    let mut sys = image(&s, &app, MRENCLAVE, &s.tls_ca, "guarded");
    std::fs::create_dir_all(sys.root.join("bin")).unwrap();
    std::fs::write(sys.root.join("bin/app"), "APPROVED").unwrap();
    let err = cloak_launcher::launch(&mut sys, &BTreeMap::new(), &[]);
    let text = err.to_string();
    assert!(
        text.contains("config \"/bin/app\" is refused")
            && text.contains("/bin holds the image's code")
            && text.contains("the application is not started"),
        "{text}"
    );
    assert_eq!(err.exit_status(), provision::EXIT_REFUSED);
    assert_eq!(sys.calls, ["provision"], "nothing of the app ran");
    assert_eq!(
        std::fs::read_to_string(sys.root.join("bin/app")).unwrap(),
        "APPROVED"
    );
}
