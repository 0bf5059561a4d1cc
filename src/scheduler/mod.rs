//! The kube-scheduler's decision logic.
//!
//! When a pod is created without `spec.nodeName`, the scheduler decides which
//! node runs it. For each pending pod it takes a snapshot of the cluster (nodes
//! and the pods already bound to them) and runs a pipeline of plugins: *Filter*
//! plugins drop the nodes that cannot run the pod (not enough cpu, an untolerated
//! taint, a nodeSelector that does not match...), then *Score* plugins rank the
//! remaining nodes (0..100 each, times a weight) and the best one wins; the
//! scheduler then writes a Binding and the node's kubelet starts the pod. When no
//! node fits, the pod stays Pending with a FailedScheduling event that counts the
//! reasons per node, and preemption may evict lower-priority pods to make room.
//!
//! The decision logic is pure (no I/O): build a [`Snapshot`], call
//! [`Framework::schedule`] (or [`attempt`], which adds preemption and the event
//! message), and render the [`Explanation`] for `minik scheduler why`. Around it,
//! [`queue`] keeps the pods waiting for a node and [`run`] is the process
//! (`minik scheduler`, started as `kube-scheduler`): watches, binding, events.
//!
//! A learner's map: a pod's journey starts in [`run`] (watch → queue), goes
//! through [`framework`] and the [`plugins`] (one file per Filter/Score plugin,
//! as in Kubernetes' scheduler framework), and ends in a Binding or a
//! FailedScheduling event built by [`failure`] (and [`preemption`]).

pub mod cache;
pub mod explain;
pub mod failure;
pub mod framework;
pub mod helpers;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod run;

use k8s_openapi::api::core::v1::Pod;

pub use explain::{Explanation, render};
pub use failure::{failed_scheduling_message, fit_error_message};
pub use framework::{
    Code, FilterPlugin, Framework, NodeInfo, NodeScore, PodInfo, Reason, Resources, ScheduleResult,
    ScoreContext, ScorePlugin, Snapshot,
};
pub use preemption::{PreemptionOutcome, Victim, preempt};

/// Everything one scheduling cycle decides.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Filter/score outcome; `result.selected` is the node to bind to.
    pub result: ScheduleResult,
    /// Present when no node fitted (preemption runs only then).
    pub preemption: Option<PreemptionOutcome>,
    /// The FailedScheduling event message when the pod was not bound (also when
    /// a node was nominated: the pod waits for its victims to go away).
    pub message: Option<String>,
}

impl Attempt {
    /// The explanation with the failure message filled in.
    pub fn explanation(&self) -> Explanation {
        let mut e = self.result.explanation.clone();
        e.message = self.message.clone();
        e
    }

    /// Like [`Attempt::explanation`], moving it out (no copy): the result keeps an empty one.
    pub fn take_explanation(&mut self) -> Explanation {
        let mut e = std::mem::take(&mut self.result.explanation);
        e.message = self.message.clone();
        e
    }
}

/// One scheduling cycle: filter and score, and on failure run preemption and
/// format the event message.
pub fn attempt(framework: &Framework, pod: &Pod, snapshot: &Snapshot) -> Attempt {
    let result = framework.schedule(pod, snapshot);
    if result.selected.is_some() {
        return Attempt {
            result,
            preemption: None,
            message: None,
        };
    }
    let preemption = (result.num_all_nodes > 0).then(|| preempt(framework, pod, snapshot, &result));
    let message = failed_scheduling_message(&result, preemption.as_ref());
    Attempt {
        result,
        preemption,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::framework::testutil::*;
    use super::*;

    #[test]
    fn attempt_end_to_end() {
        let nodes = [node("a", "2", "4Gi"), node("b", "2", "4Gi")];
        let pods = [
            on_node(with_priority(pod("low", Some("2"), None), 0), "a"),
            on_node(with_priority(pod("mid", Some("2"), None), 5), "b"),
        ];
        let s = Snapshot::new(&nodes, &pods);
        let fw = Framework::default_profile();
        let p = with_priority(pod("vip", Some("1"), None), 10);
        let a = attempt(&fw, &p, &s);
        assert_eq!(a.result.selected, None);
        assert_eq!(
            a.preemption,
            Some(PreemptionOutcome::Nominated {
                node: "a".into(),
                victims: vec![Victim {
                    namespace: "default".into(),
                    name: "low".into(),
                    priority: 0
                }],
            })
        );
        assert_eq!(
            a.message.as_deref(),
            Some("0/2 nodes are available: 2 Insufficient cpu.")
        );
        assert!(render(&a.explanation()).contains("0/2 nodes are available"));

        let small = pod("small", Some("100m"), None);
        let ok = attempt(&fw, &small, &Snapshot::new(&nodes, &[]));
        assert_eq!(ok.result.selected.as_deref(), Some("a"));
        assert!(ok.message.is_none() && ok.preemption.is_none());

        let none = attempt(&fw, &small, &Snapshot::default());
        assert_eq!(
            none.message.as_deref(),
            Some("no nodes available to schedule pods")
        );
    }
}
