//! A hostile in-process registry for cases no real registry produces: it serves one image
//! (manifest by tag or digest, blobs by digest) over plain HTTP/1.1, with one fault injected.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// The fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve every layer with its first byte flipped (content no longer matches its digest).
    WrongBlobDigest,
    /// Announce the full Content-Length of layers but send half and close.
    TruncatedBlob,
    /// Serve a 10 MiB manifest.
    HugeManifest,
    /// Serve a manifest with an unknown media type.
    UnknownMediaType,
    /// Serve a manifest body of 1 GiB without a Content-Length (ended by closing).
    EndlessManifest,
}

/// A running fake registry; the listener thread ends with the test process.
pub struct FakeRegistry {
    pub addr: String,
    /// Bytes of manifest bodies written so far (what the client let through its socket).
    pub manifest_bytes: Arc<std::sync::atomic::AtomicU64>,
}

struct Content {
    manifest: Vec<u8>,
    manifest_type: String,
    blobs: HashMap<String, Vec<u8>>,
    layers: Vec<String>,
    fault: Fault,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeRegistry {
    /// Serve the image `tag` of the OCI layout at `layout` as `repo:tag`, with `fault`.
    pub fn serve(layout: &std::path::Path, fault: Fault) -> Self {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let md = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
        let mut manifest = blob(&md);
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut blobs = HashMap::new();
        let cd = parsed["config"]["digest"].as_str().unwrap().to_string();
        blobs.insert(cd.clone(), blob(&cd));
        let mut layers = Vec::new();
        for l in parsed["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap().to_string();
            blobs.insert(d.clone(), blob(&d));
            layers.push(d);
        }
        let mut manifest_type = "application/vnd.oci.image.manifest.v1+json".to_string();
        match fault {
            Fault::HugeManifest => {
                let mut big = parsed.clone();
                big["annotations"] = serde_json::json!({ "padding": "x".repeat(10 << 20) });
                manifest = serde_json::to_vec(&big).unwrap();
            }
            Fault::UnknownMediaType => {
                let mut odd = parsed.clone();
                odd["mediaType"] = "application/vnd.example.unknown.v1+json".into();
                manifest = serde_json::to_vec(&odd).unwrap();
                manifest_type = "application/vnd.example.unknown.v1+json".into();
            }
            _ => {}
        }
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let content = Arc::new(Content {
            manifest,
            manifest_type,
            blobs,
            layers,
            fault,
            sent: sent.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let content = content.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &content);
                });
            }
        });
        FakeRegistry {
            addr,
            manifest_bytes: sent,
        }
    }
}

fn handle(mut stream: TcpStream, c: &Content) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
        }
        let head = method == "HEAD";
        let respond = |stream: &mut TcpStream,
                       status: &str,
                       ctype: &str,
                       body: &[u8],
                       extra: &str|
         -> std::io::Result<()> {
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}\r\n",
                body.len()
            )?;
            if !head {
                stream.write_all(body)?;
            }
            Ok(())
        };
        if path == "/v2/" {
            respond(&mut stream, "200 OK", "application/json", b"{}", "")?;
        } else if path.contains("/manifests/") && matches!(c.fault, Fault::EndlessManifest) {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
                c.manifest_type
            )?;
            if !head {
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..(1 << 30) / chunk.len() {
                    stream.write_all(&chunk)?;
                    c.sent
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            return Ok(());
        } else if path.contains("/manifests/") {
            let digest = format!(
                "Docker-Content-Digest: sha256:{}\r\n",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&c.manifest))
            );
            respond(
                &mut stream,
                "200 OK",
                &c.manifest_type,
                &c.manifest,
                &digest,
            )?;
        } else if let Some(d) = path.split("/blobs/").nth(1) {
            let Some(body) = c.blobs.get(d) else {
                respond(
                    &mut stream,
                    "404 Not Found",
                    "application/json",
                    br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
                    "",
                )?;
                continue;
            };
            let is_layer = c.layers.iter().any(|l| l == d);
            match c.fault {
                Fault::WrongBlobDigest if is_layer => {
                    let mut bad = body.clone();
                    bad[0] ^= 0xff;
                    respond(&mut stream, "200 OK", "application/octet-stream", &bad, "")?;
                }
                Fault::TruncatedBlob if is_layer && !head => {
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len())?;
                    stream.write_all(&body[..body.len() / 2])?;
                    return Ok(()); // close mid-body
                }
                _ => respond(&mut stream, "200 OK", "application/octet-stream", body, "")?,
            }
        } else {
            respond(&mut stream, "404 Not Found", "application/json", b"{}", "")?;
        }
    }
}
