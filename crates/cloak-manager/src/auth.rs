//! Who is calling: passwords (Argon2id), sessions and API keys (random secrets stored only as
//! SHA-256 hashes, so a stolen database holds no usable token), login throttling per user and
//! per client address (kept in the database, so every replica sees it), and roles.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::audit::{self, Actor, Event};
use crate::error::{Error, Result};
use crate::State;
use cloak_api::{AuthResponse, Role, SessionInfo};

/// Prefix of API key secrets (sessions have none), so a leaked one is recognisable.
pub const API_KEY_PREFIX: &str = "ck_key_";
/// Failed logins for one user name before each further attempt waits.
const USER_FREE_FAILURES: i64 = 5;
/// Failed logins from one client address before each further attempt waits.
const ADDR_FREE_FAILURES: i64 = 20;
/// Failures older than this are forgotten.
const FAILURE_WINDOW: i64 = 15 * 60;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: String,
    pub role: Role,
    pub actor: Actor,
    /// The session's token hash (to terminate it), for sessions.
    pub session: Option<String>,
    /// The user acting: the session's user, or the user who created the API key.
    pub owner: String,
}

impl Principal {
    /// Refuses unless the caller has at least `min`.
    pub fn require(&self, min: Role) -> Result<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this needs the {} role; {} has {}",
                min.as_str(),
                self.actor.name,
                self.role.as_str()
            )))
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        (self.actor.kind == "user").then_some(self.actor.id.as_str())
    }
}

/// How long a token's principal is reused without asking the database. Changes made through
/// this process (logout, role or status change, new password, revoked key) take effect at once;
/// changes made through another replica within this time.
const PRINCIPAL_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most (only tokens that authenticated are cached).
const PRINCIPAL_CACHE_MAX: usize = 10_000;

/// Principals of recently seen tokens, by token hash: saves the database a lookup per request.
#[derive(Debug, Default)]
pub struct PrincipalCache(Mutex<PrincipalCacheInner>);

#[derive(Debug, Default)]
struct PrincipalCacheInner {
    /// Moves at every invalidation, so that a lookup that read the database before a change
    /// committed does not store what it read.
    generation: u64,
    map: HashMap<String, CachedPrincipal>,
}

#[derive(Debug)]
struct CachedPrincipal {
    principal: Principal,
    /// The session's expiry (API keys do not expire).
    expires_at: Option<i64>,
    cached_at: Instant,
}

impl PrincipalCache {
    /// The cached principal of `hash` if fresh and unexpired; else the generation to store under.
    fn get(&self, hash: &str, now: i64) -> Result<Principal, u64> {
        let inner = self.0.lock().expect("principal cache lock");
        match inner.map.get(hash) {
            Some(c)
                if c.cached_at.elapsed() < PRINCIPAL_TTL
                    && c.expires_at.is_none_or(|e| e > now) =>
            {
                Ok(c.principal.clone())
            }
            _ => Err(inner.generation),
        }
    }

    fn put(&self, generation: u64, hash: String, principal: &Principal, expires_at: Option<i64>) {
        let mut inner = self.0.lock().expect("principal cache lock");
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= PRINCIPAL_CACHE_MAX {
            inner
                .map
                .retain(|_, c| c.cached_at.elapsed() < PRINCIPAL_TTL);
            if inner.map.len() >= PRINCIPAL_CACHE_MAX {
                inner.map.clear();
            }
        }
        inner.map.insert(
            hash,
            CachedPrincipal {
                principal: principal.clone(),
                expires_at,
                cached_at: Instant::now(),
            },
        );
    }

    /// Forgets every principal: call after committing a change to sessions, users or API keys.
    pub fn invalidate(&self) {
        let mut inner = self.0.lock().expect("principal cache lock");
        inner.generation += 1;
        inner.map.clear();
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

/// A PHC-format Argon2id hash of `password`.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(e.to_string()))?
        .to_string())
}

/// Checks `password` against a stored hash (constant time in the password).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so that both cases cost the same.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password("cloak-no-such-user").expect("hashing works"))
}

/// A new random secret (256 bits, base64url) and the hash that is stored.
pub fn new_secret(prefix: &str) -> (String, String) {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let secret = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    );
    let hash = secret_hash(&secret);
    (secret, hash)
}

/// What is stored of a token or key: SHA-256 (enough for 256-bit random secrets).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Checks a password's strength rules (names the rule broken).
pub fn check_password_rules(field: &str, password: &str) -> Result<()> {
    if password.chars().count() < 12 {
        return Err(Error::field(field, "must be at least 12 characters"));
    }
    if password.len() > 1024 {
        return Err(Error::field(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

/// The bearer token of a request: `Authorization: Bearer …`, or CCM's `Authentication: Bearer …`.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    for name in ["authorization", "authentication"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            if let Some(t) = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                return Some(t.trim());
            }
        }
    }
    None
}

/// Resolves the bearer token of a request to its principal.
pub async fn authenticate(state: &State, headers: &http::HeaderMap) -> Result<Principal> {
    let token = bearer(headers).ok_or_else(|| {
        Error::Unauthenticated(
            "no credentials: send `Authorization: Bearer <token>` (POST /v1/sys/auth gives one)"
                .into(),
        )
    })?;
    authenticate_token(state, token).await
}

/// Resolves a session token or API key (from a bearer header or the console's cookie).
pub async fn authenticate_token(state: &State, token: &str) -> Result<Principal> {
    if token.is_empty() || token.len() > 200 {
        return Err(Error::Unauthenticated(
            "the bearer token is not valid".into(),
        ));
    }
    let hash = secret_hash(token);
    let now = state.clock.now();
    let generation = match state.principals.get(&hash, now) {
        Ok(p) => return Ok(p),
        Err(generation) => generation,
    };
    let (principal, expires_at) = lookup(state, token, &hash, now).await?;
    state
        .principals
        .put(generation, hash, &principal, expires_at);
    Ok(principal)
}

/// The principal of a token according to the database, and its session's expiry.
async fn lookup(
    state: &State,
    token: &str,
    hash: &str,
    now: i64,
) -> Result<(Principal, Option<i64>)> {
    if token.starts_with(API_KEY_PREFIX) {
        // A key acts for its creator: never with more than the creator's current role, and
        // not at all once the creator is disabled.
        let row = sqlx::query(
            "SELECT k.key_id, k.account_id, k.name, k.role, u.role, u.user_id FROM api_keys k \
             JOIN users u ON u.user_id = k.created_by_user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.status = 'ACTIVE'",
        )
        .bind(hash)
        .fetch_optional(state.db.reader())
        .await?
        .ok_or_else(|| {
            Error::Unauthenticated("the API key is not valid (unknown or revoked)".into())
        })?;
        let key_id: String = row.try_get(0)?;
        let role = Role::parse(&row.try_get::<String, _>(3)?).unwrap_or(Role::Reader);
        let creator = Role::parse(&row.try_get::<String, _>(4)?).unwrap_or(Role::Reader);
        let principal = Principal {
            account_id: row.try_get(1)?,
            role: role.min(creator),
            owner: row.try_get(5)?,
            actor: Actor {
                kind: "api_key",
                id: key_id,
                name: row.try_get(2)?,
            },
            session: None,
        };
        return Ok((principal, None));
    }
    let row = sqlx::query(
        "SELECT s.user_id, s.account_id, u.user_name, u.role, s.expires_at FROM sessions s \
         JOIN users u ON u.user_id = s.user_id \
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND u.status = 'ACTIVE'",
    )
    .bind(hash)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::Unauthenticated("the bearer token is not valid".into()))?;
    let expires: i64 = row.try_get(4)?;
    if expires <= now {
        return Err(Error::Unauthenticated(
            "the session has expired: log in again".into(),
        ));
    }
    let role: String = row.try_get(3)?;
    let user_id: String = row.try_get(0)?;
    let principal = Principal {
        account_id: row.try_get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
        owner: user_id.clone(),
        actor: Actor {
            kind: "user",
            id: user_id,
            name: row.try_get(2)?,
        },
        session: Some(hash.to_string()),
    };
    Ok((principal, Some(expires)))
}

/// Notes the use of an API key for a change (audited with the change itself).
pub async fn touch_api_key(state: &State, p: &Principal) -> Result<()> {
    if p.actor.kind == "api_key" {
        // Through the write connection: on SQLite every write goes through the one writer.
        let mut tx = state.db.begin().await?;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2")
            .bind(state.clock.now())
            .bind(&p.actor.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn parse_basic(headers: &http::HeaderMap) -> Result<(String, String)> {
    let bad = || {
        Error::Unauthenticated(
            "POST /v1/sys/auth takes HTTP Basic credentials: `Authorization: Basic base64(user:password)`"
                .into(),
        )
    };
    let v = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
        .ok_or_else(bad)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (u, p) = text.split_once(':').ok_or_else(bad)?;
    if u.is_empty() || u.len() > 256 || p.len() > 1024 {
        return Err(bad());
    }
    Ok((u.to_string(), p.to_string()))
}

/// Password checks at once: Argon2id takes 19 MiB each, so a burst of logins queues here
/// instead of exhausting memory.
fn hashing() -> &'static tokio::sync::Semaphore {
    static S: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    S.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(n.clamp(1, 8))
    })
}

/// Checks a password against a stored hash with at most a few checks at a time.
pub async fn verify_password_queued(stored: String, password: String) -> Result<bool> {
    let _permit = hashing()
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || verify_password(&stored, &password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Counts an attempt before the password is checked (so concurrent attempts cannot all pass
/// the check), returning the attempts in the current window including this one.
async fn reserve(tx: &mut crate::store::Tx, key: &str, now: i64) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "INSERT INTO login_failures (throttle_key, failures, last_failure_at) VALUES ($1, 1, $2) \
         ON CONFLICT (throttle_key) DO UPDATE SET \
         failures = CASE WHEN $2 - login_failures.last_failure_at > $3 THEN 1 \
                         ELSE login_failures.failures + 1 END, \
         last_failure_at = $2 \
         RETURNING failures, last_failure_at",
    )
    .bind(key)
    .bind(now)
    .bind(FAILURE_WINDOW)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Seconds to wait after `failures` attempts, of which `free` cost nothing.
fn backoff(failures: i64, free: i64) -> i64 {
    if failures <= free {
        0
    } else {
        (1i64 << (failures - free).min(10)).min(FAILURE_WINDOW)
    }
}

/// `POST /v1/sys/auth`: checks Basic credentials and opens a session.
pub async fn login(state: &State, headers: &http::HeaderMap, client: &str) -> Result<AuthResponse> {
    let (user, password) = parse_basic(headers)?;
    login_password(state, user, password, client).await
}

/// Checks a user name and password (throttled, audited) and opens a session: the API's Basic
/// login and the console's sign-in form.
pub async fn login_password(
    state: &State,
    user: String,
    password: String,
    client: &str,
) -> Result<AuthResponse> {
    let user_key = format!("user:{user}");
    let addr_key = format!("addr:{client}");
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let (user_attempts, _) = reserve(&mut tx, &user_key, now).await?;
    let (addr_attempts, _) = reserve(&mut tx, &addr_key, now).await?;
    tx.commit().await?;
    let wait =
        backoff(user_attempts, USER_FREE_FAILURES).max(backoff(addr_attempts, ADDR_FREE_FAILURES));
    if wait > 0 {
        state.metrics.login_failed();
        return Err(Error::RateLimited {
            detail: format!("too many failed logins; retry in {wait} s"),
            retry_after: wait as u64,
        });
    }
    let row = sqlx::query(
        "SELECT user_id, account_id, password_hash, role, status FROM users WHERE user_name = $1",
    )
    .bind(&user)
    .fetch_optional(state.db.reader())
    .await?;
    let stored = match &row {
        Some(r) => r.try_get::<String, _>(2)?,
        None => dummy_hash().to_string(),
    };
    let ok = verify_password_queued(stored, password).await?;
    let active = match &row {
        Some(r) => r.try_get::<String, _>(4)? == "ACTIVE",
        None => false,
    };
    let Some(row) = row.filter(|_| ok && active) else {
        state.metrics.login_failed();
        let account: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM users WHERE user_name = $1")
                .bind(&user)
                .fetch_optional(state.db.reader())
                .await?;
        match account {
            // A known user's failure goes into that user's account's chain.
            Some(account) => {
                let mut tx = state.db.begin().await?;
                audit::append(
                    &state.db,
                    &mut tx,
                    &account,
                    &Actor {
                        kind: "user",
                        id: String::new(),
                        name: user.clone(),
                    },
                    Event {
                        action: "Login Failed",
                        entity_type: "user",
                        entity_id: "",
                        details: json!({"client": client, "reason": if ok { "user disabled" } else { "wrong password" }}),
                    },
                )
                .await?;
                tx.commit().await?;
            }
            // An unknown name may be a password typed in the wrong field, and belongs to no
            // account: only its hash is logged, in no tenant's audit chain.
            None => {
                let name_hash = hex::encode(&Sha256::digest(user.as_bytes())[..8]);
                tracing::warn!(client, name_sha256_prefix = %name_hash, "login failed: unknown user name");
            }
        }
        return Err(Error::Unauthenticated(
            "the user name or password is wrong".into(),
        ));
    };
    let user_id: String = row.try_get(0)?;
    let account_id: String = row.try_get(1)?;
    let (token, hash) = new_secret("");
    let ttl = state.config.session_ttl;
    let mut tx = state.db.begin().await?;
    // A success clears the user's count and takes this attempt off the address's.
    sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1")
        .bind(&user_key)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE login_failures SET failures = failures - 1 WHERE throttle_key = $1 AND failures > 0")
        .bind(&addr_key)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, account_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&hash)
    .bind(&user_id)
    .bind(&account_id)
    .bind(now)
    .bind(now + ttl)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE users SET last_logged_in_at = $1 WHERE user_id = $2")
        .bind(now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &state.db,
        &mut tx,
        &account_id,
        &Actor {
            kind: "user",
            id: user_id.clone(),
            name: user.clone(),
        },
        Event {
            action: "Login Succeeded",
            entity_type: "user",
            entity_id: &user_id,
            details: json!({"client": client}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(AuthResponse {
        access_token: token,
        expires_in: ttl,
        session_info: SessionInfo {
            subject_id: user_id,
            session_expires_at: now + ttl,
            session_token_expires_at: now + ttl,
            selected_account_id: account_id,
        },
    })
}

/// `POST /v1/sys/session/terminate`: revokes the caller's session.
pub async fn terminate(state: &State, p: &Principal) -> Result<()> {
    let Some(hash) = &p.session else {
        return Err(Error::InvalidBody(
            "an API key is not a session: revoke it with DELETE /v1/api_keys/{id}".into(),
        ));
    };
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2")
        .bind(state.clock.now())
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Session Terminated",
            entity_type: "user",
            entity_id: &p.actor.id,
            details: json!({}),
        },
    )
    .await?;
    state.principals.invalidate();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            account_id: "acc".into(),
            role,
            actor: Actor {
                kind: "user",
                id: "u1".into(),
                name: "alice".into(),
            },
            session: Some("h".into()),
            owner: "u1".into(),
        }
    }

    #[test]
    fn cached_principals_expire_with_their_session_and_go_at_invalidation() {
        let cache = PrincipalCache::default();
        let generation = cache.get("h", 100).unwrap_err();
        cache.put(generation, "h".into(), &principal(Role::Manager), Some(200));
        assert_eq!(cache.get("h", 100).unwrap().role, Role::Manager);
        assert!(
            cache.get("h", 200).is_err(),
            "an expired session is not served"
        );
        assert!(cache.get("other", 100).is_err());
        cache.invalidate();
        assert!(cache.get("h", 100).is_err(), "invalidate forgets");
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_stored() {
        let cache = PrincipalCache::default();
        // Read the database (old role) …
        let generation = cache.get("h", 100).unwrap_err();
        // … while a role change commits and invalidates.
        cache.invalidate();
        cache.put(generation, "h".into(), &principal(Role::Manager), None);
        assert!(
            cache.get("h", 100).is_err(),
            "the stale principal was stored"
        );
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn bearer_tokens_come_from_either_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authentication", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Bearer def".parse().unwrap());
        assert_eq!(bearer(&h), Some("def"));
    }

    #[test]
    fn secrets_are_random_and_stored_as_hashes() {
        let (a, ha) = new_secret(API_KEY_PREFIX);
        let (b, _) = new_secret(API_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX));
        assert_eq!(secret_hash(&a), ha);
        assert!(!ha.contains(&a));
    }
}
