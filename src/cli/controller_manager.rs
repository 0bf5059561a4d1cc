//! `minik controller-manager`: the controller-manager process, with kube-controller-manager's
//! flag names.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::controller_manager::{self, Config};

#[derive(Args, Debug)]
pub struct ControllerManagerArgs {
    /// Path to a kubeconfig file with the API server's address and this component's credentials.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Run the controllers only while holding the leader Lease kube-system/kube-controller-manager.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = false)]
    pub leader_elect: bool,
    /// How long a leader's Lease lasts without renewal before another may take it (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long a node may miss heartbeats before it is marked NotReady (e.g. 40s).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long a node that never posted its status may stay silent before it is marked
    /// unhealthy (e.g. 1m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub node_startup_grace_period: Duration,
    /// How many failed nodes per second get their NoExecute taint (and so lose their pods) in a
    /// healthy zone; without zone labels the whole cluster is one zone.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f32,
    /// The same rate in a partly disrupted zone (see --unhealthy-zone-threshold); 0 in zones of
    /// no more than --large-cluster-size-threshold nodes.
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f32,
    /// The share of a zone's nodes (at least 3) that must be not Ready for the zone to count as
    /// partly disrupted.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f32,
    /// Zones of more nodes than this are large: their partly disrupted rate is
    /// --secondary-node-eviction-rate rather than 0.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub large_cluster_size_threshold: i32,
    /// How many terminated (Succeeded/Failed) pods may exist before the pod garbage collector
    /// deletes the oldest; 0 or less keeps them all.
    #[arg(long, default_value_t = 12500, allow_negative_numbers = true)]
    pub terminated_pod_gc_threshold: i64,
    /// Controllers to enable: '*' (all), 'foo' (enable), '-foo' (disable); comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// If set, this root certificate authority will be included in service account's token
    /// secret (here: published in every namespace as the configMap kube-root-ca.crt). This must
    /// be a valid PEM-encoded CA bundle.
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    /// The IP address the health endpoints listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    /// The port of the HTTPS health endpoints (/healthz, /livez, /readyz).
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_serviceaccount_token_syncs: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_cron_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_ttl_after_finished_syncs: usize,
}

/// Go-style durations: `15s`, `1m30s`, `500ms`, `2h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(n.max(0.0)));
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        num.clear();
        total += v * match unit.as_str() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
    }
    if !num.is_empty() {
        return Err(format!("invalid duration {s:?}: missing unit"));
    }
    Ok(Duration::from_secs_f64(total))
}

pub fn run(a: ControllerManagerArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config {
        kubeconfig: a.kubeconfig,
        leader_elect: a.leader_elect,
        leader_elect_lease_duration: a.leader_elect_lease_duration,
        node_monitor_grace_period: a.node_monitor_grace_period,
        node_startup_grace_period: a.node_startup_grace_period,
        node_eviction_rate: a.node_eviction_rate,
        secondary_node_eviction_rate: a.secondary_node_eviction_rate,
        unhealthy_zone_threshold: a.unhealthy_zone_threshold,
        large_cluster_size_threshold: a.large_cluster_size_threshold,
        terminated_pod_gc_threshold: a.terminated_pod_gc_threshold,
        controllers: a.controllers,
        root_ca_file: a.root_ca_file.filter(|p| !p.as_os_str().is_empty()),
        bind_address: a.bind_address,
        secure_port: a.secure_port,
        concurrent_deployment_syncs: a.concurrent_deployment_syncs,
        concurrent_replicaset_syncs: a.concurrent_replicaset_syncs,
        concurrent_gc_syncs: a.concurrent_gc_syncs,
        concurrent_namespace_syncs: a.concurrent_namespace_syncs,
        concurrent_service_endpoint_syncs: a.concurrent_service_endpoint_syncs,
        concurrent_serviceaccount_syncs: a.concurrent_serviceaccount_token_syncs,
        concurrent_daemonset_syncs: a.concurrent_daemonset_syncs,
        concurrent_statefulset_syncs: a.concurrent_statefulset_syncs,
        concurrent_job_syncs: a.concurrent_job_syncs,
        concurrent_cron_job_syncs: a.concurrent_cron_job_syncs,
        concurrent_ttl_after_finished_syncs: a.concurrent_ttl_after_finished_syncs,
    };
    super::runtime()?.block_on(controller_manager::run(cfg, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: ControllerManagerArgs,
    }

    #[test]
    fn eviction_flags_have_the_real_defaults() {
        use clap::Parser;
        let a = Cli::try_parse_from(["cm", "--kubeconfig", "k"]).unwrap().a;
        assert_eq!(a.node_eviction_rate, 0.1);
        assert_eq!(a.secondary_node_eviction_rate, 0.01);
        assert_eq!(a.unhealthy_zone_threshold, 0.55);
        assert_eq!(a.large_cluster_size_threshold, 50);
        let a = Cli::try_parse_from([
            "cm",
            "--kubeconfig",
            "k",
            "--node-eviction-rate=0.5",
            "--secondary-node-eviction-rate",
            "0",
            "--unhealthy-zone-threshold=0.7",
            "--large-cluster-size-threshold=3",
        ])
        .unwrap()
        .a;
        assert_eq!(
            (
                a.node_eviction_rate,
                a.secondary_node_eviction_rate,
                a.unhealthy_zone_threshold,
                a.large_cluster_size_threshold
            ),
            (0.5, 0.0, 0.7, 3)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5x").is_err());
    }
}
