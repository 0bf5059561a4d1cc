//! The typed decode every built-in object goes through, as kube-apiserver decodes a request body
//! into its Go struct: a field of the wrong JSON type is a 400 naming the field, and fields the
//! type does not have are found (for `fieldValidation=Strict|Warn`) and dropped before storing.
//!
//! The types are those of the `k8s-openapi` crate (Kubernetes 1.33).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::gojson::{self, Step};
use super::resources::Resource;

mod same;

/// What the typed decode of an object found.
#[derive(Debug)]
pub struct Decoded {
    /// The object as its type holds it: unknown fields dropped. None when that is the object
    /// given, exactly (the usual case: nothing to drop or rewrite).
    pub object: Option<Value>,
    /// Paths of the fields the type does not have (`spec.template.spec.containers[0].foo`).
    pub unknown: Vec<String>,
}

/// Why the typed decode refused an object.
#[derive(Debug)]
pub struct DecodeError {
    /// Where the refused value is.
    pub path: Vec<Step>,
    /// serde's account (`spec.replicas: invalid type: …`), or Go's own words where they are
    /// known here (`illegal base64 data at input byte 0`).
    pub message: String,
    /// Whether `message` is already what the Go decoder says.
    pub go: bool,
}

impl DecodeError {
    /// What kube-apiserver's decoder says of it (encoding/json's `UnmarshalTypeError` words,
    /// worked out from the OpenAPI definition `root` of the type), else serde's account.
    pub fn go_message(&self, defs: &Map<String, Value>, root: Option<&str>, obj: &Value) -> String {
        if self.go {
            return self.message.clone();
        }
        root.and_then(|root| gojson::unmarshal_error(defs, root, obj, &self.path))
            .unwrap_or_else(|| self.message.clone())
    }
}

/// The object as `T` holds it (None when that is `obj` itself, exactly).
fn roundtrip<T: for<'de> Deserialize<'de> + Serialize>(
    obj: &Value,
) -> Result<Option<Value>, DecodeError> {
    // Most bodies decode: the path-tracking decoder runs only to say where one does not.
    let typed = match T::deserialize(obj) {
        Ok(typed) => typed,
        Err(_) => decode_with_path::<T>(obj)?,
    };
    // Most bodies are already what the type makes of them: checking that builds nothing.
    if typed.serialize(same::SameAs(obj)).is_ok() {
        return Ok(None);
    }
    serde_json::to_value(&typed)
        .map(Some)
        .map_err(|e| DecodeError {
            path: Vec::new(),
            message: e.to_string(),
            go: false,
        })
}

/// The decode again, tracking the path, for the error naming the refused field.
fn decode_with_path<T: for<'de> Deserialize<'de>>(obj: &Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(obj).map_err(|e| {
        let path: Vec<Step> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                _ => None,
            })
            .collect();
        let inner = e.inner().to_string();
        let go = |message: String| DecodeError {
            path: path.clone(),
            message,
            go: true,
        };
        // Bytes fields (Secret data, ConfigMap binaryData) fail as Go's base64 decoder says.
        if let Some(rest) = inner
            .strip_prefix("Invalid symbol ")
            .or_else(|| inner.strip_prefix("Invalid last symbol "))
        {
            let offset = rest
                .split("offset ")
                .nth(1)
                .map_or("0", |o| o.trim_end_matches('.'));
            return go(format!("illegal base64 data at input byte {offset}"));
        }
        if inner.starts_with("Invalid input length") || inner.starts_with("Invalid padding") {
            return go("illegal base64 data at input byte 0".to_string());
        }
        let shown = e.path().to_string();
        let message = if shown == "." || shown.is_empty() {
            inner
        } else {
            format!("{shown}: {inner}")
        };
        DecodeError {
            path,
            message,
            go: false,
        }
    })
}

macro_rules! typed {
    ($r:expr, $obj:expr; $($group:literal $kind:literal => $t:ty),* $(,)?) => {
        match ($r.group, $r.kind) {
            $(($group, $kind) => Some(roundtrip::<$t>($obj)),)*
            _ => None,
        }
    };
}

/// Decodes `obj` (which already carries its apiVersion and kind) as the built-in type of `r`.
/// None for types without a typed form here (custom resources).
pub fn decode(r: &Resource, obj: &Value) -> Option<Result<Decoded, DecodeError>> {
    use k8s_openapi::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
        autoscaling::v2 as autoscaling, batch::v1 as batch, coordination::v1 as coordination,
        core::v1 as core, discovery::v1 as discovery, networking::v1 as networking,
        policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
        storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    let result = typed!(r, obj;
        "" "Binding" => core::Binding,
        "" "ConfigMap" => core::ConfigMap,
        "" "Endpoints" => core::Endpoints,
        "" "Event" => core::Event,
        "" "LimitRange" => core::LimitRange,
        "" "Namespace" => core::Namespace,
        "" "Node" => core::Node,
        "" "PersistentVolumeClaim" => core::PersistentVolumeClaim,
        "" "PersistentVolume" => core::PersistentVolume,
        "" "Pod" => core::Pod,
        "" "PodTemplate" => core::PodTemplate,
        "" "ReplicationController" => core::ReplicationController,
        "" "ResourceQuota" => core::ResourceQuota,
        "" "Secret" => core::Secret,
        "" "ServiceAccount" => core::ServiceAccount,
        "" "Service" => core::Service,
        "apps" "ControllerRevision" => apps::ControllerRevision,
        "apps" "DaemonSet" => apps::DaemonSet,
        "apps" "Deployment" => apps::Deployment,
        "apps" "ReplicaSet" => apps::ReplicaSet,
        "apps" "StatefulSet" => apps::StatefulSet,
        "authentication.k8s.io" "SelfSubjectReview" => authn::SelfSubjectReview,
        "authentication.k8s.io" "TokenReview" => authn::TokenReview,
        "authorization.k8s.io" "LocalSubjectAccessReview" => authz::LocalSubjectAccessReview,
        "authorization.k8s.io" "SelfSubjectAccessReview" => authz::SelfSubjectAccessReview,
        "authorization.k8s.io" "SelfSubjectRulesReview" => authz::SelfSubjectRulesReview,
        "authorization.k8s.io" "SubjectAccessReview" => authz::SubjectAccessReview,
        "autoscaling" "HorizontalPodAutoscaler" => autoscaling::HorizontalPodAutoscaler,
        "events.k8s.io" "Event" => k8s_openapi::api::events::v1::Event,
        "batch" "CronJob" => batch::CronJob,
        "batch" "Job" => batch::Job,
        "coordination.k8s.io" "Lease" => coordination::Lease,
        "discovery.k8s.io" "EndpointSlice" => discovery::EndpointSlice,
        "networking.k8s.io" "IngressClass" => networking::IngressClass,
        "networking.k8s.io" "Ingress" => networking::Ingress,
        "networking.k8s.io" "NetworkPolicy" => networking::NetworkPolicy,
        "policy" "PodDisruptionBudget" => policy::PodDisruptionBudget,
        "rbac.authorization.k8s.io" "ClusterRoleBinding" => rbac::ClusterRoleBinding,
        "rbac.authorization.k8s.io" "ClusterRole" => rbac::ClusterRole,
        "rbac.authorization.k8s.io" "RoleBinding" => rbac::RoleBinding,
        "rbac.authorization.k8s.io" "Role" => rbac::Role,
        "scheduling.k8s.io" "PriorityClass" => scheduling::PriorityClass,
        "storage.k8s.io" "StorageClass" => storage::StorageClass,
        "apiextensions.k8s.io" "CustomResourceDefinition" => apiextensions::CustomResourceDefinition,
    )?;
    Some(result.map(|object| {
        let Some(mut object) = object else {
            return Decoded {
                object: None,
                unknown: Vec::new(),
            };
        };
        let mut unknown = Vec::new();
        dropped(obj, &object, &mut String::new(), &mut unknown);
        // The decode only takes away: fields the type fills in on its own (a required struct
        // left out, as `spec.selector`) stay absent, so validation still sees them missing.
        remove_additions(obj, &mut object);
        Decoded {
            object: Some(object),
            unknown,
        }
    }))
}

/// Removes from `typed` the object fields `input` does not have.
fn remove_additions(input: &Value, typed: &mut Value) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            b.retain(|k, _| a.contains_key(k));
            for (k, v) in b.iter_mut() {
                if let Some(i) = a.get(k) {
                    remove_additions(i, v);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, t) in a.iter().zip(b.iter_mut()) {
                remove_additions(i, t);
            }
        }
        _ => {}
    }
}

/// Paths present (and not null) in `input` but missing from `typed`.
fn dropped(input: &Value, typed: &Value, path: &mut String, out: &mut Vec<String>) {
    let base = path.len();
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(t @ (Value::Object(_) | Value::Array(_))) => {
                        if base > 0 {
                            path.push('.');
                        }
                        path.push_str(k);
                        dropped(v, t, path, out);
                        path.truncate(base);
                    }
                    Some(_) => {}
                    None if v.is_null() => {}
                    None => out.push(if base == 0 {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, t)) in a.iter().zip(b).enumerate() {
                if v.is_object() || v.is_array() {
                    let _ = write!(path, "[{i}]");
                    dropped(v, t, path, out);
                    path.truncate(base);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;
    use serde_json::json;

    #[test]
    fn wrong_types_name_the_field_and_unknown_fields_are_found() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "three"}});
        let e = decode(deploy, &bad).unwrap().unwrap_err();
        assert!(
            e.message.starts_with("spec.replicas: invalid type"),
            "{e:?}"
        );
        assert_eq!(
            e.path,
            vec![Step::Key("spec".into()), Step::Key("replicas".into())]
        );

        let extra = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "replicaz": 2, "selector": {"matchLabels": {"a": "b"}},
              "template": {"spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}}}});
        let d = decode(deploy, &extra).unwrap().unwrap();
        assert_eq!(
            d.unknown,
            vec![
                "spec.replicaz".to_string(),
                "spec.template.spec.containers[0].colour".to_string()
            ]
        );
        let object = d.object.expect("unknown fields dropped");
        assert!(object["spec"].get("replicaz").is_none());
        assert_eq!(object["spec"]["selector"]["matchLabels"]["a"], "b");
        assert!(decode(deploy, &json!([])).unwrap().is_err());
    }
}
