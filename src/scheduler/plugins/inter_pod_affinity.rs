//! InterPodAffinity: required pod affinity (some matching pod must run in the
//! node's topology domain), required anti-affinity (none may), and existing
//! pods' required anti-affinity against the incoming pod. Its score adds the
//! weights of preferred terms, both the incoming pod's and existing pods'.

use k8s_openapi::api::core::v1::{PodAffinityTerm, WeightedPodAffinityTerm};

use crate::scheduler::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeScore, PodInfo, Reason, ScoreContext, ScorePlugin,
    Snapshot,
};
use crate::scheduler::helpers::affinity_term_matches;

pub const NAME: &str = "InterPodAffinity";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Weight given to an existing pod's *required* affinity term that the incoming
/// pod matches (the plugin's default `hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

/// The affinity term lists of a pod.
#[derive(Default)]
struct Terms<'a> {
    required: &'a [PodAffinityTerm],
    required_anti: &'a [PodAffinityTerm],
    preferred: &'a [WeightedPodAffinityTerm],
    preferred_anti: &'a [WeightedPodAffinityTerm],
}

fn terms(pod: &PodInfo) -> Terms<'_> {
    let Some(aff) = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return Terms::default();
    };
    let pa = aff.pod_affinity.as_ref();
    let paa = aff.pod_anti_affinity.as_ref();
    Terms {
        required: pa
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]),
        required_anti: paa
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]),
        preferred: pa
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]),
        preferred_anti: paa
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]),
    }
}

/// Is `other` (running on `other_node`) in the same `key` domain as `node`?
fn same_domain(node: &NodeInfo, other_node: &NodeInfo, key: &str) -> bool {
    match (node.labels().get(key), other_node.labels().get(key)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Reason> {
        let t = terms(pod);
        let ns = pod.namespace();
        let nsl = &snapshot.namespace_labels;

        // 1. The incoming pod's required affinity.
        if !t.required.is_empty() {
            let mut pods_exist = true;
            for term in t.required {
                if !node.labels().contains_key(&term.topology_key) {
                    // All topology labels must exist on the node.
                    return Err(Reason::unresolvable(ERR_AFFINITY));
                }
                let found = snapshot.pods().any(|(n, p)| {
                    same_domain(node, n, &term.topology_key)
                        && affinity_term_matches(term, ns, p, nsl)
                });
                if !found {
                    pods_exist = false;
                }
            }
            if !pods_exist {
                // The first pod of a group with affinity to itself may go
                // anywhere: allowed when no pod at all matches the terms and the
                // pod matches its own terms.
                let any_match = snapshot.pods().any(|(n, p)| {
                    t.required.iter().any(|term| {
                        n.labels().contains_key(&term.topology_key)
                            && affinity_term_matches(term, ns, p, nsl)
                    })
                });
                let self_match = t
                    .required
                    .iter()
                    .all(|term| affinity_term_matches(term, ns, pod, nsl));
                if any_match || !self_match {
                    return Err(Reason::unresolvable(ERR_AFFINITY));
                }
            }
        }

        // 2. The incoming pod's required anti-affinity.
        for term in t.required_anti {
            if node.labels().contains_key(&term.topology_key)
                && snapshot.pods().any(|(n, p)| {
                    same_domain(node, n, &term.topology_key)
                        && affinity_term_matches(term, ns, p, nsl)
                })
            {
                return Err(Reason::unschedulable(ERR_ANTI_AFFINITY));
            }
        }

        // 3. Existing pods' required anti-affinity against the incoming pod.
        if !snapshot.any_required_anti_affinity {
            return Ok(());
        }
        for (n, p) in snapshot.pods() {
            for term in terms(p).required_anti {
                if same_domain(node, n, &term.topology_key)
                    && affinity_term_matches(term, p.namespace(), pod, nsl)
                {
                    return Err(Reason::unschedulable(ERR_EXISTING_ANTI_AFFINITY));
                }
            }
        }
        Ok(())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn skip(&self, pod: &PodInfo, ctx: &ScoreContext) -> bool {
        let t = terms(pod);
        if !t.preferred.is_empty() || !t.preferred_anti.is_empty() {
            return false;
        }
        !ctx.snapshot.any_scored_affinity
    }

    /// Sum over every existing pod in the node's topology domains of:
    /// +w for the incoming pod's preferred affinity terms it matches, -w for its
    /// preferred anti-affinity terms, and in the other direction +1 for the
    /// existing pod's required affinity terms, +w / -w for its preferred ones
    /// that the incoming pod matches.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, ctx: &ScoreContext) -> i64 {
        let t = terms(pod);
        let ns = pod.namespace();
        let nsl = &ctx.snapshot.namespace_labels;
        let mut score: i64 = 0;
        for (n, p) in ctx.snapshot.pods() {
            if n.labels().is_empty() {
                continue;
            }
            let mut add = |term: &PodAffinityTerm, owner_ns: &str, target: &PodInfo, w: i64| {
                if same_domain(node, n, &term.topology_key)
                    && affinity_term_matches(term, owner_ns, target, nsl)
                {
                    score = score.saturating_add(w);
                }
            };
            for wt in t.preferred {
                add(&wt.pod_affinity_term, ns, p, i64::from(wt.weight));
            }
            for wt in t.preferred_anti {
                add(&wt.pod_affinity_term, ns, p, -i64::from(wt.weight));
            }
            let e = terms(p);
            for term in e.required {
                add(term, p.namespace(), pod, HARD_POD_AFFINITY_WEIGHT);
            }
            for wt in e.preferred {
                add(
                    &wt.pod_affinity_term,
                    p.namespace(),
                    pod,
                    i64::from(wt.weight),
                );
            }
            for wt in e.preferred_anti {
                add(
                    &wt.pod_affinity_term,
                    p.namespace(),
                    pod,
                    -i64::from(wt.weight),
                );
            }
        }
        score
    }

    /// Min-max normalization: lowest raw score -> 0, highest -> 100 (all 0
    /// when every node scored the same).
    fn normalize(&self, _: &PodInfo, _: &ScoreContext, scores: &mut [NodeScore]) {
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use k8s_openapi::api::core::v1::{Affinity, Pod, PodAffinity, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", app)])),
                ..Default::default()
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_affinity(mut p: Pod, aff: Option<PodAffinity>, anti: Option<PodAntiAffinity>) -> Pod {
        spec_mut(&mut p).affinity = Some(Affinity {
            pod_affinity: aff,
            pod_anti_affinity: anti,
            ..Default::default()
        });
        p
    }

    fn required(t: PodAffinityTerm) -> Option<PodAffinity> {
        Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![t]),
            ..Default::default()
        })
    }

    fn required_anti(t: PodAffinityTerm) -> Option<PodAntiAffinity> {
        Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![t]),
            ..Default::default()
        })
    }

    /// Two zones: a,b in z1; c in z2.
    fn zoned() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            with_labels(node("a", "1", "1Gi"), &[("zone", "z1")]),
            with_labels(node("b", "1", "1Gi"), &[("zone", "z1")]),
            with_labels(node("c", "1", "1Gi"), &[("zone", "z2")]),
        ]
    }

    fn verdicts(p: &Pod, s: &Snapshot) -> Vec<Result<(), Reason>> {
        let pi = PodInfo::new(p.clone());
        s.nodes
            .iter()
            .map(|n| InterPodAffinity.filter(&pi, n, s))
            .collect()
    }

    #[test]
    fn required_affinity_by_zone() {
        let pods = [on_node(
            with_pod_labels(pod("db", None, None), &[("app", "db")]),
            "a",
        )];
        let s = Snapshot::new(&zoned(), &pods);
        let p = with_affinity(pod("web", None, None), required(term("db", "zone")), None);
        let v = verdicts(&p, &s);
        assert!(v[0].is_ok() && v[1].is_ok(), "same zone as db");
        assert_eq!(v[2], Err(Reason::unresolvable(ERR_AFFINITY)));
    }

    #[test]
    fn affinity_other_namespace_does_not_count() {
        let mut db = on_node(
            with_pod_labels(pod("db", None, None), &[("app", "db")]),
            "a",
        );
        db.metadata.namespace = Some("other".into());
        let s = Snapshot::new(&zoned(), &[db]);
        let p = with_affinity(pod("web", None, None), required(term("db", "zone")), None);
        // no match anywhere and the pod does not match its own term -> fails everywhere
        assert!(verdicts(&p, &s).iter().all(|v| v.is_err()));
        // with the namespace listed it works
        let mut t = term("db", "zone");
        t.namespaces = Some(vec!["other".into()]);
        let p = with_affinity(pod("web", None, None), required(t), None);
        assert!(verdicts(&p, &s)[0].is_ok());
    }

    #[test]
    fn first_pod_of_self_affine_group_may_go_anywhere() {
        let s = Snapshot::new(&zoned(), &[]);
        let p = with_affinity(
            with_pod_labels(pod("w", None, None), &[("app", "web")]),
            required(term("web", "zone")),
            None,
        );
        assert!(verdicts(&p, &s).iter().all(|v| v.is_ok()));
        // but a node without the topology label never fits
        let s = Snapshot::new(&[node("bare", "1", "1Gi")], &[]);
        assert_eq!(verdicts(&p, &s)[0], Err(Reason::unresolvable(ERR_AFFINITY)));
    }

    #[test]
    fn required_anti_affinity() {
        let pods = [on_node(
            with_pod_labels(pod("w1", None, None), &[("app", "web")]),
            "a",
        )];
        let s = Snapshot::new(&zoned(), &pods);
        let p = with_affinity(
            with_pod_labels(pod("w2", None, None), &[("app", "web")]),
            None,
            required_anti(term("web", "zone")),
        );
        let v = verdicts(&p, &s);
        assert_eq!(v[0], Err(Reason::unschedulable(ERR_ANTI_AFFINITY)));
        assert_eq!(v[1], Err(Reason::unschedulable(ERR_ANTI_AFFINITY)));
        assert!(v[2].is_ok());
    }

    #[test]
    fn existing_pods_anti_affinity() {
        let guard = with_affinity(
            on_node(pod("guard", None, None), "c"),
            None,
            required_anti(term("noisy", "kubernetes.io/hostname")),
        );
        let s = Snapshot::new(&zoned(), &[guard]);
        let noisy = with_pod_labels(pod("n", None, None), &[("app", "noisy")]);
        let v = verdicts(&noisy, &s);
        assert!(v[0].is_ok() && v[1].is_ok());
        assert_eq!(v[2], Err(Reason::unschedulable(ERR_EXISTING_ANTI_AFFINITY)));
        assert!(
            verdicts(&pod("quiet", None, None), &s)
                .iter()
                .all(|v| v.is_ok())
        );
    }

    #[test]
    fn preferred_scores_both_directions() {
        let db = on_node(
            with_pod_labels(pod("db", None, None), &[("app", "db")]),
            "a",
        );
        // cache on c prefers (weight 50) to be near app=web
        let cache = with_affinity(
            on_node(pod("cache", None, None), "c"),
            Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 50,
                        pod_affinity_term: term("web", "zone"),
                    },
                ]),
                ..Default::default()
            }),
            None,
        );
        let s = Snapshot::new(&zoned(), &[db, cache]);
        // web prefers (weight 80) to be near db
        let web = with_affinity(
            with_pod_labels(pod("web", None, None), &[("app", "web")]),
            Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 80,
                        pod_affinity_term: term("db", "zone"),
                    },
                ]),
                ..Default::default()
            }),
            None,
        );
        let pi = PodInfo::new(web);
        let feasible: Vec<&NodeInfo> = s.nodes.iter().collect();
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &feasible,
        };
        assert!(!InterPodAffinity.skip(&pi, &ctx));
        let mut scores: Vec<NodeScore> = s
            .nodes
            .iter()
            .map(|n| NodeScore {
                node: n.name(),
                score: InterPodAffinity.score(&pi, n, &ctx),
            })
            .collect();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [80, 80, 50]
        );
        InterPodAffinity.normalize(&pi, &ctx, &mut scores);
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [100, 100, 0]
        );
    }

    #[test]
    fn skip_without_any_affinity() {
        let s = Snapshot::new(&zoned(), &[on_node(pod("x", None, None), "a")]);
        let ctx = ScoreContext {
            snapshot: &s,
            feasible: &[],
        };
        assert!(InterPodAffinity.skip(&PodInfo::new(pod("p", None, None)), &ctx));
    }
}
