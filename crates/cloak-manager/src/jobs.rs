//! Conversion jobs: the seeds' conversion endpoints queue a durable job in the database, and
//! workers (`cloak manager serve --workers N`, `cloak manager worker`) run it through the same
//! pipeline as `cloak convert` (see `worker.rs`).
//!
//! A worker owns a RUNNING job while its lease holds: `(lease_owner, attempts)` names the owner
//! and the attempt, `lease_expires_at` (ms) how long the claim lasts unless renewed. Every change
//! a worker makes is guarded by owner and attempt, so a worker that lost its lease (it stalled,
//! another took the job) changes nothing; the job's end and its build are committed together, so
//! a job registers its build at most once. A job whose lease expired is claimed again from the
//! start, up to `max_attempts`, then FAILED with the last error. Claims use `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL; on SQLite the single writer serialises them, and the guarded UPDATE
//! keeps a claim exclusive between processes too.
//!
//! The request's registry credentials are sealed under the master key in the job row (bound to
//! the job id) until the job ends, then erased; the stored request never holds them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use crate::audit::{self, Actor, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::{apps, validate, State};
use cloak_api::{
    ConvertAuthConfig, ConvertImageRequest, Job, JobAttempt, JobError, JobState, JobTarget,
    NitroConversionRequest, Role,
};
use cloak_convert::options::{ConverterOptions, NitroEnclavesOptions, NitroOptions, SgxOptions};

/// How a password is shown wherever a request is.
pub const MASK: &str = "*****";

/// A conversion request as one of the endpoints received it.
#[derive(Debug, Clone)]
pub enum ConvertRequest {
    /// `POST /convert-image`, `POST /v1/tools/converter/convert-app`.
    Sgx(ConvertImageRequest),
    /// `POST /v1/builds/convert-app/nitro-enclaves` and its `/v1/tools/converter/` alias.
    Nitro(NitroConversionRequest),
}

/// What [`submit`] takes: the request and the caller's `Idempotency-Key`, if any.
#[derive(Debug, Clone)]
pub struct Submission {
    pub request: ConvertRequest,
    pub idempotency_key: Option<String>,
}

/// A validated conversion, as the job row keeps it (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub target: JobTarget,
    /// Registry references without transport (`host:port/repo:tag`).
    pub input: String,
    pub output: String,
    pub app_id: String,
    #[serde(default)]
    pub sgx: Option<SgxOptions>,
    #[serde(default)]
    pub nitro: Option<NitroOptions>,
}

/// The request's credentials (sealed in the job row while it lives).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Creds {
    pub input: Option<(String, String)>,
    pub output: Option<(String, String)>,
}

/// Masks the passwords: a [`Claim`] (which derives `Debug`) holds these.
impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |c: &Option<(String, String)>| c.as_ref().map(|(u, _)| (u.clone(), MASK));
        f.debug_struct("Creds")
            .field("input", &masked(&self.input))
            .field("output", &masked(&self.output))
            .finish()
    }
}

fn pair(a: &Option<ConvertAuthConfig>) -> Option<(String, String)> {
    a.as_ref().and_then(|a| {
        a.password
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| (a.username.clone(), p.clone()))
    })
}

fn check_auth(field: &str, a: &Option<ConvertAuthConfig>) -> Result<()> {
    if let Some(a) = a {
        validate::name(&format!("{field}.username"), &a.username, 256)?;
        if let Some(p) = &a.password {
            if p == MASK {
                return Err(Error::field(
                    format!("{field}.password"),
                    "is the mask, not a password: send the real password",
                ));
            }
            if p.len() > 4096 {
                return Err(Error::field(
                    format!("{field}.password"),
                    "must be at most 4096 bytes",
                ));
            }
        }
    }
    Ok(())
}

/// A registry image name as the seeds give them (`registry/repo:tag`, optionally `docker://`);
/// files on the manager's host (`oci:`, `docker-archive:`) are refused.
pub fn registry_image(field: &str, name: &str) -> Result<(String, cloak_image::ImageRef)> {
    validate::image_name(field, name)?;
    let bare = name.strip_prefix("docker://").unwrap_or(name);
    const HOST_FILES: [&str; 5] = [
        "oci:",
        "docker-archive:",
        "dir:",
        "oci-archive:",
        "containers-storage:",
    ];
    if HOST_FILES.iter().any(|t| bare.starts_with(t)) {
        return Err(Error::field(
            field,
            "must be a registry image (HOST/REPO:TAG): the manager reads no files on its host",
        ));
    }
    let r: cloak_image::ImageRef = format!("docker://{bare}")
        .parse()
        .map_err(|e: cloak_image::Error| Error::field(field, e.to_string()))?;
    Ok((bare.to_string(), r))
}

fn options_error(e: cloak_convert::Error) -> Error {
    let msg = e.to_string();
    let msg = msg
        .strip_prefix("invalid conversion options: ")
        .unwrap_or(&msg)
        .to_string();
    Error::field("options", msg)
}

/// Parses the SGX endpoints' body with errors that name the field.
pub fn parse_sgx(body: &[u8]) -> Result<ConvertImageRequest> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    crate::http::from_value(v)
}

/// Parses the Nitro endpoints' body: CCM's `{request, nitro_enclaves_options}`, or the
/// request's members at the top level.
pub fn parse_nitro(body: &[u8]) -> Result<NitroConversionRequest> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    let Some(o) = v.as_object_mut() else {
        return Err(Error::InvalidBody("the body must be a JSON object".into()));
    };
    if !o.contains_key("request") {
        let neo = o.remove("nitro_enclaves_options");
        let request = Value::Object(std::mem::take(o));
        o.insert("request".into(), request);
        if let Some(n) = neo {
            o.insert("nitro_enclaves_options".into(), n);
        }
    }
    crate::http::from_value(v)
}

/// The SGX options of an EnclaveOS body, checked as `cloak convert` checks them.
fn sgx_options(map: &serde_json::Map<String, Value>) -> Result<SgxOptions> {
    if let Some(k) = map.get("signingKey") {
        if k.get("sdkms").is_some() {
            return Err(Error::field(
                "signingKey.sdkms",
                "SDKMS keys are not supported: sign with {\"default\": {}}, which uses the \
                 account's key or the key the operator configured (a PKCS#11 token with \
                 `cloak manager serve --sgx-signing-key pkcs11:…`)",
            ));
        }
        if k.get("uri").is_some() {
            return Err(Error::field(
                "signingKey.uri",
                "requests may not name keys on the manager's host: use {\"default\": {}} (the \
                 operator configures the key, e.g. a PKCS#11 token)",
            ));
        }
    }
    let o: SgxOptions = crate::http::from_value(Value::Object(map.clone()))?;
    cloak_convert::sgx::check_options(&o).map_err(options_error)?;
    Ok(o)
}

fn nitro_options(r: &NitroConversionRequest) -> Result<NitroOptions> {
    if let Some(k) = r.nitro_enclaves_options.get("signing_key") {
        if k.get("sdkms").is_some() {
            return Err(Error::field(
                "nitro_enclaves_options.signing_key.sdkms",
                "SDKMS keys are not supported: {\"default\": {}} signs with the app's key, \
                 which the manager generates and keeps sealed",
            ));
        }
        if k.get("uri").is_some() || k.get("default").is_none() {
            return Err(Error::field(
                "nitro_enclaves_options.signing_key",
                "must be {\"default\": {}} (the app's key, held by the manager): requests name \
                 no keys of the manager's host",
            ));
        }
    }
    let field_prefix = |e: Error, prefix: &str| match e {
        Error::InvalidField { field, reason } => Error::field(format!("{prefix}.{field}"), reason),
        Error::InvalidBody(reason) => Error::field(prefix, reason),
        e => e,
    };
    let co = &r.request.converter_options;
    let converter_options: ConverterOptions = if co.is_null() {
        Default::default()
    } else {
        crate::http::from_value(co.clone())
            .map_err(|e| field_prefix(e, "request.converter_options"))?
    };
    let no = &r.nitro_enclaves_options;
    let nitro_enclaves_options: NitroEnclavesOptions = if no.is_null() {
        Default::default()
    } else {
        crate::http::from_value(no.clone())
            .map_err(|e| field_prefix(e, "nitro_enclaves_options"))?
    };
    let o = NitroOptions {
        converter_options,
        nitro_enclaves_options,
    };
    cloak_convert::nitro::check_options(&o).map_err(options_error)?;
    Ok(o)
}

/// The repository part of a registry image (`host/repo`, without tag or digest).
pub fn repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => no_digest.to_string(),
    }
}

/// Validates a request into what the job keeps, before anything is queued: names, options
/// (as `cloak convert` checks them), the app, and what the operator must have configured.
pub async fn validate(state: &State, p: &Principal, req: &ConvertRequest) -> Result<(Spec, Creds)> {
    let js = &state.config.jobs;
    match req {
        ConvertRequest::Sgx(r) => {
            let (input, _) = registry_image("inputImageName", &r.input_image_name)?;
            let (output, _) = registry_image("outputImageName", &r.output_image_name)?;
            check_auth("inputAuthConfig", &r.input_auth_config)?;
            check_auth("outputAuthConfig", &r.output_auth_config)?;
            check_auth("authConfig", &r.auth_config)?;
            let options = sgx_options(&r.options)?;
            // A manager that runs workers knows what they lack; an API-only replica
            // (--workers 0) leaves that to the `cloak manager worker` processes.
            if js.workers > 0 && js.sgx_runtime_image.is_none() {
                return Err(Error::Conflict(
                    "this manager converts no SGX images: its operator has not set \
                     --sgx-runtime-image"
                        .into(),
                ));
            }
            let app_id = match &r.app_id {
                Some(a) => {
                    apps::get(state, p, &validate::uuid("appId", a)?)
                        .await?
                        .app_id
                }
                None => sgx_app(state, p, &input, &output).await?,
            };
            let creds = Creds {
                input: pair(&r.input_auth_config).or_else(|| pair(&r.auth_config)),
                output: pair(&r.output_auth_config).or_else(|| pair(&r.auth_config)),
            };
            Ok((
                Spec {
                    target: JobTarget::Sgx,
                    input,
                    output,
                    app_id,
                    sgx: Some(options),
                    nitro: None,
                },
                creds,
            ))
        }
        ConvertRequest::Nitro(r) => {
            let q = &r.request;
            let app_id = validate::uuid("request.app_id", &q.app_id)?;
            let (input, _) = registry_image("request.input_image.name", &q.input_image.name)?;
            let (output, _) = registry_image("request.output_image.name", &q.output_image.name)?;
            check_auth(
                "request.input_image.auth_config",
                &q.input_image.auth_config,
            )?;
            check_auth(
                "request.output_image.auth_config",
                &q.output_image.auth_config,
            )?;
            let options = nitro_options(r)?;
            if js.workers > 0 && js.nitro_kernel.is_none() && js.nitro_blobs.is_none() {
                return Err(Error::Conflict(
                    "this manager converts no Nitro images: its operator has set neither \
                     --nitro-kernel nor --nitro-blobs"
                        .into(),
                ));
            }
            let app_id = apps::get(state, p, &app_id).await?.app_id;
            Ok((
                Spec {
                    target: JobTarget::Nitro,
                    input,
                    output,
                    app_id,
                    sgx: None,
                    nitro: Some(options),
                },
                Creds {
                    input: pair(&q.input_image.auth_config),
                    output: pair(&q.output_image.auth_config),
                },
            ))
        }
    }
}

/// The app of an SGX conversion without `appId`: the app named after the output repository
/// (IBM's converter names apps by image), created when missing if the caller is a MANAGER.
async fn sgx_app(state: &State, p: &Principal, input: &str, output: &str) -> Result<String> {
    let name = repository(output);
    if let Some(a) = apps::find_by_name(state, p, &name).await? {
        return Ok(a.app_id);
    }
    if p.role < Role::Manager {
        return Err(Error::field(
            "appId",
            format!(
                "no app named {name:?} in this account: give appId, or have a MANAGER create \
                 the app (POST /v1/apps) with its approval policy"
            ),
        ));
    }
    let created = apps::create(
        state,
        p,
        cloak_api::AppRequest {
            name: name.clone(),
            input_image_name: repository(input),
            output_image_name: name.clone(),
            ..Default::default()
        },
    )
    .await;
    match created {
        Ok(a) => Ok(a.app_id),
        Err(Error::Conflict(_)) => apps::find_by_name(state, p, &name)
            .await?
            .map(|a| a.app_id)
            .ok_or_else(|| Error::Internal("app vanished".into())),
        Err(e) => Err(e),
    }
}

/// Who asked for a job, kept so that the worker registers the build as them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Requester {
    role: String,
    actor_kind: String,
    actor_id: String,
    actor_name: String,
    owner: String,
}

fn principal_of(account_id: &str, requester: &str) -> Result<Principal> {
    let r: Requester = serde_json::from_str(requester)
        .map_err(|e| Error::Internal(format!("job requester: {e}")))?;
    Ok(Principal {
        account_id: account_id.to_string(),
        role: Role::parse(&r.role).unwrap_or(Role::Reader),
        actor: Actor {
            kind: match r.actor_kind.as_str() {
                "user" => "user",
                "api_key" => "api_key",
                _ => "system",
            },
            id: r.actor_id,
            name: r.actor_name,
        },
        session: None,
        owner: r.owner,
    })
}

fn seal_context(job_id: &str) -> String {
    format!("job:{job_id}")
}

/// Queues a conversion (after validating it) and answers its job; with an idempotency key the
/// account's earlier job under that key is answered instead.
pub async fn submit(state: &State, p: &Principal, request: Submission) -> Result<Job> {
    p.require(Role::Writer)?;
    if let Some(k) = &request.idempotency_key {
        validate::name("Idempotency-Key", k, 255)?;
        if let Some(id) = by_key(state, &p.account_id, k).await? {
            return get(state, p, &id).await;
        }
    }
    let (spec, creds) = validate(state, p, &request.request).await?;
    let js = &state.config.jobs;
    let job_id = uuid::Uuid::new_v4().to_string();
    let sealed = (creds.input.is_some() || creds.output.is_some()).then(|| {
        state.master().seal(
            &seal_context(&job_id),
            &serde_json::to_vec(&creds).expect("credentials serialise"),
        )
    });
    let requester = Requester {
        role: p.role.as_str().into(),
        actor_kind: p.actor.kind.into(),
        actor_id: p.actor.id.clone(),
        actor_name: p.actor.name.clone(),
        owner: p.owner.clone(),
    };
    let now = crate::now_ms();
    let mut tx = state.db.begin().await?;
    // Counted and inserted in one transaction with the account's row locked (SQLite's single
    // writer serialises the same), so parallel submissions cannot all pass the limit.
    sqlx::query(&format!(
        "SELECT account_id FROM accounts WHERE account_id = $1{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let active: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND state IN ('QUEUED', 'RUNNING')",
    )
    .bind(&p.account_id)
    .fetch_one(&mut *tx)
    .await?;
    if active >= js.max_jobs_per_account {
        return Err(Error::RateLimited {
            detail: format!(
                "this account has {active} conversion jobs queued or running, the most this \
                 manager accepts ({}); wait for some to end (GET /v1/jobs?state=RUNNING) or \
                 cancel some",
                js.max_jobs_per_account
            ),
            retry_after: 10,
        });
    }
    let inserted = sqlx::query(
        "INSERT INTO jobs (job_id, account_id, app_id, target, state, bytes_done, attempts, \
         max_attempts, request, credentials, requester, idempotency_key, cancel_requested, \
         input_image, output_image, created_at) \
         VALUES ($1, $2, $3, $4, 'QUEUED', 0, 0, $5, $6, $7, $8, $9, 0, $10, $11, $12)",
    )
    .bind(&job_id)
    .bind(&p.account_id)
    .bind(&spec.app_id)
    .bind(spec.target.as_str())
    .bind(js.max_attempts)
    .bind(serde_json::to_string(&spec).expect("spec serialises"))
    .bind(sealed)
    .bind(serde_json::to_string(&requester).expect("requester serialises"))
    .bind(request.idempotency_key.as_deref())
    .bind(&spec.input)
    .bind(&spec.output)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = inserted {
        drop(tx);
        if e.is_unique_violation() {
            if let Some(k) = &request.idempotency_key {
                if let Some(id) = by_key(state, &p.account_id, k).await? {
                    return get(state, p, &id).await;
                }
            }
        }
        return Err(e);
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Image Conversion Requested",
            entity_type: "job",
            entity_id: &job_id,
            details: json!({
                "target": spec.target.as_str(),
                "input_image": spec.input,
                "output_image": spec.output,
                "app_id": spec.app_id,
            }),
        },
    )
    .await?;
    get(state, p, &job_id).await
}

async fn by_key(state: &State, account_id: &str, key: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar(
            "SELECT job_id FROM jobs WHERE account_id = $1 AND idempotency_key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(state.db.reader())
        .await?,
    )
}

const COLS: &str = "job_id, app_id, target, state, stage, bytes_done, bytes_total, attempts, \
    created_at, started_at, finished_at, error_stage, error_message, build_id, result, \
    input_image, output_image";

async fn from_row(state: &State, p: &Principal, r: &sqlx::any::AnyRow) -> Result<Job> {
    let target = match r.try_get::<String, _>("target")?.as_str() {
        "NITRO" => JobTarget::Nitro,
        _ => JobTarget::Sgx,
    };
    let st: String = r.try_get("state")?;
    let state_ = JobState::parse(&st).ok_or_else(|| Error::Internal(format!("job state {st}")))?;
    let error_stage: Option<String> = r.try_get("error_stage")?;
    let error_message: Option<String> = r.try_get("error_message")?;
    let build_id: Option<String> = r.try_get("build_id")?;
    let stored: Option<String> = r.try_get("result")?;
    let mut result = stored
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| Error::Internal(format!("job result: {e}")))?;
    // Nitro's answer is CCM's Build object: shown as it is now (its status moves on).
    if target == JobTarget::Nitro && state_ == JobState::Succeeded {
        if let Some(b) = &build_id {
            if let Ok(build) = crate::builds::get(state, p, b).await {
                result = Some(serde_json::to_value(build).expect("builds serialise"));
            }
        }
    }
    Ok(Job {
        job_id: r.try_get("job_id")?,
        app_id: r.try_get("app_id")?,
        target,
        state: state_,
        stage: r.try_get("stage")?,
        bytes_done: r.try_get("bytes_done")?,
        bytes_total: r.try_get("bytes_total")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        // A job that is retrying shows its last error while it is queued or running again.
        error: error_message.map(|message| JobError {
            stage: error_stage.unwrap_or_else(|| "queue".into()),
            message,
        }),
        build_id,
        result,
        input_image: r.try_get("input_image")?,
        output_image: r.try_get("output_image")?,
    })
}

/// One job of the caller's account.
pub async fn get(state: &State, p: &Principal, id: &str) -> Result<Job> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM jobs WHERE job_id = $1 AND account_id = $2"
    ))
    .bind(id)
    .bind(&p.account_id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "job",
        id: id.to_string(),
    })?;
    from_row(state, p, &row).await
}

/// The account's jobs, newest first: (total, filtered, page).
pub async fn list(
    state: &State,
    p: &Principal,
    filter_state: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(i64, i64, Vec<Job>)> {
    let filter_state = filter_state
        .filter(|s| !s.is_empty())
        .map(|s| {
            JobState::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                Error::field(
                    "state",
                    "must be QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED",
                )
            })
        })
        .transpose()?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE account_id = $1")
        .bind(&p.account_id)
        .fetch_one(state.db.reader())
        .await?;
    let (filtered, rows) = match filter_state {
        Some(s) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND state = $2",
            )
            .bind(&p.account_id)
            .bind(s.as_str())
            .fetch_one(state.db.reader())
            .await?;
            let rows = sqlx::query(&format!(
                "SELECT {COLS} FROM jobs WHERE account_id = $1 AND state = $2 \
                 ORDER BY created_at DESC, job_id LIMIT $3 OFFSET $4"
            ))
            .bind(&p.account_id)
            .bind(s.as_str())
            .bind(limit)
            .bind(offset)
            .fetch_all(state.db.reader())
            .await?;
            (n, rows)
        }
        None => {
            let rows = sqlx::query(&format!(
                "SELECT {COLS} FROM jobs WHERE account_id = $1 \
                 ORDER BY created_at DESC, job_id LIMIT $2 OFFSET $3"
            ))
            .bind(&p.account_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(state.db.reader())
            .await?;
            (total, rows)
        }
    };
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(state, p, r).await?);
    }
    Ok((total, filtered, items))
}

/// The attempts of a job, oldest first (its history: who ran it, how each attempt ended).
pub async fn attempts(state: &State, p: &Principal, id: &str) -> Result<Vec<JobAttempt>> {
    get(state, p, id).await?;
    let rows = sqlx::query(
        "SELECT attempt, worker, started_at, ended_at, outcome, error FROM job_attempts \
         WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(JobAttempt {
                attempt: r.try_get("attempt")?,
                worker: r.try_get("worker")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
                outcome: r.try_get("outcome")?,
                error: r.try_get("error")?,
            })
        })
        .collect()
}

/// Cancels a job: a QUEUED one at once, a RUNNING one as soon as its worker sees the request
/// (at its next heartbeat, and at the latest in the check the worker makes right before the
/// manifest is written: a RUNNING job cancelled before that point never gets its tag; one
/// cancelled after it ends SUCCEEDED).
pub async fn cancel(state: &State, p: &Principal, id: &str) -> Result<Job> {
    let mut tx = state.db.begin().await?;
    let st: Option<String> = sqlx::query_scalar(&format!(
        "SELECT state FROM jobs WHERE job_id = $1 AND account_id = $2{}",
        state.db.for_update()
    ))
    .bind(id)
    .bind(&p.account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let st = st.ok_or_else(|| Error::NotFound {
        kind: "job",
        id: id.to_string(),
    })?;
    let now = crate::now_ms();
    match st.as_str() {
        "QUEUED" => {
            sqlx::query(
                "UPDATE jobs SET state = 'CANCELLED', finished_at = $1, credentials = NULL, \
                 cancel_requested = 1 WHERE job_id = $2 AND state = 'QUEUED'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        "RUNNING" => {
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE job_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        other => {
            return Err(Error::Conflict(format!(
                "job {id} has already ended ({other}); nothing to cancel"
            )))
        }
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Image Conversion Cancelled",
            entity_type: "job",
            entity_id: id,
            details: json!({ "state_when_cancelled": st }),
        },
    )
    .await?;
    get(state, p, id).await
}

/// Synchronous conversion calls waiting for their jobs in this process: in all and per account
/// (each waiter polls the database until its job ends, so they are bounded per replica).
#[derive(Debug, Default)]
pub struct Waiters {
    counts: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// Which bound refused a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitLimit {
    /// The account's (`--max-sync-waiters-per-account`).
    Account,
    /// This process's (`--max-sync-waiters`).
    Replica,
}

/// A place among the [`Waiters`], given back when dropped.
#[derive(Debug)]
pub struct WaitSlot {
    waiters: std::sync::Arc<Waiters>,
    account: String,
}

impl Waiters {
    /// A slot for a caller of `account`, or which limit is reached.
    pub fn enter(
        self: &std::sync::Arc<Self>,
        account: &str,
        max_total: usize,
        max_per_account: usize,
    ) -> std::result::Result<WaitSlot, WaitLimit> {
        let mut c = self.counts.lock().expect("waiters lock");
        let mine = c.1.get(account).copied().unwrap_or(0);
        if mine >= max_per_account {
            return Err(WaitLimit::Account);
        }
        if c.0 >= max_total {
            return Err(WaitLimit::Replica);
        }
        c.0 += 1;
        c.1.insert(account.to_string(), mine + 1);
        Ok(WaitSlot {
            waiters: self.clone(),
            account: account.to_string(),
        })
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut c = self.waiters.counts.lock().expect("waiters lock");
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.account);
            }
        }
    }
}

/// Waits until a job ends, for at most `limit`; answers it as it is then.
pub async fn wait(
    state: &State,
    p: &Principal,
    id: &str,
    limit: std::time::Duration,
) -> Result<Job> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let job = get(state, p, id).await?;
        if job.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(job);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

// ---- the worker's side ----

/// A job a worker holds: its lease is `(owner, attempt)`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub owner: String,
    pub spec: Spec,
    pub creds: Creds,
    pub principal: Principal,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease is renewed: go on.
    Continue,
    /// Someone asked to cancel the job: stop.
    Cancel,
    /// The lease is gone (expired and taken, or the job ended): stop and change nothing.
    Lost,
}

/// Takes the oldest job that is QUEUED or whose lease expired (within the per-account running
/// limit); a job whose lease expired on its last attempt is FAILED instead.
pub async fn claim(state: &State, owner: &str) -> Result<Option<Claim>> {
    for _ in 0..16 {
        match claim_once(state, owner).await? {
            ClaimStep::Got(c) => return Ok(Some(*c)),
            ClaimStep::Nothing => return Ok(None),
            ClaimStep::Again => continue,
        }
    }
    Ok(None)
}

enum ClaimStep {
    Got(Box<Claim>),
    Nothing,
    Again,
}

async fn claim_once(state: &State, owner: &str) -> Result<ClaimStep> {
    let js = &state.config.jobs;
    let now = crate::now_ms();
    let lock = match state.db.dialect {
        crate::store::Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        crate::store::Dialect::Sqlite => "",
    };
    let mut tx = state.db.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT job_id, account_id, state, attempts, max_attempts, request, credentials, \
         requester, error_stage, error_message FROM jobs j \
         WHERE (j.state = 'QUEUED' OR (j.state = 'RUNNING' AND j.lease_expires_at < $1)) \
         AND (SELECT COUNT(*) FROM jobs r WHERE r.account_id = j.account_id \
              AND r.state = 'RUNNING' AND r.lease_expires_at >= $1) < $2 \
         ORDER BY j.created_at, j.job_id LIMIT 1{lock}"
    ))
    .bind(now)
    .bind(js.max_running_per_account)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(ClaimStep::Nothing);
    };
    let job_id: String = row.try_get("job_id")?;
    let account_id: String = row.try_get("account_id")?;
    let old_state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let max_attempts: i64 = row.try_get("max_attempts")?;
    let principal = principal_of(&account_id, &row.try_get::<String, _>("requester")?)?;
    if old_state == "RUNNING" {
        sqlx::query(
            "UPDATE job_attempts SET ended_at = $1, outcome = 'LEASE_EXPIRED' \
             WHERE job_id = $2 AND attempt = $3 AND outcome IS NULL",
        )
        .bind(now)
        .bind(&job_id)
        .bind(attempts)
        .execute(&mut *tx)
        .await?;
        if attempts >= max_attempts {
            let last: Option<String> = row.try_get("error_message")?;
            let stage: Option<String> = row.try_get("error_stage")?;
            let message = format!(
                "attempt {attempts} of {max_attempts} stopped renewing its lease (its worker died \
                 or lost the database){}; the job will not be tried again: submit it anew",
                last.map(|l| format!("; the error before: {l}"))
                    .unwrap_or_default()
            );
            let done = sqlx::query(
                "UPDATE jobs SET state = 'FAILED', finished_at = $1, credentials = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, error_stage = $2, error_message = $3 \
                 WHERE job_id = $4 AND state = 'RUNNING' AND attempts = $5",
            )
            .bind(now)
            .bind(stage.as_deref().unwrap_or("queue"))
            .bind(&message)
            .bind(&job_id)
            .bind(attempts)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(ClaimStep::Again);
            }
            let spec: Spec = serde_json::from_str(&row.try_get::<String, _>("request")?)
                .map_err(|e| Error::Internal(format!("job request: {e}")))?;
            audit::record(
                state,
                tx,
                &principal,
                failed_event(
                    &job_id,
                    &spec,
                    stage.as_deref().unwrap_or("queue"),
                    &message,
                ),
            )
            .await?;
            return Ok(ClaimStep::Again);
        }
    }
    let attempt = attempts + 1;
    let taken = sqlx::query(
        "UPDATE jobs SET state = 'RUNNING', attempts = $1, lease_owner = $2, lease_expires_at = $3, \
         started_at = COALESCE(started_at, $4), stage = NULL, bytes_done = 0, bytes_total = NULL \
         WHERE job_id = $5 AND state = $6 AND attempts = $7",
    )
    .bind(attempt)
    .bind(owner)
    .bind(now + js.lease_ms)
    .bind(now)
    .bind(&job_id)
    .bind(&old_state)
    .bind(attempts)
    .execute(&mut *tx)
    .await?;
    if taken.rows_affected() != 1 {
        return Ok(ClaimStep::Again);
    }
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&job_id)
    .bind(attempt)
    .bind(owner)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let spec: Spec = serde_json::from_str(&row.try_get::<String, _>("request")?)
        .map_err(|e| Error::Internal(format!("job request: {e}")))?;
    let sealed: Option<Vec<u8>> = row.try_get("credentials")?;
    let creds = match sealed {
        Some(s) => {
            let plain = state.master().open(&seal_context(&job_id), &s)?;
            serde_json::from_slice(&plain).map_err(|_| Error::Decrypt {
                what: seal_context(&job_id),
            })?
        }
        None => Creds::default(),
    };
    Ok(ClaimStep::Got(Box::new(Claim {
        job_id,
        attempt,
        max_attempts,
        owner: owner.to_string(),
        spec,
        creds,
        principal,
    })))
}

/// Renews the lease and records progress; tells the worker whether to go on.
pub async fn heartbeat(
    state: &State,
    c: &Claim,
    stage: Option<&str>,
    bytes_done: i64,
    bytes_total: Option<i64>,
) -> Result<Heartbeat> {
    let now = crate::now_ms();
    let renewed = sqlx::query(
        "UPDATE jobs SET lease_expires_at = $1, stage = $2, bytes_done = $3, bytes_total = $4 \
         WHERE job_id = $5 AND lease_owner = $6 AND attempts = $7 AND state = 'RUNNING'",
    )
    .bind(now + state.config.jobs.lease_ms)
    .bind(stage)
    .bind(bytes_done)
    .bind(bytes_total)
    .bind(&c.job_id)
    .bind(&c.owner)
    .bind(c.attempt)
    .execute(state.db.writer())
    .await?;
    if renewed.rows_affected() != 1 {
        return Ok(Heartbeat::Lost);
    }
    let cancel: i64 = sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE job_id = $1")
        .bind(&c.job_id)
        .fetch_one(state.db.reader())
        .await?;
    Ok(if cancel != 0 {
        Heartbeat::Cancel
    } else {
        Heartbeat::Continue
    })
}

fn failed_event<'a>(job_id: &'a str, spec: &Spec, stage: &str, message: &str) -> Event<'a> {
    Event {
        action: "Image Conversion Failed",
        entity_type: "job",
        entity_id: job_id,
        details: json!({
            "target": spec.target.as_str(),
            "input_image": spec.input,
            "output_image": spec.output,
            "stage": stage,
            "error": message,
        }),
    }
}

/// The guarded end of an attempt: sets the job's end state, erases the credentials and closes
/// the attempt's history row. False when the lease was lost (nothing changed).
async fn end_attempt(
    tx: &mut crate::store::Tx,
    c: &Claim,
    state_: &str,
    outcome: &str,
    error: Option<(&str, &str)>,
) -> Result<bool> {
    let now = crate::now_ms();
    let requeue = state_ == "QUEUED";
    let done = sqlx::query(&format!(
        "UPDATE jobs SET state = $1, lease_owner = NULL, lease_expires_at = NULL, \
         error_stage = COALESCE($2, error_stage), error_message = COALESCE($3, error_message){} \
         WHERE job_id = $4 AND lease_owner = $5 AND attempts = $6 AND state = 'RUNNING'",
        if requeue {
            String::new()
        } else {
            format!(", finished_at = {now}, credentials = NULL")
        }
    ))
    .bind(state_)
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .bind(&c.job_id)
    .bind(&c.owner)
    .bind(c.attempt)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE job_attempts SET ended_at = $1, outcome = $2, error = $3 \
         WHERE job_id = $4 AND attempt = $5",
    )
    .bind(now)
    .bind(outcome)
    .bind(error.map(|e| e.1))
    .bind(&c.job_id)
    .bind(c.attempt)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// The role the requester of a job has in its account now: a user's, or an API key's (never
/// more than its creator's); `Err` says why they have none any more (disabled, revoked, gone).
/// The rows read are locked (PostgreSQL) so a role change waits for the transaction.
async fn current_role(
    state: &State,
    tx: &mut crate::store::Tx,
    p: &Principal,
) -> Result<std::result::Result<Role, String>> {
    let lock = state.db.for_update();
    let who = format!("{} {:?}", p.actor.kind.replace('_', " "), p.actor.name);
    match p.actor.kind {
        "user" => {
            let row = sqlx::query(&format!(
                "SELECT role, status FROM users WHERE user_id = $1 AND account_id = $2{lock}"
            ))
            .bind(&p.actor.id)
            .bind(&p.account_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else {
                return Ok(Err(format!("{who} is no longer a member of the account")));
            };
            let status: String = row.try_get(1)?;
            if status != "ACTIVE" {
                return Ok(Err(format!(
                    "{who} was removed from the account ({status})"
                )));
            }
            Ok(Ok(
                Role::parse(&row.try_get::<String, _>(0)?).unwrap_or(Role::Reader)
            ))
        }
        "api_key" => {
            // An inner join, as authentication's (PostgreSQL locks no outer join's null side).
            let row = sqlx::query(&format!(
                "SELECT k.role, k.revoked_at, u.role, u.status, u.user_name FROM api_keys k \
                 JOIN users u ON u.user_id = k.created_by_user_id \
                 WHERE k.key_id = $1 AND k.account_id = $2{lock}"
            ))
            .bind(&p.actor.id)
            .bind(&p.account_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else {
                return Ok(Err(format!(
                    "{who}, or the user who created it, no longer exists"
                )));
            };
            if row.try_get::<Option<i64>, _>(1)?.is_some() {
                return Ok(Err(format!("{who} was revoked")));
            }
            let creator_status: String = row.try_get(3)?;
            if creator_status != "ACTIVE" {
                let creator: String = row.try_get(4)?;
                return Ok(Err(format!(
                    "{who} acts for user {creator:?}, who was removed from the account"
                )));
            }
            let key = Role::parse(&row.try_get::<String, _>(0)?).unwrap_or(Role::Reader);
            let creator = Role::parse(&row.try_get::<String, _>(2)?).unwrap_or(Role::Reader);
            Ok(Ok(key.min(creator)))
        }
        // The manager itself (no person to lose a role).
        _ => Ok(Ok(p.role)),
    }
}

/// Ends a job that succeeded: registers its build (exactly as `POST /v1/builds`) in the same
/// transaction that marks the job SUCCEEDED, so a lost lease registers nothing. The
/// requester's role is read again there: someone removed or demoted below WRITER since they
/// submitted the job gets no build (the job fails, saying so).
pub async fn succeed(
    state: &State,
    c: &Claim,
    nb: crate::builds::NewBuild,
    result: Option<Value>,
) -> Result<bool> {
    let app = crate::builds::prepare(state, &c.principal, &nb).await?;
    let mut tx = state.db.begin().await?;
    let role = match current_role(state, &mut tx, &c.principal).await? {
        Ok(role) if role >= Role::Writer => Ok(role),
        Ok(role) => Err(format!(
            "{} {:?}, who requested this job, is no longer a WRITER of the account (now {})",
            c.principal.actor.kind.replace('_', " "),
            c.principal.actor.name,
            role.as_str()
        )),
        Err(why) => Err(why),
    }
    .map_err(|why| {
        Error::Forbidden(format!(
            "{why}: no build is registered for the image pushed to {}; a current WRITER of \
             the account may submit the conversion again",
            c.spec.output
        ))
    })?;
    let p = &Principal {
        role,
        ..c.principal.clone()
    };
    if !end_attempt(&mut tx, c, "SUCCEEDED", "SUCCEEDED", None).await? {
        return Ok(false);
    }
    let (build_id, details) = crate::builds::insert(state, &mut tx, p, &nb, &app).await?;
    sqlx::query(
        "UPDATE jobs SET build_id = $1, result = $2, stage = NULL, error_stage = NULL, \
         error_message = NULL WHERE job_id = $3",
    )
    .bind(&build_id)
    .bind(result.map(|r| r.to_string()))
    .bind(&c.job_id)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &state.db,
        &mut tx,
        &p.account_id,
        &p.actor,
        crate::builds::registered(&build_id, details),
    )
    .await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Image Conversion Succeeded",
            entity_type: "job",
            entity_id: &c.job_id,
            details: json!({
                "target": c.spec.target.as_str(),
                "input_image": c.spec.input,
                "output_image": c.spec.output,
                "build_id": build_id,
                "attempt": c.attempt,
            }),
        },
    )
    .await?;
    Ok(true)
}

/// Ends an attempt that failed: back to the queue when the error is transient and attempts
/// remain, else FAILED (with its audit record).
pub async fn fail(
    state: &State,
    c: &Claim,
    stage: &str,
    message: &str,
    transient: bool,
) -> Result<bool> {
    let mut tx = state.db.begin().await?;
    if transient && c.attempt < c.max_attempts {
        let ok = end_attempt(&mut tx, c, "QUEUED", "RETRY", Some((stage, message))).await?;
        tx.commit().await?;
        return Ok(ok);
    }
    if !end_attempt(&mut tx, c, "FAILED", "FAILED", Some((stage, message))).await? {
        return Ok(false);
    }
    audit::record(
        state,
        tx,
        &c.principal,
        failed_event(&c.job_id, &c.spec, stage, message),
    )
    .await?;
    Ok(true)
}

/// Ends an attempt whose job was cancelled.
pub async fn cancelled(state: &State, c: &Claim, stage: Option<&str>) -> Result<bool> {
    let mut tx = state.db.begin().await?;
    let msg = format!(
        "cancelled{}",
        stage.map(|s| format!(" during {s}")).unwrap_or_default()
    );
    let ok = end_attempt(&mut tx, c, "CANCELLED", "CANCELLED", None).await?;
    if ok {
        sqlx::query("UPDATE job_attempts SET error = $1 WHERE job_id = $2 AND attempt = $3")
            .bind(&msg)
            .bind(&c.job_id)
            .bind(c.attempt)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ok)
}

/// Re-seals the credentials of jobs that have not ended (master key rotation).
pub async fn reseal_all(db: &crate::store::Db, keys: &crate::secrets::MasterKey) -> Result<usize> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query("SELECT job_id, credentials FROM jobs WHERE credentials IS NOT NULL")
        .fetch_all(&mut *tx)
        .await?;
    let mut n = 0;
    for r in &rows {
        let id: String = r.try_get(0)?;
        let sealed: Vec<u8> = r.try_get(1)?;
        if keys.is_current(&sealed) {
            continue;
        }
        let plain = keys.open(&seal_context(&id), &sealed)?;
        sqlx::query("UPDATE jobs SET credentials = $1 WHERE job_id = $2")
            .bind(keys.seal(&seal_context(&id), &plain))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_submissions_and_credentials_masks_the_passwords() {
        let pw = "Pa55word-that-must-not-be-logged";
        let auth = Some(ConvertAuthConfig {
            username: "u".into(),
            password: Some(pw.into()),
        });
        let submission = Submission {
            request: ConvertRequest::Sgx(ConvertImageRequest {
                input_auth_config: auth.clone(),
                output_auth_config: auth.clone(),
                auth_config: auth,
                ..Default::default()
            }),
            idempotency_key: None,
        };
        let creds = Creds {
            input: Some(("u".into(), pw.into())),
            output: Some(("v".into(), pw.into())),
        };
        for shown in [format!("{submission:?}"), format!("{creds:?}")] {
            assert!(!shown.contains(pw), "{shown}");
            assert!(shown.contains(MASK), "{shown}");
        }
    }

    #[test]
    fn waiters_are_bounded_per_account_and_in_all_and_leave_when_dropped() {
        let w = std::sync::Arc::new(Waiters::default());
        let a1 = w.enter("a", 3, 2).unwrap();
        let _a2 = w.enter("a", 3, 2).unwrap();
        assert_eq!(w.enter("a", 3, 2).unwrap_err(), WaitLimit::Account);
        let _b1 = w.enter("b", 3, 2).unwrap();
        assert_eq!(w.enter("b", 3, 2).unwrap_err(), WaitLimit::Replica);
        drop(a1);
        let _a3 = w.enter("a", 3, 2).unwrap();
        assert_eq!(w.enter("c", 3, 2).unwrap_err(), WaitLimit::Replica);
    }

    #[test]
    fn repositories_drop_the_tag_and_digest_but_not_the_port() {
        for (image, repo) in [
            ("127.0.0.1:5000/apps/bb:1", "127.0.0.1:5000/apps/bb"),
            ("127.0.0.1:5000/apps/bb", "127.0.0.1:5000/apps/bb"),
            ("reg.example/app@sha256:abcd", "reg.example/app"),
            ("reg.example/app:2@sha256:abcd", "reg.example/app"),
            ("busybox:1.36", "busybox"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn requests_may_not_name_files_of_the_host() {
        for name in [
            "oci:/etc:1",
            "docker-archive:/root/x.tar",
            "dir:/tmp/x",
            "docker://oci:/x",
        ] {
            let e = registry_image("inputImageName", name).unwrap_err();
            assert!(e.to_string().starts_with("inputImageName"), "{name}: {e}");
        }
        let (bare, _) = registry_image("inputImageName", "docker://127.0.0.1:5000/a:1").unwrap();
        assert_eq!(bare, "127.0.0.1:5000/a:1");
        assert!(registry_image("inputImageName", "a b").is_err());
    }

    #[test]
    fn nitro_bodies_come_nested_or_flat() {
        let nested = br#"{"request": {"app_id": "a", "input_image": {"name": "r/i:1"},
            "output_image": {"name": "r/o:1"}, "converter_options": {}},
            "nitro_enclaves_options": {"cpu_count": 2}}"#;
        let flat = br#"{"app_id": "a", "input_image": {"name": "r/i:1"},
            "output_image": {"name": "r/o:1"}, "converter_options": {},
            "nitro_enclaves_options": {"cpu_count": 2}}"#;
        for body in [&nested[..], &flat[..]] {
            let r = parse_nitro(body).unwrap();
            assert_eq!(r.request.output_image.name, "r/o:1");
            assert_eq!(r.nitro_enclaves_options["cpu_count"], 2);
        }
        let e = parse_nitro(br#"{"request": {"app_id": "a"}}"#).unwrap_err();
        assert!(e.to_string().contains("input_image"), "{e}");
    }

    #[test]
    fn sgx_options_are_checked_as_cloak_convert_checks_them() {
        let opts = |v: Value| v.as_object().unwrap().clone();
        assert!(sgx_options(&opts(json!({"memSize": "1G", "threads": 4}))).is_ok());
        for (bad, named) in [
            (json!({"memSize": "3G"}), "memSize"),
            (json!({"memsize": "1G"}), "memsize"),
            (json!({"signingKey": {"sdkms": {}}}), "signingKey.sdkms"),
            (
                json!({"signingKey": {"uri": "file:/k.pem"}}),
                "signingKey.uri",
            ),
            (json!({"coreDumpPattern": "/x"}), "coreDumpPattern"),
        ] {
            let e = sgx_options(&opts(bad.clone())).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.to_string().contains(named), "{bad}: {e}");
        }
    }
}
