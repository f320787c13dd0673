//! The manager's one error type, mapped once to an HTTP status and a stable code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a manager operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing, malformed or out of range (names the field).
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// The body is not JSON, or not the JSON this route takes.
    #[error("{0}")]
    InvalidBody(String),
    /// The body exceeds the limit.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such object in the caller's account.
    #[error("{kind} {id} does not exist in this account")]
    NotFound { kind: &'static str, id: String },
    /// The change conflicts with the current state (duplicate, already decided, …).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; retry after the given seconds.
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u64 },
    /// A conversion was queued, but too many calls already wait for theirs: the client polls
    /// the job instead (`Location` names it).
    #[error("{detail}")]
    TooManyWaiters {
        job_id: String,
        detail: String,
        retry_after: u64,
    },
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored secret cannot be decrypted with the master key (wrong key, or tampered row).
    #[error("cannot decrypt {what}: wrong master key, or the stored value was altered")]
    Decrypt { what: String },
    /// Reading or writing a file of the service (data dir, keys, TLS material).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The service is misconfigured (names the setting and the fix).
    #[error("{0}")]
    Config(String),
    /// Attestation refused a certificate: a stable reason code and what was expected and found.
    #[error("{code}: {detail}")]
    Refused { code: &'static str, detail: String },
    /// A conversion job failed (the stage and the pipeline's message, never a secret).
    #[error("conversion job {job_id} failed in stage {stage}: {message}")]
    ConversionFailed {
        job_id: String,
        stage: String,
        message: String,
    },
    /// A broken invariant: logged in full, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidField { .. } | Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::RateLimited { .. } | Error::TooManyWaiters { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::ConversionFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Refused { code, .. } => match *code {
                "malformed_evidence"
                | "malformed_nonce"
                | "bad_csr"
                | "malformed_collateral"
                | "unknown_evidence_kind"
                | "bad_key" => StatusCode::BAD_REQUEST,
                "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                "collateral_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                "client_certificate_required" => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            },
            Error::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_)
            | Error::Decrypt { .. }
            | Error::Io { .. }
            | Error::Config(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the error body's `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidField { .. } => "invalid_field",
            Error::InvalidBody(_) => "invalid_body",
            Error::TooLarge { .. } => "body_too_large",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::TooManyWaiters { .. } => "too_many_waiters",
            Error::ConversionFailed { .. } => "conversion_failed",
            Error::Refused { code, .. } => code,
            Error::Database(sqlx::Error::PoolTimedOut) => "unavailable",
            Error::Database(_) => "database_error",
            Error::Decrypt { .. } | Error::Io { .. } | Error::Config(_) | Error::Internal(_) => {
                "internal_error"
            }
        }
    }

    /// Whether the database refused a change because of a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // A refusal's detail is written for the client (what failed, expected and actual),
        // also when a dependency is down (collateral_unavailable): only other 5xx hide theirs.
        let detail = if status.is_server_error() && !matches!(self, Error::Refused { .. }) {
            // The cause goes to the log (with the request id), never to the client.
            tracing::error!(error = %self, code = self.code(), "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the manager is overloaded or its database is unreachable; retry later".into()
                }
                _ => "the manager failed to process the request; the cause is in its log".into(),
            }
        } else {
            self.to_string()
        };
        let body = cloak_api::ErrorBody {
            kind: self.code().to_string(),
            detail,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            Error::RateLimited { retry_after, .. } => {
                if let Ok(v) = retry_after.to_string().parse() {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
            }
            Error::TooManyWaiters {
                job_id,
                retry_after,
                ..
            } => {
                if let Ok(v) = retry_after.to_string().parse() {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                if let Ok(v) = format!("/v1/jobs/{job_id}").parse() {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_and_code() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::field("isvsvn", "too large"), 400, "invalid_field"),
            (Error::InvalidBody("x".into()), 400, "invalid_body"),
            (Error::TooLarge { limit: 1 }, 413, "body_too_large"),
            (Error::Unauthenticated("x".into()), 401, "unauthenticated"),
            (Error::Forbidden("x".into()), 403, "forbidden"),
            (
                Error::NotFound {
                    kind: "build",
                    id: "x".into(),
                },
                404,
                "not_found",
            ),
            (Error::Conflict("x".into()), 409, "conflict"),
            (
                Error::ConversionFailed {
                    job_id: "j".into(),
                    stage: "package".into(),
                    message: "x".into(),
                },
                422,
                "conversion_failed",
            ),
            (
                Error::RateLimited {
                    detail: "x".into(),
                    retry_after: 3,
                },
                429,
                "rate_limited",
            ),
            (
                Error::TooManyWaiters {
                    job_id: "j".into(),
                    detail: "x".into(),
                    retry_after: 5,
                },
                429,
                "too_many_waiters",
            ),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                503,
                "unavailable",
            ),
            (
                Error::Database(sqlx::Error::RowNotFound),
                500,
                "database_error",
            ),
            (Error::Decrypt { what: "x".into() }, 500, "internal_error"),
            (Error::Config("x".into()), 500, "internal_error"),
            (Error::Internal("x".into()), 500, "internal_error"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn a_refused_waiter_names_its_job_in_location_and_says_when_to_retry() {
        let resp = Error::TooManyWaiters {
            job_id: "0b6f".into(),
            detail: "x".into(),
            retry_after: 5,
        }
        .into_response();
        assert_eq!(resp.headers()[http::header::LOCATION], "/v1/jobs/0b6f");
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "5");
    }

    #[tokio::test]
    async fn server_errors_hide_their_cause() {
        let resp = Error::Internal("secret path /x".into()).into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret path"), "{text}");
        assert!(text.contains("internal_error"), "{text}");
    }
}
