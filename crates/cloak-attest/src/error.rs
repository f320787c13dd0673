//! The one error type of this crate; each variant has a stable reason code ([`Error::code`]).

use crate::time::rfc3339;
use crate::EvidenceKind;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why evidence does not verify. Messages name the input, the expected and the actual value,
/// and what to do; they never contain private keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are none of the evidence kinds this crate knows.
    #[error("{0}: not evidence this verifier knows (expected an SGX/TDX DCAP quote, raw or hex; an AWS Nitro attestation document or simulated evidence, COSE_Sign1 raw or base64; or a PEM RA-TLS certificate)")]
    UnknownKind(String),
    /// The evidence cannot be parsed.
    #[error("malformed {kind}: {detail}")]
    Malformed {
        /// Which kind of evidence was being read.
        kind: EvidenceKind,
        /// What was wrong.
        detail: String,
    },
    /// The collateral (DCAP TCB info, QE identity, CRLs) cannot be read.
    #[error("malformed collateral: {detail}; pass QuoteCollateralV3 JSON as fetched from a PCCS or Intel PCS")]
    BadCollateral {
        /// What was wrong.
        detail: String,
    },
    /// A DCAP quote (or a certificate carrying one) came without collateral.
    #[error("{kind} needs DCAP collateral (QuoteCollateralV3 JSON) to verify; pass it (cloak attest verify --collateral FILE)")]
    CollateralRequired {
        /// The evidence kind.
        kind: EvidenceKind,
    },
    /// Quotes carry no time of their own.
    #[error("{kind} carries no timestamp: give the verification time explicitly")]
    TimeRequired {
        /// The evidence kind.
        kind: EvidenceKind,
    },
    /// A signature over the evidence, a certificate, or the collateral does not verify.
    #[error("bad signature on {item}: {detail}")]
    BadSignature {
        /// What was signed (quote, QE report, TCB info, COSE payload, certificate subject ...).
        item: String,
        /// Details from the verifier.
        detail: String,
    },
    /// A certificate chain does not lead to the pinned root.
    #[error("certificate chain of {kind} does not lead to the pinned root: {detail}")]
    UntrustedChain {
        /// The evidence kind.
        kind: EvidenceKind,
        /// Which link failed.
        detail: String,
    },
    /// A collateral item is past its nextUpdate / notAfter at the verification time.
    #[error("collateral expired: {item} was valid until {} but the verification time is {}; refresh the collateral from the PCCS", rfc3339(*not_after), rfc3339(*at))]
    CollateralExpired {
        /// The item (TCB info, QE identity, root CA CRL, PCK CRL, a named certificate).
        item: String,
        /// Its last valid second.
        not_after: u64,
        /// The verification time.
        at: u64,
    },
    /// A collateral item is not valid yet at the verification time.
    #[error("collateral not yet valid: {item} is valid from {} but the verification time is {}", rfc3339(*not_before), rfc3339(*at))]
    CollateralNotYetValid {
        /// The item.
        item: String,
        /// Its first valid second.
        not_before: u64,
        /// The verification time.
        at: u64,
    },
    /// A certificate of the evidence is expired at the verification time.
    #[error("certificate expired: {item} was valid until {} but the verification time is {}", rfc3339(*not_after), rfc3339(*at))]
    CertificateExpired {
        /// Which certificate (subject).
        item: String,
        /// Its notAfter.
        not_after: u64,
        /// The verification time.
        at: u64,
    },
    /// A certificate of the evidence is not valid yet at the verification time.
    #[error("certificate not yet valid: {item} is valid from {} but the verification time is {}", rfc3339(*not_before), rfc3339(*at))]
    CertificateNotYetValid {
        /// Which certificate (subject).
        item: String,
        /// Its notBefore.
        not_before: u64,
        /// The verification time.
        at: u64,
    },
    /// The evidence's own timestamp is older than the maximum age the policy allows.
    #[error("{kind} too old: made at {} ({age} s before the verification time {}), the policy allows at most {max_age} s; request fresh evidence", rfc3339(*timestamp), rfc3339(*at))]
    TooOld {
        /// The evidence kind.
        kind: EvidenceKind,
        /// The evidence's timestamp (seconds).
        timestamp: u64,
        /// The verification time.
        at: u64,
        /// `at - timestamp`.
        age: u64,
        /// The policy's maximum.
        max_age: u64,
    },
    /// The evidence's own timestamp is after the verification time.
    #[error("{kind} made at {}, after the verification time {}", rfc3339(*timestamp), rfc3339(*at))]
    FromTheFuture {
        /// The evidence kind.
        kind: EvidenceKind,
        /// The evidence's timestamp (seconds).
        timestamp: u64,
        /// The verification time.
        at: u64,
    },
    /// A debug enclave or debug-mode Nitro document, and the policy does not allow debug.
    #[error("{kind} is from a debug {what} (expected production; actual debug): its memory is readable by the host; allow debug explicitly (--allow-debug) only for development")]
    DebugEnclave {
        /// The evidence kind.
        kind: EvidenceKind,
        /// "enclave", "TD" or "enclave (PCR0-2 all zero)".
        what: &'static str,
    },
    /// The TCB status is not among those the policy accepts.
    #[error("TCB status {status} is not accepted (accepted: {}); advisories: {}", accepted.join(", "), if advisory_ids.is_empty() { "none".to_string() } else { advisory_ids.join(", ") })]
    TcbStatus {
        /// The platform's TCB status.
        status: String,
        /// Intel security advisories that apply.
        advisory_ids: Vec<String>,
        /// What the policy accepts.
        accepted: Vec<String>,
    },
    /// The platform's TCB is revoked (never accepted).
    #[error("TCB status Revoked: the platform's attestation keys are revoked; this evidence is never accepted")]
    Revoked,
    /// Simulated evidence, and the policy does not allow it.
    #[error("simulated evidence is not accepted: it proves nothing about a TEE; allow it explicitly (--allow-simulated-attestation) only for development and CI")]
    SimulationNotAllowed,
    /// Simulated evidence is allowed but no simulation public key is configured.
    #[error("simulated evidence needs the simulation public key to verify against; configure it")]
    SimulationKeyMissing,
    /// A key (simulation key) cannot be used.
    #[error("bad {what}: {detail}")]
    BadKey {
        /// Which key.
        what: &'static str,
        /// What was wrong (never key material).
        detail: String,
    },
    /// The key of an RA-TLS certificate is not the one its quote binds.
    #[error("key not bound: {what}: expected {expected}, actual {actual}")]
    KeyNotBound {
        /// Which binding.
        what: &'static str,
        /// Expected value (hex).
        expected: String,
        /// Actual value (hex).
        actual: String,
    },
    /// The quote verifier refused the quote for a reason not covered above.
    #[error("quote rejected: {0}")]
    QuoteRejected(String),
    /// A certificate request cannot be used.
    #[error("bad certificate request: {0}")]
    BadCsr(String),
    /// Embedded evidence in a certificate extension cannot be read.
    #[error("malformed cloak evidence extension: {0}")]
    BadExtension(String),
}

impl Error {
    /// The stable reason code (snake_case), for APIs, audit records and exit messages.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownKind(_) => "unknown_evidence_kind",
            Error::Malformed { .. } => "malformed_evidence",
            Error::BadCollateral { .. } => "malformed_collateral",
            Error::CollateralRequired { .. } => "collateral_required",
            Error::TimeRequired { .. } => "time_required",
            Error::BadSignature { .. } => "bad_signature",
            Error::UntrustedChain { .. } => "untrusted_chain",
            Error::CollateralExpired { .. } => "collateral_expired",
            Error::CollateralNotYetValid { .. } => "collateral_not_yet_valid",
            Error::CertificateExpired { .. } => "certificate_expired",
            Error::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Error::TooOld { .. } => "evidence_too_old",
            Error::FromTheFuture { .. } => "evidence_from_the_future",
            Error::DebugEnclave { .. } => "debug_enclave",
            Error::TcbStatus { .. } => "tcb_status",
            Error::Revoked => "tcb_revoked",
            Error::SimulationNotAllowed => "simulation_not_allowed",
            Error::SimulationKeyMissing => "simulation_key_missing",
            Error::BadKey { .. } => "bad_key",
            Error::KeyNotBound { .. } => "key_not_bound",
            Error::QuoteRejected(_) => "quote_rejected",
            Error::BadExtension(_) => "malformed_extension",
            Error::BadCsr(_) => "bad_csr",
        }
    }

    #[cfg_attr(not(feature = "verify"), allow(dead_code))]
    pub(crate) fn malformed(kind: EvidenceKind, detail: impl Into<String>) -> Self {
        Error::Malformed {
            kind,
            detail: detail.into(),
        }
    }
}
