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
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            auth: AuthLookup::from_env(),
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
        let protocol = if !opts.tls_verify && !speaks_tls(&registry).await {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: !opts.tls_verify,
            extra_root_certificates: extra,
            use_monolithic_push: true,
            ..Default::default()
        };
        let creds = auth::resolve(&registry, opts.creds.as_ref(), &opts.auth)?;
        Ok(Registry {
            client: oci_client::Client::new(config),
            auth: creds.to_registry_auth(),
            registry,
        })
    }

    /// `host[:port]`.
    pub fn name(&self) -> &str {
        &self.registry
    }

    fn err(&self, action: impl Into<String>, source: OciDistributionError) -> Error {
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
        let (body, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
            .map_err(|e| self.err(format!("pull manifest of {}", reference.whole()), e))?;
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                reference: format!("docker://{}", reference.whole()),
                size: body.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
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

/// Whether `host[:port]` completes a TLS handshake (used only with `--tls-verify=false`).
async fn speaks_tls(registry: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
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
