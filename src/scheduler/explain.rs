//! A serializable account of one scheduling attempt (what `minik scheduler why
//! ns/pod` prints): every filter verdict on every node, every score plugin's raw
//! and normalized score with its weight on feasible nodes, and the chosen node.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::framework::Reason;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// One entry per node, sorted by node name.
    pub nodes: Vec<NodeExplanation>,
    pub selected: Option<String>,
    /// The FailedScheduling message when the pod did not fit (without the
    /// preemption suffix from `Framework::schedule`, with it from
    /// [`super::attempt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Nodes not tried: the attempt stopped filtering once it had found enough feasible
    /// nodes (kube-scheduler's `percentageOfNodesToScore`).
    #[serde(default)]
    pub not_evaluated: usize,
    /// Feasible nodes left out of `nodes` by [`Explanation::compact`] (lower totals).
    #[serde(default)]
    pub more_feasible: usize,
}

impl Explanation {
    /// Keeps what explains the outcome and drops the rest, so that thousands of explanations
    /// fit in memory on a large cluster: every rejected node (it says why not), and of the
    /// feasible nodes only the `keep` with the highest totals (the selected one among them).
    pub fn compact(mut self, keep: usize) -> Explanation {
        let feasible = self.nodes.iter().filter(|n| n.feasible).count();
        if feasible <= keep {
            return self;
        }
        let mut totals: Vec<i64> = self
            .nodes
            .iter()
            .filter(|n| n.feasible)
            .map(|n| n.total.unwrap_or(0))
            .collect();
        totals.sort_unstable_by(|a, b| b.cmp(a));
        let cutoff = keep
            .checked_sub(1)
            .and_then(|i| totals.get(i))
            .copied()
            .unwrap_or(i64::MAX);
        let mut kept = 0;
        let selected = self.selected.clone();
        self.nodes.retain(|n| {
            if !n.feasible {
                return true;
            }
            let is_selected = selected.as_deref() == Some(n.node.as_str());
            let keep_it = is_selected || (kept < keep && n.total.unwrap_or(0) >= cutoff);
            if keep_it {
                kept += 1;
            }
            keep_it
        });
        self.more_feasible += feasible - kept;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeExplanation {
    pub node: String,
    /// Passed every filter.
    pub feasible: bool,
    /// Every filter, in profile order.
    pub filters: Vec<FilterVerdict>,
    /// Score plugins, in profile order (feasible nodes only).
    pub scores: Vec<PluginScore>,
    /// Sum of the weighted scores (feasible nodes only).
    pub total: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterVerdict {
    pub plugin: Cow<'static, str>,
    /// `None`: passed.
    pub failure: Option<Reason>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginScore {
    pub plugin: Cow<'static, str>,
    /// The plugin had nothing to say about this pod (PreScore Skip): 0.
    pub skipped: bool,
    pub raw: i64,
    /// After normalization, 0..=100.
    pub normalized: i64,
    pub weight: i64,
    /// `normalized × weight`.
    pub weighted: i64,
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A readable terminal rendering: the outcome, a filter table (every failing
/// filter per node; the first one is what the event counts) and a score table
/// (plugins as rows, feasible nodes as columns, `raw -> normalized xweight`).
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    match (&e.selected, &e.message) {
        (Some(n), _) => out.push_str(&format!("Pod {}: scheduled to node {n}\n", e.pod)),
        (None, Some(m)) => out.push_str(&format!("Pod {}: unschedulable\n  {m}\n", e.pod)),
        (None, None) => out.push_str(&format!("Pod {}: unschedulable\n", e.pod)),
    }
    if e.nodes.is_empty() {
        out.push_str("\nNo nodes in the cluster.\n");
        return out;
    }

    out.push_str("\nFilters:\n");
    let mut rows = vec![vec!["NODE".to_string(), "RESULT".into(), "DETAILS".into()]];
    for n in &e.nodes {
        let failures: Vec<&FilterVerdict> =
            n.filters.iter().filter(|f| f.failure.is_some()).collect();
        if failures.is_empty() {
            rows.push(vec![
                n.node.clone(),
                "feasible".into(),
                format!("{}/{} filters passed", n.filters.len(), n.filters.len()),
            ]);
            continue;
        }
        for (i, f) in failures.iter().enumerate() {
            let reasons = f
                .failure
                .as_ref()
                .map(|r| r.reasons.join(", "))
                .unwrap_or_default();
            let (node, result) = if i == 0 {
                (n.node.clone(), "rejected".to_string())
            } else {
                (String::new(), String::new())
            };
            let also = if i == 0 { "" } else { "(also) " };
            rows.push(vec![node, result, format!("{also}{}: {reasons}", f.plugin)]);
        }
    }
    out.push_str(&table(&rows));
    if e.not_evaluated > 0 {
        out.push_str(&format!(
            "  ({} more nodes not evaluated: enough feasible nodes were found \
             (percentageOfNodesToScore))\n",
            e.not_evaluated
        ));
    }

    let feasible: Vec<&NodeExplanation> = e.nodes.iter().filter(|n| n.feasible).collect();
    if feasible.is_empty() {
        return out;
    }
    if feasible.len() == 1 && feasible[0].scores.is_empty() && e.more_feasible == 0 {
        out.push_str("\nScores: none (a single feasible node is selected without scoring)\n");
        return out;
    }
    out.push_str("\nScores (raw -> normalized 0-100, x weight):\n");
    let mut header = vec!["PLUGIN".to_string()];
    for n in &feasible {
        let mark = if e.selected.as_deref() == Some(n.node.as_str()) {
            "*"
        } else {
            ""
        };
        header.push(format!("{}{mark}", n.node));
    }
    let mut rows = vec![header];
    let plugins: Vec<(Cow<'static, str>, i64)> = feasible[0]
        .scores
        .iter()
        .map(|s| (s.plugin.clone(), s.weight))
        .collect();
    for (i, (plugin, weight)) in plugins.iter().enumerate() {
        let mut row = vec![format!("{plugin} (x{weight})")];
        for n in &feasible {
            row.push(match n.scores.get(i) {
                Some(s) if s.skipped => "skipped".to_string(),
                Some(s) => format!("{} -> {} = {}", s.raw, s.normalized, s.weighted),
                None => "-".to_string(),
            });
        }
        rows.push(row);
    }
    let mut total = vec!["TOTAL".to_string()];
    for n in &feasible {
        total.push(n.total.map(|t| t.to_string()).unwrap_or_default());
    }
    rows.push(total);
    out.push_str(&table(&rows));
    if e.more_feasible > 0 {
        out.push_str(&format!(
            "  ({} more feasible nodes with lower totals not shown)\n",
            e.more_feasible
        ));
    }
    if e.selected.is_some() {
        out.push_str("  (* = selected; ties go to the node whose name sorts first)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testutil::*;
    use crate::scheduler::framework::{Framework, Snapshot};

    #[test]
    fn renders_filters_and_scores() {
        let nodes = [
            with_taint(
                node("cp", "4", "8Gi"),
                "node-role.kubernetes.io/control-plane",
                "",
                "NoSchedule",
            ),
            node("w1", "4", "8Gi"),
            node("w2", "4", "8Gi"),
        ];
        let pods = [on_node(pod("busy", Some("2"), Some("4Gi")), "w1")];
        let s = Snapshot::new(&nodes, &pods);
        let r = Framework::default_profile().schedule(&pod("web", Some("1"), Some("1Gi")), &s);
        let text = render(&r.explanation);
        assert!(
            text.starts_with("Pod default/web: scheduled to node w2\n"),
            "{text}"
        );
        assert!(text.contains(
            "cp    rejected  TaintToleration: node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
        ), "{text}");
        assert!(
            text.contains("w1    feasible  8/8 filters passed"),
            "{text}"
        );
        assert!(text.contains("w2*"), "{text}");
        assert!(text.contains("NodeResourcesFit (x1)"), "{text}");
        assert!(text.contains("NodeAffinity (x2)"), "{text}");
        assert!(text.contains("skipped"), "{text}");
        assert!(text.contains("TOTAL"), "{text}");
    }

    #[test]
    fn compact_keeps_rejected_and_best_nodes() {
        let nodes: Vec<_> = (0..30)
            .map(|i| {
                node(
                    &format!("n{i:02}"),
                    if i == 0 { "100m" } else { "4" },
                    "8Gi",
                )
            })
            .collect();
        let pods: Vec<_> = (1..30)
            .map(|i| {
                on_node(
                    pod(&format!("x{i}"), Some(&format!("{}m", i * 100)), None),
                    &format!("n{i:02}"),
                )
            })
            .collect();
        let s = Snapshot::new(&nodes, &pods);
        let r = Framework::default_profile().schedule(&pod("p", Some("1"), None), &s);
        let c = r.explanation.clone().compact(5);
        assert_eq!(c.nodes.iter().filter(|n| n.feasible).count(), 5);
        assert_eq!(c.more_feasible, 24);
        assert!(c.nodes.iter().any(|n| n.node == "n00" && !n.feasible));
        assert!(c.nodes.iter().any(|n| Some(&n.node) == r.selected.as_ref()));
        // The least loaded nodes score best.
        assert!(c.nodes.iter().any(|n| n.node == "n01"));
        assert!(!c.nodes.iter().any(|n| n.node == "n29"));
        assert!(render(&c).contains("(24 more feasible nodes with lower totals not shown)"));
    }

    #[test]
    fn serde_round_trip() {
        let s = Snapshot::new(&[node("a", "1", "1Gi")], &[]);
        let r = Framework::default_profile().schedule(&pod("p", Some("2"), None), &s);
        let json = serde_json::to_string(&r.explanation).unwrap();
        assert!(json.contains("\"Insufficient cpu\""), "{json}");
        let back: Explanation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r.explanation);
        assert!(render(&back).contains("a     rejected  NodeResourcesFit: Insufficient cpu"));
    }
}
