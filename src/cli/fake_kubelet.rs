//! `minik fake-kubelet`: simulated nodes (the process the supervisor runs for
//! `minik up --fake-nodes N`), and `minik node list / stop / start`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};
use crate::fake_kubelet::{self, HEARTBEAT_ANNOTATION, NodeProfile, Options};

#[derive(Args, Debug)]
pub struct FakeKubeletArgs {
    /// The kubeconfig of the API server.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How many default nodes (`fake-0` …) to simulate (ignored with --fake-node-profile).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// A YAML file `nodes: [{count, namePrefix, capacity, labels, taints}]`.
    #[arg(long)]
    pub fake_node_profile: Option<PathBuf>,
    /// How long a pod bound to a fake node takes to become Running.
    #[arg(long, default_value = "0s", value_parser = parse_delay)]
    pub pod_ready_delay: Duration,
    /// How often node Leases are renewed.
    #[arg(long, default_value = "10s", value_parser = crate::cluster::config::parse_duration)]
    pub heartbeat: Duration,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    if s == "0" || s == "0s" {
        return Ok(Duration::ZERO);
    }
    crate::cluster::config::parse_duration(s)
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// The cluster's nodes.
    List {
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Stop a node's heartbeat (a simulated node failure).
    Stop {
        node: String,
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Resume a stopped node's heartbeat.
    Start {
        node: String,
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
}

pub fn run(a: FakeKubeletArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.fake_node_profile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            NodeProfile::parse(&text, &path.display().to_string())?
        }
        None => NodeProfile::uniform(a.nodes),
    };
    let opts = Options {
        kubeconfig: a.kubeconfig,
        profile,
        pod_ready_delay: a.pod_ready_delay,
        heartbeat: a.heartbeat,
    };
    super::runtime()?.block_on(async move {
        tokio::select! {
            r = fake_kubelet::run(opts) => r,
            _ = super::shutdown_signal() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn node(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    let (name, target, stop) = match &cmd {
        NodeCommand::List { name } => (name.clone(), None, false),
        NodeCommand::Stop { node, name } => (name.clone(), Some(node.clone()), true),
        NodeCommand::Start { node, name } => (name.clone(), Some(node.clone()), false),
    };
    let profile = Profile::named(&name)?;
    if !profile.exists() {
        bail!(
            "profile {:?} does not exist (`minik profile list`)",
            profile.name
        );
    }
    super::runtime()?.block_on(async move {
        let client = crate::component_base::client::from_kubeconfig(&profile.conf("admin")).await?;
        let api: Api<Node> = Api::all(client);
        let Some(node) = target else {
            let list = api
                .list(&ListParams::default())
                .await
                .context("listing nodes")?;
            println!("{:<24} {:<8} {:<10} HEARTBEAT", "NAME", "KIND", "READY");
            for n in list.items {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .map_or("Unknown".to_string(), |c| c.status.clone());
                let labels = n.metadata.labels.clone().unwrap_or_default();
                let fake = labels.contains_key(fake_kubelet::FAKE_LABEL);
                let hb = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HEARTBEAT_ANNOTATION).cloned())
                    .unwrap_or_else(|| "running".into());
                println!(
                    "{:<24} {:<8} {:<10} {hb}",
                    n.metadata.name.unwrap_or_default(),
                    if fake { "fake" } else { "kubelet" },
                    ready
                );
            }
            return Ok(ExitCode::SUCCESS);
        };
        let n = api
            .get_opt(&node)
            .await?
            .with_context(|| format!("node {node:?} not found"))?;
        if !n
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(fake_kubelet::FAKE_LABEL))
        {
            bail!(
                "node {node:?} is not a simulated node: real nodes come with the kubelet (issue 6)"
            );
        }
        let value = if stop {
            json_str("stopped")
        } else {
            serde_json::Value::Null
        };
        api.patch(
            &node,
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

fn json_str(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.to_string())
}
