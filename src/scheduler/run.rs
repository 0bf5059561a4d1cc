//! The kube-scheduler process: watches, the scheduling loop, binding, events.
//!
//! - Shared caches (kube-runtime reflectors) of nodes, pods and namespaces, fed by one watch each.
//! - Pods with no `spec.nodeName`, `schedulerName: default-scheduler` and no deletion timestamp go
//!   into the [`Queue`]; node and pod changes move unschedulable pods back.
//! - One pod at a time: a [`Snapshot`] of the caches plus the pods this scheduler bound but has
//!   not seen bound yet ("assumed"), then [`attempt`]: bind with `pods/binding` and record
//!   `Scheduled`, or set the `PodScheduled=False` condition and record `FailedScheduling`; when
//!   preemption nominates a node, delete the victims and set `status.nominatedNodeName`.
//! - The last attempt's [`Explanation`] per pod is served on `/debug/why/NAMESPACE/POD`, which
//!   `minik scheduler why` prints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hyper::StatusCode;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::json;

use super::queue::Queue;
use super::{Explanation, Framework, NodeInfo, PodInfo, PreemptionOutcome, Snapshot, attempt};

/// The scheduler's name, as pods ask for it in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How many explanations are kept (the most recent pods).
const EXPLANATIONS: usize = 2000;

/// What the process is started with (kube-scheduler's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: std::path::PathBuf,
    pub bind_address: String,
    pub secure_port: u16,
    pub leader_elect: bool,
    pub lease_duration: Duration,
}

struct State {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// The scheduler's cache: every bound pod (key → its PodInfo, computed once per version),
    /// and each node without its pods (name → NodeInfo). Snapshots are built from these by
    /// copying pointers.
    cache: Mutex<Cache>,
    /// Pods bound by this scheduler, until the cache shows them bound.
    assumed: Mutex<HashMap<String, Arc<PodInfo>>>,
    explanations: Mutex<(HashMap<String, Explanation>, VecDeque<String>)>,
}

#[derive(Default)]
struct Cache {
    pods: HashMap<String, Arc<PodInfo>>,
    nodes: HashMap<String, NodeInfo>,
    /// While a watch re-lists: what the new list holds so far.
    relisting_pods: Option<HashMap<String, Arc<PodInfo>>>,
    relisting_nodes: Option<HashMap<String, NodeInfo>>,
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn is_pending_for_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && spec.is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// Runs the scheduler until the process is stopped.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = crate::component_base::client::from_kubeconfig(&opts.kubeconfig).await?;
    let state = Arc::new(State {
        queue: Mutex::new(Queue::default()),
        wake: tokio::sync::Notify::new(),
        cache: Mutex::new(Cache::default()),
        assumed: Mutex::new(HashMap::new()),
        explanations: Mutex::new((HashMap::new(), VecDeque::new())),
    });
    let pages = {
        let state = state.clone();
        Arc::new(move |path: &str| why_page(&state, path))
    };
    crate::component_base::health::serve(&opts.bind_address, opts.secure_port, pages).await?;
    if opts.leader_elect {
        crate::component_base::leader::acquire(
            client.clone(),
            "kube-scheduler",
            opts.lease_duration,
        )
        .await?;
    }
    tracing::info!("starting the scheduler");

    let (_nodes, nodes_ready) =
        watch_into::<Node>(Api::all(client.clone()), state.clone(), on_node_event);
    let (pods, pods_ready) =
        watch_into::<Pod>(Api::all(client.clone()), state.clone(), on_pod_event);
    let (namespaces, namespaces_ready) =
        watch_into::<Namespace>(Api::all(client.clone()), state.clone(), |_, _| {});
    nodes_ready.await;
    pods_ready.await;
    namespaces_ready.await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: SCHEDULER_NAME.into(),
            instance: Some(crate::component_base::leader::identity()),
        },
    );
    let framework = Framework::default_profile();
    // Bindings in flight at once.
    let binds = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let next = state.queue.lock().pop(Instant::now());
        let Some(key) = next else {
            let wait = state
                .queue
                .lock()
                .next_ready_in(Instant::now())
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(10));
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        };
        let Some((ns, name)) = key.split_once('/') else {
            continue;
        };
        let Some(pod) = pods.get(&reflector::ObjectRef::new(name).within(ns)) else {
            state.queue.lock().remove(&key);
            continue;
        };
        if !is_pending_for_us(&pod) || state.assumed.lock().contains_key(&key) {
            state.queue.lock().remove(&key);
            continue;
        }
        let snapshot = snapshot(&namespaces, &state);
        let outcome = attempt(&framework, &pod, &snapshot);
        remember(&state, &key, outcome.explanation());
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let reference = object_ref(&pod);
        match (&outcome.result.selected, &outcome.preemption) {
            (Some(node), _) => {
                // Assume the pod on its node at once (the next pods see it there), and bind in
                // the background: the binding cycle, as kube-scheduler runs it in a goroutine.
                let mut bound = (*pod).clone();
                if let Some(spec) = bound.spec.as_mut() {
                    spec.node_name = Some(node.clone());
                }
                state
                    .assumed
                    .lock()
                    .insert(key.clone(), Arc::new(PodInfo::new(bound)));
                state.queue.lock().remove(&key);
                let permit = binds.clone().acquire_owned().await;
                let (state, recorder, node, name) = (
                    state.clone(),
                    recorder.clone(),
                    node.clone(),
                    name.to_string(),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    match bind(&pod_api, &name, &node).await {
                        Ok(()) => {
                            tracing::info!(pod = %key, %node, "scheduled");
                            publish(
                                &recorder,
                                &reference,
                                EventType::Normal,
                                "Scheduled",
                                "Binding",
                                format!("Successfully assigned {key} to {node}"),
                            )
                            .await;
                        }
                        Err(e) => {
                            tracing::warn!(pod = %key, "binding failed: {e}");
                            // Forget the assumption; try again after a back-off.
                            state.assumed.lock().remove(&key);
                            state.queue.lock().retry(&key, Instant::now());
                            state.wake.notify_one();
                        }
                    }
                });
            }
            (None, preemption) => {
                let message = outcome
                    .message
                    .clone()
                    .unwrap_or_else(|| "no nodes available to schedule pods".into());
                let mut status = json!({"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": jiff::Timestamp::now().to_string(),
                }]});
                if let Some(PreemptionOutcome::Nominated { node, victims }) = preemption {
                    for v in victims {
                        let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
                        if let Some(victim) =
                            pods.get(&reflector::ObjectRef::new(&v.name).within(&v.namespace))
                        {
                            publish(
                                &recorder,
                                &object_ref(&victim),
                                EventType::Normal,
                                "Preempted",
                                "Preempting",
                                format!(
                                    "Preempted by pod {} on node {node}",
                                    pod.metadata.uid.as_deref().unwrap_or("")
                                ),
                            )
                            .await;
                        }
                        if let Err(e) = api.delete(&v.name, &DeleteParams::default()).await {
                            tracing::warn!(victim = %v.name, "preemption: {e}");
                        }
                    }
                    status["nominatedNodeName"] = json!(node);
                }
                let _ = pod_api
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Strategic(json!({"status": status})),
                    )
                    .await;
                publish(
                    &recorder,
                    &reference,
                    EventType::Warning,
                    "FailedScheduling",
                    "Scheduling",
                    message,
                )
                .await;
                let mut q = state.queue.lock();
                match preemption {
                    Some(PreemptionOutcome::Nominated { .. }) => q.retry(&key, Instant::now()),
                    _ => q.unschedulable(&key, Instant::now()),
                }
            }
        }
    }
}

/// A pod event: the cache follows bound pods; pending pods are queued; a deleted or bound pod
/// may make room for others.
fn on_pod_event(state: &State, ev: &Event<Pod>) {
    let now = Instant::now();
    match ev {
        Event::Apply(pod) | Event::InitApply(pod) => {
            let key = key_of(pod);
            {
                let mut cache = state.cache.lock();
                let info = is_bound(pod).then(|| Arc::new(PodInfo::new(pod.clone())));
                let target = match (&ev, cache.relisting_pods.as_mut()) {
                    (Event::InitApply(_), Some(relist)) => relist,
                    _ => &mut cache.pods,
                };
                match info {
                    Some(i) => {
                        target.insert(key.clone(), i);
                    }
                    None => {
                        target.remove(&key);
                    }
                }
            }
            if is_pending_for_us(pod) {
                state.queue.lock().add(&key, priority(pod), created(pod));
            } else {
                let was_assumed = state.assumed.lock().remove(&key).is_some();
                let mut q = state.queue.lock();
                q.remove(&key);
                // A pod bound by someone else, or finished: capacity changed.
                if !was_assumed {
                    q.cluster_changed(now);
                }
            }
        }
        Event::Delete(pod) => {
            let key = key_of(pod);
            state.cache.lock().pods.remove(&key);
            state.assumed.lock().remove(&key);
            let mut q = state.queue.lock();
            q.remove(&key);
            q.cluster_changed(now);
        }
        Event::Init => state.cache.lock().relisting_pods = Some(HashMap::new()),
        Event::InitDone => {
            let mut cache = state.cache.lock();
            if let Some(pods) = cache.relisting_pods.take() {
                cache.pods = pods;
            }
        }
    }
    state.wake.notify_one();
}

/// A node event: the cache keeps each node's NodeInfo (its allocatable parsed once); any change
/// may let unschedulable pods fit.
fn on_node_event(state: &State, ev: &Event<Node>) {
    {
        let mut cache = state.cache.lock();
        match ev {
            Event::Apply(n) => {
                cache.nodes.insert(n.name_any(), NodeInfo::new(n.clone()));
            }
            Event::InitApply(n) => {
                let info = NodeInfo::new(n.clone());
                match cache.relisting_nodes.as_mut() {
                    Some(r) => r.insert(n.name_any(), info),
                    None => cache.nodes.insert(n.name_any(), info),
                };
            }
            Event::Delete(n) => {
                cache.nodes.remove(&n.name_any());
            }
            Event::Init => cache.relisting_nodes = Some(HashMap::new()),
            Event::InitDone => {
                if let Some(nodes) = cache.relisting_nodes.take() {
                    cache.nodes = nodes;
                }
            }
        }
    }
    if matches!(ev, Event::Apply(_) | Event::Delete(_) | Event::InitDone) {
        state.queue.lock().cluster_changed(Instant::now());
        state.wake.notify_one();
    }
}

/// A reflector-backed cache of `K`, with `on_event` called for each watch event. Returns the
/// store and a future that resolves once the cache has its first full list.
fn watch_into<K>(
    api: Api<K>,
    state: Arc<State>,
    on_event: fn(&State, &Event<K>),
) -> (Store<K>, futures_util::future::BoxFuture<'static, ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => on_event(&state, &ev),
                Err(e) => {
                    tracing::debug!("watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let ready = {
        let store = store.clone();
        Box::pin(async move {
            let _ = store.wait_until_ready().await;
        }) as futures_util::future::BoxFuture<'static, ()>
    };
    (store, ready)
}

/// The snapshot one attempt works on: the cached nodes and bound pods, plus the pods this
/// scheduler bound that the watch has not shown bound yet.
fn snapshot(namespaces: &Store<Namespace>, state: &State) -> Snapshot {
    let cache = state.cache.lock();
    let assumed = state.assumed.lock();
    let mut nodes: Vec<NodeInfo> = cache.nodes.values().cloned().collect();
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    let extra = assumed
        .iter()
        .filter(|(k, _)| !cache.pods.contains_key(*k))
        .map(|(_, p)| p.clone());
    let labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    Snapshot::from_node_infos(nodes, cache.pods.values().cloned().chain(extra))
        .with_namespace_labels(labels)
}

async fn bind(api: &Api<Pod>, name: &str, node: &str) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_subresource::<serde_json::Value, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &body,
    )
    .await
    .map(drop)
}

fn object_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: None,
    }
}

async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, reference).await {
        tracing::debug!("event {reason}: {e}");
    }
}

fn remember(state: &State, key: &str, e: Explanation) {
    let mut guard = state.explanations.lock();
    let (map, order) = &mut *guard;
    if map.insert(key.to_string(), e).is_none() {
        order.push_back(key.to_string());
        while order.len() > EXPLANATIONS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// `/debug/why/NAMESPACE/POD`: the last attempt's explanation as JSON.
fn why_page(state: &State, path: &str) -> Option<(StatusCode, &'static str, String)> {
    let key = path.strip_prefix("/debug/why/")?;
    let guard = state.explanations.lock();
    Some(match guard.0.get(key) {
        Some(e) => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string(e).unwrap_or_default(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!(
                "the scheduler has not tried to schedule pod {key} since it started (pods bound \
                 before, or by another scheduler, have no explanation)\n"
            ),
        ),
    })
}
