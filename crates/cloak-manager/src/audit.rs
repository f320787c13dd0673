//! The tamper-evident audit log: every change appends a record in the same transaction as the
//! change. Records are chained per account: `hash = HMAC-SHA256(audit key, prev_hash ‖ "\n" ‖
//! canonical JSON of the record)`, with the audit key in a 0600 file outside the database, so
//! someone who can write the database but not read that file cannot recompute a chain. Each
//! account's `audit_heads` row keeps its last (seq, hash), locked while appending, so appends are
//! serialised per account and a deleted tail is noticed. Rolling the whole database back to an
//! earlier consistent state is only visible against a checkpoint kept elsewhere (the seq and hash
//! that `GET /v1/audit/verify` reports).

use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::store::{Db, Tx};
use cloak_api::{AuditRecord, AuditVerification};

/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a change.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user`, `api_key` or `system`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            kind: "system",
            id: "system".into(),
            name: "system".into(),
        }
    }
}

/// What one audit record says (without its position in the chain).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    /// Never a secret.
    pub details: Value,
}

/// Sorts object keys recursively and prints without spaces: one byte string per value.
pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // serde_json without `preserve_order` keeps maps sorted; `sort` makes that explicit.
    serde_json::to_string(&sort(v)).expect("a JSON value always serialises")
}

fn record_hash(key: &[u8; 32], prev_hash: &str, r: &AuditRecord) -> String {
    use hmac::Mac;
    let body = json!({
        "seq": r.seq,
        "time": r.time,
        "account_id": r.account_id,
        "actor_type": r.actor_type,
        "actor_id": r.actor_id,
        "actor_name": r.actor_name,
        "action": r.action,
        "entity_type": r.entity_type,
        "entity_id": r.entity_id,
        "details": r.details,
    });
    let mut h = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(&body).as_bytes());
    hex::encode(h.finalize().into_bytes())
}

/// Starts an account's chain (called when the account is created).
pub async fn init_chain(tx: &mut Tx, account_id: &str) -> Result<()> {
    sqlx::query("INSERT INTO audit_heads (account_id, seq, hash) VALUES ($1, 0, $2)")
        .bind(account_id)
        .bind(GENESIS)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Appends a record to the account's chain inside the caller's transaction.
pub async fn append(
    db: &Db,
    tx: &mut Tx,
    account_id: &str,
    actor: &Actor,
    event: Event<'_>,
) -> Result<i64> {
    let head = sqlx::query(&format!(
        "SELECT seq, hash FROM audit_heads WHERE account_id = $1{}",
        db.for_update()
    ))
    .bind(account_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::Internal(format!("account {account_id} has no audit chain")))?;
    let (seq, prev): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
    let mut rec = AuditRecord {
        seq: seq + 1,
        time: crate::now_ms(),
        account_id: account_id.to_string(),
        actor_type: actor.kind.to_string(),
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        action: event.action.to_string(),
        entity_type: event.entity_type.to_string(),
        entity_id: event.entity_id.to_string(),
        details: event.details,
        prev_hash: prev.clone(),
        hash: String::new(),
    };
    rec.hash = record_hash(db.audit_key(), &prev, &rec);
    sqlx::query(
        "INSERT INTO audit_log (account_id, seq, time, actor_type, actor_id, actor_name, action, \
         entity_type, entity_id, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&rec.account_id)
    .bind(rec.seq)
    .bind(rec.time)
    .bind(&rec.actor_type)
    .bind(&rec.actor_id)
    .bind(&rec.actor_name)
    .bind(&rec.action)
    .bind(&rec.entity_type)
    .bind(&rec.entity_id)
    .bind(canonical(&rec.details))
    .bind(&rec.prev_hash)
    .bind(&rec.hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE account_id = $3")
        .bind(rec.seq)
        .bind(&rec.hash)
        .bind(account_id)
        .execute(&mut **tx)
        .await?;
    Ok(rec.seq)
}

/// Appends the caller's record of a change to its account's chain and commits the change with
/// it: the common end of every audited operation.
pub async fn record(
    state: &crate::State,
    mut tx: Tx,
    p: &crate::auth::Principal,
    event: Event<'_>,
) -> Result<()> {
    append(&state.db, &mut tx, &p.account_id, &p.actor, event).await?;
    tx.commit().await?;
    Ok(())
}

const COLUMNS: &str = "seq, time, account_id, actor_type, actor_id, actor_name, action, \
                       entity_type, entity_id, details, prev_hash, hash";

fn from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let details: String = row.try_get("details")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        account_id: row.try_get("account_id")?,
        actor_type: row.try_get("actor_type")?,
        actor_id: row.try_get("actor_id")?,
        actor_name: row.try_get("actor_name")?,
        action: row.try_get("action")?,
        entity_type: row.try_get("entity_type")?,
        entity_id: row.try_get("entity_id")?,
        // A row edited into invalid JSON still gets compared (and fails) as a string.
        details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub entity_id: Option<String>,
    pub actor: Option<String>,
    pub since_seq: Option<i64>,
}

/// A page of the account's records, newest first (or oldest first from `since_seq`).
pub async fn list(
    db: &Db,
    account_id: &str,
    f: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<AuditRecord>)> {
    let mut wh = String::from("account_id = $1");
    let mut args: Vec<String> = vec![account_id.into()];
    let mut add = |col: &str, v: &Option<String>, wh: &mut String| {
        if let Some(v) = v {
            args.push(v.clone());
            wh.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    };
    add("action", &f.action, &mut wh);
    add("entity_id", &f.entity_id, &mut wh);
    add("actor_name", &f.actor, &mut wh);
    let (order, since) = match f.since_seq {
        Some(s) => ("ASC", format!(" AND seq > {}", s.max(0))),
        None => ("DESC", String::new()),
    };
    let count_sql = format!("SELECT COUNT(*) FROM audit_log WHERE {wh}{since}");
    let mut q = sqlx::query_scalar::<_, i64>(&count_sql);
    for a in &args {
        q = q.bind(a);
    }
    let total = q.fetch_one(db.reader()).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {wh}{since} ORDER BY seq {order} LIMIT {limit} OFFSET {offset}"
    );
    let mut q = sqlx::query(&sql);
    for a in &args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(db.reader()).await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    Ok((total, items))
}

/// Walks the account's whole chain and names the first record whose content, order or presence
/// was altered.
pub async fn verify(db: &Db, account_id: &str) -> Result<AuditVerification> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1i64;
    let page = 2000i64;
    let bad = |seq: i64, problem: String, records: i64| AuditVerification {
        ok: false,
        records,
        first_bad_seq: Some(seq),
        problem: Some(problem),
    };
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE account_id = $1 AND seq >= $2 ORDER BY seq ASC LIMIT {page}"
        ))
        .bind(account_id)
        .bind(expected)
        .fetch_all(db.reader())
        .await?;
        let n = rows.len() as i64;
        for row in &rows {
            let rec = from_row(row)?;
            if rec.seq != expected {
                return Ok(bad(
                    expected,
                    format!(
                        "record {expected} is missing (the next stored record is {}): deleted",
                        rec.seq
                    ),
                    expected - 1,
                ));
            }
            if rec.prev_hash != prev {
                return Ok(bad(
                    rec.seq,
                    format!(
                        "record {} does not follow record {}: records were reordered, inserted or removed",
                        rec.seq,
                        rec.seq - 1
                    ),
                    expected - 1,
                ));
            }
            if record_hash(db.audit_key(), &prev, &rec) != rec.hash {
                return Ok(bad(
                    rec.seq,
                    format!(
                        "record {} was altered: its content does not match its hash",
                        rec.seq
                    ),
                    expected - 1,
                ));
            }
            prev = rec.hash;
            expected += 1;
        }
        if n < page {
            break;
        }
    }
    let records = expected - 1;
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE account_id = $1")
        .bind(account_id)
        .fetch_optional(db.reader())
        .await?;
    let (head_seq, head_hash): (i64, String) = match head {
        Some(r) => (r.try_get(0)?, r.try_get(1)?),
        None => {
            return Ok(bad(
                1,
                "the account's chain head is missing: the chain was deleted".into(),
                records,
            ))
        }
    };
    if records == 0 {
        return Ok(bad(
            1,
            "the account has no audit records (it starts with \"Account Created\"): deleted".into(),
            0,
        ));
    }
    if head_seq != records || head_hash != prev {
        return Ok(bad(
            records + 1,
            format!(
                "the chain ends at record {records} but the head says {head_seq}: \
                 records at the end were deleted or the head was altered"
            ),
            records,
        ));
    }
    Ok(AuditVerification {
        ok: true,
        records,
        first_bad_seq: None,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": "x"}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
