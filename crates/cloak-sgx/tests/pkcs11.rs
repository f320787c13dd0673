//! SIGSTRUCT signing in a PKCS#11 token (SoftHSM2) holding the key: the same bytes as the key
//! file gives, and the key never leaves the token. Alone in its test binary because SoftHSM2 reads
//! `SOFTHSM2_CONF` from the environment of the process that loads it.

use std::path::Path;
use std::process::Command;

use cloak_sgx::key::{FileSigner, Signer};
use cloak_sgx::pkcs11::Pkcs11Signer;
use cloak_sgx::sigstruct::{self, Body};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    run(Command::new("openssl")
        .arg("genrsa")
        .args(args)
        .arg("-out")
        .arg(&p)
        .arg("3072"));
    p
}

fn body() -> Body {
    Body {
        date: (2026, 11, 24),
        mrenclave: [0xab; 32],
        isvprodid: 7,
        isvsvn: 3,
        flags: 0x4,
        xfrm: 0x3,
        flags_mask: u64::MAX,
        xfrm_mask: 0xfffffffffff9ff1b,
        miscselect: 0,
        miscmask: u32::MAX,
    }
}

#[test]
fn softhsm_token_signs_without_exporting_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("tokens")).unwrap();
    std::fs::write(
        d.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            d.display()
        ),
    )
    .unwrap();
    let conf = d.join("softhsm2.conf");
    let key = openssl_key(d, "key.pem", &["-3"]);
    run(Command::new("openssl").current_dir(d).args([
        "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-out", "key.p8",
    ]));
    let util = |args: &[&str]| {
        let mut c = Command::new("softhsm2-util");
        c.env("SOFTHSM2_CONF", &conf).args(args);
        run(&mut c);
    };
    util(&[
        "--init-token",
        "--free",
        "--label",
        "cloak-test",
        "--so-pin",
        "5678",
        "--pin",
        "1234",
    ]);
    util(&[
        "--import",
        d.join("key.p8").to_str().unwrap(),
        "--token",
        "cloak-test",
        "--label",
        "sgx",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    // The module reads SOFTHSM2_CONF from this process's environment. This binary holds this one
    // test, so no other thread reads the environment while it changes.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let uri = "pkcs11:token=cloak-test;object=sgx?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234";
    let hsm = Pkcs11Signer::open(uri).unwrap();
    assert!(!hsm.describe().contains("1234"), "PIN in description");
    let file = FileSigner::from_pem_file(&key).unwrap();
    let from_hsm = sigstruct::sign(&body(), &hsm).unwrap();
    sigstruct::verify(&from_hsm, "hsm").unwrap();
    // PKCS#1 v1.5 is deterministic: the token and the file produce the same SIGSTRUCT.
    assert_eq!(from_hsm, sigstruct::sign(&body(), &file).unwrap());
    let bad = Pkcs11Signer::open(&uri.replace("pin-value=1234", "pin-value=0000"))
        .err()
        .expect("a wrong PIN fails");
    let msg = bad.to_string();
    assert!(
        msg.contains("login failed") && !msg.contains("0000"),
        "{msg}"
    );
}
