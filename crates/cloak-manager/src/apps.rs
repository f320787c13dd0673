//! Apps: what builds are registered under, with the approval quorum their builds need.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::{validate, State};
use cloak_api::{App, AppPatch, AppRequest, ApprovalPolicy, CertificatePolicy, Role};

/// The stored body of an app (everything but its id, name, policy and times).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Body {
    description: String,
    input_image_name: String,
    output_image_name: String,
    isvprodid: i64,
    isvsvn: i64,
    mem_size: i64,
    threads: i64,
    default_build_settings: Value,
    allowed_domains: Vec<String>,
    advanced_settings: Value,
    labels: std::collections::BTreeMap<String, String>,
    certificate_policy: CertificatePolicy,
}

/// Checks an approval policy against the account's users (names the field).
pub async fn check_policy(state: &State, p: &Principal, policy: &ApprovalPolicy) -> Result<()> {
    if policy.n == 0 || policy.n > 32 {
        return Err(Error::field(
            "approval_policy.n",
            "must be between 1 and 32",
        ));
    }
    if policy.approvers.is_empty() || policy.approvers.len() > 64 {
        return Err(Error::field(
            "approval_policy.approvers",
            "must list 1 to 64 user ids or roles (role:WRITER, role:MANAGER)",
        ));
    }
    let mut users = 0u32;
    for a in &policy.approvers {
        if let Some(role) = a.strip_prefix("role:") {
            match Role::parse(role) {
                Some(Role::Writer | Role::Manager) => {}
                _ => {
                    return Err(Error::field(
                        "approval_policy.approvers",
                        format!("{a:?}: only role:WRITER and role:MANAGER may approve"),
                    ))
                }
            }
        } else {
            let id = validate::uuid("approval_policy.approvers", a)?;
            let role: Option<String> = sqlx::query_scalar(
                "SELECT role FROM users WHERE account_id = $1 AND user_id = $2 AND status = 'ACTIVE'",
            )
            .bind(&p.account_id)
            .bind(&id)
            .fetch_optional(state.db.reader())
            .await?;
            match role.as_deref().and_then(Role::parse) {
                Some(Role::Writer | Role::Manager) => users += 1,
                Some(Role::Reader) => {
                    return Err(Error::field(
                        "approval_policy.approvers",
                        format!("user {id} is a READER and may not approve"),
                    ))
                }
                None => {
                    return Err(Error::field(
                        "approval_policy.approvers",
                        format!("user {id} is not an active user of this account"),
                    ))
                }
            }
        }
    }
    let only_users = policy.approvers.iter().all(|a| !a.starts_with("role:"));
    if only_users && users < policy.n {
        return Err(Error::field(
            "approval_policy.n",
            format!(
                "needs {} approvals but only {users} approvers are listed",
                policy.n
            ),
        ));
    }
    Ok(())
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<App> {
    let body: String = r.try_get("body")?;
    let body: Body =
        serde_json::from_str(&body).map_err(|e| Error::Internal(format!("app body: {e}")))?;
    let policy: String = r.try_get("approval_policy")?;
    Ok(App {
        app_id: r.try_get("app_id")?,
        name: r.try_get("name")?,
        description: body.description,
        input_image_name: body.input_image_name,
        output_image_name: body.output_image_name,
        isvprodid: body.isvprodid,
        isvsvn: body.isvsvn,
        mem_size: body.mem_size,
        threads: body.threads,
        default_build_settings: body.default_build_settings,
        allowed_domains: body.allowed_domains,
        advanced_settings: body.advanced_settings,
        labels: body.labels,
        certificate_policy: body.certificate_policy,
        approval_policy: serde_json::from_str(&policy)
            .map_err(|e| Error::Internal(format!("app policy: {e}")))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const COLS: &str = "app_id, name, body, approval_policy, created_at, updated_at";

pub async fn list(
    state: &State,
    p: &Principal,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<App>)> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE account_id = $1")
        .bind(&p.account_id)
        .fetch_one(state.db.reader())
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM apps WHERE account_id = $1 ORDER BY name LIMIT {limit} OFFSET {offset}"
    ))
    .bind(&p.account_id)
    .fetch_all(state.db.reader())
    .await?;
    Ok((total, rows.iter().map(from_row).collect::<Result<_>>()?))
}

pub async fn get(state: &State, p: &Principal, id: &str) -> Result<App> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM apps WHERE account_id = $1 AND app_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "app",
        id: id.into(),
    })?;
    from_row(&row)
}

/// An app by id in any account (attestation requests name their app; they carry no token).
pub async fn get_any(state: &State, id: &str) -> Result<App> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM apps WHERE app_id = $1"))
        .bind(id)
        .fetch_optional(state.db.reader())
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "app",
            id: id.into(),
        })?;
    from_row(&row)
}

/// Finds an app by name in the caller's account.
pub async fn find_by_name(state: &State, p: &Principal, name: &str) -> Result<Option<App>> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM apps WHERE account_id = $1 AND name = $2"
    ))
    .bind(&p.account_id)
    .bind(name)
    .fetch_optional(state.db.reader())
    .await?;
    row.as_ref().map(from_row).transpose()
}

fn check_json_object(field: &str, v: &Option<Value>) -> Result<()> {
    match v {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(Error::field(field, "must be a JSON object")),
    }
    if let Some(v) = v {
        if crate::audit::canonical(v).len() > 64 * 1024 {
            return Err(Error::field(field, "must be at most 64 KiB of JSON"));
        }
    }
    Ok(())
}

fn check_body(b: &Body) -> Result<()> {
    validate::text("description", &b.description, 4096)?;
    validate::image_name("input_image_name", &b.input_image_name)?;
    validate::image_name("output_image_name", &b.output_image_name)?;
    if b.allowed_domains.len() > 256 {
        return Err(Error::field("allowed_domains", "at most 256 domains"));
    }
    for d in &b.allowed_domains {
        validate::name("allowed_domains", d, 253)?;
    }
    if b.labels.len() > 64 {
        return Err(Error::field("labels", "at most 64 labels"));
    }
    for (k, v) in &b.labels {
        validate::name("labels", k, 128)?;
        validate::text("labels", v, 1024)?;
    }
    if let Some(v) = b.certificate_policy.validity_seconds {
        if !(60..=366 * 86400).contains(&v) {
            return Err(Error::field(
                "certificate_policy.validity_seconds",
                "must be between 60 and 31622400",
            ));
        }
    }
    Ok(())
}

pub async fn create(state: &State, p: &Principal, req: AppRequest) -> Result<App> {
    validate::name("name", &req.name, 255)?;
    check_json_object("default_build_settings", &req.default_build_settings)?;
    check_json_object("advanced_settings", &req.advanced_settings)?;
    let policy = req.approval_policy.unwrap_or_default();
    check_policy(state, p, &policy).await?;
    let body = Body {
        description: req.description.unwrap_or_default(),
        input_image_name: req.input_image_name,
        output_image_name: req.output_image_name,
        isvprodid: req.isvprodid.unwrap_or(0).into(),
        isvsvn: req.isvsvn.unwrap_or(0).into(),
        mem_size: req.mem_size.unwrap_or(0).min(i64::MAX as u64) as i64,
        threads: req.threads.unwrap_or(0).into(),
        default_build_settings: req.default_build_settings.unwrap_or_else(|| json!({})),
        allowed_domains: req.allowed_domains.unwrap_or_default(),
        advanced_settings: req.advanced_settings.unwrap_or_else(|| json!({})),
        labels: req.labels.unwrap_or_default(),
        certificate_policy: req.certificate_policy.unwrap_or_default(),
    };
    check_body(&body)?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let r = sqlx::query(
        "INSERT INTO apps (app_id, account_id, name, output_image_name, body, approval_policy, created_at, updated_at) \
         VALUES ($1, $2, $3, $7, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(&req.name)
    .bind(serde_json::to_string(&body).expect("serialisable"))
    .bind(serde_json::to_string(&policy).expect("serialisable"))
    .bind(now)
    .bind(&body.output_image_name)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = r {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "an app named {:?} already exists in this account",
                req.name
            )));
        }
        return Err(e);
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "App Created",
            entity_type: "app",
            entity_id: &id,
            details: json!({"name": req.name, "approval_policy": policy}),
        },
    )
    .await?;
    get(state, p, &id).await
}

pub async fn update(state: &State, p: &Principal, id: &str, patch: AppPatch) -> Result<App> {
    check_json_object("default_build_settings", &patch.default_build_settings)?;
    check_json_object("advanced_settings", &patch.advanced_settings)?;
    if let Some(n) = &patch.name {
        validate::name("name", n, 255)?;
    }
    if let Some(policy) = &patch.approval_policy {
        check_policy(state, p, policy).await?;
    }
    let mut tx = state.db.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM apps WHERE account_id = $1 AND app_id = $2{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "app",
        id: id.into(),
    })?;
    let app = from_row(&row)?;
    let mut body: Body = serde_json::from_str(&row.try_get::<String, _>("body")?)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut changed = Vec::new();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = patch.$field.clone() {
                body.$field = v;
                changed.push(stringify!($field));
            }
        };
    }
    set!(description);
    set!(input_image_name);
    set!(output_image_name);
    set!(default_build_settings);
    set!(allowed_domains);
    set!(advanced_settings);
    set!(labels);
    set!(certificate_policy);
    check_body(&body)?;
    let name = patch.name.clone().unwrap_or(app.name.clone());
    let policy = patch
        .approval_policy
        .clone()
        .unwrap_or(app.approval_policy.clone());
    let r = sqlx::query(
        "UPDATE apps SET name = $1, body = $2, approval_policy = $3, updated_at = $4, \
         output_image_name = $7 WHERE account_id = $5 AND app_id = $6",
    )
    .bind(&name)
    .bind(serde_json::to_string(&body).expect("serialisable"))
    .bind(serde_json::to_string(&policy).expect("serialisable"))
    .bind(state.clock.now())
    .bind(&p.account_id)
    .bind(id)
    .bind(&body.output_image_name)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = r {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "an app named {name:?} already exists"
            )));
        }
        return Err(e);
    }
    let mut details = json!({"name": name, "changed": changed});
    if patch.approval_policy.is_some() {
        details["approval_policy"] = json!({"from": app.approval_policy, "to": policy});
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: if patch.approval_policy.is_some() {
                "App Approval Policy Changed"
            } else {
                "App Updated"
            },
            entity_type: "app",
            entity_id: id,
            details,
        },
    )
    .await?;
    get(state, p, id).await
}

pub async fn delete(state: &State, p: &Principal, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    // Existence in the caller's account first: another account learns nothing about this id.
    let exists: Option<String> = sqlx::query_scalar(&format!(
        "SELECT app_id FROM apps WHERE account_id = $1 AND app_id = $2{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if exists.is_none() {
        return Err(Error::NotFound {
            kind: "app",
            id: id.into(),
        });
    }
    let builds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM builds WHERE app_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if builds > 0 {
        return Err(Error::Conflict(format!(
            "app {id} still has {builds} builds: delete them first"
        )));
    }
    let n = sqlx::query("DELETE FROM apps WHERE account_id = $1 AND app_id = $2")
        .bind(&p.account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound {
            kind: "app",
            id: id.into(),
        });
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "App Deleted",
            entity_type: "app",
            entity_id: id,
            details: json!({}),
        },
    )
    .await?;
    Ok(())
}
