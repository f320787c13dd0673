//! Conversion workers: claim a job, run it through cloak-convert (the functions `cloak convert`
//! calls, never the CLI), renew the lease and report progress while it runs, stop it when it is
//! cancelled or the lease is lost, and end it (a success registers its build).
//!
//! Each job runs on a thread of its own with its own runtime; stopping it drops the conversion
//! future, so no further blob is written and the manifest (pushed last) never is: no tag
//! points at a partial output.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloak_convert::nitro::NitroRequest;
use cloak_convert::sgx::SgxRequest;
use cloak_image::auth::{AuthLookup, Credentials, Secret};
use cloak_image::copy::{BlobAction, Progress};
use cloak_image::destination::DestinationPolicy;
use cloak_image::{Digest, ImageRef, RegistryOptions};
use serde_json::{json, Value};

use crate::builds::NewBuild;
use crate::config::JobSettings;
use crate::error::{Error, Result};
use crate::jobs::{self, Claim, Heartbeat};
use crate::{registry, State};
use cloak_api::{
    ConvertImageResponse, DockerInfo, JobTarget, NitroEnclaveAttributes, SgxAttributes,
};

/// A job's progress: the stage and the bytes of blobs moved, read by the heartbeat. A blob the
/// destination already had or mounted counts as done when it is (no byte had to move).
#[derive(Debug, Default)]
pub struct JobProgress {
    stage: Mutex<Option<String>>,
    cancel: std::sync::atomic::AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
    /// Size and bytes advanced of each blob in flight.
    blobs: Mutex<std::collections::HashMap<Digest, (u64, u64)>>,
    /// When the lease, as last renewed, stops being safely ours (the lease less a margin);
    /// past it the conversion is cancelled even if no heartbeat could say so.
    lease_deadline: Mutex<Option<Instant>>,
    /// Where the conversion asks, right before its manifest is written, whether the job may
    /// still get its tag (answered by the job's loop from the database).
    gate: Mutex<Option<tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::SyncSender<bool>>>>,
    /// The pre-manifest check said yes: the manifest is being written. From here the job's
    /// loop no longer stops the conversion for a cancel or the time limit (a push cut off
    /// midway may still have reached the registry); the outcome is what the push gives.
    committing: std::sync::atomic::AtomicBool,
}

impl JobProgress {
    /// Records a successful renewal made at `at` (taken before the request was sent).
    fn renewed(&self, at: Instant, safe_for: Duration) {
        *self.lease_deadline.lock().expect("progress lock") = Some(at + safe_for);
    }

    /// Whether the lease may have lapsed: the last renewal is older than the safe period.
    fn lease_lapsed(&self) -> bool {
        self.lease_deadline
            .lock()
            .expect("progress lock")
            .is_some_and(|d| Instant::now() >= d)
    }

    /// The stage running now.
    pub fn stage(&self) -> Option<String> {
        self.stage.lock().expect("progress lock").clone()
    }
}

impl Progress for JobProgress {
    fn start(&self, digest: &Digest, size: u64) {
        self.total.fetch_add(size, Ordering::Relaxed);
        self.blobs
            .lock()
            .expect("progress lock")
            .insert(*digest, (size, 0));
    }
    fn advance(&self, digest: &Digest, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = self.blobs.lock().expect("progress lock").get_mut(digest) {
            b.1 += n;
        }
    }
    fn finish(&self, digest: &Digest, _action: BlobAction) {
        if let Some((size, moved)) = self.blobs.lock().expect("progress lock").remove(digest) {
            self.done
                .fetch_add(size.saturating_sub(moved), Ordering::Relaxed);
        }
    }
    fn stage(&self, name: &str) {
        *self.stage.lock().expect("progress lock") = Some(name.to_string());
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.lease_lapsed()
    }
    /// A cancel request seen only at the next heartbeat would lose the race against a short
    /// job: the database is asked once more here, so that a cancel acknowledged before the
    /// manifest is written always keeps the tag away.
    fn may_commit(&self) -> bool {
        if self.cancelled() {
            return false;
        }
        let gate = self.gate.lock().expect("progress lock").clone();
        let Some(gate) = gate else { return true };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if gate.send(tx).is_err() {
            return false;
        }
        let yes = rx.recv_timeout(GATE_WAIT).unwrap_or(false);
        if yes {
            self.committing.store(true, Ordering::SeqCst);
        }
        yes
    }
}

/// How long the pre-commit check may wait for the job's loop (a slow database): past it the
/// manifest is not written and the attempt ends as its lease says.
const GATE_WAIT: Duration = Duration::from_secs(60);

/// Runs `n` workers until the process ends.
pub fn spawn(state: State, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    (0..n)
        .map(|i| {
            // The id is what job attempts show to tenants: opaque, so that it tells nothing of
            // the manager's hosts and processes. The operator's log maps it to them.
            let owner = worker_id();
            tracing::info!(worker = %owner, host = %host, pid = std::process::id(), index = i, "worker id assigned");
            tokio::spawn(run(state.clone(), owner))
        })
        .collect()
}

/// A random, opaque worker id (`w-` and 16 hex digits).
fn worker_id() -> String {
    format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// One worker's loop: claim, run, repeat; wait a moment when the queue is empty.
pub async fn run(state: State, owner: String) {
    tracing::info!(worker = %owner, "conversion worker started");
    loop {
        match jobs::claim(&state, &owner).await {
            Ok(Some(c)) => {
                let id = c.job_id.clone();
                if let Err(e) = run_job(&state, c).await {
                    tracing::error!(job = %id, error = %e, "ending the job failed");
                }
            }
            // An indexed read (the transaction rolls back: nothing is written, no cache is
            // emptied); at this rate a queued job waits 25 ms on average before a worker of
            // another process sees it.
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                // SQLite between processes can refuse a claim that raced another: try again.
                tracing::debug!(error = %e, "claim failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What a finished conversion produced.
enum Produced {
    Sgx(Box<cloak_convert::sgx::SgxReport>),
    Nitro(Box<cloak_convert::nitro::NitroReport>),
}

async fn run_job(state: &State, c: Claim) -> Result<()> {
    tracing::info!(job = %c.job_id, attempt = c.attempt, target = c.spec.target.as_str(), "conversion started");
    let progress = Arc::new(JobProgress::default());
    // The claim was the first renewal; a worker that cannot renew stops before the lease ends
    // (another worker may own the job by then), with a margin for the last push in flight.
    let lease = Duration::from_millis(state.config.jobs.lease_ms as u64);
    let safe_for = lease - (lease / 4).min(Duration::from_secs(5));
    progress.renewed(Instant::now(), safe_for);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (gate_tx, mut gate_rx) = tokio::sync::mpsc::unbounded_channel();
    *progress.gate.lock().expect("progress lock") = Some(gate_tx);
    let plan = prepare(state, &c, progress.clone()).await;
    let plan = match plan {
        Ok(p) => p,
        Err((stage, msg)) => {
            jobs::fail(state, &c, stage, &msg, false).await?;
            return Ok(());
        }
    };
    let thread = std::thread::Builder::new()
        .name(format!("job-{}", &c.job_id[..8]))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = done_tx.send(Some(Err(cloak_convert::Error::Operation(format!(
                        "cannot start the conversion's runtime: {e}"
                    )))));
                    return;
                }
            };
            let out = rt.block_on(async move {
                tokio::select! {
                    r = plan.run() => Some(r),
                    _ = stop_rx => None,
                }
            });
            // The result first: blocking tasks still winding down must not delay the job's end.
            let _ = done_tx.send(out);
            rt.shutdown_background();
        })
        .map_err(|e| Error::Internal(format!("cannot start a job thread: {e}")))?;
    let every = Duration::from_millis((state.config.jobs.lease_ms / 4).clamp(200, 5000) as u64);
    // The claim renewed the lease: the first heartbeat is one period away, not now.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut stop_tx = Some(stop_tx);
    let mut stopped: Option<Heartbeat> = None;
    let time_limit = state.config.jobs.timeout;
    let over_time = tokio::time::sleep(time_limit);
    tokio::pin!(over_time);
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            r = &mut done_rx => break r.ok().flatten(),
            Some(reply) = gate_rx.recv() => {
                // The pre-commit check: a heartbeat now (lease and cancel request in one).
                if stopped.is_some() {
                    let _ = reply.send(false);
                    continue;
                }
                let sent_at = Instant::now();
                match beat(state, &c, &progress).await {
                    Ok(Heartbeat::Continue) => {
                        progress.renewed(sent_at, safe_for);
                        let _ = reply.send(true);
                    }
                    Ok(h) => {
                        tracing::info!(job = %c.job_id, reason = ?h, "stopping the conversion before its manifest");
                        stopped = Some(h);
                        progress.cancel.store(true, Ordering::SeqCst);
                        let _ = reply.send(false);
                    }
                    Err(e) => {
                        // As before the check existed: the lease's own deadline decides.
                        tracing::warn!(job = %c.job_id, error = %e, "the pre-commit check failed");
                        let _ = reply.send(!progress.cancelled());
                    }
                }
            }
            _ = &mut over_time, if !timed_out && stopped.is_none()
                && !progress.committing.load(Ordering::SeqCst) => {
                tracing::warn!(job = %c.job_id, limit_s = time_limit.as_secs(), "the conversion ran out of time: stopping it");
                timed_out = true;
                progress.cancel.store(true, Ordering::SeqCst);
                if let Some(s) = stop_tx.take() { let _ = s.send(()); }
            }
            _ = tick.tick() => {
                if stopped.is_some() { continue; }
                if progress.lease_lapsed() {
                    tracing::warn!(job = %c.job_id, "the lease could not be renewed in time: stopping the conversion");
                    stopped = Some(Heartbeat::Lost);
                    progress.cancel.store(true, Ordering::SeqCst);
                    if let Some(s) = stop_tx.take() { let _ = s.send(()); }
                    continue;
                }
                let sent_at = Instant::now();
                match beat(state, &c, &progress).await {
                    Ok(Heartbeat::Continue) => progress.renewed(sent_at, safe_for),
                    // Too late for a cancel: the manifest is being written.
                    Ok(Heartbeat::Cancel) if progress.committing.load(Ordering::SeqCst) => {
                        progress.renewed(sent_at, safe_for)
                    }
                    Ok(h) => {
                        tracing::info!(job = %c.job_id, reason = ?h, "stopping the conversion");
                        stopped = Some(h);
                        progress.cancel.store(true, Ordering::SeqCst);
                        if let Some(s) = stop_tx.take() { let _ = s.send(()); }
                    }
                    Err(e) => tracing::warn!(job = %c.job_id, error = %e, "lease renewal failed"),
                }
            }
        }
    };
    let _ = thread.join();
    let stage = progress.stage();
    if stopped.is_none() {
        // The last progress (a short job ends before its first heartbeat sees bytes).
        let _ = beat(state, &c, &progress).await;
    }
    match (stopped, outcome) {
        (Some(Heartbeat::Lost), _) => {
            tracing::warn!(job = %c.job_id, attempt = c.attempt, "lease lost: another worker owns the job now");
        }
        (None, None | Some(Err(_))) if timed_out => {
            let stage = stage.unwrap_or_else(|| "resolve".into());
            let msg = format!(
                "the conversion did not finish within the manager's time limit of {} s \
                 (the operator's --job-timeout-seconds); nothing was pushed under the output \
                 tag. Try a smaller image, or ask the operator for a longer limit",
                time_limit.as_secs()
            );
            jobs::fail(state, &c, &stage, &msg, false).await?;
        }
        // Cancelled after the pre-commit check passed: the image is complete and tagged, so
        // the job is what it is, SUCCEEDED.
        (_, Some(Ok(produced))) => {
            let (nb, result) = register_as(&c, produced)?;
            match jobs::succeed(state, &c, nb, result).await {
                Ok(true) => tracing::info!(job = %c.job_id, "conversion succeeded"),
                Ok(false) => {
                    tracing::warn!(job = %c.job_id, "lease lost before the end: nothing registered")
                }
                Err(e) => {
                    let msg =
                        format!("the converted image could not be registered as a build: {e}");
                    // A database that went away (a restart, a failover) is no verdict on the
                    // image: another attempt converts and registers it again. Anything else
                    // (revoked measurements, a vanished app) would fail the same way again.
                    let transient = matches!(e, Error::Database(_));
                    jobs::fail(state, &c, "register", &msg, transient).await?;
                }
            }
        }
        (Some(Heartbeat::Cancel), _) | (_, None) => {
            jobs::cancelled(state, &c, stage.as_deref()).await?;
            tracing::info!(job = %c.job_id, "conversion cancelled");
        }
        (_, Some(Err(e))) => {
            let stage = stage.unwrap_or_else(|| "resolve".into());
            let (msg, transient) = describe(&e);
            tracing::warn!(job = %c.job_id, stage = %stage, error = %msg, transient, "conversion failed");
            jobs::fail(state, &c, &stage, &msg, transient).await?;
        }
    }
    Ok(())
}

/// Renews the lease with the job's progress; answers whether to go on.
async fn beat(state: &State, c: &Claim, progress: &JobProgress) -> Result<Heartbeat> {
    let total = progress.total.load(Ordering::Relaxed);
    jobs::heartbeat(
        state,
        c,
        progress.stage().as_deref(),
        progress.done.load(Ordering::Relaxed) as i64,
        (total > 0).then_some(total as i64),
    )
    .await
}

/// The error's message (the pipeline's, which names the image, the registry and the fix) and
/// whether another attempt may succeed (the registry was unreachable or cut a transfer).
fn describe(e: &cloak_convert::Error) -> (String, bool) {
    use cloak_image::Error as I;
    match e {
        cloak_convert::Error::Image(I::Authentication { registry, reason }) => (
            format!(
                "registry {registry}: authentication failed: {reason} (check the request's auth \
                 config, or the credential saved for {registry} in the manager: GET /v1/registry)"
            ),
            false,
        ),
        cloak_convert::Error::Image(I::Destination { .. }) => (e.to_string(), false),
        cloak_convert::Error::Image(I::Registry { .. } | I::Stream { .. }) => {
            (format!("{e:#}"), true)
        }
        _ => (e.to_string(), false),
    }
}

/// A conversion ready to run (everything resolved on the manager's side).
enum Plan {
    Sgx(Box<SgxRequest>),
    Nitro(Box<NitroRequest>),
}

impl Plan {
    async fn run(self) -> cloak_convert::Result<Produced> {
        match self {
            Plan::Sgx(r) => Ok(Produced::Sgx(Box::new(
                cloak_convert::sgx::convert(*r).await?,
            ))),
            Plan::Nitro(r) => Ok(Produced::Nitro(Box::new(
                cloak_convert::nitro::convert(*r).await?,
            ))),
        }
    }
}

/// The registry settings of one image: TLS unless the operator listed the registry as
/// insecure, the operator's CA, and the request's credentials or else the account's saved ones
/// for that host. No auth file of the manager's host is read.
async fn registry_options(
    state: &State,
    c: &Claim,
    image: &ImageRef,
    given: &Option<(String, String)>,
) -> Result<RegistryOptions> {
    let host = image.registry().unwrap_or_default().to_string();
    let creds = match given {
        Some(pair) => Some(pair.clone()),
        None => registry::credential_for_host(state, &c.principal.account_id, &host).await?,
    };
    let mut opts = operator_options(&state.config.jobs, &host, &[])?;
    opts.creds = creds.map(|(username, password)| Credentials::Basic {
        username,
        password: Secret::new(password),
    });
    Ok(opts)
}

/// The settings of the operator's `--sgx-runtime-image`: built for its own host (TLS per the
/// insecure list, the operator's CA), without any tenant's credentials; the operator chose the
/// host, so it may be internal.
fn runtime_options(js: &JobSettings, image: &ImageRef) -> Result<RegistryOptions> {
    let host = image.registry().unwrap_or_default().to_string();
    operator_options(js, &host, std::slice::from_ref(&host))
}

/// Settings for `host` under the operator's config, without credentials; `also_allowed` are
/// registries the operator chose besides `--allow-private-registry`.
fn operator_options(
    js: &JobSettings,
    host: &str,
    also_allowed: &[String],
) -> Result<RegistryOptions> {
    Ok(RegistryOptions {
        tls_verify: !js.insecure_registries.iter().any(|h| h == host),
        cert_dir: ca_dir(js)?,
        creds: None,
        auth: AuthLookup {
            files: Vec::new(),
            helper_path: Some(std::ffi::OsString::new()),
        },
        destinations: Some(Arc::new(DestinationPolicy::new(
            js.private_registries
                .iter()
                .chain(also_allowed)
                .filter(|h| !h.is_empty())
                .cloned(),
            js.insecure_registries.iter().cloned(),
        ))),
        // Job errors go back to the tenant: a redirect target's body must not.
        quote_bodies: false,
    })
}

/// `--registry-ca FILE` as the certificate directory cloak-image reads (`*.crt`).
fn ca_dir(js: &JobSettings) -> Result<Option<PathBuf>> {
    static DIR: std::sync::OnceLock<std::result::Result<Option<PathBuf>, String>> =
        std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let Some(ca) = &js.registry_ca else {
            return Ok(None);
        };
        // A fresh directory of a random name, 0700: a name known in advance in the shared
        // temporary directory could be created first by another user, with their CA in it.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("cloak-registry-ca-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .and_then(|d| {
                std::fs::copy(ca, d.path().join("registry-ca.crt"))?;
                Ok(d.keep())
            })
            .map_err(|e| format!("--registry-ca {}: {e}", ca.display()))?;
        Ok(Some(dir))
    })
    .clone()
    .map_err(Error::Config)
}

fn parse_ref(name: &str) -> std::result::Result<ImageRef, (&'static str, String)> {
    format!("docker://{name}")
        .parse()
        .map_err(|e: cloak_image::Error| ("resolve", e.to_string()))
}

async fn prepare(
    state: &State,
    c: &Claim,
    progress: Arc<JobProgress>,
) -> std::result::Result<Plan, (&'static str, String)> {
    let js = &state.config.jobs;
    let input = parse_ref(&c.spec.input)?;
    let output = parse_ref(&c.spec.output)?;
    let internal = |e: Error| {
        (
            "resolve",
            format!("the manager could not prepare the job: {e}"),
        )
    };
    let src = registry_options(state, c, &input, &c.creds.input)
        .await
        .map_err(internal)?;
    let dst = registry_options(state, c, &output, &c.creds.output)
        .await
        .map_err(internal)?;
    let launcher = js
        .launcher
        .clone()
        .unwrap_or_else(cloak_convert::launcher::default_path);
    match c.spec.target {
        JobTarget::Sgx => {
            // The operator's key (a file or a PKCS#11 token), else the account's sealed key.
            let signer: Option<Box<dyn cloak_sgx::key::Signer + Send + Sync>> =
                match &js.sgx_signing_key {
                    Some(_) => None,
                    None => {
                        let pem = crate::signing::account_sgx_key(state, &c.principal)
                            .await
                            .map_err(internal)?;
                        let source = format!("the SGX key of account {}", c.principal.account_id);
                        Some(Box::new(
                            cloak_sgx::key::FileSigner::from_pem(&pem, source)
                                .map_err(|e| ("resolve", e.to_string()))?,
                        ))
                    }
                };
            let runtime_image: ImageRef = js
                .sgx_runtime_image
                .as_deref()
                .ok_or((
                    "resolve",
                    "the operator has not set --sgx-runtime-image".into(),
                ))?
                .parse()
                .map_err(|e: cloak_image::Error| {
                    ("resolve", format!("--sgx-runtime-image: {e}"))
                })?;
            let runtime_options = runtime_options(js, &runtime_image).map_err(internal)?;
            Ok(Plan::Sgx(Box::new(SgxRequest {
                input,
                output,
                runtime_image,
                source_options: src,
                runtime_options: Some(runtime_options),
                dest_options: dst,
                launcher,
                options: c.spec.sgx.clone().unwrap_or_default(),
                signing_key: js.sgx_signing_key.clone(),
                signer,
                date: None,
                platform: Default::default(),
                limit: Some(image_limit(js)),
                progress,
            })))
        }
        JobTarget::Nitro => {
            let blob = |name: &str| {
                js.nitro_blobs
                    .as_ref()
                    .map(|d| d.join(name))
                    .filter(|p| p.exists())
            };
            let kernel = js.nitro_kernel.clone().or_else(|| blob("bzImage")).ok_or((
                "resolve",
                "the operator has set neither --nitro-kernel nor --nitro-blobs with a bzImage"
                    .into(),
            ))?;
            let cmdline = blob("cmdline").and_then(|p| std::fs::read_to_string(p).ok());
            let options = c.spec.nitro.clone().unwrap_or_default();
            // `signing_key: {"default": {}}`: the app's key, generated on first use, sealed.
            let signer = match &options.nitro_enclaves_options.signing_key {
                Some(_) => {
                    let (key, cert) =
                        crate::signing::app_nitro_key(state, &c.principal, &c.spec.app_id)
                            .await
                            .map_err(internal)?;
                    let what = format!("the EIF signing key of app {}", c.spec.app_id);
                    Some(
                        cloak_convert::nitro::EifSigner::from_pem(
                            &key,
                            cert.into_bytes(),
                            &what,
                            "its certificate",
                        )
                        .map_err(|e| ("resolve", e.to_string()))?,
                    )
                }
                None => None,
            };
            Ok(Plan::Nitro(Box::new(NitroRequest {
                input,
                output: Some(output),
                eif: None,
                source_options: src,
                dest_options: dst,
                launcher,
                kernel,
                kernel_config: blob("bzImage.config"),
                cmdline,
                nsm_ko: blob("nsm.ko"),
                signing: None,
                signer,
                options,
                platform: Default::default(),
                limit: Some(image_limit(js)),
                progress,
            })))
        }
    }
}

/// The operator's bound on a job's input image, and how a tenant gets it raised.
fn image_limit(js: &JobSettings) -> cloak_image::flatten::ImageLimit {
    cloak_image::flatten::ImageLimit {
        max_bytes: js.max_image_bytes,
        raise: "ask the manager's operator to raise --job-max-image-bytes (of `cloak manager \
                serve` and `cloak manager worker`), or make the image smaller"
            .into(),
    }
}

/// `host/repo` and the tag of an output reference (`latest` when it names none).
fn name_and_version(image: &str) -> (String, String) {
    let repo = jobs::repository(image);
    let rest = &image[repo.len()..];
    let version = rest
        .strip_prefix(':')
        .map(|t| t.split('@').next().unwrap_or(t).to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "latest".into());
    (repo, version)
}

/// The build to register for a result, and the endpoint's answer.
fn register_as(c: &Claim, produced: Produced) -> Result<(NewBuild, Option<Value>)> {
    let (name, version) = name_and_version(&c.spec.output);
    let ports =
        |p: Vec<String>| (!p.is_empty()).then(|| p.into_iter().map(Value::String).collect());
    match produced {
        Produced::Sgx(r) => {
            let o = &r.options;
            let mem_mib = o
                .mem_size
                .as_deref()
                .and_then(|m| cloak_sgx::manifest::enclave_size(m).ok())
                .map(|b| b >> 20);
            let response = ConvertImageResponse {
                new_image: c.spec.output.clone(),
                image_sha: r.image_sha.clone(),
                image_size: r.image_size,
                isvprodid: r.isvprodid,
                isvsvn: r.isvsvn,
                mrenclave: r.mrenclave.clone(),
                mrenclave2: r.mrenclave2.clone(),
                mrsigner: r.mrsigner.clone(),
            };
            let mut advanced = serde_json::to_value(o).expect("options serialise");
            if let Some(m) = advanced.as_object_mut() {
                m.insert("mrenclave2".into(), json!(r.mrenclave2));
                m.insert("image_digest".into(), json!(r.image_digest));
            }
            Ok((
                NewBuild {
                    app_id: Some(c.spec.app_id.clone()),
                    app_name: None,
                    create_app: false,
                    docker: DockerInfo {
                        docker_image_name: name,
                        docker_version: version,
                        docker_image_sha: Some(r.image_digest.clone()),
                        docker_image_size: Some(r.image_size.div_ceil(1 << 20)),
                        exposed_ports: ports(r.exposed_ports.clone()),
                    },
                    sgx: Some(SgxAttributes {
                        mrenclave: Some(r.mrenclave.clone()),
                        mrsigner: Some(r.mrsigner.clone()),
                        isvprodid: Some(r.isvprodid),
                        isvsvn: Some(r.isvsvn),
                    }),
                    nitro: None,
                    mem_size: mem_mib,
                    threads: o.threads,
                    advanced_settings: advanced,
                    debug: o.debug.unwrap_or(false),
                },
                Some(serde_json::to_value(response).expect("responses serialise")),
            ))
        }
        Produced::Nitro(r) => {
            let a = r
                .attributes
                .get("nitro_enclave")
                .ok_or_else(|| Error::Internal("a Nitro report without PCRs".into()))?;
            let digest = r
                .output_image
                .as_deref()
                .and_then(|o| o.rsplit_once('@'))
                .map(|(_, d)| d.to_string());
            let exposed: Vec<String> = r.docker_info["exposed_ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let mut advanced = r.advanced_settings.clone();
            if let Some(m) = advanced.as_object_mut() {
                m.insert("cpu_count".into(), json!(r.cpu_count));
                m.insert("eif_size".into(), json!(r.eif_size));
                if let Some(cert) = &r.signing_certificate {
                    m.insert("signing_certificate".into(), json!(cert));
                }
                if !r.warnings.is_empty() {
                    m.insert("warnings".into(), json!(r.warnings));
                }
            }
            let debug = c
                .spec
                .nitro
                .as_ref()
                .and_then(|n| n.converter_options.debug)
                .unwrap_or(false);
            Ok((
                NewBuild {
                    app_id: Some(c.spec.app_id.clone()),
                    app_name: None,
                    create_app: false,
                    docker: DockerInfo {
                        docker_image_name: name,
                        docker_version: version,
                        docker_image_sha: digest,
                        docker_image_size: Some(r.eif_size.div_ceil(1 << 20)),
                        exposed_ports: ports(exposed),
                    },
                    sgx: None,
                    nitro: Some(NitroEnclaveAttributes {
                        pcr0: a.pcr0.clone(),
                        pcr1: a.pcr1.clone(),
                        pcr2: a.pcr2.clone(),
                        pcr8: a.pcr8.clone(),
                    }),
                    mem_size: Some(r.mem_size),
                    threads: Some(r.cpu_count),
                    advanced_settings: advanced,
                    debug,
                },
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_ca_is_copied_to_a_private_directory_of_a_random_name() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let js = JobSettings {
            registry_ca: Some(ca),
            ..Default::default()
        };
        let dir = ca_dir(&js).unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_ne!(name, format!("cloak-registry-ca-{}", std::process::id()));
        assert!(dir.join("registry-ca.crt").is_file());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn worker_ids_name_no_host_or_process() {
        let id = worker_id();
        let hex = id.strip_prefix("w-").unwrap_or_else(|| panic!("{id}"));
        assert!(
            hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_ne!(id, worker_id());
    }

    #[test]
    fn a_lapsed_lease_cancels_the_conversion_without_a_heartbeat() {
        let p = JobProgress::default();
        assert!(!p.cancelled(), "no lease recorded yet");
        p.renewed(Instant::now(), Duration::from_secs(60));
        assert!(!p.cancelled());
        p.renewed(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert!(
            p.cancelled(),
            "the last renewal is older than the safe period"
        );
    }

    #[test]
    fn the_manifest_is_written_only_when_the_jobs_loop_says_so() {
        let p = JobProgress::default();
        assert!(p.may_commit(), "no gate: the local flags decide");
        for answer in [true, false] {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            *p.gate.lock().unwrap() = Some(tx);
            let job_loop = std::thread::spawn(move || {
                let reply: std::sync::mpsc::SyncSender<bool> = rx.blocking_recv().expect("asked");
                reply.send(answer).unwrap();
            });
            assert_eq!(p.may_commit(), answer);
            job_loop.join().unwrap();
            if answer {
                assert!(
                    p.committing.load(Ordering::SeqCst),
                    "a yes marks the commit under way"
                );
                p.committing.store(false, Ordering::SeqCst);
            }
        }
        // The last loop has ended (its receiver dropped): nobody would register the build.
        assert!(!p.may_commit());
        let p = JobProgress::default();
        p.cancel.store(true, Ordering::SeqCst);
        assert!(!p.may_commit(), "a cancel seen locally needs no question");
    }
}
