//! `minik up`: make (or resume) a profile and start its control plane under a supervisor.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::cluster::config::ClusterConfig;
use crate::cluster::profile::{DEFAULT_PROFILE, Lock, Profile};
use crate::cluster::{kubeconfig, ports, setup};
use crate::supervisor::state::SupervisorState;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
    /// Number of nodes (the control-plane node plus workers).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// A cluster config file (`apiVersion: minik.dev/v1alpha1`, `kind: Cluster`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The API server's port (0 = any free port). Default: 6443 for the first profile, a free
    /// port for the others.
    #[arg(long)]
    pub apiserver_port: Option<u16>,
    /// The store's client port (0 = any free port). Default: 2379 / a free port.
    #[arg(long)]
    pub etcd_port: Option<u16>,
    /// Use these external etcd servers (comma-separated URLs) instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// How long to wait for the control plane to be ready.
    #[arg(long, default_value = "120s", value_parser = crate::cluster::config::parse_duration)]
    pub wait: Duration,
    /// Print only errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Simulated nodes to run (kwok-style, `minik fake-kubelet`): pods bound to them "run".
    #[arg(long)]
    pub fake_nodes: Option<u32>,
    /// Simulated nodes from a file: `nodes: [{count, namePrefix, capacity, labels, taints}]`.
    #[arg(long)]
    pub fake_node_profile: Option<PathBuf>,
    /// Don't merge the context into your kubeconfig ($KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub no_kubeconfig: bool,
}

impl UpArgs {
    /// `minik up --name NAME` with every other flag at its default.
    pub fn resume(name: &str) -> UpArgs {
        UpArgs {
            name: name.to_string(),
            nodes: None,
            config: None,
            apiserver_port: None,
            etcd_port: None,
            etcd_servers: Vec::new(),
            wait: Duration::from_secs(120),
            quiet: false,
            fake_nodes: None,
            fake_node_profile: None,
            no_kubeconfig: false,
        }
    }
}

/// Step lines as minikube prints them: a spinner on a terminal, plain lines otherwise.
pub struct Progress {
    tty: bool,
    quiet: bool,
    frame: usize,
    current: Option<(String, Instant)>,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stdout().is_terminal(),
            quiet,
            frame: 0,
            current: None,
        }
    }

    /// Starts a step.
    pub fn step(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.quiet && self.tty {
            print!("\r\x1b[2K{} {what}", SPINNER[0]);
            let _ = std::io::stdout().flush();
        }
        self.current = Some((what, Instant::now()));
    }

    /// Animates the spinner (call while waiting).
    pub fn tick(&mut self) {
        if let (false, true, Some((what, _))) = (self.quiet, self.tty, &self.current) {
            self.frame = (self.frame + 1) % SPINNER.len();
            print!("\r\x1b[2K{} {what}", SPINNER[self.frame]);
            let _ = std::io::stdout().flush();
        }
    }

    /// Ends the current step successfully, with an optional detail.
    pub fn done(&mut self, detail: &str) {
        let Some((what, t)) = self.current.take() else {
            return;
        };
        let secs = t.elapsed().as_secs_f64();
        let detail = if detail.is_empty() {
            format!("{secs:.2}s")
        } else {
            format!("{detail}, {secs:.2}s")
        };
        self.line(&format!("{what} ({detail})"), "✓");
    }

    /// Prints a line (a note or a finished step).
    pub fn line(&mut self, text: &str, mark: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            println!("\r\x1b[2K{mark} {text}");
        } else {
            println!("* {text}");
        }
    }

    pub fn fail(&mut self) {
        if let Some((what, _)) = self.current.take()
            && !self.quiet
            && self.tty
        {
            println!("\r\x1b[2K✗ {what}");
        }
    }
}

pub fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(&a.name)?;
    let mut progress = Progress::new(a.quiet);
    let result = up(&a, &profile, &mut progress);
    if result.is_err() {
        progress.fail();
    }
    result
}

fn up(a: &UpArgs, profile: &Profile, progress: &mut Progress) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(profile.run_dir())
        .with_context(|| format!("creating {}", profile.run_dir().display()))?;
    let lock_path = profile.run_dir().join("up.lock");
    let Some(_lock) = Lock::try_acquire(&lock_path)? else {
        bail!(
            "another `minik up` for profile {:?} is in progress (pid {}); wait for it to finish",
            profile.name,
            Lock::holder(&lock_path).map_or("?".into(), |p| p.to_string())
        );
    };

    if let Some(pid) = profile.supervisor_pid() {
        let st = SupervisorState::read(&profile.state_file()).unwrap_or_default();
        if st.all_ready() {
            progress.line(
                &format!(
                    "minik profile {:?} is already running (supervisor pid {pid}, API server {}); nothing changed",
                    profile.name, st.apiserver_url
                ),
                "✓",
            );
            return Ok(ExitCode::SUCCESS);
        }
        progress.line(
            &format!(
                "minik profile {:?} is already starting (supervisor pid {pid}); waiting for it",
                profile.name
            ),
            "*",
        );
        return wait_ready(a, profile, progress, started, pid);
    }

    let resuming = profile.exists();
    let cfg = if resuming {
        if a.config.is_some() || a.nodes.is_some() || a.apiserver_port.is_some() {
            progress.line(
                "the profile exists: its saved config is used (`minik delete` it to start over with new settings)",
                "!",
            );
        }
        setup::load_config(profile)?
    } else {
        new_config(a, profile)?
    };
    check_ports(&cfg)?;

    if resuming {
        progress.line(
            &format!(
                "Resuming profile {:?} from {}",
                profile.name,
                profile.dir.display()
            ),
            "*",
        );
        // The files exist; rewrite the kubeconfigs in case they were removed.
        setup::write_kubeconfigs(profile, &cfg)?;
    } else {
        progress.step(format!(
            "Generating certificates, kubeconfigs and static-pod manifests in {}",
            profile.dir.display()
        ));
        if let Some(src) = &cfg.fake_node_profile {
            std::fs::create_dir_all(&profile.dir)?;
            std::fs::copy(src, profile.dir.join("fake-nodes.yaml"))
                .with_context(|| format!("copying {src}"))?;
        }
        let mut cfg = cfg;
        if cfg.nodes > 0 {
            prepare_docker(profile, &mut cfg, progress);
        }
        if let Err(e) = setup::create(profile, &cfg) {
            // Leave nothing half-made behind: a later `up` starts clean.
            let _ = std::fs::remove_file(profile.config_file());
            return Err(e);
        }
        progress.done("");
    }
    if !a.no_kubeconfig {
        let target = kubeconfig::user_kubeconfig_path()?;
        kubeconfig::merge(&target, &profile.kubeconfig(), &profile.context_name())?;
    }

    progress.step("Starting the supervisor");
    let pid = spawn_supervisor(profile)?;
    progress.done(&format!("pid {pid}"));
    let code = wait_ready(a, profile, progress, started, pid)?;
    Ok(code)
}

/// What nodes need from Docker before their kubelets start: the profile's pod network (a free
/// name and subnet, recorded in the config) and the pause image (built from `images/` when
/// missing). Without Docker the nodes still register, NotReady with the reason.
fn prepare_docker(profile: &Profile, cfg: &mut ClusterConfig, progress: &mut Progress) {
    use crate::kubelet::{docker, images, runtime};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            progress.line(&format!("nodes: cannot start the async runtime: {e}"), "!");
            return;
        }
    };
    rt.block_on(async {
        let engine = match docker::Engine::connect().await {
            Ok(e) => e,
            Err(e) => {
                progress.line(
                    &format!("nodes: {e:#}; they will register NotReady until Docker answers"),
                    "!",
                );
                return;
            }
        };
        let want = crate::cluster::nodes::network(profile, cfg);
        match runtime::create_pod_network(&engine, &want, &cfg.networking.pod_subnet, &profile.name).await {
            Ok((name, subnet)) => {
                if name != want || subnet != cfg.networking.pod_subnet {
                    progress.line(&format!("pod network {name} ({subnet})"), "*");
                }
                cfg.networking.pod_network = Some(name);
                cfg.networking.pod_subnet = subnet;
            }
            Err(e) => progress.line(&format!("nodes: {e:#}"), "!"),
        }
        let pause = "registry.k8s.io/pause:3.10";
        if images::check_present(&engine, pause).await.is_err() {
            progress.step(format!("Building the pause image {pause}"));
            let built = async {
                let dir = images::images_dir(None)?;
                let sources = images::select(images::discover(&dir)?, &["pause".to_string()])?;
                for src in &sources {
                    images::build(&engine, src, &images::BuildOptions { force: false }, &mut |_| {}).await?;
                }
                anyhow::Ok(())
            }
            .await;
            match built {
                Ok(()) => progress.done(""),
                Err(e) => {
                    progress.fail();
                    progress.line(
                        &format!("the pause image: {e:#}; pods cannot start until it exists (`minik image build pause` or `minik image load`)"),
                        "!",
                    );
                }
            }
        }
    });
}

/// The config for a new profile: the file (if any), then the flags; ports for profiles other
/// than the default are free ones unless given.
fn new_config(a: &UpArgs, profile: &Profile) -> anyhow::Result<ClusterConfig> {
    // Which ports the file sets: the others are free ones for profiles other than the default.
    let mut in_file: Vec<String> = Vec::new();
    let mut cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg = ClusterConfig::parse(&text, &path.display().to_string())?;
            if let Ok(serde_yaml::Value::Mapping(m)) = serde_yaml::from_str(&text)
                && let Some(serde_yaml::Value::Mapping(ports)) = m.get("ports")
            {
                in_file = ports
                    .keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
            }
            cfg
        }
        None => ClusterConfig::default(),
    };
    let given = |key: &str| in_file.iter().any(|k| k == key);
    // Simulated nodes alone make a kwok-style lab: no real node unless asked for.
    let nodes_in_file = a.config.as_ref().is_some_and(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
            .is_some_and(|v| v.get("nodes").is_some())
    });
    if (a.fake_nodes.is_some_and(|n| n > 0)
        || a.fake_node_profile.is_some()
        || cfg.fake_nodes > 0
        || cfg.fake_node_profile.is_some())
        && !nodes_in_file
    {
        cfg.nodes = 0;
    }
    if let Some(n) = a.nodes {
        cfg.nodes = n;
    }
    if let Some(n) = a.fake_nodes {
        cfg.fake_nodes = n;
    }
    if let Some(p) = &a.fake_node_profile {
        // Checked now, copied into the state folder when the profile is made.
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        crate::fake_kubelet::NodeProfile::parse(&text, &p.display().to_string())?;
        cfg.fake_node_profile = Some(p.display().to_string());
    }
    if !a.etcd_servers.is_empty() {
        cfg.etcd.servers = a.etcd_servers.clone();
    }
    let others = profile.name != DEFAULT_PROFILE;
    cfg.ports.apiserver = match a.apiserver_port {
        Some(p) => p,
        None if others && !given("apiserver") => 0,
        None => cfg.ports.apiserver,
    };
    cfg.ports.etcd = match a.etcd_port {
        Some(p) => p,
        None if others && !given("etcd") => 0,
        None => cfg.ports.etcd,
    };
    if others && !given("scheduler") {
        cfg.ports.scheduler = 0;
    }
    if others && !given("controllerManager") {
        cfg.ports.controller_manager = 0;
    }
    // Kubelets of other profiles get free ports, picked per node when it is made.
    if others && !given("kubelet") {
        cfg.ports.kubelet = 0;
    }
    for port in [
        &mut cfg.ports.apiserver,
        &mut cfg.ports.etcd,
        &mut cfg.ports.scheduler,
        &mut cfg.ports.controller_manager,
    ] {
        if *port == 0 {
            *port = free_port()?;
        }
    }
    cfg.check()
        .map_err(|(field, msg)| anyhow::anyhow!("{field}: {msg}"))?;
    Ok(cfg)
}

use crate::cluster::ports::free_port;

/// Refuses ports another process listens on, naming the port and the process.
fn check_ports(cfg: &ClusterConfig) -> anyhow::Result<()> {
    let mut wanted = vec![
        ("apiserver", cfg.ports.apiserver),
        ("scheduler", cfg.ports.scheduler),
        ("controller-manager", cfg.ports.controller_manager),
    ];
    if cfg.etcd.servers.is_empty() {
        wanted.push(("etcd", cfg.ports.etcd));
    }
    for (what, port) in wanted {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            let hint = match what {
                "apiserver" | "etcd" => {
                    format!("--{what}-port (or `ports.{what}` in a config file)")
                }
                "scheduler" => "`ports.scheduler` in a config file".to_string(),
                _ => "`ports.controllerManager` in a config file".to_string(),
            };
            bail!(
                "{} (needed by the {what}): stop that process, or use another port with {hint} \
                 on a new profile",
                ports::in_use_message(port)
            );
        }
    }
    Ok(())
}

/// Starts `minik supervisor` in the background (a new session, output to its log file).
fn spawn_supervisor(profile: &Profile) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("finding the minik binary")?;
    let log_path = profile.log_file("supervisor");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.envs(crate::cluster::manifests::ALLOCATOR_ENV);
    cmd.arg0("minik-supervisor")
        .arg("supervisor")
        .arg("--profile-dir")
        .arg(&profile.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting the supervisor")?;
    Ok(child.id())
}

/// Waits until every component is ready and the mirror pods are there, showing each as it
/// becomes ready.
fn wait_ready(
    a: &UpArgs,
    profile: &Profile,
    progress: &mut Progress,
    started: Instant,
    pid: u32,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + a.wait;
    let mut announced: Vec<String> = Vec::new();
    let mut waiting_for: Option<String> = None;
    let mut docker_said = false;
    loop {
        let st = SupervisorState::read(&profile.state_file()).ok();
        if let Some(st) = st.as_ref().filter(|s| s.pid == pid) {
            if let (Some(why), false) = (&st.docker, docker_said) {
                progress.fail();
                progress.line(why, "!");
                docker_said = true;
                waiting_for = None;
            }
            for e in &st.manifest_errors {
                if !announced.contains(&e.file) {
                    progress.fail();
                    progress.line(&format!("manifest {}: {}", e.file, e.error), "!");
                    announced.push(e.file.clone());
                    waiting_for = None;
                }
            }
            for c in &st.components {
                if c.ready && c.state == "Running" && !announced.contains(&c.name) {
                    if waiting_for.as_deref() == Some(c.name.as_str()) {
                        progress.done(&format!("pid {}", c.pid.unwrap_or(0)));
                    } else {
                        progress.line(&format!("{} is ready", c.name), "✓");
                    }
                    announced.push(c.name.clone());
                    waiting_for = None;
                }
            }
            if waiting_for.is_none()
                && let Some(c) = st.components.iter().find(|c| !announced.contains(&c.name))
            {
                progress.step(format!("Waiting for {}", c.name));
                waiting_for = Some(c.name.clone());
            }
            if st.all_ready() {
                if waiting_for.as_deref() != Some("mirror pods") {
                    progress.step("Creating mirror pods in kube-system");
                    waiting_for = Some("mirror pods".into());
                }
                if st.mirrors_synced {
                    progress.done("");
                    progress.line(
                        &format!(
                            "Done! The control plane is ready in {:.2}s; kubectl is configured to use {:?} ({})",
                            started.elapsed().as_secs_f64(),
                            profile.context_name(),
                            st.apiserver_url
                        ),
                        "🏄",
                    );
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if !crate::cluster::profile::pid_alive(pid) {
            progress.fail();
            bail!(
                "the supervisor exited during start-up; its log ({}) says:\n{}",
                profile.log_file("supervisor").display(),
                tail(&profile.log_file("supervisor"), 10)
            );
        }
        if Instant::now() >= deadline {
            progress.fail();
            let st = st.unwrap_or_default();
            let mut msg = format!(
                "the control plane is not ready after {}s (it keeps trying; `minik status`, `minik logs COMPONENT`):",
                a.wait.as_secs()
            );
            for c in st
                .components
                .iter()
                .filter(|c| !(c.ready && c.state == "Running"))
            {
                msg.push_str(&format!(
                    "\n  {}: {}{}",
                    c.name,
                    c.state,
                    c.last_error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
            bail!(msg);
        }
        progress.tick();
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
