//! The console's pages (GET): each reads through the same domain functions as the API route it
//! mirrors, after the same role check.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State as S};
use axum::response::Response;
use http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::html::{badge, copyable, csrf, e, field, pager, q, select, time, Kind, Refill};
use super::{page, Session};
use crate::error::{Error, Result};
use crate::{apps, audit, builds, tasks, State};
use cloak_api::*;

pub(super) use super::admin::{
    audit, audit_export, certificates, registries, registry_match, users,
};

/// Rows per page of the long lists.
pub(super) const LIMIT: i64 = 50;

/// Parses a page's query string, naming the parameter that does not fit.
pub(super) fn query<T: DeserializeOwned + Default>(raw: &Option<String>) -> Result<T> {
    match raw.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(T::default()),
        Some(s) => {
            let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(s.as_bytes()));
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                Error::field(
                    if path == "." { "query".into() } else { path },
                    e.into_inner().to_string(),
                )
            })
        }
    }
}

pub(super) fn offset(o: Option<i64>) -> Result<i64> {
    let o = o.unwrap_or(0);
    if !(0..=1_000_000_000).contains(&o) {
        return Err(Error::field("offset", "must be between 0 and 1000000000"));
    }
    Ok(o)
}

/// Turns a page's result into its response (errors as an error page).
pub(super) fn respond(r: Result<Response>) -> Response {
    r.unwrap_or_else(|err| super::error_response(&err))
}

// ---- sign-in ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

pub(super) async fn login_form(S(state): S<State>, RawQuery(raw): RawQuery) -> Response {
    let next = query::<LoginQuery>(&raw)
        .ok()
        .and_then(|q| q.next)
        .unwrap_or_else(|| "/".into());
    login_page(&state, StatusCode::OK, &next, "", &Refill::default())
}

/// The sign-in form, with a fresh token paired with a short-lived cookie (login CSRF).
pub(super) fn login_page(
    state: &State,
    status: StatusCode,
    next: &str,
    user: &str,
    refill: &Refill,
) -> Response {
    let (secret, _) = crate::auth::new_secret("");
    let mut body = String::from(r#"<form method="post" action="/login" class="card narrow">"#);
    body.push_str(&csrf(&super::csrf_for(&secret)));
    let _ = write!(
        body,
        r#"<input type="hidden" name="next" value="{}">"#,
        e(super::local_path(next))
    );
    field(
        &mut body,
        refill,
        "login",
        "user_name",
        "User name",
        Kind::Text,
        user,
        "",
    );
    field(
        &mut body,
        refill,
        "login",
        "password",
        "Password",
        Kind::Password,
        "",
        "",
    );
    body.push_str(&refill.unplaced("login"));
    body.push_str(r#"<button type="submit">Sign in</button></form>"#);
    let mut resp = super::plain_page(status, "Sign in", &body);
    resp.headers_mut().append(
        header::SET_COOKIE,
        super::set_cookie(state, super::LOGIN_COOKIE, &secret, 600),
    );
    resp
}

// ---- overview ----

/// Audit chain verifications, per account, reused for a short time: walking a long chain on
/// every overview would cost more than the page.
static VERIFIED: Mutex<Option<HashMap<String, (Instant, AuditVerification)>>> = Mutex::new(None);
const VERIFY_TTL: Duration = Duration::from_secs(15);

/// The account's chain verification (at most `VERIFY_TTL` old).
pub(super) async fn chain_state(state: &State, account: &str) -> Result<AuditVerification> {
    if let Some((at, v)) = VERIFIED
        .lock()
        .expect("verification cache")
        .get_or_insert_with(HashMap::new)
        .get(account)
    {
        if at.elapsed() < VERIFY_TTL {
            return Ok(v.clone());
        }
    }
    let v = audit::verify(&state.db, account).await?;
    VERIFIED
        .lock()
        .expect("verification cache")
        .get_or_insert_with(HashMap::new)
        .insert(account.into(), (Instant::now(), v.clone()));
    Ok(v)
}

pub(super) fn chain_banner(v: &AuditVerification) -> String {
    if v.ok {
        format!(
            r#"<p class="banner ok" role="status">Audit chain verified: {} records, none altered, reordered or removed.</p>"#,
            v.records
        )
    } else {
        format!(
            r#"<p class="banner bad" role="alert">Audit chain BROKEN at record {}: {}</p>"#,
            v.first_bad_seq.unwrap_or(0),
            e(v.problem.as_deref().unwrap_or("altered"))
        )
    }
}

pub(super) async fn overview(S(state): S<State>, s: Session) -> Response {
    respond(overview_page(&state, &s).await)
}

async fn overview_page(state: &State, s: &Session) -> Result<Response> {
    s.may("getAllBuilds")?;
    let mut body = String::new();
    // Warnings first.
    let mut warnings = Vec::new();
    let chain = chain_state(state, &s.p.account_id).await?;
    if !chain.ok {
        warnings.push(chain_banner(&chain));
    }
    let now = state.clock.now();
    if let Some(exp) = crate::ca::expiry(&state.db).await? {
        if exp - now < 30 * 86400 {
            warnings.push(format!(
                r#"<p class="banner bad" role="alert">The manager's issuing CA expires {}: plan its renewal.</p>"#,
                time(exp)
            ));
        }
    }
    for c in crate::collateral::expiring(state, now + crate::collateral::WARN_BEFORE).await? {
        let (when, fix) = if c.not_after <= now {
            (
                "expired",
                "quotes of this platform are refused until it is renewed",
            )
        } else {
            (
                "expires",
                "certificates stop being issued for this platform then",
            )
        };
        let refresh = if state.config.pccs_url.is_some() {
            "check that the PCCS answers (the manager refreshes it from there)"
        } else {
            "import fresh collateral with `cloak manager collateral import DIR`, or start the manager with --pccs-url"
        };
        warnings.push(format!(
            r#"<p class="banner bad collateral" role="alert">DCAP collateral for {k}: its {item} {when} {t} ({src}); {fix}: {refresh}.</p>"#,
            k = e(&c.key),
            item = e(&c.not_after_item),
            t = time(c.not_after),
            src = e(&c.source),
        ));
    }
    if state.config.allow_simulated_attestation {
        warnings.push(r#"<p class="banner bad" role="alert">Simulated attestation is allowed: certificates can be issued without a TEE (never in production).</p>"#.into());
    }
    if !warnings.is_empty() {
        body.push_str(r#"<section aria-labelledby="w"><h2 id="w">Warnings</h2>"#);
        body.push_str(&warnings.concat());
        body.push_str("</section>");
    }

    // Pending tasks the caller has not decided.
    let (_, _, pending) = tasks::list(state, &s.p, None, Some("PENDING"), 20, 0).await?;
    let me = s.p.user_id().unwrap_or("");
    let mine: Vec<&Task> = pending
        .iter()
        .filter(|t| !t.approvals.iter().any(|a| a.user_id == me))
        .collect();
    body.push_str(r#"<div class="grid"><section class="card" aria-labelledby="pt"><h2 id="pt">Pending tasks for me</h2>"#);
    if mine.is_empty() {
        body.push_str("<p>Nothing waits for you.</p>");
    } else {
        body.push_str("<ul>");
        for t in mine.iter().take(10) {
            let _ = write!(
                body,
                r#"<li><a href="/tasks?tab=pending#task-{id}">{d}</a> {p}</li>"#,
                id = e(&t.task_id),
                d = e(&t.description),
                p = e(&progress(t))
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");

    // Builds by status.
    body.push_str(
        r#"<section class="card" aria-labelledby="bs"><h2 id="bs">Builds by status</h2><ul>"#,
    );
    let counts = builds::count_by_status_in(state, &s.p).await?;
    for st in ["PENDING", "WHITELISTED", "REJECTED"] {
        let n = counts.iter().find(|(k, _)| k == st).map_or(0, |(_, n)| *n);
        let _ = write!(
            body,
            r#"<li><a href="/builds?status={st}">{b} {n}</a></li>"#,
            b = badge(st)
        );
    }
    body.push_str("</ul></section>");

    // Conversions.
    body.push_str(
        r#"<section class="card" aria-labelledby="rc"><h2 id="rc">Running conversions</h2>"#,
    );
    body.push_str(&super::convert::running_jobs(state, s).await?);
    body.push_str("</section></div>");

    // Recent audit events.
    let (_, recent) = audit::list(
        &state.db,
        &s.p.account_id,
        &audit::AuditFilter::default(),
        10,
        0,
    )
    .await?;
    body.push_str(r#"<section aria-labelledby="ra"><h2 id="ra">Recent audit events</h2>"#);
    body.push_str(&super::admin::audit_table(&recent));
    body.push_str(r#"<p><a href="/audit">All audit events</a></p></section>"#);
    Ok(page(s, StatusCode::OK, "/", "Overview", &body))
}

/// "1 of 2 approvals: alice".
pub(super) fn progress(t: &Task) -> String {
    let approved: Vec<&str> = t
        .approvals
        .iter()
        .filter(|a| a.status == "APPROVED")
        .map(|a| a.user_name.as_str())
        .collect();
    let mut s = format!("{} of {} approvals", approved.len(), t.approval_policy.n);
    if !approved.is_empty() {
        s.push_str(": ");
        s.push_str(&approved.join(", "));
    }
    s
}

// ---- applications ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    offset: Option<i64>,
}

pub(super) async fn apps(S(state): S<State>, s: Session, RawQuery(raw): RawQuery) -> Response {
    respond(apps_page(&state, &s, &raw).await)
}

async fn apps_page(state: &State, s: &Session, raw: &Option<String>) -> Result<Response> {
    s.may("getAllApps")?;
    let pq: PageQuery = query(raw)?;
    let off = offset(pq.offset)?;
    let (total, items) = apps::list(state, &s.p, LIMIT, off).await?;
    let mut body = String::new();
    if s.can("addApplication") {
        body.push_str(r#"<p><a class="button" href="/apps/new">New application</a></p>"#);
    }
    body.push_str(r#"<table><caption class="sr-only">Applications</caption><thead><tr><th scope="col">Name</th><th scope="col">Input image</th><th scope="col">Output image</th><th scope="col">Quorum</th><th scope="col">Created</th></tr></thead><tbody>"#);
    for a in &items {
        let _ = write!(
            body,
            r#"<tr><td><a href="/apps/{id}">{n}</a></td><td>{i}</td><td>{o}</td><td>{q} of {ap}</td><td>{c}</td></tr>"#,
            id = e(&a.app_id),
            n = e(&a.name),
            i = e(&a.input_image_name),
            o = e(&a.output_image_name),
            q = a.approval_policy.n,
            ap = e(&a.approval_policy.approvers.join(", ")),
            c = time(a.created_at)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&pager("/apps", off, LIMIT, total));
    Ok(page(s, StatusCode::OK, "/apps", "Applications", &body))
}

pub(super) async fn app_new(S(_state): S<State>, s: Session) -> Response {
    respond(app_new_page(&s, StatusCode::OK, &Refill::default()))
}

pub(super) fn app_new_page(s: &Session, status: StatusCode, refill: &Refill) -> Result<Response> {
    s.may("addApplication")?;
    let mut body = String::from(r#"<form method="post" action="/apps" class="card">"#);
    body.push_str(&csrf(&s.csrf));
    app_fields(&mut body, refill, "app", None, true);
    body.push_str(&refill.unplaced("app"));
    body.push_str(r#"<button type="submit">Create application</button></form>"#);
    Ok(page(s, status, "/apps", "New application", &body))
}

/// The fields of the create and edit forms (`policy`: whether the approval policy is editable).
fn app_fields(out: &mut String, r: &Refill, form: &str, app: Option<&App>, policy: bool) {
    let v = |f: &dyn Fn(&App) -> String, d: &str| app.map(f).unwrap_or_else(|| d.to_string());
    field(
        out,
        r,
        form,
        "name",
        "Name",
        Kind::Text,
        &v(&|a| a.name.clone(), ""),
        "Unique in the account.",
    );
    field(
        out,
        r,
        form,
        "description",
        "Description",
        Kind::Text,
        &v(&|a| a.description.clone(), ""),
        "",
    );
    field(
        out,
        r,
        form,
        "input_image_name",
        "Input image",
        Kind::Text,
        &v(&|a| a.input_image_name.clone(), ""),
        "The image to convert, e.g. registry.example/app:1.0",
    );
    field(
        out,
        r,
        form,
        "output_image_name",
        "Output image",
        Kind::Text,
        &v(&|a| a.output_image_name.clone(), ""),
        "Where the confidential image is pushed.",
    );
    if app.is_none() {
        field(
            out,
            r,
            form,
            "isvprodid",
            "ISV product id",
            Kind::Number,
            "0",
            "SGX only: 0 to 65535.",
        );
        field(
            out,
            r,
            form,
            "isvsvn",
            "ISV security version",
            Kind::Number,
            "0",
            "SGX only: 0 to 65535.",
        );
        field(
            out,
            r,
            form,
            "mem_size",
            "Enclave memory (MiB)",
            Kind::Number,
            "",
            "Empty for the default.",
        );
        field(
            out,
            r,
            form,
            "threads",
            "Threads",
            Kind::Number,
            "",
            "Empty for the default.",
        );
    }
    out.push_str(r#"<fieldset><legend>Approval quorum</legend>"#);
    if policy {
        let pol = app.map(|a| a.approval_policy.clone()).unwrap_or_default();
        field(
            out,
            r,
            form,
            "approval_policy.n",
            "Approvals needed",
            Kind::Number,
            &pol.n.to_string(),
            "How many distinct approvers must approve a build.",
        );
        field(
            out,
            r,
            form,
            "approval_policy.approvers",
            "Approvers",
            Kind::Text,
            &pol.approvers.join(", "),
            "Comma-separated user ids or role:MANAGER / role:WRITER.",
        );
        field(
            out,
            r,
            form,
            "approval_policy.exclude_requester",
            "The requester of a build may not approve it",
            Kind::Checkbox,
            if pol.exclude_requester { "on" } else { "" },
            "",
        );
    } else {
        let pol = app.map(|a| a.approval_policy.clone()).unwrap_or_default();
        let _ = write!(
            out,
            "<p>{} of {} (changing the quorum needs the MANAGER role).</p>",
            pol.n,
            e(&pol.approvers.join(", "))
        );
    }
    out.push_str("</fieldset><fieldset><legend>Certificate policy</legend>");
    let cp = app
        .map(|a| a.certificate_policy.clone())
        .unwrap_or_default();
    field(
        out,
        r,
        form,
        "certificate_policy.allowed_tcb_statuses",
        "Allowed TCB statuses",
        Kind::Text,
        &cp.allowed_tcb_statuses.unwrap_or_default().join(", "),
        "Comma-separated, e.g. UpToDate, SWHardeningNeeded. Empty for the default (UpToDate).",
    );
    field(
        out,
        r,
        form,
        "certificate_policy.validity_seconds",
        "Certificate validity (seconds)",
        Kind::Number,
        &cp.validity_seconds
            .map(|v| v.to_string())
            .unwrap_or_default(),
        "Empty for the default.",
    );
    field(
        out,
        r,
        form,
        "certificate_policy.allow_debug",
        "Allow debug enclaves",
        Kind::Checkbox,
        if cp.allow_debug == Some(true) {
            "on"
        } else {
            ""
        },
        "",
    );
    field(
        out,
        r,
        form,
        "certificate_policy.require_nonce",
        "Require a fresh nonce",
        Kind::Checkbox,
        if cp.require_nonce != Some(false) {
            "on"
        } else {
            ""
        },
        "",
    );
    out.push_str("</fieldset>");
}

pub(super) async fn app(
    S(state): S<State>,
    s: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    respond(app_page(&state, &s, &id, &raw, StatusCode::OK, &Refill::default()).await)
}

pub(super) async fn app_page(
    state: &State,
    s: &Session,
    id: &str,
    raw: &Option<String>,
    status: StatusCode,
    refill: &Refill,
) -> Result<Response> {
    s.may("getApp")?;
    let id = crate::validate::uuid("app_id", id)?;
    let a = apps::get(state, &s.p, &id).await?;
    let pq: PageQuery = query(raw)?;
    let off = offset(pq.offset)?;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p>{d}</p><p><a class="button" href="/convert?app_id={id}">Convert an image for this application</a></p>"#,
        d = e(&a.description),
        id = e(&a.app_id)
    );
    if s.can("updateApp") {
        let _ = write!(
            body,
            r#"<details{open}><summary>Edit</summary><form method="post" action="/apps/{id}" class="card">{c}"#,
            open = if refill.problem.is_some() {
                " open"
            } else {
                ""
            },
            id = e(&a.app_id),
            c = csrf(&s.csrf)
        );
        app_fields(&mut body, refill, "app", Some(&a), s.can("addApplication"));
        body.push_str(&refill.unplaced("app"));
        body.push_str(r#"<button type="submit">Save</button></form></details>"#);
    }
    let f = builds::BuildFilter {
        app_id: Some(a.app_id.clone()),
        ..Default::default()
    };
    let (_, n, items) = builds::list(state, &s.p, &f, LIMIT, off).await?;
    body.push_str(r#"<h2>Builds</h2>"#);
    body.push_str(&builds_table(&items));
    body.push_str(&pager(&format!("/apps/{}", a.app_id), off, LIMIT, n));
    Ok(page(
        s,
        status,
        "/apps",
        &format!("Application {}", a.name),
        &body,
    ))
}

// ---- builds ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct BuildQuery {
    status: Option<String>,
    image: Option<String>,
    measurement: Option<String>,
    offset: Option<i64>,
}

/// The build's main measurement, shortened for a table.
fn short_measure(b: &Build) -> String {
    let m = b
        .attributes
        .nitro_enclave
        .as_ref()
        .map(|n| format!("PCR0 {}", &n.pcr0))
        .or_else(|| b.mrenclave.as_ref().map(|m| format!("MRENCLAVE {m}")))
        .unwrap_or_default();
    let cut: String = m.chars().take(26).collect();
    if cut.len() < m.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

fn builds_table(items: &[Build]) -> String {
    let mut body = String::from(
        r#"<table><caption class="sr-only">Builds</caption><thead><tr><th scope="col">Image</th><th scope="col">Application</th><th scope="col">Status</th><th scope="col">Measurement</th><th scope="col">Registered</th></tr></thead><tbody>"#,
    );
    for b in items {
        let _ = write!(
            body,
            r#"<tr><td><a href="/builds/{id}">{img}</a></td><td>{app}</td><td>{st}</td><td><code>{m}</code></td><td>{t}</td></tr>"#,
            id = e(&b.build_id),
            img = e(&b.docker_info.docker_image_name),
            app = e(&b.app_name),
            st = badge(&b.status.status),
            m = e(&short_measure(b)),
            t = time(b.created_at)
        );
    }
    if items.is_empty() {
        body.push_str(r#"<tr><td colspan="5">No builds.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    body
}

pub(super) async fn builds(S(state): S<State>, s: Session, RawQuery(raw): RawQuery) -> Response {
    respond(builds_page(&state, &s, &raw).await)
}

async fn builds_page(state: &State, s: &Session, raw: &Option<String>) -> Result<Response> {
    s.may("getAllBuilds")?;
    let bq: BuildQuery = query(raw)?;
    let off = offset(bq.offset)?;
    let status = bq.status.clone().unwrap_or_default();
    let image = bq.image.clone().unwrap_or_default();
    let search = bq.measurement.clone().unwrap_or_default();
    for (f, v) in [("image", &image), ("measurement", &search)] {
        crate::validate::text(f, v, 256)?;
    }
    let f = builds::BuildFilter {
        status: Some(status.clone()).filter(|s| !s.is_empty()),
        image_prefix: Some(image.trim().to_string()).filter(|s| !s.is_empty()),
        measurement: Some(search.trim().to_string()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let (total, n, items) = builds::list(state, &s.p, &f, LIMIT, off).await?;
    let mut body =
        String::from(r#"<form method="get" action="/builds" class="filters" role="search">"#);
    select(
        &mut body,
        "bf",
        "status",
        "Status",
        &[
            ("", "any"),
            ("PENDING", "PENDING"),
            ("WHITELISTED", "WHITELISTED"),
            ("REJECTED", "REJECTED"),
        ],
        &status,
    );
    let none = Refill::default();
    field(
        &mut body,
        &none,
        "bf",
        "image",
        "Image name starts with",
        Kind::Text,
        &image,
        "Registry and repository, e.g. registry.example.com/web (any case).",
    );
    field(
        &mut body,
        &none,
        "bf",
        "measurement",
        "Measurement starts with",
        Kind::Text,
        &search,
        "Hex digits of an MRENCLAVE, MRSIGNER or PCR0.",
    );
    body.push_str(r#"<button type="submit">Filter</button></form>"#);
    let _ = write!(body, "<p>{n} of {total} builds match.</p>");
    body.push_str(&builds_table(&items));
    let base = format!(
        "/builds?status={}&image={}&measurement={}",
        q(&status),
        q(&image),
        q(&search)
    );
    body.push_str(&pager(&base, off, LIMIT, n));
    Ok(page(s, StatusCode::OK, "/builds", "Builds", &body))
}

/// The measurements of a build in full, each with a copy button.
pub(super) fn measurements(b: &Build) -> String {
    let mut out = String::from(r#"<div class="measures">"#);
    if let Some(n) = &b.attributes.nitro_enclave {
        out.push_str(&copyable("PCR0", &n.pcr0));
        out.push_str(&copyable("PCR1", &n.pcr1));
        out.push_str(&copyable("PCR2", &n.pcr2));
        if let Some(p8) = &n.pcr8 {
            out.push_str(&copyable("PCR8", p8));
        }
    }
    if let Some(m) = &b.mrenclave {
        out.push_str(&copyable("MRENCLAVE", m));
    }
    if let Some(m) = &b.mrsigner {
        out.push_str(&copyable("MRSIGNER", m));
    }
    if let (Some(p), Some(v)) = (b.isvprodid, b.isvsvn) {
        let _ = write!(
            out,
            r#"<div class="measure"><span class="mlabel">ISVPRODID / ISVSVN</span> <code>{p} / {v}</code></div>"#
        );
    }
    out.push_str("</div>");
    let _ = write!(
        out,
        r#"<dl class="facts"><dt>Image</dt><dd>{img}</dd><dt>Image digest</dt><dd><code>{sha}</code></dd><dt>Application</dt><dd><a href="/apps/{aid}">{app}</a></dd><dt>Debug</dt><dd>{dbg}</dd></dl>"#,
        img = e(&b.docker_info.docker_image_name),
        sha = e(b
            .docker_info
            .docker_image_sha
            .as_deref()
            .unwrap_or("(not recorded)")),
        aid = e(&b.app_id),
        app = e(&b.app_name),
        dbg = if b.debug { "yes" } else { "no" }
    );
    out
}

pub(super) async fn build(S(state): S<State>, s: Session, Path(id): Path<String>) -> Response {
    respond(build_page(&state, &s, &id, StatusCode::OK, &Refill::default()).await)
}

pub(super) async fn build_page(
    state: &State,
    s: &Session,
    id: &str,
    status: StatusCode,
    refill: &Refill,
) -> Result<Response> {
    s.may("getBuild")?;
    let id = crate::validate::uuid("build_id", id)?;
    let b = builds::get(state, &s.p, &id).await?;
    let t = tasks::get(state, &s.p, &b.task_id).await?;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p>Status {st} since {t}</p>"#,
        st = badge(&b.status.status),
        t = time(b.status.status_updated_at)
    );
    if let Some(r) = &b.status_reason {
        let _ = write!(
            body,
            r#"<p class="reason"><strong>Reason:</strong> {}</p>"#,
            e(r)
        );
    }
    body.push_str("<h2>Measurements</h2>");
    body.push_str(&measurements(&b));
    body.push_str("<h2>Conversion options</h2>");
    let mut opts = String::new();
    if let Some(m) = b.mem_size {
        let _ = write!(opts, "<dt>Memory</dt><dd>{m}</dd>");
    }
    if let Some(th) = b.threads {
        let _ = write!(opts, "<dt>Threads</dt><dd>{th}</dd>");
    }
    let _ = write!(
        body,
        r#"<dl class="facts">{opts}</dl><pre class="json">{}</pre>"#,
        e(&serde_json::to_string_pretty(&b.advanced_settings).unwrap_or_default())
    );
    body.push_str("<h2>Approval task</h2>");
    let _ = write!(
        body,
        r#"<p>{st} <span class="progress-text">{p}</span> · requested by {req} · <a href="/tasks?tab={tab}#task-{tid}">task</a></p>"#,
        st = badge(&t.status.status),
        p = e(&progress(&t)),
        req = e(t
            .requester_info
            .user_name
            .as_deref()
            .unwrap_or(&t.requester_info.requester_type)),
        tab = tab_of(&t.status.status),
        tid = e(&t.task_id)
    );
    if let Some(r) = &t.denial_reason {
        let _ = write!(
            body,
            r#"<p class="reason"><strong>Denied:</strong> {}</p>"#,
            e(r)
        );
    }
    if s.can("revokeBuild") && b.status.status != "REJECTED" {
        let _ = write!(
            body,
            r#"<h2>Revoke</h2><form method="post" action="/builds/{id}/revoke" class="card">{c}"#,
            id = e(&b.build_id),
            c = csrf(&s.csrf)
        );
        field(
            &mut body,
            refill,
            "revoke",
            "reason",
            "Reason",
            Kind::TextArea,
            "",
            "Shown on the build and in the audit log.",
        );
        body.push_str(&refill.unplaced("revoke"));
        body.push_str(r#"<button type="submit" class="danger">Revoke build</button></form>"#);
    }
    Ok(page(
        s,
        status,
        "/builds",
        &format!("Build of {}", b.docker_info.docker_image_name),
        &body,
    ))
}

fn tab_of(status: &str) -> &'static str {
    match status {
        "SUCCESS" => "approved",
        "DENIED" | "FAILED" => "denied",
        _ => "pending",
    }
}

// ---- tasks ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct TaskQuery {
    tab: Option<String>,
    offset: Option<i64>,
}

pub(super) async fn tasks(S(state): S<State>, s: Session, RawQuery(raw): RawQuery) -> Response {
    respond(tasks_page(&state, &s, &raw, StatusCode::OK, &Refill::default()).await)
}

/// Tasks per page (each shows its build).
const TASK_LIMIT: i64 = 10;

pub(super) async fn tasks_page(
    state: &State,
    s: &Session,
    raw: &Option<String>,
    status: StatusCode,
    refill: &Refill,
) -> Result<Response> {
    s.may("getAllTasks")?;
    let tq: TaskQuery = query(raw)?;
    let off = offset(tq.offset)?;
    let tab = tq.tab.unwrap_or_else(|| "pending".into());
    let filter = match tab.as_str() {
        "pending" => "PENDING",
        "approved" => "APPROVED",
        "denied" => "DENIED",
        _ => return Err(Error::field("tab", "must be pending, approved or denied")),
    };
    let (_, n, items) = tasks::list(state, &s.p, None, Some(filter), TASK_LIMIT, off).await?;
    let mut body = String::from(r#"<nav class="tabs" aria-label="task status"><ul>"#);
    for (t, label) in [
        ("pending", "Pending"),
        ("approved", "Approved"),
        ("denied", "Denied"),
    ] {
        let cur = if t == tab {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"<li><a href="/tasks?tab={t}"{cur}>{label}</a></li>"#
        );
    }
    body.push_str("</ul></nav>");
    if items.is_empty() {
        body.push_str("<p>No tasks here.</p>");
    }
    let decide = s.can("UpdateTask");
    // Every task's build in one query.
    let ids: Vec<String> = items.iter().map(|t| t.entity_id.clone()).collect();
    let page_builds = builds::get_many(state, &s.p, &ids).await?;
    for t in &items {
        let b = page_builds.iter().find(|b| b.build_id == t.entity_id);
        let _ = write!(
            body,
            r#"<article class="card task" id="task-{id}" aria-labelledby="task-{id}-h"><h2 id="task-{id}-h">{d}</h2><p>{st} <span class="progress-text">{p}</span> · requested by {req} {t}</p>"#,
            id = e(&t.task_id),
            d = e(&t.description),
            st = badge(&t.status.status),
            p = e(&progress(t)),
            req = e(t
                .requester_info
                .user_name
                .as_deref()
                .unwrap_or(&t.requester_info.requester_type)),
            t = time(t.status.created_at)
        );
        if let Some(r) = &t.denial_reason {
            let _ = write!(
                body,
                r#"<p class="reason"><strong>Denied:</strong> {}</p>"#,
                e(r)
            );
        }
        if let Some(b) = b {
            let _ = write!(
                body,
                r#"<p><a href="/builds/{}">Build</a></p>"#,
                e(&b.build_id)
            );
            body.push_str(&measurements(b));
        }
        if decide && t.status.status == "INPROGRESS" {
            let form = format!("deny-{}", t.task_id);
            let _ = write!(
                body,
                r#"<div class="actions"><form method="post" action="/tasks/{id}/approve">{c}<button type="submit" class="approve">Approve</button></form><form method="post" action="/tasks/{id}/deny">{c}"#,
                id = e(&t.task_id),
                c = csrf(&s.csrf)
            );
            field(
                &mut body,
                refill,
                &form,
                "denial_reason",
                "Reason for denying",
                Kind::TextArea,
                "",
                "Required to deny; shown on the build.",
            );
            body.push_str(&refill.unplaced(&form));
            body.push_str(r#"<button type="submit" class="danger">Deny</button></form></div>"#);
            body.push_str(&refill.unplaced(&format!("approve-{}", t.task_id)));
        }
        body.push_str("</article>");
    }
    body.push_str(&pager(&format!("/tasks?tab={tab}"), off, TASK_LIMIT, n));
    Ok(page(s, status, "/tasks", "Tasks", &body))
}
