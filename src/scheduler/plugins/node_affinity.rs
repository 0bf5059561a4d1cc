//! NodeAffinity: the node must match the pod's `spec.nodeSelector` and one of
//! its required node affinity terms (In, NotIn, Exists, DoesNotExist, Gt, Lt;
//! matchFields on metadata.name). Its score sums the weights of the preferred
//! terms the node matches, normalized to 0..100.

use k8s_openapi::api::core::v1::PreferredSchedulingTerm;

use crate::scheduler::framework::{
    FilterPlugin, NodeInfo, NodeScore, PodInfo, Reason, ScoreContext, ScorePlugin, Snapshot,
    default_normalize,
};
use crate::scheduler::helpers::{
    node_selector_term_matches, pod_matches_node_selector_and_affinity,
};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

fn preferred_terms(pod: &PodInfo) -> &[PreferredSchedulingTerm] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[])
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        if pod_matches_node_selector_and_affinity(pod, &node.node) {
            Ok(())
        } else {
            Err(Reason::unresolvable(ERR_REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn skip(&self, pod: &PodInfo, _: &ScoreContext) -> bool {
        preferred_terms(pod).is_empty()
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &ScoreContext) -> i64 {
        preferred_terms(pod)
            .iter()
            .filter(|t| t.weight != 0 && node_selector_term_matches(&t.preference, &node.node))
            .map(|t| i64::from(t.weight))
            .sum()
    }

    fn normalize(&self, _: &PodInfo, _: &ScoreContext, scores: &mut [NodeScore]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity as NA, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    };

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(exprs),
            match_fields: None,
        }
    }

    fn with_required(mut p: Pod, terms: Vec<NodeSelectorTerm>) -> Pod {
        spec_mut(&mut p).affinity = Some(Affinity {
            node_affinity: Some(NA {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn passes(p: &Pod, s: &Snapshot, i: usize) -> bool {
        NodeAffinity
            .filter(&PodInfo::new(p.clone()), &s.nodes[i], s)
            .is_ok()
    }

    #[test]
    fn node_selector() {
        let s = Snapshot::new(
            &[
                with_labels(node("a", "1", "1Gi"), &[("disk", "ssd")]),
                node("b", "1", "1Gi"),
            ],
            &[],
        );
        let mut p = pod("p", None, None);
        spec_mut(&mut p).node_selector = Some(labels(&[("disk", "ssd")]));
        assert!(passes(&p, &s, 0));
        assert_eq!(
            NodeAffinity.filter(&PodInfo::new(p), &s.nodes[1], &s),
            Err(Reason::unresolvable(
                "node(s) didn't match Pod's node affinity/selector"
            ))
        );
    }

    #[test]
    fn required_terms_operators() {
        let s = Snapshot::new(
            &[with_labels(
                node("a", "1", "1Gi"),
                &[("zone", "z1"), ("gen", "5")],
            )],
            &[],
        );
        let p = |exprs| with_required(pod("p", None, None), vec![term(exprs)]);
        assert!(passes(&p(vec![req("zone", "In", &["z1", "z2"])]), &s, 0));
        assert!(!passes(&p(vec![req("zone", "NotIn", &["z1"])]), &s, 0));
        assert!(passes(&p(vec![req("missing", "NotIn", &["z1"])]), &s, 0));
        assert!(passes(&p(vec![req("zone", "Exists", &[])]), &s, 0));
        assert!(passes(&p(vec![req("missing", "DoesNotExist", &[])]), &s, 0));
        assert!(passes(&p(vec![req("gen", "Gt", &["4"])]), &s, 0));
        assert!(!passes(&p(vec![req("gen", "Lt", &["4"])]), &s, 0));
        assert!(
            !passes(&p(vec![req("gen", "Gt", &["four"])]), &s, 0),
            "malformed -> no match"
        );
        // ANDed inside a term
        assert!(!passes(
            &p(vec![req("zone", "In", &["z1"]), req("gen", "Lt", &["4"])]),
            &s,
            0
        ));
        // ORed across terms
        let two = with_required(
            pod("p", None, None),
            vec![
                term(vec![req("zone", "In", &["z9"])]),
                term(vec![req("gen", "In", &["5"])]),
            ],
        );
        assert!(passes(&two, &s, 0));
        // an empty term matches nothing
        assert!(!passes(
            &with_required(pod("p", None, None), vec![NodeSelectorTerm::default()]),
            &s,
            0
        ));
        // matchFields on metadata.name
        let by_name = with_required(
            pod("p", None, None),
            vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("metadata.name", "In", &["a"])]),
            }],
        );
        assert!(passes(&by_name, &s, 0));
    }

    #[test]
    fn preferred_terms_score() {
        let nodes = [
            with_labels(node("a", "1", "1Gi"), &[("zone", "z1"), ("disk", "ssd")]),
            with_labels(node("b", "1", "1Gi"), &[("zone", "z1")]),
            node("c", "1", "1Gi"),
        ];
        let s = Snapshot::new(&nodes, &[]);
        let mut p = pod("p", None, None);
        spec_mut(&mut p).affinity = Some(Affinity {
            node_affinity: Some(NA {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 20,
                        preference: term(vec![req("zone", "In", &["z1"])]),
                    },
                    PreferredSchedulingTerm {
                        weight: 60,
                        preference: term(vec![req("disk", "In", &["ssd"])]),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = PodInfo::new(p);
        let feasible: Vec<&NodeInfo> = s.nodes.iter().collect();
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &feasible,
        };
        assert!(!NodeAffinity.skip(&p, &ctx));
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .map(|n| NodeScore {
                node: n.name(),
                score: NodeAffinity.score(&p, n, &ctx),
            })
            .collect();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [80, 20, 0]
        );
        NodeAffinity.normalize(&p, &ctx, &mut scores);
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [100, 25, 0]
        );
        assert!(NodeAffinity.skip(&PodInfo::new(pod("q", None, None)), &ctx));
    }
}
