//! Helpers shared by the controllers: keys, label selectors, owner references, pod states,
//! events, and the API calls every controller makes.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

/// The work-queue key of a namespaced object: `namespace/name`.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The keys of the owners (of kind `kind`, e.g. replica sets for a pod) that must look again
/// when the object with `meta` changed: its controller when it has one, otherwise — an orphan,
/// perhaps to adopt — every owner in its namespace whose non-empty selector matches it.
pub fn owners_to_wake<T: Resource>(
    meta: &ObjectMeta,
    kind: &str,
    owners: &[Arc<T>],
    selector: impl Fn(&T) -> Option<&LabelSelector>,
) -> Vec<String> {
    let ns = meta.namespace.as_deref().unwrap_or("");
    if let Some(r) = controller_ref(meta) {
        return if r.kind == kind {
            vec![format!("{ns}/{}", r.name)]
        } else {
            Vec::new()
        };
    }
    owners
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter(|o| {
            selector(o).is_some_and(|sel| {
                !selector_is_empty(sel) && selector_matches(sel, meta.labels.as_ref())
            })
        })
        .map(|o| key_of(o.meta()))
        .collect()
}

/// Splits a `namespace/name` key.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Whether `labels` satisfy `selector` (see [`crate::component_base::labels`]); no labels
/// count as empty labels.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    crate::component_base::labels::selector_matches(selector, labels.unwrap_or(&EMPTY))
}

pub use crate::component_base::labels::selector_is_empty;

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The controller owner reference a controller puts on what it creates
/// (`controller: true`, `blockOwnerDeletion: true`).
pub fn new_controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An ObjectReference to `obj` (what events point at).
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Whether the pod is still running or may run: not Succeeded/Failed and not being deleted
/// (the real controller's `IsPodActive`).
pub fn pod_is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded") && phase != Some("Failed") && p.metadata.deletion_timestamp.is_none()
}

pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod's Ready condition, if it is True.
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(|| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(Timestamp::UNIX_EPOCH)
            }),
    )
}

pub fn pod_is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready_seconds` (the real `IsPodAvailable`).
pub fn pod_is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// When a ready pod becomes available (to requeue its owner then).
pub fn available_in(
    p: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let t = ready_since(p)?;
    let at = t.as_second() + i64::from(min_ready_seconds);
    (at > now.as_second())
        .then(|| std::time::Duration::from_secs((at - now.as_second()) as u64 + 1))
}

/// Records events for one controller as core/v1 Events (what kube-controller-manager's event
/// broadcaster writes: `source.component`, first/last timestamps, count), without blocking the
/// caller. `kubectl describe` and `kubectl get events` show them.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    component: Arc<str>,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Events {
        Events {
            client,
            component: controller.into(),
        }
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish("Normal", regarding, reason, note);
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish("Warning", regarding, reason, note);
    }

    fn publish(&self, type_: &str, regarding: ObjectReference, reason: &str, note: String) {
        use k8s_openapi::api::core::v1::{Event, EventSource};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let now = Timestamp::now();
        let ns = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.into()),
            message: Some(note),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.component.to_string()),
            ..Default::default()
        };
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&Default::default(), &ev).await {
                tracing::debug!(error = %e, "could not record event");
            }
        });
    }
}

/// An API error as Go's `err.Error()` prints it: the Status message (`pods "x" is forbidden:
/// exceeded quota: …`), which controllers put in events and conditions.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Whether a kube error is the API's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is the API's 409 (conflict or already exists).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The real `ComputeHash`: FNV-32a over the pod template (here its JSON, then the collision
/// count as 8 little-endian bytes), printed in decimal and mapped through the
/// `SafeEncodeString` alphabet (no vowels, no look-alike digits): names like `5d4b7f6c9`.
pub fn compute_hash(template: &serde_json::Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        feed(&buf);
    }
    safe_encode(&h.to_string())
}

/// `k8s.io/apimachinery/pkg/util/rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Resolves an int-or-percent against `total` (the real `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: &str,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let prod = p * i64::from(total);
    let v = if round_up {
        (prod + 99).div_euclid(100)
    } else {
        prod.div_euclid(100)
    };
    v as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounding() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&p), 10, true, "25%"), 3);
        assert_eq!(scaled_value(Some(&p), 10, false, "25%"), 2);
        assert_eq!(scaled_value(None, 1, true, "25%"), 1);
        assert_eq!(scaled_value(None, 1, false, "25%"), 0);
        assert_eq!(
            scaled_value(Some(&IntOrString::Int(2)), 10, false, "25%"),
            2
        );
    }

    #[test]
    fn hash_uses_the_safe_alphabet() {
        let h = compute_hash(&serde_json::json!({"a": 1}), None);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, compute_hash(&serde_json::json!({"a": 1}), Some(1)));
    }
}
