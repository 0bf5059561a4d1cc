//! The FailedScheduling event message, formatted like `FitError.Error()`:
//! `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint
//! {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available:
//! 3 Preemption is not helpful for scheduling.`
//!
//! Each node contributes its reasons (a node can have several, e.g. "Insufficient
//! cpu" and "Insufficient memory"); entries are "<count> <reason>" strings sorted
//! as plain strings, exactly like Go's `sort.Strings` on the same strings (so
//! "10 x" sorts before "2 y").

use std::collections::BTreeMap;

use super::framework::{Reason, ScheduleResult};
use super::preemption::PreemptionOutcome;

/// Message when the cluster has no node at all (`ErrNoNodesAvailable`).
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// The sorted "<count> <reason>" entries. Nodes missing from `statuses` count
/// with `absent_reason` when given (preemption uses this for the nodes it did
/// not try).
pub fn reasons_histogram(
    num_all_nodes: usize,
    statuses: &BTreeMap<String, Reason>,
    absent_reason: Option<&str>,
) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses.values() {
        for r in &status.reasons {
            *counts.entry(r.as_str()).or_insert(0) += 1;
        }
    }
    if let Some(absent) = absent_reason
        && statuses.len() < num_all_nodes
    {
        *counts.entry(absent).or_insert(0) += num_all_nodes - statuses.len();
    }
    let mut out: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    out.sort();
    out
}

/// `0/N nodes are available: <histogram>.` followed by ` <post_filter>` when a
/// PostFilter (preemption) message is given.
pub fn fit_error_message(
    num_all_nodes: usize,
    statuses: &BTreeMap<String, Reason>,
    absent_reason: Option<&str>,
    post_filter: Option<&str>,
) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    let hist = reasons_histogram(num_all_nodes, statuses, absent_reason);
    if !hist.is_empty() {
        msg.push_str(&format!(" {}.", hist.join(", ")));
    }
    if let Some(p) = post_filter.filter(|p| !p.is_empty()) {
        msg.push(' ');
        msg.push_str(p);
    }
    msg
}

/// The full event message for a failed attempt, with the preemption suffix when
/// preemption ran. `None` when the pod was scheduled.
pub fn failed_scheduling_message(
    result: &ScheduleResult,
    preemption: Option<&PreemptionOutcome>,
) -> Option<String> {
    if result.selected.is_some() {
        return None;
    }
    if result.num_all_nodes == 0 {
        return Some(NO_NODES_AVAILABLE.to_string());
    }
    let suffix = preemption.and_then(PreemptionOutcome::post_filter_message);
    Some(fit_error_message(
        result.num_all_nodes,
        &result.diagnosis,
        None,
        suffix.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use crate::scheduler::framework::{Framework, Snapshot};
    use crate::scheduler::preemption::ERR_NOT_HELPFUL;

    fn statuses(list: &[(&str, Reason)]) -> BTreeMap<String, Reason> {
        list.iter()
            .map(|(n, r)| (n.to_string(), r.clone()))
            .collect()
    }

    #[test]
    fn brief_example() {
        let taint = Reason::unresolvable(
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        );
        let st = statuses(&[
            ("a", Reason::unschedulable("Insufficient cpu")),
            ("b", taint.clone()),
            ("c", taint),
        ]);
        let pre = format!(
            "preemption: {}",
            fit_error_message(3, &BTreeMap::new(), Some(ERR_NOT_HELPFUL), None)
        );
        assert_eq!(
            fit_error_message(3, &st, None, Some(&pre)),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn multiple_reasons_and_string_sort() {
        let mut list = vec![];
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            let r = if i < 10 {
                Reason::unschedulable("node(s) didn't match pod anti-affinity rules")
            } else {
                Reason {
                    code: crate::scheduler::framework::Code::Unschedulable,
                    reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
                }
            };
            list.push((n.as_str(), r));
        }
        let st = statuses(&list);
        // "10 node(s)..." sorts before "2 Insufficient..." as strings
        assert_eq!(
            fit_error_message(12, &st, None, None),
            "0/12 nodes are available: 10 node(s) didn't match pod anti-affinity rules, \
             2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn from_schedule_result() {
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
        let s = Snapshot::new(&nodes, &[]);
        let r = Framework::default_profile().schedule(&pod("big", Some("2"), None), &s);
        assert_eq!(
            failed_scheduling_message(&r, None).unwrap(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
        );
        let empty =
            Framework::default_profile().schedule(&pod("p", None, None), &Snapshot::default());
        assert_eq!(
            failed_scheduling_message(&empty, None).unwrap(),
            NO_NODES_AVAILABLE
        );
    }
}
