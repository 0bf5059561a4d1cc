//! TaintToleration: the pod must tolerate every NoSchedule and NoExecute taint
//! of the node. Its score prefers nodes with fewer PreferNoSchedule taints the
//! pod does not tolerate (counted, then reverse-normalized to 0..100).

use k8s_openapi::api::core::v1::Toleration;

use crate::scheduler::framework::{
    FilterPlugin, NodeInfo, NodeScore, PodInfo, Reason, ScoreContext, ScorePlugin, Snapshot,
    default_normalize,
};
use crate::scheduler::helpers::{find_untolerated_hard_taint, tolerations_tolerate};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Result<(), Reason> {
        match find_untolerated_hard_taint(&node.node, pod) {
            None => Ok(()),
            Some(t) => Err(Reason::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Number of PreferNoSchedule taints not tolerated (only tolerations with
    /// effect PreferNoSchedule or no effect are considered).
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &ScoreContext) -> i64 {
        let tolerations: Vec<Toleration> = pod
            .tolerations()
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        node.taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerations_tolerate(&tolerations, t))
            .count() as i64
    }

    fn normalize(&self, _: &PodInfo, _: &ScoreContext, scores: &mut [NodeScore]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;

    #[test]
    fn untolerated_taint_message() {
        let n = with_taint(
            node("cp", "1", "1Gi"),
            "node-role.kubernetes.io/control-plane",
            "",
            "NoSchedule",
        );
        let s = Snapshot::new(&[n], &[]);
        let p = PodInfo::new(pod("p", None, None));
        assert_eq!(
            TaintToleration.filter(&p, &s.nodes[0], &s),
            Err(Reason::unresolvable(
                "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
            ))
        );
        let mut tp = pod("t", None, None);
        spec_mut(&mut tp).tolerations = Some(vec![Toleration {
            key: Some("node-role.kubernetes.io/control-plane".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(
            TaintToleration
                .filter(&PodInfo::new(tp), &s.nodes[0], &s)
                .is_ok()
        );
    }

    #[test]
    fn prefer_no_schedule_is_not_a_filter_but_scores() {
        let a = with_taint(
            with_taint(node("a", "1", "1Gi"), "x", "1", "PreferNoSchedule"),
            "y",
            "1",
            "PreferNoSchedule",
        );
        let b = with_taint(node("b", "1", "1Gi"), "x", "1", "PreferNoSchedule");
        let c = node("c", "1", "1Gi");
        let s = Snapshot::new(&[a, b, c], &[]);
        let p = PodInfo::new(pod("p", None, None));
        let feasible: Vec<&NodeInfo> = s.nodes.iter().collect();
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &feasible,
        };
        assert!(TaintToleration.filter(&p, &s.nodes[0], &s).is_ok());
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .map(|n| NodeScore {
                node: n.name(),
                score: TaintToleration.score(&p, n, &ctx),
            })
            .collect();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        TaintToleration.normalize(&p, &ctx, &mut scores);
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [0, 50, 100]
        );
    }
}
