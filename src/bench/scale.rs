//! `minik bench scale`: how much a cluster of simulated nodes holds. It starts
//! `minik up --fake-nodes N`, creates P pods already bound to the nodes (spread evenly; the
//! scheduler is not what is measured here), waits until the fake kubelet reports all of them
//! Running, then times the real `kubectl get pods -A` (which pages through the list 500 pods at
//! a time, as it does against any cluster) and reports every process's memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;

use super::scheduler::{FakeCluster, create_namespace};
use super::{MachineInfo, Table, fmt_bytes};

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: u32,
    pub pods: usize,
    pub clients: usize,
    pub kubectl: String,
    pub timeout: Duration,
}

/// Runs the benchmark; prints Markdown. Returns whether every pod ran and kubectl answered.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let cluster = FakeCluster::start("minik-bench-scale", opts.nodes)?;
    println!("## {} pods on {} simulated nodes\n", opts.pods, opts.nodes);
    println!("{}", MachineInfo::collect(cluster.tmp.path()).markdown());
    println!("Command: `{}`\n", super::command_line());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (create, running) = rt.block_on(fill(&cluster, opts))?;

    // The real kubectl, as a user runs it.
    let kubeconfig = cluster.profile_dir().join("admin.conf");
    let mut kubectl_times = Vec::new();
    let mut lines = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = std::process::Command::new(&opts.kubectl)
            .args(["get", "pods", "-A", "--no-headers"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .with_context(|| format!("running {}", opts.kubectl))?;
        kubectl_times.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "kubectl get pods -A failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lines = out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    kubectl_times.sort();
    let memory: Vec<(String, u64)> = cluster
        .components()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, crate::cli::status::rss_bytes(pid)?)))
        .collect();
    drop(cluster);

    let mut t = Table::new([
        "nodes",
        "pods",
        "created in",
        "all Running after",
        "`kubectl get pods -A` (median of 3)",
        "rows",
    ]);
    t.row([
        opts.nodes.to_string(),
        opts.pods.to_string(),
        format!(
            "{:.1} s ({:.0}/s)",
            create.as_secs_f64(),
            opts.pods as f64 / create.as_secs_f64().max(1e-9)
        ),
        format!("{:.1} s", running.as_secs_f64()),
        format!("{:.2} s", kubectl_times[1].as_secs_f64()),
        lines.to_string(),
    ]);
    println!("{}", t.render());
    let mut m = Table::new(["process", "RSS"]).left(0);
    let mut total = 0;
    for (name, rss) in &memory {
        total += rss;
        m.row([name.clone(), fmt_bytes(*rss)]);
    }
    m.row(["total".to_string(), fmt_bytes(total)]);
    println!("{}", m.render());
    let ok = lines >= opts.pods;
    println!(
        "- {} pods held, `kubectl get pods -A` lists them all: **{}**",
        opts.pods,
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(ok)
}

/// Creates the pods bound round-robin to the nodes; returns (create time, time until all ran).
async fn fill(cluster: &FakeCluster, opts: &Options) -> anyhow::Result<(Duration, Duration)> {
    let client = cluster.client().await?;
    FakeCluster::wait_nodes(&client, opts.nodes).await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default().labels(&format!("{}=true", crate::fake_kubelet::FAKE_LABEL)))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    if names.is_empty() {
        bail!("no simulated nodes found");
    }
    names.sort();
    let ns = "bench";
    create_namespace(&client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        let running = running.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && let Some(name) = p.metadata.name
                {
                    running.lock().insert(name);
                }
            }
        });
    }
    eprintln!("creating {} pods from {} clients", opts.pods, opts.clients);
    let start = Instant::now();
    let names = &names;
    let results = futures_util::stream::iter(0..opts.pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{i}")},
                    "spec": {
                        "nodeName": names[i % names.len()],
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}],
                    },
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(opts.clients.max(1))
        .collect::<Vec<_>>()
        .await;
    let create = start.elapsed();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        bail!("creating pods: {e:#}");
    }
    eprintln!(
        "created in {:.1} s; waiting for Running",
        create.as_secs_f64()
    );
    let deadline = start + opts.timeout;
    loop {
        let n = running.lock().len();
        if n >= opts.pods {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {n} of {} pods Running within {:?}",
                opts.pods,
                opts.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((create, start.elapsed()))
}
