//! `cloak proxy`: on a Nitro parent instance, forward the enclave's vsock port to the manager
//! and nowhere else (nitro-cli's vsock-proxy with a one-entry allowlist).
//!
//! The enclave side does not name a destination: the launcher connects to CID 3 at the port its
//! image configures and speaks TLS, and the proxy dials `--to` for every connection it accepts.
//! A client that tries to name another destination is refused before anything is dialled:
//! - a TLS ClientHello whose server name (SNI) is not the destination's (`--server-name`, by
//!   default the host of `--to`);
//! - an HTTP `CONNECT host:port` for anything but the destination (`CONNECT` to the
//!   destination itself is answered `200` and forwarded, so HTTP clients set up with a proxy
//!   work too; another target gets `403` naming the one allowed);
//! - anything else (the manager speaks only HTTPS).
//!
//! Connections are bounded (`--max-connections`; more are closed at once), the first bytes
//! must arrive within 10 s, the destination must answer within `--connect-timeout`, and a
//! connection idle for `--idle-timeout` in both directions is closed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Arguments of `cloak proxy`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("listen_on").required(true).args(["vsock_port", "listen"]))]
pub struct Args {
    /// Listen on this vsock port (any CID: the enclave connects to CID 3, the parent).
    #[arg(long, value_name = "PORT")]
    pub vsock_port: Option<u32>,
    /// Listen on this TCP address instead (machines without vsock, tests), e.g. 127.0.0.1:0.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The one destination: the manager's HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// The TLS server name clients may ask for (default: the host of --to; with an IP
    /// address there and no --server-name, only clients that send no server name are let through).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Connections open at once; more are closed immediately.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds to wait for the destination to accept a connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Close a connection after this many seconds without data in either direction.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
}

/// How long a client has to send its first bytes (ClientHello or CONNECT request).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the proxy reads before deciding (a ClientHello or a CONNECT request fits).
const MAX_FIRST_BYTES: usize = 16 * 1024;

/// What the proxy checks every connection against.
#[derive(Debug, Clone)]
struct Policy {
    /// `--to` as given.
    to: String,
    host: String,
    port: u16,
    /// The server name clients may send (None: `--to` is an IP address without --server-name).
    server_name: Option<String>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

fn policy(args: &Args) -> anyhow::Result<Policy> {
    let (host, port) = args.to.rsplit_once(':').with_context(|| {
        format!(
            "--to {:?} is not HOST:PORT (the manager's address, e.g. manager.example:443)",
            args.to
        )
    })?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("--to {:?}: {port:?} is not a port (1-65535)", args.to))?;
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    if host.is_empty() {
        anyhow::bail!("--to {:?} has no host", args.to);
    }
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections 0 would refuse everything; give at least 1");
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let server_name = args
        .server_name
        .as_ref()
        .map(|s| s.to_ascii_lowercase())
        .or_else(|| (!is_ip).then(|| host.clone()));
    Ok(Policy {
        to: args.to.clone(),
        host,
        port,
        server_name,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
    })
}

/// What the first bytes of a connection ask for.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Forward: `reply` goes back to the client first, `forward` to the destination first.
    Allow {
        reply: Option<&'static [u8]>,
        forward: Vec<u8>,
    },
    /// Not forwarded: why (logged), and what the client gets before the connection closes.
    Refuse {
        reason: String,
        reply: Option<String>,
    },
    /// More bytes are needed.
    Incomplete,
}

impl Policy {
    fn decide(&self, first: &[u8]) -> Decision {
        if first.is_empty() {
            return Decision::Incomplete;
        }
        if first[0] == 0x16 {
            return match client_hello_sni(first) {
                Sni::Incomplete if first.len() < MAX_FIRST_BYTES => Decision::Incomplete,
                Sni::Incomplete | Sni::Malformed => Decision::Refuse {
                    reason: "a TLS record that is not a ClientHello".into(),
                    reply: None,
                },
                Sni::None => Decision::Allow {
                    reply: None,
                    forward: first.to_vec(),
                },
                Sni::Name(name) => {
                    let name = name.to_ascii_lowercase();
                    if self.server_name.as_deref() == Some(name.as_str()) {
                        Decision::Allow {
                            reply: None,
                            forward: first.to_vec(),
                        }
                    } else {
                        Decision::Refuse {
                            reason: format!(
                                "TLS server name {name:?} is not the destination ({}); this proxy forwards only to {}",
                                self.server_name.as_deref().unwrap_or("an IP address: give --server-name to allow a name"),
                                self.to
                            ),
                            reply: None,
                        }
                    }
                }
            };
        }
        if b"CONNECT ".starts_with(&first[..first.len().min(8)]) {
            let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") else {
                return if first.len() < MAX_FIRST_BYTES {
                    Decision::Incomplete
                } else {
                    Decision::Refuse {
                        reason: "a CONNECT request without an end".into(),
                        reply: Some(http_reply(400, "the CONNECT request has no end")),
                    }
                };
            };
            let line = String::from_utf8_lossy(&first[..end]);
            let target = line
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_ascii_lowercase();
            let allowed = target.rsplit_once(':').is_some_and(|(h, p)| {
                let h = h.trim_matches(['[', ']']);
                p.parse::<u16>() == Ok(self.port)
                    && (h == self.host || self.server_name.as_deref() == Some(h))
            });
            if allowed {
                return Decision::Allow {
                    reply: Some(b"HTTP/1.1 200 Connection established\r\n\r\n"),
                    forward: first[end + 4..].to_vec(),
                };
            }
            return Decision::Refuse {
                reason: format!("CONNECT {target:?} is not the destination {}", self.to),
                reply: Some(http_reply(
                    403,
                    &format!("this proxy forwards only to {}, not {target}", self.to),
                )),
            };
        }
        Decision::Refuse {
            reason: "neither TLS nor an HTTP CONNECT request (the manager speaks only HTTPS)"
                .into(),
            reply: None,
        }
    }
}

fn http_reply(status: u16, detail: &str) -> String {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Bad Gateway",
    };
    let body = format!("cloak proxy: {detail}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The server name of a ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Sni {
    Name(String),
    None,
    Incomplete,
    Malformed,
}

/// Read the SNI extension of the ClientHello in the first TLS record (RFC 8446 4.1.2,
/// RFC 6066 3). Only the first record is read: clients put the whole hello in one.
fn client_hello_sni(b: &[u8]) -> Sni {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            (self.0.len() >= n).then(|| {
                let (a, rest) = self.0.split_at(n);
                self.0 = rest;
                a
            })
        }
        fn u8(&mut self) -> Option<usize> {
            self.take(1).map(|b| b[0] as usize)
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        }
        fn vec8(&mut self) -> Option<&'a [u8]> {
            let n = self.u8()?;
            self.take(n)
        }
        fn vec16(&mut self) -> Option<&'a [u8]> {
            let n = self.u16()?;
            self.take(n)
        }
    }
    if b.len() < 5 {
        return Sni::Incomplete;
    }
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b.len() < 5 + len {
        return Sni::Incomplete;
    }
    let parse = || -> Option<Sni> {
        let mut r = R(&b[5..5 + len]);
        if r.u8()? != 1 {
            return None; // not a ClientHello
        }
        let hl = r.take(3)?;
        let hl = ((hl[0] as usize) << 16) | ((hl[1] as usize) << 8) | hl[2] as usize;
        let mut h = R(r.take(hl)?);
        h.take(2 + 32)?; // version, random
        h.vec8()?; // session id
        h.vec16()?; // cipher suites
        h.vec8()?; // compression methods
        if h.0.is_empty() {
            return Some(Sni::None);
        }
        let mut ext = R(h.vec16()?);
        while !ext.0.is_empty() {
            let ty = ext.u16()?;
            let mut data = R(ext.vec16()?);
            if ty == 0 {
                let mut list = R(data.vec16()?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        return Some(Sni::Name(std::str::from_utf8(name).ok()?.to_string()));
                    }
                }
            }
        }
        Some(Sni::None)
    };
    parse().unwrap_or(Sni::Malformed)
}

/// The listening socket. A vsock socket's descriptor is held in a `TcpListener` (see
/// [`vsock_listen`]) but accepted by hand: std's accept turns the peer's address into an IP
/// address and, for a `sockaddr_vm`, fails after accepting (closing the connection).
enum Listener {
    Tcp(TcpListener),
    Vsock(TcpListener),
}

impl Listener {
    /// The next connection and a description of its peer.
    fn accept(&self) -> std::io::Result<(TcpStream, String)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (s, a.to_string())),
            Listener::Vsock(l) => {
                use std::os::fd::{AsRawFd, FromRawFd};
                // SAFETY: accept4 on our listening socket with a sockaddr_vm-sized buffer; the
                // new descriptor is owned by the TcpStream that closes it.
                unsafe {
                    let mut addr: libc::sockaddr_vm = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
                    let fd = libc::accept4(
                        l.as_raw_fd(),
                        (&mut addr as *mut libc::sockaddr_vm).cast(),
                        &mut len,
                        libc::SOCK_CLOEXEC,
                    );
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let peer = format!("vsock CID {} port {}", addr.svm_cid, addr.svm_port);
                    Ok((TcpStream::from_raw_fd(fd), peer))
                }
            }
        }
    }
}

/// A listening socket: TCP, or vsock.
fn listen(args: &Args) -> anyhow::Result<(Listener, String)> {
    if let Some(port) = args.vsock_port {
        let l = vsock_listen(port).with_context(|| {
            format!("while listening on vsock port {port} (is the vsock driver loaded, and the port free? on a machine without vsock use --listen ADDR)")
        })?;
        return Ok((Listener::Vsock(l), format!("vsock:{port}")));
    }
    let addr = args.listen.as_deref().unwrap_or_default();
    let l = TcpListener::bind(addr).with_context(|| {
        format!("while listening on --listen {addr:?} (give a free HOST:PORT, e.g. 127.0.0.1:8443)")
    })?;
    let shown = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    Ok((Listener::Tcp(l), shown))
}

/// A vsock stream socket listening on `port` for any CID. Its descriptor is held by a
/// `TcpListener`, and accepted connections by `TcpStream`s: read, write, shutdown, timeouts,
/// duplication and close are the same socket calls for every address family (only addresses
/// differ: [`Listener::accept`] reads the peer's itself, and nothing asks a vsock socket for
/// its address).
fn vsock_listen(port: u32) -> std::io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: a socket we own (closed by the TcpListener that takes it, or on error) and a
    // fully initialised sockaddr_vm.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        addr.svm_port = port;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), len) != 0
            || libc::listen(fd, 128) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

/// Run `cloak proxy`: serve until killed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = Arc::new(policy(&args)?);
    let (listener, shown) = listen(&args)?;
    println!(
        "cloak proxy: listening on {shown}, forwarding only to {}",
        policy.to
    );
    std::io::stdout().flush().ok();
    let open = Arc::new(AtomicUsize::new(0));
    let mut serial = 0u64;
    loop {
        let (client, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("cloak proxy: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        serial += 1;
        let peer = format!("connection {serial} from {peer}");
        if open.fetch_add(1, Ordering::SeqCst) >= args.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            eprintln!(
                "cloak proxy: {peer}: refused: {} connections are open (--max-connections)",
                args.max_connections
            );
            continue;
        }
        let (policy, open) = (policy.clone(), open.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(&policy, client, &peer) {
                eprintln!("cloak proxy: {peer}: {e}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One connection: read until the first bytes decide, dial the destination, splice.
fn serve(policy: &Policy, mut client: TcpStream, peer: &str) -> Result<(), String> {
    client
        .set_read_timeout(Some(FIRST_BYTES_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    let (reply, forward) = loop {
        match policy.decide(&first) {
            Decision::Allow { reply, forward } => break (reply, forward),
            Decision::Refuse { reason, reply } => {
                if let Some(r) = reply {
                    let _ = client.write_all(r.as_bytes());
                }
                let _ = client.shutdown(Shutdown::Both);
                return Err(format!("refused: {reason}"));
            }
            Decision::Incomplete => {}
        }
        let n = client
            .read(&mut buf)
            .map_err(|e| format!("no request within {FIRST_BYTES_TIMEOUT:?}: {e}"))?;
        if n == 0 {
            return Err("closed before sending anything to forward".into());
        }
        first.extend_from_slice(&buf[..n]);
    };
    let mut upstream = dial(policy).inspect_err(|e| {
        if reply.is_some() {
            let _ = client.write_all(http_reply(502, e).as_bytes());
        }
    })?;
    if let Some(r) = reply {
        client.write_all(r).map_err(|e| e.to_string())?;
    }
    upstream.write_all(&forward).map_err(|e| e.to_string())?;
    eprintln!("cloak proxy: {peer}: forwarding to {}", policy.to);
    for s in [&client, &upstream] {
        s.set_read_timeout(Some(policy.idle_timeout))
            .map_err(|e| e.to_string())?;
    }
    let (c2, u2) = (
        client.try_clone().map_err(|e| e.to_string())?,
        upstream.try_clone().map_err(|e| e.to_string())?,
    );
    let back = std::thread::spawn(move || pump(u2, c2));
    pump(client, upstream);
    let _ = back.join();
    Ok(())
}

fn dial(policy: &Policy) -> Result<TcpStream, String> {
    let addrs = (policy.host.as_str(), policy.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving the destination {}: {e}", policy.to))?;
    let mut last = format!("the destination {} resolves to no address", policy.to);
    for a in addrs {
        match TcpStream::connect_timeout(&a, policy.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("the destination {} ({a}): {e}", policy.to),
        }
    }
    Err(last)
}

/// Copy `from` to `to` until end of file, an error or the idle timeout; then half-close.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Idle timeout or a broken connection: end both directions.
            Err(_) => {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_for(to: &str, server_name: Option<&str>) -> Policy {
        policy(&Args {
            vsock_port: None,
            listen: Some("127.0.0.1:0".into()),
            to: to.into(),
            server_name: server_name.map(String::from),
            max_connections: 4,
            connect_timeout: 1,
            idle_timeout: 1,
        })
        .unwrap()
    }

    /// A ClientHello as rustls writes it, for `name` (None: an IP address, no SNI).
    fn hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_first_bytes_decide_and_only_the_destination_passes() {
        let p = policy_for("manager.example:443", None);
        assert!(matches!(
            p.decide(&hello("manager.example")),
            Decision::Allow { reply: None, .. }
        ));
        assert!(matches!(
            p.decide(&hello("MANAGER.example")),
            Decision::Allow { .. }
        ));
        let Decision::Refuse { reason, .. } = p.decide(&hello("evil.example")) else {
            panic!("another server name passed")
        };
        assert!(reason.contains("evil.example") && reason.contains("manager.example:443"));
        let h = hello("manager.example");
        assert_eq!(p.decide(&h[..h.len() - 1]), Decision::Incomplete);
        // An IP-address destination: clients that send no server name pass, names do not.
        let ip = policy_for("10.0.2.2:9443", None);
        assert!(matches!(
            ip.decide(&hello("10.0.2.2")),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            ip.decide(&hello("manager.example")),
            Decision::Refuse { .. }
        ));
        let named = policy_for("10.0.2.2:9443", Some("manager.example"));
        assert!(matches!(
            named.decide(&hello("manager.example")),
            Decision::Allow { .. }
        ));
        // CONNECT: the destination (by address or server name) passes, with what followed.
        let Decision::Allow { reply, forward } =
            named.decide(b"CONNECT manager.example:9443 HTTP/1.1\r\nHost: x\r\n\r\nabc")
        else {
            panic!("CONNECT to the destination refused")
        };
        assert!(reply.unwrap().starts_with(b"HTTP/1.1 200"));
        assert_eq!(forward, b"abc");
        assert!(matches!(
            named.decide(b"CONNECT 10.0.2.2:9443 HTTP/1.1\r\n\r\n"),
            Decision::Allow { .. }
        ));
        for other in [
            "CONNECT 10.0.2.2:22 HTTP/1.1\r\n\r\n",
            "CONNECT evil.example:9443 HTTP/1.1\r\n\r\n",
        ] {
            let Decision::Refuse { reply, .. } = named.decide(other.as_bytes()) else {
                panic!("{other:?} passed")
            };
            assert!(reply.unwrap().starts_with("HTTP/1.1 403"));
        }
        assert_eq!(named.decide(b"CONN"), Decision::Incomplete);
        assert!(matches!(
            named.decide(b"GET / HTTP/1.1\r\n\r\n"),
            Decision::Refuse { .. }
        ));
        assert!(matches!(
            named.decide(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn bad_destinations_are_refused_with_the_fix() {
        for (to, says) in [
            ("manager.example", "HOST:PORT"),
            ("manager.example:0", "not a port"),
            ("manager.example:http", "not a port"),
            (":443", "no host"),
        ] {
            let e = policy(&Args {
                vsock_port: Some(8443),
                listen: None,
                to: to.into(),
                server_name: None,
                max_connections: 1,
                connect_timeout: 1,
                idle_timeout: 1,
            })
            .unwrap_err();
            assert!(format!("{e:#}").contains(says), "{to}: {e:#}");
        }
    }
}
