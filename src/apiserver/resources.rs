//! The resource types the API server serves, and what discovery says about them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::status::FieldError;

/// How a resource's names are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1123 subdomain: most objects.
    Subdomain,
}

/// One served resource type.
#[derive(Debug, Clone)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower case, as in URLs and etcd keys (`configmaps`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub names: NameRule,
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Everything served so far (core/v1), in the order discovery lists them.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        names: NameRule::Label,
    },
    Resource {
        group: "",
        version: "v1",
        name: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        names: NameRule::Subdomain,
    },
    Resource {
        group: "",
        version: "v1",
        name: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        names: NameRule::Subdomain,
    },
    Resource {
        group: "",
        version: "v1",
        name: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        names: NameRule::Subdomain,
    },
    Resource {
        group: "",
        version: "v1",
        name: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        names: NameRule::Subdomain,
    },
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The etcd key of an object (`/registry/configmaps/<ns>/<name>`), or of the collection
    /// prefix when `name` is empty.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/{name}", self.name),
            _ => format!("/registry/{}/{name}", self.name),
        }
    }

    /// Verbs served today: the list discovery advertises must only hold what works.
    pub fn verbs(&self) -> Vec<&'static str> {
        VERBS
            .iter()
            .copied()
            .filter(|v| *v != "deletecollection")
            .collect()
    }

    pub fn discovery_entry(&self) -> Value {
        json!({
            "name": self.name,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
            "shortNames": self.short_names,
        })
    }

    /// Type-specific defaults, conversions and validation of an incoming object (what the real
    /// apiserver's strategy for the type does), adding any invalid fields to `errors`.
    pub fn prepare(&self, obj: &mut Value, errors: &mut Vec<FieldError>) {
        match self.name {
            "configmaps" => {
                for field in ["data", "binaryData"] {
                    check_keys(obj, field, errors);
                }
                if let Some(bin) = obj["binaryData"].as_object() {
                    for (k, v) in bin {
                        if !v.as_str().is_some_and(is_base64) {
                            errors.push(FieldError {
                                field: format!("binaryData[{k}]"),
                                value: "<value omitted>".into(),
                                detail: "must be base64-encoded".into(),
                            });
                        }
                    }
                }
            }
            "secrets" => {
                // stringData is a write-only convenience: it is merged into data, encoded.
                if let Some(string_data) = obj.get("stringData").and_then(Value::as_object).cloned()
                {
                    if !obj["data"].is_object() {
                        obj["data"] = json!({});
                    }
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        obj["data"][k] = json!(B64.encode(text));
                    }
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("stringData");
                    }
                }
                if obj["type"].as_str().unwrap_or("").is_empty() {
                    obj["type"] = json!("Opaque");
                }
                check_keys(obj, "data", errors);
                if let Some(data) = obj["data"].as_object() {
                    for (k, v) in data {
                        if !v.as_str().is_some_and(is_base64) {
                            errors.push(FieldError {
                                field: format!("data[{k}]"),
                                value: "<secret contents redacted>".into(),
                                detail: "illegal base64 data".into(),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The fields `?fieldSelector=` may name for this type (as the real apiserver allows them).
    pub fn field_selectors(&self) -> Vec<&'static str> {
        let mut f = vec!["metadata.name"];
        if self.namespaced {
            f.push("metadata.namespace");
        }
        f.extend_from_slice(match self.name {
            "namespaces" => &["status.phase"][..],
            "secrets" => &["type"][..],
            "events" => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ][..],
            _ => &[][..],
        });
        f
    }

    /// Validates an object's name.
    pub fn validate_name(&self, name: &str) -> Option<FieldError> {
        let detail = match self.names {
            NameRule::Label => label_error(name),
            NameRule::Subdomain => subdomain_error(name),
        }?;
        Some(FieldError {
            field: "metadata.name".into(),
            value: name.into(),
            detail,
        })
    }
}

pub fn find(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

/// `GET /api/v1`.
pub fn core_v1_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": RESOURCES
            .iter()
            .filter(|r| r.group.is_empty())
            .map(Resource::discovery_entry)
            .collect::<Vec<_>>(),
    })
}

fn is_base64(s: &str) -> bool {
    B64.decode(s).is_ok()
}

/// Keys of `data`-like maps must be valid config keys.
fn check_keys(obj: &Value, field: &str, errors: &mut Vec<FieldError>) {
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
            errors.push(FieldError {
                field: format!("{field}[{k}]"),
                value: k.clone(),
                detail: "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into(),
            });
        }
    }
}

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
    (!label_ok(s)).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
    })
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
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(label_error("lab").is_none());
        assert!(label_error("Bad_Name").is_some());
        assert!(label_error("a.b").is_some());
        assert!(subdomain_error("a.b-c").is_none());
        assert!(subdomain_error("-a").is_some());
        assert!(subdomain_error("").is_some());
        let cm = find("", "v1", "configmaps").unwrap();
        assert_eq!(cm.key(Some("lab"), "x"), "/registry/configmaps/lab/x");
        assert_eq!(cm.key(Some("lab"), ""), "/registry/configmaps/lab/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "lab"), "/registry/namespaces/lab");
        assert!(cm.verbs().contains(&"patch"));

        let secret = find("", "v1", "secrets").unwrap();
        let mut s = json!({"stringData": {"user": "admin"}, "data": {"ok": "eA=="}});
        let mut errors = Vec::new();
        secret.prepare(&mut s, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        let mut bad = json!({"data": {"k": "not base64!", "bad key": "eA=="}});
        secret.prepare(&mut bad, &mut errors);
        assert_eq!(errors.len(), 2);
        let mut cmbad = json!({"data": {"a/b": "x"}});
        let mut errors = Vec::new();
        cm.prepare(&mut cmbad, &mut errors);
        assert_eq!(errors[0].field, "data[a/b]");
    }
}
