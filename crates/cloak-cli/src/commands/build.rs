//! `cloak build`: register converted images' measurements, list, show, revoke and delete them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use cloak_api::{
    Build, CreateBuildRequest, DockerInfo, ImageAttributes, ListResponse, NitroEnclaveAttributes,
    RevokeRequest,
};

use super::client::{fmt_time, query, seg, table, usage, Connection, Session};
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
    /// List builds (newest first).
    List {
        /// Only builds in this status: PENDING, WHITELISTED or REJECTED.
        #[arg(long)]
        status: Option<String>,
        /// Only builds whose image, app name, MRENCLAVE, MRSIGNER or PCR0 contains TEXT.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Only this app's builds (ID or name).
        #[arg(long)]
        app: Option<String>,
        /// At most N builds (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Show one build with its measurements in full.
    Show { build: String },
    /// Register a build's measurements; opens its approval task.
    #[command(disable_version_flag = true)]
    Register(Box<RegisterArgs>),
    /// Revoke a build (REJECTED, with a reason).
    Revoke {
        build: String,
        /// Why (kept and audited).
        #[arg(long)]
        reason: String,
    },
    /// Delete a build.
    Delete { build: String },
}

#[derive(Debug, clap::Args)]
struct RegisterArgs {
    /// The request body as JSON (CCM's CreateBuildRequest or IBM's flat body; `-` for stdin).
    #[arg(long, value_name = "BODY.json", conflicts_with_all = ["app", "image", "version", "sha", "mrenclave", "mrsigner", "isvprodid", "isvsvn", "pcr0", "pcr1", "pcr2", "pcr8"])]
    file: Option<PathBuf>,
    /// The app (ID or name).
    #[arg(long)]
    app: Option<String>,
    /// The converted image's name (repository).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Its tag.
    #[arg(long, value_name = "TAG")]
    version: Option<String>,
    /// Its digest (sha256:…).
    #[arg(long, value_name = "sha256:HEX")]
    sha: Option<String>,
    /// SGX: MRENCLAVE (64 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["pcr0", "pcr1", "pcr2", "pcr8"])]
    mrenclave: Option<String>,
    /// SGX: MRSIGNER (64 hex digits).
    #[arg(long, value_name = "HEX")]
    mrsigner: Option<String>,
    /// SGX: ISVPRODID (0 to 65535).
    #[arg(long, value_name = "N")]
    isvprodid: Option<u16>,
    /// SGX: ISVSVN (0 to 65535).
    #[arg(long, value_name = "N")]
    isvsvn: Option<u16>,
    /// Nitro: PCR0 (96 hex digits).
    #[arg(long, value_name = "HEX")]
    pcr0: Option<String>,
    /// Nitro: PCR1.
    #[arg(long, value_name = "HEX")]
    pcr1: Option<String>,
    /// Nitro: PCR2.
    #[arg(long, value_name = "HEX")]
    pcr2: Option<String>,
    /// Nitro: PCR8 (signed EIFs).
    #[arg(long, value_name = "HEX")]
    pcr8: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a.conn.session()?;
    match a.command {
        Command::List {
            status,
            search,
            app,
            limit,
        } => {
            let app_id = app.map(|a| super::app::resolve(&s, &a)).transpose()?;
            let q = query(&[
                ("status", status.map(|s| s.to_ascii_uppercase())),
                ("all_search", search),
                ("app_id", app_id),
                ("limit", Some(limit.to_string())),
            ]);
            let builds: ListResponse<Build> = s.get(&format!("/v1/builds{q}"))?;
            if s.json() {
                print_json(&builds)?;
            } else {
                let rows = builds
                    .items
                    .iter()
                    .map(|b| {
                        vec![
                            b.build_id.clone(),
                            b.app_name.clone(),
                            format!(
                                "{}:{}",
                                b.docker_info.docker_image_name, b.docker_info.docker_version
                            ),
                            kind(b).to_string(),
                            b.status.status.clone(),
                            fmt_time(b.created_at),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "APP", "IMAGE", "TEE", "STATUS", "CREATED"], &rows);
                if builds.metadata.filtered_count > builds.items.len() as i64 {
                    outln!(
                        "({} of {} shown: use --limit)",
                        builds.items.len(),
                        builds.metadata.filtered_count
                    );
                }
            }
        }
        Command::Show { build } => {
            let b: Build = s.get(&format!("/v1/builds/{}", seg("build", &build)?))?;
            show(&s, &b)?;
        }
        Command::Register(r) => {
            let body = r.body(&s)?;
            let b: Build = s.post("/v1/builds", &body)?;
            if s.json() {
                print_json(&b)?;
            } else {
                outln!(
                    "registered build {} of app {} ({})",
                    b.build_id,
                    b.app_name,
                    b.status.status
                );
                if let Some(t) = &b.pending_task_id {
                    outln!("approval task {t}: cloak task approve {t}");
                }
            }
        }
        Command::Revoke { build, reason } => {
            let b: Build = s.post(
                &format!("/v1/builds/{}/revoke", seg("build", &build)?),
                &RevokeRequest { reason },
            )?;
            show(&s, &b)?;
        }
        Command::Delete { build } => {
            let id = seg("build", &build)?;
            s.delete(&format!("/v1/builds/{id}"))?;
            if s.json() {
                print_json(&serde_json::json!({"deleted": id}))?;
            } else {
                outln!("deleted build {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl RegisterArgs {
    /// The request body: the file's JSON as is, or CCM's CreateBuildRequest from the flags.
    fn body(&self, s: &Session) -> anyhow::Result<serde_json::Value> {
        if let Some(f) = &self.file {
            let bytes = if f.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .context("cannot read the build body from standard input")?;
                v
            } else {
                std::fs::read(f)
                    .with_context(|| format!("cannot read the build body {}", f.display()))?
            };
            return serde_json::from_slice(&bytes).map_err(|e| {
                usage(format!(
                    "{} is not JSON ({e}): give CCM's CreateBuildRequest or IBM's flat body",
                    f.display()
                ))
            });
        }
        let need = |v: &Option<String>, flag: &str| {
            v.clone().ok_or_else(|| {
                usage(format!(
                    "{flag} is missing: give --file BODY.json, or --app, --image, --version and either --mrenclave/--mrsigner or --pcr0/--pcr1/--pcr2"
                ))
            })
        };
        let app = need(&self.app, "--app")?;
        let mut req = CreateBuildRequest {
            docker_info: DockerInfo {
                docker_image_name: need(&self.image, "--image")?,
                docker_version: need(&self.version, "--version")?,
                docker_image_sha: self.sha.clone(),
                ..Default::default()
            },
            app_id: Some(super::app::resolve(s, &app)?),
            ..Default::default()
        };
        let sgx = self.mrenclave.is_some()
            || self.mrsigner.is_some()
            || self.isvprodid.is_some()
            || self.isvsvn.is_some();
        let nitro = self.pcr0.is_some()
            || self.pcr1.is_some()
            || self.pcr2.is_some()
            || self.pcr8.is_some();
        match (sgx, nitro) {
            (true, false) => {
                req.mrenclave = Some(need(&self.mrenclave, "--mrenclave")?);
                req.mrsigner = Some(need(&self.mrsigner, "--mrsigner")?);
                req.isvprodid = self.isvprodid;
                req.isvsvn = self.isvsvn;
            }
            (false, true) => {
                req.attributes = Some(ImageAttributes {
                    nitro_enclave: Some(NitroEnclaveAttributes {
                        pcr0: need(&self.pcr0, "--pcr0")?,
                        pcr1: need(&self.pcr1, "--pcr1")?,
                        pcr2: need(&self.pcr2, "--pcr2")?,
                        pcr8: self.pcr8.clone(),
                    }),
                    sgx: None,
                });
            }
            (true, true) => {
                return Err(usage(
                    "a build is SGX (--mrenclave, --mrsigner) or Nitro (--pcr0, --pcr1, --pcr2), not both",
                ))
            }
            (false, false) => {
                return Err(usage(
                    "no measurements: give --mrenclave and --mrsigner (SGX) or --pcr0, --pcr1 and --pcr2 (Nitro)",
                ))
            }
        }
        Ok(serde_json::to_value(req)?)
    }
}

fn kind(b: &Build) -> &'static str {
    if b.attributes.nitro_enclave.is_some() {
        "nitro"
    } else {
        "sgx"
    }
}

fn show(s: &Session, b: &Build) -> anyhow::Result<()> {
    if s.json() {
        return print_json(b);
    }
    let d = &b.docker_info;
    outln!("ID:         {}", b.build_id);
    outln!("App:        {} ({})", b.app_name, b.app_id);
    outln!("Image:      {}:{}", d.docker_image_name, d.docker_version);
    if let Some(sha) = &d.docker_image_sha {
        outln!("Digest:     {sha}");
    }
    outln!(
        "Status:     {} since {}",
        b.status.status,
        fmt_time(b.status.status_updated_at)
    );
    if let Some(r) = &b.status_reason {
        outln!("Reason:     {r}");
    }
    outln!(
        "Task:       {}{}",
        b.task_id,
        if b.pending_task_id.is_some() {
            " (awaiting approval)"
        } else {
            ""
        }
    );
    if let Some(n) = &b.attributes.nitro_enclave {
        outln!("PCR0:       {}", n.pcr0);
        outln!("PCR1:       {}", n.pcr1);
        outln!("PCR2:       {}", n.pcr2);
        if let Some(p) = &n.pcr8 {
            outln!("PCR8:       {p}");
        }
    }
    let sgx = b.attributes.sgx.clone().unwrap_or_default();
    if let Some(m) = b.mrenclave.as_ref().or(sgx.mrenclave.as_ref()) {
        outln!("MRENCLAVE:  {m}");
    }
    if let Some(m) = b.mrsigner.as_ref().or(sgx.mrsigner.as_ref()) {
        outln!("MRSIGNER:   {m}");
    }
    if let Some(v) = b.isvprodid.or(sgx.isvprodid) {
        outln!("ISVPRODID:  {v}");
    }
    if let Some(v) = b.isvsvn.or(sgx.isvsvn) {
        outln!("ISVSVN:     {v}");
    }
    outln!("Created:    {}", fmt_time(b.created_at));
    Ok(())
}
