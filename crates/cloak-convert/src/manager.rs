//! The manager options of a conversion (`--manager-url`, `--manager-ca`, the seed's
//! `certificates`, `add_ccm_ca_certificates`) validated into the launcher's
//! [`ManagerConfig`], which is written into the measured `/cloak/run.json`: MRENCLAVE and the
//! PCRs then pin which manager the app trusts and what it asks for.

use cloak_launcher::{CertSpec, KeySpec, ManagerConfig};

use crate::error::{Error, Result};
use crate::options::{CertificateConfig, ManagerOptions};

/// Retry budget for an unreachable manager when the options give none.
pub const DEFAULT_RETRY_SECONDS: u64 = 60;

fn bad(msg: String) -> Error {
    Error::Options(msg)
}

/// The launcher's configuration, or `None` when the image does not attest. Certificates
/// without a manager, a CA that is not PEM certificates, relative paths and unknown key types
/// are refused here, before anything is downloaded.
pub fn launcher_config(
    manager: Option<&ManagerOptions>,
    certificates: Option<&[CertificateConfig]>,
    add_ca_to_trust_store: bool,
) -> Result<Option<ManagerConfig>> {
    let certificates = certificates.unwrap_or_default();
    let Some(m) = manager else {
        if !certificates.is_empty() || add_ca_to_trust_store {
            return Err(bad(
                "certificates and add_ccm_ca_certificates need a manager: give --manager-url, \
                 --manager-ca and --manager-app-id (in a request to the manager: the `manager` \
                 object with url, ca and app_id)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let url = m.url.trim_end_matches('/');
    let Some(host) = url.strip_prefix("https://") else {
        return Err(bad(format!(
            "--manager-url {:?}: must be https://HOST:PORT (the launcher only talks TLS to the manager)",
            m.url
        )));
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad(format!(
            "--manager-url {:?}: must be https://HOST[:PORT] without a path",
            m.url
        )));
    }
    check_ca(&m.ca)?;
    if m.app_id.len() != 36 || m.app_id.chars().filter(|c| *c == '-').count() != 4 {
        return Err(bad(format!(
            "--manager-app-id {:?}: must be the app's id (a UUID, see `cloak app list`)",
            m.app_id
        )));
    }
    let mut specs = Vec::new();
    for (i, c) in certificates.iter().enumerate() {
        specs.push(cert_spec(i, c)?);
    }
    Ok(Some(ManagerConfig {
        url: url.to_string(),
        ca_pem: m.ca.clone(),
        app_id: m.app_id.clone(),
        certificates: specs,
        allow_simulated: m.allow_simulated_attestation.unwrap_or(false),
        retry_seconds: m.retry_seconds.unwrap_or(DEFAULT_RETRY_SECONDS),
        vsock_port: m.vsock_port,
        add_ca_to_trust_store,
        renew_before_seconds: m.renew_before_seconds.unwrap_or(0),
    }))
}

/// The CA must be one or more PEM certificates (nothing else: it is measured as given).
fn check_ca(pem: &str) -> Result<()> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: std::result::Result<Vec<_>, _> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(()),
        Ok(_) => Err(bad(
            "--manager-ca: no PEM certificate in it (give the manager's CA, e.g. from `GET /v1/ca` or its TLS certificate)".into(),
        )),
        Err(e) => Err(bad(format!("--manager-ca: not PEM certificates: {e}"))),
    }
}

fn cert_spec(i: usize, c: &CertificateConfig) -> Result<CertSpec> {
    let at = |what: &str| format!("certificates[{i}]: {what}");
    if c.issuer != "MANAGER_CA" {
        return Err(bad(at(&format!(
            "issuer {:?} is not supported; cloak's launcher gets certificates from the manager (MANAGER_CA)",
            c.issuer
        ))));
    }
    let subject = c.subject.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        bad(at(
            "subject is required (the build's certificates option must name it)",
        ))
    })?;
    let key = KeySpec::from_seed(&c.key_type, c.key_param.as_ref()).map_err(|e| bad(at(&e)))?;
    let path = |name: &str, p: &Option<String>| -> Result<String> {
        match p.as_deref() {
            Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => Ok(p.to_string()),
            Some(p) => Err(bad(at(&format!(
                "{name} {p:?} must be an absolute path without '..'"
            )))),
            None => Err(bad(at(&format!("{name} is required")))),
        }
    };
    let chain_path = match c.chain_path.as_deref() {
        None | Some("none") => None,
        Some(_) => Some(path("chainPath", &c.chain_path)?),
    };
    Ok(CertSpec {
        subject,
        key,
        key_path: path("keyPath", &c.key_path)?,
        cert_path: path("certPath", &c.cert_path)?,
        chain_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBLjCB1aADAgECAhQ=\n-----END CERTIFICATE-----\n";

    fn opts() -> ManagerOptions {
        ManagerOptions {
            url: "https://manager.example:9443/".into(),
            ca: CA.into(),
            app_id: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_seed_certificate_becomes_the_launchers_spec() {
        let seed: Vec<CertificateConfig> = serde_json::from_str(
            r#"[{"issuer": "MANAGER_CA", "subject": "SGX-Application", "keyType": "rsa",
                 "keyParam": {"size": 2048}, "keyPath": "/appkey.pem",
                 "certPath": "/appcert.pem", "chainPath": "none"}]"#,
        )
        .unwrap();
        let c = launcher_config(Some(&opts()), Some(&seed), true)
            .unwrap()
            .unwrap();
        assert_eq!(c.url, "https://manager.example:9443");
        assert!(c.add_ca_to_trust_store);
        assert_eq!(c.retry_seconds, DEFAULT_RETRY_SECONDS);
        assert_eq!(
            c.certificates,
            vec![CertSpec {
                subject: "SGX-Application".into(),
                key: KeySpec::Rsa { bits: 2048 },
                key_path: "/appkey.pem".into(),
                cert_path: "/appcert.pem".into(),
                chain_path: None,
            }]
        );
    }

    #[rstest::rstest]
    #[case::plain_http(r#"{"url":"http://m:1"}"#, "must be https://")]
    #[case::not_pem(r#"{"ca":"hello"}"#, "no PEM certificate")]
    #[case::app_id(r#"{"app_id":"x"}"#, "--manager-app-id")]
    fn bad_manager_options_are_refused(#[case] patch: &str, #[case] msg: &str) {
        let mut v = serde_json::to_value(opts()).unwrap();
        for (k, x) in serde_json::from_str::<serde_json::Value>(patch)
            .unwrap()
            .as_object()
            .unwrap()
        {
            v[k] = x.clone();
        }
        let o: ManagerOptions = serde_json::from_value(v).unwrap();
        let e = launcher_config(Some(&o), None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{e}");
    }

    #[rstest::rstest]
    #[case::rsa_size(r#"{"subject":"a","keyType":"rsa","keyParam":{"size":1024},"keyPath":"/k","certPath":"/c"}"#, "2048, 3072 or 4096")]
    #[case::curve(r#"{"subject":"a","keyType":"ec","keyParam":{"curve":"P-521"},"keyPath":"/k","certPath":"/c"}"#, "P-256 or P-384")]
    #[case::relative(r#"{"subject":"a","keyPath":"k","certPath":"/c"}"#, "absolute path")]
    #[case::no_subject(r#"{"keyPath":"/k","certPath":"/c"}"#, "subject is required")]
    #[case::issuer(
        r#"{"issuer":"SELF_IAS","subject":"a","keyPath":"/k","certPath":"/c"}"#,
        "MANAGER_CA"
    )]
    fn bad_certificates_are_refused(#[case] cert: &str, #[case] msg: &str) {
        let c: CertificateConfig = serde_json::from_str(cert).unwrap();
        let e = launcher_config(Some(&opts()), Some(&[c]), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificates[0]") && e.contains(msg), "{e}");
    }

    #[test]
    fn certificates_without_a_manager_are_refused() {
        let c: CertificateConfig =
            serde_json::from_str(r#"{"subject":"a","keyPath":"/k","certPath":"/c"}"#).unwrap();
        let e = launcher_config(None, Some(&[c]), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--manager-url"), "{e}");
        assert!(launcher_config(None, None, false).unwrap().is_none());
    }
}
