//! `cloak convert --target sgx` end to end through a real registry, checked with skopeo, umoci,
//! a TOML parser and `cloak measure`; plus every refusal the issue lists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{busybox, gramine_runtime, hostile, multilayer, T};
use common::registry::Registry;
use common::tree::from_dir;
use common::*;

struct Env {
    reg: Registry,
    tmp: tempfile::TempDir,
    runtime: String,
    key: PathBuf,
}

fn setup() -> Env {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let rt = gramine_runtime(&tmp.path().join("runtime"), true);
    let key = tmp.path().join("enclave-key.pem");
    ok(Command::new("openssl")
        .args(["genrsa", "-3", "-out"])
        .arg(&key)
        .arg("3072"));
    Env {
        runtime: format!("oci:{}:1", rt.display()),
        reg,
        tmp,
        key,
    }
}

impl Env {
    fn push(&self, layout: &Path, name: &str) -> String {
        let remote = format!("docker://{}/{name}", self.reg.addr());
        ok(cloak().args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &remote,
        ]));
        remote
    }

    fn convert(&self, input: &str, output: &str, extra: &[&str]) -> std::process::Output {
        let mut cmd = cloak();
        cmd.args([
            "convert",
            "--target",
            "sgx",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]);
        if !extra.contains(&"--runtime-image") {
            cmd.args(["--runtime-image", &self.runtime]);
        }
        if !extra.contains(&"--signing-key") {
            cmd.args(["--signing-key", &format!("file:{}", self.key.display())]);
        }
        run(cmd.args(extra).arg(input).arg(output))
    }
}

/// sha256 of `path` inside `root`, following symlinks as the enclave would (inside the root).
fn sha256_in(root: &Path, path: &str) -> String {
    let mut p = root.join(path.trim_start_matches('/'));
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = root.join(t.strip_prefix("/").unwrap()),
            Ok(t) => p = p.parent().unwrap().join(t),
            Err(_) => break,
        }
    }
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&p).unwrap(),
    ))
}

#[test]
fn converts_busybox_and_a_script_entrypoint_image_reproducibly() {
    let env = setup();
    for (name, layout) in [
        ("busybox", busybox(&env.tmp.path().join("bb"))),
        ("script", multilayer(&env.tmp.path().join("ml"), false)),
    ] {
        let input = env.push(&layout, &format!("{name}:1"));
        let output = format!("docker://{}/{name}-sgx:1", env.reg.addr());
        let out = env.convert(
            &input,
            &output,
            &["--isvprodid", "7", "--isvsvn", "2", "--mem-size", "512M"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for field in [
            "newImage",
            "imageSHA",
            "imageSize",
            "isvprodid",
            "isvsvn",
            "mrenclave",
            "mrenclave2",
            "mrsigner",
            "runtimeDigest",
            "options",
        ] {
            assert!(
                !report[field].is_null(),
                "{name}: report lacks {field}: {report}"
            );
        }
        assert_eq!(report["isvprodid"], 7);
        assert_eq!(report["mrenclave"].as_str().unwrap().len(), 64);
        assert_ne!(report["mrenclave"], report["mrenclave2"]);

        // reproducible: the same input, options and key give the same image
        let again = env.convert(
            &input,
            &format!("docker://{}/{name}-sgx:again", env.reg.addr()),
            &["--isvprodid", "7", "--isvsvn", "2", "--mem-size", "512M"],
        );
        let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(
            again["imageDigest"], report["imageDigest"],
            "{name}: two conversions differ"
        );

        // the output unpacks with umoci (via skopeo), and the manifest trusts exactly the files
        let local = env.tmp.path().join(format!("{name}-out"));
        ok(&mut skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &output,
            &format!("oci:{}:1", local.display()),
        ]));
        let rootfs = umoci_unpack(&local, "1", &env.tmp.path().join(format!("{name}-bundle")));
        let manifest: toml::Table = std::fs::read_to_string(rootfs.join("cloak/app.manifest.sgx"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(manifest["sgx"]["isvprodid"].as_integer(), Some(7));
        assert_eq!(manifest["sgx"]["enclave_size"].as_str(), Some("512M"));
        assert_eq!(manifest["sgx"]["remote_attestation"].as_str(), Some("dcap"));
        assert_eq!(
            manifest["libos"]["entrypoint"].as_str(),
            Some("/cloak/bin/cloak-launcher")
        );
        let trusted: std::collections::BTreeMap<String, String> = manifest["sgx"]["trusted_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["uri"].as_str().unwrap()["file:".len()..].to_string(),
                    t["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let input_tree = from_dir(&umoci_unpack(
            &layout,
            "1",
            &env.tmp.path().join(format!("{name}-in")),
        ));
        for (path, node) in &input_tree {
            let excluded =
                path == "/etc/hosts" || path.starts_with("/tmp/") || path.starts_with("/run/");
            match (&node.sha256, node.kind.as_str()) {
                (Some(sha), _) if !excluded => {
                    assert_eq!(trusted.get(path), Some(sha), "{name}: {path}")
                }
                _ if node.kind == "symlink" && !excluded => {
                    assert!(
                        trusted.contains_key(path),
                        "{name}: symlink {path} to a file is trusted"
                    );
                }
                _ => assert!(
                    !trusted.contains_key(path),
                    "{name}: {path} must not be trusted"
                ),
            }
        }
        for (path, sha) in &trusted {
            assert_eq!(&sha256_in(&rootfs, path), sha, "{name}: {path} hash");
        }
        assert!(
            trusted.contains_key("/cloak/run.json")
                && trusted.contains_key("/cloak/bin/cloak-launcher")
        );
        assert!(!trusted
            .keys()
            .any(|p| p.ends_with(".manifest.sgx") || p.ends_with(".sig")));

        // the SIGSTRUCT verifies and names the same measurements
        let sig = ok(cloak()
            .args(["sgx", "sigstruct", "-o", "json"])
            .arg(rootfs.join("cloak/app.sig")));
        let view: serde_json::Value = serde_json::from_slice(&sig.stdout).unwrap();
        assert_eq!(view["mr_enclave"], report["mrenclave"]);
        assert_eq!(view["mr_signer"], report["mrsigner"]);
        assert_eq!(view["signature_valid"], true);
        let from_image = ok(cloak().args([
            "sgx",
            "sigstruct",
            "-o",
            "json",
            "--tls-verify=false",
            "--edmm",
            &output,
        ]));
        let view2: serde_json::Value = serde_json::from_slice(&from_image.stdout).unwrap();
        assert_eq!(
            view2["mr_enclave"], report["mrenclave2"],
            "sigstruct read from the image"
        );
        let low = ok(cloak()
            .args(["sgx", "mrenclave", "--manifest"])
            .arg(rootfs.join("cloak/app-edmm.manifest.sgx"))
            .arg("--libpal")
            .arg(rootfs.join("cloak/gramine/sgx/libpal.so")));
        assert_eq!(
            String::from_utf8_lossy(&low.stdout).trim(),
            report["mrenclave2"].as_str().unwrap()
        );

        // the config starts the loader through the bundled interpreter, and the input layers are kept
        let inspect: serde_json::Value = serde_json::from_slice(
            &ok(cloak().args(["inspect", "-o", "json", "--tls-verify=false", &output])).stdout,
        )
        .unwrap();
        let ep: Vec<&str> = inspect["entrypoint"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ep.last(), Some(&"/cloak/app"));
        assert!(ep[0].ends_with("ld-linux-x86-64.so.2"));
        let in_layers: serde_json::Value = serde_json::from_slice(
            &ok(cloak().args(["inspect", "-o", "json", "--tls-verify=false", &input])).stdout,
        )
        .unwrap();
        let n = in_layers["layers"].as_array().unwrap().len();
        assert_eq!(
            inspect["layers"].as_array().unwrap()[..n],
            in_layers["layers"].as_array().unwrap()[..]
        );

        assert!(ok(cloak().args(["measure", "--tls-verify=false", &output]))
            .status
            .success());
    }
}

/// Repack an OCI layout image after `change` edits its unpacked root file system.
fn tamper(layout: &Path, bundle: &Path, change: impl FnOnce(&Path)) {
    let rootfs = umoci_unpack(layout, "1", bundle);
    change(&rootfs);
    ok(Command::new("umoci")
        .arg("repack")
        .arg("--image")
        .arg(format!("{}:1", layout.display()))
        .arg(bundle));
}

#[test]
fn measure_reports_a_changed_trusted_file_or_manifest_byte() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "bb:1");
    let out_dir = env.tmp.path().join("converted");
    let output = format!("oci:{}:1", out_dir.display());
    let o = env.convert(&input, &output, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(cloak().args(["measure", &output]));

    let copy = |name: &str| {
        let dir = env.tmp.path().join(name);
        ok(cloak().args(["copy", &output, &format!("oci:{}:1", dir.display())]));
        dir
    };
    let file = copy("tampered-file");
    tamper(&file, &env.tmp.path().join("b1"), |root| {
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nevil:x:0:0::/:/bin/sh\n",
        )
        .unwrap()
    });
    let err = run(cloak().args([
        "measure",
        "-o",
        "text",
        &format!("oci:{}:1", file.display()),
    ]));
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stdout).contains("/etc/passwd: sha256"),
        "{err:?}"
    );

    let manifest = copy("tampered-manifest");
    tamper(&manifest, &env.tmp.path().join("b2"), |root| {
        let p = root.join("cloak/app.manifest.sgx");
        let text =
            std::fs::read_to_string(&p)
                .unwrap()
                .replacen("max_threads = 4", "max_threads = 5", 1);
        std::fs::write(p, text).unwrap();
    });
    let err = run(cloak().args([
        "measure",
        "-o",
        "text",
        &format!("oci:{}:1", manifest.display()),
    ]));
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stdout).contains("differs from the SIGSTRUCT"),
        "{err:?}"
    );
}

#[test]
fn bad_input_is_refused_before_anything_is_pushed() {
    let env = setup();
    let bb = env.push(&busybox(&env.tmp.path().join("bb")), "bb:1");
    // An image with neither entrypoint nor cmd (images::single_layer would set Cmd ["/x"])
    let empty = env.tmp.path().join("empty");
    common::images::Layout::new(&empty)
        .layer(
            common::images::Comp::Gzip,
            common::images::tar(&[T::File("x", 0o644, 0, b"x")]),
        )
        .finish("1", "amd64", serde_json::json!({}));
    let empty = env.push(&empty, "empty:1");
    let weak_key = env.tmp.path().join("f4.pem");
    ok(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&weak_key)
        .arg("3072"));
    let no_pal = gramine_runtime(&env.tmp.path().join("nopal"), false);
    // `/cloak\0x/run.json` (a GNU long name), `/cloak\0/run.json` (a PAX path).
    let nul_long = hostile(&env.tmp.path().join("nul-long"), "nul-gnu-long-name");
    let nul_pax = hostile(&env.tmp.path().join("nul-pax"), "nul-pax-path");
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "mem",
            bb.clone(),
            vec!["--mem-size".into(), "300M".into()],
            "not a power of two",
        ),
        (
            "threads0",
            bb.clone(),
            vec!["--threads".into(), "0".into()],
            "outside 1..=4096",
        ),
        (
            "threads4097",
            bb.clone(),
            vec!["--threads".into(), "4097".into()],
            "outside 1..=4096",
        ),
        ("nocmd", empty.clone(), vec![], "neither Entrypoint nor Cmd"),
        (
            "key",
            bb.clone(),
            vec![
                "--signing-key".into(),
                format!("file:{}", weak_key.display()),
            ],
            "exponent 3",
        ),
        (
            "runtime",
            bb.clone(),
            vec![
                "--runtime-image".into(),
                format!("oci:{}:1", no_pal.display()),
            ],
            "sgx/libpal.so",
        ),
        (
            "conflict",
            bb.clone(),
            vec!["--manifest-options".into(), "sgx.max_threads=8".into()],
            "conflicts",
        ),
        (
            "nul-long-name",
            format!("oci:{}:1", nul_long.display()),
            vec![],
            "entry cloak\\0x/run.json contains a NUL byte",
        ),
        (
            "nul-pax-path",
            format!("oci:{}:1", nul_pax.display()),
            vec![],
            "entry cloak\\0/run.json contains a NUL byte",
        ),
    ];
    let blobs_before = env.reg.stored_blobs();
    for (name, input, extra, msg) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = env.convert(
            &input,
            &format!("docker://{}/refused-{name}:1", env.reg.addr()),
            &extra,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(err.contains(msg), "{name}: {err}");
        assert!(
            !env.reg.has_tag(&format!("refused-{name}:1")),
            "{name}: something was pushed"
        );
        // Names are refused while the layers stream, after the SGX pipeline has started
        // copying the base layers to the destination (concurrently, by design): those blobs
        // may stay in the registry, untagged and with no manifest. Everything else is refused
        // before anything is pushed.
        if name.starts_with("nul-") {
            continue;
        }
        // Not a blob, not an upload, not an empty repository: the registry's storage is as
        // it was before the refused conversions.
        let refused: Vec<String> = env
            .reg
            .stored_repositories()
            .into_iter()
            .filter(|r| r.starts_with("refused-"))
            .collect();
        assert!(refused.is_empty(), "{name}: stored {refused:?}");
        assert_eq!(
            env.reg.stored_blobs(),
            blobs_before,
            "{name}: new blobs stored"
        );
    }
    assert!(
        ["bb", "empty"]
            .iter()
            .all(|r| env.reg.stored_repositories().contains(*r)),
        "the storage scan finds the pushed repositories: {:?}",
        env.reg.stored_repositories()
    );
}

/// `cloak measure` checks what users think it checks: each way to change a converted image that
/// still verifies against its own SIGSTRUCTs fails with exit 1 and its reason named, and the
/// untouched image passes with every expected value given.
#[test]
fn measure_fails_on_each_way_around_it_and_passes_the_untouched_image() {
    let env = setup();
    let input = env.push(&busybox(&env.tmp.path().join("bb")), "bb:1");
    let out_dir = env.tmp.path().join("converted");
    let output = format!("oci:{}:1", out_dir.display());
    let o = env.convert(&input, &output, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let [mrenclave, mrenclave2, mrsigner] =
        ["mrenclave", "mrenclave2", "mrsigner"].map(|k| report[k].as_str().unwrap().to_string());
    let expect = |image: &str| -> Vec<String> {
        [
            "measure",
            "-o",
            "text",
            "--expect-mrenclave",
            &mrenclave,
            "--expect-mrenclave2",
            &mrenclave2,
            "--expect-mrsigner",
            &mrsigner,
            image,
        ]
        .map(str::to_string)
        .to_vec()
    };

    // untouched: passes, JSON has every value and says what was not checked
    let json: serde_json::Value = serde_json::from_slice(
        &ok(cloak()
            .args(["measure", "-o", "json"])
            .args(&expect(&output)[3..]))
        .stdout,
    )
    .unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["variants"][0]["mrenclave"], mrenclave.as_str());
    assert_eq!(json["variants"][1]["mrenclave"], mrenclave2.as_str());
    assert_eq!(json["variants"][0]["mrsigner"], mrsigner.as_str());
    assert_eq!(json["variants"][0]["debug"], false);
    assert_eq!(json["variants"][0]["enclaveSize"], 256u64 << 20);
    assert!(json["notChecked"].as_array().unwrap().iter().any(|n| n
        .as_str()
        .unwrap()
        .contains("provenance of the Gramine runtime")));

    let copy = |name: &str| {
        let dir = env.tmp.path().join(name);
        ok(cloak().args(["copy", &output, &format!("oci:{}:1", dir.display())]));
        dir
    };
    let sign = |root: &Path, key: &Path, prefix: &str| {
        ok(cloak()
            .args(["sgx", "sign", "--date", "2024-01-01", "--manifest"])
            .arg(root.join(format!("cloak/{prefix}.manifest.sgx")))
            .arg("--libpal")
            .arg(root.join("cloak/gramine/sgx/libpal.so"))
            .arg("--key")
            .arg(format!("file:{}", key.display()))
            .arg("--output")
            .arg(root.join(format!("cloak/{prefix}.sig"))));
    };
    let other_key = env.tmp.path().join("other-key.pem");
    ok(Command::new("openssl")
        .args(["genrsa", "-3", "-out"])
        .arg(&other_key)
        .arg("3072"));
    let fails_with = |layout: &Path, extra: &[&str], reason: &str| {
        let image = format!("oci:{}:1", layout.display());
        let out = run(cloak().args(expect(&image)).args(extra));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{reason}: {stdout}");
        assert!(stdout.contains(reason), "wanted {reason:?} in:\n{stdout}");
    };

    // 1. re-signed with another key (a consistent image, but not ours)
    let resigned = copy("resigned");
    tamper(&resigned, &env.tmp.path().join("b1"), |root| {
        sign(root, &other_key, "app");
        sign(root, &other_key, "app-edmm");
    });
    fails_with(
        &resigned,
        &[],
        &format!("is not the expected {mrsigner} (the enclave was signed with another key)"),
    );

    // 2. the entrypoint no longer starts the enclave
    let entry = copy("entrypoint");
    ok(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:1", entry.display()))
        .args(["--config.entrypoint", "/bin/sh"]));
    fails_with(&entry, &[], "do not start the measured enclave");

    // 3. an appended layer replaces the manifest, signed consistently with the same key
    let replaced = copy("replaced");
    tamper(&replaced, &env.tmp.path().join("b3"), |root| {
        let p = root.join("cloak/app.manifest.sgx");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("\n[attacker]\nchanged = true\n");
        std::fs::write(&p, text).unwrap();
        sign(root, &env.key, "app");
    });
    fails_with(&replaced, &[], &format!("is not the expected {mrenclave}"));
    fails_with(&replaced, &[], "the image changed after its conversion");

    // 4. a debug enclave: fails unless --allow-debug, which still warns
    let debug_out = format!("oci:{}:1", env.tmp.path().join("debug").display());
    let o = env.convert(&input, &debug_out, &["--debug"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = run(cloak().args(["measure", "-o", "text", &debug_out]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DEBUG ENCLAVE"), "{stdout}");
    let out = ok(cloak().args(["measure", "-o", "text", "--allow-debug", &debug_out]));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("WARNING: /cloak/app.manifest.sgx: DEBUG ENCLAVE"));

    // 5. a manifest naming a huge enclave (days of measuring): refused before measuring
    let huge = copy("huge");
    tamper(&huge, &env.tmp.path().join("b5"), |root| {
        let p = root.join("cloak/app.manifest.sgx");
        let text = std::fs::read_to_string(&p).unwrap().replacen(
            "enclave_size = \"256M\"",
            "enclave_size = \"0x4000000000000000\"",
            1,
        );
        assert!(text.contains("0x4000000000000000"));
        std::fs::write(&p, text).unwrap();
    });
    fails_with(&huge, &[], "exceeds 1024G");
}
