//! The console's settings-like pages: registry credentials, certificates, audit, users and API
//! keys, and the conversion form.

use std::fmt::Write;

use axum::extract::{RawQuery, State as S};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde::Deserialize;

use super::html::{badge, csrf, e, field, pager, q, select, time, Kind, Refill};
use super::pages::{chain_banner, chain_state, offset, query, respond, LIMIT};
use super::{page, Session};
use crate::error::Result;
use crate::{audit, certs, registry, users, State};
use cloak_api::*;

// ---- registry credentials ----

pub(super) async fn registries(S(state): S<State>, s: Session) -> Response {
    respond(registries_page(&state, &s, StatusCode::OK, &Refill::default()).await)
}

pub(super) async fn registries_page(
    state: &State,
    s: &Session,
    status: StatusCode,
    refill: &Refill,
) -> Result<Response> {
    s.may("getAllRegistries")?;
    let items = registry::list(state, &s.p).await?;
    let edit = s.can("updateRegistry");
    let mut body = String::from(
        r#"<p class="help">Passwords are write-only: they are sealed under the master key and never shown again. Leave the password empty to keep it.</p>"#,
    );
    for r in &items {
        let form = format!("reg-{}", r.registry_id);
        let _ = write!(
            body,
            r#"<section class="card" aria-labelledby="{form}-h"><h2 id="{form}-h">{url}</h2><p>{d} · user {u} · updated {t}</p>"#,
            url = e(&r.url),
            d = e(&r.description),
            u = e(&r.credential.default.username),
            t = time(r.updated_at)
        );
        if edit {
            let _ = write!(
                body,
                r#"<details{open}><summary>Edit</summary><form method="post" action="/registries/{id}">{c}"#,
                open = if refill.form == form { " open" } else { "" },
                id = e(&r.registry_id),
                c = csrf(&s.csrf)
            );
            field(
                &mut body,
                refill,
                &form,
                "url",
                "Registry",
                Kind::Text,
                &r.url,
                "",
            );
            field(
                &mut body,
                refill,
                &form,
                "description",
                "Description",
                Kind::Text,
                &r.description,
                "",
            );
            field(
                &mut body,
                refill,
                &form,
                "credential.default.username",
                "User name",
                Kind::Text,
                &r.credential.default.username,
                "",
            );
            field(
                &mut body,
                refill,
                &form,
                "credential.default.password",
                "New password",
                Kind::Password,
                "",
                "Empty keeps the saved password.",
            );
            body.push_str(&refill.unplaced(&form));
            let _ = write!(
                body,
                r#"<button type="submit">Save</button></form></details><form method="post" action="/registries/{id}/delete">{c}<button type="submit" class="danger">Delete {url}</button></form>"#,
                id = e(&r.registry_id),
                c = csrf(&s.csrf),
                url = e(&r.url)
            );
        }
        body.push_str("</section>");
    }
    if items.is_empty() {
        body.push_str("<p>No saved credentials.</p>");
    }
    if s.can("createRegistry") {
        body.push_str(
            r#"<h2>Add a credential</h2><form method="post" action="/registries" class="card">"#,
        );
        body.push_str(&csrf(&s.csrf));
        field(
            &mut body,
            refill,
            "reg-new",
            "url",
            "Registry",
            Kind::Text,
            "",
            "Host (and port) of the registry, e.g. registry.example:5000",
        );
        field(
            &mut body,
            refill,
            "reg-new",
            "description",
            "Description",
            Kind::Text,
            "",
            "",
        );
        field(
            &mut body,
            refill,
            "reg-new",
            "credential.default.username",
            "User name",
            Kind::Text,
            "",
            "",
        );
        field(
            &mut body,
            refill,
            "reg-new",
            "credential.default.password",
            "Password",
            Kind::Password,
            "",
            "Write-only.",
        );
        body.push_str(&refill.unplaced("reg-new"));
        body.push_str(r#"<button type="submit">Add credential</button></form>"#);
    }
    Ok(page(
        s,
        status,
        "/registries",
        "Registry credentials",
        &body,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct MatchQuery {
    name: Option<String>,
}

/// The saved credential (host and user, never the password) for an image's registry: the
/// convert form offers it.
pub(super) async fn registry_match(
    S(state): S<State>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let r: Result<Response> = async {
        s.may("getRegistryForImage")?;
        let mq: MatchQuery = query(&raw)?;
        let name = mq.name.unwrap_or_default();
        Ok(match registry::for_image(&state, &s.p, &name).await {
            Ok(r) => {
                Json(serde_json::json!({"url": r.url, "username": r.credential.default.username}))
                    .into_response()
            }
            Err(_) => Json(serde_json::json!(null)).into_response(),
        })
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

// ---- certificates ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct CertQuery {
    status: Option<String>,
    offset: Option<i64>,
}

pub(super) async fn certificates(
    S(state): S<State>,
    s: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    respond(
        async {
            s.may("getCertificate")?;
            let cq: CertQuery = query(&raw)?;
            let off = offset(cq.offset)?;
            let st = cq.status.unwrap_or_default();
            let (n, items) = certs::list(&state, &s.p, Some(&st), LIMIT, off).await?;
            let mut body = String::from(r#"<form method="get" action="/certificates" class="filters">"#);
            select(&mut body, "cf", "status", "Status", &[("", "any"), ("ISSUED", "ISSUED"), ("REJECTED", "REJECTED")], &st);
            body.push_str(r#"<button type="submit">Filter</button></form>"#);
            body.push_str(r#"<table><caption class="sr-only">Certificate requests</caption><thead><tr><th scope="col">Requested</th><th scope="col">Verdict</th><th scope="col">Reason code</th><th scope="col">TEE</th><th scope="col">TCB status</th><th scope="col">Advisories</th><th scope="col">Subject</th><th scope="col">Detail</th></tr></thead><tbody>"#);
            for c in &items {
                let sim = if c.simulated {
                    r#" <span class="badge bad">SIMULATED</span>"#
                } else {
                    ""
                };
                let _ = write!(
                    body,
                    r#"<tr><td>{t}</td><td>{st}{sim}</td><td>{rc}</td><td>{tee}</td><td>{tcb}</td><td>{adv}</td><td>{subj}</td><td>{d}</td></tr>"#,
                    t = time(c.created_at),
                    st = badge(&c.status),
                    rc = e(c.reason_code.as_deref().unwrap_or("")),
                    tee = e(c.tee.as_deref().unwrap_or("")),
                    tcb = e(c.tcb_status.as_deref().unwrap_or("")),
                    adv = e(&c.advisory_ids.join(", ")),
                    subj = e(c.subject.as_deref().unwrap_or("")),
                    d = e(&c.detail)
                );
            }
            if items.is_empty() {
                body.push_str(r#"<tr><td colspan="8">No certificate requests.</td></tr>"#);
            }
            body.push_str("</tbody></table>");
            body.push_str(&pager(&format!("/certificates?status={}", q(&st)), off, LIMIT, n));
            Ok(page(&s, StatusCode::OK, "/certificates", "Certificates", &body))
        }
        .await,
    )
}

// ---- audit ----

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    entity_id: Option<String>,
    offset: Option<i64>,
}

/// A table of audit records.
pub(super) fn audit_table(items: &[AuditRecord]) -> String {
    let mut body = String::from(
        r#"<table><caption class="sr-only">Audit records</caption><thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Object</th><th scope="col">Details</th></tr></thead><tbody>"#,
    );
    for r in items {
        let _ = write!(
            body,
            r#"<tr><td>{seq}</td><td>{t}</td><td>{a}</td><td>{act}</td><td>{et} <code>{eid}</code></td><td><code class="details">{d}</code></td></tr>"#,
            seq = r.seq,
            t = time(r.time),
            a = e(&r.actor_name),
            act = e(&r.action),
            et = e(&r.entity_type),
            eid = e(&r.entity_id),
            d = e(&r.details.to_string())
        );
    }
    if items.is_empty() {
        body.push_str(r#"<tr><td colspan="6">No records.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    body
}

pub(super) async fn audit(S(state): S<State>, s: Session, RawQuery(raw): RawQuery) -> Response {
    respond(
        async {
            s.may("getAuditLog")?;
            let aq: AuditQuery = query(&raw)?;
            let off = offset(aq.offset)?;
            let (action, actor, entity) = (
                aq.action.unwrap_or_default(),
                aq.actor.unwrap_or_default(),
                aq.entity_id.unwrap_or_default(),
            );
            for (f, v) in [("action", &action), ("actor", &actor), ("entity_id", &entity)] {
                crate::validate::text(f, v, 256)?;
            }
            let f = audit::AuditFilter {
                action: Some(action.clone()).filter(|s| !s.is_empty()),
                actor: Some(actor.clone()).filter(|s| !s.is_empty()),
                entity_id: Some(entity.clone()).filter(|s| !s.is_empty()),
                since_seq: None,
            };
            let (n, items) = audit::list(&state.db, &s.p.account_id, &f, LIMIT, off).await?;
            let mut body = chain_banner(&chain_state(&state, &s.p.account_id).await?);
            body.push_str(r#"<form method="get" action="/audit" class="filters" role="search">"#);
            let none = Refill::default();
            field(&mut body, &none, "af", "action", "Action", Kind::Text, &action, "e.g. Build Whitelisted");
            field(&mut body, &none, "af", "actor", "Actor", Kind::Text, &actor, "");
            field(&mut body, &none, "af", "entity_id", "Object id", Kind::Text, &entity, "");
            body.push_str(r#"<button type="submit">Filter</button></form>"#);
            if s.can("exportAuditLog") {
                body.push_str(r#"<p><a href="/audit/export" download>Export the whole chain (JSON lines)</a></p>"#);
            }
            body.push_str(&audit_table(&items));
            let base = format!("/audit?action={}&actor={}&entity_id={}", q(&action), q(&actor), q(&entity));
            body.push_str(&pager(&base, off, LIMIT, n));
            Ok(page(&s, StatusCode::OK, "/audit", "Audit", &body))
        }
        .await,
    )
}

pub(super) async fn audit_export(S(state): S<State>, s: Session) -> Response {
    respond(
        async {
            s.may("exportAuditLog")?;
            let text = crate::routes::export_ndjson(&state, &s.p).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-ndjson"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"cloak-audit.jsonl\"",
                    ),
                ],
                text,
            )
                .into_response())
        }
        .await,
    )
}

// ---- users and API keys ----

pub(super) async fn users(S(state): S<State>, s: Session) -> Response {
    respond(users_page(&state, &s, StatusCode::OK, &Refill::default(), None).await)
}

const ROLES: &[(&str, &str)] = &[
    ("READER", "READER"),
    ("WRITER", "WRITER"),
    ("MANAGER", "MANAGER"),
];

pub(super) async fn users_page(
    state: &State,
    s: &Session,
    status: StatusCode,
    refill: &Refill,
    new_secret: Option<&ApiKeyCreated>,
) -> Result<Response> {
    s.may("listApiKeys")?;
    let list = users::list(state, &s.p).await?;
    let keys = users::list_keys(state, &s.p).await?;
    let mut body = String::new();
    if let Some(k) = new_secret {
        let _ = write!(
            body,
            r#"<div class="banner ok" role="status"><p>API key {n} created. Copy its secret now: it is not shown again.</p>{c}</div>"#,
            n = e(&k.key.name),
            c = super::html::copyable("Secret", &k.secret)
        );
    }
    body.push_str(r#"<h2>Users</h2><table><caption class="sr-only">Users</caption><thead><tr><th scope="col">User</th><th scope="col">Email</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col">Last sign-in</th><th scope="col">Change</th></tr></thead><tbody>"#);
    for u in &list {
        let role = u.roles.first().map(|r| r.as_str()).unwrap_or("READER");
        let form = format!("user-{}", u.user_id);
        let _ = write!(
            body,
            r#"<tr><td>{n}</td><td>{m}</td><td>{r}</td><td>{st}</td><td>{t}</td><td><form method="post" action="/users/{id}" class="inline">{c}"#,
            n = e(&u.user_name),
            m = e(&u.user_email),
            r = e(role),
            st = badge(&u.status),
            t = u.last_logged_in_at.map(time).unwrap_or_default(),
            id = e(&u.user_id),
            c = csrf(&s.csrf)
        );
        select(
            &mut body,
            &form,
            "role",
            &format!("Role of {}", u.user_name),
            ROLES,
            role,
        );
        select(
            &mut body,
            &form,
            "status",
            &format!("Status of {}", u.user_name),
            &[("ACTIVE", "ACTIVE"), ("DISABLED", "DISABLED")],
            &u.status,
        );
        body.push_str(&refill.unplaced(&form));
        let _ = write!(
            body,
            r#"<button type="submit">Save {}</button></form></td></tr>"#,
            e(&u.user_name)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(r#"<h3>New user</h3><form method="post" action="/users" class="card">"#);
    body.push_str(&csrf(&s.csrf));
    field(
        &mut body,
        refill,
        "user-new",
        "user_name",
        "User name",
        Kind::Text,
        "",
        "",
    );
    field(
        &mut body,
        refill,
        "user-new",
        "user_email",
        "Email",
        Kind::Text,
        "",
        "Optional.",
    );
    field(
        &mut body,
        refill,
        "user-new",
        "password",
        "Password",
        Kind::Password,
        "",
        "At least 12 characters; write-only.",
    );
    select(
        &mut body,
        "user-new",
        "role",
        "Role",
        ROLES,
        refill
            .value("role")
            .filter(|_| refill.form == "user-new")
            .unwrap_or("READER"),
    );
    body.push_str(&refill.unplaced("user-new"));
    body.push_str(r#"<button type="submit">Create user</button></form>"#);

    body.push_str(r#"<h2>API keys</h2><table><caption class="sr-only">API keys</caption><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Created by</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">State</th></tr></thead><tbody>"#);
    for k in &keys {
        let state_cell = match k.revoked_at {
            Some(t) => format!("revoked {}", time(t)),
            None => format!(
                r#"<form method="post" action="/api-keys/{id}/revoke" class="inline">{c}<button type="submit" class="danger">Revoke {n}</button></form>"#,
                id = e(&k.key_id),
                c = csrf(&s.csrf),
                n = e(&k.name)
            ),
        };
        let _ = write!(
            body,
            r#"<tr><td>{n}</td><td>{r}</td><td>{by}</td><td>{c}</td><td>{u}</td><td>{st}</td></tr>"#,
            n = e(&k.name),
            r = k.role.as_str(),
            by = e(&k.created_by),
            c = time(k.created_at),
            u = k.last_used_at.map(time).unwrap_or_default(),
            st = state_cell
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(r#"<h3>New API key</h3><form method="post" action="/api-keys" class="card">"#);
    body.push_str(&csrf(&s.csrf));
    field(
        &mut body,
        refill,
        "key-new",
        "name",
        "Name",
        Kind::Text,
        "",
        "What uses it, e.g. ci-pipeline.",
    );
    select(&mut body, "key-new", "role", "Role", ROLES, "WRITER");
    body.push_str(&refill.unplaced("key-new"));
    body.push_str(r#"<button type="submit">Create API key</button></form>"#);
    Ok(page(s, status, "/users", "Users and API keys", &body))
}
