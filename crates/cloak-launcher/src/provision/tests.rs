use std::os::unix::fs::PermissionsExt;

use super::evidence::*;
use super::*;

/// Gramine's attestation files as a recording double: the quote it returns carries the report
/// data last written, like the real device (which asks the quoting enclave for it).
#[derive(Default)]
struct FakeAttestation {
    calls: Vec<String>,
    report_data: Option<Vec<u8>>,
}

impl AttestationFs for FakeAttestation {
    fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.calls.push(format!("write {name} {}", data.len()));
        if name == "user_report_data" {
            self.report_data = Some(data.to_vec());
        }
        Ok(())
    }
    fn read(&mut self, name: &str) -> std::io::Result<Vec<u8>> {
        self.calls.push(format!("read {name}"));
        let rd = self
            .report_data
            .clone()
            .ok_or_else(|| std::io::Error::other("quote read before user_report_data"))?;
        Ok([b"QUOTE".to_vec(), rd].concat())
    }
}

#[test]
fn gramine_writes_the_binding_before_it_reads_the_quote() {
    let mut g = Gramine {
        fs: FakeAttestation::default(),
    };
    let key = generate_key(KeySpec::Ec { curve: 256 }).unwrap();
    let nonce = [7u8; 32];
    let quote = g.evidence(&key.spki, &nonce).unwrap();
    assert_eq!(g.fs.calls, ["write user_report_data 64", "read quote"]);
    let rd = &quote[5..];
    use sha2::Digest;
    assert_eq!(&rd[..32], sha2::Sha256::digest(&key.spki).as_slice());
    assert_eq!(&rd[32..], sha2::Sha256::digest(nonce).as_slice());
    g.install_mount_key("default", &[1; 16]).unwrap();
    assert_eq!(g.fs.calls[2], "write keys/default 16");
    assert!(g.install_mount_key("../x", &[1; 16]).is_err());
}

#[test]
fn only_gramine_takes_encrypted_mount_keys() {
    struct Dev;
    impl NsmDevice for Dev {
        fn call(&mut self, _: &[u8]) -> std::io::Result<Vec<u8>> {
            unreachable!()
        }
    }
    let e = Nsm { dev: Dev }
        .install_mount_key("default", &[0; 16])
        .unwrap_err();
    assert!(e.contains("Gramine only"), "{e}");
}

/// Records the request and answers like the NSM does.
struct FakeNsm {
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl NsmDevice for FakeNsm {
    fn call(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        self.request = request.to_vec();
        Ok(self.answer.clone())
    }
}

#[test]
fn nsm_gets_key_nonce_and_binding_and_returns_the_document() {
    use cloak_attest::cbor::Value;
    let answer = Value::Map(vec![(
        Value::Text("Attestation".into()),
        Value::Map(vec![(
            Value::Text("document".into()),
            Value::Bytes(b"DOC".to_vec()),
        )]),
    )])
    .encode();
    let mut nsm = Nsm {
        dev: FakeNsm {
            request: Vec::new(),
            answer,
        },
    };
    let doc = nsm.evidence(b"SPKI", &[9; 32]).unwrap();
    assert_eq!(doc, b"DOC");
    let req = cloak_attest::cbor::decode(&nsm.dev.request).unwrap();
    let a = req.get("Attestation").unwrap();
    assert_eq!(a.get("public_key"), Some(&Value::Bytes(b"SPKI".to_vec())));
    assert_eq!(a.get("nonce"), Some(&Value::Bytes(vec![9; 32])));
    assert_eq!(
        a.get("user_data"),
        Some(&Value::Bytes(
            cloak_attest::binding::report_data(b"SPKI", &[9; 32]).to_vec()
        ))
    );
    nsm.dev.answer = Value::Map(vec![(
        Value::Text("Error".into()),
        Value::Text("InvalidArgument".into()),
    )])
    .encode();
    let e = nsm.evidence(b"SPKI", &[9; 32]).unwrap_err();
    assert!(e.contains("InvalidArgument"), "{e}");
}

#[test]
fn nsm_request_bytes_match_serde_cbor_of_the_nsm_api() {
    // serde_cbor of aws-nitro-enclaves-nsm-api's Request::Attestation { user_data: Some([1]),
    // nonce: None, public_key: Some([2, 3]) } (src/api/mod.rs: an externally tagged enum, the
    // fields in that order, Option<ByteBuf> as a byte string or null), written out by hand
    // from serde_cbor's rules: a1 map(1), 6b "Attestation", a3 map(3), 69 "user_data" 41 01,
    // 65 "nonce" f6, 6a "public_key" 42 02 03. The crate itself (tools/nsm-oracle) checks
    // these bytes and CBOR's other length forms in crates/cloak-cli/tests/nsm.rs.
    let ours = nsm_attestation_request(Some(&[1]), None, Some(&[2, 3]));
    let expected = "a16b4174746573746174696f6ea369757365725f646174614101656e6f6e6365f66a7075626c69635f6b6579420203";
    assert_eq!(hex::encode(ours), expected);
}

#[rstest::rstest]
#[case::ec256(KeySpec::Ec { curve: 256 })]
#[case::ec384(KeySpec::Ec { curve: 384 })]
#[case::rsa2048(KeySpec::Rsa { bits: 2048 })]
fn keys_are_generated_and_sign_their_csr(#[case] spec: KeySpec) {
    let k = generate_key(spec).unwrap();
    assert_eq!(k.spki[0], 0x30);
    let pem = csr("web", &k).unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
}

#[test]
fn issued_files_have_their_modes_and_chain_none_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::new(dir.path().to_path_buf(), None);
    let spec = CertSpec {
        subject: "web".into(),
        key: KeySpec::Ec { curve: 256 },
        key_path: "/secrets/app.key".into(),
        cert_path: "/app.crt".into(),
        chain_path: None,
    };
    let issued = Issued {
        key: generate_key(spec.key).unwrap(),
        certificate: "CERT\n".into(),
        chain: "CHAIN\n".into(),
        not_after: None,
    };
    write_issued(&target, &spec, &issued).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("secrets/app.key"), 0o600);
    assert_eq!(mode("app.crt"), 0o644);
    let key = std::fs::read_to_string(dir.path().join("secrets/app.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no chain, no temporaries"
    );
    // a second write replaces the file (rename over it)
    let again = Issued {
        certificate: "CERT2\n".into(),
        ..issued
    };
    write_issued(&target, &spec, &again).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("app.crt")).unwrap(),
        "CERT2\n"
    );
}

#[test]
fn failures_name_the_step_the_code_and_the_detail() {
    let f = Failure::new("certificate \"web\"", "revoked", "build b is REJECTED");
    assert_eq!(
        f.to_string(),
        "attestation failed at certificate \"web\": revoked (revoked): build b is REJECTED"
    );
    assert_eq!(
        Failure::new("nonce", "tls", "x").exit_status(),
        EXIT_UNREACHABLE
    );
}

#[rstest::rstest]
#[case::a_third_left(1_000, 1_060, 0, 1_040)]
#[case::explicit_lead(1_000, 1_060, 10, 1_050)]
#[case::a_day(0, 86_400, 0, 57_600)]
fn renewal_is_due_before_expiry(
    #[case] issued: i64,
    #[case] not_after: i64,
    #[case] before: u64,
    #[case] due: i64,
) {
    assert_eq!(renew::renew_at(issued, not_after, before), due);
}

/// An image root with code, a config the image ships, a certificate spec, and symbolic links
/// that point out of the root (to `outside`).
fn hostile_image() -> (tempfile::TempDir, tempfile::TempDir, ManagerConfig, Target) {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::write(r.join("bin/app"), "APPROVED").unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/app.conf"), "IMAGE").unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("data")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("f"), r.join("etc/link.conf")).unwrap();
    let cfg = ManagerConfig {
        url: "https://manager.invalid".into(),
        ca_pem: String::new(),
        app_id: "a".into(),
        certificates: vec![CertSpec {
            subject: "web".into(),
            key: KeySpec::Ec { curve: 256 },
            key_path: "/run/app.key".into(),
            cert_path: "/run/app.crt".into(),
            chain_path: Some("/run/chain.pem".into()),
        }],
        allow_simulated: false,
        retry_seconds: 1,
        vsock_port: None,
        add_ca_to_trust_store: false,
        renew_before_seconds: 0,
    };
    let target = Target::new(r.to_path_buf(), None);
    (dir, outside, cfg, target)
}

#[rstest::rstest]
#[case::code_of_the_image("/bin/app", "/bin holds the image's code")]
#[case::new_file_among_code("/usr/lib/x.so", "/usr holds the image's code")]
#[case::loader_preload("/etc/ld.so.preload", "/etc/ld.so.preload holds")]
#[case::launcher_run_config("/cloak/run.json", "/cloak holds")]
#[case::the_private_key(
    "/run/app.key",
    "key, certificate or chain path of certificate \"web\""
)]
#[case::the_chain("/run/chain.pem", "key, certificate or chain path")]
#[case::a_file_the_image_ships("/etc/app.conf", "exists in the image")]
#[case::through_a_linked_directory("/data/evil", "/data is a symbolic link")]
#[case::a_linked_file("/etc/link.conf", "is a symbolic link")]
#[case::dot_dot("/etc/../bin/app", "`..` component")]
#[case::dot("/etc/./app.conf", "`.` or `..` component")]
fn config_files_never_replace_the_image_nor_follow_links(#[case] name: &str, #[case] why: &str) {
    let (dir, outside, cfg, target) = hostile_image();
    let f = install_file(&cfg, &target, name, "EVIL").unwrap_err();
    assert_eq!(f.code, "path_refused", "{f}");
    assert_eq!(f.exit_status(), EXIT_REFUSED);
    let text = f.to_string();
    assert!(
        text.contains(&format!("config {name:?} is refused")),
        "{text}"
    );
    assert!(text.contains(why), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("bin/app")).unwrap(),
        "APPROVED"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/app.conf")).unwrap(),
        "IMAGE"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing outside the root"
    );
    assert!(!dir.path().join("run").exists());
}

#[test]
fn config_files_may_add_files_and_replace_their_own() {
    let (dir, _outside, cfg, target) = hostile_image();
    install_file(&cfg, &target, "/srv/conf/app.json", "ONE").unwrap();
    let p = dir.path().join("srv/conf/app.json");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "ONE");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // a file this launcher wrote in this boot may be written again
    install_file(&cfg, &target, "/srv/conf/app.json", "TWO").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "TWO");
    // a fresh boot (a new Target) sees it as the image's file
    let again = Target::new(dir.path().to_path_buf(), None);
    let f = install_file(&cfg, &again, "/srv/conf/app.json", "THREE").unwrap_err();
    assert!(f.detail.contains("exists in the image"), "{f}");
}

#[test]
fn renewal_does_not_write_through_a_link_the_app_planted() {
    let (dir, outside, cfg, target) = hostile_image();
    let spec = &cfg.certificates[0];
    let issued = Issued {
        key: generate_key(spec.key).unwrap(),
        certificate: "CERT\n".into(),
        chain: "CHAIN\n".into(),
        not_after: None,
    };
    write_issued(&target, spec, &issued).unwrap();
    // The app (its user owns the key) swaps the directory for a link to elsewhere.
    std::fs::rename(dir.path().join("run"), dir.path().join("run.old")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("run")).unwrap();
    let f = write_issued(&target, spec, &issued).unwrap_err();
    assert_eq!(f.code, "path_refused", "{f}");
    assert!(f.detail.contains("/run is a symbolic link"), "{f}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// A root and issuing CA like the manager's (`cloak_manager::ca`), and a leaf signed for
/// `spki` by the issuing CA: (leaf PEM, chain PEM).
fn issue(spki: &[u8], ca_name: &str) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let root = ca(&format!("{ca_name} root"))
        .self_signed(&root_key)
        .unwrap();
    let root_issuer = Issuer::new(ca(&format!("{ca_name} root")), root_key);
    let issuing_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let issuing = ca(&format!("{ca_name} issuing"))
        .signed_by(&issuing_key, &root_issuer)
        .unwrap();
    let issuer = Issuer::new(ca(&format!("{ca_name} issuing")), issuing_key);
    let mut leaf = CertificateParams::new(vec!["web".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "web");
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
    let leaf = leaf.signed_by(&spki, &issuer).unwrap();
    (leaf.pem(), format!("{}{}", issuing.pem(), root.pem()))
}

#[test]
fn the_issued_certificate_must_be_for_our_key_under_its_chain() {
    let key = generate_key(KeySpec::Ec { curve: 256 }).unwrap();
    let other = generate_key(KeySpec::Ec { curve: 256 }).unwrap();
    let (leaf, chain) = issue(&key.spki, "manager");
    issued::check(&key.spki, &leaf, &chain).unwrap();

    let refused = |leaf: &str, chain: &str| issued::check(&key.spki, leaf, chain).unwrap_err();
    // a certificate for a key the manager (or a man in the middle) holds
    let (theirs, their_chain) = issue(&other.spki, "manager");
    assert!(refused(&theirs, &their_chain).contains("not for the key this launcher generated"));
    // our key, but a chain that did not sign it
    let (_, foreign_chain) = issue(&key.spki, "other");
    let e = refused(&leaf, &foreign_chain);
    assert!(e.contains("issuer") && e.contains("other issuing"), "{e}");
    // a chain whose issuing CA is not signed by the root that follows
    let (_, c2) = issue(&key.spki, "manager");
    let mixed = format!(
        "{}{}",
        chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap(),
        c2.split_inclusive("-----END CERTIFICATE-----\n")
            .nth(1)
            .unwrap()
    );
    assert!(
        refused(&leaf, &mixed).contains("signature does not verify"),
        "{}",
        refused(&leaf, &mixed)
    );
    assert!(refused(&leaf, "").contains("no chain"));
    assert!(refused("CERT\n", &chain).contains("instead of one"));
    assert!(refused(&format!("{leaf}{leaf}"), &chain).contains("2 certificates"));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(refused(garbage, &chain).contains("not an X.509 certificate"));
}

#[rstest::rstest]
#[case::nul_in_the_value("TOKEN", "ab\0cd", "contains a NUL byte")]
#[case::nul_in_the_name("TO\0KEN", "x", "not a variable name")]
#[case::equals_in_the_name("A=B", "x", "not a variable name")]
#[case::empty_name("", "x", "not a variable name")]
#[case::preload("LD_PRELOAD", "/srv/x.so", "LD_PRELOAD steers the dynamic loader")]
#[case::library_path("LD_LIBRARY_PATH", "/srv", "steers the dynamic loader")]
#[case::path("PATH", "/srv", "PATH names code")]
#[case::python("PYTHONPATH", "/srv", "PYTHONPATH names code")]
#[case::node("NODE_OPTIONS", "--require /srv/x.js", "NODE_OPTIONS names code")]
fn env_configs_execve_cannot_carry_are_refused_at_provisioning(
    #[case] var: &str,
    #[case] value: &str,
    #[case] why: &str,
) {
    let f = env_entry(var, value).unwrap_err();
    assert_eq!(f.step, "app configs");
    assert_eq!(f.exit_status(), EXIT_REFUSED);
    assert!(
        f.detail.contains(why) && f.detail.contains("config \"env:"),
        "{f}"
    );
    assert_eq!(env_entry("TOKEN", "abc").unwrap(), "TOKEN=abc");
}

#[rstest::rstest]
#[case::first_attempt_when_due(1_000, None, 0, 1_000)]
#[case::due_later_than_the_floor(1_100, Some(1_000), 0, 1_100)]
#[case::expiry_in_the_past(500, Some(1_000), 0, 1_030)]
#[case::after_one_failure(500, Some(1_000), 1, 1_030)]
#[case::after_two_failures(500, Some(1_000), 2, 1_060)]
#[case::after_three_failures(500, Some(1_000), 3, 1_120)]
#[case::backoff_is_capped(500, Some(1_000), 40, 1_900)]
fn renewal_attempts_are_spaced(
    #[case] due: i64,
    #[case] last: Option<i64>,
    #[case] failures: u32,
    #[case] at: i64,
) {
    assert_eq!(renew::next_attempt(due, last, failures), at);
}

/// A clock that moves only when slept on, recording each wait.
struct SteppedClock {
    now: i64,
    waits: Vec<u64>,
}

impl renew::Timer for SteppedClock {
    fn now(&mut self) -> i64 {
        self.now
    }
    fn sleep(&mut self, d: std::time::Duration) {
        self.waits.push(d.as_secs());
        self.now += d.as_secs() as i64;
    }
}

#[test]
fn an_unreachable_manager_is_retried_with_backoff_until_expiry_never_in_a_tight_loop() {
    let (_dir, _outside, mut cfg, target) = hostile_image();
    // Nothing listens on port 1; no retries inside the client.
    cfg.url = "https://127.0.0.1:1".into();
    cfg.retry_seconds = 0;
    cfg.ca_pem = issue(&generate_key(KeySpec::Ec { curve: 256 }).unwrap().spki, "m").1;
    let client = Client::new(&cfg, None).unwrap();
    struct Unused;
    impl EvidenceSource for Unused {
        fn name(&self) -> String {
            "unused".into()
        }
        fn evidence(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
            unreachable!("no nonce, no evidence")
        }
    }
    let mut source = Unused;
    let mut clock = SteppedClock {
        now: 10_000,
        waits: Vec::new(),
    };
    // Renewal is overdue (issued long ago), and the certificate expires in 1000 s.
    let certs = vec![(cfg.certificates[0].clone(), 0, 11_000)];
    let f = renew::renew_until_refused(&cfg, &client, &mut source, &target, certs, &mut clock);
    assert_eq!(f.code, "unreachable", "{f}");
    // At once (overdue), then 30, 60, 120, 240, 480 s apart; the attempt at 10 930 is the last
    // before expiry, and the next (900 s later: the cap) finds the certificate expired and stops.
    assert_eq!(clock.waits, [30, 60, 120, 240, 480, 900]);
}

#[test]
fn a_manager_that_accepts_and_never_answers_is_given_up_on_by_the_deadline() {
    // The kernel completes the TCP handshake for the listener's backlog; nobody ever reads or
    // writes, like a Nitro parent holding the vsock connection open.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (_dir, _outside, mut cfg, _target) = hostile_image();
    cfg.url = format!("https://localhost:{}", stall.local_addr().unwrap().port());
    cfg.ca_pem = issue(&generate_key(KeySpec::Ec { curve: 256 }).unwrap().spki, "m").1;
    let mut client = Client::new(
        &cfg,
        Some(http::Route::Tcp(stall.local_addr().unwrap().to_string())),
    )
    .unwrap();
    client.retry = Retry {
        budget: std::time::Duration::from_secs(1),
        min_request: std::time::Duration::from_millis(300),
    };
    let started = std::time::Instant::now();
    let f = client
        .call(
            &client.manager,
            "nonce",
            "POST",
            "/v1/attestation/nonce",
            None,
        )
        .unwrap_err();
    assert_eq!(f.code, "unreachable", "{f}");
    assert_eq!(f.exit_status(), EXIT_UNREACHABLE);
    assert!(f.detail.contains("within the time the image allows"), "{f}");
    // Without the deadline the read blocks forever (vsock) or 60 s per attempt (TCP); a
    // generous bound that only a missing deadline exceeds.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_certificate_whose_files_cannot_all_be_written_replaces_none_of_them() {
    let (dir, outside, cfg, target) = hostile_image();
    let spec = &cfg.certificates[0];
    let first = Issued {
        key: generate_key(spec.key).unwrap(),
        certificate: "CERT1\n".into(),
        chain: "CHAIN1\n".into(),
        not_after: None,
    };
    write_issued(&target, spec, &first).unwrap();
    let key1 = std::fs::read(dir.path().join("run/app.key")).unwrap();
    // The app replaces its certificate file with a link: the renewal is refused as a whole.
    std::fs::remove_file(dir.path().join("run/app.crt")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join("run/app.crt")).unwrap();
    let second = Issued {
        key: generate_key(spec.key).unwrap(),
        certificate: "CERT2\n".into(),
        chain: "CHAIN2\n".into(),
        not_after: None,
    };
    let f = write_issued(&target, spec, &second).unwrap_err();
    assert_eq!(f.code, "path_refused", "{f}");
    assert_eq!(
        std::fs::read(dir.path().join("run/app.key")).unwrap(),
        key1,
        "old key kept"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/chain.pem")).unwrap(),
        "CHAIN1\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("cloak-tmp")), "{names:?}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
