//! `minik status` (each component's state; exit code 0 only when healthy) and
//! `minik profile list`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::cluster::profile::{self, DEFAULT_PROFILE, Profile};
use crate::cluster::setup;
use crate::supervisor::state::{SupervisorState, age_secs, human_age};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// List the profiles and whether they run.
    List {
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    profile: String,
    /// `Running`, `Degraded`, `Starting`, `Stopped`.
    state: String,
    healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    supervisor_pid: Option<u32>,
    apiserver: String,
    etcd: String,
    kubeconfig: String,
    components: Vec<ComponentStatus>,
    manifest_errors: Vec<crate::supervisor::state::ManifestError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentStatus {
    name: String,
    state: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    uptime_seconds: u64,
    restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// A process's resident memory (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn human_bytes(b: u64) -> String {
    format!("{:.1}Mi", b as f64 / (1024.0 * 1024.0))
}

fn status_of(profile: &Profile) -> anyhow::Result<Status> {
    let cfg = setup::load_config(profile)?;
    let pid = profile.supervisor_pid();
    let st = SupervisorState::read(&profile.state_file()).ok();
    let components = match (&st, pid) {
        (Some(st), Some(_)) => st
            .components
            .iter()
            .map(|c| ComponentStatus {
                name: c.name.clone(),
                state: c.state.clone(),
                ready: c.ready,
                pid: c.pid,
                uptime_seconds: c.started_at.as_deref().map(age_secs).unwrap_or(0),
                restarts: c.restarts,
                memory_bytes: c.pid.and_then(rss_bytes),
                last_error: c.last_error.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let st = st.filter(|_| pid.is_some());
    let all_ready = st.as_ref().is_some_and(SupervisorState::all_ready);
    let manifest_errors = st
        .as_ref()
        .map(|s| s.manifest_errors.clone())
        .unwrap_or_default();
    let state = match (&pid, all_ready) {
        (None, _) => "Stopped",
        (Some(_), true) if manifest_errors.is_empty() => "Running",
        (Some(_), _)
            if components
                .iter()
                .any(|c| c.restarts > 0 || c.state == "CrashLoopBackOff")
                || !manifest_errors.is_empty() =>
        {
            "Degraded"
        }
        (Some(_), _) => "Starting",
    };
    Ok(Status {
        profile: profile.name.clone(),
        state: state.into(),
        healthy: state == "Running",
        supervisor_pid: pid,
        apiserver: setup::server_url(&cfg),
        etcd: crate::cluster::manifests::etcd_servers(&cfg),
        kubeconfig: profile.kubeconfig().display().to_string(),
        components,
        manifest_errors,
        docker: st.and_then(|s| s.docker),
    })
}

pub fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(&a.name)?;
    if !profile.exists() {
        anyhow::bail!(
            "profile {:?} does not exist; create it with `minik up{}`",
            profile.name,
            if profile.name == DEFAULT_PROFILE {
                String::new()
            } else {
                format!(" --name {}", profile.name)
            }
        );
    }
    let s = status_of(&profile)?;
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(if s.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_status(s: &Status) {
    println!("profile:     {}", s.profile);
    match s.supervisor_pid {
        Some(pid) => println!("state:       {} (supervisor pid {pid})", s.state),
        None => println!("state:       {}", s.state),
    }
    println!("apiserver:   {}", s.apiserver);
    println!("etcd:        {}", s.etcd);
    println!("kubeconfig:  {}", s.kubeconfig);
    if let Some(d) = &s.docker {
        println!("nodes:       {d}");
    }
    if !s.components.is_empty() {
        println!();
        println!(
            "{:<26} {:<17} {:<6} {:>8} {:>8} {:>8} {:>9}  LAST ERROR",
            "COMPONENT", "STATE", "READY", "PID", "UPTIME", "RESTARTS", "MEMORY"
        );
        for c in &s.components {
            println!(
                "{:<26} {:<17} {:<6} {:>8} {:>8} {:>8} {:>9}  {}",
                c.name,
                c.state,
                c.ready,
                c.pid.map_or("-".into(), |p| p.to_string()),
                if c.pid.is_some() {
                    human_age(c.uptime_seconds)
                } else {
                    "-".into()
                },
                c.restarts,
                c.memory_bytes.map_or("-".into(), human_bytes),
                c.last_error.as_deref().unwrap_or("")
            );
        }
    }
    for e in &s.manifest_errors {
        println!("manifest error: {}: {}", e.file, e.error);
    }
}

pub fn profile(cmd: ProfileCommand) -> anyhow::Result<ExitCode> {
    let ProfileCommand::List { output } = cmd;
    let mut rows = Vec::new();
    for p in profile::list()? {
        match status_of(&p) {
            Ok(s) => rows.push(s),
            Err(e) => eprintln!("profile {:?}: {e:#}", p.name),
        }
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No profiles; create one with `minik up`.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<10} {:<28} {:>10}",
        "PROFILE", "STATE", "APISERVER", "COMPONENTS"
    );
    for s in rows {
        let ready = s.components.iter().filter(|c| c.ready).count();
        println!(
            "{:<20} {:<10} {:<28} {:>10}",
            s.profile,
            s.state,
            s.apiserver,
            format!("{ready}/{}", s.components.len())
        );
    }
    Ok(ExitCode::SUCCESS)
}
