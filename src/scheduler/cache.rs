//! The scheduler's cache: what the watches showed of nodes and bound pods, plus the pods this
//! scheduler has *assumed* on a node (bound, or binding, before the watch shows it), kept as a
//! ready [`Snapshot`] that every event updates in place — kube-scheduler's
//! `pkg/scheduler/backend/cache`. An attempt reads the snapshot as it is: nothing is rebuilt or
//! copied per pod, so an attempt costs the same with 100 pods or 100,000.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::framework::{
    NodeInfo, PodInfo, Snapshot, has_required_anti_affinity, has_scored_affinity,
};

#[derive(Default)]
pub struct Cache {
    /// Bound pods as the watch last showed them (`namespace/name` → info).
    pods: HashMap<String, Arc<PodInfo>>,
    /// Nodes as the watch last showed them.
    nodes: HashMap<String, Arc<Node>>,
    /// Pods this scheduler bound (or is binding) that the watch has not shown bound yet.
    assumed: HashMap<String, Arc<PodInfo>>,
    /// While a watch re-lists: what the new list holds so far.
    relisting_pods: Option<HashMap<String, Arc<PodInfo>>>,
    relisting_nodes: Option<HashMap<String, Arc<Node>>>,
    /// Nodes (sorted by name) with their watched and assumed pods.
    snapshot: Snapshot,
    /// How many pods in `snapshot` have required pod anti-affinity terms.
    anti_affinity: usize,
    /// How many pods in `snapshot` have affinity terms InterPodAffinity scores by.
    scored_affinity: usize,
}

fn is_terminal(pi: &PodInfo) -> bool {
    matches!(
        pi.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Cache {
    /// The snapshot an attempt works on (namespace labels are the caller's to set).
    pub fn snapshot(&mut self) -> &mut Snapshot {
        self.snapshot.any_required_anti_affinity = self.anti_affinity > 0;
        self.snapshot.any_scored_affinity = self.scored_affinity > 0;
        &mut self.snapshot
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains_key(key)
    }

    /// Puts a pod on its node in the snapshot (unless it has finished or the node is unknown).
    fn place(&mut self, pi: &Arc<PodInfo>) {
        if is_terminal(pi) {
            return;
        }
        let Some(node) = pi.node_name() else {
            return;
        };
        if let Some(n) = self.snapshot.node_mut(node) {
            n.add_pod(pi.clone());
            if has_required_anti_affinity(&pi.pod) {
                self.anti_affinity += 1;
            }
            if has_scored_affinity(&pi.pod) {
                self.scored_affinity += 1;
            }
        }
    }

    /// Takes a pod off its node in the snapshot (if it is there).
    fn unplace(&mut self, key: &str, pi: &PodInfo) {
        let Some(node) = pi.node_name() else {
            return;
        };
        if let Some(n) = self.snapshot.node_mut(node)
            && let Some(removed) = n.remove_pod(key)
        {
            if has_required_anti_affinity(&removed.pod) {
                self.anti_affinity = self.anti_affinity.saturating_sub(1);
            }
            if has_scored_affinity(&removed.pod) {
                self.scored_affinity = self.scored_affinity.saturating_sub(1);
            }
        }
    }

    /// The watch shows this pod: bound (`Some`) or not bound (`None`). Returns whether this
    /// scheduler had assumed it (its binding is now confirmed).
    pub fn set_pod(&mut self, key: &str, info: Option<Arc<PodInfo>>, initial: bool) -> bool {
        if initial && let Some(relist) = self.relisting_pods.as_mut() {
            match info {
                Some(i) => relist.insert(key.to_string(), i),
                None => relist.remove(key),
            };
            return false;
        }
        let old = match &info {
            Some(i) => self.pods.insert(key.to_string(), i.clone()),
            None => self.pods.remove(key),
        };
        if let Some(old) = old {
            self.unplace(key, &old);
        }
        let mut was_assumed = false;
        // Seen bound: the assumption is confirmed. (Seen unbound: a binding may be in flight;
        // the assumption stays until it is confirmed or fails.)
        if info.is_some()
            && let Some(a) = self.assumed.remove(key)
        {
            self.unplace(key, &a);
            was_assumed = true;
        }
        if let Some(i) = &info {
            self.place(i);
        }
        was_assumed
    }

    /// The watch shows this pod deleted.
    pub fn delete_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            self.unplace(key, &old);
        }
        self.forget(key);
    }

    /// This scheduler chose a node for the pod: count it there from now on.
    pub fn assume(&mut self, key: &str, info: Arc<PodInfo>) {
        self.forget(key);
        self.place(&info);
        self.assumed.insert(key.to_string(), info);
    }

    /// The binding failed: the pod no longer counts on its node.
    pub fn forget(&mut self, key: &str) {
        if let Some(a) = self.assumed.remove(key) {
            self.unplace(key, &a);
        }
    }

    /// A pod watch (re)lists: until [`Cache::pods_listed`], listed pods are collected aside.
    pub fn pods_relisting(&mut self) {
        self.relisting_pods = Some(HashMap::new());
    }

    pub fn pods_listed(&mut self) {
        if let Some(pods) = self.relisting_pods.take() {
            self.assumed.retain(|k, _| !pods.contains_key(k));
            self.pods = pods;
            self.rebuild();
        }
    }

    pub fn nodes_relisting(&mut self) {
        self.relisting_nodes = Some(HashMap::new());
    }

    pub fn nodes_listed(&mut self) {
        if let Some(nodes) = self.relisting_nodes.take() {
            self.nodes = nodes;
            self.rebuild();
        }
    }

    /// The watch shows this node (added or changed).
    pub fn set_node(&mut self, node: Arc<Node>, initial: bool) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if initial && let Some(relist) = self.relisting_nodes.as_mut() {
            relist.insert(name, node);
            return;
        }
        self.nodes.insert(name.clone(), node.clone());
        if let Some(info) = self.snapshot.node_mut(&name) {
            // Same pods, new node object (allocatable, labels and taints may have changed).
            let pods = std::mem::take(&mut info.pods);
            *info = NodeInfo::new(node);
            for p in pods {
                info.add_pod(p);
            }
            return;
        }
        let at = self
            .snapshot
            .nodes
            .partition_point(|n| n.name() < name.as_str());
        self.snapshot.nodes.insert(at, NodeInfo::new(node));
        // Pods may have been seen bound to it before the node itself.
        let waiting: Vec<Arc<PodInfo>> = self
            .pods
            .values()
            .chain(self.assumed.values())
            .filter(|p| p.node_name() == Some(name.as_str()))
            .cloned()
            .collect();
        for p in &waiting {
            self.place(p);
        }
    }

    /// The watch shows this node deleted.
    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
        if let Ok(i) = self.snapshot.nodes.binary_search_by(|n| n.name().cmp(name)) {
            let info = self.snapshot.nodes.remove(i);
            let gone = |f: fn(&k8s_openapi::api::core::v1::Pod) -> bool| {
                info.pods.iter().filter(|p| f(&p.pod)).count()
            };
            self.anti_affinity = self
                .anti_affinity
                .saturating_sub(gone(has_required_anti_affinity));
            self.scored_affinity = self
                .scored_affinity
                .saturating_sub(gone(has_scored_affinity));
        }
    }

    /// Builds the snapshot anew from the nodes, the bound pods and the assumed ones.
    fn rebuild(&mut self) {
        let mut infos: Vec<NodeInfo> = self.nodes.values().cloned().map(NodeInfo::new).collect();
        infos.sort_by(|a, b| a.name().cmp(b.name()));
        let labels = std::mem::take(&mut self.snapshot.namespace_labels);
        self.snapshot = Snapshot::from_node_infos(
            infos,
            self.pods
                .values()
                .chain(self.assumed.values())
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.snapshot.namespace_labels = labels;
        self.anti_affinity = self
            .snapshot
            .pods()
            .filter(|(_, p)| has_required_anti_affinity(&p.pod))
            .count();
        self.scored_affinity = self
            .snapshot
            .pods()
            .filter(|(_, p)| has_scored_affinity(&p.pod))
            .count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;

    fn info(p: k8s_openapi::api::core::v1::Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(p))
    }

    fn pods_on(c: &mut Cache, node: &str) -> Vec<String> {
        let mut v: Vec<String> = c
            .snapshot()
            .node(node)
            .map(|n| n.pods.iter().map(|p| p.key()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The incremental snapshot equals one built from scratch after any sequence of events.
    fn assert_matches_rebuild(c: &mut Cache) {
        let got: Vec<(String, Vec<String>, i64)> = c
            .snapshot()
            .nodes
            .iter()
            .map(|n| {
                let mut pods: Vec<String> = n.pods.iter().map(|p| p.key()).collect();
                pods.sort();
                (n.name().to_string(), pods, n.requested.milli_cpu)
            })
            .collect();
        let any = c.snapshot().any_required_anti_affinity;
        let scored = c.snapshot().any_scored_affinity;
        c.rebuild();
        let want: Vec<(String, Vec<String>, i64)> = c
            .snapshot()
            .nodes
            .iter()
            .map(|n| {
                let mut pods: Vec<String> = n.pods.iter().map(|p| p.key()).collect();
                pods.sort();
                (n.name().to_string(), pods, n.requested.milli_cpu)
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(any, c.snapshot().any_required_anti_affinity);
        assert_eq!(scored, c.snapshot().any_scored_affinity);
    }

    #[test]
    fn events_update_the_snapshot_in_place() {
        let mut c = Cache::default();
        c.nodes_relisting();
        c.set_node(Arc::new(node("a", "4", "8Gi")), true);
        c.nodes_listed();
        c.pods_relisting();
        c.set_pod(
            "default/x",
            Some(info(on_node(pod("x", Some("1"), None), "a"))),
            true,
        );
        c.pods_listed();
        assert_eq!(pods_on(&mut c, "a"), ["default/x"]);

        // A pod bound to a node not seen yet counts once the node arrives.
        c.set_pod(
            "default/y",
            Some(info(on_node(pod("y", Some("1"), None), "b"))),
            false,
        );
        assert!(c.snapshot().node("b").is_none());
        c.set_node(Arc::new(node("b", "4", "8Gi")), false);
        assert_eq!(pods_on(&mut c, "b"), ["default/y"]);
        assert_matches_rebuild(&mut c);

        // Assumed, then confirmed by the watch: counted once.
        c.assume("default/z", info(on_node(pod("z", Some("2"), None), "a")));
        assert!(c.is_assumed("default/z"));
        assert_eq!(
            c.snapshot().node("a").map(|n| n.requested.milli_cpu),
            Some(3000)
        );
        // An unbound view of the pod (an update racing the binding) keeps the assumption.
        assert!(!c.set_pod("default/z", None, false));
        assert!(c.is_assumed("default/z"));
        assert!(c.set_pod(
            "default/z",
            Some(info(on_node(pod("z", Some("2"), None), "a"))),
            false
        ));
        assert!(!c.is_assumed("default/z"));
        assert_eq!(
            c.snapshot().node("a").map(|n| n.requested.milli_cpu),
            Some(3000)
        );
        assert_matches_rebuild(&mut c);

        // A failed binding forgets the pod.
        c.assume("default/w", info(on_node(pod("w", Some("1"), None), "b")));
        c.forget("default/w");
        assert_eq!(pods_on(&mut c, "b"), ["default/y"]);

        // A finished pod no longer counts; a deleted one neither.
        let mut done = on_node(pod("x", Some("1"), None), "a");
        done.status.get_or_insert_default().phase = Some("Succeeded".into());
        c.set_pod("default/x", Some(info(done)), false);
        assert_eq!(pods_on(&mut c, "a"), ["default/z"]);
        c.delete_pod("default/z");
        assert_eq!(pods_on(&mut c, "a"), Vec::<String>::new());

        // A changed node keeps its pods; a deleted one drops them.
        c.set_node(Arc::new(node("b", "8", "8Gi")), false);
        assert_eq!(pods_on(&mut c, "b"), ["default/y"]);
        assert_eq!(
            c.snapshot().node("b").map(|n| n.allocatable.milli_cpu),
            Some(8000)
        );
        assert_matches_rebuild(&mut c);
        c.delete_node("b");
        assert!(c.snapshot().node("b").is_none());
        assert_matches_rebuild(&mut c);
    }

    #[test]
    fn counts_pods_with_required_anti_affinity() {
        let mut c = Cache::default();
        c.set_node(Arc::new(node("a", "4", "8Gi")), false);
        let mut p = on_node(pod("x", None, None), "a");
        spec_mut(&mut p).affinity = Some(
            serde_json::from_value(serde_json::json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "zone",
                }],
            }}))
            .expect("affinity"),
        );
        c.set_pod("default/x", Some(info(p)), false);
        assert!(c.snapshot().any_required_anti_affinity);
        c.delete_pod("default/x");
        assert!(!c.snapshot().any_required_anti_affinity);
    }
}
