//! Registries over the OCI Distribution API, through the `oci-client` crate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::{Reference, RegistryOperation};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::auth::{self, AuthLookup, Credentials};
use crate::destination::{self, DestinationPolicy};
use crate::digest::{AsyncVerifyingReader, Digest, Verifier};
use crate::error::{Error, Result};
use crate::spec::{self, Descriptor};

/// Manifests larger than this are refused (the distribution registry's own limit is 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

const UNAUTHORIZED: &str = "401 Unauthorized: the registry rejected the credentials (wrong user name or password, or none given)";

/// A boxed async byte stream.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// How to reach and authenticate to a registry; skopeo's flags map onto these fields.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates and require HTTPS (`--tls-verify`, default true). When false,
    /// HTTPS is tried without verification and plain HTTP is used if the registry speaks no TLS.
    pub tls_verify: bool,
    /// Directory of `*.crt` CA certificates (`--cert-dir`). When unset,
    /// `/etc/containers/certs.d/HOST:PORT` and `/etc/docker/certs.d/HOST:PORT` are used if present.
    pub cert_dir: Option<PathBuf>,
    /// Explicit credentials (`--creds`); otherwise the auth files are consulted.
    pub creds: Option<Credentials>,
    /// Where auth files and credential helpers are looked up.
    pub auth: AuthLookup,
    /// The address policy of a service fetching for others (the manager); `None` lets the
    /// client reach any address, as `cloak convert` does for the user running it.
    pub destinations: Option<Arc<DestinationPolicy>>,
    /// Whether error messages may quote an excerpt of a registry's response body. A service
    /// whose errors go back to another party than the operator sets this to false: the
    /// body of a redirect target could be anything the manager can read.
    pub quote_bodies: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            auth: AuthLookup::from_env(),
            destinations: None,
            quote_bodies: true,
        }
    }
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another component may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn load_certs(dir: &Path) -> Result<Vec<Certificate>> {
    let mut certs = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Err(Error::io("read certificate directory", dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    for path in paths {
        let data = std::fs::read(&path).map_err(|e| Error::io("read CA certificate", &path, e))?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(certs)
}

/// A client bound to one registry and one set of credentials.
pub struct Registry {
    client: oci_client::Client,
    auth: oci_client::secrets::RegistryAuth,
    registry: String,
    /// Manifests are fetched with this client (same TLS settings as `client`), so their
    /// size is checked while the body streams: oci-client reads a manifest body whole.
    /// Third: [`RegistryOptions::quote_bodies`] (boxed with the rest to keep `Dest` small).
    http: Box<(reqwest::Client, Scheme, bool)>,
}

/// How the registry is reached.
#[derive(Clone, Copy)]
enum Scheme {
    Https,
    /// `--tls-verify=false` and the registry speaks no TLS.
    Http,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry", &self.registry)
            .finish()
    }
}

impl Registry {
    /// Connect to the registry of `reference` (no request is made yet, except the plain-HTTP
    /// probe when `tls_verify` is false).
    pub async fn connect(reference: &Reference, opts: &RegistryOptions) -> Result<Self> {
        install_crypto_provider();
        let registry = reference.resolve_registry().to_string();
        let mut extra = Vec::new();
        let cert_dir = opts.cert_dir.clone().or_else(|| {
            ["/etc/containers/certs.d", "/etc/docker/certs.d"]
                .iter()
                .map(|base| Path::new(base).join(&registry))
                .find(|p| p.is_dir())
        });
        if let Some(dir) = &cert_dir {
            extra = load_certs(dir)?;
        }
        if let Some(policy) = &opts.destinations {
            policy
                .check_registry(&registry)
                .await
                .map_err(|reason| Error::Destination {
                    registry: registry.clone(),
                    reason,
                })?;
        }
        let protocol = if !opts.tls_verify && !speaks_tls(&registry, opts).await {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let mut http = client_builder(opts)
            .danger_accept_invalid_certs(!opts.tls_verify)
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(READ_TIMEOUT);
        for cert in &extra {
            let cert = reqwest::Certificate::from_pem(&cert.data).map_err(|e| {
                Error::Invalid(format!(
                    "a CA certificate for {registry} is not valid PEM: {e}"
                ))
            })?;
            http = http.add_root_certificate(cert);
        }
        let http = http.build().map_err(|e| {
            Error::Invalid(format!("cannot set up an HTTP client for {registry}: {e}"))
        })?;
        let scheme = match protocol {
            ClientProtocol::Http => Scheme::Http,
            _ => Scheme::Https,
        };
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: !opts.tls_verify,
            extra_root_certificates: extra,
            use_monolithic_push: true,
            http_client: Some(http.clone()),
            realm_check: Some(realm_check(&registry, opts)),
            ..Default::default()
        };
        let creds = auth::resolve(&registry, opts.creds.as_ref(), &opts.auth)?;
        Ok(Registry {
            client: oci_client::Client::new(config),
            auth: creds.to_registry_auth(),
            registry,
            http: Box::new((http, scheme, opts.quote_bodies)),
        })
    }

    /// `host[:port]`.
    pub fn name(&self) -> &str {
        &self.registry
    }

    fn err(&self, action: impl Into<String>, source: OciDistributionError) -> Error {
        let source = self.redact(source);
        let reason = match &source {
            OciDistributionError::AuthenticationFailure(r) => Some(r.clone()),
            OciDistributionError::UnauthorizedError { .. } => Some(UNAUTHORIZED.to_string()),
            OciDistributionError::RequestError(e)
                if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) =>
            {
                Some(UNAUTHORIZED.to_string())
            }
            OciDistributionError::RequestError(e)
                if e.status() == Some(reqwest::StatusCode::FORBIDDEN) =>
            {
                Some("403 Forbidden: these credentials may not access this repository".to_string())
            }
            _ => None,
        };
        match reason {
            Some(reason) => Error::Authentication {
                registry: self.registry.clone(),
                reason,
            },
            None => Error::Registry {
                registry: self.registry.clone(),
                action: action.into(),
                source: Box::new(source),
            },
        }
    }

    /// The error without the registry's response body, or with a short escaped excerpt of it
    /// (see [`RegistryOptions::quote_bodies`]).
    fn redact(&self, e: OciDistributionError) -> OciDistributionError {
        use OciDistributionError as O;
        let quote = |body: &str| {
            if self.http.2 {
                excerpt(body)
            } else {
                "(the response body is not shown)".to_string()
            }
        };
        match e {
            O::ServerError { code, url, message } => O::ServerError {
                code,
                url,
                message: quote(&message),
            },
            O::RegistryError { mut envelope, url } => {
                // The codes are the spec's; the messages and details are the registry's words.
                for e in &mut envelope.errors {
                    e.message = quote(&e.message);
                    e.detail = serde_json::Value::Null;
                }
                O::RegistryError { envelope, url }
            }
            O::AuthenticationFailure(r) if r.contains(destination::REFUSED) => {
                O::AuthenticationFailure(r)
            }
            O::AuthenticationFailure(r) => {
                O::AuthenticationFailure(format!("the token service refused: {}", quote(&r)))
            }
            O::RegistryTokenDecodeError(r) => O::RegistryTokenDecodeError(quote(&r)),
            O::GenericError(Some(r)) => O::GenericError(Some(quote(&r))),
            // The refusals of the resolver and the redirect policy sit among the request
            // error's causes (their text is cloak's own): say them.
            O::RequestError(e) => {
                let mut cause: Option<&dyn std::error::Error> = Some(&e);
                let mut last = None;
                while let Some(c) = cause {
                    if c.to_string().contains(destination::REFUSED) {
                        return O::GenericError(Some(c.to_string()));
                    }
                    last = Some(c.to_string());
                    cause = c.source();
                }
                match last {
                    Some(why) if e.is_redirect() => O::GenericError(Some(why)),
                    _ => O::RequestError(e),
                }
            }
            e => e,
        }
    }

    /// Authenticate for `op` on `reference` up front so that bad credentials give one clear
    /// error instead of a confusing failure later.
    pub async fn login(&self, reference: &Reference, op: RegistryOperation) -> Result<()> {
        self.client
            .auth(reference, &self.auth, op)
            .await
            .map(|_| ())
            .map_err(|e| self.err(format!("authenticate for {}", reference.repository()), e))
    }

    /// Fetch a manifest or index, returning its bytes, media type and digest.
    pub async fn manifest(&self, reference: &Reference) -> Result<(Bytes, String, Digest)> {
        let accepted = [
            spec::OCI_MANIFEST,
            spec::OCI_INDEX,
            spec::DOCKER_MANIFEST,
            spec::DOCKER_MANIFEST_LIST,
        ];
        let action = format!("pull manifest of {}", reference.whole());
        let body = self
            .manifest_body(reference, &accepted)
            .await
            .map_err(|e| match e {
                ManifestFetch::Oci(e) => self.err(&action, e),
                ManifestFetch::Cloak(e) => e,
            })?;
        let digest = Digest::of(&body);
        if let Some(wanted) = reference.digest() {
            if wanted != digest.to_string() {
                return Err(Error::DigestMismatch {
                    what: format!("manifest of docker://{}", reference.whole()),
                    expected: wanted.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let media_type =
            crate::image::sniff_media_type(&body, &format!("docker://{}", reference.whole()))?;
        Ok((body, media_type, digest))
    }

    /// GET a manifest, refusing it from its Content-Length, or as soon as more than
    /// [`MAX_MANIFEST_SIZE`] bytes have arrived, before the rest is read.
    async fn manifest_body(
        &self,
        reference: &Reference,
        accepted: &[&str],
    ) -> std::result::Result<Bytes, ManifestFetch> {
        use oci_client::secrets::RegistryAuth;
        let token = self
            .client
            .auth(reference, &self.auth, RegistryOperation::Pull)
            .await?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            match self.http.1 {
                Scheme::Http => "http",
                Scheme::Https => "https",
            },
            reference.resolve_registry(),
            reference.repository(),
            reference.digest().or(reference.tag()).unwrap_or("latest")
        );
        let mut req = self
            .http
            .0
            .get(&url)
            .header(reqwest::header::ACCEPT, accepted.join(", "));
        req = match (&token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(user, pass)) => req.basic_auth(user, Some(pass)),
            _ => req,
        };
        let mut res = req.send().await.map_err(OciDistributionError::from)?;
        let status = res.status();
        let too_large = |size: u64| {
            ManifestFetch::Cloak(Error::ManifestTooLarge {
                reference: format!("docker://{}", reference.whole()),
                size,
                limit: MAX_MANIFEST_SIZE,
            })
        };
        // Error bodies are read up to 64 KiB, for the registry's message.
        let limit = if status == reqwest::StatusCode::OK {
            MAX_MANIFEST_SIZE
        } else {
            64 * 1024
        };
        if let Some(n) = res.content_length().filter(|n| *n > limit) {
            if status == reqwest::StatusCode::OK {
                return Err(too_large(n));
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(OciDistributionError::from)? {
            if (body.len() + chunk.len()) as u64 > limit {
                if status == reqwest::StatusCode::OK {
                    return Err(too_large((body.len() + chunk.len()) as u64));
                }
                break;
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            reqwest::StatusCode::OK => Ok(body.into()),
            reqwest::StatusCode::UNAUTHORIZED => {
                Err(OciDistributionError::UnauthorizedError { url }.into())
            }
            s if s.is_client_error() => Err(match serde_json::from_slice(&body) {
                Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                Err(_) => OciDistributionError::ServerError {
                    code: s.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).to_string(),
                },
            }
            .into()),
            s => Err(OciDistributionError::ServerError {
                code: s.as_u16(),
                url,
                message: String::from_utf8_lossy(&body).to_string(),
            }
            .into()),
        }
    }

    /// Stream a blob, verifying its digest and size.
    pub async fn blob(&self, reference: &Reference, desc: &Descriptor) -> Result<BlobReader> {
        let oci_desc = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..Default::default()
        };
        let what = format!("blob {} of {}", desc.digest, reference.repository());
        let stream = self
            .client
            .pull_blob_stream(reference, &oci_desc)
            .await
            .map_err(|e| self.err(format!("pull {what}"), e))?;
        let reader = StreamReader::new(stream.stream);
        // oci-client checks the digest of everything it streams; we add the size check.
        Ok(Box::new(AsyncVerifyingReader::new(
            reader,
            Verifier::size_only(what, desc.size),
        )))
    }

    /// Whether the repository of `reference` already has the blob.
    pub async fn has_blob(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        self.client
            .blob_exists(reference, &digest.to_string())
            .await
            .map_err(|e| {
                self.err(
                    format!("check blob {digest} in {}", reference.repository()),
                    e,
                )
            })
    }

    /// Ask the registry to link a blob from another repository (cross-repo mount).
    /// Returns false when the registry declined (the caller then uploads).
    pub async fn mount_blob(&self, to: &Reference, from: &Reference, digest: &Digest) -> bool {
        match self.client.mount_blob(to, from, &digest.to_string()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%digest, error = %e, "cross-repository mount declined");
                false
            }
        }
    }

    /// Upload a blob from a stream of known size; the registry checks the digest.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        data: BlobReader,
    ) -> Result<()> {
        // A failure of the source stream surfaces from reqwest as an opaque body error; keep
        // the typed cause aside so the user sees "digest mismatch", not "error sending request".
        let cause: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
        let slot = cause.clone();
        let stream = ReaderStream::with_capacity(data, 256 * 1024).map(move |r| {
            r.map_err(|e| {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                *slot.lock().expect("not poisoned") = Some(e);
                OciDistributionError::IoError(copy)
            })
        });
        let result = self
            .client
            .push_blob_stream(reference, stream, &desc.digest.to_string(), Some(desc.size))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let what = format!("push blob {} to {}", desc.digest, reference.repository());
                match cause.lock().expect("not poisoned").take() {
                    Some(io) => Err(Error::from_stream(what, io)),
                    None => Err(self.err(what, e)),
                }
            }
        }
    }

    /// Upload a manifest under `reference`'s tag or digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        body: Bytes,
        media_type: &str,
    ) -> Result<()> {
        let content_type = media_type
            .parse()
            .map_err(|_| Error::UnsupportedMediaType {
                what: format!("manifest for docker://{}", reference.whole()),
                media_type: media_type.to_string(),
            })?;
        self.client
            .push_manifest_raw(reference, body, content_type)
            .await
            .map(|_| ())
            .map_err(|e| self.err(format!("push manifest docker://{}", reference.whole()), e))
    }
}

/// Why fetching a manifest failed: the registry's answer, or a limit of cloak's.
enum ManifestFetch {
    Oci(OciDistributionError),
    Cloak(Error),
}

impl From<OciDistributionError> for ManifestFetch {
    fn from(e: OciDistributionError) -> Self {
        ManifestFetch::Oci(e)
    }
}

/// How long a read from a registry may stall before the transfer fails.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A client builder with the redirect policy and, under an address policy, its resolver.
fn client_builder(opts: &RegistryOptions) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder();
    match &opts.destinations {
        Some(p) => b.redirect(p.redirect_policy()).dns_resolver(p.resolver()),
        None => b.redirect(destination::redirect_policy()),
    }
}

/// The check of a Bearer challenge's realm: HTTPS unless the registry itself is reached over
/// plain HTTP by the user's or the operator's choice, and the address policy if any.
fn realm_check(registry: &str, opts: &RegistryOptions) -> oci_client::client::RealmCheckFn {
    let registry = registry.to_string();
    let insecure_ok = !opts.tls_verify;
    let policy = opts.destinations.clone();
    Arc::new(move |realm: &str| {
        let url = reqwest::Url::parse(realm)
            .map_err(|e| format!("the token service URL of {registry} is not valid: {e}"))?;
        let refuse = |why: String| format!("token service of {registry}: {why}");
        match url.scheme() {
            "https" => {}
            "http" if insecure_ok => {}
            _ => {
                return Err(refuse(format!(
                    "{}://{} is not HTTPS and {registry} is not an insecure registry",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                )))
            }
        }
        match &policy {
            Some(p) => p.check_url(&url).map_err(refuse),
            None => Ok(()),
        }
    })
}

/// At most 200 characters of a response body, escaped so that it cannot forge log lines or
/// terminal output.
fn excerpt(body: &str) -> String {
    let mut out: String = body
        .trim()
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if body.trim().chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Whether `host[:port]` completes a TLS handshake (used only with `--tls-verify=false`).
async fn speaks_tls(registry: &str, opts: &RegistryOptions) -> bool {
    let Ok(client) = client_builder(opts)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .build()
    else {
        return false;
    };
    client
        .get(format!("https://{registry}/v2/"))
        .send()
        .await
        .is_ok()
}
