//! What every client verb of the manager shares: the connection (URL, CA, token; flags win over
//! the environment over the stored login), `cloak login`/`cloak logout` and their 0600 login
//! file, reading secrets from stdin or the environment, and text tables.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cloak_api::{Client, ClientError};
use serde::{Deserialize, Serialize};

use crate::output::Format;

/// A usage mistake the parser cannot see (a missing secret, flags that do not fit together):
/// `cloak` exits with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error with this message.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Where the manager is and how to print its answers (every client verb takes these).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The manager's URL (https://host:port); default: the stored login's.
    #[arg(long, global = true, value_name = "URL", env = "CLOAK_MANAGER_URL")]
    pub url: Option<String>,
    /// CA certificate (PEM) the manager's TLS certificate must chain to; default: the stored
    /// login's, else the system roots.
    #[arg(long, global = true, value_name = "FILE", env = "CLOAK_MANAGER_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Output: text (a compact table) or json (the API's answer as is).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t)]
    pub output: Format,
}

/// The stored login: `$XDG_CONFIG_HOME/cloak/login.json` (mode 0600; the token, never the password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    pub url: String,
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    pub user: String,
    pub token: String,
    /// Unix time (seconds) the session ends.
    pub expires_at: i64,
}

/// The login file's path.
pub fn login_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => return Err(usage(
                "neither XDG_CONFIG_HOME nor HOME is set: set one to say where the login is kept",
            )),
        },
    };
    Ok(base.join("cloak").join("login.json"))
}

fn load_login(path: &Path) -> anyhow::Result<Option<StoredLogin>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "the stored login {} is not readable; remove it and run `cloak login` again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the stored login {}", path.display()))
        }
    }
}

fn save_login(path: &Path, login: &StoredLogin) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().expect("login path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    // A temporary file is created 0600 and renamed over the old one: never a readable moment.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&serde_json::to_vec_pretty(login)?)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write the login file {}", path.display()))?;
    Ok(())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where the token of a connection came from (it decides the advice on a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Env,
    Login,
}

/// A client of the manager and how to report on what it answers.
pub struct Session {
    pub client: Client,
    pub output: Format,
    source: TokenSource,
    login_file: PathBuf,
}

impl Session {
    /// The manager's error with advice for the cases a user can fix (a token no longer valid).
    pub fn fail(&self, e: ClientError) -> anyhow::Error {
        if e.status() == Some(401) {
            let advice = match self.source {
                TokenSource::Env => "the manager refused CLOAK_MANAGER_TOKEN (a revoked or unknown API key?): set a valid key, or unset it to use the stored login".to_string(),
                TokenSource::Login => format!(
                    "the session stored in {} is no longer valid (expired or ended): log in again with `cloak login --user NAME`",
                    self.login_file.display()
                ),
            };
            return anyhow::Error::new(e).context(advice);
        }
        e.into()
    }

    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.client.get(path).map_err(|e| self.fail(e))
    }

    pub fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.client.post(path, body).map_err(|e| self.fail(e))
    }

    pub fn patch<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.client.patch(path, body).map_err(|e| self.fail(e))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.client.delete(path).map_err(|e| self.fail(e))
    }

    pub fn json(&self) -> bool {
        self.output == Format::Json
    }
}

fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read the manager CA certificate {} (--cacert / CLOAK_MANAGER_CACERT)",
            path.display()
        )
    })
}

fn client(url: &str, cacert: Option<&Path>) -> anyhow::Result<Client> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(usage(format!(
            "the manager URL {url:?} must start with https:// (or http:// for a manager run with --insecure-http)"
        )));
    }
    let ca = cacert.map(read_ca).transpose()?;
    Ok(Client::new(url, ca.as_deref())?)
}

impl Connection {
    /// Connect with the token of `CLOAK_MANAGER_TOKEN` or of the stored login.
    pub fn session(&self) -> anyhow::Result<Session> {
        let login_file = login_path()?;
        let stored = load_login(&login_file)?;
        let env_token = std::env::var("CLOAK_MANAGER_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let url = match (&self.url, &stored) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(l)) => l.url.clone(),
            (None, None) => {
                return Err(anyhow::anyhow!(
                    "not logged in: run `cloak login --url URL --user NAME` (or pass --url / set CLOAK_MANAGER_URL, with CLOAK_MANAGER_TOKEN for an API key)"
                ))
            }
        };
        // The stored login applies only to the manager it was made with.
        let stored = stored.filter(|l| l.url == url);
        let cacert = self
            .cacert
            .clone()
            .or_else(|| stored.as_ref().and_then(|l| l.cacert.clone()));
        let (token, source) = match (env_token, &stored) {
            (Some(t), _) => (t, TokenSource::Env),
            (None, Some(l)) => {
                if l.expires_at <= now() {
                    return Err(anyhow::anyhow!(
                        "the session of {} at {url} expired at {}: log in again with `cloak login --user {}`",
                        l.user,
                        fmt_time(l.expires_at),
                        l.user
                    ));
                }
                (l.token.clone(), TokenSource::Login)
            }
            (None, None) => {
                return Err(anyhow::anyhow!(
                    "not logged in to {url}: run `cloak login --url {url} --user NAME`, or set CLOAK_MANAGER_TOKEN to an API key"
                ))
            }
        };
        Ok(Session {
            client: client(&url, cacert.as_deref())?.with_token(token),
            output: self.output,
            source,
            login_file,
        })
    }
}

/// Where a secret comes from: standard input (`--password-stdin`) or an environment variable.
pub fn read_secret(stdin: bool, env: &str, what: &str, flag_hint: &str) -> anyhow::Result<String> {
    let secret = if stdin {
        read_stdin_line(what)?
    } else {
        match std::env::var(env) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                return Err(usage(format!(
                    "no {what}: pipe it to {flag_hint} or set {env} (never as a flag)"
                )))
            }
        }
    };
    if secret.is_empty() {
        return Err(usage(format!("the {what} is empty")));
    }
    Ok(secret)
}

/// The first line of standard input, without its line end.
pub fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what}: ");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = text.lines().next().unwrap_or("");
    Ok(line.to_string())
}

/// The first `n` lines of standard input (a prompt on a terminal).
pub fn read_stdin_lines(what: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("{what}, one per line:");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    Ok(text.lines().take(n).map(str::to_string).collect())
}

// ---- login / logout ----

/// `cloak login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    conn: Connection,
    /// User name.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Read the password from standard input (else from CLOAK_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
}

/// `cloak logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    conn: Connection,
}

pub fn login(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let path = login_path()?;
    let stored = load_login(&path).ok().flatten();
    let url = match (&a.conn.url, &stored) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(l)) => l.url.clone(),
        (None, None) => {
            return Err(usage(
                "which manager? pass --url https://HOST:PORT or set CLOAK_MANAGER_URL",
            ))
        }
    };
    let cacert = match &a.conn.cacert {
        Some(c) => Some(std::fs::canonicalize(c).with_context(|| {
            format!(
                "cannot read the manager CA certificate {} (--cacert / CLOAK_MANAGER_CACERT)",
                c.display()
            )
        })?),
        None => stored
            .as_ref()
            .filter(|l| l.url == url)
            .and_then(|l| l.cacert.clone()),
    };
    let password = read_secret(
        a.password_stdin,
        "CLOAK_PASSWORD",
        "password",
        "--password-stdin",
    )?;
    let mut c = client(&url, cacert.as_deref())?;
    let auth = c
        .login(&a.user, &password)
        .with_context(|| format!("cannot log in to {url} as {}", a.user))?;
    let login = StoredLogin {
        url: url.clone(),
        cacert,
        user: a.user.clone(),
        token: auth.access_token,
        expires_at: now() + auth.expires_in,
    };
    save_login(&path, &login)?;
    match a.conn.output {
        Format::Json => crate::output::print_json(&serde_json::json!({
            "url": url, "user": a.user, "expires_at": login.expires_at,
            "login_file": path, "account_id": auth.session_info.selected_account_id,
        }))?,
        Format::Text => outln!(
            "logged in to {url} as {} until {} (session kept in {})",
            a.user,
            fmt_time(login.expires_at),
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let path = login_path()?;
    let Some(l) = load_login(&path)? else {
        outln!("not logged in (no {})", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let cacert = a.conn.cacert.clone().or(l.cacert.clone());
    let c = client(&l.url, cacert.as_deref())?.with_token(l.token.clone());
    // A session that already ended is as good as terminated; anything else is reported, and
    // the file goes anyway (its token is useless to a user who wanted to log out).
    let ended = match c.post_empty::<serde_json::Value>("/v1/sys/session/terminate") {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(401) => Ok(()),
        Err(e) => Err(e),
    };
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    ended.with_context(|| {
        format!(
            "removed {} but could not end the session at {}",
            path.display(),
            l.url
        )
    })?;
    outln!("logged out of {} ({} removed)", l.url, path.display());
    Ok(ExitCode::SUCCESS)
}

// ---- text output ----

/// Print rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ`.
pub fn fmt_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A query string from the given pairs (values percent-encoded), `""` when none are set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(k);
            q.push('=');
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    q.push(b as char);
                } else {
                    q.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    q
}

/// A path segment from a user-given id: refused unless it is one (no `/`, `?` or `#` sneaking
/// into the request path).
pub fn seg<'a>(what: &str, id: &'a str) -> anyhow::Result<&'a str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(usage(format!(
            "{id:?} is not a {what} id (letters, digits and '-'); list them with `cloak {what} list`"
        )));
    }
    Ok(id)
}

/// Whether `s` has the shape of the manager's ids (UUIDs).
pub fn is_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_queries() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(1_709_251_199), "2024-02-29 23:59:59Z");
        assert_eq!(query(&[("a", None), ("b", None)]), "");
        assert_eq!(
            query(&[
                ("status", Some("PENDING".into())),
                ("all_search", Some("a b&c=d".into()))
            ]),
            "?status=PENDING&all_search=a%20b%26c%3Dd"
        );
        assert!(seg("build", "../x").is_err());
    }
}
