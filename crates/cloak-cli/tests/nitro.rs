//! `cloak convert --target nitro`: PCRs and CRC checked by AWS's own EIF crate (tools/eif-oracle),
//! reproducible EIF bytes, real boots of the Debian cloud kernel under qemu, and refusals.

mod common;

use std::path::{Path, PathBuf};

use common::images::{busybox, hostile, multilayer, tar, Comp, Layout, T};
use common::registry::Registry;
use common::*;
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kernel() -> PathBuf {
    let k = workspace().join(".work/kernel/vmlinuz");
    if !k.exists() {
        ok(std::process::Command::new("bash").arg(workspace().join("scripts/fetch-kernel.sh")));
    }
    k
}

fn oracle(eif: &Path) -> serde_json::Value {
    let bin = workspace().join("tools/eif-oracle/target/release/eif-oracle");
    assert!(
        bin.exists(),
        "{} is missing: scripts/test.sh builds it",
        bin.display()
    );
    serde_json::from_slice(&ok(std::process::Command::new(bin).arg(eif)).stdout).unwrap()
}

fn convert(input: &str, eif: &Path, extra: &[&str]) -> std::process::Output {
    run(cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg("--kernel")
        .arg(kernel())
        .arg("--eif")
        .arg(eif)
        .args(extra)
        .arg(input)
        .arg("-"))
}

fn pcrs(report: &serde_json::Value) -> [String; 3] {
    let a = &report["attributes"]["nitro_enclave"];
    ["pcr0", "pcr1", "pcr2"].map(|k| a[k].as_str().unwrap().to_string())
}

/// An image whose entrypoint checks docker semantics from the inside.
fn semantics_image(dir: &Path) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let l = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
        T::Dir("etc/", 0o755, 0),
        T::File(
            "etc/passwd",
            0o644,
            0,
            b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        T::File("etc/group", 0o644, 0, b"root:x:0:\napp:x:1000:\n"),
        T::Dir("srv/", 0o755, 1000),
        T::Dir("home/", 0o755, 0),
        T::Dir("home/app/", 0o755, 1000),
    ]);
    Layout::new(dir).layer(Comp::Gzip, l).finish(
        "1",
        "amd64",
        json!({
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["test \"$(/bin/busybox pwd)\" = /srv && test \"$(/bin/busybox id -u):$(/bin/busybox id -g)\" = 1000:1000 && test \"$GREETING $HOME\" = \"hello /home/app\" && echo SEMANTICS-OK; exit 5"],
            "WorkingDir": "/srv",
            "User": "app",
            "Env": ["PATH=/bin", "GREETING=hello"]
        }),
    );
    dir.to_path_buf()
}

/// Pseudo-random bytes (incompressible, so they travel through the EIF writer's direct I/O).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Three layers that overwrite, delete, hide (opaque directory), hardlink and re-mode files,
/// with a 5 MiB file; the entrypoint checks from the inside that the tree is the one the
/// layers flatten to (as `docker run` would show it) and exits with 3.
fn layered_image(dir: &Path) -> PathBuf {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let big = noise((5 << 20) + 17);
    let big_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&big))
    };
    let l1 = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
        T::Dir("data/", 0o755, 0),
        T::File("data/over.txt", 0o644, 0, b"old"),
        T::File("data/gone.txt", 0o644, 0, b"delete me"),
        T::File("data/orig.txt", 0o644, 0, b"shared"),
        T::Hard("data/link.txt", "data/orig.txt"),
        T::File("data/empty", 0o600, 0, b""),
        T::File("data/scratch.bin", 0o644, 0, &big[..3 << 20]),
        T::Dir("opq/", 0o755, 0),
        T::File("opq/lower.txt", 0o644, 0, b"hidden by opaque"),
    ]);
    let l2 = tar(&[
        T::File("data/over.txt", 0o640, 1000, b"new"),
        T::File("data/.wh.gone.txt", 0o644, 0, b""),
        T::File("data/.wh.scratch.bin", 0o644, 0, b""),
        T::Dir("opq/", 0o711, 0),
        T::File("opq/.wh..wh..opq", 0o644, 0, b""),
        T::File("opq/upper.txt", 0o644, 0, b"upper"),
    ]);
    let l3 = tar(&[
        T::Dir("big/", 0o755, 1000),
        T::File("big/blob.bin", 0o600, 1000, &big),
        T::File("bin/setuid-tool", 0o4755, 0, b"#!/bin/sh\n"),
    ]);
    let script = format!(
        "set -e; B=/bin/busybox; \
         test \"$($B cat /data/over.txt)\" = new; \
         test \"$($B stat -c '%a %u %h' /data/over.txt)\" = '640 1000 1'; \
         test ! -e /data/gone.txt; test ! -e /data/scratch.bin; \
         test ! -e /opq/lower.txt; test \"$($B cat /opq/upper.txt)\" = upper; \
         test \"$($B stat -c %a /opq)\" = 711; \
         test \"$($B cat /data/link.txt)\" = shared; \
         test \"$($B stat -c %i /data/orig.txt)\" = \"$($B stat -c %i /data/link.txt)\"; \
         test \"$($B stat -c %h /data/orig.txt)\" = 2; \
         test -f /data/empty; test ! -s /data/empty; \
         test \"$($B stat -c %a /bin/setuid-tool)\" = 4755; \
         test \"$($B sha256sum /big/blob.bin | $B cut -d' ' -f1)\" = {big_sha}; \
         test \"$($B stat -c '%a %u' /big/blob.bin)\" = '600 1000'; \
         echo LAYERS-OK; exit 3"
    );
    Layout::new(dir)
        .layer(Comp::Gzip, l1)
        .layer(Comp::Tar, l2)
        .layer(Comp::Gzip, l3)
        .finish(
            "1",
            "amd64",
            json!({"Entrypoint": ["/bin/sh", "-c", script], "Env": ["PATH=/bin"]}),
        );
    dir.to_path_buf()
}

#[test]
fn pcrs_and_crc_match_aws_eif_crate_and_eifs_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, layout) in [
        ("busybox", busybox(&tmp.path().join("bb"))),
        ("multilayer", multilayer(&tmp.path().join("ml"), false)),
        ("layered", layered_image(&tmp.path().join("layered"))),
    ] {
        let src = format!("oci:{}:1", layout.display());
        let a = tmp.path().join(format!("{name}-a.eif"));
        let b = tmp.path().join(format!("{name}-b.eif"));
        let out = convert(&src, &a, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = oracle(&a);
        assert_eq!(o["crc_ok"], true, "{name}");
        assert_eq!(
            pcrs(&report),
            [
                o["PCR0"].as_str().unwrap(),
                o["PCR1"].as_str().unwrap(),
                o["PCR2"].as_str().unwrap()
            ]
        );
        ok(cloak().args(["describe-eif"]).arg(&a));
        assert!(convert(&src, &b, &[]).status.success());
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{name}: EIFs differ"
        );
        // The PCR engine without AVX-512 (two threads of ring's SHA-384) reports the same PCRs
        // for the same EIF. Without AVX-512VL both runs use ring: say so.
        let path = "cloak convert with the AVX-512VL PCR engine against CLOAK_NO_AVX512";
        if cloak_nitro::sha384x2::supported() {
            test_path(path, true, "AVX-512F and AVX-512VL present");
        } else {
            test_path(path, false, "no AVX-512VL: both conversions hash with ring");
        }
        let c = tmp.path().join(format!("{name}-c.eif"));
        let out = run(cloak()
            .env("CLOAK_NO_AVX512", "1")
            .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
            .arg(kernel())
            .arg("--eif")
            .arg(&c)
            .arg(&src)
            .arg("-"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report_c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            pcrs(&report_c),
            pcrs(&report),
            "{name}: the PCR engines disagree"
        );
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&c).unwrap(),
            "{name}: the two PCR engines' EIFs differ"
        );
    }
    // Signed: PCR8 and the COSE signature as AWS's crate sees them; still reproducible.
    let key = tmp.path().join("key.pem");
    let cert = tmp.path().join("cert.pem");
    ok(std::process::Command::new("openssl")
        .args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"])
        .arg(&key));
    ok(std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "30",
            "-subj",
            "/CN=cloak signer",
            "-key",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb-signed")).display());
    let (s1, s2) = (
        tmp.path().join("signed-1.eif"),
        tmp.path().join("signed-2.eif"),
    );
    let sign_args = [
        "--signing-key",
        key.to_str().unwrap(),
        "--signing-cert",
        cert.to_str().unwrap(),
    ];
    let out = convert(&bb, &s1, &sign_args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = oracle(&s1);
    assert_eq!(o["signature_ok"], true, "{o}");
    assert_eq!(o["crc_ok"], true);
    assert_eq!(report["attributes"]["nitro_enclave"]["pcr8"], o["PCR8"]);
    assert_eq!(report["attributes"]["nitro_enclave"]["pcr0"], o["PCR0"]);
    let described = ok(cloak().args(["describe-eif", "-o", "json"]).arg(&s1));
    let d: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(d["signature"]["valid"], true);
    assert!(convert(&bb, &s2, &sign_args).status.success());
    assert_eq!(
        std::fs::read(&s1).unwrap(),
        std::fs::read(&s2).unwrap(),
        "signed EIFs differ"
    );
    // A flipped byte anywhere in the signature section is reported, whatever byte it hits.
    let good = std::fs::read(&s1).unwrap();
    let n = good.len();
    for back in [5, 20, 60, 300] {
        let mut bytes = good.clone();
        bytes[n - back] ^= 1;
        std::fs::write(&s2, &bytes).unwrap();
        let bad = run(cloak().args(["describe-eif"]).arg(&s2));
        let text = String::from_utf8_lossy(&bad.stdout);
        assert!(
            !bad.status.success() && text.contains("Signature: INVALID"),
            "byte -{back}: {text}"
        );
    }

    // Low-level builds with 1 to 3 ramdisks, one empty and one of 3 MiB.
    let r0 = tmp.path().join("r0");
    let r1 = tmp.path().join("r1");
    let r2 = tmp.path().join("r2");
    std::fs::write(&r0, b"bootstrap").unwrap();
    std::fs::write(&r1, vec![7u8; 3 << 20]).unwrap();
    std::fs::write(&r2, b"").unwrap();
    for ramdisks in [vec![&r0], vec![&r0, &r1], vec![&r0, &r1, &r2]] {
        let eif = tmp.path().join(format!("low-{}.eif", ramdisks.len()));
        let mut cmd = cloak();
        cmd.args([
            "eif",
            "build",
            "--cmdline",
            "console=ttyS0 quiet",
            "--kernel",
        ])
        .arg(kernel());
        for r in &ramdisks {
            cmd.arg("--ramdisk").arg(r);
        }
        let out = ok(cmd.arg("--output").arg(&eif));
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = oracle(&eif);
        assert_eq!(o["crc_ok"], true);
        for k in ["PCR0", "PCR1", "PCR2"] {
            assert_eq!(
                m["Measurements"][k],
                o[k],
                "{} ramdisks: {k}",
                ramdisks.len()
            );
        }
    }
}

#[test]
fn converted_images_boot_under_qemu_with_docker_semantics() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    // busybox: its own output and its own exit code
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let eif = tmp.path().join("bb.eif");
    let out = convert(
        &bb,
        &eif,
        &[
            "--entrypoint",
            "/bin/sh",
            "--entrypoint-args",
            "-c",
            "--entrypoint-args",
            "echo hello from the enclave; exit 7",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booted = run(cloak().args(["run", "--target", "nitro"]).arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("hello from the enclave"), "{console}");
    assert_eq!(booted.status.code(), Some(7), "{console}");

    // Entrypoint + Cmd, WORKDIR, USER and Env from the inside, booted from a pushed image
    let sem = format!(
        "oci:{}:1",
        semantics_image(&tmp.path().join("sem")).display()
    );
    let remote = format!("docker://{}/nitro/semantics:1", reg.addr());
    let out = run(cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--dest-tls-verify=false",
            "--kernel",
        ])
        .arg(kernel())
        .arg(&sem)
        .arg(&remote));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inspect: serde_json::Value = serde_json::from_slice(
        &ok(cloak().args(["inspect", "-o", "json", "--tls-verify=false", &remote])).stdout,
    )
    .unwrap();
    assert_eq!(
        inspect["labels"]["io.cloak.nitro.pcr0"],
        report["attributes"]["nitro_enclave"]["pcr0"]
    );
    let booted = run(cloak().args(["run", "--target", "nitro", "--tls-verify=false", &remote]));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("SEMANTICS-OK"), "{console}");
    assert_eq!(booted.status.code(), Some(5));

    // Overwritten, deleted and opaque-hidden files, hardlinks, modes, owners and a 5 MiB
    // file, as the kernel unpacks the streamed application ramdisk (contents linked from
    // /cloak-data into the sorted tree).
    let layered = format!(
        "oci:{}:1",
        layered_image(&tmp.path().join("layered")).display()
    );
    let eif = tmp.path().join("layered.eif");
    let out = convert(&layered, &eif, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The files the second layer overwrites or deletes were written before that was known:
    // the report names them.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["warnings"].as_array().unwrap().iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("KiB, that later layers overwrite or delete")
                && w.contains("/data/scratch.bin")
                && w.contains("/data/gone.txt")
        }),
        "{report}"
    );
    let booted = run(cloak().args(["run", "--target", "nitro"]).arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("LAYERS-OK"), "{console}");
    assert_eq!(booted.status.code(), Some(3), "{console}");
}

#[test]
fn bad_input_is_refused_before_any_output_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    Layout::new(&empty)
        .layer(Comp::Gzip, tar(&[T::File("x", 0o644, 0, b"x")]))
        .finish("1", "amd64", json!({}));
    let arm = tmp.path().join("arm");
    Layout::new(&arm)
        .layer(Comp::Gzip, tar(&[T::File("x", 0o644, 0, b"x")]))
        .finish("1", "arm64", json!({"Cmd": ["/x"]}));
    let not_kernel = tmp.path().join("not-a-bzimage");
    std::fs::write(&not_kernel, vec![0u8; 4096]).unwrap();
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    // A layer blob damaged in its middle: detected while the EIF is already being written.
    let damaged = busybox(&tmp.path().join("damaged"));
    let layer = std::fs::read_dir(damaged.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let damaged_msg = format!(
        "layer sha256:{} (damaged, or not a tar archive)",
        layer.file_name().unwrap().to_string_lossy()
    );
    // `/cloak\0x/run.json` (a GNU long name) and `/cloak\0/run.json` (a PAX path): the
    // kernel's unpacker would cut them to `/cloak`.
    let nul_long = hostile(&tmp.path().join("nul-long"), "nul-gnu-long-name");
    let nul_pax = hostile(&tmp.path().join("nul-pax"), "nul-pax-path");
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&layer, bytes).unwrap();
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "nocmd",
            format!("oci:{}:1", empty.display()),
            vec![],
            "neither Entrypoint nor Cmd",
        ),
        (
            "arm64",
            format!("oci:{}:1", arm.display()),
            vec![],
            "linux/arm64",
        ),
        (
            "kernel",
            bb.clone(),
            vec!["--kernel".into(), not_kernel.display().to_string()],
            "not an x86 bzImage",
        ),
        (
            "memory",
            bb.clone(),
            vec!["--mem-size".into(), "16".into()],
            "below 4 × the EIF size",
        ),
        (
            "damaged",
            format!("oci:{}:1", damaged.display()),
            vec![],
            &damaged_msg,
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
    for (name, input, extra, msg) in cases {
        let eif = tmp.path().join(format!("{name}.eif"));
        let mut cmd = cloak();
        cmd.args(["convert", "--target", "nitro", "--quiet"]);
        if !extra.contains(&"--kernel".to_string()) {
            cmd.arg("--kernel").arg(kernel());
        }
        let out = run(cmd.args(&extra).arg("--eif").arg(&eif).arg(&input).arg("-"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(msg), "{name}: {err}");
        let parts: Vec<&str> = err.trim().split(": ").collect();
        assert!(
            parts.windows(2).all(|w| w[0] != w[1]),
            "{name}: a cause is repeated: {err}"
        );
        assert!(!eif.exists(), "{name}: an EIF was written");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".eif-"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: temporary EIF left behind");
    }
}

#[test]
fn a_converted_http_server_answers_through_a_published_port() {
    let tmp = tempfile::tempdir().unwrap();
    let bb = std::fs::read("/bin/busybox").unwrap();
    let l = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Dir("www/", 0o755, 0),
        T::File(
            "www/index.html",
            0o644,
            0,
            b"hello over http from the enclave\n",
        ),
    ]);
    let dir = tmp.path().join("web");
    Layout::new(&dir).layer(Comp::Gzip, l).finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]}),
    );
    let eif = tmp.path().join("web.eif");
    let out = convert(&format!("oci:{}:1", dir.display()), &eif, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut vm = cloak()
        .args([
            "run",
            "--target",
            "nitro",
            "--timeout",
            "120",
            "--publish",
            &format!("{port}:8080"),
        ])
        .arg("--kernel-modules")
        .arg(workspace().join(".work/kernel/modules"))
        .arg(&eif)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut body = String::new();
    while std::time::Instant::now() < deadline {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: enclave\r\n\r\n");
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            if r.contains("200 OK") {
                body = r;
                break;
            }
        }
        assert!(
            vm.try_wait().unwrap().is_none(),
            "the enclave stopped before serving"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let _ = vm.kill();
    let _ = vm.wait();
    assert!(
        body.contains("hello over http from the enclave"),
        "no answer through the published port: {body:?}"
    );
}

#[test]
fn a_nitro_cli_blobs_folder_supplies_kernel_cmdline_and_nsm_module() {
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::copy(kernel(), blobs.join("bzImage")).unwrap();
    std::fs::write(
        blobs.join("cmdline"),
        "reboot=k panic=30 pci=off nomodules console=ttyS0 cloak.test=1\n",
    )
    .unwrap();
    std::fs::write(blobs.join("nsm.ko"), b"stand-in module").unwrap();
    std::fs::write(blobs.join("bzImage.config"), "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 6.1.0 Kernel Configuration\n").unwrap();
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let eif = tmp.path().join("blobs.eif");
    let out = run(cloak()
        .args(["convert", "--target", "nitro", "--quiet", "--blobs"])
        .arg(&blobs)
        .arg("--eif")
        .arg(&eif)
        .arg(&bb)
        .arg("-"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_slice(&ok(cloak().args(["describe-eif", "-o", "json"]).arg(&eif)).stdout)
            .unwrap();
    assert_eq!(
        d["cmdline"],
        "reboot=k panic=30 pci=off nomodules console=ttyS0 cloak.test=1"
    );
    assert_eq!(
        d["metadata"]["BuildMetadata"]["KernelVersion"],
        "Linux/x86_64 6.1.0 Kernel Configuration"
    );
    // The bootstrap ramdisk (first ramdisk section) carries /nsm.ko.
    let dir = tmp.path().join("parts");
    std::fs::create_dir_all(&dir).unwrap();
    let sections = d["sections"].as_array().unwrap();
    let first_ramdisk = sections.iter().find(|s| s["kind"] == "Ramdisk").unwrap();
    let bytes = std::fs::read(&eif).unwrap();
    let (off, size) = (
        first_ramdisk["offset"].as_u64().unwrap() as usize + 12,
        first_ramdisk["size"].as_u64().unwrap() as usize,
    );
    let listing = std::process::Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&bytes[off..off + size])?;
            c.wait_with_output()
        })
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["dev", "dev/console", "init", "nsm.ko"]
    );
}

#[test]
fn encrypt_layers_pushes_only_the_encrypted_image_and_skopeo_decrypts_it() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("ec.pem");
    let public = tmp.path().join("ec.pub.pem");
    ok(std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
        ])
        .arg(&key));
    ok(std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let remote = format!("docker://{}/nitro/encrypted:1", reg.addr());
    let out = ok(cloak()
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg("--kernel")
        .arg(kernel())
        .args(["--encrypt-layers", "--recipient"])
        .arg(format!("jwe:{}", public.display()))
        .arg(&bb)
        .arg(&remote));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = report["encryption"]["layers"].as_array().unwrap();
    assert!(
        !layers.is_empty() && layers.iter().all(|l| l["encrypted"] == true),
        "{report}"
    );
    assert!(report["output_image"]
        .as_str()
        .unwrap()
        .ends_with(report["encryption"]["digest"].as_str().unwrap()));
    // Only the encrypted image ever reached the registry: its storage holds one repository and
    // exactly the blobs of the encrypted image (manifest, config, encrypted layers).
    assert!(reg.has_tag("nitro/encrypted:1"));
    let tags = ok(skopeo(&["list-tags", "--tls-verify=false"]).arg(&remote[..remote.len() - 2]));
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
    assert_eq!(
        reg.stored_repositories(),
        std::collections::BTreeSet::from(["nitro/encrypted".to_string()])
    );
    let raw = ok(skopeo(&["inspect", "--raw", "--tls-verify=false"]).arg(&remote)).stdout;
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let mut pushed: std::collections::BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    pushed.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
    pushed.insert(format!("sha256:{}", sha256_hex(&raw)));
    let stored = reg.stored_blobs();
    assert_eq!(stored, pushed, "blobs in the registry's storage");
    // skopeo decrypts it; the EIF inside has the PCRs the report gave.
    let dec = tmp.path().join("dec");
    ok(
        skopeo(&["copy", "-q", "--src-tls-verify=false", "--decryption-key"])
            .arg(&key)
            .arg(&remote)
            .arg(format!("oci:{}:1", dec.display())),
    );
    // cloak decrypts it from the registry to the same blobs.
    let ours = tmp.path().join("dec-cloak");
    ok(cloak()
        .args(["decrypt", "-q", "--src-tls-verify=false", "--key"])
        .arg(&key)
        .arg(&remote)
        .arg(format!("oci:{}:1", ours.display())));
    let layers = |dir: &Path| {
        let out = ok(cloak()
            .args(["inspect", "-o", "json"])
            .arg(format!("oci:{}:1", dir.display())));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["layers"].clone()
    };
    let (a, b) = (layers(&dec), layers(&ours));
    assert_eq!(
        a.as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"])
            .collect::<Vec<_>>(),
        b.as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"])
            .collect::<Vec<_>>()
    );
    // None of the plaintext layers (as skopeo decrypted them), compressed or not, is stored.
    let plain = ok(skopeo(&["inspect", "--raw"]).arg(format!("oci:{}:1", dec.display()))).stdout;
    let plain: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let plain_config =
        ok(skopeo(&["inspect", "--config", "--raw"]).arg(format!("oci:{}:1", dec.display())))
            .stdout;
    let plain_config: serde_json::Value = serde_json::from_slice(&plain_config).unwrap();
    let plaintext: Vec<&str> = plain["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .chain(
            plain_config["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap()),
        )
        .collect();
    assert!(!plaintext.is_empty());
    for d in &plaintext {
        assert!(
            !pushed.contains(*d),
            "plaintext {d} is in the encrypted image"
        );
        assert!(!stored.contains(*d), "plaintext {d} reached the registry");
    }
    // AWS's EIF crate reads the EIF skopeo decrypted: valid CRC, the PCRs of the report.
    let rootfs = umoci_unpack(&dec, "1", &tmp.path().join("bundle"));
    let o = oracle(&rootfs.join("cloak/enclave.eif"));
    assert_eq!(o["crc_ok"], true);
    assert_eq!(
        pcrs(&report),
        [
            o["PCR0"].as_str().unwrap(),
            o["PCR1"].as_str().unwrap(),
            o["PCR2"].as_str().unwrap()
        ]
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// 20 000 files boot in 256 MiB. The kernel's initramfs unpacker keeps a 4 KiB record per
/// entry with more than one link until the archive ends, and every extra link of a tmpfs file
/// takes one of its inode slots (about 26 000 here): an application ramdisk that linked every
/// file would not boot. 25 000 files do not fit in 256 MiB at all: cloak refuses that.
#[test]
fn an_image_with_20000_files_boots_in_256_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let bb = std::fs::read("/bin/busybox").unwrap();
    let names: Vec<(String, String)> = (0..20_000)
        .map(|i| (format!("d/{:03}/f{i:05}", i / 100), "x".repeat(i % 40 + 1)))
        .collect();
    let dirs: Vec<String> = (0..200).map(|d| format!("d/{d:03}/")).collect();
    let mut entries = vec![
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
        T::Dir("d/", 0o755, 0),
    ];
    entries.extend(dirs.iter().map(|d| T::Dir(d, 0o755, 0)));
    entries.extend(
        names
            .iter()
            .map(|(n, c)| T::File(n, 0o644, 0, c.as_bytes())),
    );
    let dir = tmp.path().join("many");
    Layout::new(&dir).layer(Comp::Gzip, tar(&entries)).finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/bin/sh", "-c", "echo files: $(/bin/busybox find /d -type f | /bin/busybox wc -l)"]}),
    );
    let eif = tmp.path().join("many.eif");
    let out = convert(
        &format!("oci:{}:1", dir.display()),
        &eif,
        &["--mem-size", "128"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("10 KiB for each of its 20204 files"),
        "{err}"
    );
    assert!(!eif.exists());
    let out = convert(
        &format!("oci:{}:1", dir.display()),
        &eif,
        &["--mem-size", "256"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booted = run(cloak()
        .args(["run", "--target", "nitro", "--memory", "256"])
        .arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("files: 20000"), "{console}");
    assert_eq!(booted.status.code(), Some(0), "{console}");
}

/// `cloak … | head`: a closed stdout ends the program quietly (status 141, like SIGPIPE), not
/// with a panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    // A pipe whose reading end is closed before cloak starts: its first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cloak()
        .args(["inspect", "-o", "json", &bb])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// An image whose `/tmp` is a link to `/`, `/proc` a link to `/cloak` (which would hide the
/// run configuration), `/sys` a link out of the image root and `/run` a file: the init replaces
/// these mount points with directories (never following the links), and the application runs
/// with the configuration the conversion wrote and sees proc, tmpfs and sysfs where they belong.
#[test]
fn mount_points_the_image_made_links_boot_into_the_converted_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let bb = std::fs::read("/bin/busybox").unwrap();
    let l = tar(&[
        T::Dir("bin/", 0o755, 0),
        T::File("bin/busybox", 0o755, 0, &bb),
        T::Sym("bin/sh", "busybox"),
        T::Sym("tmp", "/"),
        T::Sym("proc", "/cloak"),
        T::Sym("sys", "../../.."),
        T::File("run", 0o644, 0, b"not a directory"),
    ]);
    let dir = tmp.path().join("links");
    let check = "b=/bin/busybox; \
        $b test ! -L /tmp -a ! -L /proc -a ! -L /sys -a -d /run || exit 9; \
        $b grep -q '^proc /proc proc' /proc/mounts || exit 10; \
        $b grep -q '^tmpfs /tmp tmpfs' /proc/mounts || exit 11; \
        $b grep -q '^sysfs /sys sysfs' /proc/mounts || exit 12; \
        $b test -f /cloak/run.json -a -x /bin/busybox || exit 13; \
        test \"$GREETING\" = converted || exit 14; \
        echo MOUNTS-OK; exit 4";
    Layout::new(&dir).layer(Comp::Gzip, l).finish(
        "1",
        "amd64",
        json!({"Entrypoint": ["/bin/sh", "-c", check], "Env": ["PATH=/bin", "GREETING=converted"]}),
    );
    let eif = tmp.path().join("links.eif");
    let out = convert(&format!("oci:{}:1", dir.display()), &eif, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booted = run(cloak().args(["run", "--target", "nitro"]).arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("MOUNTS-OK"), "{console}");
    assert_eq!(booted.status.code(), Some(4), "{console}");
    assert!(
        console.contains("/rootfs/tmp was a symbolic link to /; replaced"),
        "{console}"
    );
}

/// What a plain `cargo build` leaves beside `cloak`: a dynamically linked launcher. A copy of
/// `cloak` with it in a fresh directory refuses to convert and says how to install; after
/// `scripts/install.sh PREFIX` the installed `cloak` finds its static launcher and the EIF boots.
#[test]
fn a_dynamic_launcher_is_refused_and_the_install_script_gives_a_working_cloak() {
    let tmp = tempfile::tempdir().unwrap();
    let dynamic = workspace().join("target/debug/cloak-launcher");
    if !dynamic.exists() {
        ok(std::process::Command::new("cargo")
            .args(["build", "--quiet", "-p", "cloak-launcher"])
            .current_dir(workspace()));
    }
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cloak"), plain.join("cloak")).unwrap();
    std::fs::copy(&dynamic, plain.join("cloak-launcher")).unwrap();
    let bb = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let eif = tmp.path().join("plain.eif");
    let out = run(std::process::Command::new(plain.join("cloak"))
        .env_remove("CLOAK_LAUNCHER")
        .args(["convert", "--target", "nitro", "--quiet", "--kernel"])
        .arg(kernel())
        .arg("--eif")
        .arg(&eif)
        .args([&bb, "-"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the launcher {} is dynamically linked",
            plain.join("cloak-launcher").display()
        )) && err.contains("bash scripts/install.sh"),
        "{err}"
    );
    assert!(!eif.exists());

    let prefix = tmp.path().join("prefix");
    ok(std::process::Command::new("bash")
        .arg(workspace().join("scripts/install.sh"))
        .arg(&prefix)
        .env("CLOAK_PROFILE", "debug"));
    assert!(prefix.join("lib/cloak/cloak-launcher").exists());
    let eif = tmp.path().join("installed.eif");
    let out = run(std::process::Command::new(prefix.join("bin/cloak"))
        .env_remove("CLOAK_LAUNCHER")
        .args([
            "convert",
            "--target",
            "nitro",
            "--quiet",
            "--entrypoint-args",
            "-c",
            "--entrypoint-args",
            "echo installed launcher; exit 6",
            "--entrypoint",
            "/bin/sh",
            "--kernel",
        ])
        .arg(kernel())
        .arg("--eif")
        .arg(&eif)
        .args([&bb, "-"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booted = run(std::process::Command::new(prefix.join("bin/cloak"))
        .args(["run", "--target", "nitro"])
        .arg(&eif));
    let console = String::from_utf8_lossy(&booted.stdout);
    assert!(console.contains("installed launcher"), "{console}");
    assert_eq!(booted.status.code(), Some(6), "{console}");
}

#[test]
fn the_pinned_manager_ca_and_the_simulation_option_are_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("oci:{}:1", busybox(&tmp.path().join("bb")).display());
    let ca = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![format!("{name}.example")]).unwrap();
        let p = tmp.path().join(format!("{name}.pem"));
        std::fs::write(&p, c.cert.pem()).unwrap();
        p.display().to_string()
    };
    let (ca_a, ca_b) = (ca("manager-a"), ca("manager-b"));
    let app = "0f0e0d0c-0b0a-4908-8706-050403020100";
    let cert = r#"{"issuer": "MANAGER_CA", "subject": "web", "keyType": "ec", "keyParam": {"curve": "P-256"}, "keyPath": "/k.pem", "certPath": "/c.pem", "chainPath": "none"}"#;
    let manager = |ca: &str| -> Vec<String> {
        [
            "--manager-url",
            "https://manager.example:9443",
            "--manager-ca",
            ca,
            "--manager-app-id",
            app,
            "--certificates",
            cert,
        ]
        .map(String::from)
        .to_vec()
    };
    let mut variants: Vec<(&str, Vec<String>)> = vec![
        ("none", vec![]),
        ("ca-a", manager(&ca_a)),
        ("ca-b", manager(&ca_b)),
    ];
    let mut sim = manager(&ca_a);
    sim.push("--allow-simulated-attestation".into());
    variants.push(("ca-a-simulated", sim));
    let mut seen: Vec<(String, [String; 3])> = Vec::new();
    for (name, args) in &variants {
        let eif = tmp.path().join(format!("{name}.eif"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = convert(&src, &eif, &args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let p = pcrs(&report);
        for (other, q) in &seen {
            // PCR1 is the kernel and its command line: the same for all.
            assert_eq!(p[1], q[1]);
            assert_ne!(p[0], q[0], "{name} and {other} have the same PCR0");
            assert_ne!(p[2], q[2], "{name} and {other} have the same PCR2");
        }
        seen.push((name.to_string(), p));
    }
    // Certificates without a manager, and a plain-HTTP manager, are refused before any output.
    let eif = tmp.path().join("refused.eif");
    let out = convert(&src, &eif, &["--certificates", cert]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--manager-url"));
    let mut plain = manager(&ca_a);
    plain[1] = "http://manager.example".into();
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let out = convert(&src, &eif, &plain);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be https://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!eif.exists());
}
