//! Verify confidential-computing evidence and turn it into one [`Claims`] shape.
//!
//! Every verifier is a pure function of (evidence, collateral, time, policy): nothing here reads
//! a clock, the network or a database. The kinds of evidence, each behind the [`Verifier`] trait:
//!
//! | kind | verifier | checked against |
//! |---|---|---|
//! | SGX DCAP quote v3, TDX quote v4/v5 | [`DcapQuote`] | the Intel SGX root CA ([`INTEL_SGX_ROOT_CA_DER`]), collateral ([`Collateral`]); the quote's unsigned PCK chain must be exactly PCK, CA, Intel root in canonical PEM |
//! | AWS Nitro attestation document | [`NitroDocument`] | the pinned AWS Nitro root ([`AWS_NITRO_ROOT_DER`]), at a given time and maximum age |
//! | Gramine RA-TLS certificate | [`RaTlsCertificate`] | the quote inside (TCG DICE extension first, then legacy), its key binding, the self-signature |
//! | simulated evidence | [`Simulated`] | a configured simulation public key, and only if the policy allows it |
//!
//! [`detect`] tells the kinds apart from their bytes; [`verify`] detects and dispatches.
//!
//! # Simulated evidence (format version 1)
//!
//! For machines without a TEE (CI, the qemu stand-in) the launcher produces evidence with
//! [`simulated::produce`] (available without the default `verify` feature, with few
//! dependencies). It is a COSE_Sign1 (RFC 9052), untagged, like a Nitro document:
//!
//! ```text
//! [ protected: bstr .cbor {1: -7},          ; ES256: ECDSA P-256 with SHA-256
//!   unprotected: {},
//!   payload: bstr .cbor {
//!     "tee": "simulated",                  ; always this text: the SIMULATED marker
//!     "version": 1,
//!     "timestamp": uint,                   ; Unix milliseconds when it was produced
//!     "measurements": {"pcrs": {uint => bstr}} / {"mrenclave": bstr .size 32,
//!                     "mrsigner": bstr .size 32, "isvprodid": uint, "isvsvn": uint},
//!     "user_data": bstr / null, "nonce": bstr / null, "public_key": bstr / null },
//!   signature: bstr .size 64 ]             ; r || s over Sig_structure1 (RFC 9052 §4.4)
//! ```
//!
//! It is verified against the simulation public key (SEC1 point or SubjectPublicKeyInfo,
//! DER or PEM) and accepted only when [`Policy::allow_simulated`] is set; its claims have
//! `tee: Tee::Simulated` and `simulated: true`, and it is never debug.
//!
//! # Binding a key and a nonce
//!
//! [`binding`] fixes how evidence binds a CSR's key and the manager's nonce (REPORTDATA =
//! SHA-256(key) || SHA-256(nonce) for quotes; `public_key` and `nonce` for Nitro and simulated
//! evidence; the certificate key and TCG `nonce` claim for RA-TLS).
//!
//! # Certificate requests
//!
//! [`csr`] parses a PKCS#10 request and checks its signature (EC P-256/P-384, RSA 2048-8192),
//! giving the key the evidence must bind and the names requested.
//!
//! # Evidence in certificates
//!
//! [`extension`] encodes verified evidence for X.509 extensions (TCG DICE for quotes, a
//! documented cloak CBOR for the rest, with build id, TEE type and a SIMULATED marker) and
//! parses it back.

pub mod binding;
pub mod cbor;
mod cose;
mod error;
pub mod simulated;
pub mod time;

#[cfg(feature = "verify")]
pub mod csr;
#[cfg(feature = "verify")]
mod detect;
#[cfg(feature = "verify")]
pub mod extension;
#[cfg(feature = "verify")]
mod nitro;
#[cfg(feature = "verify")]
mod ratls;
#[cfg(feature = "verify")]
mod sgx;
#[cfg(feature = "verify")]
mod x509;

#[cfg(all(test, feature = "verify"))]
mod fuzz_tests;

pub use error::{Error, Result};

#[cfg(feature = "verify")]
pub use detect::{detect, Evidence};
#[cfg(feature = "verify")]
pub use nitro::{NitroDocument, AWS_NITRO_ROOT_DER};
#[cfg(feature = "verify")]
pub use ratls::{RaTlsCertificate, LEGACY_RA_TLS_OID, TCG_DICE_EVIDENCE_OID};
#[cfg(feature = "verify")]
pub use sgx::{collateral_key, Collateral, CollateralKey, Dated, DcapQuote, INTEL_SGX_ROOT_CA_DER};
#[cfg(feature = "verify")]
pub use simulated::{Simulated, SimulationPublicKey};

use std::collections::BTreeMap;
use std::fmt;

/// The kinds of evidence this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvidenceKind {
    /// An Intel DCAP quote: SGX v3, TDX v4/v5.
    DcapQuote,
    /// An AWS Nitro Enclaves attestation document (COSE_Sign1).
    NitroDocument,
    /// A Gramine RA-TLS X.509 certificate carrying a quote.
    RaTlsCertificate,
    /// cloak's simulated evidence (see the crate docs).
    Simulated,
}

impl fmt::Display for EvidenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvidenceKind::DcapQuote => "DCAP quote",
            EvidenceKind::NitroDocument => "Nitro attestation document",
            EvidenceKind::RaTlsCertificate => "RA-TLS certificate",
            EvidenceKind::Simulated => "simulated evidence",
        })
    }
}

/// The TEE the evidence speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tee {
    /// Intel SGX enclave.
    Sgx,
    /// Intel TDX trust domain.
    Tdx,
    /// AWS Nitro Enclave.
    Nitro,
    /// No TEE: simulated evidence.
    Simulated,
}

impl Tee {
    /// `sgx`, `tdx`, `nitro` or `simulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Sgx => "sgx",
            Tee::Tdx => "tdx",
            Tee::Nitro => "nitro",
            Tee::Simulated => "simulated",
        }
    }

    /// The inverse of [`Tee::as_str`].
    pub fn parse(s: &str) -> Option<Tee> {
        [Tee::Sgx, Tee::Tdx, Tee::Nitro, Tee::Simulated]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SGX enclave identity from the report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxMeasurements {
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
}

/// TDX trust-domain identity from the TD report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxMeasurements {
    /// MRTD: the initial contents of the TD.
    pub mr_td: [u8; 48],
    /// RTMR0..3.
    pub rtmrs: [[u8; 48]; 4],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// MRSEAM: the TDX module.
    pub mr_seam: [u8; 48],
}

/// What the evidence measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measurements {
    /// SGX (quotes, RA-TLS, simulated SGX).
    Sgx(SgxMeasurements),
    /// TDX quotes.
    Tdx(Box<TdxMeasurements>),
    /// Platform configuration registers, index to value (Nitro, simulated Nitro).
    Pcrs(BTreeMap<u16, Vec<u8>>),
}

/// TCB status of an Intel platform, as the collateral rates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcb {
    /// `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`, `OutOfDate`, ...
    pub status: String,
    /// Intel security advisories that apply (`INTEL-SA-00615`, ...).
    pub advisory_ids: Vec<String>,
}

/// The times a verdict depends on (Unix seconds unless named otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Times {
    /// The time the evidence was checked at.
    pub checked_at: u64,
    /// The evidence's own timestamp in milliseconds (Nitro and simulated evidence).
    pub evidence_timestamp_ms: Option<u64>,
    /// The first second at which the same evidence and collateral verify.
    pub valid_from: u64,
    /// The last second at which they verify.
    pub valid_until: u64,
    /// What ends the window at `valid_until` (e.g. "TCB info nextUpdate", "leaf certificate
    /// CN=... notAfter", "maximum age").
    pub valid_until_item: String,
}

/// What verified evidence says, the same shape for every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The TEE.
    pub tee: Tee,
    /// The evidence kind that produced these claims.
    pub kind: EvidenceKind,
    /// True for simulated evidence (and only for it).
    pub simulated: bool,
    /// What was measured.
    pub measurements: Measurements,
    /// A debug enclave / TD / debug-mode Nitro enclave.
    pub debug: bool,
    /// TCB status and advisories (DCAP only).
    pub tcb: Option<Tcb>,
    /// REPORTDATA (SGX/TDX, 64 bytes).
    pub report_data: Option<Vec<u8>>,
    /// Nitro / simulated `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// Nitro / simulated / RA-TLS (TCG claims) nonce.
    pub nonce: Option<Vec<u8>>,
    /// The public key the evidence binds: Nitro / simulated `public_key`, or the RA-TLS
    /// certificate's SubjectPublicKeyInfo (DER).
    pub public_key: Option<Vec<u8>>,
    /// Nitro `module_id`.
    pub module_id: Option<String>,
    /// The times the verdict depends on.
    pub times: Times,
}

/// What the caller accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Accept debug enclaves, debug TDs and debug-mode Nitro documents (PCR0-2 all zero).
    pub allow_debug: bool,
    /// TCB statuses accepted for DCAP evidence; `None` accepts every status the quote
    /// verifier does not reject itself (it always rejects `Revoked`): report, do not judge.
    pub accepted_tcb_statuses: Option<Vec<String>>,
    /// Accept simulated evidence (never in production).
    pub allow_simulated: bool,
    /// Maximum age, in seconds, of Nitro and simulated evidence at the verification time.
    pub max_age_secs: u64,
}

/// TCB statuses accepted by default (like MarbleRun's default `AcceptedTCBStatuses`).
pub const DEFAULT_TCB_STATUSES: [&str; 2] = ["UpToDate", "SWHardeningNeeded"];

/// Default maximum age of Nitro and simulated evidence: 5 minutes.
pub const DEFAULT_MAX_AGE_SECS: u64 = 300;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_debug: false,
            accepted_tcb_statuses: Some(DEFAULT_TCB_STATUSES.map(String::from).to_vec()),
            allow_simulated: false,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        }
    }
}

/// When to check the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// At this Unix time (seconds): the manager's clock.
    Time(u64),
    /// At the evidence's own timestamp (Nitro and simulated only; quotes have none).
    EvidenceTimestamp,
}

/// Everything a verifier takes besides the evidence bytes.
#[cfg(feature = "verify")]
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The verification time.
    pub at: At,
    /// DCAP collateral (for quotes and RA-TLS certificates).
    pub collateral: Option<&'a Collateral>,
    /// What is accepted.
    pub policy: &'a Policy,
    /// The key simulated evidence must be signed with.
    pub simulation_key: Option<&'a SimulationPublicKey>,
}

/// One implementation per evidence kind; all return the same [`Claims`].
#[cfg(feature = "verify")]
pub trait Verifier {
    /// The kind this verifier reads.
    fn kind(&self) -> EvidenceKind;
    /// Verify `evidence` (raw bytes: a binary quote, a raw COSE document, a DER certificate).
    fn verify(&self, evidence: &[u8], input: &Input<'_>) -> Result<Claims>;
}

/// The verifier for a kind.
#[cfg(feature = "verify")]
pub fn verifier(kind: EvidenceKind) -> &'static dyn Verifier {
    match kind {
        EvidenceKind::DcapQuote => &DcapQuote,
        EvidenceKind::NitroDocument => &NitroDocument,
        EvidenceKind::RaTlsCertificate => &RaTlsCertificate,
        EvidenceKind::Simulated => &Simulated,
    }
}

/// Detect the kind of `bytes` (see [`detect`]) and verify them with its verifier.
#[cfg(feature = "verify")]
pub fn verify(bytes: &[u8], input: &Input<'_>) -> Result<Claims> {
    let evidence = detect(bytes)?;
    verifier(evidence.kind).verify(&evidence.bytes, input)
}

/// Check the TCB status against the policy (shared by quotes and RA-TLS certificates).
#[cfg(feature = "verify")]
pub(crate) fn check_tcb(tcb: &Tcb, policy: &Policy) -> Result<()> {
    if tcb.status == "Revoked" {
        return Err(Error::Revoked);
    }
    if let Some(accepted) = &policy.accepted_tcb_statuses {
        if !accepted.iter().any(|s| s == &tcb.status) {
            return Err(Error::TcbStatus {
                status: tcb.status.clone(),
                advisory_ids: tcb.advisory_ids.clone(),
                accepted: accepted.clone(),
            });
        }
    }
    Ok(())
}
