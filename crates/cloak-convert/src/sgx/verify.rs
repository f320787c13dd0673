//! `cloak measure`: recompute the measurements of a converted image from its own files and check
//! them against its SIGSTRUCTs, so tampering with a trusted file or the manifest is reported.

use cloak_image::flatten::{flatten, ContentMode, FlatFs};
use cloak_image::image::{resolve, Source};
use cloak_image::PlatformSpec;
use serde::Serialize;

use super::{runtime::RUNTIME_DIR, APP, APP_EDMM};
use crate::error::{Error, Result};

/// The verdict on one manifest + SIGSTRUCT pair.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// Manifest path in the image.
    pub manifest: String,
    /// MRENCLAVE recomputed from the image's files.
    pub mrenclave: String,
    /// MRENCLAVE recorded in the SIGSTRUCT.
    pub signed_mrenclave: String,
    /// MRSIGNER.
    pub mrsigner: String,
    /// ISVPRODID, ISVSVN from the SIGSTRUCT.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// Everything that does not match (empty when the image is intact).
    pub problems: Vec<String>,
}

/// The verdict on a converted image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasureReport {
    /// The image.
    pub image: String,
    /// SGX1 and EDMM variants.
    pub variants: Vec<Variant>,
    /// Whether every check passed.
    pub ok: bool,
}

fn read(fs: &FlatFs, path: &str, image: &str) -> Result<Vec<u8>> {
    let e = fs
        .resolve(path)
        .filter(|e| e.has_content())
        .ok_or_else(|| {
            Error::Options(format!(
                "{image} has no {path}; is it an image converted by cloak --target sgx?"
            ))
        })?;
    let p = fs
        .content_path(e)
        .ok_or_else(|| Error::Options(format!("{path} was not kept while reading {image}")))?;
    std::fs::read(&p).map_err(|err| Error::Options(format!("reading {path} of {image}: {err}")))
}

fn check_variant(fs: &FlatFs, image: &str, prefix: &str) -> Result<Variant> {
    let manifest_path = format!("{prefix}.manifest.sgx");
    let manifest = read(fs, &manifest_path, image)?;
    let sig_bytes = read(fs, &format!("{prefix}.sig"), image)?;
    let libpal = read(fs, &format!("{RUNTIME_DIR}/sgx/libpal.so"), image)?;
    let mut problems = Vec::new();
    let sig = cloak_sgx::sigstruct::parse(&sig_bytes, &format!("{prefix}.sig"))?;
    if let Err(e) = cloak_sgx::sigstruct::verify(&sig, &format!("{prefix}.sig")) {
        problems.push(e.to_string());
    }
    let measured = cloak_sgx::manifest::read(&manifest, &manifest_path)?;
    let mrenclave = cloak_sgx::measure::mrenclave(&manifest, &libpal, &measured.layout())?;
    let signed = cloak_sgx::sigstruct::enclave_hash(&sig);
    if mrenclave != signed {
        problems.push(format!(
            "{manifest_path}: MRENCLAVE {} differs from the SIGSTRUCT's {} (the manifest or libpal.so was changed)",
            hex::encode(mrenclave),
            hex::encode(signed)
        ));
    }
    let view = cloak_sgx::sigstruct::view(&sig, prefix);
    if (view.isv_prod_id, view.isv_svn) != (measured.isvprodid, measured.isvsvn) {
        problems.push(format!(
            "{manifest_path}: isvprodid/isvsvn differ from the SIGSTRUCT"
        ));
    }
    // Every trusted file and the loader entrypoint must still hash to what the manifest says.
    let root: toml::Table = std::str::from_utf8(&manifest)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::Options(format!("{manifest_path} is not valid TOML")))?;
    let mut expected: Vec<(String, String)> = Vec::new();
    if let Some(le) = root.get("loader").and_then(|l| l.get("entrypoint")) {
        if let (Some(u), Some(h)) = (
            le.get("uri").and_then(|v| v.as_str()),
            le.get("sha256").and_then(|v| v.as_str()),
        ) {
            expected.push((u.to_string(), h.to_string()));
        }
    }
    for t in root
        .get("sgx")
        .and_then(|s| s.get("trusted_files"))
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
    {
        match (
            t.get("uri").and_then(|v| v.as_str()),
            t.get("sha256").and_then(|v| v.as_str()),
        ) {
            (Some(u), Some(h)) => expected.push((u.to_string(), h.to_string())),
            _ => problems.push(format!(
                "{manifest_path}: a trusted file entry lacks uri or sha256"
            )),
        }
    }
    for (uri, hash) in expected {
        let path = uri.strip_prefix("file:").unwrap_or(&uri);
        match fs.resolve(path).and_then(|e| e.sha256) {
            Some(d) if d.hex() == hash => {}
            Some(d) => problems.push(format!(
                "{path}: sha256 {} but the manifest trusts {hash}",
                d.hex()
            )),
            None => problems.push(format!(
                "{path}: trusted by the manifest but missing from the image"
            )),
        }
    }
    Ok(Variant {
        manifest: manifest_path,
        mrenclave: hex::encode(mrenclave),
        signed_mrenclave: hex::encode(signed),
        mrsigner: view.mr_signer,
        isvprodid: view.isv_prod_id,
        isvsvn: view.isv_svn,
        problems,
    })
}

/// Measure and check a converted image.
pub async fn measure_image(src: &Source, platform: &PlatformSpec) -> Result<MeasureReport> {
    let image = resolve(src, platform).await?;
    let work = tempfile::tempdir()
        .map_err(|e| Error::Options(format!("cannot create a temporary directory: {e}")))?;
    let fs = flatten(
        src,
        &image,
        ContentMode::SpoolUnder(work.path().to_path_buf(), vec!["/cloak".into()]),
    )
    .await?;
    let variants = [APP, APP_EDMM]
        .iter()
        .map(|p| check_variant(&fs, &image.reference, p))
        .collect::<Result<Vec<_>>>()?;
    Ok(MeasureReport {
        image: image.reference,
        ok: variants.iter().all(|v| v.problems.is_empty()),
        variants,
    })
}
