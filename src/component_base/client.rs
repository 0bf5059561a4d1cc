//! An API client from a kubeconfig file, as every component gets one (`--kubeconfig`).

use std::path::Path;

use anyhow::Context;

/// A `kube` client for the kubeconfig at `path` (its current context).
pub async fn from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("--kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", path.display()))?;
    kube::Client::try_from(cfg).context("building the API client")
}
