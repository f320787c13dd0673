use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\n";

fn cfg() -> RunConfig {
    RunConfig {
        argv: vec!["/bin/app".into(), "--serve".into()],
        env: vec!["PATH=/bin".into(), "MODE=fixed".into()],
        mutable_env: vec!["LEVEL=info".into()],
        workdir: "/srv".into(),
        user: String::new(),
        allow_cmdline_args: false,
        manager: None,
    }
}

#[rstest::rstest]
#[case::root("", None)]
#[case::uid("1000", Some((1000, 1001, vec![1001, 50])))]
#[case::uid_gid("1000:7", Some((1000, 7, vec![7, 50])))]
#[case::name("app", Some((1000, 1001, vec![1001, 50])))]
#[case::name_group("app:staff", Some((1000, 50, vec![50])))]
#[case::unknown_uid("4242", Some((4242, 4242, vec![4242])))]
fn users_resolve_like_docker(#[case] user: &str, #[case] expected: Option<(u32, u32, Vec<u32>)>) {
    assert_eq!(resolve_user(user, PASSWD, GROUP).unwrap(), expected);
}

#[rstest::rstest]
#[case::missing_user("nobody")]
#[case::missing_group("app:nogroup")]
fn unknown_names_are_clear_errors(#[case] user: &str) {
    let err = resolve_user(user, PASSWD, GROUP).unwrap_err().to_string();
    assert!(err.contains(user), "{err}");
}

#[test]
fn mutable_env_takes_the_operators_value_fixed_env_does_not() {
    let outer: BTreeMap<String, String> = [("LEVEL", "debug"), ("MODE", "hacked")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let p = plan(&cfg(), &outer, &[], PASSWD, GROUP).unwrap();
    assert_eq!(p.env, ["PATH=/bin", "MODE=fixed", "LEVEL=debug"]);
    let p = plan(&cfg(), &BTreeMap::new(), &[], PASSWD, GROUP).unwrap();
    assert_eq!(p.env, ["PATH=/bin", "MODE=fixed", "LEVEL=info"]);
}

#[test]
fn extra_arguments_need_permission() {
    let args = vec!["--evil".to_string()];
    assert!(matches!(
        plan(&cfg(), &BTreeMap::new(), &args, PASSWD, GROUP),
        Err(Error::ArgsRefused(_))
    ));
    let allowed = RunConfig {
        allow_cmdline_args: true,
        ..cfg()
    };
    assert_eq!(
        plan(&allowed, &BTreeMap::new(), &args, PASSWD, GROUP)
            .unwrap()
            .argv,
        ["/bin/app", "--serve", "--evil"]
    );
}

#[test]
fn user_gets_home_from_passwd() {
    let c = RunConfig {
        user: "app".into(),
        ..cfg()
    };
    let p = plan(&c, &BTreeMap::new(), &[], PASSWD, GROUP).unwrap();
    assert!(p.env.contains(&"HOME=/home/app".to_string()));
}

/// Records what the launcher asks of the system.
#[derive(Default)]
struct Recorder {
    files: BTreeMap<String, String>,
    calls: Vec<String>,
    /// What provisioning answers (None: it is never expected).
    provision: Option<Result<Vec<String>, provision::Failure>>,
}

impl Sys for Recorder {
    fn read(&mut self, path: &str) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn chdir(&mut self, dir: &str) -> std::io::Result<()> {
        self.calls.push(format!("chdir {dir}"));
        Ok(())
    }
    fn provision(
        &mut self,
        manager: &ManagerConfig,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<String>, provision::Failure> {
        self.calls
            .push(format!("provision {} {owner:?}", manager.url));
        self.provision.clone().expect("provision was not expected")
    }
    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
        self.calls.push(format!("ids {uid} {gid} {groups:?}"));
        Ok(())
    }
    fn exec(&mut self, argv: &[String], env: &[String]) -> std::io::Error {
        self.calls.push(format!("exec {argv:?} {env:?}"));
        std::io::Error::from_raw_os_error(libc::ENOENT)
    }
}

#[test]
fn launch_reads_the_config_then_chdirs_drops_privileges_and_execs() {
    let mut sys = Recorder::default();
    let c = RunConfig {
        user: "app".into(),
        ..cfg()
    };
    sys.files
        .insert(CONFIG_PATH.into(), serde_json::to_string(&c).unwrap());
    sys.files.insert("/etc/passwd".into(), PASSWD.into());
    sys.files.insert("/etc/group".into(), GROUP.into());
    let err = launch(&mut sys, &BTreeMap::new(), &[]);
    assert!(err.to_string().contains("exec /bin/app"), "{err}");
    assert_eq!(sys.calls[0], "chdir /srv");
    assert_eq!(sys.calls[1], "ids 1000 1001 [1001, 50]");
    assert!(sys.calls[2].starts_with("exec [\"/bin/app\", \"--serve\"]"));
}

#[test]
fn missing_config_is_reported_with_its_path() {
    let err = launch(&mut Recorder::default(), &BTreeMap::new(), &[]).to_string();
    assert!(err.contains(CONFIG_PATH), "{err}");
}

fn with_manager() -> RunConfig {
    RunConfig {
        user: "app".into(),
        manager: Some(ManagerConfig {
            url: "https://manager.test:9443".into(),
            ca_pem: String::new(),
            app_id: "a".into(),
            certificates: Vec::new(),
            allow_simulated: false,
            retry_seconds: 1,
            vsock_port: None,
            add_ca_to_trust_store: false,
            renew_before_seconds: 0,
        }),
        ..cfg()
    }
}

#[test]
fn provisioning_runs_as_root_before_anything_of_the_app_and_adds_its_env() {
    let mut sys = Recorder::default();
    sys.files.insert(
        CONFIG_PATH.into(),
        serde_json::to_string(&with_manager()).unwrap(),
    );
    sys.files.insert("/etc/passwd".into(), PASSWD.into());
    sys.files.insert("/etc/group".into(), GROUP.into());
    sys.provision = Some(Ok(vec!["MODE=from-config".into(), "SECRET=s".into()]));
    launch(&mut sys, &BTreeMap::new(), &[]);
    assert_eq!(
        sys.calls[0],
        "provision https://manager.test:9443 Some((1000, 1001))"
    );
    assert_eq!(sys.calls[1], "chdir /srv");
    assert!(sys.calls[2].starts_with("ids 1000"));
    let exec = &sys.calls[3];
    assert!(
        exec.contains("\"MODE=from-config\"") && exec.contains("\"SECRET=s\""),
        "{exec}"
    );
    assert!(!exec.contains("MODE=fixed"), "{exec}");
}

#[test]
fn a_refusal_stops_the_launch_with_the_reason_and_its_own_status() {
    let mut sys = Recorder::default();
    sys.files.insert(
        CONFIG_PATH.into(),
        serde_json::to_string(&with_manager()).unwrap(),
    );
    sys.files.insert("/etc/passwd".into(), PASSWD.into());
    sys.provision = Some(Err(provision::Failure {
        step: "certificate \"web\"".into(),
        code: "not_whitelisted".into(),
        detail: "HTTP 403: build b is PENDING".into(),
    }));
    let err = launch(&mut sys, &BTreeMap::new(), &[]);
    assert_eq!(sys.calls.len(), 1, "{:?}", sys.calls);
    let text = err.to_string();
    assert!(text.contains("not whitelisted (not_whitelisted)"), "{text}");
    assert!(
        text.contains("build b is PENDING") && text.contains("not started"),
        "{text}"
    );
    assert_eq!(err.exit_status(), provision::EXIT_REFUSED);
}
