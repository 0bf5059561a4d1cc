//! The lessor: leases, the keys attached to them, and their expiry.
//!
//! A lease is a TTL a client keeps alive; keys written with the lease are deleted, all in one
//! revision, when it expires or is revoked. Kubernetes uses leases for Events and for short-lived
//! objects. The lessor lives in memory; each lease's granted TTL and absolute expiry time are also
//! written to the backend's `leases` table, so a restarted store gives every lease the time it
//! had left.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// etcd's minimum lease TTL with its default election timeout (1 s): 1.5 × election ticks, rounded up.
pub const MIN_TTL: i64 = 2;

/// Milliseconds since the Unix epoch, the clock lease expiry is measured on.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// When the lease expires, in Unix milliseconds.
    pub expiry_ms: i64,
    /// The keys attached to the lease.
    pub keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    /// Whole seconds left, as etcd reports them (truncated, never negative).
    pub fn remaining_secs(&self, now: i64) -> i64 {
        ((self.expiry_ms - now).max(0)) / 1000
    }
}

#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<i64, Lease>,
    /// Which lease each leased key is attached to.
    items: HashMap<Vec<u8>, i64>,
}

impl Lessor {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Adds a lease (on grant, or when restoring from the backend).
    pub fn insert(&mut self, id: i64, ttl: i64, expiry_ms: i64) -> &Lease {
        self.leases.entry(id).or_insert(Lease {
            id,
            ttl,
            expiry_ms,
            keys: BTreeSet::new(),
        })
    }

    /// Removes a lease, returning it with its keys.
    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        for k in &lease.keys {
            self.items.remove(k);
        }
        Some(lease)
    }

    /// The lease `key` is attached to (0 for none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.items.get(key).copied().unwrap_or(0)
    }

    /// Renews a lease for its full TTL; returns the TTL, or None when it does not exist.
    pub fn renew(&mut self, id: i64, now: i64) -> Option<(i64, i64)> {
        let lease = self.leases.get_mut(&id)?;
        if lease.expiry_ms <= now {
            // Expired and about to be revoked: etcd refuses to bring it back.
            return None;
        }
        lease.expiry_ms = now + lease.ttl * 1000;
        Some((lease.ttl, lease.expiry_ms))
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
            self.items.insert(key.to_vec(), id);
        }
    }

    /// Detaches `key` from whatever lease holds it.
    pub fn detach(&mut self, key: &[u8]) {
        if self.items.is_empty() {
            // The common case (no leased keys at all) costs no hashing on the put path.
            return;
        }
        if let Some(id) = self.items.remove(key)
            && let Some(lease) = self.leases.get_mut(&id)
        {
            lease.keys.remove(key);
        }
    }

    /// Leases whose time is up.
    pub fn expired(&self, now: i64) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .values()
            .filter(|l| l.expiry_ms <= now)
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The earliest expiry of any lease.
    pub fn next_expiry(&self) -> Option<i64> {
        self.leases.values().map(|l| l.expiry_ms).min()
    }
}

/// A random positive lease or member id (never 0).
pub fn random_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_i64(now_ms());
        let v = (h.finish() & (i64::MAX as u64)) as i64;
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_expire_attach() {
        let mut l = Lessor::default();
        l.insert(7, 10, 10_000);
        l.attach(7, b"k");
        assert_eq!(l.lease_of(b"k"), 7);
        assert_eq!(l.get(7).unwrap().remaining_secs(1_500), 8);
        assert_eq!(l.renew(7, 2_000), Some((10, 12_000)));
        assert!(l.expired(11_999).is_empty());
        assert_eq!(l.expired(12_000), vec![7]);
        assert_eq!(l.renew(7, 12_000), None);
        let gone = l.remove(7).unwrap();
        assert!(gone.keys.contains(b"k".as_slice()));
        assert_eq!(l.lease_of(b"k"), 0);
        assert_ne!(random_id(), 0);
    }
}
