//! `cloak convert --target sgx|nitro INPUT OUTPUT`: turn an image into a confidential one.
//!
//! Every option of the seed APIs is a flag (kebab-case); `--options FILE` takes the same JSON
//! body (EnclaveOS `/convert-image` for SGX), and flags given on the command line win over it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::options::{CertificateConfig, SgxOptions};
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
    /// Output image: docker://HOST/REPO:TAG or oci:DIR[:TAG].
    pub output: String,
    /// JSON options file (the seed API's request body); flags override it.
    #[arg(long, value_name = "FILE")]
    pub options: Option<PathBuf>,
    /// Platform to select from a multi-arch input.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// SGX: image with Gramine installed under /usr/lib/x86_64-linux-gnu/gramine.
    #[arg(long, value_name = "IMAGE")]
    pub runtime_image: Option<String>,
    /// The static launcher to ship (default: next to this executable, then the workspace build).
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
    /// Debug enclave and verbose runtime logging.
    #[arg(long)]
    pub debug: bool,
    /// Replace the image's Entrypoint (repeat for each word).
    #[arg(long, value_name = "WORD")]
    pub entrypoint: Vec<String>,
    /// Replace the image's Cmd (repeat for each word).
    #[arg(long, value_name = "WORD")]
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
    /// Core dump file pattern.
    #[arg(long)]
    pub core_dump_pattern: Option<String>,
    /// Runtime log file path.
    #[arg(long)]
    pub log_file_path: Option<String>,
    /// Java runtime mode.
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
    if !a.certificates.is_empty() {
        let certs = a
            .certificates
            .iter()
            .map(|c| {
                serde_json::from_str::<CertificateConfig>(c)
                    .with_context(|| format!("--certificates {c:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        o.certificates = Some(certs);
    }
    Ok(o)
}

/// Where the static launcher is when `--launcher` is not given.
fn default_launcher() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_ref()
        .and_then(|e| e.parent())
        .map(|d| d.join("cloak-launcher"));
    let workspace = exe
        .as_ref()
        .and_then(|e| {
            e.ancestors()
                .find(|a| a.join("x86_64-unknown-linux-gnu").is_dir())
        })
        .map(|t| t.join("x86_64-unknown-linux-gnu/release/cloak-launcher"));
    // A dynamically linked launcher next to a debug build would not run in every image: prefer
    // the static build when it exists.
    workspace
        .filter(|p| p.exists())
        .or(beside)
        .unwrap_or_else(|| PathBuf::from("cloak-launcher"))
}

/// Run `cloak convert`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input: ImageRef = args.input.parse()?;
    let output: ImageRef = args.output.parse()?;
    let src_opts = args.src.options()?;
    let dst_opts = args.dest.options(&args.src.authfile)?;
    let platform: PlatformSpec = args.platform.parse()?;
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
                dest_options: dst_opts,
                launcher: args.launcher.clone().unwrap_or_else(default_launcher),
                options,
                signing_key: args.signing_key.clone(),
                date: args.date.clone(),
                platform,
                progress: crate::progress::for_stderr(args.quiet),
            };
            let report = runtime()?
                .block_on(sgx::convert(req))
                .with_context(|| format!("while converting {input} for SGX into {output}"))?;
            match args.output_format {
                Format::Json => print_json(&report)?,
                Format::Text => {
                    println!("Image:      {} ({})", report.new_image, report.image_digest);
                    println!("MRENCLAVE:  {}", report.mrenclave);
                    println!("MRENCLAVE2: {} (EDMM)", report.mrenclave2);
                    println!("MRSIGNER:   {}", report.mrsigner);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Target::Nitro => anyhow::bail!(
            "--target nitro is not available in this build of cloak yet; only --target sgx converts"
        ),
    }
}
