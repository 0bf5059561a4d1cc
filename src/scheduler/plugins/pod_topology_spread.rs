//! PodTopologySpread: keep matching pods evenly spread over topology domains
//! (zones, hosts...). `whenUnsatisfiable: DoNotSchedule` constraints filter nodes
//! whose domain would exceed `maxSkew` over the least-loaded domain;
//! `ScheduleAnyway` constraints score nodes in less crowded domains higher.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::scheduler::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeScore, PodInfo, Reason, ScoreContext, ScorePlugin,
    Snapshot,
};
use crate::scheduler::helpers::{
    LABEL_HOSTNAME, find_untolerated_hard_taint, label_selector_is_empty, label_selector_matches,
    pod_matches_node_selector_and_affinity,
};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub struct PodTopologySpread;

/// One constraint with its selector resolved (matchLabelKeys merged in).
struct Constraint {
    max_skew: i64,
    key: String,
    min_domains: usize,
    /// `None`: no labelSelector, which selects nothing.
    selector: Option<LabelSelector>,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &PodInfo) -> Constraint {
        let mut selector = c.label_selector.clone();
        if let Some(sel) = selector.as_mut() {
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = pod.labels().get(key) {
                    sel.match_expressions.get_or_insert_with(Vec::new).push(
                        LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        },
                    );
                }
            }
        }
        Constraint {
            max_skew: i64::from(c.max_skew),
            key: c.topology_key.clone(),
            min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
            selector,
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn selects(&self, pod: &PodInfo) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| label_selector_matches(s, pod.labels()))
    }

    /// Matching, non-terminating pods of the incoming pod's namespace on `node`.
    /// An empty selector counts nothing, as in Kubernetes.
    fn count(&self, node: &NodeInfo, ns: &str) -> i64 {
        if self.selector.as_ref().is_none_or(label_selector_is_empty) {
            return 0;
        }
        node.pods
            .iter()
            .filter(|p| !p.is_terminating() && p.namespace() == ns && self.selects(p))
            .count() as i64
    }

    /// nodeAffinityPolicy (default Honor) and nodeTaintsPolicy (default Ignore):
    /// whether the node's pods count for this constraint.
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        if self.honor_node_affinity && !pod_matches_node_selector_and_affinity(pod, &node.node) {
            return false;
        }
        if self.honor_taints && find_untolerated_hard_taint(&node.node, pod).is_some() {
            return false;
        }
        true
    }
}

fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
        .collect()
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.labels().contains_key(&c.key))
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Reason> {
        let cs = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return Ok(());
        }
        // Matching pods per domain, per constraint, over all eligible nodes.
        let mut counts: Vec<BTreeMap<&str, i64>> = vec![BTreeMap::new(); cs.len()];
        for n in &snapshot.nodes {
            if !has_all_keys(n, &cs) {
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                if !c.includes(pod, n) {
                    continue;
                }
                if let Some(v) = n.labels().get(&c.key) {
                    *counts[i].entry(v.as_str()).or_insert(0) += c.count(n, pod.namespace());
                }
            }
        }
        for (i, c) in cs.iter().enumerate() {
            let Some(value) = node.labels().get(&c.key) else {
                return Err(Reason::unresolvable(ERR_MISSING_LABEL));
            };
            // With fewer eligible domains than minDomains the global minimum is 0.
            let min = if counts[i].len() < c.min_domains {
                0
            } else {
                counts[i]
                    .values()
                    .copied()
                    .min()
                    .unwrap_or(i64::from(i32::MAX))
            };
            let self_match = i64::from(c.selects(pod));
            let here = counts[i].get(value.as_str()).copied().unwrap_or(0);
            if here + self_match - min > c.max_skew {
                return Err(Reason::unschedulable(ERR_CONSTRAINTS));
            }
        }
        Ok(())
    }
}

/// What PreScore computes for the ScheduleAnyway constraints.
struct ScoreState {
    cs: Vec<Constraint>,
    /// Feasible nodes lacking one of the topology keys: scored 0.
    ignored: Vec<String>,
    /// (constraint index, domain) -> matching pods, for non-hostname keys.
    pair_counts: BTreeMap<(usize, String), i64>,
    /// ln(number of domains + 2) per constraint.
    weights: Vec<f64>,
}

fn pre_score(pod: &PodInfo, ctx: &ScoreContext) -> ScoreState {
    let cs = constraints(pod, "ScheduleAnyway");
    let mut ignored = Vec::new();
    let mut pair_counts = BTreeMap::new();
    let mut sizes = vec![0usize; cs.len()];
    for n in ctx.feasible {
        if !has_all_keys(n, &cs) {
            ignored.push(n.name().to_string());
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if c.key == LABEL_HOSTNAME {
                continue;
            }
            if let Some(v) = n.labels().get(&c.key)
                && pair_counts.insert((i, v.clone()), 0).is_none()
            {
                sizes[i] += 1;
            }
        }
    }
    for n in &ctx.snapshot.nodes {
        if !has_all_keys(n, &cs) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if !c.includes(pod, n) {
                continue;
            }
            let Some(v) = n.labels().get(&c.key) else {
                continue;
            };
            if let Some(cnt) = pair_counts.get_mut(&(i, v.clone())) {
                *cnt += c.count(n, pod.namespace());
            }
        }
    }
    let weights = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.key == LABEL_HOSTNAME {
                ctx.feasible.len() - ignored.len()
            } else {
                sizes[i]
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    ScoreState {
        cs,
        ignored,
        pair_counts,
        weights,
    }
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn skip(&self, pod: &PodInfo, _: &ScoreContext) -> bool {
        constraints(pod, "ScheduleAnyway").is_empty()
    }

    /// Σ over constraints of `matching pods in the node's domain × ln(#domains+2)
    /// + (maxSkew − 1)`: lower is better, flipped by `normalize`.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, ctx: &ScoreContext) -> i64 {
        let st = pre_score(pod, ctx);
        if st.ignored.iter().any(|n| n == node.name()) {
            return 0;
        }
        let mut score = 0.0;
        for (i, c) in st.cs.iter().enumerate() {
            let Some(v) = node.labels().get(&c.key) else {
                continue;
            };
            let cnt = if c.key == LABEL_HOSTNAME {
                c.count(node, pod.namespace())
            } else {
                st.pair_counts.get(&(i, v.clone())).copied().unwrap_or(0)
            };
            score += cnt as f64 * st.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Ignored nodes get 0; otherwise `100 × (max + min − score) / max`, and 100
    /// everywhere when the highest raw score is 0.
    fn normalize(&self, pod: &PodInfo, ctx: &ScoreContext, scores: &mut [NodeScore]) {
        let st = pre_score(pod, ctx);
        let is_ignored = |n: &str| st.ignored.iter().any(|i| i == n);
        let valid = || {
            scores
                .iter()
                .filter(|s| !is_ignored(s.node))
                .map(|s| s.score)
        };
        let min = valid().min().unwrap_or(0);
        let max = valid().max().unwrap_or(0).max(0);
        for s in scores.iter_mut() {
            s.score = if is_ignored(s.node) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s.score) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    fn spread(mut p: Pod, key: &str, max_skew: i32, when: &str) -> Pod {
        let c = TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        spec_mut(&mut p)
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(c);
        p
    }

    fn web(name: &str) -> Pod {
        with_pod_labels(pod(name, None, None), &[("app", "web")])
    }

    fn zones() -> Vec<Node> {
        vec![
            with_labels(node("a", "1", "1Gi"), &[("zone", "z1")]),
            with_labels(node("b", "1", "1Gi"), &[("zone", "z2")]),
            with_labels(node("c", "1", "1Gi"), &[("zone", "z2")]),
        ]
    }

    fn verdicts(p: &Pod, s: &Snapshot) -> Vec<Result<(), Reason>> {
        let pi = PodInfo::new(p.clone());
        s.nodes
            .iter()
            .map(|n| PodTopologySpread.filter(&pi, n, s))
            .collect()
    }

    #[test]
    fn max_skew_filter() {
        // z1: 2 web pods, z2: 1 -> placing in z1 gives skew 3-1 = 2 > 1
        let pods = [
            on_node(web("w1"), "a"),
            on_node(web("w2"), "a"),
            on_node(web("w3"), "b"),
        ];
        let s = Snapshot::new(&zones(), &pods);
        let v = verdicts(&spread(web("new"), "zone", 1, "DoNotSchedule"), &s);
        assert_eq!(v[0], Err(Reason::unschedulable(ERR_CONSTRAINTS)));
        assert!(v[1].is_ok() && v[2].is_ok());
        // maxSkew 2 allows z1
        assert!(verdicts(&spread(web("new"), "zone", 2, "DoNotSchedule"), &s)[0].is_ok());
        // a pod that does not match its own selector does not add itself
        let other = spread(pod("o", None, None), "zone", 1, "DoNotSchedule");
        assert!(verdicts(&other, &s)[0].is_ok());
    }

    #[test]
    fn missing_label() {
        let mut nodes = zones();
        nodes.push(node("bare", "1", "1Gi"));
        let s = Snapshot::new(&nodes, &[]);
        let v = verdicts(&spread(web("new"), "zone", 1, "DoNotSchedule"), &s);
        assert_eq!(s.nodes[2].name(), "bare");
        assert_eq!(
            v[2],
            Err(Reason::unresolvable(
                "node(s) didn't match pod topology spread constraints (missing required label)"
            ))
        );
    }

    #[test]
    fn min_domains_forces_global_minimum_zero() {
        // only z1 exists and already has 1 pod; minDomains 2 -> min treated as 0
        let nodes = [with_labels(node("a", "1", "1Gi"), &[("zone", "z1")])];
        let s = Snapshot::new(&nodes, &[on_node(web("w1"), "a")]);
        let mut p = spread(web("new"), "zone", 1, "DoNotSchedule");
        assert!(
            verdicts(&p, &s)[0].is_ok(),
            "skew 2-1 = 1 without minDomains"
        );
        spec_mut(&mut p)
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .min_domains = Some(2);
        assert_eq!(
            verdicts(&p, &s)[0],
            Err(Reason::unschedulable(ERR_CONSTRAINTS))
        );
    }

    #[test]
    fn node_affinity_policy_honor_excludes_domains() {
        // z2 nodes are excluded by nodeSelector, so z2 is not a domain and
        // only z1 counts: min = own count, placing there is fine.
        let nodes = [
            with_labels(node("a", "1", "1Gi"), &[("zone", "z1"), ("pool", "x")]),
            with_labels(node("b", "1", "1Gi"), &[("zone", "z2")]),
        ];
        let s = Snapshot::new(&nodes, &[on_node(web("w1"), "a"), on_node(web("w2"), "a")]);
        let mut p = spread(web("new"), "zone", 1, "DoNotSchedule");
        spec_mut(&mut p).node_selector = Some(labels(&[("pool", "x")]));
        assert!(verdicts(&p, &s)[0].is_ok());
        // with Ignore, z2 counts (0 pods) and z1 would reach skew 3
        spec_mut(&mut p)
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .node_affinity_policy = Some("Ignore".into());
        assert_eq!(
            verdicts(&p, &s)[0],
            Err(Reason::unschedulable(ERR_CONSTRAINTS))
        );
    }

    #[test]
    fn schedule_anyway_scoring() {
        // z1 (a): 2 pods; z2 (b, c): 1 pod on b
        let pods = [
            on_node(web("w1"), "a"),
            on_node(web("w2"), "a"),
            on_node(web("w3"), "b"),
        ];
        let s = Snapshot::new(&zones(), &pods);
        let p = PodInfo::new(spread(web("new"), "zone", 1, "ScheduleAnyway"));
        let feasible: Vec<&NodeInfo> = s.nodes.iter().collect();
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &feasible,
        };
        assert!(!PodTopologySpread.skip(&p, &ctx));
        // weight ln(2+2) = 1.386: z1 2*1.386 = 2.77 -> 3, z2 1.386 -> 1
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .map(|n| NodeScore {
                node: n.name(),
                score: PodTopologySpread.score(&p, n, &ctx),
            })
            .collect();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [3, 1, 1]
        );
        PodTopologySpread.normalize(&p, &ctx, &mut scores);
        // 100*(3+1-3)/3 = 33, 100*(3+1-1)/3 = 100
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [33, 100, 100]
        );
        assert!(PodTopologySpread.skip(&PodInfo::new(web("x")), &ctx));
    }

    #[test]
    fn hostname_scoring_counts_per_node() {
        let nodes = [node("a", "1", "1Gi"), node("b", "1", "1Gi")];
        let s = Snapshot::new(&nodes, &[on_node(web("w1"), "a")]);
        let p = PodInfo::new(spread(web("new"), LABEL_HOSTNAME, 1, "ScheduleAnyway"));
        let feasible: Vec<&NodeInfo> = s.nodes.iter().collect();
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &feasible,
        };
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .map(|n| NodeScore {
                node: n.name(),
                score: PodTopologySpread.score(&p, n, &ctx),
            })
            .collect();
        // ln(4) = 1.39 -> 1 for a, 0 for b
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), [1, 0]);
        PodTopologySpread.normalize(&p, &ctx, &mut scores);
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), [0, 100]);
    }
}
