//! `cloak run --target nitro IMAGE|EIF [-- args]`: boot a converted image under qemu, the
//! development stand-in for `nitro-cli run-enclave`, exiting with the application's status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cloak_convert::nitro::EIF_PATH;
use cloak_image::flatten::{flatten, ContentMode};
use cloak_image::image::{resolve, Source};
use cloak_image::{ImageRef, PlatformSpec};
use cloak_nitro::{eif, vm};

use crate::registry_args::{runtime, SourceArgs};

/// Arguments of `cloak run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only `nitro` runs locally.
    #[arg(long, value_enum)]
    pub target: crate::commands::convert::Target,
    /// An EIF file, or an image converted with --target nitro.
    pub image: String,
    /// vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpu_count: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u64,
    /// Use KVM (default: TCG, which works everywhere).
    #[arg(long)]
    pub kvm: bool,
    /// Stop the enclave after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Forward 127.0.0.1:HOST to the enclave's GUEST port (repeatable; local runs only).
    #[arg(long, value_name = "HOST:GUEST")]
    pub publish: Vec<String>,
    /// Kernel modules for --publish (virtio-net and its dependencies, NN-name.ko).
    #[arg(long, value_name = "DIR", env = "CLOAK_KERNEL_MODULES")]
    pub kernel_modules: Option<PathBuf>,
    /// Simulated attestation (images converted with --allow-simulated-attestation): the
    /// simulation signing key (P-256 PEM) the manager's --simulation-public-key matches. It
    /// reaches the launcher in a ramdisk added at boot, with the EIF's PCRs as the claimed
    /// measurements; the EIF and its PCRs do not change.
    #[arg(long, value_name = "FILE")]
    pub simulation_key: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Run `cloak run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.target != crate::commands::convert::Target::Nitro {
        anyhow::bail!("only --target nitro runs locally (under qemu); SGX images run with Gramine on SGX hardware");
    }
    // The simulation key is checked before anything is extracted or booted.
    let simulation_key = match &args.simulation_key {
        Some(key_path) => {
            let key = std::fs::read(key_path).with_context(|| {
                format!("while reading --simulation-key {}", key_path.display())
            })?;
            cloak_attest::simulated::SimulationSigningKey::from_bytes(&key).map_err(|e| {
                anyhow::anyhow!(
                    "--simulation-key {}: {e} (give the P-256 private key, PEM, whose public half the manager has as --simulation-public-key)",
                    key_path.display()
                )
            })?;
            Some(key)
        }
        None => None,
    };
    let work = tempfile::tempdir().context("while creating a temporary directory")?;
    let eif_path: PathBuf = if std::path::Path::new(&args.image).is_file() {
        PathBuf::from(&args.image)
    } else {
        let reference: ImageRef = args.image.parse()?;
        let opts = args.source.options()?;
        let dir = work.path().join("image");
        let fs = runtime()?
            .block_on(async {
                let src = Source::open(&reference, &opts).await?;
                let image = resolve(&src, &PlatformSpec::default()).await?;
                flatten(
                    &src,
                    &image,
                    ContentMode::SpoolUnder(dir, vec!["/cloak".into()]),
                    None,
                )
                .await
            })
            .with_context(|| format!("while reading {reference}"))?;
        let entry = fs.get(EIF_PATH).with_context(|| {
            format!("{reference} holds no {EIF_PATH}; convert it with --target nitro first")
        })?;
        fs.content_path(entry).context("the EIF was not kept")?
    };
    let (kernel, mut cmdline, mut ramdisks) = eif::extract(&eif_path, work.path())?;
    if let Some(key) = &simulation_key {
        let m = eif::read(&eif_path)?.measurements;
        let mut pcrs = serde_json::json!({"0": m.pcr0, "1": m.pcr1, "2": m.pcr2});
        if let Some(p8) = m.pcr8 {
            pcrs["8"] = p8.into();
        }
        let sim = work.path().join("simulation.cpio");
        vm::simulation_ramdisk(key, &serde_json::json!({ "pcrs": pcrs }).to_string(), &sim)?;
        ramdisks.push(sim);
    }
    let publish = args
        .publish
        .iter()
        .map(|p| {
            let (h, g) = p
                .split_once(':')
                .with_context(|| format!("--publish {p:?} is not HOST:GUEST"))?;
            Ok((
                h.parse::<u16>()
                    .with_context(|| format!("--publish {p:?}: bad host port"))?,
                g.parse::<u16>()
                    .with_context(|| format!("--publish {p:?}: bad guest port"))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !publish.is_empty() {
        let modules = args
            .kernel_modules
            .clone()
            .context("--publish needs --kernel-modules DIR (scripts/fetch-kernel.sh puts them in .work/kernel/modules)")?;
        let net = work.path().join("network.cpio");
        vm::network_ramdisk(&modules, &net)?;
        ramdisks.push(net);
        cmdline = vm::cmdline_with_network(&cmdline);
    }
    let initrd = work.path().join("initrd");
    vm::concat_ramdisks(&ramdisks, &initrd)?;
    let opts = vm::VmOptions {
        cpus: args.cpu_count,
        mem_mib: args.memory,
        kvm: args.kvm,
        timeout: Duration::from_secs(args.timeout),
        publish,
    };
    let status = vm::boot(&kernel, &cmdline, &initrd, &opts, &mut std::io::stdout())?;
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
}
