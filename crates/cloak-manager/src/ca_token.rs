//! The issuing CA's private key in a PKCS#11 token (tested with SoftHSM2): ECDSA P-384, used
//! through `CKM_ECDSA` on a SHA-384 digest computed here; the key never leaves the token. Named
//! by an RFC 7512 URI as cloak-sgx's signing keys are
//! (`pkcs11:token=LABEL;object=KEY?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path`).

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use p384::ecdsa::signature::Verifier;
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha384};

use crate::error::{Error, Result};

/// Default module when the URI names none.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// An ECDSA P-384 key in a token, with the public key of the certificate it signs for.
pub struct TokenKey {
    session: Mutex<Session>,
    key: ObjectHandle,
    /// Uncompressed SEC1 point (what rcgen calls the key's DER bytes).
    public: Vec<u8>,
    uri: String,
    _ctx: Pkcs11,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.uri)
    }
}

impl TokenKey {
    /// Opens the key named by `uri` and checks that it is the key of `spki_der` (the issuing
    /// certificate's): it signs a test message that the certificate's key verifies.
    pub fn open(uri: &str, spki_der: &[u8]) -> Result<TokenKey> {
        let shown = cloak_sgx::pkcs11::redact(uri);
        let fail = |reason: String| Error::Config(format!("CA key {shown}: {reason}"));
        let (path, query) = cloak_sgx::pkcs11::parse_uri(uri).map_err(|e| fail(e.to_string()))?;
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
        let public = p384::PublicKey::from_public_key_der(spki_der)
            .map_err(|_| {
                fail("the issuing certificate's key is not ECDSA P-384, the only key type kept in a token".into())
            })?;
        let ctx = Pkcs11::new(module)
            .map_err(|e| fail(format!("cannot load PKCS#11 module {module}: {e}")))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
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
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(object.as_bytes().to_vec()),
            ])
            .map_err(|e| fail(format!("searching for {object:?} failed: {e}")))?
            .first()
            .ok_or_else(|| {
                fail(format!(
                    "no private key labelled {object:?} in token {token:?}"
                ))
            })?;
        let k = TokenKey {
            session: Mutex::new(session),
            key,
            public: public.to_encoded_point(false).as_bytes().to_vec(),
            uri: shown.clone(),
            _ctx: ctx,
        };
        let msg = b"cloak manager: does this token key belong to the issuing CA certificate?";
        let sig = k
            .sign_der(msg)
            .map_err(|e| fail(format!("test signature failed: {e}")))?;
        let sig = p384::ecdsa::Signature::from_der(&sig)
            .map_err(|e| fail(format!("test signature: {e}")))?;
        p384::ecdsa::VerifyingKey::from(&public)
            .verify(msg, &sig)
            .map_err(|_| {
                fail("the key in the token is not the issuing certificate's key".into())
            })?;
        Ok(k)
    }

    /// ECDSA P-384 over SHA-384 of `msg`, DER-encoded (as X.509 wants it).
    fn sign_der(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let digest = Sha384::digest(msg);
        let raw = self
            .session
            .lock()
            .map_err(|_| "the token session lock is poisoned".to_string())?
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| format!("C_Sign: {e}"))?;
        let sig = p384::ecdsa::Signature::from_slice(&raw)
            .map_err(|e| format!("the token's signature is not r||s: {e}"))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P384_SHA384
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.sign_der(msg).map_err(|e| {
            tracing::error!(key = %self.uri, error = %e, "CA signature in the token failed");
            rcgen::Error::RemoteKeyError
        })
    }
}
