//! The SGX target: the input image's layers untouched, plus a Gramine runtime layer and a layer
//! with cloak's manifests, SIGSTRUCTs and run configuration. Stages: resolve → flatten → amend →
//! measure → package. Everything that can be refused is checked before anything is pushed.

pub mod files;
pub mod runtime;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cloak_image::build::{self, Amendment};
use cloak_image::copy::Progress;
use cloak_image::flatten::{flatten, ContentMode, ImageLimit};
use cloak_image::image::{resolve, Dest, Source};
use cloak_image::layer::{source_date_epoch, write_layer, FileContent, LayerEntry};
use cloak_image::{Digest, ImageRef, PlatformSpec, RegistryOptions};
use cloak_launcher::RunConfig;
use cloak_sgx::manifest::{ManifestSpec, Mount};
use serde::Serialize;

use crate::app::{app_spec, AppOverrides};
use crate::error::{Error, Result};
use crate::options::{split_env, SgxOptions};
use files::{trusted_files, DirClasses};

/// Path of the launcher in the output image (`libos.entrypoint`).
pub const LAUNCHER_PATH: &str = "/cloak/bin/cloak-launcher";
/// Manifest prefix given to the loader for SGX1 (`/cloak/app.manifest.sgx`, `/cloak/app.sig`).
pub const APP: &str = "/cloak/app";
/// Manifest prefix for SGX2 / EDMM machines.
pub const APP_EDMM: &str = "/cloak/app-edmm";
/// Annotation and label prefix.
pub const ANNOTATION_PREFIX: &str = "io.cloak.sgx.";

/// One SGX conversion.
pub struct SgxRequest {
    /// The image to convert.
    pub input: ImageRef,
    /// Where to write the result.
    pub output: ImageRef,
    /// Image with Gramine installed under [`runtime::GRAMINE_DIR`].
    pub runtime_image: ImageRef,
    /// Registry settings for the input (and the runtime image unless `runtime_options`).
    pub source_options: RegistryOptions,
    /// Registry settings for the runtime image when it is not the input's party's (the
    /// manager: the operator's image, never reached with the tenant's credentials).
    pub runtime_options: Option<RegistryOptions>,
    /// Registry settings for the output.
    pub dest_options: RegistryOptions,
    /// The static launcher binary to ship.
    pub launcher: PathBuf,
    /// EnclaveOS options.
    pub options: SgxOptions,
    /// Signing key: `default`, `file:…`, `pkcs11:…` (overrides `options.signingKey`).
    pub signing_key: Option<String>,
    /// A signer held by the caller (the manager's sealed account key); wins over `signing_key`.
    pub signer: Option<Box<dyn cloak_sgx::key::Signer + Send + Sync>>,
    /// SIGSTRUCT date `YYYY-MM-DD`; default: the input's `created` date (reproducible).
    pub date: Option<String>,
    /// Platform selected from a multi-arch input.
    pub platform: PlatformSpec,
    /// The most bytes the input's layers may take, compressed and uncompressed (the
    /// operator's bound on one conversion); `None`: unbounded.
    pub limit: Option<ImageLimit>,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// The report: the seed's `/convert-image` response fields, plus what cloak adds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SgxReport {
    /// Output reference.
    pub new_image: String,
    /// Short image ID (config digest, 12 hex digits).
    #[serde(rename = "imageSHA")]
    pub image_sha: String,
    /// Output manifest digest.
    pub image_digest: String,
    /// Sum of config and layer sizes in bytes.
    pub image_size: u64,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// MRENCLAVE (SGX1), hex.
    pub mrenclave: String,
    /// MRENCLAVE of the EDMM (SGX2) variant, hex.
    pub mrenclave2: String,
    /// MRSIGNER, hex.
    pub mrsigner: String,
    /// Input manifest digest.
    pub input_digest: String,
    /// Runtime image manifest digest.
    pub runtime_digest: String,
    /// Number of trusted files in the manifest.
    pub trusted_files: usize,
    /// The options used, defaults filled in.
    pub options: SgxOptions,
    /// The image's exposed ports (`80/tcp`), from its config.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

fn json_to_toml(key: &str, v: &serde_json::Value) -> Result<toml::Value> {
    Ok(match v {
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|x| json_to_toml(key, x))
                .collect::<Result<_>>()?,
        ),
        serde_json::Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), json_to_toml(key, x)?)))
                .collect::<Result<_>>()?,
        ),
        serde_json::Value::Null => {
            return Err(Error::Options(format!(
                "manifestOptions.{key} is null; TOML has no null"
            )))
        }
    })
}

fn date_of(req: &SgxRequest, created: Option<&str>) -> Result<(u16, u8, u8)> {
    if let Some(d) = &req.date {
        return Ok(cloak_sgx::sigstruct::parse_date(d)?);
    }
    let from_epoch = |secs: u64| {
        let days = (secs / 86_400) as i64;
        // civil-from-days (Howard Hinnant), valid for the proleptic Gregorian calendar
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let y = (yoe + era * 400 + i64::from(m <= 2)) as u16;
        (y, m, d)
    };
    if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        return Ok(from_epoch(source_date_epoch()));
    }
    if let Some(c) = created.filter(|c| c.len() >= 10) {
        if let Ok(d) = cloak_sgx::sigstruct::parse_date(&c[..10]) {
            return Ok(d);
        }
    }
    Ok((1970, 1, 1))
}

/// Validated numbers of the options.
struct Sizing {
    mem_size: String,
    threads: u64,
}

fn sizing(o: &SgxOptions) -> Result<Sizing> {
    let mem_size = o.mem_size.clone().unwrap_or_else(|| "256M".into());
    cloak_sgx::manifest::enclave_size(&mem_size)
        .map_err(|e| Error::Options(format!("memSize: {e}")))?;
    let threads = u64::from(o.threads.unwrap_or(4));
    cloak_sgx::manifest::threads(threads).map_err(|e| Error::Options(e.to_string()))?;
    if o.core_dump_pattern.is_some() {
        return Err(Error::Options(
            "coreDumpPattern is not supported on Gramine (enclaves do not dump core); remove it"
                .into(),
        ));
    }
    Ok(Sizing { mem_size, threads })
}

/// The options' checks that need no image: sizes, directory classes, manifest options (also
/// what the manager runs before it queues a job, so a bad option is refused at once).
pub fn check_options(o: &SgxOptions) -> Result<()> {
    checked_options(o).map(|_| ())
}

fn checked_options(o: &SgxOptions) -> Result<(Sizing, DirClasses, BTreeMap<String, toml::Value>)> {
    let size = sizing(o)?;
    crate::manager::launcher_config(
        o.manager.as_ref(),
        o.certificates.as_deref(),
        o.add_ccm_ca_certificates.unwrap_or(false),
    )?;
    let classes = DirClasses::new(
        o.ro_dirs.as_deref(),
        o.rw_dirs.as_deref(),
        o.encrypted_dirs.as_deref(),
    )?;
    let extra: BTreeMap<String, toml::Value> = o
        .manifest_options
        .iter()
        .flatten()
        .map(|(k, v)| Ok((k.clone(), json_to_toml(k, v)?)))
        .collect::<Result<_>>()?;
    let mut probe = cloak_sgx::manifest::ManifestSpec {
        extra: extra.clone(),
        ..Default::default()
    };
    if let Some(path) = &o.log_file_path {
        probe
            .extra
            .insert("loader.log_file".into(), toml::Value::String(path.clone()));
    }
    probe.render()?;
    Ok((size, classes, extra))
}

/// What resolve found: the checked options, the signer, the input and runtime images, the
/// application, and the destination (opened, nothing written yet).
struct Resolved {
    o: SgxOptions,
    size: Sizing,
    classes: DirClasses,
    extra: BTreeMap<String, toml::Value>,
    signer: Box<dyn cloak_sgx::key::Signer>,
    launcher: Vec<u8>,
    /// The manager the launcher attests to (run configuration), if any.
    manager: Option<cloak_launcher::ManagerConfig>,
    src: Source,
    image: cloak_image::image::Image,
    app: crate::app::AppSpec,
    rt_image: cloak_image::image::Image,
    runtime: runtime::Runtime,
    dst: Dest,
    /// Spooled runtime files and the new layers.
    work: tempfile::TempDir,
}

/// What amend produced: the run configuration, the trusted files and both manifests.
struct Amended {
    run_json: Vec<u8>,
    trusted: Vec<(String, String)>,
    manifest1: Vec<u8>,
    manifest2: Vec<u8>,
}

/// What measure produced: both variants' MRENCLAVE and SIGSTRUCT, and MRSIGNER.
struct Measured {
    sgx1: cloak_sgx::Signed,
    sgx2: cloak_sgx::Signed,
}

/// Convert an image for SGX: resolve → flatten → amend → measure → package (see the module
/// documentation); each stage reports itself and stops there when the caller cancelled.
pub async fn convert(mut req: SgxRequest) -> Result<SgxReport> {
    crate::stage(req.progress.as_ref(), "resolve")?;
    let r = resolve_stage(&mut req).await?;
    crate::stage(req.progress.as_ref(), "flatten")?;
    let fs = flatten_stage(&req, &r).await?;
    crate::stage(req.progress.as_ref(), "amend")?;
    let amended = amend_stage(&r, &fs)?;
    crate::stage(req.progress.as_ref(), "measure")?;
    let measured = measure_stage(&req, &r, &amended)?;
    crate::stage(req.progress.as_ref(), "package")?;
    package_stage(&req, r, amended, measured).await
}

/// resolve: everything that can be refused is checked before anything is written: options,
/// signing key, launcher, input and runtime images, the application, the destination.
async fn resolve_stage(req: &mut SgxRequest) -> Result<Resolved> {
    let o = req.options.clone();
    let (size, classes, extra) = checked_options(&o)?;
    let key_spec = req
        .signing_key
        .clone()
        .or_else(|| o.signing_key.as_ref().and_then(|k| k.uri.clone()))
        .unwrap_or_else(|| "default".into());
    let manager = crate::manager::launcher_config(
        o.manager.as_ref(),
        o.certificates.as_deref(),
        o.add_ccm_ca_certificates.unwrap_or(false),
    )?;
    let signer: Box<dyn cloak_sgx::key::Signer> = match req.signer.take() {
        Some(s) => s,
        None => cloak_sgx::key::open(&key_spec)?,
    };
    crate::launcher::check(&req.launcher)?;
    let launcher = std::fs::read(&req.launcher).map_err(|e| {
        Error::Options(format!(
            "cannot read the launcher {}: {e}; build it with scripts/build-launcher.sh or pass --launcher",
            req.launcher.display()
        ))
    })?;
    let src = Source::open(&req.input, &req.source_options).await?;
    let image = resolve(&src, &req.platform).await?;
    // Refused before any layer moves (the destination gets nothing).
    cloak_image::flatten::check_size(&image, req.limit.as_ref())?;
    let app = app_spec(
        &image.reference,
        &image.config,
        &AppOverrides {
            entrypoint: o.entrypoint.clone(),
            args: o.entrypoint_args.clone(),
            fixed_env: o.manifest_env.clone().unwrap_or_default(),
            mutable_env: o.mutable_env.clone().unwrap_or_default(),
            allow_cmdline_args: o.allow_cmdline_args.unwrap_or(false),
        },
    )?;
    let rt_opts = req.runtime_options.as_ref().unwrap_or(&req.source_options);
    let rt_src = Source::open(&req.runtime_image, rt_opts).await?;
    let rt_image = resolve(&rt_src, &PlatformSpec::default()).await?;
    let work = tempfile::tempdir()
        .map_err(|e| Error::Options(format!("cannot create a temporary directory: {e}")))?;
    let rt_fs = flatten(
        &rt_src,
        &rt_image,
        ContentMode::Spool(work.path().join("runtime")),
        None,
    )
    .await?;
    let runtime = runtime::collect(&rt_fs, &rt_image.reference, runtime::GRAMINE_DIR)?;
    let dst = Dest::open(&req.output, &req.dest_options).await?;
    Ok(Resolved {
        o,
        size,
        classes,
        extra,
        signer,
        launcher,
        manager,
        src,
        image,
        app,
        rt_image,
        runtime,
        dst,
        work,
    })
}

/// flatten: the input's files, hashed as they stream, while its layers are copied over; an
/// input that already holds `/cloak` is refused. The first error stops both (a layer over
/// the limit stops the copy too).
async fn flatten_stage(req: &SgxRequest, r: &Resolved) -> Result<cloak_image::flatten::FlatFs> {
    let (fs, ()) = tokio::try_join!(
        flatten(&r.src, &r.image, ContentMode::HashOnly, req.limit.as_ref()),
        build::copy_base_layers(&r.src, &r.image, &r.dst, &req.progress)
    )?;
    if let Some(e) = fs
        .entries()
        .iter()
        .find(|e| e.path == "/cloak" || e.path.starts_with("/cloak/"))
    {
        return Err(Error::Options(format!(
            "{} already contains {} (is it already converted?); cloak needs /cloak for itself",
            r.image.reference,
            cloak_image::name::escape(&e.path)
        )));
    }
    Ok(fs)
}

/// The environment of the enclave: the image's, with the runtime's glibc first in
/// `LD_LIBRARY_PATH`.
fn enclave_env(app: &crate::app::AppSpec) -> Vec<String> {
    let glibc = format!("{}/runtime/glibc", runtime::RUNTIME_DIR);
    let mut env = app.env.clone();
    match env.iter_mut().find(|e| e.starts_with("LD_LIBRARY_PATH=")) {
        Some(e) => *e = format!("LD_LIBRARY_PATH={glibc}:{}", &e["LD_LIBRARY_PATH=".len()..]),
        None => env.push(format!(
            "LD_LIBRARY_PATH={glibc}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib:/usr/lib"
        )),
    }
    env
}

/// amend: the run configuration, the trusted files (image, runtime, launcher, run.json) and
/// the enclave manifests of both variants (SGX1, EDMM).
fn amend_stage(r: &Resolved, fs: &cloak_image::flatten::FlatFs) -> Result<Amended> {
    let (o, app) = (&r.o, &r.app);
    let env = enclave_env(app);
    let run = RunConfig {
        argv: app.argv.clone(),
        env: env.clone(),
        mutable_env: app.mutable_env.clone(),
        workdir: app.workdir.clone(),
        user: app.user.clone(),
        allow_cmdline_args: app.allow_cmdline_args,
        manager: r.manager.clone(),
    };
    let run_json = serde_json::to_vec_pretty(&run).expect("RunConfig serialises");
    let mut trusted = trusted_files(fs, &r.classes);
    trusted.extend(
        r.runtime
            .files
            .iter()
            .map(|(rel, d)| (format!("{}/{rel}", runtime::RUNTIME_DIR), d.hex())),
    );
    trusted.push((LAUNCHER_PATH.into(), Digest::of(&r.launcher).hex()));
    trusted.push((
        cloak_launcher::CONFIG_PATH.into(),
        Digest::of(&run_json).hex(),
    ));
    trusted.sort();
    let debug = o.debug.unwrap_or(false);
    let spec = |edmm: bool| ManifestSpec {
        libos_entrypoint: LAUNCHER_PATH.into(),
        loader_entrypoint_uri: format!("file:{}/libsysdb.so", runtime::RUNTIME_DIR),
        loader_entrypoint_sha256: r.runtime.libsysdb_sha256.hex(),
        argv: (!app.allow_cmdline_args).then(|| vec![LAUNCHER_PATH.to_string()]),
        insecure_cmdline_argv: app.allow_cmdline_args,
        env: env
            .iter()
            .filter_map(|e| split_env(e).map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        passthrough_env: app
            .mutable_env
            .iter()
            .filter_map(|e| split_env(e).map(|(k, _)| k.to_string()))
            .collect(),
        log_level: if debug {
            "debug".into()
        } else {
            "error".into()
        },
        start_dir: app.workdir.clone(),
        mounts: r
            .classes
            .encrypted
            .iter()
            .map(|d| Mount {
                kind: "encrypted".into(),
                path: d.clone(),
                uri: format!("file:{d}"),
                key_name: Some("default".into()),
            })
            .collect(),
        trusted_files: trusted
            .iter()
            .map(|(p, h)| (format!("file:{p}"), h.clone()))
            .collect(),
        allowed_files: r
            .classes
            .rw
            .iter()
            .map(|d| {
                let is_dir = fs
                    .get(d)
                    .is_some_and(|e| e.kind == cloak_image::flatten::EntryKind::Directory);
                format!("file:{d}{}", if is_dir { "/" } else { "" })
            })
            .collect(),
        enclave_size: r.size.mem_size.clone(),
        max_threads: r.size.threads,
        edmm,
        isvprodid: o.isvprodid.unwrap_or(0),
        isvsvn: o.isvsvn.unwrap_or(0),
        debug,
        remote_attestation: "dcap".into(),
        extra: r.extra.clone(),
    };
    let mut extra_log = BTreeMap::new();
    if let Some(path) = &o.log_file_path {
        extra_log.insert(
            "loader.log_file".to_string(),
            toml::Value::String(path.clone()),
        );
    }
    let render = |edmm: bool| -> Result<Vec<u8>> {
        let mut s = spec(edmm);
        for (k, v) in &extra_log {
            if s.extra.insert(k.clone(), v.clone()).is_some() {
                return Err(Error::Options(format!(
                    "manifestOptions {k} conflicts with logFilePath"
                )));
            }
        }
        Ok(s.render()?)
    };
    Ok(Amended {
        manifest1: render(false)?,
        manifest2: render(true)?,
        run_json,
        trusted,
    })
}

/// measure: MRENCLAVE of both variants from the manifests and libpal, their SIGSTRUCTs
/// (signed in-process or in a token), MRSIGNER.
fn measure_stage(req: &SgxRequest, r: &Resolved, a: &Amended) -> Result<Measured> {
    let libpal = std::fs::read(&r.runtime.libpal).map_err(|e| {
        Error::Options(format!(
            "reading libpal.so from {}: {e}",
            r.rt_image.reference
        ))
    })?;
    let created = r.image.config.extra.get("created").and_then(|v| v.as_str());
    let date = date_of(req, created)?;
    Ok(Measured {
        sgx1: cloak_sgx::measure_and_sign(&a.manifest1, &libpal, r.signer.as_ref(), date)?,
        sgx2: cloak_sgx::measure_and_sign(&a.manifest2, &libpal, r.signer.as_ref(), date)?,
    })
}

/// package: two new layers (runtime + launcher; run.json, manifests, SIGSTRUCTs), the
/// config's entrypoint, labels and annotations; blobs first, the manifest last.
async fn package_stage(
    req: &SgxRequest,
    r: Resolved,
    a: Amended,
    m: Measured,
) -> Result<SgxReport> {
    let o = &r.o;
    let (sgx1, sgx2) = (&m.sgx1, &m.sgx2);
    let mtime = source_date_epoch();
    let mut rt_entries = r.runtime.entries.clone();
    rt_entries.push(LayerEntry::dir("/cloak/bin", 0o755));
    rt_entries.push(LayerEntry::file(
        LAUNCHER_PATH,
        0o755,
        FileContent::Path(req.launcher.clone()),
    ));
    let rt_layer = write_layer(r.work.path(), &rt_entries, mtime)?;
    let mut used = o.clone();
    used.mem_size = Some(r.size.mem_size.clone());
    used.threads = Some(r.size.threads as u32);
    let bytes = |b: &[u8]| FileContent::Bytes(b.to_vec());
    let sgx_layer = write_layer(
        r.work.path(),
        &[
            LayerEntry::file(cloak_launcher::CONFIG_PATH, 0o644, bytes(&a.run_json)),
            LayerEntry::file(format!("{APP}.manifest.sgx"), 0o644, bytes(&a.manifest1)),
            LayerEntry::file(format!("{APP}.sig"), 0o644, bytes(&sgx1.sigstruct)),
            LayerEntry::file(
                format!("{APP_EDMM}.manifest.sgx"),
                0o644,
                bytes(&a.manifest2),
            ),
            LayerEntry::file(format!("{APP_EDMM}.sig"), 0o644, bytes(&sgx2.sigstruct)),
        ],
        mtime,
    )?;
    let layers = [rt_layer, sgx_layer];
    let hexs = |b: &[u8; 32]| hex::encode(b);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        format!("{ANNOTATION_PREFIX}mrenclave"),
        hexs(&sgx1.mrenclave),
    );
    annotations.insert(
        format!("{ANNOTATION_PREFIX}mrenclave2"),
        hexs(&sgx2.mrenclave),
    );
    annotations.insert(format!("{ANNOTATION_PREFIX}mrsigner"), hexs(&sgx1.mrsigner));
    annotations.insert(
        format!("{ANNOTATION_PREFIX}isvprodid"),
        o.isvprodid.unwrap_or(0).to_string(),
    );
    annotations.insert(
        format!("{ANNOTATION_PREFIX}isvsvn"),
        o.isvsvn.unwrap_or(0).to_string(),
    );
    let mut labels = annotations.clone();
    labels.insert(
        format!("{ANNOTATION_PREFIX}runtime"),
        r.rt_image.raw_manifest.digest.to_string(),
    );
    if let Some(certs) = &o.certificates {
        labels.insert(
            format!("{ANNOTATION_PREFIX}certificates"),
            serde_json::to_string(certs).expect("certificate configs serialise"),
        );
    }
    if let Some(java) = &o.java_mode {
        labels.insert(format!("{ANNOTATION_PREFIX}java-mode"), java.clone());
    }
    let mut entrypoint = r.runtime.loader_argv.clone();
    entrypoint.push(APP.into());
    let amend = Amendment {
        layers: &layers,
        history: vec![
            format!(
                "cloak convert --target sgx: Gramine runtime from {}",
                r.rt_image.raw_manifest.digest
            ),
            "cloak convert --target sgx: manifest, SIGSTRUCT, run configuration".into(),
        ],
        entrypoint: Some(entrypoint),
        cmd: Some(Vec::new()),
        labels,
        annotations,
    };
    let pushed = build::push(&r.src, &r.image, &amend, &r.dst, req.progress.clone()).await?;
    Ok(SgxReport {
        new_image: pushed.reference,
        image_sha: pushed.config_digest.hex()[..12].to_string(),
        image_digest: pushed.digest.to_string(),
        image_size: pushed.size,
        isvprodid: o.isvprodid.unwrap_or(0),
        isvsvn: o.isvsvn.unwrap_or(0),
        mrenclave: hexs(&sgx1.mrenclave),
        mrenclave2: hexs(&sgx2.mrenclave),
        mrsigner: hexs(&sgx1.mrsigner),
        input_digest: r.image.raw_manifest.digest.to_string(),
        runtime_digest: r.rt_image.raw_manifest.digest.to_string(),
        trusted_files: a.trusted.len(),
        options: used,
        exposed_ports: crate::app::exposed_ports(&r.image.config),
    })
}
