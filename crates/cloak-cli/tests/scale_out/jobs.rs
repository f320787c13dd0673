//! The conversion side of the scale-out test: a TLS + htpasswd `docker-registry` with a small
//! input image, a Gramine runtime image and a signing key (as in tests/jobs.rs); a load that
//! submits asynchronous conversion jobs through HAProxy (some of which must fail, some of
//! which it cancels); and the checks that every job ended exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::images::{busybox, gramine_runtime};
use super::common::postgres::Postgres;
use super::common::registry::Registry;
use super::common::{cloak, ok as run_ok};
use super::{ok, psql, Api};

const REG_USER: &str = "scale-out-user";
const REG_PASSWORD: &str = "Reg1stry-Pa55word-for-scale-out";

/// What an operator sets up once for conversions: the registry, the runtime image, the key.
pub struct JobEnv {
    pub reg: Registry,
    _tmp: tempfile::TempDir,
    runtime: PathBuf,
    key: PathBuf,
    /// The input image every conversion reads (`host:port/apps/bb:1`).
    pub input: String,
}

impl JobEnv {
    pub fn new() -> JobEnv {
        let reg = Registry::tls_htpasswd(REG_USER, REG_PASSWORD);
        let tmp = tempfile::tempdir().unwrap();
        let runtime = gramine_runtime(&tmp.path().join("runtime"), true);
        let key = tmp.path().join("enclave-key.pem");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-3", "-out"])
                .arg(&key)
                .arg("3072"),
        );
        let layout = busybox(&tmp.path().join("bb"));
        let input = format!("{}/apps/bb:1", reg.addr());
        run_ok(
            cloak()
                .env("DOCKER_CONFIG", reg.docker_config_dir())
                .args(["copy", "--dest-cert-dir"])
                .arg(reg.cert_dir())
                .arg(format!("oci:{}:1", layout.display()))
                .arg(format!("docker://{input}")),
        );
        JobEnv {
            reg,
            _tmp: tmp,
            runtime,
            key,
            input,
        }
    }

    /// The flags of a `cloak manager worker` converting against this registry (one conversion
    /// at a time, so a worker that holds a RUNNING job is busy; a short lease, so that a
    /// killed worker's job is taken over within seconds).
    pub fn worker_args(&self, lease_seconds: u64) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--workers".into(),
            "1".into(),
            "--max-connections".into(),
            "4".into(),
            "--job-lease-seconds".into(),
            lease_seconds.to_string(),
            "--sgx-runtime-image".into(),
            format!("oci:{}:1", self.runtime.display()),
            "--sgx-signing-key".into(),
            format!("file:{}", self.key.display()),
            "--registry-ca".into(),
            self.reg.cert_dir().join("ca.crt").display().to_string(),
            // The test registry is on loopback, which the address policy refuses unless listed.
            "--allow-private-registry".into(),
            self.reg.addr(),
        ];
        // The workspace's static launcher, found from the test build (a CLOAK_BIN elsewhere,
        // e.g. the static release binary, would not find it beside itself).
        if let Some(l) = Path::new(env!("CARGO_BIN_EXE_cloak"))
            .ancestors()
            .map(|a| a.join("x86_64-unknown-linux-gnu/release/cloak-launcher"))
            .find(|p| p.is_file())
        {
            a.push("--launcher".into());
            a.push(l.display().to_string());
        }
        a
    }

    /// The repository (`apps/scale`) every job's output is tagged in.
    fn output(&self, n: u64) -> String {
        format!("{}/apps/scale:j{n}", self.reg.addr())
    }

    /// Whether the registry holds the tag of job `n`'s output (skopeo, an independent client).
    fn has_output(&self, output: &str) -> bool {
        let repo_tag = output
            .strip_prefix(&format!("{}/", self.reg.addr()))
            .unwrap();
        self.reg.has_tag(repo_tag)
    }
}

/// What a job was submitted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A conversion that must succeed.
    Convert,
    /// An input tag that is not in the registry: must fail, register nothing, tag nothing.
    MissingInput,
    /// Cancelled right after it was acknowledged: CANCELLED, or SUCCEEDED if it finished first.
    Cancel,
}

#[derive(Debug)]
struct Submitted {
    kind: Kind,
    output: String,
    /// The state the cancel's 2xx answer showed (Cancel jobs whose cancel was acknowledged).
    cancel_answer: Option<String>,
}

/// Jobs the load saw acknowledged (202 with a job id) and what it sent.
#[derive(Default)]
pub struct JobsAcked {
    jobs: BTreeMap<String, Submitted>,
    sent: u64,
    failed: u64,
}

fn is_final(state: &str) -> bool {
    matches!(state, "SUCCEEDED" | "FAILED" | "CANCELLED")
}

/// `POST /convert-image` with `Prefer: respond-async` (EnclaveOS's endpoint, queued).
fn submit(api: &Api, body: &Value) -> Option<(u16, Value)> {
    let resp = api
        .http
        .post(format!("{}/convert-image", api.base))
        .bearer_auth(&api.token)
        .header("Prefer", "respond-async")
        .json(body)
        .send()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json::<Value>().unwrap_or(Value::Null)))
}

/// The job client's loop: submits conversions (every fifth with a missing input, every fifth
/// cancelled at once), keeping at most `backlog` unfinished so that the queue never outgrows
/// what the two workers drain. Only 2xx answers are recorded.
pub fn job_loop(
    api: &Api,
    env: &JobEnv,
    backlog: usize,
    stop: &AtomicBool,
    acked: &Mutex<JobsAcked>,
) {
    let auth = json!({"username": REG_USER, "password": REG_PASSWORD});
    let missing = format!("{}/apps/bb:missing", env.reg.addr());
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if pending.len() >= backlog {
            let id = &pending[0];
            match ok(api.get(&format!("/v1/jobs/{id}"))) {
                Some(j) if is_final(j["state"].as_str().unwrap_or("")) => {
                    pending.pop_front();
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
            continue;
        }
        n += 1;
        let kind = match n % 5 {
            0 => Kind::MissingInput,
            3 => Kind::Cancel,
            _ => Kind::Convert,
        };
        let output = env.output(n);
        // A distinct ISVSVN per job: distinct measurements, so one build per job can be told.
        let body = json!({"inputImageName": if kind == Kind::MissingInput { &missing } else { &env.input },
                          "outputImageName": output, "authConfig": auth, "isvsvn": n});
        let answer = submit(api, &body);
        let job_id = match &answer {
            Some((202, v)) => v["job_id"].as_str().map(str::to_string),
            _ => None,
        };
        let Some(job_id) = job_id else {
            let mut a = acked.lock().unwrap();
            a.sent += 1;
            a.failed += 1;
            continue;
        };
        let mut cancel_answer = None;
        let mut sent = 1;
        let mut failed = 0;
        if kind == Kind::Cancel {
            sent += 1;
            match ok(api.post(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))) {
                Some(j) => cancel_answer = j["state"].as_str().map(str::to_string),
                None => failed += 1,
            }
        }
        pending.push_back(job_id.clone());
        let mut a = acked.lock().unwrap();
        a.sent += sent;
        a.failed += failed;
        a.jobs.insert(
            job_id,
            Submitted {
                kind,
                output,
                cancel_answer,
            },
        );
    }
}

/// One row of `jobs` and its attempts' outcomes.
struct JobRow {
    state: String,
    attempts: u64,
    build_id: Option<String>,
    output: String,
    outcomes: Vec<(String, Option<String>)>, // (worker, outcome)
    error: String,
}

fn job_rows(pg: &Postgres, url: &str) -> BTreeMap<String, JobRow> {
    let mut rows: BTreeMap<String, JobRow> = psql(
        pg,
        url,
        "SELECT job_id, state, attempts, COALESCE(build_id, ''), output_image, \
         COALESCE(error_stage, '') || ': ' || COALESCE(error_message, '') FROM jobs",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            JobRow {
                state: f[1].to_string(),
                attempts: f[2].parse().unwrap(),
                build_id: (!f[3].is_empty()).then(|| f[3].to_string()),
                output: f[4].to_string(),
                outcomes: Vec::new(),
                // The message may hold the separator; it is the last column.
                error: f[5..].join("|"),
            },
        )
    })
    .collect();
    let mut retry_errors = BTreeSet::new();
    for l in psql(
        pg,
        url,
        "SELECT job_id, worker, COALESCE(outcome, ''), COALESCE(error, '') FROM job_attempts ORDER BY job_id, attempt",
    )
    .lines()
    {
        let f: Vec<&str> = l.split('|').collect();
        let row = rows
            .get_mut(f[0])
            .unwrap_or_else(|| panic!("an attempt of an unknown job: {l}"));
        if f[2] == "RETRY" && retry_errors.insert(f[3].to_string()) {
            eprintln!("scale-out: job {}: an attempt was retried: {}", f[0], f[3]);
        }
        row.outcomes
            .push((f[1].to_string(), (!f[2].is_empty()).then(|| f[2].to_string())));
    }
    rows
}

/// Waits until every job in the database has ended (the workers, restarted, drain the queue;
/// a killed worker's job is taken over once its lease expires).
pub fn wait_all_ended(pg: &Postgres, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let open = psql(
            pg,
            url,
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
        );
        if open.trim() == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs never ended: {}",
            open.trim(),
            psql(
                pg,
                url,
                "SELECT job_id, state, attempts, lease_owner FROM jobs WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job ids a worker process's log says it runs under (`worker id assigned`).
pub fn worker_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("worker id assigned"))
        .filter_map(|l| {
            let i = l.find("w-")?;
            let id = l.get(i..i + 18)?;
            id[2..]
                .chars()
                .all(|c| c.is_ascii_hexdigit())
                .then(|| id.to_string())
        })
        .collect()
}

/// The RUNNING conversion (not a missing-input job) one of `workers` holds the lease of, if
/// any: (job id, worker id).
pub fn job_held_by(pg: &Postgres, url: &str, workers: &[String]) -> Option<(String, String)> {
    let list = workers
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let held = psql(
        pg,
        url,
        &format!(
            "SELECT job_id, lease_owner FROM jobs WHERE state = 'RUNNING' AND lease_owner IN ({list}) \
             AND input_image NOT LIKE '%:missing'"
        ),
    );
    let (job, owner) = held.lines().next()?.split_once('|')?;
    Some((job.to_string(), owner.to_string()))
}

/// The counts the job checks established, for the report.
pub struct JobCounts {
    pub sent: u64,
    pub failed: u64,
    pub acked: usize,
    pub in_db: usize,
    pub succeeded: usize,
    pub failed_jobs: usize,
    pub cancelled: usize,
    pub attempts: u64,
    pub taken_over: usize,
    pub retried: usize,
}

/// Every acknowledged job exists as submitted; every job ended exactly once: a final state,
/// every attempt closed, at most one SUCCEEDED attempt (exactly one for a SUCCEEDED job), a
/// build for each SUCCEEDED job and for nothing else, the output tagged only for SUCCEEDED
/// jobs; the jobs the test killed a worker under were taken over after the lease expired.
pub fn check(
    pg: &Postgres,
    url: &str,
    env: &JobEnv,
    acked: &JobsAcked,
    killed_under: &[(String, String)], // (job_id, the killed worker's id)
) -> JobCounts {
    let rows = job_rows(pg, url);
    let mut c = JobCounts {
        sent: acked.sent,
        failed: acked.failed,
        acked: acked.jobs.len(),
        in_db: rows.len(),
        succeeded: 0,
        failed_jobs: 0,
        cancelled: 0,
        attempts: 0,
        taken_over: 0,
        retried: 0,
    };
    for (id, s) in &acked.jobs {
        let row = rows
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged job {id} ({s:?}) is not in the database"));
        assert_eq!(row.output, s.output, "job {id}: the output it was given");
        let expected: &[&str] = match (s.kind, s.cancel_answer.as_deref()) {
            (Kind::Convert, _) => &["SUCCEEDED"],
            (Kind::MissingInput, _) => &["FAILED"],
            // A cancel answered CANCELLED is final; one answered RUNNING races the finish.
            (Kind::Cancel, Some("CANCELLED")) => &["CANCELLED"],
            (Kind::Cancel, _) => &["CANCELLED", "SUCCEEDED"],
        };
        assert!(
            expected.contains(&row.state.as_str()),
            "job {id} ({s:?}): {} after {} attempts {:?} ({}), expected one of {expected:?}",
            row.state,
            row.attempts,
            row.outcomes,
            row.error
        );
    }
    let app_builds: BTreeSet<String> = psql(
        pg,
        url,
        &format!(
            "SELECT b.build_id FROM builds b JOIN apps a ON a.app_id = b.app_id WHERE a.name = '{}/apps/scale'",
            env.reg.addr()
        ),
    )
    .lines()
    .map(str::to_string)
    .collect();
    let mut job_builds = BTreeSet::new();
    for (id, row) in &rows {
        assert!(is_final(&row.state), "job {id} did not end: {}", row.state);
        assert_eq!(
            row.outcomes.len() as u64,
            row.attempts,
            "job {id}: one attempt row per attempt {:?}",
            row.outcomes
        );
        assert!(
            row.outcomes.iter().all(|(_, o)| o.is_some()),
            "job {id}: an attempt never closed {:?}",
            row.outcomes
        );
        let wins = row
            .outcomes
            .iter()
            .filter(|(_, o)| o.as_deref() == Some("SUCCEEDED"))
            .count();
        let tagged = env.has_output(&row.output);
        if row.state == "SUCCEEDED" {
            c.succeeded += 1;
            assert_eq!(wins, 1, "job {id}: SUCCEEDED attempts {:?}", row.outcomes);
            let b = row
                .build_id
                .clone()
                .unwrap_or_else(|| panic!("SUCCEEDED job {id} names no build"));
            assert!(
                app_builds.contains(&b),
                "job {id}: build {b} is not registered"
            );
            assert!(
                job_builds.insert(b),
                "job {id}: a build shared with another job"
            );
            assert!(tagged, "SUCCEEDED job {id}: {} is not tagged", row.output);
        } else {
            if row.state == "FAILED" {
                c.failed_jobs += 1;
            } else {
                c.cancelled += 1;
            }
            assert_eq!(wins, 0, "{} job {id}: {:?}", row.state, row.outcomes);
            assert!(
                row.build_id.is_none(),
                "{} job {id} registered a build",
                row.state
            );
            assert!(
                !tagged,
                "{} job {id} left the tag {} ({})",
                row.state, row.output, row.error
            );
        }
        c.attempts += row.attempts;
        c.taken_over += row
            .outcomes
            .iter()
            .filter(|(_, o)| o.as_deref() == Some("LEASE_EXPIRED"))
            .count();
        c.retried += row
            .outcomes
            .iter()
            .filter(|(_, o)| o.as_deref() == Some("RETRY"))
            .count();
    }
    assert_eq!(
        app_builds, job_builds,
        "the conversions' app holds exactly one build per SUCCEEDED job"
    );
    for (job, worker) in killed_under {
        let row = &rows[job];
        assert!(
            row.outcomes
                .iter()
                .any(|(w, o)| w == worker && o.as_deref() == Some("LEASE_EXPIRED")),
            "job {job}, whose worker {worker} was killed: attempts {:?}",
            row.outcomes
        );
    }
    c
}
