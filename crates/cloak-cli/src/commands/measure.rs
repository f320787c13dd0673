//! `cloak measure IMAGE`: recompute a converted SGX image's measurements from the file system a
//! container runtime will see, and check them against its SIGSTRUCTs, the expected values, its
//! entrypoint and its labels. Exit code 0 when everything passed, 1 when anything did not (each
//! reason named), also for a debug enclave unless `--allow-debug` is given.

use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::sgx::verify::{expected_hex, measure_image, Expected};
use cloak_image::image::Source;
use cloak_image::{ImageRef, PlatformSpec};

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, SourceArgs};

/// Arguments of `cloak measure`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A converted image: docker://…, oci:DIR[:TAG] or docker-archive:FILE.
    pub image: String,
    /// Platform to select from a multi-arch image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Fail unless the enclave the entrypoint starts (/cloak/app) has this MRENCLAVE (hex).
    #[arg(long, value_name = "HEX")]
    pub expect_mrenclave: Option<String>,
    /// Fail unless the EDMM variant (/cloak/app-edmm) has this MRENCLAVE (`mrenclave2` of the
    /// conversion report).
    #[arg(long, value_name = "HEX")]
    pub expect_mrenclave2: Option<String>,
    /// Fail unless both SIGSTRUCTs were signed by the key with this MRSIGNER (hex); without it,
    /// a signature by any key is accepted.
    #[arg(long, value_name = "HEX")]
    pub expect_mrsigner: Option<String>,
    /// Accept a debug enclave (still reported as a warning); without it a debug enclave fails.
    #[arg(long)]
    pub allow_debug: bool,
    /// Output format (json: every value, the problems, warnings and what was not checked).
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Run `cloak measure`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reference: ImageRef = args.image.parse()?;
    let platform: PlatformSpec = args.platform.parse()?;
    let hex = |v: &Option<String>, flag: &str| -> anyhow::Result<Option<String>> {
        Ok(v.as_deref().map(|s| expected_hex(s, flag)).transpose()?)
    };
    let expected = Expected {
        mrenclave: hex(&args.expect_mrenclave, "--expect-mrenclave")?,
        mrenclave2: hex(&args.expect_mrenclave2, "--expect-mrenclave2")?,
        mrsigner: hex(&args.expect_mrsigner, "--expect-mrsigner")?,
        allow_debug: args.allow_debug,
    };
    let opts = args.source.options()?;
    let report = runtime()?
        .block_on(async {
            let src = Source::open(&reference, &opts).await?;
            measure_image(&src, &platform, &expected).await
        })
        .with_context(|| format!("while measuring {reference}"))?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Text => {
            outln!("{} ({})", report.image, report.digest);
            for v in &report.variants {
                outln!(
                    "{}: MRENCLAVE {} MRSIGNER {} (enclave size {}, {} threads{}{})",
                    v.manifest,
                    if v.mrenclave.is_empty() {
                        "(not computed)"
                    } else {
                        v.mrenclave.as_str()
                    },
                    v.mrsigner,
                    v.enclave_size,
                    v.threads,
                    if v.edmm { ", EDMM" } else { "" },
                    if v.debug { ", DEBUG" } else { "" }
                );
                for p in &v.problems {
                    outln!("  FAILED: {p}");
                }
            }
            for p in &report.problems {
                outln!("FAILED: {p}");
            }
            for w in &report.warnings {
                outln!("WARNING: {w}");
            }
            for n in &report.not_checked {
                outln!("NOT CHECKED: {n}");
            }
            outln!(
                "{}",
                if report.ok {
                    "OK: the image matches its signatures and the expected values given"
                } else {
                    "FAILED"
                }
            );
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
