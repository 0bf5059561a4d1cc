//! **supervisor** — runs the control plane's static pods as local processes, as the kubelet
//! runs `/etc/kubernetes/manifests` on a kubeadm node.
//!
//! `minik up` starts one supervisor per profile, a background daemon. It reads
//! `<state>/manifests/*.yaml` (see [`crate::cluster::manifests`]) and for each static pod:
//! - starts the command as a process of the multi-call `minik` binary with argv[0] set to the
//!   component's name (so `ps aux | grep kube-apiserver` finds it), in dependency order (etcd
//!   first: each component's first start waits until the ones before it are ready);
//! - runs its probes ([`probe`]): startup, then readiness and liveness; a failed liveness probe
//!   kills the process;
//! - restarts it when it exits, with exponential back-off ([`component`]);
//! - appends its output to `<state>/logs/<name>.log`;
//! - rereads the manifests every second: an edited manifest restarts its component with the new
//!   flags, a new one starts, a removed one stops, an unreadable one is reported and the last good
//!   version keeps running;
//! - publishes the state in `<state>/run/state.json` ([`state`]) and as **mirror pods** in
//!   `kube-system` through the API server ([`mirror`]), so `kubectl get pods -n kube-system`
//!   shows the control plane.
//!
//! It also runs the node units `<state>/nodes/<node>.yaml` ([`crate::cluster::nodes`]): one
//! kubelet per node, supervised the same way, with no mirror pod (a kubelet is not a pod).
//!
//! SIGTERM (`minik down`) stops the components in reverse order. The components get SIGTERM
//! too if the supervisor itself dies.

pub mod component;
pub mod mirror;
pub mod probe;
pub mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Probe;
use parking_lot::Mutex;

use crate::cluster::manifests::{self, CONTROL_PLANE};
use crate::cluster::profile::{Lock, Profile};
use crate::cluster::{config::ClusterConfig, setup};

use component::Component;
use state::{ManifestError, SupervisorState};

/// How often the manifests folder is read again.
const RESCAN: Duration = Duration::from_secs(1);
/// The main loop's tick: how quickly an exit is noticed.
const TICK: Duration = Duration::from_millis(50);
/// SIGKILL after this long when a component ignores SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// What the probe workers report for a component's current process.
#[derive(Debug, Clone, Default)]
struct ProbeResult {
    pid: u32,
    ready: bool,
    /// A probe asked for the process to be killed, and why.
    kill: Option<String>,
}

/// State shared between the main loop (which owns the processes) and the async side (probes,
/// mirror pods, snapshots).
pub struct Shared {
    pub state: Mutex<SupervisorState>,
    probes: Mutex<HashMap<String, ProbeResult>>,
    pub shutdown: AtomicBool,
    pub changed: tokio::sync::Notify,
}

/// The program a manifest's command runs: the `minik` binary for minik's components (it
/// dispatches on argv[0]), otherwise the command itself (e.g. a real `/usr/bin/etcd`).
fn program_for(argv0: &str, minik: &std::path::Path) -> PathBuf {
    let base = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(argv0);
    if crate::cli::is_component_name(base) && !argv0.contains('/') {
        minik.to_path_buf()
    } else {
        PathBuf::from(argv0)
    }
}

/// The order components start in: the control plane's order, then the rest by name.
fn start_rank(name: &str) -> (usize, String) {
    let i = CONTROL_PLANE
        .iter()
        .position(|c| *c == name)
        .unwrap_or(CONTROL_PLANE.len());
    (i, name.to_string())
}

/// Runs the supervisor for the profile in `dir` until SIGTERM/SIGINT.
pub fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let profile = Profile::at(dir)?;
    let cfg = setup::load_config(&profile)?;
    profile.create_dirs()?;
    let lock_path = profile.run_dir().join("supervisor.lock");
    let Some(_lock) = Lock::try_acquire(&lock_path)? else {
        bail!(
            "a supervisor for profile {:?} is already running (pid {})",
            profile.name,
            Lock::holder(&lock_path).map_or("?".into(), |p| p.to_string())
        );
    };
    std::fs::write(
        profile.supervisor_pid_file(),
        std::process::id().to_string(),
    )
    .context("writing the pid file")?;
    let minik = current_exe()?;

    let shared = Arc::new(Shared {
        state: Mutex::new(SupervisorState {
            pid: std::process::id(),
            profile: profile.name.clone(),
            phase: "Starting".into(),
            started_at: state::now_rfc3339(),
            apiserver_url: setup::server_url(&cfg),
            etcd_servers: manifests::etcd_servers(&cfg),
            node: profile.node_name(),
            docker: docker_problem(),
            ..Default::default()
        }),
        probes: Mutex::new(HashMap::new()),
        shutdown: AtomicBool::new(false),
        changed: tokio::sync::Notify::new(),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    {
        let shared = shared.clone();
        rt.spawn(async move {
            crate::cli::shutdown_signal().await;
            tracing::info!("stopping the control plane");
            shared.shutdown.store(true, Ordering::SeqCst);
        });
    }
    rt.spawn(mirror::run(shared.clone(), profile.clone()));
    rt.spawn(snapshots(shared.clone(), profile.clone(), cfg.clone()));

    tracing::info!(profile = %profile.name, "supervisor started");
    let mut sup = Supervisor {
        profile,
        minik,
        shared: shared.clone(),
        components: Vec::new(),
        manifest_errors: Vec::new(),
        rt: rt.handle().clone(),
        last_published: None,
    };
    sup.main_loop();
    sup.shutdown();
    // Give the mirror loop a moment to record the stopped pods, then leave.
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(sup.profile.supervisor_pid_file());
    tracing::info!("supervisor stopped");
    Ok(())
}

/// The path of the running binary (a rebuilt binary shows as "… (deleted)" in /proc).
fn current_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the minik binary")?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// Why nodes cannot run containers here, or `None` when the Docker engine answers.
pub fn docker_problem() -> Option<String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = match host.strip_prefix("unix://") {
        Some(p) => p.to_string(),
        None if host.is_empty() => "/var/run/docker.sock".to_string(),
        None => return None, // a TCP engine: assume it answers; the kubelet will tell
    };
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "no Docker engine at {socket} ({e}): the control plane runs, but nodes cannot run \
             containers"
        )),
    }
}

struct Supervisor {
    profile: Profile,
    minik: PathBuf,
    shared: Arc<Shared>,
    components: Vec<Component>,
    manifest_errors: Vec<ManifestError>,
    rt: tokio::runtime::Handle,
    last_published: Option<SupervisorState>,
}

impl Supervisor {
    fn main_loop(&mut self) {
        let mut next_scan = Instant::now();
        while !self.shared.shutdown.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next_scan {
                self.rescan();
                next_scan = now + RESCAN;
            }
            self.step(now);
            self.publish("Running");
            std::thread::sleep(TICK);
        }
    }

    /// Reads the manifests folder and reconciles the components with it.
    fn rescan(&mut self) {
        let mut seen = Vec::new();
        self.manifest_errors.clear();
        // The static pods, then the node units (`nodes/<node>.yaml`: the kubelets, which a
        // kubeadm node runs under systemd).
        let units = manifests::read_dir(&crate::cluster::nodes::nodes_dir(&self.profile))
            .into_iter()
            .map(|(file, parsed)| {
                let file = format!("{}{file}", crate::cluster::nodes::UNIT_PREFIX);
                let parsed = parsed.map(|mut p| {
                    p.file = file.clone();
                    p
                });
                (file, parsed)
            });
        for (file, parsed) in manifests::read_dir(&self.profile.manifests_dir())
            .into_iter()
            .chain(units)
        {
            seen.push(file.clone());
            let pod = match parsed {
                Ok(p) => p,
                Err(e) => {
                    let kept = self.components.iter().any(|c| c.pod.file == file);
                    let error = if kept {
                        format!("{e:#} (the previous version keeps running)")
                    } else {
                        format!("{e:#}")
                    };
                    self.manifest_errors.push(ManifestError { file, error });
                    continue;
                }
            };
            if let Some(other) = self
                .components
                .iter()
                .find(|c| c.pod.name == pod.name && c.pod.file != file)
            {
                self.manifest_errors.push(ManifestError {
                    file,
                    error: format!(
                        "metadata.name: Duplicate value: {:?} (also in {})",
                        pod.name, other.pod.file
                    ),
                });
                continue;
            }
            match self.components.iter_mut().find(|c| c.pod.file == file) {
                None => {
                    tracing::info!(component = %pod.name, file = %file, "new static pod");
                    self.components.push(Component::new(pod));
                }
                Some(c) if c.pod.hash == pod.hash => {}
                Some(c) => {
                    tracing::info!(component = %pod.name, "manifest changed: restarting");
                    if c.replacement.as_ref().is_none_or(|r| r.hash != pod.hash) {
                        c.replacement = Some(pod);
                    }
                    c.terminate();
                }
            }
        }
        for c in &mut self.components {
            if !seen.contains(&c.pod.file) && !c.removed {
                tracing::info!(component = %c.name(), "manifest removed: stopping");
                c.removed = true;
                c.terminate();
            }
        }
        self.components.sort_by_key(|c| start_rank(c.name()));
    }

    /// Reaps exits, applies probe verdicts and starts what may start.
    fn step(&mut self, now: Instant) {
        let probes = self.shared.probes.lock().clone();
        for c in &mut self.components {
            if c.reap() {
                tracing::warn!(component = %c.name(), exit = ?c.last_exit, "process exited");
            }
            c.enforce_grace(GRACE);
            if let Some(pid) = c.pid()
                && let Some(p) = probes.get(c.name()).filter(|p| p.pid == pid)
            {
                c.ready = p.ready;
                if let Some(why) = &p.kill
                    && c.terminating_since.is_none()
                {
                    tracing::warn!(component = %c.name(), %why, "killing: probe failed");
                    c.kill(why.clone());
                }
            }
        }
        self.components
            .retain(|c| !(c.removed && c.child.is_none()));
        for c in &mut self.components {
            c.take_replacement();
        }
        // Dependency order for first starts: everything before must be ready.
        let mut all_before_ready = true;
        for i in 0..self.components.len() {
            let c = &mut self.components[i];
            let first = c.first_started.is_none();
            if c.may_start(now) && (!first || all_before_ready) {
                let program = program_for(&c.pod.argv[0], &self.minik);
                match c.start(&program, &self.profile) {
                    Ok(()) => {
                        let pid = c.pid().unwrap_or(0);
                        tracing::info!(component = %c.name(), pid, "started");
                        self.spawn_prober(i, pid);
                    }
                    Err(e) => {
                        let msg = format!("starting {}: {e}", program.display());
                        tracing::warn!(component = %c.name(), "{msg}");
                        c.start_failed(msg);
                    }
                }
            }
            let c = &self.components[i];
            all_before_ready &= c.child.is_some() && c.ready;
        }
    }

    fn spawn_prober(&self, i: usize, pid: u32) {
        let c = &self.components[i];
        let shared = self.shared.clone();
        let name = c.name().to_string();
        let probes = (
            c.pod.startup.clone(),
            c.pod.readiness.clone(),
            c.pod.liveness.clone(),
        );
        shared.probes.lock().insert(
            name.clone(),
            ProbeResult {
                pid,
                ..Default::default()
            },
        );
        self.rt.spawn(prober(shared, name, pid, probes));
    }

    /// Writes the state file and wakes the mirror loop when something changed.
    fn publish(&mut self, phase: &str) {
        let now = Instant::now();
        let st = {
            let mut shared = self.shared.state.lock();
            shared.phase = phase.into();
            shared.components = self.components.iter().map(|c| c.view(now)).collect();
            shared.manifest_errors = self.manifest_errors.clone();
            shared.clone()
        };
        // Back-off countdowns change every tick; they alone don't make a new state.
        let key = |s: &SupervisorState| {
            let mut s = s.clone();
            for c in &mut s.components {
                c.backoff_ms = c.backoff_ms.map(|_| 0);
            }
            s
        };
        if self.last_published.as_ref().map(key) == Some(key(&st)) {
            return;
        }
        if let Err(e) = st.write(&self.profile.state_file()) {
            tracing::warn!("{e:#}");
        }
        self.last_published = Some(st);
        self.shared.changed.notify_one();
    }

    /// Stops every component, the last started first.
    fn shutdown(&mut self) {
        self.publish("Stopping");
        for c in self.components.iter_mut().rev() {
            c.terminate();
            let deadline = Instant::now() + GRACE;
            while c.child.is_some() {
                c.reap();
                if Instant::now() >= deadline {
                    c.enforce_grace(Duration::ZERO);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            c.removed = true;
        }
        self.publish("Stopped");
    }
}

/// Runs a process's probes until it is replaced: the startup probe until it succeeds, then
/// readiness and liveness, each at its own period.
async fn prober(
    shared: Arc<Shared>,
    name: String,
    pid: u32,
    (startup, readiness, liveness): (Option<Probe>, Option<Probe>, Option<Probe>),
) {
    let current = |shared: &Shared| {
        shared
            .probes
            .lock()
            .get(&name)
            .is_some_and(|p| p.pid == pid)
    };
    let set = |shared: &Shared, f: &dyn Fn(&mut ProbeResult)| {
        if let Some(p) = shared.probes.lock().get_mut(&name)
            && p.pid == pid
        {
            f(p);
        }
    };
    let period =
        |p: &Probe| Duration::from_secs(p.period_seconds.unwrap_or(10).clamp(1, 3600) as u64);
    let threshold = |p: &Probe| p.failure_threshold.unwrap_or(3).max(1) as u32;
    // A process that doesn't listen yet fails its probes: probe fast at first.
    let fast = Duration::from_millis(50);
    if let Some(p) = &startup {
        let started = Instant::now();
        let limit = period(p) * threshold(p);
        loop {
            if !current(&shared) {
                return;
            }
            match probe::run(p).await {
                Ok(()) => break,
                Err(e) if started.elapsed() >= limit => {
                    set(&shared, &|r| {
                        r.kill = Some(format!("Startup probe failed: {e}"))
                    });
                    return;
                }
                Err(_) => tokio::time::sleep(fast).await,
            }
        }
    }
    let mut live_failures = 0u32;
    let mut next_ready = Instant::now();
    let mut next_live = Instant::now() + liveness.as_ref().map_or(Duration::ZERO, period);
    let mut ready_known = false;
    loop {
        if !current(&shared) || shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now >= next_ready {
            let ok = match &readiness {
                Some(p) => probe::run(p).await.is_ok(),
                None => true,
            };
            set(&shared, &|r| r.ready = ok);
            if !ready_known && ok {
                ready_known = true;
                shared.changed.notify_one();
            }
            next_ready = Instant::now()
                + match (&readiness, ok || ready_known) {
                    (Some(p), true) => period(p),
                    (Some(_), false) => fast,
                    (None, _) => Duration::from_secs(3600),
                };
        }
        if let Some(p) = &liveness
            && now >= next_live
        {
            match probe::run(p).await {
                Ok(()) => live_failures = 0,
                Err(e) => {
                    live_failures += 1;
                    if live_failures >= threshold(p) {
                        set(&shared, &|r| {
                            r.kill = Some(format!("Liveness probe failed: {e}"))
                        });
                        return;
                    }
                }
            }
            next_live = Instant::now() + period(p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scheduled etcd snapshots with retention (config `etcd.snapshots`), taken once the store is
/// ready.
async fn snapshots(shared: Arc<Shared>, profile: Profile, cfg: ClusterConfig) {
    let Ok(Some(interval)) = cfg.snapshot_interval() else {
        return;
    };
    if !cfg.etcd.servers.is_empty() {
        return; // an external etcd is backed up by its owners
    }
    let keep = cfg.etcd.snapshots.keep as usize;
    loop {
        tokio::time::sleep(interval).await;
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        match crate::cluster::backup::save(&profile, &cfg, None, "scheduled").await {
            Ok(info) => {
                tracing::info!(file = %info.path.display(), "scheduled snapshot taken");
                shared.state.lock().last_snapshot = Some(info.path.display().to_string());
                if let Err(e) = crate::cluster::backup::prune(&profile, "scheduled", keep) {
                    tracing::warn!("pruning snapshots: {e:#}");
                }
            }
            Err(e) => tracing::warn!("scheduled snapshot failed: {e:#}"),
        }
    }
}
