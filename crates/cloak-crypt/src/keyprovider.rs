//! The ocicrypt keyprovider protocol (`keywrap/keyprovider`), command and gRPC transports.
//!
//! Providers are configured as in Go: a JSON file named by `$OCICRYPT_KEYPROVIDER_CONFIG` (or
//! given explicitly), `{"key-providers": {"NAME": {"cmd": {"path": …, "args": […]}}}}`. The
//! request and response JSON follow Go's shapes: `[]byte` fields are sent as standard base64
//! and accepted back as base64 strings or integer arrays (the two encodings real providers
//! use). The wrapped bytes are stored under `org.opencontainers.image.enc.keys.provider.NAME`,
//! so the provider name is part of the image format.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::spec::{b64, b64_encode};

/// Environment variable naming the provider configuration file.
pub const CONFIG_ENV: &str = "OCICRYPT_KEYPROVIDER_CONFIG";
/// Environment variable overriding [`DEFAULT_TIMEOUT`] (whole seconds).
pub const TIMEOUT_ENV: &str = "CLOAK_KEYPROVIDER_TIMEOUT";
/// How long one provider call may take: a command provider is killed (with everything it
/// started in its process group) after it; a gRPC call is abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response read from a provider (a wrapped key is a few KiB).
pub const MAX_RESPONSE: usize = 16 << 20;
/// How much of a failing provider's stderr is kept for the error message; the rest is read
/// and dropped so that a chatty provider never blocks on a full pipe.
const STDERR_KEPT: usize = 64 << 10;

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
    /// Limit of one provider call ([`DEFAULT_TIMEOUT`] when `None`); [`Config::load`] takes
    /// it from `$CLOAK_KEYPROVIDER_TIMEOUT`.
    #[serde(skip)]
    pub timeout: Option<Duration>,
}

/// The timeout `$CLOAK_KEYPROVIDER_TIMEOUT` gives, if set (`value` is its value).
fn timeout_from_env(value: Option<std::ffi::OsString>) -> Result<Option<Duration>> {
    let Some(v) = value else {
        return Ok(None);
    };
    v.to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| Error::Provider {
            name: "(configuration)".into(),
            reason: format!("${TIMEOUT_ENV} is {v:?}; give a whole number of seconds above 0"),
        })
}

impl Config {
    /// Load from `path`, else from `$OCICRYPT_KEYPROVIDER_CONFIG`, else empty; the call
    /// timeout from `$CLOAK_KEYPROVIDER_TIMEOUT`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let timeout = timeout_from_env(std::env::var_os(TIMEOUT_ENV))?;
        Ok(Config {
            timeout,
            ..Self::load_file(path)?
        })
    }

    fn load_file(path: Option<&Path>) -> Result<Self> {
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

fn call(config: &Config, name: &str, provider: &Provider, request: &Value) -> Result<Value> {
    let err = |reason: String| Error::Provider {
        name: name.into(),
        reason,
    };
    let timeout = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let cmd = match (&provider.cmd, &provider.grpc) {
        (Some(c), _) => c,
        (None, Some(addr)) => {
            let method = match request["op"].as_str() {
                Some("keywrap") => "WrapKey",
                _ => "UnWrapKey",
            };
            let body = serde_json::to_vec(request).expect("JSON");
            let reply = grpc::call(addr, method, &body, timeout).map_err(err)?;
            return serde_json::from_slice(&reply)
                .map_err(|e| err(format!("response is not JSON: {e}")));
        }
        (None, None) => return Err(err("neither cmd nor grpc is configured".into())),
    };
    let body = serde_json::to_vec(request).expect("JSON");
    let out = run_command(cmd, body, timeout).map_err(err)?;
    serde_json::from_slice(&out).map_err(|e| err(format!("response is not JSON: {e}")))
}

/// What a reader thread of a provider's output reports.
enum Output {
    Stdout(std::io::Result<Vec<u8>>),
    Stderr(Vec<u8>),
}

/// Run a command provider: the request goes to its stdin while its stdout and stderr are
/// read (each on its own thread, so no pipe can fill up and stall both sides); stdout is
/// bounded by [`MAX_RESPONSE`]; the whole call by `timeout`, after which the provider's
/// process group is killed.
fn run_command(
    cmd: &CmdProvider,
    body: Vec<u8>,
    timeout: Duration,
) -> std::result::Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let shown = cmd.path.display();
    let mut child = Command::new(&cmd.path)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout also ends what it started (a helper
        // holding the pipes open would otherwise keep the reader threads waiting).
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let group = child.id();
    let kill_group = || {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads;
        // no memory is involved.
        unsafe { libc::kill(-(group as libc::pid_t), libc::SIGKILL) };
    };
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    std::thread::spawn(move || {
        // A provider that exits early closes the pipe; its exit status says why.
        let _ = stdin.write_all(&body);
    });
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = (&mut stdout)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut out)
            .map(|_| out);
        let _ = tx.send(Output::Stdout(r));
    });
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut stderr)
            .take(STDERR_KEPT as u64)
            .read_to_end(&mut kept);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        let _ = tx2.send(Output::Stderr(kept));
    });
    let timed_out = |child: &mut std::process::Child| {
        kill_group();
        let _ = child.wait();
        format!(
            "{shown} did not finish within {} s and was killed; if the provider is just slow, raise ${TIMEOUT_ENV} (seconds)",
            timeout.as_secs_f64()
        )
    };
    let (mut response, mut errors) = (None, None);
    while response.is_none() || errors.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Output::Stdout(r)) => {
                let r = r.map_err(|e| format!("reading the answer of {shown}: {e}"));
                if r.as_ref().is_ok_and(|o| o.len() > MAX_RESPONSE) {
                    kill_group();
                    let _ = child.wait();
                    return Err(format!(
                        "{shown} answered more than {} MiB; a key provider's response is a few KiB",
                        MAX_RESPONSE >> 20
                    ));
                }
                response = Some(r?);
            }
            Ok(Output::Stderr(e)) => errors = Some(e),
            Err(_) => return Err(timed_out(&mut child)),
        }
    }
    // Both pipes are closed: the provider has exited or is about to.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Err(timed_out(&mut child)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(errors.as_deref().unwrap_or_default());
        return Err(format!(
            "{shown} failed ({status}): {}",
            stderr
                .trim()
                .chars()
                .take(500)
                .flat_map(char::escape_default)
                .collect::<String>()
        ));
    }
    Ok(response.unwrap_or_default())
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
            if data.len() > super::MAX_RESPONSE {
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
    pub(super) fn call(
        addr: &str,
        method: &str,
        json: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    tokio::time::timeout(timeout, unary(addr, method, json))
                        .await
                        .map_err(|_| {
                            format!(
                                "gRPC provider {addr} did not answer within {} s; if it is just slow, raise ${}",
                                timeout.as_secs_f64(),
                                super::TIMEOUT_ENV
                            )
                        })?
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
    let response = call(config, name, provider, &request)?;
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
    let response = call(config, name, provider, &request)?;
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

    /// A configuration with one command provider `NAME` running `script` with `/bin/sh`
    /// (not executed directly: a script file still open for writing in a forked test
    /// process would make exec fail with ETXTBSY).
    fn provider(dir: &Path, name: &str, script: &str, timeout: Option<u64>) -> Config {
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, script).unwrap();
        let mut c: Config = serde_json::from_value(json!({"key-providers": {name: {"cmd": {
            "path": "/bin/sh", "args": [path]}}}}))
        .unwrap();
        c.timeout = timeout.map(Duration::from_secs);
        c
    }

    /// Run `f` on a thread; a call that never returns fails the test instead of hanging it.
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(300))
            .expect("the provider call never returned")
    }

    const ANSWER: &str = r#"echo '{"keyunwrapresults":{"optsdata":"AQID"}}'"#;

    #[test]
    fn a_provider_that_fills_stderr_before_reading_stdin_is_answered() {
        let d = tempfile::tempdir().unwrap();
        // 1 MiB of stderr before the request is read: far beyond a pipe's 64 KiB.
        let c = provider(
            d.path(),
            "chatty",
            &format!("head -c 1048576 /dev/zero | tr '\\0' x >&2\ncat >/dev/null\n{ANSWER}\n"),
            None,
        );
        // A request larger than a pipe, so that writing it blocks until the provider reads.
        let big = vec![7u8; 256 << 10];
        let out = returns(move || unwrap(&c, "chatty", &big)).unwrap();
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn a_hanging_provider_is_killed_with_its_children_after_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        // The background sleep keeps stdout open after the shell is gone: the whole
        // process group must go.
        let c = provider(d.path(), "stuck", "sleep 1000 &\nsleep 1000\n", Some(1));
        let e = returns(move || unwrap(&c, "stuck", b"x"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key provider stuck: "), "{e}");
        assert!(e.contains("did not finish within 1 s"), "{e}");
        assert!(e.contains(TIMEOUT_ENV), "{e}");
    }

    #[test]
    fn a_huge_answer_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = provider(
            d.path(),
            "huge",
            "cat >/dev/null\nexec cat /dev/zero\n",
            None,
        );
        let e = returns(move || unwrap(&c, "huge", b"x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("answered more than 16 MiB"), "{e}");
    }

    #[test]
    fn a_failing_provider_is_named_with_a_bounded_escaped_stderr() {
        let d = tempfile::tempdir().unwrap();
        let c = provider(
            d.path(),
            "noisy",
            "printf 'bad\\033[2J' >&2\nhead -c 10000000 /dev/zero >&2\nexit 3\n",
            None,
        );
        let e = returns(move || unwrap(&c, "noisy", b"x"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key provider noisy: /bin/sh failed"), "{e}");
        assert!(e.contains("bad\\u{1b}[2J"), "{e}");
        assert!(!e.contains('\u{1b}') && e.len() < 4000, "{e}");
    }

    #[test]
    fn a_provider_that_ignores_its_request_still_answers() {
        let d = tempfile::tempdir().unwrap();
        let c = provider(d.path(), "deaf", &format!("{ANSWER}\n"), None);
        let big = vec![7u8; 1 << 20];
        assert_eq!(
            returns(move || unwrap(&c, "deaf", &big)).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn the_timeout_comes_from_the_environment_or_is_refused() {
        let t = |v: &str| timeout_from_env(Some(v.into()));
        assert_eq!(t("7").unwrap(), Some(Duration::from_secs(7)));
        for bad in ["soon", "0", "-1", ""] {
            let e = t(bad).unwrap_err().to_string();
            assert!(
                e.contains("CLOAK_KEYPROVIDER_TIMEOUT") && e.contains("whole number"),
                "{e}"
            );
        }
        assert_eq!(timeout_from_env(None).unwrap(), None);
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
