//! `cloak decrypt SRC DST --key KEY.pem`: an ocicrypt-encrypted image back to plain layers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::decrypt::{decrypt, DecryptRequest};
use cloak_image::{ImageRef, PlatformSpec};

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, DestArgs, SourceArgs};

/// Arguments of `cloak decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encrypted image: docker://…, oci:DIR[:TAG] or docker-archive:FILE.
    pub source: String,
    /// Where to write the decrypted image.
    pub destination: String,
    /// RSA private key (PEM, PKCS#1 or PKCS#8) for JWE recipients (repeatable; each is tried).
    #[arg(long, required = true, value_name = "KEY.pem")]
    pub key: Vec<PathBuf>,
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

/// Run `cloak decrypt`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input: ImageRef = args.source.parse()?;
    let output: ImageRef = args.destination.parse()?;
    let req = DecryptRequest {
        input: input.clone(),
        output: output.clone(),
        source_options: args.src.options()?,
        dest_options: args.dest.options(&args.src.authfile)?,
        keys: args.key.clone(),
        platform: args.platform.parse::<PlatformSpec>()?,
        progress: crate::progress::for_stderr(args.quiet),
    };
    let report = runtime()?
        .block_on(decrypt(req))
        .with_context(|| format!("while decrypting {input} into {output}"))?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Text => println!(
            "Decrypted {} layer(s) into {} ({})",
            report.decrypted_layers.len(),
            report.destination,
            report.digest
        ),
    }
    Ok(ExitCode::SUCCESS)
}
