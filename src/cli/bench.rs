//! `minik bench …`: benchmarks against the real components, printed as Markdown.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::bench::etcd::{self, Load, Target};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// minik's etcd-compatible store against the real etcd, side by side (Markdown on stdout).
    ///
    /// Runs single-client put latency, a Range over 100k keys and `etcdctl check perf` (60 s per
    /// load and server; ~5 minutes with the default loads) against freshly started servers.
    Etcd(EtcdBenchArgs),
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
        BenchCommand::Etcd(a) => {
            let opts = etcd::Options {
                loads: a.load,
                only: a.only,
                skip_check_perf: a.skip_check_perf,
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
