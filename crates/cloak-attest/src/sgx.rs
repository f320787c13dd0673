//! Intel DCAP quotes (SGX v3, TDX v4/v5), verified offline by `dcap-qvl` against collateral the
//! caller passes, at the time the caller passes; cloak adds strict framing, names the
//! collateral item that expired, and applies the debug and TCB policy with its own errors.

use crate::time;
use crate::x509::{pem_blocks, pem_encode, Cert};
use crate::{
    check_tcb, At, Claims, Error, EvidenceKind, Input, Measurements, Policy, Result,
    SgxMeasurements, Tcb, TdxMeasurements, Tee, Times, Verifier,
};
use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::QuoteCollateralV3;
use x509_cert_03::der::Decode;

const KIND: EvidenceKind = EvidenceKind::DcapQuote;

/// Intel SGX Root CA (valid 2018-05-21 to 2049-12-31), DER, SHA-256
/// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3; the same file as
/// dcap-qvl 0.7.1's `src/TrustedRootCA.der` (checked by a test).
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel-sgx-root-ca.der");

/// DCAP collateral: TCB info, QE identity, CRLs and their issuer chains, as `dcap-qvl`'s
/// `QuoteCollateralV3` JSON (what a PCCS or Intel PCS yields, byte fields in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collateral(pub QuoteCollateralV3);

impl Collateral {
    /// Read `QuoteCollateralV3` JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map(Collateral)
            .map_err(|e| Error::BadCollateral {
                detail: format!("not QuoteCollateralV3 JSON: {e}"),
            })
    }

    /// The collateral as `QuoteCollateralV3` JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    /// Which platforms this collateral serves: the TEE and FMSPC its TCB info names and the PCK
    /// CA ("processor" or "platform") that issued its PCK CRL. Parsing only: it is verified, like
    /// the quote, when a quote is checked against it.
    pub fn key(&self) -> Result<CollateralKey> {
        let c = &self.0;
        let bad = |detail: String| Error::BadCollateral { detail };
        let tcb: serde_json::Value = serde_json::from_str(&c.tcb_info)
            .map_err(|e| bad(format!("tcbInfo is not JSON: {e}")))?;
        let fmspc = tcb
            .get("fmspc")
            .and_then(|f| f.as_str())
            .and_then(|f| hex::decode(f).ok())
            .and_then(|f| <[u8; 6]>::try_from(f).ok())
            .ok_or_else(|| bad("tcbInfo.fmspc is missing or not 6 bytes of hex".into()))?;
        let tee = match tcb.get("id").and_then(|i| i.as_str()) {
            Some("TDX") => Tee::Tdx,
            // TCB info v3 without an id predates TDX.
            Some("SGX") | None => Tee::Sgx,
            Some(other) => return Err(bad(format!("tcbInfo.id {other:?}: expected SGX or TDX"))),
        };
        let crl: x509_cert_03::crl::CertificateList = Decode::from_der(&c.pck_crl)
            .map_err(|e| bad(format!("PCK CRL is not a DER CRL: {e}")))?;
        let issuer = crl.tbs_cert_list.issuer.to_string();
        let pck_ca = if issuer.contains("PCK Processor CA") {
            "processor"
        } else if issuer.contains("PCK Platform CA") {
            "platform"
        } else {
            return Err(bad(format!(
                "the PCK CRL is issued by {issuer}, not an Intel SGX PCK Processor or Platform CA"
            )));
        };
        Ok(CollateralKey { tee, fmspc, pck_ca })
    }

    /// Each dated item of the collateral with its validity (Unix seconds, inclusive); the
    /// manager's cache refreshes before the earliest `not_after`.
    pub fn validity(&self) -> Result<Vec<Dated>> {
        let c = &self.0;
        let mut items = Vec::new();
        for (name, json, field) in [
            ("TCB info", &c.tcb_info, "tcbInfo"),
            ("QE identity", &c.qe_identity, "enclaveIdentity"),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| Error::BadCollateral {
                    detail: format!("{field} is not JSON: {e}"),
                })?;
            let date = |k: &str| -> Result<u64> {
                v.get(k)
                    .and_then(|d| d.as_str())
                    .and_then(time::parse)
                    .ok_or_else(|| Error::BadCollateral {
                        detail: format!("{field}.{k} is missing or not an RFC 3339 time"),
                    })
            };
            items.push(Dated {
                item: name.into(),
                not_before: date("issueDate")?,
                not_after: date("nextUpdate")?,
            });
        }
        for (name, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
            let crl: x509_cert_03::crl::CertificateList =
                Decode::from_der(der).map_err(|e| Error::BadCollateral {
                    detail: format!("{name} is not a DER CRL: {e}"),
                })?;
            let tbs = &crl.tbs_cert_list;
            let next = tbs.next_update.ok_or_else(|| Error::BadCollateral {
                detail: format!("{name} has no nextUpdate"),
            })?;
            // A CRL issued after the verification time is newer knowledge, not a reason to
            // refuse: like dcap-qvl (webpki), only nextUpdate bounds it, and exclusively.
            items.push(Dated {
                item: name.into(),
                not_before: 0,
                not_after: next.to_unix_duration().as_secs().saturating_sub(1),
            });
        }
        for (name, pem) in [
            ("TCB info issuer chain", &c.tcb_info_issuer_chain),
            ("QE identity issuer chain", &c.qe_identity_issuer_chain),
            ("PCK CRL issuer chain", &c.pck_crl_issuer_chain),
        ] {
            cert_items(name, pem.as_bytes(), &mut items)
                .map_err(|detail| Error::BadCollateral { detail })?;
        }
        Ok(items)
    }
}

impl Collateral {
    /// What orders two collaterals of one platform in time: the TCB evaluation data numbers
    /// of the TCB info and the QE identity (Intel raises them at each TCB recovery), their
    /// issue dates and the CRLs' thisUpdate. Each as (item, value); larger is newer.
    pub fn generation(&self) -> Result<Vec<(&'static str, u64)>> {
        let c = &self.0;
        let bad = |detail: String| Error::BadCollateral { detail };
        let mut out = Vec::new();
        for (json, field, number, issued) in [
            (
                &c.tcb_info,
                "tcbInfo",
                "TCB info tcbEvaluationDataNumber",
                "TCB info issueDate",
            ),
            (
                &c.qe_identity,
                "enclaveIdentity",
                "QE identity tcbEvaluationDataNumber",
                "QE identity issueDate",
            ),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| bad(format!("{field} is not JSON: {e}")))?;
            let n = v
                .get("tcbEvaluationDataNumber")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(format!("{field}.tcbEvaluationDataNumber is missing")))?;
            let d = v
                .get("issueDate")
                .and_then(|d| d.as_str())
                .and_then(time::parse)
                .ok_or_else(|| bad(format!("{field}.issueDate is missing or not RFC 3339")))?;
            out.push((number, n));
            out.push((issued, d));
        }
        for (name, der) in [
            ("PCK CRL thisUpdate", &c.pck_crl),
            ("root CA CRL thisUpdate", &c.root_ca_crl),
        ] {
            let crl: x509_cert_03::crl::CertificateList =
                Decode::from_der(der).map_err(|e| bad(format!("{name}: not a DER CRL: {e}")))?;
            out.push((
                name,
                crl.tbs_cert_list.this_update.to_unix_duration().as_secs(),
            ));
        }
        Ok(out)
    }

    /// The first item in which this collateral is older than `other` (see
    /// [`Collateral::generation`]), as "item a < b"; None when no item is older.
    pub fn older_than(&self, other: &Collateral) -> Result<Option<String>> {
        let (mine, theirs) = (self.generation()?, other.generation()?);
        Ok(mine
            .iter()
            .zip(&theirs)
            .find(|((_, a), (_, b))| a < b)
            .map(|((item, a), (_, b))| format!("{item} {a} < {b}")))
    }
}

/// One dated item and its validity, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated {
    /// What it is ("TCB info", "PCK CRL", "certificate CN=... in the quote's PCK chain").
    pub item: String,
    /// First valid second.
    pub not_before: u64,
    /// Last valid second.
    pub not_after: u64,
}

fn cert_items(chain_name: &str, pem: &[u8], items: &mut Vec<Dated>) -> Result<(), String> {
    let blocks = pem_blocks(pem, "CERTIFICATE");
    if blocks.is_empty() {
        return Err(format!("{chain_name} holds no PEM certificate"));
    }
    for der in &blocks {
        let cert = Cert::parse(der).map_err(|e| format!("{chain_name}: {e}"))?;
        let (not_before, not_after) = cert.validity();
        items.push(Dated {
            item: format!("certificate {} in the {chain_name}", cert.subject()),
            not_before,
            not_after,
        });
    }
    Ok(())
}

/// Verifies DCAP quotes: SGX quote v3, TDX quote v4 and v5, with [`Input::collateral`] at
/// [`At::Time`] (a quote has no time of its own).
#[derive(Debug, Clone, Copy, Default)]
pub struct DcapQuote;

impl Verifier for DcapQuote {
    fn kind(&self) -> EvidenceKind {
        KIND
    }

    fn verify(&self, evidence: &[u8], input: &Input<'_>) -> Result<Claims> {
        let collateral = input
            .collateral
            .ok_or(Error::CollateralRequired { kind: KIND })?;
        let At::Time(at) = input.at else {
            return Err(Error::TimeRequired { kind: KIND });
        };
        verify_quote(evidence, collateral, at, input.policy, KIND)
    }
}

/// Parse a quote strictly: a known version and exactly as many bytes as its framing says,
/// followed by nothing but zero padding (TDX quotes come in zero-padded buffers). Returns the
/// quote and its length without the padding.
pub(crate) fn parse_quote(bytes: &[u8], kind: EvidenceKind) -> Result<(Quote, usize)> {
    let bad = |d: String| Error::malformed(kind, d);
    let quote = Quote::parse(bytes).map_err(|e| bad(format!("quote: {e}")))?;
    let signed = quote.signed_length();
    let sig_len = bytes
        .get(signed..signed + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("quote: truncated before the signature length".into()))?;
    let expected = signed + 4 + sig_len;
    if bytes.len() < expected || bytes[expected..].iter().any(|b| *b != 0) {
        return Err(bad(format!(
            "quote: {} bytes, but its framing says {expected} (only zero padding may follow)",
            bytes.len()
        )));
    }
    Ok((quote, expected))
}

/// Verify a quote and apply the policy (shared with RA-TLS certificates).
pub(crate) fn verify_quote(
    bytes: &[u8],
    collateral: &Collateral,
    at: u64,
    policy: &Policy,
    kind: EvidenceKind,
) -> Result<Claims> {
    let (quote, len) = parse_quote(bytes, kind)?;
    let bytes = &bytes[..len];
    let mut items = collateral.validity()?;
    let chain = quote
        .raw_cert_chain()
        .map_err(|e| Error::malformed(kind, format!("quote certification data: {e:#}")))?;
    check_pck_chain(chain).map_err(|e| Error::malformed(kind, e))?;
    cert_items("quote's PCK chain", chain, &mut items).map_err(|e| Error::malformed(kind, e))?;

    let verified = dcap_qvl::verify::QuoteVerifier::new(INTEL_SGX_ROOT_CA_DER.to_vec())
        .allow_debug(true)
        .verify_with_policy(
            bytes,
            &collateral.0,
            at,
            &dcap_qvl::QuotePolicy::claims_only(at),
        )
        .map_err(|e| classify(&format!("{e:#}"), at, &items, kind))?;
    // dcap-qvl checks the same dates; this names the item should it ever let one through.
    check_dates(&items, at)?;

    let tcb = Tcb {
        status: verified.tcb.status.to_string(),
        advisory_ids: verified.tcb.advisory_ids.clone(),
    };
    let (tee, measurements, debug, report_data, what) = match &verified.report {
        Report::SgxEnclave(r) => (
            Tee::Sgx,
            Measurements::Sgx(SgxMeasurements {
                mrenclave: r.mr_enclave,
                mrsigner: r.mr_signer,
                isvprodid: r.isv_prod_id,
                isvsvn: r.isv_svn,
            }),
            r.attributes[0] & 0x02 != 0,
            r.report_data.to_vec(),
            "enclave",
        ),
        other => {
            let td = other
                .as_td10()
                .ok_or_else(|| Error::malformed(kind, "quote body is neither SGX nor TDX"))?;
            (
                Tee::Tdx,
                Measurements::Tdx(Box::new(TdxMeasurements {
                    mr_td: td.mr_td,
                    rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
                    mr_config_id: td.mr_config_id,
                    mr_owner: td.mr_owner,
                    mr_owner_config: td.mr_owner_config,
                    mr_seam: td.mr_seam,
                })),
                td.td_attributes[0] & 0x01 != 0,
                td.report_data.to_vec(),
                "TD",
            )
        }
    };
    if debug && !policy.allow_debug {
        return Err(Error::DebugEnclave { kind, what });
    }
    check_tcb(&tcb, policy)?;
    let until = items
        .iter()
        .min_by_key(|d| d.not_after)
        .map(|d| format!("{} notAfter/nextUpdate", d.item))
        .unwrap_or_default();
    Ok(Claims {
        tee,
        kind,
        simulated: false,
        measurements,
        debug,
        tcb: Some(tcb),
        report_data: Some(report_data),
        user_data: None,
        nonce: None,
        public_key: None,
        module_id: None,
        times: Times {
            checked_at: at,
            evidence_timestamp_ms: None,
            valid_from: items.iter().map(|d| d.not_before).max().unwrap_or(0),
            valid_until: items.iter().map(|d| d.not_after).min().unwrap_or(u64::MAX),
            valid_until_item: until,
        },
    })
}

/// The quote's certification data is not signed, so it must hold nothing the verification
/// does not use, in one encoding: exactly PCK certificate, intermediate CA and the Intel root,
/// canonical PEM, optionally NUL-terminated. (Otherwise bytes could change, an unused root copy
/// or a base64 padding bit for instance, and the quote still verify.)
fn check_pck_chain(data: &[u8]) -> Result<(), String> {
    let text = data.strip_suffix(&[0]).unwrap_or(data);
    let blocks = pem_blocks(text, "CERTIFICATE");
    if blocks.len() != 3 {
        return Err(format!(
            "the PCK certificate chain has {} certificates, expected 3 (PCK, CA, Intel root)",
            blocks.len()
        ));
    }
    if pem_encode(&blocks, "CERTIFICATE").as_bytes() != text {
        return Err("the PCK certificate chain is not in canonical PEM".into());
    }
    if blocks[2] != INTEL_SGX_ROOT_CA_DER {
        return Err("the last certificate of the PCK chain is not the Intel SGX Root CA".into());
    }
    Ok(())
}

fn check_dates(items: &[Dated], at: u64) -> Result<()> {
    if let Some(d) = items
        .iter()
        .filter(|d| at > d.not_after)
        .min_by_key(|d| d.not_after)
    {
        return Err(Error::CollateralExpired {
            item: d.item.clone(),
            not_after: d.not_after,
            at,
        });
    }
    if let Some(d) = items
        .iter()
        .filter(|d| at < d.not_before)
        .max_by_key(|d| d.not_before)
    {
        return Err(Error::CollateralNotYetValid {
            item: d.item.clone(),
            not_before: d.not_before,
            at,
        });
    }
    Ok(())
}

/// Turn a `dcap-qvl` error message into this crate's error.
fn classify(msg: &str, at: u64, items: &[Dated], kind: EvidenceKind) -> Error {
    let has = |s: &str| msg.contains(s);
    if has("expired")
        || has("Expired")
        || has("in the future")
        || has("not valid")
        || has("NotValidYet")
    {
        if let Err(e) = check_dates(items, at) {
            return e;
        }
    }
    if has("Revoked") {
        return Error::Revoked;
    }
    let item = if has("tcb_info") {
        Some("TCB info")
    } else if has("qe_identity") {
        Some("QE identity")
    } else if has("qe_report") || has("QE report hash") {
        Some("QE report")
    } else if has("ISV enclave report signature") {
        Some("quote body")
    } else {
        None
    };
    if let Some(item) = item {
        return Error::BadSignature {
            item: item.into(),
            detail: msg.into(),
        };
    }
    if has("certificate chain") || has("CRL") || has("root ca") {
        return Error::UntrustedChain {
            kind,
            detail: msg.into(),
        };
    }
    if has("decode quote")
        || has("Unsupported")
        || has("Unknown QE vendor")
        || has("must have version")
    {
        return Error::malformed(kind, msg);
    }
    if has("TcbInfo") || has("QeIdentity") || has("Fmspc") || has("TCB info") || has("QE Identity")
    {
        return Error::BadCollateral { detail: msg.into() };
    }
    Error::QuoteRejected(msg.into())
}

/// What a PCCS or Intel PCS needs to serve the collateral for a quote: the TEE, the platform's
/// FMSPC and which PCK CA issued its certificate (`{base}/{sgx|tdx}/certification/v4/tcb?fmspc=`,
/// `pckcrl?ca=processor|platform`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateralKey {
    /// SGX or TDX.
    pub tee: Tee,
    /// FMSPC from the PCK certificate's Intel SGX extension.
    pub fmspc: [u8; 6],
    /// `processor` or `platform`.
    pub pck_ca: &'static str,
}

impl CollateralKey {
    /// `sgx:<fmspc hex>:<processor|platform>`: one cache entry per key.
    pub fn cache_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.tee.as_str(),
            hex::encode(self.fmspc),
            self.pck_ca
        )
    }
}

/// The [`CollateralKey`] of a quote or of the quote inside an RA-TLS certificate (bytes as
/// [`crate::detect`] accepts them). Parsing only: nothing is verified here.
pub fn collateral_key(evidence: &[u8]) -> Result<CollateralKey> {
    let ev = crate::detect(evidence)?;
    let (kind, quote) = match ev.kind {
        EvidenceKind::DcapQuote => (KIND, ev.bytes),
        EvidenceKind::RaTlsCertificate => {
            let cert = Cert::parse(&ev.bytes).map_err(|e| Error::malformed(ev.kind, e))?;
            (ev.kind, crate::ratls::extract(&cert, None)?.quote)
        }
        other => {
            return Err(Error::malformed(
                other,
                "only DCAP quotes and RA-TLS certificates have DCAP collateral",
            ))
        }
    };
    let (q, _) = parse_quote(&quote, kind)?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&q)
        .map_err(|e| Error::malformed(kind, format!("FMSPC: {e:#}")))?;
    let ca = dcap_qvl::intel::quote_ca(&q)
        .map_err(|e| Error::malformed(kind, format!("PCK CA: {e:#}")))?;
    Ok(CollateralKey {
        tee: if q.report.is_sgx() {
            Tee::Sgx
        } else {
            Tee::Tdx
        },
        fmspc,
        pck_ca: match ca {
            dcap_qvl::config::PckCa::Processor => "processor",
            dcap_qvl::config::PckCa::Platform => "platform",
        },
    })
}
