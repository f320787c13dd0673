//! The read cache of `GET /v1/builds/{id}`: response bodies of builds as last read from the
//! database, dropped whole whenever anything is written.
//!
//! Correctness rests on three rules:
//! - every write transaction (`Db::begin`) marks itself in flight and, when it ends after a
//!   commit was attempted, clears the cache and bumps the generation, under the cache's lock
//!   (a rollback changed nothing: the job queue's polls roll back five times a second);
//! - a reader caches a row only if no write was in flight and the generation did not move
//!   between before its query and its insert (checked under the same lock), so a row read
//!   before a commit is never cached after it;
//! - writes by other processes: on PostgreSQL every write transaction sends `NOTIFY` (delivered
//!   at its commit) and each replica's listener clears its cache on receipt; while the listener
//!   is not connected the cache is off. On SQLite only the process holding the data-dir lock
//!   writes. Another replica's change is thus seen after the notification's delivery (a few
//!   milliseconds on one network); decisions (approval, issuance) never read this cache.
//!
//! It is coarse on purpose: writes are rare next to reads, and a per-row scheme would have to
//! know every statement that touches a build or its app.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Entries kept at most (about 2 KiB each); when full, the cache starts over.
const MAX_ENTRIES: usize = 16_384;

/// Keyed by (account, id); `V` is the build's JSON body in the service.
#[derive(Debug)]
pub struct ReadCache<V> {
    builds: Mutex<HashMap<(String, String), Arc<V>>>,
    generation: AtomicU64,
    writers: AtomicUsize,
    enabled: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V> Default for ReadCache<V> {
    fn default() -> Self {
        ReadCache {
            builds: Mutex::default(),
            generation: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
            enabled: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

/// Marks one write transaction in flight; its drop invalidates if a commit was attempted (a
/// transaction rolled back changed nothing: the job queue's empty polls, a refused request).
#[derive(Debug)]
pub struct WriteMark<V: Clone> {
    cache: Arc<ReadCache<V>>,
    committing: bool,
}

impl<V: Clone> WriteMark<V> {
    /// Called before the commit is sent: whatever its outcome (a connection lost after
    /// COMMIT may have committed), the end of the transaction then invalidates.
    pub fn committing(&mut self) {
        self.committing = true;
    }
}

impl<V: Clone> Drop for WriteMark<V> {
    fn drop(&mut self) {
        if self.committing {
            self.cache.invalidate();
        }
        self.cache.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<V: Clone> ReadCache<V> {
    pub fn write(self: &Arc<Self>) -> WriteMark<V> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        WriteMark {
            cache: self.clone(),
            committing: false,
        }
    }

    /// Drops every entry (a write ended here, or elsewhere as a notification said).
    pub fn invalidate(&self) {
        let mut map = self.builds.lock().expect("read cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
    }

    /// Turns the cache on (the process sees every write) or off (it might not).
    pub fn set_enabled(&self, on: bool) {
        let mut map = self.builds.lock().expect("read cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
        self.enabled.store(on, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// The generation to pass to `put` after reading from the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn get(&self, account_id: &str, id: &str) -> Option<Arc<V>> {
        if !self.enabled() {
            return None;
        }
        let map = self.builds.lock().expect("read cache lock");
        let hit = map.get(&(account_id.to_string(), id.to_string())).cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// (on, entries, hits, misses) for `/metrics`.
    pub fn stats(&self) -> (bool, usize, u64, u64) {
        let entries = self.builds.lock().expect("read cache lock").len();
        (
            self.enabled(),
            entries,
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Keeps `value` unless a write was in flight or ended since `generation` was taken.
    pub fn put(&self, generation: u64, account_id: &str, id: &str, value: &V) {
        if !self.enabled() {
            return;
        }
        let mut map = self.builds.lock().expect("read cache lock");
        if self.writers.load(Ordering::SeqCst) != 0
            || self.generation.load(Ordering::SeqCst) != generation
        {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            (account_id.to_string(), id.to_string()),
            Arc::new(value.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(c: &ReadCache<String>, id: &str) -> Option<String> {
        c.get("acc", id).map(|v| v.to_string())
    }

    #[test]
    fn off_until_enabled() {
        let c = Arc::new(ReadCache::<String>::default());
        let g = c.generation();
        c.put(g, "acc", "b1", &"x".into());
        assert_eq!(value(&c, "b1"), None);
        c.set_enabled(true);
        let g = c.generation();
        c.put(g, "acc", "b1", &"x".into());
        assert_eq!(value(&c, "b1").as_deref(), Some("x"));
        assert!(c.get("other", "b1").is_none(), "keyed by account");
        c.set_enabled(false);
        assert_eq!(value(&c, "b1"), None);
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let c = Arc::new(ReadCache::<String>::default());
        c.set_enabled(true);
        // Read while a write is in flight: not kept.
        let g = c.generation();
        let mut mark = c.write();
        c.put(g, "acc", "b1", &"old".into());
        assert_eq!(value(&c, "b1"), None);
        mark.committing();
        drop(mark);
        // Read before the write began, inserted after it ended: the generation moved.
        c.put(g, "acc", "b1", &"old".into());
        assert_eq!(value(&c, "b1"), None);
        // A read after: kept; a write rolled back keeps it; the end of a commit drops it.
        let g = c.generation();
        c.put(g, "acc", "b1", &"new".into());
        assert_eq!(value(&c, "b1").as_deref(), Some("new"));
        drop(c.write());
        assert_eq!(value(&c, "b1").as_deref(), Some("new"));
        let mut mark = c.write();
        mark.committing();
        drop(mark);
        assert_eq!(value(&c, "b1"), None);
    }

    #[test]
    fn bounded() {
        let c = Arc::new(ReadCache::<String>::default());
        c.set_enabled(true);
        let g = c.generation();
        for i in 0..MAX_ENTRIES + 10 {
            c.put(g, "acc", &i.to_string(), &"v".into());
        }
        assert!(c.builds.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
