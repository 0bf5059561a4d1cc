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
//! - `NoSchedule` (TaintNodesByCondition, for the scheduler), at once: `not-ready`,
//!   `unreachable`, `memory-pressure`, `disk-pressure`, `pid-pressure`, `network-unavailable`
//!   from the matching conditions, and `node.kubernetes.io/unschedulable` for a cordoned node
//!   (`spec.unschedulable`, `kubectl cordon`);
//! - `NoExecute` (taint-based eviction, acted on by [`super::taint_eviction`]):
//!   `node.kubernetes.io/unreachable` while Ready is Unknown, `node.kubernetes.io/not-ready`
//!   while it is False. These are rate-limited per zone (below); only the swap of one for the
//!   other (Ready going from False to Unknown or back) and their removal when the node is Ready
//!   again (it also leaves its zone's queue) happen at once.
//!
//! Taints it adds carry `timeAdded`; taints of other keys are left alone.
//!
//! Zones and eviction rates ([`super::zones`]): the nodes are grouped by their
//! `topology.kubernetes.io/zone` and `region` labels, and each zone is Normal,
//! PartialDisruption (more than 2 and at least `--unhealthy-zone-threshold`, 0.55, of its nodes
//! not Ready) or FullDisruption (none Ready). A not-ready node joins its zone's queue and gets
//! its NoExecute taint when the zone's token bucket (burst 1) allows: at `--node-eviction-rate`
//! (0.1 nodes/s) in a Normal or FullDisruption zone, at `--secondary-node-eviction-rate` (0.01)
//! in a PartialDisruption zone of more than `--large-cluster-size-threshold` (50) nodes, and not
//! at all in a smaller one. When every zone is in FullDisruption the controller assumes that it,
//! not the nodes, is cut off ("master disruption mode", logged on entering and leaving, as the
//! real one logs it and records no event): it removes the NoExecute not-ready/unreachable
//! taints of every node and taints none until some node is Ready again; then every node gets a
//! fresh grace period and the zones their rates back. Nodes labelled
//! `node.kubernetes.io/exclude-disruption` count in no zone.
//!
//! Timing: instead of the real controller's pass over all nodes every `--node-monitor-period`
//! (5 s), each node's key is queued when the node or its Lease changes, and woken once at the
//! moment its grace period would run out — so a silent node is noticed exactly on time, and a
//! quiet cluster costs nothing. The zone states are recomputed when a node's zone or readiness
//! changes, and the tainting loop (the real one runs every 100 ms) sleeps until the next token of
//! a zone with nodes waiting. One consequence: nodes that fall silent at nearly the same moment
//! are noticed one by one rather than in one pass, so while a whole cluster goes down the first
//! of them may be tainted for a moment before master disruption mode removes the taint again
//! (the real controller has the same window when the failures straddle two passes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

use super::Ctx;
use super::informer::Change;
use super::util::{self, Events};
use super::zones::{Member, Next, Rates, Transition, Zones, display_zone};

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

/// What becomes of a node's `NoExecute` not-ready/unreachable taint besides the changes made at
/// once (see [`reconcile_taints`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoExecute {
    /// Ready (or no Ready condition yet): no such taint, and out of its zone's tainting queue.
    Forget,
    /// Not ready and not tainted yet: the taint comes through the zone's rate-limited queue.
    Queue,
    /// Not ready and tainted (the taint swapped at once between not-ready and unreachable when
    /// the Ready condition went from False to Unknown or back).
    Keep,
}

fn no_execute_key(node: &Node) -> Option<&'static str> {
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => Some(TAINT_NOT_READY),
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => None,
    }
}

fn is_no_execute(t: &Taint) -> bool {
    t.effect == "NoExecute" && (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The controller-managed taints the node should carry at once: (key, effect), and what
/// becomes of its NoExecute taint.
pub fn wanted_taints(node: &Node) -> (Vec<(&'static str, &'static str)>, NoExecute) {
    let mut out = Vec::new();
    for (type_, status, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == status) {
            out.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    let no_execute = match no_execute_key(node) {
        None => NoExecute::Forget,
        Some(key) if taints_of(node).iter().any(is_no_execute) => {
            out.push((key, "NoExecute"));
            NoExecute::Keep
        }
        Some(_) => NoExecute::Queue,
    };
    (out, no_execute)
}

/// The node's new taint list when the managed taints must change at once (None: no change):
/// other taints kept as they are, managed ones no longer wanted removed, wanted ones added with
/// `timeAdded: now`. A missing NoExecute taint is not added here but queued (see
/// [`super::zones`]).
pub fn reconcile_taints(node: &Node, now: Timestamp) -> (Option<Vec<Taint>>, NoExecute) {
    let (wanted, no_execute) = wanted_taints(node);
    let current = taints_of(node);
    let is_wanted = |t: &Taint| wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || is_wanted(t))
        .cloned()
        .collect();
    let mut changed = out.len() != current.len();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(new_taint(key, effect, now));
            changed = true;
        }
    }
    (changed.then_some(out), no_execute)
}

fn new_taint(key: &str, effect: &str, now: Timestamp) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        value: None,
        time_added: Some(Time(now)),
    }
}

/// The taints with the NoExecute taint the node's Ready condition calls for (the other one of
/// the pair removed); None when nothing changes or the node is Ready.
pub fn with_no_execute(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let key = no_execute_key(node)?;
    let current = taints_of(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !is_no_execute(t) || t.key == key)
        .cloned()
        .collect();
    if !out.iter().any(is_no_execute) {
        out.push(new_taint(key, "NoExecute", now));
    }
    (out != current).then_some(out)
}

/// The taints without the not-ready/unreachable NoExecute ones (`markNodeAsReachable`); None
/// when there are none.
pub fn without_no_execute(node: &Node) -> Option<Vec<Taint>> {
    let current = taints_of(node);
    let out: Vec<Taint> = current
        .iter()
        .filter(|t| !is_no_execute(t))
        .cloned()
        .collect();
    (out.len() != current.len()).then_some(out)
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
    /// The zones, their states and their tainting queues.
    zones: Mutex<Zones>,
    /// Wakes the tainting loop: a zone's membership changed or a node was queued.
    tainter: Notify,
}

/// How long a node whose tainting failed waits before the next attempt (as the real one).
const TAINT_RETRY: Duration = Duration::from_millis(50);

pub fn start(ctx: &Arc<Ctx>) {
    let queue = super::informer::Queue::new("node-lifecycle");
    let cfg = &ctx.config;
    let rates = Rates {
        eviction_qps: cfg.node_eviction_rate,
        secondary_eviction_qps: cfg.secondary_node_eviction_rate,
        large_cluster_threshold: cfg.large_cluster_size_threshold,
        unhealthy_zone_threshold: cfg.unhealthy_zone_threshold,
    };
    tracing::info!(?rates, "node eviction rates");
    let c = Arc::new(NodeLifecycleController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "node-controller"),
        health: Mutex::new(HashMap::new()),
        zones: Mutex::new(Zones::new(rates)),
        tainter: Notify::new(),
    });
    let (q, c2) = (queue.clone(), c.clone());
    ctx.inf.nodes.on_change(move |n, change| {
        let name = n.name_any();
        c2.observe(&name, (change == Change::Applied).then_some(n));
        q.add(name);
    });
    let (c2, ctx2) = (c.clone(), ctx.clone());
    tokio::spawn(async move {
        ctx2.synced().await;
        c2.run_tainter().await;
    });
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
    /// Records a node's zone and readiness (None: deleted) for the zones' states.
    fn observe(&self, name: &str, node: Option<&Node>) {
        let member = node.map(Member::of);
        if self.zones.lock().observe(name, member, Instant::now()) {
            self.tainter.notify_one();
        }
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(node) = self.ctx.inf.nodes.store().get(&ObjectRef::new(name)) else {
            self.observe(name, None);
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

        // The zones see the node's readiness before its taint is queued, so that the tainting
        // loop works with the zone states this change makes.
        self.observe(name, Some(&node));
        let (taints, no_execute) = reconcile_taints(&node, now);
        if let Some(taints) = taints {
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
        let uid = node.uid().unwrap_or_default();
        let mut zones = self.zones.lock();
        let Some(q) = zones.queue_of(name) else {
            return Ok(());
        };
        match no_execute {
            NoExecute::Forget => {
                q.remove(name);
            }
            NoExecute::Queue => {
                if q.requeue(name, &uid, Instant::now()) {
                    tracing::info!(
                        node = name,
                        "node is not ready: queued for its NoExecute taint"
                    );
                    drop(zones);
                    self.tainter.notify_one();
                }
            }
            NoExecute::Keep => {}
        }
        Ok(())
    }

    /// The tainting loop (the real `doNoExecuteTaintingPass` and `handleDisruption`): runs a
    /// pass whenever woken, and sleeps until the next token of a zone with nodes waiting.
    async fn run_tainter(self: Arc<Self>) {
        loop {
            match self.tainting_pass().await {
                Some(wait) if wait.is_zero() => {}
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.tainter.notified() => {}
                    }
                }
                None => self.tainter.notified().await,
            }
        }
    }

    /// One pass: the zone states when a node's zone or readiness changed, then the queues as
    /// far as their tokens allow. Returns when to look again (None: when woken).
    async fn tainting_pass(&self) -> Option<Duration> {
        let transitions = {
            let mut z = self.zones.lock();
            if z.take_dirty() {
                z.handle_disruption(Instant::now())
            } else {
                Vec::new()
            }
        };
        for t in transitions {
            self.transition(t).await;
        }
        let mut wait: Option<Duration> = None;
        let keys = self.zones.lock().zone_keys();
        for zone in keys {
            loop {
                let next = {
                    let mut z = self.zones.lock();
                    if z.is_dirty() {
                        // Readiness changed meanwhile: the zone states first.
                        return Some(Duration::ZERO);
                    }
                    match z.queue(&zone) {
                        Some(q) => q.next(Instant::now()),
                        None => Next::Idle,
                    }
                };
                match next {
                    Next::Idle => break,
                    Next::Wait(d) => {
                        wait = Some(wait.map_or(d, |w| w.min(d)));
                        break;
                    }
                    Next::Taint(p) => {
                        let result = self.taint(&p.node, &zone).await;
                        let mut z = self.zones.lock();
                        let Some(q) = z.queue(&zone) else { break };
                        match result {
                            Ok(()) => q.finish(&p.node),
                            Err(e) => {
                                tracing::warn!(node = %p.node, error = %format!("{e:#}"), "could not add the NoExecute taint; retrying");
                                q.retry(&p.node, Instant::now(), TAINT_RETRY);
                            }
                        }
                    }
                }
            }
        }
        wait
    }

    /// Adds a node's NoExecute taint (not-ready or unreachable, from its Ready condition), its
    /// token taken.
    async fn taint(&self, name: &str, zone: &str) -> anyhow::Result<()> {
        let Some(node) = self.ctx.inf.nodes.store().get(&ObjectRef::new(name)) else {
            tracing::info!(node = name, "node no longer present: not tainted");
            return Ok(());
        };
        if condition(&node, "Ready").is_none() {
            anyhow::bail!("node {name} has no Ready condition");
        }
        if self
            .update_taints(name, false, |n| with_no_execute(n, util::now()))
            .await?
        {
            tracing::info!(node = name, zone = %display_zone(zone), "added the NoExecute taint (rate-limited)");
        }
        Ok(())
    }

    /// Changes a node's taints with `f` (None: nothing to change), from the cached node (or,
    /// when `fresh`, from the API server's current one: the cache may not show a write of this
    /// controller yet) and again from a fresh one on conflicts. Whether the node was updated.
    async fn update_taints(
        &self,
        name: &str,
        fresh: bool,
        f: impl Fn(&Node) -> Option<Vec<Taint>>,
    ) -> anyhow::Result<bool> {
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let current = if fresh {
            api.get_opt(name).await?
        } else {
            self.ctx
                .inf
                .nodes
                .store()
                .get(&ObjectRef::new(name))
                .map(|n| (*n).clone())
        };
        let Some(mut node) = current else {
            return Ok(false);
        };
        for attempt in 0..5 {
            let Some(taints) = f(&node) else {
                return Ok(false);
            };
            node.spec.get_or_insert_with(Default::default).taints = Some(taints);
            match api.replace(name, &PostParams::default(), &node).await {
                Ok(_) => return Ok(true),
                Err(e) if util::is_not_found(&e) => return Ok(false),
                Err(e) if util::is_conflict(&e) && attempt < 4 => match api.get_opt(name).await? {
                    Some(n) => node = n,
                    None => return Ok(false),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Acts on a change of the zone states (the log lines are the real controller's).
    async fn transition(&self, t: Transition) {
        match t {
            Transition::EnterMasterDisruption => {
                tracing::warn!(
                    "Controller detected that all Nodes are not-Ready. Entering master disruption mode"
                );
                // No node keeps a NoExecute taint of ours, and none waits for one. Each node is
                // read from the API server: a taint added just before may not be cached yet.
                for node in self.ctx.inf.nodes.store().state() {
                    let name = node.name_any();
                    if let Some(q) = self.zones.lock().queue_of(&name) {
                        q.remove(&name);
                    }
                    match self.update_taints(&name, true, without_no_execute).await {
                        Ok(true) => tracing::info!(
                            node = %name,
                            "master disruption mode: removed the NoExecute taint"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(node = %name, error = %e, "Failed to remove taints from Node")
                        }
                    }
                }
            }
            Transition::ExitMasterDisruption => {
                tracing::warn!(
                    "Controller detected that some Nodes are Ready. Exiting master disruption mode"
                );
                // Every node gets a fresh grace period.
                let now = util::now();
                for h in self.health.lock().values_mut() {
                    h.probe = now;
                }
            }
            Transition::Zone {
                zone,
                from,
                to,
                qps,
            } => {
                tracing::info!(
                    zone = %display_zone(&zone),
                    %from,
                    new_state = %to,
                    tainting_rate = %qps,
                    "Controller detected that zone is now in new state"
                );
            }
        }
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
        assert_eq!(reconcile_taints(&healthy, now), (None, NoExecute::Forget));

        // Not ready: the NoSchedule taint at once, the NoExecute one through the zone's queue.
        let unknown = node(&[("Ready", "Unknown")], false, vec![]);
        let (t, ne) = reconcile_taints(&unknown, now);
        let t = t.unwrap();
        assert_eq!(ne, NoExecute::Queue);
        assert_eq!(keys(&t), ["node.kubernetes.io/unreachable:NoSchedule"]);
        assert!(t.iter().all(|t| t.time_added.as_ref().unwrap().0 == now));
        // The tainting queue adds it.
        let tainted = node(&[("Ready", "Unknown")], false, t);
        let t = with_no_execute(&tainted, now).unwrap();
        assert_eq!(
            keys(&t),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        let tainted = node(&[("Ready", "Unknown")], false, t.clone());
        assert_eq!(with_no_execute(&tainted, now), None);
        assert_eq!(reconcile_taints(&tainted, now), (None, NoExecute::Keep));

        // Ready False swaps unreachable for not-ready at once (no queue); a user's taint stays.
        let user = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let mut old = t.clone();
        old.push(user.clone());
        let not_ready = node(&[("Ready", "False"), ("DiskPressure", "True")], true, old);
        let (t, ne) = reconcile_taints(&not_ready, now);
        let t = t.unwrap();
        assert_eq!(ne, NoExecute::Keep);
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
        // Master disruption mode: only the NoExecute taint of ours goes.
        let in_disruption = node(&[("Ready", "False")], false, t.clone());
        assert_eq!(
            keys(&without_no_execute(&in_disruption).unwrap()),
            [
                "dedicated:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
            ]
        );
        assert_eq!(without_no_execute(&healthy), None);

        // Back to Ready: only the user's taint is left, at once.
        let back = node(&[("Ready", "True")], false, t);
        let (t, ne) = reconcile_taints(&back, now);
        assert_eq!(keys(&t.unwrap()), ["dedicated:NoExecute"]);
        assert_eq!(ne, NoExecute::Forget);
        assert_eq!(with_no_execute(&back, now), None);
        // Nothing to change keeps existing timeAdded (None means unchanged).
        let cordoned = node(&[("Ready", "True")], true, vec![]);
        let t = reconcile_taints(&cordoned, now).0.unwrap();
        assert_eq!(
            reconcile_taints(&node(&[("Ready", "True")], true, t), now),
            (None, NoExecute::Forget)
        );
    }
}
