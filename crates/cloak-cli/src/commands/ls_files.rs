//! `cloak ls-files IMAGE`: the flattened file list, with the sha256 of each regular file.

use std::process::ExitCode;

use anyhow::Context;
use cloak_image::flatten::{flatten, ContentMode, EntryKind};
use cloak_image::image::{resolve, Source};
use cloak_image::name::escape;
use cloak_image::{ImageRef, PlatformSpec};

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, SourceArgs};

/// Arguments of `cloak ls-files`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image: docker://HOST/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE.
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

fn type_char(kind: &EntryKind) -> char {
    match kind {
        EntryKind::Directory => 'd',
        EntryKind::File => '-',
        EntryKind::Symlink { .. } => 'l',
        EntryKind::Hardlink { .. } => 'h',
        EntryKind::CharDevice { .. } => 'c',
        EntryKind::BlockDevice { .. } => 'b',
        EntryKind::Fifo => 'p',
    }
}

/// Run `cloak ls-files`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reference: ImageRef = args.image.parse()?;
    let platform: PlatformSpec = args.platform.parse()?;
    let opts = args.source.options()?;
    let fs = runtime()?
        .block_on(async {
            let src = Source::open(&reference, &opts).await?;
            let image = resolve(&src, &platform).await?;
            flatten(&src, &image, ContentMode::HashOnly, None).await
        })
        .with_context(|| format!("while listing the files of {reference}"))?;
    for w in fs.warnings() {
        tracing::warn!("{w}");
    }
    match args.output {
        Format::Json => print_json(&fs.entries())?,
        Format::Text => {
            for e in fs.entries() {
                let sha = e.sha256.map(|d| d.hex()).unwrap_or_else(|| "-".repeat(64));
                let tail = match &e.kind {
                    EntryKind::Symlink { target } => format!(" -> {}", escape(target)),
                    EntryKind::Hardlink { target } => format!(" => {}", escape(target)),
                    EntryKind::CharDevice { major, minor }
                    | EntryKind::BlockDevice { major, minor } => {
                        format!(" ({major},{minor})")
                    }
                    _ => String::new(),
                };
                outln!(
                    "{}{:04o} {:>5}:{:<5} {:>10} {sha} {}{tail}",
                    type_char(&e.kind),
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    escape(&e.path)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
