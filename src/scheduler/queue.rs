//! The scheduling queue, as kube-scheduler keeps it: pods waiting for a node in three places.
//!
//! - **active**: ready to be tried, highest priority first, then the oldest;
//! - **backoff**: tried and failed recently; each pod waits 1 s, doubling per attempt up to 10 s;
//! - **unschedulable**: no node fitted; they wait for something that could change that (a node
//!   added or changed, a pod deleted or bound elsewhere) and then go back through backoff, or
//!   after 5 minutes regardless.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A pod's place in the active queue: higher priority first, then earlier creation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    neg_priority: i64,
    created: i64,
    key: String,
}

#[derive(Debug, Default)]
pub struct Queue {
    active: BTreeSet<Entry>,
    order: HashMap<String, Entry>,
    /// key → (may retry at, attempts so far)
    backoff: HashMap<String, Instant>,
    unschedulable: HashMap<String, Instant>,
    attempts: HashMap<String, u32>,
}

impl Queue {
    /// A pending pod was seen (added or updated): queue it unless it waits already.
    pub fn add(&mut self, key: &str, priority: i32, created: i64) {
        let entry = Entry {
            neg_priority: -i64::from(priority),
            created,
            key: key.to_string(),
        };
        if self.backoff.contains_key(key) {
            return;
        }
        // An update of an unschedulable pod may make it fit: try again.
        self.unschedulable.remove(key);
        if let Some(old) = self.order.insert(key.to_string(), entry.clone()) {
            self.active.remove(&old);
        }
        self.active.insert(entry);
    }

    /// The pod is gone or bound: forget it.
    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.order.remove(key) {
            self.active.remove(&e);
        }
        self.backoff.remove(key);
        self.unschedulable.remove(key);
        self.attempts.remove(key);
    }

    /// The next pod to try, if one is ready.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.flush(now);
        let e = self.active.pop_first()?;
        Some(e.key)
    }

    /// Moves pods whose backoff is over, and pods unschedulable for too long, to active.
    fn flush(&mut self, now: Instant) {
        let ready: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            self.backoff.remove(&k);
            self.activate(&k);
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.unschedulable.remove(&k);
            self.activate(&k);
        }
    }

    fn activate(&mut self, key: &str) {
        if let Some(e) = self.order.get(key) {
            self.active.insert(e.clone());
        }
    }

    fn backoff_for(&self, key: &str) -> Duration {
        let n = self.attempts.get(key).copied().unwrap_or(1).max(1);
        INITIAL_BACKOFF
            .saturating_mul(1 << (n - 1).min(4))
            .min(MAX_BACKOFF)
    }

    /// A try failed and no node fits: wait for a cluster event.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        *self.attempts.entry(key.to_string()).or_default() += 1;
        self.unschedulable.insert(key.to_string(), now);
    }

    /// A try failed for a passing reason (an API error, a nominated node): retry after backoff.
    pub fn retry(&mut self, key: &str, now: Instant) {
        *self.attempts.entry(key.to_string()).or_default() += 1;
        let wait = self.backoff_for(key);
        self.backoff.insert(key.to_string(), now + wait);
    }

    /// Something changed that may let unschedulable pods fit: move them to backoff (or active
    /// when their backoff is already over).
    pub fn cluster_changed(&mut self, now: Instant) {
        let keys: Vec<String> = self.unschedulable.drain().map(|(k, _)| k).collect();
        for k in keys {
            let since_first = self.backoff_for(&k);
            self.backoff
                .insert(k, now + since_first.min(INITIAL_BACKOFF));
        }
    }

    /// How long until a backing-off pod is ready (for the loop's sleep).
    pub fn next_ready_in(&self, now: Instant) -> Option<Duration> {
        self.backoff
            .values()
            .map(|t| t.saturating_duration_since(now))
            .min()
    }

    pub fn len(&self) -> (usize, usize, usize) {
        (
            self.active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_age() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add("a", 0, 10);
        q.add("b", 100, 20);
        q.add("c", 0, 5);
        assert_eq!(q.pop(now).as_deref(), Some("b"));
        assert_eq!(q.pop(now).as_deref(), Some("c"));
        assert_eq!(q.pop(now).as_deref(), Some("a"));
        assert_eq!(q.pop(now), None);
    }

    #[test]
    fn unschedulable_pods_wait_for_an_event() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add("a", 0, 1);
        assert_eq!(q.pop(now).as_deref(), Some("a"));
        q.unschedulable("a", now);
        assert_eq!(q.pop(now + Duration::from_secs(60)), None);
        q.cluster_changed(now + Duration::from_secs(60));
        assert_eq!(q.pop(now + Duration::from_secs(60)), None);
        assert_eq!(q.pop(now + Duration::from_secs(62)).as_deref(), Some("a"));
        // And after five minutes without events.
        q.unschedulable("a", now);
        assert_eq!(q.pop(now + MAX_UNSCHEDULABLE).as_deref(), Some("a"));
    }

    #[test]
    fn retries_back_off_and_cap() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add("a", 0, 1);
        for _ in 0..10 {
            q.pop(now + Duration::from_secs(100));
            q.retry("a", now);
        }
        assert_eq!(q.next_ready_in(now), Some(MAX_BACKOFF));
        q.remove("a");
        assert_eq!(q.len(), (0, 0, 0));
    }
}
