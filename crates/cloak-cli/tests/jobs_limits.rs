//! What one tenant can make a manager spend, and who a finished job registers its build for:
//! the operator's bound on an input image (a slightly bigger image and a gzip bomb fail their
//! jobs, nothing is tagged), the bounded synchronous waiters (429 with the queued job beyond
//! them, 202 and the job when the wait runs out), and a requester removed or demoted since
//! submission (the job fails, no build); and whose key signs a Nitro job's EIF (the app's,
//! held by the manager: PCR8 checked against its certificate and by AWS's EIF crate). A real
//! `docker-registry` with TLS and htpasswd, manager and worker processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloak_api::{Build, Client, Job, JobState, ListResponse};
use common::images::{busybox, Comp, Layout, T};
use common::manager::{post, Backend, Manager, ADMIN_PASSWORD};
use common::operator::{kernel, workspace, Operator};
use common::{cloak, ok};
use serde_json::{json, Value};

const USER: &str = "limits-user";
const PASSWORD: &str = "Reg1stry-Pa55word-for-limits";

fn setup() -> Env {
    Operator::new(USER, PASSWORD)
}

/// The operator's registry, runtime image and key (tests/common/operator.rs).
type Env = Operator;

/// What these tests ask of it beyond the shared setup.
trait Limits {
    fn tagged(&self, image: &str) -> bool;
}

impl Limits for Env {
    /// Whether the registry has a manifest under `image` (skopeo, an independent client).
    fn tagged(&self, image: &str) -> bool {
        Command::new("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(self.reg.cert_dir())
            .arg("--authfile")
            .arg(self.reg.docker_config_dir().join("config.json"))
            .arg(format!("docker://{image}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

fn token_of(m: &Manager, user: &str, password: &str) -> String {
    let mut c = m.client();
    c.login(user, password).unwrap().access_token
}

/// Polls a job until it has ended (the job's own state is the synchronisation).
fn wait_end(c: &Client, id: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let j: Job = c.get(&format!("/v1/jobs/{id}")).unwrap();
        if j.state.is_final() {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {j:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn auth() -> Value {
    json!({"username": USER, "password": PASSWORD})
}

fn submit_async(m: &Manager, t: &str, path: &str, body: &Value) -> String {
    let (status, _, job) = post(m, t, path, body, &[("Prefer", "respond-async")]);
    assert_eq!(status, 202, "{job}");
    job["job_id"].as_str().unwrap().to_string()
}

fn new_app(c: &Client, name: &str, output: &str) -> String {
    let app: Value = c
        .post(
            "/v1/apps",
            &json!({"name": name, "input_image_name": output, "output_image_name": output}),
        )
        .unwrap();
    app["app_id"].as_str().unwrap().to_string()
}

/// busybox and a layer that is incompressible data of `mib` MiB (stored uncompressed: its
/// compressed size is its size).
fn busybox_with_data(dir: &Path, mib: usize) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; mib << 20];
    for chunk in data.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    Layout::new(dir)
        .layer(
            Comp::Gzip,
            common::images::tar(&[
                T::Dir("bin/", 0o755, 0),
                T::File("bin/busybox", 0o755, 0, &bb),
                T::Sym("bin/sh", "busybox"),
            ]),
        )
        .layer(
            Comp::Tar,
            common::images::tar(&[
                T::Dir("data/", 0o755, 0),
                T::File("data/x", 0o644, 0, &data),
            ]),
        )
        .finish("1", "amd64", json!({"Entrypoint": ["/bin/sh"]}));
    dir.to_path_buf()
}

/// busybox and a gzip bomb: 64 MiB of zeros that compress to about 64 KiB.
fn busybox_with_bomb(dir: &Path) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let zeros = vec![0u8; 64 << 20];
    Layout::new(dir)
        .layer(
            Comp::Gzip,
            common::images::tar(&[
                T::Dir("bin/", 0o755, 0),
                T::File("bin/busybox", 0o755, 0, &bb),
                T::Sym("bin/sh", "busybox"),
            ]),
        )
        .layer(
            Comp::Gzip,
            common::images::tar(&[T::File("zeros", 0o644, 0, &zeros)]),
        )
        .finish("1", "amd64", json!({"Entrypoint": ["/bin/sh"]}));
    dir.to_path_buf()
}

#[test]
fn an_image_over_the_operators_limit_fails_its_job_and_nothing_is_tagged() {
    let env = setup();
    let small = env.push(&busybox(&env.tmp.path().join("bb")), "lim/bb:1");
    let bigger = env.push(
        &busybox_with_data(&env.tmp.path().join("big"), 9),
        "lim/big:1",
    );
    let bomb = env.push(
        &busybox_with_bomb(&env.tmp.path().join("bomb")),
        "lim/bomb:1",
    );
    let m = env.manager(
        Backend::Sqlite,
        &["--workers", "1", "--job-max-image-bytes", "8M"],
    );
    let t = token_of(&m, "admin", ADMIN_PASSWORD);
    let admin = m.admin();
    let sgx = |input: &str, output: &str| {
        json!({"inputImageName": input, "outputImageName": output,
               "inputAuthConfig": auth(), "outputAuthConfig": auth()})
    };
    let out = |name: &str| format!("{}/lim/{name}:1", env.reg.addr());

    // A slightly bigger image (9 MiB of layers against 8 MiB): refused from its manifest,
    // before a layer moves; a gzip bomb (1 MiB compressed, 66 MiB uncompressed): refused
    // while it decompresses. On SGX and on Nitro (whose EIF is written to the worker's disk
    // while the layers stream).
    let nitro_app = new_app(&admin, "lim-bomb-nitro", &out("bomb-nitro"));
    let cases = [
        (
            "/convert-image",
            sgx(&bigger, &out("big-sgx")),
            bigger.clone(),
            out("big-sgx"),
            "compressed",
        ),
        (
            "/convert-image",
            sgx(&bomb, &out("bomb-sgx")),
            bomb.clone(),
            out("bomb-sgx"),
            "uncompressed",
        ),
        (
            "/v1/builds/convert-app/nitro-enclaves",
            json!({"app_id": nitro_app,
                   "input_image": {"name": bomb, "auth_config": auth()},
                   "output_image": {"name": out("bomb-nitro"), "auth_config": auth()},
                   "converter_options": {}}),
            bomb.clone(),
            out("bomb-nitro"),
            "uncompressed",
        ),
    ];
    for (path, body, input, output, what) in &cases {
        let id = submit_async(&m, &t, path, body);
        let job = wait_end(&admin, &id);
        assert_eq!(job.state, JobState::Failed, "{input}: {job:?}");
        assert_eq!(job.attempts, 1, "a refusal is not retried: {job:?}");
        assert!(job.build_id.is_none(), "{job:?}");
        let e = job.error.unwrap();
        for part in [
            input.as_str(),
            &format!("8 MiB (8388608 bytes) {what}"),
            "--job-max-image-bytes",
            "operator",
        ] {
            assert!(
                e.message.contains(part),
                "{part:?} missing in: {}",
                e.message
            );
        }
        assert!(!env.tagged(output), "{output} was tagged");
    }

    // Within the limit, the same manager converts.
    let id = submit_async(&m, &t, "/convert-image", &sgx(&small, &out("bb-sgx")));
    let job = wait_end(&admin, &id);
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert!(env.tagged(&out("bb-sgx")));
    let builds: ListResponse<Build> = admin.get("/v1/builds").unwrap();
    assert_eq!(
        builds.items.len(),
        1,
        "only the image within the limit is a build"
    );
    assert!(!m.log().contains(PASSWORD));
}

#[test]
fn synchronous_waiters_are_bounded_per_account_and_per_replica() {
    // No workers: jobs stay queued, so a synchronous call waits until its job is cancelled.
    let m = Manager::start_with(
        Backend::Sqlite,
        &[
            "--workers",
            "0",
            "--max-sync-waiters",
            "2",
            "--max-sync-waiters-per-account",
            "1",
        ],
    );
    for (account, user) in [("second", "admin2"), ("third", "admin3")] {
        let out = m.offline_with_env(
            &["account", "create", "--name", account, "--admin-user", user],
            &[("CLOAK_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let tokens: Vec<String> = ["admin", "admin2", "admin3"]
        .iter()
        .map(|u| token_of(&m, u, ADMIN_PASSWORD))
        .collect();
    let body = json!({"inputImageName": "registry.example/in:1",
                      "outputImageName": "registry.example/out:1"});
    let jobs_of = |token: &str| -> Vec<Job> {
        let c = m.client().with_token(token);
        let l: ListResponse<Job> = c.get("/v1/jobs").unwrap();
        l.items
    };
    // A waiter in a thread; it holds its place once its job exists (taken before queueing).
    let wait_in_thread = |token: &str, have: usize| {
        let (url, ca, bearer, body) = (m.url.clone(), m.ca(), token.to_string(), body.clone());
        let waiter = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                .timeout(Duration::from_secs(900))
                .build()
                .unwrap();
            let resp = http
                .post(format!("{url}/convert-image"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().unwrap())
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let job = loop {
            let j = jobs_of(token);
            if j.len() > have {
                break j[0].clone();
            }
            assert!(Instant::now() < deadline, "the waiter's job never appeared");
            std::thread::sleep(Duration::from_millis(50));
        };
        (waiter, job)
    };
    let (a1, a1_job) = wait_in_thread(&tokens[0], 0);

    // The account's second synchronous call: 429, its job queued and named.
    let refused = |token: &str, whose: &str| {
        let (status, h, e) = post(&m, token, "/convert-image", &body, &[]);
        assert_eq!(status, 429, "{e}");
        assert_eq!(e["type"], "too_many_waiters", "{e}");
        let location = h["location"].to_str().unwrap().to_string();
        let id = location.strip_prefix("/v1/jobs/").unwrap().to_string();
        assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
        let detail = e["detail"].as_str().unwrap();
        assert!(detail.contains(&id) && detail.contains(whose), "{detail}");
        let c = m.client().with_token(token);
        let job: Job = c.get(&location).unwrap();
        assert_eq!(
            job.state,
            JobState::Queued,
            "the refused call's job stays queued"
        );
        id
    };
    refused(&tokens[0], "--max-sync-waiters-per-account");

    // Another account still waits; a third one finds the replica's two places taken.
    let (b1, _) = wait_in_thread(&tokens[1], 0);
    refused(&tokens[2], "--max-sync-waiters");

    // A waiter whose job ends leaves: its call answers (cancelled: 409) and its place is free.
    let admin = m.client().with_token(&tokens[0]);
    let _: Job = admin
        .post_empty(&format!("/v1/jobs/{}/cancel", a1_job.job_id))
        .unwrap();
    let (status, answer) = a1.join().unwrap();
    assert_eq!(status, 409, "{answer}");
    let (c1, c1_job) = wait_in_thread(&tokens[2], 1);
    let third = m.client().with_token(&tokens[2]);
    let _: Job = third
        .post_empty(&format!("/v1/jobs/{}/cancel", c1_job.job_id))
        .unwrap();
    assert_eq!(c1.join().unwrap().0, 409);
    let second = m.client().with_token(&tokens[1]);
    let b1_job = &jobs_of(&tokens[1])[0];
    let _: Job = second
        .post_empty(&format!("/v1/jobs/{}/cancel", b1_job.job_id))
        .unwrap();
    assert_eq!(b1.join().unwrap().0, 409);
}

#[test]
fn a_synchronous_call_answers_202_and_its_job_when_the_wait_runs_out() {
    let m = Manager::start_with(
        Backend::Sqlite,
        &["--workers", "0", "--sync-wait-seconds", "1"],
    );
    let t = token_of(&m, "admin", ADMIN_PASSWORD);
    let body = json!({"inputImageName": "registry.example/in:1",
                      "outputImageName": "registry.example/out:1"});
    let (status, h, job) = post(&m, &t, "/convert-image", &body, &[]);
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["state"], "QUEUED", "{job}");
    let id = job["job_id"].as_str().unwrap();
    assert_eq!(h["location"].to_str().unwrap(), format!("/v1/jobs/{id}"));
    let bad = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(["manager", "serve", "--sync-wait-seconds", "0"])
        .args(m.store_args())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("sync-wait-seconds"),
        "{bad:?}"
    );
}

/// A `cloak manager worker` process on a manager's database, killed on drop.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_requester_removed_or_demoted_since_submission_gets_no_build() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "role/bb:1");
    // The API only queues; a worker process started later runs the jobs, after the changes.
    // PostgreSQL: the re-check locks the requester's rows (SQLite's single writer serialises).
    let mut args = env.operator_args(None);
    args.extend(["--workers".to_string(), "0".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Manager::start_with(Backend::Postgres, &args);
    let admin = m.admin();
    let app = new_app(&admin, "role-app", &format!("{}/role/out", env.reg.addr()));
    let mut users = Vec::new();
    for (name, role) in [
        ("demoted-writer", "WRITER"),
        ("removed-writer", "WRITER"),
        ("key-owner", "MANAGER"),
    ] {
        let u: Value = admin
            .post(
                "/v1/users",
                &json!({"user_name": name, "password": ADMIN_PASSWORD, "role": role}),
            )
            .unwrap();
        users.push((u["user_id"].as_str().unwrap().to_string(), name));
    }
    // An API key acts for its creator: never above the creator's role now.
    let owner = m
        .client()
        .with_token(token_of(&m, "key-owner", ADMIN_PASSWORD));
    let key: Value = owner
        .post("/v1/api_keys", &json!({"name": "ci-key", "role": "WRITER"}))
        .unwrap();
    let key_secret = key["secret"].as_str().unwrap().to_string();
    let submit = |token: &str, tag: &str| {
        let body = json!({"appId": app, "inputImageName": input,
            "outputImageName": format!("{}/role/out:{tag}", env.reg.addr()),
            "inputAuthConfig": auth(), "outputAuthConfig": auth()});
        submit_async(&m, token, "/convert-image", &body)
    };
    let demoted = submit(&token_of(&m, "demoted-writer", ADMIN_PASSWORD), "demoted");
    let removed = submit(&token_of(&m, "removed-writer", ADMIN_PASSWORD), "removed");
    let by_key = submit(&key_secret, "by-key");
    let kept = submit(&token_of(&m, "admin", ADMIN_PASSWORD), "kept");
    let _: Value = admin
        .patch(
            &format!("/v1/users/{}", users[0].0),
            &json!({"role": "READER"}),
        )
        .unwrap();
    admin.delete(&format!("/v1/users/{}", users[1].0)).unwrap();
    let _: Value = admin
        .patch(
            &format!("/v1/users/{}", users[2].0),
            &json!({"role": "READER"}),
        )
        .unwrap();

    let log = env.tmp.path().join("worker.log");
    let _worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_cloak"))
            .args(["manager", "worker"])
            .args(m.store_args())
            .args(env.operator_args(None))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    for (id, why) in [
        (&demoted, "\"demoted-writer\", who requested this job, is no longer a WRITER of the account (now READER)"),
        (&removed, "\"removed-writer\" was removed from the account (DISABLED)"),
        (&by_key, "api key \"ci-key\", who requested this job, is no longer a WRITER of the account (now READER)"),
    ] {
        let job = wait_end(&admin, id);
        assert_eq!(job.state, JobState::Failed, "{job:?}");
        assert!(job.build_id.is_none(), "{job:?}");
        let e = job.error.unwrap();
        assert_eq!(e.stage, "register", "{e:?}");
        assert!(e.message.contains(why), "{why:?} missing in: {}", e.message);
        assert!(e.message.contains("no build is registered"), "{}", e.message);
    }
    let job = wait_end(&admin, &kept);
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let builds: ListResponse<Build> = admin.get("/v1/builds").unwrap();
    assert_eq!(
        builds.items.len(),
        1,
        "only the admin's job registered a build"
    );
    assert_eq!(Some(&builds.items[0].build_id), job.build_id.as_ref());
    let audit = m.sql("SELECT action FROM audit_log ORDER BY seq");
    assert_eq!(
        audit.matches("Image Conversion Failed").count(),
        3,
        "{audit}"
    );
}

/// SHA-384 of `data` by OpenSSL (an implementation independent of cloak's).
fn openssl_sha384(dir: &Path, data: &[u8]) -> Vec<u8> {
    let f = dir.join("sha384.in");
    std::fs::write(&f, data).unwrap();
    ok(Command::new("openssl")
        .args(["dgst", "-sha384", "-binary"])
        .arg(&f))
    .stdout
}

#[test]
fn nitro_jobs_sign_with_the_apps_key_and_pcr8_is_its_certificates() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "sign/bb:1");
    let m = env.manager(Backend::Sqlite, &["--workers", "1"]);
    let t = token_of(&m, "admin", ADMIN_PASSWORD);
    let admin = m.admin();
    let out = |name: &str| format!("{}/sign/{name}:1", env.reg.addr());
    let job = |app: &str, output: &str, signing: Value| {
        // A build's measurements are unique in its app: each build of one app gets an env.
        let body = json!({"app_id": app,
            "input_image": {"name": input, "auth_config": auth()},
            "output_image": {"name": output, "auth_config": auth()},
            "converter_options": {"env_vars": [format!("OUT={output}")]},
            "nitro_enclaves_options": signing});
        let id = submit_async(&m, &t, "/v1/builds/convert-app/nitro-enclaves", &body);
        let j = wait_end(&admin, &id);
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        let b: Build = admin
            .get(&format!("/v1/builds/{}", j.build_id.unwrap()))
            .unwrap();
        b
    };
    let signed = json!({"signing_key": {"default": {}}});
    let app_a = new_app(&admin, "sign-a", &out("a"));
    let app_b = new_app(&admin, "sign-b", &out("b"));
    let a = job(&app_a, &out("a"), signed.clone());
    let b = job(&app_b, &out("b"), signed.clone());
    let unsigned = job(&app_a, &out("a-unsigned"), json!({}));

    // PCR8 = SHA-384(48 zero bytes ‖ SHA-384(DER of the signing certificate)), by OpenSSL.
    let pcr8_of = |build: &Build| {
        let pem = build.advanced_settings["signing_certificate"]
            .as_str()
            .unwrap_or_else(|| panic!("no certificate: {}", build.advanced_settings));
        let pem_file = env.tmp.path().join("cert.pem");
        std::fs::write(&pem_file, pem).unwrap();
        let der = ok(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&pem_file))
        .stdout;
        let mut extend = vec![0u8; 48];
        extend.extend(openssl_sha384(env.tmp.path(), &der));
        hex::encode(openssl_sha384(env.tmp.path(), &extend))
    };
    let pcr8_a = a.attributes.nitro_enclave.as_ref().unwrap().pcr8.clone();
    assert_eq!(pcr8_a.as_deref(), Some(pcr8_of(&a).as_str()));
    let pcr8_b = b.attributes.nitro_enclave.as_ref().unwrap().pcr8.clone();
    assert_eq!(pcr8_b.as_deref(), Some(pcr8_of(&b).as_str()));
    assert_ne!(pcr8_a, pcr8_b, "each app has its own key");
    assert_eq!(
        unsigned.attributes.nitro_enclave.as_ref().unwrap().pcr8,
        None,
        "without signing_key the EIF is not signed"
    );

    // AWS's EIF crate reads the pushed EIF: the same PCR8, and the signature verifies.
    let layout = env.tmp.path().join("pulled");
    ok(Command::new("skopeo")
        .args(["copy", "--src-cert-dir"])
        .arg(env.reg.cert_dir())
        .arg("--authfile")
        .arg(env.reg.docker_config_dir().join("config.json"))
        .arg(format!("docker://{}", out("a")))
        .arg(format!("oci:{}:x", layout.display())));
    let root = common::umoci_unpack(&layout, "x", &env.tmp.path().join("bundle"));
    let oracle = workspace().join("tools/eif-oracle/target/release/eif-oracle");
    assert!(
        oracle.exists(),
        "{} is missing: scripts/test.sh builds it",
        oracle.display()
    );
    let o: Value = serde_json::from_slice(
        &ok(Command::new(oracle).arg(root.join("cloak/enclave.eif"))).stdout,
    )
    .unwrap();
    assert_eq!(o["PCR8"].as_str(), pcr8_a.as_deref(), "{o}");
    assert_eq!(o["signature_ok"], true, "{o}");

    // The key is generated once per app and kept sealed: another signed build of the app (other
    // PCR0 and PCR2) has the same PCR8; no private key is in the database or the log.
    let again = job(&app_a, &out("a2"), signed);
    let again = again.attributes.nitro_enclave.unwrap();
    assert_ne!(
        Some(&again.pcr0),
        a.attributes.nitro_enclave.as_ref().map(|n| &n.pcr0)
    );
    assert_eq!(again.pcr8, pcr8_a);
    assert!(!common::manager::contains(&m.raw_database(), "PRIVATE KEY"));
    assert!(!m.log().contains("PRIVATE KEY"));
    let (status, _, e) = post(
        &m,
        &t,
        "/v1/builds/convert-app/nitro-enclaves",
        &json!({"app_id": app_a, "input_image": {"name": input}, "output_image": {"name": out("x")},
                "nitro_enclaves_options": {"signing_key": {"uri": "file:/etc/key.pem"}}}),
        &[],
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("nitro_enclaves_options.signing_key"),
        "{e}"
    );
}

#[test]
fn cloak_convert_takes_the_same_limit_and_writes_no_eif_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = busybox_with_bomb(&tmp.path().join("bomb"));
    let eif = tmp.path().join("out.eif");
    let out = cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--max-image-bytes",
            "8M",
        ])
        .arg("--kernel")
        .arg(kernel())
        .arg("--eif")
        .arg(&eif)
        .arg(format!("oci:{}:1", bomb.display()))
        .arg("-")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "8 MiB (8388608 bytes) uncompressed",
        "raise --max-image-bytes",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    assert!(!eif.exists(), "an EIF was written past the limit");
    let bad = cloak()
        .args(["convert", "--target", "nitro", "--max-image-bytes", "lots"])
        .arg(format!("oci:{}:1", bomb.display()))
        .arg("-")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"lots\" is not a size"),
        "{bad:?}"
    );
}
