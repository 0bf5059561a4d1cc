//! NodeResourcesBalancedAllocation: prefer nodes where cpu and memory would be
//! used in equal proportion after placing the pod. Score = (1 - std dev of the
//! requested/allocatable fractions) × 100. Skipped for pods that request nothing.

use crate::scheduler::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScoreContext, ScorePlugin};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

/// The real `balancedResourceScorer` on (requested, allocatable) pairs.
pub fn balanced_score(pairs: &[(i64, i64)]) -> i64 {
    let fractions: Vec<f64> = pairs
        .iter()
        .filter(|(_, alloc)| *alloc != 0)
        .map(|(req, alloc)| (*req as f64 / *alloc as f64).min(1.0))
        .collect();
    let std = match fractions.len() {
        0 | 1 => 0.0,
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            let var = fractions
                .iter()
                .map(|f| (f - mean) * (f - mean))
                .sum::<f64>()
                / n as f64;
            var.sqrt()
        }
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Best-effort pods (no cpu/memory requests) are not scored, so that many of
    /// them are not piled onto the same node.
    fn skip(&self, pod: &PodInfo, _: &ScoreContext) -> bool {
        pod.requests.milli_cpu == 0 && pod.requests.memory == 0
    }

    /// Uses the actual requests (no 100m/200Mi defaults), as the real plugin does.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &ScoreContext) -> i64 {
        balanced_score(&[
            (
                node.requested
                    .milli_cpu
                    .saturating_add(pod.requests.milli_cpu),
                node.allocatable.milli_cpu,
            ),
            (
                node.requested.memory.saturating_add(pod.requests.memory),
                node.allocatable.memory,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::Snapshot;
    use crate::scheduler::framework::testutil::*;

    #[test]
    fn std_deviation_formula() {
        assert_eq!(balanced_score(&[(1, 2), (1, 2)]), 100);
        // fractions 0.5 and 0.25 -> std 0.125 -> 87
        assert_eq!(balanced_score(&[(2, 4), (1, 4)]), 87);
        // over-commit is capped at 1: fractions 1 and 0 -> 50
        assert_eq!(balanced_score(&[(8, 4), (0, 4)]), 50);
        // three resources: 0.2, 0.5, 0.8 -> std sqrt(0.06)=0.2449 -> 75
        assert_eq!(balanced_score(&[(2, 10), (5, 10), (8, 10)]), 75);
        assert_eq!(balanced_score(&[(1, 0), (1, 2)]), 100);
    }

    #[test]
    fn scores_nodes_and_skips_best_effort() {
        let pods = [on_node(pod("a", Some("1"), None), "n")];
        let s = Snapshot::new(&[node("n", "4", "4Gi")], &pods);
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &[],
        };
        // cpu (1+1)/4 = 0.5, memory 1Gi/4Gi = 0.25 -> 87
        let p = PodInfo::new(pod("p", Some("1"), Some("1Gi")));
        assert!(!BalancedAllocation.skip(&p, &ctx));
        assert_eq!(BalancedAllocation.score(&p, &s.nodes[0], &ctx), 87);
        let be = PodInfo::new(pod("be", None, None));
        assert!(BalancedAllocation.skip(&be, &ctx));
    }
}
