//! The certificate the manager answers with is checked before anything is written: it must be
//! one X.509 certificate in PEM for the key this launcher generated, and the chain must verify
//! it signature by signature up to a self-signed root. The image pins the manager's TLS
//! certificate, not the CA that issues app certificates, so the root cannot be compared with a
//! pinned one; the pinned TLS connection is what vouches for where the answer came from.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

fn ders(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} is not PEM: {e}"))
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, String> {
    match X509Certificate::from_der(der) {
        Ok((&[], c)) => Ok(c),
        Ok(_) => Err(format!("the {what} has bytes after its certificate")),
        Err(e) => Err(format!("the {what} is not an X.509 certificate: {e}")),
    }
}

/// `child` names `parent` as its issuer and carries a valid signature by its key.
fn signed_by(what: &str, child: &X509Certificate, parent: &X509Certificate) -> Result<(), String> {
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return Err(format!(
            "the {what}'s issuer ({}) is not the next certificate of the chain ({})",
            child.issuer(),
            parent.subject()
        ));
    }
    child
        .verify_signature(Some(parent.public_key()))
        .map_err(|e| {
            format!(
                "the {what}'s signature does not verify with {}: {e}",
                parent.subject()
            )
        })
}

/// Check `certificate` (the leaf, PEM) for `spki` (the generated key's SubjectPublicKeyInfo DER)
/// and `chain` (issuing CA then root, PEM).
pub fn check(spki: &[u8], certificate: &str, chain: &str) -> Result<(), String> {
    let leaf = ders("certificate", certificate)?;
    let [leaf] = leaf.as_slice() else {
        return Err(format!(
            "the certificate holds {} certificates instead of one",
            leaf.len()
        ));
    };
    let leaf = parse("certificate", leaf)?;
    if leaf.public_key().raw != spki {
        return Err(
            "the certificate is not for the key this launcher generated (its public key differs)"
                .into(),
        );
    }
    let chain_der = ders("chain", chain)?;
    if chain_der.is_empty() {
        return Err("the answer has no chain to verify the certificate with".into());
    }
    let chain = chain_der
        .iter()
        .enumerate()
        .map(|(i, d)| parse(&format!("chain's certificate {}", i + 1), d))
        .collect::<Result<Vec<_>, _>>()?;
    signed_by("certificate", &leaf, &chain[0])?;
    for (i, pair) in chain.windows(2).enumerate() {
        signed_by(
            &format!("chain's certificate {}", i + 1),
            &pair[0],
            &pair[1],
        )?;
    }
    let root = &chain[chain.len() - 1];
    signed_by("chain's last certificate (the root)", root, root)
}
