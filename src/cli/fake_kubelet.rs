//! `minik fake-kubelet`: simulated nodes (the process the supervisor runs for
//! `minik up --fake-nodes N`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::fake_kubelet::{self, NodeProfile, Options};

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
