//! Saved registry credentials (CCM's `/v1/registry`). Passwords are sealed under the master key
//! (bound to the row's id), answered only as `*****`, and never logged or audited.

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::store::Db;
use crate::{validate, State};
use cloak_api::{AuthConfig, CredentialType, Registry, RegistryPatch, RegistryRequest};

/// How a stored password is shown.
pub const MASK: &str = "*****";

/// What a sealed password is bound to: its row and its registry host, so that a row re-pointed
/// at another host (by SQL or by a PATCH without the password) no longer opens.
fn context(id: &str, host: &str) -> String {
    format!("registry:{id}:{host}:password")
}

/// The registry host (`host[:port]`) of a registry URL or an image reference, lower-case;
/// Docker Hub's names map to `docker.io`.
pub fn host_of(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("docker://")
        .or_else(|| s.strip_prefix("https://"))
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let first = s.split('/').next()?;
    if first.is_empty() || first.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (name, port) = match first.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (first, None),
    };
    let numeric_port = port.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let is_host = name == "localhost"
        || name.contains('.')
        || (numeric_port && !name.is_empty())
        || name.starts_with('[');
    // Without a registry host, a reference names Docker Hub (`busybox:1.36`, `library/x`).
    let host = if is_host {
        first.to_ascii_lowercase()
    } else {
        "docker.io".to_string()
    };
    Some(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    })
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Registry> {
    let username: String = r.try_get("username")?;
    Ok(Registry {
        registry_id: r.try_get("registry_id")?,
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        credential: CredentialType {
            default: AuthConfig {
                username: username.clone(),
                password: MASK.into(),
            },
        },
        username,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const COLS: &str = "registry_id, url, username, description, created_at, updated_at";

pub async fn list(state: &State, p: &Principal) -> Result<Vec<Registry>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM registries WHERE account_id = $1 ORDER BY host"
    ))
    .bind(&p.account_id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(state: &State, p: &Principal, id: &str) -> Result<Registry> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM registries WHERE account_id = $1 AND registry_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "registry",
        id: id.into(),
    })?;
    from_row(&row)
}

/// `GET /v1/image/registry?name=IMAGE`: the credential for the image's registry host.
pub async fn for_image(state: &State, p: &Principal, image: &str) -> Result<Registry> {
    validate::image_name("name", image)?;
    let host = host_of(image).ok_or_else(|| Error::field("name", "is not an image reference"))?;
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM registries WHERE account_id = $1 AND host = $2"
    ))
    .bind(&p.account_id)
    .bind(&host)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "registry credential for host",
        id: host,
    })?;
    from_row(&row)
}

/// The decrypted credential for a registry host, for the conversion jobs (never answered).
pub async fn credential_for_host(
    state: &State,
    account_id: &str,
    host: &str,
) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT registry_id, username, secret FROM registries WHERE account_id = $1 AND host = $2",
    )
    .bind(account_id)
    .bind(host)
    .fetch_optional(state.db.reader())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get(0)?;
    let sealed: Vec<u8> = row.try_get(2)?;
    let plain = state.master().open(&context(&id, host), &sealed)?;
    let password = String::from_utf8(plain).map_err(|_| Error::Decrypt {
        what: context(&id, host),
    })?;
    Ok(Some((row.try_get(1)?, password)))
}

fn check(req_url: &str, cred: &AuthConfig) -> Result<String> {
    validate::name("url", req_url, 512)?;
    let host = host_of(req_url).ok_or_else(|| {
        Error::field(
            "url",
            "must name a registry host, e.g. registry.example.com:5000",
        )
    })?;
    validate::name("credential.default.username", &cred.username, 256)?;
    if cred.password.is_empty() || cred.password.len() > 4096 {
        return Err(Error::field(
            "credential.default.password",
            "must be 1 to 4096 bytes",
        ));
    }
    if cred.password == MASK {
        return Err(Error::field(
            "credential.default.password",
            "is the mask, not a password: send the real password (it is write-only)",
        ));
    }
    Ok(host)
}

pub async fn create(state: &State, p: &Principal, req: RegistryRequest) -> Result<Registry> {
    let host = check(&req.url, &req.credential.default)?;
    let description = req.description.unwrap_or_default();
    validate::text("description", &description, 4096)?;
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = state.master().seal(
        &context(&id, &host),
        req.credential.default.password.as_bytes(),
    );
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let r = sqlx::query(
        "INSERT INTO registries (registry_id, account_id, url, host, username, secret, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(&req.url)
    .bind(&host)
    .bind(&req.credential.default.username)
    .bind(sealed)
    .bind(&description)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = r {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "a credential for registry host {host} already exists: PATCH it"
            )));
        }
        return Err(e);
    }
    audit::record(state, tx, p, Event {
        action: "Registry Credential Created",
        entity_type: "registry",
        entity_id: &id,
        details: json!({"url": req.url, "host": host, "username": req.credential.default.username}),
    })
    .await?;
    get(state, p, &id).await
}

pub async fn update(
    state: &State,
    p: &Principal,
    id: &str,
    patch: RegistryPatch,
) -> Result<Registry> {
    let current = get(state, p, id).await?;
    let url = patch.url.clone().unwrap_or(current.url.clone());
    let host = host_of(&url).ok_or_else(|| Error::field("url", "must name a registry host"))?;
    validate::name("url", &url, 512)?;
    let current_host = host_of(&current.url).unwrap_or_default();
    let (username, sealed) = match &patch.credential {
        Some(c) => {
            check(&url, &c.default)?;
            let sealed = state
                .master()
                .seal(&context(id, &host), c.default.password.as_bytes());
            (c.default.username.clone(), Some(sealed))
        }
        None if host != current_host => {
            return Err(Error::field(
                "credential",
                format!(
                    "is required to move a credential from {current_host} to {host}: send the \
                     password for the new host (a stored password never follows a new URL)"
                ),
            ))
        }
        None => (current.username.clone(), None),
    };
    if let Some(d) = &patch.description {
        validate::text("description", d, 4096)?;
    }
    let mut tx = state.db.begin().await?;
    let r = sqlx::query(
        "UPDATE registries SET url = $1, host = $2, username = $3, secret = COALESCE($4, secret), \
         description = COALESCE($5, description), updated_at = $6 WHERE account_id = $7 AND registry_id = $8",
    )
    .bind(&url)
    .bind(&host)
    .bind(&username)
    .bind(sealed)
    .bind(patch.description.as_deref())
    .bind(state.clock.now())
    .bind(&p.account_id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = r {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "a credential for registry host {host} already exists"
            )));
        }
        return Err(e);
    }
    audit::record(state, tx, p, Event {
        action: "Registry Credential Updated",
        entity_type: "registry",
        entity_id: id,
        details: json!({"url": url, "username": username, "password_changed": patch.credential.is_some()}),
    })
    .await?;
    get(state, p, id).await
}

pub async fn delete(state: &State, p: &Principal, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let n = sqlx::query("DELETE FROM registries WHERE account_id = $1 AND registry_id = $2")
        .bind(&p.account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound {
            kind: "registry",
            id: id.into(),
        });
    }
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Registry Credential Deleted",
            entity_type: "registry",
            entity_id: id,
            details: json!({}),
        },
    )
    .await?;
    Ok(())
}

/// Re-seals every stored secret under `keys`' primary key, in one transaction; returns how many.
pub async fn reseal_all(db: &Db, keys: &MasterKey) -> Result<usize> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query("SELECT registry_id, secret, host FROM registries")
        .fetch_all(&mut *tx)
        .await?;
    let mut n = 0;
    for r in &rows {
        let id: String = r.try_get(0)?;
        let sealed: Vec<u8> = r.try_get(1)?;
        let host: String = r.try_get(2)?;
        if keys.is_current(&sealed) {
            continue;
        }
        let plain = keys.open(&context(&id, &host), &sealed)?;
        sqlx::query("UPDATE registries SET secret = $1 WHERE registry_id = $2")
            .bind(keys.seal(&context(&id, &host), &plain))
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
    use super::host_of;

    #[test]
    fn hosts_follow_dockers_reference_rules() {
        for (input, host) in [
            (
                "registry.example.com:5000/app:1",
                "registry.example.com:5000",
            ),
            ("https://Registry.Example.com/", "registry.example.com"),
            ("localhost/app", "localhost"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("busybox", "docker.io"),
            ("library/busybox:1", "docker.io"),
            ("index.docker.io/library/busybox", "docker.io"),
            ("docker://quay.io/x/y", "quay.io"),
            ("busybox:1.36", "docker.io"),
        ] {
            assert_eq!(host_of(input).as_deref(), Some(host), "{input}");
        }
        assert_eq!(host_of(""), None);
    }
}
