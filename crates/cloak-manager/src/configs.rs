//! App configs and secrets (CCM's `/v1/app_configs`): entries sealed under the master key
//! (AES-256-GCM, bound to their config id), attached to an app or to one build, managed by
//! operators (write-only values, every change audited), and released at
//! `GET /v1/runtime/app_configs` only to a client certificate this manager's CA issued to a
//! build that is WHITELISTED at the time of the request.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, Actor, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::{validate, State};
use cloak_api::{
    AppConfig, AppConfigContents, AppConfigList, AppConfigPatch, AppConfigRequest,
    RuntimeAppConfig, RuntimeConfig,
};

/// The verified client certificate chain of a TLS connection (leaf first, DER), set by the
/// server for every request of a connection that presented one.
#[derive(Debug, Clone)]
pub struct ClientCert(pub std::sync::Arc<Vec<Vec<u8>>>);

/// Largest sealed config (all entries, JSON).
const MAX_CONFIG: usize = 1 << 20;

fn context(id: &str) -> String {
    format!("app_config:{id}:entries")
}

fn check_entries(
    entries: &BTreeMap<String, AppConfigContents>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, v) in entries {
        let field = format!("app_config.{name}");
        let ok = if let Some(var) = name.strip_prefix("env:") {
            !var.is_empty() && !var.contains('=') && !var.contains('\0')
        } else if let Some(k) = name.strip_prefix("sgx-key:") {
            let hex_ok = v
                .contents
                .as_deref()
                .is_some_and(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()));
            if !hex_ok {
                return Err(Error::field(
                    &field,
                    "an encrypted-mount key is 32 hex digits (16 bytes)",
                ));
            }
            !k.is_empty() && !k.contains('/')
        } else {
            name.starts_with('/') && !name.split('/').any(|c| c == "..") && !name.contains('\0')
        };
        if !ok {
            return Err(Error::field(
                &field,
                "entry names are /absolute/path (a file), env:NAME (a variable) or sgx-key:NAME (a Gramine encrypted-mount key)",
            ));
        }
        let contents = v
            .contents
            .clone()
            .ok_or_else(|| Error::field(&field, "contents is required"))?;
        out.insert(name.clone(), contents);
    }
    let size: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_CONFIG {
        return Err(Error::field(
            "app_config",
            format!("must be at most {MAX_CONFIG} bytes in all"),
        ));
    }
    Ok(out)
}

fn masked(names: impl Iterator<Item = String>) -> BTreeMap<String, AppConfigContents> {
    names
        .map(|n| (n, AppConfigContents { contents: None }))
        .collect()
}

const COLS: &str = "config_id, app_id, build_id, name, description, labels, ports, entry_names, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<AppConfig> {
    let labels: String = r.try_get("labels")?;
    let ports: String = r.try_get("ports")?;
    let names: String = r.try_get("entry_names")?;
    let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
    Ok(AppConfig {
        config_id: r.try_get("config_id")?,
        app_id: r.try_get("app_id")?,
        build_id: r.try_get("build_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        ports: serde_json::from_str(&ports).unwrap_or_default(),
        app_config: masked(names.into_iter()),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// `POST /v1/app_configs`.
pub async fn create(state: &State, p: &Principal, req: AppConfigRequest) -> Result<AppConfig> {
    validate::name("name", &req.name, 256)?;
    validate::text("description", &req.description, 4096)?;
    let entries = check_entries(&req.app_config)?;
    let (app_id, build_id) = match (&req.app_id, &req.build_id) {
        (_, Some(b)) => {
            let b = validate::uuid("build_id", b)?;
            let build = crate::builds::get(state, p, &b).await?;
            if let Some(a) = &req.app_id {
                if *a != build.app_id {
                    return Err(Error::field(
                        "app_id",
                        format!("build {b} belongs to app {}, not {a}", build.app_id),
                    ));
                }
            }
            (build.app_id, Some(b))
        }
        (Some(a), None) => {
            let a = validate::uuid("app_id", a)?;
            crate::apps::get(state, p, &a).await?;
            (a, None)
        }
        (None, None) => {
            return Err(Error::field(
                "app_id",
                "give app_id or build_id: what the config is attached to",
            ))
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = state.master().seal(
        &context(&id),
        serde_json::to_string(&entries)
            .expect("serialisable")
            .as_bytes(),
    );
    let names: Vec<&String> = entries.keys().collect();
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO app_configs (config_id, account_id, app_id, build_id, name, description, labels, ports, \
         entry_names, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(&app_id)
    .bind(build_id.as_deref())
    .bind(&req.name)
    .bind(&req.description)
    .bind(serde_json::to_string(&req.labels).expect("serialisable"))
    .bind(serde_json::to_string(&req.ports).expect("serialisable"))
    .bind(serde_json::to_string(&names).expect("serialisable"))
    .bind(sealed)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::record(state, tx, p, Event {
        action: "App Config Created",
        entity_type: "app_config",
        entity_id: &id,
        details: json!({"name": req.name, "app_id": app_id, "build_id": build_id, "entries": names}),
    })
    .await?;
    get(state, p, &id).await
}

/// `GET /v1/app_configs/{id}`.
pub async fn get(state: &State, p: &Principal, id: &str) -> Result<AppConfig> {
    let r = sqlx::query(&format!(
        "SELECT {COLS} FROM app_configs WHERE account_id = $1 AND config_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "app config",
        id: id.into(),
    })?;
    from_row(&r)
}

/// `GET /v1/app_configs` (optionally one app's).
pub async fn list(state: &State, p: &Principal, app_id: Option<&str>) -> Result<AppConfigList> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM app_configs WHERE account_id = $1 AND ($2 = '' OR app_id = $2) \
         ORDER BY created_at, config_id"
    ))
    .bind(&p.account_id)
    .bind(app_id.unwrap_or_default())
    .fetch_all(state.db.reader())
    .await?;
    Ok(AppConfigList {
        items: rows.iter().map(from_row).collect::<Result<_>>()?,
    })
}

/// `PATCH /v1/app_configs/{id}`.
pub async fn update(
    state: &State,
    p: &Principal,
    id: &str,
    patch: AppConfigPatch,
) -> Result<AppConfig> {
    let current = get(state, p, id).await?;
    if let Some(n) = &patch.name {
        validate::name("name", n, 256)?;
    }
    if let Some(d) = &patch.description {
        validate::text("description", d, 4096)?;
    }
    let (sealed, names) = match &patch.app_config {
        Some(e) => {
            let entries = check_entries(e)?;
            let names: Vec<&String> = entries.keys().collect();
            (
                Some(
                    state.master().seal(
                        &context(id),
                        serde_json::to_string(&entries)
                            .expect("serialisable")
                            .as_bytes(),
                    ),
                ),
                Some(serde_json::to_string(&names).expect("serialisable")),
            )
        }
        None => (None, None),
    };
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE app_configs SET name = COALESCE($1, name), description = COALESCE($2, description), \
         ports = COALESCE($3, ports), labels = COALESCE($4, labels), sealed = COALESCE($5, sealed), \
         entry_names = COALESCE($6, entry_names), updated_at = $7 WHERE account_id = $8 AND config_id = $9",
    )
    .bind(patch.name.as_deref())
    .bind(patch.description.as_deref())
    .bind(patch.ports.as_ref().map(|v| serde_json::to_string(v).expect("serialisable")))
    .bind(patch.labels.as_ref().map(|v| serde_json::to_string(v).expect("serialisable")))
    .bind(sealed)
    .bind(names.as_deref())
    .bind(state.clock.now())
    .bind(&p.account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit::record(state, tx, p, Event {
        action: "App Config Updated",
        entity_type: "app_config",
        entity_id: id,
        details: json!({"name": patch.name.as_deref().unwrap_or(&current.name),
                        "entries_changed": patch.app_config.as_ref().map(|e| e.keys().collect::<Vec<_>>())}),
    })
    .await?;
    get(state, p, id).await
}

/// `DELETE /v1/app_configs/{id}`.
pub async fn delete(state: &State, p: &Principal, id: &str) -> Result<()> {
    let current = get(state, p, id).await?;
    let mut tx = state.db.begin().await?;
    sqlx::query("DELETE FROM app_configs WHERE account_id = $1 AND config_id = $2")
        .bind(&p.account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "App Config Deleted",
            entity_type: "app_config",
            entity_id: id,
            details: json!({"name": current.name, "app_id": current.app_id}),
        },
    )
    .await?;
    Ok(())
}

fn refuse(code: &'static str, detail: impl Into<String>) -> Error {
    Error::Refused {
        code,
        detail: detail.into(),
    }
}

/// `GET /v1/runtime/app_configs`: the merged configs of the build the client certificate was
/// issued to (the app's, then the build's own over them), if that build is WHITELISTED now and
/// the certificate is one this manager issued and has not expired by the manager's clock.
pub async fn runtime(
    state: &State,
    cert: Option<&ClientCert>,
    request_id: &str,
) -> Result<RuntimeAppConfig> {
    let Some(chain) = cert.and_then(|c| c.0.first().cloned().map(|l| (l, c))) else {
        return Err(refuse(
            "client_certificate_required",
            "this endpoint needs TLS client authentication with a certificate this manager issued (POST /v1/certificates)",
        ));
    };
    let (leaf, _) = chain;
    let embedded = cloak_attest::extension::decode_certificate(&leaf).map_err(|e| {
        refuse(
            "client_certificate_invalid",
            format!("the client certificate carries no cloak evidence extension: {e}"),
        )
    })?;
    let build_id = embedded.build_id;
    // Only a certificate on record as ISSUED to that build (the TLS layer already checked it
    // chains to this manager's root), not past its expiry at the manager's clock.
    let rows = sqlx::query(
        "SELECT cert_pem, not_after, account_id, app_id FROM certificates WHERE build_id = $1 AND status = 'ISSUED'",
    )
    .bind(&build_id)
    .fetch_all(state.db.reader())
    .await?;
    let now = state.clock.now();
    let mut found = None;
    for r in &rows {
        let pem: Option<String> = r.try_get(0)?;
        let der = pem.as_deref().and_then(|p| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(p.as_bytes()).ok()
        });
        if der.is_some_and(|d| d.as_ref() == leaf.as_slice()) {
            let not_after: Option<i64> = r.try_get(1)?;
            found = Some((
                not_after,
                r.try_get::<String, _>(2)?,
                r.try_get::<String, _>(3)?,
            ));
            break;
        }
    }
    let Some((not_after, account_id, app_id)) = found else {
        return Err(refuse(
            "client_certificate_unknown",
            "the client certificate is not one this manager issued to a build",
        ));
    };
    if not_after.is_some_and(|t| t <= now) {
        return Err(refuse(
            "client_certificate_expired",
            format!(
                "the client certificate expired at {}",
                not_after.unwrap_or_default()
            ),
        ));
    }
    let build: Option<(String, i64)> =
        sqlx::query_as("SELECT status, debug FROM builds WHERE build_id = $1")
            .bind(&build_id)
            .fetch_optional(state.db.reader())
            .await?;
    let (status, build_debug) = match build {
        Some((s, d)) => (Some(s), d != 0),
        None => (None, false),
    };
    match status.as_deref() {
        Some("WHITELISTED") => {}
        Some("PENDING") => {
            return Err(refuse(
                "not_whitelisted",
                format!("build {build_id} is PENDING"),
            ))
        }
        Some(s) => {
            return Err(refuse(
                "revoked",
                format!("build {build_id} is {s}: its configs are no longer released"),
            ))
        }
        None => {
            return Err(refuse(
                "unknown_measurement",
                format!("build {build_id} no longer exists"),
            ))
        }
    }
    still_accepted(state, &app_id, &embedded.claims, build_debug).await?;
    let rows = sqlx::query(
        "SELECT config_id, build_id, labels, sealed FROM app_configs WHERE account_id = $1 AND app_id = $2 \
         AND (build_id IS NULL OR build_id = $3) ORDER BY created_at, config_id",
    )
    .bind(&account_id)
    .bind(&app_id)
    .bind(&build_id)
    .fetch_all(state.db.reader())
    .await?;
    let master = state.master();
    let mut app_level = BTreeMap::new();
    let mut build_level = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut ids = Vec::new();
    for r in &rows {
        let id: String = r.try_get(0)?;
        let for_build: Option<String> = r.try_get(1)?;
        let l: String = r.try_get(2)?;
        let sealed: Vec<u8> = r.try_get(3)?;
        let plain = master.open(&context(&id), &sealed)?;
        let entries: BTreeMap<String, String> = serde_json::from_slice(&plain)
            .map_err(|e| Error::Internal(format!("app config {id}: {e}")))?;
        let target = if for_build.is_some() {
            &mut build_level
        } else {
            &mut app_level
        };
        target.extend(entries);
        labels.extend(serde_json::from_str::<BTreeMap<String, String>>(&l).unwrap_or_default());
        ids.push(id);
    }
    app_level.extend(build_level);
    let names: Vec<&String> = app_level.keys().collect();
    let mut tx = state.db.begin().await?;
    audit::append(
        &state.db,
        &mut tx,
        &account_id,
        &Actor {
            kind: "system",
            id: format!("build:{build_id}"),
            name: format!("build {build_id}"),
        },
        Event {
            action: "App Config Released to Application",
            entity_type: "build",
            entity_id: &build_id,
            details: json!({"configs": ids, "entries": names, "request_id": request_id}),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(request_id, %build_id, configs = ids.len(), "app configs released");
    let ca = crate::ca::load_or_create(&state.db, &master, now).await?;
    Ok(RuntimeAppConfig {
        config: RuntimeConfig {
            app_config: app_level
                .into_iter()
                .map(|(k, v)| (k, AppConfigContents { contents: Some(v) }))
                .collect(),
            labels,
            zone_ca: vec![ca.issuing_pem.clone(), ca.root_pem.clone()],
        },
        extra: json!({}),
    })
}

/// Whether the evidence a certificate was issued for (its claims, embedded by this CA) would
/// still be accepted: simulated evidence only while the manager allows it, a debug enclave only
/// while the app's policy allows debug (for a debug build), a TCB status only while the app's
/// policy lists it. A certificate lives for its validity; the secrets it unlocks follow the
/// policy of now (the build's status is checked by the caller).
async fn still_accepted(
    state: &State,
    app_id: &str,
    claims: &cloak_attest::Claims,
    build_debug: bool,
) -> Result<()> {
    if claims.simulated && !state.config.allow_simulated_attestation {
        return Err(refuse(
            "simulation_not_allowed",
            "the client certificate was issued for SIMULATED evidence, which this manager no \
             longer accepts (--allow-simulated-attestation is off)",
        ));
    }
    let policy = crate::apps::get_any(state, app_id)
        .await?
        .certificate_policy;
    if claims.debug && !(build_debug && policy.allow_debug.unwrap_or(false)) {
        return Err(refuse(
            "debug_enclave",
            "the client certificate was issued to a debug enclave, which the app's certificate \
             policy no longer allows",
        ));
    }
    if let Some(tcb) = &claims.tcb {
        let accepted = policy.allowed_tcb_statuses.unwrap_or_else(|| {
            cloak_attest::DEFAULT_TCB_STATUSES
                .map(String::from)
                .to_vec()
        });
        if !accepted.contains(&tcb.status) {
            return Err(refuse(
                "tcb_status",
                format!(
                    "the client certificate was issued for TCB status {}, which the app's \
                     certificate policy no longer accepts ({accepted:?})",
                    tcb.status
                ),
            ));
        }
    }
    Ok(())
}

/// Re-seal every config under the primary key (master key rotation).
pub async fn reseal_all(db: &crate::store::Db, keys: &crate::secrets::MasterKey) -> Result<usize> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query("SELECT config_id, sealed FROM app_configs")
        .fetch_all(&mut *tx)
        .await?;
    let mut n = 0;
    for r in &rows {
        let id: String = r.try_get(0)?;
        let sealed: Vec<u8> = r.try_get(1)?;
        if keys.is_current(&sealed) {
            continue;
        }
        let plain = keys.open(&context(&id), &sealed)?;
        sqlx::query("UPDATE app_configs SET sealed = $1 WHERE config_id = $2")
            .bind(keys.seal(&context(&id), &plain))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}
