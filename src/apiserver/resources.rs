//! The resource types the API server serves, and what discovery says about them.

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

/// Everything served so far (core/v1).
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
    }
}
