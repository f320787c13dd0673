//! Signing inside a PKCS#11 token (tested with SoftHSM2): the private key never leaves it.
//!
//! Keys are named by RFC 7512 URIs:
//! `pkcs11:token=LABEL;object=KEYLABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234`
//! (`pin-source=file:/path` instead of `pin-value` keeps the PIN out of command lines).

use std::collections::BTreeMap;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::error::{Error, Result};
use crate::key::Signer;

/// Default module when the URI names none.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A key in a PKCS#11 token.
pub struct Pkcs11Signer {
    session: Session,
    key: ObjectHandle,
    modulus_be: Vec<u8>,
    exponent: u64,
    uri: String,
    _ctx: Pkcs11,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Parse an RFC 7512 URI into path and query attributes.
pub fn parse_uri(uri: &str) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| Error::Key {
        key: redact(uri),
        reason: "not a pkcs11: URI".into(),
    })?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let split = |s: &str, sep: char| -> BTreeMap<String, String> {
        s.split(sep)
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect()
    };
    Ok((split(path, ';'), split(query, '&')))
}

/// The URI without its PIN, for messages.
pub fn redact(uri: &str) -> String {
    match uri.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("pin-value", _)) => "pin-value=<redacted>".to_string(),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => uri.to_string(),
    }
}

impl Pkcs11Signer {
    /// Open the key named by `uri` and log in.
    pub fn open(uri: &str) -> Result<Self> {
        let shown = redact(uri);
        let fail = |reason: String| Error::Key {
            key: shown.clone(),
            reason,
        };
        let (path, query) = parse_uri(uri)?;
        let module = query
            .get("module-path")
            .map(String::as_str)
            .unwrap_or(DEFAULT_MODULE);
        let token = path
            .get("token")
            .ok_or_else(|| fail("the URI names no token (token=LABEL)".into()))?;
        let object = path
            .get("object")
            .ok_or_else(|| fail("the URI names no key (object=LABEL)".into()))?;
        let pin = match (query.get("pin-value"), query.get("pin-source")) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(src)) => {
                let p = src.strip_prefix("file:").unwrap_or(src);
                Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| fail(format!("cannot read pin-source {p}: {e}")))?
                        .trim_end()
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        let ctx = Pkcs11::new(module)
            .map_err(|e| fail(format!("cannot load PKCS#11 module {module}: {e}")))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another signer in this process already initialised the module: that is fine.
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(fail(format!("C_Initialize failed: {e}"))),
        }
        let slot = ctx
            .get_slots_with_token()
            .map_err(|e| fail(format!("listing slots failed: {e}")))?
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label() == token))
            .ok_or_else(|| fail(format!("no token labelled {token:?} in {module}")))?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| fail(format!("opening a session failed: {e}")))?;
        if let Some(pin) = pin {
            session
                .login(UserType::User, Some(&AuthPin::new(pin.into())))
                .map_err(|e| fail(format!("login failed (check the PIN): {e}")))?;
        }
        let find = |class| {
            session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(object.as_bytes().to_vec()),
                ])
                .map_err(|e| fail(format!("searching for {object:?} failed: {e}")))
        };
        let key = *find(ObjectClass::PRIVATE_KEY)?.first().ok_or_else(|| {
            fail(format!(
                "no private key labelled {object:?} in token {token:?}"
            ))
        })?;
        // The modulus is readable on the private key object in most tokens; else on its public twin.
        let mut attrs = session
            .get_attributes(
                key,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .unwrap_or_default();
        if attrs.len() < 2 {
            if let Some(public) = find(ObjectClass::PUBLIC_KEY)?.first() {
                attrs = session
                    .get_attributes(
                        *public,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(|e| fail(format!("reading the public key failed: {e}")))?;
            }
        }
        let (mut modulus_be, mut exponent) = (Vec::new(), 0u64);
        for a in attrs {
            match a {
                Attribute::Modulus(m) => modulus_be = m,
                Attribute::PublicExponent(e) => {
                    exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
                }
                _ => {}
            }
        }
        while modulus_be.first() == Some(&0) {
            modulus_be.remove(0);
        }
        if modulus_be.len() != 384 || exponent != 3 {
            return Err(fail(format!(
                "the key is RSA-{} with exponent {exponent}; SGX needs RSA-3072 with exponent 3",
                modulus_be.len() * 8
            )));
        }
        Ok(Pkcs11Signer {
            session,
            key,
            modulus_be,
            exponent,
            uri: shown,
            _ctx: ctx,
        })
    }
}

impl Signer for Pkcs11Signer {
    fn modulus_be(&self) -> Vec<u8> {
        self.modulus_be.clone()
    }
    fn exponent(&self) -> u64 {
        self.exponent
    }
    fn sign_pkcs1v15_sha256(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.session
            .sign(&Mechanism::Sha256RsaPkcs, self.key, data)
            .map_err(|e| Error::Key {
                key: self.uri.clone(),
                reason: format!("C_Sign failed: {e}"),
            })
    }
    fn describe(&self) -> String {
        self.uri.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_uris_and_redacts_pins() {
        let uri = "pkcs11:token=cloak%20test;object=sgx?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234";
        let (path, query) = parse_uri(uri).unwrap();
        assert_eq!(path["token"], "cloak test");
        assert_eq!(path["object"], "sgx");
        assert_eq!(query["pin-value"], "1234");
        assert!(!redact(uri).contains("1234"));
    }
}
