//! The launcher's HTTPS client: one request per connection (HTTP/1.1, `Connection: close`),
//! TLS verified against the CA pinned in the measured run configuration, over TCP or (on
//! Nitro) vsock to the parent's `cloak proxy`. Small on purpose: the launcher is a static
//! binary and needs four requests.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A byte stream to the manager.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// How the launcher reaches the manager.
#[derive(Debug, Clone)]
pub enum Route {
    /// TCP to `host:port` (SGX, `cloak run`'s user-mode network).
    Tcp(String),
    /// vsock to the parent (CID 3) at this port, where `cloak proxy` forwards to the manager.
    Vsock(u32),
}

/// Largest response body read (app configs included).
const MAX_RESPONSE: usize = 4 << 20;

/// Longest a single read or write may block, whatever the deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A socket (TCP or vsock) whose every read and write ends by `deadline`: the kernel's
/// timeouts are set to the time left before each call, so a peer that stalls (a hostile Nitro
/// parent holding a vsock connection, a manager that trickles bytes) cannot hold the launcher
/// past the time the image allows.
struct Timed<S> {
    sock: S,
    deadline: Instant,
}

/// `SO_RCVTIMEO` and `SO_SNDTIMEO` of `fd`.
fn set_timeouts(fd: &impl AsRawFd, d: Duration) -> std::io::Result<()> {
    // At least 1 ms: a zero timeval means "block forever".
    let d = d.max(Duration::from_millis(1));
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a valid descriptor and a timeval that outlives the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl<S: AsRawFd> Timed<S> {
    /// Arm the socket's timeouts with the time left, or fail when none is.
    fn arm(&self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        set_timeouts(&self.sock, left.min(IO_TIMEOUT))
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no complete answer within the time the image allows",
    )
}

/// A blocking socket whose timeout expired reports EAGAIN: say what it means.
fn expired(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        e
    }
}

impl<S: Read + AsRawFd> Read for Timed<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.sock.read(buf).map_err(expired)
    }
}

impl<S: Write + AsRawFd> Write for Timed<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.sock.write(buf).map_err(expired)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

impl Route {
    fn connect(&self, deadline: Instant) -> std::io::Result<Box<dyn Stream>> {
        match self {
            Route::Tcp(addr) => {
                use std::net::ToSocketAddrs;
                let mut last = std::io::Error::other(format!("{addr}: no address"));
                for a in addr.to_socket_addrs()? {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(timed_out());
                    }
                    match std::net::TcpStream::connect_timeout(
                        &a,
                        left.min(Duration::from_secs(10)),
                    ) {
                        Ok(sock) => return Ok(Box::new(Timed { sock, deadline })),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            // The kernel bounds a vsock connect itself (2 s by default).
            Route::Vsock(port) => vsock_connect(3, *port)
                .map(|sock| Box::new(Timed { sock, deadline }) as Box<dyn Stream>),
        }
    }
}

fn vsock_connect(cid: u32, port: u32) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a socket we own and a fully initialised sockaddr_vm; the descriptor is handed to
    // a File that closes it.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let file = std::fs::File::from_raw_fd(fd);
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = cid;
        addr.svm_port = port;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    }
}

/// What went wrong talking to the manager.
#[derive(Debug)]
pub enum HttpError {
    /// Could not connect, or the connection broke: worth retrying.
    Transport(String),
    /// TLS refused the manager (not the pinned CA, wrong name): never retried, nothing sent.
    Tls(String),
}

/// A manager endpoint with its pinned TLS configuration.
#[derive(Clone)]
pub struct Manager {
    route: Route,
    host: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manager({}, {:?})", self.host, self.route)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| format!("the pinned manager CA: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("the pinned manager CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the pinned manager CA holds no certificate".into());
    }
    Ok(roots)
}

impl Manager {
    /// `url` = `https://host[:port]`; `route` says how bytes get there.
    pub fn new(url: &str, ca_pem: &str, route: Option<Route>) -> Result<Manager, String> {
        let host = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("manager URL {url:?} is not https://"))?
            .trim_end_matches('/')
            .to_string();
        let name = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => host.as_str(),
        }
        .trim_matches(['[', ']'])
        .to_string();
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| format!("manager URL {url:?}: {name:?} is not a host name"))?;
        let addr = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.clone()
        } else {
            format!("{host}:443")
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca_pem)?)
            .with_no_client_auth();
        Ok(Manager {
            route: route.unwrap_or(Route::Tcp(addr)),
            host,
            server_name,
            tls: Arc::new(tls),
        })
    }

    /// The same manager, authenticating with `chain_pem` (leaf first) and `key_der` (PKCS#8).
    pub fn with_client_cert(
        &self,
        ca_pem: &str,
        chain_pem: &str,
        key_der: &[u8],
    ) -> Result<Manager, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the issued certificate: {e}"))?;
        let key = PrivateKeyDer::try_from(key_der.to_vec())
            .map_err(|e| format!("the generated key: {e}"))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca_pem)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the issued certificate and key: {e}"))?;
        Ok(Manager {
            tls: Arc::new(tls),
            ..self.clone()
        })
    }

    /// One request, given a minute; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        self.request_until(method, path, body, Instant::now() + IO_TIMEOUT)
    }

    /// One request that ends (answered or not) by `deadline`: connect, TLS, the request and
    /// the whole answer; returns the status and the body.
    pub fn request_until(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let t = |e: std::io::Error| HttpError::Transport(format!("{}: {e}", self.host));
        let stream = self.route.connect(deadline).map_err(t)?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        // The handshake completes (and the manager's certificate is verified against the
        // pinned CA) before a byte of the request is written.
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(classify(&self.host, e));
            }
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.host
        );
        if method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        tls.write_all(req.as_bytes())
            .and_then(|_| tls.flush())
            .map_err(|e| classify(&self.host, e))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_RESPONSE {
                        return Err(HttpError::Transport(format!(
                            "{}: response larger than {MAX_RESPONSE} bytes",
                            self.host
                        )));
                    }
                    if complete(&raw) {
                        break;
                    }
                }
                // A peer that closes without close_notify after a complete response is fine.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(classify(&self.host, e)),
            }
        }
        parse(&raw).map_err(|e| HttpError::Transport(format!("{}: {e}", self.host)))
    }
}

fn classify(host: &str, e: std::io::Error) -> HttpError {
    let tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if tls {
        HttpError::Tls(format!(
            "{host}: {e} (the manager's TLS certificate does not chain to the CA pinned in this image)"
        ))
    } else {
        HttpError::Transport(format!("{host}: {e}"))
    }
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

fn complete(raw: &[u8]) -> bool {
    let Some(end) = header_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    content_length(&head).is_some_and(|n| raw.len() >= end + n)
}

/// Status and body of a response (Content-Length, chunked, or to the end).
fn parse(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = header_end(raw).ok_or("the response ended inside its headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status line")?;
    let body = &raw[end..];
    if let Some(n) = content_length(&head) {
        if body.len() < n {
            return Err(format!("the body ended after {} of {n} bytes", body.len()));
        }
        return Ok((status, body[..n].to_vec()));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk header is cut")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "a chunk size is not hex")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err("a chunk is cut".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn bodies_are_read_by_length_or_chunks() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, (200, b"{}".to_vec()));
        let r = parse(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r, (403, b"abcde".to_vec()));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
    }
}
