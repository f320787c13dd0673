//! `cloak registry`: registry credentials saved in the manager (passwords never shown).

use std::process::ExitCode;

use clap::Subcommand;
use cloak_api::{AuthConfig, CredentialType, Registry, RegistryPatch, RegistryRequest};

use super::client::{fmt_time, read_secret, seg, table, usage, Connection, Session};
use crate::output::print_json;

const PASSWORD_ENV: &str = "CLOAK_REGISTRY_PASSWORD";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manager's URL; here it goes before the verb (`cloak registry --url MANAGER add
    /// --url REGISTRY …`), since `add` and `update` have their own --url.
    #[arg(
        long = "url",
        id = "manager_url",
        value_name = "URL",
        env = "CLOAK_MANAGER_URL"
    )]
    manager_url: Option<String>,
    /// CA certificate (PEM) of the manager's TLS certificate; default: the stored login's.
    #[arg(long, global = true, value_name = "FILE", env = "CLOAK_MANAGER_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Output: text (a compact table) or json (the API's answer as is).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t)]
    output: crate::output::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List saved credentials (passwords masked).
    List,
    /// Save a credential (password from --password-stdin or CLOAK_REGISTRY_PASSWORD).
    Add {
        /// The registry (host[:port], or a URL).
        #[arg(long)]
        url: String,
        /// User name at the registry.
        #[arg(long)]
        username: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Read the password from standard input (else CLOAK_REGISTRY_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a credential (a new password from --password-stdin or CLOAK_REGISTRY_PASSWORD).
    Update {
        registry: String,
        /// New registry URL.
        #[arg(long)]
        url: Option<String>,
        /// New user name (needs the password too).
        #[arg(long)]
        username: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Read a new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a credential.
    Delete { registry: String },
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = Connection {
        url: a.manager_url,
        cacert: a.cacert,
        output: a.output,
    }
    .session()?;
    match a.command {
        Command::List => {
            let regs: Vec<Registry> = s.get("/v1/registry")?;
            if s.json() {
                print_json(&regs)?;
            } else {
                // The manager masks passwords; the table never shows that field at all.
                let rows = regs
                    .iter()
                    .map(|r| {
                        vec![
                            r.registry_id.clone(),
                            r.url.clone(),
                            r.username.clone(),
                            "*****".to_string(),
                            fmt_time(r.updated_at),
                            r.description.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &[
                        "ID",
                        "URL",
                        "USERNAME",
                        "PASSWORD",
                        "UPDATED",
                        "DESCRIPTION",
                    ],
                    &rows,
                );
            }
        }
        Command::Add {
            url,
            username,
            description,
            password_stdin,
        } => {
            let password = read_secret(
                password_stdin,
                PASSWORD_ENV,
                "registry password",
                "--password-stdin",
            )?;
            let req = RegistryRequest {
                url,
                credential: CredentialType {
                    default: AuthConfig { username, password },
                },
                description,
            };
            let r: Registry = s.post("/v1/registry", &req)?;
            show(&s, &r, "saved")?;
        }
        Command::Update {
            registry,
            url,
            username,
            description,
            password_stdin,
        } => {
            let id = seg("registry", &registry)?;
            let env_set = std::env::var(PASSWORD_ENV).is_ok_and(|v| !v.is_empty());
            let credential = if password_stdin || env_set {
                let password = read_secret(
                    password_stdin,
                    PASSWORD_ENV,
                    "registry password",
                    "--password-stdin",
                )?;
                let username = match username {
                    Some(u) => u,
                    None => s.get::<Registry>(&format!("/v1/registry/{id}"))?.username,
                };
                Some(CredentialType {
                    default: AuthConfig { username, password },
                })
            } else if username.is_some() {
                return Err(usage(
                    "--username changes the credential: give its password too (--password-stdin or CLOAK_REGISTRY_PASSWORD)",
                ));
            } else {
                None
            };
            let patch = RegistryPatch {
                url,
                credential,
                description,
            };
            let r: Registry = s.patch(&format!("/v1/registry/{id}"), &patch)?;
            show(&s, &r, "updated")?;
        }
        Command::Delete { registry } => {
            let id = seg("registry", &registry)?;
            s.delete(&format!("/v1/registry/{id}"))?;
            if s.json() {
                print_json(&serde_json::json!({"deleted": id}))?;
            } else {
                outln!("deleted registry credential {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(s: &Session, r: &Registry, what: &str) -> anyhow::Result<()> {
    if s.json() {
        return print_json(r);
    }
    outln!(
        "{what} registry credential {} for {} (user {}, password *****)",
        r.registry_id,
        r.url,
        r.username
    );
    Ok(())
}
