//! `cloak task`: approval tasks and their quorum progress.

use std::process::ExitCode;

use clap::Subcommand;
use cloak_api::{Build, ListResponse, Task, TaskUpdateRequest};

use super::client::{fmt_time, query, seg, table, Connection, Session};
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

/// Task states as people name them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Status {
    Pending,
    Approved,
    Denied,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List approval tasks.
    List {
        /// Only tasks in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// At most N tasks (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Show a task: who asked, who approved, what is still needed.
    Show { task: String },
    /// Approve (counts toward the app's quorum).
    Approve { task: String },
    /// Deny (one denial rejects the build).
    Deny {
        task: String,
        /// Why (kept with the task and the build).
        #[arg(long)]
        reason: String,
    },
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::List { status, limit } => {
            let status = status.map(|st| {
                match st {
                    Status::Pending => "PENDING",
                    Status::Approved => "APPROVED",
                    Status::Denied => "DENIED",
                }
                .to_string()
            });
            let q = query(&[("status", status), ("limit", Some(limit.to_string()))]);
            let tasks: ListResponse<Task> = s.get(&format!("/v1/tasks{q}"))?;
            if s.json() {
                print_json(&tasks)?;
            } else {
                let rows = tasks
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.task_id.clone(),
                            t.entity_id.clone(),
                            t.status.status.clone(),
                            progress(t),
                            t.requester_info.user_name.clone().unwrap_or_default(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "BUILD", "STATUS", "APPROVALS", "REQUESTER"], &rows);
            }
        }
        Command::Show { task } => {
            let t: Task = s.get(&format!("/v1/tasks/{}", seg("task", &task)?))?;
            show(&s, &t, None)?;
        }
        Command::Approve { task } => decide(&s, &task, "APPROVED", None)?,
        Command::Deny { task, reason } => decide(&s, &task, "DENIED", Some(reason))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(s: &Session, task: &str, status: &str, reason: Option<String>) -> anyhow::Result<()> {
    let t: Task = s.patch(
        &format!("/v1/tasks/{}", seg("task", task)?),
        &TaskUpdateRequest {
            status: status.into(),
            denial_reason: reason,
        },
    )?;
    // What the decision did to the build is what the user wants to know next.
    let build: Option<Build> = s.get(&format!("/v1/builds/{}", t.entity_id)).ok();
    show(s, &t, build.as_ref())
}

/// "1 of 2 approvals: alice".
pub fn progress(t: &Task) -> String {
    let names: Vec<&str> = t
        .approvals
        .iter()
        .filter(|a| a.status == "APPROVED")
        .map(|a| a.user_name.as_str())
        .collect();
    let mut s = format!("{} of {} approvals", names.len(), t.approval_policy.n);
    if !names.is_empty() {
        s.push_str(": ");
        s.push_str(&names.join(", "));
    }
    s
}

fn show(s: &Session, t: &Task, build: Option<&Build>) -> anyhow::Result<()> {
    if s.json() {
        return print_json(t);
    }
    outln!("Task:       {} ({})", t.task_id, t.task_type);
    outln!("Build:      {}", t.entity_id);
    outln!("Status:     {}", t.status.status);
    outln!("Approvals:  {}", progress(t));
    outln!(
        "Policy:     {}",
        super::app::policy_text(&t.approval_policy)
    );
    if let Some(name) = &t.requester_info.user_name {
        outln!("Requester:  {name}");
    }
    for a in &t.approvals {
        outln!(
            "  {} {} at {}{}",
            a.status,
            a.user_name,
            fmt_time(a.created_at),
            a.denial_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = &t.denial_reason {
        outln!("Denied:     {r}");
    }
    if let Some(b) = build {
        outln!("Build {} is {}", b.build_id, b.status.status);
    }
    Ok(())
}
