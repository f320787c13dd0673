//! Before the application starts: for each certificate of [`ManagerConfig`], generate the key
//! inside the TEE, get a nonce from the manager, evidence binding both, a certificate for a CSR
//! over TLS pinned to the manager's CA, and write key, certificate and chain; then fetch the
//! app's configs over TLS authenticated with that certificate and install them as files,
//! environment variables or Gramine encrypted-mount keys. Any failure stops the launch: the
//! app never runs unattested.

pub mod evidence;
pub mod http;
pub mod issued;
pub mod place;
pub mod renew;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::{CertSpec, KeySpec, ManagerConfig};
use evidence::EvidenceSource;
use http::{HttpError, Manager};

/// Exit status when the manager refused (not whitelisted, revoked, …) or evidence failed.
pub const EXIT_REFUSED: i32 = 121;
/// Exit status when the manager could not be reached within the retry budget, or TLS failed.
pub const EXIT_UNREACHABLE: i32 = 122;

/// Why provisioning failed: the step, the manager's reason code when it gave one, the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What was being done (`nonce`, `evidence`, `certificate "web"`, `app configs`, …).
    pub step: String,
    /// The manager's stable reason code (`not_whitelisted`, `revoked`, …), or a local one
    /// (`unreachable`, `tls`, `evidence`, `install`).
    pub code: String,
    /// What was expected and found.
    pub detail: String,
}

impl Failure {
    fn new(step: impl Into<String>, code: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            step: step.into(),
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// The process exit status for this failure.
    pub fn exit_status(&self) -> i32 {
        match self.code.as_str() {
            "unreachable" | "tls" => EXIT_UNREACHABLE,
            _ => EXIT_REFUSED,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attestation failed at {}: {} ({}): {}",
            self.step,
            self.code.replace('_', " "),
            self.code,
            self.detail
        )
    }
}

/// What the launch needs from provisioning: environment entries for the app.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `NAME=value` entries from the app's configs.
    pub env: Vec<String>,
}

/// The parts of the system provisioning touches, so tests run it in a directory as any user.
#[derive(Debug, Clone)]
pub struct Target {
    /// The image root paths are written under (`/` in an image), and what was written there.
    root: place::Root,
    /// Owner of the key and config files (the app's user), when running as root.
    pub owner: Option<(u32, u32)>,
}

impl Target {
    /// Paths under `root` (`/` in an image); key and config files owned by `owner`.
    pub fn new(root: impl Into<PathBuf>, owner: Option<(u32, u32)>) -> Target {
        Target {
            root: place::Root::new(root),
            owner,
        }
    }

    /// Write `data` at `p` atomically (a temporary beside it, then rename), with `mode`,
    /// never through a symbolic link, under the rules of `origin` (see [`place`]).
    fn write(&self, p: &str, data: &[u8], mode: u32, origin: place::Origin) -> Result<(), Failure> {
        self.stage(p, data, mode, origin)?
            .commit()
            .map_err(|e| place_failure(p, e))
    }

    /// The first half of [`Target::write`]: checked and written beside its place.
    fn stage(
        &self,
        p: &str,
        data: &[u8],
        mode: u32,
        origin: place::Origin,
    ) -> Result<place::Staged, Failure> {
        self.root
            .stage(p, data, mode, self.owner, origin)
            .map_err(|e| place_failure(p, e))
    }
}

fn place_failure(p: &str, e: place::PlaceError) -> Failure {
    match e {
        place::PlaceError::Refused(why) => {
            Failure::new(format!("writing {p:?}"), "path_refused", why)
        }
        place::PlaceError::Io(e) => Failure::new("install", "install", format!("{p}: {e}")),
    }
}

/// A generated key: PKCS#8 DER, SubjectPublicKeyInfo DER, and the signer for the CSR.
pub struct Key {
    /// PKCS#8 DER of the private key (never printed).
    pub pkcs8: Vec<u8>,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    pair: rcgen::KeyPair,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(private)")
    }
}

/// Generate a key of `spec` from the OS's random source.
pub fn generate_key(spec: KeySpec) -> Result<Key, String> {
    use rcgen::PublicKeyData;
    let pair = match spec {
        KeySpec::Ec { curve: 256 } => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeySpec::Ec { curve: 384 } => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeySpec::Ec { curve } => return Err(format!("EC curve P-{curve} is not supported")),
        KeySpec::Rsa { bits } => {
            use rsa::pkcs8::EncodePrivateKey;
            if ![2048, 3072, 4096].contains(&bits) {
                return Err(format!("RSA {bits}: use 2048, 3072 or 4096"));
            }
            let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits as usize)
                .map_err(|e| format!("RSA key generation: {e}"))?;
            let der = k.to_pkcs8_der().map_err(|e| e.to_string())?;
            rcgen::KeyPair::try_from(der.as_bytes())
        }
    }
    .map_err(|e| format!("key generation: {e}"))?;
    Ok(Key {
        pkcs8: pair.serialize_der(),
        spki: pair.subject_public_key_info(),
        pair,
    })
}

fn csr(subject: &str, key: &Key) -> Result<String, String> {
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, subject);
    p.distinguished_name = dn;
    p.serialize_request(&key.pair)
        .and_then(|r| r.pem())
        .map_err(|e| format!("CSR: {e}"))
}

/// Retry policy for an unreachable manager: exponential backoff from 250 ms to 8 s, until
/// `budget` has passed. Every request, reads included, ends by the budget's end, or
/// `min_request` after it started when less is left: a call takes at most
/// `budget + min_request`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Total time allowed.
    pub budget: Duration,
    /// Time one request always gets (the manager's issuance takes a moment even when the
    /// budget is spent or 0).
    pub min_request: Duration,
}

/// The manager client used by [`provision`]: the route and pinned CA, and the retry policy.
#[derive(Debug, Clone)]
pub struct Client {
    manager: Manager,
    retry: Retry,
}

impl Client {
    /// For `cfg` (its URL and pinned CA), over `route` (TCP to the URL's host when None).
    pub fn new(cfg: &ManagerConfig, route: Option<http::Route>) -> Result<Client, Failure> {
        let manager = Manager::new(&cfg.url, &cfg.ca_pem, route)
            .map_err(|e| Failure::new("configuration", "configuration", e))?;
        Ok(Client {
            manager,
            retry: Retry {
                budget: Duration::from_secs(cfg.retry_seconds),
                min_request: Duration::from_secs(15),
            },
        })
    }

    /// A request with retries on transport errors and 5xx/429 answers; 4xx answers and TLS
    /// failures are final. Returns the JSON body of a 2xx answer.
    fn call(
        &self,
        m: &Manager,
        step: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let start = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let deadline = (start + self.retry.budget).max(Instant::now() + self.retry.min_request);
            let last = match m.request_until(method, path, body, deadline) {
                Ok((status, bytes)) if (200..300).contains(&status) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        Failure::new(
                            step,
                            "bad_response",
                            format!("{path} answered {status} with a body that is not JSON: {e}"),
                        )
                    })
                }
                Ok((status, bytes)) => {
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let code = v["type"].as_str().unwrap_or("http_error").to_string();
                    let detail = v["detail"]
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                    let f = Failure::new(step, code, format!("HTTP {status}: {detail}"));
                    if status < 500 && status != 429 {
                        return Err(f);
                    }
                    f
                }
                Err(HttpError::Tls(e)) => return Err(Failure::new(step, "tls", e)),
                Err(HttpError::Transport(e)) => Failure::new(step, "unreachable", e),
            };
            if start.elapsed() + wait > self.retry.budget {
                let mut f = last;
                f.detail = format!(
                    "{} (gave up after {} s of retries; the image allows {} s)",
                    f.detail,
                    start.elapsed().as_secs(),
                    self.retry.budget.as_secs()
                );
                return Err(f);
            }
            eprintln!(
                "cloak-launcher: {step}: {}; retrying in {} ms",
                last.detail,
                wait.as_millis()
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }
}

/// One certificate obtained from the manager.
#[derive(Debug)]
pub struct Issued {
    /// The key.
    pub key: Key,
    /// Leaf PEM.
    pub certificate: String,
    /// Issuing CA then root, PEM.
    pub chain: String,
    /// Expiry (Unix seconds), as the manager reported it.
    pub not_after: Option<i64>,
}

/// Obtain one certificate: key, nonce, evidence, CSR, `POST /v1/certificates`.
pub fn obtain(
    client: &Client,
    cfg: &ManagerConfig,
    spec: &CertSpec,
    source: &mut dyn EvidenceSource,
) -> Result<Issued, Failure> {
    let step = format!("certificate {:?}", spec.subject);
    let key = generate_key(spec.key).map_err(|e| Failure::new(&step, "keygen", e))?;
    // The nonce request is the first TLS connection: a manager that does not present the
    // pinned CA's certificate is refused here, before the key or evidence is sent.
    let n = client.call(
        &client.manager,
        &step,
        "POST",
        "/v1/attestation/nonce",
        Some(&json!({})),
    )?;
    let nonce_hex = n["nonce"].as_str().unwrap_or_default().to_string();
    let nonce = hex::decode(&nonce_hex)
        .map_err(|_| Failure::new(&step, "bad_response", "the manager's nonce is not hex"))?;
    let evidence = source
        .evidence(&key.spki, &nonce)
        .map_err(|e| Failure::new(&step, "evidence", format!("{}: {e}", source.name())))?;
    let csr = csr(&spec.subject, &key).map_err(|e| Failure::new(&step, "csr", e))?;
    let req = json!({
        "app_id": cfg.app_id,
        "csr": csr,
        "evidence": base64::engine::general_purpose::STANDARD.encode(&evidence),
        "nonce": nonce_hex,
    });
    let rec = client.call(
        &client.manager,
        &step,
        "POST",
        "/v1/certificates",
        Some(&req),
    )?;
    let certificate = rec["certificate"].as_str().unwrap_or_default().to_string();
    if certificate.is_empty() {
        return Err(Failure::new(
            &step,
            "bad_response",
            "the manager answered without a certificate",
        ));
    }
    let chain = rec["chain"].as_str().unwrap_or_default().to_string();
    // Nothing is written for an answer that is not a certificate for this key under its chain.
    issued::check(&key.spki, &certificate, &chain).map_err(|e| {
        Failure::new(
            &step,
            "bad_certificate",
            format!("{e}; nothing was written and the application is not started"),
        )
    })?;
    Ok(Issued {
        key,
        certificate,
        chain,
        not_after: rec["not_after"].as_i64(),
    })
}

/// Write an issued certificate's files: key 0600 (owned by the app's user), certificate and
/// chain 0644 (`chain_path` None: not written). All are checked and written beside their
/// places first, so a refused or failing path replaces none of them; then renamed chain, key,
/// certificate last: an app that reloads when its certificate changes reads a matching pair,
/// and a new key sits beside the old certificate only between two renames.
pub fn write_issued(target: &Target, spec: &CertSpec, issued: &Issued) -> Result<(), Failure> {
    let key_pem = pem("PRIVATE KEY", &issued.key.pkcs8);
    let m = place::Origin::Measured;
    let mut staged = Vec::new();
    if let Some(chain) = &spec.chain_path {
        staged.push((
            chain,
            target.stage(chain, issued.chain.as_bytes(), 0o644, m)?,
        ));
    }
    staged.push((
        &spec.key_path,
        target.stage(&spec.key_path, key_pem.as_bytes(), 0o600, m)?,
    ));
    staged.push((
        &spec.cert_path,
        target.stage(&spec.cert_path, issued.certificate.as_bytes(), 0o644, m)?,
    ));
    for (p, s) in staged {
        s.commit().map_err(|e| place_failure(p, e))?;
    }
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Fetch the app's configs with the first certificate and install them: `/path` keys as files
/// (0600, the app's user), `env:NAME` as environment variables, `sgx-key:NAME` (32 hex
/// digits) as the Gramine encrypted-mount key NAME.
pub fn install_configs(
    client: &Client,
    cfg: &ManagerConfig,
    issued: &Issued,
    target: &Target,
    source: &mut dyn EvidenceSource,
) -> Result<Installed, Failure> {
    let step = "app configs";
    let chain = format!("{}{}", issued.certificate, issued.chain);
    let m = client
        .manager
        .with_client_cert(&cfg.ca_pem, &chain, &issued.key.pkcs8)
        .map_err(|e| Failure::new(step, "configuration", e))?;
    let v = client.call(&m, step, "GET", "/v1/runtime/app_configs", None)?;
    let mut installed = Installed::default();
    let Some(entries) = v["config"]["app_config"].as_object() else {
        return Ok(installed);
    };
    for (name, item) in entries {
        let contents = item["contents"].as_str().unwrap_or_default();
        if let Some(var) = name.strip_prefix("env:") {
            installed.env.push(env_entry(var, contents)?);
        } else if let Some(key_name) = name.strip_prefix("sgx-key:") {
            let key: [u8; 16] = hex::decode(contents.trim())
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| {
                    Failure::new(
                        step,
                        "install",
                        format!("config {name:?}: an encrypted-mount key is 32 hex digits"),
                    )
                })?;
            source
                .install_mount_key(key_name, &key)
                .map_err(|e| Failure::new(step, "install", e))?;
        } else if name.starts_with('/') {
            install_file(cfg, target, name, contents)?;
        } else {
            return Err(Failure::new(
                step,
                "install",
                format!("config {name:?}: names are /absolute/path, env:NAME or sgx-key:NAME"),
            ));
        }
    }
    Ok(installed)
}

/// Variables that make the loader or an interpreter load code from a path or an option
/// string: with a config file beside it, `env:LD_PRELOAD` would run code the build was not
/// approved with. A list, so not complete for every runtime; images that need one of these
/// set it in their own (measured) environment.
const CODE_VARIABLES: &[&str] = &[
    "PATH",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PERL5LIB",
    "PERLLIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "BASH_ENV",
    "ENV",
    "PROMPT_COMMAND",
];

/// Why `var` may not come from a config, if it may not.
fn code_loading_variable(var: &str) -> Option<String> {
    if var.starts_with("LD_") {
        return Some(format!("{var} steers the dynamic loader"));
    }
    CODE_VARIABLES
        .contains(&var)
        .then(|| format!("{var} names code or options the runtime loads"))
}

/// The `NAME=value` entry of config `env:NAME`, refused when execve could not carry it (a
/// NUL byte would otherwise make exec fail after everything was installed, with a vaguer
/// error, or silently cut the value).
fn env_entry(var: &str, contents: &str) -> Result<String, Failure> {
    let refuse = |why: &str| {
        Failure::new(
            "app configs",
            "install",
            format!(
                "config \"env:{}\": {why}; fix the app's config at the manager",
                var.escape_default()
            ),
        )
    };
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        return Err(refuse("not a variable name"));
    }
    if let Some(why) = code_loading_variable(var) {
        return Err(refuse(&format!(
            "{why}: a config may not set it (it would load code the build was not approved with)"
        )));
    }
    if contents.contains('\0') {
        return Err(refuse(
            "the value contains a NUL byte, which an environment variable cannot hold",
        ));
    }
    Ok(format!("{var}={contents}"))
}

/// Write config file `name` if the rules of [`config_path_allowed`] and [`place`] allow it.
fn install_file(
    cfg: &ManagerConfig,
    target: &Target,
    name: &str,
    contents: &str,
) -> Result<(), Failure> {
    let step = "app configs";
    let refused = |why: String| {
        Failure::new(
            step,
            "path_refused",
            format!("config {name:?} is refused: {why}; the application is not started"),
        )
    };
    config_path_allowed(cfg, name).map_err(refused)?;
    target
        .write(name, contents.as_bytes(), 0o600, place::Origin::Config)
        .map_err(|f| {
            if f.code == "path_refused" {
                refused(f.detail)
            } else {
                f
            }
        })
}

/// Whether the manager may write config file `name`: a clean absolute path, not one of the
/// certificates' files, not under [`place::RESERVED`]. (That it does not replace a file of the
/// image, and no symbolic link is followed, is checked as it is written.)
fn config_path_allowed(cfg: &ManagerConfig, name: &str) -> Result<(), String> {
    let parts = place::components(name)?;
    if let Some(r) = place::reserved(&parts) {
        return Err(format!(
            "{r} holds the image's code, its loader's configuration or the launcher's own files; put configs elsewhere (e.g. under /run or the app's directory)"
        ));
    }
    for spec in &cfg.certificates {
        let own = [
            Some(&spec.key_path),
            Some(&spec.cert_path),
            spec.chain_path.as_ref(),
        ];
        if own.into_iter().flatten().any(|p| p == name) {
            return Err(format!(
                "it is the key, certificate or chain path of certificate {:?}, which only the launcher writes",
                spec.subject
            ));
        }
    }
    Ok(())
}

/// Append the pinned CA to the image's trust stores that exist (add_ccm_ca_certificates).
fn add_to_trust_store(cfg: &ManagerConfig, target: &Target) -> Result<(), Failure> {
    for store in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        let text = target.root.read(store).map(String::from_utf8);
        if let Some(Ok(mut text)) = text {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&cfg.ca_pem);
            target.write(store, text.as_bytes(), 0o644, place::Origin::Measured)?;
        }
    }
    Ok(())
}

/// Everything before the app starts. Returns what the app's environment gains, and the issued
/// certificates (for renewal).
pub fn provision(
    cfg: &ManagerConfig,
    client: &Client,
    source: &mut dyn EvidenceSource,
    target: &Target,
) -> Result<(Installed, Vec<Issued>), Failure> {
    let mut issued = Vec::new();
    for spec in &cfg.certificates {
        let i = obtain(client, cfg, spec, source)?;
        write_issued(target, spec, &i)?;
        eprintln!(
            "cloak-launcher: certificate for {:?} installed at {}",
            spec.subject, spec.cert_path
        );
        issued.push(i);
    }
    let installed = match issued.first() {
        Some(first) => install_configs(client, cfg, first, target, source)?,
        None => Installed::default(),
    };
    if cfg.add_ca_to_trust_store {
        add_to_trust_store(cfg, target)?;
    }
    Ok((installed, issued))
}

/// The evidence source of this machine: Gramine's `/dev/attestation` when present, the NSM
/// when `/dev/nsm` is, else simulated evidence from `sim_dir` if the image allows it.
pub fn detect_source(
    cfg: &ManagerConfig,
    sim_dir: &Path,
) -> Result<Box<dyn EvidenceSource>, Failure> {
    let gramine = Path::new("/dev/attestation");
    if gramine.join("quote").exists() {
        return Ok(Box::new(evidence::Gramine {
            fs: evidence::AttestationDir(gramine.to_path_buf()),
        }));
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/nsm")
    {
        return Ok(Box::new(evidence::Nsm {
            dev: evidence::DevNsm(f),
        }));
    }
    if cfg.allow_simulated {
        return evidence::Simulated::from_dir(sim_dir)
            .map(|s| Box::new(s) as Box<dyn EvidenceSource>)
            .map_err(|e| {
                Failure::new(
                    "evidence",
                    "evidence",
                    format!("no TEE here and no simulation key: {e}"),
                )
            });
    }
    Err(Failure::new(
        "evidence",
        "evidence",
        "no TEE evidence source (no /dev/attestation/quote, no /dev/nsm), and this image was converted without --allow-simulated-attestation",
    ))
}

#[cfg(test)]
mod tests;
