//! The daemon set controller: one pod of `spec.template` on every eligible node.
//!
//! A DaemonSet runs node agents (log shippers, network plugins, kube-proxy itself): one pod per
//! node, added when a node joins, removed when it leaves. A node is *eligible* as the real
//! controller decides (`NodeShouldRunDaemonPod`): the pod's `nodeSelector` and required node
//! affinity must match it, and it must have no NoSchedule/NoExecute taint the pod does not
//! tolerate. A pod already running on a node that becomes tainted NoSchedule stays; a NoExecute
//! taint it does not tolerate (or a node that stops matching) removes it.
//!
//! The controller does not place pods itself. Each pod it creates (`generateName: <ds>-`) carries
//! a required node affinity `matchFields: metadata.name In [<node>]`, so the default scheduler
//! binds it to that node and nowhere else, and the standard DaemonSet tolerations (not-ready and
//! unreachable NoExecute; disk-, memory- and pid-pressure and unschedulable NoSchedule;
//! network-unavailable for host-network pods), so node trouble does not evict node agents.
//!
//! Each sync of a daemon set key: find or create the ControllerRevision of the current template
//! (see [`super::history`]; pods carry its hash in `controller-revision-hash`), claim the pods,
//! create the missing ones and delete those on ineligible or vanished nodes, extra pods on a
//! node, and failed pods (with a per-node back-off, event `FailedDaemonPod`). Then, for
//! `updateStrategy: RollingUpdate`, replace old pods: without `maxSurge` by deleting at most
//! `maxUnavailable` available old pods at a time (the next sync creates their successors);
//! with `maxSurge` by starting the new pod next to the old one and deleting the old one once the
//! new one is available. `OnDelete` replaces a pod only when someone deletes it. Last, the
//! status (`desiredNumberScheduled`, `currentNumberScheduled`, `numberMisscheduled`,
//! `numberReady`, `numberAvailable`, `numberUnavailable`, `updatedNumberScheduled`,
//! `observedGeneration`, `collisionCount`) that `kubectl rollout status ds/NAME` reads.
//!
//! Bound pods whose node object is gone are deleted here too (in Kubernetes the pod garbage
//! collector does that; minik has none yet).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use serde_json::json;

use super::Ctx;
use super::expectations::Expectations;
use super::history::{self, HASH_LABEL};
use super::informer::{Change, Queue};
use super::util::{self, Events};
use crate::scheduler::helpers::{node_selector_term_matches, tolerations_tolerate};

/// At most this many pods are created or deleted per sync (the real `BurstReplicas`).
const BURST_REPLICAS: usize = 250;
/// The label with the daemon set's template generation (set when the daemon set carries the
/// `deprecated.daemonset.template.generation` annotation).
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// Back-off before deleting another failed pod on the same node: 1 s doubling up to 15 min.
const FAILED_BACKOFF_START: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

pub struct DaemonSetController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    expectations: Expectations,
    events: Events,
    /// What of each node matters to eligibility (labels, taints, unschedulable), to wake the
    /// daemon sets only when that changes, not on every status update.
    nodes_seen: Mutex<HashMap<String, String>>,
    /// Failed-pod back-off per `ns/ds/node`: (last step, current delay).
    failed_backoff: Mutex<HashMap<String, (Instant, Duration)>>,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("daemonset");
    let c = Arc::new(DaemonSetController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: Events::new(ctx.client.clone(), "daemonset-controller"),
        nodes_seen: Mutex::new(HashMap::new()),
        failed_backoff: Mutex::new(HashMap::new()),
    });
    let q = queue.clone();
    ctx.inf
        .daemonsets
        .on_change(move |ds, _| q.add(util::key_of(&ds.metadata)));
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, _| {
        if let Some(c) = weak.upgrade() {
            let dss = c.ctx.inf.daemonsets.store().state();
            for key in util::owners_to_wake(&pod.metadata, "DaemonSet", &dss, |ds| {
                ds.spec.as_ref().map(|s| &s.selector)
            }) {
                c.queue.add(key);
            }
        }
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.nodes.on_change(move |node, change| {
        if let Some(c) = weak.upgrade() {
            c.node_changed(node, change);
        }
    });
    let q = queue.clone();
    ctx.inf.controllerrevisions.on_change(move |rev, _| {
        if let Some(r) = util::controller_ref(&rev.metadata)
            && r.kind == "DaemonSet"
        {
            q.add(format!(
                "{}/{}",
                rev.metadata.namespace.as_deref().unwrap_or(""),
                r.name
            ));
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// The standard tolerations every daemon pod gets (the real `AddOrUpdateDaemonPodTolerations`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // Same key and effect: replaced (the real `AddOrUpdateTolerationInPodSpec`).
        if let Some(old) = tolerations
            .iter_mut()
            .find(|o| o.key.as_deref() == Some(key) && o.effect.as_deref() == Some(effect))
        {
            *old = t;
        } else {
            tolerations.push(t);
        }
    }
}

/// The required node affinity pinning a daemon pod to `node` (the real
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: it replaces any required terms of the template).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    a
}

/// The node a daemon pod is for: its `nodeName`, or (not yet scheduled) the node its required
/// affinity pins it to (the real `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            match (r.key.as_str(), r.operator.as_str(), r.values.as_deref()) {
                ("metadata.name", "In", Some([v])) => Some(v.clone()),
                _ => None,
            }
        })
    })
}

/// Whether the daemon set should run a pod on `node`, and whether a pod already there may stay
/// (the real `NodeShouldRunDaemonPod`): the pod's nodeName (if set), nodeSelector and required
/// node affinity must match; an untolerated NoSchedule or NoExecute taint means no new pod, and
/// an untolerated NoExecute taint also evicts a running one.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let Some(template) = ds.spec.as_ref().map(|s| &s.template) else {
        return (false, false);
    };
    let mut spec = template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(n) = spec.node_name.as_deref()
        && !n.is_empty()
        && n != name
    {
        return (false, false);
    }
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return (false, false);
        }
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !req
            .node_selector_terms
            .iter()
            .any(|t| node_selector_term_matches(t, node))
    {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tolerations_tolerate(tolerations, t))
    };
    let no_execute = untolerated("NoExecute");
    if no_execute || untolerated("NoSchedule") {
        return (false, !no_execute);
    }
    (true, true)
}

/// Whether `pod` is of the current template: its `controller-revision-hash` is `hash`, or its
/// `pod-template-generation` is the daemon set's template generation (the real `IsPodUpdated`).
pub fn pod_is_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    (!hash.is_empty() && get(HASH_LABEL) == Some(hash))
        || generation.is_some_and(|g| get(TEMPLATE_GENERATION_LABEL) == Some(g))
}

/// Oldest first, then by phase (the real `podByCreationTimestampAndPhase`: among pods created
/// at the same second, Running before Pending).
fn sort_pods(pods: &mut [Arc<Pod>]) {
    let key = |p: &Arc<Pod>| {
        (
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0),
            u8::from(util::pod_phase(p) != "Running"),
            p.metadata.name.clone().unwrap_or_default(),
        )
    };
    pods.sort_by_key(key);
}

/// What should happen on one node (the real `podsShouldBeOnNode`), without the failed-pod
/// back-off: whether a pod must be created, which pods must go, and the failed ones among
/// them (for the `FailedDaemonPod` event and the back-off).
#[derive(Debug, Default, PartialEq)]
pub struct NodePlan {
    pub create: bool,
    pub delete: Vec<String>,
    pub failed: Vec<String>,
}

pub fn plan_node(
    should_run: bool,
    should_continue: bool,
    pods: &[Arc<Pod>],
    hash: &str,
    surge: bool,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> NodePlan {
    let mut plan = NodePlan::default();
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    if should_run && pods.is_empty() {
        plan.create = true;
        return plan;
    }
    if !should_continue {
        plan.delete = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| name(p))
            .collect();
        return plan;
    }
    let mut running: Vec<Arc<Pod>> = Vec::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match util::pod_phase(p) {
            "Failed" => {
                plan.failed.push(name(p));
                plan.delete.push(name(p));
            }
            "Succeeded" => plan.delete.push(name(p)),
            _ => running.push(p.clone()),
        }
    }
    if should_run && running.is_empty() {
        plan.create = true;
        return plan;
    }
    if running.len() <= 1 {
        return plan;
    }
    sort_pods(&mut running);
    if !surge {
        plan.delete.extend(running[1..].iter().map(|p| name(p)));
        return plan;
    }
    // With surge, two pods may share a node: the oldest new one and, until the new one is
    // available, the oldest old one (deleted at once when it is not ready).
    let (mut oldest_new, mut oldest_old): (Option<&Arc<Pod>>, Option<&Arc<Pod>>) = (None, None);
    for p in &running {
        let is_new = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .map(String::as_str)
            == Some(hash);
        if is_new && oldest_new.is_none() {
            oldest_new = Some(p);
        } else if !is_new && oldest_old.is_none() {
            oldest_old = Some(p);
        } else {
            plan.delete.push(name(p));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
        && (!util::pod_is_ready(old) || util::pod_is_available(new, min_ready_seconds, now))
    {
        plan.delete.push(name(old));
    }
    plan
}

/// The rolling update's choice (the real `rollingUpdate`): old pods to delete and nodes to
/// surge onto, given each eligible node's pods (`nodes` maps every node that should run a pod
/// to its pods, possibly none).
pub fn plan_rolling_update(
    nodes: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    generation: Option<&str>,
    max_surge: i32,
    max_unavailable: i32,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> (Vec<String>, Vec<String>) {
    let available = |p: &Pod| util::pod_is_available(p, min_ready_seconds, now);
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    // The new and the old pod on a node; None when there are two of a kind (manage cleans up).
    let split = |pods: &[Arc<Pod>]| {
        let (mut new, mut old) = (None, None);
        for p in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let slot = if pod_is_updated(p, hash, generation) {
                &mut new
            } else {
                &mut old
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(p.clone());
        }
        Some((new, old))
    };
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut allowed: Vec<String> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        for pods in nodes.values() {
            let Some((new, old)) = split(pods) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(&old) {
                        allowed.push(name(&old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name(&old));
                    }
                }
            }
        }
        let remaining = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        allowed.extend(candidates.into_iter().take(remaining));
        return (allowed, Vec::new());
    }
    let mut surged = 0;
    let mut allowed_nodes: Vec<String> = Vec::new();
    let mut candidate_nodes: Vec<String> = Vec::new();
    let mut old_to_delete: Vec<String> = Vec::new();
    for (node, pods) in nodes {
        let Some((new, old)) = split(pods) else {
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(&old) {
                    allowed_nodes.push(node.clone());
                } else if surged < max_surge {
                    candidate_nodes.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if !available(&new) {
                    surged += 1;
                } else {
                    old_to_delete.push(name(&old));
                }
            }
        }
    }
    let remaining = (max_surge - surged).clamp(0, candidate_nodes.len() as i32) as usize;
    allowed_nodes.extend(candidate_nodes.into_iter().take(remaining));
    (old_to_delete, allowed_nodes)
}

impl DaemonSetController {
    fn node_changed(&self, node: &Node, change: Change) {
        let name = node.name_any();
        let mut seen = self.nodes_seen.lock();
        let changed = match change {
            Change::Deleted => seen.remove(&name).is_some(),
            Change::Applied => {
                let spec = node.spec.as_ref();
                let print = json!([
                    node.metadata.labels,
                    spec.and_then(|s| s.taints.as_ref()),
                    spec.and_then(|s| s.unschedulable),
                ])
                .to_string();
                seen.insert(name, print.clone()).as_ref() != Some(&print)
            }
        };
        drop(seen);
        if changed {
            for ds in self.ctx.inf.daemonsets.store().state() {
                self.queue.add(util::key_of(&ds.metadata));
            }
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(ds) = self
            .ctx
            .inf
            .daemonsets
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(());
        };
        if util::selector_is_empty(&spec.selector) {
            self.events.warning(
                util::object_ref(ds.as_ref()),
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(());
        }
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let nodes: Vec<Arc<Node>> = self.ctx.inf.nodes.store().state();
        let mut collision_count = ds
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let (cur, old) = self.construct_history(&ds, &mut collision_count).await?;
        let hash = cur
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .cloned()
            .unwrap_or_default();
        let pods = history::claim_pods(&self.ctx, ds.as_ref(), &spec.selector, |_| true).await?;

        let satisfied = self
            .expectations
            .satisfied(key, ns, self.ctx.inf.pods.store());
        if satisfied {
            let acted = self.manage(key, &ds, &nodes, &pods, &hash).await?;
            let rolling = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                .unwrap_or("RollingUpdate")
                == "RollingUpdate";
            if !acted && rolling {
                self.rolling_update(key, &ds, &nodes, &pods, &hash).await?;
            }
            let live: HashSet<String> = pods
                .iter()
                .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
                .collect();
            let live_revs: HashSet<String> = old
                .iter()
                .filter(|r| {
                    r.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(HASH_LABEL))
                        .is_some_and(|h| live.contains(h))
                })
                .map(|r| r.name_any())
                .collect();
            history::truncate(
                &self.ctx.client,
                &old,
                &live_revs,
                spec.revision_history_limit.unwrap_or(10),
            )
            .await?;
        }
        self.update_status(&ds, &nodes, &pods, &hash, collision_count, satisfied)
            .await
    }

    /// The current revision (found or created, renumbered to be the newest) and the old ones.
    async fn construct_history(
        &self,
        ds: &DaemonSet,
        collision_count: &mut i32,
    ) -> anyhow::Result<(ControllerRevision, Vec<Arc<ControllerRevision>>)> {
        let ns = ds.namespace().unwrap_or_default();
        let template = ds.spec.as_ref().map(|s| &s.template);
        let patch = history::template_patch(template);
        let all = history::owned(&self.ctx, &ns, &ds.uid().unwrap_or_default());
        let (mut current, old): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|r| history::holds(r, &patch));
        let next = history::max_revision(&old) + 1;
        // Duplicates of the current template: keep the newest.
        current.sort_by_key(|r| r.revision);
        let cur = match current.pop() {
            Some(cur) => {
                for dup in current {
                    let api: Api<ControllerRevision> =
                        Api::namespaced(self.ctx.client.clone(), &ns);
                    let _ = api.delete(&dup.name_any(), &DeleteParams::default()).await;
                }
                if cur.revision < next {
                    history::set_revision(&self.ctx.client, &cur, next).await?
                } else {
                    (*cur).clone()
                }
            }
            None => {
                let tjson = serde_json::to_value(template).unwrap_or_default();
                let labels = template
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                history::create(
                    &self.ctx.client,
                    history::NewRevision {
                        namespace: &ns,
                        owner_name: &ds.name_any(),
                        owner_ref: util::new_controller_ref(ds),
                        labels,
                        annotations: ds.metadata.annotations.clone(),
                        data: patch,
                        revision: next,
                    },
                    collision_count,
                    |c| util::compute_hash(&tjson, Some(c).filter(|c| *c != 0)),
                )
                .await?
            }
        };
        Ok((cur, old))
    }

    /// Pods of this daemon set by the node they are for; pods for no node are left out.
    fn by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut m: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            if let Some(n) = target_node(p) {
                m.entry(n).or_default().push(p.clone());
            }
        }
        m
    }

    /// Creates the missing pods and deletes the ones that must go; true when it did anything.
    async fn manage(
        &self,
        key: &str,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        hash: &str,
    ) -> anyhow::Result<bool> {
        let spec = ds.spec.as_ref();
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let surge = self.max_surge_unavailable(ds, 1).0 > 0;
        let by_node = Self::by_node(pods);
        let now = util::now();
        let mut create_on = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        let no_pods = Vec::new();
        for node in nodes {
            let node_name = node.name_any();
            let (should_run, should_continue) = node_should_run(node, ds);
            let here = by_node.get(&node_name).unwrap_or(&no_pods);
            let plan = plan_node(
                should_run,
                should_continue,
                here,
                hash,
                surge,
                min_ready,
                now,
            );
            if plan.create {
                create_on.push(node_name.clone());
            }
            for pname in plan.delete {
                if plan.failed.contains(&pname) {
                    let bkey = format!("{key}/{node_name}");
                    if let Some(wait) = self.in_backoff(&bkey) {
                        self.queue.add_after(key.to_string(), wait);
                        continue;
                    }
                    self.events.warning(
                        util::object_ref(ds),
                        "FailedDaemonPod",
                        format!(
                            "Found failed daemon pod {}/{pname} on node {node_name}, will try to kill it",
                            ds.namespace().unwrap_or_default()
                        ),
                    );
                }
                delete.push(pname);
            }
        }
        // Unscheduled pods meant for nodes that no longer exist: no scheduler will place them
        // (their affinity names the node) and the pod garbage collector only collects pods
        // bound to deleted nodes, so they go here, as the real controller's
        // getUnscheduledPodsWithoutNode. Bound pods of deleted nodes are the pod GC's.
        let existing: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let mut forced = false;
        for (node, here) in &by_node {
            if existing.contains(node) {
                continue;
            }
            for pod in here {
                let bound = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty());
                if bound {
                    continue;
                }
                forced = true;
                self.force_delete(key, ds, pod).await?;
            }
        }
        let acted = forced || !create_on.is_empty() || !delete.is_empty();
        self.sync_nodes(key, ds, pods, &delete, &create_on, hash)
            .await?;
        Ok(acted)
    }

    async fn force_delete(&self, key: &str, ds: &DaemonSet, pod: &Pod) -> anyhow::Result<()> {
        let pname = pod.name_any();
        let api: Api<Pod> =
            Api::namespaced(self.ctx.client.clone(), &ds.namespace().unwrap_or_default());
        self.expectations
            .deleted(key, pod.uid().unwrap_or_default());
        match api
            .delete(&pname, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {
                self.events.normal(
                    util::object_ref(ds),
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                );
                Ok(())
            }
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => {
                self.expectations.forget(key);
                Err(e.into())
            }
        }
    }

    /// The failed-pod back-off for `bkey`: Some(remaining wait) while in back-off; otherwise
    /// takes the next step (1 s, doubling up to 15 min) and returns None.
    fn in_backoff(&self, bkey: &str) -> Option<Duration> {
        let mut m = self.failed_backoff.lock();
        let now = Instant::now();
        if let Some((at, delay)) = m.get(bkey)
            && now.duration_since(*at) < *delay
        {
            return Some(*delay - now.duration_since(*at));
        }
        let next = match m.get(bkey) {
            Some((at, d)) if now.duration_since(*at) < 2 * FAILED_BACKOFF_MAX => {
                (*d * 2).min(FAILED_BACKOFF_MAX)
            }
            _ => FAILED_BACKOFF_START,
        };
        m.insert(bkey.to_string(), (now, next));
        None
    }

    /// (maxSurge, maxUnavailable) resolved against `desired` (the real `SurgeCount` and
    /// `UnavailableCount`; both 0 means maxUnavailable 1).
    fn max_surge_unavailable(&self, ds: &DaemonSet, desired: i32) -> (i32, i32) {
        let us = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        let ru = us
            .filter(|u| u.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate")
            .and_then(|u| u.rolling_update.as_ref());
        let Some(ru) = ru else {
            return (0, 0);
        };
        let surge = match &ru.max_surge {
            Some(v) => util::scaled_value(Some(v), desired, true, "0"),
            None => 0,
        };
        let unavailable = match &ru.max_unavailable {
            Some(v) => util::scaled_value(Some(v), desired, true, "1"),
            None => 0,
        };
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    async fn rolling_update(
        &self,
        key: &str,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        hash: &str,
    ) -> anyhow::Result<()> {
        let mut by_node = Self::by_node(pods);
        let mut desired = 0;
        for node in nodes {
            if node_should_run(node, ds).0 {
                desired += 1;
                by_node.entry(node.name_any()).or_default();
            }
        }
        let (max_surge, max_unavailable) = self.max_surge_unavailable(ds, desired);
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let generation = template_generation(ds);
        let now = util::now();
        let (delete, create_on) = plan_rolling_update(
            &by_node,
            hash,
            generation.as_deref(),
            max_surge,
            max_unavailable,
            min_ready,
            now,
        );
        // Pods that are ready but not yet available count as unavailable: look again when
        // they become available.
        if min_ready > 0
            && let Some(d) = pods
                .iter()
                .filter_map(|p| util::available_in(p, min_ready, now))
                .min()
        {
            self.queue.add_after(key.to_string(), d);
        }
        self.sync_nodes(key, ds, pods, &delete, &create_on, hash)
            .await
    }

    /// Creates a pod for each node of `create_on` and deletes the pods named in `delete`.
    async fn sync_nodes(
        &self,
        key: &str,
        ds: &DaemonSet,
        pods: &[Arc<Pod>],
        delete: &[String],
        create_on: &[String],
        hash: &str,
    ) -> anyhow::Result<()> {
        let ns = ds.namespace().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let create_on = &create_on[..create_on.len().min(BURST_REPLICAS)];
        let delete = &delete[..delete.len().min(BURST_REPLICAS)];
        let template = self.pod_template(ds, hash);
        let mut first_err: Option<anyhow::Error> = None;
        // Slow start: 1, 2, 4, … creations at a time, stopping at the first error.
        let mut done = 0usize;
        let mut batch = 1usize;
        while done < create_on.len() {
            let size = batch.min(create_on.len() - done);
            let pp = PostParams::default();
            let calls: Vec<_> = create_on[done..done + size]
                .iter()
                .map(|node| {
                    let mut pod = template.clone();
                    if let Some(s) = pod.spec.as_mut() {
                        s.affinity = Some(pin_to_node(s.affinity.take(), node));
                    }
                    let api = pods_api.clone();
                    let pp = pp.clone();
                    async move { api.create(&pp, &pod).await }
                })
                .collect();
            for r in futures_util::future::join_all(calls).await {
                match r {
                    Ok(p) => {
                        let pname = p.name_any();
                        self.expectations.created(key, pname.clone());
                        self.events.normal(
                            util::object_ref(ds),
                            "SuccessfulCreate",
                            format!("Created pod: {pname}"),
                        );
                    }
                    Err(e) => {
                        self.events.warning(
                            util::object_ref(ds),
                            "FailedCreate",
                            format!("Error creating: {}", util::error_message(&e)),
                        );
                        first_err.get_or_insert(e.into());
                    }
                }
            }
            if first_err.is_some() {
                break;
            }
            done += size;
            batch *= 2;
        }
        for pname in delete {
            let Some(pod) = pods
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(pname))
            else {
                continue;
            };
            self.expectations
                .deleted(key, pod.uid().unwrap_or_default());
            match pods_api.delete(pname, &DeleteParams::default()).await {
                Ok(_) => self.events.normal(
                    util::object_ref(ds),
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                ),
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => {
                    self.expectations.forget(key);
                    self.events.warning(
                        util::object_ref(ds),
                        "FailedDelete",
                        format!("Error deleting: {}", util::error_message(&e)),
                    );
                    first_err.get_or_insert(e.into());
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A new daemon pod, not yet pinned to a node: the template's labels (plus
    /// `controller-revision-hash`), annotations and spec with the daemon tolerations, and the
    /// daemon set as controller (the real `CreatePodTemplate` + `CreatePods`).
    fn pod_template(&self, ds: &DaemonSet, hash: &str) -> Pod {
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let tmeta = template.metadata.unwrap_or_default();
        let mut spec = template.spec.unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        let mut labels = tmeta.labels.unwrap_or_default();
        if let Some(g) = template_generation(ds) {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g);
        }
        if !hash.is_empty() {
            labels.insert(HASH_LABEL.into(), hash.into());
        }
        let mut pod = Pod {
            metadata: Default::default(),
            spec: Some(spec),
            status: None,
        };
        pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
        pod.metadata.namespace = ds.namespace();
        pod.metadata.labels = Some(labels);
        pod.metadata.annotations = tmeta.annotations;
        pod.metadata.finalizers = tmeta.finalizers;
        pod.metadata.owner_references = Some(vec![util::new_controller_ref(ds)]);
        pod
    }

    async fn update_status(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        hash: &str,
        collision_count: i32,
        update_generation: bool,
    ) -> anyhow::Result<()> {
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let now = util::now();
        let generation = template_generation(ds);
        // Terminal pods being deleted do not count.
        let counted: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                !(matches!(util::pod_phase(p), "Succeeded" | "Failed")
                    && p.metadata.deletion_timestamp.is_some())
            })
            .cloned()
            .collect();
        let by_node = Self::by_node(&counted);
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        let mut wake: Option<Duration> = None;
        for node in nodes {
            let (should_run, _) = node_should_run(node, ds);
            let here = by_node.get(&node.name_any());
            let scheduled = here.is_some_and(|v| !v.is_empty());
            if !should_run {
                if scheduled {
                    misscheduled += 1;
                }
                continue;
            }
            desired += 1;
            let Some(here) = here.filter(|v| !v.is_empty()) else {
                continue;
            };
            current += 1;
            let mut here = here.clone();
            sort_pods(&mut here);
            let pod = &here[0];
            if util::pod_is_ready(pod) {
                ready += 1;
                if util::pod_is_available(pod, min_ready, now) {
                    available += 1;
                } else if let Some(d) = util::available_in(pod, min_ready, now) {
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                }
            }
            if pod_is_updated(pod, hash, generation.as_deref()) {
                updated += 1;
            }
        }
        if let Some(d) = wake {
            self.queue.add_after(util::key_of(&ds.metadata), d);
        }
        let old = ds.status.clone().unwrap_or_default();
        let observed = if update_generation {
            ds.metadata.generation
        } else {
            old.observed_generation
        };
        let unavailable = desired - available;
        let collision =
            (collision_count != 0 || old.collision_count.is_some()).then_some(collision_count);
        if old.desired_number_scheduled == desired
            && old.current_number_scheduled == current
            && old.number_misscheduled == misscheduled
            && old.number_ready == ready
            && old.number_available.unwrap_or(0) == available
            && old.number_unavailable.unwrap_or(0) == unavailable
            && old.updated_number_scheduled.unwrap_or(0) == updated
            && old.observed_generation == observed
            && old.collision_count == collision
        {
            return Ok(());
        }
        let api: Api<DaemonSet> =
            Api::namespaced(self.ctx.client.clone(), &ds.namespace().unwrap_or_default());
        let patch = json!({"status": {
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "numberUnavailable": unavailable,
            "updatedNumberScheduled": updated,
            "observedGeneration": observed,
            "collisionCount": collision,
        }});
        match api
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ds(template_spec: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "u1"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": template_spec},
            }
        }))
        .unwrap()
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap()
    }

    fn pod(name: &str, hash: &str, created: i64, ready: bool, phase: &str) -> Arc<Pod> {
        let ts = jiff::Timestamp::from_second(created).unwrap().to_string();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {HASH_LABEL: hash}, "creationTimestamp": ts},
                "status": {"phase": phase, "conditions": [
                    {"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": ts}
                ]},
            }))
            .unwrap(),
        )
    }

    fn containers() -> Value {
        json!([{"name": "c", "image": "busybox"}])
    }

    #[test]
    fn eligibility_follows_selector_affinity_and_taints() {
        let plain = ds(json!({"containers": containers()}));
        let n = node("a", json!({"disk": "ssd"}), json!([]));
        assert_eq!(node_should_run(&n, &plain), (true, true));

        let sel = ds(json!({"containers": containers(), "nodeSelector": {"disk": "hdd"}}));
        assert_eq!(node_should_run(&n, &sel), (false, false));

        let aff = ds(
            json!({"containers": containers(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
            ]}}}}),
        );
        assert_eq!(node_should_run(&n, &aff), (true, true));
        let other = node("b", json!({"disk": "hdd"}), json!([]));
        assert_eq!(node_should_run(&other, &aff), (false, false));

        // NoSchedule: no new pod, but a running one stays; NoExecute: it goes too.
        let no_sched = node(
            "c",
            json!({}),
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        );
        assert_eq!(node_should_run(&no_sched, &plain), (false, true));
        let no_exec = node("d", json!({}), json!([{"key": "k", "effect": "NoExecute"}]));
        assert_eq!(node_should_run(&no_exec, &plain), (false, false));
        // PreferNoSchedule does not matter.
        let soft = node(
            "e",
            json!({}),
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
        );
        assert_eq!(node_should_run(&soft, &plain), (true, true));
        // A toleration lets it in.
        let tol = ds(json!({"containers": containers(),
            "tolerations": [{"key": "k", "operator": "Exists"}]}));
        assert_eq!(node_should_run(&no_sched, &tol), (true, true));
        assert_eq!(node_should_run(&no_exec, &tol), (true, true));

        // The standard daemon tolerations: unschedulable and not-ready nodes still run it;
        // network-unavailable only for host-network pods.
        let unsched = node(
            "f",
            json!({}),
            json!([
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(node_should_run(&unsched, &plain), (true, true));
        let net = node(
            "g",
            json!({}),
            json!([
            {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
        );
        assert_eq!(node_should_run(&net, &plain), (false, true));
        let host = ds(json!({"containers": containers(), "hostNetwork": true}));
        assert_eq!(node_should_run(&net, &host), (true, true));

        // A template nodeName pins it to that node.
        let named = ds(json!({"containers": containers(), "nodeName": "b"}));
        assert_eq!(node_should_run(&n, &named), (false, false));
    }

    #[test]
    fn daemon_tolerations_are_added_once() {
        let mut spec = PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("node.kubernetes.io/unschedulable".into()),
                operator: Some("Equal".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        add_daemon_tolerations(&mut spec);
        add_daemon_tolerations(&mut spec);
        let t = spec.tolerations.unwrap();
        assert_eq!(t.len(), 6);
        assert!(t.iter().all(|t| t.operator.as_deref() == Some("Exists")));
    }

    #[test]
    fn pods_are_pinned_by_match_fields() {
        let a = pin_to_node(None, "n1");
        let mut p = Pod {
            spec: Some(PodSpec {
                affinity: Some(a),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node(&p).as_deref(), Some("n1"));
        p.spec.as_mut().unwrap().node_name = Some("n2".into());
        assert_eq!(target_node(&p).as_deref(), Some("n2"));
    }

    #[test]
    fn node_plans() {
        let now = jiff::Timestamp::from_second(1000).unwrap();
        // Missing pod: create.
        assert!(plan_node(true, true, &[], "h", false, 0, now).create);
        // Not allowed: every pod goes.
        let p = pod("a", "h", 10, true, "Running");
        assert_eq!(
            plan_node(false, false, std::slice::from_ref(&p), "h", false, 0, now).delete,
            vec!["a"]
        );
        // NoSchedule taint: the pod stays.
        assert_eq!(
            plan_node(false, true, std::slice::from_ref(&p), "h", false, 0, now),
            NodePlan::default()
        );
        // Two pods without surge: the newer goes.
        let q = pod("b", "h", 20, true, "Running");
        assert_eq!(
            plan_node(true, true, &[q.clone(), p.clone()], "h", false, 0, now).delete,
            vec!["b"]
        );
        // A failed pod is deleted and a new one created.
        let f = pod("f", "h", 10, false, "Failed");
        let plan = plan_node(true, true, &[f], "h", false, 0, now);
        assert!(plan.create);
        assert_eq!(plan.failed, vec!["f"]);
        // Surge: the old pod stays until the new one is available.
        let old = pod("old", "x", 10, true, "Running");
        let new_unready = pod("new", "h", 20, false, "Running");
        assert!(
            plan_node(true, true, &[old.clone(), new_unready], "h", true, 0, now)
                .delete
                .is_empty()
        );
        let new_ready = pod("new", "h", 20, true, "Running");
        assert_eq!(
            plan_node(true, true, &[old, new_ready], "h", true, 0, now).delete,
            vec!["old"]
        );
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let now = jiff::Timestamp::from_second(1000).unwrap();
        let mut nodes = BTreeMap::new();
        for i in 0..4 {
            nodes.insert(
                format!("n{i}"),
                vec![pod(&format!("p{i}"), "old", 10, true, "Running")],
            );
        }
        let (del, create) = plan_rolling_update(&nodes, "new", None, 0, 1, 0, now);
        assert_eq!(del.len(), 1);
        assert!(create.is_empty());
        let (del, _) = plan_rolling_update(&nodes, "new", None, 0, 2, 0, now);
        assert_eq!(del.len(), 2);
        // One node is already replaced but its new pod is not ready: nothing more may go.
        nodes.insert("n0".into(), vec![pod("q0", "new", 20, false, "Running")]);
        let (del, _) = plan_rolling_update(&nodes, "new", None, 0, 1, 0, now);
        assert!(del.is_empty());
        // Unavailable old pods may always be replaced.
        nodes.insert("n1".into(), vec![pod("p1", "old", 10, false, "Running")]);
        let (del, _) = plan_rolling_update(&nodes, "new", None, 0, 1, 0, now);
        assert_eq!(del, vec!["p1"]);
        // Surge: create next to old pods, at most maxSurge at a time.
        let mut nodes = BTreeMap::new();
        for i in 0..3 {
            nodes.insert(
                format!("n{i}"),
                vec![pod(&format!("p{i}"), "old", 10, true, "Running")],
            );
        }
        let (del, create) = plan_rolling_update(&nodes, "new", None, 1, 0, 0, now);
        assert!(del.is_empty());
        assert_eq!(create, vec!["n0"]);
        nodes
            .get_mut("n0")
            .unwrap()
            .push(pod("q0", "new", 20, true, "Running"));
        let (del, create) = plan_rolling_update(&nodes, "new", None, 1, 0, 0, now);
        assert_eq!(del, vec!["p0"]);
        assert_eq!(create, vec!["n1"]);
    }
}
