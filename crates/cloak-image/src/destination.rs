//! Where a registry client may connect: the redirect policy every client uses (never from
//! HTTPS down to HTTP), and the address policy of a service that fetches on behalf of others
//! (the manager), which refuses internal addresses unless the operator listed the registry.
//!
//! The address check runs where the address is known: on IP literals before any request, and
//! in a DNS resolver that drops internal addresses, so a name that resolves (or re-resolves)
//! to one is refused at connect time.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why a destination was refused (shown to the user, so it names only what they gave).
pub const REFUSED: &str = "refused by the manager's registry address policy";

/// The operator's address policy: internal destinations are refused unless listed.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    /// `host:port` (or `host`) the operator allows even at an internal address.
    allowed: HashSet<String>,
    /// `host:port` (or `host`) that may be reached over plain HTTP.
    insecure: HashSet<String>,
}

impl DestinationPolicy {
    /// A policy allowing `allowed` (`--allow-private-registry`) and `insecure`
    /// (`--insecure-registry`, which are allowed too) besides public addresses.
    pub fn new(
        allowed: impl IntoIterator<Item = String>,
        insecure: impl IntoIterator<Item = String>,
    ) -> Self {
        let insecure: HashSet<String> = insecure.into_iter().map(|h| h.to_lowercase()).collect();
        let mut allowed: HashSet<String> = allowed.into_iter().map(|h| h.to_lowercase()).collect();
        allowed.extend(insecure.iter().cloned());
        DestinationPolicy { allowed, insecure }
    }

    fn listed(set: &HashSet<String>, host: &str, port: u16) -> bool {
        let host = host.to_lowercase();
        // Entries name IPv6 hosts the way references do: `[::1]:5000`.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        set.contains(&format!("{host}:{port}"))
            || ((port == 443 || port == 80) && set.contains(&host))
    }

    /// Whether `host` (a name, not an address) is listed at any port: the resolver, which
    /// sees no port, lets it resolve to internal addresses; [`Self::check_url`] checks the port.
    fn host_listed(&self, host: &str) -> bool {
        let host = host.to_lowercase();
        self.allowed
            .iter()
            .any(|e| e == &host || e.rsplit_once(':').is_some_and(|(h, _)| h == host))
    }

    /// Whether plain HTTP may be used with `host:port`.
    pub fn insecure(&self, host: &str, port: u16) -> bool {
        Self::listed(&self.insecure, host, port)
    }

    /// Check a URL before it is requested: its scheme, and its host when that is an address
    /// (names are checked by the resolver) or a listed name at another port.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(host) = url.host_str() else {
            return Err(format!("{}: no host", display(url)));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        match url.scheme() {
            "https" => {}
            "http" if self.insecure(host, port) => {}
            "http" => {
                return Err(format!(
                    "{}: plain HTTP to a registry not listed with --insecure-registry: {REFUSED}",
                    display(url)
                ))
            }
            _ => return Err(format!("{}: not an HTTP(S) URL", display(url))),
        }
        if Self::listed(&self.allowed, host, port) {
            return Ok(());
        }
        match host.parse::<IpAddr>() {
            Ok(ip) if is_internal(ip) => Err(format!("{}: {REFUSED}", display(url))),
            Ok(_) => Ok(()),
            // A name listed for another port only: its addresses would pass the resolver.
            Err(_) if self.host_listed(host) => Err(format!("{}: {REFUSED}", display(url))),
            Err(_) => Ok(()),
        }
    }

    /// Check the registry `host[:port]` before the first request, resolving a name, so that a
    /// refused destination is never connected to.
    pub async fn check_registry(self: &Arc<Self>, registry: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(&format!("https://{registry}/"))
            .map_err(|e| format!("{registry}: not a registry host: {e}"))?;
        self.check_url(&url)?;
        let host = url.host_str().unwrap_or_default();
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            return Ok(());
        }
        PolicyResolver(self.clone())
            .lookup(host)
            .await
            .map(|_| ())
            .map_err(|_| format!("{registry}: {REFUSED}"))
    }

    /// The redirect policy of a client under this address policy.
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if let Err(why) = no_downgrade(attempt.url(), attempt.previous()) {
                return attempt.error(why);
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(format!("redirect refused: {why}")),
            }
        })
    }

    /// A DNS resolver dropping internal addresses of names not listed.
    pub fn resolver(self: &Arc<Self>) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver(self.clone()))
    }
}

/// The redirect policy of a client without an address policy (`cloak convert`).
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        match no_downgrade(attempt.url(), attempt.previous()) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(why),
        }
    })
}

/// Redirects: at most 10, and never from HTTPS to HTTP.
fn no_downgrade(url: &reqwest::Url, previous: &[reqwest::Url]) -> Result<(), String> {
    if previous.len() >= 10 {
        return Err("too many redirects".into());
    }
    if url.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(format!(
            "redirect from HTTPS to {} refused (the registry may not downgrade the connection)",
            display(url)
        ));
    }
    Ok(())
}

/// `scheme://host:port` of a URL: its path and query are the remote's and are not repeated.
fn display(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!(
            "{}://{}:{p}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// The resolver of [`DestinationPolicy::resolver`].
#[derive(Debug)]
pub struct PolicyResolver(Arc<DestinationPolicy>);

/// A name had no address the policy allows.
#[derive(Debug, thiserror::Error)]
#[error("{0}: {REFUSED}")]
struct Refused(String);

impl PolicyResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let listed = self.0.host_listed(host);
        let kept: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| listed || !is_internal(a.ip()))
            .collect();
        if kept.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                Refused(host.to_string()),
            ));
        }
        Ok(kept)
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = PolicyResolver(self.0.clone());
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Loopback, link-local, private (RFC 1918, ULA), CGNAT, unspecified and similar addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || v6 == Ipv6Addr::from(1u128) // ::1 spelled out
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || o[0] == 0 // 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::loopback("127.0.0.1", true)]
    #[case::loopback_other("127.8.9.1", true)]
    #[case::metadata("169.254.169.254", true)]
    #[case::rfc1918_10("10.1.2.3", true)]
    #[case::rfc1918_172("172.20.0.1", true)]
    #[case::rfc1918_192("192.168.1.1", true)]
    #[case::cgnat("100.100.0.1", true)]
    #[case::unspecified("0.0.0.0", true)]
    #[case::v6_loopback("::1", true)]
    #[case::v6_unspecified("::", true)]
    #[case::v6_link_local("fe80::1", true)]
    #[case::v6_ula("fd00::1", true)]
    #[case::v4_mapped("::ffff:127.0.0.1", true)]
    #[case::public("93.184.216.34", false)]
    #[case::public_cgnat_edge("100.128.0.1", false)]
    #[case::public_v6("2606:4700::1111", false)]
    fn internal_addresses(#[case] ip: &str, #[case] internal: bool) {
        assert_eq!(is_internal(ip.parse().unwrap()), internal, "{ip}");
    }

    #[rstest]
    #[case::public_https("https://93.184.216.34/v2/", true)]
    #[case::loopback("https://127.0.0.1:5000/v2/", false)]
    #[case::loopback_listed("https://127.0.0.1:5001/v2/", true)]
    #[case::listed_other_port("https://127.0.0.1:5002/v2/", false)]
    #[case::metadata_http("http://169.254.169.254/latest/meta-data/", false)]
    #[case::http_not_insecure("http://93.184.216.34/v2/", false)]
    #[case::http_insecure("http://reg.example:5003/v2/", true)]
    #[case::listed_name_other_port("https://reg.example:22/", false)]
    #[case::v6_loopback("https://[::1]:5001/", false)]
    #[case::v6_listed("https://[::1]:5004/", true)]
    #[case::not_http("file:///etc/passwd", false)]
    fn urls(#[case] url: &str, #[case] ok: bool) {
        let p = DestinationPolicy::new(
            ["127.0.0.1:5001".to_string(), "[::1]:5004".to_string()],
            ["reg.example:5003".to_string()],
        );
        assert_eq!(p.check_url(&url.parse().unwrap()).is_ok(), ok, "{url}");
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let p = Arc::new(DestinationPolicy::new(
            ["localhost:5001".to_string()],
            Vec::new(),
        ));
        let err = PolicyResolver(Arc::new(DestinationPolicy::default()))
            .lookup("localhost")
            .await
            .unwrap_err();
        assert!(err.to_string().contains(REFUSED), "{err}");
        assert!(p.check_registry("localhost:5001").await.is_ok());
        assert!(p.check_registry("localhost:5002").await.is_err());
        assert!(p.check_registry("127.0.0.1:5001").await.is_err());
    }
}
