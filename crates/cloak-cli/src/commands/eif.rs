//! `cloak eif build` and `cloak describe-eif`: EIFs from given parts, and what an EIF holds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_nitro::eif;

use crate::output::{print_json, Format};

/// Arguments of `cloak eif`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

/// `cloak eif` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Build an EIF from a kernel, a command line and ramdisks taken as given, in order.
    Build {
        /// Kernel: an x86 bzImage, or an arm64 `Image` for Graviton parents (the EIF header is
        /// then flagged ARM64; `cloak run` boots x86 only).
        #[arg(long)]
        kernel: PathBuf,
        /// Kernel command line.
        #[arg(long)]
        cmdline: String,
        /// Ramdisk (repeat; the first is the bootstrap ramdisk).
        #[arg(long, required = true)]
        ramdisk: Vec<PathBuf>,
        /// Image name for the metadata.
        #[arg(long, default_value = "cloak")]
        image_name: String,
        /// Image version for the metadata.
        #[arg(long, default_value = "0")]
        image_version: String,
        /// Where to write the EIF.
        #[arg(long)]
        output: PathBuf,
        /// P-384 private key (PEM) to sign with; needs --signing-cert.
        #[arg(long, requires = "signing_cert")]
        signing_key: Option<PathBuf>,
        /// Certificate (PEM) of the signing key.
        #[arg(long, requires = "signing_key")]
        signing_cert: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// Arguments of `cloak describe-eif`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The EIF.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// Run `cloak eif`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Build {
        signing_key,
        signing_cert,
        kernel,
        cmdline,
        ramdisk,
        image_name,
        image_version,
        output,
        format,
    } = args.command;
    let signer = match (&signing_key, &signing_cert) {
        (Some(k), Some(c)) => Some(cloak_nitro::sign::EifSigner::from_files(k, c)?),
        _ => None,
    };
    let m = eif::write(
        eif::EifSpec {
            kernel,
            cmdline,
            ramdisks: ramdisk.into_iter().map(eif::Part::File).collect(),
            signer: signer.as_ref(),
            size_check: None,
            metadata: eif::identity(
                &image_name,
                &image_version,
                "",
                "1970-01-01T00:00:00Z",
                serde_json::Value::Null,
            ),
        },
        &output,
    )
    .with_context(|| format!("while building {}", output.display()))?;
    match format {
        Format::Json => print_json(&serde_json::json!({ "Measurements": m }))?,
        Format::Text => outln!("PCR0: {}\nPCR1: {}\nPCR2: {}", m.pcr0, m.pcr1, m.pcr2),
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `cloak describe-eif`.
pub fn describe(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let info =
        eif::read(&args.file).with_context(|| format!("while reading {}", args.file.display()))?;
    match args.output {
        Format::Json => print_json(&info)?,
        Format::Text => {
            outln!("EIF version: {}", info.version);
            for s in &info.sections {
                outln!("  {:?} at {} ({} bytes)", s.kind, s.offset, s.size);
            }
            outln!("CRC check: {}", if info.crc_ok { "ok" } else { "FAILED" });
            outln!(
                "PCR0: {}\nPCR1: {}\nPCR2: {}",
                info.measurements.pcr0,
                info.measurements.pcr1,
                info.measurements.pcr2
            );
            match &info.signature {
                Some(sig) => {
                    outln!("PCR8: {}", sig.pcr8);
                    outln!(
                        "Signature: {}",
                        if sig.valid {
                            "valid".to_string()
                        } else {
                            format!("INVALID ({})", sig.problem.clone().unwrap_or_default())
                        }
                    );
                }
                None => outln!("Signed: no"),
            }
            outln!("Cmdline: {}", info.cmdline);
        }
    }
    Ok(if info.crc_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
