//! The cluster config file: what `minik up --config FILE` reads and `<state>/config.yaml` keeps.
//!
//! ```yaml
//! apiVersion: minik.dev/v1alpha1
//! kind: Cluster
//! nodes: 1                       # the control-plane node plus workers (0: no node runs pods)
//! ports:
//!   apiserver: 6443              # 0 = any free port
//!   etcd: 2379
//!   scheduler: 10259
//!   controllerManager: 10257
//!   kubelet: 10250               # node i's kubelet listens on kubelet + i
//! networking:
//!   serviceSubnet: 10.96.0.0/12
//!   nodePortRange: 30000-32767
//!   podSubnet: 10.244.0.0/16     # node i's pods get the i-th /24
//!   podNetwork: minik            # the Docker network of the pods (default minik-<profile>)
//! etcd:
//!   servers: []                  # external etcd URLs instead of the embedded store
//!   snapshots: {interval: 12h, keep: 5}
//! extraArgs:                     # more flags per component, written into its manifest
//!   kube-apiserver: {v: "2"}
//!   kube-controller-manager: {node-monitor-grace-period: 10s}
//!   fake-kubelet: {heartbeat: 2s}  # how often fake nodes renew their Leases
//!   kubelet: {pod-infra-container-image: minik/pause:3.10}
//! fakeNodes: 100                 # simulated nodes (minik fake-kubelet), or:
//! fakeNodeProfile: nodes.yaml    # nodes: [{count, namePrefix, capacity, labels, taints}]
//! ```
//!
//! Unknown keys and bad values are refused with the line and the field, as kubectl refuses a
//! bad manifest.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "minik.dev/v1alpha1";
pub const KIND: &str = "Cluster";

/// The components whose flags `extraArgs` may extend.
pub const COMPONENTS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "fake-kubelet",
    "kubelet",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default = "one")]
    pub nodes: u32,
    #[serde(default)]
    pub ports: Ports,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub etcd: EtcdConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, BTreeMap<String, String>>,
    /// Simulated nodes (`minik fake-kubelet`): how many default ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fake_nodes: u32,
    /// Simulated nodes from a profile file (`nodes: [{count, namePrefix, capacity, …}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_node_profile: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ports {
    #[serde(default = "default_apiserver_port")]
    pub apiserver: u16,
    #[serde(default = "default_etcd_port")]
    pub etcd: u16,
    /// kube-scheduler's health endpoint (`--secure-port`).
    #[serde(default = "default_scheduler_port")]
    pub scheduler: u16,
    /// kube-controller-manager's health endpoint (`--secure-port`).
    #[serde(default = "default_controller_manager_port")]
    pub controller_manager: u16,
    /// The first node's kubelet port; node i listens on `kubelet + i` (0 = free ports).
    #[serde(default = "default_kubelet_port")]
    pub kubelet: u16,
}

fn default_kubelet_port() -> u16 {
    10250
}

fn default_apiserver_port() -> u16 {
    6443
}
fn default_etcd_port() -> u16 {
    2379
}
fn default_scheduler_port() -> u16 {
    10259
}
fn default_controller_manager_port() -> u16 {
    10257
}

impl Default for Ports {
    fn default() -> Ports {
        Ports {
            apiserver: default_apiserver_port(),
            etcd: default_etcd_port(),
            scheduler: default_scheduler_port(),
            controller_manager: default_controller_manager_port(),
            kubelet: default_kubelet_port(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    #[serde(default = "default_service_subnet")]
    pub service_subnet: String,
    #[serde(default = "default_node_port_range")]
    pub node_port_range: String,
    /// The pods' addresses; node i gets the i-th /24 (kubeadm's `podSubnet`).
    #[serde(default = "default_pod_subnet")]
    pub pod_subnet: String,
    /// The Docker network the pods join (default `minik-<profile>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_network: Option<String>,
}

fn default_pod_subnet() -> String {
    "10.244.0.0/16".into()
}

fn default_service_subnet() -> String {
    "10.96.0.0/12".into()
}
fn default_node_port_range() -> String {
    "30000-32767".into()
}

impl Default for Networking {
    fn default() -> Networking {
        Networking {
            service_subnet: default_service_subnet(),
            node_port_range: default_node_port_range(),
            pod_subnet: default_pod_subnet(),
            pod_network: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdConfig {
    /// External etcd client URLs; empty = the embedded store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default)]
    pub snapshots: Snapshots,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshots {
    /// How often to take a snapshot (`12h`, `30m`, …); `0` turns scheduled snapshots off.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// How many scheduled snapshots to keep.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_interval() -> String {
    "12h".into()
}
fn default_keep() -> u32 {
    5
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        Snapshots {
            interval: default_interval(),
            keep: default_keep(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            nodes: 1,
            ports: Ports::default(),
            networking: Networking::default(),
            etcd: EtcdConfig::default(),
            extra_args: BTreeMap::new(),
            fake_nodes: 0,
            fake_node_profile: None,
        }
    }
}

impl ClusterConfig {
    /// Parses and checks a config file's text; errors name the file, the line and the field.
    pub fn parse(text: &str, file: &str) -> anyhow::Result<ClusterConfig> {
        let cfg: ClusterConfig = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("{file}{at}: {e}")
        })?;
        if let Err((field, msg)) = cfg.check() {
            let at = line_of(text, &field)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            bail!("{file}{at}: {field}: {msg}");
        }
        Ok(cfg)
    }

    /// The config as YAML.
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_yaml::to_string(self)?)
    }

    /// Checks the values; `Err((field path, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if self.api_version != API_VERSION {
            return err(
                "apiVersion",
                format!(
                    "unsupported value {:?}: must be {API_VERSION:?}",
                    self.api_version
                ),
            );
        }
        if self.kind != KIND {
            return err(
                "kind",
                format!("unsupported value {:?}: must be {KIND:?}", self.kind),
            );
        }
        if self.fake_nodes > 10_000 {
            return err(
                "fakeNodes",
                format!("invalid value {}: at most 10000", self.fake_nodes),
            );
        }
        if self.nodes > 100 {
            return err(
                "nodes",
                format!("invalid value {}: must be between 0 and 100", self.nodes),
            );
        }
        let ports = [
            ("ports.apiserver", self.ports.apiserver),
            ("ports.etcd", self.ports.etcd),
            ("ports.scheduler", self.ports.scheduler),
            ("ports.controllerManager", self.ports.controller_manager),
        ];
        for (i, (field, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| *p == *port && *p != 0) {
                return err(
                    field,
                    format!("invalid value {port}: the same port as {other}"),
                );
            }
        }
        if let Err(m) = parse_cidr(&self.networking.service_subnet) {
            return err("networking.serviceSubnet", m);
        }
        if let Err(m) = parse_port_range(&self.networking.node_port_range) {
            return err("networking.nodePortRange", m);
        }
        match parse_cidr(&self.networking.pod_subnet) {
            Err(m) => return err("networking.podSubnet", m),
            Ok((_, bits)) if bits > 17 => {
                return err(
                    "networking.podSubnet",
                    format!(
                        "invalid value {:?}: must be a /17 or larger (a /24 per node, up to 100 nodes)",
                        self.networking.pod_subnet
                    ),
                );
            }
            Ok(_) => {}
        }
        for s in &self.etcd.servers {
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return err(
                    "etcd.servers",
                    format!("invalid value {s:?}: must be an http:// or https:// URL"),
                );
            }
        }
        if let Err(m) = self.snapshot_interval() {
            return err("etcd.snapshots.interval", m);
        }
        for (component, args) in &self.extra_args {
            if !COMPONENTS.contains(&component.as_str()) {
                return err(
                    "extraArgs",
                    format!(
                        "unknown component {component:?}: must be one of {}",
                        COMPONENTS.join(", ")
                    ),
                );
            }
            for flag in args.keys() {
                if flag.is_empty() || flag.starts_with('-') || flag.contains([' ', '=']) {
                    return err(
                        &format!("extraArgs.{component}"),
                        format!(
                            "invalid flag name {flag:?}: write it without dashes, e.g. v: \"2\""
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The snapshot interval; `None` when scheduled snapshots are off.
    pub fn snapshot_interval(&self) -> Result<Option<Duration>, String> {
        let s = self.etcd.snapshots.interval.trim();
        if s == "0" || s.is_empty() {
            return Ok(None);
        }
        parse_duration(s).map(Some)
    }

    /// The `kubernetes` service's cluster IP: the first address of the service range.
    pub fn kubernetes_service_ip(&self) -> String {
        match parse_cidr(&self.networking.service_subnet) {
            Ok((net, _)) => Ipv4Addr::from(u32::from(net) + 1).to_string(),
            Err(_) => "10.96.0.1".into(),
        }
    }

    /// The extra flags for `component` as `--flag=value` arguments.
    pub fn extra_flags(&self, component: &str) -> Vec<String> {
        self.extra_args
            .get(component)
            .map(|m| m.iter().map(|(k, v)| format!("--{k}={v}")).collect())
            .unwrap_or_default()
    }
}

/// Parses durations as etcd's flags write them: `500ms`, `5s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a number followed by a unit"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if secs <= 0.0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The 1-based line where the last segment of a field path first appears as a key.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let key = field.rsplit('.').next()?;
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        })
        .map(|i| i + 1)
}

pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("invalid value {s:?}: must be an IPv4 CIDR such as 10.96.0.0/12");
    let (ip, bits) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    if !(8..=28).contains(&bits) {
        return Err(format!(
            "invalid value {s:?}: the prefix must be between /8 and /28"
        ));
    }
    Ok((ip, bits))
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid value {s:?}: must be a port range such as 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\n";
        let cfg = ClusterConfig::parse(text, "c.yaml").unwrap();
        assert_eq!(cfg, ClusterConfig::default());
        let again = ClusterConfig::parse(&cfg.to_yaml().unwrap(), "c.yaml").unwrap();
        assert_eq!(again, cfg);
        assert_eq!(cfg.kubernetes_service_ip(), "10.96.0.1");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nports:\n  apiserver: 7443\n  etcdd: 1\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:5:"), "{e}");
        assert!(e.contains("unknown field `etcdd`"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field_and_line() {
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnetworking:\n  serviceSubnet: 10.96.0.0\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "c.yaml:4: networking.serviceSubnet: invalid value \"10.96.0.0\": must be an IPv4 CIDR such as 10.96.0.0/12"
        );
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 101\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:3: nodes: invalid value 101"), "{e}");
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nports: {apiserver: 70000}\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml:3:"), "{e}");
        let text = "apiVersion: v1\nkind: Cluster\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:1: apiVersion: unsupported value"),
            "{e}"
        );
        let text =
            "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nextraArgs:\n  kube-proxyy: {v: '2'}\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown component \"kube-proxyy\""), "{e}");
        let text =
            "apiVersion: minik.dev/v1alpha1\nkind: Cluster\netcd:\n  snapshots: {interval: soon}\n";
        let e = ClusterConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcd.snapshots.interval"), "{e}");
    }

    #[test]
    fn extra_args_become_flags() {
        let text = "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nextraArgs:\n  kube-apiserver: {v: '2', profiling: 'false'}\n";
        let cfg = ClusterConfig::parse(text, "c.yaml").unwrap();
        assert_eq!(
            cfg.extra_flags("kube-apiserver"),
            vec!["--profiling=false", "--v=2"]
        );
        assert!(cfg.extra_flags("etcd").is_empty());
    }
}
