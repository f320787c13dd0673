//! Registry credentials: `--creds`, docker config files and credential helpers.
//!
//! Lookup order follows containers/image (skopeo): explicit credentials, then
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file `credHelpers`
//! for the registry wins over `auths`, which wins over `credsStore`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials (anonymous pulls; token auth still works for public repositories).
    #[default]
    Anonymous,
    /// User name and password (or token) for basic or bearer-token auth.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: Secret,
    },
}

impl Credentials {
    /// Parse skopeo's `USER[:PASSWORD]` form.
    pub fn parse(creds: &str) -> Result<Self> {
        let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
        if user.is_empty() {
            return Err(Error::Credentials {
                registry: "(command line)".into(),
                reason: "--creds needs USER:PASSWORD with a non-empty user".into(),
            });
        }
        Ok(Credentials::Basic {
            username: user.to_string(),
            password: Secret::new(pass),
        })
    }

    pub(crate) fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => oci_client::secrets::RegistryAuth::Basic(
                username.clone(),
                password.expose().to_string(),
            ),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where credentials are looked up.
#[derive(Debug, Clone, Default)]
pub struct AuthLookup {
    /// Auth files, in order (see [`default_auth_files`]).
    pub files: Vec<PathBuf>,
    /// `PATH` used to find `docker-credential-*` helpers; `None` = this process's `PATH`.
    pub helper_path: Option<std::ffi::OsString>,
}

impl AuthLookup {
    /// The lookup skopeo would do in this environment.
    pub fn from_env() -> Self {
        AuthLookup {
            files: default_auth_files(),
            helper_path: None,
        }
    }
}

/// The auth files consulted, in order, given the environment.
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(dir).join("config.json"));
    } else if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

/// `https://host:port/v1/` → `host:port`; Docker Hub aliases → `docker.io`.
fn normalize_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Find credentials for `registry` (`host[:port]`): `explicit` if given, else the auth files.
pub fn resolve(
    registry: &str,
    explicit: Option<&Credentials>,
    lookup: &AuthLookup,
) -> Result<Credentials> {
    if let Some(creds) = explicit {
        return Ok(creds.clone());
    }
    let wanted = normalize_key(registry);
    for path in &lookup.files {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read auth file", path, e)),
        };
        let file: AuthFile = serde_json::from_slice(&text).map_err(|e| Error::Credentials {
            registry: registry.into(),
            reason: format!("{} is not a valid docker config file: {e}", path.display()),
        })?;
        if let Some(helper) = file
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == wanted)
            .map(|(_, v)| v)
        {
            return run_helper(helper, registry, lookup);
        }
        if let Some(entry) = file
            .auths
            .iter()
            .find(|(k, _)| normalize_key(k) == wanted)
            .map(|(_, v)| v)
        {
            if let Some(creds) = decode_entry(entry, registry, path)? {
                return Ok(creds);
            }
        }
        if let Some(store) = &file.creds_store {
            match run_helper(store, registry, lookup) {
                Ok(creds) => return Ok(creds),
                // A store without an entry for this registry is not an error.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Credentials::Anonymous)
}

fn decode_entry(entry: &AuthEntry, registry: &str, path: &Path) -> Result<Option<Credentials>> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || {
            Error::Credentials {
            registry: registry.into(),
            reason: format!(
                "the \"auth\" entry in {} is not base64 of USER:PASSWORD; log in again or fix the file",
                path.display()
            ),
        }
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials::Basic {
            username: user.to_string(),
            password: Secret::new(pass),
        }));
    }
    if let (Some(user), Some(pass)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials::Basic {
            username: user.clone(),
            password: Secret::new(pass.clone()),
        }));
    }
    Ok(None)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// Run `docker-credential-<helper> get` with the registry on stdin.
fn run_helper(helper: &str, registry: &str, lookup: &AuthLookup) -> Result<Credentials> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::Credentials {
        registry: registry.into(),
        reason,
    };
    let mut cmd = Command::new(&program);
    if let Some(path) = &lookup.helper_path {
        cmd.env("PATH", path);
    }
    let mut child = cmd
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run credential helper {program}: {e}; install it or remove it from your docker config")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(registry.as_bytes())
        .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("credentials not found") {
            return Err(Error::NotFound {
                what: format!("credentials for {registry} in {program}"),
                hint: String::new(),
            });
        }
        return Err(fail(format!("{program} get failed with {}", out.status)));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|_| {
        fail(format!(
            "{program} did not answer with {{\"Username\",\"Secret\"}} JSON"
        ))
    })?;
    Ok(Credentials::Basic {
        username: reply.username,
        password: Secret::new(reply.secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn reads_auths_with_scheme_and_path_in_key() {
        let dir = tempfile::tempdir().unwrap();
        // "alice:s3cret"
        let f = write(
            dir.path(),
            "config.json",
            r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6czNjcmV0"}}}"#,
        );
        let lookup = files(&[f]);
        let creds = resolve("127.0.0.1:5000", None, &lookup).unwrap();
        assert_eq!(creds, Credentials::parse("alice:s3cret").unwrap());
        assert_eq!(
            resolve("127.0.0.1:5001", None, &lookup).unwrap(),
            Credentials::Anonymous
        );
    }

    #[test]
    fn explicit_credentials_win() {
        let explicit = Credentials::parse("bob:pw").unwrap();
        assert_eq!(
            resolve("x", Some(&explicit), &files(&[])).unwrap(),
            explicit
        );
    }

    #[test]
    fn bad_auth_entry_names_the_file_but_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "config.json",
            r#"{"auths":{"r:1":{"auth":"!!notbase64"}}}"#,
        );
        let err = resolve("r:1", None, &files(&[f])).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(!err.contains("notbase64"), "{err}");
    }

    #[test]
    fn credential_helper_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-cloaktest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\necho \"{\\\"Username\\\":\\\"u-$host\\\",\\\"Secret\\\":\\\"pw\\\"}\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = write(
            dir.path(),
            "config.json",
            r#"{"credHelpers":{"reg:5":"cloaktest"}}"#,
        );
        let lookup = AuthLookup {
            files: vec![f],
            helper_path: Some(format!("{}:/usr/bin:/bin", dir.path().display()).into()),
        };
        let creds = resolve("reg:5", None, &lookup);
        assert_eq!(
            creds.unwrap(),
            Credentials::Basic {
                username: "u-reg:5".into(),
                password: Secret::new("pw")
            }
        );
    }

    fn files(f: &[PathBuf]) -> AuthLookup {
        AuthLookup {
            files: f.to_vec(),
            helper_path: None,
        }
    }

    #[test]
    fn secret_is_redacted() {
        let c = Credentials::parse("u:topsecret").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
