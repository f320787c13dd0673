//! Conversions through the manager as durable jobs: the seeds' endpoints against a real
//! `docker-registry` with TLS and htpasswd, manager and worker processes on SQLite and
//! PostgreSQL, and faults (a worker killed mid-conversion, a cancelled job, a registry that
//! goes away while the job pushes).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloak_api::{Build, Client, Job, JobAttempt, JobState, ListResponse};
use common::images::{busybox, Comp, Layout, T};
use common::manager::{post, Backend, Manager};
use common::operator::Operator;
use common::registry::Registry;
use common::{cloak, ok};
use serde_json::{json, Value};

const USER: &str = "jobs-user";
const PASSWORD: &str = "Reg1stry-Pa55word-for-jobs";

/// The operator's registry, runtime image and key (tests/common/operator.rs).
type Env = Operator;

fn setup() -> Env {
    Operator::new(USER, PASSWORD)
}

/// Checks of what a job pushed.
trait Pushed {
    fn measure_expecting(&self, image: &str, mrenclave: &Value);
    fn skopeo_inspect(&self, image: &str) -> Value;
}

impl Pushed for Env {
    fn measure_expecting(&self, image: &str, mrenclave: &Value) {
        measure_expecting(&self.reg, image, mrenclave)
    }

    fn skopeo_inspect(&self, image: &str) -> Value {
        skopeo_inspect(&self.reg, image)
    }
}

/// `cloak measure` of a pushed image (the registry's CA and credentials), which recomputes
/// MRENCLAVE from the image's files and must find `mrenclave`.
fn measure_expecting(reg: &Registry, image: &str, mrenclave: &Value) {
    let expected = mrenclave.as_str().unwrap();
    let out = ok(cloak()
        .env("DOCKER_CONFIG", reg.docker_config_dir())
        .args([
            "measure",
            "-o",
            "json",
            "--expect-mrenclave",
            expected,
            "--cert-dir",
        ])
        .arg(reg.cert_dir())
        .arg(format!("docker://{image}")));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["variants"][0]["mrenclave"], expected, "{report}");
}

/// skopeo (an independent client) inspects the image.
fn skopeo_inspect(reg: &Registry, image: &str) -> Value {
    let out = ok(Command::new("skopeo")
        .args(["inspect", "--cert-dir"])
        .arg(reg.cert_dir())
        .arg("--authfile")
        .arg(reg.docker_config_dir().join("config.json"))
        .arg(format!("docker://{image}")));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn token(m: &Manager) -> String {
    let mut c = m.client();
    c.login("admin", common::manager::ADMIN_PASSWORD)
        .unwrap()
        .access_token
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

/// Polls a job until `pred` holds (or it ended: returned as is).
fn wait_for(c: &Client, id: &str, pred: impl Fn(&Job) -> bool) -> Job {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let j: Job = c.get(&format!("/v1/jobs/{id}")).unwrap();
        if pred(&j) || j.state.is_final() {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} never got there: {j:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn auth() -> Value {
    json!({"username": USER, "password": PASSWORD})
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

/// Approves a build's task as the administrator; answers the build afterwards.
fn approve(c: &Client, build_id: &str) -> Build {
    let b: Build = c.get(&format!("/v1/builds/{build_id}")).unwrap();
    assert_eq!(b.status.status, "PENDING");
    let _: Value = c
        .patch(
            &format!("/v1/tasks/{}", b.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    c.get(&format!("/v1/builds/{build_id}")).unwrap()
}

fn sgx_endpoints(backend: Backend) {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/bb:1");
    let m = env.manager(backend, &["--workers", "1"]);
    let t = token(&m);
    let admin = m.admin();
    let out1 = format!("{}/apps/bb-sgx:1", env.reg.addr());

    // EnclaveOS's POST /convert-image, waiting for the answer, with the request's credentials.
    // The seed's certificates need the manager the launcher attests to (cloak's `manager`
    // object: its address, the CA its TLS certificate chains to, the app); without it the
    // request is refused before any job is queued.
    let seed_certs = json!([{"issuer": "MANAGER_CA", "subject": "bb.example", "keyPath": "/k", "certPath": "/c"}]);
    let no_manager = json!({
        "inputImageName": input, "outputImageName": out1,
        "inputAuthConfig": auth(), "outputAuthConfig": auth(),
        "certificates": seed_certs
    });
    let (status, _, resp) = post(&m, &t, "/convert-image", &no_manager, &[]);
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["detail"]
            .as_str()
            .unwrap()
            .contains("`manager` object"),
        "{resp}"
    );
    let app_id = new_app(&admin, "bb-sgx", &out1);
    let body = json!({
        "inputImageName": input, "outputImageName": out1,
        "inputAuthConfig": auth(), "outputAuthConfig": auth(),
        "isvprodid": 7, "isvsvn": 2, "memSize": "512M", "threads": 8,
        "signingKey": {"default": {}},
        "certificates": seed_certs,
        "manager": {"url": "https://manager.example:8443",
                    "ca": String::from_utf8(m.ca()).unwrap(), "app_id": app_id}
    });
    let (status, _, resp) = post(&m, &t, "/convert-image", &body, &[]);
    assert_eq!(status, 200, "{resp}");
    // The seed's response, field by field.
    assert_eq!(
        keys(&resp),
        [
            "newImage",
            "imageSHA",
            "imageSize",
            "isvprodid",
            "isvsvn",
            "mrenclave",
            "mrenclave2",
            "mrsigner"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    assert_eq!(resp["newImage"], out1.as_str());
    assert_eq!(resp["isvprodid"], 7);
    assert_eq!(resp["isvsvn"], 2);
    assert_eq!(resp["imageSHA"].as_str().unwrap().len(), 12);
    assert!(resp["imageSize"].as_u64().unwrap() > 0);
    for k in ["mrenclave", "mrenclave2", "mrsigner"] {
        assert_eq!(resp[k].as_str().unwrap().len(), 64, "{k}");
    }
    // cloak measure of the pushed output recomputes the same MRENCLAVE.
    env.measure_expecting(&out1, &resp["mrenclave"]);
    let inspected = env.skopeo_inspect(&out1);
    assert_eq!(
        inspected["Labels"]["io.cloak.sgx.mrenclave"],
        resp["mrenclave"]
    );

    // The job behind it, and its build: PENDING with a task, WHITELISTED after the quorum.
    let jobs: ListResponse<Job> = admin.get("/v1/jobs?state=SUCCEEDED").unwrap();
    assert_eq!(jobs.items.len(), 1);
    let job = &jobs.items[0];
    assert_eq!(job.attempts, 1);
    assert_eq!(job.result.as_ref().unwrap(), &resp);
    let build_id = job.build_id.clone().unwrap();
    let b: Build = admin.get(&format!("/v1/builds/{build_id}")).unwrap();
    assert_eq!(b.mrenclave.as_deref(), resp["mrenclave"].as_str());
    assert_eq!(b.mrsigner.as_deref(), resp["mrsigner"].as_str());
    assert_eq!(b.isvprodid, Some(7));
    assert_eq!(
        b.docker_info.docker_image_name,
        format!("{}/apps/bb-sgx", env.reg.addr())
    );
    assert_eq!(b.docker_info.docker_version, "1");
    assert_eq!(b.mem_size, Some(512));
    assert_eq!(b.threads, Some(8));
    assert_eq!(b.app_name, format!("{}/apps/bb-sgx", env.reg.addr()));
    let b = approve(&admin, &build_id);
    assert_eq!(b.status.status, "WHITELISTED");

    // IBM's convert-app under /api/v1, asynchronous, without credentials in the request: the
    // credential saved in the manager for the registry host is used.
    let _: Value = admin
        .post(
            "/v1/registry",
            &json!({"url": env.reg.addr(), "credential": {"default": {"username": USER, "password": PASSWORD}}}),
        )
        .unwrap();
    let out2 = format!("{}/apps/bb-sgx:2", env.reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out2, "isvsvn": 3,
                      "appId": b.app_id});
    let hdrs = [
        ("Prefer", "respond-async"),
        ("Idempotency-Key", "convert-bb-2"),
    ];
    let (status, h, job) = post(&m, &t, "/api/v1/tools/converter/convert-app", &body, &hdrs);
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(h["location"], format!("/v1/jobs/{job_id}").as_str());
    assert_eq!(
        keys(&job),
        [
            "job_id",
            "app_id",
            "target",
            "state",
            "stage",
            "bytes_done",
            "bytes_total",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "build_id",
            "result",
            "input_image",
            "output_image"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    assert_eq!(job["target"], "SGX");
    // The same key again is the same job, not a second conversion.
    let (status, _, again) = post(&m, &t, "/v1/tools/converter/convert-app", &body, &hdrs);
    assert_eq!(status, 202);
    assert_eq!(again["job_id"], job_id.as_str());
    let done = wait_end(&admin, &job_id);
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert!(done.bytes_done > 0 && done.finished_at.is_some());
    let r2 = done.result.clone().unwrap();
    assert_eq!(r2["isvsvn"], 3);
    env.measure_expecting(&out2, &r2["mrenclave"]);
    let all: ListResponse<Job> = admin.get("/v1/jobs").unwrap();
    assert_eq!(all.items.len(), 2, "one job per idempotency key");

    // Invalid options are a 400 naming the option, before any job is queued.
    for (bad, field) in [
        (json!({"memSize": "300M"}), "memSize"),
        (json!({"threads": "many"}), "threads"),
        (json!({"memsize": "1G"}), "memsize"),
        (json!({"signingKey": {"sdkms": {"name": "k"}}}), "PKCS#11"),
        (
            json!({"signingKey": {"uri": "file:/etc/shadow"}}),
            "signingKey.uri",
        ),
        (json!({"inputImageName": "oci:/etc:1"}), "inputImageName"),
    ] {
        let mut body = json!({"inputImageName": input, "outputImageName": out2});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, _, e) = post(&m, &t, "/convert-image", &body, &[]);
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["detail"].as_str().unwrap().contains(field), "{bad}: {e}");
    }
    let all: ListResponse<Job> = admin.get("/v1/jobs").unwrap();
    assert_eq!(all.items.len(), 2, "refused requests queue nothing");

    // Wrong credentials fail the job with an error naming the registry.
    let out3 = format!("{}/apps/bb-sgx:3", env.reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out3,
                      "authConfig": {"username": USER, "password": "not-the-password"}});
    let (status, _, e) = post(&m, &t, "/convert-image", &body, &[]);
    assert_eq!(status, 422, "{e}");
    let detail = e["detail"].as_str().unwrap();
    assert!(detail.contains(&env.reg.addr()), "{detail}");
    assert!(detail.contains("authentication failed"), "{detail}");
    assert!(!env.reg.has_tag("apps/bb-sgx:3"));
    let failed: ListResponse<Job> = admin.get("/v1/jobs?state=FAILED").unwrap();
    assert_eq!(failed.items.len(), 1);
    assert!(failed.items[0].build_id.is_none());

    // The audit chain tells the story, and the password appears nowhere.
    let audit: Value = admin.get("/v1/audit?limit=1000").unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "Image Conversion Succeeded")
            .count(),
        2
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "Image Conversion Failed")
            .count(),
        1
    );
    let listed: Value = admin.get("/v1/jobs").unwrap();
    assert!(!listed.to_string().contains(PASSWORD));
    assert!(!audit.to_string().contains(PASSWORD));
    assert!(!m.log().contains(PASSWORD), "the log shows the password");
    assert!(
        !common::manager::contains(&m.raw_database(), PASSWORD),
        "the database holds the password in clear"
    );
    // Ended jobs keep no sealed credentials either.
    let sealed = m.sql("SELECT COUNT(*) FROM jobs WHERE credentials IS NOT NULL");
    assert_eq!(sealed.trim(), "0", "{sealed}");
}

#[test]
fn sgx_endpoints_convert_register_and_keep_secrets_sqlite() {
    sgx_endpoints(Backend::Sqlite);
}

#[test]
fn sgx_endpoints_convert_register_and_keep_secrets_postgres() {
    sgx_endpoints(Backend::Postgres);
}

#[test]
fn nitro_endpoint_answers_the_build_with_the_eifs_pcrs() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/nbb:1");
    let m = env.manager(Backend::Sqlite, &["--workers", "1"]);
    let t = token(&m);
    let admin = m.admin();
    let output = format!("{}/apps/nbb-nitro:1", env.reg.addr());
    let app_id = new_app(&admin, "nbb", &output);
    // CCM's body: {request: {app_id, input_image, output_image, converter_options}, nitro_enclaves_options}.
    let body = json!({
        "request": {
            "app_id": app_id,
            "input_image": {"name": input, "auth_config": auth()},
            "output_image": {"name": output, "auth_config": auth()},
            "converter_options": {"allow_cmdline_args": false, "env_vars": ["MODE=enclave"]}
        },
        "nitro_enclaves_options": {"cpu_count": 2, "mem_size": 1024}
    });
    let (status, _, build) = post(&m, &t, "/v1/builds/convert-app/nitro-enclaves", &body, &[]);
    assert_eq!(status, 200, "{build}");
    // CCM's Build object.
    let b: Build = serde_json::from_value(build.clone()).unwrap();
    assert_eq!(b.status.status, "PENDING");
    assert_eq!(b.app_id, app_id);
    assert_eq!(b.mem_size, Some(1024));
    assert_eq!(
        b.docker_info.docker_image_name,
        format!("{}/apps/nbb-nitro", env.reg.addr())
    );
    let nitro = b
        .attributes
        .nitro_enclave
        .clone()
        .expect("nitro attributes");

    // The EIF inside the pushed image, described by cloak describe-eif.
    let layout = env.tmp.path().join("pulled");
    ok(Command::new("skopeo")
        .args(["copy", "--src-cert-dir"])
        .arg(env.reg.cert_dir())
        .arg("--authfile")
        .arg(env.reg.docker_config_dir().join("config.json"))
        .arg(format!("docker://{output}"))
        .arg(format!("oci:{}:x", layout.display())));
    let root = common::umoci_unpack(&layout, "x", &env.tmp.path().join("bundle"));
    let described = ok(cloak()
        .args(["describe-eif", "-o", "json"])
        .arg(root.join("cloak/enclave.eif")));
    let d: Value = serde_json::from_slice(&described.stdout).unwrap();
    let text = d.to_string();
    for pcr in [&nitro.pcr0, &nitro.pcr1, &nitro.pcr2] {
        assert!(text.contains(pcr.as_str()), "{pcr} not in {text}");
    }
    let b = approve(&admin, &b.build_id);
    assert_eq!(b.status.status, "WHITELISTED");

    // The /v1/tools/converter alias, asynchronous, with the request's members at the top.
    let out2 = format!("{}/apps/nbb-nitro:2", env.reg.addr());
    let flat = json!({"app_id": app_id, "input_image": {"name": input, "auth_config": auth()},
        "output_image": {"name": out2, "auth_config": auth()},
        "converter_options": {"env_vars": ["MODE=second"]}, "nitro_enclaves_options": {}});
    let (status, _, job) = post(
        &m,
        &t,
        "/v1/tools/converter/convert-app/nitro-enclaves",
        &flat,
        &[("Prefer", "respond-async")],
    );
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["target"], "NITRO");
    let done = wait_end(&admin, job["job_id"].as_str().unwrap());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let result: Build = serde_json::from_value(done.result.unwrap()).unwrap();
    assert_eq!(result.build_id, done.build_id.unwrap());

    // Bad options name the option.
    let mut bad = body.clone();
    bad["nitro_enclaves_options"]["cpu_count"] = json!(0);
    let (status, _, e) = post(&m, &t, "/v1/builds/convert-app/nitro-enclaves", &bad, &[]);
    assert_eq!(status, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("cpu_count"), "{e}");
    let mut bad = body.clone();
    bad["request"]["converter_options"]["entrypoint"] = json!("not-a-list");
    let (status, _, e) = post(&m, &t, "/v1/builds/convert-app/nitro-enclaves", &bad, &[]);
    assert_eq!(status, 400, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("request.converter_options.entrypoint"),
        "{e}"
    );
    assert!(!m.log().contains(PASSWORD));
}

/// An image of `mib` MiB of incompressible data in uncompressed layers of 16 MiB: big enough
/// that a conversion is observably in flight (the job's bytes move) before it ends.
fn big_image(dir: &Path, mib: usize) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut layout = Layout::new(dir).layer(
        Comp::Gzip,
        common::images::tar(&[
            T::Dir("bin/", 0o755, 0),
            T::File("bin/busybox", 0o755, 0, &bb),
            T::Sym("bin/sh", "busybox"),
        ]),
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..mib.div_ceil(16) {
        let mut data = vec![0u8; 16 << 20];
        for chunk in data.chunks_mut(8) {
            // xorshift: incompressible, reproducible, fast
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let name = format!("data/{i}.bin");
        layout = layout.layer(
            Comp::Tar,
            common::images::tar(&[T::Dir("data/", 0o755, 0), T::File(&name, 0o644, 0, &data)]),
        );
    }
    layout.finish("1", "amd64", json!({"Entrypoint": ["/bin/sh"]}));
    dir.to_path_buf()
}

/// A `cloak manager worker` process on a manager's database, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(m: &Manager, env: &Env, ca: Option<&str>, extra: &[&str], log: &Path) -> Worker {
        Worker::spawn(m, env.operator_args(ca), extra, &[], log)
    }

    fn spawn(
        m: &Manager,
        operator: Vec<String>,
        extra: &[&str],
        envs: &[(&str, &Path)],
        log: &Path,
    ) -> Worker {
        let child = Command::new(env!("CARGO_BIN_EXE_cloak"))
            .args(["manager", "worker"])
            .args(m.store_args())
            .args(operator)
            .args(extra)
            .envs(envs.iter().map(|(k, v)| (*k, *v)))
            .env("CLOAK_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Worker(child)
    }

    fn signal(&self, sig: &str) {
        ok(Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .stderr(Stdio::null()));
    }

    fn sigkill(&mut self) {
        self.signal("-KILL");
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn attempts(c: &Client, id: &str) -> Vec<JobAttempt> {
    c.get(&format!("/v1/jobs/{id}/attempts")).unwrap()
}

fn submit_async(m: &Manager, t: &str, body: &Value) -> String {
    let (status, _, job) = post(m, t, "/convert-image", body, &[("Prefer", "respond-async")]);
    assert_eq!(status, 202, "{job}");
    job["job_id"].as_str().unwrap().to_string()
}

#[test]
fn faults_on_postgres_a_killed_worker_a_cancel_and_a_registry_gone_mid_push() {
    let env = setup();
    let input = env.push(&big_image(&env.tmp.path().join("big"), 160), "apps/big:1");
    // Outputs go to a second registry (so that its layers stream, and it can go away).
    let mut out_reg = Registry::tls_htpasswd(USER, PASSWORD);
    let cas = env.tmp.path().join("cas.pem");
    let mut pem = std::fs::read(env.reg.cert_dir().join("ca.crt")).unwrap();
    pem.extend(std::fs::read(out_reg.cert_dir().join("ca.crt")).unwrap());
    std::fs::write(&cas, pem).unwrap();
    let cas = cas.display().to_string();
    let out_addr = out_reg.addr();
    let m = env.manager_with_ca(
        Backend::Postgres,
        Some(&cas),
        &["--workers", "0", "--job-max-attempts", "2"],
    );
    let t = token(&m);
    let admin = m.admin();
    let worker_args = [
        "--job-lease-seconds",
        "2",
        "--job-max-attempts",
        "2",
        "--allow-private-registry",
        &out_addr,
    ];
    let logs = env.tmp.path();
    let in_flight = |j: &Job| j.state == JobState::Running && j.bytes_done > 0;

    // 1. SIGKILL the worker in the middle of a conversion; another takes the job over after
    // the lease expires and finishes it.
    let out = format!("{}/apps/big-sgx:1", out_reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out, "authConfig": auth()});
    let id = submit_async(&m, &t, &body);
    let mut w1 = Worker::start(&m, &env, Some(&cas), &worker_args, &logs.join("w1.log"));
    let running = wait_for(&admin, &id, in_flight);
    assert_eq!(running.state, JobState::Running, "{running:?}");
    // Frozen first, so that "still running" below is a fact and not a race; then killed.
    w1.signal("-STOP");
    let frozen: Job = admin.get(&format!("/v1/jobs/{id}")).unwrap();
    assert_eq!(
        frozen.state,
        JobState::Running,
        "the job ended before the kill"
    );
    w1.sigkill();
    let _w2 = Worker::start(&m, &env, Some(&cas), &worker_args, &logs.join("w2.log"));
    let done = wait_end(&admin, &id);
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
    let history = attempts(&admin, &id);
    let outcomes: Vec<_> = history.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("LEASE_EXPIRED"), Some("SUCCEEDED")]);
    assert_ne!(history[0].worker, history[1].worker);
    // Opaque ids: nothing of the manager's hosts or processes.
    assert!(history
        .iter()
        .all(|a| a.worker.starts_with("w-") && !a.worker.contains('/')));
    let builds: ListResponse<Build> = admin.get("/v1/builds").unwrap();
    assert_eq!(builds.items.len(), 1, "exactly one build");
    assert_eq!(Some(&builds.items[0].build_id), done.build_id.as_ref());
    let mrenclave = done.result.as_ref().unwrap()["mrenclave"].clone();
    let inspected = skopeo_inspect(&out_reg, &out);
    assert_eq!(inspected["Labels"]["io.cloak.sgx.mrenclave"], mrenclave);
    measure_expecting(&out_reg, &out, &mrenclave);

    // 2. Cancel a running job: CANCELLED, and no tag. The output registry is frozen first, so
    // the job is certainly before its manifest when the cancel is acknowledged (a fast machine
    // converts this image in about a second: a cancel sent while it moves blobs can lose).
    let out = format!("{}/apps/big-sgx:cancelled", out_reg.addr());
    let body =
        json!({"inputImageName": input, "outputImageName": out, "authConfig": auth(), "isvsvn": 9});
    out_reg.signal("-STOP");
    let id = submit_async(&m, &t, &body);
    let running = wait_for(&admin, &id, |j| j.state == JobState::Running);
    assert_eq!(running.state, JobState::Running, "{running:?}");
    let c: Job = admin.post_empty(&format!("/v1/jobs/{id}/cancel")).unwrap();
    assert_eq!(c.state, JobState::Running, "{c:?}");
    let done = wait_end(&admin, &id);
    out_reg.signal("-CONT");
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    assert!(done.build_id.is_none());
    assert!(
        !out_reg.has_tag("apps/big-sgx:cancelled"),
        "a cancelled job left a tag"
    );
    let again = admin
        .post_empty::<Value>(&format!("/v1/jobs/{id}/cancel"))
        .unwrap_err();
    assert_eq!(again.status(), Some(409));

    // 3. The output registry goes away mid-push: the job retries, then fails clearly; no build.
    let out = format!("{}/apps/big-sgx:gone", out_reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out, "authConfig": auth(), "isvsvn": 10});
    let id = submit_async(&m, &t, &body);
    let running = wait_for(&admin, &id, in_flight);
    assert_eq!(running.state, JobState::Running, "{running:?}");
    out_reg.kill();
    let done = wait_end(&admin, &id);
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert_eq!(done.attempts, 2, "retried once, then failed");
    let e = done.error.unwrap();
    assert!(e.message.contains(&out_reg.addr()), "{e:?}");
    let history = attempts(&admin, &id);
    assert_eq!(history[0].outcome.as_deref(), Some("RETRY"));
    assert_eq!(history[1].outcome.as_deref(), Some("FAILED"));
    let builds: ListResponse<Build> = admin.get("/v1/builds").unwrap();
    assert_eq!(builds.items.len(), 1, "a failed job registers no build");
    out_reg.restart();
    assert!(!out_reg.has_tag("apps/big-sgx:gone"));
    assert!(!m.log().contains(PASSWORD));
    for w in ["w1.log", "w2.log"] {
        let log = std::fs::read_to_string(logs.join(w)).unwrap();
        assert!(!log.contains(PASSWORD), "{w} shows the password");
    }
}

#[test]
fn twenty_jobs_on_two_worker_processes_each_run_once() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/bb:1");
    let m = env.manager(Backend::Postgres, &["--workers", "0"]);
    let t = token(&m);
    let admin = m.admin();
    let _w1 = Worker::start(
        &m,
        &env,
        None,
        &["--workers", "2"],
        &env.tmp.path().join("w1.log"),
    );
    let _w2 = Worker::start(
        &m,
        &env,
        None,
        &["--workers", "2"],
        &env.tmp.path().join("w2.log"),
    );
    let addr = env.reg.addr();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (m, t, input, addr) = (&m, &t, &input, &addr);
                s.spawn(move || {
                    let out = format!("{addr}/apps/many:{i}");
                    submit_async(
                        m,
                        t,
                        &json!({"inputImageName": input, "outputImageName": out,
                                "authConfig": auth(), "isvsvn": i}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut workers = BTreeSet::new();
    let mut build_ids = BTreeSet::new();
    for id in &ids {
        let j = wait_end(&admin, id);
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        // Exactly one attempt ran to the end and registered; an earlier attempt may only have
        // been sent back to the queue by a transient registry error (20 pushes at once to one
        // registry on a loaded machine), never taken over from a live worker.
        let h = attempts(&admin, id);
        assert_eq!(h.len() as i64, j.attempts, "{h:?}");
        let succeeded: Vec<_> = h
            .iter()
            .filter(|a| a.outcome.as_deref() == Some("SUCCEEDED"))
            .collect();
        assert_eq!(succeeded.len(), 1, "{h:?}");
        for a in h
            .iter()
            .filter(|a| a.outcome.as_deref() != Some("SUCCEEDED"))
        {
            assert_eq!(a.outcome.as_deref(), Some("RETRY"), "{h:?}");
            eprintln!("job {id}: attempt {} retried: {:?}", a.attempt, a.error);
        }
        workers.insert(succeeded[0].worker.clone());
        assert!(
            build_ids.insert(j.build_id.clone().unwrap()),
            "one build per job"
        );
    }
    let builds: ListResponse<Build> = admin.get("/v1/builds?limit=100").unwrap();
    assert_eq!(builds.items.len(), 20);
    let registered: BTreeSet<String> = builds.items.iter().map(|b| b.build_id.clone()).collect();
    assert_eq!(registered, build_ids);
    eprintln!("jobs ran on {} workers", workers.len());
}

#[test]
fn cloak_job_submits_follows_and_exits_zero_only_on_success() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/cli:1");
    let m = env.manager(Backend::Sqlite, &["--workers", "1"]);
    let t = token(&m);
    let ca = m.data_dir().join("tls.crt");
    let job = |args: &[&str]| {
        let mut c = cloak();
        c.arg("job")
            .args(args)
            .args(["--url", &m.url, "--cacert"])
            .arg(&ca)
            .env("CLOAK_MANAGER_TOKEN", &t)
            .env("CLOAK_REGISTRY_PASSWORD", PASSWORD)
            .env("XDG_CONFIG_HOME", env.tmp.path());
        c
    };
    let out = format!("{}/apps/cli-sgx:1", env.reg.addr());
    let done = ok(&mut job(&[
        "submit",
        "--target",
        "sgx",
        "--registry-user",
        USER,
        "--follow",
        "-o",
        "json",
        &input,
        &out,
    ]));
    let j: Job = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(j.build_id.is_some());
    env.measure_expecting(&out, &j.result.unwrap()["mrenclave"]);

    // A wrong password: the job fails, follow says why and exits 1.
    let bad = common::run(
        job(&[
            "submit",
            "--target",
            "sgx",
            "--registry-user",
            USER,
            "--follow",
            &input,
            &out,
        ])
        .env("CLOAK_REGISTRY_PASSWORD", "wrong-password"),
    );
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("FAILED") && text.contains("authentication failed"),
        "{text}"
    );

    let listed = ok(&mut job(&["list", "-o", "json"]));
    let l: ListResponse<Job> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(l.items.len(), 2);
    let shown = ok(&mut job(&["show", &j.job_id]));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("SUCCEEDED"));
}

fn sgx_job(m: &Manager, t: &str, input: &str, output: &str, isvsvn: u16) -> Value {
    let body = json!({"inputImageName": input, "outputImageName": output,
                      "authConfig": auth(), "isvsvn": isvsvn, "signingKey": {"default": {}}});
    let (status, _, resp) = post(m, t, "/convert-image", &body, &[]);
    assert_eq!(status, 200, "{resp}");
    resp
}

#[test]
fn default_signing_key_is_the_accounts_sealed_key_or_the_operators_pkcs11_token() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/keys:1");
    let keyless: Vec<String> = env.keyless_args(None);
    let keyless: Vec<&str> = keyless.iter().map(String::as_str).collect();

    // No key configured: the account's key, generated once, sealed, used for every conversion.
    let mut args = keyless.clone();
    args.extend(["--workers", "1"]);
    let m = Manager::start_with(Backend::Sqlite, &args);
    let t = token(&m);
    let a = sgx_job(
        &m,
        &t,
        &input,
        &format!("{}/apps/keys-sgx:1", env.reg.addr()),
        1,
    );
    let b = sgx_job(
        &m,
        &t,
        &input,
        &format!("{}/apps/keys-sgx:2", env.reg.addr()),
        2,
    );
    assert_eq!(a["mrsigner"], b["mrsigner"], "one key per account");
    env.measure_expecting(
        &format!("{}/apps/keys-sgx:2", env.reg.addr()),
        &b["mrenclave"],
    );
    let audit: Value = m
        .admin()
        .get("/v1/audit?action=Signing%20Key%20Generated")
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    let db = m.raw_database();
    assert!(
        !common::manager::contains(&db, "PRIVATE KEY"),
        "the key is in the database in clear"
    );
    assert!(!m.log().contains("PRIVATE KEY"));

    // The operator's PKCS#11 token (SoftHSM2) instead: the same MRSIGNER as the key file it
    // holds gives to `cloak convert`.
    let d = env.tmp.path().join("hsm");
    std::fs::create_dir_all(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            d.display()
        ),
    )
    .unwrap();
    ok(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(&env.key)
        .arg("-out")
        .arg(d.join("key.p8")));
    let util = |args: &[&str]| {
        ok(Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(args));
    };
    util(&[
        "--init-token",
        "--free",
        "--label",
        "jobs",
        "--so-pin",
        "5678",
        "--pin",
        "1234",
    ]);
    util(&[
        "--import",
        d.join("key.p8").to_str().unwrap(),
        "--token",
        "jobs",
        "--label",
        "sgx",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    let uri =
        "pkcs11:token=jobs;object=sgx?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234";
    let m2 = Manager::start_with(Backend::Sqlite, &["--workers", "0"]);
    let t2 = token(&m2);
    let mut operator = env.keyless_args(None);
    operator.extend(["--sgx-signing-key".to_string(), uri.to_string()]);
    let _w = Worker::spawn(
        &m2,
        operator,
        &[],
        &[("SOFTHSM2_CONF", conf.as_path())],
        &env.tmp.path().join("hsm-worker.log"),
    );
    let c = sgx_job(
        &m2,
        &t2,
        &input,
        &format!("{}/apps/keys-hsm:1", env.reg.addr()),
        1,
    );
    let reference = ok(cloak()
        .env("DOCKER_CONFIG", env.reg.docker_config_dir())
        .args(["convert", "--target", "sgx", "--quiet", "--src-cert-dir"])
        .arg(env.reg.cert_dir())
        .arg("--runtime-image")
        .arg(format!("oci:{}:1", env.runtime.display()))
        .arg("--signing-key")
        .arg(format!("file:{}", env.key.display()))
        .arg(format!("docker://{input}"))
        .arg(format!("oci:{}:ref", env.tmp.path().join("ref").display())));
    let r: Value = serde_json::from_slice(&reference.stdout).unwrap();
    assert_eq!(c["mrsigner"], r["mrsigner"]);
    assert_ne!(c["mrsigner"], a["mrsigner"]);
    let jobs: Value = m2.admin().get("/v1/jobs").unwrap();
    assert!(!jobs.to_string().contains("pin-value"), "{jobs}");
}

/// The operator's runtime image lives on a registry of its own (plain HTTP, listed as
/// insecure): the worker reaches it with settings built for that host, not with the TLS
/// settings and credentials of the tenant's input registry (which would fail the TLS handshake
/// with a plain-HTTP registry, and hand the tenant's password to the operator's registry).
#[test]
fn the_runtime_image_is_fetched_with_the_operators_settings_not_the_tenants() {
    let env = setup();
    let rt_reg = Registry::plain();
    let runtime = format!("{}/gramine:1", rt_reg.addr());
    ok(cloak()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", env.runtime.display()))
        .arg(format!("docker://{runtime}")));
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/bb:1");
    let mut args = env.operator_args(None);
    let i = args
        .iter()
        .position(|a| a == "--sgx-runtime-image")
        .unwrap();
    args[i + 1] = format!("docker://{runtime}");
    args.extend(["--insecure-registry".into(), rt_reg.addr()]);
    args.extend(["--workers".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Manager::start_with(Backend::Sqlite, &args);
    let t = token(&m);
    let out = format!("{}/apps/bb-rt:1", env.reg.addr());
    let resp = sgx_job(&m, &t, &input, &out, 1);
    assert_eq!(resp["newImage"], out.as_str(), "{resp}");
}

/// Another worker takes the lease (the owner column is changed under the running worker, as a
/// worker that claimed the job after a stall would): the first worker stops without pushing
/// its tag, and no worker reclaims the job while the thief's lease holds.
#[test]
fn a_worker_whose_lease_is_stolen_stops_without_pushing_a_tag() {
    let env = setup();
    let input = env.push(&big_image(&env.tmp.path().join("big"), 160), "apps/big:1");
    let m = env.manager(
        Backend::Sqlite,
        &["--workers", "1", "--job-lease-seconds", "2"],
    );
    let t = token(&m);
    let admin = m.admin();
    let out = format!("{}/apps/big-sgx:stolen", env.reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out, "authConfig": auth()});
    let id = submit_async(&m, &t, &body);
    let running = wait_for(&admin, &id, |j| {
        j.state == JobState::Running && j.bytes_done > 0
    });
    assert_eq!(running.state, JobState::Running, "{running:?}");
    m.sql(&format!(
        "UPDATE jobs SET lease_owner = 'thief', lease_expires_at = 99999999999999 \
         WHERE job_id = '{id}'"
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.log().contains("lease lost") {
        assert!(
            Instant::now() < deadline,
            "the worker kept going: {}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !env.reg.has_tag("apps/big-sgx:stolen"),
        "the tag was pushed"
    );
    let j: Job = admin.get(&format!("/v1/jobs/{id}")).unwrap();
    assert_eq!(j.state, JobState::Running, "{j:?}");
    assert_eq!(j.build_id, None, "{j:?}");
}

/// Submissions racing each other on PostgreSQL (many connections): the account's limit of
/// queued + running jobs holds, because the count and the insert are one transaction with the
/// account's row locked.
#[test]
fn parallel_submissions_do_not_exceed_the_accounts_job_limit() {
    let env = setup();
    let m = env.manager(
        Backend::Postgres,
        &["--workers", "0", "--max-jobs-per-account", "3"],
    );
    let t = token(&m);
    let input = format!("{}/apps/bb:1", env.reg.addr());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (m, t, input) = (&m, &t, &input);
                let out = format!("{}/apps/parallel-{i}:1", env.reg.addr());
                s.spawn(move || {
                    let body = json!({"inputImageName": input, "outputImageName": out,
                                      "authConfig": auth()});
                    post(
                        m,
                        t,
                        "/convert-image",
                        &body,
                        &[("Prefer", "respond-async")],
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert_eq!(accepted, 3, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 429),
        "{statuses:?}"
    );
}

/// A conversion that outlives the operator's `--job-timeout-seconds` is FAILED with an error
/// that says so, and pushes no tag.
#[test]
fn a_job_over_its_time_limit_fails_and_pushes_nothing() {
    let env = setup();
    let input = env.push(&big_image(&env.tmp.path().join("big"), 160), "apps/big:1");
    let m = env.manager(
        Backend::Sqlite,
        &["--workers", "1", "--job-timeout-seconds", "1"],
    );
    let t = token(&m);
    let out = format!("{}/apps/big-sgx:slow", env.reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out, "authConfig": auth()});
    let id = submit_async(&m, &t, &body);
    let done = wait_end(&m.admin(), &id);
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let error = serde_json::to_string(&done.error).unwrap();
    assert!(error.contains("time limit of 1 s"), "{error}");
    assert!(!env.reg.has_tag("apps/big-sgx:slow"));
}

/// The manager refuses a job whose registry is on loopback unless the operator listed it with
/// `--allow-private-registry`: the job fails naming the policy, before any connection.
#[test]
fn a_job_against_an_unlisted_internal_registry_is_refused_by_the_address_policy() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "apps/bb:1");
    let mut args = env.operator_args(None);
    let i = args
        .iter()
        .position(|a| a == "--allow-private-registry")
        .unwrap();
    args.drain(i..i + 2);
    args.extend(["--workers".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Manager::start_with(Backend::Sqlite, &args);
    let t = token(&m);
    let out = format!("{}/apps/bb-refused:1", env.reg.addr());
    let body = json!({"inputImageName": input, "outputImageName": out, "authConfig": auth()});
    let (status, _, resp) = post(&m, &t, "/convert-image", &body, &[]);
    assert_eq!(status, 422, "{resp}");
    let detail = resp["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused by the manager's registry address policy"),
        "{detail}"
    );
    assert!(!env.reg.has_tag("apps/bb-refused:1"));
}
