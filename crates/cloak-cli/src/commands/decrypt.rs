//! `cloak decrypt SRC DST --key KEY`: an ocicrypt-encrypted image back to plain layers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::crypt::{KeyMaterial, Transfer};
use cloak_convert::decrypt::{decrypt, DecryptRequest};
use cloak_crypt::keys::KeySpec;
use cloak_image::PlatformSpec;

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, DestArgs, SourceArgs};

/// Key and worker options shared by `cloak encrypt` and `cloak decrypt`.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// Private key: PEM or DER (PKCS#1, PKCS#8, SEC1, encrypted PKCS#8) or JWK; RSA or EC
    /// P-256/P-384/P-521. A password goes after `:pass:`, `:file:` or `:env:`
    /// (`key.pem:env:KEY_PASSWORD`). Repeatable; every key is tried on every recipient.
    #[arg(long, value_name = "KEY[:pass:|:file:|:env:PASSWORD]")]
    pub key: Vec<KeySpec>,
    /// Keyprovider configuration (default: $OCICRYPT_KEYPROVIDER_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub keyprovider_config: Option<PathBuf>,
    /// Layers processed in parallel (default: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

impl KeyArgs {
    /// The keys and provider configuration, as the pipeline takes them.
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            keys: self.key.clone(),
            provider_config: self.keyprovider_config.clone(),
        }
    }
}

/// Input, output and reporting flags shared by `cloak encrypt` and `cloak decrypt`.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// Input image: docker://…, oci:DIR[:TAG] or docker-archive:FILE.
    pub source: String,
    /// Where to write the result: docker://… or oci:DIR[:TAG].
    pub destination: String,
    /// Platform to select from a multi-arch image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub dest: DestArgs,
}

impl PairArgs {
    /// The parsed references and registry settings.
    pub fn transfer(&self, jobs: usize) -> anyhow::Result<Transfer> {
        Ok(Transfer {
            input: self.source.parse()?,
            output: self.destination.parse()?,
            source_options: self.src.options()?,
            dest_options: self.dest.options(&self.src.authfile)?,
            platform: self.platform.parse::<PlatformSpec>()?,
            jobs,
            progress: crate::progress::for_stderr(self.quiet),
        })
    }
}

/// Arguments of `cloak decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Run `cloak decrypt`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let transfer = args.pair.transfer(args.keys.jobs)?;
    let (input, output) = (transfer.input.clone(), transfer.output.clone());
    let req = DecryptRequest {
        transfer,
        keys: args.keys.material(),
    };
    let report = runtime()?
        .block_on(decrypt(req))
        .with_context(|| format!("while decrypting {input} into {output}"))?;
    match args.pair.output {
        Format::Json => print_json(&report)?,
        Format::Text => outln!(
            "Decrypted {} layer(s) into {} ({})",
            report.decrypted_layers.len(),
            report.destination,
            report.digest
        ),
    }
    Ok(ExitCode::SUCCESS)
}
