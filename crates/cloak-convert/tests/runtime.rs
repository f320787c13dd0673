//! The Gramine runtime collector on a runtime image built here from real ELF files: a PAL and a
//! libsysdb compiled with gcc (no Gramine build is reachable here), and the host's `/bin/true` as
//! the loader, whose real library closure (libc, ld.so) must come along.

use std::path::Path;
use std::process::Command;

use cloak_convert::sgx::runtime::{collect, GRAMINE_DIR, RUNTIME_DIR};
use cloak_image::flatten::{ContentMode, Flattener};

fn gcc_shared(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-nostdlib", "-O1", "-o"])
        .arg(&out)
        .arg(&c)
        .status()
        .expect("gcc is installed");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// A tar layer holding the runtime files at their Gramine paths plus the loader's libraries.
pub fn runtime_layer(dir: &Path, with_libpal: bool) -> Vec<u8> {
    let pal = gcc_shared(dir, "libpal.so", "int pal_data[1024] = {1}; int pal_bss[4096]; int pal_entry(void) { return pal_data[0] + pal_bss[0]; }\n");
    let sysdb = gcc_shared(dir, "libsysdb.so", "int libos_init(void) { return 42; }\n");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path.trim_start_matches('/'), data)
            .unwrap();
    };
    let g = GRAMINE_DIR;
    if with_libpal {
        add(&format!("{g}/sgx/libpal.so"), &pal);
    }
    add(
        &format!("{g}/sgx/loader"),
        &std::fs::read("/bin/true").unwrap(),
    );
    add(&format!("{g}/libsysdb.so"), &sysdb);
    add(&format!("{g}/runtime/glibc/libc.so.6"), &sysdb);
    add(
        "/lib/x86_64-linux-gnu/libc.so.6",
        &std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap(),
    );
    add(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &std::fs::read("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap(),
    );
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(
        &mut h,
        "lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    )
    .unwrap();
    b.into_inner().unwrap()
}

#[test]
fn collects_the_runtime_and_the_loader_closure() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Flattener::new(ContentMode::Spool(tmp.path().join("spool"))).unwrap();
    f.apply_layer("runtime", runtime_layer(tmp.path(), true).as_slice())
        .unwrap();
    let fs = f.finish();
    let rt = collect(&fs, "test-runtime", GRAMINE_DIR).unwrap();
    let files: Vec<&str> = rt.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            "lib/ld-linux-x86-64.so.2",
            "lib/libc.so.6",
            "libsysdb.so",
            "runtime/glibc/libc.so.6",
            "sgx/libpal.so",
            "sgx/loader"
        ]
    );
    assert_eq!(
        rt.loader_argv,
        [
            format!("{RUNTIME_DIR}/lib/ld-linux-x86-64.so.2"),
            "--library-path".into(),
            format!("{RUNTIME_DIR}/lib"),
            format!("{RUNTIME_DIR}/sgx/loader"),
            format!("{RUNTIME_DIR}/sgx/libpal.so"),
            "init".into(),
        ]
    );
    assert_eq!(std::fs::read(&rt.libpal).unwrap()[..4], *b"\x7fELF");
}

#[test]
fn a_runtime_image_without_libpal_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Flattener::new(ContentMode::Spool(tmp.path().join("spool"))).unwrap();
    f.apply_layer("runtime", runtime_layer(tmp.path(), false).as_slice())
        .unwrap();
    let err = collect(&f.finish(), "oci:rt:1", GRAMINE_DIR)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("oci:rt:1")
            && err.contains("sgx/libpal.so")
            && err.contains("--runtime-image"),
        "{err}"
    );
}
