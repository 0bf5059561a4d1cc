//! The kubelet process: the node loops and the pod manager.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::Value;

use super::docker::Engine;
use super::events::Recorder;
use super::labels;
use super::node::{self, NodeSpec};
use super::pod_worker::{self, Handle, Shared};
use super::runtime::{Cidr, Runtime};
use super::static_pods;

/// What `minik kubelet` is started with.
#[derive(Debug, Clone)]
pub struct Options {
    pub node_name: String,
    pub kubeconfig: PathBuf,
    /// The profile (a label on the containers).
    pub profile: String,
    /// The Docker network pods join (created if missing).
    pub pod_network: String,
    /// This node's pod range.
    pub pod_cidr: String,
    /// The whole pod network (the Docker network's subnet).
    pub cluster_cidr: String,
    /// The node's address (InternalIP), where the API server reaches the kubelet.
    pub address: String,
    /// The kubelet's port (its streaming server).
    pub port: u16,
    /// The kubelet's directory (volumes, plugins …).
    pub root_dir: PathBuf,
    pub capacity: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
    pub pause_image: String,
    /// The streaming server's certificate, key, and the CA its clients must be signed by.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// Static pods: a folder of Pod manifests run by this kubelet, with mirror pods.
    pub pod_manifest_path: Option<PathBuf>,
}

/// Runs the kubelet until SIGTERM/SIGINT. Pods keep running when it stops: a restarted kubelet
/// adopts them.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = crate::component_base::client::from_kubeconfig(&opts.kubeconfig).await?;
    std::fs::create_dir_all(&opts.root_dir).map_err(|e| {
        anyhow::anyhow!(
            "creating the kubelet's directory {}: {e}",
            opts.root_dir.display()
        )
    })?;
    if let Some(dir) = &opts.pod_manifest_path {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating --pod-manifest-path {}: {e}", dir.display()))?;
    }
    let cluster_cidr = Cidr::parse(&opts.cluster_cidr)?;
    let pod_cidr = Cidr::parse(&opts.pod_cidr)?;
    if !cluster_cidr.contains(pod_cidr.addr) || pod_cidr.prefix < cluster_cidr.prefix {
        anyhow::bail!("--pod-cidr {pod_cidr} is not inside --cluster-cidr {cluster_cidr}");
    }
    let mut capacity = node::machine_capacity(&opts.root_dir);
    capacity.extend(opts.capacity.clone());
    let spec = NodeSpec {
        name: opts.node_name.clone(),
        pod_cidr: pod_cidr.to_string(),
        address: opts.address.clone(),
        port: opts.port,
        capacity,
        labels: opts.labels.clone(),
        taints: opts.taints.clone(),
    };
    // Register first, retrying until the API server answers.
    loop {
        match node::register(&client, &spec).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("{e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::info!(node = %spec.name, "node registered");

    // The Lease heartbeat.
    {
        let client = client.clone();
        let node = spec.name.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = node::renew_lease(&client, &node).await {
                    tracing::warn!("renewing the node lease: {e:#}");
                }
                tokio::time::sleep(node::RENEW_EVERY).await;
            }
        });
    }

    // The container runtime; until Docker answers, the node reports NotReady and why.
    let engine = loop {
        match Engine::connect().await {
            Ok(e) => break e,
            Err(e) => {
                let problem = format!("{e:#}");
                tracing::warn!("{problem}");
                if let Err(e) =
                    node::post_status(&client, &spec, "docker://unknown", Some(&problem), &[]).await
                {
                    tracing::warn!("{e:#}");
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let runtime = Arc::new(Runtime::new(
        engine.clone(),
        &spec.name,
        &opts.profile,
        &opts.pod_network,
        cluster_cidr,
        pod_cidr,
    ));
    runtime.ensure_network().await?;
    runtime.load_ips().await?;
    let runtime_version = format!("docker://{}", engine.engine_version());

    // The node status, every 10 s.
    {
        let client = client.clone();
        let spec = spec.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            loop {
                let (problem, images) = match runtime.images().await {
                    Ok(i) => (None, i),
                    Err(e) => (Some(format!("{e:#}")), Vec::new()),
                };
                if let Err(e) = node::post_status(
                    &client,
                    &spec,
                    &runtime_version,
                    problem.as_deref(),
                    &images,
                )
                .await
                {
                    tracing::warn!("{e:#}");
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
    }

    let allocatable: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> =
        spec.capacity
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.clone()),
                )
            })
            .collect();
    let shared = Arc::new(Shared {
        client: client.clone(),
        runtime: runtime.clone(),
        recorder: Recorder::start(client.clone(), &spec.name),
        node: spec.name.clone(),
        host_ip: opts.address.clone(),
        pause_image: opts.pause_image.clone(),
        volumes: super::volumes::VolumeManager::with_client(&opts.root_dir, client.clone())
            .with_node_allocatable(allocatable.clone()),
        source: super::env::KubeSource {
            client: client.clone(),
        },
        allocatable,
    });
    let manager = Arc::new(Manager {
        shared,
        workers: Mutex::new(HashMap::new()),
        statics: Mutex::new(HashSet::new()),
        mirrors_changed: tokio::sync::Notify::new(),
    });
    if let Some(dir) = opts.pod_manifest_path.clone() {
        tokio::spawn(manager.clone().static_pods(dir));
    }
    tokio::spawn(docker_events(manager.clone()));

    // The streaming server (logs, exec, attach, port-forward), which the API server proxies to.
    let streaming = match (
        &opts.tls_cert_file,
        &opts.tls_private_key_file,
        &opts.client_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => {
            let addr: std::net::SocketAddr = format!("{}:{}", opts.address, opts.port)
                .parse()
                .map_err(|e| {
                    anyhow::anyhow!("--address {} --port {}: {e}", opts.address, opts.port)
                })?;
            let server = super::streaming::serve(
                super::streaming::ServerOptions {
                    addr,
                    tls_cert_file: cert.clone(),
                    tls_private_key_file: key.clone(),
                    client_ca_file: ca.clone(),
                    node_name: spec.name.clone(),
                    container_labels: vec![(labels::CLUSTER.to_string(), opts.pod_network.clone())],
                    pods: {
                        let manager = manager.clone();
                        super::streaming::PodSource::new(move || manager.pods())
                    },
                },
                engine.clone(),
                std::future::pending(),
            );
            tokio::spawn(server)
        }
        _ => {
            tracing::warn!(
                "no --tls-cert-file/--tls-private-key-file/--client-ca-file: the streaming server \
                 (logs, exec, attach, port-forward) is off"
            );
            tokio::spawn(std::future::pending())
        }
    };
    tokio::select! {
        r = manager.clone().watch_pods() => r,
        r = streaming => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.context("the kubelet's streaming server")),
            Err(e) => Err(anyhow::anyhow!("the kubelet's streaming server: {e}")),
        },
        _ = crate::cli::shutdown_signal() => {
            tracing::info!("kubelet stopping; its pods keep running");
            Ok(())
        }
    }
}

/// The pod manager: one worker per pod bound to the node.
struct Manager {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<String, Handle>>,
    /// The uids of the static pods (their workers are not the watch's to remove).
    statics: Mutex<HashSet<String>>,
    /// A mirror pod was deleted: look at the static pods again now.
    mirrors_changed: tokio::sync::Notify,
}

impl Manager {
    fn upsert(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        // Mirror pods stand for static pods (this kubelet's, or the control plane the
        // supervisor runs); they are not run again. A deleted one is made again.
        if static_pods::is_mirror(&pod) {
            if pod.metadata.deletion_timestamp.is_some() {
                self.mirrors_changed.notify_one();
            }
            return;
        }
        let mut workers = self.workers.lock();
        if let Some(h) = workers.get(&uid) {
            h.pod.send_replace(pod);
            return;
        }
        let me = self.clone();
        let u = uid.clone();
        let handle = pod_worker::spawn(self.shared.clone(), pod, move || {
            me.workers.lock().remove(&u);
        });
        workers.insert(uid, handle);
    }

    /// The pods the workers run (static pods included), as last seen.
    fn pods(&self) -> Vec<Pod> {
        self.workers
            .lock()
            .values()
            .map(|h| h.pod.borrow().clone())
            .collect()
    }

    fn remove(&self, uid: &str) {
        // Dropping the sender tells the worker its pod is gone.
        self.workers.lock().remove(uid);
    }

    async fn watch_pods(self: Arc<Self>) -> anyhow::Result<()> {
        let api: kube::Api<Pod> = kube::Api::all(self.shared.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.shared.node));
        let mut stream = watcher::watcher(api, cfg).boxed();
        let mut listed: HashSet<String> = HashSet::new();
        let mut housekeeping: Option<tokio::task::JoinHandle<()>> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        listed.insert(uid.clone());
                    }
                    self.upsert(pod);
                }
                Ok(Event::InitDone) => {
                    let statics = self.statics.lock().clone();
                    let gone: Vec<String> = self
                        .workers
                        .lock()
                        .keys()
                        .filter(|u| !listed.contains(*u) && !statics.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.remove(&uid);
                    }
                    if housekeeping.is_none() {
                        housekeeping = Some(tokio::spawn(self.clone().housekeeping()));
                    }
                }
                Ok(Event::Apply(pod)) => self.upsert(pod),
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.remove(uid);
                    }
                }
                Err(e) => {
                    tracing::warn!("watching pods: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Ok(())
    }

    /// Runs the static pods of `dir` (read every 20 s, the kubelet's file check frequency) and
    /// keeps their mirror pods.
    async fn static_pods(self: Arc<Self>, dir: PathBuf) {
        loop {
            let pods = static_pods::read(&dir, &self.shared.node);
            let known: HashSet<String> = self.statics.lock().clone();
            for uid in known.iter().filter(|u| !pods.contains_key(*u)) {
                tracing::info!(uid, "static pod removed");
                self.statics.lock().remove(uid);
                self.remove(uid);
            }
            for (uid, pod) in &pods {
                if !known.contains(uid) {
                    tracing::info!(pod = ?pod.metadata.name, "static pod");
                    self.statics.lock().insert(uid.clone());
                    self.upsert(pod.clone());
                }
            }
            if let Err(e) =
                static_pods::sync_mirrors(&self.shared.client, &self.shared.node, &pods).await
            {
                tracing::warn!("mirror pods: {e:#}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(20)) => {}
                _ = self.mirrors_changed.notified() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Removes the containers of pods this node no longer has (deleted while the kubelet was
    /// down), every 10 s.
    async fn housekeeping(self: Arc<Self>) {
        loop {
            match self.shared.runtime.pods_on_node().await {
                Ok(pods) => {
                    for (uid, ids) in pods {
                        if self.workers.lock().contains_key(&uid) {
                            continue;
                        }
                        tracing::info!(uid, "removing the containers of a pod that is gone");
                        for id in ids {
                            if let Ok(Some(c)) = self.shared.runtime.inspect(&id).await
                                && let Some(ip) = &c.ip
                            {
                                self.shared.runtime.release_ip(ip);
                            }
                            let _ = self.shared.runtime.stop(&id, 2).await;
                            if let Err(e) = self.shared.runtime.remove(&id).await {
                                tracing::warn!("{e:#}");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("housekeeping: {e:#}"),
            }
            let live: HashSet<String> = self.workers.lock().keys().cloned().collect();
            for uid in self.shared.volumes.cleanup(&live).await {
                tracing::info!(uid, "removed the volumes of a pod that is gone");
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }

    fn poke(&self, uid: &str) {
        if let Some(h) = self.workers.lock().get(uid) {
            h.poke.notify_one();
        }
    }
}

/// Docker's events about this node's containers wake their pod's worker (the kubelet's PLEG).
async fn docker_events(manager: Arc<Manager>) {
    let docker = manager.shared.runtime.engine.docker.clone();
    let node = manager.shared.node.clone();
    loop {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{}={node}", labels::NODE),
                    format!("{}={}", labels::CLUSTER, manager.shared.runtime.network),
                ],
            ),
        ]);
        let mut stream = docker.events(Some(bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { break };
            let action = ev.action.as_deref().unwrap_or("");
            if !matches!(action, "start" | "die" | "oom" | "destroy") {
                continue;
            }
            if let Some(uid) = ev
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get(labels::POD_UID).cloned())
            {
                manager.poke(&uid);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
