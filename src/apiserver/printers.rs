//! Server-side printing: the `Table` kubectl asks for (`Accept: application/json;as=Table;…`), with
//! the real apiserver's columns for each type (kube's `pkg/printers/internalversion`).

use serde_json::{Value, json};

use super::resources::Resource;

/// A column: name, type, format, description, priority (`-o wide` only when > 0).
type Column = (&'static str, &'static str, &'static str, &'static str, u8);

const NAME: Column = (
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    0,
);
const AGE: Column = (
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
    0,
);

fn columns(resource: &str) -> Vec<Column> {
    match resource {
        "namespaces" => vec![
            NAME,
            ("Status", "string", "", "The status of the namespace", 0),
            AGE,
        ],
        "secrets" => vec![
            NAME,
            ("Type", "string", "", "The type of secret", 0),
            ("Data", "string", "", "Data contains the secret data.", 0),
            AGE,
        ],
        "serviceaccounts" => vec![
            NAME,
            (
                "Secrets",
                "string",
                "",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                0,
            ),
            AGE,
        ],
        "events" => vec![
            (
                "Last Seen",
                "string",
                "",
                "Time when this Event was last observed.",
                0,
            ),
            (
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            (
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            (
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            (
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            (
                "Source",
                "string",
                "",
                "The component reporting this event. Should be a short machine understandable string.",
                1,
            ),
            (
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                1,
            ),
            (
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            (NAME.0, NAME.1, NAME.2, NAME.3, 1),
        ],
        "configmaps" => vec![
            NAME,
            (
                "Data",
                "string",
                "",
                "Data contains the configuration data.",
                0,
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

fn cells(resource: &str, obj: &Value, now: i64) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    let created = json!(age(obj["metadata"]["creationTimestamp"].as_str(), now));
    match resource {
        "namespaces" => vec![name, obj["status"]["phase"].clone(), created],
        "secrets" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len());
            vec![name, obj["type"].clone(), json!(n), created]
        }
        "serviceaccounts" => {
            let n = obj["secrets"].as_array().map_or(0, |a| a.len());
            vec![name, json!(n), created]
        }
        "events" => {
            let last = obj["lastTimestamp"]
                .as_str()
                .or(obj["eventTime"].as_str())
                .or(obj["metadata"]["creationTimestamp"].as_str());
            let involved = &obj["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or("").to_lowercase(),
                involved["name"].as_str().unwrap_or("")
            );
            let source = obj["source"]["component"]
                .as_str()
                .or(obj["reportingComponent"].as_str())
                .unwrap_or("");
            vec![
                json!(age(last, now)),
                obj["type"].clone(),
                obj["reason"].clone(),
                json!(object),
                obj["message"].clone(),
                json!(source),
                json!(age(obj["firstTimestamp"].as_str().or(last), now)),
                json!(obj["count"].as_i64().unwrap_or(1)),
                name,
            ]
        }
        "configmaps" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), created]
        }
        _ => vec![name, created],
    }
}

/// The Table for `objects` (already in their served form).
pub fn table(resource: &Resource, objects: &[Value], list_meta: Value, now: i64) -> Value {
    let defs: Vec<Value> = columns(resource.name)
        .into_iter()
        .map(|(name, ty, format, description, priority)| {
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "cells": cells(resource.name, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-22T01:52:59Z`).
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn age(ts: Option<&str>, now: i64) -> String {
    match ts.and_then(parse_timestamp) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// kube's `duration.HumanDuration`: 45s, 3m20s, 25m, 5h10m, 30h, 4d6h, 200d, 3y5d.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    let d = h / 24;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        let y = d / 365;
        if y < 8 && d % 365 != 0 {
            format!("{y}y{}d", d % 365)
        } else {
            format!("{y}y")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(25 * 60), "25m");
        assert_eq!(human_duration(5 * 3600 + 600), "5h10m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(4 * 86_400 + 6 * 3600), "4d6h");
        assert_eq!(parse_timestamp("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(
            parse_timestamp("2026-11-22T01:52:59Z").map(|t| t > 0),
            Some(true)
        );
        assert_eq!(parse_timestamp("garbage"), None);
    }

    #[test]
    fn configmap_table() {
        let cm = find("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "1970-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}});
        let t = table(cm, &[obj], json!({"resourceVersion": "5"}), 30);
        assert_eq!(t["rows"][0]["cells"], json!(["a", 2, "30s"]));
        assert_eq!(t["columnDefinitions"][1]["name"], "Data");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
