//! Registry flags shared by every command that reads or writes images (skopeo's names).

use std::path::PathBuf;

use anyhow::Context;
use cloak_image::auth::{AuthLookup, Credentials};
use cloak_image::RegistryOptions;

/// Flags for the image a command reads.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Credentials USER[:PASSWORD] for the source registry.
    #[arg(long, value_name = "USER:PASSWORD", alias = "creds")]
    pub src_creds: Option<String>,
    /// Require HTTPS and verify certificates for the source registry.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, alias = "tls-verify")]
    pub src_tls_verify: bool,
    /// Directory of CA certificates (*.crt) for the source registry.
    #[arg(long, value_name = "DIR", alias = "cert-dir")]
    pub src_cert_dir: Option<PathBuf>,
    /// Auth file (docker config.json format) to read credentials from.
    #[arg(long, value_name = "FILE", global = true)]
    pub authfile: Option<PathBuf>,
}

/// Flags for the image a command writes.
#[derive(Debug, Clone, clap::Args)]
pub struct DestArgs {
    /// Credentials USER[:PASSWORD] for the destination registry.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub dest_creds: Option<String>,
    /// Require HTTPS and verify certificates for the destination registry.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub dest_tls_verify: bool,
    /// Directory of CA certificates (*.crt) for the destination registry.
    #[arg(long, value_name = "DIR")]
    pub dest_cert_dir: Option<PathBuf>,
}

fn options(
    creds: &Option<String>,
    tls_verify: bool,
    cert_dir: &Option<PathBuf>,
    authfile: &Option<PathBuf>,
) -> anyhow::Result<RegistryOptions> {
    let mut auth = AuthLookup::from_env();
    if let Some(f) = authfile {
        // An explicit file that is not there is a mistake (a typo, a missing mount), not
        // "no credentials": say so instead of falling back to anonymous access.
        if !f.is_file() {
            anyhow::bail!(
                "--authfile {}: no such file; give the path of a docker config.json-style auth file",
                f.display()
            );
        }
        auth.files.insert(0, f.clone());
    }
    Ok(RegistryOptions {
        tls_verify,
        cert_dir: cert_dir.clone(),
        creds: creds
            .as_deref()
            .map(Credentials::parse)
            .transpose()
            .context("while reading --creds")?,
        auth,
        ..Default::default()
    })
}

impl SourceArgs {
    /// Registry options for the source.
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        options(
            &self.src_creds,
            self.src_tls_verify,
            &self.src_cert_dir,
            &self.authfile,
        )
    }
}

impl DestArgs {
    /// Registry options for the destination (`authfile` comes from the source flags).
    pub fn options(&self, authfile: &Option<PathBuf>) -> anyhow::Result<RegistryOptions> {
        options(
            &self.dest_creds,
            self.dest_tls_verify,
            &self.dest_cert_dir,
            authfile,
        )
    }
}

/// Build the async runtime the commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("while starting the async runtime")
}
