//! `cloak user` and `cloak apikey`: the account's people and pipeline keys.

use std::process::ExitCode;

use clap::Subcommand;
use cloak_api::{ApiKey, ApiKeyCreated, ApiKeyRequest, Role, User, UserPatch, UserRequest};

use super::client::Session;
use super::client::{
    fmt_time, is_id, read_secret, read_stdin_lines, seg, table, usage, Connection,
};
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

/// A role of a user or API key.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum RoleArg {
    #[value(alias = "reader")]
    Reader,
    #[value(alias = "writer")]
    Writer,
    #[value(alias = "manager")]
    Manager,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Reader => Role::Reader,
            RoleArg::Writer => Role::Writer,
            RoleArg::Manager => Role::Manager,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the account's users.
    List,
    /// Create a user (password from --password-stdin or CLOAK_NEW_PASSWORD).
    Create {
        /// User name.
        #[arg(long)]
        name: String,
        /// Role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (else CLOAK_NEW_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change your own password (the new one read from standard input).
    Passwd,
    /// Change a user's role or status (MANAGER).
    Update {
        /// The user (ID or name).
        user: String,
        /// New role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Disable the user (their sessions stop working).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable a disabled user.
        #[arg(long)]
        enable: bool,
    },
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::List => {
            let users: Vec<User> = s.get("/v1/users")?;
            if s.json() {
                print_json(&users)?;
            } else {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.user_id.clone(),
                            u.user_name.clone(),
                            roles(&u.roles),
                            u.status.clone(),
                            u.last_logged_in_at.map(fmt_time).unwrap_or("-".into()),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "NAME", "ROLE", "STATUS", "LAST LOGIN"], &rows);
            }
        }
        Command::Create {
            name,
            role,
            email,
            password_stdin,
        } => {
            let password = read_secret(
                password_stdin,
                "CLOAK_NEW_PASSWORD",
                "new user's password",
                "--password-stdin",
            )?;
            let u: User = s.post(
                "/v1/users",
                &UserRequest {
                    user_name: name,
                    user_email: email,
                    password,
                    role: role.into(),
                },
            )?;
            show(&s, &u, "created")?;
        }
        Command::Passwd => {
            let me: User = s.get("/v1/user")?;
            // Two lines: the current password, then the new one.
            let lines = read_stdin_lines("current and new password", 2)?;
            let (current, password) = match lines.as_slice() {
                [c, n] if !c.is_empty() && !n.is_empty() => (c.clone(), n.clone()),
                _ => return Err(usage(
                    "pipe two lines to `cloak user passwd`: the current password, then the new one",
                )),
            };
            let u: User = s.patch(
                &format!("/v1/users/{}", me.user_id),
                &UserPatch {
                    password: Some(password),
                    current_password: Some(current),
                    ..Default::default()
                },
            )?;
            show(&s, &u, "changed the password of")?;
        }
        Command::Update {
            user,
            role,
            disable,
            enable,
        } => {
            if role.is_none() && !disable && !enable {
                return Err(usage(
                    "nothing to change: give --role, --disable or --enable",
                ));
            }
            let id = resolve_user(&s, &user)?;
            let u: User = s.patch(
                &format!("/v1/users/{id}"),
                &UserPatch {
                    role: role.map(Role::from),
                    status: if disable {
                        Some("DISABLED".into())
                    } else if enable {
                        Some("ACTIVE".into())
                    } else {
                        None
                    },
                    ..Default::default()
                },
            )?;
            show(&s, &u, "updated")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve_user(s: &Session, user: &str) -> anyhow::Result<String> {
    if is_id(user) {
        return Ok(user.to_string());
    }
    let users: Vec<User> = s.get("/v1/users")?;
    users
        .into_iter()
        .find(|u| u.user_name == user)
        .map(|u| u.user_id)
        .ok_or_else(|| anyhow::anyhow!("no user named {user:?}: see `cloak user list`"))
}

fn roles(r: &[Role]) -> String {
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

fn show(s: &Session, u: &User, what: &str) -> anyhow::Result<()> {
    if s.json() {
        return print_json(u);
    }
    outln!(
        "{what} user {} ({}, {}, {})",
        u.user_name,
        u.user_id,
        roles(&u.roles),
        u.status
    );
    Ok(())
}

// ---- API keys ----

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// List API keys (never their secrets).
    List,
    /// Create an API key; its secret is printed once, here.
    Create {
        /// A name saying what uses it.
        #[arg(long)]
        name: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Revoke an API key.
    Revoke { key: String },
}

pub fn run_keys(a: KeyArgs) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        KeyCommand::List => {
            let keys: Vec<ApiKey> = s.get("/v1/api_keys")?;
            if s.json() {
                print_json(&keys)?;
            } else {
                let rows = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.name.clone(),
                            k.role.as_str().to_string(),
                            fmt_time(k.created_at),
                            k.last_used_at.map(fmt_time).unwrap_or("-".into()),
                            k.revoked_at
                                .map(|t| format!("revoked {}", fmt_time(t)))
                                .unwrap_or("active".into()),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &["ID", "NAME", "ROLE", "CREATED", "LAST USED", "STATUS"],
                    &rows,
                );
            }
        }
        KeyCommand::Create { name, role } => {
            let k: ApiKeyCreated = s.post(
                "/v1/api_keys",
                &ApiKeyRequest {
                    name,
                    role: role.into(),
                },
            )?;
            if s.json() {
                print_json(&k)?;
            } else {
                outln!(
                    "created API key {} ({}, {})",
                    k.key.name,
                    k.key.key_id,
                    k.key.role.as_str()
                );
                outln!("secret (shown once; use it as CLOAK_MANAGER_TOKEN):");
                outln!("{}", k.secret);
            }
        }
        KeyCommand::Revoke { key } => {
            let id = seg("apikey", &key)?;
            s.delete(&format!("/v1/api_keys/{id}"))?;
            if s.json() {
                print_json(&serde_json::json!({"revoked": id}))?;
            } else {
                outln!("revoked API key {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
