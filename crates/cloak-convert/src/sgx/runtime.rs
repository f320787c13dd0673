//! The Gramine runtime taken from a runtime image: the files the enclave needs, plus the
//! shared-library closure of the untrusted loader, relocated into one self-contained folder
//! so that the result runs on any base distribution (musl included).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cloak_image::flatten::{EntryKind, FlatFs};
use cloak_image::layer::{FileContent, LayerEntry};
use cloak_image::Digest;

use crate::error::{Error, Result};
use cloak_sgx::elf::dynamic_info;

/// Where official Gramine images (and the Debian/Ubuntu packages) install Gramine.
pub const GRAMINE_DIR: &str = "/usr/lib/x86_64-linux-gnu/gramine";
/// Where cloak puts the runtime in the output image.
pub const RUNTIME_DIR: &str = "/cloak/gramine";
/// Library directories searched for the loader's dependencies, in order.
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// The runtime files, ready to become a layer.
#[derive(Debug)]
pub struct Runtime {
    /// Layer entries under [`RUNTIME_DIR`].
    pub entries: Vec<LayerEntry>,
    /// `sgx/libpal.so` on local disk (measured into MRENCLAVE).
    pub libpal: PathBuf,
    /// sha256 of `libsysdb.so` (the manifest's `loader.entrypoint.sha256`).
    pub libsysdb_sha256: Digest,
    /// Command that starts the enclave from the output image, before the manifest prefix.
    pub loader_argv: Vec<String>,
    /// Relative paths (under [`RUNTIME_DIR`]) of every file, with their sha256.
    pub files: BTreeMap<String, Digest>,
}

fn file_of<'a>(
    fs: &'a FlatFs,
    path: &str,
    image: &str,
    hint: &str,
) -> Result<&'a cloak_image::flatten::Entry> {
    match fs.resolve(path) {
        Some(e) if e.has_content() => Ok(e),
        _ => Err(Error::Options(format!(
            "runtime image {image} has no file {path}; {hint}"
        ))),
    }
}

/// Collect the runtime from the flattened (spooled) runtime image `fs`.
pub fn collect(fs: &FlatFs, image: &str, gramine_dir: &str) -> Result<Runtime> {
    let hint = "pass an image with Gramine installed there as --runtime-image";
    let libpal = file_of(fs, &format!("{gramine_dir}/sgx/libpal.so"), image, hint)?;
    let loader = file_of(fs, &format!("{gramine_dir}/sgx/loader"), image, hint)?;
    let libsysdb = file_of(fs, &format!("{gramine_dir}/libsysdb.so"), image, hint)?;
    if fs.get(&format!("{gramine_dir}/runtime/glibc")).is_none() {
        return Err(Error::Options(format!(
            "runtime image {image} has no directory {gramine_dir}/runtime/glibc; {hint}"
        )));
    }
    let mut files: BTreeMap<String, Digest> = BTreeMap::new();
    let mut entries: Vec<LayerEntry> = vec![
        LayerEntry::dir("/cloak", 0o755),
        LayerEntry::dir(RUNTIME_DIR, 0o755),
    ];
    let mut add_file =
        |rel: &str, e: &cloak_image::flatten::Entry, mode: u32, entries: &mut Vec<LayerEntry>| {
            let path = fs.content_path(e).expect("spooled runtime image");
            entries.push(LayerEntry::file(
                format!("{RUNTIME_DIR}/{rel}"),
                mode,
                FileContent::Path(path),
            ));
            files.insert(rel.to_string(), e.sha256.expect("regular file"));
        };
    let prefix = format!("{gramine_dir}/");
    for e in fs.entries().iter().filter(|e| e.path.starts_with(&prefix)) {
        let rel = &e.path[prefix.len()..];
        if rel.starts_with("lib/") || rel == "lib" {
            continue; // reserved for the loader's libraries
        }
        match &e.kind {
            EntryKind::Directory => {
                entries.push(LayerEntry::dir(format!("{RUNTIME_DIR}/{rel}"), e.mode))
            }
            EntryKind::File | EntryKind::Hardlink { .. } => add_file(rel, e, e.mode, &mut entries),
            // Links may point anywhere in the runtime image: store what they name.
            EntryKind::Symlink { .. } => {
                if let Some(t) = fs.resolve(&e.path).filter(|t| t.has_content()) {
                    add_file(rel, t, t.mode, &mut entries);
                }
            }
            _ => {}
        }
    }
    // The loader runs outside the enclave as an ordinary dynamic executable: ship its
    // interpreter and library closure and start it through that interpreter.
    let read = |e: &cloak_image::flatten::Entry, what: &str| -> Result<Vec<u8>> {
        let p = fs.content_path(e).expect("spooled runtime image");
        std::fs::read(&p)
            .map_err(|err| Error::Options(format!("reading {what} from {image}: {err}")))
    };
    let loader_info = dynamic_info(
        &read(loader, "sgx/loader")?,
        &format!("{image}:{gramine_dir}/sgx/loader"),
    )?;
    entries.push(LayerEntry::dir(format!("{RUNTIME_DIR}/lib"), 0o755));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = loader_info.needed.clone();
    while let Some(soname) = queue.pop() {
        if !seen.insert(soname.clone()) {
            continue;
        }
        let found = LIB_DIRS
            .iter()
            .find_map(|d| fs.resolve(&format!("{d}/{soname}")).filter(|e| e.has_content()))
            .ok_or_else(|| {
                Error::Options(format!(
                    "runtime image {image}: library {soname} needed by the Gramine loader is not in {}",
                    LIB_DIRS.join(", ")
                ))
            })?;
        let info = dynamic_info(&read(found, &soname)?, &format!("{image}:{soname}"))?;
        queue.extend(info.needed);
        add_file(&format!("lib/{soname}"), found, 0o755, &mut entries);
    }
    let mut loader_argv = Vec::new();
    if let Some(interp) = &loader_info.interpreter {
        let e = file_of(fs, interp, image, "the loader's ELF interpreter is missing")?;
        let name = interp.rsplit('/').next().unwrap_or("ld.so").to_string();
        // libc usually lists the interpreter among its DT_NEEDED; ship it once.
        if !seen.contains(&name) {
            add_file(&format!("lib/{name}"), e, 0o755, &mut entries);
        }
        loader_argv.extend([
            format!("{RUNTIME_DIR}/lib/{name}"),
            "--library-path".to_string(),
            format!("{RUNTIME_DIR}/lib"),
        ]);
    }
    loader_argv.extend([
        format!("{RUNTIME_DIR}/sgx/loader"),
        format!("{RUNTIME_DIR}/sgx/libpal.so"),
        "init".to_string(),
    ]);
    Ok(Runtime {
        entries,
        libpal: fs.content_path(libpal).expect("spooled runtime image"),
        libsysdb_sha256: libsysdb.sha256.expect("regular file"),
        loader_argv,
        files,
    })
}
