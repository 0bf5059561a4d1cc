//! `minik bench …`: benchmarks against the real components, printed as Markdown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::bench::apiserver::{self, Protocol, Section, StoreChoice};
use crate::bench::etcd::{self, Load, Target};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// minik's etcd-compatible store against the real etcd, side by side (Markdown on stdout).
    ///
    /// Runs single-client put latency, a Range over 100k keys and `etcdctl check perf` (60 s per
    /// load and server; ~5 minutes with the default loads) against freshly started servers.
    Etcd(EtcdBenchArgs),
    /// An etcd KV endpoint that acknowledges puts without storing anything, on the store's own
    /// gRPC serving threads: the instrument behind `minik bench etcd --ceiling`. Not a store.
    #[command(hide = true)]
    EtcdNoopServer {
        /// Where to listen (http:// only), as etcd's flag.
        #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
        listen_client_urls: Vec<String>,
    },
    /// `minik apiserver` on minik's store and on the real etcd, side by side (Markdown on stdout).
    ///
    /// Single-object GET/CREATE/UPDATE latency at 1, 10 and 100 clients, LIST of 10,000 pods
    /// (JSON and Table, whole and paged) and a watch fan-out of 10,000 events to 100 watchers,
    /// each against a freshly started store + API server (~3 minutes with the defaults). Exits
    /// non-zero when something is incorrect (failed requests, lost or reordered watch events);
    /// missed performance targets are reported as FAIL lines only.
    Apiserver(ApiServerBenchArgs),
    /// `minik up` to a ready control plane (new profile and resume), and the idle control
    /// plane's memory (RSS and PSS of every process). Markdown on stdout.
    Up(UpBenchArgs),
    /// Scheduler throughput end to end on simulated nodes (`minik up --fake-nodes`): pods
    /// bound per second. Markdown on stdout.
    Scheduler(SchedulerBenchArgs),
    /// A Deployment of R replicas on simulated nodes, from create to fully available (the
    /// controller-manager, scheduler and fake kubelet at work). Markdown on stdout.
    Deployment(DeploymentBenchArgs),
    /// Many pods on simulated nodes (created bound, run by the fake kubelet): the time to run
    /// them, the real `kubectl get pods -A` over all of them, every process's memory.
    Scale(ScaleBenchArgs),
    /// Pod start-up latency on a real node (kubelet + Docker) beside bare Docker create+start,
    /// and the kubelet's memory with 20 pods. Markdown on stdout.
    Kubelet(KubeletBenchArgs),
}

#[derive(Args, Debug)]
pub struct KubeletBenchArgs {
    /// Pods created at once.
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct ScaleBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Pods to hold.
    #[arg(long, default_value_t = 100_000)]
    pub pods: usize,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// The kubectl binary to time.
    #[arg(long, default_value = "kubectl")]
    pub kubectl: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct DeploymentBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Replicas of the deployment.
    #[arg(long, default_value_t = 1000)]
    pub replicas: i32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct SchedulerBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Pods to create and schedule.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// `pending`: create every pod with the scheduler stopped, then time the scheduler on the
    /// backlog (as scheduler_perf); `streaming`: create while it runs.
    #[arg(long, value_enum, default_value = "pending")]
    pub mode: crate::bench::scheduler::Mode,
}

#[derive(Args, Debug)]
pub struct UpBenchArgs {
    /// How many profiles to bring up (each: new, down, resume, delete).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds the first control plane idles before its memory is read.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
}

#[derive(Args, Debug)]
pub struct ApiServerBenchArgs {
    /// The store(s) under the API server: minik's, the real etcd's, or both side by side.
    #[arg(long, value_enum, default_value = "both")]
    pub store: StoreChoice,
    /// The real etcd server binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// The HTTP version of the client (HTTP/2 is what client-go and kubectl use).
    #[arg(long, value_enum, default_value = "h2")]
    pub protocol: Protocol,
    /// Sections to run (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["single", "list", "watch"])]
    pub section: Vec<Section>,
    /// Concurrent clients of the single-object section (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    pub clients: Vec<usize>,
    /// Seconds each single-object measurement runs (per call, object and client count).
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Requests per client in each single-object measurement, instead of --duration.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Pods created, then listed, by the LIST section.
    #[arg(long, default_value_t = 10_000)]
    pub list_pods: usize,
    /// Runs of each LIST variant (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub list_runs: usize,
    /// `limit` of the paged LISTs (kubectl's chunk size).
    #[arg(long, default_value_t = 500)]
    pub page_size: usize,
    /// Creates in flight while loading the LIST section's pods.
    #[arg(long, default_value_t = 50)]
    pub load_clients: usize,
    /// Watchers of the watch section.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Events (writes) of the watch section: half creates, half updates.
    #[arg(long, default_value_t = 10_000)]
    pub watch_events: usize,
    /// Writers of the watch section (one write in flight each).
    #[arg(long, default_value_t = 10)]
    pub watch_writers: usize,
    /// Seconds the watchers may take to receive every event.
    #[arg(long, default_value_t = 120)]
    pub watch_timeout: u64,
}

#[derive(Args, Debug)]
pub struct EtcdBenchArgs {
    /// `etcdctl check perf` loads to run (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["l", "xl"])]
    pub load: Vec<Load>,
    /// Measure one side only.
    #[arg(long, value_enum)]
    pub only: Option<Target>,
    /// Skip `etcdctl check perf` (the slow part) for a quick run.
    #[arg(long)]
    pub skip_check_perf: bool,
    /// Also run `check perf` against a server on the same gRPC stack that stores nothing: the
    /// throughput the client, loopback TCP and HTTP/2 leave on this machine.
    #[arg(long)]
    pub ceiling: bool,
    /// The real etcd server binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// The real etcdctl binary (v3 API).
    #[arg(long, default_value = "/usr/bin/etcdctl")]
    pub etcdctl_bin: PathBuf,
    /// Sequential puts of the latency section.
    #[arg(long, default_value_t = 2000)]
    pub puts: usize,
    /// Keys written and read back by the Range section.
    #[arg(long, default_value_t = 100_000)]
    pub range_keys: usize,
    /// Puts in flight while writing the Range section's keys.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Rounds of each Range query (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Apiserver(a) => {
            if !(a.duration.is_finite() && a.duration > 0.0) {
                anyhow::bail!("--duration must be a positive number of seconds");
            }
            let opts = apiserver::Options {
                store: a.store,
                etcd_bin: a.etcd_bin,
                protocol: a.protocol,
                sections: a.section,
                clients: a.clients,
                duration: Duration::from_secs_f64(a.duration),
                requests: a.requests,
                list_pods: a.list_pods,
                list_runs: a.list_runs,
                page_size: a.page_size,
                load_clients: a.load_clients,
                watchers: a.watchers,
                watch_events: a.watch_events,
                watch_writers: a.watch_writers,
                watch_timeout: Duration::from_secs(a.watch_timeout),
            };
            super::runtime()?.block_on(async {
                // On Ctrl-C the benchmark future is dropped: its guards kill the store and the
                // API server and remove the temp dirs.
                tokio::select! {
                    r = apiserver::run(opts) => r.map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
                    _ = super::shutdown_signal() => {
                        eprintln!("[bench] interrupted: stopping servers and removing temp dirs");
                        Ok(ExitCode::from(130))
                    }
                }
            })
        }
        BenchCommand::Scheduler(a) => {
            let ok = crate::bench::scheduler::run(&crate::bench::scheduler::Options {
                nodes: a.nodes,
                pods: a.pods,
                clients: a.clients,
                timeout: Duration::from_secs(a.timeout),
                mode: a.mode,
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Kubelet(a) => {
            if a.pods < 1 {
                anyhow::bail!("--pods must be at least 1");
            }
            let ok = crate::bench::kubelet::run(&crate::bench::kubelet::Options {
                pods: a.pods,
                timeout: Duration::from_secs(a.timeout),
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Deployment(a) => {
            if a.replicas < 1 {
                anyhow::bail!("--replicas must be at least 1");
            }
            let ok = crate::bench::deployment::run(&crate::bench::deployment::Options {
                nodes: a.nodes,
                replicas: a.replicas,
                timeout: Duration::from_secs(a.timeout),
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Scale(a) => {
            let ok = crate::bench::scale::run(&crate::bench::scale::Options {
                nodes: a.nodes,
                pods: a.pods,
                clients: a.clients,
                kubectl: a.kubectl,
                timeout: Duration::from_secs(a.timeout),
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Up(a) => {
            if a.runs == 0 {
                anyhow::bail!("--runs must be at least 1");
            }
            let ok = crate::bench::up::run(&crate::bench::up::Options {
                runs: a.runs,
                settle: Duration::from_secs_f64(a.settle.clamp(0.0, 600.0)),
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::EtcdNoopServer { listen_client_urls } => {
            super::runtime()?.block_on(crate::bench::noop_etcd::serve(
                listen_client_urls,
                super::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Etcd(a) => {
            let opts = etcd::Options {
                loads: a.load,
                only: a.only,
                skip_check_perf: a.skip_check_perf,
                ceiling: a.ceiling,
                etcd_bin: a.etcd_bin,
                etcdctl_bin: a.etcdctl_bin,
                puts: a.puts,
                range_keys: a.range_keys,
                in_flight: a.in_flight,
                rounds: a.rounds,
            };
            super::runtime()?.block_on(async {
                // On Ctrl-C the benchmark future is dropped: its guards kill the servers and
                // etcdctl and remove the temp dirs.
                tokio::select! {
                    r = etcd::run(opts) => r.map(|()| ExitCode::SUCCESS),
                    _ = super::shutdown_signal() => {
                        eprintln!("[bench] interrupted: stopping servers and removing temp dirs");
                        Ok(ExitCode::from(130))
                    }
                }
            })
        }
    }
}
