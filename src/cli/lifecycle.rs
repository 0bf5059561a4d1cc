//! `minik down` (stop, keep the data) and `minik delete` (remove the profile entirely).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::cluster::kubeconfig;
use crate::cluster::profile::{self, DEFAULT_PROFILE, Profile, pid_alive};
use crate::supervisor::component::signal;
use crate::supervisor::state::SupervisorState;

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE", conflicts_with = "all")]
    pub name: String,
    /// Delete every profile.
    #[arg(long)]
    pub all: bool,
}

pub fn down(a: DownArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(&a.name)?;
    if !profile.exists() {
        bail!(
            "profile {:?} does not exist (`minik profile list` shows the profiles)",
            profile.name
        );
    }
    let stopped = stop(&profile)?;
    pods(&profile, false);
    match stopped {
        true => println!(
            "* Stopped profile {:?}; its data is kept (`minik up{}` resumes it)",
            profile.name,
            name_flag(&profile)
        ),
        false => println!("* Profile {:?} is not running", profile.name),
    }
    Ok(ExitCode::SUCCESS)
}

fn name_flag(profile: &Profile) -> String {
    if profile.name == DEFAULT_PROFILE {
        String::new()
    } else {
        format!(" --name {}", profile.name)
    }
}

/// Stops the profile's supervisor (which stops the components) and waits for every process to
/// be gone. Returns whether anything was running.
pub fn stop(profile: &Profile) -> anyhow::Result<bool> {
    let Some(pid) = profile.supervisor_pid() else {
        kill_leftovers(profile);
        return Ok(false);
    };
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_leftovers(profile);
    Ok(true)
}

/// Stops the containers of the profile's pods, or (`remove`) removes them and the pod network.
/// Without Docker there is nothing to do.
fn pods(profile: &Profile, remove: bool) {
    use crate::kubelet::{docker, runtime};
    let Ok(cfg) = crate::cluster::setup::load_config(profile) else {
        return;
    };
    if cfg.nodes == 0 && cfg.networking.pod_network.is_none() {
        return;
    }
    let network = crate::cluster::nodes::network(profile, &cfg);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let Ok(engine) = docker::Engine::connect().await else {
            return;
        };
        let r = if remove {
            runtime::remove_pod_network(&engine, &network).await
        } else {
            runtime::stop_pod_containers(&engine, &network, None).await
        };
        if let Err(e) = r {
            eprintln!("! the pods' containers: {e:#}");
        }
    });
}

/// Processes the state file still names (a supervisor killed with SIGKILL leaves its children to
/// their parent-death signal; this makes sure).
fn kill_leftovers(profile: &Profile) {
    let Ok(st) = SupervisorState::read(&profile.state_file()) else {
        return;
    };
    for c in &st.components {
        let Some(pid) = c.pid else { continue };
        // Only a process that is still this component (pids get reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if c.argv.first().is_some_and(|a| a.as_bytes() == argv0) {
            signal(pid, libc::SIGKILL);
        }
    }
}

pub fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let profiles = if a.all {
        profile::list()?
    } else {
        let p = Profile::named(&a.name)?;
        if !p.dir.exists() {
            println!("* Profile {:?} does not exist; nothing to delete", p.name);
            return Ok(ExitCode::SUCCESS);
        }
        vec![p]
    };
    if profiles.is_empty() {
        println!("* No profiles to delete");
    }
    let target = kubeconfig::user_kubeconfig_path()?;
    for p in profiles {
        stop(&p)?;
        pods(&p, true);
        let had_context = kubeconfig::remove(&target, &p.context_name())?;
        std::fs::remove_dir_all(&p.dir).with_context(|| format!("removing {}", p.dir.display()))?;
        if had_context {
            println!(
                "* Deleted profile {:?} (processes, {} and the kubeconfig context {:?})",
                p.name,
                p.dir.display(),
                p.context_name()
            );
        } else {
            println!(
                "* Deleted profile {:?} (processes and {}; {} had no context {:?})",
                p.name,
                p.dir.display(),
                target.display(),
                p.context_name()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
