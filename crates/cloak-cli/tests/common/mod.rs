//! Shared support for the CLI's end-to-end suites.
#![allow(dead_code)]

pub mod browser;
pub mod fake;
pub mod images;
pub mod manager;
pub mod operator;
pub mod postgres;
pub mod registry;
pub mod tree;

use std::path::Path;
use std::process::{Command, Output};

/// The `cloak` binary built for these tests.
pub fn cloak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cloak"))
}

/// Run a command, returning its output; panic with stderr when it fails and `ok` is expected.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-deps.sh)"))
}

/// Run and require success.
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run and require failure; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Say whether a CPU- or host-specific path was exercised: one line on stderr (shown with
/// `--nocapture`) and, when `CLOAK_TEST_PATHS` names a file (scripts/test.sh sets it and prints
/// a summary of tested and untested paths), one line appended there. The same as cloak-nitro's
/// unit-test helper; test binaries share no code crate.
pub fn test_path(path: &str, tested: bool, why: &str) {
    let line = format!(
        "{}\t{path}\t{why}\n",
        if tested { "tested" } else { "NOT TESTED" }
    );
    eprint!("cloak test path: {line}");
    if let Some(file) = std::env::var_os("CLOAK_TEST_PATHS") {
        use std::io::Write;
        // One short write with O_APPEND: lines from parallel tests do not interleave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .expect("CLOAK_TEST_PATHS is writable");
        f.write_all(line.as_bytes()).unwrap();
    }
}

/// `skopeo` with arguments.
pub fn skopeo(args: &[&str]) -> Command {
    let mut c = Command::new("skopeo");
    c.args(args);
    c
}

/// `umoci unpack` of `layout:tag` into `bundle` (as root: owners are kept); returns the rootfs path.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> std::path::PathBuf {
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

/// `cloak ls-files -o json IMAGE [extra args]` as a tree snapshot.
pub fn cloak_tree(image: &str, extra: &[&str]) -> tree::Tree {
    let out = ok(cloak()
        .args(["ls-files", "-o", "json"])
        .args(extra)
        .arg(image));
    tree::from_ls_files(&out.stdout)
}
