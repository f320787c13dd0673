//! The route table (one entry per operation: path, method, who may call it, schemas) and the
//! handlers, which only map requests to the domain modules.

use axum::extract::{Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Json;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::http::{client_addr, ClientAddr, JsonBody, Q};
use crate::{apps, audit, auth, builds, certs, configs, jobs, registry, tasks, users, State};
use cloak_api::*;

/// Who may call a route (the reference's `x-auth-resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials.
    Public,
    /// Any role of the account.
    Reader,
    Writer,
    Manager,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Reader => "READER",
            Access::Writer => "WRITER",
            Access::Manager => "MANAGER",
        }
    }
}

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One operation of the API.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub op_id: &'static str,
    pub summary: &'static str,
    /// (name, JSON type, description) of the query parameters.
    pub query: &'static [(&'static str, &'static str, &'static str)],
    pub request: Option<SchemaFn>,
    pub response: Option<SchemaFn>,
    pub status: u16,
    pub content_type: &'static str,
    pub handler: fn() -> MethodRouter<State>,
}

fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

const PAGE: &[(&str, &str, &str)] = &[
    ("limit", "integer", "page size, 1 to 1000 (default 50)"),
    ("offset", "integer", "items to skip"),
];
const BUILD_Q: &[(&str, &str, &str)] = &[
    ("limit", "integer", "page size, 1 to 1000 (default 50)"),
    ("offset", "integer", "items to skip"),
    ("status", "string", "PENDING, WHITELISTED or REJECTED"),
    (
        "docker_image_name",
        "string",
        "substring of the image or app output image name",
    ),
    (
        "all_search",
        "string",
        "substring of image, app name, mrenclave, mrsigner or pcr0",
    ),
    ("app_id", "string", "only this app's builds"),
    (
        "sort_by",
        "string",
        "key:ASC,key:DESC over created_at, updated_at, docker_image_name, status, app_name",
    ),
];
const TASK_Q: &[(&str, &str, &str)] = &[
    ("limit", "integer", "page size, 1 to 1000 (default 50)"),
    ("offset", "integer", "items to skip"),
    ("task_type", "string", "BUILD_WHITELIST"),
    (
        "status",
        "string",
        "INPROGRESS (PENDING), SUCCESS (APPROVED), DENIED or FAILED",
    ),
];
const JOB_Q: &[(&str, &str, &str)] = &[
    ("limit", "integer", "page size, 1 to 1000 (default 50)"),
    ("offset", "integer", "items to skip"),
    (
        "state",
        "string",
        "QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED",
    ),
];
const AUDIT_Q: &[(&str, &str, &str)] = &[
    ("limit", "integer", "page size, 1 to 1000 (default 50)"),
    ("offset", "integer", "items to skip"),
    (
        "action",
        "string",
        "only this action, e.g. Build Whitelisted",
    ),
    ("entity_id", "string", "only records about this object"),
    ("actor", "string", "only this actor name"),
    (
        "since_seq",
        "integer",
        "records after this sequence number, oldest first",
    ),
];

macro_rules! route {
    ($m:ident $path:literal, $access:ident, $op:literal, $summary:literal, $h:expr,
     req: $req:expr, resp: $resp:expr, status: $status:literal $(, query: $q:expr)? $(, content: $ct:literal)?) => {
        Route {
            method: stringify!($m),
            path: $path,
            access: Access::$access,
            op_id: $op,
            summary: $summary,
            query: { #[allow(unused_mut, unused_assignments)] let mut q: &'static [(&str, &str, &str)] = &[]; $(q = $q;)? q },
            request: $req,
            response: $resp,
            status: $status,
            content_type: { #[allow(unused_mut, unused_assignments)] let mut c = "application/json"; $(c = $ct;)? c },
            handler: || $m($h),
        }
    };
}

/// Every operation of the API.
pub static ROUTES: &[Route] = &[
    route!(get "/healthz", Public, "liveness", "The process is alive.", healthz,
        req: None, resp: Some(s::<serde_json::Value>), status: 200),
    route!(get "/readyz", Public, "readiness", "The database answers and the schema is current.", readyz,
        req: None, resp: Some(s::<serde_json::Value>), status: 200),
    route!(get "/metrics", Manager, "metrics", "Prometheus metrics (scrape with a MANAGER API key: the gauges span every account).", metrics,
        req: None, resp: Some(s::<String>), status: 200, content: "text/plain"),
    route!(get "/openapi.json", Public, "openapi", "This document.", openapi_doc,
        req: None, resp: Some(s::<serde_json::Value>), status: 200),
    route!(get "/v1/sys/version", Public, "getManagerVersion", "The manager's version.", version,
        req: None, resp: Some(s::<Version>), status: 200),
    route!(post "/v1/sys/auth", Public, "authenticateUser", "Log in with HTTP Basic credentials; answers a bearer token.", login,
        req: None, resp: Some(s::<AuthResponse>), status: 200),
    route!(post "/v1/sys/session/terminate", Reader, "terminate", "End the caller's session.", terminate,
        req: None, resp: None, status: 204),
    route!(get "/v1/user", Reader, "getLoggedInUser", "The logged-in user.", me,
        req: None, resp: Some(s::<User>), status: 200),
    route!(get "/v1/users", Reader, "getAllUsers", "Users of the account.", list_users,
        req: None, resp: Some(s::<Vec<User>>), status: 200),
    route!(post "/v1/users", Manager, "createUser", "Create a user of the account.", create_user,
        req: Some(s::<UserRequest>), resp: Some(s::<User>), status: 201),
    route!(get "/v1/users/{user_id}", Reader, "getUser", "One user.", get_user,
        req: None, resp: Some(s::<User>), status: 200),
    route!(patch "/v1/users/{user_id}", Reader, "updateUser", "Change a user (self: password and email; MANAGER: role and status).", update_user,
        req: Some(s::<UserPatch>), resp: Some(s::<User>), status: 200),
    route!(delete "/v1/users/{user_id}", Manager, "deleteUserAccount", "Disable a user.", delete_user,
        req: None, resp: None, status: 204),
    route!(get "/v1/api_keys", Manager, "listApiKeys", "API keys of the account (never their secrets).", list_keys,
        req: None, resp: Some(s::<Vec<ApiKey>>), status: 200),
    route!(post "/v1/api_keys", Manager, "createApiKey", "Create an API key; its secret is shown once.", create_key,
        req: Some(s::<ApiKeyRequest>), resp: Some(s::<ApiKeyCreated>), status: 201),
    route!(delete "/v1/api_keys/{key_id}", Manager, "revokeApiKey", "Revoke an API key.", revoke_key,
        req: None, resp: None, status: 204),
    route!(get "/v1/apps", Reader, "getAllApps", "Apps of the account.", list_apps,
        req: None, resp: Some(s::<ListResponse<App>>), status: 200, query: PAGE),
    route!(post "/v1/apps", Manager, "addApplication", "Create an app (with its approval quorum).", create_app,
        req: Some(s::<AppRequest>), resp: Some(s::<App>), status: 201),
    route!(get "/v1/apps/{app_id}", Reader, "getApp", "One app.", get_app,
        req: None, resp: Some(s::<App>), status: 200),
    route!(patch "/v1/apps/{app_id}", Writer, "updateApp", "Change an app (its approval policy: MANAGER only).", update_app,
        req: Some(s::<AppPatch>), resp: Some(s::<App>), status: 200),
    route!(delete "/v1/apps/{app_id}", Manager, "deleteApp", "Delete an app without builds.", delete_app,
        req: None, resp: None, status: 204),
    route!(get "/v1/builds", Reader, "getAllBuilds", "Builds, filtered and paged.", list_builds,
        req: None, resp: Some(s::<ListResponse<Build>>), status: 200, query: BUILD_Q),
    route!(post "/v1/builds", Writer, "createBuild", "Register a build (CCM's CreateBuildRequest or IBM's flat body); opens its whitelist task.", create_build,
        req: Some(s::<BuildRequest>), resp: Some(s::<Build>), status: 201),
    route!(get "/v1/builds/{build_id}", Reader, "getBuild", "One build.", get_build,
        req: None, resp: Some(s::<Build>), status: 200),
    route!(patch "/v1/builds/{build_id}", Writer, "updateBuild", "Change a build's configs or advanced settings.", update_build,
        req: Some(s::<BuildPatch>), resp: Some(s::<Build>), status: 200),
    route!(delete "/v1/builds/{build_id}", Writer, "deleteBuild", "Delete a PENDING build (decided builds stay on record: revoke them).", delete_build,
        req: None, resp: None, status: 204),
    route!(post "/v1/builds/{build_id}/revoke", Writer, "revokeBuild", "Revoke a build (REJECTED, with a reason).", revoke_build,
        req: Some(s::<RevokeRequest>), resp: Some(s::<Build>), status: 200),
    route!(post "/convert-image", Writer, "convertImage", "Convert an image for SGX (EnclaveOS's request and response); waits for the result unless `Prefer: respond-async` (then 202 and the job). A wait past the operator's --sync-wait-seconds (default 600) answers 202 and the job; beyond the operator's limits on waiting calls, 429 `too_many_waiters` with the queued job in `Location`. `Idempotency-Key` makes a retry return the same job.", convert_sgx,
        req: Some(s::<ConvertImageRequest>), resp: Some(s::<ConvertImageResponse>), status: 200),
    route!(post "/v1/tools/converter/convert-app", Writer, "convertApp", "Convert an image for SGX (IBM Data Shield's converter; the EnclaveOS request and response); `Prefer: respond-async` answers 202 and the job.", convert_sgx,
        req: Some(s::<ConvertImageRequest>), resp: Some(s::<ConvertImageResponse>), status: 200),
    route!(post "/v1/builds/convert-app/nitro-enclaves", Writer, "convertAppBuildNitroEnclaves", "Convert an image for Nitro Enclaves and register the build (CCM); `Prefer: respond-async` answers 202 and the job.", convert_nitro,
        req: Some(s::<NitroConversionRequest>), resp: Some(s::<Build>), status: 200),
    route!(post "/v1/tools/converter/convert-app/nitro-enclaves", Writer, "convertAppNitroEnclaves", "The same as POST /v1/builds/convert-app/nitro-enclaves.", convert_nitro,
        req: Some(s::<NitroConversionRequest>), resp: Some(s::<Build>), status: 200),
    route!(get "/v1/jobs", Reader, "listJobs", "Conversion jobs of the account, newest first.", list_jobs,
        req: None, resp: Some(s::<ListResponse<Job>>), status: 200, query: JOB_Q),
    route!(get "/v1/jobs/{job_id}", Reader, "getJob", "One conversion job: state, stage, bytes, times, error, build.", get_job,
        req: None, resp: Some(s::<Job>), status: 200),
    route!(post "/v1/jobs/{job_id}/cancel", Writer, "cancelJob", "Cancel a queued or running job (no tag is left behind).", cancel_job,
        req: None, resp: Some(s::<Job>), status: 200),
    route!(get "/v1/jobs/{job_id}/attempts", Reader, "getJobAttempts", "A job's attempts: which worker ran each and how it ended.", job_attempts,
        req: None, resp: Some(s::<Vec<JobAttempt>>), status: 200),
    route!(get "/v1/tasks", Reader, "getAllTasks", "Approval tasks, filtered and paged.", list_tasks,
        req: None, resp: Some(s::<ListResponse<Task>>), status: 200, query: TASK_Q),
    route!(get "/v1/tasks/{task_id}", Reader, "getTask", "One task with its approvals.", get_task,
        req: None, resp: Some(s::<Task>), status: 200),
    route!(patch "/v1/tasks/{task_id}", Writer, "UpdateTask", "Approve, or deny with a reason.", decide_task,
        req: Some(s::<TaskUpdateRequest>), resp: Some(s::<Task>), status: 200),
    route!(get "/v1/tasks/status/{task_id}", Reader, "getTaskStatus", "A task's result.", task_status,
        req: None, resp: Some(s::<TaskResult>), status: 200),
    route!(get "/v1/registry", Reader, "getAllRegistries", "Saved registry credentials (passwords masked).", list_registries,
        req: None, resp: Some(s::<Vec<Registry>>), status: 200),
    route!(post "/v1/registry", Writer, "createRegistry", "Save a registry credential.", create_registry,
        req: Some(s::<RegistryRequest>), resp: Some(s::<Registry>), status: 201),
    route!(get "/v1/registry/{registry_id}", Reader, "getRegistry", "One saved credential (password masked).", get_registry,
        req: None, resp: Some(s::<Registry>), status: 200),
    route!(patch "/v1/registry/{registry_id}", Writer, "updateRegistry", "Change a saved credential.", update_registry,
        req: Some(s::<RegistryPatch>), resp: Some(s::<Registry>), status: 200),
    route!(delete "/v1/registry/{registry_id}", Writer, "deleteRegistry", "Delete a saved credential.", delete_registry,
        req: None, resp: None, status: 204),
    route!(get "/v1/image/registry", Reader, "getRegistryForImage", "The saved credential for an image's registry host.", registry_for_image,
        req: None, resp: Some(s::<Registry>), status: 200, query: &[("name", "string", "image reference")]),
    route!(get "/v1/ca", Public, "getCaChain", "The manager CA's chain (issuing CA, root).", ca_chain,
        req: None, resp: Some(s::<certs::CaResponse>), status: 200),
    route!(get "/v1/ca/crl", Public, "getCaCrl", "The issuing CA's CRL: certificates of revoked builds (DER; PEM with Accept: application/x-pem-file). Valid one hour.", ca_crl,
        req: None, resp: Some(s::<String>), status: 200, content: "application/pkix-crl"),
    route!(post "/v1/attestation/nonce", Public, "createNonce", "A single-use nonce to bind in attestation evidence (5 minutes); rate-limited per client address (429 with Retry-After).", new_nonce,
        req: None, resp: Some(s::<certs::NonceResponse>), status: 200),
    route!(post "/v1/certificates", Public, "requestCertificate", "A certificate for attested evidence of a whitelisted build (authenticated by the evidence).", request_certificate,
        req: Some(s::<certs::CertificateRequest>), resp: Some(s::<certs::CertificateRecord>), status: 201),
    route!(get "/v1/certificates/{certificate_id}", Reader, "getCertificate", "One certificate record (ISSUED or REJECTED, with the reason).", get_certificate,
        req: None, resp: Some(s::<certs::CertificateRecord>), status: 200),
    route!(post "/v1/attestation/evaluate", Writer, "evaluateEvidence", "Run the issuance checks on evidence without issuing (a dry run).", evaluate,
        req: Some(s::<certs::CertificateRequest>), resp: Some(s::<serde_json::Value>), status: 200),
    route!(get "/v1/app_configs", Reader, "getAllApplicationConfigs", "App configs of the account (entry names only: values are write-only).", list_app_configs,
        req: None, resp: Some(s::<AppConfigList>), status: 200, query: &[("app_id", "string", "only this app's configs")]),
    route!(post "/v1/app_configs", Writer, "createApplicationConfig", "Create an app config attached to an app or a build (values sealed at rest).", create_app_config,
        req: Some(s::<AppConfigRequest>), resp: Some(s::<AppConfig>), status: 201),
    route!(get "/v1/app_configs/{config_id}", Reader, "getApplicationConfig", "One app config (entry names only).", get_app_config,
        req: None, resp: Some(s::<AppConfig>), status: 200),
    route!(patch "/v1/app_configs/{config_id}", Writer, "updateApplicationConfig", "Change an app config (app_config replaces every entry).", update_app_config,
        req: Some(s::<AppConfigPatch>), resp: Some(s::<AppConfig>), status: 200),
    route!(delete "/v1/app_configs/{config_id}", Writer, "deleteApplicationConfig", "Delete an app config.", delete_app_config,
        req: None, resp: None, status: 204),
    route!(get "/v1/runtime/app_configs", Public, "getRuntimeApplicationConfig", "The configs of the build a TLS client certificate from this CA was issued to, while it is WHITELISTED (authenticated by that certificate).", runtime_app_configs,
        req: None, resp: Some(s::<RuntimeAppConfig>), status: 200),
    route!(get "/v1/audit", Reader, "getAuditLog", "Audit records of the account, newest first.", list_audit,
        req: None, resp: Some(s::<ListResponse<AuditRecord>>), status: 200, query: AUDIT_Q),
    route!(get "/v1/audit/verify", Reader, "verifyAuditLog", "Check the account's audit chain.", verify_audit,
        req: None, resp: Some(s::<AuditVerification>), status: 200),
    route!(get "/v1/audit/export", Manager, "exportAuditLog", "The whole audit chain as JSON lines.", export_audit,
        req: None, resp: Some(s::<String>), status: 200, content: "application/x-ndjson"),
];

// ---- paging ----

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::field("limit", "must be between 1 and 1000"));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=1_000_000_000).contains(&offset) {
        return Err(Error::field("offset", "must be between 0 and 1000000000"));
    }
    Ok((limit, offset))
}

fn listing<T>(
    items: Vec<T>,
    total: i64,
    filtered: i64,
    limit: i64,
    offset: i64,
) -> ListResponse<T> {
    ListResponse {
        metadata: SearchMetadata {
            page: offset / limit + 1,
            pages: (filtered + limit - 1) / limit,
            limit,
            total_count: total,
            filtered_count: filtered,
        },
        items,
    }
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn id(field: &str, v: &str) -> Result<String> {
    crate::validate::uuid(field, v)
}

// ---- probes and documents ----

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(S(state): S<State>) -> Response {
    match state.db.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let body = ErrorBody {
                kind: "not_ready".into(),
                detail: "the database is unreachable or its schema is not current".into(),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(S(state): S<State>) -> Result<Response> {
    let mut gauges = Vec::new();
    for (status, n) in builds::count_by_status(&state).await? {
        gauges.push((
            "cloak_builds",
            "Builds by status.",
            format!("status=\"{status}\""),
            n as f64,
        ));
    }
    gauges.push((
        "cloak_tasks_pending",
        "Approval tasks in progress.",
        String::new(),
        tasks::count_open(&state).await? as f64,
    ));
    let (size, idle) = state.db.pool_stats();
    gauges.push((
        "cloak_db_pool_connections",
        "Read pool connections.",
        "state=\"open\"".into(),
        size as f64,
    ));
    gauges.push((
        "cloak_db_pool_connections",
        "Read pool connections.",
        "state=\"idle\"".into(),
        idle as f64,
    ));
    let (on, entries, hits, misses) = state.db.cache.stats();
    gauges.push((
        "cloak_read_cache_enabled",
        "Whether GET /v1/builds/{id} is served from this replica's cache (1) or not (0).",
        String::new(),
        f64::from(u8::from(on)),
    ));
    gauges.push((
        "cloak_read_cache_entries",
        "Builds held by this replica's read cache.",
        String::new(),
        entries as f64,
    ));
    let mut text = state.metrics.render(&gauges);
    text.push_str(&format!(
        "# HELP cloak_read_cache_lookups_total Read cache lookups by result.\n\
         # TYPE cloak_read_cache_lookups_total counter\n\
         cloak_read_cache_lookups_total{{result=\"hit\"}} {hits}\n\
         cloak_read_cache_lookups_total{{result=\"miss\"}} {misses}\n"
    ));
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response())
}

async fn openapi_doc() -> Json<serde_json::Value> {
    Json(crate::http::openapi())
}

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
    })
}

// ---- sessions and users ----

async fn login(
    S(state): S<State>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: http::HeaderMap,
) -> Result<Json<AuthResponse>> {
    let client = client_addr(&state, &headers, addr.as_deref());
    Ok(Json(auth::login(&state, &headers, &client).await?))
}

async fn terminate(S(state): S<State>, p: Principal) -> Result<StatusCode> {
    auth::terminate(&state, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(S(state): S<State>, p: Principal) -> Result<Json<User>> {
    let uid = p.user_id().ok_or_else(|| Error::NotFound {
        kind: "user of API key",
        id: p.actor.id.clone(),
    })?;
    Ok(Json(users::get(&state, &p, uid).await?))
}

async fn list_users(S(state): S<State>, p: Principal) -> Result<Json<Vec<User>>> {
    Ok(Json(users::list(&state, &p).await?))
}

async fn create_user(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<UserRequest>,
) -> Result<Response> {
    Ok(created(users::create(&state, &p, req).await?))
}

async fn get_user(S(state): S<State>, p: Principal, Path(uid): Path<String>) -> Result<Json<User>> {
    Ok(Json(users::get(&state, &p, &id("user_id", &uid)?).await?))
}

async fn update_user(
    S(state): S<State>,
    p: Principal,
    Path(uid): Path<String>,
    JsonBody(req): JsonBody<UserPatch>,
) -> Result<Json<User>> {
    Ok(Json(
        users::update(&state, &p, &id("user_id", &uid)?, req).await?,
    ))
}

async fn delete_user(
    S(state): S<State>,
    p: Principal,
    Path(uid): Path<String>,
) -> Result<StatusCode> {
    disable_user(&state, &p, &id("user_id", &uid)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `deleteUserAccount` after its extra rule (nobody disables themselves); the console too.
pub(crate) async fn disable_user(state: &State, p: &Principal, uid: &str) -> Result<()> {
    if p.user_id() == Some(uid) {
        return Err(Error::Conflict("you cannot disable yourself".into()));
    }
    users::delete(state, p, uid).await
}

async fn list_keys(S(state): S<State>, p: Principal) -> Result<Json<Vec<ApiKey>>> {
    Ok(Json(users::list_keys(&state, &p).await?))
}

async fn create_key(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<ApiKeyRequest>,
) -> Result<Response> {
    Ok(created(users::create_key(&state, &p, req).await?))
}

async fn revoke_key(S(state): S<State>, p: Principal, Path(k): Path<String>) -> Result<StatusCode> {
    users::revoke_key(&state, &p, &id("key_id", &k)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- apps ----

async fn list_apps(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<Page>,
) -> Result<Json<ListResponse<App>>> {
    let (limit, offset) = page(q.limit, q.offset)?;
    let (total, items) = apps::list(&state, &p, limit, offset).await?;
    Ok(Json(listing(items, total, total, limit, offset)))
}

async fn create_app(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<AppRequest>,
) -> Result<Response> {
    Ok(created(apps::create(&state, &p, req).await?))
}

async fn get_app(S(state): S<State>, p: Principal, Path(a): Path<String>) -> Result<Json<App>> {
    Ok(Json(apps::get(&state, &p, &id("app_id", &a)?).await?))
}

async fn update_app(
    S(state): S<State>,
    p: Principal,
    Path(a): Path<String>,
    JsonBody(req): JsonBody<AppPatch>,
) -> Result<Json<App>> {
    Ok(Json(
        update_app_checked(&state, &p, &id("app_id", &a)?, req).await?,
    ))
}

/// `updateApp` after its extra rule (the approval policy is the MANAGER's); the console too.
pub(crate) async fn update_app_checked(
    state: &State,
    p: &Principal,
    app_id: &str,
    req: AppPatch,
) -> Result<App> {
    if req.approval_policy.is_some() {
        p.require(Role::Manager).map_err(|_| {
            Error::Forbidden("changing an app's approval policy needs the MANAGER role".into())
        })?;
    }
    apps::update(state, p, app_id, req).await
}

async fn delete_app(S(state): S<State>, p: Principal, Path(a): Path<String>) -> Result<StatusCode> {
    apps::delete(&state, &p, &id("app_id", &a)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- builds ----

#[derive(Debug, Deserialize)]
struct BuildQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    status: Option<String>,
    docker_image_name: Option<String>,
    all_search: Option<String>,
    app_id: Option<String>,
    sort_by: Option<String>,
}

async fn list_builds(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<BuildQuery>,
) -> Result<Json<ListResponse<Build>>> {
    let (limit, offset) = page(q.limit, q.offset)?;
    let f = builds::BuildFilter {
        status: q.status.filter(|s| !s.is_empty()),
        docker_image_name: q.docker_image_name,
        all_search: q.all_search,
        app_id: q
            .app_id
            .filter(|s| !s.is_empty())
            .map(|a| id("app_id", &a))
            .transpose()?,
        sort_by: q.sort_by,
        measurement: None,
        image_prefix: None,
    };
    for (field, v) in [
        ("docker_image_name", &f.docker_image_name),
        ("all_search", &f.all_search),
    ] {
        if let Some(v) = v {
            crate::validate::text(field, v, 256)?;
        }
    }
    let (total, filtered, items) = builds::list(&state, &p, &f, limit, offset).await?;
    Ok(Json(listing(items, total, filtered, limit, offset)))
}

async fn create_build(
    S(state): S<State>,
    p: Principal,
    body: axum::body::Body,
) -> Result<Response> {
    let bytes = crate::http::body_bytes(&state, body).await?;
    let req = builds::parse_request(&bytes)?;
    let nb = builds::NewBuild::from_request(req)?;
    Ok(created(builds::register(&state, &p, nb).await?))
}

async fn get_build(S(state): S<State>, p: Principal, Path(b): Path<String>) -> Result<Response> {
    let body = builds::get_json(&state, &p, &id("build_id", &b)?).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn update_build(
    S(state): S<State>,
    p: Principal,
    Path(b): Path<String>,
    JsonBody(req): JsonBody<BuildPatch>,
) -> Result<Json<Build>> {
    Ok(Json(
        builds::update(&state, &p, &id("build_id", &b)?, req).await?,
    ))
}

async fn delete_build(
    S(state): S<State>,
    p: Principal,
    Path(b): Path<String>,
) -> Result<StatusCode> {
    builds::delete(&state, &p, &id("build_id", &b)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_build(
    S(state): S<State>,
    p: Principal,
    Path(b): Path<String>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> Result<Json<Build>> {
    Ok(Json(
        builds::revoke(&state, &p, &id("build_id", &b)?, &req.reason).await?,
    ))
}

// ---- conversion jobs ----

fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::field("Idempotency-Key", "must be printable ASCII"))
        })
        .transpose()
}

fn prefers_async(headers: &http::HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

fn accepted(job: Job) -> Response {
    let location = format!("/v1/jobs/{}", job.job_id);
    (
        StatusCode::ACCEPTED,
        [(http::header::LOCATION, location)],
        Json(job),
    )
        .into_response()
}

async fn convert(
    state: &State,
    p: &Principal,
    headers: &http::HeaderMap,
    request: jobs::ConvertRequest,
) -> Result<Response> {
    let submission = jobs::Submission {
        request,
        idempotency_key: idempotency_key(headers)?,
    };
    let js = &state.config.jobs;
    // The place to wait is taken before the job is queued: a job that exists has its waiter.
    let slot = (!prefers_async(headers)).then(|| {
        state.waiters.enter(
            &p.account_id,
            js.max_sync_waiters,
            js.max_sync_waiters_per_account,
        )
    });
    let job = jobs::submit(state, p, submission).await?;
    let _slot = match slot {
        None => return Ok(accepted(job)),
        Some(Ok(slot)) => slot,
        Some(Err(which)) => {
            let (whose, limit, flag) = match which {
                jobs::WaitLimit::Account => (
                    "this account",
                    js.max_sync_waiters_per_account,
                    "--max-sync-waiters-per-account",
                ),
                jobs::WaitLimit::Replica => {
                    ("this manager", js.max_sync_waiters, "--max-sync-waiters")
                }
            };
            return Err(Error::TooManyWaiters {
                detail: format!(
                    "job {id} is queued, but {limit} calls of {whose} already wait for their                      conversions (the operator's {flag}): poll GET /v1/jobs/{id} for its                      result, and send `Prefer: respond-async` to get the job at once",
                    id = job.job_id
                ),
                job_id: job.job_id,
                retry_after: 5,
            });
        }
    };
    let job = jobs::wait(state, p, &job.job_id, js.sync_wait).await?;
    match job.state {
        JobState::Succeeded => Ok(Json(job.result.unwrap_or_default()).into_response()),
        JobState::Failed => {
            let e = job.error.unwrap_or(JobError {
                stage: "queue".into(),
                message: "unknown".into(),
            });
            Err(Error::ConversionFailed {
                job_id: job.job_id,
                stage: e.stage,
                message: e.message,
            })
        }
        JobState::Cancelled => Err(Error::Conflict(format!(
            "job {} was cancelled before it finished",
            job.job_id
        ))),
        JobState::Queued | JobState::Running => Ok(accepted(job)),
    }
}

async fn convert_sgx(
    S(state): S<State>,
    p: Principal,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response> {
    let bytes = crate::http::body_bytes(&state, body).await?;
    let req = jobs::parse_sgx(&bytes)?;
    convert(&state, &p, &headers, jobs::ConvertRequest::Sgx(req)).await
}

async fn convert_nitro(
    S(state): S<State>,
    p: Principal,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response> {
    let bytes = crate::http::body_bytes(&state, body).await?;
    let req = jobs::parse_nitro(&bytes)?;
    convert(&state, &p, &headers, jobs::ConvertRequest::Nitro(req)).await
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    state: Option<String>,
}

async fn list_jobs(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<JobQuery>,
) -> Result<Json<ListResponse<Job>>> {
    let (limit, offset) = page(q.limit, q.offset)?;
    let (total, filtered, items) =
        jobs::list(&state, &p, q.state.as_deref(), limit, offset).await?;
    Ok(Json(listing(items, total, filtered, limit, offset)))
}

async fn get_job(S(state): S<State>, p: Principal, Path(j): Path<String>) -> Result<Json<Job>> {
    Ok(Json(jobs::get(&state, &p, &id("job_id", &j)?).await?))
}

async fn cancel_job(S(state): S<State>, p: Principal, Path(j): Path<String>) -> Result<Json<Job>> {
    Ok(Json(jobs::cancel(&state, &p, &id("job_id", &j)?).await?))
}

async fn job_attempts(
    S(state): S<State>,
    p: Principal,
    Path(j): Path<String>,
) -> Result<Json<Vec<JobAttempt>>> {
    Ok(Json(jobs::attempts(&state, &p, &id("job_id", &j)?).await?))
}

// ---- tasks ----

#[derive(Debug, Deserialize)]
struct TaskQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    task_type: Option<String>,
    status: Option<String>,
}

async fn list_tasks(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<TaskQuery>,
) -> Result<Json<ListResponse<Task>>> {
    let (limit, offset) = page(q.limit, q.offset)?;
    let (total, filtered, items) = tasks::list(
        &state,
        &p,
        q.task_type.as_deref(),
        q.status.as_deref(),
        limit,
        offset,
    )
    .await?;
    Ok(Json(listing(items, total, filtered, limit, offset)))
}

async fn get_task(S(state): S<State>, p: Principal, Path(t): Path<String>) -> Result<Json<Task>> {
    Ok(Json(tasks::get(&state, &p, &id("task_id", &t)?).await?))
}

async fn decide_task(
    S(state): S<State>,
    p: Principal,
    Path(t): Path<String>,
    JsonBody(req): JsonBody<TaskUpdateRequest>,
) -> Result<Json<Task>> {
    Ok(Json(
        tasks::decide(&state, &p, &id("task_id", &t)?, req).await?,
    ))
}

async fn task_status(
    S(state): S<State>,
    p: Principal,
    Path(t): Path<String>,
) -> Result<Json<TaskResult>> {
    Ok(Json(tasks::result(&state, &p, &id("task_id", &t)?).await?))
}

// ---- registry credentials ----

async fn list_registries(S(state): S<State>, p: Principal) -> Result<Json<Vec<Registry>>> {
    Ok(Json(registry::list(&state, &p).await?))
}

async fn create_registry(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<RegistryRequest>,
) -> Result<Response> {
    Ok(created(registry::create(&state, &p, req).await?))
}

async fn get_registry(
    S(state): S<State>,
    p: Principal,
    Path(r): Path<String>,
) -> Result<Json<Registry>> {
    Ok(Json(
        registry::get(&state, &p, &id("registry_id", &r)?).await?,
    ))
}

async fn update_registry(
    S(state): S<State>,
    p: Principal,
    Path(r): Path<String>,
    JsonBody(req): JsonBody<RegistryPatch>,
) -> Result<Json<Registry>> {
    Ok(Json(
        registry::update(&state, &p, &id("registry_id", &r)?, req).await?,
    ))
}

async fn delete_registry(
    S(state): S<State>,
    p: Principal,
    Path(r): Path<String>,
) -> Result<StatusCode> {
    registry::delete(&state, &p, &id("registry_id", &r)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ImageQuery {
    name: Option<String>,
}

async fn registry_for_image(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<ImageQuery>,
) -> Result<Json<Registry>> {
    let name = q
        .name
        .ok_or_else(|| Error::field("name", "is required: ?name=IMAGE"))?;
    Ok(Json(registry::for_image(&state, &p, &name).await?))
}

// ---- audit ----

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    action: Option<String>,
    entity_id: Option<String>,
    actor: Option<String>,
    since_seq: Option<i64>,
}

async fn list_audit(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<AuditQuery>,
) -> Result<Json<ListResponse<AuditRecord>>> {
    let (limit, offset) = page(q.limit, q.offset)?;
    for (field, v) in [
        ("action", &q.action),
        ("entity_id", &q.entity_id),
        ("actor", &q.actor),
    ] {
        if let Some(v) = v {
            crate::validate::text(field, v, 256)?;
        }
    }
    let f = audit::AuditFilter {
        action: q.action.filter(|s| !s.is_empty()),
        entity_id: q.entity_id.filter(|s| !s.is_empty()),
        actor: q.actor.filter(|s| !s.is_empty()),
        since_seq: q.since_seq,
    };
    let (filtered, items) = audit::list(&state.db, &p.account_id, &f, limit, offset).await?;
    Ok(Json(listing(items, filtered, filtered, limit, offset)))
}

async fn verify_audit(S(state): S<State>, p: Principal) -> Result<Json<AuditVerification>> {
    Ok(Json(audit::verify(&state.db, &p.account_id).await?))
}

async fn export_audit(S(state): S<State>, p: Principal) -> Result<Response> {
    let out = export_ndjson(&state, &p).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

/// The account's whole audit chain as JSON lines, oldest first (the API's and console's export).
pub(crate) async fn export_ndjson(state: &State, p: &Principal) -> Result<String> {
    let mut out = String::new();
    let mut since = 0;
    loop {
        let f = audit::AuditFilter {
            since_seq: Some(since),
            ..Default::default()
        };
        let (_, items) = audit::list(&state.db, &p.account_id, &f, 1000, 0).await?;
        if items.is_empty() {
            break;
        }
        for r in &items {
            out.push_str(&serde_json::to_string(r).expect("serialisable"));
            out.push('\n');
            since = r.seq;
        }
    }
    Ok(out)
}

// ---- attestation and certificates ----

async fn ca_chain(S(state): S<State>) -> Result<Json<certs::CaResponse>> {
    let ca = crate::ca::get(&state).await?;
    Ok(Json(certs::CaResponse {
        chain: ca.chain_pem(),
        root: ca.root_pem.clone(),
    }))
}

async fn ca_crl(S(state): S<State>, headers: axum::http::HeaderMap) -> Result<Response> {
    let crl = certs::crl(&state).await?;
    let wants_pem = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("pem") || v.contains("text/plain"));
    Ok(if wants_pem {
        let pem = crl
            .pem()
            .map_err(|e| Error::Internal(format!("CRL PEM: {e}")))?;
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
            pem,
        )
            .into_response()
    } else {
        (
            [(axum::http::header::CONTENT_TYPE, "application/pkix-crl")],
            crl.der().to_vec(),
        )
            .into_response()
    })
}

async fn new_nonce(
    S(state): S<State>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: http::HeaderMap,
) -> Result<Json<certs::NonceResponse>> {
    let client = client_addr(&state, &headers, addr.as_deref());
    Ok(Json(certs::nonce(&state, &client).await?))
}

async fn request_certificate(
    S(state): S<State>,
    axum::Extension(rid): axum::Extension<crate::http::RequestId>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: http::HeaderMap,
    JsonBody(req): JsonBody<certs::CertificateRequest>,
) -> Result<Response> {
    let client = client_addr(&state, &headers, addr.as_deref());
    Ok(created(certs::request(&state, req, &rid.0, &client).await?))
}

async fn get_certificate(
    S(state): S<State>,
    p: Principal,
    Path(c): Path<String>,
) -> Result<Json<certs::CertificateRecord>> {
    Ok(Json(
        certs::get(&state, &p, &id("certificate_id", &c)?).await?,
    ))
}

async fn evaluate(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<certs::CertificateRequest>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(certs::evaluate(&state, &p, req).await?))
}

// ---- app configs ----

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    app_id: Option<String>,
}

async fn list_app_configs(
    S(state): S<State>,
    p: Principal,
    Q(q): Q<ConfigQuery>,
) -> Result<Json<AppConfigList>> {
    let app = match &q.app_id {
        Some(a) => Some(id("app_id", a)?),
        None => None,
    };
    Ok(Json(configs::list(&state, &p, app.as_deref()).await?))
}

async fn create_app_config(
    S(state): S<State>,
    p: Principal,
    JsonBody(req): JsonBody<AppConfigRequest>,
) -> Result<Response> {
    Ok(created(configs::create(&state, &p, req).await?))
}

async fn get_app_config(
    S(state): S<State>,
    p: Principal,
    Path(c): Path<String>,
) -> Result<Json<AppConfig>> {
    Ok(Json(configs::get(&state, &p, &id("config_id", &c)?).await?))
}

async fn update_app_config(
    S(state): S<State>,
    p: Principal,
    Path(c): Path<String>,
    JsonBody(req): JsonBody<AppConfigPatch>,
) -> Result<Json<AppConfig>> {
    Ok(Json(
        configs::update(&state, &p, &id("config_id", &c)?, req).await?,
    ))
}

async fn delete_app_config(
    S(state): S<State>,
    p: Principal,
    Path(c): Path<String>,
) -> Result<StatusCode> {
    configs::delete(&state, &p, &id("config_id", &c)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn runtime_app_configs(
    S(state): S<State>,
    axum::Extension(rid): axum::Extension<crate::http::RequestId>,
    cert: Option<axum::Extension<configs::ClientCert>>,
) -> Result<Json<RuntimeAppConfig>> {
    Ok(Json(
        configs::runtime(&state, cert.as_ref().map(|c| &c.0), &rid.0).await?,
    ))
}
