//! Label selectors of API objects (`metav1.LabelSelector`), as apimachinery's `labels` package
//! evaluates them for every controller and the scheduler.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions). A selector with no
/// requirements matches everything (callers decide what a *missing* selector means); an
/// expression with an unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether the selector has no requirement at all (it selects everything).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let mut sel = LabelSelector::default();
        assert!(selector_is_empty(&sel) && selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "In".into(),
            values: Some(vec!["web".into(), "api".into()]),
        }]);
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions.as_mut().unwrap()[0].operator = "Bogus".into();
        assert!(!selector_matches(&sel, &labels));
        sel.match_expressions = None;
        sel.match_labels = Some(
            [("app".to_string(), "db".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(!selector_is_empty(&sel) && !selector_matches(&sel, &labels));
    }
}
