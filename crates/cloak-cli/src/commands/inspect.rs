//! `cloak inspect IMAGE`: manifest, config and layers.

use std::process::ExitCode;

use anyhow::Context;
use cloak_image::image::{resolve, Source};
use cloak_image::spec::{self, Compression};
use cloak_image::{Digest, ImageRef, PlatformSpec};
use serde::Serialize;

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, SourceArgs};

/// Arguments of `cloak inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image: docker://HOST/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE.
    pub image: String,
    /// Platform to select from a multi-arch image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Print the raw manifest instead of the summary.
    #[arg(long)]
    pub raw: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayerInfo {
    digest: Digest,
    size: u64,
    media_type: String,
    compression: Option<Compression>,
    encrypted: bool,
    /// For encrypted layers: scheme → number of recipients (no key material).
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<Encryption>,
    diff_id: Option<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Encryption {
    cipher: Option<String>,
    recipients: std::collections::BTreeMap<String, usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    reference: String,
    digest: Digest,
    media_type: String,
    index_digest: Option<Digest>,
    platform: String,
    config_digest: Digest,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
    labels: std::collections::BTreeMap<String, String>,
    layers: Vec<LayerInfo>,
    total_size: u64,
}

/// Run `cloak inspect`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reference: ImageRef = args.image.parse()?;
    let platform: PlatformSpec = args.platform.parse()?;
    let opts = args.source.options()?;
    let image = runtime()?
        .block_on(async {
            let src = Source::open(&reference, &opts).await?;
            resolve(&src, &platform).await
        })
        .with_context(|| format!("while inspecting {reference}"))?;
    if args.raw {
        outln!("{}", String::from_utf8_lossy(&image.raw_manifest.bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let rc = image.config.config.clone().unwrap_or_default();
    let diff_ids = &image.config.rootfs.diff_ids;
    let report = Report {
        reference: image.reference.clone(),
        digest: image.raw_manifest.digest,
        media_type: image.raw_manifest.media_type.clone(),
        index_digest: image.index.as_ref().map(|i| i.digest),
        platform: format!("{}/{}", image.config.os, image.config.architecture),
        config_digest: image.manifest.config.digest,
        entrypoint: rc.entrypoint.unwrap_or_default(),
        cmd: rc.cmd.unwrap_or_default(),
        env: rc.env.unwrap_or_default(),
        working_dir: rc.working_dir.unwrap_or_default(),
        user: rc.user.unwrap_or_default(),
        labels: rc.labels.unwrap_or_default(),
        layers: image
            .manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerInfo {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type.clone(),
                compression: spec::layer_compression(&l.media_type),
                encrypted: l.media_type.ends_with("+encrypted"),
                encryption: l.media_type.ends_with("+encrypted").then(|| Encryption {
                    cipher: cloak_crypt::spec::public_options(&l.annotations)
                        .and_then(|p| p.ok())
                        .map(|p| p.cipher),
                    recipients: cloak_crypt::keywrap::summary(&l.annotations)
                        .into_iter()
                        .collect(),
                }),
                diff_id: diff_ids.get(i).copied(),
            })
            .collect(),
        total_size: image.manifest.layers.iter().map(|l| l.size).sum::<u64>()
            + image.manifest.config.size,
    };
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Text => {
            outln!("Image:       {}", report.reference);
            outln!("Digest:      {}", report.digest);
            outln!("Media type:  {}", report.media_type);
            if let Some(i) = report.index_digest {
                outln!("Index:       {i}");
            }
            outln!("Platform:    {}", report.platform);
            outln!("Config:      {}", report.config_digest);
            outln!("Entrypoint:  {:?}", report.entrypoint);
            outln!("Cmd:         {:?}", report.cmd);
            outln!("WorkingDir:  {}", report.working_dir);
            outln!("User:        {}", report.user);
            for e in &report.env {
                outln!("Env:         {e}");
            }
            outln!(
                "Layers:      {} ({} bytes in all)",
                report.layers.len(),
                report.total_size
            );
            for l in &report.layers {
                let enc = match &l.encryption {
                    Some(e) if e.recipients.is_empty() => " (encrypted, no recipients)".into(),
                    Some(e) => format!(
                        " (encrypted for {})",
                        e.recipients
                            .iter()
                            .map(|(s, n)| format!("{s}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => String::new(),
                };
                outln!("  {}  {:>12}  {}{enc}", l.digest, l.size, l.media_type);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
