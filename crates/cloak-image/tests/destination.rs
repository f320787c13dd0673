//! A hostile registry steering the client elsewhere (redirects, a token realm, error bodies):
//! under the manager's address policy every internal hop is refused before it is connected to,
//! and nothing an internal service answers reaches an error message. The registries are small
//! in-process fakes because no real registry redirects or challenges like this; the "internal
//! service" is another loopback listener that counts the requests it gets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cloak_image::destination::{DestinationPolicy, REFUSED};
use cloak_image::registry::Registry;
use cloak_image::RegistryOptions;
use oci_client::Reference;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const SECRET: &str = "SECRET-OF-THE-INTERNAL-SERVICE";

type Respond = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A fake HTTP(S) server answering every request with `respond(path)` (a raw response).
struct Fake {
    addr: String,
    hits: Arc<AtomicUsize>,
}

impl Fake {
    fn port(&self) -> &str {
        self.addr.rsplit_once(':').unwrap().1
    }
}

async fn fake(tls: bool, respond: impl Fn(&str) -> String + Send + Sync + 'static) -> Fake {
    let respond: Respond = Arc::new(respond);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let acceptor = tls.then(|| {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (counter, acceptor, respond) = (counter.clone(), acceptor.clone(), respond.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(sock).await {
                            serve(s, &counter, &respond).await;
                        }
                    }
                    None => serve(sock, &counter, &respond).await,
                }
            });
        }
    });
    Fake { addr, hits }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(s: S, hits: &AtomicUsize, respond: &Respond) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        if r.get_mut()
            .write_all(respond(&path).as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let _ = r.get_mut().flush().await;
    }
}

fn response(status: &str, headers: &[String], body: &str) -> String {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s + "\r\n" + body
}

/// The internal service a hostile registry points at: its answer is the secret.
async fn internal(tls: bool) -> Fake {
    fake(tls, |_| response("404 Not Found", &[], SECRET)).await
}

/// The manager's options for a registry the operator listed as insecure (the fakes'
/// certificates are self-signed): the address policy, and no response body in errors.
fn manager_options(registry: &str) -> RegistryOptions {
    RegistryOptions {
        tls_verify: false,
        destinations: Some(Arc::new(DestinationPolicy::new(
            Vec::new(),
            [registry.to_string()],
        ))),
        quote_bodies: false,
        ..Default::default()
    }
}

/// `cloak convert --src-tls-verify=false`: any address, bodies quoted.
fn cli_options() -> RegistryOptions {
    RegistryOptions {
        tls_verify: false,
        ..Default::default()
    }
}

/// Pulls the manifest of `registry/app:1`, which must fail; the error message.
async fn pull_fails(registry: &str, opts: &RegistryOptions) -> String {
    let reference: Reference = format!("{registry}/app:1").parse().unwrap();
    let r = match Registry::connect(&reference, opts).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    match r.manifest(&reference).await {
        Ok(_) => panic!("the manifest of {registry} was pulled"),
        Err(e) => e.to_string(),
    }
}

/// A registry redirecting every manifest request to `to`.
async fn redirecting(to: String) -> Fake {
    fake(true, move |path| {
        if path == "/v2/" {
            return response("200 OK", &[], "{}");
        }
        response("302 Found", &[format!("Location: {to}")], "")
    })
    .await
}

#[tokio::test]
async fn redirects_to_internal_addresses_are_refused_before_connecting() {
    let inner = internal(true).await;
    for to in [
        format!("https://{}/latest/meta-data", inner.addr),
        format!("https://localhost:{}/latest/meta-data", inner.port()),
    ] {
        let reg = redirecting(to.clone()).await;
        let err = pull_fails(&reg.addr, &manager_options(&reg.addr)).await;
        assert!(err.contains(REFUSED), "{to}: {err}");
        assert!(!err.contains(SECRET), "{to}: {err}");
        assert_eq!(inner.hits.load(Ordering::SeqCst), 0, "{to}: {err}");
    }
}

#[tokio::test]
async fn redirects_from_https_down_to_http_are_refused_even_by_the_cli() {
    let inner = internal(false).await;
    let reg = redirecting(format!("http://{}/v2/app/manifests/1", inner.addr)).await;
    for opts in [manager_options(&reg.addr), cli_options()] {
        let err = pull_fails(&reg.addr, &opts).await;
        assert!(err.contains("from HTTPS to http"), "{err}");
        assert_eq!(inner.hits.load(Ordering::SeqCst), 0, "{err}");
    }
}

#[tokio::test]
async fn a_token_realm_at_an_internal_address_is_not_fetched() {
    let inner = internal(true).await;
    for realm in [
        format!("https://{}/token", inner.addr),
        format!("https://localhost:{}/token", inner.port()),
        format!("http://{}/token", inner.addr),
    ] {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"x\"");
        let reg = fake(true, move |_| {
            response("401 Unauthorized", std::slice::from_ref(&challenge), "{}")
        })
        .await;
        let err = pull_fails(&reg.addr, &manager_options(&reg.addr)).await;
        assert!(err.contains(REFUSED), "{realm}: {err}");
        assert!(!err.contains(SECRET), "{realm}: {err}");
        assert_eq!(inner.hits.load(Ordering::SeqCst), 0, "{realm}: {err}");
    }
}

#[tokio::test]
async fn error_bodies_are_not_quoted_by_the_manager_and_escaped_by_the_cli() {
    let reg = fake(true, |path| {
        if path == "/v2/" {
            return response("200 OK", &[], "{}");
        }
        let body = format!("{SECRET}\n\x1b[31mforged log line");
        response("500 Internal Server Error", &[], &body)
    })
    .await;
    let err = pull_fails(&reg.addr, &manager_options(&reg.addr)).await;
    assert!(err.contains("500") && err.contains(&reg.addr), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    let err = pull_fails(&reg.addr, &cli_options()).await;
    assert!(err.contains(SECRET), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\n'), "{err:?}");
}

#[tokio::test]
async fn an_unlisted_internal_registry_is_refused_before_any_connection() {
    let reg = fake(true, |_| response("404 Not Found", &[], "{}")).await;
    for host in [reg.addr.clone(), format!("localhost:{}", reg.port())] {
        let opts = RegistryOptions {
            destinations: Some(Arc::new(DestinationPolicy::default())),
            quote_bodies: false,
            ..Default::default()
        };
        let err = pull_fails(&host, &opts).await;
        assert!(err.contains(REFUSED), "{host}: {err}");
    }
    assert_eq!(reg.hits.load(Ordering::SeqCst), 0);
    // Listed by the operator, it is reached.
    let listed = RegistryOptions {
        tls_verify: false,
        destinations: Some(Arc::new(DestinationPolicy::new(
            [reg.addr.clone()],
            Vec::new(),
        ))),
        quote_bodies: false,
        ..Default::default()
    };
    let err = pull_fails(&reg.addr, &listed).await;
    assert!(err.contains("404") || err.contains("not found"), "{err}");
    assert!(reg.hits.load(Ordering::SeqCst) > 0);
}
