//! `minik bench kubelet`: pod start-up latency on a real node, beside bare Docker.
//!
//! A cluster with one real node (`minik up --nodes 1`, its kubelet running pods in the local
//! Docker engine). First 20 pods run and the kubelet's resident memory is read; then N pods
//! (50 by default) are created at once and each one's latency from its create request to the
//! watch showing it Running is taken (the Kubernetes pod start-up SLI, image present). In the
//! same run, bare Docker through the same engine API — the floor under any kubelet: N pause
//! containers one at a time and at once, and N pod-shaped pairs at once (a pause container and a
//! second one joined to its namespaces, the engine work of one pod).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;

use super::etcd::percentile;
use super::scheduler::{FakeCluster, create_namespace};
use super::{MachineInfo, Table};

#[derive(Debug, Clone)]
pub struct Options {
    /// Pods created at once.
    pub pods: usize,
    pub timeout: Duration,
}

const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Runs the benchmark; prints Markdown. Returns whether the targets were met.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let cluster = FakeCluster::start_with("minik-bench-kubelet", &["--nodes", "1"])?;
    println!("## Pod start-up on a real node (kubelet + Docker)\n");
    println!("{}", MachineInfo::collect(cluster.tmp.path()).markdown());
    println!("Command: `{}`\n", super::command_line());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(measure(&cluster, opts));
    drop(cluster);
    let r = r?;
    let mut t = Table::new(["what", "n", "p50", "p99", "max"]);
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut row = |what: &str, v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        t.row([
            what.to_string(),
            v.len().to_string(),
            ms(percentile(&v, 50.0)),
            ms(percentile(&v, 99.0)),
            ms(v.last().copied().unwrap_or_default()),
        ]);
    };
    row("bare Docker: create+start, one at a time", &r.docker_serial);
    row(
        &format!("bare Docker: create+start, {} at once", opts.pods),
        &r.docker_parallel,
    );
    row(
        &format!(
            "bare Docker: pod-shaped (pause + joined container), {} at once",
            opts.pods
        ),
        &r.docker_pods,
    );
    row(
        &format!("pod create → Running (watch), {} at once", opts.pods),
        &r.pods,
    );
    println!("{}", t.render());
    let mut sorted = r.pods.clone();
    sorted.sort();
    let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let mut m = Table::new(["kubelet memory", "RSS", "PSS", "private"]);
    for (what, mem) in [
        ("with 20 pods".to_string(), r.mem_20),
        (format!("with {} pods", opts.pods), r.mem_n),
    ] {
        m.row([what, mib(mem.rss), mib(mem.pss), mib(mem.private)]);
    }
    println!(
        "\n{}\nRSS counts the pages of the multi-call `minik` binary's code the kubelet touched; the \
         control-plane processes map the same pages (PSS shares them out; private is the kubelet's \
         own).\n",
        m.render()
    );
    let lat_ok = p50 <= Duration::from_millis(800) && p99 <= Duration::from_millis(1500);
    let mem_ok = r.mem_20.rss <= 30 * 1024;
    println!(
        "- pod start-up p50 ≤ 0.8 s and p99 ≤ 1.5 s: **{}** (p50 {}, p99 {})",
        if lat_ok { "PASS" } else { "FAIL" },
        ms(p50),
        ms(p99)
    );
    println!(
        "- kubelet RSS with 20 pods ≤ 30 MB: **{}** ({})",
        if mem_ok { "PASS" } else { "FAIL" },
        mib(r.mem_20.rss)
    );
    Ok(lat_ok && mem_ok)
}

struct Results {
    docker_serial: Vec<Duration>,
    docker_parallel: Vec<Duration>,
    docker_pods: Vec<Duration>,
    pods: Vec<Duration>,
    mem_20: Memory,
    mem_n: Memory,
}

/// A process's memory from `/proc/PID/smaps_rollup`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    /// Resident set: every page mapped, also the binary's code pages other processes share.
    rss: u64,
    /// Proportional set: shared pages divided among the processes that map them.
    pss: u64,
    /// Private (unique) pages: what the process alone costs.
    private: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
                .unwrap_or(0)
        };
        Memory {
            rss: field("Rss:"),
            pss: field("Pss:"),
            private: field("Private_Clean:") + field("Private_Dirty:"),
        }
    }
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "kubelet"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent"}],
        },
    }))?)
}

/// Creates `names` at once; returns each pod's create→Running latency.
async fn start_pods(
    client: &kube::Client,
    ns: &str,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let running = running.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                let Ok(Event::Apply(p) | Event::InitApply(p)) = ev else {
                    continue;
                };
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && let Some(n) = p.metadata.name.clone()
                {
                    running.lock().entry(n).or_insert_with(Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut created = HashMap::new();
    let creates = names.iter().map(|n| {
        let api = api.clone();
        let n = n.clone();
        async move {
            let p = pod(&n)?;
            let t = Instant::now();
            api.create(&PostParams::default(), &p).await?;
            anyhow::Ok((n, t))
        }
    });
    for r in futures_util::future::join_all(creates).await {
        let (n, t) = r?;
        created.insert(n, t);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if running.lock().len() >= names.len() {
            break;
        }
        if Instant::now() > deadline {
            watch.abort();
            bail!(
                "only {} of {} pods Running within {timeout:?}",
                running.lock().len(),
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let running = running.lock();
    Ok(names
        .iter()
        .filter_map(|n| Some(*running.get(n)? - *created.get(n)?))
        .collect())
}

async fn delete_all(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods not gone after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Bare Docker: pause containers created and started through the engine API.
/// How the bare-Docker floor is shaped.
#[derive(Clone, Copy)]
enum Shape {
    /// One pause container per "pod".
    Single,
    /// What a pod costs the engine: a pause container owning the network namespace and a second
    /// container joined to its network and IPC namespaces, as the kubelet makes them.
    Pod,
}

/// Creates and starts `n` bare containers (or container pairs), one at a time or all at once;
/// returns each one's create→started time.
async fn docker_starts(n: usize, parallel: bool, shape: Shape) -> anyhow::Result<Vec<Duration>> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
    let engine = crate::kubelet::docker::Engine::connect().await?;
    let docker = engine.docker.clone();
    let one = |i: usize| {
        let docker = docker.clone();
        async move {
            let name = format!("minik-bench-docker-{}-{i}", std::process::id());
            let mut ids = Vec::new();
            let t = Instant::now();
            let run = async {
                let c = docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(name.clone()),
                            ..Default::default()
                        }),
                        ContainerCreateBody {
                            image: Some(IMAGE.into()),
                            // A pod's sandbox lends its IPC namespace to the pod's containers.
                            host_config: matches!(shape, Shape::Pod).then(|| HostConfig {
                                ipc_mode: Some("shareable".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )
                    .await?;
                ids.push(c.id.clone());
                docker.start_container(&c.id, None).await?;
                if let Shape::Pod = shape {
                    let joined = format!("container:{}", c.id);
                    let app = docker
                        .create_container(
                            Some(CreateContainerOptions {
                                name: Some(format!("{name}-app")),
                                ..Default::default()
                            }),
                            ContainerCreateBody {
                                image: Some(IMAGE.into()),
                                host_config: Some(HostConfig {
                                    network_mode: Some(joined.clone()),
                                    ipc_mode: Some(joined),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        )
                        .await?;
                    ids.push(app.id.clone());
                    docker.start_container(&app.id, None).await?;
                }
                anyhow::Ok(())
            };
            let r = run.await;
            (r.map(|()| t.elapsed()), ids)
        }
    };
    let mut results = Vec::new();
    if parallel {
        results = futures_util::future::join_all((0..n).map(one)).await;
    } else {
        for i in 0..n {
            results.push(one(i).await);
        }
    }
    let mut out = Vec::new();
    let mut err = None;
    for (r, ids) in results {
        for id in ids.iter().rev() {
            let _ = docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
        match r {
            Ok(d) => out.push(d),
            Err(e) => err = Some(e),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    Ok(out)
}

async fn measure(cluster: &FakeCluster, opts: &Options) -> anyhow::Result<Results> {
    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns = "bench";
    create_namespace(&client, ns).await?;
    // The service account and root CA the pods' token volume needs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kubelet_pid = cluster
        .components()
        .into_iter()
        .find(|(n, _)| n.starts_with("kubelet-"))
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow::anyhow!("no kubelet process"))?;

    eprintln!(
        "bare Docker: {} containers one at a time, then at once",
        opts.pods
    );
    let docker_serial = docker_starts(opts.pods, false, Shape::Single).await?;
    let docker_parallel = docker_starts(opts.pods, true, Shape::Single).await?;
    eprintln!(
        "bare Docker, pod-shaped (pause + a container in its namespaces): {} at once",
        opts.pods
    );
    let docker_pods = docker_starts(opts.pods, true, Shape::Pod).await?;

    eprintln!("20 pods for the kubelet's memory");
    let twenty: Vec<String> = (0..20).map(|i| format!("mem-{i}")).collect();
    start_pods(&client, ns, &twenty, opts.timeout).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mem_20 = Memory::of(kubelet_pid);
    delete_all(&client, ns).await?;

    eprintln!("{} pods at once", opts.pods);
    let names: Vec<String> = (0..opts.pods).map(|i| format!("start-{i}")).collect();
    let pods = start_pods(&client, ns, &names, opts.timeout).await?;
    let mem_n = Memory::of(kubelet_pid);
    delete_all(&client, ns).await?;
    Ok(Results {
        docker_serial,
        docker_parallel,
        docker_pods,
        pods,
        mem_20,
        mem_n,
    })
}
