//! The ocicrypt keyprovider protocol (`keywrap/keyprovider`), command transport.
//!
//! Providers are configured as in Go: a JSON file named by `$OCICRYPT_KEYPROVIDER_CONFIG` (or
//! given explicitly), `{"key-providers": {"NAME": {"cmd": {"path": …, "args": […]}}}}`. The
//! request and response JSON follow Go's shapes: `[]byte` fields are sent as standard base64
//! and accepted back as base64 strings or integer arrays (the two encodings real providers
//! use). The wrapped bytes are stored under `org.opencontainers.image.enc.keys.provider.NAME`,
//! so the provider name is part of the image format.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::spec::{b64, b64_encode};

/// Environment variable naming the provider configuration file.
pub const CONFIG_ENV: &str = "OCICRYPT_KEYPROVIDER_CONFIG";

/// One configured provider.
#[derive(Clone, Debug, Deserialize)]
pub struct Provider {
    /// `{"path": …, "args": […]}`.
    #[serde(default)]
    pub cmd: Option<CmdProvider>,
    /// `host:port` of a gRPC provider.
    #[serde(default)]
    pub grpc: Option<String>,
}

/// A provider run as a command: request JSON on stdin, response JSON on stdout.
#[derive(Clone, Debug, Deserialize)]
pub struct CmdProvider {
    /// Executable.
    pub path: PathBuf,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// The provider configuration.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Config {
    /// Providers by name.
    #[serde(rename = "key-providers", default)]
    pub providers: BTreeMap<String, Provider>,
}

impl Config {
    /// Load from `path`, else from `$OCICRYPT_KEYPROVIDER_CONFIG`, else empty.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(p) => PathBuf::from(p),
                None => return Ok(Config::default()),
            },
        };
        let err = |reason: String| Error::Provider {
            name: "(configuration)".into(),
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&text)
            .map_err(|e| err(format!("not a keyprovider configuration: {e}")))
    }

    /// The provider called `name`, or an error naming the configured ones.
    pub fn get(&self, name: &str) -> Result<&Provider> {
        self.providers.get(name).ok_or_else(|| Error::Provider {
            name: name.into(),
            reason: format!(
                "not configured (configured: {}); add it to the file ${CONFIG_ENV} names",
                if self.providers.is_empty() {
                    "none".to_string()
                } else {
                    self.providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        })
    }
}

fn bytes(v: Option<&Value>) -> Option<Vec<u8>> {
    match v? {
        Value::String(s) => b64(s),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

fn call(name: &str, provider: &Provider, request: &Value) -> Result<Value> {
    let err = |reason: String| Error::Provider {
        name: name.into(),
        reason,
    };
    let cmd = match (&provider.cmd, &provider.grpc) {
        (Some(c), _) => c,
        (None, Some(addr)) => {
            return Err(err(format!(
                "gRPC providers ({addr}) are not supported by cloak; run the provider as a cmd provider"
            )))
        }
        (None, None) => return Err(err("neither cmd nor grpc is configured".into())),
    };
    let mut child = Command::new(&cmd.path)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", cmd.path.display())))?;
    let body = serde_json::to_vec(request).expect("JSON");
    if let Some(mut stdin) = child.stdin.take() {
        // A provider that exits early closes the pipe; its exit status says why.
        let _ = stdin.write_all(&body);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("{}: {e}", cmd.path.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{} failed ({}): {}",
            cmd.path.display(),
            out.status,
            stderr.trim().chars().take(500).collect::<String>()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| err(format!("response is not JSON: {e}")))
}

/// Ask provider `name` to wrap the private options `optsdata`; `params` come from the
/// recipient argument `provider:NAME:PARAMS`.
pub fn wrap(config: &Config, name: &str, params: Option<&str>, optsdata: &[u8]) -> Result<Vec<u8>> {
    let provider = config.get(name)?;
    let param = b64_encode(params.unwrap_or("Enabled").as_bytes());
    let request = json!({
        "op": "keywrap",
        "keywrapparams": {
            "ec": {"Parameters": {name: [param]}, "DecryptConfig": {"Parameters": {}}},
            "optsdata": b64_encode(optsdata),
        },
        "keyunwrapparams": {"dc": null, "annotation": null},
    });
    let response = call(name, provider, &request)?;
    bytes(
        response
            .get("keywrapresults")
            .and_then(|r| r.get("annotation")),
    )
    .ok_or_else(|| Error::Provider {
        name: name.into(),
        reason: "the response has no keywrapresults.annotation".into(),
    })
}

/// Ask provider `name` to unwrap `annotation` (the bytes stored for it).
pub fn unwrap(config: &Config, name: &str, annotation: &[u8]) -> Result<Vec<u8>> {
    let provider = config.get(name)?;
    let request = json!({
        "op": "keyunwrap",
        "keywrapparams": {"ec": null, "optsdata": null},
        "keyunwrapparams": {"dc": {"Parameters": {}}, "annotation": b64_encode(annotation)},
    });
    let response = call(name, provider, &request)?;
    bytes(
        response
            .get("keyunwrapresults")
            .and_then(|r| r.get("optsdata")),
    )
    .ok_or_else(|| Error::Provider {
        name: name.into(),
        reason: "the response has no keyunwrapresults.optsdata".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_byte_encodings_are_accepted() {
        assert_eq!(bytes(Some(&json!("AQID"))), Some(vec![1, 2, 3]));
        assert_eq!(bytes(Some(&json!([1, 2, 3]))), Some(vec![1, 2, 3]));
        assert_eq!(bytes(Some(&json!([1, 256]))), None);
        assert_eq!(bytes(None), None);
    }

    #[test]
    fn an_unconfigured_provider_names_the_configured_ones() {
        let c: Config =
            serde_json::from_str(r#"{"key-providers":{"kbs":{"cmd":{"path":"/bin/false"}}}}"#)
                .unwrap();
        let e = wrap(&c, "other", None, b"x").unwrap_err().to_string();
        assert!(e.contains("configured: kbs"), "{e}");
        let e = wrap(&c, "kbs", None, b"x").unwrap_err().to_string();
        assert!(e.contains("/bin/false failed"), "{e}");
    }
}
