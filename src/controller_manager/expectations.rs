//! Controller expectations: what a controller has asked for but not yet seen in its cache.
//!
//! A controller acts on its cache, and its cache lags behind the API. Without expectations a
//! replica set that has just created 3 pods would, on its next sync (the cache not yet holding
//! them), create 3 more. So before acting, a controller records the pods it creates (by name,
//! which the API returns) and deletes (by uid); until the cache has caught up with all of them
//! (or 5 minutes pass, as in the real controller), it does not create or delete again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    adds: HashSet<String>,
    dels: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// Records a pod created for `key` (a namespace/name controller key).
    pub fn created(&self, key: &str, pod_name: String) {
        let mut m = self.by_key.lock();
        let p = m.entry(key.to_string()).or_default();
        p.adds.insert(pod_name);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Records a pod deleted for `key`.
    pub fn deleted(&self, key: &str, uid: String) {
        let mut m = self.by_key.lock();
        let p = m.entry(key.to_string()).or_default();
        p.dels.insert(uid);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Whether the cache has seen everything `key` asked for (then it may act again).
    pub fn satisfied(&self, key: &str, namespace: &str, pods: &Store<Pod>) -> bool {
        let mut m = self.by_key.lock();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        p.adds
            .retain(|name| pods.get(&ObjectRef::new(name).within(namespace)).is_none());
        if !p.dels.is_empty() {
            let still: HashSet<String> = pods
                .state()
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .filter_map(|pod| pod.metadata.uid.clone())
                .filter(|u| p.dels.contains(u))
                .collect();
            p.dels = still;
        }
        let expired = p.since.is_some_and(|s| s.elapsed() > TTL);
        if p.adds.is_empty() && p.dels.is_empty() || expired {
            m.remove(key);
            return true;
        }
        false
    }

    /// Forgets `key` (its object is gone).
    pub fn forget(&self, key: &str) {
        self.by_key.lock().remove(key);
    }
}
