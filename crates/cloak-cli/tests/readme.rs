//! The README's claims that the other suites do not show, one test each: Docker schema 2
//! manifests and manifest lists, cross-repository mounts, every `cloak convert` option of both
//! targets through the CLI (or its refusal), the signing-key variants and `cloak sgx sign`,
//! SGX `--encrypt-layers`, every credential source, the documented exit codes, the peak memory
//! of a Nitro conversion, and buildah as a peer.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images::{busybox, gramine_runtime, multiarch, tar, Comp, Layout, T};
use common::registry::Registry;
use common::*;
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kernel() -> PathBuf {
    let k = workspace().join(".work/kernel/vmlinuz");
    if !k.exists() {
        ok(Command::new("bash").arg(workspace().join("scripts/fetch-kernel.sh")));
    }
    k
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn enclave_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    ok(Command::new("openssl")
        .args(["genrsa", "-3", "-out"])
        .arg(&key)
        .arg("3072"));
    key
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Docker v2 schema 2 manifests and manifest lists, written by skopeo (`--format v2s2`) into a
/// real registry, are read, flattened, selected by platform and converted like OCI ones.
#[test]
fn docker_schema2_manifests_and_manifest_lists_are_read_and_converted() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let bb = busybox(&tmp.path().join("bb"));
    let single = format!("docker://{}/v2s2/bb:1", reg.addr());
    ok(&mut skopeo(&[
        "copy",
        "-q",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", bb.display()),
        &single,
    ]));
    let raw: serde_json::Value = serde_json::from_slice(
        &ok(&mut skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &single,
        ]))
        .stdout,
    )
    .unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "skopeo wrote a Docker schema 2 manifest"
    );
    let inspect = json_of(&ok(cloak().args([
        "inspect",
        "-o",
        "json",
        "--tls-verify=false",
        &single,
    ])));
    assert_eq!(
        inspect["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(inspect["cmd"][0], "echo hello");
    assert_eq!(
        inspect["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    tree::assert_same(
        "v2s2 vs the OCI source",
        &cloak_tree(&format!("oci:{}:1", bb.display()), &[]),
        &cloak_tree(&single, &["--tls-verify=false"]),
    );
    // Converted from the schema 2 manifest: the EIF's PCRs are those of the OCI source (the
    // same layers and config), and a copy keeps the manifest bit for bit.
    let pcrs = |input: &str, name: &str| {
        let out = ok(cloak()
            .args([
                "convert",
                "--target",
                "nitro",
                "--quiet",
                "--src-tls-verify=false",
                "--kernel",
            ])
            .arg(kernel())
            .arg("--eif")
            .arg(tmp.path().join(format!("{name}.eif")))
            .args([input, "-"]));
        json_of(&out)["attributes"]["nitro_enclave"]["pcr2"].clone()
    };
    assert_eq!(
        pcrs(&single, "v2s2"),
        pcrs(&format!("oci:{}:1", bb.display()), "oci"),
        "the application ramdisk is the same whatever manifest format carried the layers"
    );
    let copied = format!("docker://{}/v2s2/copied:1", reg.addr());
    ok(cloak().args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &single,
        &copied,
    ]));
    let raw_copy = ok(&mut skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &copied,
    ]))
    .stdout;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw_copy).unwrap(),
        raw,
        "the copy keeps the schema 2 manifest"
    );

    // A Docker manifest list (skopeo converts the OCI index with --all --format v2s2).
    let ma = multiarch(&tmp.path().join("ma"));
    let list = format!("docker://{}/v2s2/list:1", reg.addr());
    ok(&mut skopeo(&[
        "copy",
        "-q",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", ma.display()),
        &list,
    ]));
    let list_bytes = ok(&mut skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &list,
    ]))
    .stdout;
    let raw: serde_json::Value = serde_json::from_slice(&list_bytes).unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{raw}"
    );
    for arch in ["amd64", "arm64"] {
        let platform = format!("linux/{arch}");
        let inspect = json_of(&ok(cloak().args([
            "inspect",
            "-o",
            "json",
            "--tls-verify=false",
            "--platform",
            &platform,
            &list,
        ])));
        let entry = raw["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap();
        assert_eq!(inspect["digest"], entry["digest"], "{arch}");
        assert_eq!(inspect["platform"], platform.as_str());
        assert_eq!(
            inspect["indexDigest"],
            format!("sha256:{}", sha256_hex(&list_bytes)).as_str(),
            "{arch}: selected from the list"
        );
        let t = cloak_tree(&list, &["--tls-verify=false", "--platform", &platform]);
        assert_eq!(
            t["/arch.txt"].sha256.as_deref(),
            Some(sha256_hex(arch.as_bytes()).as_str()),
            "{arch}"
        );
    }
    // Without --platform a conversion takes linux/amd64 from the list; arm64 is refused by
    // Nitro with the platform named.
    let out = ok(cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--src-tls-verify=false",
            "--entrypoint",
            "/arch.txt",
            "--kernel",
        ])
        .arg(kernel())
        .arg("--eif")
        .arg(tmp.path().join("list.eif"))
        .args([&list, "-"]));
    let amd64 = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap();
    assert_eq!(
        json_of(&out)["docker_info"]["docker_image_sha"],
        amd64["digest"]
    );
    let out = run(cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--src-tls-verify=false",
            "--platform",
            "linux/arm64",
            "--entrypoint",
            "/arch.txt",
            "--kernel",
        ])
        .arg(kernel())
        .arg("--eif")
        .arg(tmp.path().join("arm.eif"))
        .args([&list, "-"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("linux/arm64 image; Nitro Enclaves on x86_64 need linux/amd64"),
        "{}",
        stderr(&out)
    );
}

/// One registry access-log line per request: (method, path and query, status).
fn access_log(reg: &Registry) -> Vec<(String, String, u16)> {
    reg.log()
        .lines()
        .filter_map(|l| {
            // combined log format: ... "METHOD URI HTTP/1.1" STATUS SIZE ...
            let (_, rest) = l.split_once('"')?;
            let (request, rest) = rest.split_once('"')?;
            let mut r = request.split(' ');
            let (method, uri) = (r.next()?.to_string(), r.next()?.to_string());
            let status = rest.trim_start().split(' ').next()?.parse().ok()?;
            Some((method, uri, status))
        })
        .collect()
}

/// A copy between two repositories of one registry mounts every blob (`POST …?mount=&from=`,
/// answered 201) instead of uploading it: the registry's own access log shows the mounts and
/// no upload into the destination, and the report says `mounted`.
#[test]
fn a_copy_within_a_registry_mounts_blobs_across_repositories() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let bb = busybox(&tmp.path().join("bb"));
    let a = format!("docker://{}/mount/a:1", reg.addr());
    let b = format!("docker://{}/mount/b:1", reg.addr());
    ok(cloak().args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", bb.display()),
        &a,
    ]));
    let before = access_log(&reg).len();
    assert!(
        access_log(&reg)
            .iter()
            .any(|(m, u, _)| m == "PUT" && u.starts_with("/v2/mount/a/blobs/uploads/")),
        "the access log shows the first push's uploads: {}",
        reg.log()
    );
    let report = json_of(&ok(cloak().args([
        "copy",
        "-q",
        "-o",
        "json",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &a,
        &b,
    ])));
    let blobs = report["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 2, "config and one layer: {report}");
    assert!(blobs.iter().all(|b| b["action"] == "mounted"), "{report}");
    let log: Vec<_> = access_log(&reg).into_iter().skip(before).collect();
    let mounts: Vec<_> = log
        .iter()
        .filter(|(m, u, s)| {
            m == "POST"
                && u.starts_with("/v2/mount/b/blobs/uploads/")
                && u.contains("mount=sha256")
                && u.contains("from=mount%2Fa")
                && *s == 201
        })
        .collect();
    assert_eq!(mounts.len(), 2, "two mounts answered 201: {log:?}");
    assert!(
        !log.iter()
            .any(|(m, u, _)| (m == "PATCH" || m == "PUT")
                && u.starts_with("/v2/mount/b/blobs/uploads/")),
        "no blob was uploaded into mount/b: {log:?}"
    );
    assert!(reg.has_tag("mount/b:1"));
    // A different registry cannot mount: the blobs are streamed (and the report says so).
    let other = Registry::plain();
    let report = json_of(&ok(cloak().args([
        "copy",
        "-q",
        "-o",
        "json",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &a,
        &format!("docker://{}/mount/c:1", other.addr()),
    ])));
    assert!(report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "copied"));
}

struct Sgx {
    tmp: tempfile::TempDir,
    runtime: String,
    key: PathBuf,
}

fn sgx_env() -> Sgx {
    let tmp = tempfile::tempdir().unwrap();
    let rt = gramine_runtime(&tmp.path().join("runtime"), true);
    let key = enclave_key(tmp.path(), "enclave-key.pem");
    Sgx {
        runtime: format!("oci:{}:1", rt.display()),
        tmp,
        key,
    }
}

impl Sgx {
    fn convert(&self, input: &str, output: &str, extra: &[&str]) -> Output {
        let mut cmd = cloak();
        cmd.args([
            "convert",
            "--target",
            "sgx",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--runtime-image",
            &self.runtime,
        ]);
        if !extra.contains(&"--signing-key") {
            cmd.args(["--signing-key", &format!("file:{}", self.key.display())]);
        }
        run(cmd.args(extra).arg(input).arg(output))
    }

    /// Convert into an OCI layout and unpack it with umoci: (report, rootfs, layout).
    fn converted(&self, name: &str, input: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
        let layout = self.tmp.path().join(name);
        let out = self.convert(input, &format!("oci:{}:1", layout.display()), extra);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let rootfs = umoci_unpack(
            &layout,
            "1",
            &self.tmp.path().join(format!("{name}-bundle")),
        );
        (json_of(&out), rootfs)
    }
}

fn manifest_of(rootfs: &Path) -> toml::Table {
    std::fs::read_to_string(rootfs.join("cloak/app.manifest.sgx"))
        .unwrap()
        .parse()
        .unwrap()
}

fn run_json(rootfs: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(rootfs.join("cloak/run.json")).unwrap()).unwrap()
}

fn trusted(manifest: &toml::Table) -> BTreeSet<String> {
    manifest["sgx"]["trusted_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uri"].as_str().unwrap()["file:".len()..].to_string())
        .collect()
}

/// An image for the option tests: busybox, a data directory and a config that the options
/// override.
fn options_image(dir: &Path) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    Layout::new(dir)
        .layer(
            Comp::Gzip,
            tar(&[
                T::Dir("bin/", 0o755, 0),
                T::File("bin/busybox", 0o755, 0, &bb),
                T::Sym("bin/sh", "busybox"),
                T::Dir("app/", 0o755, 0),
                T::File("app/main.sh", 0o755, 0, b"#!/bin/sh\necho main\n"),
                T::Dir("data/", 0o755, 0),
                T::File("data/seed.txt", 0o644, 0, b"seed"),
                T::Dir("etc/", 0o755, 0),
                T::File("etc/app.conf", 0o644, 0, b"conf"),
            ]),
        )
        .finish(
            "1",
            "amd64",
            json!({"Entrypoint": ["/app/main.sh"], "Cmd": ["--default"], "Env": ["PATH=/bin", "IMAGE_ENV=1"], "WorkingDir": "/app"}),
        );
    dir.to_path_buf()
}

/// Every SGX option of `cloak convert --help` and the README reaches the manifest, the run
/// configuration, the SIGSTRUCT or the labels; `--options FILE` takes the EnclaveOS body and
/// flags win over it; `--core-dump-pattern` is refused with its reason.
#[test]
fn every_sgx_convert_option_changes_the_output_or_is_refused() {
    let env = sgx_env();
    let input = format!(
        "oci:{}:1",
        options_image(&env.tmp.path().join("img")).display()
    );
    let (base, base_root) = env.converted("base", &input, &[]);
    let base_manifest = manifest_of(&base_root);
    assert_eq!(base_manifest["sgx"]["enclave_size"].as_str(), Some("256M"));
    assert_eq!(base_manifest["sgx"]["max_threads"].as_integer(), Some(4));
    assert_eq!(base_manifest["sgx"]["debug"].as_bool(), Some(false));
    assert_eq!(
        run_json(&base_root)["argv"],
        json!(["/app/main.sh", "--default"])
    );

    let cert = r#"{"issuer":"MANAGER_CA","subject":"app.example","keyPath":"/run/k.pem","certPath":"/run/c.pem"}"#;
    // Certificates come from a manager: its address, the CA it is pinned to, the app.
    let manager_ca = rcgen::generate_simple_self_signed(vec!["manager.example".into()])
        .unwrap()
        .cert
        .pem();
    let manager_ca_file = env.tmp.path().join("manager-ca.pem");
    std::fs::write(&manager_ca_file, &manager_ca).unwrap();
    let manager_ca_path = manager_ca_file.display().to_string();
    let app_id = "0f0e0d0c-0b0a-4908-8706-050403020100";
    let flags = [
        "--isvprodid",
        "11",
        "--isvsvn",
        "3",
        "--mem-size",
        "1G",
        "--threads",
        "9",
        "--debug",
        "--entrypoint",
        "/bin/sh",
        "--entrypoint-args",
        "-c",
        "--entrypoint-args",
        "echo options",
        "--encrypted-dirs",
        "/data",
        "--ro-dirs",
        "/app",
        "--ro-dirs",
        "/bin",
        "--rw-dirs",
        "/etc/app.conf",
        "--manifest-options",
        "sgx.file_check_policy=strict",
        "--manifest-options",
        "sys.stack.size=\"2M\"",
        "--certificates",
        cert,
        "--manager-url",
        "https://manager.example:9443",
        "--manager-ca",
        &manager_ca_path,
        "--manager-app-id",
        app_id,
        "--log-file-path",
        "/tmp/gramine.log",
        "--java-mode",
        "OPENJDK",
        "--allow-cmdline-args",
        "--manifest-env",
        "FIXED=yes",
        "--mutable-env",
        "TUNABLE=default",
        "--date",
        "2025-02-03",
    ];
    let (report, root) = env.converted("flags", &input, &flags);
    let m = manifest_of(&root);
    let sgx = &m["sgx"];
    assert_eq!(sgx["isvprodid"].as_integer(), Some(11));
    assert_eq!(sgx["isvsvn"].as_integer(), Some(3));
    assert_eq!(report["isvprodid"], 11);
    assert_eq!(report["isvsvn"], 3);
    assert_eq!(sgx["enclave_size"].as_str(), Some("1G"));
    assert_eq!(sgx["max_threads"].as_integer(), Some(9));
    assert_eq!(sgx["debug"].as_bool(), Some(true));
    assert_eq!(m["loader"]["log_level"].as_str(), Some("debug"));
    assert_eq!(m["loader"]["log_file"].as_str(), Some("/tmp/gramine.log"));
    assert_eq!(sgx["file_check_policy"].as_str(), Some("strict"));
    assert_eq!(m["sys"]["stack"]["size"].as_str(), Some("2M"));
    // --encrypted-dirs: an encrypted mount
    let mounts = m["fs"]["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|t| t["type"].as_str() == Some("encrypted") && t["path"].as_str() == Some("/data")),
        "{mounts:?}"
    );
    let t = trusted(&m);
    // --ro-dirs: only /app and /bin of the image are trusted (plus cloak's own files)
    assert!(t.contains("/app/main.sh") && t.contains("/bin/busybox"));
    assert!(!t.contains("/etc/app.conf"));
    assert!(trusted(&base_manifest).contains("/etc/app.conf"));
    assert!(trusted(&base_manifest).contains("/data/seed.txt"));
    // --rw-dirs: an allowed (unprotected) file
    assert!(sgx["allowed_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str() == Some("file:/etc/app.conf")));
    // --allow-cmdline-args: no fixed argv, Gramine takes the host's
    assert_eq!(
        m["loader"]["insecure__use_cmdline_argv"].as_bool(),
        Some(true)
    );
    assert!(m["loader"].get("argv").is_none());
    assert!(base_manifest["loader"].get("argv").is_some());
    // --manifest-env fixed and measured, --mutable-env passed through
    assert_eq!(m["loader"]["env"]["FIXED"].as_str(), Some("yes"));
    assert_eq!(
        m["loader"]["env"]["TUNABLE"]["passthrough"].as_bool(),
        Some(true)
    );
    let rc = run_json(&root);
    assert_eq!(rc["argv"], json!(["/bin/sh", "-c", "echo options"]));
    assert!(rc["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "FIXED=yes"));
    assert!(rc["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "IMAGE_ENV=1"));
    assert_eq!(rc["mutable_env"], json!(["TUNABLE=default"]));
    assert_eq!(rc["allow_cmdline_args"], true);
    // --certificates and --java-mode: labels of the image
    let inspect = json_of(&ok(cloak().args([
        "inspect",
        "-o",
        "json",
        &format!("oci:{}:1", env.tmp.path().join("flags").display()),
    ])));
    let certs: serde_json::Value = serde_json::from_str(
        inspect["labels"]["io.cloak.sgx.certificates"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(certs[0]["subject"], "app.example");
    assert_eq!(certs[0]["keyType"], "RSA");
    assert_eq!(inspect["labels"]["io.cloak.sgx.java-mode"], "OPENJDK");
    assert_eq!(inspect["labels"]["io.cloak.sgx.isvsvn"], "3");
    // --date: the SIGSTRUCT's date
    let view = json_of(&ok(cloak()
        .args(["sgx", "sigstruct", "-o", "json"])
        .arg(root.join("cloak/app.sig"))));
    assert_eq!(view["date"], "2025-02-03", "{view}");
    assert_eq!(view["mr_enclave"], report["mrenclave"]);
    assert_ne!(report["mrenclave"], base["mrenclave"]);

    // --options FILE: the same request as an EnclaveOS body gives the same image; a flag wins
    let body = json!({
        "isvprodid": 11, "isvsvn": 3, "memSize": "1G", "threads": 9, "debug": true,
        "entrypoint": ["/bin/sh"], "entrypointArgs": ["-c", "echo options"],
        "encryptedDirs": ["/data"], "roDirs": ["/app", "/bin"], "rwDirs": ["/etc/app.conf"],
        "manifestOptions": {"sgx.file_check_policy": "strict", "sys.stack.size": "2M"},
        "certificates": [serde_json::from_str::<serde_json::Value>(cert).unwrap()],
        "manager": {"url": "https://manager.example:9443", "ca": manager_ca, "app_id": app_id},
        "logFilePath": "/tmp/gramine.log", "javaMode": "OPENJDK", "allowCmdlineArgs": true,
        "manifestEnv": ["FIXED=yes"], "mutableEnv": ["TUNABLE=default"],
        "signingKey": {"uri": format!("file:{}", env.key.display())}
    });
    let file = env.tmp.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
    let file = file.to_str().unwrap();
    let (from_file, _) = env.converted(
        "from-file",
        &input,
        &["--options", file, "--date", "2025-02-03"],
    );
    for k in ["mrenclave", "mrenclave2", "mrsigner", "imageDigest"] {
        assert_eq!(from_file[k], report[k], "--options FILE vs flags: {k}");
    }
    let (wins, wins_root) = env.converted(
        "flag-wins",
        &input,
        &["--options", file, "--isvsvn", "4", "--threads", "16"],
    );
    assert_eq!(wins["isvsvn"], 4);
    assert_eq!(
        manifest_of(&wins_root)["sgx"]["max_threads"].as_integer(),
        Some(16)
    );
    assert_eq!(
        manifest_of(&wins_root)["sgx"]["isvprodid"].as_integer(),
        Some(11)
    );

    // Refused, each naming the option and what to do.
    let refused: [(&[&str], &str); 5] = [
        (
            &["--core-dump-pattern", "/tmp/core.%p"],
            "coreDumpPattern is not supported on Gramine",
        ),
        (&["--mem-size", "1000M"], "not a power of two"),
        (&["--certificates", "{\"subjct\":\"x\"}"], "--certificates"),
        (
            &["--manifest-options", "noequals"],
            "--manifest-options \"noequals\" is not KEY=VALUE",
        ),
        (&["--encrypted-dirs", "/"], "cannot contain /"),
    ];
    for (extra, msg) in refused {
        let out = env.convert(
            &input,
            &format!("oci:{}:1", env.tmp.path().join("refused").display()),
            extra,
        );
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{extra:?}: {}", stderr(&out));
    }
    let bad_body = env.tmp.path().join("bad.json");
    std::fs::write(&bad_body, r#"{"memsize":"1G"}"#).unwrap();
    let out = env.convert(
        &input,
        &format!("oci:{}:1", env.tmp.path().join("refused").display()),
        &["--options", bad_body.to_str().unwrap()],
    );
    assert!(
        !out.status.success()
            && stderr(&out).contains("bad.json")
            && stderr(&out).contains("memsize"),
        "{}",
        stderr(&out)
    );
    assert!(!env.tmp.path().join("refused").join("index.json").exists());
}

/// Flags of the other target are refused with a usage error (exit 2) that names them, instead
/// of being ignored; so are the CCM options nothing in a Nitro conversion implements.
#[test]
fn options_of_the_other_target_are_refused_by_name() {
    let env = sgx_env();
    let input = format!("oci:{}:1", busybox(&env.tmp.path().join("bb")).display());
    let out_dir = env.tmp.path().join("out");
    let output = format!("oci:{}:1", out_dir.display());
    for (flags, named) in [
        (
            vec!["--kernel", "/boot/vmlinuz"],
            "--kernel only applies to --target nitro",
        ),
        (
            vec!["--cpu-count", "2"],
            "--cpu-count only applies to --target nitro",
        ),
        (
            vec!["--eif", "x.eif", "--cmdline", "console=ttyS0"],
            "--eif, --cmdline only apply to --target nitro",
        ),
        (
            vec!["--env-vars", "A=1"],
            "--env-vars (SGX: --manifest-env)",
        ),
    ] {
        let out = env.convert(&input, &output, &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{flags:?}: {}", stderr(&out));
    }
    let nitro = |extra: &[&str]| {
        run(cloak()
            .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
            .arg(kernel())
            .arg("--eif")
            .arg(env.tmp.path().join("n.eif"))
            .args(extra)
            .args([&input, "-"]))
    };
    for (flags, code, named) in [
        (
            vec!["--isvprodid", "3"],
            2,
            "--isvprodid only applies to --target sgx",
        ),
        (
            vec!["--threads", "3", "--ro-dirs", "/"],
            2,
            "--threads, --ro-dirs only apply to --target sgx",
        ),
        (
            vec!["--runtime-image", "oci:x"],
            2,
            "--runtime-image only applies",
        ),
        (
            vec!["--manifest-options", "a=b"],
            2,
            "--manifest-options only applies",
        ),
        (vec!["--date", "2024-01-01"], 2, "--date only applies"),
        (vec!["--debug"], 1, "does not implement debug"),
        (
            vec!["--java-mode", "OPENJDK"],
            1,
            "does not implement java_mode",
        ),
        (
            vec!["--enable-overlay-filesystem-persistence", "true"],
            1,
            "enable_overlay_filesystem_persistence",
        ),
        (
            vec!["--mem-size", "2048M"],
            1,
            "--mem-size \"2048M\": Nitro takes MiB as a whole number",
        ),
        (vec!["--cpu-count", "0"], 1, "cpu_count must be at least 1"),
        (
            vec!["--keyprovider-config", "/x.json"],
            2,
            "--encrypt-layers",
        ),
    ] {
        let out = nitro(&flags);
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{flags:?}: {}", stderr(&out));
        assert!(!env.tmp.path().join("n.eif").exists());
    }
    // The same through --options: CCM bodies that spell `false` convert, `true` is refused.
    let body = env.tmp.path().join("ccm.json");
    std::fs::write(
        &body,
        r#"{"converter_options":{"debug":true,"add_ccm_ca_certificates":false},"nitro_enclaves_options":{"enable_overlay_filesystem_persistence":false}}"#,
    )
    .unwrap();
    let out = nitro(&["--options", body.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("does not implement debug"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &body,
        r#"{"converter_options":{"debug":false,"add_ccm_ca_certificates":false},"nitro_enclaves_options":{"enable_overlay_filesystem_persistence":false}}"#,
    )
    .unwrap();
    let out = nitro(&["--options", body.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every Nitro option through the CLI: the application's argv, fixed and mutable environment
/// checked from inside a qemu boot, `--options FILE` with both CCM objects (flags win), and the
/// sizing in the report.
#[test]
fn every_nitro_convert_option_reaches_the_enclave() {
    let tmp = tempfile::tempdir().unwrap();
    let input = format!("oci:{}:1", options_image(&tmp.path().join("img")).display());
    let body = tmp.path().join("ccm.json");
    std::fs::write(
        &body,
        serde_json::to_vec(&json!({
            "converter_options": {
                "entrypoint": ["/bin/sh"],
                "entrypoint_args": ["-c", "exit 99"],
                "env_vars": ["FROM_FILE=1"],
                "mutable_env_vars": ["TUNABLE=from-file"],
                "allow_cmdline_args": true
            },
            "nitro_enclaves_options": {"cpu_count": 4, "mem_size": 1024}
        }))
        .unwrap(),
    )
    .unwrap();
    let script = "test \"$FIXED $IMAGE_ENV $TUNABLE\" = \"yes 1 flag\" && test \"$(/bin/busybox pwd)\" = /app && echo NITRO-OPTIONS-OK; exit 8";
    let eif = tmp.path().join("opts.eif");
    let out = ok(cloak()
        .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
        .arg(kernel())
        .arg("--eif")
        .arg(&eif)
        .arg("--options")
        .arg(&body)
        .args([
            "--entrypoint-args",
            "-c",
            "--entrypoint-args",
            script,
            "--env-vars",
            "FIXED=yes",
            "--mutable-env",
            "TUNABLE=flag",
            "--cpu-count",
            "3",
            "--mem-size",
            "768",
            &input,
            "-",
        ]));
    let report = json_of(&out);
    assert_eq!(report["cpu_count"], 3, "flag wins over the file");
    assert_eq!(report["mem_size"], 768);
    let s = &report["advanced_settings"];
    assert_eq!(s["entrypoint"], json!(["/bin/sh", "-c", script]));
    assert_eq!(s["allow_cmdline_args"], true, "from the file");
    assert_eq!(s["mutable_env_vars"], json!(["TUNABLE=flag"]));
    assert!(s["env_vars"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "FIXED=yes"));
    assert!(
        !s["env_vars"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "FROM_FILE=1"),
        "--env-vars replaces the file's env_vars: {s}"
    );
    // The report names the PCR engine this CPU used.
    let engine = report["pcr_engine"].as_str().unwrap();
    if cloak_nitro::sha384x2::supported() && std::env::var_os("CLOAK_NO_AVX512").is_none() {
        assert!(
            engine.starts_with("two-lane SHA-384 on AVX-512VL"),
            "{engine}"
        );
    } else {
        assert!(
            engine.starts_with("ring's SHA-384 on two threads"),
            "{engine}"
        );
    }
    let booted = run(cloak().args(["run", "--target", "nitro"]).arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("NITRO-OPTIONS-OK"), "{console}");
    assert_eq!(booted.status.code(), Some(8), "{console}");
    // The file alone: its own sizing and argv (and ring's engine, by request).
    let out = ok(cloak()
        .env("CLOAK_NO_AVX512", "1")
        .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
        .arg(kernel())
        .arg("--eif")
        .arg(tmp.path().join("file.eif"))
        .arg("--options")
        .arg(&body)
        .args([&input, "-"]));
    let report = json_of(&out);
    assert_eq!(report["cpu_count"], 4);
    assert_eq!(report["mem_size"], 1024);
    assert_eq!(
        report["pcr_engine"],
        "ring's SHA-384 on two threads (CLOAK_NO_AVX512 is set)"
    );
    assert_eq!(
        report["advanced_settings"]["entrypoint"],
        json!(["/bin/sh", "-c", "exit 99"])
    );
    assert!(report["advanced_settings"]["env_vars"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "FROM_FILE=1"));
}

/// `--signing-key default` (generated once in `$XDG_CONFIG_HOME/cloak`, 0600, reused),
/// `file:KEY.pem` and `pkcs11:` with `pin-source` (SoftHSM2 holding the same key) through the
/// CLI; `cloak sgx sign` writes the SIGSTRUCT the conversion wrote.
#[test]
fn signing_keys_default_file_and_pkcs11_through_the_cli() {
    let env = sgx_env();
    let input = format!("oci:{}:1", busybox(&env.tmp.path().join("bb")).display());
    let config = env.tmp.path().join("config");
    let convert_with = |name: &str, key: &str, envs: &[(&str, &Path)]| {
        let layout = env.tmp.path().join(name);
        let mut cmd = cloak();
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = run(cmd
            .args([
                "convert",
                "--target",
                "sgx",
                "--quiet",
                "--date",
                "2024-05-06",
                "--runtime-image",
                &env.runtime,
                "--signing-key",
                key,
            ])
            .arg(&input)
            .arg(format!("oci:{}:1", layout.display())));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        (json_of(&out), layout)
    };
    let (d1, _) = convert_with("default-1", "default", &[("XDG_CONFIG_HOME", &config)]);
    let default_key = config.join("cloak/sgx-signing-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&default_key)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (d2, _) = convert_with("default-2", "default", &[("XDG_CONFIG_HOME", &config)]);
    assert_eq!(d1["mrsigner"], d2["mrsigner"], "the default key is reused");
    // the same key as a file gives the same MRSIGNER
    let (f, file_layout) = convert_with("file", &format!("file:{}", default_key.display()), &[]);
    assert_eq!(f["mrsigner"], d1["mrsigner"]);
    let (other, _) = convert_with("other", &format!("file:{}", env.key.display()), &[]);
    assert_ne!(other["mrsigner"], d1["mrsigner"]);

    // PKCS#11: the default key imported into a SoftHSM2 token, the PIN read from a file
    let hsm = env.tmp.path().join("hsm");
    std::fs::create_dir_all(hsm.join("tokens")).unwrap();
    let conf = hsm.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            hsm.display()
        ),
    )
    .unwrap();
    let p8 = hsm.join("key.p8");
    ok(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(&default_key)
        .arg("-out")
        .arg(&p8));
    let util = |args: &[&str]| {
        ok(Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(args))
    };
    util(&[
        "--init-token",
        "--free",
        "--label",
        "cloak-cli",
        "--so-pin",
        "5678",
        "--pin",
        "2468",
    ]);
    util(&[
        "--import",
        p8.to_str().unwrap(),
        "--token",
        "cloak-cli",
        "--label",
        "enclave",
        "--id",
        "02",
        "--pin",
        "2468",
    ]);
    let pin = hsm.join("pin");
    std::fs::write(&pin, "2468\n").unwrap();
    let uri = format!(
        "pkcs11:token=cloak-cli;object=enclave?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:{}",
        pin.display()
    );
    let (p, _) = convert_with("pkcs11", &uri, &[("SOFTHSM2_CONF", &conf)]);
    assert_eq!(p["mrsigner"], d1["mrsigner"]);
    assert_eq!(p["mrenclave"], f["mrenclave"]);
    assert_eq!(
        p["imageDigest"], f["imageDigest"],
        "PKCS#1 v1.5 is deterministic: the token and the file give the same image"
    );
    // a wrong PIN: refused, naming the token, without the PIN
    std::fs::write(&pin, "1357\n").unwrap();
    let out = run(cloak()
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "convert",
            "--target",
            "sgx",
            "--quiet",
            "--runtime-image",
            &env.runtime,
            "--signing-key",
            &uri,
        ])
        .arg(&input)
        .arg(format!("oci:{}:1", env.tmp.path().join("badpin").display())));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("login failed") && !stderr(&out).contains("1357"),
        "{}",
        stderr(&out)
    );

    // `cloak sgx sign` over the converted manifest and PAL, with the same key and date: the
    // SIGSTRUCT the conversion wrote, byte for byte (and through the token too).
    let root = umoci_unpack(&file_layout, "1", &env.tmp.path().join("file-bundle"));
    for (name, key, envs) in [
        ("file", format!("file:{}", default_key.display()), vec![]),
        ("pkcs11", uri.clone(), vec![("SOFTHSM2_CONF", conf.clone())]),
    ] {
        std::fs::write(&pin, "2468\n").unwrap();
        let sig = env.tmp.path().join(format!("{name}.sig"));
        let mut cmd = cloak();
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        ok(cmd
            .args(["sgx", "sign", "--date", "2024-05-06", "--manifest"])
            .arg(root.join("cloak/app.manifest.sgx"))
            .arg("--libpal")
            .arg(root.join("cloak/gramine/sgx/libpal.so"))
            .arg("--key")
            .arg(&key)
            .arg("--output")
            .arg(&sig));
        assert_eq!(
            std::fs::read(&sig).unwrap(),
            std::fs::read(root.join("cloak/app.sig")).unwrap(),
            "{name}: cloak sgx sign"
        );
    }
}

/// `cloak convert --target sgx --encrypt-layers`: only the encrypted image reaches the
/// registry (its storage holds no plaintext layer), cloak and skopeo decrypt it, and the
/// decrypted image measures as converted.
#[test]
fn sgx_encrypt_layers_pushes_only_the_encrypted_image() {
    let env = sgx_env();
    let reg = Registry::plain();
    let key = env.tmp.path().join("rsa.pem");
    let public = env.tmp.path().join("rsa.pub.pem");
    ok(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048"));
    ok(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let input = format!("oci:{}:1", busybox(&env.tmp.path().join("bb")).display());
    let remote = format!("docker://{}/sgx/encrypted:1", reg.addr());
    let out = env.convert(
        &input,
        &remote,
        &[
            "--encrypt-layers",
            "--recipient",
            &format!("jwe:{}", public.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_of(&out);
    let layers = report["encryption"]["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        3,
        "input layer, runtime layer, cloak layer: {report}"
    );
    assert!(layers.iter().all(|l| l["encrypted"] == true), "{report}");
    assert_eq!(report["imageDigest"], report["encryption"]["digest"]);
    assert_eq!(
        reg.stored_repositories(),
        BTreeSet::from(["sgx/encrypted".to_string()])
    );
    let raw = ok(&mut skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &remote,
    ]))
    .stdout;
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let mut pushed: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(
                l["mediaType"].as_str().unwrap().ends_with("+encrypted"),
                "{l}"
            );
            l["digest"].as_str().unwrap().to_string()
        })
        .collect();
    pushed.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
    pushed.insert(format!("sha256:{}", sha256_hex(&raw)));
    assert_eq!(
        reg.stored_blobs(),
        pushed,
        "the registry holds the encrypted image only"
    );
    // skopeo decrypts it; the plaintext layers are not in the registry; it measures
    let dec = env.tmp.path().join("dec");
    ok(
        skopeo(&["copy", "-q", "--src-tls-verify=false", "--decryption-key"])
            .arg(&key)
            .arg(&remote)
            .arg(format!("oci:{}:1", dec.display())),
    );
    let plain: serde_json::Value = serde_json::from_slice(
        &ok(skopeo(&["inspect", "--raw"]).arg(format!("oci:{}:1", dec.display()))).stdout,
    )
    .unwrap();
    for l in plain["layers"].as_array().unwrap() {
        assert!(!reg.stored_blobs().contains(l["digest"].as_str().unwrap()));
    }
    let measured = json_of(&ok(cloak().args([
        "measure",
        "-o",
        "json",
        "--expect-mrenclave",
        report["mrenclave"].as_str().unwrap(),
        "--expect-mrsigner",
        report["mrsigner"].as_str().unwrap(),
        &format!("oci:{}:1", dec.display()),
    ])));
    assert_eq!(measured["ok"], true);
    // cloak decrypts it from the registry to the same layers skopeo did
    let ours = env.tmp.path().join("dec-cloak");
    ok(cloak()
        .args(["decrypt", "-q", "--src-tls-verify=false", "--key"])
        .arg(&key)
        .arg(&remote)
        .arg(format!("oci:{}:1", ours.display())));
    let mine: serde_json::Value = serde_json::from_slice(
        &ok(skopeo(&["inspect", "--raw"]).arg(format!("oci:{}:1", ours.display()))).stdout,
    )
    .unwrap();
    assert_eq!(mine["layers"], plain["layers"]);
    // A bad recipient is refused before anything is converted or pushed.
    let out = env.convert(
        &input,
        &format!("docker://{}/sgx/refused:1", reg.addr()),
        &["--encrypt-layers", "--recipient", "jwe:/no/such/key.pem"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/no/such/key.pem"),
        "{}",
        stderr(&out)
    );
    assert!(!reg.stored_repositories().iter().any(|r| r == "sgx/refused"));
}

/// Every way the README says credentials reach cloak, against a TLS + htpasswd registry:
/// `--authfile`, `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `$DOCKER_CONFIG` (in registry.rs), `credHelpers` and `credsStore` helpers,
/// `--src-creds`/`--dest-creds` and `--creds`; a wrong password names the registry.
#[test]
fn credentials_from_every_source_the_readme_names() {
    let reg = Registry::tls_htpasswd("bob", "C0rrect-Horse");
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let cert_dir = reg.cert_dir();
    let cert_dir = cert_dir.to_str().unwrap();
    let remote = |repo: &str| format!("docker://{}/{repo}:1", reg.addr());
    let auth_json = reg.docker_config_dir().join("config.json");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // A clean environment: no credentials unless the case gives them.
    let base = || {
        let mut c = cloak();
        c.env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env("DOCKER_CONFIG", &empty)
            .env("HOME", &empty);
        c
    };
    let push = |cmd: &mut Command, extra: &[&std::ffi::OsStr], repo: &str| {
        ok(cmd
            .args(["copy", "-q", "--dest-cert-dir", cert_dir])
            .args(extra)
            .args([&src, &remote(repo)]));
        assert!(reg.has_tag(&format!("{repo}:1")), "{repo}");
    };
    // Without credentials: refused, naming the registry.
    let out = run(base().args([
        "copy",
        "-q",
        "--dest-cert-dir",
        cert_dir,
        &src,
        &remote("none"),
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("registry {}", reg.addr())),
        "{}",
        stderr(&out)
    );
    push(
        &mut base(),
        &["--authfile".as_ref(), auth_json.as_os_str()],
        "authfile",
    );
    push(
        base().env("REGISTRY_AUTH_FILE", &auth_json),
        &[],
        "registry-auth-file",
    );
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("containers")).unwrap();
    std::fs::copy(&auth_json, xdg.join("containers/auth.json")).unwrap();
    push(base().env("XDG_RUNTIME_DIR", &xdg), &[], "xdg-runtime-dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::copy(&auth_json, home.join(".docker/config.json")).unwrap();
    push(
        base().env_remove("DOCKER_CONFIG").env("HOME", &home),
        &[],
        "home-docker-config",
    );
    push(
        &mut base(),
        &["--dest-creds".as_ref(), "bob:C0rrect-Horse".as_ref()],
        "dest-creds",
    );
    // Credential helpers (docker-credential-NAME on PATH, docker's protocol: `get`, the
    // server on stdin, JSON on stdout), both as credHelpers and as credsStore.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-cloakcli");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"bob\",\"Secret\":\"C0rrect-Horse\"}}' \"$server\"\n",
            tmp.path().join("helper.log").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for (name, cfg) in [
        (
            "cred-helpers",
            json!({"credHelpers": {reg.addr(): "cloakcli"}}),
        ),
        ("creds-store", json!({"credsStore": "cloakcli"})),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        push(
            base().env("DOCKER_CONFIG", &dir).env("PATH", &path),
            &[],
            name,
        );
    }
    let asked = std::fs::read_to_string(tmp.path().join("helper.log")).unwrap();
    assert_eq!(
        asked.lines().filter(|l| l.contains(&reg.addr())).count(),
        asked.lines().count(),
        "the helper was asked for this registry: {asked}"
    );
    assert!(asked.lines().count() >= 2, "{asked}");
    // --src-creds (copy back out) and --creds (single-image commands)
    let back = tmp.path().join("back");
    ok(base().args([
        "copy",
        "-q",
        "--src-cert-dir",
        cert_dir,
        "--src-creds",
        "bob:C0rrect-Horse",
        &remote("dest-creds"),
        &format!("oci:{}:1", back.display()),
    ]));
    assert!(back.join("index.json").exists());
    let out = ok(base().args([
        "inspect",
        "-o",
        "json",
        "--cert-dir",
        cert_dir,
        "--creds",
        "bob:C0rrect-Horse",
        &remote("authfile"),
    ]));
    assert_eq!(json_of(&out)["cmd"][0], "echo hello");
    // A wrong password: exit 1, the registry and the cause named, the secret not echoed; and
    // explicit credentials win over a (correct) auth file.
    let out = run(base().env("REGISTRY_AUTH_FILE", &auth_json).args([
        "inspect",
        "--cert-dir",
        cert_dir,
        "--creds",
        "bob:Wr0ng-Horse-77",
        &remote("authfile"),
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("registry {}", reg.addr())) && err.contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("Wr0ng-Horse-77"), "{err}");
    // A missing --authfile is named.
    let out = run(base().args([
        "inspect",
        "--cert-dir",
        cert_dir,
        "--authfile",
        "/no/such/auth.json",
        &remote("authfile"),
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/no/such/auth.json"),
        "{}",
        stderr(&out)
    );
}

/// The documented exit codes by number: 0 success, 1 the operation failed (message names the
/// input), 2 usage error; `cloak run`'s is the application's (shown in nitro.rs: 3, 5, 7, …).
#[test]
fn exit_codes_are_0_1_and_2_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    assert_eq!(run(cloak().args(["inspect", &bb])).status.code(), Some(0));
    let missing = format!("oci:{}:1", tmp.path().join("missing").display());
    let out = run(cloak().args(["inspect", &missing]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    for args in [
        vec!["inspect"],
        vec!["convert", "--target", "tdx", &bb, "oci:x"],
        vec!["copy", "--no-such-flag", &bb, "oci:x"],
        vec!["no-such-command"],
    ] {
        let out = run(cloak().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // `--log debug` (or RUST_LOG) shows more on stderr (a Nitro conversion's stage timings);
    // the default does not.
    let nitro_log = |log: Option<&str>, rust_log: Option<&str>| {
        let mut cmd = cloak();
        cmd.env_remove("RUST_LOG").env_remove("CLOAK_LOG");
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        if let Some(l) = log {
            cmd.args(["--log", l]);
        }
        stderr(&ok(cmd
            .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
            .arg(kernel())
            .arg("--eif")
            .arg(tmp.path().join("log.eif"))
            .args([&bb, "-"])))
    };
    assert!(!nitro_log(None, None).contains("layers read"));
    let debug = nitro_log(Some("debug"), None);
    assert!(
        debug.contains("DEBUG") && debug.contains("layers read"),
        "--log debug: {debug}"
    );
    let debug = nitro_log(None, Some("debug"));
    assert!(
        debug.contains("DEBUG") && debug.contains("layers read"),
        "RUST_LOG=debug: {debug}"
    );
    // A usage error found after parsing (a secret that is not there) is 2 as well.
    let out = run(cloak().env_remove("CLOAK_PASSWORD").args([
        "login",
        "--url",
        "https://127.0.0.1:9",
        "--user",
        "x",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A layer of one regular file of `size` bytes of noise, written to a layout as an
/// uncompressed tar without holding it in memory. Tag `1`.
fn big_file_image(dir: &Path, size: u64) -> PathBuf {
    use std::io::Write;
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let tmp_blob = dir.join("layer.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp_blob).unwrap());
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut put = |bytes: &[u8], f: &mut std::io::BufWriter<std::fs::File>| {
        sha2::Digest::update(&mut hasher, bytes);
        f.write_all(bytes).unwrap();
    };
    let bb = std::fs::read("/bin/busybox").unwrap();
    let head = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
    ]);
    // tar() ends with two zero blocks; drop them to append one more entry
    put(&head[..head.len() - 1024], &mut f);
    let mut h = ::tar::Header::new_gnu();
    h.set_path("big.bin").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(::tar::EntryType::Regular);
    h.set_cksum();
    put(h.as_bytes(), &mut f);
    // One MiB of noise, repeated: incompressible within a chunk, and cheap to write in an
    // unoptimised test binary.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut chunk = vec![0u8; 1 << 20];
    for w in chunk.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        put(&chunk[..n], &mut f);
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    put(&vec![0u8; pad as usize + 1024], &mut f);
    f.flush().unwrap();
    drop(f);
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    let len = std::fs::metadata(&tmp_blob).unwrap().len();
    std::fs::rename(&tmp_blob, dir.join("blobs/sha256").join(&digest)).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put_json = |v: &serde_json::Value| {
        let b = serde_json::to_vec(v).unwrap();
        let d = sha256_hex(&b);
        std::fs::write(dir.join("blobs/sha256").join(&d), &b).unwrap();
        (format!("sha256:{d}"), b.len())
    };
    let (cd, cl) = put_json(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh", "-c", "true"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]}
    }));
    let (md, ml) = put_json(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{digest}"), "size": len}]
    }));
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ml, "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).to_string(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Peak resident memory (KiB) of a cloak child, from its `ru_maxrss` as GNU time reports it.
fn peak_rss_kib(args: &[&std::ffi::OsStr], dir: &Path) -> u64 {
    let report = dir.join("time.txt");
    let out = run(Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_cloak"))
        .args(args));
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(&report)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

/// The README: "memory does not grow with file sizes" (at most 53 MiB for 1280 MiB, release
/// build). A Nitro conversion of a 256 MiB file peaks (ru_maxrss of the child) within 16 MiB of
/// the conversion of a 16 MiB one, and under 64 MiB. A memory bound is a property of the code,
/// not a timing.
#[test]
fn nitro_conversion_memory_does_not_grow_with_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for (name, size) in [("small", 16u64 << 20), ("large", 256u64 << 20)] {
        let dir = big_file_image(&tmp.path().join(name), size);
        let eif = tmp.path().join(format!("{name}.eif"));
        let input = format!("oci:{}:1", dir.display());
        let k = kernel();
        let args: Vec<&std::ffi::OsStr> = [
            "convert".as_ref(),
            "--target".as_ref(),
            "nitro".as_ref(),
            "--quiet".as_ref(),
            "--kernel".as_ref(),
            k.as_os_str(),
            "--eif".as_ref(),
            eif.as_os_str(),
            input.as_ref(),
            "-".as_ref(),
        ]
        .to_vec();
        let kib = peak_rss_kib(&args, tmp.path());
        assert!(std::fs::metadata(&eif).unwrap().len() > size);
        eprintln!("peak RSS converting a {} MiB file: {} KiB", size >> 20, kib);
        peaks.push(kib);
        std::fs::remove_file(&eif).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large <= small + 16 * 1024,
        "16 × the file size raised the peak from {small} KiB to {large} KiB"
    );
    assert!(large < 64 * 1024, "peak {large} KiB for a 256 MiB file");
}

/// buildah as a peer: an image buildah builds converts with cloak, an image buildah encrypts
/// (ocicrypt JWE) cloak decrypts to buildah's plaintext layers, and an image cloak encrypts
/// buildah pulls with the private key and pushes back as the original layers.
#[test]
fn buildah_images_convert_and_encrypted_images_cross_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::plain();
    let store = tmp.path().join("store");
    let buildah = |args: &[&str]| -> Output {
        ok(Command::new("buildah")
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args))
    };
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("bin/busybox")).unwrap();
    std::fs::write(ctx.join("hello.txt"), "built by buildah\n").unwrap();
    let c = String::from_utf8(buildah(&["from", "scratch"]).stdout).unwrap();
    let c = c.trim();
    buildah(&["copy", c, ctx.join("bin").to_str().unwrap(), "/bin"]);
    buildah(&[
        "copy",
        c,
        ctx.join("hello.txt").to_str().unwrap(),
        "/srv/hello.txt",
    ]);
    buildah(&[
        "config",
        "--entrypoint",
        r#"["/bin/busybox","cat","/srv/hello.txt"]"#,
        "--env",
        "BUILT_BY=buildah",
        c,
    ]);
    buildah(&["commit", "-q", c, "cloak-buildah:1"]);
    let plain = tmp.path().join("plain");
    buildah(&[
        "push",
        "-q",
        "cloak-buildah:1",
        &format!("oci:{}:1", plain.display()),
    ]);
    let plain_ref = format!("oci:{}:1", plain.display());
    let t = cloak_tree(&plain_ref, &[]);
    assert_eq!(
        t["/srv/hello.txt"].sha256.as_deref(),
        Some(sha256_hex(b"built by buildah\n").as_str())
    );
    // converted by cloak: the entrypoint and env buildah set reach the enclave's configuration
    let out = ok(cloak()
        .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
        .arg(kernel())
        .arg("--eif")
        .arg(tmp.path().join("buildah.eif"))
        .args([&plain_ref, "-"]));
    let report = json_of(&out);
    assert_eq!(
        report["advanced_settings"]["entrypoint"],
        json!(["/bin/busybox", "cat", "/srv/hello.txt"])
    );
    assert!(report["advanced_settings"]["env_vars"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "BUILT_BY=buildah"));

    // buildah encrypts, cloak decrypts
    let key = tmp.path().join("ec.pem");
    let public = tmp.path().join("ec.pub.pem");
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let enc = tmp.path().join("enc");
    buildah(&[
        "push",
        "-q",
        "--encryption-key",
        &format!("jwe:{}", public.display()),
        "cloak-buildah:1",
        &format!("oci:{}:1", enc.display()),
    ]);
    let enc_ref = format!("oci:{}:1", enc.display());
    let inspect = json_of(&ok(cloak().args(["inspect", "-o", "json", &enc_ref])));
    assert!(
        inspect["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"].as_str().unwrap().ends_with("+encrypted")),
        "{inspect}"
    );
    let dec = tmp.path().join("dec");
    ok(cloak()
        .args(["decrypt", "-q", "--key"])
        .arg(&key)
        .arg(&enc_ref)
        .arg(format!("oci:{}:1", dec.display())));
    let layers = |r: &str| {
        json_of(&ok(cloak().args(["inspect", "-o", "json", r])))["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        layers(&format!("oci:{}:1", dec.display())),
        layers(&plain_ref),
        "cloak decrypts buildah's layers to buildah's plaintext"
    );

    // cloak encrypts, buildah pulls with the key and pushes the plaintext back
    let cloak_enc = format!("docker://{}/buildah/enc:1", reg.addr());
    ok(cloak()
        .args(["encrypt", "-q", "--dest-tls-verify=false", "--recipient"])
        .arg(format!("jwe:{}", public.display()))
        .args([&plain_ref, &cloak_enc]));
    buildah(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--decryption-key",
        key.to_str().unwrap(),
        &cloak_enc,
    ]);
    let back = tmp.path().join("back");
    buildah(&[
        "push",
        "-q",
        &format!("{}/buildah/enc:1", reg.addr()),
        &format!("oci:{}:1", back.display()),
    ]);
    tree::assert_same(
        "cloak-encrypted, buildah-decrypted",
        &t,
        &cloak_tree(&format!("oci:{}:1", back.display()), &[]),
    );
    // without the key buildah cannot pull it
    let out = run(Command::new("buildah")
        .arg("--root")
        .arg(store.join("root2"))
        .arg("--runroot")
        .arg(store.join("run2"))
        .args([
            "--storage-driver",
            "vfs",
            "pull",
            "-q",
            "--tls-verify=false",
            &cloak_enc,
        ]));
    assert!(
        !out.status.success(),
        "buildah pulled an encrypted image without its key"
    );
}
