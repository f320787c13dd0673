//! `cloak measure IMAGE`: recompute a converted image's measurements and check its SIGSTRUCTs.
//! Exit code 1 when anything does not match.

use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::sgx::verify::measure_image;
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
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Run `cloak measure`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reference: ImageRef = args.image.parse()?;
    let platform: PlatformSpec = args.platform.parse()?;
    let opts = args.source.options()?;
    let report = runtime()?
        .block_on(async {
            let src = Source::open(&reference, &opts).await?;
            measure_image(&src, &platform).await
        })
        .with_context(|| format!("while measuring {reference}"))?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Text => {
            for v in &report.variants {
                outln!(
                    "{}: MRENCLAVE {} MRSIGNER {}",
                    v.manifest,
                    v.mrenclave,
                    v.mrsigner
                );
                for p in &v.problems {
                    outln!("  MISMATCH: {p}");
                }
            }
            outln!(
                "{}",
                if report.ok {
                    "OK: the image matches its signatures"
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
