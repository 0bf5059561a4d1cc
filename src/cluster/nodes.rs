//! The cluster's nodes: what each kubelet runs with, and the identity it runs as.
//!
//! On a kubeadm node the kubelet is a systemd unit, not a static pod; minik's supervisor plays
//! systemd too. Each node is a unit file `<state>/nodes/<node>.yaml` — written in the same Pod
//! shape as the static-pod manifests (a command and its flags), but kept out of `manifests/` so
//! no mirror pod pretends the kubelet is a pod. `minik node stop` renames a unit to
//! `<node>.yaml.stopped`, which the supervisor reads as "not running"; `minik node delete`
//! removes it.
//!
//! Nodes are named as minikube names them: the control-plane node is the profile's name
//! (`minik`), workers are `minik-m02`, `minik-m03`, …. Node *i* gets the pod range
//! `<pod subnet>.i.0/24` and the kubelet port `ports.kubelet + i`. Each kubelet has its own
//! client certificate (`system:node:<node>` in `system:nodes`, kubeconfig `kubelet-<node>.conf`)
//! and a serving certificate for its streaming server signed by the cluster CA. Its static pods
//! (Docker containers, shown by mirror pods) are the manifests in
//! `<state>/kubelet/<node>/manifests/`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::json;

use super::config::ClusterConfig;
use super::pki::{KubeconfigSpec, Pki, write_kubeconfig};
use super::profile::Profile;
use super::setup::server_url;

/// How the supervisor names a node unit among its components' files (`nodes/minik.yaml`).
pub const UNIT_PREFIX: &str = "nodes/";
/// The suffix of a stopped node's unit file.
pub const STOPPED_SUFFIX: &str = ".stopped";
/// The control-plane role label and taint key.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// One node as its unit file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUnit {
    pub name: String,
    /// 0 for the control-plane node, 1 for `-m02`, …
    pub index: u32,
    pub port: u16,
    pub stopped: bool,
}

/// The folder of the node units.
pub fn nodes_dir(profile: &Profile) -> PathBuf {
    profile.dir.join("nodes")
}

/// The name of node `index` (0 = the control-plane node).
pub fn node_name(profile: &Profile, index: u32) -> String {
    if index == 0 {
        profile.node_name()
    } else {
        format!("{}-m{:02}", profile.node_name(), index + 1)
    }
}

/// The index of a node name of this profile, if it is one.
pub fn node_index(profile: &Profile, name: &str) -> Option<u32> {
    if name == profile.node_name() {
        return Some(0);
    }
    let n: u32 = name
        .strip_prefix(&format!("{}-m", profile.node_name()))?
        .parse()
        .ok()?;
    (n >= 2).then(|| n - 1)
}

/// The pod range of node `index`: the `index`-th /24 of the pod subnet.
pub fn pod_cidr(cfg: &ClusterConfig, index: u32) -> anyhow::Result<String> {
    let (net, prefix) = super::config::parse_cidr(&cfg.networking.pod_subnet)
        .map_err(|m| anyhow::anyhow!("networking.podSubnet: {m}"))?;
    if prefix > 24 || index >= 1 << (24 - prefix) {
        bail!(
            "no pod range left for node {index} in networking.podSubnet {}",
            cfg.networking.pod_subnet
        );
    }
    let base = u32::from(net) + (index << 8);
    Ok(format!("{}/24", std::net::Ipv4Addr::from(base)))
}

/// The Docker network of the profile's pods.
pub fn network(profile: &Profile, cfg: &ClusterConfig) -> String {
    cfg.networking
        .pod_network
        .clone()
        .unwrap_or_else(|| crate::kubelet::labels::network_name(&profile.name))
}

/// The nodes of a profile, in index order (stopped ones included).
pub fn list(profile: &Profile) -> anyhow::Result<Vec<NodeUnit>> {
    let dir = nodes_dir(profile);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let (stem, stopped) = match file.strip_suffix(STOPPED_SUFFIX) {
            Some(s) => (s.to_string(), true),
            None => (file.clone(), false),
        };
        let Some(name) = stem.strip_suffix(".yaml") else {
            continue;
        };
        let Some(index) = node_index(profile, name) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let port = text
            .lines()
            .find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("--port="))
            .and_then(|p| p.trim().trim_matches('\'').trim_matches('"').parse().ok())
            .unwrap_or(0);
        out.push(NodeUnit {
            name: name.to_string(),
            index,
            port,
            stopped,
        });
    }
    out.sort_by_key(|n| n.index);
    Ok(out)
}

/// Makes the node's certificates and kubeconfig (kept when they exist).
pub fn ensure_identity(profile: &Profile, cfg: &ClusterConfig, node: &str) -> anyhow::Result<()> {
    let pki = Pki::open(&profile.pki_dir())?;
    let client = format!("kubelet-{node}-client");
    let serving = format!("kubelet-{node}-serving");
    if !pki.paths(&client).cert.exists() {
        pki.client(&client, &format!("system:node:{node}"), &["system:nodes"])?;
    }
    if !pki.paths(&serving).cert.exists() {
        pki.serving(
            &serving,
            node,
            &["localhost".into(), "127.0.0.1".into(), node.to_string()],
        )?;
    }
    let c = pki.paths(&client);
    write_kubeconfig(
        &profile.conf(&format!("kubelet-{node}")),
        &KubeconfigSpec {
            cluster: &profile.context_name(),
            server: &server_url(cfg),
            ca_pem: &pki.ca().cert_pem()?,
            user: &format!("system:node:{node}"),
            client_cert_pem: &c.cert_pem()?,
            client_key_pem: &c.key_pem()?,
        },
    )
}

/// The unit (a Pod-shaped process spec) of a node's kubelet.
pub fn unit(
    profile: &Profile,
    cfg: &ClusterConfig,
    index: u32,
    port: u16,
    taint_control_plane: bool,
) -> anyhow::Result<serde_json::Value> {
    let node = node_name(profile, index);
    let pki = profile.pki_dir();
    let p = |f: &str| pki.join(f).display().to_string();
    let mut cmd = vec![
        "kubelet".to_string(),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--cluster-cidr={}", cfg.networking.pod_subnet),
        format!(
            "--kubeconfig={}",
            profile.conf(&format!("kubelet-{node}")).display()
        ),
        format!("--node-name={node}"),
        format!("--pod-cidr={}", pod_cidr(cfg, index)?),
        format!("--pod-network={}", network(profile, cfg)),
        format!(
            "--pod-manifest-path={}",
            profile
                .dir
                .join("kubelet")
                .join(&node)
                .join("manifests")
                .display()
        ),
        format!("--port={port}"),
        format!("--profile={}", profile.name),
        format!(
            "--root-dir={}",
            profile.dir.join("kubelet").join(&node).display()
        ),
        format!(
            "--tls-cert-file={}",
            p(&format!("kubelet-{node}-serving.crt"))
        ),
        format!(
            "--tls-private-key-file={}",
            p(&format!("kubelet-{node}-serving.key"))
        ),
    ];
    if index == 0 {
        cmd.push(format!("--node-labels={CONTROL_PLANE_ROLE}="));
        if taint_control_plane {
            cmd.push(format!(
                "--register-with-taints={CONTROL_PLANE_ROLE}:NoSchedule"
            ));
        }
    }
    cmd.extend(cfg.extra_flags("kubelet"));
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("kubelet-{node}"),
            "namespace": "kube-system",
            "labels": {"component": "kubelet", "tier": "node"},
        },
        "spec": {
            "containers": [{
                "name": "kubelet",
                "image": super::manifests::image(),
                "command": cmd,
                "env": super::manifests::ALLOCATOR_ENV
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect::<Vec<_>>(),
            }],
            "hostNetwork": true,
        },
    }))
}

/// Writes node `index`'s identity and unit file.
pub fn write(
    profile: &Profile,
    cfg: &ClusterConfig,
    index: u32,
    port: u16,
    taint_control_plane: bool,
) -> anyhow::Result<String> {
    let node = node_name(profile, index);
    ensure_identity(profile, cfg, &node)?;
    let dir = nodes_dir(profile);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_yaml::to_string(&unit(profile, cfg, index, port, taint_control_plane)?)?;
    let path = dir.join(format!("{node}.yaml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(node)
}

/// The nodes of a new profile: `cfg.nodes` of them, the control-plane node tainted when there
/// are workers (as kind does).
pub fn write_all(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    for i in 0..cfg.nodes {
        write(
            profile,
            cfg,
            i,
            kubelet_port(profile, cfg, i)?,
            cfg.nodes > 1,
        )?;
    }
    Ok(())
}

/// Node `index`'s kubelet port: `ports.kubelet + index`, or a free port when that is 0.
pub fn kubelet_port(_profile: &Profile, cfg: &ClusterConfig, index: u32) -> anyhow::Result<u16> {
    if cfg.ports.kubelet == 0 {
        return super::ports::free_port();
    }
    u16::try_from(u32::from(cfg.ports.kubelet) + index).map_err(|_| {
        anyhow::anyhow!(
            "ports.kubelet {} + {index} is past 65535",
            cfg.ports.kubelet
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> Profile {
        Profile {
            name: name.into(),
            dir: PathBuf::from("/tmp/minik-test-profile").join(name),
        }
    }

    #[test]
    fn nodes_are_named_as_minikube_names_them() {
        let p = profile("minik");
        assert_eq!(node_name(&p, 0), "minik");
        assert_eq!(node_name(&p, 1), "minik-m02");
        assert_eq!(node_name(&p, 10), "minik-m11");
        assert_eq!(node_index(&p, "minik"), Some(0));
        assert_eq!(node_index(&p, "minik-m02"), Some(1));
        assert_eq!(node_index(&p, "minik-m01"), None);
        assert_eq!(node_index(&p, "other"), None);
    }

    #[test]
    fn each_node_gets_a_24_of_the_pod_subnet() {
        let cfg = ClusterConfig::default();
        assert_eq!(pod_cidr(&cfg, 0).expect("ok"), "10.244.0.0/24");
        assert_eq!(pod_cidr(&cfg, 2).expect("ok"), "10.244.2.0/24");
        assert!(pod_cidr(&cfg, 256).is_err());
    }
}
