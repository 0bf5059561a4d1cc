//! `minik bench scheduler`: scheduler throughput end to end, through the API server and the
//! store, on simulated nodes (kube-scheduler's scheduler_perf measures the same: pods bound per
//! second).
//!
//! It starts a profile with `minik up --fake-nodes N` in a temp `MINIK_HOME` (store, API server,
//! controller-manager, scheduler, fake kubelet: the real processes), watches all pods, and
//! creates P pods (10m cpu, 32Mi memory each) from C concurrent clients.
//!
//! - `--mode pending` (the default, as scheduler_perf): the scheduler is stopped first (its
//!   static-pod manifest moved out of `manifests/`, as one stops a kubeadm static pod), the P
//!   pods are created and wait Pending, then the manifest goes back and the scheduler starts on
//!   a backlog of P pods. Throughput is P over the time from its first to its last binding.
//! - `--mode streaming`: the scheduler runs while the pods are created; throughput is P over the
//!   time from the first create to the last binding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;

use super::{MachineInfo, Table, TempDir};

/// How the pods meet the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Create every pod while the scheduler is stopped, then start it on the backlog.
    Pending,
    /// Create the pods while the scheduler runs.
    Streaming,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: u32,
    pub pods: usize,
    pub clients: usize,
    pub timeout: Duration,
    pub mode: Mode,
}

fn minik(home: &Path, args: &[&str]) -> anyhow::Result<()> {
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

/// A profile `bench` with N simulated nodes in a temp `MINIK_HOME`, deleted on drop.
pub(super) struct FakeCluster {
    home: PathBuf,
    pub tmp: TempDir,
}

impl FakeCluster {
    /// `minik up --fake-nodes N` (the real processes on free ports).
    pub fn start(prefix: &str, nodes: u32) -> anyhow::Result<FakeCluster> {
        eprintln!("starting a cluster with {nodes} simulated nodes");
        FakeCluster::start_with(prefix, &["--fake-nodes", &nodes.to_string()])
    }

    /// `minik up` of a profile `bench` on free ports with `extra` flags (`--nodes 1` for a
    /// real kubelet node).
    pub fn start_with(prefix: &str, extra: &[&str]) -> anyhow::Result<FakeCluster> {
        let tmp = TempDir::new(prefix)?;
        let home = tmp.path().join("home");
        let c = FakeCluster { home, tmp };
        let mut args = vec![
            "up",
            "--name",
            "bench",
            "--quiet",
            "--no-kubeconfig",
            "--apiserver-port",
            "0",
            "--etcd-port",
            "0",
        ];
        args.extend_from_slice(extra);
        minik(&c.home, &args)?;
        Ok(c)
    }

    pub fn profile_dir(&self) -> PathBuf {
        self.home.join("bench")
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        crate::component_base::client::from_kubeconfig(&self.profile_dir().join("admin.conf")).await
    }

    /// Waits until `n` nodes are registered.
    pub async fn wait_nodes(client: &kube::Client, n: u32) -> anyhow::Result<()> {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        while nodes.list(&Default::default()).await?.items.len() < n as usize {
            if Instant::now() > deadline {
                bail!("the simulated nodes did not register in time");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// The PIDs and names of the profile's component processes (from the supervisor's state).
    pub fn components(&self) -> Vec<(String, u32)> {
        let Ok(text) = std::fs::read_to_string(self.profile_dir().join("run/state.json")) else {
            return Vec::new();
        };
        let Ok(state) = serde_json::from_str::<crate::supervisor::state::SupervisorState>(&text)
        else {
            return Vec::new();
        };
        let mut out: Vec<(String, u32)> = state
            .components
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.pid?)))
            .collect();
        out.push(("supervisor".to_string(), state.pid));
        out
    }

    /// Stops (`run = false`) or starts a control-plane component by moving its static-pod
    /// manifest out of or back into `manifests/`, and waits until the supervisor agrees.
    pub async fn set_running(&self, component: &str, run: bool) -> anyhow::Result<()> {
        let file = format!("{component}.yaml");
        let inside = self.profile_dir().join("manifests").join(&file);
        let aside = self.profile_dir().join(format!("{file}.stopped"));
        if run {
            std::fs::rename(&aside, &inside).context("restoring the manifest")?;
        } else {
            std::fs::rename(&inside, &aside).context("moving the manifest aside")?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running = self.components().iter().any(|(n, _)| n == component);
            if running == run {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the supervisor did not {} {component}",
                    if run { "start" } else { "stop" }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = minik(&self.home, &["delete", "--all"]);
    }
}

/// Creates a namespace (ignoring AlreadyExists).
pub(super) async fn create_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating the namespace"),
    }
}

/// Runs the benchmark; prints Markdown. Returns whether the target was met.
pub fn run(opts: &Options) -> anyhow::Result<bool> {
    let cluster = FakeCluster::start("minik-bench-scheduler", opts.nodes)?;
    println!("## Scheduler throughput on simulated nodes\n");
    println!("{}", MachineInfo::collect(cluster.tmp.path()).markdown());
    println!("Command: `{}`\n", super::command_line());
    let m = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&cluster, opts))?;
    drop(cluster);
    let (label, start) = match opts.mode {
        Mode::Pending => ("scheduler started → last bound", m.released),
        Mode::Streaming => ("first create → last bound", m.first_create),
    };
    let total = (m.last_bind - start).as_secs_f64().max(1e-9);
    let binding = (m.last_bind - m.first_bind).as_secs_f64().max(1e-9);
    let mut t = Table::new([
        "mode",
        "nodes",
        "pods",
        "clients",
        "created/s",
        label,
        "pods/s (first → last binding)",
    ]);
    t.row([
        format!("{:?}", opts.mode).to_lowercase(),
        opts.nodes.to_string(),
        m.created.to_string(),
        opts.clients.to_string(),
        format!("{:.0}", m.create_rate),
        format!("{total:.2} s"),
        format!("{:.0}", m.created as f64 / binding),
    ]);
    println!("{}", t.render());
    // Pending: the scheduler's own rate on a backlog; streaming: end to end incl. creation.
    let rate = match opts.mode {
        Mode::Pending => m.created as f64 / binding,
        Mode::Streaming => m.created as f64 / total,
    };
    let ok = rate >= 1000.0;
    println!(
        "- scheduler throughput ≥ 1,000 pods/s: **{}** ({rate:.0} pods/s)",
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(ok)
}

struct Measured {
    first_create: Instant,
    /// When the scheduler was started again (pending mode; else the first create).
    released: Instant,
    first_bind: Instant,
    last_bind: Instant,
    created: usize,
    create_rate: f64,
}

/// Watches pods in `ns`; returns when each was first seen bound to a node.
pub(super) fn watch_bound(pods: Api<Pod>) -> Arc<Mutex<HashMap<String, Instant>>> {
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let b = bound.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
        while let Some(ev) = stream.next().await {
            if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev
                && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && let Some(name) = p.metadata.name
            {
                b.lock().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    bound
}

async fn measure(cluster: &FakeCluster, opts: &Options) -> anyhow::Result<Measured> {
    let client = cluster.client().await?;
    FakeCluster::wait_nodes(&client, opts.nodes).await?;
    if opts.mode == Mode::Pending {
        eprintln!("stopping the scheduler");
        cluster.set_running("kube-scheduler", false).await?;
    }
    let ns = "bench";
    create_namespace(&client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let bound = watch_bound(pods.clone());
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
    let create_rate = created as f64 / first_create.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "created {created} pods in {:.2} s ({create_rate:.0}/s)",
        first_create.elapsed().as_secs_f64(),
    );
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        bail!("creating pods: {e:#}");
    }
    let mut released = first_create;
    if opts.mode == Mode::Pending {
        let early = bound.lock().len();
        if early > 0 {
            bail!("{early} pods were bound while the scheduler was stopped");
        }
        eprintln!("starting the scheduler on {created} pending pods");
        released = Instant::now();
        cluster.set_running("kube-scheduler", true).await?;
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
    Ok(Measured {
        first_create,
        released,
        first_bind,
        last_bind,
        created,
        create_rate,
    })
}
