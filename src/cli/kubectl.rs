//! `minik kubectl ARGS…`: runs the kubectl on your PATH against the profile (its kubeconfig),
//! until minik has a kubectl of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};

#[derive(Args, Debug)]
pub struct KubectlArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
    /// kubectl's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub fn run(a: KubectlArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    let profile = Profile::named(&a.name)?;
    if !profile.exists() {
        bail!(
            "profile {:?} does not exist; create it with `minik up`",
            profile.name
        );
    }
    let Some(kubectl) = which("kubectl") else {
        bail!(
            "no kubectl on your PATH: minik's own kubectl is not built yet, so `minik kubectl` \
             runs yours. Install kubectl (https://kubernetes.io/docs/tasks/tools/), or use \
             another client with KUBECONFIG={}",
            profile.kubeconfig().display()
        );
    };
    let err = std::process::Command::new(&kubectl)
        .args(&a.args)
        .env("KUBECONFIG", profile.kubeconfig())
        .exec();
    bail!("running {}: {err}", kubectl.display())
}
