//! The ocicrypt keyprovider protocol (`keywrap/keyprovider`), command and gRPC transports.
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
            let method = match request["op"].as_str() {
                Some("keywrap") => "WrapKey",
                _ => "UnWrapKey",
            };
            let body = serde_json::to_vec(request).expect("JSON");
            let reply = grpc::call(addr, method, &body).map_err(err)?;
            return serde_json::from_slice(&reply)
                .map_err(|e| err(format!("response is not JSON: {e}")));
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

/// The gRPC transport: `keyprovider.KeyProviderService/{WrapKey,UnWrapKey}` over plaintext
/// HTTP/2 (as ocicrypt before 1.3, which added `grpc-tls`), each message one protobuf `bytes`
/// field (number 1) holding the same JSON as the command transport.
mod grpc {
    use bytes::{Buf, Bytes, BytesMut};

    fn protobuf_bytes_field(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x0a];
        let mut n = payload.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(payload);
        out
    }

    /// Field 1 of a protobuf message (other fields skipped).
    fn field_one(mut msg: &[u8]) -> Option<Vec<u8>> {
        let varint = |m: &mut &[u8]| -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&b, rest) = m.split_first()?;
                *m = rest;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        let mut found = None;
        while !msg.is_empty() {
            let key = varint(&mut msg)?;
            match key & 7 {
                0 => {
                    varint(&mut msg)?;
                }
                1 => msg = msg.get(8..)?,
                5 => msg = msg.get(4..)?,
                2 => {
                    let len = usize::try_from(varint(&mut msg)?).ok()?;
                    let value = msg.get(..len)?;
                    if key >> 3 == 1 {
                        found = Some(value.to_vec());
                    }
                    msg = &msg[len..];
                }
                _ => return None,
            }
        }
        Some(found.unwrap_or_default())
    }

    async fn unary(addr: &str, method: &str, json: &[u8]) -> Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to gRPC provider {addr}: {e}"))?;
        let (client, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{addr}/keyprovider.KeyProviderService/{method}"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let (response, mut send) = client
            .send_request(request, false)
            .map_err(|e| format!("gRPC request to {addr}: {e}"))?;
        let message = protobuf_bytes_field(json);
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.extend_from_slice(&[0]);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        send.send_data(frame.freeze(), true)
            .map_err(|e| format!("gRPC request to {addr}: {e}"))?;
        let response = response
            .await
            .map_err(|e| format!("gRPC response from {addr}: {e}"))?;
        let status_of = |h: &http::HeaderMap| {
            h.get("grpc-status").map(|v| {
                let message = h
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("");
                (v.to_str().unwrap_or("?").to_string(), message.to_string())
            })
        };
        if response.status() != 200 {
            return Err(format!(
                "gRPC provider {addr} answered HTTP {}",
                response.status()
            ));
        }
        let (parts, mut body) = response.into_parts();
        // A trailers-only response carries the status in the headers.
        if let Some((code, msg)) = status_of(&parts.headers) {
            if code != "0" {
                return Err(format!("gRPC status {code}: {msg}"));
            }
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk: Bytes = chunk.map_err(|e| format!("gRPC response from {addr}: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
            if data.len() > 16 << 20 {
                return Err("gRPC response larger than 16 MiB".into());
            }
        }
        if let Some(trailers) = body.trailers().await.map_err(|e| e.to_string())? {
            if let Some((code, msg)) = status_of(&trailers) {
                if code != "0" {
                    return Err(format!("gRPC status {code}: {msg}"));
                }
            }
        }
        let mut data = data.freeze();
        if data.len() < 5 || data[0] != 0 {
            return Err("gRPC response is not one uncompressed message".into());
        }
        data.advance(1);
        let len = data.get_u32() as usize;
        let message = data.get(..len).ok_or("truncated gRPC message")?;
        field_one(message).ok_or_else(|| "malformed protobuf in the gRPC response".into())
    }

    /// One unary call, on a thread of its own (callers may be inside an async runtime).
    pub(super) fn call(addr: &str, method: &str, json: &[u8]) -> Result<Vec<u8>, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    tokio::time::timeout(
                        std::time::Duration::from_secs(60),
                        unary(addr, method, json),
                    )
                    .await
                    .map_err(|_| format!("gRPC provider {addr} did not answer within 60 s"))?
                })
            })
            .join()
            .unwrap_or_else(|_| Err("gRPC client thread panicked".into()))
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn protobuf_bytes_field_round_trips() {
            let long = vec![7u8; 300];
            let m = super::protobuf_bytes_field(&long);
            assert_eq!(&m[..3], &[0x0a, 0xac, 0x02]);
            assert_eq!(super::field_one(&m).unwrap(), long);
            // Unknown fields before it are skipped.
            let mut with_other = vec![0x10, 0x05];
            with_other.extend_from_slice(&super::protobuf_bytes_field(b"x"));
            assert_eq!(super::field_one(&with_other).unwrap(), b"x");
        }
    }
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
