//! The node lifecycle controller (`node-lifecycle-controller`): notices nodes whose kubelet went
//! silent, and taints nodes from their conditions.
//!
//! Every kubelet proves it is alive by renewing its node's Lease in `kube-node-lease` (every 10 s)
//! and by posting the node's status (the Ready condition's `lastHeartbeatTime`). The controller
//! remembers, per node, when it last *saw* either change (its own clock, as the real one does).
//! When neither changed for `--node-monitor-grace-period` (40 s; `--node-startup-grace-period`,
//! 1 m, for a node that never posted a Ready condition), it sets the conditions Ready,
//! MemoryPressure, DiskPressure and PIDPressure to `Unknown` with reason `NodeStatusUnknown`
//! ("Kubelet stopped posting node status."), records the event `NodeNotReady` on the node, and
//! marks the Ready condition of the node's pods False (so endpoints drop them). The kubelet puts
//! Ready back when it can talk to the API server again.
//!
//! From the conditions follow the taints:
//! - `NoExecute` (taint-based eviction, acted on by [`super::taint_eviction`]):
//!   `node.kubernetes.io/unreachable` while Ready is Unknown, `node.kubernetes.io/not-ready`
//!   while it is False, neither once it is True again;
//! - `NoSchedule` (TaintNodesByCondition, for the scheduler): `not-ready`, `unreachable`,
//!   `memory-pressure`, `disk-pressure`, `pid-pressure`, `network-unavailable` from the matching
//!   conditions, and `node.kubernetes.io/unschedulable` for a cordoned node
//!   (`spec.unschedulable`, `kubectl cordon`).
//!
//! Taints it adds carry `timeAdded`; taints of other keys are left alone.
//!
//! Timing: instead of the real controller's pass over all nodes every `--node-monitor-period`
//! (5 s), each node's key is queued when the node or its Lease changes, and woken once at the
//! moment its grace period would run out — so a silent node is noticed exactly on time, and a
//! quiet cluster costs nothing. Not here: the per-zone eviction rate limits
//! (`--node-eviction-rate`, `--secondary-node-eviction-rate`, `--unhealthy-zone-threshold`), which
//! slow down or stop tainting when many nodes of a zone fail at once: every failed node is
//! tainted at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use serde_json::json;

use super::Ctx;
use super::util::{self, Events};

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The node conditions the controller sets to Unknown (NetworkUnavailable is left alone: it
/// belongs to the network plugin).
const MONITORED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// TaintNodesByCondition: (condition, status) → NoSchedule taint key.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Sets the monitored conditions to Unknown, as the real `tryUpdateNodeHealth` does once the
/// grace period ran out: existing ones get `NodeStatusUnknown`, missing ones
/// `NodeStatusNeverUpdated`. Returns whether the Ready condition changed.
pub fn mark_unknown(node: &mut Node, now: Timestamp) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut ready_changed = false;
    for type_ in MONITORED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(Time(now)),
                });
                ready_changed |= type_ == "Ready";
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                ready_changed |= type_ == "Ready";
            }
            Some(_) => {}
        }
    }
    ready_changed
}

/// Whether a taint is one this controller manages (and may remove).
fn managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        "NoExecute" => t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY,
        "NoSchedule" => {
            t.key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key)
        }
        _ => false,
    }
}

/// The controller-managed taints the node should carry: (key, effect).
pub fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (type_, status, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == status) {
            out.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => out.push((TAINT_NOT_READY, "NoExecute")),
        Some("Unknown") => out.push((TAINT_UNREACHABLE, "NoExecute")),
        _ => {}
    }
    out
}

/// The node's new taint list when the managed taints must change: other taints kept as they
/// are, managed ones no longer wanted removed, wanted ones added with `timeAdded: now`.
pub fn reconcile_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let wanted = wanted_taints(node);
    let current: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let is_wanted = |t: &Taint| wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || is_wanted(t))
        .cloned()
        .collect();
    let mut changed = out.len() != current.len();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: Some(Time(now)),
            });
            changed = true;
        }
    }
    changed.then_some(out)
}

/// What the controller remembers of a node's heartbeats.
struct Health {
    uid: String,
    /// When a heartbeat was last seen (the controller's clock).
    probe: Timestamp,
    /// The Ready condition's `lastHeartbeatTime` then (None: no Ready condition).
    heartbeat: Option<Timestamp>,
    had_ready: bool,
    /// The Lease's `renewTime` then.
    lease_renewed: Option<Timestamp>,
    /// When the pending wake-up fires, if one is pending.
    timer: Option<Timestamp>,
    /// Marking the node's pods not ready failed: try again.
    pods_need_retry: bool,
}

pub struct NodeLifecycleController {
    ctx: Arc<Ctx>,
    queue: Arc<super::informer::Queue>,
    events: Events,
    health: Mutex<HashMap<String, Health>>,
}

pub fn start(ctx: &Arc<Ctx>) {
    let queue = super::informer::Queue::new("node-lifecycle");
    let c = Arc::new(NodeLifecycleController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "node-controller"),
        health: Mutex::new(HashMap::new()),
    });
    let q = queue.clone();
    ctx.inf.nodes.on_change(move |n, _| q.add(n.name_any()));
    let q = queue.clone();
    ctx.inf
        .node_leases
        .on_change(move |l: &Lease, _| q.add(l.name_any()));
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, 4, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// The reference of the real `RecordNodeEvent` / `RecordNodeStatusChange`.
fn node_ref(name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

impl NodeLifecycleController {
    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(node) = self.ctx.inf.nodes.store().get(&ObjectRef::new(name)) else {
            if let Some(h) = self.health.lock().remove(name) {
                tracing::info!(node = name, "node deleted");
                self.events.normal(
                    node_ref(name, &h.uid),
                    "RemovingNode",
                    format!("Node {name} event: Removing Node {name} from Controller"),
                );
            }
            return Ok(());
        };
        let now = util::now();
        let cfg = &self.ctx.config;
        let ready = condition(&node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        let lease_renewed = self
            .ctx
            .inf
            .node_leases
            .store()
            .get(&ObjectRef::new(name).within("kube-node-lease"))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));

        // Observe heartbeats.
        let (probe, first, mut retry) = {
            let mut h = self.health.lock();
            // A node deleted and created again under the same name is a new node.
            if h.get(name)
                .is_some_and(|e| Some(&e.uid) != node.metadata.uid.as_ref())
            {
                h.remove(name);
            }
            let first = !h.contains_key(name);
            let e = h.entry(name.to_string()).or_insert_with(|| Health {
                uid: node.uid().unwrap_or_default(),
                // A node that never posted status counts from its creation.
                probe: if ready.is_none() && lease_renewed.is_none() {
                    node.metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(now, |t| t.0)
                } else {
                    now
                },
                heartbeat,
                had_ready: ready.is_some(),
                lease_renewed,
                timer: None,
                pods_need_retry: false,
            });
            if e.had_ready != ready.is_some() || e.heartbeat != heartbeat {
                e.probe = now;
                e.had_ready = ready.is_some();
                e.heartbeat = heartbeat;
            }
            if lease_renewed > e.lease_renewed {
                e.probe = now;
                e.lease_renewed = lease_renewed;
            }
            if e.timer.is_some_and(|t| t <= now) {
                e.timer = None;
            }
            (e.probe, first, e.pods_need_retry)
        };
        if first {
            self.events.normal(
                node_ref(name, &node.uid().unwrap_or_default()),
                "RegisteredNode",
                format!("Node {name} event: Registered Node {name} in Controller"),
            );
        }

        let grace = if ready.is_some() {
            cfg.node_monitor_grace_period
        } else {
            cfg.node_startup_grace_period
        };
        let deadline = probe
            .checked_add(jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        let observed_ready = ready.map(|c| c.status.clone());
        let mut node = (*node).clone();
        let api: Api<Node> = Api::all(self.ctx.client.clone());

        if now > deadline {
            if mark_unknown(&mut node, now) {
                tracing::info!(node = name, silent_for = %probe.duration_until(now), "node stopped posting status");
                node = api
                    .replace_status(name, &PostParams::default(), &node)
                    .await?;
                if observed_ready.as_deref() == Some("True") {
                    self.events.normal(
                        node_ref(name, &node.uid().unwrap_or_default()),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                    retry = true;
                }
            }
        } else {
            let mut h = self.health.lock();
            if let Some(e) = h.get_mut(name)
                && e.timer.is_none_or(|t| t > deadline)
            {
                e.timer = Some(deadline);
                let wait = Duration::try_from(now.duration_until(deadline)).unwrap_or_default()
                    + Duration::from_millis(10);
                self.queue.add_after(name, wait);
            }
        }

        // The real `MarkPodsNotReady`, once when the node went from Ready to not ready (and
        // again while that failed).
        let not_ready = condition(&node, "Ready").is_none_or(|c| c.status != "True");
        if retry && not_ready {
            let ok = self.mark_pods_not_ready(name).await;
            if let Some(e) = self.health.lock().get_mut(name) {
                e.pods_need_retry = !ok;
            }
            if !ok {
                anyhow::bail!("could not mark every pod of node {name} not ready");
            }
        } else if retry && let Some(e) = self.health.lock().get_mut(name) {
            e.pods_need_retry = false;
        }

        if let Some(taints) = reconcile_taints(&node, now) {
            let keys: Vec<String> = taints
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            tracing::info!(node = name, taints = ?keys, "updating node taints");
            node.spec.get_or_insert_with(Default::default).taints = Some(taints);
            match api.replace(name, &PostParams::default(), &node).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sets the Ready condition of the node's pods to False; false when some update failed.
    async fn mark_pods_not_ready(&self, node: &str) -> bool {
        let mut ok = true;
        for pod in self.ctx.inf.pods.store().state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            if ready.is_none_or(|c| c.status == "False") {
                continue;
            }
            let (ns, pname) = (pod.namespace().unwrap_or_default(), pod.name_any());
            tracing::info!(pod = %format!("{ns}/{pname}"), "updating ready status of pod to false");
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let patch = json!({
                "metadata": {"uid": pod.uid()},
                "status": {"conditions": [{
                    "type": "Ready", "status": "False", "lastTransitionTime": util::now(),
                }]},
            });
            match api
                .patch_status(&pname, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => self.events.warning(
                    util::object_ref(pod.as_ref()),
                    "NodeNotReady",
                    "Node is not ready".into(),
                ),
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(pod = %pname, error = %e, "could not mark pod not ready");
                    ok = false;
                }
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: &[(&str, &str)], unschedulable: bool, taints: Vec<Taint>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"unschedulable": unschedulable, "taints": taints},
            "status": {"conditions": conditions.iter().map(|(t, s)| json!({
                "type": t, "status": s, "reason": "KubeletReady",
                "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                "lastTransitionTime": "2024-01-01T00:00:00Z"})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn keys(t: &[Taint]) -> Vec<String> {
        t.iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn silent_nodes_become_unknown() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut n = node(
            &[("Ready", "True"), ("MemoryPressure", "False")],
            false,
            vec![],
        );
        assert!(mark_unknown(&mut n, now));
        let ready = condition(&n, "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time.as_ref().unwrap().0, now);
        // Missing conditions are added as never updated.
        let disk = condition(&n, "DiskPressure").unwrap();
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        // A second time changes nothing.
        assert!(!mark_unknown(&mut n, now));
    }

    #[test]
    fn taints_follow_conditions_and_cordon() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let healthy = node(&[("Ready", "True")], false, vec![]);
        assert_eq!(reconcile_taints(&healthy, now), None);

        let unknown = node(&[("Ready", "Unknown")], false, vec![]);
        let t = reconcile_taints(&unknown, now).unwrap();
        assert_eq!(
            keys(&t),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert!(t.iter().all(|t| t.time_added.as_ref().unwrap().0 == now));

        // Ready False swaps unreachable for not-ready; a user's taint stays.
        let user = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let mut old = t.clone();
        old.push(user.clone());
        let not_ready = node(&[("Ready", "False"), ("DiskPressure", "True")], true, old);
        let t = reconcile_taints(&not_ready, now).unwrap();
        assert_eq!(
            keys(&t),
            [
                "dedicated:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );

        // Back to Ready: only the user's taint is left.
        let back = node(&[("Ready", "True")], false, t);
        assert_eq!(
            keys(&reconcile_taints(&back, now).unwrap()),
            ["dedicated:NoExecute"]
        );
        // Nothing to change keeps existing timeAdded (None means unchanged).
        let cordoned = node(&[("Ready", "True")], true, vec![]);
        let t = reconcile_taints(&cordoned, now).unwrap();
        assert_eq!(
            reconcile_taints(&node(&[("Ready", "True")], true, t), now),
            None
        );
    }
}
