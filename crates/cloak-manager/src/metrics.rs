//! Prometheus metrics in the text exposition format: requests by route and status with latency
//! histograms, the database pool, open tasks, builds by status and failed logins.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// In-process counters of one replica.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Series>>,
    logins_failed: AtomicU64,
}

impl Metrics {
    /// Records one request: `route` is the matched route template, never the raw path.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut m = self.requests.lock().expect("metrics lock");
        let s = m
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum += seconds;
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `gauges` are (name, help, labels, value) read from the database.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        let m = self.requests.lock().expect("metrics lock").clone();
        out.push_str("# HELP cloak_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE cloak_http_requests_total counter\n");
        for ((method, route, status), s) in &m {
            let _ = writeln!(
                out,
                "cloak_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP cloak_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE cloak_http_request_duration_seconds histogram\n");
        let mut by_route: BTreeMap<(String, String), Series> = BTreeMap::new();
        for ((method, route, _), s) in &m {
            let e = by_route.entry((method.clone(), route.clone())).or_default();
            e.count += s.count;
            e.sum += s.sum;
            for i in 0..BUCKETS.len() {
                e.buckets[i] += s.buckets[i];
            }
        }
        for ((method, route), s) in &by_route {
            let l = format!("method=\"{method}\",route=\"{route}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cloak_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "cloak_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "cloak_http_request_duration_seconds_sum{{{l}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "cloak_http_request_duration_seconds_count{{{l}}} {}",
                s.count
            );
        }
        out.push_str("# HELP cloak_logins_failed_total Failed logins seen by this replica.\n");
        out.push_str("# TYPE cloak_logins_failed_total counter\n");
        let _ = writeln!(
            out,
            "cloak_logins_failed_total {}",
            self.logins_failed.load(Ordering::Relaxed)
        );
        let mut seen = std::collections::BTreeSet::new();
        for (name, help, labels, value) in gauges {
            if seen.insert(*name) {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled_by_route() {
        let m = Metrics::default();
        m.request("GET", "/v1/builds/{build_id}", 200, 0.003);
        m.request("GET", "/v1/builds/{build_id}", 404, 0.2);
        let text = m.render(&[("cloak_tasks_pending", "Open tasks.", String::new(), 2.0)]);
        assert!(text.contains(
            "cloak_http_requests_total{method=\"GET\",route=\"/v1/builds/{build_id}\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "cloak_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/builds/{build_id}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "cloak_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/builds/{build_id}\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("cloak_tasks_pending 2"));
    }
}
