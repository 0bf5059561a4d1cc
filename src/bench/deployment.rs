//! `minik bench deployment`: a Deployment of R replicas on simulated nodes, from `create` to
//! fully available (`status.availableReplicas == R`), through every component: the
//! controller-manager's deployment and replica set controllers create the pods, the scheduler
//! binds them, the fake kubelet marks them Running and Ready, and the deployment controller
//! writes the status back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;

use super::scheduler::{FakeCluster, create_namespace};
use super::{MachineInfo, Table};

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: u32,
    pub replicas: i32,
    pub timeout: Duration,
}

/// The moments each pod was first seen created, bound and ready.
#[derive(Default)]
struct PodTimes {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

/// Runs the benchmark; prints Markdown. Returns whether the target (≤ 5 s) was met.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let cluster = FakeCluster::start("minik-bench-deployment", opts.nodes)?;
    println!(
        "## A deployment of {} replicas on simulated nodes\n",
        opts.replicas
    );
    println!("{}", MachineInfo::collect(cluster.tmp.path()).markdown());
    println!("Command: `{}`\n", super::command_line());
    let (total, pods) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&cluster, opts))?;
    drop(cluster);
    let mut t = Table::new([
        "nodes",
        "replicas",
        "all pods created",
        "all bound",
        "all ready",
        "deployment available",
    ]);
    let s =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    t.row([
        opts.nodes.to_string(),
        opts.replicas.to_string(),
        s(pods.0),
        s(pods.1),
        s(pods.2),
        s(Some(total)),
    ]);
    println!("{}", t.render());
    let ok = total <= Duration::from_secs(5);
    println!(
        "- {} replicas fully available ≤ 5 s: **{}** ({:.2} s)",
        opts.replicas,
        if ok { "PASS" } else { "FAIL" },
        total.as_secs_f64()
    );
    Ok(ok)
}

type Phases = (Option<Duration>, Option<Duration>, Option<Duration>);

async fn measure(cluster: &FakeCluster, opts: &Options) -> anyhow::Result<(Duration, Phases)> {
    let client = cluster.client().await?;
    FakeCluster::wait_nodes(&client, opts.nodes).await?;
    let ns = "bench";
    create_namespace(&client, ns).await?;
    let times: Arc<Mutex<PodTimes>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    {
        let times = times.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                let Ok(Event::Apply(p) | Event::InitApply(p)) = ev else {
                    continue;
                };
                let Some(name) = p.metadata.name.clone() else {
                    continue;
                };
                let now = Instant::now();
                let mut t = times.lock();
                t.created.entry(name.clone()).or_insert(now);
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    t.bound.entry(name.clone()).or_insert(now);
                }
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    t.ready.entry(name).or_insert(now);
                }
            }
        });
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let available: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let available = available.clone();
        let deployments = deployments.clone();
        let want = opts.replicas;
        tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher::watcher(deployments, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                if let Ok(Event::Apply(d) | Event::InitApply(d)) = ev
                    && d.status.as_ref().and_then(|s| s.available_replicas) == Some(want)
                {
                    available.lock().get_or_insert_with(Instant::now);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]},
            },
        },
    }))?;
    eprintln!("creating a deployment of {} replicas", opts.replicas);
    let start = Instant::now();
    deployments.create(&PostParams::default(), &d).await?;
    let deadline = start + opts.timeout;
    let done = loop {
        if let Some(t) = *available.lock() {
            break t;
        }
        if Instant::now() > deadline {
            let t = times.lock();
            bail!(
                "not available within {:?}: {} pods created, {} bound, {} ready",
                opts.timeout,
                t.created.len(),
                t.bound.len(),
                t.ready.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let t = times.lock();
    let want = opts.replicas.max(0) as usize;
    let last = |m: &HashMap<String, Instant>| {
        (m.len() >= want)
            .then(|| m.values().max().map(|i| *i - start))
            .flatten()
    };
    Ok((
        done - start,
        (last(&t.created), last(&t.bound), last(&t.ready)),
    ))
}
