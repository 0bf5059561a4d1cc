//! The kube-scheduler process: watches, the scheduling loop, binding, events.
//!
//! - Shared caches (kube-runtime reflectors) of nodes, pods and namespaces, fed by one watch each.
//! - Pods with no `spec.nodeName`, `schedulerName: default-scheduler` and no deletion timestamp go
//!   into the [`Queue`]; node and pod changes move unschedulable pods back.
//! - One pod at a time, on the [`Cache`]'s snapshot (nodes, bound pods and the pods this
//!   scheduler bound but has not seen bound yet — "assumed" — kept up to date by the watch
//!   events), then [`attempt`]: bind with `pods/binding` and record
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
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::json;

use super::cache::Cache;
use super::queue::Queue;
use super::{Explanation, Framework, PodInfo, PreemptionOutcome, attempt};

/// The scheduler's name, as pods ask for it in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How many explanations are kept (the most recent pods).
const EXPLANATIONS: usize = 2000;
/// How many feasible nodes (the best) an explanation keeps; rejected nodes are all kept.
const EXPLAINED_FEASIBLE_NODES: usize = 10;

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
    /// The scheduler's cache: nodes, bound pods and assumed pods, as a ready snapshot.
    cache: Mutex<Cache>,
    explanations: Mutex<(HashMap<String, Explanation>, VecDeque<String>)>,
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
    let recorder = Events {
        client: client.clone(),
        instance: crate::component_base::leader::identity(),
    };
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
        if !is_pending_for_us(&pod) || state.cache.lock().is_assumed(&key) {
            state.queue.lock().remove(&key);
            continue;
        }
        let mut outcome = {
            let labels = namespace_labels(&namespaces);
            let mut cache = state.cache.lock();
            let snapshot = cache.snapshot();
            snapshot.namespace_labels = labels;
            attempt(&framework, &pod, snapshot)
        };
        remember(
            &state,
            &key,
            outcome.take_explanation().compact(EXPLAINED_FEASIBLE_NODES),
        );
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
                    .cache
                    .lock()
                    .assume(&key, Arc::new(PodInfo::new(bound)));
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
                            recorder.publish(
                                &reference,
                                "Normal",
                                "Scheduled",
                                "Binding",
                                format!("Successfully assigned {key} to {node}"),
                            );
                        }
                        Err(e) => {
                            tracing::warn!(pod = %key, "binding failed: {e}");
                            // Forget the assumption; try again after a back-off.
                            state.cache.lock().forget(&key);
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
                            recorder.publish(
                                &object_ref(&victim),
                                "Normal",
                                "Preempted",
                                "Preempting",
                                format!(
                                    "Preempted by pod {} on node {node}",
                                    pod.metadata.uid.as_deref().unwrap_or("")
                                ),
                            );
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
                recorder.publish(
                    &reference,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    message,
                );
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
            let info = is_bound(pod).then(|| Arc::new(PodInfo::new(pod.clone())));
            let was_assumed =
                state
                    .cache
                    .lock()
                    .set_pod(&key, info, matches!(ev, Event::InitApply(_)));
            if is_pending_for_us(pod) {
                state.queue.lock().add(&key, priority(pod), created(pod));
            } else {
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
            state.cache.lock().delete_pod(&key);
            let mut q = state.queue.lock();
            q.remove(&key);
            q.cluster_changed(now);
        }
        Event::Init => state.cache.lock().pods_relisting(),
        Event::InitDone => state.cache.lock().pods_listed(),
    }
    state.wake.notify_one();
}

/// A node event: the cache keeps each node's NodeInfo (its allocatable parsed once); any change
/// may let unschedulable pods fit.
fn on_node_event(state: &State, ev: &Event<Node>) {
    {
        let mut cache = state.cache.lock();
        match ev {
            Event::Apply(n) => cache.set_node(Arc::new(n.clone()), false),
            Event::InitApply(n) => cache.set_node(Arc::new(n.clone()), true),
            Event::Delete(n) => cache.delete_node(&n.name_any()),
            Event::Init => cache.nodes_relisting(),
            Event::InitDone => cache.nodes_listed(),
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

/// Namespace labels, for pod affinity terms with a namespaceSelector.
fn namespace_labels(namespaces: &Store<Namespace>) -> BTreeMap<String, BTreeMap<String, String>> {
    namespaces
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect()
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

/// Records events.k8s.io/v1 Events as kube-scheduler does (`reportingController:
/// default-scheduler`, an action, a note), each in the background so that scheduling never waits
/// for one. (kube-runtime's Recorder keeps every event it sent in a cache that it scans on each
/// send: at thousands of pods that scan costs more than the scheduling.)
#[derive(Clone)]
struct Events {
    client: kube::Client,
    instance: String,
}

impl Events {
    fn publish(
        &self,
        regarding: &ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        use k8s_openapi::api::events::v1::Event;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let now = jiff::Timestamp::now();
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
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(SCHEDULER_NAME.into()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(action.into()),
            reason: Some(reason.into()),
            type_: Some(type_.into()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!("event {reason}: {e}");
            }
        });
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
