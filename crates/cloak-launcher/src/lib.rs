//! The launcher inside every converted image. It reads [`RunConfig`] (written by the converter at
//! [`CONFIG_PATH`], measured with the image) and starts the application with docker-run
//! semantics: argv, environment (fixed, plus mutable defaults the operator may override), working
//! directory and user. It is linked statically so it runs on any base distribution.
//!
//! The logic is pure and tested here; the system calls sit behind [`Sys`].
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::CString;

use serde::{Deserialize, Serialize};

pub mod files;
pub mod init;
pub mod provision;

/// Where the converter writes the run configuration.
pub const CONFIG_PATH: &str = "/cloak/run.json";

/// The contract between the converter and the launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Full argv of the application; argv[0] without `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Fixed environment (`NAME=value`), image Env merged with the fixed overrides.
    pub env: Vec<String>,
    /// Defaults (`NAME=value`) used unless the operator's environment sets the name.
    #[serde(default)]
    pub mutable_env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// `USER` as in the image: `""`, `uid`, `uid:gid`, `name` or `name:group`.
    #[serde(default)]
    pub user: String,
    /// Append the launcher's own extra arguments to argv.
    #[serde(default)]
    pub allow_cmdline_args: bool,
    /// Attest to this manager and install what it releases before the app starts. Absent in
    /// images converted without `--manager-url` (their run.json, and so their measurement, is
    /// what it was before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerConfig>,
}

/// The manager an image trusts, and what the launcher gets from it (see `provision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// `https://host:port` of the manager.
    pub url: String,
    /// The certificates (PEM) the manager's TLS certificate must chain to: pinned here, in the
    /// measured run configuration, so a host cannot point the image at another manager.
    pub ca_pem: String,
    /// The app the image's builds belong to (`POST /v1/certificates` names it).
    pub app_id: String,
    /// Certificates to obtain before the app starts.
    #[serde(default)]
    pub certificates: Vec<CertSpec>,
    /// Whether simulated evidence (signed by a key given at run time) may stand in for a TEE.
    /// Recorded here so that it changes the measurement: an image converted without it never
    /// produces simulated evidence.
    #[serde(default)]
    pub allow_simulated: bool,
    /// How long (seconds) an unreachable manager is retried, with backoff, before giving up.
    pub retry_seconds: u64,
    /// Nitro: reach the manager through vsock CID 3 at this port (`cloak proxy` on the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_port: Option<u32>,
    /// Append `ca_pem` to the image's trust store before the app starts
    /// (`add_ccm_ca_certificates`).
    #[serde(default)]
    pub add_ca_to_trust_store: bool,
    /// Renew each certificate this many seconds before it expires, while the app runs
    /// (0: when a third of its validity is left).
    #[serde(default)]
    pub renew_before_seconds: u64,
}

/// One certificate the launcher obtains (the seed's `CertificateConfig`, validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    /// Subject common name; the build's `certificates` option must name it.
    pub subject: String,
    /// The key generated inside the TEE.
    pub key: KeySpec,
    /// Where the key is written (mode 0600, owned by the app's user).
    pub key_path: String,
    /// Where the certificate is written.
    pub cert_path: String,
    /// Where the chain (issuing CA, root) is written; `None` for the seed's `"none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_path: Option<String>,
}

/// Key type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySpec {
    /// RSA of 2048, 3072 or 4096 bits.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// ECDSA on P-256 or P-384.
    Ec {
        /// 256 or 384.
        curve: u32,
    },
}

impl KeySpec {
    /// Read the seed's `keyType` and `keyParam` (`rsa` + `{"size": N}`, `ec` + `{"curve":
    /// "P-256"}`), with the error naming what is accepted.
    pub fn from_seed(
        key_type: &str,
        key_param: Option<&serde_json::Value>,
    ) -> Result<KeySpec, String> {
        match key_type.to_ascii_lowercase().as_str() {
            "rsa" => {
                let bits = match key_param.and_then(|p| p.get("size")) {
                    None => 2048,
                    Some(v) => v.as_u64().ok_or("keyParam.size must be a number")?,
                };
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(format!(
                        "keyParam.size {bits}: RSA keys are 2048, 3072 or 4096 bits"
                    ));
                }
                Ok(KeySpec::Rsa { bits: bits as u32 })
            }
            "ec" | "ecdsa" => {
                let curve = key_param
                    .and_then(|p| p.get("curve"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("P-256");
                match curve.to_ascii_uppercase().replace(['_', ' '], "-").as_str() {
                    "P-256" | "NISTP256" | "PRIME256V1" | "SECP256R1" => {
                        Ok(KeySpec::Ec { curve: 256 })
                    }
                    "P-384" | "NISTP384" | "SECP384R1" => Ok(KeySpec::Ec { curve: 384 }),
                    _ => Err(format!(
                        "keyParam.curve {curve:?}: EC keys are P-256 or P-384"
                    )),
                }
            }
            other => Err(format!("keyType {other:?}: use \"rsa\" or \"ec\"")),
        }
    }
}

/// What went wrong; printed with the `cloak-launcher:` prefix before exiting 127.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is missing or malformed.
    #[error("cannot use {path}: {reason}")]
    Config {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Extra arguments were given but the image does not allow them.
    #[error("command-line arguments are not allowed for this image ({0:?}); it was converted without allowCmdlineArgs")]
    ArgsRefused(Vec<String>),
    /// The user or group cannot be resolved.
    #[error("user {user:?}: {reason}")]
    User {
        /// As written.
        user: String,
        /// Why.
        reason: String,
    },
    /// Attestation or installing what the manager released failed; the app is not started.
    #[error("{0}; the application is not started")]
    Provision(provision::Failure),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was attempted.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The launcher's exit status for this error: [`provision::EXIT_REFUSED`] or
    /// [`provision::EXIT_UNREACHABLE`] for attestation, 127 otherwise.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Provision(f) => f.exit_status(),
            _ => 127,
        }
    }
}

/// The process the launcher will exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// argv.
    pub argv: Vec<String>,
    /// Environment, `NAME=value`, sorted by first appearance.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// uid, gid and supplementary groups, when not running as root.
    pub ids: Option<(u32, u32, Vec<u32>)>,
}

fn parse_table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolve `USER` with the image's `/etc/passwd` and `/etc/group` texts (no NSS).
pub fn resolve_user(
    user: &str,
    passwd: &str,
    group: &str,
) -> Result<Option<(u32, u32, Vec<u32>)>, Error> {
    if user.is_empty() || user == "root" || user == "0" {
        return Ok(None);
    }
    let err = |reason: &str| Error::User {
        user: user.to_string(),
        reason: reason.to_string(),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = parse_table(passwd);
    let groups = parse_table(group);
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, name, primary) = match (u.parse::<u32>(), entry) {
        (Ok(uid), e) => (
            uid,
            e.map(|f| f[0].clone()),
            e.and_then(|f| f[3].parse().ok()).unwrap_or(uid),
        ),
        (Err(_), Some(f)) => (
            f[2].parse().map_err(|_| err("bad uid in /etc/passwd"))?,
            Some(f[0].clone()),
            f[3].parse().map_err(|_| err("bad gid in /etc/passwd"))?,
        ),
        (Err(_), None) => return Err(err("no such user in the image's /etc/passwd")),
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| err("no such group in the image's /etc/group"))?,
        },
    };
    let mut extra: Vec<u32> = match &name {
        Some(n) => groups
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    extra.retain(|x| *x != gid);
    extra.insert(0, gid);
    extra.dedup();
    Ok(Some((uid, gid, extra)))
}

/// Assemble the process from the configuration, the operator's environment and extra args.
pub fn plan(
    cfg: &RunConfig,
    outer_env: &BTreeMap<String, String>,
    extra_args: &[String],
    passwd: &str,
    group: &str,
) -> Result<Plan, Error> {
    if !extra_args.is_empty() && !cfg.allow_cmdline_args {
        return Err(Error::ArgsRefused(extra_args.to_vec()));
    }
    if cfg.argv.is_empty() {
        return Err(Error::Config {
            path: CONFIG_PATH.into(),
            reason: "argv is empty".into(),
        });
    }
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    fn put(order: &mut Vec<String>, values: &mut BTreeMap<String, String>, k: &str, v: &str) {
        if !values.contains_key(k) {
            order.push(k.to_string());
        }
        values.insert(k.to_string(), v.to_string());
    }
    for e in &cfg.env {
        if let Some((k, v)) = e.split_once('=') {
            put(&mut order, &mut values, k, v);
        }
    }
    for e in &cfg.mutable_env {
        if let Some((k, v)) = e.split_once('=') {
            put(
                &mut order,
                &mut values,
                k,
                outer_env.get(k).map(String::as_str).unwrap_or(v),
            );
        }
    }
    let ids = resolve_user(&cfg.user, passwd, group)?;
    if let (Some((uid, _, _)), false) = (&ids, values.contains_key("HOME")) {
        let home = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 6 && f[2] == uid.to_string())
            .map(|f| f[5].to_string())
            .unwrap_or_else(|| "/".into());
        put(&mut order, &mut values, "HOME", &home);
    }
    let env = order
        .into_iter()
        .map(|k| format!("{k}={}", values[&k]))
        .collect();
    Ok(Plan {
        argv: cfg.argv.iter().chain(extra_args).cloned().collect(),
        env,
        workdir: if cfg.workdir.is_empty() {
            "/".into()
        } else {
            cfg.workdir.clone()
        },
        ids,
    })
}

/// The system calls the launcher makes; a recording fake implements it in tests.
pub trait Sys {
    /// Read a whole file.
    fn read(&mut self, path: &str) -> std::io::Result<String>;
    /// Change directory.
    fn chdir(&mut self, dir: &str) -> std::io::Result<()>;
    /// Drop privileges to uid/gid/groups.
    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()>;
    /// Replace the process (returns only on failure).
    fn exec(&mut self, argv: &[String], env: &[String]) -> std::io::Error;
    /// Attest to the manager and install what it releases (see [`provision`]); returns the
    /// app's extra environment. `owner` is the app's uid and gid.
    fn provision(
        &mut self,
        manager: &ManagerConfig,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<String>, provision::Failure>;
}

/// Set `NAME=value` entries in `env`, replacing an entry of the same name in place.
fn merge_env(env: &mut Vec<String>, extra: Vec<String>) {
    for e in extra {
        let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string();
        match env
            .iter_mut()
            .find(|x| x.split_once('=').is_some_and(|(k, _)| k == name))
        {
            Some(x) => *x = e,
            None => env.push(e),
        }
    }
}

/// Read the configuration and exec the application. Returns only with an error.
pub fn launch(
    sys: &mut dyn Sys,
    outer_env: &BTreeMap<String, String>,
    extra_args: &[String],
) -> Error {
    let cfg = match sys.read(CONFIG_PATH) {
        Ok(text) => match serde_json::from_str::<RunConfig>(&text) {
            Ok(c) => c,
            Err(e) => {
                return Error::Config {
                    path: CONFIG_PATH.into(),
                    reason: e.to_string(),
                }
            }
        },
        Err(e) => {
            return Error::Config {
                path: CONFIG_PATH.into(),
                reason: e.to_string(),
            }
        }
    };
    let passwd = sys.read("/etc/passwd").unwrap_or_default();
    let group = sys.read("/etc/group").unwrap_or_default();
    let mut plan = match plan(&cfg, outer_env, extra_args, &passwd, &group) {
        Ok(p) => p,
        Err(e) => return e,
    };
    // Attestation runs before anything of the app: as root (keys are chowned to the app's
    // user), before the working directory and the user change.
    if let Some(m) = &cfg.manager {
        match sys.provision(m, plan.ids.as_ref().map(|(u, g, _)| (*u, *g))) {
            Ok(env) => merge_env(&mut plan.env, env),
            Err(f) => return Error::Provision(f),
        }
    }
    if let Err(e) = sys.chdir(&plan.workdir) {
        return Error::Sys {
            what: format!("chdir to WORKDIR {}", plan.workdir),
            source: e,
        };
    }
    if let Some((uid, gid, groups)) = &plan.ids {
        if let Err(e) = sys.set_ids(*uid, *gid, groups) {
            return Error::Sys {
                what: format!("switch to user {}", cfg.user),
                source: e,
            };
        }
    }
    let e = sys.exec(&plan.argv, &plan.env);
    Error::Sys {
        what: format!("exec {}", plan.argv[0]),
        source: e,
    }
}

/// Fork the process that renews the certificates while the app runs (the app is exec'd by
/// this process next). It dies with the app (PR_SET_PDEATHSIG), so a Nitro init that waits
/// for every child still ends when the app does.
fn start_renewal(
    manager: &ManagerConfig,
    client: &provision::Client,
    mut source: Box<dyn provision::evidence::EvidenceSource>,
    target: &provision::Target,
    issued: Vec<provision::Issued>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let certs: Vec<(CertSpec, i64, i64)> = manager
        .certificates
        .iter()
        .cloned()
        .zip(issued)
        .map(|(spec, i)| (spec, now, i.not_after.unwrap_or(now + 3600)))
        .collect();
    // SAFETY: the launcher is single-threaded here; the child only runs the renewal loop and
    // exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain system call.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        provision::renew::renew_until_refused(
            manager,
            client,
            source.as_mut(),
            target,
            certs,
            &mut provision::renew::SystemTimer,
        );
        std::process::exit(0);
    }
    if pid < 0 {
        eprintln!(
            "cloak-launcher: cannot start certificate renewal: {}; the certificates expire unrenewed",
            std::io::Error::last_os_error()
        );
    }
}

/// The real system.
#[derive(Debug, Default)]
pub struct RealSys;

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).unwrap_or_default())
        .collect()
}

/// Where `cloak run` puts the simulation key and the claimed measurements (simulated mode
/// only, and only used when the image allows simulation).
pub const SIMULATION_DIR: &str = "/cloak-simulation";

impl Sys for RealSys {
    fn provision(
        &mut self,
        manager: &ManagerConfig,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<String>, provision::Failure> {
        let sim_dir =
            std::env::var("CLOAK_SIMULATION_DIR").unwrap_or_else(|_| SIMULATION_DIR.into());
        let mut source = provision::detect_source(manager, std::path::Path::new(&sim_dir))?;
        let route = manager
            .vsock_port
            .filter(|_| std::env::var_os(init::USER_NET_ENV).is_none())
            .map(provision::http::Route::Vsock);
        let client = provision::Client::new(manager, route)?;
        let target = provision::Target::new("/", owner);
        let (installed, issued) = provision::provision(manager, &client, source.as_mut(), &target)?;
        if !issued.is_empty() {
            start_renewal(manager, &client, source, &target, issued);
        }
        Ok(installed.env)
    }
    fn read(&mut self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn chdir(&mut self, dir: &str) -> std::io::Result<()> {
        std::env::set_current_dir(dir)
    }
    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
        let gids: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: plain system calls with valid pointers and lengths.
        unsafe {
            if libc::setgroups(gids.len(), gids.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
    fn exec(&mut self, argv: &[String], env: &[String]) -> std::io::Error {
        // PATH lookup uses the application's PATH, as docker does.
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let candidates: Vec<String> = if argv[0].contains('/') {
            vec![argv[0].clone()]
        } else {
            path.split(':')
                .map(|d| format!("{d}/{}", argv[0]))
                .collect()
        };
        let args = cstrings(argv);
        let envs = cstrings(env);
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envs.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
        for c in candidates {
            let Ok(prog) = CString::new(c) else { continue };
            // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
            unsafe { libc::execve(prog.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
            last = std::io::Error::last_os_error();
        }
        last
    }
}

#[cfg(test)]
mod tests;
