//! `minik scheduler`: the kube-scheduler process (kube-scheduler's flags), and
//! `minik scheduler why NAMESPACE/POD`, which prints the scheduler's reasoning for a pod.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};
use crate::cluster::setup;
use crate::scheduler::run::{self, Options};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SchedulerArgs {
    #[command(subcommand)]
    pub command: Option<SchedulerCommand>,
    #[command(flatten)]
    pub flags: SchedulerFlags,
}

#[derive(Subcommand, Debug)]
pub enum SchedulerCommand {
    /// For the scheduler's last attempt on a pod: each node's filter verdicts and plugin scores.
    Why {
        /// The pod, as NAMESPACE/NAME (or NAME in `default`).
        pod: String,
        /// The profile (cluster) name.
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// kube-scheduler's flags.
#[derive(Args, Debug)]
pub struct SchedulerFlags {
    /// The kubeconfig with the scheduler's identity and the API server's address.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Accepted for kubeadm's manifests (the health endpoint is open to local callers).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// Accepted for kubeadm's manifests (the health endpoint is open to local callers).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// The address of the HTTPS health endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    /// The port of the HTTPS health endpoint (`/healthz`, `/debug/why/NS/POD`).
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    /// Take part in leader election (a Lease `kube-scheduler` in kube-system).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
    pub leader_elect: bool,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = crate::cluster::config::parse_duration)]
    pub leader_elect_lease_duration: Duration,
}

pub fn run(a: SchedulerArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(SchedulerCommand::Why { pod, name, json }) => why(&pod, &name, json),
        None => {
            let f = a.flags;
            let Some(kubeconfig) = f.kubeconfig else {
                bail!("--kubeconfig is required: the scheduler is an API client");
            };
            let opts = Options {
                kubeconfig,
                bind_address: f.bind_address,
                secure_port: f.secure_port,
                leader_elect: f.leader_elect,
                lease_duration: f.leader_elect_lease_duration,
            };
            super::runtime()?.block_on(async move {
                tokio::select! {
                    r = run::run(opts) => r,
                    _ = super::shutdown_signal() => Ok(()),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn why(pod: &str, profile: &str, json: bool) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(profile)?;
    if !profile.exists() {
        bail!(
            "profile {:?} does not exist (`minik profile list`)",
            profile.name
        );
    }
    let cfg = setup::load_config(&profile)?;
    let key = if pod.contains('/') {
        pod.to_string()
    } else {
        format!("default/{pod}")
    };
    let path = format!("/debug/why/{key}");
    let (status, body) = super::runtime()?
        .block_on(crate::supervisor::probe::http_get(
            "127.0.0.1",
            cfg.ports.scheduler,
            &path,
            true,
        ))
        .map_err(|e| {
            anyhow::anyhow!("asking the scheduler (is it running? `minik status`): {e}")
        })?;
    if status != 200 {
        bail!("{}", body.trim());
    }
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let e: crate::scheduler::Explanation =
        serde_json::from_str(&body).context("the scheduler's answer")?;
    print!("{}", crate::scheduler::render(&e));
    Ok(ExitCode::SUCCESS)
}
