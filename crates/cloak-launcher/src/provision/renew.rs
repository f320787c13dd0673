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

/// Least time (seconds) between two attempts for one certificate: a `not_after` in the past
/// or absurdly near (a hostile or misconfigured manager) must not make the launcher ask again
/// in a tight loop.
pub const MIN_INTERVAL: i64 = 30;
/// Longest wait (seconds) between attempts while the manager stays unreachable.
pub const MAX_BACKOFF: i64 = 15 * 60;

/// When to try a certificate due at `due` again, after an attempt at `last` (None: never) and
/// `failures` unreachable attempts since the last success: never sooner than
/// [`MIN_INTERVAL`] after the last attempt, doubling from the second failure on, up to
/// [`MAX_BACKOFF`].
pub fn next_attempt(due: i64, last: Option<i64>, failures: u32) -> i64 {
    let Some(last) = last else {
        return due;
    };
    let gap = (MIN_INTERVAL << failures.saturating_sub(1).min(10)).min(MAX_BACKOFF);
    due.max(last + gap)
}

/// Renew `certs` ((spec, issued_at, not_after)) until the manager refuses one; returns that
/// refusal. An unreachable manager (after the client's own retry budget) is tried again with
/// backoff until that certificate has expired, then its last failure is returned.
pub fn renew_until_refused(
    cfg: &ManagerConfig,
    client: &Client,
    source: &mut dyn EvidenceSource,
    target: &Target,
    mut certs: Vec<(CertSpec, i64, i64)>,
    timer: &mut dyn Timer,
) -> Failure {
    // Per certificate: the last attempt and the unreachable attempts since the last success.
    let mut tries: Vec<(Option<i64>, u32)> = vec![(None, 0); certs.len()];
    loop {
        let Some((i, at)) = certs
            .iter()
            .zip(&tries)
            .enumerate()
            .map(|(i, ((_, issued, not_after), (last, failures)))| {
                let due = renew_at(*issued, *not_after, cfg.renew_before_seconds);
                (i, next_attempt(due, *last, *failures))
            })
            .min_by_key(|(_, at)| *at)
        else {
            return Failure::new("renewal", "nothing_to_renew", "no certificate");
        };
        let now = timer.now();
        if at > now {
            timer.sleep(Duration::from_secs((at - now) as u64));
        }
        let spec = certs[i].0.clone();
        let issued_at = timer.now();
        tries[i].0 = Some(issued_at);
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
                tries[i].1 = 0;
            }
            Err(f) if f.code == "unreachable" && issued_at < certs[i].2 => {
                tries[i].1 += 1;
                eprintln!(
                    "cloak-launcher: renewal of {:?}: {f}; trying again in {} s",
                    spec.subject,
                    next_attempt(issued_at, Some(issued_at), tries[i].1) - issued_at
                );
            }
            Err(f) => {
                eprintln!("cloak-launcher: renewal stopped: {f}; the app keeps its certificate until it expires");
                return f;
            }
        }
    }
}
