//! The command line: user verbs and component entry points of the multi-call binary.
//!
//! `minik` is one binary with many faces, as k3s and the old hyperkube were: when the supervisor
//! starts a component it sets argv[0] to the Kubernetes name (`etcd`, …), and the binary runs that
//! component, so `ps` shows a Kubernetes control plane.

mod apiserver;
mod bench;
mod certs;
mod controller_manager;
mod etcd;
mod etcdctl;
mod fake_kubelet;
mod image;
mod kubectl;
mod kubelet;
mod lifecycle;
mod logs;
mod node;
mod scheduler;
pub(crate) mod status;
mod up;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "minik",
    version,
    about = "A terminal-first, single-machine Kubernetes cluster lab",
    propagate_version = true
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a RUST_LOG-style filter; RUST_LOG wins
    /// when set.
    #[arg(long, global = true, default_value = "info", env = "MINIK_LOG_LEVEL")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create (or resume) a cluster: the control plane as supervised local processes.
    Up(up::UpArgs),
    /// Stop a cluster's processes, keeping its data (`up` resumes it).
    Down(lifecycle::DownArgs),
    /// Delete a cluster: its processes, its state folder and its kubeconfig context.
    Delete(lifecycle::DeleteArgs),
    /// Each component's state, pid, uptime, restarts and memory (exit code 0 only when healthy).
    Status(status::StatusArgs),
    /// A component's log (all of them when none is named).
    Logs(logs::LogsArgs),
    /// Profiles (clusters) on this machine.
    #[command(subcommand)]
    Profile(status::ProfileCommand),
    /// Run kubectl against the cluster (your kubectl, with the profile's kubeconfig).
    Kubectl(kubectl::KubectlArgs),
    /// A built-in etcdctl (get, put, del, watch, member list, endpoint status/health), pointed
    /// at the cluster's store with its certificates.
    Etcdctl(etcdctl::EtcdctlArgs),
    /// The supervisor daemon `up` starts (runs the profile's static pods).
    #[command(hide = true)]
    Supervisor {
        #[arg(long)]
        profile_dir: std::path::PathBuf,
    },
    /// The etcd-compatible store: serve it, inspect and restore snapshots.
    #[command(subcommand)]
    Etcd(etcd::EtcdCommand),
    /// Benchmarks against the real components, printed as Markdown tables.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the Kubernetes API server (the process the supervisor runs as `kube-apiserver`).
    Apiserver(apiserver::ApiServerArgs),
    /// Run the scheduler (the process the supervisor runs as `kube-scheduler`), or explain
    /// its decision for a pod (`minik scheduler why NAMESPACE/POD`).
    Scheduler(scheduler::SchedulerArgs),
    /// Run a node's kubelet (the process the supervisor runs as `kubelet`, one per node): pods
    /// bound to the node run as Docker containers.
    Kubelet(kubelet::KubeletArgs),
    /// Simulated nodes (the process the supervisor runs for `minik up --fake-nodes N`).
    FakeKubelet(fake_kubelet::FakeKubeletArgs),
    /// The cluster's nodes: list, add, delete, stop and start them.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Generate a cluster PKI and an admin kubeconfig (for running `minik apiserver` by hand).
    Certs(certs::CertsArgs),
    /// Run the controller manager (the process the supervisor runs as `kube-controller-manager`).
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// The cluster's images in the local Docker engine: build, list, load (no registry needed).
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// The component a multi-call name stands for, as the arguments `minik` would take.
fn multicall_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(argv0) = args.first() else {
        return args;
    };
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(prefix) = component_args(&name) else {
        return args;
    };
    set_process_name(&name);
    prefix
        .iter()
        .map(OsString::from)
        .chain(args.into_iter().skip(1))
        .collect()
}

/// The `minik` arguments a component name (argv[0]) stands for.
fn component_args(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "etcd" => &["minik", "etcd", "serve"],
        "kube-apiserver" => &["minik", "apiserver"],
        "kube-scheduler" => &["minik", "scheduler"],
        "fake-kubelet" => &["minik", "fake-kubelet"],
        "kubelet" => &["minik", "kubelet"],
        "kube-controller-manager" => &["minik", "controller-manager"],
        _ => return None,
    })
}

/// Whether `name` is a component the multi-call binary runs when started under that name.
pub fn is_component_name(name: &str) -> bool {
    component_args(name).is_some()
}

/// Sets the process name (`/proc/self/comm`, what `ps -e`, `top` and `pgrep` show) to the
/// component's (cut to 15 bytes, as the kernel keeps it: `kube-controller`, like the real one).
fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from buf.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command line and turns errors into a message and an exit code.
pub fn main() -> ExitCode {
    // Before any thread or large allocation: 4 KiB pages only (see component_base::memory).
    crate::component_base::memory::disable_transparent_huge_pages();
    let cli = Cli::parse_from(multicall_args(std::env::args_os().collect()));
    init_logging(&cli.log_level);
    let result = match cli.command {
        Command::Etcd(cmd) => etcd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Apiserver(a) => apiserver::run(a),
        Command::Certs(a) => certs::run(a),
        Command::ControllerManager(a) => controller_manager::run(a),
        Command::Up(a) => up::run(a),
        Command::Down(a) => lifecycle::down(a),
        Command::Delete(a) => lifecycle::delete(a),
        Command::Status(a) => status::status(a),
        Command::Logs(a) => logs::run(a),
        Command::Profile(cmd) => status::profile(cmd),
        Command::Kubectl(a) => kubectl::run(a),
        Command::Etcdctl(a) => etcdctl::run(a),
        Command::Scheduler(a) => scheduler::run(a),
        Command::Kubelet(a) => kubelet::run(a),
        Command::FakeKubelet(a) => fake_kubelet::run(a),
        Command::Node(cmd) => node::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Supervisor { profile_dir } => {
            crate::supervisor::run(&profile_dir).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded tokio runtime for long-running components.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A single-threaded tokio runtime for a node agent (the kubelet): one per node, so its memory
/// counts N times. Its work is waiting on the API server and the Docker engine, which one thread
/// does as well as two; each extra runtime thread would keep its own stack and allocator heap.
/// File work (`tokio::fs`, volume writes) goes to a small blocking pool whose idle threads exit.
pub(crate) fn node_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicall_name_selects_the_component() {
        let args = multicall_args(vec![
            "/usr/bin/etcd".into(),
            "--data-dir".into(),
            "x".into(),
        ]);
        assert_eq!(args, vec!["minik", "etcd", "serve", "--data-dir", "x"]);
        let args = multicall_args(vec!["minik".into(), "etcd".into()]);
        assert_eq!(args, vec!["minik", "etcd"]);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
