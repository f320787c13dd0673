//! The web console in headless Chromium (WebDriver) against a real manager process: sign-in,
//! the approval quorum through the pages, roles and CSRF, denial reasons, failed sign-ins, and
//! axe-core on every page (no serious or critical violation). Screenshots of every page go to
//! target/console-screenshots.

mod common;

use cloak_api::*;
use common::browser::Browser;
use common::manager::{Backend, Manager, ADMIN_PASSWORD};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const PASSWORD: &str = "a-user-password-123";

fn hex(byte: u8, len: usize) -> String {
    format!("{byte:02x}").repeat(len / 2)
}

fn new_user(admin: &Client, name: &str, role: &str) -> User {
    admin
        .post(
            "/v1/users",
            &json!({"user_name": name, "password": PASSWORD, "role": role}),
        )
        .unwrap()
}

fn nitro_build(c: &Client, app_id: &str, pcr: u8) -> Build {
    c.post(
        "/v1/builds",
        &json!({
            "docker_info": {"docker_image_name": "registry.example.com/web", "docker_version": "1.0",
                            "docker_image_sha": format!("sha256:{}", hex(0xab, 64))},
            "attributes": {"nitro_enclave": {"pcr0": hex(pcr, 96), "pcr1": hex(1, 96), "pcr2": hex(2, 96)}},
            "app_id": app_id
        }),
    )
    .unwrap()
}

/// Signs in through the form and checks the overview answered.
fn sign_in(b: &Browser, m: &Manager, user: &str, password: &str) {
    sign_in_at(b, &m.url, user, password)
}

fn sign_in_at(b: &Browser, url: &str, user: &str, password: &str) {
    b.goto(&format!("{url}/login"));
    b.delete_cookies();
    b.goto(&format!("{url}/"));
    assert!(
        b.url().contains("/login"),
        "not sent to sign-in: {}",
        b.url()
    );
    b.fill("#login-user_name", user);
    b.fill("#login-password", password);
    b.click("form[action='/login'] button[type=submit]");
    assert_eq!(b.text("h1"), "Overview", "{}", b.text("main"));
    assert!(b.text("header").contains(user));
}

/// An HTTP client that sends the browser's session cookie (and follows no redirect).
fn http(m: &Manager) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&m.ca()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The CSRF token the page's forms carry.
fn csrf_of(b: &Browser) -> String {
    let src = b.source();
    let at = src.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    src[at..at + 64].to_string()
}

fn build_status(c: &Client, id: &str) -> String {
    c.get::<Build>(&format!("/v1/builds/{id}"))
        .unwrap()
        .status
        .status
}

#[test]
fn a_two_approver_quorum_through_the_console_with_axe_on_every_page() {
    let m = Manager::start(Backend::Sqlite);
    let admin = m.admin();
    new_user(&admin, "alice", "WRITER");
    new_user(&admin, "bob", "WRITER");
    let b = Browser::start();

    // Sign-in page, then the overview.
    b.goto(&format!("{}/", m.url));
    b.check_page("01-sign-in");
    sign_in(&b, &m, "admin", ADMIN_PASSWORD);
    b.check_page("02-overview");

    // Create the app with a quorum of 2 through the form; a bad value is shown by its field.
    b.goto(&format!("{}/apps/new", m.url));
    b.fill("#app-name", "web");
    b.fill("#app-input_image_name", "registry.example.com/web:1.0");
    b.fill("#app-output_image_name", "registry.example.com/web:nitro");
    b.fill("#app-approval_policy-n", "two");
    b.fill("#app-approval_policy-approvers", "role:WRITER");
    b.click("form[action='/apps'] button[type=submit]");
    let err = b.text("#app-approval_policy-n-error");
    assert!(
        err.contains("invalid_field"),
        "no error by the field: {}",
        b.text("main")
    );
    assert_eq!(
        b.exec(
            "return document.getElementById('app-approval_policy-n').getAttribute('aria-invalid')",
            json!([])
        ),
        json!("true")
    );
    assert_eq!(
        b.exec(
            "return document.getElementById('app-name').value",
            json!([])
        ),
        json!("web"),
        "typed values are kept"
    );
    b.check_page("03-application-form-error");
    b.fill("#app-approval_policy-n", "2");
    b.click("form[action='/apps'] button[type=submit]");
    assert_eq!(b.text("h1"), "Application web", "{}", b.text("main"));
    let app_id = b.url().rsplit('/').next().unwrap().to_string();
    let app: App = admin.get(&format!("/v1/apps/{app_id}")).unwrap();
    assert_eq!(app.approval_policy.n, 2);
    assert_eq!(
        app.approval_policy.approvers,
        vec!["role:WRITER".to_string()]
    );
    b.check_page("04-application");
    b.goto(&format!("{}/apps", m.url));
    assert!(b.text("main").contains("web"));
    b.check_page("05-applications");

    // A build registered through the API (the convert page's flow is in its own test).
    let build = nitro_build(&admin, &app_id, 0x5a);
    let pcr0 = hex(0x5a, 96);
    b.goto(&format!(
        "{}/builds?status=PENDING&measurement={}",
        m.url,
        &pcr0[..12]
    ));
    assert!(
        b.text("main").contains("1 of 1 builds match"),
        "{}",
        b.text("main")
    );
    b.check_page("06-builds");
    b.click(&format!("a[href='/builds/{}']", build.build_id));
    let main = b.text("main");
    assert!(main.contains(&pcr0), "PCR0 in full");
    assert!(
        main.contains(&format!("sha256:{}", hex(0xab, 64))),
        "image digest"
    );
    assert!(main.contains("0 of 2 approvals"), "{main}");
    assert!(b.all("button[data-copy]").len() >= 3, "copy buttons");
    b.check_page("07-build");

    // alice approves, then bob: the build is whitelisted.
    for (n, who) in ["alice", "bob"].iter().enumerate() {
        sign_in(&b, &m, who, PASSWORD);
        b.goto(&format!("{}/tasks", m.url));
        assert!(
            b.text("main").contains(&pcr0),
            "the measurements beside the button"
        );
        if n == 0 {
            b.check_page("08-tasks");
        }
        b.click("button.approve");
        assert!(
            b.url().ends_with(&format!("/builds/{}", build.build_id)),
            "{}",
            b.url()
        );
        let main = b.text("main");
        if n == 0 {
            assert!(main.contains("1 of 2 approvals: alice"), "{main}");
            assert_eq!(build_status(&admin, &build.build_id), "PENDING");
        } else {
            assert!(main.contains("2 of 2 approvals: alice, bob"), "{main}");
            assert!(main.contains("WHITELISTED"), "{main}");
        }
    }
    assert_eq!(build_status(&admin, &build.build_id), "WHITELISTED");

    // The audit page shows the events and a verified chain.
    sign_in(&b, &m, "admin", ADMIN_PASSWORD);
    b.goto(&format!("{}/audit", m.url));
    let main = b.text("main");
    assert!(main.contains("Audit chain verified"), "{main}");
    for action in ["Build Registered", "Build Whitelisted", "Login Succeeded"] {
        assert!(main.contains(action), "{action} missing:\n{main}");
    }
    b.check_page("09-audit");
    b.goto(&format!("{}/audit?action=Build+Whitelisted", m.url));
    assert!(b.text("main").contains("1 in all"), "{}", b.text("main"));

    // Registry credentials: the password is write-only.
    b.goto(&format!("{}/registries", m.url));
    b.fill("#reg-new-url", "registry.example.com");
    b.fill("#reg-new-credential-default-username", "robot");
    b.fill(
        "#reg-new-credential-default-password",
        "s3cret-registry-pass",
    );
    b.click("form[action='/registries'] button[type=submit]");
    assert!(b.text("main").contains("user robot"), "{}", b.text("main"));
    assert!(!b.source().contains("s3cret-registry-pass"));
    b.check_page("10-registries");

    for (path, name) in [
        ("/certificates", "11-certificates"),
        ("/users", "12-users"),
        ("/convert", "13-convert"),
        ("/", "14-overview-after"),
    ] {
        b.goto(&format!("{}{path}", m.url));
        b.check_page(name);
    }
    // An API key's secret is shown once.
    b.goto(&format!("{}/users", m.url));
    b.fill("#key-new-name", "ci");
    b.click("form[action='/api-keys'] button[type=submit]");
    assert!(b.text("main").contains("Copy its secret now"));
    assert!(b.source().contains("ck_key_"));
    b.goto(&format!("{}/users", m.url));
    assert!(
        !b.source().contains("ck_key_"),
        "the secret is shown only once"
    );
    assert!(!m.log().contains("s3cret-registry-pass"));
}

#[test]
fn readers_see_no_controls_and_the_server_refuses_them_and_posts_without_csrf() {
    let m = Manager::start(Backend::Sqlite);
    let admin = m.admin();
    new_user(&admin, "alice", "WRITER");
    new_user(&admin, "rita", "READER");
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "api", "input_image_name": "registry.example.com/api:1",
                    "output_image_name": "registry.example.com/api:nitro"}),
        )
        .unwrap();
    let build = nitro_build(&admin, &app.app_id, 0x33);
    let b = Browser::start();
    let h = http(&m);

    // A wrong password: an error by the field, and an audit record.
    b.goto(&format!("{}/login", m.url));
    b.fill("#login-user_name", "alice");
    b.fill("#login-password", "not-the-password-1");
    b.click("form[action='/login'] button[type=submit]");
    let err = b.text("#login-password-error");
    assert!(err.contains("wrong"), "{}", b.text("main"));
    b.check_page("20-sign-in-error");
    let failed: ListResponse<AuditRecord> = admin.get("/v1/audit?action=Login%20Failed").unwrap();
    assert_eq!(failed.items.len(), 1);
    assert_eq!(failed.items[0].actor_name, "alice");

    // The READER sees no approve, deny, revoke, convert or edit control.
    sign_in(&b, &m, "rita", PASSWORD);
    b.goto(&format!("{}/tasks", m.url));
    assert!(b.text("main").contains(&hex(0x33, 96)));
    assert!(
        b.all("button.approve").is_empty(),
        "a READER sees no approve button"
    );
    assert!(b.all("form[action$='/deny']").is_empty());
    b.check_page("21-tasks-reader");
    b.goto(&format!("{}/builds/{}", m.url, build.build_id));
    assert!(b.all("form[action$='/revoke']").is_empty());
    b.goto(&format!("{}/apps/{}", m.url, app.app_id));
    assert!(b.all("form[action^='/apps/']").is_empty(), "no edit form");
    b.goto(&format!("{}/convert", m.url));
    assert!(b.all("form[action='/convert']").is_empty());
    b.goto(&format!("{}/registries", m.url));
    assert!(b.all("form[action='/registries']").is_empty());

    // The session cookie's attributes.
    let c = b.cookie("cloak_session");
    assert_eq!(c["httpOnly"], json!(true), "{c}");
    assert_eq!(c["secure"], json!(true), "{c}");
    assert_eq!(c["sameSite"], json!("Strict"), "{c}");
    assert!(c["expiry"].as_i64().is_some(), "the cookie expires: {c}");

    // A forged approval with the READER's session and a valid CSRF token: refused by the server.
    let rita_cookie = format!("cloak_session={}", c["value"].as_str().unwrap());
    let csrf = csrf_of(&b);
    let task = build.task_id.clone();
    let r = h
        .post(format!("{}/tasks/{task}/approve", m.url))
        .header("cookie", &rita_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().unwrap().contains("forbidden"));
    assert_eq!(build_status(&admin, &build.build_id), "PENDING");

    // alice (an approver) without the CSRF token, and with another session's token: refused.
    sign_in(&b, &m, "alice", PASSWORD);
    b.goto(&format!("{}/tasks", m.url));
    let alice_cookie = format!(
        "cloak_session={}",
        b.cookie("cloak_session")["value"].as_str().unwrap()
    );
    for body in [String::new(), format!("csrf={csrf}"), "csrf=".into()] {
        let r = h
            .post(format!("{}/tasks/{task}/approve", m.url))
            .header("cookie", &alice_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "body {body:?}");
    }
    // No session at all: not signed in.
    let r = h
        .post(format!("{}/tasks/{task}/approve", m.url))
        .body(format!("csrf={csrf}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(build_status(&admin, &build.build_id), "PENDING");

    // Deny: the reason is required (error by the field), then shown on the build.
    let deny = format!("form[action='/tasks/{task}/deny']");
    b.click(&format!("{deny} button[type=submit]"));
    let err = b.text(&format!("#deny-{task}-denial_reason-error"));
    assert!(err.contains("required"), "{}", b.text("main"));
    b.check_page("22-tasks-deny-error");
    b.fill(
        &format!("#deny-{task}-denial_reason"),
        "base image carries CVE-2026-0001",
    );
    b.click(&format!("{deny} button[type=submit]"));
    assert!(
        b.url().ends_with(&format!("/builds/{}", build.build_id)),
        "{}",
        b.url()
    );
    let main = b.text("main");
    assert!(main.contains("REJECTED"), "{main}");
    assert!(main.contains("base image carries CVE-2026-0001"), "{main}");
    b.check_page("23-build-denied");
    assert_eq!(build_status(&admin, &build.build_id), "REJECTED");
    let t: Value = admin.get(&format!("/v1/tasks/{task}")).unwrap();
    assert_eq!(
        t["denial_reason"],
        json!("base image carries CVE-2026-0001")
    );

    // Signing out ends the session: the old cookie no longer works.
    b.click("form[action='/logout'] button[type=submit]");
    assert!(b.url().contains("/login"));
    let r = h
        .get(format!("{}/tasks", m.url))
        .header("cookie", &alice_cookie)
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        303,
        "a revoked session is sent to sign in"
    );
}

/// Opens the job page until the job has ended (the page's own script reloads it too).
fn wait_for_job(b: &Browser, m: &Manager, job_url: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    loop {
        b.goto(job_url);
        let h1 = b.text("h1");
        if !h1.contains("QUEUED") && !h1.contains("RUNNING") {
            return h1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not end: {}\n{}",
            b.text("main"),
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The registry's user and password, typed into the form's one-off credential fields.
const REG_USER: &str = "console-reg-user";
const REG_PASSWORD: &str = "One-0ff-Registry-Pa55word";

#[test]
fn a_nitro_conversion_through_the_form_is_whitelisted_by_two_approvers() {
    // TLS + htpasswd: the job pulls and pushes with credentials typed for it alone.
    let reg = common::registry::Registry::tls_htpasswd(REG_USER, REG_PASSWORD);
    let tmp = tempfile::tempdir().unwrap();
    let layout = common::images::busybox(&tmp.path().join("busybox"));
    let input = format!("{}/console/busybox:1", reg.addr());
    let output = format!("{}/console/busybox-nitro:1", reg.addr());
    common::ok(
        common::cloak()
            .env("DOCKER_CONFIG", reg.docker_config_dir())
            .args(["copy", "--dest-cert-dir"])
            .arg(reg.cert_dir())
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{input}")),
    );
    let reg_ca = reg.cert_dir().join("ca.crt");
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The premise: the registry refuses a client without credentials.
    let anonymous = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&reg_ca).unwrap()).unwrap()])
        .build()
        .unwrap()
        .get(format!(
            "https://{}/v2/console/busybox/manifests/1",
            reg.addr()
        ))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let kernel =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.work/kernel/vmlinuz");
    if !kernel.exists() {
        common::ok(std::process::Command::new("bash").arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-kernel.sh"),
        ));
    }
    let m = Manager::start_with(
        Backend::Sqlite,
        &[
            "--nitro-kernel",
            kernel.to_str().unwrap(),
            "--registry-ca",
            reg_ca.to_str().unwrap(),
            // The test registry is on loopback, which the address policy refuses unless listed.
            "--allow-private-registry",
            &reg.addr(),
            "--workers",
            "1",
        ],
    );
    let admin = m.admin();
    new_user(&admin, "alice", "WRITER");
    new_user(&admin, "bob", "WRITER");
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "busybox", "input_image_name": input, "output_image_name": output,
                    "approval_policy": {"n": 2, "approvers": ["role:WRITER"]}}),
        )
        .unwrap();
    let b = Browser::start();
    sign_in(&b, &m, "admin", ADMIN_PASSWORD);

    // The Nitro form, filled from the app; a bad option is refused beside its field.
    b.goto(&format!(
        "{}/convert?target=nitro&app_id={}",
        m.url, app.app_id
    ));
    assert_eq!(
        b.exec(
            "return document.getElementById('convert-request-input_image-name').value",
            json!([])
        ),
        json!(input)
    );
    // One-off credentials beside the saved-credential hint (none is saved for this registry).
    assert!(
        b.text("main")
            .contains("No saved credentials for this registry"),
        "{}",
        b.text("main")
    );
    let one_off = |image: &str| {
        b.fill(
            &format!("#convert-request-{image}_image-auth_config-username"),
            REG_USER,
        );
        b.fill(
            &format!("#convert-request-{image}_image-auth_config-password"),
            REG_PASSWORD,
        );
    };
    one_off("input");
    one_off("output");
    // A password without its username is refused beside the username.
    b.fill("#convert-request-output_image-auth_config-username", "");
    b.fill("#convert-nitro_enclaves_options-cpu_count", "0");
    b.click("form[action='/convert'] button[type=submit]");
    let err = b.text("#convert-request-output_image-auth_config-username-error");
    assert!(err.contains("username"), "{}", b.text("main"));
    // Passwords are not sent back: both are typed again.
    one_off("input");
    one_off("output");
    b.click("form[action='/convert'] button[type=submit]");
    let err = b.text("#convert-nitro_enclaves_options-cpu_count-error");
    assert!(err.contains("cpu"), "{}", b.text("main"));
    // The refused form keeps the usernames and never sends a password back.
    assert!(!b.source().contains(REG_PASSWORD), "a password echoed");
    for image in ["input", "output"] {
        let value = |f: &str| {
            b.exec(
                &format!(
                    "return document.getElementById('convert-request-{image}_image-auth_config-{f}').value"
                ),
                json!([]),
            )
        };
        assert_eq!(value("username"), json!(REG_USER));
        assert_eq!(value("password"), json!(""));
    }
    one_off("input");
    one_off("output");
    b.fill("#convert-nitro_enclaves_options-cpu_count", "2");
    b.fill(
        "#convert-request-converter_options-env_vars",
        "MODE=console",
    );
    b.check_page("30-convert-nitro");
    b.click("form[action='/convert'] button[type=submit]");
    let job_url = b.url();
    assert!(job_url.contains("/jobs/"), "{job_url}: {}", b.text("main"));
    // The page reloads itself while the job runs: a screenshot only (axe runs on its final form).
    b.screenshot("31-job");
    let h1 = wait_for_job(&b, &m, &job_url);
    assert_eq!(h1, "Conversion SUCCEEDED", "{}", b.text("main"));
    b.check_page("32-job-result");
    assert!(
        reg.has_tag("console/busybox-nitro:1"),
        "pushed with the one-off credentials"
    );
    // Used for this job only: not saved, not shown, not logged, not in the database in clear
    // (sealed while the job lived, erased when it ended).
    assert!(!b.source().contains(REG_PASSWORD));
    let saved: Value = admin.get("/v1/registry").unwrap();
    assert!(!saved.to_string().contains(REG_USER), "saved: {saved}");
    let job_json: Value = admin
        .get(&format!("/v1/jobs/{}", job_url.rsplit('/').next().unwrap()))
        .unwrap();
    assert!(!job_json.to_string().contains(REG_PASSWORD), "{job_json}");
    assert!(
        !m.log().contains(REG_PASSWORD),
        "the password is in the manager's log"
    );
    assert!(
        !common::manager::contains(&m.raw_database(), REG_PASSWORD),
        "the password is in the database in clear"
    );

    // The build is PENDING with the job result's PCRs.
    let job_id = job_url.rsplit('/').next().unwrap();
    let job: Job = admin.get(&format!("/v1/jobs/{job_id}")).unwrap();
    let result: Build = serde_json::from_value(job.result.clone().unwrap()).unwrap();
    let pcrs = result
        .attributes
        .nitro_enclave
        .clone()
        .expect("PCRs in the result");
    let build_id = job.build_id.clone().unwrap();
    let main = b.text("main");
    for pcr in [&pcrs.pcr0, &pcrs.pcr1, &pcrs.pcr2] {
        assert!(main.contains(pcr.as_str()), "{pcr} not on the result");
    }
    b.click("#result-build");
    let main = b.text("main");
    assert!(main.contains("PENDING"), "{main}");
    for pcr in [&pcrs.pcr0, &pcrs.pcr1, &pcrs.pcr2] {
        assert!(main.contains(pcr.as_str()), "{pcr} not on the build");
    }
    assert!(
        main.contains("MODE=console"),
        "the conversion options: {main}"
    );

    // Two approvers, one after the other.
    for who in ["alice", "bob"] {
        sign_in(&b, &m, who, PASSWORD);
        b.goto(&format!("{}/tasks", m.url));
        assert!(b.text("main").contains(&pcrs.pcr0));
        b.click("button.approve");
    }
    assert!(b.text("main").contains("WHITELISTED"), "{}", b.text("main"));
    assert_eq!(build_status(&admin, &build_id), "WHITELISTED");

    sign_in(&b, &m, "admin", ADMIN_PASSWORD);
    b.goto(&format!("{}/audit", m.url));
    let main = b.text("main");
    assert!(main.contains("Audit chain verified"), "{main}");
    for action in [
        "Image Conversion Requested",
        "Image Conversion Succeeded",
        "Build Registered",
        "Build Whitelisted",
    ] {
        assert!(main.contains(action), "{action} missing:\n{main}");
    }
    b.check_page("33-audit-after-conversion");
}

/// The console's own build filters on both databases: the image prefix (any case, from the
/// start of the name: the index range; PostgreSQL compares it bytewise), status, an app's
/// builds, and a page of tasks each with its own build and approvals (read in one query each).
#[test]
fn build_filters_and_tasks_on_sqlite_and_postgresql() {
    // The browser's WebDriver client is built before any cloak client installs this.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = Browser::start();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let m = Manager::start(backend);
        let admin = m.admin();
        new_user(&admin, "alice", "WRITER");
        let app: App = admin
            .post(
                "/v1/apps",
                &json!({"name": "svc", "input_image_name": "registry.example.com/web:1",
                        "output_image_name": "registry.example.com/web:nitro",
                        "approval_policy": {"n": 2, "approvers": ["role:WRITER"]}}),
            )
            .unwrap();
        let other: App = admin
            .post(
                "/v1/apps",
                &json!({"name": "other", "input_image_name": "registry.example.com/x:1",
                        "output_image_name": "registry.example.com/x:nitro"}),
            )
            .unwrap();
        let mut made = Vec::new();
        for (app_id, image, pcr) in [
            (&app.app_id, "Registry.Example.com/Web", 0x41),
            (&app.app_id, "registry.example.com/api", 0x42),
            (&other.app_id, "registry.example.com/web-admin", 0x43),
            (
                &other.app_id,
                "other.example/registry.example.com/web",
                0x44,
            ),
        ] {
            let build: Build = admin
                .post(
                    "/v1/builds",
                    &json!({
                        "docker_info": {"docker_image_name": image, "docker_version": "1"},
                        "attributes": {"nitro_enclave": {"pcr0": hex(pcr, 96), "pcr1": hex(1, 96), "pcr2": hex(2, 96)}},
                        "app_id": app_id
                    }),
                )
                .unwrap();
            made.push(build);
        }
        // alice approves the first build (1 of 2); the third is revoked.
        m.login("alice", PASSWORD)
            .patch::<_, Value>(
                &format!("/v1/tasks/{}", made[0].task_id),
                &json!({"status": "APPROVED"}),
            )
            .unwrap();
        admin
            .post::<_, Value>(
                &format!("/v1/builds/{}/revoke", made[2].build_id),
                &json!({"reason": "superseded"}),
            )
            .unwrap();
        sign_in(&b, &m, "admin", ADMIN_PASSWORD);
        let listed = |q: &str| -> Vec<String> {
            b.goto(&format!("{}/builds?{q}", m.url));
            b.exec(
                "return Array.from(document.querySelectorAll('main table tbody td:first-child a')).map(a => a.textContent)",
                json!([]),
            )
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
        };
        let mut web = listed("image=REGISTRY.example.com%2Fweb");
        web.sort();
        assert_eq!(
            web,
            ["Registry.Example.com/Web", "registry.example.com/web-admin"],
            "{backend:?}"
        );
        assert_eq!(
            listed("image=registry.example.com%2Fa"),
            ["registry.example.com/api"],
            "{backend:?}"
        );
        assert!(
            listed("image=example.com").is_empty(),
            "a prefix, not a substring ({backend:?})"
        );
        assert!(listed("image=registry.example.com%2Fweb%25").is_empty());
        assert_eq!(listed("").len(), 4);
        assert_eq!(
            listed("status=REJECTED"),
            ["registry.example.com/web-admin"]
        );
        let mut pending = listed("status=PENDING&image=registry");
        pending.sort();
        assert_eq!(
            pending,
            ["Registry.Example.com/Web", "registry.example.com/api"],
            "{backend:?}"
        );
        b.check_page(&format!("40-builds-filtered-{backend:?}").to_lowercase());

        // The app's page lists its two builds only.
        b.goto(&format!("{}/apps/{}", m.url, app.app_id));
        let main = b.text("main");
        assert!(
            main.contains("Registry.Example.com/Web") && main.contains("registry.example.com/api")
        );
        assert!(!main.contains("web-admin"), "{main}");

        // Each task shows its own build's PCR0 and its own approvals.
        b.goto(&format!("{}/tasks", m.url));
        for (i, build) in made.iter().enumerate() {
            if i == 2 {
                continue; // revoked: its task is no longer pending
            }
            let card = b.text(&format!("#task-{}", build.task_id));
            let pcr0 = &build.attributes.nitro_enclave.as_ref().unwrap().pcr0;
            assert!(card.contains(pcr0.as_str()), "task {i}: {card}");
            for (j, other) in made.iter().enumerate() {
                let p = &other.attributes.nitro_enclave.as_ref().unwrap().pcr0;
                assert!(
                    j == i || !card.contains(p.as_str()),
                    "task {i} shows build {j}"
                );
            }
            if i == 0 {
                assert!(card.contains("1 of 2 approvals: alice"), "{card}");
            } else {
                assert!(!card.contains("alice"), "task {i}: {card}");
            }
        }
        b.check_page(&format!("41-tasks-{backend:?}").to_lowercase());
    }
}

#[derive(Debug)]
struct TestClock(AtomicI64);

impl cloak_manager::Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The overview warns when cached DCAP collateral (here the dcap-qvl sample's, whose earliest
/// item, its TCB info / QE identity, ends 2025-07-19T10:01:18Z: see the vectors' README) ends
/// within a week, and when it has ended. The manager runs in this process so that its clock can
/// be set inside and past the collateral's window.
#[test]
fn the_overview_warns_of_dcap_collateral_expiring_or_expired() {
    let collateral = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/tests/vectors/sgx-dcap/sgx_quote_collateral.json");
    const END: i64 = 1752919278;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin-password");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let config = cloak_manager::Config::resolve(cloak_manager::config::Settings {
        data_dir: Some(dir.path().join("data")),
        admin_user: Some("admin".into()),
        admin_password_file: Some(pw),
        ..Default::default()
    })
    .unwrap();
    config.prepare_data_dir().unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(END - 30 * 86400)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = rt
        .block_on(cloak_manager::server::prepare(
            config.clone(),
            clock.clone(),
        ))
        .unwrap();
    let imported = rt
        .block_on(cloak_manager::collateral::import(
            &state.db,
            &collateral,
            clock.0.load(Ordering::SeqCst),
        ))
        .unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].not_after, END, "{imported:?}");
    let (tls, _) = cloak_manager::server::tls_config(&config).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        rt.block_on(cloak_manager::server::serve(
            state,
            listener,
            Some(tls),
            std::future::pending(),
        ))
    });
    let b = Browser::start();
    let warning = |at: i64| -> String {
        clock.0.store(at, Ordering::SeqCst);
        // A new session at each time (one made a week earlier would have expired).
        sign_in_at(&b, &url, "admin", ADMIN_PASSWORD);
        b.exec(
            "return Array.from(document.querySelectorAll('.banner.collateral')).map(e => e.textContent + ' [' + e.querySelector('time').getAttribute('datetime') + ']').join(' | ')",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string()
    };
    // Eight days before the end: fine.
    assert_eq!(warning(END - 8 * 86400), "");
    // Six days before: about to expire, naming the platform, the item, the time and the fix.
    let w = warning(END - 6 * 86400);
    assert!(w.contains(&imported[0].key), "{w}");
    assert!(w.contains(&imported[0].not_after_item), "{w}");
    // The time is shown in the browser's zone, with the UTC time in its datetime.
    assert!(
        w.contains(" expires ") && w.contains("[2025-07-19T10:01:18Z]"),
        "{w}"
    );
    assert!(w.contains("cloak manager collateral import"), "{w}");
    b.check_page("42-overview-collateral-expiring");
    // One second after the end: expired.
    let w = warning(END + 1);
    assert!(
        w.contains(" expired ") && w.contains("[2025-07-19T10:01:18Z]"),
        "{w}"
    );
    assert!(w.contains("refused"), "{w}");
    b.check_page("43-overview-collateral-expired");
}
