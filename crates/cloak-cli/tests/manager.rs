//! The manager over real HTTP: a `cloak manager serve` process on a port chosen at run time,
//! each test on SQLite and on a real PostgreSQL server.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use cloak_api::*;
use common::manager::{contains, Backend, Manager, ADMIN_PASSWORD};
use serde_json::{json, Value};

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

on_both_databases!(
    nobody_gets_around_a_quorum_alone,
    api_keys_act_for_their_creator_only,
    a_login_burst_checks_few_passwords,
    approvals_racing_revocations_never_fail_or_lose_the_revocation,
    both_bodies_register_pending_builds_with_a_task,
    a_two_of_three_quorum_excludes_the_requester_and_a_denial_rejects,
    thirty_concurrent_approvals_by_three_approvers_count_three,
    every_route_enforces_its_role_and_the_account,
    secrets_appear_in_no_response_log_or_database,
    hostile_input_gets_the_right_status_and_one_error_shape,
    the_audit_chain_names_the_altered_record,
    acknowledged_registrations_survive_sigkill,
    registry_credentials_are_matched_by_host_and_survive_key_rotation,
    probes_metrics_and_the_served_openapi_document,
);

const PASSWORD: &str = "a-user-password-123";

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(byte: u8, len: usize) -> String {
    format!("{byte:02x}").repeat(len / 2)
}

fn ccm_build(app_id: &str, tag: &str, mr: u8) -> Value {
    json!({
        "docker_info": {"docker_image_name": "registry.example.com/app", "docker_version": tag,
                        "docker_image_sha": format!("sha256:{}", hex(0xaa, 64)), "docker_image_size": 12},
        "mrenclave": hex(mr, 64), "mrsigner": hex(0x22, 64), "isvprodid": 7, "isvsvn": 3,
        "app_id": app_id, "mem_size": 1024, "threads": 8,
        "advanced_settings": {"entrypoint": ["/bin/app"]}
    })
}

fn nitro_build(app_id: &str, tag: &str, pcr: u8) -> Value {
    json!({
        "docker_info": {"docker_image_name": "registry.example.com/nitro", "docker_version": tag},
        "attributes": {"nitro_enclave": {"pcr0": hex(pcr, 96), "pcr1": hex(1, 96), "pcr2": hex(2, 96)}},
        "app_id": app_id
    })
}

fn new_app(c: &Client, name: &str, policy: Option<Value>) -> App {
    let mut body = json!({"name": name, "input_image_name": "registry.example.com/app:in",
                          "output_image_name": "registry.example.com/app:out"});
    if let Some(p) = policy {
        body["approval_policy"] = p;
    }
    c.post("/v1/apps", &body).unwrap()
}

fn new_user(admin: &Client, name: &str, role: &str) -> User {
    admin
        .post(
            "/v1/users",
            &json!({"user_name": name, "password": PASSWORD, "role": role}),
        )
        .unwrap()
}

fn api_status<T>(r: Result<T, ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.status().unwrap_or_else(|| panic!("no HTTP status: {e}")),
    }
}

fn both_bodies_register_pending_builds_with_a_task(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let app = new_app(&admin, "payments", None);
    let b: Build = admin
        .post("/v1/builds", &ccm_build(&app.app_id, "1.0", 0x11))
        .unwrap();
    assert_eq!(b.status.status, "PENDING");
    assert_eq!(b.app_name, "payments");
    assert_eq!(b.mrenclave.as_deref(), Some(hex(0x11, 64).as_str()));
    assert_eq!(b.attributes.sgx.as_ref().unwrap().isvsvn, Some(3));
    let task_id = b.pending_task_id.clone().expect("pending_task_id");
    let t: Task = admin.get(&format!("/v1/tasks/{task_id}")).unwrap();
    assert_eq!(t.task_type, "BUILD_WHITELIST");
    assert_eq!(t.status.status, "INPROGRESS");
    assert_eq!(t.entity_id, b.build_id);
    let r: TaskResult = admin.get(&format!("/v1/tasks/status/{task_id}")).unwrap();
    assert_eq!(r.build_id.as_deref(), Some(b.build_id.as_str()));

    // IBM Data Shield's flat body, under IBM's /api/v1 prefix; the app is created by name.
    let flat = json!({"docker_image_name": "registry.example.com/ibm", "docker_version": "2",
        "docker_image_sha": hex(0xbb, 64), "docker_image_size": 99, "mrenclave": hex(0x33, 64),
        "mrsigner": hex(0x44, 64), "isvprodid": 1, "isvsvn": 65535, "app_name": "ibm-app"});
    let f: Build = admin.post("/api/v1/builds", &flat).unwrap();
    assert_eq!(f.status.status, "PENDING");
    assert_eq!(f.app_name, "ibm-app");
    assert_eq!(f.isvsvn, Some(65535));
    assert!(f.pending_task_id.is_some());
    let same: Build = admin
        .get(&format!("/api/v1/builds/{}", f.build_id))
        .unwrap();
    assert_eq!(same.build_id, f.build_id);
    // And the CCM body under /api/v1 too.
    let c2: Build = admin
        .post("/api/v1/builds", &ccm_build(&app.app_id, "1.1", 0x12))
        .unwrap();
    assert_eq!(c2.status.status, "PENDING");

    // Nitro measurements, and the same measurements twice: 409 naming the existing build.
    let n: Build = admin
        .post("/v1/builds", &nitro_build(&app.app_id, "n1", 0x55))
        .unwrap();
    assert_eq!(
        n.attributes.nitro_enclave.as_ref().unwrap().pcr0,
        hex(0x55, 96)
    );
    let dup = admin
        .post::<_, Value>("/v1/builds", &nitro_build(&app.app_id, "n2", 0x55))
        .unwrap_err();
    assert_eq!(dup.status(), Some(409));
    assert!(dup.to_string().contains(&n.build_id), "{dup}");

    let list: ListResponse<Build> = admin.get("/v1/builds?status=PENDING&limit=2").unwrap();
    assert_eq!(list.metadata.filtered_count, 4);
    assert_eq!(list.items.len(), 2);
    assert_eq!(list.metadata.pages, 2);
    let found: ListResponse<Build> = admin
        .get(&format!("/v1/builds?all_search={}", &hex(0x33, 64)[..16]))
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].build_id, f.build_id);
}

fn a_two_of_three_quorum_excludes_the_requester_and_a_denial_rejects(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let alice = new_user(&admin, "alice", "WRITER");
    let bob = new_user(&admin, "bob", "MANAGER");
    let carol = new_user(&admin, "carol", "WRITER");
    let app = new_app(
        &admin,
        "quorum",
        Some(
            json!({"n": 2, "approvers": [alice.user_id, bob.user_id, carol.user_id], "exclude_requester": true}),
        ),
    );
    let a = m.login("alice", PASSWORD);
    let b = m.login("bob", PASSWORD);
    let c = m.login("carol", PASSWORD);
    let build: Build = a
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x10))
        .unwrap();
    let task = format!("/v1/tasks/{}", build.task_id);
    let approve = json!({"status": "APPROVED"});

    let own = a.patch::<_, Value>(&task, &approve).unwrap_err();
    assert_eq!(own.status(), Some(403), "{own}");
    assert!(own.to_string().contains("excludes the requester"), "{own}");
    // The administrator is a MANAGER but not one of the listed approvers.
    assert_eq!(api_status(admin.patch::<_, Value>(&task, &approve)), 403);

    let t: Task = b.patch(&task, &approve).unwrap();
    assert_eq!(t.approvals.len(), 1);
    let pending: Build = a.get(&format!("/v1/builds/{}", build.build_id)).unwrap();
    assert_eq!(pending.status.status, "PENDING");
    assert_eq!(
        api_status(b.patch::<_, Value>(&task, &approve)),
        409,
        "one user counts once"
    );

    let t: Task = c.patch(&task, &approve).unwrap();
    assert_eq!(t.status.status, "SUCCESS");
    let names: BTreeSet<_> = t.approvals.iter().map(|a| a.user_name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["bob", "carol"]));
    let done: Build = a.get(&format!("/v1/builds/{}", build.build_id)).unwrap();
    assert_eq!(done.status.status, "WHITELISTED");
    assert!(done.pending_task_id.is_none());
    assert_eq!(
        api_status(c.patch::<_, Value>(&task, &approve)),
        409,
        "decided tasks are closed"
    );

    // A denial (with its reason) rejects another build at once.
    let other: Build = a
        .post("/v1/builds", &ccm_build(&app.app_id, "2", 0x20))
        .unwrap();
    let deny_task = format!("/v1/tasks/{}", other.task_id);
    assert_eq!(
        api_status(b.patch::<_, Value>(&deny_task, &json!({"status": "DENIED"}))),
        400,
        "a reason is required"
    );
    let t: Task = b
        .patch(
            &deny_task,
            &json!({"status": "DENIED", "denial_reason": "unreviewed base image"}),
        )
        .unwrap();
    assert_eq!(t.status.status, "DENIED");
    let rejected: Build = a.get(&format!("/v1/builds/{}", other.build_id)).unwrap();
    assert_eq!(rejected.status.status, "REJECTED");
    assert_eq!(
        rejected.status_reason.as_deref(),
        Some("unreviewed base image")
    );
    let denied: ListResponse<Task> = a.get("/v1/tasks?status=DENIED").unwrap();
    assert_eq!(denied.items.len(), 1);

    // A policy change is MANAGER-only, audited, and applies to tasks opened afterwards only.
    let weaker = json!({"approval_policy": {"n": 1, "approvers": ["role:WRITER"]}});
    let app_path = format!("/v1/apps/{}", app.app_id);
    assert_eq!(
        api_status(c.patch::<_, Value>(&app_path, &weaker)),
        403,
        "a WRITER cannot weaken the quorum"
    );
    let _: App = b.patch(&app_path, &weaker).unwrap();
    let old_task: Task = b.get(&task).unwrap();
    assert_eq!(old_task.approval_policy.n, 2);
    let newer: Build = a
        .post("/v1/builds", &ccm_build(&app.app_id, "3", 0x30))
        .unwrap();
    let t: Task = a
        .patch(&format!("/v1/tasks/{}", newer.task_id), &approve)
        .unwrap();
    assert_eq!(t.status.status, "SUCCESS");

    // Revocation: REJECTED with the reason, audited with who did it.
    let revoked: Build = b
        .post(
            &format!("/v1/builds/{}/revoke", build.build_id),
            &json!({"reason": "key leaked"}),
        )
        .unwrap();
    assert_eq!(revoked.status.status, "REJECTED");
    assert_eq!(revoked.status_reason.as_deref(), Some("key leaked"));
    let audit: ListResponse<AuditRecord> = admin.get("/v1/audit?action=Build%20Revoked").unwrap();
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].actor_name, "bob");
    let policy: ListResponse<AuditRecord> = admin
        .get("/v1/audit?action=App%20Approval%20Policy%20Changed")
        .unwrap();
    assert_eq!(policy.items.len(), 1);
    assert_eq!(policy.items[0].details["approval_policy"]["from"]["n"], 2);
}

fn thirty_concurrent_approvals_by_three_approvers_count_three(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let users: Vec<User> = ["u1", "u2", "u3"]
        .iter()
        .map(|n| new_user(&admin, n, "WRITER"))
        .collect();
    let ids: Vec<_> = users.iter().map(|u| u.user_id.clone()).collect();
    let app = new_app(&admin, "race", Some(json!({"n": 3, "approvers": ids})));
    let build: Build = admin
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x42))
        .unwrap();
    let clients: Vec<Client> = ["u1", "u2", "u3"]
        .iter()
        .map(|n| m.login(n, PASSWORD))
        .collect();
    let barrier = Arc::new(Barrier::new(30));
    let path = format!("/v1/tasks/{}", build.task_id);
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let c = clients[i % 3].clone();
            let barrier = barrier.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                barrier.wait();
                api_status(c.patch::<_, Value>(&path, &json!({"status": "APPROVED"})))
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let t: Task = admin.get(&path).unwrap();
    assert_eq!(t.approvals.len(), 3);
    assert_eq!(t.status.status, "SUCCESS");
    let b: Build = admin
        .get(&format!("/v1/builds/{}", build.build_id))
        .unwrap();
    assert_eq!(b.status.status, "WHITELISTED");
    let wl: ListResponse<AuditRecord> = admin
        .get(&format!(
            "/v1/audit?action=Build%20Whitelisted&entity_id={}",
            build.build_id
        ))
        .unwrap();
    assert_eq!(wl.items.len(), 1, "whitelisted exactly once");
    let approvals: ListResponse<AuditRecord> =
        admin.get("/v1/audit?action=Task%20Approved").unwrap();
    assert_eq!(approvals.items.len(), 3);
    let v: AuditVerification = admin.get("/v1/audit/verify").unwrap();
    assert!(v.ok, "{v:?}");
}

/// Calls one operation of the OpenAPI document with `token`; path ids come from `ids`.
fn call(m: &Manager, method: &str, path: &str, token: Option<&str>, ids: &Value) -> u16 {
    let mut p = path.to_string();
    for (k, v) in ids.as_object().unwrap() {
        p = p.replace(&format!("{{{k}}}"), v.as_str().unwrap());
    }
    let mut c = m.client();
    if let Some(t) = token {
        c = c.with_token(t);
    }
    let body = match method {
        "get" | "delete" => None,
        _ => Some(json!({})),
    };
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    match c.send::<Value, Value>(method, &p, body.as_ref()) {
        Ok(_) => 200,
        Err(e) => e.status().unwrap_or(0),
    }
}

fn every_route_enforces_its_role_and_the_account(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    for (n, r) in [
        ("reader", "READER"),
        ("writer", "WRITER"),
        ("manager2", "MANAGER"),
    ] {
        new_user(&admin, n, r);
    }
    // A second account with its own MANAGER, created offline by the operator.
    let out = m.offline_with_env(
        &[
            "account",
            "create",
            "--name",
            "other",
            "--admin-user",
            "mallory",
        ],
        &[("CLOAK_ADMIN_PASSWORD", PASSWORD)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let app = new_app(&admin, "matrix", None);
    let build: Build = admin
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x01))
        .unwrap();
    let reg: Registry = admin
        .post(
            "/v1/registry",
            &json!({"url": "registry.example.com", "credential": {"default": {"username": "u", "password": "p4ssword"}}}),
        )
        .unwrap();
    let key: ApiKeyCreated = admin
        .post("/v1/api_keys", &json!({"name": "ci", "role": "READER"}))
        .unwrap();
    let me: User = admin.get("/v1/user").unwrap();
    // A conversion job of the account that has ended (this manager converts nothing).
    let job_id = "00000000-0000-4000-8000-0000000000b1";
    m.sql(&format!(
        "INSERT INTO jobs (job_id, account_id, app_id, target, state, bytes_done, attempts, \
         max_attempts, request, requester, cancel_requested, input_image, output_image, created_at) \
         SELECT '{job_id}', account_id, app_id, 'SGX', 'FAILED', 0, 1, 3, '{{}}', '{{}}', 0, \
         'r/in:1', 'r/out:1', 0 FROM apps WHERE app_id = '{}'",
        app.app_id
    ));
    let config: AppConfig = admin
        .post(
            "/v1/app_configs",
            &json!({"name": "matrix", "app_id": app.app_id,
                    "app_config": {"/etc/matrix.conf": {"contents": "value"}}}),
        )
        .unwrap();
    let ids = json!({"app_id": app.app_id, "build_id": build.build_id, "task_id": build.task_id,
                     "registry_id": reg.registry_id, "user_id": me.user_id, "key_id": key.key.key_id,
                     "certificate_id": "00000000-0000-4000-8000-000000000001", "job_id": job_id,
                     "config_id": config.config_id});

    let token = |u: &str, pw: &str| m.client().login(u, pw).unwrap().access_token;
    let expired = token("reader", PASSWORD);
    // Sessions are stored as SHA-256 of the token: expire exactly this one.
    let expired_hash = {
        use sha2::Digest;
        hex_string(&sha2::Sha256::digest(expired.as_bytes()))
    };
    m.sql(&format!(
        "UPDATE sessions SET expires_at = 0 WHERE token_hash = '{expired_hash}'"
    ));
    let reader = token("reader", PASSWORD);
    let writer = token("writer", PASSWORD);
    let manager = token("manager2", PASSWORD);
    let mallory = token("mallory", PASSWORD);
    assert_eq!(
        api_status(
            m.client()
                .with_token(expired.clone())
                .get::<Value>("/v1/builds")
        ),
        401
    );
    let forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJNQU5BR0VSIn0.";

    let doc: Value = m.client().get("/openapi.json").unwrap();
    let rank = |r: &str| {
        ["READER", "WRITER", "MANAGER"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut access = op["x-cloak-access"].as_str().unwrap();
            // Changing another user than oneself needs MANAGER (the route also serves self-service).
            if method == "patch" && path == "/v1/users/{user_id}" {
                access = "MANAGER";
            }
            let with_ids = path.contains('{');
            for (name, tok) in [
                ("none", None),
                ("expired", Some(expired.as_str())),
                ("forged", Some(forged)),
                ("reader", Some(reader.as_str())),
                ("writer", Some(writer.as_str())),
                ("manager", Some(manager.as_str())),
                ("other-account", Some(mallory.as_str())),
            ] {
                let valid = matches!(name, "reader" | "writer" | "manager" | "other-account");
                if valid && path == "/v1/sys/session/terminate" {
                    continue; // would end the session the rest of the matrix uses; tested below
                }
                if name == "manager" && method != "get" && with_ids {
                    continue; // would delete or change the shared fixtures; covered by the tests above
                }
                let got = call(&m, method, path, tok, &ids);
                let ctx = format!("{} {path} as {name}: got {got}", method.to_uppercase());
                checked += 1;
                assert!(got < 500 && got > 0, "{ctx}");
                if access == "public" {
                    continue;
                }
                if !valid {
                    assert_eq!(got, 401, "{ctx}");
                    continue;
                }
                let role = match name {
                    "reader" => "READER",
                    "writer" => "WRITER",
                    _ => "MANAGER",
                };
                if rank(role) < rank(access) {
                    assert_eq!(got, 403, "{ctx}");
                } else {
                    assert!(got != 401 && got != 403, "{ctx}");
                    if name == "other-account" && with_ids {
                        // A body the route cannot take is refused (400) before any lookup,
                        // which tells nothing about the object; otherwise it is not found.
                        let body_refused =
                            got == 400 && !matches!(method.as_str(), "get" | "delete");
                        assert!(
                            got == 404 || body_refused,
                            "another account's objects are invisible: {ctx}"
                        );
                    }
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} checks");
    // The other account sees none of this account's objects in listings either.
    let other = m.login("mallory", PASSWORD);
    let l: ListResponse<Build> = other.get("/v1/builds").unwrap();
    assert_eq!(l.metadata.total_count, 0);
    let a: ListResponse<AuditRecord> = other.get("/v1/audit").unwrap();
    assert!(a
        .items
        .iter()
        .all(|r| r.account_id != build.app_id && r.entity_id != build.build_id));
    // The API key (READER) reads but cannot change; revoked, it stops working.
    let k = m.client().with_token(key.secret.clone());
    let _: Value = k.get("/v1/apps").unwrap();
    assert_eq!(
        api_status(k.post::<_, Value>(
            "/v1/apps",
            &json!({"name": "x", "input_image_name": "a", "output_image_name": "b"})
        )),
        403
    );
    admin
        .delete(&format!("/v1/api_keys/{}", key.key.key_id))
        .unwrap();
    assert_eq!(
        api_status(k.get::<Value>("/v1/apps")),
        401,
        "revoked keys stop working"
    );
    // A terminated session stops working.
    let mut s = m.client();
    s.login("writer", PASSWORD).unwrap();
    let _: Value = s
        .send::<Value, Value>(reqwest::Method::POST, "/v1/sys/session/terminate", None)
        .unwrap();
    assert_eq!(api_status(s.get::<Value>("/v1/apps")), 401);
}

fn secrets_appear_in_no_response_log_or_database(backend: Backend) {
    const REG_PASSWORD: &str = "Registry-Secret-Test-9f2c";
    const APP_SECRET: &str = "App-Config-Secret-7d1e";
    const APP_TOKEN: &str = "App-Config-Token-c40b";
    let m = Manager::start(backend);
    let admin = m.admin();
    let mut bodies = String::new();
    let reg: Value = admin
        .post(
            "/v1/registry",
            &json!({"url": "https://registry.example.com:5000", "description": "ci",
                    "credential": {"default": {"username": "robot", "password": REG_PASSWORD}}}),
        )
        .unwrap();
    bodies.push_str(&reg.to_string());
    assert_eq!(reg["credential"]["default"]["password"], "*****");
    let key: Value = admin
        .post(
            "/v1/api_keys",
            &json!({"name": "pipeline", "role": "WRITER"}),
        )
        .unwrap();
    let secret = key["secret"].as_str().unwrap().to_string();
    let user: Value = admin
        .post(
            "/v1/users",
            &json!({"user_name": "dave", "password": PASSWORD, "role": "READER"}),
        )
        .unwrap();
    bodies.push_str(&user.to_string());
    let k = m.client().with_token(secret.clone());
    let app = new_app(&admin, "by-key", None);
    let build: Value = k
        .post("/v1/builds", &ccm_build(&app.app_id, "k1", 0x71))
        .unwrap();
    bodies.push_str(&build.to_string());
    // App configs: written, listed, read, changed; their values are write-only.
    let cfg: Value = admin
        .post(
            "/v1/app_configs",
            &json!({"name": "db", "app_id": app.app_id,
                    "app_config": {"/etc/app/db.conf": {"contents": format!("password={APP_SECRET}\n")},
                                   "env:DB_TOKEN": {"contents": APP_TOKEN}}}),
        )
        .unwrap();
    bodies.push_str(&cfg.to_string());
    let cfg_id = cfg["config_id"].as_str().expect("config_id").to_string();
    let changed: Value = admin
        .patch(
            &format!("/v1/app_configs/{cfg_id}"),
            &json!({"app_config": {"env:DB_TOKEN": {"contents": format!("{APP_TOKEN}-2")}}}),
        )
        .unwrap();
    bodies.push_str(&changed.to_string());
    for path in [
        format!("/v1/app_configs/{cfg_id}"),
        format!("/v1/app_configs?app_id={}", app.app_id),
    ] {
        let v: Value = admin.get(&path).unwrap();
        assert!(v.to_string().contains("DB_TOKEN"), "names are shown: {v}");
        bodies.push_str(&v.to_string());
    }
    for path in [
        "/v1/registry",
        "/v1/api_keys",
        "/v1/users",
        "/v1/audit?limit=1000",
        "/v1/image/registry?name=registry.example.com:5000/app:1",
    ] {
        let v: Value = admin.get(path).unwrap();
        bodies.push_str(&v.to_string());
    }
    // The change made with the API key is audited as that key.
    let by_key: ListResponse<AuditRecord> = admin.get("/v1/audit?actor=pipeline").unwrap();
    assert_eq!(by_key.items[0].actor_type, "api_key");
    let export = m.raw_get(
        "/v1/audit/export",
        &m.client()
            .login("admin", ADMIN_PASSWORD)
            .unwrap()
            .access_token,
    );
    bodies.push_str(&export);
    // A failed login that uses the registry password as a password must not log it either.
    assert_eq!(
        m.client()
            .login("admin", REG_PASSWORD)
            .unwrap_err()
            .status(),
        Some(401)
    );
    let log = m.log();
    let db = m.raw_database();
    for s in [
        REG_PASSWORD,
        secret.as_str(),
        PASSWORD,
        ADMIN_PASSWORD,
        APP_SECRET,
        APP_TOKEN,
    ] {
        assert!(!bodies.contains(s), "a response holds a secret");
        assert!(!log.contains(s), "the log holds a secret");
        assert!(
            !contains(&db, s),
            "the database holds a secret in plain text"
        );
    }
    assert!(
        contains(&db, "robot"),
        "the dump is real (the user name is not secret)"
    );
}

fn hostile_input_gets_the_right_status_and_one_error_shape(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let token = m
        .client()
        .login("admin", ADMIN_PASSWORD)
        .unwrap()
        .access_token;
    let app = new_app(&admin, "hostile", None);
    let _: Build = admin
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x61))
        .unwrap();
    let q = |k: &str, v: &str| -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair(k, v)
            .finish()
    };
    for evil in [
        "' OR 1=1 --",
        "%",
        "_",
        "\\",
        "\"; DROP TABLE builds; --",
        "%' UNION SELECT * FROM users --",
    ] {
        for param in ["all_search", "docker_image_name"] {
            let l: ListResponse<Build> = admin
                .get(&format!("/v1/builds?{}", q(param, evil)))
                .unwrap();
            assert_eq!(l.items.len(), 0, "{param}={evil} matched");
        }
        for param in ["action", "actor", "entity_id"] {
            let l: ListResponse<AuditRecord> =
                admin.get(&format!("/v1/audit?{}", q(param, evil))).unwrap();
            assert_eq!(l.items.len(), 0, "{param}={evil} matched");
        }
        let l: ListResponse<Task> = admin
            .get(&format!("/v1/tasks?{}", q("task_type", evil)))
            .unwrap_or_else(|e| {
                assert_eq!(e.status(), Some(400));
                ListResponse {
                    metadata: SearchMetadata {
                        page: 1,
                        pages: 0,
                        limit: 1,
                        total_count: 0,
                        filtered_count: 0,
                    },
                    items: vec![],
                }
            });
        assert!(l.items.is_empty());
        assert_eq!(
            api_status(admin.get::<Value>(&format!("/v1/builds?{}", q("sort_by", evil)))),
            400
        );
        assert_eq!(
            api_status(admin.get::<Value>(&format!("/v1/builds?{}", q("status", evil)))),
            400
        );
        let s = api_status(admin.get::<Value>(&format!("/v1/image/registry?{}", q("name", evil))));
        assert!(s == 400 || s == 404, "{evil}: {s}");
    }
    let all: ListResponse<Build> = admin.get("/v1/builds").unwrap();
    assert_eq!(all.items.len(), 1, "the table is intact");

    let shape = |(status, v): (u16, Value), want: u16, kind: &str, mention: &str| {
        assert_eq!(status, want, "{v}");
        assert_eq!(v["type"], kind, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(mention),
            "{mention}: {v}"
        );
    };
    let t = Some(token.as_str());
    let big = vec![b' '; (1 << 20) + 10];
    shape(
        m.raw("POST", "/v1/apps", big, t),
        413,
        "body_too_large",
        "larger than",
    );
    shape(
        m.raw("POST", "/v1/apps", b"{\"name\": ".to_vec(), t),
        400,
        "invalid_body",
        "not valid JSON",
    );
    shape(
        m.raw(
            "POST",
            "/v1/apps",
            br#"{"name": 5, "input_image_name": "a", "output_image_name": "b"}"#.to_vec(),
            t,
        ),
        400,
        "invalid_field",
        "name",
    );
    shape(
        m.raw(
            "POST",
            "/v1/apps",
            br#"{"name": "x", "input_image_name": "a", "output_image_name": "b", "evil": 1}"#
                .to_vec(),
            t,
        ),
        400,
        "invalid_field",
        "evil",
    );
    let mut bad_isv = ccm_build(&app.app_id, "2", 0x62);
    bad_isv["isvsvn"] = json!(70000);
    shape(
        m.raw(
            "POST",
            "/v1/builds",
            serde_json::to_vec(&bad_isv).unwrap(),
            t,
        ),
        400,
        "invalid_field",
        "isvsvn",
    );
    let mut bad_mr = ccm_build(&app.app_id, "2", 0x62);
    bad_mr["mrenclave"] = json!("abc");
    shape(
        m.raw(
            "POST",
            "/v1/builds",
            serde_json::to_vec(&bad_mr).unwrap(),
            t,
        ),
        400,
        "invalid_field",
        "mrenclave",
    );
    let mut bad_pcr = nitro_build(&app.app_id, "3", 0x63);
    bad_pcr["attributes"]["nitro_enclave"]["pcr1"] = json!("zz");
    shape(
        m.raw(
            "POST",
            "/v1/builds",
            serde_json::to_vec(&bad_pcr).unwrap(),
            t,
        ),
        400,
        "invalid_field",
        "pcr1",
    );
    let mut unknown = ccm_build(&app.app_id, "4", 0x64);
    unknown["docker_info"]["sneaky"] = json!(true);
    shape(
        m.raw(
            "POST",
            "/v1/builds",
            serde_json::to_vec(&unknown).unwrap(),
            t,
        ),
        400,
        "invalid_field",
        "sneaky",
    );
    shape(
        m.raw("GET", "/v1/builds/not-a-uuid", vec![], t),
        400,
        "invalid_field",
        "build_id",
    );
    shape(
        m.raw(
            "GET",
            "/v1/builds/00000000-0000-4000-8000-000000000000",
            vec![],
            t,
        ),
        404,
        "not_found",
        "build",
    );
    shape(
        m.raw("GET", "/v1/builds?limit=-1", vec![], t),
        400,
        "invalid_field",
        "limit",
    );
    shape(
        m.raw("GET", "/v1/builds?limit=abc", vec![], t),
        400,
        "invalid_field",
        "limit",
    );
    shape(
        m.raw("GET", "/v1/nope", vec![], t),
        404,
        "not_found",
        "route",
    );
    shape(
        m.raw("PUT", "/v1/builds", vec![], t),
        405,
        "method_not_allowed",
        "method",
    );
    // JWTs, however crafted, are not tokens here.
    for jwt in [
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmVkLXdpdGgtYW5vdGhlci1rZXk",
    ] {
        shape(
            m.raw("GET", "/v1/builds", vec![], Some(jwt)),
            401,
            "unauthenticated",
            "not valid",
        );
    }
    shape(
        m.raw("GET", "/v1/builds", vec![], None),
        401,
        "unauthenticated",
        "Bearer",
    );
    // Wrong passwords: 401 and audited; repeated ones wait (429 with Retry-After).
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            m.client()
                .login("admin", "wrong-password-xx")
                .unwrap_err()
                .status()
                .unwrap(),
        );
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let failed: ListResponse<AuditRecord> = admin.get("/v1/audit?action=Login%20Failed").unwrap();
    assert!(failed.items.len() >= 5);
    let unknown_user = m.client().login("nobody", "whatever-password").unwrap_err();
    assert_eq!(unknown_user.status(), Some(401));
    assert!(
        unknown_user
            .to_string()
            .contains("user name or password is wrong"),
        "{unknown_user}"
    );
}

fn the_audit_chain_names_the_altered_record(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let app = new_app(&admin, "audited", None);
    for i in 0..1000u32 {
        let _: App = admin
            .patch(
                &format!("/v1/apps/{}", app.app_id),
                &json!({"description": format!("change {i}")}),
            )
            .unwrap();
    }
    let verify = |m: &Manager| -> (bool, String) {
        let out = m.offline(&["audit", "verify"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = verify(&m);
    assert!(ok, "{text}");
    assert!(text.contains("verified"), "{text}");
    let api: AuditVerification = admin.get("/v1/audit/verify").unwrap();
    assert!(api.ok && api.records > 1000, "{api:?}");
    let account = m.sql("SELECT account_id FROM accounts").trim().to_string();
    let at = |seq: i64| format!("account_id = '{account}' AND seq = {seq}");

    // An edited detail.
    let original = m.sql(&format!("SELECT details FROM audit_log WHERE {}", at(500)));
    m.sql(&format!(
        "UPDATE audit_log SET details = '{{\"description\":\"forged\"}}' WHERE {}",
        at(500)
    ));
    let (ok, text) = verify(&m);
    assert!(!ok && text.contains("record 500"), "{text}");
    let api: AuditVerification = admin.get("/v1/audit/verify").unwrap();
    assert_eq!(api.first_bad_seq, Some(500));
    m.sql(&format!(
        "UPDATE audit_log SET details = '{}' WHERE {}",
        original.trim().replace('\'', "''"),
        at(500)
    ));
    assert!(verify(&m).0, "restored");

    // Two records swapped.
    let swap = |m: &Manager| {
        m.sql(&format!("UPDATE audit_log SET seq = -1 WHERE {}", at(600)));
        m.sql(&format!("UPDATE audit_log SET seq = 600 WHERE {}", at(601)));
        m.sql(&format!("UPDATE audit_log SET seq = 601 WHERE {}", at(-1)));
    };
    swap(&m);
    let (ok, text) = verify(&m);
    assert!(!ok && text.contains("record 600"), "{text}");
    swap(&m);
    assert!(verify(&m).0, "restored");

    // A deleted record.
    m.sql(&format!("DELETE FROM audit_log WHERE {}", at(700)));
    let (ok, text) = verify(&m);
    assert!(!ok && text.contains("record 700"), "{text}");

    // A deleted last record (the chain head remembers it).
    let fresh = Manager::start(backend);
    let _ = new_app(&fresh.admin(), "tail", None);
    let acc = fresh
        .sql("SELECT account_id FROM accounts")
        .trim()
        .to_string();
    let last: i64 = fresh
        .sql(&format!(
            "SELECT MAX(seq) FROM audit_log WHERE account_id = '{acc}'"
        ))
        .trim()
        .parse()
        .unwrap();
    fresh.sql(&format!(
        "DELETE FROM audit_log WHERE account_id = '{acc}' AND seq = {last}"
    ));
    let out = fresh.offline(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains(&format!("record {last}")),
        "{text}"
    );
}

fn acknowledged_registrations_survive_sigkill(backend: Backend) {
    let mut m = Manager::start(backend);
    let admin = m.admin();
    let app = new_app(&admin, "crash", None);
    let barrier = Arc::new(Barrier::new(201));
    let handles: Vec<_> = (0..200u32)
        .map(|i| {
            let c = admin.clone();
            let mut body = ccm_build(&app.app_id, &format!("v{i}"), 0);
            body["mrenclave"] = json!(format!("{:064x}", i + 1));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                c.post::<_, Build>("/v1/builds", &body)
                    .ok()
                    .map(|b| b.build_id)
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(std::time::Duration::from_millis(400));
    m.kill();
    let acknowledged: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    m.restart();
    let admin = m.admin();
    for id in &acknowledged {
        let b: Build = admin.get(&format!("/v1/builds/{id}")).unwrap();
        let t: Task = admin.get(&format!("/v1/tasks/{}", b.task_id)).unwrap();
        assert_eq!(t.entity_id, *id);
        let a: ListResponse<AuditRecord> = admin
            .get(&format!(
                "/v1/audit?action=Build%20Registered&entity_id={id}"
            ))
            .unwrap();
        assert_eq!(a.items.len(), 1, "build {id} has its audit record");
    }
    // Nothing half-written: every build has its task and audit record, every task its build.
    let orphans = m.sql(
        "SELECT COUNT(*) FROM builds b LEFT JOIN tasks t ON t.task_id = b.task_id WHERE t.task_id IS NULL",
    );
    assert_eq!(orphans.trim(), "0");
    let lonely = m.sql(
        "SELECT COUNT(*) FROM tasks t LEFT JOIN builds b ON b.task_id = t.task_id WHERE b.build_id IS NULL",
    );
    assert_eq!(lonely.trim(), "0");
    let builds = m.sql("SELECT COUNT(*) FROM builds");
    let registered = m.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'Build Registered'");
    assert_eq!(builds.trim(), registered.trim());
    let out = m.offline(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "crash test ({backend:?}): {} of 200 registrations acknowledged before SIGKILL, {} stored",
        acknowledged.len(),
        builds.trim()
    );
}

fn registry_credentials_are_matched_by_host_and_survive_key_rotation(backend: Backend) {
    let mut m = Manager::start(backend);
    let admin = m.admin();
    let r: Registry = admin
        .post(
            "/v1/registry",
            &json!({"url": "https://Registry.Example.com:5000", "credential": {"default": {"username": "robot", "password": "first-pass"}}}),
        )
        .unwrap();
    assert_eq!(r.credential.default.password, "*****");
    let found: Registry = admin
        .get("/v1/image/registry?name=registry.example.com:5000/team/app:1")
        .unwrap();
    assert_eq!(found.registry_id, r.registry_id);
    assert_eq!(
        api_status(admin.get::<Value>("/v1/image/registry?name=other.example.com/app")),
        404
    );
    let dup = admin.post::<_, Value>(
        "/v1/registry",
        &json!({"url": "registry.example.com:5000", "credential": {"default": {"username": "x", "password": "y"}}}),
    );
    assert_eq!(api_status(dup), 409);
    let masked = admin.patch::<_, Value>(
        &format!("/v1/registry/{}", r.registry_id),
        &json!({"credential": {"default": {"username": "robot", "password": "*****"}}}),
    );
    assert_eq!(api_status(masked), 400, "the mask is not a password");
    let before = m.raw_database();
    assert!(
        m.terminate().success(),
        "SIGTERM ends the manager with status 0"
    );
    let out = m.offline(&["rotate-master-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The registry password and the CA's two keys (created at the first start).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-encrypted 3 secrets"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(before, m.raw_database());
    m.restart();
    let ca: Value = m.client().get("/v1/ca").unwrap();
    assert!(ca["chain"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    let r2: Registry = m
        .admin()
        .get(&format!("/v1/registry/{}", r.registry_id))
        .unwrap();
    assert_eq!(r2.username, "robot");
    // Rotating under a running manager is refused: it would seal with a key the file lacks.
    let out = m.offline(&["rotate-master-key"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stop") || err.contains("another cloak manager"),
        "{err}"
    );
    assert!(m.terminate().success());
    let out = m.offline(&["rotate-master-key"]);
    assert!(
        out.status.success(),
        "a second rotation opens what the first sealed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Moving a credential to another host needs its password again.
    m.restart();
    let moved = m.admin().patch::<_, Value>(
        &format!("/v1/registry/{}", r.registry_id),
        &json!({"url": "attacker.example.net"}),
    );
    assert_eq!(api_status(moved), 400);
}

fn probes_metrics_and_the_served_openapi_document(backend: Backend) {
    let m = Manager::start(backend);
    let c = m.client();
    let h: Value = c.get("/healthz").unwrap();
    assert_eq!(h["status"], "ok");
    let r: Value = c.get("/readyz").unwrap();
    assert_eq!(r["status"], "ready");
    let _ = m.client().login("admin", "wrong-password-zz");
    let _: Value = m.admin().get("/v1/builds").unwrap();
    assert_eq!(
        m.raw("GET", "/metrics", vec![], None).0,
        401,
        "metrics span accounts: not public"
    );
    let token = m
        .client()
        .login("admin", ADMIN_PASSWORD)
        .unwrap()
        .access_token;
    let text = m.raw_get("/metrics", &token);
    for needle in [
        "cloak_http_requests_total{method=\"GET\",route=\"/v1/builds\",status=\"200\"}",
        "cloak_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/builds\",le=\"0.005\"}",
        "cloak_logins_failed_total 1",
        "cloak_tasks_pending 0",
        "cloak_db_pool_connections{state=\"open\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let served: Value = c.get("/openapi.json").unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: run scripts/openapi.sh"
    );
    assert!(m.log().contains("TLS certificate SHA-256 fingerprint"));
}

/// Replicas starting together on one PostgreSQL migrate once (an advisory lock), and each
/// bootstraps the same single administrator.
#[test]
fn replicas_starting_together_migrate_once() {
    let pg = common::postgres::Postgres::shared();
    let url = pg.database();
    let dir = tempfile::tempdir().unwrap();
    // All four processes run at once; each would create every table without the lock.
    let children: Vec<_> = (0..4)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_cloak"))
                .args(["manager", "migrate", "--database-url", &url, "--data-dir"])
                .arg(dir.path().join(format!("d{i}")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        applied += text
            .trim()
            .strip_prefix("applied ")
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap();
    }
    let db = common::postgres::db_name(&url);
    let versions: u32 = pg
        .psql(db, "SELECT COUNT(*) FROM schema_migrations")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        applied, versions,
        "each migration ran in exactly one process"
    );
    let pairs = pg.psql(
        db,
        "SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations",
    );
    let (n, distinct) = pairs.trim().split_once('|').unwrap();
    assert_eq!(n, distinct);
}

/// A value of this replica's `/metrics`.
fn metric(m: &Manager, token: &str, line_start: &str) -> f64 {
    m.raw_get("/metrics", token)
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// `GET /v1/builds/{id}` is served from a per-replica cache; a change made through another
/// replica reaches it (PostgreSQL NOTIFY at commit) and the stale copy is never served again.
#[test]
fn a_replica_forgets_a_build_that_another_replica_changed() {
    let a = Manager::start(Backend::Postgres);
    let b = a.replica();
    let (admin_a, admin_b) = (a.admin(), b.admin());
    let app = new_app(&admin_a, "cached", None);
    let build: Build = admin_a
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x21))
        .unwrap();
    let path = format!("/v1/builds/{}", build.build_id);
    let token = b
        .client()
        .login("admin", ADMIN_PASSWORD)
        .unwrap()
        .access_token;
    assert_eq!(metric(&b, &token, "cloak_read_cache_enabled "), 1.0);
    let hits = |m: &Manager| metric(m, &token, "cloak_read_cache_lookups_total{result=\"hit\"} ");
    let before = hits(&b);
    for _ in 0..3 {
        let seen: Build = admin_b.get(&path).unwrap();
        assert_eq!(seen.advanced_settings, build.advanced_settings);
    }
    assert!(
        hits(&b) >= before + 2.0,
        "replica b serves the build from its cache"
    );

    let changed = json!({"advanced_settings": {"changed_by": "replica a"}});
    let patched: Build = admin_a.patch(&path, &changed).unwrap();
    assert_eq!(patched.advanced_settings["changed_by"], "replica a");
    // The notification is asynchronous: b may answer the old copy for the moment it takes to
    // arrive, never after. Without the NOTIFY, b would serve the old copy forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let seen: Build = admin_b.get(&path).unwrap();
        if seen.advanced_settings["changed_by"] == "replica a" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica b still serves the build as it was before replica a changed it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // And b's own writes empty its cache at once (same process).
    let again = json!({"advanced_settings": {"changed_by": "replica b"}});
    let _: Build = admin_b.patch(&path, &again).unwrap();
    let seen: Build = admin_b.get(&path).unwrap();
    assert_eq!(seen.advanced_settings["changed_by"], "replica b");
}

/// The ways one person could whitelist a build that an n-of-m quorum guards.
fn nobody_gets_around_a_quorum_alone(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let w = new_user(&admin, "writer1", "WRITER");
    let mgr2 = new_user(&admin, "mgr2", "MANAGER");
    let prod = new_app(
        &admin,
        "prod",
        Some(json!({"n": 2, "approvers": ["role:MANAGER"], "exclude_requester": true})),
    );
    let writer = m.login("writer1", PASSWORD);
    // A WRITER cannot make a shadow app with a weaker policy, by body or by IBM's app_name.
    let body = json!({"name": "shadow", "input_image_name": "a", "output_image_name": "b"});
    assert_eq!(api_status(writer.post::<_, Value>("/v1/apps", &body)), 403);
    let flat = json!({"docker_image_name": "r/x", "docker_version": "1", "mrenclave": hex(0x91, 64),
        "mrsigner": hex(0x92, 64), "isvprodid": 1, "isvsvn": 1, "app_name": "prod-shadow"});
    assert_eq!(
        api_status(writer.post::<_, Value>("/api/v1/builds", &flat)),
        400
    );
    let build: Build = writer
        .post("/v1/builds", &ccm_build(&prod.app_id, "1", 0x90))
        .unwrap();
    let task = format!("/v1/tasks/{}", build.task_id);
    // A decided build cannot be deleted to register it afresh.
    let _: Task = admin
        .patch(&task, &json!({"status": "DENIED", "denial_reason": "no"}))
        .unwrap();
    assert_eq!(
        api_status(writer.delete(&format!("/v1/builds/{}", build.build_id))),
        409
    );
    // A revoked build's measurements stay banned in every app of the account.
    let b2: Build = writer
        .post("/v1/builds", &ccm_build(&prod.app_id, "2", 0x93))
        .unwrap();
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", b2.build_id),
            &json!({"reason": "bad"}),
        )
        .unwrap();
    let other = new_app(&admin, "other", None);
    let again = writer
        .post::<_, Value>("/v1/builds", &ccm_build(&other.app_id, "3", 0x93))
        .unwrap_err();
    assert_eq!(again.status(), Some(409), "{again}");
    assert!(again.to_string().contains("revoked"), "{again}");
    // A MANAGER cannot take over a second approver: no setting another user's password...
    let b3: Build = writer
        .post("/v1/builds", &ccm_build(&prod.app_id, "4", 0x94))
        .unwrap();
    let t3 = format!("/v1/tasks/{}", b3.task_id);
    let _: Task = admin.patch(&t3, &json!({"status": "APPROVED"})).unwrap();
    let takeover = admin.patch::<_, Value>(
        &format!("/v1/users/{}", mgr2.user_id),
        &json!({"password": "TakenOver-12345"}),
    );
    assert_eq!(api_status(takeover), 403);
    // ...and no minting or promoting one after the task opened (times are in seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let fresh = new_user(&admin, "mgr3", "MANAGER");
    let f = m.login("mgr3", PASSWORD);
    assert_eq!(
        api_status(f.patch::<_, Value>(&t3, &json!({"status": "APPROVED"}))),
        403
    );
    let _: User = admin
        .patch(
            &format!("/v1/users/{}", w.user_id),
            &json!({"role": "MANAGER"}),
        )
        .unwrap();
    let promoted = m.login("writer1", PASSWORD);
    assert_eq!(
        api_status(promoted.patch::<_, Value>(&t3, &json!({"status": "APPROVED"}))),
        403
    );
    // The real second MANAGER completes the quorum.
    let m2 = m.login("mgr2", PASSWORD);
    let t: Task = m2.patch(&t3, &json!({"status": "APPROVED"})).unwrap();
    assert_eq!(t.status.status, "SUCCESS");
    // Changing one's own password needs the current one.
    let path = format!("/v1/users/{}", fresh.user_id);
    let no_current = f.patch::<_, Value>(&path, &json!({"password": "a-brand-new-password"}));
    assert_eq!(api_status(no_current), 400);
    let _: User = f
        .patch(
            &path,
            &json!({"password": "a-brand-new-password", "current_password": PASSWORD}),
        )
        .unwrap();
}

fn api_keys_act_for_their_creator_only(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let mgr2 = new_user(&admin, "mgr2", "MANAGER");
    let m2 = m.login("mgr2", PASSWORD);
    let key: ApiKeyCreated = m2
        .post("/v1/api_keys", &json!({"name": "ci", "role": "MANAGER"}))
        .unwrap();
    let k = m.client().with_token(key.secret.clone());
    let _: Vec<User> = k.get("/v1/users").unwrap();
    // Demoting the creator caps the key.
    let _: User = admin
        .patch(
            &format!("/v1/users/{}", mgr2.user_id),
            &json!({"role": "WRITER"}),
        )
        .unwrap();
    let mint = json!({"user_name": "minted", "password": PASSWORD, "role": "MANAGER"});
    assert_eq!(api_status(k.post::<_, Value>("/v1/users", &mint)), 403);
    // Disabling the creator stops the key.
    let _: User = admin
        .patch(
            &format!("/v1/users/{}", mgr2.user_id),
            &json!({"status": "DISABLED"}),
        )
        .unwrap();
    assert_eq!(api_status(k.get::<Value>("/v1/apps")), 401);
    // A build registered with a user's key counts as that user's request.
    let app = new_app(
        &admin,
        "excl",
        Some(json!({"n": 1, "approvers": ["role:MANAGER"], "exclude_requester": true})),
    );
    let own: ApiKeyCreated = admin
        .post("/v1/api_keys", &json!({"name": "mine", "role": "WRITER"}))
        .unwrap();
    let mine = m.client().with_token(own.secret.clone());
    let b: Build = mine
        .post("/v1/builds", &ccm_build(&app.app_id, "1", 0x55))
        .unwrap();
    let own_approval = admin.patch::<_, Value>(
        &format!("/v1/tasks/{}", b.task_id),
        &json!({"status": "APPROVED"}),
    );
    assert_eq!(
        api_status(own_approval),
        403,
        "the key's creator is the requester"
    );
}

fn a_login_burst_checks_few_passwords(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let barrier = Arc::new(Barrier::new(60));
    let handles: Vec<_> = (0..60)
        .map(|i| {
            let mut c = m.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                c.login(&format!("nobody{i}"), "wrong-password-123")
                    .unwrap_err()
                    .status()
                    .unwrap()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 20,
        "{checked} passwords checked for one address: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // The unknown names went into no tenant's audit chain (one may be someone's password).
    let audit: ListResponse<AuditRecord> = admin.get("/v1/audit?action=Login%20Failed").unwrap();
    assert!(audit.items.is_empty(), "{}", audit.items.len());
}

fn approvals_racing_revocations_never_fail_or_lose_the_revocation(backend: Backend) {
    let m = Manager::start(backend);
    let admin = m.admin();
    let app = new_app(&admin, "race2", None);
    for i in 0..10u8 {
        let b: Build = admin
            .post(
                "/v1/builds",
                &ccm_build(&app.app_id, &format!("r{i}"), i + 1),
            )
            .unwrap();
        let (a, r) = (admin.clone(), admin.clone());
        let task = format!("/v1/tasks/{}", b.task_id);
        let revoke = format!("/v1/builds/{}/revoke", b.build_id);
        let barrier = Arc::new(Barrier::new(2));
        let b1 = barrier.clone();
        let h1 = std::thread::spawn(move || {
            b1.wait();
            api_status(a.patch::<_, Value>(&task, &json!({"status": "APPROVED"})))
        });
        let h2 = std::thread::spawn(move || {
            barrier.wait();
            api_status(r.post::<_, Value>(&revoke, &json!({"reason": "race"})))
        });
        let (s1, s2) = (h1.join().unwrap(), h2.join().unwrap());
        assert!(s1 == 200 || s1 == 409, "approve: {s1}");
        assert_eq!(s2, 200, "the revocation always succeeds");
        let after: Build = admin.get(&format!("/v1/builds/{}", b.build_id)).unwrap();
        assert_eq!(
            after.status.status, "REJECTED",
            "the revocation is never lost"
        );
    }
}
