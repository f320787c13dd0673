//! `cloak proxy` as a process in front of a real manager (`cloak manager serve`, SQLite): it
//! forwards to its one destination and refuses every other, over vsock when this kernel can
//! connect a vsock socket to itself (the `vsock_loopback` transport), otherwise over its TCP
//! mode with the reason printed and recorded as an untested path.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::manager::{Backend, Manager};
use common::{cloak, test_path};

/// VMADDR_CID_LOCAL: the local CID, reachable only through the vsock_loopback transport.
const CID_LOCAL: u32 = 1;

fn vsock_socket() -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: a socket we own, handed to a TcpStream that closes it (the same socket calls
    // serve any address family; see the proxy's vsock_listen).
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is valid.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn vsock_connect(cid: u32, port: u32) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let s = vsock_socket()?;
    let a = vsock_addr(cid, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: a valid socket and address.
    if unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_vm).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// Whether a vsock socket here can be bound to the local CID (needs vsock_loopback), and if not
/// why.
fn vsock_loopback() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let s = vsock_socket().map_err(|e| format!("no AF_VSOCK sockets in this kernel ({e})"))?;
    let a = vsock_addr(CID_LOCAL, libc::VMADDR_PORT_ANY);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: a valid socket and address.
    if unsafe { libc::bind(s.as_raw_fd(), (&a as *const libc::sockaddr_vm).cast(), len) } != 0 {
        return Err(format!(
            "binding a vsock socket to VMADDR_CID_LOCAL fails ({}): this kernel has no vsock_loopback transport (load it with `modprobe vsock_loopback` where the module exists)",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A `cloak proxy` process, killed on drop; its stderr goes to a file.
struct Proxy {
    child: Child,
    log: std::path::PathBuf,
    /// TCP address, or None when listening on vsock.
    tcp: Option<String>,
    vsock_port: u32,
}

impl Proxy {
    fn start(dir: &Path, listen: &[&str], to: &str) -> Proxy {
        let log = dir.join("proxy.log");
        let mut child = cloak()
            .arg("proxy")
            .args(listen)
            .args(["--to", to, "--max-connections", "8", "--idle-timeout", "30"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while !first.ends_with('\n') {
            if out.read(&mut b).unwrap() == 0 {
                panic!(
                    "cloak proxy ended: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            first.push(b[0] as char);
        }
        let shown = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap()
            .to_string();
        assert!(
            first.contains(&format!("forwarding only to {to}")),
            "{first}"
        );
        let (tcp, vsock_port) = match shown.strip_prefix("vsock:") {
            Some(p) => (None, p.parse().unwrap()),
            None => (Some(shown), 0),
        };
        Proxy {
            child,
            log,
            tcp,
            vsock_port,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = match &self.tcp {
            Some(a) => TcpStream::connect(a).unwrap(),
            None => vsock_connect(CID_LOCAL, self.vsock_port).unwrap(),
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` over TLS on `sock`, verified against `ca` for `name`; the status line, or the
/// TLS/IO error.
fn https_get(sock: TcpStream, ca: &[u8], name: &str, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Send `request` raw and read what comes back until the proxy closes.
fn raw(mut sock: TcpStream, request: &[u8]) -> String {
    sock.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_proxy_forwards_only_to_its_one_destination() {
    let manager = Manager::start(Backend::Sqlite);
    let ca = manager.ca();
    let dest = manager.url.strip_prefix("https://").unwrap().to_string();
    let dest_port = dest.rsplit_once(':').unwrap().1.to_string();
    // Another service on this machine the proxy must never reach.
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_addr = decoy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();

    let vsock = vsock_loopback();
    let port_arg;
    let listen: Vec<&str> = match &vsock {
        Ok(()) => {
            // A port of our own choosing on the shared vsock namespace: derived from the pid.
            port_arg = (20000 + std::process::id() % 40000).to_string();
            vec!["--vsock-port", &port_arg]
        }
        Err(_) => vec!["--listen", "127.0.0.1:0"],
    };
    test_path(
        "cloak proxy over AF_VSOCK loopback",
        vsock.is_ok(),
        &match &vsock {
            Ok(()) => "vsock_loopback works here: the proxy listened on vsock".into(),
            Err(why) => format!("{why}; the proxy was tested in its TCP mode (--listen) instead, same code after accept"),
        },
    );
    let proxy = Proxy::start(dir.path(), &listen, &dest);

    // TLS through the proxy reaches the manager, verified against the manager's CA: our own
    // client, and curl (an independent client) in TCP mode.
    let status = https_get(proxy.connect(), &ca, "127.0.0.1", "/v1/sys/version").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut forwarded = 1;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    if let Some(addr) = &proxy.tcp {
        let out = common::ok(Command::new("curl").args([
            "-sS",
            "--cacert",
            ca_file.to_str().unwrap(),
            &format!("https://{addr}/v1/sys/version"),
        ]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("version"));
        // An HTTP client configured with the proxy: CONNECT to the destination passes.
        let out = common::ok(Command::new("curl").args([
            "-sS",
            "--proxy",
            &format!("http://{addr}"),
            "--cacert",
            ca_file.to_str().unwrap(),
            &format!("{}/v1/sys/version", manager.url),
        ]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("version"));
        // CONNECT to anything else: 403 naming the one destination, seen by curl.
        let out = common::run(Command::new("curl").args([
            "-sS",
            "-p",
            "--proxy",
            &format!("http://{addr}"),
            &format!("http://{decoy_addr}/"),
        ]));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("403"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        forwarded += 2;
    }

    // CONNECT to another destination, over the proxy's listening transport.
    let answer = raw(
        proxy.connect(),
        format!("CONNECT {decoy_addr} HTTP/1.1\r\nHost: {decoy_addr}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains(&format!("forwards only to {dest}")),
        "{answer}"
    );
    // The destination's port on another host name.
    let answer = raw(
        proxy.connect(),
        format!("CONNECT evil.example:{dest_port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // TLS asking for another server name is cut before anything is dialled.
    let err = https_get(proxy.connect(), &ca, "evil.example", "/").unwrap_err();
    assert!(!err.is_empty());
    // Plain HTTP is not forwarded at all.
    let answer = raw(proxy.connect(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.is_empty(), "{answer}");

    // One more forwarded request proves the refused ones were logged before it.
    let status = https_get(proxy.connect(), &ca, "127.0.0.1", "/healthz").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    forwarded += 1;
    let log = proxy.log();
    assert_eq!(
        log.matches("forwarding to").count(),
        forwarded,
        "only the allowed connections were forwarded:\n{log}"
    );
    assert!(
        log.contains(&format!("CONNECT \"{decoy_addr}\" is not the destination")),
        "{log}"
    );
    assert!(
        log.contains("TLS server name \"evil.example\" is not the destination"),
        "{log}"
    );
    assert!(log.contains("neither TLS nor an HTTP CONNECT"), "{log}");
    assert!(
        matches!(decoy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy connected to another service"
    );
}

#[test]
fn bad_proxy_arguments_are_refused_with_the_fix() {
    let e = common::fails(cloak().args(["proxy", "--listen", "127.0.0.1:0", "--to", "manager"]));
    assert!(e.contains("HOST:PORT"), "{e}");
    let e = common::fails(cloak().args(["proxy", "--to", "manager:443"]));
    assert!(e.contains("--vsock-port") && e.contains("--listen"), "{e}");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = common::fails(cloak().args(["proxy", "--listen", &addr, "--to", "manager:443"]));
    assert!(e.contains(&addr) && e.contains("free"), "{e}");
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A destination that is never dialled: no connection here sends anything to forward.
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest_addr = dest.local_addr().unwrap().to_string();
    let log = dir.path().join("proxy.log");
    let mut child = cloak()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "1",
            "--to",
        ])
        .arg(&dest_addr)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") && out.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    // The first connection holds the only slot (the proxy waits for its first bytes); the
    // second, accepted after it, is closed without a byte.
    let _first = TcpStream::connect(addr).unwrap();
    let mut second = TcpStream::connect(addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = second.read(&mut buf).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(n, 0, "the second connection got bytes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refused: 1 connections are open (--max-connections)"),
        "{text}"
    );
}

/// Without vsock loopback nothing here can connect to a vsock listener, but where AF_VSOCK
/// exists (a VM with a virtio or vmci transport) the proxy's vsock listener itself is set up.
#[test]
fn the_vsock_listener_starts_where_af_vsock_exists() {
    if let Err(e) = vsock_socket() {
        test_path(
            "cloak proxy --vsock-port listener",
            false,
            &format!("no AF_VSOCK sockets in this kernel: {e}"),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = (20000 + (std::process::id() + 7919) % 40000).to_string();
    let proxy = Proxy::start(dir.path(), &["--vsock-port", &port], "manager.example:443");
    assert_eq!(proxy.vsock_port.to_string(), port);
    test_path(
        "cloak proxy --vsock-port listener",
        true,
        "bound and listening on VMADDR_CID_ANY",
    );
}
