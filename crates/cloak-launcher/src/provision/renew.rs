//! Renewal while the app runs: each certificate is obtained again (new key, new nonce, fresh
//! evidence) before it expires and its files are replaced atomically; the first refusal (build
//! revoked) ends renewal, and the app sees the expiry.

use std::time::Duration;

use super::evidence::EvidenceSource;
use super::{obtain, write_issued, Client, Failure, Target};
use crate::{CertSpec, ManagerConfig};

/// When to renew a certificate valid until `not_after`, issued at `issued_at`: `before`
/// seconds ahead of expiry, or when a third of its validity is left if `before` is 0.
pub fn renew_at(issued_at: i64, not_after: i64, before: u64) -> i64 {
    let lead = if before == 0 {
        (not_after - issued_at).max(0) / 3
    } else {
        before as i64
    };
    not_after - lead
}

/// The clock and the wait, so tests can drive renewal.
pub trait Timer {
    /// Unix seconds now.
    fn now(&mut self) -> i64;
    /// Wait `d`.
    fn sleep(&mut self, d: Duration);
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemTimer;

impl Timer for SystemTimer {
    fn now(&mut self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// Renew `certs` ((spec, issued_at, not_after)) until the manager refuses one; returns that
/// refusal (or the last failure once the retry budget is spent).
pub fn renew_until_refused(
    cfg: &ManagerConfig,
    client: &Client,
    source: &mut dyn EvidenceSource,
    target: &Target,
    mut certs: Vec<(CertSpec, i64, i64)>,
    timer: &mut dyn Timer,
) -> Failure {
    loop {
        let Some((i, due)) = certs
            .iter()
            .enumerate()
            .map(|(i, (_, issued, not_after))| {
                (i, renew_at(*issued, *not_after, cfg.renew_before_seconds))
            })
            .min_by_key(|(_, due)| *due)
        else {
            return Failure::new("renewal", "nothing_to_renew", "no certificate");
        };
        let now = timer.now();
        if due > now {
            timer.sleep(Duration::from_secs((due - now) as u64));
        }
        let spec = certs[i].0.clone();
        let issued_at = timer.now();
        match obtain(client, cfg, &spec, source).and_then(|new| {
            write_issued(target, &spec, &new)?;
            Ok(new.not_after)
        }) {
            Ok(not_after) => {
                let not_after = not_after.unwrap_or(issued_at + 3600);
                eprintln!(
                    "cloak-launcher: renewed the certificate for {:?} (valid until {not_after})",
                    spec.subject
                );
                certs[i] = (spec, issued_at, not_after);
            }
            Err(f) => {
                eprintln!("cloak-launcher: renewal stopped: {f}; the app keeps its certificate until it expires");
                return f;
            }
        }
    }
}
