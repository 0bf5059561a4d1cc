//! **fake_kubelet** — simulated nodes for scale labs, as kwok simulates them.
//!
//! A kubelet registers its node, renews the node's Lease in `kube-node-lease` every 10 s (the
//! heartbeat the node controller watches), and turns pods bound to its node into running
//! containers, reporting their status. `minik fake-kubelet` does all of that for N nodes at once
//! without running anything: pods bound to a fake node become Running and Ready (with a pod IP
//! from the node's pod CIDR) after `--pod-ready-delay`, a deleted pod is removed at once (there
//! are no containers to stop), and a node's heartbeat stops while the node carries the
//! annotation `fake.minik.dev/heartbeat: stopped` (`minik node stop NAME` sets it).
//!
//! Pods may ask to finish, as kwok's stages let them: the annotation
//! `fake.minik.dev/complete-after: 3s` makes a pod end after that long with exit code
//! `fake.minik.dev/exit-code` (default 0): Succeeded, or Failed for a non-zero code — enough for
//! Jobs to complete or fail.
//!
//! Like every node component it talks only to the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

/// The annotation that stops a fake node's heartbeat.
pub const HEARTBEAT_ANNOTATION: &str = "fake.minik.dev/heartbeat";
/// The label every fake node carries (kwok's is `type: kwok`).
pub const FAKE_LABEL: &str = "fake.minik.dev/node";
const COMPLETE_AFTER: &str = "fake.minik.dev/complete-after";
const EXIT_CODE: &str = "fake.minik.dev/exit-code";
const LEASE_SECONDS: i32 = 40;

/// A class of nodes in a `--fake-node-profile` file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeClass {
    /// How many nodes of this class.
    pub count: u32,
    /// Name prefix (`<prefix>-<n>`).
    #[serde(default = "default_prefix")]
    pub name_prefix: String,
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Value>,
}

fn default_prefix() -> String {
    "fake".into()
}

fn default_capacity() -> BTreeMap<String, String> {
    [
        ("cpu", "8"),
        ("memory", "32Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The `--fake-node-profile` file: `nodes: [NodeClass…]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeProfile {
    pub nodes: Vec<NodeClass>,
}

impl NodeProfile {
    /// N default nodes `fake-0` … `fake-<N-1>`.
    pub fn uniform(n: u32) -> NodeProfile {
        NodeProfile {
            nodes: vec![NodeClass {
                count: n,
                name_prefix: default_prefix(),
                capacity: default_capacity(),
                labels: BTreeMap::new(),
                taints: Vec::new(),
            }],
        }
    }

    /// Parses a profile file; errors name the file and line.
    pub fn parse(text: &str, file: &str) -> anyhow::Result<NodeProfile> {
        serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("{file}{at}: {e}")
        })
    }

    /// Every node: (name, class).
    pub fn expand(&self) -> Vec<(String, &NodeClass)> {
        let mut out = Vec::new();
        for class in &self.nodes {
            for i in 0..class.count {
                out.push((format!("{}-{i}", class.name_prefix), class));
            }
        }
        out
    }
}

/// What the process is started with.
#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: std::path::PathBuf,
    pub profile: NodeProfile,
    pub pod_ready_delay: Duration,
    pub heartbeat: Duration,
}

/// The Node object for a fake node (index `i` picks its pod CIDR and address).
fn node_object(name: &str, class: &NodeClass, i: usize) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "beta.kubernetes.io/os": "linux",
        FAKE_LABEL: "true",
    });
    for (k, v) in &class.labels {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {
            "podCIDR": pod_cidr(i),
            "podCIDRs": [pod_cidr(i)],
            "taints": class.taints,
        },
        "status": {
            "capacity": class.capacity,
            "allocatable": class.capacity,
            "conditions": healthy_conditions(),
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "minik fake node",
                "containerRuntimeVersion": "fake://0",
                "kubeletVersion": "v1.33.0-minik-fake", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// The conditions a healthy kubelet posts, stamped now.
fn healthy_conditions() -> Value {
    crate::kubelet::node::conditions(None, &Node::default())
}

fn heartbeat_stopped(n: &Node) -> bool {
    n.annotations()
        .get(HEARTBEAT_ANNOTATION)
        .map(String::as_str)
        == Some("stopped")
}

/// Node `i`'s pod CIDR: 10.(64 + i/256).(i%256).0/24, room for 4,096 nodes.
fn pod_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", 64 + (i / 256) % 64, i % 256)
}

fn node_ip(i: usize) -> String {
    format!("172.30.{}.{}", (i / 250) % 250, i % 250 + 2)
}

/// Pod IPs per node: the next free host of the node's /24.
#[derive(Default)]
struct Ips {
    next: HashMap<String, u32>,
}

impl Ips {
    fn take(&mut self, node_index: usize, node: &str) -> String {
        let n = self.next.entry(node.to_string()).or_insert(2);
        let ip = format!(
            "10.{}.{}.{}",
            64 + (node_index / 256) % 64,
            node_index % 256,
            *n
        );
        *n = if *n >= 254 { 2 } else { *n + 1 };
        ip
    }
}

/// Runs the fake nodes until the process is stopped.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = crate::component_base::client::from_kubeconfig(&opts.kubeconfig).await?;
    let nodes = opts.profile.expand();
    let index: Arc<HashMap<String, usize>> = Arc::new(
        nodes
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect(),
    );
    register(&client, &nodes).await?;
    tracing::info!(nodes = nodes.len(), "fake nodes registered");
    tokio::spawn(heartbeats(client.clone(), index.clone(), opts.heartbeat));

    let pods: Api<Pod> = Api::all(client.clone());
    let ips = Arc::new(Mutex::new(Ips::default()));
    let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
    while let Some(ev) = stream.next().await {
        let pod = match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("watching pods: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(&i) = index.get(&node) else {
            continue;
        };
        let client = client.clone();
        let ips = ips.clone();
        let delay = opts.pod_ready_delay;
        tokio::spawn(async move {
            if let Err(e) = sync_pod(&client, &pod, &node, i, &ips, delay).await {
                tracing::debug!(pod = %pod.name_any(), "{e}");
            }
        });
    }
    Ok(())
}

/// Creates (or updates) every fake node, a few at a time.
async fn register(client: &Client, nodes: &[(String, &NodeClass)]) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let work: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, class))| node_object(name, class, i))
        .collect();
    let results = futures_util::stream::iter(work)
        .map(|obj| {
            let api = api.clone();
            async move {
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                let node: Node =
                    serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    // Registered before (a restart): refresh its status, unless its
                    // heartbeat is stopped (then the node controller's Unknown stays).
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        if api
                            .get_opt(&name)
                            .await?
                            .is_some_and(|n| heartbeat_stopped(&n))
                        {
                            return Ok(());
                        }
                        api.patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": obj["status"]})),
                        )
                        .await?;
                    }
                    Err(e) => return Err(e),
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Renews each node's Lease in kube-node-lease, except for nodes whose heartbeat is stopped;
/// posts Ready again (as a kubelet does on its next status update) for a running node that the
/// node controller marked Unknown while it was silent.
async fn heartbeats(client: Client, index: Arc<HashMap<String, usize>>, every: Duration) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let listed = match nodes
            .list(&kube::api::ListParams::default().labels(&format!("{FAKE_LABEL}=true")))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::debug!("listing nodes: {e}");
                Vec::new()
            }
        };
        let stopped: Vec<String> = listed
            .iter()
            .filter(|n| heartbeat_stopped(n))
            .map(|n| n.name_any())
            .collect();
        let not_ready: Vec<String> = listed
            .iter()
            .filter(|n| !heartbeat_stopped(n) && index.contains_key(&n.name_any()))
            .filter(|n| {
                !n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .map(|n| n.name_any())
            .collect();
        for name in not_ready {
            tracing::info!(node = %name, "posting Ready again");
            if let Err(e) = nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": healthy_conditions()}})),
                )
                .await
            {
                tracing::debug!(node = %name, "status: {e}");
                continue;
            }
            if let Err(e) = pods_ready_again(&client, &name).await {
                tracing::debug!(node = %name, "pods: {e}");
            }
        }
        let names: Vec<String> = index
            .keys()
            .filter(|n| !stopped.contains(n))
            .cloned()
            .collect();
        futures_util::stream::iter(names)
            .for_each_concurrent(16, |name| {
                let leases = leases.clone();
                async move {
                    if let Err(e) = renew(&leases, &name).await {
                        tracing::debug!(node = %name, "lease: {e}");
                    }
                }
            })
            .await;
        tokio::time::sleep(every).await;
    }
}

/// A node back from silence reports its running pods Ready again (the node controller marked
/// them not ready while it was silent).
async fn pods_ready_again(client: &Client, node: &str) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let list = all
        .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for pod in list.items {
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !running || ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = jiff::Timestamp::now().to_string();
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ]}})),
        )
        .await?;
    }
    Ok(())
}

async fn renew(api: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    match api.get_opt(node).await? {
        None => api.create(&PostParams::default(), &lease).await.map(drop),
        Some(mut old) => {
            old.spec = lease.spec;
            api.replace(node, &PostParams::default(), &old)
                .await
                .map(drop)
        }
    }
}

/// Brings one pod on a fake node to the state the kubelet would report.
async fn sync_pod(
    client: &Client,
    pod: &Pod,
    node: &str,
    node_index: usize,
    ips: &Mutex<Ips>,
    delay: Duration,
) -> anyhow::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        // No containers to stop: finish the graceful deletion now, as the kubelet does at the end.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let _ = api.delete(&name, &dp).await;
        return Ok(());
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(());
    }
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .map(|t| t.0.to_string());
    if phase != "Running" {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ip = ips.lock().take(node_index, node);
        let now = jiff::Timestamp::now().to_string();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": running_status(pod, &ip, &node_ip(node_index), &now)})),
        )
        .await?;
        schedule_completion(api, pod).await;
        return Ok(());
    }
    if started.is_some() {
        schedule_completion(api, pod).await;
    }
    Ok(())
}

/// For pods annotated `fake.minik.dev/complete-after`, ends them after that long.
async fn schedule_completion(api: Api<Pod>, pod: &Pod) {
    let Some(after) = pod
        .annotations()
        .get(COMPLETE_AFTER)
        .and_then(|d| crate::cluster::config::parse_duration(d).ok())
    else {
        return;
    };
    let code: i32 = pod
        .annotations()
        .get(EXIT_CODE)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let name = pod.name_any();
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let uid = pod.metadata.uid.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        // Still the same pod?
        let Ok(Some(current)) = api.get_opt(&name).await else {
            return;
        };
        if current.metadata.uid != uid
            || current
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed")
        {
            return;
        }
        let now = jiff::Timestamp::now().to_string();
        let (phase, reason) = if code == 0 {
            ("Succeeded", "Completed")
        } else {
            ("Failed", "Error")
        };
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                json!({"name": c, "ready": false, "restartCount": 0, "started": false,
                       "image": "", "imageID": "",
                       "state": {"terminated": {"exitCode": code, "reason": reason,
                                                 "finishedAt": now, "startedAt": now}}})
            })
            .collect();
        let status = json!({"status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
        }});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
            .await;
    });
}

/// The status of a pod whose containers all run and are ready.
fn running_status(pod: &Pod, ip: &str, host_ip: &str, now: &str) -> Value {
    let spec = pod.spec.as_ref();
    let statuses: Vec<Value> = spec
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                           "imageID": "", "containerID": format!("fake://{}", c.name),
                           "ready": true, "started": true, "restartCount": 0,
                           "state": {"running": {"startedAt": now}}})
                })
                .collect()
        })
        .unwrap_or_default();
    let init: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|list| {
            list.iter()
                .map(|c| {
                    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                           "imageID": "", "ready": true, "restartCount": 0,
                           "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                     "startedAt": now, "finishedAt": now}}})
                })
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let mut status = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                       cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": statuses,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_expand_and_refuse_unknown_keys() {
        let p = NodeProfile::parse(
            "nodes:\n- count: 2\n  namePrefix: big\n  capacity: {cpu: '32'}\n  labels: {zone: a}\n- count: 1\n",
            "p.yaml",
        )
        .unwrap();
        let names: Vec<String> = p.expand().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["big-0", "big-1", "fake-0"]);
        let e = NodeProfile::parse("nodes:\n- count: 1\n  cpu: 4\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.yaml:3:") && e.contains("unknown field `cpu`"),
            "{e}"
        );
        let n = node_object("big-0", p.expand()[0].1, 0);
        assert_eq!(n["metadata"]["labels"]["zone"], "a");
        assert_eq!(n["status"]["allocatable"]["cpu"], "32");
        assert_eq!(n["spec"]["podCIDR"], "10.64.0.0/24");
    }

    #[test]
    fn pod_ips_come_from_the_node_cidr() {
        let mut ips = Ips::default();
        assert_eq!(ips.take(3, "n"), "10.64.3.2");
        assert_eq!(ips.take(3, "n"), "10.64.3.3");
        assert_eq!(ips.take(300, "m"), "10.65.44.2");
    }
}
