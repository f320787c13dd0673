//! The `cloak` client verbs (login, app, build, task, registry, user, apikey, audit) against a
//! real `cloak manager serve` process, each user with their own config directory; every byte
//! the verbs print is kept and scanned for secrets at the end of each test.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::manager::{Backend, Manager, ADMIN_PASSWORD};
use serde_json::{json, Value};

const ALICE_PASSWORD: &str = "alice-password-for-cli-1";
const BOB_PASSWORD: &str = "bob-password-for-cli-22";
const REGISTRY_PASSWORD: &str = "registry-secret-for-cli-333";

/// A manager and a transcript of everything the verbs printed.
struct Harness {
    m: Manager,
    transcript: RefCell<Vec<(String, Vec<u8>)>>,
}

/// One person at a terminal: their own `$XDG_CONFIG_HOME` (and `$HOME`).
struct User<'a> {
    h: &'a Harness,
    home: tempfile::TempDir,
}

/// The result of one `cloak` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }
    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
    }
    /// Exit status `code`; returns stderr.
    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

impl Harness {
    fn start(backend: Backend) -> Harness {
        Harness {
            m: Manager::start(backend),
            transcript: RefCell::new(Vec::new()),
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.m.data_dir().join("tls.crt")
    }

    fn user(&self) -> User<'_> {
        User {
            h: self,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A user logged in with `cloak login`.
    fn logged_in(&self, name: &str, password: &str) -> User<'_> {
        let u = self.user();
        u.run_env(
            &["login", "--url", &self.m.url, "--cacert"],
            &[&self.ca_path().display().to_string(), "--user", name],
            &[("CLOAK_PASSWORD", password)],
            None,
        )
        .ok();
        u
    }

    /// No secret in anything printed, except each API key's secret in the output that created it.
    fn scan(&self, secrets: &[&str], key_secrets: &[String]) {
        for (what, bytes) in self.transcript.borrow().iter() {
            let text = String::from_utf8_lossy(bytes);
            for s in secrets {
                assert!(
                    !text.contains(s),
                    "a secret in the output of {what}:\n{text}"
                );
            }
            for k in key_secrets {
                if text.contains(k.as_str()) {
                    assert!(
                        what.contains("apikey create"),
                        "an API key secret in the output of {what}:\n{text}"
                    );
                }
            }
        }
    }
}

impl User<'_> {
    fn config(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn login_file(&self) -> PathBuf {
        self.config().join("cloak/login.json")
    }

    fn command(&self) -> Command {
        let mut c = common::cloak();
        for v in [
            "CLOAK_MANAGER_URL",
            "CLOAK_MANAGER_CACERT",
            "CLOAK_MANAGER_TOKEN",
            "CLOAK_PASSWORD",
            "CLOAK_REGISTRY_PASSWORD",
            "CLOAK_NEW_PASSWORD",
        ] {
            c.env_remove(v);
        }
        c.env("XDG_CONFIG_HOME", self.config())
            .env("HOME", self.home.path());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[], &[], None)
    }

    fn run_env(
        &self,
        args: &[&str],
        more: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Run {
        let mut c = self.command();
        c.args(args).args(more);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("cannot run cloak");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out: Output = child.wait_with_output().unwrap();
        let what = format!("cloak {}", [args, more].concat().join(" "));
        let mut t = self.h.transcript.borrow_mut();
        t.push((what.clone(), out.stdout.clone()));
        t.push((what, out.stderr.clone()));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn stored_token(&self) -> String {
        let v: Value = serde_json::from_slice(&std::fs::read(self.login_file()).unwrap()).unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

fn hex(byte: u8, len: usize) -> String {
    format!("{byte:02x}").repeat(len / 2)
}

/// The first whitespace-separated word after `prefix` in `text`.
fn word_after<'t>(text: &'t str, prefix: &str) -> &'t str {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"));
    text[at + prefix.len()..].split_whitespace().next().unwrap()
}

#[test]
fn login_keeps_a_private_token_file_and_logout_ends_the_session() {
    let h = Harness::start(Backend::Sqlite);
    let admin = h.logged_in("admin", ADMIN_PASSWORD);
    let file = admin.login_file();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(ADMIN_PASSWORD), "{stored}");
    let v: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["url"], h.m.url.as_str());
    assert_eq!(v["user"], "admin");
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    let token = admin.stored_token();

    // Every verb finds the manager, its CA and the token in the stored login.
    let me = admin.run(&["user", "list", "-o", "json"]).json();
    assert_eq!(me[0]["user_name"], "admin");

    // The password from standard input works as well as CLOAK_PASSWORD; the wrong one is the
    // manager's 401, shown as it is.
    let other = h.user();
    let err = other
        .run_env(
            &["login", "--url", &h.m.url, "--cacert"],
            &[
                &h.ca_path().display().to_string(),
                "--user",
                "admin",
                "--password-stdin",
            ],
            &[],
            Some("not-the-password-at-all\n"),
        )
        .fails(1);
    assert!(
        err.contains("unauthenticated: the user name or password is wrong"),
        "{err}"
    );
    assert!(!other.login_file().exists());
    other
        .run_env(
            &["login", "--url", &h.m.url, "--cacert"],
            &[
                &h.ca_path().display().to_string(),
                "--user",
                "admin",
                "--password-stdin",
            ],
            &[],
            Some(&format!("{ADMIN_PASSWORD}\n")),
        )
        .ok();
    // Without a password at all: a usage error naming both ways to give it.
    let err = h
        .user()
        .run(&["login", "--url", &h.m.url, "--user", "admin"])
        .fails(2);
    assert!(
        err.contains("--password-stdin") && err.contains("CLOAK_PASSWORD"),
        "{err}"
    );

    // An expired stored session is refused before anything is sent.
    let mut expired = v.clone();
    expired["expires_at"] = json!(1);
    std::fs::write(&file, serde_json::to_vec(&expired).unwrap()).unwrap();
    let err = admin.run(&["app", "list"]).fails(1);
    assert!(
        err.contains("expired") && err.contains("log in again"),
        "{err}"
    );
    std::fs::write(&file, &stored).unwrap();

    // Logout ends the session at the manager and removes the file.
    let out = admin.run(&["logout"]).ok();
    assert!(out.contains("logged out"), "{out}");
    assert!(!file.exists());
    let err = admin.run(&["app", "list"]).fails(1);
    assert!(err.contains("not logged in"), "{err}");
    // The old token is dead: a restored copy of the file gets the manager's 401 and advice.
    std::fs::write(&file, &stored).unwrap();
    let err = admin.run(&["app", "list"]).fails(1);
    assert!(
        err.contains("log in again") && err.contains("401 unauthenticated"),
        "{err}"
    );
    // The other user's session is untouched.
    other.run(&["app", "list"]).ok();

    h.scan(&[ADMIN_PASSWORD, &token], &[]);
}

fn quorum_flow(backend: Backend) {
    let h = Harness::start(backend);
    let admin = h.logged_in("admin", ADMIN_PASSWORD);
    for (name, pw) in [("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)] {
        let out = admin
            .run_env(
                &[
                    "user",
                    "create",
                    "--name",
                    name,
                    "--role",
                    "WRITER",
                    "--password-stdin",
                ],
                &[],
                &[],
                Some(&format!("{pw}\n")),
            )
            .ok();
        assert!(out.contains(&format!("created user {name}")), "{out}");
    }
    let app = admin
        .run(&[
            "app",
            "create",
            "--name",
            "payments",
            "--input-image",
            "registry.example.com/pay:1",
            "--output-image",
            "registry.example.com/pay-sgx:1",
            "--quorum",
            "2",
            "--approver",
            "alice",
            "--approver",
            "bob",
            "--exclude-requester",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(app["approval_policy"]["n"], 2);
    assert_eq!(
        app["approval_policy"]["approvers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let shown = admin.run(&["app", "show", "payments"]).ok();
    assert!(
        shown.contains("2 of [") && shown.contains("not the requester"),
        "{shown}"
    );

    // An SGX build from flags (the app by name), a Nitro one from a CCM body in a file.
    let mrenclave = hex(0x1e, 64);
    let out = admin
        .run(&[
            "build",
            "register",
            "--app",
            "payments",
            "--image",
            "registry.example.com/pay-sgx",
            "--version",
            "1",
            "--mrenclave",
            &mrenclave,
            "--mrsigner",
            &hex(0x2f, 64),
            "--isvprodid",
            "7",
            "--isvsvn",
            "3",
        ])
        .ok();
    let sgx_build = word_after(&out, "registered build ").to_string();
    let sgx_task = word_after(&out, "approval task ")
        .trim_end_matches(':')
        .to_string();
    let body = h.m.dir.path().join("nitro-build.json");
    let pcr0 = hex(0x50, 96);
    std::fs::write(
        &body,
        serde_json::to_vec(&json!({
            "docker_info": {"docker_image_name": "registry.example.com/pay-nitro", "docker_version": "1"},
            "attributes": {"nitro_enclave": {"pcr0": pcr0, "pcr1": hex(1, 96), "pcr2": hex(2, 96)}},
            "app_id": app["app_id"]
        }))
        .unwrap(),
    )
    .unwrap();
    let nitro = admin
        .run(&[
            "build",
            "register",
            "--file",
            body.to_str().unwrap(),
            "-o",
            "json",
        ])
        .json();
    assert_eq!(nitro["status"]["status"], "PENDING");
    let nitro_task = nitro["pending_task_id"].as_str().unwrap().to_string();

    let pending = admin
        .run(&["task", "list", "--status", "pending", "-o", "json"])
        .json();
    assert_eq!(pending["items"].as_array().unwrap().len(), 2);
    let table = admin.run(&["task", "list"]).ok();
    assert!(table.contains("0 of 2 approvals"), "{table}");

    // Two approvers, each logged in on their own; one approval is not enough.
    let alice = h.logged_in("alice", ALICE_PASSWORD);
    let bob = h.logged_in("bob", BOB_PASSWORD);
    let out = alice.run(&["task", "approve", &sgx_task]).ok();
    assert!(out.contains("1 of 2 approvals: alice"), "{out}");
    assert!(
        out.contains(&format!("Build {sgx_build} is PENDING")),
        "{out}"
    );
    // The same approver twice: the manager's 409, as it is.
    let err = alice.run(&["task", "approve", &sgx_task]).fails(1);
    assert!(err.contains("409 conflict"), "{err}");
    let out = bob.run(&["task", "approve", &sgx_task]).ok();
    assert!(out.contains("2 of 2 approvals: alice, bob"), "{out}");
    assert!(
        out.contains(&format!("Build {sgx_build} is WHITELISTED")),
        "{out}"
    );
    // The requester is excluded by the policy.
    let err = admin.run(&["task", "approve", &nitro_task]).fails(1);
    assert!(err.contains("403 forbidden"), "{err}");
    let out = bob
        .run(&[
            "task",
            "deny",
            &nitro_task,
            "--reason",
            "PCR0 not from our pipeline",
        ])
        .ok();
    assert!(
        out.contains("DENIED") && out.contains("PCR0 not from our pipeline"),
        "{out}"
    );

    // Show prints the measurements in full; list filters by status.
    let shown = admin.run(&["build", "show", &sgx_build]).ok();
    assert!(
        shown.contains(&format!("MRENCLAVE:  {mrenclave}")),
        "{shown}"
    );
    assert!(shown.contains("Status:     WHITELISTED"), "{shown}");
    let rejected = admin
        .run(&["build", "list", "--status", "rejected", "-o", "json"])
        .json();
    let ids: Vec<&str> = rejected["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["build_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [nitro["build_id"].as_str().unwrap()]);
    let found = admin
        .run(&["build", "list", "--search", &pcr0[..20], "-o", "json"])
        .json();
    assert_eq!(found["metadata"]["filtered_count"], 1);

    // Revocation: REJECTED with the reason, audited.
    let out = alice
        .run(&["build", "revoke", &sgx_build, "--reason", "key compromised"])
        .ok();
    assert!(
        out.contains("Status:     REJECTED") && out.contains("key compromised"),
        "{out}"
    );
    let audit = admin
        .run(&["audit", "list", "--action", "Build Revoked", "-o", "json"])
        .json();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["actor_name"], "alice");

    // Alice changes her own password (from stdin); the old one stops working. Bob is disabled.
    const NEW_PASSWORD: &str = "alice-new-password-for-cli-2";
    alice
        .run_env(
            &["user", "passwd"],
            &[],
            &[],
            Some(&format!("{ALICE_PASSWORD}\n{NEW_PASSWORD}\n")),
        )
        .ok();
    let err = h
        .user()
        .run_env(
            &["login", "--url", &h.m.url, "--user", "alice"],
            &["--cacert", &h.ca_path().display().to_string()],
            &[("CLOAK_PASSWORD", ALICE_PASSWORD)],
            None,
        )
        .fails(1);
    assert!(err.contains("401"), "{err}");
    h.logged_in("alice", NEW_PASSWORD);
    let out = admin.run(&["user", "update", "bob", "--disable"]).ok();
    assert!(out.contains("DISABLED"), "{out}");
    let err = bob.run(&["app", "list"]).fails(1);
    assert!(err.contains("log in again"), "{err}");

    let tokens = [
        admin.stored_token(),
        alice.stored_token(),
        bob.stored_token(),
    ];
    h.scan(
        &[
            ADMIN_PASSWORD,
            ALICE_PASSWORD,
            BOB_PASSWORD,
            NEW_PASSWORD,
            &tokens[0],
            &tokens[1],
            &tokens[2],
        ],
        &[],
    );
}

#[test]
fn a_quorum_of_two_approves_builds_registered_by_flags_and_by_file_sqlite() {
    quorum_flow(Backend::Sqlite);
}

#[test]
fn a_quorum_of_two_approves_builds_registered_by_flags_and_by_file_postgres() {
    quorum_flow(Backend::Postgres);
}

#[test]
fn registry_passwords_api_keys_and_the_audit_chain() {
    let h = Harness::start(Backend::Sqlite);
    let admin = h.logged_in("admin", ADMIN_PASSWORD);

    // Registry credentials: the password from stdin, never shown back.
    let out = admin
        .run_env(
            &[
                "registry",
                "add",
                "--url",
                "registry.example.com:5000",
                "--username",
                "ci",
            ],
            &["--password-stdin"],
            &[],
            Some(&format!("{REGISTRY_PASSWORD}\n")),
        )
        .ok();
    let reg_id = word_after(&out, "registry credential ").to_string();
    let list = admin.run(&["registry", "list"]).ok();
    assert!(
        list.contains("registry.example.com:5000") && list.contains("*****"),
        "{list}"
    );
    let json = admin.run(&["registry", "list", "-o", "json"]).json();
    assert_eq!(json[0]["credential"]["default"]["password"], "*****");
    let err = admin
        .run(&[
            "registry",
            "add",
            "--url",
            "r.example.com",
            "--username",
            "x",
        ])
        .fails(2);
    assert!(err.contains("CLOAK_REGISTRY_PASSWORD"), "{err}");
    admin
        .run_env(
            &["registry", "update", &reg_id, "--description", "rotated"],
            &[],
            &[("CLOAK_REGISTRY_PASSWORD", "another-registry-secret-44")],
            None,
        )
        .ok();

    // An API key for a pipeline: printed once, then used through CLOAK_MANAGER_TOKEN.
    let out = admin
        .run(&["apikey", "create", "--name", "ci", "--role", "MANAGER"])
        .ok();
    let secret = out.lines().last().unwrap().trim().to_string();
    let key_id = word_after(&out, "(").trim_end_matches(',').to_string();
    assert!(secret.len() >= 32, "{out}");
    let keys = admin.run(&["apikey", "list", "-o", "json"]).json();
    assert_eq!(keys[0]["name"], "ci");
    assert!(keys[0].get("secret").is_none());
    let pipeline = h.user();
    let ca = h.ca_path().display().to_string();
    let env = [
        ("CLOAK_MANAGER_URL", h.m.url.as_str()),
        ("CLOAK_MANAGER_CACERT", ca.as_str()),
        ("CLOAK_MANAGER_TOKEN", secret.as_str()),
    ];
    pipeline
        .run_env(
            &[
                "app",
                "create",
                "--name",
                "pipe",
                "--input-image",
                "r.example.com/a:1",
            ],
            &["--output-image", "r.example.com/a:2"],
            &env,
            None,
        )
        .ok();
    let out = pipeline
        .run_env(
            &[
                "build",
                "register",
                "--app",
                "pipe",
                "--image",
                "r.example.com/a",
                "--version",
                "2",
            ],
            &[
                "--pcr0",
                &hex(7, 96),
                "--pcr1",
                &hex(8, 96),
                "--pcr2",
                &hex(9, 96),
            ],
            &env,
            None,
        )
        .ok();
    assert!(out.contains("(PENDING)"), "{out}");
    let pipe_build = word_after(&out, "registered build ").to_string();

    admin.run(&["apikey", "revoke", &key_id]).ok();
    let err = pipeline.run_env(&["app", "list"], &[], &env, None).fails(1);
    assert!(
        err.contains("CLOAK_MANAGER_TOKEN") && err.contains("401"),
        "{err}"
    );

    // Errors: the manager's 404 and 400 as they are; ids and missing flags are usage errors.
    let err = admin
        .run(&["build", "show", "00000000-0000-4000-8000-000000000000"])
        .fails(1);
    assert!(err.contains("404 not_found"), "{err}");
    let err = admin
        .run(&[
            "build",
            "register",
            "--app",
            "pipe",
            "--image",
            "r/a",
            "--version",
            "3",
            "--mrenclave",
            "abc",
            "--mrsigner",
            &hex(1, 64),
        ])
        .fails(1);
    assert!(
        err.contains("invalid_field") && err.contains("mrenclave"),
        "{err}"
    );
    let err = admin
        .run(&[
            "build",
            "register",
            "--app",
            "pipe",
            "--image",
            "r/a",
            "--version",
            "3",
        ])
        .fails(2);
    assert!(err.contains("no measurements"), "{err}");
    let err = admin.run(&["task", "show", "../../v1/users"]).fails(2);
    assert!(err.contains("not a task id"), "{err}");
    let err = admin.run(&["app", "show", "nope"]).fails(1);
    assert!(err.contains("no app named \"nope\""), "{err}");
    admin.run(&["task", "list", "--status", "maybe"]).fails(2);

    // Update, then delete: an app with a build is kept (the manager's 409) until the build goes.
    let app = admin
        .run(&[
            "app",
            "update",
            "pipe",
            "--description",
            "CI",
            "--quorum",
            "2",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(app["description"], "CI");
    assert_eq!(app["approval_policy"]["n"], 2);
    let err = admin.run(&["app", "delete", "pipe"]).fails(1);
    assert!(err.contains("409"), "{err}");
    admin.run(&["build", "delete", &pipe_build]).ok();
    let err = admin.run(&["build", "show", &pipe_build]).fails(1);
    assert!(err.contains("404 not_found"), "{err}");
    admin.run(&["app", "delete", "pipe"]).ok();
    let apps = admin.run(&["app", "list", "-o", "json"]).json();
    assert_eq!(apps["items"].as_array().unwrap().len(), 0, "{apps}");
    admin.run(&["registry", "delete", &reg_id]).ok();
    let regs = admin.run(&["registry", "list", "-o", "json"]).json();
    assert_eq!(regs.as_array().unwrap().len(), 0, "{regs}");

    // The audit chain through the API: verified, exported as JSON lines, and a record changed
    // behind the manager's back is named.
    let out = admin.run(&["audit", "verify"]).ok();
    assert!(out.contains("audit chain verified"), "{out}");
    let export = admin.run(&["audit", "export"]).ok();
    let records: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 6, "{export}");
    assert!(records.iter().any(|r| r["action"] == "Build Registered"));
    let seq = records[2]["seq"].as_i64().unwrap();
    h.m.sql(&format!(
        "UPDATE audit_log SET details = '{{\"forged\":true}}' WHERE seq = {seq}"
    ));
    let out = admin.run(&["audit", "verify"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("BROKEN at record {seq}")),
        "{}",
        out.stdout
    );

    h.scan(
        &[
            ADMIN_PASSWORD,
            REGISTRY_PASSWORD,
            "another-registry-secret-44",
            &admin.stored_token(),
        ],
        &[secret],
    );
}
