//! `cloak app`: the manager's apps and their approval quorums.

use std::process::ExitCode;

use clap::Subcommand;
use cloak_api::{App, AppPatch, AppRequest, ApprovalPolicy, ListResponse, User};

use super::client::{is_id, seg, table, usage, Connection, Session};
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

/// Who must approve new builds of the app (all three optional; unset ones keep their value).
#[derive(Debug, Clone, clap::Args)]
struct PolicyArgs {
    /// Approvals a new build needs (the quorum, n).
    #[arg(long, value_name = "N")]
    quorum: Option<u32>,
    /// Who may approve: a user id or name, or role:WRITER / role:MANAGER (repeatable).
    #[arg(long, value_name = "USER|role:ROLE")]
    approver: Vec<String>,
    /// The user who registered a build may not approve it.
    #[arg(long, conflicts_with = "include_requester")]
    exclude_requester: bool,
    /// The requester may approve their own build (the default).
    #[arg(long)]
    include_requester: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the apps.
    List,
    /// Show one app (ID or name).
    Show { app: String },
    /// Create an app.
    Create {
        /// The app's name.
        #[arg(long)]
        name: String,
        /// Image the app is converted from.
        #[arg(long, value_name = "IMAGE")]
        input_image: String,
        /// Image the converted app is pushed to.
        #[arg(long, value_name = "IMAGE")]
        output_image: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change an app (only the given fields).
    Update {
        /// The app (ID or name).
        app: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New input image.
        #[arg(long, value_name = "IMAGE")]
        input_image: Option<String>,
        /// New output image.
        #[arg(long, value_name = "IMAGE")]
        output_image: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Delete an app without builds.
    Delete { app: String },
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::List => {
            let apps: ListResponse<App> = s.get("/v1/apps?limit=1000")?;
            if s.json() {
                print_json(&apps)?;
            } else {
                let rows = apps
                    .items
                    .iter()
                    .map(|a| {
                        vec![
                            a.app_id.clone(),
                            a.name.clone(),
                            a.output_image_name.clone(),
                            policy_text(&a.approval_policy),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "NAME", "OUTPUT IMAGE", "APPROVAL"], &rows);
            }
        }
        Command::Show { app } => {
            let id = resolve(&s, &app)?;
            let app: App = s.get(&format!("/v1/apps/{id}"))?;
            show(&s, &app)?;
        }
        Command::Create {
            name,
            input_image,
            output_image,
            description,
            policy,
        } => {
            let approval_policy = policy.apply(&s, None)?;
            let req = AppRequest {
                name,
                description,
                input_image_name: input_image,
                output_image_name: output_image,
                approval_policy,
                ..Default::default()
            };
            let app: App = s.post("/v1/apps", &req)?;
            show(&s, &app)?;
        }
        Command::Update {
            app,
            name,
            input_image,
            output_image,
            description,
            policy,
        } => {
            let id = resolve(&s, &app)?;
            let approval_policy = if policy.is_set() {
                let current: App = s.get(&format!("/v1/apps/{id}"))?;
                policy.apply(&s, Some(current.approval_policy))?
            } else {
                None
            };
            let patch = AppPatch {
                name,
                description,
                input_image_name: input_image,
                output_image_name: output_image,
                approval_policy,
                ..Default::default()
            };
            let app: App = s.patch(&format!("/v1/apps/{id}"), &patch)?;
            show(&s, &app)?;
        }
        Command::Delete { app } => {
            let id = resolve(&s, &app)?;
            s.delete(&format!("/v1/apps/{id}"))?;
            if s.json() {
                print_json(&serde_json::json!({"deleted": id}))?;
            } else {
                outln!("deleted app {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl PolicyArgs {
    fn is_set(&self) -> bool {
        self.quorum.is_some()
            || !self.approver.is_empty()
            || self.exclude_requester
            || self.include_requester
    }

    /// The policy these flags make out of `current` (the default for a new app); `None` when
    /// no flag is given (the manager keeps or defaults it).
    fn apply(
        &self,
        s: &Session,
        current: Option<ApprovalPolicy>,
    ) -> anyhow::Result<Option<ApprovalPolicy>> {
        if !self.is_set() {
            return Ok(None);
        }
        let mut p = current.unwrap_or_default();
        if let Some(n) = self.quorum {
            if n == 0 {
                return Err(usage("--quorum must be at least 1"));
            }
            p.n = n;
        }
        if !self.approver.is_empty() {
            let users = if self
                .approver
                .iter()
                .any(|a| !a.starts_with("role:") && !is_id(a))
            {
                s.get::<Vec<User>>("/v1/users")?
            } else {
                Vec::new()
            };
            p.approvers = self
                .approver
                .iter()
                .map(|a| {
                    if a.starts_with("role:") || is_id(a) {
                        return Ok(a.clone());
                    }
                    users
                        .iter()
                        .find(|u| &u.user_name == a)
                        .map(|u| u.user_id.clone())
                        .ok_or_else(|| {
                            usage(format!(
                                "--approver {a}: no such user (give a user id or name from `cloak user list`, or role:WRITER / role:MANAGER)"
                            ))
                        })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if self.exclude_requester {
            p.exclude_requester = true;
        }
        if self.include_requester {
            p.exclude_requester = false;
        }
        Ok(Some(p))
    }
}

/// The app id of an id or an app name.
pub fn resolve(s: &Session, app: &str) -> anyhow::Result<String> {
    if is_id(app) {
        return Ok(app.to_string());
    }
    let apps: ListResponse<App> = s.get("/v1/apps?limit=1000")?;
    match apps.items.iter().find(|a| a.name == app) {
        Some(a) => Ok(a.app_id.clone()),
        None => {
            seg("app", app)?;
            Err(anyhow::anyhow!(
                "no app named {app:?}: see `cloak app list`, or create it with `cloak app create --name {app} …`"
            ))
        }
    }
}

/// "2 of [alice-id, role:MANAGER], not the requester".
pub fn policy_text(p: &ApprovalPolicy) -> String {
    format!(
        "{} of [{}]{}",
        p.n,
        p.approvers.join(", "),
        if p.exclude_requester {
            ", not the requester"
        } else {
            ""
        }
    )
}

fn show(s: &Session, app: &App) -> anyhow::Result<()> {
    if s.json() {
        return print_json(app);
    }
    outln!("ID:           {}", app.app_id);
    outln!("Name:         {}", app.name);
    if !app.description.is_empty() {
        outln!("Description:  {}", app.description);
    }
    outln!("Input image:  {}", app.input_image_name);
    outln!("Output image: {}", app.output_image_name);
    outln!("Approval:     {}", policy_text(&app.approval_policy));
    Ok(())
}
