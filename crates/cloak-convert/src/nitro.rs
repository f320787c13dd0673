//! The Nitro Enclaves target: ramdisks straight from the image layers (no Docker, no linuxkit),
//! an EIF with its PCRs, and optionally an OCI image carrying the EIF.
//!
//! Ramdisk 0 (bootstrap): `/dev`, `/dev/console`, `/init` (cloak's static launcher, which runs
//! as PID 1), optionally `/nsm.ko`; newc cpio sorted by path. Ramdisk 1 (application): the
//! flattened image under `/rootfs/…` with `/rootfs/cloak/run.json`, written while the layers
//! download ([`cloak_nitro::appdisk`]: file contents first, in layer order, then the sorted
//! tree that links them into place). Both: mtime normalised, owners and modes from the image,
//! inodes numbered deterministically, hardlinks kept, xattrs dropped (with a warning).

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cloak_image::build::{self, Amendment};
use cloak_image::copy::Progress;
use cloak_image::flatten::{flatten_streaming, ContentSink, EntryKind, FlatFs, ImageLimit};
use cloak_image::image::{resolve, Dest, Image, RawManifest, Source};
use cloak_image::layer::{source_date_epoch, write_layer, FileContent, LayerEntry};
use cloak_image::name::escape;
use cloak_image::spec::{self, ImageConfig, ImageManifest};
use cloak_image::{Digest, ImageRef, PlatformSpec, RegistryOptions};
use cloak_launcher::RunConfig;
use cloak_nitro::appdisk::{self, AppRamdisk, Body, TreeEntry};
use cloak_nitro::cpio::{Entry as CpioEntry, Kind, Writer};
use cloak_nitro::eif::{self, EifSpec};
use serde::Serialize;

use crate::app::{app_spec, AppOverrides};
use crate::error::{Error, Result};
use crate::options::NitroOptions;

pub use cloak_nitro::sign::{pcr8, EifSigner};

/// nitro-cli's default x86_64 kernel command line.
pub const DEFAULT_CMDLINE: &str =
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";
/// Where the EIF sits in the output image.
pub const EIF_PATH: &str = "/cloak/enclave.eif";
/// Annotation prefix.
pub const ANNOTATION_PREFIX: &str = "io.cloak.nitro.";

/// One Nitro conversion.
pub struct NitroRequest {
    /// The image to convert.
    pub input: ImageRef,
    /// Where to push an OCI image holding the EIF (optional).
    pub output: Option<ImageRef>,
    /// Where to write the EIF file (optional; one of the two outputs is required).
    pub eif: Option<PathBuf>,
    /// Registry settings for the input.
    pub source_options: RegistryOptions,
    /// Registry settings for the output.
    pub dest_options: RegistryOptions,
    /// The static launcher (becomes `/init`).
    pub launcher: PathBuf,
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The kernel config, for the metadata's KernelVersion (optional).
    pub kernel_config: Option<PathBuf>,
    /// Kernel command line (default: nitro-cli's).
    pub cmdline: Option<String>,
    /// `nsm.ko` to ship in the bootstrap ramdisk (optional).
    pub nsm_ko: Option<PathBuf>,
    /// P-384 key and certificate to sign the EIF with (adds PCR8).
    pub signing: Option<(PathBuf, PathBuf)>,
    /// A signer held by the caller (the manager's sealed per-app key); wins over `signing`.
    pub signer: Option<EifSigner>,
    /// CCM options.
    pub options: NitroOptions,
    /// Platform selected from a multi-arch input.
    pub platform: PlatformSpec,
    /// The most bytes the input's layers may take, compressed and uncompressed (bounds the
    /// EIF written to disk); `None`: unbounded.
    pub limit: Option<ImageLimit>,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// Seed-shaped `nitro_enclave` attributes.
#[derive(Debug, Clone, Serialize)]
pub struct NitroAttributes {
    /// Always `Sha384`.
    pub hash_algorithm: String,
    /// PCR0.
    pub pcr0: String,
    /// PCR1.
    pub pcr1: String,
    /// PCR2.
    pub pcr2: String,
    /// PCR8 (signed EIFs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<String>,
}

/// The report, shaped like the CCM Build response.
#[derive(Debug, Clone, Serialize)]
pub struct NitroReport {
    /// Image facts.
    pub docker_info: serde_json::Value,
    /// Enclave facts (empty measurements for SGX fields).
    pub enclave_info: serde_json::Value,
    /// `{"nitro_enclave": {...}}`.
    pub attributes: BTreeMap<String, NitroAttributes>,
    /// Enclave memory in MiB.
    pub mem_size: u64,
    /// vCPUs.
    pub cpu_count: u32,
    /// Entrypoint and related settings used.
    pub advanced_settings: serde_json::Value,
    /// EIF file written, if any.
    pub eif: Option<String>,
    /// EIF size in bytes.
    pub eif_size: u64,
    /// Output image, if any.
    pub output_image: Option<String>,
    /// Things dropped or adjusted on the way (xattrs…).
    pub warnings: Vec<String>,
    /// The certificate (PEM) of a signed EIF: PCR8 = SHA-384(48 zero bytes ‖ SHA-384(its DER)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<String>,
    /// Which SHA-384 engine computed PCR0 and PCR2 on this CPU, and why (benchmarks and bug
    /// reports need it: the two engines differ in speed, never in result).
    pub pcr_engine: String,
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Options(format!("{what}: {e}"))
}

/// Write the bootstrap ramdisk.
fn bootstrap(path: &PathBuf, launcher: &PathBuf, nsm: Option<&PathBuf>, mtime: u32) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| io_err("creating the bootstrap ramdisk", e))?;
    let mut w = Writer::new(BufWriter::new(f));
    let meta = |name: &str, kind: Kind, mode: u32| CpioEntry {
        name: name.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        link_group: None,
    };
    let err = |e| io_err("writing the bootstrap ramdisk", e);
    w.entry(&meta("dev", Kind::Dir, 0o755), 1, true, None)
        .map_err(err)?;
    w.entry(&meta("dev/console", Kind::Char(5, 1), 0o600), 1, true, None)
        .map_err(err)?;
    let mut add = |name: &str, src: &PathBuf| -> Result<()> {
        let mut f = std::fs::File::open(src)
            .map_err(|e| io_err(&format!("reading {}", src.display()), e))?;
        let size = f.metadata().map_err(|e| io_err("stat", e))?.len();
        w.entry(
            &meta(name, Kind::File { size }, 0o755),
            1,
            true,
            Some(&mut f),
        )
        .map_err(err)
    };
    add("init", launcher)?;
    if let Some(n) = nsm {
        add("nsm.ko", n)?;
    }
    w.finish().map_err(err)?;
    Ok(())
}

/// The sorted tree of the application ramdisk: the flattened image under `rootfs/`, the
/// directories the init mounts on, and the run configuration.
fn tree<'a>(
    fs: &'a FlatFs,
    run_json: &'a [u8],
    mtime: u32,
    warnings: &mut Vec<String>,
) -> Vec<TreeEntry<'a>> {
    let meta = |name: String, kind: Kind, mode: u32, uid: u32, gid: u32| CpioEntry {
        name,
        kind,
        mode,
        uid,
        gid,
        mtime,
        link_group: None,
    };
    let mut items: BTreeMap<String, TreeEntry<'a>> = BTreeMap::new();
    let dir = |name: &str| TreeEntry {
        meta: meta(name.to_string(), Kind::Dir, 0o755, 0, 0),
        body: Body::None,
    };
    items.insert("rootfs".into(), dir("rootfs"));
    for e in fs.entries() {
        if !e.xattrs.is_empty() {
            warnings.push(format!(
                "{}: extended attributes dropped ({})",
                escape(&e.path),
                e.xattrs
                    .keys()
                    .map(|k| escape(k).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let name = format!("rootfs{}", e.path);
        let uid = u32::try_from(e.uid).unwrap_or(u32::MAX);
        let gid = u32::try_from(e.gid).unwrap_or(u32::MAX);
        let (kind, body) = match &e.kind {
            EntryKind::Directory => (Kind::Dir, Body::None),
            EntryKind::Symlink { target } => (Kind::Symlink(target.clone()), Body::None),
            EntryKind::CharDevice { major, minor } => (Kind::Char(*major, *minor), Body::None),
            EntryKind::BlockDevice { major, minor } => (Kind::Block(*major, *minor), Body::None),
            EntryKind::Fifo => (Kind::Fifo, Body::None),
            EntryKind::File | EntryKind::Hardlink { .. } => (
                Kind::File { size: e.size },
                Body::Content {
                    id: e.content_id().expect("regular files have content"),
                    size: e.size,
                },
            ),
        };
        let entry = TreeEntry {
            meta: meta(name.clone(), kind, e.mode, uid, gid),
            body,
        };
        items.insert(name, entry);
    }
    for d in ["dev", "proc", "run", "sys", "tmp", "cloak"] {
        let name = format!("rootfs/{d}");
        items.entry(name.clone()).or_insert_with(|| dir(&name));
    }
    items.insert(
        "rootfs/cloak/run.json".into(),
        TreeEntry {
            meta: meta(
                "rootfs/cloak/run.json".into(),
                Kind::File {
                    size: run_json.len() as u64,
                },
                0o644,
                0,
                0,
            ),
            body: Body::Inline(run_json),
        },
    );
    items.into_values().collect()
}

/// Hands each file's content to the application ramdisk as the layers are read.
struct StreamSink(AppRamdisk);

impl ContentSink for StreamSink {
    fn content(
        &mut self,
        id: u64,
        path: &str,
        size: u64,
        data: &mut dyn std::io::Read,
    ) -> std::io::Result<()> {
        self.0.content(id, path, size, data)
    }
}

/// The memory an enclave needs, in MiB, and why: 4 × the EIF's size (the ramdisks, their
/// unpacked copy and room to run), and one tmpfs inode per ramdisk entry: the initramfs is a
/// tmpfs with one inode slot per 8 KiB of memory, less what the kernel keeps (a quarter more).
fn needed_mib(eif_size: u64, entries: u64) -> (u64, String) {
    let by_size = (4 * eif_size).div_ceil(1 << 20);
    let by_entries = (entries * 10 * 1024).div_ceil(1 << 20);
    if by_entries > by_size {
        (
            by_entries,
            format!("10 KiB for each of its {entries} files and directories"),
        )
    } else {
        (
            by_size,
            format!("4 × the EIF size ({} MiB)", eif_size >> 20),
        )
    }
}

fn kernel_version(config: Option<&PathBuf>) -> String {
    config
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| {
            t.lines()
                .nth(2)
                .map(|l| l.trim_start_matches("# ").to_string())
        })
        .unwrap_or_default()
}

/// The options' checks that need no image (also run by the manager before it queues a job).
pub fn check_options(o: &NitroOptions) -> Result<()> {
    if o.nitro_enclaves_options.cpu_count == Some(0) {
        return Err(Error::Options("cpu_count must be at least 1".into()));
    }
    let co = &o.converter_options;
    for (name, list) in [
        ("env_vars", &co.env_vars),
        ("mutable_env_vars", &co.mutable_env_vars),
    ] {
        for e in list.iter().flatten() {
            if crate::options::split_env(e).is_none() {
                return Err(Error::Options(format!("{name}: {e:?} is not NAME=value")));
            }
        }
    }
    Ok(())
}

/// Convert an image into an EIF (and optionally an OCI image holding it).
pub async fn convert(mut req: NitroRequest) -> Result<NitroReport> {
    crate::stage(req.progress.as_ref(), "resolve")?;
    check_options(&req.options)?;
    if req.output.is_none() && req.eif.is_none() {
        return Err(Error::Options(
            "give an output image, --eif FILE, or both".into(),
        ));
    }
    cloak_nitro::eif::check_bzimage(&req.kernel)?;
    let signer = match (req.signer.take(), &req.signing) {
        (Some(s), _) => Some(s),
        (None, Some((key, cert))) => Some(cloak_nitro::sign::EifSigner::from_files(key, cert)?),
        (None, None) => None,
    };
    let signing_certificate = signer
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.cert_pem()).into_owned());
    crate::launcher::check(&req.launcher)?;
    let co = &req.options.converter_options;
    let no = &req.options.nitro_enclaves_options;
    let cpu_count = no.cpu_count.unwrap_or(2);
    if cpu_count == 0 {
        return Err(Error::Options("cpu_count must be at least 1".into()));
    }
    unsupported_options(&req.options)?;
    let manager = crate::manager::launcher_config(
        co.manager.as_ref(),
        co.certificates.as_deref(),
        co.add_ccm_ca_certificates.unwrap_or(false),
    )?;
    let src = Source::open(&req.input, &req.source_options).await?;
    let image = resolve(&src, &req.platform).await?;
    cloak_image::flatten::check_size(&image, req.limit.as_ref())?;
    if image.config.architecture != "amd64" || image.config.os != "linux" {
        return Err(Error::Options(format!(
            "{} is a {}/{} image; Nitro Enclaves on x86_64 need linux/amd64 (pick another platform with --platform or rebuild the image)",
            image.reference, image.config.os, image.config.architecture
        )));
    }
    let app = app_spec(
        &image.reference,
        &image.config,
        &AppOverrides {
            entrypoint: co.entrypoint.clone(),
            args: co.entrypoint_args.clone(),
            fixed_env: co.env_vars.clone().unwrap_or_default(),
            mutable_env: co.mutable_env_vars.clone().unwrap_or_default(),
            allow_cmdline_args: co.allow_cmdline_args.unwrap_or(false),
        },
    )?;
    let run = RunConfig {
        argv: app.argv.clone(),
        env: app.env.clone(),
        mutable_env: app.mutable_env.clone(),
        workdir: app.workdir.clone(),
        user: app.user.clone(),
        allow_cmdline_args: app.allow_cmdline_args,
        manager,
    };
    let run_json = serde_json::to_vec_pretty(&run).expect("RunConfig serialises");
    let work = tempfile::tempdir().map_err(|e| io_err("creating a temporary directory", e))?;
    let mtime = u32::try_from(source_date_epoch()).unwrap_or(0);
    let boot = work.path().join("bootstrap.cpio");
    bootstrap(&boot, &req.launcher, req.nsm_ko.as_ref(), mtime)?;
    let cmdline = req
        .cmdline
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.into());
    let created = image
        .config
        .extra
        .get("created")
        .and_then(|v| v.as_str())
        .unwrap_or("1970-01-01T00:00:00Z")
        .to_string();
    let metadata = eif::identity(
        &image.reference,
        &image.raw_manifest.digest.to_string(),
        &kernel_version(req.kernel_config.as_ref()),
        &created,
        serde_json::json!({ "Id": image.manifest.config.digest.to_string(), "Config": image.config.config }),
    );
    let eif_path = req
        .eif
        .clone()
        .unwrap_or_else(|| work.path().join("enclave.eif"));
    let started = std::time::Instant::now();
    // The EIF is written while the layers download: file contents stream into the
    // application ramdisk (see cloak_nitro::appdisk) and on into the EIF writer's thread,
    // which hashes them (PCR0, PCR2) and writes them; the sorted tree follows at the end.
    let (chunks, stream) = appdisk::channel(8);
    let ramdisk = AppRamdisk::new(chunks, mtime)
        .map_err(|e| io_err("starting the application ramdisk", e))?;
    let mem_size = no.mem_size;
    // Known once the layers are read, before the writer's size check runs (the stream ends
    // only after the tree).
    let entries = Arc::new(AtomicU64::new(0));
    let entries_seen = entries.clone();
    let writer = {
        let (kernel, eif_path, boot) = (req.kernel.clone(), eif_path.clone(), boot.clone());
        tokio::task::spawn_blocking(move || {
            let check = |eif_size: u64| -> cloak_nitro::Result<()> {
                let (needed, why) = needed_mib(eif_size, entries_seen.load(Ordering::Relaxed));
                match mem_size {
                    Some(m) if m < needed => Err(cloak_nitro::Error::Input(format!(
                        "mem_size {m} MiB is below {why}: the enclave could not unpack its ramdisks; use at least {needed}"
                    ))),
                    _ => Ok(()),
                }
            };
            eif::write(
                EifSpec {
                    kernel,
                    cmdline,
                    ramdisks: vec![eif::Part::File(boot), stream],
                    metadata,
                    signer: signer.as_ref(),
                    size_check: Some(&check),
                },
                &eif_path,
            )
        })
    };
    // On any failure below the ramdisk is dropped unfinished: the writer then stops with an
    // error and nothing appears at the EIF path. flatten, amend (the ramdisks) and measure
    // (PCRs while the EIF streams) run together here.
    crate::stage(req.progress.as_ref(), "flatten")?;
    let flat = flatten_streaming(
        &src,
        &image,
        Box::new(StreamSink(ramdisk)),
        req.limit.as_ref(),
    )
    .await;
    let written = match flat {
        Ok((fs, sink)) => {
            let any: Box<dyn std::any::Any> = sink;
            let StreamSink(ramdisk) = *any
                .downcast::<StreamSink>()
                .expect("the sink given to flatten_streaming");
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), "layers read");
            if let Some(e) = fs
                .entries()
                .iter()
                .find(|e| e.path == "/cloak" || e.path.starts_with("/cloak/"))
            {
                drop(ramdisk);
                let _ = writer.await;
                return Err(Error::Options(format!(
                    "{} already contains {}; cloak needs /cloak for itself",
                    image.reference,
                    escape(&e.path)
                )));
            }
            let mut warnings: Vec<String> = fs.warnings().to_vec();
            // Contents that later layers replaced or deleted travel in the EIF too (they
            // were written before anyone knew); the init frees them at boot. They may be
            // what a build meant to remove (a key, a token): say which.
            let live: std::collections::HashSet<u64> =
                fs.entries().iter().filter_map(|e| e.content_id()).collect();
            let mut dead: Vec<u64> = ramdisk.stored().filter(|id| !live.contains(id)).collect();
            if !dead.is_empty() {
                dead.sort_unstable();
                let live_bytes: u64 = fs
                    .entries()
                    .iter()
                    .filter(|e| e.kind == EntryKind::File)
                    .map(|e| e.size)
                    .sum();
                let bytes = ramdisk.content_bytes().saturating_sub(live_bytes);
                let names: Vec<String> = dead
                    .iter()
                    .filter_map(|id| ramdisk.path_of(*id))
                    .map(|p| escape(p).into_owned())
                    .take(5)
                    .collect();
                warnings.push(format!(
                    "{} file version(s), {} KiB, that later layers overwrite or delete are in the EIF and measured in PCR0/PCR2 ({}{}); anyone with the EIF can read them (the init frees them at boot): squash the image's layers to drop them",
                    dead.len(),
                    bytes.div_ceil(1024),
                    names.join(", "),
                    if dead.len() > names.len() { ", …" } else { "" }
                ));
            }
            entries.store(fs.entries().len() as u64, Ordering::Relaxed);
            crate::stage(req.progress.as_ref(), "measure")?;
            let entries = tree(&fs, &run_json, mtime, &mut warnings);
            let finished = ramdisk
                .finish(entries)
                .map_err(|e| io_err("writing the application ramdisk", e));
            let m = writer
                .await
                .map_err(|e| Error::Options(format!("the EIF writer failed: {e}")))?;
            // Report the cause: the writer's error when it stopped first, the ramdisk's
            // otherwise (the writer then only saw the ramdisk abandoned).
            match (finished, m) {
                (Ok(_), Ok(m)) => (m, warnings),
                (Err(fe), Err(we)) if fe.to_string().contains("the EIF writer stopped") => {
                    return Err(we.into())
                }
                (Err(fe), _) => return Err(fe),
                (Ok(_), Err(we)) => return Err(we.into()),
            }
        }
        Err(e) => {
            let w = writer.await;
            if e.to_string().contains("the EIF writer stopped") {
                if let Ok(Err(we)) = w {
                    return Err(we.into());
                }
            }
            return Err(e.into());
        }
    };
    let (m, warnings) = written;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "EIF written");
    let real_size = std::fs::metadata(&eif_path)
        .map(|m| m.len())
        .map_err(|e| io_err("reading the EIF back", e))?;
    let mem_size = mem_size.unwrap_or_else(|| {
        let (needed, _) = needed_mib(real_size, entries.load(Ordering::Relaxed));
        needed.max(512).div_ceil(64) * 64
    });
    let mut output_image = None;
    crate::stage(req.progress.as_ref(), "package")?;
    if let Some(out) = &req.output {
        let layer = write_layer(
            work.path(),
            &[
                LayerEntry::dir("/cloak", 0o755),
                LayerEntry::file(EIF_PATH, 0o644, FileContent::Path(eif_path.clone())),
            ],
            u64::from(mtime),
        )?;
        let mut annotations = BTreeMap::new();
        annotations.insert(format!("{ANNOTATION_PREFIX}pcr0"), m.pcr0.clone());
        annotations.insert(format!("{ANNOTATION_PREFIX}pcr1"), m.pcr1.clone());
        annotations.insert(format!("{ANNOTATION_PREFIX}pcr2"), m.pcr2.clone());
        if let Some(p8) = &m.pcr8 {
            annotations.insert(format!("{ANNOTATION_PREFIX}pcr8"), p8.clone());
        }
        let base = empty_image(&image);
        let amend = Amendment {
            layers: std::slice::from_ref(&layer),
            history: vec![format!(
                "cloak convert --target nitro from {}",
                image.raw_manifest.digest
            )],
            entrypoint: None,
            cmd: None,
            labels: annotations.clone(),
            annotations,
        };
        let dst = Dest::open(out, &req.dest_options).await?;
        let pushed = build::push(&src, &base, &amend, &dst, req.progress.clone()).await?;
        output_image = Some(format!("{}@{}", pushed.reference, pushed.digest));
    }
    let attrs = NitroAttributes {
        hash_algorithm: "Sha384".into(),
        pcr0: m.pcr0,
        pcr1: m.pcr1,
        pcr2: m.pcr2,
        pcr8: m.pcr8,
    };
    let layers_size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    Ok(NitroReport {
        docker_info: serde_json::json!({
            "docker_image_name": image.reference,
            "docker_image_sha": image.raw_manifest.digest.to_string(),
            "docker_image_size": layers_size >> 20,
            "exposed_ports": crate::app::exposed_ports(&image.config),
        }),
        enclave_info: serde_json::json!({}),
        attributes: BTreeMap::from([("nitro_enclave".to_string(), attrs)]),
        mem_size,
        cpu_count,
        advanced_settings: serde_json::json!({
            "entrypoint": app.argv,
            "env_vars": app.env,
            "mutable_env_vars": app.mutable_env,
            "workdir": app.workdir,
            "user": app.user,
            "allow_cmdline_args": app.allow_cmdline_args,
        }),
        eif: req.eif.as_ref().map(|p| p.display().to_string()),
        eif_size: real_size,
        output_image,
        warnings,
        signing_certificate,
        pcr_engine: {
            let c = cloak_nitro::sha384x2::engine();
            match c.engine {
                cloak_nitro::sha384x2::Engine::Lanes => {
                    format!("two-lane SHA-384 on AVX-512VL, one thread ({})", c.reason)
                }
                cloak_nitro::sha384x2::Engine::Threads => {
                    format!("ring's SHA-384 on two threads ({})", c.reason)
                }
            }
        },
    })
}

/// Refuse the seed options that nothing in a Nitro conversion implements: accepting them would
/// let a user believe they took effect. `false` (the default) is accepted, so CCM bodies that
/// spell out every field still convert.
fn unsupported_options(o: &NitroOptions) -> Result<()> {
    let co = &o.converter_options;
    let no = &o.nitro_enclaves_options;
    let mut refused = Vec::new();
    if co.debug == Some(true) {
        refused.push("debug (a Nitro enclave's debug mode is chosen when it starts: nitro-cli run-enclave --debug-mode; `cloak run` always shows the console)");
    }
    if co.java_mode.is_some() {
        refused.push("java_mode (no Java tuning exists for Nitro yet)");
    }
    if no.enable_overlay_filesystem_persistence == Some(true) {
        refused.push("enable_overlay_filesystem_persistence (the enclave's root is a ramdisk; nothing persists)");
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Options(format!(
        "--target nitro does not implement {}; remove {} (flag or --options field)",
        refused.join(", "),
        if refused.len() == 1 { "it" } else { "them" }
    )))
}

/// A base with no layers, for an output image that holds only the EIF.
fn empty_image(input: &Image) -> Image {
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        config: None,
        rootfs: spec::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        extra: BTreeMap::new(),
    };
    let raw_config = spec::to_canonical_json(&config);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(spec::OCI_MANIFEST.into()),
        config: spec::Descriptor::new(
            spec::OCI_CONFIG,
            Digest::of(&raw_config),
            raw_config.len() as u64,
        ),
        layers: Vec::new(),
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    Image {
        reference: input.reference.clone(),
        index: None,
        raw_manifest: RawManifest::new(spec::to_canonical_json(&manifest), spec::OCI_MANIFEST),
        manifest,
        raw_config: raw_config.into(),
        config,
    }
}
