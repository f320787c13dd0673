//! Where evidence comes from, behind one trait: Gramine's `/dev/attestation` (SGX), the NSM
//! device `/dev/nsm` (Nitro) and simulated evidence (no TEE; only in images converted with
//! `--allow-simulated-attestation`). Each binds the key and the manager's nonce the way
//! `cloak_attest::binding` says the manager checks it.

use std::io::{Read, Write};
use std::path::PathBuf;

use cloak_attest::cbor::Value;

/// A producer of evidence for a key (SubjectPublicKeyInfo DER) and the manager's nonce.
pub trait EvidenceSource {
    /// What it is, for messages (`Gramine /dev/attestation`, `NSM /dev/nsm`, `simulated`).
    fn name(&self) -> String;
    /// Evidence binding `spki` and `nonce`.
    fn evidence(&mut self, spki: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String>;
    /// Install the key of a Gramine encrypted mount (`/dev/attestation/keys/<name>`); other
    /// sources have no encrypted mounts and refuse.
    fn install_mount_key(&mut self, name: &str, _key: &[u8; 16]) -> Result<(), String> {
        Err(format!(
            "an encrypted-mount key ({name}) was released, but {} has no encrypted mounts (Gramine only)",
            self.name()
        ))
    }
}

/// The files of Gramine's attestation interface; the real one is a directory
/// (`/dev/attestation`), tests use a recording double or a directory of their own.
pub trait AttestationFs {
    /// Write a whole pseudo-file (`user_report_data`, `keys/<name>`).
    fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()>;
    /// Read a whole pseudo-file (`quote`).
    fn read(&mut self, name: &str) -> std::io::Result<Vec<u8>>;
}

/// Gramine's `/dev/attestation` (or any directory standing in for it).
#[derive(Debug, Clone)]
pub struct AttestationDir(pub PathBuf);

impl AttestationFs for AttestationDir {
    fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        // One write() of the whole value: Gramine takes each write as the new content.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.0.join(name))?;
        f.write_all(data)
    }
    fn read(&mut self, name: &str) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        std::fs::File::open(self.0.join(name))?.read_to_end(&mut v)?;
        Ok(v)
    }
}

/// SGX under Gramine: REPORTDATA = SHA-256(SPKI) ‖ SHA-256(nonce) written to
/// `user_report_data`, then the DCAP quote read from `quote`.
#[derive(Debug)]
pub struct Gramine<F: AttestationFs> {
    /// The attestation interface.
    pub fs: F,
}

impl<F: AttestationFs> EvidenceSource for Gramine<F> {
    fn name(&self) -> String {
        "Gramine /dev/attestation".into()
    }
    fn evidence(&mut self, spki: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        let rd = cloak_attest::binding::report_data(spki, nonce);
        self.fs
            .write("user_report_data", &rd)
            .map_err(|e| format!("writing /dev/attestation/user_report_data: {e}"))?;
        let quote = self
            .fs
            .read("quote")
            .map_err(|e| format!("reading /dev/attestation/quote: {e}"))?;
        if quote.is_empty() {
            return Err("/dev/attestation/quote is empty (is remote attestation enabled in the manifest: sgx.remote_attestation = \"dcap\"?)".into());
        }
        Ok(quote)
    }
    fn install_mount_key(&mut self, name: &str, key: &[u8; 16]) -> Result<(), String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!(
                "encrypted-mount key name {name:?} is not a plain name"
            ));
        }
        self.fs
            .write(&format!("keys/{name}"), key)
            .map_err(|e| format!("writing /dev/attestation/keys/{name}: {e}"))
    }
}

/// The NSM driver's one call: a CBOR request in, a CBOR response out.
pub trait NsmDevice {
    /// Send `request`, return the response bytes.
    fn call(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>>;
}

/// The Attestation request as `aws-nitro-enclaves-nsm-api` encodes it (serde_cbor of
/// `Request::Attestation { user_data, nonce, public_key }`: a one-entry map from the variant
/// name to a map of the three fields in declaration order, byte strings or null).
pub fn nsm_attestation_request(
    user_data: Option<&[u8]>,
    nonce: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Vec<u8> {
    let b = |v: Option<&[u8]>| v.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
    let t = |s: &str| Value::Text(s.into());
    Value::Map(vec![(
        t("Attestation"),
        Value::Map(vec![
            (t("user_data"), b(user_data)),
            (t("nonce"), b(nonce)),
            (t("public_key"), b(public_key)),
        ]),
    )])
    .encode()
}

/// Read the NSM's answer: `{"Attestation": {"document": bytes}}`, or `{"Error": code}`.
pub fn nsm_attestation_response(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let v = cloak_attest::cbor::decode(bytes)
        .map_err(|e| format!("the NSM's response is not CBOR: {e}"))?;
    if let Some(Value::Text(code)) = v.get("Error") {
        return Err(format!("the NSM refused the attestation request: {code}"));
    }
    match v.get("Attestation").and_then(|a| a.get("document")) {
        Some(Value::Bytes(doc)) => Ok(doc.clone()),
        _ => Err("the NSM's response has no Attestation.document".into()),
    }
}

/// AWS Nitro: an Attestation request to the NSM with the key as `public_key`, the nonce as
/// `nonce` and the 64-byte REPORTDATA binding (SHA-256 of key, SHA-256 of nonce) as `user_data`.
#[derive(Debug)]
pub struct Nsm<D: NsmDevice> {
    /// The device.
    pub dev: D,
}

impl<D: NsmDevice> EvidenceSource for Nsm<D> {
    fn name(&self) -> String {
        "NSM /dev/nsm".into()
    }
    fn evidence(&mut self, spki: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        let rd = cloak_attest::binding::report_data(spki, nonce);
        let req = nsm_attestation_request(Some(&rd), Some(nonce), Some(spki));
        let resp = self
            .dev
            .call(&req)
            .map_err(|e| format!("the NSM ioctl on /dev/nsm: {e}"))?;
        nsm_attestation_response(&resp)
    }
}

/// `/dev/nsm` through the driver's ioctl (`NSM_IOCTL_REQUEST`, `_IOWR(0x0A, 0, struct
/// nsm_message)`: two iovecs, request and response).
#[derive(Debug)]
pub struct DevNsm(pub std::fs::File);

/// The largest NSM response (the driver's NSM_RESPONSE_MAX_SIZE).
const NSM_RESPONSE_MAX: usize = 0x3000;

impl NsmDevice for DevNsm {
    fn call(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct NsmMessage {
            request: libc::iovec,
            response: libc::iovec,
        }
        let mut response = vec![0u8; NSM_RESPONSE_MAX];
        let mut msg = NsmMessage {
            request: libc::iovec {
                iov_base: request.as_ptr() as *mut libc::c_void,
                iov_len: request.len(),
            },
            response: libc::iovec {
                iov_base: response.as_mut_ptr().cast(),
                iov_len: response.len(),
            },
        };
        const NSM_IOCTL_REQUEST: libc::c_ulong =
            (3 << 30) | ((std::mem::size_of::<NsmMessage>() as libc::c_ulong) << 16) | (0x0a << 8);
        // SAFETY: the message points at buffers that live across the call; the driver writes
        // at most response.len() bytes and sets response.iov_len.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), NSM_IOCTL_REQUEST, &mut msg) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        response.truncate(msg.response.iov_len.min(NSM_RESPONSE_MAX));
        Ok(response)
    }
}

/// No TEE: evidence signed with a simulation key given at run time, claiming `measurements`
/// (the manager accepts it only with `--allow-simulated-attestation`, and marks everything it
/// touches SIMULATED).
#[derive(Debug)]
pub struct Simulated {
    /// The key given at run time.
    pub key: cloak_attest::simulated::SimulationSigningKey,
    /// What the evidence claims (the build's PCRs or SGX identity).
    pub measurements: cloak_attest::Measurements,
}

impl Simulated {
    /// Read the simulation directory: `key.pem` (P-256) and `measurements.json`
    /// (`{"pcrs": {"0": "hex", …}}` or `{"mrenclave": …, "mrsigner": …, "isvprodid": n, "isvsvn": n}`).
    pub fn from_dir(dir: &std::path::Path) -> Result<Simulated, String> {
        let key_path = dir.join("key.pem");
        let key = std::fs::read(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))
            .and_then(|b| {
                cloak_attest::simulated::SimulationSigningKey::from_bytes(&b)
                    .map_err(|e| format!("{}: {e}", key_path.display()))
            })?;
        let m_path = dir.join("measurements.json");
        let text =
            std::fs::read_to_string(&m_path).map_err(|e| format!("{}: {e}", m_path.display()))?;
        let measurements =
            parse_measurements(&text).map_err(|e| format!("{}: {e}", m_path.display()))?;
        Ok(Simulated { key, measurements })
    }
}

/// Parse the measurements a simulated document claims.
pub fn parse_measurements(text: &str) -> Result<cloak_attest::Measurements, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let hexval = |s: &serde_json::Value, what: &str| -> Result<Vec<u8>, String> {
        s.as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| format!("{what}: not hex"))
    };
    if let Some(pcrs) = v.get("pcrs").and_then(|p| p.as_object()) {
        let mut map = std::collections::BTreeMap::new();
        for (k, x) in pcrs {
            let i: u16 = k
                .parse()
                .map_err(|_| format!("pcrs: {k:?} is not an index"))?;
            map.insert(i, hexval(x, &format!("pcrs.{k}"))?);
        }
        return Ok(cloak_attest::Measurements::Pcrs(map));
    }
    let arr = |what: &str| -> Result<[u8; 32], String> {
        hexval(v.get(what).unwrap_or(&serde_json::Value::Null), what)?
            .try_into()
            .map_err(|_| format!("{what}: must be 32 bytes"))
    };
    let num = |what: &str| -> Result<u16, String> {
        v.get(what)
            .and_then(|n| n.as_u64())
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("{what}: must be a number 0..65535"))
    };
    Ok(cloak_attest::Measurements::Sgx(
        cloak_attest::SgxMeasurements {
            mrenclave: arr("mrenclave")?,
            mrsigner: arr("mrsigner")?,
            isvprodid: num("isvprodid")?,
            isvsvn: num("isvsvn")?,
        },
    ))
}

/// How far simulated evidence is back-dated (see [`Simulated`]'s `evidence`).
const SIMULATED_BACKDATE_MS: u64 = 5_000;

impl EvidenceSource for Simulated {
    fn name(&self) -> String {
        "simulated (no TEE)".into()
    }
    fn evidence(&mut self, spki: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        // Back-dated: a qemu guest's clock starts from the RTC (whole seconds) and runs up to
        // a second or so ahead of the host's, and the manager refuses evidence from the future
        // to the second (strictly, as it must for real TEEs). Found by the first qemu boot
        // against a real manager (tests/nitro_attested.rs).
        let doc = cloak_attest::simulated::Document {
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| (d.as_millis() as u64).saturating_sub(SIMULATED_BACKDATE_MS))
                .unwrap_or(0),
            measurements: self.measurements.clone(),
            user_data: None,
            nonce: Some(nonce.to_vec()),
            public_key: Some(spki.to_vec()),
        };
        cloak_attest::simulated::produce(&self.key, &doc).map_err(|e| e.to_string())
    }
}
