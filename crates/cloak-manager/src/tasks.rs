//! BUILD_WHITELIST approval tasks decided by an n-of-m quorum.
//!
//! A task keeps a copy of the app's policy as it was when the task opened (a later policy
//! change applies to later tasks). Each approval is a row keyed by (task, user), so one user
//! counts once; the task row is locked while an approval is counted, so two approvals at the
//! same instant are two approvals, and only the one that reaches `n` whitelists the build.

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::Tx;
use crate::{validate, State};
use cloak_api::{
    ApprovalInfo, ApprovalPolicy, RequesterInfo, Role, Task, TaskResult, TaskStatus,
    TaskUpdateRequest,
};

/// Opens a BUILD_WHITELIST task for `build_id`; returns its id.
pub async fn open(
    state: &State,
    tx: &mut Tx,
    p: &Principal,
    build_id: &str,
    policy: &ApprovalPolicy,
    description: &str,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let requester = RequesterInfo {
        requester_type: match p.actor.kind {
            "system" => "SYSTEM",
            "api_key" => "API_KEY",
            _ => "USER",
        }
        .into(),
        user_id: Some(p.owner.clone()),
        user_name: Some(p.actor.name.clone()),
    };
    let now = state.clock.now();
    sqlx::query(
        "INSERT INTO tasks (task_id, account_id, task_type, entity_id, status, requester, description, \
         policy, created_at, status_updated_at) \
         VALUES ($1, $2, 'BUILD_WHITELIST', $3, 'INPROGRESS', $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(&p.account_id)
    .bind(build_id)
    .bind(serde_json::to_string(&requester).expect("serialisable"))
    .bind(description)
    .bind(serde_json::to_string(policy).expect("serialisable"))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Marks an open task FAILED (its build was revoked or deleted).
pub async fn fail_open(tx: &mut Tx, task_id: &str, reason: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET status = 'FAILED', denial_reason = $1, status_updated_at = $2 \
         WHERE task_id = $3 AND status = 'INPROGRESS'",
    )
    .bind(reason)
    .bind(now)
    .bind(task_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const COLS: &str = "task_id, entity_id, task_type, status, requester, description, policy, \
                    denial_reason, created_at, status_updated_at";

async fn approvals(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
    task_id: &str,
) -> Result<Vec<ApprovalInfo>> {
    let rows = sqlx::query(
        "SELECT user_id, user_name, status, denial_reason, created_at FROM approvals \
         WHERE task_id = $1 ORDER BY created_at, user_name",
    )
    .bind(task_id)
    .fetch_all(exec)
    .await?;
    rows.iter().map(approval_of).collect()
}

fn approval_of(r: &sqlx::any::AnyRow) -> Result<ApprovalInfo> {
    Ok(ApprovalInfo {
        user_id: r.try_get("user_id")?,
        user_name: r.try_get("user_name")?,
        status: r.try_get("status")?,
        denial_reason: r.try_get("denial_reason")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The approvals of several tasks, each task's in the order `approvals` gives.
async fn approvals_of(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
    task_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<ApprovalInfo>>> {
    let mut out: std::collections::HashMap<String, Vec<ApprovalInfo>> = Default::default();
    if task_ids.is_empty() {
        return Ok(out);
    }
    let marks: Vec<String> = (1..=task_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT task_id, user_id, user_name, status, denial_reason, created_at FROM approvals \
         WHERE task_id IN ({}) ORDER BY task_id, created_at, user_name",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for id in task_ids {
        q = q.bind(id);
    }
    for r in q.fetch_all(exec).await? {
        out.entry(r.try_get("task_id")?)
            .or_default()
            .push(approval_of(&r)?);
    }
    Ok(out)
}

fn from_row(r: &sqlx::any::AnyRow, approvals: Vec<ApprovalInfo>) -> Result<Task> {
    let bad = |e: serde_json::Error| Error::Internal(format!("task row: {e}"));
    Ok(Task {
        task_id: r.try_get("task_id")?,
        requester_info: serde_json::from_str(&r.try_get::<String, _>("requester")?).map_err(bad)?,
        entity_id: r.try_get("entity_id")?,
        task_type: r.try_get("task_type")?,
        status: TaskStatus {
            created_at: r.try_get("created_at")?,
            status_updated_at: r.try_get("status_updated_at")?,
            status: r.try_get("status")?,
        },
        description: r.try_get("description")?,
        approvals,
        approval_policy: serde_json::from_str(&r.try_get::<String, _>("policy")?).map_err(bad)?,
        denial_reason: r.try_get("denial_reason")?,
    })
}

pub async fn get(state: &State, p: &Principal, id: &str) -> Result<Task> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM tasks WHERE account_id = $1 AND task_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "task",
        id: id.into(),
    })?;
    let a = approvals(state.db.reader(), id).await?;
    from_row(&row, a)
}

/// CCM's TaskResult for `GET /v1/tasks/status/{id}`.
pub async fn result(state: &State, p: &Principal, id: &str) -> Result<TaskResult> {
    let t = get(state, p, id).await?;
    Ok(TaskResult {
        task_id: t.task_id,
        task_type: t.task_type,
        task_status: t.status,
        build_id: Some(t.entity_id),
    })
}

/// Lists tasks; `status` is a TaskStatusType or CCM's tab names (PENDING = INPROGRESS).
pub async fn list(
    state: &State,
    p: &Principal,
    task_type: Option<&str>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(i64, i64, Vec<Task>)> {
    let mut wh = String::from("account_id = $1");
    let mut args = vec![p.account_id.clone()];
    if let Some(t) = task_type.filter(|t| !t.is_empty()) {
        if t != "BUILD_WHITELIST" {
            return Err(Error::field(
                "task_type",
                "only BUILD_WHITELIST tasks exist",
            ));
        }
        args.push(t.into());
        wh.push_str(&format!(" AND task_type = ${}", args.len()));
    }
    if let Some(s) = status.filter(|s| !s.is_empty()) {
        let s = match s.to_ascii_uppercase().as_str() {
            "PENDING" | "INPROGRESS" => "INPROGRESS",
            "APPROVED" | "SUCCESS" => "SUCCESS",
            "DENIED" | "DECLINED" => "DENIED",
            "FAILED" => "FAILED",
            _ => {
                return Err(Error::field(
                    "status",
                    "must be INPROGRESS (PENDING), SUCCESS (APPROVED), DENIED or FAILED",
                ))
            }
        };
        args.push(s.into());
        wh.push_str(&format!(" AND status = ${}", args.len()));
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE account_id = $1")
        .bind(&p.account_id)
        .fetch_one(state.db.reader())
        .await?;
    let sql = format!("SELECT COUNT(*) FROM tasks WHERE {wh}");
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    for a in &args {
        q = q.bind(a);
    }
    let filtered = q.fetch_one(state.db.reader()).await?;
    let sql = format!(
        "SELECT {COLS} FROM tasks WHERE {wh} ORDER BY created_at DESC, task_id LIMIT {limit} OFFSET {offset}"
    );
    let mut q = sqlx::query(&sql);
    for a in &args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(state.db.reader()).await?;
    let ids = rows
        .iter()
        .map(|r| r.try_get("task_id"))
        .collect::<Result<Vec<String>, _>>()?;
    // The page's approvals in one query (not one per task).
    let mut by_task = approvals_of(state.db.reader(), &ids).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (r, id) in rows.iter().zip(&ids) {
        out.push(from_row(r, by_task.remove(id).unwrap_or_default())?);
    }
    Ok((total, filtered, out))
}

/// Whether the caller is one of the policy's approvers.
/// Whether the caller is one of the policy's approvers. A `role:` entry counts only users who
/// already held that role when the task opened (created and last re-roled before it), so a
/// MANAGER cannot mint or promote a second approver for a pending task.
async fn eligible(
    tx: &mut Tx,
    policy: &ApprovalPolicy,
    p: &Principal,
    task_created: i64,
) -> Result<bool> {
    let Some(uid) = p.user_id() else {
        return Ok(false);
    };
    if policy.approvers.iter().any(|a| a == uid) {
        return Ok(true);
    }
    let row = sqlx::query("SELECT created_at, role_changed_at FROM users WHERE user_id = $1")
        .bind(uid)
        .fetch_one(&mut **tx)
        .await?;
    let (created, changed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let held_then = created <= task_created && changed <= task_created;
    Ok(held_then
        && policy.approvers.iter().any(|a| {
            a.strip_prefix("role:")
                .and_then(Role::parse)
                .is_some_and(|need| p.role >= need)
        }))
}

/// `PATCH /v1/tasks/{id}`: one approval or denial by the caller.
pub async fn decide(
    state: &State,
    p: &Principal,
    id: &str,
    req: TaskUpdateRequest,
) -> Result<Task> {
    let approve = match req.status.as_str() {
        "APPROVED" => true,
        "DENIED" => false,
        _ => return Err(Error::field("status", "must be APPROVED or DENIED")),
    };
    let reason = req.denial_reason.clone().filter(|r| !r.trim().is_empty());
    if let Some(r) = &reason {
        validate::text("denial_reason", r, 1024)?;
    }
    if !approve && reason.is_none() {
        return Err(Error::field("denial_reason", "is required to deny a task"));
    }
    if p.user_id().is_none() {
        return Err(Error::Forbidden(
            "tasks are approved by users, not API keys: log in as an approver".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM tasks WHERE account_id = $1 AND task_id = $2{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "task",
        id: id.into(),
    })?;
    let task = from_row(&row, Vec::new())?;
    if task.status.status != "INPROGRESS" {
        return Err(Error::Conflict(format!(
            "task {id} is already decided ({})",
            task.status.status
        )));
    }
    let policy = &task.approval_policy;
    if !eligible(&mut tx, policy, p, task.status.created_at).await? {
        return Err(Error::Forbidden(format!(
            "{} is not an approver of this task (approvers: {})",
            p.actor.name,
            policy.approvers.join(", ")
        )));
    }
    if policy.exclude_requester && task.requester_info.user_id.as_deref() == Some(p.owner.as_str())
    {
        return Err(Error::Forbidden(format!(
            "{} registered this build and the app's policy excludes the requester from approving it",
            p.actor.name
        )));
    }
    let now = state.clock.now();
    let inserted = sqlx::query(
        "INSERT INTO approvals (task_id, user_id, user_name, status, denial_reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&p.actor.id)
    .bind(&p.actor.name)
    .bind(&req.status)
    .bind(reason.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(Error::from);
    if let Err(e) = inserted {
        if e.is_unique_violation() {
            return Err(Error::Conflict(format!(
                "{} has already decided on task {id}: one user counts once",
                p.actor.name
            )));
        }
        return Err(e);
    }
    let approved: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approvals WHERE task_id = $1 AND status = 'APPROVED'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let build_id = task.entity_id.clone();
    audit::append(
        &state.db,
        &mut tx,
        &p.account_id,
        &p.actor,
        Event {
            action: if approve {
                "Task Approved"
            } else {
                "Task Denied"
            },
            entity_type: "task",
            entity_id: id,
            details: json!({
                "build_id": build_id,
                "approvals": approved,
                "needed": policy.n,
                "denial_reason": reason,
            }),
        },
    )
    .await?;
    let key: Option<String> =
        sqlx::query_scalar("SELECT measurement_key FROM builds WHERE build_id = $1")
            .bind(&build_id)
            .fetch_optional(&mut *tx)
            .await?;
    let banned = match &key {
        Some(k) => crate::builds::revoked(&mut *tx, &p.account_id, k).await?,
        None => None,
    };
    let mut reason = reason;
    let outcome = if let Some((old, why)) = &banned {
        reason = Some(format!(
            "these measurements were revoked with build {old} ({why})"
        ));
        Some(("FAILED", "REJECTED", "Build Rejected"))
    } else if !approve {
        Some(("DENIED", "REJECTED", "Build Rejected"))
    } else if approved >= i64::from(policy.n) {
        Some(("SUCCESS", "WHITELISTED", "Build Whitelisted"))
    } else {
        None
    };
    if let Some((task_status, build_status, action)) = outcome {
        sqlx::query(
            "UPDATE tasks SET status = $1, denial_reason = $2, status_updated_at = $3 WHERE task_id = $4",
        )
        .bind(task_status)
        .bind(reason.as_deref())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE builds SET status = $1, status_reason = $2, status_updated_at = $3, updated_at = $3 \
             WHERE build_id = $4 AND status = 'PENDING'",
        )
        .bind(build_status)
        .bind(reason.as_deref())
        .bind(now)
        .bind(&build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            let approvers = approvals(&mut *tx, id).await?;
            audit::append(
                &state.db,
                &mut tx,
                &p.account_id,
                &audit::Actor::system(),
                Event {
                    action,
                    entity_type: "build",
                    entity_id: &build_id,
                    details: json!({
                        "task_id": id,
                        "decided_by": approvers.iter().map(|a| format!("{} ({})", a.user_name, a.status)).collect::<Vec<_>>(),
                        "denial_reason": reason,
                    }),
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    get(state, p, id).await
}

/// Open tasks across accounts (for `/metrics`).
pub async fn count_open(state: &State) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'INPROGRESS'")
            .fetch_one(state.db.reader())
            .await?,
    )
}
