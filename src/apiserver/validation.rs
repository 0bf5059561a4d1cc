//! Validation: the checks kube-apiserver's `Validate*` functions make before an object is
//! stored, with their exact words, so that a learner reads here what a real cluster says
//! (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`).
//!
//! [`validate`] runs after defaulting, on create (`old` None) and on update (`old` the stored
//! object, for the fields that may not change).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::resources::{NameRule, Resource};
use super::status::FieldError;

type Errors = Vec<FieldError>;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
}

/// The real apiserver's message for a bad RFC 1123 label, or None.
pub fn label_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!label_ok(s)).then(|| LABEL_MSG.to_string())
}

/// The real apiserver's message for a bad RFC 1123 subdomain, or None.
pub fn subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| is_alnum(c) || c == '-')
                && part.starts_with(is_alnum)
                && part.ends_with(is_alnum)
        });
    (!ok).then(|| SUBDOMAIN_MSG.to_string())
}

/// Validates an object's name by its type's rule.
pub fn name_error(r: &Resource, name: &str) -> Option<FieldError> {
    let detail = match r.names {
        NameRule::Label => label_error(name),
        NameRule::Subdomain => subdomain_error(name),
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else {
                name.chars()
                    .find(|c| *c == '/' || *c == '%')
                    .map(|c| format!("may not contain '{c}'"))
            }
        }
    }?;
    Some(FieldError::invalid_str("metadata.name", name, detail))
}

/// Validates a `generateName` by its type's rule, as a prefix (apimachinery's
/// `ValidateObjectMeta`: the name functions called with `prefix` true, which check the prefix
/// with a trailing dash masked, so that `web-` passes where a name may not end in `-`).
pub fn generate_name_error(r: &Resource, prefix: &str) -> Option<FieldError> {
    let detail = match r.names {
        NameRule::Label => label_error(&mask_trailing_dash(prefix)),
        NameRule::Subdomain => subdomain_error(&mask_trailing_dash(prefix)),
        // `IsValidPathSegmentPrefix`: only what a name may not contain.
        NameRule::PathSegment => prefix
            .chars()
            .find(|c| *c == '/' || *c == '%')
            .map(|c| format!("may not contain '{c}'")),
    }?;
    Some(FieldError::invalid_str(
        "metadata.generateName",
        prefix,
        detail,
    ))
}

/// apimachinery's `maskTrailingDash`: `ab-` is checked as `aa` (the last two bytes become `a`).
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        match name.get(..name.len() - 2) {
            Some(head) => format!("{head}a"),
            // The byte before the dash is inside a multi-byte character: invalid either way.
            None => name.to_string(),
        }
    } else {
        name.to_string()
    }
}

/// The checks of a whole object of type `r`.
pub fn validate(r: &Resource, obj: &Value, old: Option<&Value>, errors: &mut Errors) {
    metadata(&obj["metadata"], "metadata", errors);
    match (r.group, r.name) {
        ("", "configmaps") => {
            for field in ["data", "binaryData"] {
                config_keys(obj, field, errors);
            }
            if let (Some(data), Some(bin)) =
                (obj["data"].as_object(), obj["binaryData"].as_object())
            {
                for k in data.keys().filter(|k| bin.contains_key(*k)) {
                    errors.push(FieldError::invalid_str(
                        format!("data[{k}]"),
                        k,
                        "duplicate of key present in binaryData",
                    ));
                }
            }
            immutable_data(obj, old, &["data", "binaryData"], errors);
            if let Some(bin) = obj["binaryData"].as_object() {
                for (k, v) in bin {
                    if !v.as_str().is_some_and(is_base64) {
                        errors.push(FieldError::invalid_str(
                            format!("binaryData[{k}]"),
                            "<value omitted>",
                            "must be base64-encoded",
                        ));
                    }
                }
            }
        }
        ("", "secrets") => {
            config_keys(obj, "data", errors);
            if let Some(data) = obj["data"].as_object() {
                for (k, v) in data {
                    if !v.as_str().is_some_and(is_base64) {
                        errors.push(FieldError::invalid_str(
                            format!("data[{k}]"),
                            "<secret contents redacted>",
                            "illegal base64 data",
                        ));
                    }
                }
            }
            if let Some(old) = old
                && old["type"] != obj["type"]
            {
                errors.push(FieldError::invalid(
                    "type",
                    &obj["type"],
                    "field is immutable",
                ));
            }
            immutable_data(obj, old, &["data"], errors);
        }
        ("", "pods") => {
            pod_spec(&obj["spec"], "spec", errors);
            if let Some(old) = old {
                pod_update(&obj["spec"], &old["spec"], errors);
            }
        }
        ("", "services") => service(obj, old, errors),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            workload(r.name, obj, old, errors);
        }
        ("", "replicationcontrollers") => {
            let spec = &obj["spec"];
            non_negative(&spec["replicas"], "spec.replicas", errors);
            pod_spec(&spec["template"]["spec"], "spec.template.spec", errors);
        }
        ("batch", "jobs") => job(&obj["spec"], "spec", old.map(|o| &o["spec"]), errors),
        ("batch", "cronjobs") => {
            let spec = &obj["spec"];
            match spec["schedule"].as_str() {
                None | Some("") => errors.push(FieldError::required("spec.schedule", "")),
                Some(s) => {
                    if let Err(e) = check_cron(s) {
                        errors.push(FieldError::invalid_str("spec.schedule", s, e));
                    }
                }
            }
            if let Some(p) = spec["concurrencyPolicy"].as_str()
                && !["Allow", "Forbid", "Replace"].contains(&p)
            {
                errors.push(FieldError::not_supported(
                    "spec.concurrencyPolicy",
                    &json!(p),
                    &["Allow", "Forbid", "Replace"],
                ));
            }
            job(
                &spec["jobTemplate"]["spec"],
                "spec.jobTemplate.spec",
                None,
                errors,
            );
        }
        ("scheduling.k8s.io", "priorityclasses") if obj["value"].is_null() => {
            errors.push(FieldError::required("value", ""));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            super::crd::validate(obj, old, errors);
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            for (i, rule) in obj["rules"].as_array().into_iter().flatten().enumerate() {
                if rule["verbs"].as_array().is_none_or(Vec::is_empty) {
                    errors.push(FieldError::required(
                        format!("rules[{i}].verbs"),
                        "verbs must contain at least one value",
                    ));
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if obj["roleRef"]["name"].as_str().unwrap_or("").is_empty() {
                errors.push(FieldError::required("roleRef.name", ""));
            }
            if let Some(old) = old
                && old["roleRef"] != obj["roleRef"]
            {
                errors.push(FieldError::invalid(
                    "roleRef",
                    &obj["roleRef"],
                    "cannot change roleRef",
                ));
            }
        }
        _ => {}
    }
}

/// `immutable: true` ConfigMaps and Secrets keep their data, and stay immutable.
fn immutable_data(obj: &Value, old: Option<&Value>, fields: &[&str], errors: &mut Errors) {
    let Some(old) = old.filter(|o| o["immutable"] == true) else {
        return;
    };
    if obj["immutable"] != true {
        errors.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
        if old[*f] != obj[*f] && !(empty(&old[*f]) && empty(&obj[*f])) {
            errors.push(FieldError::forbidden(
                *f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn is_base64(s: &str) -> bool {
    B64.decode(s).is_ok()
}

/// Keys of `data`-like maps must be valid config keys.
fn config_keys(obj: &Value, field: &str, errors: &mut Errors) {
    let Some(map) = obj[field].as_object() else {
        return;
    };
    for k in map.keys() {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && k != "."
            && k != ".."
            && !k.starts_with("..");
        if !ok {
            errors.push(FieldError::invalid_str(
                format!("{field}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`.
fn key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && subdomain_error(p).is_some()
    {
        return Some(format!("prefix part {SUBDOMAIN_MSG}"));
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    (!name_part_ok(name)).then(|| QUALIFIED_NAME_MSG.to_string())
}

/// Labels and annotations of any object (also of pod templates).
fn metadata(meta: &Value, path: &str, errors: &mut Errors) {
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Some(e) = key_error(k) {
                errors.push(FieldError::invalid_str(format!("{path}.labels"), k, e));
            }
            let v = v.as_str().unwrap_or("");
            if v.len() > 63 {
                errors.push(FieldError::invalid_str(
                    format!("{path}.labels"),
                    v,
                    "must be no more than 63 characters",
                ));
            } else if !v.is_empty() && !name_part_ok(v) {
                errors.push(FieldError::invalid_str(
                    format!("{path}.labels"),
                    v,
                    LABEL_VALUE_MSG,
                ));
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            if let Some(e) = key_error(&k.to_lowercase()) {
                errors.push(FieldError::invalid_str(format!("{path}.annotations"), k, e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errors.push(FieldError {
                kind: super::status::ErrorType::Invalid,
                field: format!("{path}.annotations"),
                value: String::new(),
                detail: format!("Too long: may not be more than {} bytes", 256 * 1024),
            });
        }
    }
}

fn non_negative(v: &Value, path: &str, errors: &mut Errors) {
    if let Some(n) = v.as_i64()
        && n < 0
    {
        errors.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

fn port_range(v: &Value, path: &str, errors: &mut Errors) {
    if let Some(n) = v.as_i64()
        && !(1..=65535).contains(&n)
    {
        errors.push(FieldError::invalid(
            path,
            v,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn one_of(v: &Value, path: &str, allowed: &[&'static str], errors: &mut Errors) {
    if let Some(s) = v.as_str()
        && !allowed.contains(&s)
    {
        errors.push(FieldError::not_supported(path, v, allowed));
    }
}

/// `ValidatePodSpec`: containers, names, images, ports, volumes and the enums.
pub fn pod_spec(spec: &Value, path: &str, errors: &mut Errors) {
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        match v["name"].as_str() {
            None | Some("") => errors.push(FieldError::required(p, "")),
            Some(n) => {
                if let Some(e) = label_error(n) {
                    errors.push(FieldError::invalid_str(&p, n, e));
                }
                if volumes.iter().filter(|x| **x == n).count() > 1
                    && volumes.iter().position(|x| *x == n) != Some(i)
                {
                    errors.push(FieldError::duplicate(p, &json!(n)));
                }
            }
        }
    }
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut seen: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            container(
                c,
                &format!("{path}.{list}[{i}]"),
                &volumes,
                &mut seen,
                errors,
            );
        }
    }
    one_of(
        &spec["restartPolicy"],
        &format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        errors,
    );
    one_of(
        &spec["dnsPolicy"],
        &format!("{path}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        errors,
    );
    non_negative(
        &spec["terminationGracePeriodSeconds"],
        &format!("{path}.terminationGracePeriodSeconds"),
        errors,
    );
    if let Some(n) = spec["activeDeadlineSeconds"].as_i64()
        && n <= 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            &json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for key in ["serviceAccountName", "nodeName"] {
        if let Some(n) = spec[key].as_str().filter(|n| !n.is_empty())
            && let Some(e) = subdomain_error(n)
        {
            errors.push(FieldError::invalid_str(format!("{path}.{key}"), n, e));
        }
    }
}

fn container(c: &Value, path: &str, volumes: &[&str], seen: &mut Vec<String>, errors: &mut Errors) {
    match c["name"].as_str() {
        None | Some("") => errors.push(FieldError::required(format!("{path}.name"), "")),
        Some(n) => {
            if let Some(e) = label_error(n) {
                errors.push(FieldError::invalid_str(format!("{path}.name"), n, e));
            }
            if seen.iter().any(|s| s == n) {
                errors.push(FieldError::duplicate(format!("{path}.name"), &json!(n)));
            }
            seen.push(n.to_string());
        }
    }
    if c["image"].as_str().unwrap_or("").trim().is_empty() {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    one_of(
        &c["imagePullPolicy"],
        &format!("{path}.imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        errors,
    );
    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if p["containerPort"].is_null() || p["containerPort"] == 0 {
            errors.push(FieldError::required(format!("{pp}.containerPort"), ""));
        } else {
            port_range(&p["containerPort"], &format!("{pp}.containerPort"), errors);
        }
        if let Some(h) = p["hostPort"].as_i64()
            && h != 0
        {
            port_range(&p["hostPort"], &format!("{pp}.hostPort"), errors);
        }
        one_of(
            &p["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            errors,
        );
        if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
            if let Some(e) = port_name_error(n) {
                errors.push(FieldError::invalid_str(format!("{pp}.name"), n, e));
            }
            if port_names.contains(&n) {
                errors.push(FieldError::duplicate(format!("{pp}.name"), &json!(n)));
            }
            port_names.push(n);
        }
    }
    let limits = &c["resources"]["limits"];
    for (res, req) in c["resources"]["requests"].as_object().into_iter().flatten() {
        if let (Some(r), Some(l)) = (
            req.as_str().and_then(quantity),
            limits[res].as_str().and_then(quantity),
        ) && r > l
        {
            errors.push(FieldError::invalid(
                format!("{path}.resources.requests"),
                req,
                format!(
                    "must be less than or equal to {res} limit of {}",
                    limits[res].as_str().unwrap_or("")
                ),
            ));
        }
    }
    for (i, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        if e["name"].as_str().unwrap_or("").is_empty() {
            errors.push(FieldError::required(format!("{path}.env[{i}].name"), ""));
        }
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = m["name"].as_str().unwrap_or("");
        if n.is_empty() {
            errors.push(FieldError::required(
                format!("{path}.volumeMounts[{i}].name"),
                "",
            ));
        } else if !volumes.contains(&n) {
            errors.push(FieldError {
                kind: super::status::ErrorType::NotFound,
                field: format!("{path}.volumeMounts[{i}].name"),
                value: format!("{n:?}"),
                detail: String::new(),
            });
        }
        if m["mountPath"].as_str().unwrap_or("").is_empty() {
            errors.push(FieldError::required(
                format!("{path}.volumeMounts[{i}].mountPath"),
                "",
            ));
        }
    }
}

/// A resource quantity (`500m`, `2`, `1Gi`, `1e3`) as a number, for comparisons.
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * factor)
}

/// IANA service names: what container and service port names must be.
fn port_name_error(n: &str) -> Option<String> {
    if n.len() > 15 {
        return Some("must be no more than 15 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if n.contains("--") {
        return Some("must not contain consecutive hyphens".into());
    }
    if !n.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)".into());
    }
    if n.starts_with('-') || n.ends_with('-') {
        return Some("must not begin or end with a hyphen".into());
    }
    None
}

/// A pod's spec may change only in images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds (`ValidatePodUpdate`).
fn pod_update(new: &Value, old: &Value, errors: &mut Errors) {
    // The scheduler binds through pods/binding; nodeName may be set once.
    let old_unbound = old["nodeName"].is_null();
    let skip_new_node = old_unbound && !new["nodeName"].is_null();
    let skip_old_node = old_unbound && new["nodeName"].is_string();
    if !pod_specs_equal(new, old, skip_new_node, skip_old_node) {
        errors.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

/// Whether two pod specs are equal apart from the fields an update may change (the containers'
/// images, activeDeadlineSeconds, tolerations, terminationGracePeriodSeconds) and, on either
/// side as asked, nodeName. Compared in place: a spec is never copied.
fn pod_specs_equal(new: &Value, old: &Value, skip_new_node: bool, skip_old_node: bool) -> bool {
    const MUTABLE: [&str; 3] = [
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
    ];
    let (Some(a), Some(b)) = (new.as_object(), old.as_object()) else {
        return new == old;
    };
    // A null field is an absent one (Go decodes both to nil): objects stored by earlier
    // versions carry `initContainers: null`.
    let kept = |skip_node: bool| {
        move |(k, v): &(&String, &Value)| {
            let skipped = v.is_null()
                || MUTABLE.contains(&k.as_str())
                || (skip_node && k.as_str() == "nodeName");
            !skipped
        }
    };
    members_equal(
        a.iter().filter(kept(skip_new_node)),
        b.iter().filter(kept(skip_old_node)),
        |k, va, vb| {
            if k == "containers" || k == "initContainers" {
                containers_equal_but_image(va, vb)
            } else {
                va == vb
            }
        },
    )
}

/// Whether two objects' members (in key order, as the maps iterate) have the same keys, and
/// values that `same` finds equal.
fn members_equal<'a>(
    mut a: impl Iterator<Item = (&'a String, &'a Value)>,
    mut b: impl Iterator<Item = (&'a String, &'a Value)>,
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((ka, va)), Some((kb, vb))) if ka == kb && same(ka, va, vb) => {}
            _ => return false,
        }
    }
}

/// Two container lists, equal apart from each container's image.
fn containers_equal_but_image(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| match (x.as_object(), y.as_object()) {
                (Some(x), Some(y)) => members_equal(
                    x.iter().filter(|(k, _)| k.as_str() != "image"),
                    y.iter().filter(|(k, _)| k.as_str() != "image"),
                    |_, p, q| p == q,
                ),
                _ => x == y,
            })
}

fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let labels = labels.as_object();
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let ml_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let me_ok = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or("") {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            }
        });
    ml_ok && me_ok
}

fn selector_is_empty(selector: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// Go's `%#v` of a label map, as the real message shows it.
fn go_map(labels: &Value) -> String {
    let inner: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn workload(kind: &str, obj: &Value, old: Option<&Value>, errors: &mut Errors) {
    let spec = &obj["spec"];
    if kind != "daemonsets" {
        non_negative(&spec["replicas"], "spec.replicas", errors);
    }
    non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", errors);
    non_negative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        errors,
    );
    let selector = &spec["selector"];
    let template = &spec["template"];
    if selector.is_null() {
        errors.push(FieldError::required("spec.selector", ""));
    } else if selector_is_empty(selector) {
        errors.push(FieldError {
            kind: super::status::ErrorType::Invalid,
            field: "spec.selector".into(),
            value: "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}".into(),
            detail: format!("empty selector is invalid for {}", &kind[..kind.len() - 1]),
        });
    } else if !selector_matches(selector, &template["metadata"]["labels"]) {
        errors.push(FieldError {
            kind: super::status::ErrorType::Invalid,
            field: "spec.template.metadata.labels".into(),
            value: go_map(&template["metadata"]["labels"]),
            detail: "`selector` does not match template `labels`".into(),
        });
    }
    metadata(&template["metadata"], "spec.template.metadata", errors);
    pod_spec(&template["spec"], "spec.template.spec", errors);
    if let Some(p) = template["spec"]["restartPolicy"].as_str()
        && p != "Always"
    {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(p),
            &["Always"],
        ));
    }
    if kind == "deployments" {
        let strategy = &spec["strategy"];
        one_of(
            &strategy["type"],
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
            errors,
        );
        if strategy["type"] == "Recreate" && !strategy["rollingUpdate"].is_null() {
            errors.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        if let (Some(p), Some(m)) = (
            spec["progressDeadlineSeconds"].as_i64(),
            spec["minReadySeconds"].as_i64(),
        ) && p <= m
        {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &json!(p),
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old
        && old["spec"]["selector"] != *selector
        && kind != "replicasets"
    {
        errors.push(FieldError {
            kind: super::status::ErrorType::Invalid,
            field: "spec.selector".into(),
            value: selector.to_string(),
            detail: "field is immutable".into(),
        });
    }
}

fn job(spec: &Value, path: &str, old: Option<&Value>, errors: &mut Errors) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        non_negative(&spec[f], &format!("{path}.{f}"), errors);
    }
    let template = &spec["template"];
    metadata(
        &template["metadata"],
        &format!("{path}.template.metadata"),
        errors,
    );
    pod_spec(&template["spec"], &format!("{path}.template.spec"), errors);
    match template["spec"]["restartPolicy"].as_str() {
        Some("OnFailure" | "Never") => {}
        _ => errors.push(FieldError::required(
            format!("{path}.template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        )),
    }
    one_of(
        &spec["completionMode"],
        &format!("{path}.completionMode"),
        &["NonIndexed", "Indexed"],
        errors,
    );
    if let Some(old) = old {
        if old["completions"] != spec["completions"] && spec["completionMode"] != "Indexed" {
            errors.push(FieldError::invalid(
                format!("{path}.completions"),
                &spec["completions"],
                "field is immutable",
            ));
        }
        if old["selector"] != spec["selector"] {
            errors.push(FieldError {
                kind: super::status::ErrorType::Invalid,
                field: format!("{path}.selector"),
                value: spec["selector"].to_string(),
                detail: "field is immutable".into(),
            });
        }
        let strip = |t: &Value| {
            let mut t = t.clone();
            if let Some(m) = t["metadata"].as_object_mut() {
                m.remove("labels");
                m.remove("annotations");
            }
            t
        };
        if strip(&old["template"]) != strip(template) {
            errors.push(FieldError {
                kind: super::status::ErrorType::Invalid,
                field: format!("{path}.template"),
                value: "core.PodTemplateSpec{…}".into(),
                detail: "field is immutable".into(),
            });
        }
    }
}

/// A cron schedule: five fields or a `@` macro, as robfig/cron's standard parser accepts.
pub fn check_cron(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.starts_with('@') {
        return match s {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ if s.starts_with("@every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let body = s
        .strip_prefix("TZ=")
        .or_else(|| s.strip_prefix("CRON_TZ="))
        .map_or(s, |rest| rest.split_once(' ').map_or("", |(_, b)| b));
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    let names: [&[&str]; 5] = [
        &[],
        &[],
        &[],
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ];
    for (i, f) in fields.iter().enumerate() {
        let (lo, hi) = bounds[i];
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step
                && st.parse::<u32>().map_or(true, |n| n == 0)
            {
                return Err(format!("failed to parse int from {st}"));
            }
            if range == "*" || range == "?" {
                continue;
            }
            let value = |v: &str| -> Result<u32, String> {
                if let Some(pos) = names[i].iter().position(|n| n.eq_ignore_ascii_case(v)) {
                    return Ok(pos as u32 + if i == 3 { 1 } else { 0 });
                }
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("failed to parse int from {v}"))?;
                if n < lo || n > hi {
                    return Err(format!("end of range ({n}) above maximum ({hi}): {v}"));
                }
                Ok(n)
            };
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!(
                            "beginning of range ({a}) beyond end of range ({b}): {range}"
                        ));
                    }
                }
                None => {
                    value(range)?;
                }
            }
        }
    }
    Ok(())
}

fn service(obj: &Value, old: Option<&Value>, errors: &mut Errors) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    one_of(
        &spec["type"],
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        errors,
    );
    let ports = spec["ports"].as_array();
    if ty != "ExternalName" && spec["clusterIP"] != "None" && ports.is_none_or(Vec::is_empty) {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let ports = ports.map(Vec::as_slice).unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errors.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            if let Some(e) = label_error(name) {
                errors.push(FieldError::invalid_str(format!("{pp}.name"), name, e));
            }
            if names.contains(&name) {
                errors.push(FieldError::duplicate(format!("{pp}.name"), &json!(name)));
            }
            names.push(name);
        }
        if p["port"].is_null() {
            errors.push(FieldError::invalid(
                format!("{pp}.port"),
                &json!(0),
                "must be between 1 and 65535, inclusive",
            ));
        }
        port_range(&p["port"], &format!("{pp}.port"), errors);
        one_of(
            &p["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            errors,
        );
        match &p["targetPort"] {
            Value::Number(_) => port_range(&p["targetPort"], &format!("{pp}.targetPort"), errors),
            Value::String(s) => {
                if let Some(e) = port_name_error(s) {
                    errors.push(FieldError::invalid_str(format!("{pp}.targetPort"), s, e));
                }
            }
            _ => {}
        }
        if !p["nodePort"].is_null() && ty != "NodePort" && ty != "LoadBalancer" {
            errors.push(FieldError::forbidden(
                format!("{pp}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if ty == "ExternalName" && spec["externalName"].as_str().unwrap_or("").is_empty() {
        errors.push(FieldError::required("spec.externalName", ""));
    }
    if let Some(old) = old {
        let old_ip = &old["spec"]["clusterIP"];
        if !old_ip.is_null() && !spec["clusterIP"].is_null() && old_ip != &spec["clusterIP"] {
            errors.push(FieldError {
                kind: super::status::ErrorType::Invalid,
                field: "spec.clusterIPs[0]".into(),
                value: format!("[]string{{{}}}", spec["clusterIP"]),
                detail: "may not change once set".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    fn errors_of(group: &str, name: &str, obj: Value) -> Vec<String> {
        let r = find(group, r_version(group), name).unwrap();
        let mut e = Vec::new();
        validate(r, &obj, None, &mut e);
        e.iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect()
    }

    fn r_version(group: &str) -> &'static str {
        if group == "autoscaling" { "v2" } else { "v1" }
    }

    #[test]
    fn pod_updates_change_only_the_mutable_spec_fields() {
        let old = json!({
            "containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}],
            "initContainers": [{"name": "i", "image": "y:1"}],
            "tolerations": [],
            "activeDeadlineSeconds": 5,
            "restartPolicy": "Always",
        });
        let check = |new: Value, old: &Value| {
            let mut e = Vec::new();
            pod_update(&new, old, &mut e);
            e.is_empty()
        };
        assert!(check(old.clone(), &old));
        let mut new = old.clone();
        new["containers"][0]["image"] = json!("x:2");
        new["initContainers"][0]["image"] = json!("y:2");
        new["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        new["activeDeadlineSeconds"] = json!(3);
        new["terminationGracePeriodSeconds"] = json!(1);
        assert!(
            check(new, &old),
            "images, tolerations, deadlines may change"
        );
        let mut with_null = old.clone();
        with_null["ephemeralContainers"] = Value::Null;
        assert!(check(with_null.clone(), &old), "null is absent");
        assert!(check(old.clone(), &with_null), "null is absent");
        // nodeName may be set once, not changed or cleared.
        let mut bound = old.clone();
        bound["nodeName"] = json!("n1");
        assert!(check(bound.clone(), &old));
        let mut moved = bound.clone();
        moved["nodeName"] = json!("n2");
        assert!(!check(moved, &bound));
        assert!(!check(old.clone(), &bound));
        for change in [
            json!({"restartPolicy": "Never"}),
            json!({"containers": [{"name": "b", "image": "x:1", "ports": [{"containerPort": 80}]}]}),
            json!({"containers": []}),
            json!({"hostNetwork": true}),
        ] {
            let mut new = old.clone();
            for (k, v) in change.as_object().unwrap() {
                new[k] = v.clone();
            }
            assert!(!check(new, &old), "{change}");
        }
        let mut extra_port = old.clone();
        extra_port["containers"][0]["ports"] = json!([{"containerPort": 81}]);
        assert!(!check(extra_port, &old));
    }

    #[test]
    fn names() {
        assert!(label_error("lab").is_none());
        assert!(label_error("Bad_Name").is_some());
        assert!(label_error("a.b").is_some());
        assert!(subdomain_error("a.b-c").is_none());
        assert!(subdomain_error("-a").is_some());
        assert!(subdomain_error("").is_some());
        let roles = find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        assert!(name_error(roles, "system:controller:x").is_none());
        assert!(name_error(roles, "a/b").is_some());
    }

    #[test]
    fn pods_with_the_real_messages() {
        let e = errors_of(
            "",
            "pods",
            json!({"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 70000, "protocol": "TCP"}]},
                {"name": "c", "image": ""}]}}),
        );
        assert!(e.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{e:?}");
        assert!(e.contains(&"spec.containers[1].name: Duplicate value: \"c\"".to_string()));
        assert!(e.contains(&"spec.containers[1].image: Required value".to_string()));
        let e = errors_of("", "pods", json!({"spec": {}}));
        assert_eq!(e, vec!["spec.containers: Required value".to_string()]);
    }

    #[test]
    fn workloads_with_the_real_messages() {
        let e = errors_of(
            "apps",
            "deployments",
            json!({"spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "b"}},
                  "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}),
        );
        assert_eq!(
            e,
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0".to_string(),
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`".to_string(),
            ]
        );
        let e = errors_of(
            "batch",
            "jobs",
            json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}),
        );
        assert_eq!(
            e,
            vec!["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"".to_string()]
        );
    }

    #[test]
    fn cron_and_services() {
        assert!(check_cron("*/5 * * * *").is_ok());
        assert!(check_cron("0 0 1 jan mon").is_ok());
        assert!(check_cron("@hourly").is_ok());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_cron("* * *").is_err());
        let e = errors_of(
            "",
            "services",
            json!({"spec": {"type": "Bogus", "ports": [{"port": 0, "protocol": "TCP"}]}}),
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("spec.type: Unsupported value: \"Bogus\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("spec.ports[0].port: Invalid value: 0"))
        );
    }
}
