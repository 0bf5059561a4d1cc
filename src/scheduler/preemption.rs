//! Preemption (the DefaultPreemption PostFilter): when a pod fits nowhere, look
//! for a node where evicting lower-priority pods would let it fit, and nominate
//! that node.
//!
//! Per node whose failure was plain `Unschedulable` (an `...AndUnresolvable`
//! failure such as a taint or node affinity cannot be fixed by evicting pods):
//! remove every pod with a lower priority; if the pod still does not fit, the
//! node is no candidate. Otherwise put the removed pods back one by one, most
//! important first (higher priority, then earlier start time), keeping each one
//! that does not break the fit: the rest are the victims.
//!
//! The candidate node is picked like `pickOneNodeForPreemption`: lowest
//! highest-victim priority, then lowest sum of victim priorities, then fewest
//! victims, then the latest start time among the highest-priority victims, then
//! node name. Simplified: PodDisruptionBudgets are ignored (no PDB-violation
//! criterion), every node is tried (the real one samples candidates from a
//! random offset in large clusters), nominated pods and extenders are ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::failure::fit_error_message;
use super::framework::{Code, Framework, PodInfo, Reason, ScheduleResult, Snapshot};

/// Counted for nodes where evicting pods cannot help.
pub const ERR_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Counted for nodes without any lower-priority pod.
pub const ERR_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// When the pod has `preemptionPolicy: Never`.
pub const NOT_ELIGIBLE_NEVER: &str = "not eligible due to preemptionPolicy=Never.";

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    pub namespace: String,
    pub name: String,
    pub priority: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreemptionOutcome {
    /// The pod may not preempt (e.g. `preemptionPolicy: Never`).
    NotEligible { message: String },
    /// No node can be freed. `statuses` holds the nodes that were tried; all
    /// others count as "Preemption is not helpful for scheduling".
    NoCandidate {
        num_all_nodes: usize,
        statuses: BTreeMap<String, Reason>,
    },
    /// Evict `victims` (highest priority first), then set the pod's
    /// `status.nominatedNodeName` to `node`.
    Nominated { node: String, victims: Vec<Victim> },
}

impl PreemptionOutcome {
    /// The suffix of the FailedScheduling message ("preemption: ..."), none when
    /// a node was nominated.
    pub fn post_filter_message(&self) -> Option<String> {
        match self {
            PreemptionOutcome::NotEligible { message } => Some(format!("preemption: {message}")),
            PreemptionOutcome::NoCandidate {
                num_all_nodes,
                statuses,
            } => Some(format!(
                "preemption: {}",
                fit_error_message(*num_all_nodes, statuses, Some(ERR_NOT_HELPFUL), None)
            )),
            PreemptionOutcome::Nominated { .. } => None,
        }
    }
}

/// `util.MoreImportantPod`: higher priority, then earlier start (no start time
/// counts as "now", i.e. last).
fn start_nanos(p: &PodInfo) -> i128 {
    p.start_time()
        .map(|t| t.0.as_nanosecond())
        .unwrap_or(i128::MAX)
}

fn more_important_first(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority()
        .cmp(&a.priority())
        .then_with(|| start_nanos(a).cmp(&start_nanos(b)))
}

/// The minimal set of lower-priority pods to evict from `node_name` so that the
/// pod passes every filter, most important first; or why there is none.
pub fn select_victims_on_node(
    framework: &Framework,
    pod: &PodInfo,
    snapshot: &Snapshot,
    node_name: &str,
) -> Result<Vec<std::sync::Arc<PodInfo>>, Reason> {
    let Some(node) = snapshot.node(node_name) else {
        return Err(Reason::unresolvable(ERR_NOT_HELPFUL));
    };
    let mut potential: Vec<std::sync::Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority() < pod.priority())
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Reason::unresolvable(ERR_NO_VICTIMS));
    }
    let mut snap = snapshot.clone();
    let fails = |snap: &Snapshot| {
        snap.node(node_name)
            .and_then(|n| framework.first_failure(pod, n, snap))
            .map(|(_, r)| r)
    };
    for p in &potential {
        if let Some(n) = snap.node_mut(node_name) {
            n.remove_pod(&p.key());
        }
    }
    if let Some(r) = fails(&snap) {
        return Err(r);
    }
    potential.sort_by(|a, b| more_important_first(a, b));
    let mut victims = Vec::new();
    for p in potential {
        if let Some(n) = snap.node_mut(node_name) {
            n.add_pod(p.clone());
        }
        if fails(&snap).is_some() {
            if let Some(n) = snap.node_mut(node_name) {
                n.remove_pod(&p.key());
            }
            victims.push(p);
        }
    }
    if victims.is_empty() {
        // The pod fits without evicting anything: not a preemption case.
        return Err(Reason::unresolvable(ERR_NOT_HELPFUL));
    }
    Ok(victims)
}

/// Runs preemption after `result` found no feasible node.
pub fn preempt(
    framework: &Framework,
    pod: &Pod,
    snapshot: &Snapshot,
    result: &ScheduleResult,
) -> PreemptionOutcome {
    let pi = PodInfo::new(pod.clone());
    let never = pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never");
    if never {
        return PreemptionOutcome::NotEligible {
            message: NOT_ELIGIBLE_NEVER.to_string(),
        };
    }
    let mut statuses = BTreeMap::new();
    let mut candidates: Vec<(String, Vec<std::sync::Arc<PodInfo>>)> = Vec::new();
    for (node, reason) in &result.diagnosis {
        if reason.code != Code::Unschedulable {
            continue;
        }
        match select_victims_on_node(framework, &pi, snapshot, node) {
            Ok(v) => candidates.push((node.clone(), v)),
            Err(r) => {
                statuses.insert(node.clone(), r);
            }
        }
    }
    match pick_one_node(&candidates) {
        Some(i) => {
            let (node, victims) = &candidates[i];
            PreemptionOutcome::Nominated {
                node: node.clone(),
                victims: victims
                    .iter()
                    .map(|p| Victim {
                        namespace: p.namespace().to_string(),
                        name: p.name().to_string(),
                        priority: p.priority(),
                    })
                    .collect(),
            }
        }
        None => PreemptionOutcome::NoCandidate {
            num_all_nodes: snapshot.nodes.len(),
            statuses,
        },
    }
}

/// Index of the best candidate (victims sorted most important first).
fn pick_one_node(candidates: &[(String, Vec<std::sync::Arc<PodInfo>>)]) -> Option<usize> {
    let key = |victims: &[std::sync::Arc<PodInfo>]| {
        let highest = victims.first().map(|p| p.priority()).unwrap_or(i32::MIN);
        let sum: i64 = victims
            .iter()
            .map(|p| i64::from(p.priority()) + i64::from(i32::MAX) + 1)
            .sum();
        let earliest_of_highest = victims
            .iter()
            .filter(|p| p.priority() == highest)
            .map(|p| start_nanos(p))
            .min()
            .unwrap_or(i128::MIN);
        // smaller tuple is better; later start time is better, hence negated
        (
            i64::from(highest),
            sum,
            victims.len(),
            std::cmp::Reverse(earliest_of_highest),
        )
    };
    (0..candidates.len()).min_by(|&a, &b| {
        key(&candidates[a].1)
            .cmp(&key(&candidates[b].1))
            .then_with(|| candidates[a].0.cmp(&candidates[b].0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::failure::failed_scheduling_message;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::Node;

    fn run(nodes: &[Node], pods: &[Pod], p: &Pod) -> (ScheduleResult, PreemptionOutcome) {
        let fw = Framework::default_profile();
        let s = Snapshot::new(nodes, pods);
        let r = fw.schedule(p, &s);
        assert!(r.selected.is_none());
        let o = preempt(&fw, p, &s, &r);
        (r, o)
    }

    #[test]
    fn evicts_as_few_lowest_priority_pods_as_needed() {
        let nodes = [node("a", "3", "8Gi")];
        let pods = [
            on_node(with_priority(pod("low1", Some("1"), None), 1), "a"),
            on_node(with_priority(pod("low2", Some("1"), None), 2), "a"),
            on_node(with_priority(pod("high", Some("1"), None), 100), "a"),
        ];
        let p = with_priority(pod("new", Some("1"), None), 50);
        let (_, o) = run(&nodes, &pods, &p);
        // one cpu is enough: low2 (more important) is reprieved, low1 evicted
        assert_eq!(
            o,
            PreemptionOutcome::Nominated {
                node: "a".into(),
                victims: vec![Victim {
                    namespace: "default".into(),
                    name: "low1".into(),
                    priority: 1
                }],
            }
        );
        assert_eq!(o.post_filter_message(), None);
    }

    #[test]
    fn picks_node_with_lowest_priority_victims() {
        let nodes = [
            node("a", "1", "8Gi"),
            node("b", "1", "8Gi"),
            node("c", "1", "8Gi"),
        ];
        let pods = [
            on_node(with_priority(pod("pa", Some("1"), None), 10), "a"),
            on_node(with_priority(pod("pb", Some("1"), None), 5), "b"),
            on_node(with_priority(pod("pc1", Some("500m"), None), 5), "c"),
            on_node(with_priority(pod("pc2", Some("500m"), None), 5), "c"),
        ];
        let p = with_priority(pod("new", Some("1"), None), 50);
        let (_, o) = run(&nodes, &pods, &p);
        // b beats a (priority 5 < 10) and c (sum of two victims is larger)
        match o {
            PreemptionOutcome::Nominated { node, victims } => {
                assert_eq!(node, "b");
                assert_eq!(victims.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_candidates_message() {
        let nodes = [
            with_taint(
                node("cp", "8", "8Gi"),
                "node-role.kubernetes.io/control-plane",
                "",
                "NoSchedule",
            ),
            node("w1", "1", "8Gi"),
            node("w2", "1", "8Gi"),
        ];
        let pods = [
            on_node(with_priority(pod("same", Some("1"), None), 50), "w1"),
            on_node(with_priority(pod("low", Some("500m"), None), 1), "w2"),
        ];
        // 2 cpus never fit on w2 even after evicting "low"
        let p = with_priority(pod("new", Some("2"), None), 50);
        let (r, o) = run(&nodes, &pods, &p);
        assert_eq!(
            failed_scheduling_message(&r, Some(&o)).unwrap(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: \
             0/3 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for \
             incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn never_policy_and_unresolvable_only() {
        let nodes = [with_taint(node("a", "1", "1Gi"), "k", "v", "NoSchedule")];
        let mut p = with_priority(pod("new", None, None), 50);
        let (r, o) = run(&nodes, &[], &p);
        assert_eq!(
            failed_scheduling_message(&r, Some(&o)).unwrap(),
            "0/1 nodes are available: 1 node(s) had untolerated taint {k: v}. preemption: \
             0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
        spec_mut(&mut p).preemption_policy = Some("Never".into());
        let (_, o) = run(&nodes, &[], &p);
        assert_eq!(
            o.post_filter_message().unwrap(),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn anti_affinity_victim() {
        use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let nodes = [node("a", "4", "8Gi")];
        let pods = [
            on_node(
                with_priority(with_pod_labels(pod("db", None, None), &[("app", "db")]), 1),
                "a",
            ),
            on_node(with_priority(pod("other", None, None), 1), "a"),
        ];
        let mut p = with_priority(pod("new", None, None), 10);
        spec_mut(&mut p).affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(labels(&[("app", "db")])),
                        ..Default::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (_, o) = run(&nodes, &pods, &p);
        match o {
            PreemptionOutcome::Nominated { victims, .. } => {
                assert_eq!(
                    victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
                    ["db"]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
