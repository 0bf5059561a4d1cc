//! NodeResourcesFit: the node's allocatable minus what its pods request must
//! cover the pod's requests (cpu, memory, ephemeral-storage, extended resources)
//! and the node must have room for one more pod. Its score is LeastAllocated:
//! prefer nodes with more free cpu and memory (equally weighted).

use crate::scheduler::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, Reason, ScoreContext, ScorePlugin, Snapshot,
};

pub const NAME: &str = "NodeResourcesFit";

pub struct NodeResourcesFit;

/// Every resource the pod lacks on the node, in the real plugin's order:
/// "Too many pods", cpu, memory, ephemeral-storage, then extended resources
/// (sorted by name here).
pub fn insufficient_resources(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if node.pods.len() as i64 + 1 > node.allowed_pod_number {
        out.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    if req.is_zero() {
        return out;
    }
    let free = |name: &str| {
        node.allocatable
            .get(name)
            .saturating_sub(node.requested.get(name))
    };
    for name in ["cpu", "memory", "ephemeral-storage"] {
        let want = req.get(name);
        if want > 0 && want > free(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    for (name, want) in &req.scalar {
        if *want > 0 && *want > free(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        let reasons = insufficient_resources(pod, node);
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Reason {
                code: crate::scheduler::framework::Code::Unschedulable,
                reasons,
            })
        }
    }
}

/// `(capacity - requested) * 100 / capacity`, 0 when over-committed.
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    ((capacity - requested) as i128 * MAX_NODE_SCORE as i128 / capacity as i128) as i64
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    /// LeastAllocated over cpu and memory (weight 1 each), using the non-zero
    /// requests (100m / 200Mi for containers that request nothing).
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &ScoreContext) -> i64 {
        let mut sum = 0;
        let mut weights = 0;
        for (alloc, used, want) in [
            (
                node.allocatable.milli_cpu,
                node.non_zero_requested.milli_cpu,
                pod.non_zero_requests.milli_cpu,
            ),
            (
                node.allocatable.memory,
                node.non_zero_requested.memory,
                pod.non_zero_requests.memory,
            ),
        ] {
            if alloc == 0 {
                continue;
            }
            sum += least_requested_score(used.saturating_add(want), alloc);
            weights += 1;
        }
        if weights == 0 { 0 } else { sum / weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use crate::scheduler::framework::{Code, PodInfo};

    fn fit(p: k8s_openapi::api::core::v1::Pod, s: &Snapshot) -> Result<(), Reason> {
        NodeResourcesFit.filter(&PodInfo::new(p), &s.nodes[0], s)
    }

    #[test]
    fn insufficient_messages() {
        let pods = [on_node(pod("a", Some("1500m"), Some("1Gi")), "n")];
        let s = Snapshot::new(&[node("n", "2", "2Gi")], &pods);
        assert!(fit(pod("p", Some("500m"), Some("1Gi")), &s).is_ok());
        assert_eq!(
            fit(pod("p", Some("600m"), Some("1Gi")), &s),
            Err(Reason::unschedulable("Insufficient cpu"))
        );
        let err = fit(pod("p", Some("1"), Some("2Gi")), &s).unwrap_err();
        assert_eq!(err.code, Code::Unschedulable);
        assert_eq!(err.reasons, ["Insufficient cpu", "Insufficient memory"]);
    }

    #[test]
    fn too_many_pods_and_extended() {
        let mut n = node("n", "2", "2Gi");
        let alloc = n.status.as_mut().unwrap().allocatable.as_mut().unwrap();
        alloc.insert("pods".into(), q("1"));
        alloc.insert("example.com/gpu".into(), q("1"));
        let pods = [on_node(pod("a", None, None), "n")];
        let s = Snapshot::new(&[n], &pods);
        let mut p = pod("p", None, None);
        spec_mut(&mut p).containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests = Some(rl(&[("example.com/gpu", "2")]));
        assert_eq!(
            fit(p, &s).unwrap_err().reasons,
            ["Too many pods", "Insufficient example.com/gpu"]
        );
    }

    #[test]
    fn zero_request_pod_only_checks_pod_count() {
        let s = Snapshot::new(&[node("n", "0", "0")], &[]);
        assert!(fit(pod("p", None, None), &s).is_ok());
        assert_eq!(
            fit(pod("p", Some("1m"), None), &s),
            Err(Reason::unschedulable("Insufficient cpu"))
        );
    }

    #[test]
    fn malformed_allocatable_means_no_room() {
        let mut n = node("n", "2", "2Gi");
        n.status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert("cpu".into(), q("two"));
        let s = Snapshot::new(&[n], &[]);
        assert_eq!(
            fit(pod("p", Some("100m"), None), &s),
            Err(Reason::unschedulable("Insufficient cpu"))
        );
    }

    #[test]
    fn least_allocated_score() {
        // node 4 cpu / 8Gi; existing 1 cpu / 2Gi; pod 1 cpu / 2Gi
        // cpu: (4000-2000)*100/4000 = 50, mem: (8-4)*100/8 = 50 -> 50
        let pods = [on_node(pod("a", Some("1"), Some("2Gi")), "n")];
        let s = Snapshot::new(&[node("n", "4", "8Gi")], &pods);
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &[],
        };
        let p = PodInfo::new(pod("p", Some("1"), Some("2Gi")));
        assert_eq!(NodeResourcesFit.score(&p, &s.nodes[0], &ctx), 50);
        // best-effort pod counts as 100m / 200Mi:
        // cpu (4000-1100)*100/4000 = 72, mem (8192-2248)*100/8192 = 72 (integer)
        let be = PodInfo::new(pod("be", None, None));
        assert_eq!(NodeResourcesFit.score(&be, &s.nodes[0], &ctx), 72);
        assert_eq!(least_requested_score(5, 4), 0);
        assert_eq!(least_requested_score(1, 0), 0);
    }
}
