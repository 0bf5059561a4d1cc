//! Matching helpers shared by several plugins: label selectors, node selector
//! terms (node affinity), taints and tolerations, pod affinity terms.
//!
//! Anything malformed (unknown operator, non-integer value for `Gt`/`Lt`) makes the
//! requirement not match, which is what the real scheduler ends up doing when it
//! fails to parse a selector.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, Taint, Toleration,
};

use super::framework::{NodeInfo, PodInfo};

pub type Labels = BTreeMap<String, String>;

/// Shared empty label map for objects without labels.
pub static NO_LABELS: Labels = BTreeMap::new();

/// The `kubernetes.io/hostname` label, special-cased by PodTopologySpread.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

pub use crate::component_base::labels::{
    selector_is_empty as label_selector_is_empty, selector_matches as label_selector_matches,
};

fn node_requirement_matches(req: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [want]) = (value, values) else {
                return false;
            };
            let (Ok(have), Ok(want)) = (v.parse::<i64>(), want.parse::<i64>()) else {
                return false;
            };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// One node selector term: all its matchExpressions (on labels) and matchFields
/// (only `metadata.name`, operators In/NotIn) must match. An empty term matches
/// no node, as in Kubernetes.
pub fn node_selector_term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    if !exprs
        .iter()
        .all(|r| node_requirement_matches(r, labels.get(&r.key)))
    {
        return false;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    fields.iter().all(|r| {
        r.key == "metadata.name"
            && matches!(r.operator.as_str(), "In" | "NotIn")
            && node_requirement_matches(r, Some(&name))
    })
}

/// The pod's required node constraints: `spec.nodeSelector` AND
/// `requiredDuringSchedulingIgnoredDuringExecution` (terms are ORed).
pub fn pod_matches_node_selector_and_affinity(pod: &PodInfo, node: &Node) -> bool {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| node_selector_term_matches(t, node)),
    }
}

/// `Toleration.ToleratesTaint`: effect (if set) and key (if set) must be equal;
/// operator Exists matches any value, Equal (the default) needs the same value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = toleration.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = toleration.key.as_deref()
        && !k.is_empty()
        && k != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

pub fn tolerations_tolerate(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule/NoExecute taint of the node that the pod does not tolerate.
pub fn find_untolerated_hard_taint<'a>(node: &'a Node, pod: &PodInfo) -> Option<&'a Taint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref())?;
    let tolerations = pod.tolerations();
    taints.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !tolerations_tolerate(tolerations, t)
    })
}

/// Does `target` match a pod affinity term that belongs to a pod in namespace
/// `owner_ns`? Namespaces: the term's list, plus those selected by its
/// namespaceSelector (needs namespace labels from the snapshot); with neither,
/// the owner's own namespace.
pub fn affinity_term_matches(
    term: &PodAffinityTerm,
    owner_ns: &str,
    target: &PodInfo,
    ns_labels: &BTreeMap<String, Labels>,
) -> bool {
    let names = term.namespaces.as_deref().unwrap_or(&[]);
    let ns = target.namespace();
    let ns_ok = if names.is_empty() && term.namespace_selector.is_none() {
        ns == owner_ns
    } else {
        names.iter().any(|n| n == ns)
            || term.namespace_selector.as_ref().is_some_and(|sel| {
                label_selector_matches(sel, ns_labels.get(ns).unwrap_or(&NO_LABELS))
            })
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|sel| label_selector_matches(sel, target.labels()))
}

/// The node's value for a topology key, if it has that label.
pub fn topology_value<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.labels().get(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        let sel = |op: &str, vals: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(label_selector_matches(&sel("In", &["web", "x"]), &l));
        assert!(!label_selector_matches(&sel("NotIn", &["web"]), &l));
        assert!(label_selector_matches(&sel("Exists", &[]), &l));
        assert!(!label_selector_matches(&sel("DoesNotExist", &[]), &l));
        assert!(!label_selector_matches(&sel("Bogus", &[]), &l));
        assert!(label_selector_matches(&LabelSelector::default(), &l));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    ..Default::default()
                }
            };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &taint));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, None),
            &taint
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
    }
}
