//! `cloak convert --target sgx|nitro INPUT OUTPUT`: turn an image into a confidential one.
//!
//! Every option of the seed APIs is a flag (kebab-case); `--options FILE` takes the same JSON
//! body (EnclaveOS `/convert-image` for SGX), and flags given on the command line win over it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::nitro::{self, NitroRequest};
use cloak_convert::options::{CertificateConfig, ManagerOptions, NitroOptions, SgxOptions};
use cloak_convert::sgx::{self, SgxRequest};
use cloak_image::{ImageRef, PlatformSpec};

use crate::output::{print_json, Format};
use crate::registry_args::{runtime, DestArgs, SourceArgs};

/// Conversion targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Intel SGX with the Gramine library OS.
    Sgx,
    /// AWS Nitro Enclaves (EIF).
    Nitro,
}

/// Arguments of `cloak convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to produce.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Input image: docker://HOST/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE.
    pub input: String,
    /// Output image: docker://HOST/REPO:TAG or oci:DIR[:TAG] (`-` with --target nitro --eif: no image).
    pub output: String,
    /// JSON options file (the seed API's request body); flags override it.
    #[arg(long, value_name = "FILE")]
    pub options: Option<PathBuf>,
    /// Platform to select from a multi-arch input.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Refuse an input whose layers take more than SIZE, compressed or uncompressed (bytes,
    /// or 16G, 500M…), checked while they stream: bounds the disk and time an untrusted
    /// image can take (a gzip bomb stops at SIZE). Default: no limit.
    #[arg(long, value_name = "SIZE", value_parser = cloak_image::flatten::parse_size)]
    pub max_image_bytes: Option<u64>,

    /// SGX: image with Gramine installed under /usr/lib/x86_64-linux-gnu/gramine.
    #[arg(long, value_name = "IMAGE")]
    pub runtime_image: Option<String>,
    /// The static x86-64 launcher to ship (default: PREFIX/lib/cloak/cloak-launcher for
    /// PREFIX/bin/cloak, then beside this executable, then the workspace's static build).
    #[arg(long, value_name = "FILE", env = "CLOAK_LAUNCHER")]
    pub launcher: Option<PathBuf>,
    /// SGX: signing key: default, file:KEY.pem or a pkcs11: URI.
    #[arg(long, value_name = "KEY")]
    pub signing_key: Option<String>,
    /// SGX: SIGSTRUCT date YYYY-MM-DD (default: the input's creation date, for reproducibility).
    #[arg(long)]
    pub date: Option<String>,
    /// Enclave product id.
    #[arg(long)]
    pub isvprodid: Option<u16>,
    /// Enclave security version.
    #[arg(long)]
    pub isvsvn: Option<u16>,
    /// Enclave size (SGX: power of two with K/M/G suffix, e.g. 2048M).
    #[arg(long)]
    pub mem_size: Option<String>,
    /// Enclave threads (1..=4096).
    #[arg(long)]
    pub threads: Option<u32>,
    /// SGX: debug enclave and verbose runtime logging (refused for Nitro, whose debug mode is
    /// chosen when the enclave starts).
    #[arg(long)]
    pub debug: bool,
    /// Replace the image's Entrypoint (repeat for each word).
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Replace the image's Cmd (repeat for each word).
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub entrypoint_args: Vec<String>,
    /// Encrypted directories (repeatable).
    #[arg(long, value_name = "DIR")]
    pub encrypted_dirs: Vec<String>,
    /// Integrity-protected directories (repeatable).
    #[arg(long, value_name = "DIR")]
    pub ro_dirs: Vec<String>,
    /// Unprotected read-write files or directories (repeatable).
    #[arg(long, value_name = "PATH")]
    pub rw_dirs: Vec<String>,
    /// Extra manifest key, KEY=VALUE with VALUE as JSON or a plain string (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub manifest_options: Vec<String>,
    /// Certificate to request at start-up, as CertificateConfig JSON (repeatable).
    #[arg(long, value_name = "JSON")]
    pub certificates: Vec<String>,
    /// Manager the image attests to at start-up, https://HOST:PORT (both targets; measured).
    #[arg(long, value_name = "URL", requires_all = ["manager_ca", "manager_app_id"])]
    pub manager_url: Option<String>,
    /// PEM file with the manager's CA (what its TLS certificate chains to); measured into the
    /// image, so the image trusts this manager only.
    #[arg(long, value_name = "FILE", requires = "manager_url")]
    pub manager_ca: Option<PathBuf>,
    /// Id of the manager's app the image's builds are registered under.
    #[arg(long, value_name = "UUID", requires = "manager_url")]
    pub manager_app_id: Option<String>,
    /// Seconds the launcher retries an unreachable manager before giving up (default 60).
    #[arg(long, value_name = "SECONDS", requires = "manager_url")]
    pub manager_retry_seconds: Option<u64>,
    /// Nitro: the vsock port at CID 3 where `cloak proxy` forwards to the manager.
    #[arg(long, value_name = "PORT", requires = "manager_url")]
    pub manager_vsock_port: Option<u32>,
    /// Let the launcher use simulated evidence (no TEE; for qemu and CI). Changes the
    /// measurement, so an image converted without it never attests with simulated evidence.
    #[arg(long, requires = "manager_url")]
    pub allow_simulated_attestation: bool,
    /// Also put the manager's CA into the image's trust store (add_ccm_ca_certificates).
    #[arg(long, requires = "manager_url")]
    pub add_ccm_ca_certificates: bool,
    /// Core dump file pattern.
    #[arg(long)]
    pub core_dump_pattern: Option<String>,
    /// Runtime log file path.
    #[arg(long)]
    pub log_file_path: Option<String>,
    /// SGX: Java runtime mode, recorded as the label io.cloak.sgx.java-mode (refused for Nitro).
    #[arg(long)]
    pub java_mode: Option<String>,
    /// Accept command-line arguments at run time.
    #[arg(long)]
    pub allow_cmdline_args: bool,
    /// Fixed, measured environment NAME=value (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub manifest_env: Vec<String>,
    /// Environment default the operator may override, NAME=value (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub mutable_env: Vec<String>,

    /// Nitro: also write the EIF to this file.
    #[arg(long, value_name = "FILE")]
    pub eif: Option<PathBuf>,
    /// Nitro: kernel bzImage (default: the blobs folder's bzImage).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Nitro: kernel config, for the EIF metadata.
    #[arg(long, value_name = "FILE")]
    pub kernel_config: Option<PathBuf>,
    /// Nitro: a nitro-cli blobs folder (bzImage, bzImage.config, cmdline, nsm.ko).
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
    /// Nitro: kernel command line (default: the blobs' cmdline, else nitro-cli's).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Nitro: certificate (PEM) of the P-384 --signing-key; signs the EIF and adds PCR8.
    #[arg(long, value_name = "FILE")]
    pub signing_cert: Option<PathBuf>,
    /// Nitro: vCPUs of the enclave.
    #[arg(long)]
    pub cpu_count: Option<u32>,
    /// Nitro: overlay file-system persistence; not implemented, only false is accepted.
    #[arg(long)]
    pub enable_overlay_filesystem_persistence: Option<bool>,
    /// Nitro: fixed environment NAME=value (repeatable; alias of --manifest-env).
    #[arg(long, value_name = "NAME=VALUE")]
    pub env_vars: Vec<String>,

    /// Encrypt the converted image's layers (ocicrypt) as the last step; needs --recipient.
    /// The plain result is staged next to the output and never pushed.
    #[arg(long, requires = "recipient")]
    pub encrypt_layers: bool,
    /// Recipient of --encrypt-layers: jwe:PUBLIC-KEY, pkcs7:CERT or provider:NAME[:PARAMS].
    #[arg(long, value_name = "SCHEME:FILE", requires = "encrypt_layers")]
    pub recipient: Vec<String>,
    /// Keyprovider configuration for provider: recipients (default: $OCICRYPT_KEYPROVIDER_CONFIG).
    #[arg(long, value_name = "FILE", requires = "encrypt_layers")]
    pub keyprovider_config: Option<PathBuf>,

    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output format of the report.
    #[arg(long, short, value_enum, default_value_t = Format::Json)]
    pub output_format: Format,
    #[command(flatten)]
    pub src: SourceArgs,
    #[command(flatten)]
    pub dest: DestArgs,
}

fn some_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn sgx_options(a: &Args) -> anyhow::Result<SgxOptions> {
    let mut o: SgxOptions = match &a.options {
        Some(p) => {
            let text = std::fs::read(p)
                .with_context(|| format!("while reading --options {}", p.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("while parsing --options {}", p.display()))?
        }
        None => SgxOptions::default(),
    };
    macro_rules! over {
        ($field:ident, $v:expr) => {
            if let Some(v) = $v {
                o.$field = Some(v);
            }
        };
    }
    over!(isvprodid, a.isvprodid);
    over!(isvsvn, a.isvsvn);
    over!(mem_size, a.mem_size.clone());
    over!(threads, a.threads);
    over!(debug, a.debug.then_some(true));
    over!(entrypoint, some_vec(&a.entrypoint));
    over!(entrypoint_args, some_vec(&a.entrypoint_args));
    over!(encrypted_dirs, some_vec(&a.encrypted_dirs));
    over!(ro_dirs, some_vec(&a.ro_dirs));
    over!(rw_dirs, some_vec(&a.rw_dirs));
    over!(core_dump_pattern, a.core_dump_pattern.clone());
    over!(log_file_path, a.log_file_path.clone());
    over!(java_mode, a.java_mode.clone());
    over!(allow_cmdline_args, a.allow_cmdline_args.then_some(true));
    over!(manifest_env, some_vec(&a.manifest_env));
    over!(mutable_env, some_vec(&a.mutable_env));
    if !a.manifest_options.is_empty() {
        let map = o.manifest_options.get_or_insert_with(Default::default);
        for kv in &a.manifest_options {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--manifest-options {kv:?} is not KEY=VALUE"))?;
            let value = serde_json::from_str(v)
                .unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
            map.insert(k.to_string(), value);
        }
    }
    if let Some(certs) = parse_certificates(a)? {
        o.certificates = Some(certs);
    }
    if let Some(m) = manager_options(a)? {
        o.manager = Some(m);
    }
    if a.add_ccm_ca_certificates {
        o.add_ccm_ca_certificates = Some(true);
    }
    Ok(o)
}

fn parse_certificates(a: &Args) -> anyhow::Result<Option<Vec<CertificateConfig>>> {
    if a.certificates.is_empty() {
        return Ok(None);
    }
    a.certificates
        .iter()
        .map(|c| {
            serde_json::from_str::<CertificateConfig>(c)
                .with_context(|| format!("--certificates {c:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// `--manager-*` flags as the options' `manager` object (None without `--manager-url`).
fn manager_options(a: &Args) -> anyhow::Result<Option<ManagerOptions>> {
    let Some(url) = &a.manager_url else {
        return Ok(None);
    };
    let ca_file = a
        .manager_ca
        .as_ref()
        .context("--manager-url needs --manager-ca FILE")?;
    let ca = std::fs::read_to_string(ca_file)
        .with_context(|| format!("while reading --manager-ca {}", ca_file.display()))?;
    Ok(Some(ManagerOptions {
        url: url.clone(),
        ca,
        app_id: a.manager_app_id.clone().unwrap_or_default(),
        allow_simulated_attestation: a.allow_simulated_attestation.then_some(true),
        retry_seconds: a.manager_retry_seconds,
        vsock_port: a.manager_vsock_port,
        renew_before_seconds: None,
    }))
}

fn nitro_options(a: &Args) -> anyhow::Result<NitroOptions> {
    let mut o: NitroOptions = match &a.options {
        Some(p) => {
            let text = std::fs::read(p)
                .with_context(|| format!("while reading --options {}", p.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("while parsing --options {}", p.display()))?
        }
        None => NitroOptions::default(),
    };
    if o.nitro_enclaves_options.signing_key.is_some() {
        anyhow::bail!(
            "nitro_enclaves_options.signing_key asks a manager for the app's key; cloak convert \
             signs with --signing-key KEY.pem --signing-cert CERT.pem: remove it from the options"
        );
    }
    let c = &mut o.converter_options;
    if let Some(v) = some_vec(&a.entrypoint) {
        c.entrypoint = Some(v);
    }
    if let Some(v) = some_vec(&a.entrypoint_args) {
        c.entrypoint_args = Some(v);
    }
    let fixed: Vec<String> = a.env_vars.iter().chain(&a.manifest_env).cloned().collect();
    if !fixed.is_empty() {
        c.env_vars = Some(fixed);
    }
    if let Some(v) = some_vec(&a.mutable_env) {
        c.mutable_env_vars = Some(v);
    }
    if a.allow_cmdline_args {
        c.allow_cmdline_args = Some(true);
    }
    if a.debug {
        c.debug = Some(true);
    }
    if let Some(j) = &a.java_mode {
        c.java_mode = Some(j.clone());
    }
    if let Some(certs) = parse_certificates(a)? {
        c.certificates = Some(certs);
    }
    if let Some(m) = manager_options(a)? {
        c.manager = Some(m);
    }
    if a.add_ccm_ca_certificates {
        c.add_ccm_ca_certificates = Some(true);
    }
    let n = &mut o.nitro_enclaves_options;
    if let Some(v) = a.cpu_count {
        n.cpu_count = Some(v);
    }
    if let Some(m) = &a.mem_size {
        n.mem_size = Some(
            m.parse()
                .with_context(|| format!("--mem-size {m:?}: Nitro takes MiB as a whole number"))?,
        );
    }
    if let Some(v) = a.enable_overlay_filesystem_persistence {
        n.enable_overlay_filesystem_persistence = Some(v);
    }
    Ok(o)
}

/// With `--encrypt-layers`: where the plain result is staged, and the real destination.
struct Encryption {
    staging: tempfile::TempDir,
    staged: ImageRef,
    output: ImageRef,
    dest_options: cloak_image::RegistryOptions,
}

impl Encryption {
    /// Encrypt the staged image into the real output; the report's `encryption` member.
    fn finish(self, args: &Args) -> anyhow::Result<cloak_convert::encrypt::EncryptReport> {
        let req = cloak_convert::encrypt::EncryptRequest {
            transfer: cloak_convert::crypt::Transfer {
                input: self.staged.clone(),
                output: self.output.clone(),
                source_options: Default::default(),
                dest_options: self.dest_options,
                platform: args.platform.parse()?,
                jobs: 0,
                progress: crate::progress::for_stderr(args.quiet),
            },
            recipients: args.recipient.clone(),
            layers: Vec::new(),
            add: Vec::new(),
            remove: Vec::new(),
            keys: cloak_convert::crypt::KeyMaterial {
                keys: Vec::new(),
                provider_config: args.keyprovider_config.clone(),
            },
        };
        let report = runtime()?
            .block_on(cloak_convert::encrypt::encrypt(req))
            .with_context(|| {
                format!("while encrypting the converted image into {}", self.output)
            })?;
        drop(self.staging);
        Ok(report)
    }
}

/// Refuse flags that belong to the other target: they would be ignored, and the user would
/// believe they took effect (an SGX `--kernel`, a Nitro `--isvsvn`).
fn refuse_foreign_flags(a: &Args) -> anyhow::Result<()> {
    let given = |set: bool, flag: &'static str| set.then_some(flag);
    let (other, foreign): (&str, Vec<&str>) = match a.target {
        Target::Sgx => (
            "nitro",
            [
                given(a.eif.is_some(), "--eif"),
                given(a.kernel.is_some(), "--kernel"),
                given(a.kernel_config.is_some(), "--kernel-config"),
                given(a.blobs.is_some(), "--blobs"),
                given(a.cmdline.is_some(), "--cmdline"),
                given(a.signing_cert.is_some(), "--signing-cert"),
                given(a.cpu_count.is_some(), "--cpu-count"),
                given(
                    a.enable_overlay_filesystem_persistence.is_some(),
                    "--enable-overlay-filesystem-persistence",
                ),
                given(!a.env_vars.is_empty(), "--env-vars (SGX: --manifest-env)"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        Target::Nitro => (
            "sgx",
            [
                given(a.runtime_image.is_some(), "--runtime-image"),
                given(a.date.is_some(), "--date"),
                given(a.isvprodid.is_some(), "--isvprodid"),
                given(a.isvsvn.is_some(), "--isvsvn"),
                given(a.threads.is_some(), "--threads"),
                given(!a.encrypted_dirs.is_empty(), "--encrypted-dirs"),
                given(!a.ro_dirs.is_empty(), "--ro-dirs"),
                given(!a.rw_dirs.is_empty(), "--rw-dirs"),
                given(!a.manifest_options.is_empty(), "--manifest-options"),
                given(a.core_dump_pattern.is_some(), "--core-dump-pattern"),
                given(a.log_file_path.is_some(), "--log-file-path"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
    };
    if !foreign.is_empty() {
        return Err(crate::commands::client::UsageError(format!(
            "{} only appl{} to --target {other}; remove {} or convert with --target {other}",
            foreign.join(", "),
            if foreign.len() == 1 { "ies" } else { "y" },
            if foreign.len() == 1 { "it" } else { "them" },
        ))
        .into());
    }
    Ok(())
}

/// Run `cloak convert`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    refuse_foreign_flags(&args)?;
    let input: ImageRef = args.input.parse()?;
    let mut output: ImageRef = if args.output == "-" {
        ImageRef::Layout {
            dir: "-".into(),
            tag: None,
        }
    } else {
        args.output.parse()?
    };
    let src_opts = args.src.options()?;
    let mut dst_opts = args.dest.options(&args.src.authfile)?;
    let mut encryption = None;
    if args.encrypt_layers {
        if args.output == "-" {
            anyhow::bail!("--encrypt-layers needs an output image, not -");
        }
        // Recipients are checked before any work is done.
        for r in &args.recipient {
            cloak_crypt::keywrap::Recipient::parse(r)?;
        }
        let staging = cloak_image::image::staging_dir_for(&output)?;
        let staged = ImageRef::Layout {
            dir: staging.path().join("plain"),
            tag: Some("converted".into()),
        };
        encryption = Some(Encryption {
            staging,
            staged: staged.clone(),
            output: std::mem::replace(&mut output, staged),
            dest_options: std::mem::take(&mut dst_opts),
        });
    }
    let platform: PlatformSpec = args.platform.parse()?;
    let limit = args
        .max_image_bytes
        .map(|max_bytes| cloak_image::flatten::ImageLimit {
            max_bytes,
            raise: "raise --max-image-bytes".into(),
        });
    match args.target {
        Target::Sgx => {
            let options = sgx_options(&args)?;
            let runtime_image: ImageRef = args
                .runtime_image
                .as_deref()
                .context(
                    "--target sgx needs --runtime-image IMAGE (an image with Gramine installed)",
                )?
                .parse()?;
            let req = SgxRequest {
                input: input.clone(),
                output: output.clone(),
                runtime_image,
                source_options: src_opts,
                runtime_options: None,
                dest_options: dst_opts,
                launcher: args
                    .launcher
                    .clone()
                    .unwrap_or_else(cloak_convert::launcher::default_path),
                options,
                signing_key: args.signing_key.clone(),
                signer: None,
                date: args.date.clone(),
                platform,
                limit,
                progress: crate::progress::for_stderr(args.quiet),
            };
            let mut report = runtime()?
                .block_on(sgx::convert(req))
                .with_context(|| format!("while converting {input} for SGX into {output}"))?;
            let encrypted = match encryption {
                Some(e) => {
                    let enc = e.finish(&args)?;
                    report.new_image = enc.destination.clone();
                    report.image_digest = enc.digest.clone();
                    Some(enc)
                }
                None => None,
            };
            match args.output_format {
                Format::Json => print_json(&with_encryption(&report, encrypted)?)?,
                Format::Text => {
                    outln!("Image:      {} ({})", report.new_image, report.image_digest);
                    outln!("MRENCLAVE:  {}", report.mrenclave);
                    outln!("MRENCLAVE2: {} (EDMM)", report.mrenclave2);
                    outln!("MRSIGNER:   {}", report.mrsigner);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Target::Nitro => {
            let options = nitro_options(&args)?;
            let blob = |name: &str| {
                args.blobs
                    .as_ref()
                    .map(|d| d.join(name))
                    .filter(|p| p.exists())
            };
            let kernel = args
                .kernel
                .clone()
                .or_else(|| blob("bzImage"))
                .context("--target nitro needs --kernel bzImage or --blobs DIR (scripts/fetch-kernel.sh fetches one)")?;
            let cmdline = match (&args.cmdline, blob("cmdline")) {
                (Some(c), _) => Some(c.clone()),
                (None, Some(p)) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("while reading {}", p.display()))?,
                ),
                _ => None,
            };
            let output = (args.output != "-").then_some(output);
            let req = NitroRequest {
                input: input.clone(),
                output,
                eif: args.eif.clone(),
                source_options: src_opts,
                dest_options: dst_opts,
                launcher: args.launcher.clone().unwrap_or_else(cloak_convert::launcher::default_path),
                kernel,
                kernel_config: args
                    .kernel_config
                    .clone()
                    .or_else(|| blob("bzImage.config")),
                cmdline,
                nsm_ko: blob("nsm.ko"),
                signing: match (&args.signing_key, &args.signing_cert) {
                    (Some(k), Some(c)) => Some((PathBuf::from(k.strip_prefix("file:").unwrap_or(k)), c.clone())),
                    (None, None) => None,
                    _ => anyhow::bail!("--target nitro signs with both --signing-key KEY.pem and --signing-cert CERT.pem"),
                },
                signer: None,
                options,
                platform,
                limit,
                progress: crate::progress::for_stderr(args.quiet),
            };
            let mut report = runtime()?
                .block_on(nitro::convert(req))
                .with_context(|| format!("while converting {input} for Nitro Enclaves"))?;
            let encrypted = match encryption {
                Some(e) => {
                    let enc = e.finish(&args)?;
                    report.output_image = Some(format!("{}@{}", enc.destination, enc.digest));
                    Some(enc)
                }
                None => None,
            };
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
            match args.output_format {
                Format::Json => print_json(&with_encryption(&report, encrypted)?)?,
                Format::Text => {
                    let a = &report.attributes["nitro_enclave"];
                    outln!("PCR0: {}\nPCR1: {}\nPCR2: {}", a.pcr0, a.pcr1, a.pcr2);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The report as JSON, with an `encryption` member when the layers were encrypted.
fn with_encryption(
    report: &impl serde::Serialize,
    encrypted: Option<cloak_convert::encrypt::EncryptReport>,
) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    if let (Some(e), Some(o)) = (encrypted, v.as_object_mut()) {
        o.insert("encryption".into(), serde_json::to_value(e)?);
    }
    Ok(v)
}
