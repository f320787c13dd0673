//! `cloak manager ca import`: an operator's CA (made with OpenSSL) replaces the one the manager
//! would create, with the issuing key as a PEM file or in a PKCS#11 token (SoftHSM2); leaves
//! issued to simulated evidence verify with `openssl verify` against the operator's root.
//! Alone in its test binary because SoftHSM2 reads `SOFTHSM2_CONF` from the environment of the
//! processes that load it (the managers started here inherit it).

mod common;

use std::path::Path;
use std::process::Command;

use cloak_api::{App, Build, Task};
use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_attest::Measurements;
use common::manager::{Backend, Manager};
use serde_json::{json, Value};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

const ROOT_EXT: &str = "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign";
const ISSUING_EXT: &str = "basicConstraints=critical,CA:true,pathlen:0\n\
                           keyUsage=critical,keyCertSign,cRLSign,digitalSignature";

/// An operator's root and issuing CA (both P-384) in `dir`: root.pem, issuing.pem, issuing.key.
fn operator_ca(dir: &Path) {
    operator_ca_with(dir, ROOT_EXT, ISSUING_EXT)
}

/// [`operator_ca`] with these extensions of the root and the issuing certificate.
fn operator_ca_with(dir: &Path, root_ext: &str, issuing_ext: &str) {
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "[root]\n{root_ext}\nsubjectKeyIdentifier=hash\n\
             [issuing]\n{issuing_ext}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "root.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "root.key",
            "-subj",
            "/CN=Operator Root/O=Example",
            "-days",
            "30",
            "-out",
            "root.pem",
            "-extensions",
            "root",
            "-config",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "issuing.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "issuing.key",
            "-subj",
            "/CN=Operator Issuing CA/O=Example",
            "-out",
            "issuing.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "issuing.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "issuing",
            "-out",
            "issuing.pem",
        ],
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Issues a certificate to simulated Nitro evidence and checks it with OpenSSL against root.pem.
fn issue_and_verify(m: &Manager, sim_key: &SimulationSigningKey, dir: &Path, name: &str) -> String {
    let admin = m.admin();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": name, "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false}}),
        )
        .unwrap();
    let pcr = |b: u8| vec![b; 48];
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": name},
                    "attributes": {"nitro_enclave": {"pcr0": hex::encode(pcr(7)), "pcr1": hex::encode(pcr(8)), "pcr2": hex::encode(pcr(9))}},
                    "advanced_settings": {"certificates": [{"subject": name}]}}),
        )
        .unwrap();
    let t: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    assert_eq!(t.status.status, "SUCCESS");
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&kp).unwrap().pem().unwrap();
    let mut pcrs = std::collections::BTreeMap::new();
    for i in 0..3u16 {
        pcrs.insert(i, pcr(7 + i as u8));
    }
    let ev = produce(
        sim_key,
        &Document {
            timestamp_ms: now() as u64 * 1000,
            measurements: Measurements::Pcrs(pcrs),
            user_data: None,
            nonce: None,
            public_key: Some(rcgen::PublicKeyData::subject_public_key_info(&kp)),
        },
    )
    .unwrap();
    use base64::Engine;
    let issued: Value = m
        .client()
        .post(
            "/v1/certificates",
            &json!({"app_id": app.app_id, "csr": csr,
                    "evidence": base64::engine::general_purpose::STANDARD.encode(ev)}),
        )
        .unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    let chain: Value = m.client().get("/v1/ca").unwrap();
    assert_eq!(
        chain["root"].as_str().unwrap().trim(),
        std::fs::read_to_string(dir.join("root.pem"))
            .unwrap()
            .trim(),
        "GET /v1/ca serves the operator's root"
    );
    let leaf = dir.join(format!("{name}.pem"));
    std::fs::write(&leaf, issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("chain.pem"), chain["chain"].as_str().unwrap()).unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-CAfile", "root.pem", "-untrusted", "chain.pem"])
        .arg(&leaf));
    // Signed by the operator's issuing CA.
    let issuer = run(Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in"])
        .arg(&leaf));
    assert!(issuer.contains("Operator Issuing CA"), "{issuer}");
    issued["certificate"].as_str().unwrap().to_string()
}

#[test]
fn an_imported_ca_signs_with_its_key_from_a_file_or_a_softhsm_token() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // SoftHSM2's configuration, for this process and the managers and tools it starts.
    std::fs::create_dir_all(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
            d.display()
        ),
    )
    .unwrap();
    // Set before any thread starts: the only test of this binary.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    operator_ca(d);
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sim_key = SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap();
    std::fs::write(d.join("simulation.pub"), sim_key.public_sec1()).unwrap();
    let sim_pub = d.join("simulation.pub").display().to_string();
    let serve = [
        "--allow-simulated-attestation",
        "--simulation-public-key",
        sim_pub.as_str(),
    ];
    let cert = d.join("issuing.pem").display().to_string();
    let root = d.join("root.pem").display().to_string();
    let key = d.join("issuing.key").display().to_string();

    // 1. The issuing key as a file.
    let mut m = Manager::start_with(Backend::Sqlite, &serve);
    m.kill();
    // A key that is not the certificate's is refused, naming the flag.
    let out = m.offline(&[
        "ca",
        "import",
        "--cert",
        &cert,
        "--root",
        &root,
        "--key",
        &d.join("root.key").display().to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--key") && err.contains("not the key of"),
        "{err}"
    );
    // A CA relying parties would refuse is refused at import, naming what is wrong: its
    // certificates or CRLs would not verify (openssl verify, rustls), or its root forbids it.
    for (case, root_ext, issuing_ext, expected) in [
        (
            "no-keycertsign",
            ROOT_EXT,
            "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,cRLSign,digitalSignature",
            "lacks keyCertSign",
        ),
        (
            "no-crlsign",
            ROOT_EXT,
            "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,digitalSignature",
            "CRL",
        ),
        (
            "server-only",
            ROOT_EXT,
            "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
             extendedKeyUsage=serverAuth",
            "client certificate",
        ),
        (
            "root-pathlen-0",
            "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign",
            ISSUING_EXT,
            "pathlen:0",
        ),
    ] {
        let cd = d.join(case);
        std::fs::create_dir(&cd).unwrap();
        operator_ca_with(&cd, root_ext, issuing_ext);
        let path = |f: &str| cd.join(f).display().to_string();
        let out = m.offline(&[
            "ca",
            "import",
            "--cert",
            &path("issuing.pem"),
            "--root",
            &path("root.pem"),
            "--key",
            &path("issuing.key"),
            "--replace",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: imported");
        assert!(err.contains(expected), "{case}: {err}");
    }
    // The root as the issuing certificate's issuer is checked too.
    let out = m.offline(&[
        "ca", "import", "--cert", &cert, "--root", &cert, "--key", &key,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not signed by"));
    // The first start created the manager's own CA (serve builds its TLS client verification on
    // it): replacing that CA needs --replace.
    let out = m.offline(&[
        "ca", "import", "--cert", &cert, "--root", &root, "--key", &key,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    let out = m.offline(&[
        "ca",
        "import",
        "--cert",
        &cert,
        "--root",
        &root,
        "--key",
        &key,
        "--replace",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.restart();
    issue_and_verify(&m, &sim_key, d, "file-key");
    m.kill();

    // 2. The issuing key in a SoftHSM2 token: the private key is imported there, and the
    // manager signs through PKCS#11.
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "issuing.key",
            "-out",
            "issuing.p8",
        ],
    );
    let util = |args: &[&str]| run(Command::new("softhsm2-util").args(args));
    util(&[
        "--init-token",
        "--free",
        "--label",
        "cloak-ca",
        "--so-pin",
        "5678",
        "--pin",
        "1234",
    ]);
    util(&[
        "--import",
        &d.join("issuing.p8").display().to_string(),
        "--token",
        "cloak-ca",
        "--label",
        "ca-issuing",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    std::fs::write(d.join("pin"), "1234\n").unwrap();
    let uri = format!(
        "pkcs11:token=cloak-ca;object=ca-issuing?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:{}",
        d.join("pin").display()
    );
    let mut m = Manager::start_with(Backend::Sqlite, &serve);
    m.kill();
    // A wrong PIN is named (the URI's PIN never is).
    let bad_uri = "pkcs11:token=cloak-ca;object=ca-issuing?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=9999";
    let out = m.offline(&[
        "ca", "import", "--cert", &cert, "--root", &root, "--key", bad_uri,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("login failed") && !err.contains("9999"),
        "{err}"
    );
    let out = m.offline(&[
        "ca",
        "import",
        "--cert",
        &cert,
        "--root",
        &root,
        "--key",
        &uri,
        "--replace",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("in the PKCS#11 token"));
    // Remove the key file: only the token can sign now.
    std::fs::remove_file(d.join("issuing.key")).unwrap();
    std::fs::remove_file(d.join("issuing.p8")).unwrap();
    m.restart();
    issue_and_verify(&m, &sim_key, d, "token-key");
    // The URI is stored sealed: the database holds no "pkcs11:" text.
    assert!(!common::manager::contains(&m.raw_database(), "pkcs11:"));
}
