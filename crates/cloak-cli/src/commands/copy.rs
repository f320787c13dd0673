//! `cloak copy SRC DST`: like `skopeo copy`, daemonless, verified, manifest last.

use std::process::ExitCode;

use anyhow::Context;
use cloak_image::copy::{copy, BlobAction, CopyOptions};
use cloak_image::image::{Dest, Source};
use cloak_image::{ImageRef, PlatformSpec};

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, DestArgs, SourceArgs};

/// Arguments of `cloak copy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source image: docker://HOST/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE.
    pub source: String,
    /// Destination image: docker://HOST/REPO:TAG or oci:DIR[:TAG].
    pub destination: String,
    /// Platform to select from a multi-arch source.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Copy every platform of a multi-arch source, and the index itself.
    #[arg(long, short)]
    pub all: bool,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output format of the final report.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub dest: DestArgs,
}

/// Run `cloak copy`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src_ref: ImageRef = args.source.parse()?;
    let dst_ref: ImageRef = args.destination.parse()?;
    let src_opts = args.src.options()?;
    let dst_opts = args.dest.options(&args.src.authfile)?;
    let opts = CopyOptions {
        platform: args.platform.parse::<PlatformSpec>()?,
        all: args.all,
        jobs: args.jobs,
        progress: crate::progress::for_stderr(args.quiet),
    };
    let report = runtime()?
        .block_on(async {
            let src = Source::open(&src_ref, &src_opts).await?;
            let dst = Dest::open(&dst_ref, &dst_opts).await?;
            copy(&src, &dst, &opts).await
        })
        .with_context(|| format!("while copying {src_ref} to {dst_ref}"))?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Text => {
            let count = |a| report.blobs.iter().filter(|b| b.action == a).count();
            outln!(
                "Copied {} to {}: {} ({} blobs copied, {} mounted, {} already present)",
                report.source,
                report.destination,
                report.digest,
                count(BlobAction::Copied),
                count(BlobAction::Mounted),
                count(BlobAction::Skipped)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
