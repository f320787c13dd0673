//! `cloak manager backup` / `restore`: a consistent snapshot of every table, together with
//! the audit key, sealed under the master key; restored into an empty database of either
//! kind, so restoring a SQLite backup into PostgreSQL moves an evaluation install in one command.
//!
//! Consistency: every table is read inside one read transaction (SQLite in WAL mode: one
//! snapshot from the first read on, writers go on; PostgreSQL: `REPEATABLE READ READ ONLY`).
//! The snapshot is held in memory (the manager's state is records, not images: tens of MB for
//! hundreds of thousands of builds) and written to a temporary file renamed when complete.
//!
//! Keys: sealed values in the rows (registry passwords, CA keys) stay sealed under the master
//! key and are copied as they are; the audit HMAC key travels inside the sealed backup. The
//! master key itself is never in a backup: restoring needs the same master key file (keep it
//! apart, e.g. in the Kubernetes Secret or a password manager).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Column, Row, ValueRef};

use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::store::{Db, Dialect};

/// First line of a backup file (the sealed snapshot follows).
const MAGIC: &[u8] = b"cloak-manager-backup 1\n";
/// The associated data the snapshot is sealed for.
const CONTEXT: &str = "cloak-manager-backup";

/// What a backup holds (JSON inside the sealed envelope).
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    created_at: i64,
    /// Schema version of the source database.
    schema_version: i64,
    /// `sqlite` or `postgres`.
    source: String,
    /// The audit chain's HMAC key, hex.
    audit_key: String,
    /// Tables in creation order (parents before the tables that reference them).
    tables: Vec<Table>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Table {
    name: String,
    columns: Vec<String>,
    /// Values: null, integer, string, or `{"hex": …}` for blobs, `{"real": …}` for floats.
    rows: Vec<Vec<Value>>,
}

/// Counts reported by [`backup`] and [`restore`].
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Schema version of the snapshot.
    pub schema_version: i64,
    /// Rows per table.
    pub tables: Vec<(String, usize)>,
}

impl Summary {
    fn of(s: &Snapshot) -> Summary {
        Summary {
            schema_version: s.schema_version,
            tables: s
                .tables
                .iter()
                .map(|t| (t.name.clone(), t.rows.len()))
                .collect(),
        }
    }

    /// Rows in all tables.
    pub fn rows(&self) -> usize {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

fn table_list_sql(dialect: Dialect) -> &'static str {
    match dialect {
        // rowid of sqlite_master follows creation order.
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'schema_migrations' ORDER BY rowid"
        }
        // Object ids grow with creation order on one server (the manager's migrations
        // create parents first).
        Dialect::Postgres => {
            "SELECT c.relname::TEXT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname = current_schema() \
             AND c.relname <> 'schema_migrations' ORDER BY c.oid"
        }
    }
}

fn value_of(row: &sqlx::any::AnyRow, i: usize) -> Result<Value> {
    use sqlx::any::AnyTypeInfoKind as K;
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().kind();
    Ok(match kind {
        K::Null => Value::Null,
        K::Bool => Value::from(row.try_get::<bool, _>(i)? as i64),
        K::SmallInt | K::Integer | K::BigInt => Value::from(row.try_get::<i64, _>(i)?),
        K::Real | K::Double => serde_json::json!({ "real": row.try_get::<f64, _>(i)? }),
        K::Text => Value::from(row.try_get::<String, _>(i)?),
        K::Blob => serde_json::json!({ "hex": hex::encode(row.try_get::<Vec<u8>, _>(i)?) }),
    })
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::Config(format!(
            "backup: table or column name {name:?} is not a plain identifier; the file is not \
             a cloak manager backup"
        )));
    }
    Ok(())
}

/// Reads every table in one snapshot and returns the sealed backup file's bytes.
pub async fn backup(db: &Db, master: &MasterKey) -> Result<(Vec<u8>, Summary)> {
    let mut conn = db.reader().acquire().await?;
    use sqlx::Executor;
    match db.dialect {
        Dialect::Sqlite => conn.execute("BEGIN").await?,
        Dialect::Postgres => {
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?
        }
    };
    let result = async {
        // The first read fixes the snapshot (SQLite starts it at the first SELECT).
        let schema_version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await?;
        let names: Vec<String> = sqlx::query_scalar(table_list_sql(db.dialect))
            .fetch_all(&mut *conn)
            .await?;
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            check_name(&name)?;
            let rows = sqlx::query(&format!("SELECT * FROM {name}"))
                .fetch_all(&mut *conn)
                .await?;
            let columns: Vec<String> = match rows.first() {
                Some(r) => r.columns().iter().map(|c| c.name().to_string()).collect(),
                None => Vec::new(),
            };
            let rows = rows
                .iter()
                .map(|r| (0..columns.len()).map(|i| value_of(r, i)).collect())
                .collect::<Result<Vec<Vec<Value>>>>()?;
            tables.push(Table {
                name,
                columns,
                rows,
            });
        }
        Ok::<_, Error>((schema_version, tables))
    }
    .await;
    let _ = conn.execute("ROLLBACK").await;
    let (schema_version, tables) = result?;
    let snapshot = Snapshot {
        created_at: crate::now(),
        schema_version,
        source: match db.dialect {
            Dialect::Sqlite => "sqlite".into(),
            Dialect::Postgres => "postgres".into(),
        },
        audit_key: hex::encode(db.audit_key()),
        tables,
    };
    let plain = serde_json::to_vec(&snapshot)
        .map_err(|e| Error::Internal(format!("backup serialisation: {e}")))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&master.seal(CONTEXT, &plain));
    Ok((out, Summary::of(&snapshot)))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file renamed when complete.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Opens a backup file's bytes with `master`.
fn open(bytes: &[u8], master: &MasterKey, what: &Path) -> Result<Snapshot> {
    let sealed = bytes.strip_prefix(MAGIC).ok_or_else(|| {
        Error::Config(format!(
            "{}: not a cloak manager backup (it does not start with {:?})",
            what.display(),
            String::from_utf8_lossy(MAGIC).trim_end()
        ))
    })?;
    let plain = master.open(CONTEXT, sealed).map_err(|_| {
        Error::Config(format!(
            "{}: cannot decrypt the backup with the master key file given (master key {}): \
             restore with the master key file of the installation that made it \
             (--master-key-file), or the file was altered",
            what.display(),
            master.primary_id()
        ))
    })?;
    serde_json::from_slice(&plain)
        .map_err(|e| Error::Config(format!("{}: malformed backup: {e}", what.display())))
}

/// The audit key a backup carries (to write the restored install's audit key file).
pub fn audit_key(bytes: &[u8], master: &MasterKey, what: &Path) -> Result<[u8; 32]> {
    let s = open(bytes, master, what)?;
    hex::decode(&s.audit_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::Config(format!("{}: malformed audit key", what.display())))
}

/// Restores a backup into `db`, which must be migrated and hold no account yet. One
/// transaction: a failed restore leaves the database as it was.
pub async fn restore(db: &Db, master: &MasterKey, bytes: &[u8], what: &Path) -> Result<Summary> {
    let snapshot = open(bytes, master, what)?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(db.reader())
            .await?;
    if snapshot.schema_version > current {
        return Err(Error::Config(format!(
            "{}: the backup has schema version {}, newer than this manager ({current}): restore \
             it with the cloak version that made it, or a newer one",
            what.display(),
            snapshot.schema_version
        )));
    }
    let mut tx = db.begin().await?;
    let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut *tx)
        .await?;
    if accounts > 0 {
        return Err(Error::Config(
            "the target database already holds accounts: restore into an empty database (a new \
             data dir or a new PostgreSQL database), never over a live one"
                .into(),
        ));
    }
    // Rows a fresh start may have created (nothing with an account exists yet).
    for t in snapshot.tables.iter().rev() {
        check_name(&t.name)?;
        sqlx::query(&format!("DELETE FROM {}", t.name))
            .execute(&mut *tx)
            .await
            .map_err(|e| restore_error(what, &t.name, e))?;
    }
    for t in &snapshot.tables {
        for c in &t.columns {
            check_name(c)?;
        }
        for row in &t.rows {
            if row.len() != t.columns.len() {
                return Err(Error::Config(format!(
                    "{}: malformed backup: a row of {} has {} values for {} columns",
                    what.display(),
                    t.name,
                    row.len(),
                    t.columns.len()
                )));
            }
            // NULLs go in as literals: a typed NULL parameter does not fit every column type.
            let mut placeholders = Vec::with_capacity(row.len());
            let mut n = 0;
            for v in row {
                if v.is_null() {
                    placeholders.push("NULL".to_string());
                } else {
                    n += 1;
                    placeholders.push(format!("${n}"));
                }
            }
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.name,
                t.columns.join(", "),
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for v in row {
                q = match v {
                    Value::Null => q,
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => q.bind(i),
                        None => q.bind(n.as_f64().unwrap_or_default()),
                    },
                    Value::String(s) => q.bind(s.clone()),
                    Value::Object(o) => match (o.get("hex"), o.get("real")) {
                        (Some(Value::String(h)), _) => q.bind(hex::decode(h).map_err(|_| {
                            Error::Config(format!(
                                "{}: malformed blob in {}",
                                what.display(),
                                t.name
                            ))
                        })?),
                        (_, Some(Value::Number(r))) => q.bind(r.as_f64().unwrap_or_default()),
                        _ => {
                            return Err(Error::Config(format!(
                                "{}: malformed value in {}",
                                what.display(),
                                t.name
                            )))
                        }
                    },
                    _ => {
                        return Err(Error::Config(format!(
                            "{}: malformed value in {}",
                            what.display(),
                            t.name
                        )))
                    }
                };
            }
            q.execute(&mut *tx)
                .await
                .map_err(|e| restore_error(what, &t.name, e))?;
        }
    }
    tx.commit().await?;
    Ok(Summary::of(&snapshot))
}

fn restore_error(what: &Path, table: &str, e: sqlx::Error) -> Error {
    Error::Config(format!(
        "{}: cannot restore table {table}: {e} (the target database must be a cloak manager \
         database at the same or a newer schema)",
        what.display()
    ))
}
