//! The static launcher, for real, inside a chroot holding only busybox: it needs no libraries,
//! applies WORKDIR, USER and the environment rules, and refuses arguments it was not allowed.
//! Needs the static build (`scripts/build-launcher.sh`, run by `scripts/test.sh`) and root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn static_launcher() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/cloak-launcher");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-launcher.sh",
        p.display()
    );
    p
}

fn rootfs(dir: &Path, cfg: &serde_json::Value) {
    for d in ["bin", "etc", "srv", "cloak/bin", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is installed");
    for app in ["sh", "id", "pwd", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(app)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::copy(static_launcher(), dir.join("cloak/bin/cloak-launcher")).unwrap();
    std::fs::write(dir.join("cloak/run.json"), cfg.to_string()).unwrap();
}

fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new("/usr/sbin/chroot")
        .arg(dir)
        .arg("/cloak/bin/cloak-launcher")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn runs_the_app_with_docker_semantics_in_an_empty_root() {
    let tmp = tempfile::tempdir().unwrap();
    rootfs(
        tmp.path(),
        &serde_json::json!({
            "argv": ["sh", "-c", "echo \"$MODE $LEVEL $HOME $(pwd) $(id -u):$(id -g) $*\"; exit 3", "sh"],
            "env": ["PATH=/bin", "MODE=fixed"],
            "mutable_env": ["LEVEL=info"],
            "workdir": "/srv",
            "user": "app",
            "allow_cmdline_args": false
        }),
    );
    let out = run(tmp.path(), &[("LEVEL", "debug"), ("MODE", "ignored")], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fixed debug /srv /srv 1000:1000 \n"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the app's exit status is the launcher's"
    );

    let out = run(tmp.path(), &[], &["--extra"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not allowed"),
        "{out:?}"
    );
}
