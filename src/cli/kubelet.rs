//! `minik kubelet`: the node agent (the process the supervisor runs as `kubelet`, one per node).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use crate::kubelet::{self, Options};

#[derive(Args, Debug)]
pub struct KubeletArgs {
    /// The node's name.
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's name, as the real kubelet's flag (`--node-name` wins when both are given).
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The kubeconfig of the API server (the node's identity `system:node:<name>`).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The profile the node belongs to (a label on its containers).
    #[arg(long, default_value = crate::cluster::profile::DEFAULT_PROFILE)]
    pub profile: String,
    /// The Docker network pods join (default `minik-<profile>`; created if missing).
    #[arg(long)]
    pub pod_network: Option<String>,
    /// This node's pod range.
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: String,
    /// The cluster's pod network (the Docker network's subnet).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The node's address (InternalIP).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// The kubelet's port.
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// The kubelet's directory (pod volumes …).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Taints to register the node with: `key=value:Effect` or `key:Effect`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,
    /// Labels to register the node with: `key=value`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Capacity overrides: `cpu=4,memory=8Gi,pods=110`.
    #[arg(long, value_delimiter = ',')]
    pub capacity: Vec<String>,
    /// The streaming server's certificate (logs, exec, attach, port-forward).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The streaming server's private key.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Clients of the streaming server must present a certificate signed by this CA.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// A folder of static pod manifests this kubelet runs (each shown by a mirror pod).
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// The sandbox image.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pub pod_infra_container_image: String,
}

/// Parses `key=value:Effect` / `key:Effect` (the kubelet's `--register-with-taints`).
pub fn parse_taint(s: &str) -> anyhow::Result<Value> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("invalid taint spec {s:?}: expected key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!(
            "invalid taint effect {effect:?} in {s:?}: must be NoSchedule, PreferNoSchedule or \
             NoExecute"
        );
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if key.is_empty() {
        bail!("invalid taint spec {s:?}: the key is empty");
    }
    let mut t = json!({"key": key, "effect": effect});
    if let Some(v) = value {
        t["value"] = json!(v);
    }
    Ok(t)
}

fn pairs(list: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list.iter().filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid {what} {item:?}: expected key=value"))?;
        if k.is_empty() {
            bail!("invalid {what} {item:?}: the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub fn run(a: KubeletArgs) -> anyhow::Result<ExitCode> {
    let Some(node_name) = a.node_name.or(a.hostname_override) else {
        bail!("--node-name is required");
    };
    let taints = a
        .register_with_taints
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| parse_taint(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let capacity = pairs(&a.capacity, "capacity")?;
    for (k, v) in &capacity {
        if crate::component_base::quantity::Quantity::parse(v).is_err() {
            bail!("invalid capacity {k}={v}: {v:?} is not a quantity");
        }
    }
    let root_dir = match a.root_dir {
        Some(d) => d,
        None => crate::cluster::profile::home()?
            .join("kubelet")
            .join(&node_name),
    };
    let opts = Options {
        node_name,
        kubeconfig: a.kubeconfig,
        pod_network: a
            .pod_network
            .unwrap_or_else(|| crate::kubelet::labels::network_name(&a.profile)),
        profile: a.profile,
        pod_cidr: a.pod_cidr,
        cluster_cidr: a.cluster_cidr,
        address: a.address,
        port: a.port,
        root_dir,
        capacity,
        labels: pairs(&a.node_labels, "node label")?,
        taints,
        pause_image: a.pod_infra_container_image,
        tls_cert_file: a.tls_cert_file,
        tls_private_key_file: a.tls_private_key_file,
        client_ca_file: a.client_ca_file,
        pod_manifest_path: a.pod_manifest_path,
    };
    super::node_runtime()?.block_on(kubelet::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_as_the_kubelets_flag() {
        assert_eq!(
            parse_taint("node-role.kubernetes.io/control-plane:NoSchedule").expect("ok"),
            json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
        );
        assert_eq!(
            parse_taint("a=b:NoExecute").expect("ok"),
            json!({"key": "a", "value": "b", "effect": "NoExecute"})
        );
        assert!(parse_taint("a=b").is_err());
        assert!(parse_taint("a=b:Sometimes").is_err());
        assert!(parse_taint(":NoSchedule").is_err());
    }
}
