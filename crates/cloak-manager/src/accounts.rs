//! Accounts (tenants): every object belongs to one, and no query crosses accounts. The first
//! start on an empty database creates the default account and its first administrator.

use serde_json::json;

use crate::audit::{self, Actor, Event};
use crate::error::{Error, Result};
use crate::store::{Db, Tx};

/// The account that anonymous events (a failed login of an unknown user) are recorded in.
pub async fn first_account(tx: &mut Tx) -> Result<String> {
    sqlx::query_scalar("SELECT account_id FROM accounts ORDER BY created_at, account_id LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::Internal("no account exists".into()))
}

/// Creates an account with its audit chain and its first MANAGER user; returns (account, user).
pub async fn create(
    db: &Db,
    tx: &mut Tx,
    name: &str,
    admin_user: &str,
    password_hash: &str,
    now: i64,
) -> Result<(String, String)> {
    let account_id = uuid::Uuid::new_v4().to_string();
    let user_id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO accounts (account_id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&account_id)
        .bind(name)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    audit::init_chain(tx, &account_id).await?;
    sqlx::query(
        "INSERT INTO users (user_id, account_id, user_name, user_email, password_hash, role, status, created_at, role_changed_at) \
         VALUES ($1, $2, $3, '', $4, 'MANAGER', 'ACTIVE', $5, $5)",
    )
    .bind(&user_id)
    .bind(&account_id)
    .bind(admin_user)
    .bind(password_hash)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    audit::append(
        db,
        tx,
        &account_id,
        &Actor::system(),
        Event {
            action: "Account Created",
            entity_type: "account",
            entity_id: &account_id,
            details: json!({"name": name, "administrator": admin_user}),
        },
    )
    .await?;
    Ok((account_id, user_id))
}

/// What the first start did.
#[derive(Debug)]
pub enum Bootstrap {
    /// The database already had an account.
    Existing,
    /// Created the default account; the password was generated and must be shown once.
    Created { generated_password: Option<String> },
}

/// On an empty database, creates the default account and `admin_user` with `password` (or a
/// generated one). Safe when several replicas start at once: the account name is unique.
pub async fn bootstrap(
    db: &Db,
    admin_user: &str,
    password: Option<String>,
    now: i64,
) -> Result<Bootstrap> {
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(db.reader())
        .await?;
    if existing > 0 {
        return Ok(Bootstrap::Existing);
    }
    crate::validate::name("--admin-user", admin_user, 64)?;
    let (password, generated) = match password {
        Some(p) => {
            crate::auth::check_password_rules("admin password", &p)?;
            (p, false)
        }
        None => {
            let (p, _) = crate::auth::new_secret("");
            (p, true)
        }
    };
    let hash = crate::auth::hash_password(&password)?;
    let mut tx = db.begin().await?;
    match create(db, &mut tx, "default", admin_user, &hash, now).await {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => return Ok(Bootstrap::Existing),
        Err(e) => return Err(e),
    }
    match tx.commit().await {
        Ok(()) => {}
        Err(e) => {
            let e = Error::from(e);
            if e.is_unique_violation() {
                return Ok(Bootstrap::Existing);
            }
            return Err(e);
        }
    }
    Ok(Bootstrap::Created {
        generated_password: generated.then_some(password),
    })
}

/// Every account (id, name), for offline tools.
pub async fn list_all(db: &Db) -> Result<Vec<(String, String)>> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT account_id, name FROM accounts ORDER BY created_at, account_id")
        .fetch_all(db.reader())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Creates an account named `name` with its first MANAGER; returns the account id and the
/// generated password, if one was generated.
pub async fn create_with_admin(
    db: &Db,
    name: &str,
    admin_user: &str,
    password: Option<String>,
) -> Result<(String, Option<String>)> {
    crate::validate::name("--name", name, 128)?;
    crate::validate::name("--admin-user", admin_user, 64)?;
    let (password, generated) = match password {
        Some(p) => {
            crate::auth::check_password_rules("admin password", &p)?;
            (p, false)
        }
        None => (crate::auth::new_secret("").0, true),
    };
    let hash = crate::auth::hash_password(&password)?;
    let mut tx = db.begin().await?;
    let (account, _) = match create(db, &mut tx, name, admin_user, &hash, crate::now()).await {
        Err(e) if e.is_unique_violation() => {
            return Err(Error::Conflict(format!(
                "an account named {name:?} or a user named {admin_user:?} already exists"
            )))
        }
        other => other?,
    };
    tx.commit().await?;
    Ok((account, generated.then_some(password)))
}
