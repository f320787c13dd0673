//! End to end under qemu: a Nitro image converted with the manager's address and CA, booted by
//! `cloak run --target nitro` (TCG, the Debian cloud kernel) with simulated evidence, against a
//! real `cloak manager serve` on the host (SQLite, `--allow-simulated-attestation`) that the
//! guest reaches through qemu's user-mode network (10.0.2.2). The application is
//! `cloak-testapp` (static; busybox has no TLS): it serves HTTPS with the key and certificate
//! the launcher installed, and curl checks it through `--publish` against the manager's CA.
//! Three boots: before approval (refused, "not whitelisted" on the console), approved
//! (certificate, config file, environment variable, HTTPS), after revocation (refused).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloak_api::{App, Build, Client, Task};
use common::images::{tar, Comp, Layout, T};
use common::manager::{Backend, Manager, ADMIN_PASSWORD};
use common::{cloak, ok, run};
use serde_json::{json, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kernel() -> PathBuf {
    let k = workspace().join(".work/kernel/vmlinuz");
    if !k.exists() {
        ok(Command::new("bash").arg(workspace().join("scripts/fetch-kernel.sh")));
    }
    k
}

/// The static test application, built like the static launcher (glibc, crt-static).
fn testapp() -> PathBuf {
    let bin = workspace().join("target/x86_64-unknown-linux-gnu/release/cloak-testapp");
    ok(Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "cloak-testapp",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C debuginfo=0 -C strip=symbols",
        )
        .current_dir(workspace()));
    bin
}

const CONFIG_TEXT: &str = "db=postgres://enclave-config-4d2a";
const GREETING: &str = "hello-from-the-manager-91c3";

/// One `cloak run` of `eif`; its console goes to `console`.
fn boot(eif: &Path, sim_key: &Path, port: u16, console: &Path) -> std::process::Child {
    cloak()
        .args(["run", "--target", "nitro", "--timeout", "300", "--publish"])
        .arg(format!("{port}:8443"))
        .arg("--kernel-modules")
        .arg(workspace().join(".work/kernel/modules"))
        .arg("--simulation-key")
        .arg(sim_key)
        .arg(eif)
        .stdout(std::fs::File::create(console).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A boot the launcher refuses: the VM ends by itself with the launcher's status; the console.
fn refused_boot(eif: &Path, sim_key: &Path, dir: &Path, name: &str) -> (i32, String) {
    let console = dir.join(format!("{name}.console"));
    let status = boot(eif, sim_key, free_port(), &console).wait().unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&console).unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_attested_nitro_image_serves_https_with_its_issued_certificate_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The manager's TLS certificate names the address the guest uses (10.0.2.2, qemu's host)
    // and the one the test uses; the image pins it.
    let tls =
        rcgen::generate_simple_self_signed(vec!["10.0.2.2".into(), "127.0.0.1".into()]).unwrap();
    let tls_pem = tls.cert.pem();
    std::fs::write(dir.join("tls.crt"), &tls_pem).unwrap();
    std::fs::write(dir.join("tls.key"), tls.signing_key.serialize_pem()).unwrap();
    let sim = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("simulation.pem"), sim.serialize_pem()).unwrap();
    std::fs::write(dir.join("simulation.pub"), sim.public_key_pem()).unwrap();
    let manager = Manager::start_with(
        Backend::Sqlite,
        &[
            "--allow-simulated-attestation",
            "--simulation-public-key",
            dir.join("simulation.pub").to_str().unwrap(),
            "--tls-cert",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            dir.join("tls.key").to_str().unwrap(),
        ],
    );
    let port = manager.url.rsplit_once(':').unwrap().1.to_string();
    let mut admin = Client::new(&manager.url, Some(tls_pem.as_bytes())).unwrap();
    admin.login("admin", ADMIN_PASSWORD).unwrap();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "nitro-https", "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap();
    let _: Value = admin
        .post(
            "/v1/app_configs",
            &json!({"name": "web", "app_id": app.app_id,
                    "app_config": {"/etc/app/config.txt": {"contents": CONFIG_TEXT},
                                   "env:APP_GREETING": {"contents": GREETING}}}),
        )
        .unwrap();

    // The image: the test app as its entrypoint, converted with the manager's options.
    let bin = std::fs::read(testapp()).unwrap();
    let layer = tar(&[T::File("cloak-testapp", 0o755, 0, &bin)]);
    let oci = dir.join("oci");
    Layout::new(&oci).layer(Comp::Gzip, layer).finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/cloak-testapp", "/appkey.pem", "/appcert.pem", "/appchain.pem",
                              "0.0.0.0:8443", "/etc/app/config.txt", "APP_GREETING"]}),
    );
    let cert = json!({"issuer": "MANAGER_CA", "subject": "localhost", "keyType": "ec",
                      "keyParam": {"curve": "P-256"}, "keyPath": "/appkey.pem",
                      "certPath": "/appcert.pem", "chainPath": "/appchain.pem"});
    let eif = dir.join("app.eif");
    let out = ok(cloak()
        .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
        .arg(kernel())
        .arg("--eif")
        .arg(&eif)
        .args(["--manager-url", &format!("https://10.0.2.2:{port}")])
        .arg("--manager-ca")
        .arg(dir.join("tls.crt"))
        .args(["--manager-app-id", &app.app_id])
        .args(["--certificates", &cert.to_string()])
        .args([
            "--manager-retry-seconds",
            "20",
            "--allow-simulated-attestation",
        ])
        .arg(format!("oci:{}:1", oci.display()))
        .arg("-"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pcrs = &report["attributes"]["nitro_enclave"];
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                    "attributes": {"nitro_enclave": {"pcr0": pcrs["pcr0"], "pcr1": pcrs["pcr1"], "pcr2": pcrs["pcr2"]}},
                    "advanced_settings": {"certificates": [{"issuer": "MANAGER_CA", "subject": "localhost"}]}}),
        )
        .unwrap();
    let sim_key = dir.join("simulation.pem");

    // Before approval: the launcher is refused and the app never starts.
    let (code, console) = refused_boot(&eif, &sim_key, dir, "pending");
    assert!(console.contains("not whitelisted"), "{console}");
    assert!(!console.contains("testapp:"), "the app started:\n{console}");
    assert_eq!(code, 121, "{console}");

    let t: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    assert_eq!(t.status.status, "SUCCESS");

    // Approved: the app gets its certificate and configs, and serves HTTPS with them.
    let https = free_port();
    let console_path = dir.join("approved.console");
    let mut vm = boot(&eif, &sim_key, https, &console_path);
    let deadline = Instant::now() + Duration::from_secs(240);
    let console = loop {
        let text = std::fs::read_to_string(&console_path).unwrap_or_default();
        if text.contains("testapp: serving HTTPS") {
            break text;
        }
        if let Some(s) = vm.try_wait().unwrap() {
            panic!("the enclave stopped ({s}) before serving:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the app did not start within 240 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let chain: Value = admin.get("/v1/ca").unwrap();
    let ca_pem = chain.to_string();
    let root = ca_root(&chain);
    std::fs::write(dir.join("manager-ca.pem"), &root).unwrap();
    let curl = run(Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(dir.join("manager-ca.pem"))
        .args(["--resolve", &format!("localhost:{https}:127.0.0.1")])
        .arg(format!("https://localhost:{https}/")));
    let _ = vm.kill();
    let _ = vm.wait();
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success(),
        "curl: {}\n{console}\n{ca_pem}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert!(body.contains("subject: CN=localhost"), "{body}");
    assert!(
        body.contains(&format!("config file /etc/app/config.txt: {CONFIG_TEXT}")),
        "{body}"
    );
    assert!(
        body.contains(&format!("env APP_GREETING: {GREETING}")),
        "{body}"
    );
    assert!(
        console.contains("testapp: subject: CN=localhost"),
        "{console}"
    );
    // After revocation a new boot is refused.
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", build.build_id),
            &json!({"reason": "end-to-end revocation"}),
        )
        .unwrap();
    let (code, console) = refused_boot(&eif, &sim_key, dir, "revoked");
    assert!(console.contains("(revoked)"), "{console}");
    assert!(!console.contains("testapp:"), "the app started:\n{console}");
    assert_eq!(code, 121, "{console}");
}

/// The root of the manager CA's chain (the last certificate of `GET /v1/ca`).
fn ca_root(chain: &Value) -> String {
    let text = chain["root"]
        .as_str()
        .or_else(|| chain["chain"].as_str())
        .unwrap_or_else(|| panic!("GET /v1/ca: {chain}"));
    let last = text.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    text[last..].to_string()
}

#[test]
fn a_bad_simulation_key_is_refused_before_anything_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let eif = tmp.path().join("any.eif");
    std::fs::write(&eif, b"not read: the key is checked first").unwrap();
    let not_a_key = tmp.path().join("key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (key, says) in [
        (not_a_key.clone(), "P-256 private key"),
        (
            tmp.path().join("missing.pem"),
            "while reading --simulation-key",
        ),
    ] {
        let e = common::fails(
            cloak()
                .args(["run", "--target", "nitro", "--simulation-key"])
                .arg(&key)
                .arg(&eif),
        );
        assert!(
            e.contains(says) && e.contains(&key.display().to_string()),
            "{e}"
        );
    }
}
