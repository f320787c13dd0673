//! `cloak audit`: the account's hash-chained audit log, through the API.

use std::process::ExitCode;

use clap::Subcommand;
use cloak_api::{AuditRecord, AuditVerification, ListResponse};

use super::client::{fmt_time, query, table, Connection};
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List records, newest first.
    List {
        /// Only this action (e.g. "Build Whitelisted").
        #[arg(long)]
        action: Option<String>,
        /// At most N records (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Check the account's hash chain; exit 1 naming the first altered record.
    Verify,
    /// Write the whole chain to standard output as JSON lines (MANAGER).
    Export,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::List { action, limit } => {
            let q = query(&[("action", action), ("limit", Some(limit.to_string()))]);
            let recs: ListResponse<AuditRecord> = s.get(&format!("/v1/audit{q}"))?;
            if s.json() {
                print_json(&recs)?;
            } else {
                let rows = recs
                    .items
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            fmt_time(r.time / 1000),
                            format!("{} ({})", r.actor_name, r.actor_type),
                            r.action.clone(),
                            format!("{} {}", r.entity_type, r.entity_id),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["SEQ", "TIME", "ACTOR", "ACTION", "ENTITY"], &rows);
            }
        }
        Command::Verify => {
            let v: AuditVerification = s.get("/v1/audit/verify")?;
            if s.json() {
                print_json(&v)?;
            } else {
                match &v.problem {
                    None => outln!("audit chain verified ({} records)", v.records),
                    Some(p) => outln!(
                        "AUDIT CHAIN BROKEN at record {}: {p}",
                        v.first_bad_seq.unwrap_or(0)
                    ),
                }
            }
            if !v.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Export => {
            let text = s
                .client
                .get_text("/v1/audit/export")
                .map_err(|e| s.fail(e))?;
            // JSON lines either way: the output format changes nothing here.
            for line in text.lines() {
                outln!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
