//! Conversion between API versions that share one stored form, as kube-apiserver converts
//! every request to the storage version and every answer back:
//!
//! - `events.k8s.io/v1` Events are stored as core `v1` Events (`/registry/events/…`):
//!   `regarding` ↔ `involvedObject`, `note` ↔ `message`, `reportingController` ↔
//!   `reportingComponent`, `deprecatedSource/FirstTimestamp/LastTimestamp/Count` ↔
//!   `source/firstTimestamp/lastTimestamp/count`;
//! - `autoscaling/v1` HorizontalPodAutoscalers are stored as `autoscaling/v2`:
//!   `targetCPUUtilizationPercentage` ↔ a `Resource` cpu metric with an `Utilization` target.

use serde_json::{Map, Value, json};

use super::resources::{self, Resource};
use super::status::FieldError;

/// How a served version maps onto the stored one.
#[derive(Clone, Copy)]
pub struct View {
    /// The resource whose form is stored.
    pub storage: &'static Resource,
    /// Served form → stored form.
    pub to_storage: fn(&Value) -> Value,
    /// Stored form → served form.
    pub from_storage: fn(&Value) -> Value,
    /// Checks only the served form has (its required fields).
    pub validate: fn(&Value, &mut Vec<FieldError>),
}

impl View {
    pub fn present(&self, v: &Value) -> Value {
        (self.from_storage)(v)
    }
}

/// The conversion for `r`, when it is served in a form other than the stored one.
pub fn view(r: &Resource) -> Option<View> {
    match (r.group, r.version, r.name) {
        ("events.k8s.io", "v1", "events") => Some(View {
            storage: resources::find("", "v1", "events")?,
            to_storage: event_to_core,
            from_storage: event_from_core,
            validate: validate_event,
        }),
        ("autoscaling", "v1", "horizontalpodautoscalers") => Some(View {
            storage: resources::find("autoscaling", "v2", "horizontalpodautoscalers")?,
            to_storage: hpa_v1_to_v2,
            from_storage: hpa_v2_to_v1,
            validate: |_, _| {},
        }),
        _ => None,
    }
}

/// Copies `from[a]` to `to[b]` when present.
fn carry(from: &Map<String, Value>, to: &mut Map<String, Value>, a: &str, b: &str) {
    if let Some(v) = from.get(a).filter(|v| !v.is_null()) {
        to.insert(b.to_string(), v.clone());
    }
}

const EVENT_FIELDS: [(&str, &str); 13] = [
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("action", "action"),
    ("reason", "reason"),
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("type", "type"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
];

fn event_to_core(v: &Value) -> Value {
    let empty = Map::new();
    let from = v.as_object().unwrap_or(&empty);
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("v1"));
    to.insert("kind".into(), json!("Event"));
    for (a, b) in EVENT_FIELDS {
        carry(from, &mut to, a, b);
    }
    carry(from, &mut to, "deprecatedLastTimestamp", "lastTimestamp");
    carry(from, &mut to, "deprecatedCount", "count");
    Value::Object(to)
}

fn event_from_core(v: &Value) -> Value {
    let empty = Map::new();
    let from = v.as_object().unwrap_or(&empty);
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    to.insert("kind".into(), json!("Event"));
    for (a, b) in EVENT_FIELDS {
        carry(from, &mut to, b, a);
    }
    carry(from, &mut to, "lastTimestamp", "deprecatedLastTimestamp");
    carry(from, &mut to, "count", "deprecatedCount");
    // The new API always has an eventTime (MicroTime): null for events of the old API.
    to.entry("eventTime").or_insert(Value::Null);
    Value::Object(to)
}

/// `events.k8s.io/v1` requires what the old API left optional.
fn validate_event(v: &Value, errors: &mut Vec<FieldError>) {
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if v[field].is_null() || v[field] == "" {
            errors.push(FieldError::required(field, ""));
        }
    }
    match v["type"].as_str() {
        Some("Normal" | "Warning") => {}
        _ => errors.push(FieldError::not_supported(
            "type",
            &v["type"],
            &["Normal", "Warning"],
        )),
    }
}

fn hpa_v1_to_v2(v: &Value) -> Value {
    let mut out = v.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
        && !target.is_null()
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}}]),
        );
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut)
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
        && !current.is_null()
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": current}}}]),
        );
    }
    out
}

fn hpa_v2_to_v1(v: &Value) -> Value {
    let mut out = v.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let cpu = |metrics: &Value, side: &str| {
        metrics.as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                .map(|m| m["resource"][side]["averageUtilization"].clone())
                .filter(|u| !u.is_null())
        })
    };
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec.remove("metrics").unwrap_or(Value::Null);
        spec.remove("behavior");
        if let Some(t) = cpu(&metrics, "target") {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let metrics = status.remove("currentMetrics").unwrap_or(Value::Null);
        status.remove("conditions");
        if let Some(c) = cpu(&metrics, "current") {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_hpas_round_trip() {
        let r = resources::find("events.k8s.io", "v1", "events").unwrap();
        let v = view(r).unwrap();
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "minik/scheduler",
            "reportingInstance": "s1", "action": "Binding", "reason": "Scheduled", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "assigned"});
        let core = (v.to_storage)(&new);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "assigned");
        assert_eq!(core["reportingComponent"], "minik/scheduler");
        assert_eq!(v.present(&core), new);
        let mut errors = Vec::new();
        (v.validate)(&json!({"type": "Odd"}), &mut errors);
        assert_eq!(errors.len(), 6);

        let r = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v = view(r).unwrap();
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"}, "spec": {"maxReplicas": 5, "targetCPUUtilizationPercentage": 70,
            "scaleTargetRef": {"kind": "Deployment", "name": "d"}}});
        let v2 = (v.to_storage)(&v1);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(v.present(&v2), v1);
    }
}
