//! `cloak assemble`: an image from files alone (no base image, no Docker), reproducibly: one
//! layer written by `cloak_image::layer::write_layer` (sorted, fixed mtime, no gzip time), the
//! config and manifest as canonical JSON. It builds the manager's own container image
//! (scripts/build-manager-image.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use cloak_image::build::{self, Amendment};
use cloak_image::image::Dest;
use cloak_image::layer::{self, FileContent, LayerEntry, LayerEntryKind};
use cloak_image::spec::RuntimeConfig;
use cloak_image::ImageRef;

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, DestArgs};

/// Arguments of `cloak assemble`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Destination image: oci:DIR[:TAG] or docker://HOST/REPO:TAG.
    pub destination: String,
    /// A file: HOST_PATH:IMAGE_PATH[:MODE[:UID:GID]] (mode octal, default 0644, owner 0:0).
    #[arg(long = "file", value_name = "SPEC")]
    pub files: Vec<String>,
    /// A directory: IMAGE_PATH[:MODE[:UID:GID]] (default 0755, owner 0:0).
    #[arg(long = "dir", value_name = "SPEC")]
    pub dirs: Vec<String>,
    /// A symbolic link: IMAGE_PATH:TARGET.
    #[arg(long = "symlink", value_name = "SPEC")]
    pub symlinks: Vec<String>,
    /// The entrypoint, one argument per flag, in order.
    #[arg(long = "entrypoint", value_name = "ARG")]
    pub entrypoint: Vec<String>,
    /// The default command (arguments after the entrypoint), one per flag.
    #[arg(long = "cmd", value_name = "ARG")]
    pub cmd: Vec<String>,
    /// The user the image runs as (UID[:GID] or a name from the image's /etc/passwd).
    #[arg(long)]
    pub user: Option<String>,
    /// An environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// A label KEY=VALUE on the config (and as an annotation on the manifest; repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Architecture recorded in the config.
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Output format of the final report.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub dest: DestArgs,
}

fn octal(spec: &str, what: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(what, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("{spec:?}: mode {what:?} is not an octal mode such as 0644"))
}

fn owner(spec: &str, uid: &str, gid: &str) -> anyhow::Result<(u64, u64)> {
    let n = |v: &str| {
        v.parse::<u64>()
            .with_context(|| format!("{spec:?}: owner {v:?} is not a number (UID:GID)"))
    };
    Ok((n(uid)?, n(gid)?))
}

/// Parses `PATH[:MODE[:UID:GID]]` after the given leading fields into an entry.
fn entry(
    spec: &str,
    path: &str,
    rest: &[&str],
    kind: LayerEntryKind,
) -> anyhow::Result<LayerEntry> {
    let default_mode = match kind {
        LayerEntryKind::Dir => 0o755,
        _ => 0o644,
    };
    let (mode, (uid, gid)) = match rest {
        [] => (default_mode, (0, 0)),
        [m] => (octal(spec, m)?, (0, 0)),
        [m, u, g] => (octal(spec, m)?, owner(spec, u, g)?),
        _ => bail!("{spec:?}: expected PATH[:MODE[:UID:GID]] after the source"),
    };
    Ok(LayerEntry {
        path: path.to_string(),
        kind,
        mode,
        uid,
        gid,
    })
}

fn entries(args: &Args) -> anyhow::Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    for spec in &args.files {
        let parts: Vec<&str> = spec.split(':').collect();
        let [host, path, rest @ ..] = parts.as_slice() else {
            bail!("--file {spec:?}: expected HOST_PATH:IMAGE_PATH[:MODE[:UID:GID]]");
        };
        let host = PathBuf::from(host);
        let meta = std::fs::metadata(&host)
            .with_context(|| format!("--file {spec:?}: cannot read {}", host.display()))?;
        if !meta.is_file() {
            bail!("--file {spec:?}: {} is not a regular file", host.display());
        }
        out.push(entry(
            spec,
            path,
            rest,
            LayerEntryKind::File(FileContent::Path(host)),
        )?);
    }
    for spec in &args.dirs {
        let parts: Vec<&str> = spec.split(':').collect();
        let [path, rest @ ..] = parts.as_slice() else {
            bail!("--dir {spec:?}: expected IMAGE_PATH[:MODE[:UID:GID]]");
        };
        out.push(entry(spec, path, rest, LayerEntryKind::Dir)?);
    }
    for spec in &args.symlinks {
        let Some((path, target)) = spec.split_once(':') else {
            bail!("--symlink {spec:?}: expected IMAGE_PATH:TARGET");
        };
        out.push(LayerEntry {
            path: path.into(),
            kind: LayerEntryKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        });
    }
    if out.is_empty() {
        bail!("nothing to assemble: give at least one --file, --dir or --symlink");
    }
    Ok(out)
}

fn pairs(flag: &str, values: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
            _ => bail!("{flag} {v:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// Run `cloak assemble`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dst_ref: ImageRef = args.destination.parse()?;
    let dst_opts = args.dest.options(&None)?;
    let entries = entries(&args)?;
    let labels = pairs("--label", &args.labels)?;
    for e in &args.env {
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            bail!("--env {e:?}: expected NAME=VALUE");
        }
    }
    let staging = tempfile::tempdir().context("cannot create a staging directory")?;
    let written = layer::write_layer(staging.path(), &entries, layer::source_date_epoch())
        .context("while writing the layer")?;
    let runtime_config = RuntimeConfig {
        user: args.user.clone(),
        env: (!args.env.is_empty()).then(|| args.env.clone()),
        working_dir: args.workdir.clone(),
        ..Default::default()
    };
    let base = build::scratch(&args.destination, &args.arch, runtime_config);
    let amend = Amendment {
        layers: std::slice::from_ref(&written),
        history: vec!["cloak assemble".into()],
        entrypoint: (!args.entrypoint.is_empty()).then(|| args.entrypoint.clone()),
        cmd: Some(args.cmd.clone()),
        labels: labels.clone(),
        annotations: labels,
    };
    let pushed = runtime()?
        .block_on(async {
            let dst = Dest::open(&dst_ref, &dst_opts).await?;
            build::push_scratch(&base, &amend, &dst).await
        })
        .with_context(|| format!("while writing {dst_ref}"))?;
    match args.output {
        Format::Json => print_json(&pushed)?,
        Format::Text => outln!(
            "Assembled {}@{} ({} bytes)",
            pushed.reference,
            pushed.digest,
            pushed.size
        ),
    }
    Ok(ExitCode::SUCCESS)
}
