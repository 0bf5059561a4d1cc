//! `minik node list / add / delete / stop / start`: the cluster's nodes.
//!
//! Real nodes are kubelets the supervisor runs from `<state>/nodes/<node>.yaml`
//! ([`crate::cluster::nodes`]): `add` writes a unit (the supervisor starts its kubelet within a
//! second), `stop` sets it aside and stops the node's containers (as powering off a minikube
//! node does: the node goes NotReady and its pods are replaced elsewhere), `start` brings it
//! back, `delete` removes the kubelet, the Node and the node's containers. Simulated nodes
//! (`minik fake-kubelet`) are stopped and started by their heartbeat annotation.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::cluster::nodes::{self, STOPPED_SUFFIX};
use crate::cluster::profile::{DEFAULT_PROFILE, Profile};
use crate::cluster::setup;
use crate::fake_kubelet::{FAKE_LABEL, HEARTBEAT_ANNOTATION};

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// The cluster's nodes.
    List {
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Add a worker node (a new kubelet).
    Add {
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
        /// How long to wait for the node to be Ready.
        #[arg(long, default_value = "60s", value_parser = crate::cluster::config::parse_duration)]
        wait: Duration,
    },
    /// Delete a node: its kubelet, its containers and the Node.
    Delete {
        node: String,
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Stop a node (its kubelet and containers; a simulated node's heartbeat).
    Stop {
        node: String,
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Start a stopped node.
    Start {
        node: String,
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
}

fn existing(name: &str) -> anyhow::Result<Profile> {
    let profile = Profile::named(name)?;
    if !profile.exists() {
        bail!(
            "profile {:?} does not exist (`minik profile list`)",
            profile.name
        );
    }
    Ok(profile)
}

pub fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::List { name } => list(&existing(&name)?),
        NodeCommand::Add { name, wait } => add(&existing(&name)?, wait),
        NodeCommand::Delete { node, name } => delete(&existing(&name)?, &node),
        NodeCommand::Stop { node, name } => stop_start(&existing(&name)?, &node, true),
        NodeCommand::Start { node, name } => stop_start(&existing(&name)?, &node, false),
    }
}

async fn client(profile: &Profile) -> anyhow::Result<kube::Client> {
    crate::component_base::client::from_kubeconfig(&profile.conf("admin")).await
}

fn ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown".to_string(), |c| c.status.clone())
}

fn list(profile: &Profile) -> anyhow::Result<ExitCode> {
    let units = nodes::list(profile)?;
    super::runtime()?.block_on(async move {
        let api: Api<Node> = Api::all(client(profile).await?);
        let listed = api
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        println!(
            "{:<24} {:<8} {:<10} {:<8} STATE",
            "NAME", "KIND", "READY", "PORT"
        );
        let mut shown = Vec::new();
        for n in listed.items {
            let name = n.metadata.name.clone().unwrap_or_default();
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let unit = units.iter().find(|u| u.name == name);
            let (kind, state, port) = if labels.contains_key(FAKE_LABEL) {
                let hb = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HEARTBEAT_ANNOTATION).cloned())
                    .unwrap_or_else(|| "running".into());
                ("fake", format!("heartbeat {hb}"), "-".to_string())
            } else {
                let state = match unit {
                    Some(u) if u.stopped => "stopped",
                    Some(_) => "running",
                    None => "no unit",
                };
                (
                    "kubelet",
                    state.to_string(),
                    unit.map_or("-".into(), |u| u.port.to_string()),
                )
            };
            println!("{name:<24} {kind:<8} {:<10} {port:<8} {state}", ready(&n));
            shown.push(name);
        }
        for u in units.iter().filter(|u| !shown.contains(&u.name)) {
            println!(
                "{:<24} {:<8} {:<10} {:<8} {}",
                u.name,
                "kubelet",
                "-",
                u.port,
                if u.stopped {
                    "stopped"
                } else {
                    "starting (not registered yet)"
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn unit_path(profile: &Profile, node: &str, stopped: bool) -> std::path::PathBuf {
    let file = if stopped {
        format!("{node}.yaml{STOPPED_SUFFIX}")
    } else {
        format!("{node}.yaml")
    };
    nodes::nodes_dir(profile).join(file)
}

fn add(profile: &Profile, wait: Duration) -> anyhow::Result<ExitCode> {
    let cfg = setup::load_config(profile)?;
    let units = nodes::list(profile)?;
    let index = units.iter().map(|u| u.index + 1).max().unwrap_or(0);
    if index >= 100 {
        bail!("a cluster has at most 100 nodes");
    }
    let port = nodes::kubelet_port(profile, &cfg, index)?;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!("{}", crate::cluster::ports::in_use_message(port));
    }
    let node = nodes::write(profile, &cfg, index, port, false)?;
    println!("* Adding node {node:?} (kubelet port {port})");
    let started = Instant::now();
    super::runtime()?.block_on(async {
        let api: Api<Node> = Api::all(client(profile).await?);
        loop {
            if let Ok(Some(n)) = api.get_opt(&node).await
                && ready(&n) == "True"
            {
                println!(
                    "* Node {node:?} is Ready ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if started.elapsed() > wait {
                bail!(
                    "node {node:?} is not Ready after {}s; see `minik logs kubelet-{node}`",
                    wait.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Waits until the supervisor has stopped the node's kubelet (its unit is gone or stopped).
fn wait_kubelet_gone(profile: &Profile, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let component = format!("kubelet-{node}");
    while Instant::now() < deadline {
        let running = crate::supervisor::state::SupervisorState::read(&profile.state_file())
            .map(|st| {
                st.components
                    .iter()
                    .any(|c| c.name == component && c.pid.is_some())
            })
            .unwrap_or(false);
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops (or removes) the node's containers.
async fn node_containers(profile: &Profile, node: &str, remove: bool) -> anyhow::Result<usize> {
    use crate::kubelet::{docker, runtime};
    let cfg = setup::load_config(profile)?;
    let network = nodes::network(profile, &cfg);
    let Ok(engine) = docker::Engine::connect().await else {
        return Ok(0);
    };
    if remove {
        runtime::remove_pod_containers(&engine, &network, Some(node)).await
    } else {
        runtime::stop_pod_containers(&engine, &network, Some(node)).await
    }
}

fn delete(profile: &Profile, node: &str) -> anyhow::Result<ExitCode> {
    let units = nodes::list(profile)?;
    let Some(unit) = units.iter().find(|u| u.name == node) else {
        bail!(
            "node {node:?} is not a node of profile {:?} (`minik node list`)",
            profile.name
        );
    };
    if unit.index == 0 {
        bail!("node {node:?} is the control-plane node; `minik delete` deletes the cluster");
    }
    let path = unit_path(profile, node, unit.stopped);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    wait_kubelet_gone(profile, node);
    super::runtime()?.block_on(async {
        let removed = node_containers(profile, node, true).await?;
        let api: Api<Node> = Api::all(client(profile).await?);
        match api.delete(node, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(anyhow::anyhow!("deleting node {node}: {e}")),
        }
        for f in [
            profile.conf(&format!("kubelet-{node}")),
            profile.pki_dir().join(format!("kubelet-{node}-client.crt")),
            profile.pki_dir().join(format!("kubelet-{node}-client.key")),
            profile
                .pki_dir()
                .join(format!("kubelet-{node}-serving.crt")),
            profile
                .pki_dir()
                .join(format!("kubelet-{node}-serving.key")),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(profile.dir.join("kubelet").join(node));
        println!("* Deleted node {node:?} ({removed} containers removed)");
        Ok(ExitCode::SUCCESS)
    })
}

fn stop_start(profile: &Profile, node: &str, stop: bool) -> anyhow::Result<ExitCode> {
    let units = nodes::list(profile)?;
    if let Some(unit) = units.iter().find(|u| u.name == node) {
        if unit.stopped == stop {
            println!(
                "* Node {node:?} is already {}",
                if stop { "stopped" } else { "running" }
            );
            return Ok(ExitCode::SUCCESS);
        }
        let (from, to) = (
            unit_path(profile, node, !stop),
            unit_path(profile, node, stop),
        );
        std::fs::rename(&from, &to).with_context(|| format!("renaming {}", from.display()))?;
        if stop {
            wait_kubelet_gone(profile, node);
            let n = super::runtime()?.block_on(node_containers(profile, node, false))?;
            println!(
                "* Stopped node {node:?}: its kubelet and {n} containers (the node goes NotReady \
                 once its Lease expires)"
            );
        } else {
            println!("* Started node {node:?}: its kubelet is starting");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A simulated node: its heartbeat.
    super::runtime()?.block_on(async {
        let api: Api<Node> = Api::all(client(profile).await?);
        let n = api
            .get_opt(node)
            .await?
            .with_context(|| format!("node {node:?} not found"))?;
        if !n
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(FAKE_LABEL))
        {
            bail!(
                "node {node:?} has no kubelet unit in profile {:?} and is not a simulated node",
                profile.name
            );
        }
        let value = if stop {
            serde_json::Value::String("stopped".into())
        } else {
            serde_json::Value::Null
        };
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {HEARTBEAT_ANNOTATION: value}}}),
            ),
        )
        .await?;
        println!(
            "* node {node:?}: heartbeat {}",
            if stop {
                "stopped (its Lease is no longer renewed)"
            } else {
                "resumed"
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}
