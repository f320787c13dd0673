//! `cloak job`: convert through a manager (a durable job run by its workers) and follow jobs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use cloak_api::{ConvertAuthConfig, Job, JobState, ListResponse};
use serde_json::{json, Value};

use super::client::{query, read_secret, seg, table, Connection, Session};
use super::convert::Target;
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
    /// Queue a conversion on the manager (its workers run `cloak convert`'s pipeline and
    /// register the result as a build); with --follow, wait for it with a progress bar.
    Submit(SubmitArgs),
    /// Follow a job until it ends (exit status 0 only when it SUCCEEDED).
    Follow { job: String },
    /// Show one job.
    Show { job: String },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state: QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
        #[arg(long)]
        state: Option<String>,
        /// At most N jobs (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a queued or running job (no tag is left behind).
    Cancel { job: String },
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    /// What to produce.
    #[arg(long, value_enum)]
    target: Target,
    /// Input image in a registry the manager reaches: HOST/REPO:TAG.
    #[arg(value_name = "INPUT")]
    input_image: String,
    /// Output image: HOST/REPO:TAG.
    #[arg(value_name = "OUTPUT")]
    output_image: String,
    /// The app the build is registered under (ID; required for Nitro; SGX default: the app
    /// named after the output repository).
    #[arg(long)]
    app: Option<String>,
    /// Conversion options as JSON: SGX: the EnclaveOS body's options (memSize, threads, …);
    /// Nitro: {"converter_options": …, "nitro_enclaves_options": …}.
    #[arg(long, value_name = "FILE")]
    options: Option<PathBuf>,
    /// Registry user sent with the request (password from --registry-password-stdin or
    /// CLOAK_REGISTRY_PASSWORD); default: the credentials saved in the manager for the host.
    #[arg(long, value_name = "NAME")]
    registry_user: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "registry_user")]
    registry_password_stdin: bool,
    /// The same key again answers the same job instead of converting twice.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Wait for the job and show its progress; exit status 0 only when it succeeded.
    #[arg(long)]
    follow: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::Submit(sa) => submit(&s, sa),
        Command::Follow { job } => follow(&s, seg("job", &job)?),
        Command::Show { job } => {
            let j: Job = s.get(&format!("/v1/jobs/{}", seg("job", &job)?))?;
            show(&s, &j)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List { state, limit } => {
            let q = query(&[("state", state), ("limit", Some(limit.to_string()))]);
            let jobs: ListResponse<Job> = s.get(&format!("/v1/jobs{q}"))?;
            if s.json() {
                print_json(&jobs)?;
            } else {
                let rows = jobs
                    .items
                    .iter()
                    .map(|j| {
                        vec![
                            j.job_id.clone(),
                            j.target.as_str().into(),
                            j.state.as_str().into(),
                            j.stage.clone().unwrap_or_default(),
                            j.output_image.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "TARGET", "STATE", "STAGE", "OUTPUT"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { job } => {
            let j: Job = s
                .client
                .post_empty(&format!("/v1/jobs/{}/cancel", seg("job", &job)?))
                .map_err(|e| s.fail(e))?;
            show(&s, &j)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn submit(s: &Session, a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let options: Value = match &a.options {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p)
                .with_context(|| format!("while reading --options {}", p.display()))?,
        )
        .with_context(|| format!("while parsing --options {}", p.display()))?,
        None => json!({}),
    };
    if !options.is_object() {
        anyhow::bail!("--options must hold a JSON object");
    }
    let auth = match &a.registry_user {
        Some(u) => Some(ConvertAuthConfig {
            username: u.clone(),
            password: Some(read_secret(
                a.registry_password_stdin,
                "CLOAK_REGISTRY_PASSWORD",
                "registry password",
                "--registry-password-stdin",
            )?),
        }),
        None => None,
    };
    let (path, body) = match a.target {
        Target::Sgx => {
            let mut body = options;
            body["inputImageName"] = json!(a.input_image);
            body["outputImageName"] = json!(a.output_image);
            if let Some(app) = &a.app {
                body["appId"] = json!(app);
            }
            if let Some(auth) = &auth {
                body["authConfig"] = serde_json::to_value(auth)?;
            }
            ("/convert-image", body)
        }
        Target::Nitro => {
            let app = a
                .app
                .clone()
                .context("--target nitro needs --app APP_ID (CCM's request names the app)")?;
            let image = |name: &str| json!({"name": name, "auth_config": auth});
            let body = json!({
                "request": {
                    "app_id": app,
                    "input_image": image(&a.input_image),
                    "output_image": image(&a.output_image),
                    "converter_options": options.get("converter_options").cloned().unwrap_or(json!({})),
                },
                "nitro_enclaves_options": options.get("nitro_enclaves_options").cloned().unwrap_or(json!({})),
            });
            ("/v1/builds/convert-app/nitro-enclaves", body)
        }
    };
    let job = s
        .client
        .submit_conversion(path, &body, a.idempotency_key.as_deref())
        .map_err(|e| s.fail(e))?;
    if a.follow {
        return follow(s, &job.job_id);
    }
    show(s, &job)?;
    Ok(ExitCode::SUCCESS)
}

/// Polls the job, drawing its stage and bytes on stderr (when it is a terminal) until it ends.
fn follow(s: &Session, id: &str) -> anyhow::Result<ExitCode> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        b
    });
    let job = loop {
        let j: Job = s.get(&format!("/v1/jobs/{id}"))?;
        if let Some(b) = &bar {
            b.set_length(j.bytes_total.unwrap_or(0).max(0) as u64);
            b.set_position(j.bytes_done.max(0) as u64);
            b.set_message(format!(
                "{} {}",
                j.state.as_str(),
                j.stage.as_deref().unwrap_or("")
            ));
        }
        if j.state.is_final() {
            break j;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    show(s, &job)?;
    Ok(match job.state {
        JobState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn show(s: &Session, j: &Job) -> anyhow::Result<()> {
    if s.json() {
        return print_json(j);
    }
    outln!("Job:      {} ({})", j.job_id, j.target.as_str());
    outln!("State:    {}", j.state.as_str());
    if let Some(st) = &j.stage {
        outln!("Stage:    {st}");
    }
    outln!("Input:    {}", j.input_image);
    outln!("Output:   {}", j.output_image);
    outln!("Attempts: {}", j.attempts);
    if let Some(e) = &j.error {
        outln!("Error:    in {}: {}", e.stage, e.message);
    }
    if let Some(b) = &j.build_id {
        outln!("Build:    {b} (approve its task with `cloak task approve`)");
    }
    Ok(())
}
