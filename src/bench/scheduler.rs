//! `minik bench scheduler`: scheduler throughput end to end, through the API server and the
//! store, on simulated nodes (kube-scheduler's scheduler_perf measures the same: pods bound per
//! second).
//!
//! It starts a profile with `minik up --fake-nodes N` in a temp `MINIK_HOME` (store, API server,
//! scheduler, fake kubelet: the real processes), watches all pods, creates P pods (10m cpu,
//! 32Mi memory each) from C concurrent clients, and records when each pod is first seen bound.
//! Throughput is P over the time from the first create to the last binding; the scheduling rate
//! alone (first to last binding) is printed too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;

use super::{MachineInfo, Table, TempDir};

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: u32,
    pub pods: usize,
    pub clients: usize,
    pub timeout: Duration,
}

fn minik(home: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("MINIK_HOME", home)
        .env_remove("MINIK_PROFILE")
        .output()?;
    if !out.status.success() {
        bail!(
            "minik {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs the benchmark; prints Markdown. Returns whether the target was met.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let tmp = TempDir::new("minik-bench-scheduler")?;
    let home = tmp.path().join("home");
    println!("## Scheduler throughput on simulated nodes\n");
    println!("{}", MachineInfo::collect(tmp.path()).markdown());
    println!("Command: `{}`\n", super::command_line());
    let nodes = opts.nodes.to_string();
    eprintln!("starting a cluster with {} simulated nodes", opts.nodes);
    minik(
        &home,
        &[
            "up",
            "--name",
            "bench",
            "--quiet",
            "--no-kubeconfig",
            "--apiserver-port",
            "0",
            "--etcd-port",
            "0",
            "--fake-nodes",
            &nodes,
        ],
    )?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&home.join("bench"), opts));
    let _ = minik(&home, &["delete", "--all"]);
    let (first_create, first_bind, last_bind, created) = result?;
    let total = (last_bind - first_create).as_secs_f64();
    let binding = (last_bind - first_bind).as_secs_f64().max(1e-9);
    let mut t = Table::new([
        "nodes",
        "pods",
        "clients",
        "create → last bound",
        "pods/s (end to end)",
        "pods/s (first → last binding)",
    ]);
    t.row([
        opts.nodes.to_string(),
        created.to_string(),
        opts.clients.to_string(),
        format!("{total:.2} s"),
        format!("{:.0}", created as f64 / total),
        format!("{:.0}", created as f64 / binding),
    ]);
    println!("{}", t.render());
    let rate = created as f64 / total;
    let ok = rate >= 1000.0;
    println!(
        "- scheduler throughput ≥ 1,000 pods/s: **{}** ({rate:.0} pods/s)",
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(ok)
}

async fn measure(
    profile_dir: &std::path::Path,
    opts: &Options,
) -> anyhow::Result<(Instant, Instant, Instant, usize)> {
    let client =
        crate::component_base::client::from_kubeconfig(&profile_dir.join("admin.conf")).await?;
    // Wait for the fake nodes.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while nodes.list(&Default::default()).await?.items.len() < opts.nodes as usize {
        if Instant::now() > deadline {
            bail!("the simulated nodes did not register in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns = "bench";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await
        .context("creating the namespace")?;
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    {
        let bound = bound.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                    && let Some(name) = p.metadata.name
                {
                    bound.lock().entry(name).or_insert_with(Instant::now);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("creating {} pods from {} clients", opts.pods, opts.clients);
    let first_create = Instant::now();
    let results = futures_util::stream::iter(0..opts.pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{i}")},
                    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]},
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(opts.clients.max(1))
        .collect::<Vec<_>>()
        .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    eprintln!(
        "created {created} pods in {:.2} s ({:.0}/s)",
        first_create.elapsed().as_secs_f64(),
        created as f64 / first_create.elapsed().as_secs_f64()
    );
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        bail!("creating pods: {e:#}");
    }
    let deadline = Instant::now() + opts.timeout;
    loop {
        let n = bound.lock().len();
        if n >= created {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {n} of {created} pods were bound within {:?}",
                opts.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times = bound.lock();
    let first_bind = times.values().min().copied().unwrap_or(first_create);
    let last_bind = times.values().max().copied().unwrap_or(first_create);
    Ok((first_create, first_bind, last_bind, created))
}
