//! `cloak manager backup` / `restore`: a busy SQLite install (registrations running during
//! the backup) moved into a real PostgreSQL with one command, then served by a manager there.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cloak_api::*;
use common::manager::{Backend, Manager};
use common::postgres::Postgres;
use serde_json::{json, Value};

fn hex(byte: u8, len: usize) -> String {
    format!("{byte:02x}").repeat(len / 2)
}

fn build_body(app_id: &str, n: u32) -> Value {
    json!({
        "docker_info": {"docker_image_name": "registry.example.com/app", "docker_version": format!("v{n}")},
        "mrenclave": format!("{n:064x}"), "mrsigner": hex(0x22, 64), "isvprodid": 7, "isvsvn": 3,
        "app_id": app_id
    })
}

fn offline(args: &[&str], store: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cloak"))
        .arg("manager")
        .args(args)
        .args(store)
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every build of the account as the API shows it, by id.
fn builds(c: &Client) -> std::collections::BTreeMap<String, Value> {
    let mut all = std::collections::BTreeMap::new();
    loop {
        let v: Value = c
            .get(&format!("/v1/builds?limit=1000&offset={}", all.len()))
            .unwrap();
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for b in items {
            all.insert(b["build_id"].as_str().unwrap().to_string(), b);
        }
    }
    all
}

#[test]
fn a_busy_sqlite_install_moves_to_postgres_with_its_builds_tasks_credentials_and_audit_chain() {
    let src = Manager::start(Backend::Sqlite);
    let admin = src.admin();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "payments", "input_image_name": "registry.example.com/app:in",
                    "output_image_name": "registry.example.com/app:out"}),
        )
        .unwrap();
    let mut decided = Vec::new();
    for n in 0..6 {
        let b: Build = admin
            .post("/v1/builds", &build_body(&app.app_id, n))
            .unwrap();
        if n % 2 == 0 {
            let t: Task = admin
                .patch(
                    &format!("/v1/tasks/{}", b.task_id),
                    &json!({"status": "APPROVED"}),
                )
                .unwrap();
            decided.push(t.task_id);
        }
    }
    let reg: Registry = admin
        .post(
            "/v1/registry",
            &json!({"url": "https://registry.example.com", "credential": {"default": {"username": "robot", "password": "sealed-pass"}}}),
        )
        .unwrap();
    // The CA keys, sealed under the master key in the database.
    let ca_before: Value = src.client().get("/v1/ca").unwrap();

    // Writers keep registering while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (c, app, stop, acked) =
                (src.admin(), app.app_id.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 1000 + w * 100_000;
                while !stop.load(Ordering::Relaxed) {
                    let b: Build = c.post("/v1/builds", &build_body(&app, n)).unwrap();
                    acked.lock().unwrap().push(b.build_id);
                    n += 1;
                }
            })
        })
        .collect();
    // Wait until the writers are running for real before the backup starts.
    while acked.lock().unwrap().len() < 5 {
        std::thread::yield_now();
    }
    let before_backup: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let file = src.dir.path().join("manager.backup");
    let file_arg = file.display().to_string();
    let report = ok(offline(&["backup", &file_arg], &src.store_args()));
    assert!(report.contains("encrypted under master key"), "{report}");
    let after_backup = acked.lock().unwrap().len();
    // The writers were still running when the backup ended.
    while acked.lock().unwrap().len() < after_backup + 3 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bytes = std::fs::read(&file).unwrap();
    for secret in ["sealed-pass", "robot", "BEGIN PRIVATE KEY", "payments"] {
        assert!(
            !common::manager::contains(&bytes, secret),
            "the backup is encrypted: {secret:?} is not readable in it"
        );
    }
    let src_builds = builds(&admin);

    // Restore into a fresh PostgreSQL database, with the source's master key file only.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst_data = dst_dir.path().join("data");
    std::fs::create_dir(&dst_data).unwrap();
    std::fs::set_permissions(&dst_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pg_url = Postgres::shared().database();
    let dst_store = vec![
        "--data-dir".to_string(),
        dst_data.display().to_string(),
        "--database-url".into(),
        pg_url.clone(),
    ];
    let wrong = offline(&["restore", &file_arg], &dst_store);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("no master key file"), "{err}");
    std::fs::copy(
        src.data_dir().join("master.key"),
        dst_data.join("master.key"),
    )
    .unwrap();
    let restored = ok(offline(&["restore", &file_arg], &dst_store));
    assert!(restored.contains("restored"), "{restored}");
    let again = offline(&["restore", &file_arg], &dst_store);
    assert!(
        !again.status.success(),
        "a second restore over the live data is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds accounts"));

    let dst = Manager::start_on(dst_dir, Some(pg_url));
    let dst_admin = dst.admin();
    let dst_builds = builds(&dst_admin);
    let ids: BTreeSet<String> = dst_builds.keys().cloned().collect();
    assert!(
        before_backup.is_subset(&ids),
        "every registration acknowledged before the backup started is restored"
    );
    assert!(
        ids.iter().all(|id| src_builds.contains_key(id)),
        "nothing is restored that the source does not have"
    );
    for (id, b) in &dst_builds {
        assert_eq!(
            b, &src_builds[id],
            "build {id} is served as the source served it"
        );
        let t_src: Value = admin
            .get(&format!("/v1/tasks/{}", b["task_id"].as_str().unwrap()))
            .unwrap();
        let t_dst: Value = dst_admin
            .get(&format!("/v1/tasks/{}", b["task_id"].as_str().unwrap()))
            .unwrap();
        assert_eq!(t_src, t_dst, "the task of build {id} and its approvals");
    }
    for t in &decided {
        let task: Task = dst_admin.get(&format!("/v1/tasks/{t}")).unwrap();
        assert_eq!(task.status.status, "SUCCESS");
        assert_eq!(task.approvals.len(), 1);
    }
    let r: Registry = dst_admin
        .get(&format!("/v1/registry/{}", reg.registry_id))
        .unwrap();
    assert_eq!(r.username, "robot");
    let ca_after: Value = dst.client().get("/v1/ca").unwrap();
    assert_eq!(ca_before, ca_after, "the same CA (its sealed key opened)");
    let v: Value = dst_admin.get("/v1/audit/verify").unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let mut dst = dst;
    assert!(dst.terminate().success());
    let verify = ok(offline(&["audit", "verify"], &dst.store_args()));
    assert!(verify.contains("audit chain verified"), "{verify}");
    // Every sealed value still opens under the master key: rotation opens and re-seals them
    // (the registry password and the two CA keys).
    let rotated = ok(offline(&["rotate-master-key"], &dst.store_args()));
    assert!(rotated.contains("re-encrypted 3 secrets"), "{rotated}");
    dst.restart();
    let ca_rotated: Value = dst.client().get("/v1/ca").unwrap();
    assert_eq!(ca_before, ca_rotated, "the CA opens under the rotated key");
}

#[test]
fn a_backup_opens_only_with_its_master_key_and_only_into_an_empty_database() {
    let src = Manager::start(Backend::Sqlite);
    let _ = src.admin();
    let file = src.dir.path().join("b");
    let file_arg = file.display().to_string();
    ok(offline(&["backup", &file_arg], &src.store_args()));
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    let store = vec!["--data-dir".to_string(), data.display().to_string()];
    // A different master key: refused with the reason, the target untouched.
    ok(offline(&["migrate"], &store));
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("master.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = offline(&["restore", &file_arg], &store);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot decrypt the backup"), "{err}");
    // Not a backup at all.
    std::fs::write(other.path().join("junk"), b"hello").unwrap();
    let out = offline(
        &["restore", &other.path().join("junk").display().to_string()],
        &store,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cloak manager backup"));
}
