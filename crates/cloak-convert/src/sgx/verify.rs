//! `cloak measure`: recompute the measurements of a converted image from its own files, the way
//! a container runtime will see them (every layer applied, links inside the image), and check
//! them against its SIGSTRUCTs, the values the user expects, the config's entrypoint, and the
//! labels the conversion wrote. The report says what failed and what was not checked.

use cloak_image::flatten::{flatten, ContentMode, Entry, EntryKind, FlatFs};
use cloak_image::image::{resolve, Image, Source};
use cloak_image::PlatformSpec;
use serde::Serialize;

use super::{runtime::RUNTIME_DIR, ANNOTATION_PREFIX, APP, APP_EDMM};
use crate::error::{Error, Result};

/// Largest manifest read back (Gramine manifests with thousands of trusted files stay far below).
const MAX_MANIFEST: u64 = 64 << 20;
/// Largest `libpal.so` read back (Gramine's is about 1 MiB).
const MAX_LIBPAL: u64 = 64 << 20;
/// SIGSTRUCT ATTRIBUTES.FLAGS bit DEBUG.
const FLAG_DEBUG: u64 = 0x2;

/// What the user expects; every value given is compared.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// MRENCLAVE of the SGX1 variant (`/cloak/app`, the one the entrypoint starts).
    pub mrenclave: Option<String>,
    /// MRENCLAVE of the EDMM variant (`/cloak/app-edmm`): the report's `mrenclave2`.
    pub mrenclave2: Option<String>,
    /// MRSIGNER of both variants.
    pub mrsigner: Option<String>,
    /// Accept debug enclaves (reported as a warning instead of a failure).
    pub allow_debug: bool,
}

/// Normalise an expected measurement given as `flag`: 64 hex digits.
pub fn expected_hex(value: &str, flag: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Options(format!(
            "{flag} {value:?} is not 64 hexadecimal digits (a SHA-256 measurement as `cloak convert` prints it)"
        )));
    }
    Ok(v)
}

/// The verdict on one manifest + SIGSTRUCT pair.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// Manifest path in the image.
    pub manifest: String,
    /// MRENCLAVE recomputed from the image's files (empty when it could not be computed).
    pub mrenclave: String,
    /// MRENCLAVE recorded in the SIGSTRUCT.
    pub signed_mrenclave: String,
    /// The MRENCLAVE the user expects, if given.
    pub expected_mrenclave: Option<String>,
    /// MRSIGNER.
    pub mrsigner: String,
    /// ISVPRODID from the SIGSTRUCT.
    pub isvprodid: u16,
    /// ISVSVN from the SIGSTRUCT.
    pub isvsvn: u16,
    /// Whether the enclave may run in debug mode (manifest `sgx.debug`, SIGSTRUCT DEBUG, or
    /// a SIGSTRUCT whose attribute mask leaves DEBUG open).
    pub debug: bool,
    /// `sgx.enclave_size` in bytes (0 when the manifest could not be read).
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub threads: u64,
    /// `sgx.edmm_enable`.
    pub edmm: bool,
    /// Number of trusted files the manifest lists.
    pub trusted_files: usize,
    /// Everything that does not match (empty when the variant is intact).
    pub problems: Vec<String>,
}

/// The verdict on a converted image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasureReport {
    /// The image.
    pub image: String,
    /// Its manifest digest.
    pub digest: String,
    /// The config's Entrypoint.
    pub entrypoint: Vec<String>,
    /// The config's Cmd.
    pub cmd: Vec<String>,
    /// The expected MRSIGNER, if given.
    pub expected_mrsigner: Option<String>,
    /// SGX1 and EDMM variants.
    pub variants: Vec<Variant>,
    /// Failures that concern the image as a whole (entrypoint, labels).
    pub problems: Vec<String>,
    /// Accepted but notable (a debug enclave with `--allow-debug`, layers added after cloak's).
    pub warnings: Vec<String>,
    /// What this check does not cover.
    pub not_checked: Vec<String>,
    /// Whether every check passed.
    pub ok: bool,
}

/// The entry at `path` exactly as the runtime's file system has it: a regular file reached
/// through real directories (the conversion writes nothing else under `/cloak`). A symbolic
/// link, or a file only reachable through one, is refused by name.
fn strict_file<'a>(fs: &'a FlatFs, path: &str) -> std::result::Result<&'a Entry, String> {
    let mut at = String::new();
    for comp in path.trim_start_matches('/').split('/') {
        at.push('/');
        at.push_str(comp);
        match fs.get(&at).map(|e| &e.kind) {
            None => {
                return Err(format!(
                    "{path} is missing{}",
                    if at == path {
                        String::new()
                    } else {
                        format!(" ({at} is not in the image)")
                    }
                ))
            }
            Some(EntryKind::Symlink { target }) => {
                return Err(format!(
                    "{at} is a symbolic link to {target}; the conversion writes a real {} there",
                    if at == path { "file" } else { "directory" }
                ))
            }
            Some(EntryKind::Directory) if at != path => {}
            Some(EntryKind::File | EntryKind::Hardlink { .. }) if at == path => {}
            Some(_) => {
                return Err(format!(
                    "{at} is not a {} as the conversion wrote it",
                    if at == path {
                        "regular file"
                    } else {
                        "directory"
                    }
                ))
            }
        }
    }
    fs.get(path).ok_or_else(|| format!("{path} is missing"))
}

/// Read a file of `/cloak` (spooled) after [`strict_file`], refusing sizes above `max`.
fn read_strict(fs: &FlatFs, path: &str, max: u64) -> std::result::Result<Vec<u8>, String> {
    let e = strict_file(fs, path)?;
    if e.size > max {
        return Err(format!(
            "{path} has {} bytes, more than the {max} cloak reads for it",
            e.size
        ));
    }
    let p = fs.content_path(e).ok_or_else(|| {
        format!("{path}: its content arrived under another name (a hard link from outside /cloak)")
    })?;
    std::fs::read(&p).map_err(|err| format!("reading {path}: {err}"))
}

/// The trusted files and the loader entrypoint a manifest lists, as `(path, sha256)`.
fn trusted_list(manifest: &[u8], problems: &mut Vec<String>, what: &str) -> Vec<(String, String)> {
    let Some(root) = std::str::from_utf8(manifest)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
    else {
        problems.push(format!("{what} is not valid TOML"));
        return Vec::new();
    };
    let mut expected = Vec::new();
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
            _ => problems.push(format!("{what}: a trusted file entry lacks uri or sha256")),
        }
    }
    expected
        .into_iter()
        .map(|(u, h)| (u.strip_prefix("file:").unwrap_or(&u).to_string(), h))
        .collect()
}

fn check_variant(fs: &FlatFs, prefix: &str, expected: Option<&str>, e: &Expected) -> Variant {
    let manifest_path = format!("{prefix}.manifest.sgx");
    let sig_path = format!("{prefix}.sig");
    let mut v = Variant {
        manifest: manifest_path.clone(),
        mrenclave: String::new(),
        signed_mrenclave: String::new(),
        expected_mrenclave: expected.map(str::to_string),
        mrsigner: String::new(),
        isvprodid: 0,
        isvsvn: 0,
        debug: false,
        enclave_size: 0,
        threads: 0,
        edmm: false,
        trusted_files: 0,
        problems: Vec::new(),
    };
    let inputs = (
        read_strict(fs, &manifest_path, MAX_MANIFEST),
        read_strict(fs, &sig_path, cloak_sgx::sigstruct::SIZE as u64),
        read_strict(fs, &format!("{RUNTIME_DIR}/sgx/libpal.so"), MAX_LIBPAL),
    );
    let (manifest, sig_bytes, libpal) = match inputs {
        (Ok(m), Ok(s), Ok(l)) => (m, s, l),
        (m, s, l) => {
            v.problems
                .extend([m.err(), s.err(), l.err()].into_iter().flatten());
            return v;
        }
    };
    let sig = match cloak_sgx::sigstruct::parse(&sig_bytes, &sig_path) {
        Ok(s) => s,
        Err(err) => {
            v.problems.push(err.to_string());
            return v;
        }
    };
    if let Err(err) = cloak_sgx::sigstruct::verify(&sig, &sig_path) {
        v.problems.push(err.to_string());
    }
    let view = cloak_sgx::sigstruct::view(&sig, prefix);
    v.signed_mrenclave = view.mr_enclave.clone();
    v.mrsigner = view.mr_signer.clone();
    v.isvprodid = view.isv_prod_id;
    v.isvsvn = view.isv_svn;
    let mask = u64::from_str_radix(view.flags_mask.trim_start_matches("0x"), 16).unwrap_or(0);
    let mut debug_reasons = Vec::new();
    if view.debug {
        debug_reasons.push("the SIGSTRUCT sets DEBUG".to_string());
    } else if mask & FLAG_DEBUG == 0 {
        debug_reasons.push(
            "the SIGSTRUCT's attribute mask leaves DEBUG open, so the signature also starts it in debug mode"
                .to_string(),
        );
    }
    if let Some(want) = &e.mrsigner {
        if &v.mrsigner != want {
            v.problems.push(format!(
                "{sig_path}: MRSIGNER {} is not the expected {want} (the enclave was signed with another key)",
                v.mrsigner
            ));
        }
    }
    if let Some(want) = expected {
        if v.signed_mrenclave != want {
            v.problems.push(format!(
                "{sig_path}: MRENCLAVE {} is not the expected {want}",
                v.signed_mrenclave
            ));
        }
    }
    // Bounds first (enclave size, threads): a manifest must not make the measurement run
    // for hours.
    let measured = match cloak_sgx::manifest::read(&manifest, &manifest_path) {
        Ok(m) => m,
        Err(err) => {
            v.problems.push(err.to_string());
            return v;
        }
    };
    v.enclave_size = measured.enclave_size;
    v.threads = measured.threads;
    v.edmm = measured.edmm;
    if measured.debug {
        debug_reasons.push("the manifest says sgx.debug = true".to_string());
    }
    if measured.debug != view.debug {
        v.problems.push(format!(
            "{manifest_path}: sgx.debug = {} but the SIGSTRUCT's DEBUG attribute is {}",
            measured.debug, view.debug
        ));
    }
    v.debug = !debug_reasons.is_empty();
    if v.debug && !e.allow_debug {
        v.problems.push(format!(
            "{prefix}: DEBUG ENCLAVE ({}): the host can read and change its memory, so it \
             protects nothing; convert without --debug for production (or pass --allow-debug \
             to accept it)",
            debug_reasons.join("; ")
        ));
    }
    match cloak_sgx::measure::mrenclave(&manifest, &libpal, &measured.layout()) {
        Ok(m) => {
            v.mrenclave = hex::encode(m);
            if v.mrenclave != v.signed_mrenclave {
                v.problems.push(format!(
                    "{manifest_path}: MRENCLAVE {} differs from the SIGSTRUCT's {} (the manifest or libpal.so was changed)",
                    v.mrenclave, v.signed_mrenclave
                ));
            }
        }
        Err(err) => v.problems.push(err.to_string()),
    }
    if (view.isv_prod_id, view.isv_svn) != (measured.isvprodid, measured.isvsvn) {
        v.problems.push(format!(
            "{manifest_path}: isvprodid/isvsvn differ from the SIGSTRUCT"
        ));
    }
    // Every trusted file and the loader entrypoint must still hash to what the manifest says.
    // The enclave opens them through the image's links like any process: resolve them so.
    let trusted = trusted_list(&manifest, &mut v.problems, &manifest_path);
    v.trusted_files = trusted.len();
    for (path, hash) in trusted {
        match fs.resolve(&path).and_then(|e| e.sha256) {
            Some(d) if d.hex() == hash => {}
            Some(d) => v.problems.push(format!(
                "{path}: sha256 {} but the manifest trusts {hash}",
                d.hex()
            )),
            None => v.problems.push(format!(
                "{path}: trusted by the manifest but missing from the image"
            )),
        }
    }
    v
}

/// The entrypoint the conversion writes: the Gramine loader (through the shipped ELF
/// interpreter, or directly) starting `/cloak/app`, and no Cmd.
fn check_entrypoint(fs: &FlatFs, entrypoint: &[String], cmd: &[String]) -> Option<String> {
    let lib = format!("{RUNTIME_DIR}/lib");
    let tail = [
        format!("{RUNTIME_DIR}/sgx/loader"),
        format!("{RUNTIME_DIR}/sgx/libpal.so"),
        "init".to_string(),
        APP.to_string(),
    ];
    let shape_ok = match entrypoint.len() {
        4 => entrypoint == tail,
        7 => {
            let interp_ok = entrypoint[0]
                .strip_prefix(&format!("{lib}/"))
                .is_some_and(|n| !n.is_empty() && !n.contains('/') && n != "..");
            interp_ok
                && entrypoint[1] == "--library-path"
                && entrypoint[2] == lib
                && entrypoint[3..] == tail
        }
        _ => false,
    };
    let wrote = format!(
        "[{RUNTIME_DIR}/lib/ld-linux-x86-64.so.2, --library-path, {lib}, {}]",
        tail.join(", ")
    );
    if !shape_ok || !cmd.is_empty() {
        return Some(format!(
            "the config's Entrypoint {entrypoint:?} and Cmd {cmd:?} do not start the measured enclave; \
             the conversion writes Entrypoint {wrote} and no Cmd"
        ));
    }
    let programs = [&entrypoint[0], &entrypoint[entrypoint.len() - 4]];
    for p in programs {
        if let Err(why) = strict_file(fs, p) {
            return Some(format!("the entrypoint's program: {why}"));
        }
    }
    None
}

/// The measurements the conversion recorded in labels and annotations must match the image.
fn check_labels(image: &Image, variants: &[Variant], problems: &mut Vec<String>) {
    let labels = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let measured = [
        ("mrenclave", variants.first().map(|v| v.mrenclave.as_str())),
        ("mrenclave2", variants.get(1).map(|v| v.mrenclave.as_str())),
        ("mrsigner", variants.first().map(|v| v.mrsigner.as_str())),
    ];
    for (key, value) in measured {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let name = format!("{ANNOTATION_PREFIX}{key}");
        for (place, recorded) in [
            ("config label", labels.get(&name)),
            ("manifest annotation", image.manifest.annotations.get(&name)),
        ] {
            if let Some(r) = recorded.filter(|r| r.as_str() != value) {
                problems.push(format!(
                    "{place} {name} says {r} but the image measures {value} (the image changed after its conversion)"
                ));
            }
        }
    }
}

/// Layers added after cloak's own (their files are part of what was checked).
fn layers_after_conversion(image: &Image) -> Option<usize> {
    let history = image.config.extra.get("history")?.as_array()?;
    let with_layer: Vec<&serde_json::Value> = history
        .iter()
        .filter(|h| h.get("empty_layer").and_then(|e| e.as_bool()) != Some(true))
        .collect();
    if with_layer.len() != image.manifest.layers.len() {
        return None;
    }
    let last = with_layer.iter().rposition(|h| {
        h.get("created_by")
            .and_then(|c| c.as_str())
            .is_some_and(|c| c.starts_with("cloak convert --target sgx: manifest"))
    })?;
    Some(with_layer.len() - last - 1)
}

/// Measure and check a converted image.
pub async fn measure_image(
    src: &Source,
    platform: &PlatformSpec,
    expected: &Expected,
) -> Result<MeasureReport> {
    let image = resolve(src, platform).await?;
    let work = tempfile::tempdir()
        .map_err(|e| Error::Options(format!("cannot create a temporary directory: {e}")))?;
    // Every layer, as the runtime stacks them: a later layer that replaces a file of /cloak
    // is what gets measured.
    let fs = flatten(
        src,
        &image,
        ContentMode::SpoolUnder(work.path().to_path_buf(), vec!["/cloak".into()]),
        None,
    )
    .await?;
    let variants = vec![
        check_variant(&fs, APP, expected.mrenclave.as_deref(), expected),
        check_variant(&fs, APP_EDMM, expected.mrenclave2.as_deref(), expected),
    ];
    let rc = image.config.config.clone().unwrap_or_default();
    let entrypoint = rc.entrypoint.unwrap_or_default();
    let cmd = rc.cmd.unwrap_or_default();
    let mut problems = Vec::new();
    problems.extend(check_entrypoint(&fs, &entrypoint, &cmd));
    check_labels(&image, &variants, &mut problems);
    let mut warnings = Vec::new();
    for v in variants.iter().filter(|v| v.debug && expected.allow_debug) {
        warnings.push(format!(
            "{}: DEBUG ENCLAVE (accepted with --allow-debug): the host can read and change its memory",
            v.manifest
        ));
    }
    match layers_after_conversion(&image) {
        Some(0) => {}
        Some(n) => warnings.push(format!(
            "{n} layer(s) were added after cloak's; their files were included in this check"
        )),
        None => warnings.push(
            "cloak's layers could not be identified in the config's history; every layer was included in this check".into(),
        ),
    }
    let mut not_checked = vec![
        format!(
            "the provenance of the Gramine runtime under {RUNTIME_DIR} (the loader, its ELF \
             interpreter and libraries run outside the enclave and are not measured; only \
             libpal.so is part of MRENCLAVE)"
        ),
        "the platform: SGX1 or EDMM support, its TCB level and remote attestation".into(),
        "settings given at run time (docker run --entrypoint, --env, volumes) and files outside \
         sgx.trusted_files (allowed files and encrypted mounts may change freely)"
            .into(),
    ];
    if expected.mrsigner.is_none() {
        not_checked.push(
            "who signed: no --expect-mrsigner was given, so a signature by any key is accepted"
                .into(),
        );
    }
    if expected.mrenclave.is_none() {
        not_checked.push(
            "which enclave: no --expect-mrenclave was given, so any self-consistent enclave is accepted"
                .into(),
        );
    }
    if expected.mrenclave2.is_none() {
        not_checked.push(format!(
            "the EDMM variant {APP_EDMM} against an expected value (--expect-mrenclave2)"
        ));
    }
    let ok = problems.is_empty() && variants.iter().all(|v| v.problems.is_empty());
    Ok(MeasureReport {
        image: image.reference.clone(),
        digest: image.raw_manifest.digest.to_string(),
        entrypoint,
        cmd,
        expected_mrsigner: expected.mrsigner.clone(),
        variants,
        problems,
        warnings,
        not_checked,
        ok,
    })
}
