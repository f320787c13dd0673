//! Users of an account and API keys for pipelines.

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::{self, Principal};
use crate::error::{Error, Result};
use crate::{validate, State};
use cloak_api::{ApiKey, ApiKeyCreated, ApiKeyRequest, Role, User, UserPatch, UserRequest};

const USER_COLS: &str =
    "user_id, user_name, user_email, role, status, created_at, last_logged_in_at";

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User> {
    let role: String = r.try_get(3)?;
    Ok(User {
        user_id: r.try_get(0)?,
        user_name: r.try_get(1)?,
        user_email: r.try_get(2)?,
        roles: Role::parse(&role).into_iter().collect(),
        status: r.try_get(4)?,
        created_at: r.try_get(5)?,
        last_logged_in_at: r.try_get(6)?,
    })
}

pub async fn list(state: &State, p: &Principal) -> Result<Vec<User>> {
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE account_id = $1 ORDER BY user_name"
    ))
    .bind(&p.account_id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter().map(user_from_row).collect()
}

pub async fn get(state: &State, p: &Principal, id: &str) -> Result<User> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE account_id = $1 AND user_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "user",
        id: id.into(),
    })?;
    user_from_row(&row)
}

pub async fn create(state: &State, p: &Principal, req: UserRequest) -> Result<User> {
    validate::name("user_name", &req.user_name, 64)?;
    if req.user_name.contains(':') {
        return Err(Error::field(
            "user_name",
            "must not contain ':' (HTTP Basic uses it)",
        ));
    }
    let email = req.user_email.unwrap_or_default();
    validate::text("user_email", &email, 256)?;
    auth::check_password_rules("password", &req.password)?;
    let pw = req.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, account_id, user_name, user_email, password_hash, role, status, created_at, role_changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', $7, $7)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(&req.user_name)
    .bind(&email)
    .bind(&hash)
    .bind(req.role.as_str())
    .bind(state.clock.now())
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = inserted {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "a user named {:?} already exists",
                req.user_name
            )));
        }
        return Err(e);
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "User Created",
            entity_type: "user",
            entity_id: &id,
            details: json!({"user_name": req.user_name, "role": req.role.as_str()}),
        },
    )
    .await?;
    get(state, p, &id).await
}

pub async fn update(state: &State, p: &Principal, id: &str, patch: UserPatch) -> Result<User> {
    let is_self = p.user_id() == Some(id);
    if patch.password.is_some() && !is_self {
        return Err(Error::Forbidden(
            "nobody sets another user's password (a MANAGER could then approve as two people): \
             the user changes it, or an operator resets it offline"
                .into(),
        ));
    }
    let changes_others = patch.role.is_some() || patch.status.is_some() || !is_self;
    if changes_others {
        p.require(Role::Manager)?;
    }
    if is_self && (patch.role.is_some_and(|r| r != Role::Manager) || patch.status.is_some()) {
        return Err(Error::Conflict(
            "you cannot lower your own role or disable yourself; ask another MANAGER".into(),
        ));
    }
    if let Some(s) = &patch.status {
        if s != "ACTIVE" && s != "DISABLED" {
            return Err(Error::field("status", "must be ACTIVE or DISABLED"));
        }
    }
    let current = get(state, p, id).await?;
    let hash = match patch.password.clone() {
        Some(pw) => {
            auth::check_password_rules("password", &pw)?;
            let current = patch.current_password.clone().ok_or_else(|| {
                Error::field("current_password", "is required to change your password")
            })?;
            let stored: String =
                sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1")
                    .bind(id)
                    .fetch_one(state.db.reader())
                    .await?;
            let ok = auth::verify_password_queued(stored, current).await?;
            if !ok {
                return Err(Error::field("current_password", "is wrong"));
            }
            Some(
                tokio::task::spawn_blocking(move || auth::hash_password(&pw))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??,
            )
        }
        None => None,
    };
    if let Some(e) = &patch.user_email {
        validate::text("user_email", e, 256)?;
    }
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE users SET role = COALESCE($1, role), status = COALESCE($2, status), \
         user_email = COALESCE($3, user_email), password_hash = COALESCE($4, password_hash), \
         role_changed_at = CASE WHEN $1 IS NULL THEN role_changed_at ELSE $7 END \
         WHERE account_id = $5 AND user_id = $6",
    )
    .bind(patch.role.map(|r| r.as_str()))
    .bind(patch.status.as_deref())
    .bind(patch.user_email.as_deref())
    .bind(hash.as_deref())
    .bind(&p.account_id)
    .bind(id)
    .bind(state.clock.now())
    .execute(&mut *tx)
    .await?;
    if hash.is_some() || patch.status.as_deref() == Some("DISABLED") {
        // A new password or a disabled user ends every open session of that user.
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(state.clock.now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "User Updated",
            entity_type: "user",
            entity_id: id,
            details: json!({
                "user_name": current.user_name,
                "role": patch.role.map(|r| r.as_str()),
                "status": patch.status,
                "password_changed": hash.is_some(),
            }),
        },
    )
    .await?;
    state.principals.invalidate();
    get(state, p, id).await
}

/// Disables a user (rows stay for the audit trail).
pub async fn delete(state: &State, p: &Principal, id: &str) -> Result<()> {
    update(
        state,
        p,
        id,
        UserPatch {
            status: Some("DISABLED".into()),
            ..Default::default()
        },
    )
    .await
    .map(|_| ())
}

// ---- API keys ----

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<ApiKey> {
    let role: String = r.try_get(2)?;
    Ok(ApiKey {
        key_id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
        created_by: r.try_get(3)?,
        created_at: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
        last_used_at: r.try_get(6)?,
    })
}

const KEY_COLS: &str = "key_id, name, role, created_by, created_at, revoked_at, last_used_at";

pub async fn list_keys(state: &State, p: &Principal) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, key_id"
    ))
    .bind(&p.account_id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter().map(key_from_row).collect()
}

pub async fn create_key(state: &State, p: &Principal, req: ApiKeyRequest) -> Result<ApiKeyCreated> {
    validate::name("name", &req.name, 128)?;
    if req.role > p.role {
        return Err(Error::Forbidden(format!(
            "an API key cannot have more power ({}) than its creator ({})",
            req.role.as_str(),
            p.role.as_str()
        )));
    }
    let (secret, hash) = auth::new_secret(auth::API_KEY_PREFIX);
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO api_keys (key_id, account_id, name, role, key_hash, created_by, created_at, created_by_user_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(&req.name)
    .bind(req.role.as_str())
    .bind(&hash)
    .bind(&p.actor.name)
    .bind(now)
    .bind(&p.owner)
    .execute(&mut *tx)
    .await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "API Key Created",
            entity_type: "api_key",
            entity_id: &id,
            details: json!({"name": req.name, "role": req.role.as_str()}),
        },
    )
    .await?;
    Ok(ApiKeyCreated {
        key: ApiKey {
            key_id: id,
            name: req.name,
            role: req.role,
            created_at: now,
            created_by: p.actor.name.clone(),
            revoked_at: None,
            last_used_at: None,
        },
        secret,
    })
}

pub async fn revoke_key(state: &State, p: &Principal, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let n = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE account_id = $2 AND key_id = $3 AND revoked_at IS NULL",
    )
    .bind(state.clock.now())
    .bind(&p.account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::NotFound {
            kind: "active API key",
            id: id.into(),
        });
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "API Key Revoked",
            entity_type: "api_key",
            entity_id: id,
            details: json!({}),
        },
    )
    .await?;
    state.principals.invalidate();
    Ok(())
}
