//! A small blocking client of the manager's API, used by the CLI verbs and the tests.

use std::time::Duration;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{AuthResponse, ErrorBody};

/// What went wrong talking to the manager.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager answered with an error body.
    #[error("{url}: {status} {kind}: {detail}")]
    Api {
        url: String,
        status: u16,
        kind: String,
        detail: String,
    },
    /// The manager could not be reached, or TLS failed.
    #[error(
        "cannot reach the manager at {url} (is it running, and is --cacert its CA?): {source}"
    )]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API promises.
    #[error("{url}: unexpected answer ({status}): {detail}")]
    Decode {
        url: String,
        status: u16,
        detail: String,
    },
    /// The CA certificate given for the manager cannot be used.
    #[error("the manager CA certificate is not usable: {0}")]
    Ca(String),
}

impl ClientError {
    /// The HTTP status of an API error, if the manager answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to one manager, optionally with a bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl Client {
    /// `base` is the manager's URL (`https://host:port`); `ca_pem` pins its CA (else the system roots).
    pub fn new(base: &str, ca_pem: Option<&[u8]>) -> Result<Client, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .connect_timeout(Duration::from_secs(10))
            // The manager closes a keep-alive connection idle for 10 s (its header-read timeout);
            // a client reusing one at that instant gets a reset instead of an answer. Idle
            // connections are dropped on this side first.
            .pool_idle_timeout(Duration::from_secs(5));
        if let Some(pem) = ca_pem {
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| ClientError::Ca(e.to_string()))?;
            builder = builder.tls_certs_only([cert]);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Ca(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        })
    }

    /// Use this bearer token (a session token or an API key) from now on.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/sys/auth` with HTTP Basic credentials; keeps the token.
    pub fn login(&mut self, user: &str, password: &str) -> Result<AuthResponse, ClientError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let url = format!("{}/v1/sys/auth", self.base);
        let resp = self
            .http
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .send()
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let auth: AuthResponse = decode(&url, resp)?;
        self.token = Some(auth.access_token.clone());
        Ok(auth)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(reqwest::Method::GET, path, None::<&()>)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(reqwest::Method::PATCH, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.send(reqwest::Method::DELETE, path, None::<&()>)?;
        Ok(())
    }

    /// A POST without a body (`/v1/sys/session/terminate`).
    pub fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(reqwest::Method::POST, path, None::<&()>)
    }

    /// A GET whose answer is not JSON (`/v1/audit/export`'s JSON lines), as text.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.get(&url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            return decode::<serde_json::Value>(&url, resp).map(|_| String::new());
        }
        resp.text()
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// Queues a conversion at `path` (one of the conversion endpoints) with
    /// `Prefer: respond-async`, and an `Idempotency-Key` when given; answers the job.
    pub fn submit_conversion<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: Option<&str>,
    ) -> Result<crate::Job, ClientError> {
        let url = format!("{}{}", self.base, path);
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: url.clone(),
            status: 0,
            detail: format!("cannot encode the request: {e}"),
        })?;
        let mut req = self
            .http
            .post(&url)
            .header("Prefer", "respond-async")
            .header("content-type", "application/json")
            .body(bytes);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        decode(&url, resp)
    }

    /// Any request; the answer as JSON (`null` for an empty body).
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
                url: url.clone(),
                status: 0,
                detail: format!("cannot encode the request: {e}"),
            })?;
            req = req.header("content-type", "application/json").body(bytes);
        }
        let resp = req.send().map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        decode(&url, resp)
    }
}

fn decode<T: DeserializeOwned>(
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<T, ClientError> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().map_err(|source| ClientError::Transport {
        url: url.to_string(),
        source,
    })?;
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Api {
                url: url.to_string(),
                status,
                kind: e.kind,
                detail: e.detail,
            },
            Err(_) => ClientError::Decode {
                url: url.to_string(),
                status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            },
        });
    }
    let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        status,
        detail: e.to_string(),
    })
}
