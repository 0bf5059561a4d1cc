//! The kubelet's event recorder: core/v1 Events about pods (`Pulling`, `Pulled`, `Created`,
//! `Started`, `Killing`, `BackOff`, `Failed`, `Unhealthy`, `FailedMount`, …) with
//! `source: {component: kubelet, host: <node>}`, which `kubectl describe pod` and
//! `kubectl get events` show.
//!
//! A repeated event (the same reason and message about the same object) is counted on the first
//! one (`count`, `lastTimestamp`) instead of written again, as client-go's event correlator
//! does — so a crash-looping container gives one `BackOff` event with a growing count. Events
//! are sent from a background task so that a pod's sync never waits for one.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

struct Record {
    object: ObjectReference,
    type_: Type,
    reason: String,
    message: String,
}

/// Sends events in the background; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    /// Starts the sending task.
    pub fn start(client: kube::Client, node: &str) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, node.to_string(), rx));
        Recorder { tx }
    }

    /// An event about a pod (`container` narrows it to `spec.containers{name}`).
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: Type,
        reason: &str,
        message: String,
    ) {
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|ic| ic.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path,
            ..Default::default()
        };
        self.object(object, type_, reason, message);
    }

    /// An event about any object (the Node's `Starting`, `NodeReady`, …).
    pub fn object(&self, object: ObjectReference, type_: Type, reason: &str, message: String) {
        let _ = self.tx.send(Record {
            object,
            type_,
            reason: reason.to_string(),
            message,
        });
    }
}

/// (object uid, fieldPath, reason, message): what makes two events the same.
type EventKey = (String, String, String, String);

async fn send_loop(client: kube::Client, node: String, mut rx: mpsc::UnboundedReceiver<Record>) {
    // (uid, fieldPath, reason, message) → (namespace, event name, count)
    let mut seen: HashMap<EventKey, (String, String, i32)> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let now = jiff::Timestamp::now();
        let ns = r
            .object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let key = (
            r.object.uid.clone().unwrap_or_default(),
            r.object.field_path.clone().unwrap_or_default(),
            r.reason.clone(),
            r.message.clone(),
        );
        if let Some((ns, name, count)) = seen.get_mut(&key) {
            *count += 1;
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            let patch = json!({"count": *count, "lastTimestamp": now.to_string()});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(e) => tracing::debug!("counting event {name}: {e}; writing a new one"),
            }
        }
        let name = format!(
            "{}.{:x}",
            r.object.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: r.object,
            reason: Some(r.reason.clone()),
            message: Some(r.message.clone()),
            type_: Some(r.type_.as_str().into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(key, (ns, name, 1));
            }
            Err(e) => tracing::debug!("event {}: {e}", r.reason),
        }
    }
}
