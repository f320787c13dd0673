//! `cloak sgx …`: low-level SGX tools for pipelines and cross-checks with Gramine's own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cloak_sgx::{manifest, measure, sigstruct};

use crate::output::{print_json, Format};

/// Arguments of `cloak sgx`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

/// `cloak sgx` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Print MRENCLAVE of a manifest (size, threads and EDMM read from it, Gramine's defaults).
    Mrenclave {
        /// The `.manifest.sgx` file.
        #[arg(long)]
        manifest: PathBuf,
        /// The PAL (`sgx/libpal.so`).
        #[arg(long)]
        libpal: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Measure and sign a manifest, writing the SIGSTRUCT.
    Sign {
        /// The `.manifest.sgx` file.
        #[arg(long)]
        manifest: PathBuf,
        /// The PAL (`sgx/libpal.so`).
        #[arg(long)]
        libpal: PathBuf,
        /// Signing key: default, file:KEY.pem or a pkcs11: URI.
        #[arg(long, default_value = "default")]
        key: String,
        /// SIGSTRUCT date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Where to write the SIGSTRUCT (`APP.sig`).
        #[arg(long)]
        output: PathBuf,
    },
    /// Print the fields of a SIGSTRUCT, MRSIGNER included (like gramine-sgx-sigstruct-view).
    Sigstruct {
        /// A `.sig` file, or an image converted with --target sgx (its /cloak/app.sig).
        file: String,
        /// With an image: the EDMM (SGX2) SIGSTRUCT instead.
        #[arg(long)]
        edmm: bool,
        #[command(flatten)]
        source: crate::registry_args::SourceArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

fn read(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("while reading {}", p.display()))
}

/// Read one file of an image (resolving the default platform).
fn image_file(
    image: &str,
    path: &str,
    source: &crate::registry_args::SourceArgs,
) -> anyhow::Result<Vec<u8>> {
    use cloak_image::flatten::{flatten, ContentMode};
    use cloak_image::image::{resolve, Source};
    let reference: cloak_image::ImageRef = image
        .parse()
        .with_context(|| format!("{image} is neither a file nor an image reference"))?;
    let opts = source.options()?;
    let work = tempfile::tempdir()?;
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .display()
        .to_string();
    let fs = crate::registry_args::runtime()?.block_on(async {
        let src = Source::open(&reference, &opts).await?;
        let img = resolve(&src, &cloak_image::PlatformSpec::default()).await?;
        flatten(
            &src,
            &img,
            ContentMode::SpoolUnder(work.path().to_path_buf(), vec![dir]),
            None,
        )
        .await
    })?;
    let entry = fs
        .resolve(path)
        .filter(|e| e.has_content())
        .with_context(|| format!("{image} has no {path}; was it converted with --target sgx?"))?;
    let p = fs.content_path(entry).context("the file was not kept")?;
    std::fs::read(&p).with_context(|| format!("while reading {path} of {image}"))
}

/// Run `cloak sgx`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Mrenclave {
            manifest: m,
            libpal,
            output,
        } => {
            let bytes = read(&m)?;
            let measured = manifest::read(&bytes, &m.display().to_string())?;
            let mrenclave = measure::mrenclave(&bytes, &read(&libpal)?, &measured.layout())?;
            match output {
                Format::Json => print_json(&serde_json::json!({
                    "mrenclave": hex::encode(mrenclave),
                    "enclaveSize": measured.enclave_size,
                    "threads": measured.threads,
                    "edmm": measured.edmm,
                }))?,
                Format::Text => outln!("{}", hex::encode(mrenclave)),
            }
        }
        Sub::Sign {
            manifest: m,
            libpal,
            key,
            date,
            output,
        } => {
            let signer = cloak_sgx::key::open(&key)?;
            let date = sigstruct::parse_date(&date)?;
            let signed =
                cloak_sgx::measure_and_sign(&read(&m)?, &read(&libpal)?, signer.as_ref(), date)?;
            std::fs::write(&output, signed.sigstruct)
                .with_context(|| format!("while writing {}", output.display()))?;
            outln!(
                "mrenclave: {}\nmrsigner:  {}",
                hex::encode(signed.mrenclave),
                hex::encode(signed.mrsigner)
            );
        }
        Sub::Sigstruct {
            file,
            output,
            edmm,
            source,
        } => {
            let (bytes, what) = if std::path::Path::new(&file).is_file() {
                (read(&PathBuf::from(&file))?, file.clone())
            } else {
                let path = if edmm {
                    "/cloak/app-edmm.sig"
                } else {
                    "/cloak/app.sig"
                };
                (image_file(&file, path, &source)?, format!("{file}:{path}"))
            };
            let s = sigstruct::parse(&bytes, &what)?;
            let view = sigstruct::view(&s, &what);
            match output {
                Format::Json => print_json(&view)?,
                Format::Text => {
                    outln!("mr_enclave = \"{}\"", view.mr_enclave);
                    outln!("mr_signer = \"{}\"", view.mr_signer);
                    outln!("isv_prod_id = {}", view.isv_prod_id);
                    outln!("isv_svn = {}", view.isv_svn);
                    outln!("date = \"{}\"", view.date);
                    outln!("flags = \"{}\"", view.flags);
                    outln!("xfrms = \"{}\"", view.xfrm);
                    outln!("misc_select = \"{}\"", view.misc_select);
                    outln!("debug = {}", view.debug);
                    outln!("signature_valid = {}", view.signature_valid);
                }
            }
            if !view.signature_valid {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
