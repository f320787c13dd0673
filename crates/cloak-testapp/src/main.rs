//! `cloak-testapp KEY CERT CHAIN ADDR FILE VAR`: the application of the end-to-end tests of
//! attested images (busybox has no TLS). It prints the subject of the certificate the launcher
//! installed, the config file and the environment variable the manager released, then serves
//! HTTPS on ADDR with that key and certificate (plus CHAIN), answering every request with the
//! same three facts. Built statically by the tests (not shipped, not part of cloak).
//!
//! `cloak-testapp --print-subject CERT`: print the certificate's subject and exit (the app of
//! the attested Nitro image in scripts/demo.sh).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::der::Decode;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("testapp: {what}: {e}");
    std::process::exit(3);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, cert] = args.as_slice() {
        if flag == "--print-subject" {
            let pem = std::fs::read(cert).unwrap_or_else(|e| fail(cert, e));
            let der = CertificateDer::pem_slice_iter(&pem)
                .next()
                .unwrap_or_else(|| fail(cert, "no certificate"))
                .unwrap_or_else(|e| fail(cert, e));
            let subject = x509_cert::Certificate::from_der(&der)
                .map(|c| c.tbs_certificate.subject.to_string())
                .unwrap_or_else(|e| fail(cert, e));
            println!("app: my certificate's subject is {subject}");
            return;
        }
    }
    let [key, cert, chain, addr, file, var] = args.as_slice() else {
        fail("usage", "cloak-testapp KEY CERT CHAIN ADDR FILE VAR");
    };
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for path in [cert, chain] {
        let pem = std::fs::read(path).unwrap_or_else(|e| fail(path, e));
        for c in CertificateDer::pem_slice_iter(&pem) {
            certs.push(c.unwrap_or_else(|e| fail(path, e)));
        }
    }
    let leaf = certs
        .first()
        .unwrap_or_else(|| fail(cert, "no certificate"));
    let subject = x509_cert::Certificate::from_der(leaf)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|e| fail(cert, e));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(key, e));
    let config = std::fs::read_to_string(file).unwrap_or_else(|e| fail(file, e));
    let env = std::env::var(var).unwrap_or_else(|e| fail(var, e));
    let facts = format!(
        "subject: {subject}\nconfig file {file}: {}\nenv {var}: {env}\n",
        config.trim_end()
    );
    print!(
        "testapp: {}",
        facts
            .replace('\n', "\ntestapp: ")
            .trim_end_matches("testapp: ")
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail("TLS", e))
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| fail("the installed key and certificate", e));
    let tls = Arc::new(tls);
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(addr, e));
    println!("testapp: serving HTTPS on {addr}");
    std::io::stdout().flush().ok();
    for sock in listener.incoming().flatten() {
        let tls = tls.clone();
        let facts = facts.clone();
        std::thread::spawn(move || {
            let Ok(conn) = rustls::ServerConnection::new(tls) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut r = BufReader::new(&mut s);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{facts}",
                facts.len()
            );
            let _ = s.write_all(resp.as_bytes());
            s.conn.send_close_notify();
            let _ = s.flush();
        });
    }
}
