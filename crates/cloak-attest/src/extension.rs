//! Verified evidence in X.509 extensions, so a relying party can read (and re-verify) what the
//! manager saw. Pure byte functions: the manager's CA puts the [`CertExtension`]s into the
//! certificates it issues (non-critical), [`decode`] reads them back.
//!
//! - Quotes (DCAP quote, RA-TLS certificate): TCG DICE evidence, OID [`TCG_DICE_EVIDENCE_OID`],
//!   value CBOR `60000([bstr quote, bstr claims])` as Gramine writes it; `claims` are the RA-TLS
//!   certificate's TCG claims, or `{}` (h'a0') for a bare quote.
//! - Every kind: the cloak evidence extension, OID [`CLOAK_EVIDENCE_OID`], value a CBOR map
//!   (version 1):
//!
//! ```text
//! { "version": 1, "build_id": tstr, "tee": "sgx" / "tdx" / "nitro" / "simulated",
//!   "simulated": bool,                      ; the SIMULATED marker, true only for simulated evidence
//!   "kind": "dcap-quote" / "nitro-document" / "ra-tls-certificate" / "simulated",
//!   "debug": bool, "tcb_status": tstr / null, "advisory_ids": [* tstr],
//!   "sgx": {"mrenclave": bstr, "mrsigner": bstr, "isvprodid": uint, "isvsvn": uint} /
//!   "tdx": {"mr_td", "rtmr0".."rtmr3", "mr_config_id", "mr_owner", "mr_owner_config", "mr_seam": bstr} /
//!   "pcrs": {uint => bstr},
//!   "report_data", "user_data", "nonce", "public_key": bstr / null, "module_id": tstr / null,
//!   "checked_at": uint, "evidence_timestamp_ms": uint / null, "valid_from": uint,
//!   "valid_until": uint, "valid_until_item": tstr,
//!   "evidence": bstr / null }               ; the Nitro or simulated document itself
//! ```

use crate::cbor::{self, Value};
use crate::ratls::{self, TAG_INTEL_QUOTE};
use crate::x509::Cert;
use crate::{
    Claims, Error, EvidenceKind, Measurements, Result, SgxMeasurements, Tcb, TdxMeasurements, Tee,
    Times,
};
use std::collections::BTreeMap;

pub use crate::ratls::TCG_DICE_EVIDENCE_OID;

/// The cloak evidence extension. PROVISIONAL: cloak has no IANA Private Enterprise Number yet;
/// this arc is a placeholder to replace (here, in one place) once one is assigned.
pub const CLOAK_EVIDENCE_OID: &str = "1.3.6.1.4.1.99999.13.1";

/// [`CLOAK_EVIDENCE_OID`] as arcs (for `rcgen::CustomExtension::from_oid_content`).
pub const CLOAK_EVIDENCE_OID_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 99999, 13, 1];

/// [`TCG_DICE_EVIDENCE_OID`] as arcs.
pub const TCG_DICE_EVIDENCE_OID_ARCS: &[u64] = &[2, 23, 133, 5, 4, 9];

/// Version of the cloak extension's CBOR map.
pub const VERSION: u64 = 1;

/// One extension to add to a certificate: non-critical, `value` is the extnValue contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExtension {
    /// Dotted OID.
    pub oid: &'static str,
    /// The same OID as arcs.
    pub oid_arcs: &'static [u64],
    /// The bytes inside the extnValue OCTET STRING.
    pub value: Vec<u8>,
}

/// What [`decode`] reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// The build the certificate was issued to.
    pub build_id: String,
    /// The claims the manager verified.
    pub claims: Claims,
    /// The Nitro or simulated document (for offline re-verification).
    pub evidence: Option<Vec<u8>>,
    /// The quote and its TCG claims, from the TCG DICE extension.
    pub quote: Option<(Vec<u8>, Vec<u8>)>,
}

fn kind_name(k: EvidenceKind) -> &'static str {
    match k {
        EvidenceKind::DcapQuote => "dcap-quote",
        EvidenceKind::NitroDocument => "nitro-document",
        EvidenceKind::RaTlsCertificate => "ra-tls-certificate",
        EvidenceKind::Simulated => "simulated",
    }
}

/// The extensions for verified `claims` of `evidence` (raw bytes, as verified), issued to
/// `build_id`.
pub fn encode(claims: &Claims, evidence: &[u8], build_id: &str) -> Result<Vec<CertExtension>> {
    let mut out = Vec::new();
    let embedded = match claims.kind {
        EvidenceKind::DcapQuote => {
            out.push(tcg(evidence.to_vec(), Value::Map(Vec::new()).encode()));
            None
        }
        EvidenceKind::RaTlsCertificate => {
            let cert = Cert::parse(evidence).map_err(Error::BadExtension)?;
            let ext = ratls::extract(&cert, None)?;
            let claims_bytes = ext
                .tcg_claims
                .unwrap_or_else(|| Value::Map(Vec::new()).encode());
            out.push(tcg(ext.quote, claims_bytes));
            None
        }
        EvidenceKind::NitroDocument | EvidenceKind::Simulated => Some(evidence.to_vec()),
    };
    out.push(CertExtension {
        oid: CLOAK_EVIDENCE_OID,
        oid_arcs: CLOAK_EVIDENCE_OID_ARCS,
        value: encode_claims(claims, build_id, embedded).encode(),
    });
    Ok(out)
}

fn tcg(quote: Vec<u8>, claims: Vec<u8>) -> CertExtension {
    CertExtension {
        oid: TCG_DICE_EVIDENCE_OID,
        oid_arcs: TCG_DICE_EVIDENCE_OID_ARCS,
        value: Value::Tag(
            TAG_INTEL_QUOTE,
            Box::new(Value::Array(vec![
                Value::Bytes(quote),
                Value::Bytes(claims),
            ])),
        )
        .encode(),
    }
}

fn encode_claims(c: &Claims, build_id: &str, evidence: Option<Vec<u8>>) -> Value {
    let t = |s: &str| Value::Text(s.into());
    let b = |v: &[u8]| Value::Bytes(v.to_vec());
    let ob = |v: &Option<Vec<u8>>| v.as_deref().map_or(Value::Null, b);
    let mut m = vec![
        (t("version"), Value::Unsigned(VERSION)),
        (t("build_id"), t(build_id)),
        (t("tee"), t(c.tee.as_str())),
        (t("simulated"), Value::Bool(c.simulated)),
        (t("kind"), t(kind_name(c.kind))),
        (t("debug"), Value::Bool(c.debug)),
        (
            t("tcb_status"),
            c.tcb.as_ref().map_or(Value::Null, |x| t(&x.status)),
        ),
        (
            t("advisory_ids"),
            Value::Array(
                c.tcb
                    .iter()
                    .flat_map(|x| x.advisory_ids.iter().map(|a| t(a)))
                    .collect(),
            ),
        ),
    ];
    m.push(match &c.measurements {
        Measurements::Sgx(s) => (
            t("sgx"),
            Value::Map(vec![
                (t("mrenclave"), b(&s.mrenclave)),
                (t("mrsigner"), b(&s.mrsigner)),
                (t("isvprodid"), Value::Unsigned(s.isvprodid.into())),
                (t("isvsvn"), Value::Unsigned(s.isvsvn.into())),
            ]),
        ),
        Measurements::Tdx(x) => (
            t("tdx"),
            Value::Map(
                tdx_fields(x)
                    .into_iter()
                    .map(|(k, v)| (t(k), b(v)))
                    .collect(),
            ),
        ),
        Measurements::Pcrs(p) => (
            t("pcrs"),
            Value::Map(
                p.iter()
                    .map(|(i, v)| (Value::Unsigned((*i).into()), b(v)))
                    .collect(),
            ),
        ),
    });
    m.extend([
        (t("report_data"), ob(&c.report_data)),
        (t("user_data"), ob(&c.user_data)),
        (t("nonce"), ob(&c.nonce)),
        (t("public_key"), ob(&c.public_key)),
        (
            t("module_id"),
            c.module_id.as_deref().map_or(Value::Null, t),
        ),
        (t("checked_at"), Value::Unsigned(c.times.checked_at)),
        (
            t("evidence_timestamp_ms"),
            c.times
                .evidence_timestamp_ms
                .map_or(Value::Null, Value::Unsigned),
        ),
        (t("valid_from"), Value::Unsigned(c.times.valid_from)),
        (t("valid_until"), Value::Unsigned(c.times.valid_until)),
        (t("valid_until_item"), t(&c.times.valid_until_item)),
        (t("evidence"), evidence.map_or(Value::Null, Value::Bytes)),
    ]);
    Value::Map(m)
}

fn tdx_fields(x: &TdxMeasurements) -> [(&'static str, &[u8]); 9] {
    [
        ("mr_td", &x.mr_td),
        ("rtmr0", &x.rtmrs[0]),
        ("rtmr1", &x.rtmrs[1]),
        ("rtmr2", &x.rtmrs[2]),
        ("rtmr3", &x.rtmrs[3]),
        ("mr_config_id", &x.mr_config_id),
        ("mr_owner", &x.mr_owner),
        ("mr_owner_config", &x.mr_owner_config),
        ("mr_seam", &x.mr_seam),
    ]
}

/// Read the claims back from a certificate's extensions, given as (dotted OID, extnValue
/// contents). The cloak extension is required; for quotes the TCG extension must be present
/// and its quote must carry the same measurements and REPORTDATA as the claims.
pub fn decode(extensions: &[(String, Vec<u8>)]) -> Result<Embedded> {
    let find = |oid: &str| {
        extensions
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, v)| v.as_slice())
    };
    let cloak = find(CLOAK_EVIDENCE_OID).ok_or_else(|| {
        Error::BadExtension(format!(
            "no cloak evidence extension ({CLOAK_EVIDENCE_OID})"
        ))
    })?;
    let (build_id, claims, evidence) = decode_claims(cloak)?;
    let quote = match find(TCG_DICE_EVIDENCE_OID) {
        Some(v) => Some(
            ratls::decode_tcg(v)
                .map_err(|e| Error::BadExtension(format!("TCG DICE evidence: {e}")))?,
        ),
        None => None,
    };
    match (claims.kind, &quote) {
        (EvidenceKind::DcapQuote | EvidenceKind::RaTlsCertificate, None) => {
            return Err(Error::BadExtension(
                "quote claims without the TCG DICE evidence extension".into(),
            ))
        }
        (EvidenceKind::DcapQuote | EvidenceKind::RaTlsCertificate, Some((q, _))) => {
            check_quote_matches(q, &claims)?
        }
        (_, Some(_)) => {
            return Err(Error::BadExtension(
                "a TCG DICE quote next to non-quote claims".into(),
            ))
        }
        _ => {}
    }
    Ok(Embedded {
        build_id,
        claims,
        evidence,
        quote,
    })
}

fn check_quote_matches(quote: &[u8], claims: &Claims) -> Result<()> {
    let (q, _) = crate::sgx::parse_quote(quote, claims.kind)?;
    let body_matches = match (&q.report, &claims.measurements) {
        (dcap_qvl::quote::Report::SgxEnclave(r), Measurements::Sgx(s)) => {
            r.mr_enclave == s.mrenclave
                && r.mr_signer == s.mrsigner
                && r.isv_prod_id == s.isvprodid
                && r.isv_svn == s.isvsvn
        }
        (r, Measurements::Tdx(x)) => r.as_td10().is_some_and(|td| td.mr_td == x.mr_td),
        _ => false,
    };
    let rd: &[u8] = match &q.report {
        dcap_qvl::quote::Report::SgxEnclave(r) => &r.report_data,
        r => r
            .as_td10()
            .map(|td| &td.report_data[..])
            .unwrap_or_default(),
    };
    if !body_matches || claims.report_data.as_deref() != Some(rd) {
        return Err(Error::BadExtension(
            "the quote in the TCG DICE extension does not match the cloak claims".into(),
        ));
    }
    Ok(())
}

fn decode_claims(bytes: &[u8]) -> Result<(String, Claims, Option<Vec<u8>>)> {
    let bad = |d: &str| Error::BadExtension(d.to_string());
    let v = cbor::decode(bytes).map_err(|e| Error::BadExtension(e.to_string()))?;
    let text = |k: &str| match v.get(k) {
        Some(Value::Text(s)) => Ok(s.clone()),
        _ => Err(bad(&format!("{k} is not text"))),
    };
    let uint = |k: &str| match v.get(k) {
        Some(Value::Unsigned(n)) => Ok(*n),
        _ => Err(bad(&format!("{k} is not an unsigned integer"))),
    };
    let boolean = |k: &str| match v.get(k) {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(bad(&format!("{k} is not a bool"))),
    };
    let obytes = |k: &str| match v.get(k) {
        Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.clone())),
        _ => Err(bad(&format!("{k} is neither bytes nor null"))),
    };
    if uint("version")? != VERSION {
        return Err(bad("unknown version"));
    }
    let tee = Tee::parse(&text("tee")?).ok_or_else(|| bad("unknown tee"))?;
    let kind_text = text("kind")?;
    let kind = [
        EvidenceKind::DcapQuote,
        EvidenceKind::NitroDocument,
        EvidenceKind::RaTlsCertificate,
        EvidenceKind::Simulated,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == kind_text)
    .ok_or_else(|| bad("unknown kind"))?;
    let simulated = boolean("simulated")?;
    if simulated != (tee == Tee::Simulated) || simulated != (kind == EvidenceKind::Simulated) {
        return Err(bad("the SIMULATED marker disagrees with tee and kind"));
    }
    let tcb = match v.get("tcb_status") {
        Some(Value::Null) => None,
        Some(Value::Text(s)) => {
            let Some(Value::Array(ids)) = v.get("advisory_ids") else {
                return Err(bad("advisory_ids is not an array"));
            };
            let advisory_ids = ids
                .iter()
                .map(|i| match i {
                    Value::Text(s) => Ok(s.clone()),
                    _ => Err(bad("an advisory id is not text")),
                })
                .collect::<Result<_>>()?;
            Some(Tcb {
                status: s.clone(),
                advisory_ids,
            })
        }
        _ => return Err(bad("tcb_status is neither text nor null")),
    };
    let fixed = |m: &Value, k: &str| -> Result<Vec<u8>> {
        match m.get(k) {
            Some(Value::Bytes(b)) => Ok(b.clone()),
            _ => Err(bad(&format!("{k} missing"))),
        }
    };
    let measurements = if let Some(s) = v.get("sgx") {
        let small = |k: &str| match s.get(k) {
            Some(Value::Unsigned(n)) => {
                u16::try_from(*n).map_err(|_| bad(&format!("{k} too large")))
            }
            _ => Err(bad(&format!("{k} missing"))),
        };
        Measurements::Sgx(SgxMeasurements {
            mrenclave: fixed(s, "mrenclave")?
                .try_into()
                .map_err(|_| bad("mrenclave is not 32 bytes"))?,
            mrsigner: fixed(s, "mrsigner")?
                .try_into()
                .map_err(|_| bad("mrsigner is not 32 bytes"))?,
            isvprodid: small("isvprodid")?,
            isvsvn: small("isvsvn")?,
        })
    } else if let Some(x) = v.get("tdx") {
        let f = |k: &str| -> Result<[u8; 48]> {
            fixed(x, k)?
                .try_into()
                .map_err(|_| bad(&format!("{k} is not 48 bytes")))
        };
        Measurements::Tdx(Box::new(TdxMeasurements {
            mr_td: f("mr_td")?,
            rtmrs: [f("rtmr0")?, f("rtmr1")?, f("rtmr2")?, f("rtmr3")?],
            mr_config_id: f("mr_config_id")?,
            mr_owner: f("mr_owner")?,
            mr_owner_config: f("mr_owner_config")?,
            mr_seam: f("mr_seam")?,
        }))
    } else if let Some(Value::Map(p)) = v.get("pcrs") {
        let mut pcrs = BTreeMap::new();
        for (k, val) in p {
            let (Value::Unsigned(i), Value::Bytes(b)) = (k, val) else {
                return Err(bad("a PCR is not uint => bstr"));
            };
            let i = u16::try_from(*i).map_err(|_| bad("PCR index too large"))?;
            pcrs.insert(i, b.clone());
        }
        Measurements::Pcrs(pcrs)
    } else {
        return Err(bad("no measurements (sgx, tdx or pcrs)"));
    };
    let claims = Claims {
        tee,
        kind,
        simulated,
        measurements,
        debug: boolean("debug")?,
        tcb,
        report_data: obytes("report_data")?,
        user_data: obytes("user_data")?,
        nonce: obytes("nonce")?,
        public_key: obytes("public_key")?,
        module_id: match v.get("module_id") {
            Some(Value::Null) => None,
            Some(Value::Text(s)) => Some(s.clone()),
            _ => return Err(bad("module_id is neither text nor null")),
        },
        times: Times {
            checked_at: uint("checked_at")?,
            evidence_timestamp_ms: match v.get("evidence_timestamp_ms") {
                Some(Value::Null) => None,
                Some(Value::Unsigned(n)) => Some(*n),
                _ => return Err(bad("evidence_timestamp_ms is neither uint nor null")),
            },
            valid_from: uint("valid_from")?,
            valid_until: uint("valid_until")?,
            valid_until_item: text("valid_until_item")?,
        },
    };
    Ok((text("build_id")?, claims, obytes("evidence")?))
}

/// The extensions of a DER certificate as (dotted OID, extnValue contents), for [`decode`].
pub fn extensions_of(cert_der: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let cert = Cert::parse(cert_der).map_err(Error::BadExtension)?;
    Ok(cert
        .cert
        .tbs_certificate()
        .extensions()
        .map(|e| e.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|e| (e.extn_id.to_string(), e.extn_value.as_bytes().to_vec()))
        .collect())
}

/// The serial number of a DER certificate (its unsigned big-endian bytes, as encoded).
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>> {
    let cert = Cert::parse(cert_der).map_err(Error::BadExtension)?;
    Ok(cert
        .cert
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .to_vec())
}

/// What a CA import checks of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint, when set.
    pub path_len: Option<u8>,
    /// Whether keyUsage allows keyCertSign; None without a keyUsage extension (any use).
    pub key_cert_sign: Option<bool>,
    /// notAfter, Unix seconds.
    pub not_after: u64,
}

/// [`CertFacts`] of a DER certificate.
pub fn cert_facts(cert_der: &[u8]) -> Result<CertFacts> {
    use x509_cert_03::der::Decode;
    let cert = Cert::parse(cert_der).map_err(Error::BadExtension)?;
    let tbs = cert.cert.tbs_certificate();
    let exts = tbs.extensions().map(|e| e.as_slice()).unwrap_or_default();
    let ext = |oid: &str| exts.iter().find(|e| e.extn_id.to_string() == oid);
    let basic = ext("2.5.29.19").and_then(|e| {
        x509_cert_03::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()
    });
    let key_cert_sign = ext("2.5.29.15")
        .map(|e| {
            x509_cert_03::ext::pkix::KeyUsage::from_der(e.extn_value.as_bytes())
                .map(|ku| ku.key_cert_sign())
                .map_err(|e| Error::BadExtension(format!("keyUsage: {e}")))
        })
        .transpose()?;
    Ok(CertFacts {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        spki_der: cert.spki_der().map_err(Error::BadExtension)?,
        is_ca: basic.as_ref().is_some_and(|b| b.ca),
        path_len: basic.and_then(|b| b.path_len_constraint),
        key_cert_sign,
        not_after: cert.validity().1,
    })
}

/// Checks that `issuer_der`'s key signed `cert_der` (ECDSA P-256/P-384).
pub fn verify_issued_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<()> {
    let cert = Cert::parse(cert_der).map_err(Error::BadExtension)?;
    let issuer = Cert::parse(issuer_der).map_err(Error::BadExtension)?;
    cert.verify_signed_by(issuer.spki())
        .map_err(|detail| Error::BadSignature {
            item: format!("certificate {}", cert.subject()),
            detail,
        })
}

/// [`decode`] the extensions of a DER certificate.
pub fn decode_certificate(cert_der: &[u8]) -> Result<Embedded> {
    decode(&extensions_of(cert_der)?)
}
