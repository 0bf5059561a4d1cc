//! The scheduling framework: per-node bookkeeping (`NodeInfo`), the cluster
//! `Snapshot` one attempt looks at, the plugin traits, and `Framework::schedule`
//! which runs every Filter plugin on every node, then scores the feasible nodes
//! with the weighted Score plugins and picks the best one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use super::explain::{Explanation, FilterVerdict, NodeExplanation, PluginScore};
use super::helpers::{Labels, NO_LABELS};
use crate::component_base::quantity;

/// Highest score a plugin may give a node after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
/// Request assumed for scoring when a container requests no cpu (millicores).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Request assumed for scoring when a container requests no memory (bytes).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

/// Amounts of resources: cpu in millicores, memory and ephemeral storage in
/// bytes, "scalar" resources (extended resources such as `nvidia.com/gpu`,
/// `hugepages-*`, `attachable-volumes-*`) in whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub scalar: BTreeMap<String, i64>,
}

/// Extended resources (`example.com/foo`, not in the `kubernetes.io/` domain),
/// hugepages and attachable volumes are accounted by name; other unknown names
/// are ignored, as in Kubernetes.
pub fn is_scalar_resource(name: &str) -> bool {
    if name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") {
        return true;
    }
    match name.split_once('/') {
        Some((domain, _)) => {
            let native = domain == "kubernetes.io" || domain.ends_with(".kubernetes.io");
            !native && !name.starts_with("requests.")
        }
        None => false,
    }
}

impl Resources {
    /// Reads a resource list. Malformed quantities count as zero (the API server
    /// validates them, so this only happens with hand-made objects).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::parse_milli(q).unwrap_or(0),
            "memory" => self.memory = quantity::parse_value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = quantity::parse_value(q).unwrap_or(0),
            n if is_scalar_resource(n) => {
                self.scalar
                    .insert(n.to_string(), quantity::parse_value(q).unwrap_or(0));
            }
            _ => {}
        }
    }

    /// The amount of a resource by its Kubernetes name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            n => self.scalar.get(n).copied().unwrap_or(0),
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_sub(*v);
        }
    }

    fn set_max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut r = Resources::from_list(list);
    if non_zero {
        // Only an *unset* request gets the default; an explicit 0 stays 0.
        if !list.is_some_and(|l| l.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !list.is_some_and(|l| l.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// Effective requests of a pod, as `resourcehelper.PodRequests` computes them:
/// max(sum of app containers + sidecars, every init container + the sidecars
/// started before it), pod-level `spec.resources` requests (cpu/memory) when set,
/// plus `spec.overhead`. With `non_zero`, containers that request no cpu/memory
/// count as 100m / 200Mi (used for scoring and `NodeInfo::non_zero_requested`).
pub fn pod_requests(spec: &PodSpec, non_zero: bool) -> Resources {
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            init_max.set_max(&sidecars);
        } else {
            let mut tmp = r;
            tmp.add(&sidecars);
            init_max.set_max(&tmp);
        }
    }
    reqs.set_max(&init_max);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        if let Some(q) = pod_level.get("cpu") {
            reqs.milli_cpu = quantity::parse_milli(&q.0).unwrap_or(0);
        }
        if let Some(q) = pod_level.get("memory") {
            reqs.memory = quantity::parse_value(&q.0).unwrap_or(0);
        }
    }
    reqs.add(&Resources::from_list(spec.overhead.as_ref()));
    reqs
}

// ---------------------------------------------------------------------------
// PodInfo / NodeInfo / Snapshot
// ---------------------------------------------------------------------------

/// A pod plus what the scheduler derives from it once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Shared with the scheduler's cache: a snapshot holds pointers, not copies.
    pub pod: Arc<Pod>,
    /// Effective requests (see [`pod_requests`]).
    pub requests: Resources,
    /// Requests with the 100m / 200Mi defaults for scoring (cpu and memory only).
    pub non_zero_requests: Resources,
}

static EMPTY_SPEC_TOLERATIONS: [Toleration; 0] = [];

impl PodInfo {
    pub fn new(pod: impl Into<Arc<Pod>>) -> PodInfo {
        let pod: Arc<Pod> = pod.into();
        let (requests, non_zero_requests) = match pod.spec.as_ref() {
            Some(spec) => (pod_requests(spec, false), pod_requests(spec, true)),
            None => (Resources::default(), Resources::default()),
        };
        PodInfo {
            pod,
            requests,
            non_zero_requests,
        }
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    pub fn labels(&self) -> &Labels {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// `spec.priority` (set by the Priority admission plugin), 0 when unset.
    pub fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }

    pub fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&EMPTY_SPEC_TOLERATIONS)
    }

    pub fn start_time(&self) -> Option<&Time> {
        self.pod.status.as_ref().and_then(|s| s.start_time.as_ref())
    }

    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// A host port in use: (host IP, protocol, port). Empty IP means 0.0.0.0,
/// empty protocol TCP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    pub fn new(ip: Option<&str>, protocol: Option<&str>, port: i32) -> HostPort {
        let ip = ip.filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
        let protocol = protocol.filter(|s| !s.is_empty()).unwrap_or("TCP");
        HostPort {
            ip: ip.to_string(),
            protocol: protocol.to_string(),
            port,
        }
    }

    /// Host ports a pod asks for (containers and init containers with hostPort > 0).
    pub fn of_pod(pod: &Pod) -> Vec<HostPort> {
        let Some(spec) = pod.spec.as_ref() else {
            return Vec::new();
        };
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let hp = p.host_port.unwrap_or(0);
                (hp > 0).then(|| HostPort::new(p.host_ip.as_deref(), p.protocol.as_deref(), hp))
            })
            .collect()
    }
}

/// A node with the pods assigned to it and the resources they request.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Vec<Arc<PodInfo>>,
    /// `status.allocatable` (falls back to `status.capacity` when absent).
    pub allocatable: Resources,
    /// Allocatable `pods` count.
    pub allowed_pod_number: i64,
    /// Sum of the pods' effective requests.
    pub requested: Resources,
    /// Sum with the scoring defaults (cpu and memory only).
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
}

static EMPTY_TAINTS: [Taint; 0] = [];

impl NodeInfo {
    pub fn new(node: impl Into<Arc<Node>>) -> NodeInfo {
        let node: Arc<Node> = node.into();
        let status = node.status.as_ref();
        let list = status
            .and_then(|s| s.allocatable.as_ref())
            .or_else(|| status.and_then(|s| s.capacity.as_ref()));
        let allocatable = Resources::from_list(list);
        let allowed_pod_number = list
            .and_then(|l| l.get("pods"))
            .and_then(|q| quantity::parse_value(&q.0))
            .unwrap_or(0);
        NodeInfo {
            node,
            pods: Vec::new(),
            allocatable,
            allowed_pod_number,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: Vec::new(),
        }
    }

    pub fn add_pod(&mut self, pod: impl Into<Arc<PodInfo>>) {
        let pod: Arc<PodInfo> = pod.into();
        self.requested.add(&pod.requests);
        self.non_zero_requested.milli_cpu =
            (self.non_zero_requested.milli_cpu).saturating_add(pod.non_zero_requests.milli_cpu);
        self.non_zero_requested.memory =
            (self.non_zero_requested.memory).saturating_add(pod.non_zero_requests.memory);
        self.used_ports.extend(HostPort::of_pod(&pod.pod));
        self.pods.push(pod);
    }

    /// Removes the pod with this `namespace/name` key; returns it if found.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let idx = self
            .pods
            .iter()
            .position(|p| p.name() == name && p.namespace() == ns)?;
        let pod = self.pods.remove(idx);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.milli_cpu =
            (self.non_zero_requested.milli_cpu).saturating_sub(pod.non_zero_requests.milli_cpu);
        self.non_zero_requested.memory =
            (self.non_zero_requested.memory).saturating_sub(pod.non_zero_requests.memory);
        for hp in HostPort::of_pod(&pod.pod) {
            if let Some(i) = self.used_ports.iter().position(|u| *u == hp) {
                self.used_ports.remove(i);
            }
        }
        Some(pod)
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub fn labels(&self) -> &Labels {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    pub fn taints(&self) -> &[Taint] {
        self.node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&EMPTY_TAINTS)
    }
}

/// Whether a pod has terms that InterPodAffinity's Score counts for other pods: required or
/// preferred pod affinity, or preferred pod anti-affinity.
pub fn has_scored_affinity(pod: &Pod) -> bool {
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let pa = a.pod_affinity.as_ref();
    let paa = a.pod_anti_affinity.as_ref();
    pa.and_then(|p| {
        p.required_during_scheduling_ignored_during_execution
            .as_ref()
    })
    .is_some_and(|v| !v.is_empty())
        || pa
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|v| !v.is_empty())
        || paa
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|v| !v.is_empty())
}

/// Whether a pod has required (hard) pod anti-affinity terms.
pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty())
}

/// The state of the cluster one scheduling attempt works on.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes sorted by name.
    pub nodes: Vec<NodeInfo>,
    /// Whether any pod in the snapshot has required pod anti-affinity terms (when none does,
    /// InterPodAffinity need not look at existing pods for a pod without affinity terms, as
    /// the real plugin's PreFilter finds).
    pub any_required_anti_affinity: bool,
    /// Whether any pod in the snapshot has affinity terms InterPodAffinity scores by (required
    /// affinity, preferred affinity or preferred anti-affinity): without any, and with none on
    /// the incoming pod, the plugin has nothing to score (its PreScore Skip).
    pub any_scored_affinity: bool,
    /// Namespace labels, used by pod affinity terms with a namespaceSelector.
    pub namespace_labels: BTreeMap<String, Labels>,
}

impl Snapshot {
    /// Builds a snapshot. A pod counts on a node when its `spec.nodeName` names
    /// a node of the list and its phase is neither Succeeded nor Failed.
    pub fn new(nodes: &[Node], pods: &[Pod]) -> Snapshot {
        Snapshot::from_shared(
            nodes.iter().cloned().map(Arc::new),
            pods.iter().map(|p| Arc::new(PodInfo::new(p.clone()))),
        )
    }

    /// Builds a snapshot from shared nodes and pod infos (the scheduler's cache): nothing is
    /// copied but pointers. Pods whose phase is Succeeded or Failed, or whose node is not in
    /// the list, don't count.
    pub fn from_shared(
        nodes: impl IntoIterator<Item = Arc<Node>>,
        pods: impl IntoIterator<Item = Arc<PodInfo>>,
    ) -> Snapshot {
        let mut infos: Vec<NodeInfo> = nodes.into_iter().map(NodeInfo::new).collect();
        infos.sort_by(|a, b| a.name().cmp(b.name()));
        Snapshot::from_node_infos(infos, pods)
    }

    /// Like [`Snapshot::from_shared`], from NodeInfos without pods (sorted by name).
    pub fn from_node_infos(
        mut infos: Vec<NodeInfo>,
        pods: impl IntoIterator<Item = Arc<PodInfo>>,
    ) -> Snapshot {
        infos.dedup_by(|a, b| a.name() == b.name());
        for pi in pods {
            let phase = pi.pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            let Some(node) = pi.node_name() else {
                continue;
            };
            if let Ok(i) = infos.binary_search_by(|n| n.name().cmp(node)) {
                infos[i].add_pod(pi);
            }
        }
        let any_required_anti_affinity = infos
            .iter()
            .flat_map(|n| n.pods.iter())
            .any(|p| has_required_anti_affinity(&p.pod));
        let any_scored_affinity = infos
            .iter()
            .flat_map(|n| n.pods.iter())
            .any(|p| has_scored_affinity(&p.pod));
        Snapshot {
            nodes: infos,
            any_required_anti_affinity,
            any_scored_affinity,
            namespace_labels: BTreeMap::new(),
        }
    }

    /// Adds namespace labels (`name -> labels`) for namespaceSelector matching.
    pub fn with_namespace_labels(mut self, labels: BTreeMap<String, Labels>) -> Snapshot {
        self.namespace_labels = labels;
        self
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|n| n.name().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        match self.nodes.binary_search_by(|n| n.name().cmp(name)) {
            Ok(i) => Some(&mut self.nodes[i]),
            Err(_) => None,
        }
    }

    /// All pods of all nodes.
    pub fn pods(&self) -> impl Iterator<Item = (&NodeInfo, &PodInfo)> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(move |p| (n, &**p)))
    }
}

// ---------------------------------------------------------------------------
// Statuses and plugin traits
// ---------------------------------------------------------------------------

/// How a filter rejected a node. `UnschedulableAndUnresolvable` tells preemption
/// that removing pods from the node cannot help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Code {
    Unschedulable,
    UnschedulableAndUnresolvable,
}

/// A filter failure: its code and one or more reason strings (exactly the ones
/// counted in the FailedScheduling event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Reason {
    pub fn unschedulable(msg: impl Into<String>) -> Reason {
        Reason {
            code: Code::Unschedulable,
            reasons: vec![msg.into()],
        }
    }

    pub fn unresolvable(msg: impl Into<String>) -> Reason {
        Reason {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![msg.into()],
        }
    }
}

/// Decides whether a pod may run on a node.
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Reason>;
}

/// What a Score plugin sees besides the pod and the node.
pub struct ScoreContext<'a> {
    pub snapshot: &'a Snapshot,
    /// The nodes that passed every filter.
    pub feasible: &'a [&'a NodeInfo],
}

/// One node's score from one plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeScore<'a> {
    pub node: &'a str,
    pub score: i64,
}

/// Ranks feasible nodes. Scores must end in `0..=MAX_NODE_SCORE` after
/// `normalize` (the framework clamps them).
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Like a PreScore returning Skip: the plugin has nothing to say about this
    /// pod and contributes 0 to every node.
    fn skip(&self, _pod: &PodInfo, _ctx: &ScoreContext) -> bool {
        false
    }
    fn score(&self, pod: &PodInfo, node: &NodeInfo, ctx: &ScoreContext) -> i64;
    /// Rescales the raw scores of all feasible nodes (default: unchanged).
    fn normalize(&self, _pod: &PodInfo, _ctx: &ScoreContext, _scores: &mut [NodeScore]) {}
}

/// `helper.DefaultNormalizeScore`: scale to 0..max by the highest score; with
/// `reverse`, high raw scores become low (all-zero input gives max everywhere).
pub fn default_normalize(scores: &mut [NodeScore], reverse: bool) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| s.score = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * s.score / max;
        s.score = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

// ---------------------------------------------------------------------------
// Framework
// ---------------------------------------------------------------------------

/// A scheduling profile: ordered filters and weighted scorers.
pub struct Framework {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scorers: Vec<(Box<dyn ScorePlugin>, i64)>,
    /// kube-scheduler's `percentageOfNodesToScore`: `None` (or 0) is adaptive.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Where the next attempt starts filtering (so that attempts spread over all nodes).
    next_start_node_index: AtomicUsize,
}

/// The outcome of one attempt.
#[derive(Clone, Debug)]
pub struct ScheduleResult {
    /// The chosen node, `None` when no node passed the filters.
    pub selected: Option<String>,
    pub num_all_nodes: usize,
    /// For each infeasible node, the first failing filter's reason (what the
    /// real scheduler records; later filters are not consulted for it).
    pub diagnosis: BTreeMap<String, Reason>,
    /// Every filter verdict and every score, for `minik scheduler why`.
    pub explanation: Explanation,
}

impl Default for Framework {
    fn default() -> Self {
        Framework::default_profile()
    }
}

impl Framework {
    /// An empty profile; add plugins with `with_filter` / `with_scorer`.
    pub fn empty() -> Framework {
        Framework {
            filters: Vec::new(),
            scorers: Vec::new(),
            percentage_of_nodes_to_score: None,
            next_start_node_index: AtomicUsize::new(0),
        }
    }

    /// The default profile of kube-scheduler (minus volume and DRA plugins), in
    /// the default order and with the default weights.
    pub fn default_profile() -> Framework {
        Framework {
            filters: super::plugins::default_filters(),
            scorers: super::plugins::default_scorers(),
            percentage_of_nodes_to_score: None,
            next_start_node_index: AtomicUsize::new(0),
        }
    }

    pub fn with_filter(mut self, f: impl FilterPlugin + 'static) -> Framework {
        self.filters.push(Box::new(f));
        self
    }

    pub fn with_scorer(mut self, s: impl ScorePlugin + 'static, weight: i64) -> Framework {
        self.scorers.push((Box::new(s), weight));
        self
    }

    /// Runs the filters in order and stops at the first failure.
    pub fn first_failure(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Option<(&'static str, Reason)> {
        self.filters.iter().find_map(|f| {
            f.filter(pod, node, snapshot)
                .err()
                .map(|reason| (f.name(), reason))
        })
    }

    /// How many feasible nodes an attempt looks for before it stops filtering
    /// (kube-scheduler's `numFeasibleNodesToFind`): every node below 100 nodes; else
    /// `percentageOfNodesToScore` of them (adaptive by default: 50% minus 1% per 125
    /// nodes, at least 5%), and at least 100.
    pub fn num_feasible_nodes_to_find(&self, all_nodes: usize) -> usize {
        const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
        const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
        if all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
            return all_nodes;
        }
        let percentage = match self.percentage_of_nodes_to_score {
            Some(p) if p > 0 => (p as usize).min(100),
            _ => 50usize
                .saturating_sub(all_nodes / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND),
        };
        (all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Schedules `pod` on `snapshot`, as kube-scheduler's `schedulePod`: filter the nodes,
    /// starting where the previous attempt stopped and going round, until
    /// [`Framework::num_feasible_nodes_to_find`] feasible nodes are found or every node
    /// was tried; then score the feasible ones (a single feasible node is taken without
    /// scoring) and take the highest total. Unlike the real scheduler, every filter runs on
    /// an infeasible node (the explanation shows all its verdicts), but only the first
    /// failure counts in the diagnosis, as in Kubernetes. Ties between equal totals go to
    /// the node whose name sorts first (the real scheduler picks one of them at random).
    pub fn schedule(&self, pod: &Pod, snapshot: &Snapshot) -> ScheduleResult {
        let pi = PodInfo::new(pod.clone());
        let all = snapshot.nodes.len();
        let want = self.num_feasible_nodes_to_find(all);
        let start = if all == 0 {
            0
        } else {
            self.next_start_node_index.load(Ordering::Relaxed) % all
        };
        let mut diagnosis = BTreeMap::new();
        // Indices into snapshot.nodes, in the order they were tried.
        let mut feasible_idx: Vec<usize> = Vec::new();
        let mut explained: Vec<(usize, NodeExplanation)> = Vec::new();
        let mut tried = 0;
        while tried < all && feasible_idx.len() < want {
            let i = (start + tried) % all;
            tried += 1;
            let node = &snapshot.nodes[i];
            let mut filters = Vec::with_capacity(self.filters.len());
            let mut first: Option<Reason> = None;
            for f in &self.filters {
                let verdict = f.filter(&pi, node, snapshot);
                if let Err(r) = &verdict
                    && first.is_none()
                {
                    first = Some(r.clone());
                }
                filters.push(FilterVerdict {
                    plugin: Cow::Borrowed(f.name()),
                    failure: verdict.err(),
                });
            }
            let is_feasible = first.is_none();
            match first {
                Some(r) => {
                    diagnosis.insert(node.name().to_string(), r);
                }
                None => feasible_idx.push(i),
            }
            explained.push((
                i,
                NodeExplanation {
                    node: node.name().to_string(),
                    feasible: is_feasible,
                    filters,
                    scores: Vec::new(),
                    total: None,
                },
            ));
        }
        if all > 0 {
            self.next_start_node_index
                .store((start + tried) % all, Ordering::Relaxed);
        }
        // Explanations in node-name order (the snapshot's order).
        explained.sort_by_key(|(i, _)| *i);
        let mut nodes: Vec<NodeExplanation> = explained.into_iter().map(|(_, n)| n).collect();
        feasible_idx.sort_unstable();
        let feasible: Vec<&NodeInfo> = feasible_idx.iter().map(|&i| &snapshot.nodes[i]).collect();

        let selected = if feasible.len() == 1 {
            // As the real scheduler: one feasible node needs no scores.
            Some(feasible[0].name().to_string())
        } else {
            let totals = self.score_nodes(&pi, snapshot, &feasible, &mut nodes);
            // Highest total wins; nodes are sorted by name so the first max is the
            // alphabetically smallest among ties.
            let mut best: Option<(usize, i64)> = None;
            for (i, total) in totals.iter().enumerate() {
                if best.is_none_or(|(_, b)| *total > b) {
                    best = Some((i, *total));
                }
            }
            best.map(|(i, _)| feasible[i].name().to_string())
        };
        let mut result = ScheduleResult {
            selected: selected.clone(),
            num_all_nodes: all,
            diagnosis,
            explanation: Explanation {
                pod: pi.key(),
                nodes,
                selected,
                message: None,
                not_evaluated: all - tried,
                more_feasible: 0,
            },
        };
        // The message without a preemption suffix; `attempt` adds it.
        result.explanation.message = super::failure::failed_scheduling_message(&result, None);
        result
    }

    /// Scores the feasible nodes (sorted by name; `nodes` holds their explanations, in the
    /// same order among others) and returns each one's weighted total.
    fn score_nodes(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        feasible: &[&NodeInfo],
        nodes: &mut [NodeExplanation],
    ) -> Vec<i64> {
        let ctx = ScoreContext { snapshot, feasible };
        let mut totals: Vec<i64> = vec![0; feasible.len()];
        let mut per_node: Vec<Vec<PluginScore>> =
            vec![Vec::with_capacity(self.scorers.len()); feasible.len()];
        let mut raw: Vec<NodeScore> = Vec::with_capacity(feasible.len());
        let mut normalized: Vec<NodeScore> = Vec::with_capacity(feasible.len());
        for (plugin, weight) in &self.scorers {
            let skipped = plugin.skip(pod, &ctx);
            raw.clear();
            raw.extend(feasible.iter().map(|n| NodeScore {
                node: n.name(),
                score: if skipped {
                    0
                } else {
                    plugin.score(pod, n, &ctx)
                },
            }));
            normalized.clear();
            normalized.extend_from_slice(&raw);
            if !skipped {
                plugin.normalize(pod, &ctx, &mut normalized);
            }
            for (i, (r, n)) in raw.iter().zip(&normalized).enumerate() {
                let norm = n.score.clamp(0, MAX_NODE_SCORE);
                let weighted = norm * weight;
                totals[i] += weighted;
                per_node[i].push(PluginScore {
                    plugin: Cow::Borrowed(plugin.name()),
                    skipped,
                    raw: r.score,
                    normalized: norm,
                    weight: *weight,
                    weighted,
                });
            }
        }
        // Both lists are in node-name order: one merge pass.
        let mut explained = nodes.iter_mut().filter(|n| n.feasible);
        for ((node, total), scores) in feasible.iter().zip(&totals).zip(per_node) {
            if let Some(ne) = explained.by_ref().find(|n| n.node == node.name()) {
                ne.scores = scores;
                ne.total = Some(*total);
            }
        }
        totals
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small builders for tests.
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, NodeSpec, NodeStatus, PodStatus, ResourceRequirements,
    };

    pub fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    pub fn rl(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
    }

    pub fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A node with allocatable cpu/memory and 110 pods.
    pub fn node(name: &str, cpu: &str, mem: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.to_string());
        n.metadata.labels = Some(labels(&[("kubernetes.io/hostname", name)]));
        n.spec = Some(NodeSpec::default());
        n.status = Some(NodeStatus {
            allocatable: Some(rl(&[("cpu", cpu), ("memory", mem), ("pods", "110")])),
            ..Default::default()
        });
        n
    }

    pub fn with_labels(mut n: Node, pairs: &[(&str, &str)]) -> Node {
        let l = n.metadata.labels.get_or_insert_with(Default::default);
        for (k, v) in pairs {
            l.insert(k.to_string(), v.to_string());
        }
        n
    }

    pub fn with_taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.taints.get_or_insert_with(Vec::new).push(Taint {
            key: key.to_string(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.to_string(),
            ..Default::default()
        });
        n
    }

    pub fn container(cpu: Option<&str>, mem: Option<&str>) -> Container {
        let mut req = BTreeMap::new();
        if let Some(c) = cpu {
            req.insert("cpu".to_string(), q(c));
        }
        if let Some(m) = mem {
            req.insert("memory".to_string(), q(m));
        }
        Container {
            name: "c".into(),
            image: Some("busybox".into()),
            resources: Some(ResourceRequirements {
                requests: (!req.is_empty()).then_some(req),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A pending pod in `default` with one container.
    pub fn pod(name: &str, cpu: Option<&str>, mem: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.to_string());
        p.metadata.namespace = Some("default".to_string());
        p.spec = Some(PodSpec {
            containers: vec![container(cpu, mem)],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        p
    }

    pub fn on_node(mut p: Pod, node: &str) -> Pod {
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        if let Some(st) = p.status.as_mut() {
            st.phase = Some("Running".into());
        }
        p
    }

    pub fn with_pod_labels(mut p: Pod, pairs: &[(&str, &str)]) -> Pod {
        p.metadata.labels = Some(labels(pairs));
        p
    }

    pub fn with_priority(mut p: Pod, prio: i32) -> Pod {
        if let Some(s) = p.spec.as_mut() {
            s.priority = Some(prio);
        }
        p
    }

    pub fn with_host_port(mut p: Pod, port: i32) -> Pod {
        if let Some(s) = p.spec.as_mut() {
            s.containers[0]
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    container_port: port,
                    host_port: Some(port),
                    ..Default::default()
                });
        }
        p
    }

    pub fn spec_mut(p: &mut Pod) -> &mut PodSpec {
        p.spec.get_or_insert_with(Default::default)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn pod_requests_with_sidecars_and_init() {
        let mut p = pod("p", Some("100m"), Some("100Mi"));
        let mut sidecar = container(Some("200m"), Some("50Mi"));
        sidecar.restart_policy = Some("Always".into());
        let init_big = container(Some("1"), Some("10Mi"));
        // sidecar first, then a plain init container: it runs next to the sidecar
        spec_mut(&mut p).init_containers = Some(vec![sidecar, init_big]);
        spec_mut(&mut p).overhead = Some(rl(&[("cpu", "10m")]));
        let pi = PodInfo::new(p);
        // cpu: max(100m + 200m, 1000m + 200m) + 10m overhead
        assert_eq!(pi.requests.milli_cpu, 1210);
        // memory: max(100Mi + 50Mi, 10Mi + 50Mi)
        assert_eq!(pi.requests.memory, 150 * 1024 * 1024);
    }

    #[test]
    fn scalar_resource_names() {
        assert!(is_scalar_resource("nvidia.com/gpu"));
        assert!(is_scalar_resource("hugepages-2Mi"));
        assert!(!is_scalar_resource("kubernetes.io/something"));
        assert!(!is_scalar_resource("foo.kubernetes.io/bar"));
        assert!(!is_scalar_resource("pods"));
        assert!(!is_scalar_resource("storage"));
    }

    #[test]
    fn pod_level_requests_override_containers() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        let mut p = pod("p", Some("100m"), Some("100Mi"));
        spec_mut(&mut p).resources = Some(ResourceRequirements {
            requests: Some(rl(&[("cpu", "2")])),
            ..Default::default()
        });
        let pi = PodInfo::new(p);
        assert_eq!(pi.requests.milli_cpu, 2000);
        assert_eq!(pi.requests.memory, 100 * 1024 * 1024);
    }

    #[test]
    fn non_zero_defaults_only_for_unset() {
        let mut p = pod("p", None, None);
        spec_mut(&mut p)
            .containers
            .push(container(Some("0"), Some("1Gi")));
        let pi = PodInfo::new(p);
        assert_eq!(pi.requests.milli_cpu, 0);
        assert_eq!(pi.non_zero_requests.milli_cpu, 100, "100m + explicit 0");
        assert_eq!(pi.non_zero_requests.memory, 200 * 1024 * 1024 + (1 << 30));
    }

    #[test]
    fn malformed_quantities_are_zero() {
        let p = pod("p", Some("lots"), Some("1Gi"));
        let pi = PodInfo::new(p);
        assert_eq!(pi.requests.milli_cpu, 0);
        assert_eq!(pi.requests.memory, 1 << 30);
    }

    #[test]
    fn snapshot_counts_only_live_assigned_pods() {
        let nodes = [node("b", "2", "4Gi"), node("a", "2", "4Gi")];
        let done = {
            let mut p = on_node(pod("done", Some("1"), None), "a");
            p.status.as_mut().unwrap().phase = Some("Succeeded".into());
            p
        };
        let pods = [
            on_node(pod("x", Some("500m"), None), "a"),
            on_node(pod("y", Some("250m"), None), "a"),
            pod("pending", Some("1"), None),
            on_node(pod("ghost", Some("1"), None), "nope"),
            done,
        ];
        let s = Snapshot::new(&nodes, &pods);
        assert_eq!(s.nodes[0].name(), "a");
        let a = s.node("a").unwrap();
        assert_eq!(a.pods.len(), 2);
        assert_eq!(a.requested.milli_cpu, 750);
        assert_eq!(a.allowed_pod_number, 110);
        assert_eq!(s.node("b").unwrap().pods.len(), 0);
    }

    #[test]
    fn remove_pod_updates_sums() {
        let nodes = [node("a", "2", "4Gi")];
        let pods = [on_node(
            with_host_port(pod("x", Some("500m"), None), 80),
            "a",
        )];
        let mut s = Snapshot::new(&nodes, &pods);
        let n = s.node_mut("a").unwrap();
        assert_eq!(n.used_ports.len(), 1);
        assert!(n.remove_pod("default/x").is_some());
        assert_eq!(n.requested.milli_cpu, 0);
        assert_eq!(n.non_zero_requested.memory, 0);
        assert!(n.used_ports.is_empty());
    }

    #[test]
    fn feasible_nodes_to_find_as_kube_scheduler() {
        let fw = Framework::default_profile();
        let want = |n| fw.num_feasible_nodes_to_find(n);
        assert_eq!(want(0), 0);
        assert_eq!(want(50), 50);
        assert_eq!(want(100), 100); // 49% of 100 is below the floor of 100
        assert_eq!(want(1000), 420); // 50% - 1000/125 = 42%
        assert_eq!(want(5000), 500); // 10%
        assert_eq!(want(10000), 500); // 5% at least
        let fixed = Framework {
            percentage_of_nodes_to_score: Some(100),
            ..Framework::default_profile()
        };
        assert_eq!(fixed.num_feasible_nodes_to_find(1000), 1000);
    }

    #[test]
    fn attempts_sample_nodes_round_robin() {
        let nodes: Vec<Node> = (0..300)
            .map(|i| node(&format!("n{i:03}"), "4", "8Gi"))
            .collect();
        let s = Snapshot::new(&nodes, &[]);
        let fw = Framework::default_profile();
        let first = fw.schedule(&pod("a", Some("100m"), None), &s);
        // 48% of 300 nodes are tried, from the first node on.
        assert_eq!(first.explanation.nodes.len(), 144);
        assert_eq!(first.explanation.not_evaluated, 156);
        assert_eq!(first.explanation.nodes[0].node, "n000");
        assert!(first.selected.is_some());
        // The next attempt starts where this one stopped.
        let second = fw.schedule(&pod("b", Some("100m"), None), &s);
        assert_eq!(second.explanation.nodes[0].node, "n144");
        assert_eq!(second.explanation.nodes[143].node, "n287");
        // ... and goes round the end of the list.
        let third = fw.schedule(&pod("c", Some("100m"), None), &s);
        assert_eq!(third.explanation.nodes[0].node, "n000");
        assert_eq!(third.explanation.nodes[131].node, "n131");
        assert_eq!(third.explanation.nodes[132].node, "n288");
        // Infeasible everywhere: every node is tried, and the message counts them all.
        let big = fw.schedule(&pod("big", Some("8"), None), &s);
        assert_eq!(big.explanation.not_evaluated, 0);
        assert_eq!(
            big.explanation.message.as_deref(),
            Some("0/300 nodes are available: 300 Insufficient cpu.")
        );
    }

    #[test]
    fn default_normalize_forward_and_reverse() {
        let mk = |v: &[i64]| -> Vec<NodeScore> {
            v.iter()
                .map(|s| NodeScore {
                    node: "n",
                    score: *s,
                })
                .collect()
        };
        let mut s = mk(&[1, 2, 4]);
        default_normalize(&mut s, false);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), [25, 50, 100]);
        let mut s = mk(&[0, 1, 2]);
        default_normalize(&mut s, true);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), [100, 50, 0]);
        let mut s = mk(&[0, 0]);
        default_normalize(&mut s, true);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), [100, 100]);
    }

    #[test]
    fn schedule_picks_least_loaded_and_breaks_ties_by_name() {
        let nodes = [node("b", "4", "8Gi"), node("a", "4", "8Gi")];
        let s = Snapshot::new(&nodes, &[]);
        let r = Framework::default_profile().schedule(&pod("p", Some("1"), Some("1Gi")), &s);
        assert_eq!(r.selected.as_deref(), Some("a"), "tie -> first name");

        let pods = [on_node(pod("busy", Some("3"), Some("6Gi")), "a")];
        let s = Snapshot::new(&nodes, &pods);
        let r = Framework::default_profile().schedule(&pod("p", Some("1"), Some("1Gi")), &s);
        assert_eq!(r.selected.as_deref(), Some("b"));
        assert!(r.diagnosis.is_empty());
        let b = r.explanation.nodes.iter().find(|n| n.node == "b").unwrap();
        assert!(b.total.unwrap() > 0);
    }

    #[test]
    fn schedule_reports_first_failure_only() {
        let nodes = [with_taint(
            node("cp", "1", "1Gi"),
            "dedicated",
            "x",
            "NoSchedule",
        )];
        let s = Snapshot::new(&nodes, &[]);
        let r = Framework::default_profile().schedule(&pod("p", Some("2"), None), &s);
        assert_eq!(r.selected, None);
        let reason = &r.diagnosis["cp"];
        assert_eq!(
            reason.reasons,
            ["node(s) had untolerated taint {dedicated: x}"]
        );
        // but the explanation still shows the later resource failure
        let failed: Vec<_> = r.explanation.nodes[0]
            .filters
            .iter()
            .filter(|f| f.failure.is_some())
            .map(|f| f.plugin.as_ref())
            .collect();
        assert_eq!(failed, ["TaintToleration", "NodeResourcesFit"]);
    }
}
