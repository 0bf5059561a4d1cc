//! Static-pod manifests: how the control plane is described on disk, as kubeadm describes it.
//!
//! kubeadm writes one Pod manifest per control-plane component into `/etc/kubernetes/manifests/`
//! and the kubelet runs them; minik writes the same files into `<state>/manifests/` and its
//! supervisor runs them as local processes. The shape is kubeadm's: a Pod in `kube-system`
//! labelled `component: <name>`, `tier: control-plane`, host network, priority class
//! `system-node-critical`, one container whose `command` is the component with all its flags,
//! and probes the supervisor runs (httpGet / tcpSocket).
//!
//! The container image is `minik:<version>`: the processes run from the `minik` binary itself
//! (a multi-call binary, started with argv[0] = the component name), not from an image. A
//! command whose first word is not a minik component (say `/usr/bin/etcd`) runs that program.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Probe};
use serde_json::json;
use sha2::Digest as _;

use super::config::ClusterConfig;
use super::profile::Profile;

/// The components minik writes manifests for, in start order (each waits for the ones before).
pub const CONTROL_PLANE: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Environment for minik's processes: mimalloc commits its arenas on demand instead of up front
/// (with the default, an idle control plane's resident memory is about twice as large).
pub const ALLOCATOR_ENV: [(&str, &str); 1] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// The image name written into manifests: the minik binary of this version.
pub fn image() -> String {
    format!("minik:v{}", env!("CARGO_PKG_VERSION"))
}

/// One parsed manifest file.
#[derive(Debug, Clone)]
pub struct StaticPod {
    /// The Pod's name (`kube-apiserver`); the mirror pod is `<name>-<node>`.
    pub name: String,
    /// The file it came from (`kube-apiserver.yaml`).
    pub file: String,
    /// The container's command followed by its args.
    pub argv: Vec<String>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub startup: Option<Probe>,
    /// `kubernetes.io/config.hash`: a hash of the file's content, new for every edit.
    pub hash: String,
    pub pod: Pod,
}

/// Parses a manifest file's text. Errors say where (line and column) and what is wrong.
pub fn parse(file: &str, text: &str) -> anyhow::Result<StaticPod> {
    let located = |e: serde_yaml::Error| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{file}{at}: {e}")
    };
    let value = serde_yaml::from_str::<serde_yaml::Value>(text).map_err(located)?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "Pod" {
        anyhow::bail!("{file}: kind: must be \"Pod\", got {kind:?}");
    }
    let pod: Pod = serde_yaml::from_str(text).map_err(located)?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{file}: metadata.name: Required value"))?;
    let spec = pod
        .spec
        .as_ref()
        .with_context(|| format!("{file}: spec: Required value"))?;
    let [container] = spec.containers.as_slice() else {
        anyhow::bail!(
            "{file}: spec.containers: must hold exactly one container (a local process), got {}",
            spec.containers.len()
        );
    };
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if argv.first().is_none_or(|c| c.is_empty()) {
        anyhow::bail!("{file}: spec.containers[0].command: Required value");
    }
    let hash = hex(&sha2::Sha256::digest(text.as_bytes())[..16]);
    Ok(StaticPod {
        name,
        file: file.to_string(),
        argv,
        liveness: container.liveness_probe.clone(),
        readiness: container.readiness_probe.clone(),
        startup: container.startup_probe.clone(),
        hash,
        pod,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads every manifest in `dir` (files ending in `.yaml`, `.yml` or `.json`, not hidden), in
/// name order: each as its parsed pod or its error.
pub fn read_dir(dir: &Path) -> Vec<(String, anyhow::Result<StaticPod>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.starts_with('.')
            || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|text| parse(&name, &text));
        out.push((name, parsed));
    }
    out
}

/// Writes the manifests of the control plane into the profile's manifests folder (all of them;
/// `up` calls this only for a new profile, so later edits by the user are kept).
pub fn write_all(profile: &Profile, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let dir = profile.manifests_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let fake = (cfg.fake_nodes > 0 || cfg.fake_node_profile.is_some()).then_some("fake-kubelet");
    for component in CONTROL_PLANE.into_iter().chain(fake) {
        if component == "etcd" && !cfg.etcd.servers.is_empty() {
            continue; // an external etcd: no local store
        }
        let pod = manifest(component, profile, cfg);
        let path = dir.join(format!("{component}.yaml"));
        let text = serde_yaml::to_string(&pod)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The etcd client URL the API server uses.
pub fn etcd_servers(cfg: &ClusterConfig) -> String {
    if cfg.etcd.servers.is_empty() {
        format!("https://127.0.0.1:{}", cfg.ports.etcd)
    } else {
        cfg.etcd.servers.join(",")
    }
}

/// One component's manifest as a Pod (JSON value, written as YAML).
pub fn manifest(component: &str, profile: &Profile, cfg: &ClusterConfig) -> serde_json::Value {
    let pki = profile.pki_dir();
    let p = |f: &str| pki.join(f).display().to_string();
    let (mut command, probes, annotations) = match component {
        "etcd" => {
            let url = format!("https://127.0.0.1:{}", cfg.ports.etcd);
            (
                vec![
                    "etcd".to_string(),
                    format!("--advertise-client-urls={url}"),
                    format!("--cert-file={}", p("etcd/server.crt")),
                    "--client-cert-auth=true".to_string(),
                    format!("--data-dir={}", profile.etcd_data_dir().display()),
                    "--experimental-watch-progress-notify-interval=5s".to_string(),
                    format!("--key-file={}", p("etcd/server.key")),
                    format!("--listen-client-urls={url}"),
                    format!("--name={}", profile.node_name()),
                    format!("--trusted-ca-file={}", p("etcd/ca.crt")),
                ],
                json!({
                    "livenessProbe": tcp_probe(cfg.ports.etcd, 8),
                    "startupProbe": tcp_probe(cfg.ports.etcd, 24),
                }),
                json!({"kubeadm.kubernetes.io/etcd.advertise-client-urls": url}),
            )
        }
        "kube-apiserver" => {
            let port = cfg.ports.apiserver;
            let mut cmd = vec![
                "kube-apiserver".to_string(),
                "--bind-address=127.0.0.1".to_string(),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--etcd-servers={}", etcd_servers(cfg)),
            ];
            if cfg.etcd.servers.is_empty() {
                cmd.extend([
                    format!("--etcd-cafile={}", p("etcd/ca.crt")),
                    format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
                    format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
                ]);
            }
            cmd.extend([
                format!("--kubelet-certificate-authority={}", p("ca.crt")),
                format!(
                    "--kubelet-client-certificate={}",
                    p("apiserver-kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                format!("--secure-port={port}"),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!(
                    "--service-cluster-ip-range={}",
                    cfg.networking.service_subnet
                ),
                format!(
                    "--service-node-port-range={}",
                    cfg.networking.node_port_range
                ),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
            ]);
            (
                cmd,
                json!({
                    "livenessProbe": https_probe("/livez", port, 8),
                    "readinessProbe": https_probe("/readyz", port, 3),
                    "startupProbe": https_probe("/livez", port, 24),
                }),
                json!({"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint":
                    format!("127.0.0.1:{port}")}),
            )
        }
        "kube-controller-manager" => {
            // kubeadm runs it with controller-manager.conf and --use-service-account-credentials
            // (a token per controller); minik's controllers act with the admin identity until
            // per-controller credentials exist.
            let conf = profile.conf("admin").display().to_string();
            let port = cfg.ports.controller_manager;
            (
                vec![
                    "kube-controller-manager".to_string(),
                    "--bind-address=127.0.0.1".to_string(),
                    "--controllers=*".to_string(),
                    format!("--kubeconfig={conf}"),
                    "--leader-elect=true".to_string(),
                    format!("--root-ca-file={}", p("ca.crt")),
                    format!("--secure-port={port}"),
                ],
                json!({
                    "livenessProbe": https_probe("/healthz", port, 8),
                    "startupProbe": https_probe("/healthz", port, 24),
                }),
                json!({}),
            )
        }
        "kube-scheduler" => {
            let conf = profile.conf("scheduler").display().to_string();
            let port = cfg.ports.scheduler;
            (
                vec![
                    "kube-scheduler".to_string(),
                    format!("--authentication-kubeconfig={conf}"),
                    format!("--authorization-kubeconfig={conf}"),
                    "--bind-address=127.0.0.1".to_string(),
                    format!("--kubeconfig={conf}"),
                    "--leader-elect=true".to_string(),
                    format!("--secure-port={port}"),
                ],
                json!({
                    "livenessProbe": https_probe("/healthz", port, 8),
                    "startupProbe": https_probe("/healthz", port, 24),
                }),
                json!({}),
            )
        }
        "fake-kubelet" => {
            let mut cmd = vec![
                "fake-kubelet".to_string(),
                format!("--kubeconfig={}", profile.conf("admin").display()),
            ];
            match &cfg.fake_node_profile {
                Some(_) => cmd.push(format!(
                    "--fake-node-profile={}",
                    profile.dir.join("fake-nodes.yaml").display()
                )),
                None => cmd.push(format!("--nodes={}", cfg.fake_nodes)),
            }
            (cmd, json!({}), json!({}))
        }
        other => (vec![other.to_string()], json!({}), json!({})),
    };
    command.extend(cfg.extra_flags(component));
    let mut container = json!({
        "name": component,
        "image": image(),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": ALLOCATOR_ENV.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "resources": {"requests": match component {
            "kube-apiserver" => json!({"cpu": "250m"}),
            "kube-scheduler" => json!({"cpu": "100m"}),
            "kube-controller-manager" => json!({"cpu": "200m"}),
            _ => json!({"cpu": "100m", "memory": "100Mi"}),
        }},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    });
    if let (Some(c), Some(p)) = (container.as_object_mut(), probes.as_object()) {
        c.extend(p.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "labels": {"component": component, "tier": "control-plane"},
            "name": component,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [container],
            "hostNetwork": true,
            "priority": 2_000_001_000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        },
        "status": {},
    })
}

fn https_probe(path: &str, port: u16, failures: u32) -> serde_json::Value {
    json!({
        "failureThreshold": failures,
        "httpGet": {"host": "127.0.0.1", "path": path, "port": port, "scheme": "HTTPS"},
        "initialDelaySeconds": 0,
        "periodSeconds": 1,
        "timeoutSeconds": 15,
    })
}

fn tcp_probe(port: u16, failures: u32) -> serde_json::Value {
    json!({
        "failureThreshold": failures,
        "tcpSocket": {"host": "127.0.0.1", "port": port},
        "initialDelaySeconds": 0,
        "periodSeconds": 1,
        "timeoutSeconds": 15,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            name: "minik".into(),
            dir: "/state/minik".into(),
        }
    }

    #[test]
    fn written_manifests_parse_back_in_kubeadm_shape() {
        let cfg = ClusterConfig::default();
        for component in CONTROL_PLANE {
            let text = serde_yaml::to_string(&manifest(component, &profile(), &cfg)).unwrap();
            let sp = parse(&format!("{component}.yaml"), &text).unwrap();
            assert_eq!(sp.name, component);
            assert_eq!(sp.argv[0], component);
            assert_eq!(sp.pod.metadata.namespace.as_deref(), Some("kube-system"));
            let labels = sp.pod.metadata.labels.clone().unwrap();
            assert_eq!(labels["tier"], "control-plane");
            assert!(sp.liveness.is_some());
        }
        let text = serde_yaml::to_string(&manifest("kube-apiserver", &profile(), &cfg)).unwrap();
        assert!(
            text.contains("- --etcd-servers=https://127.0.0.1:2379"),
            "{text}"
        );
        assert!(text.contains("--tls-cert-file=/state/minik/pki/apiserver.crt"));
    }

    #[test]
    fn bad_manifests_say_where() {
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.yaml:"), "{e}");
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.containers: must hold exactly one"), "{e}");
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("command: Required value"), "{e}");
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kind: must be \"Pod\""), "{e}");
    }

    #[test]
    fn an_edit_changes_the_hash() {
        let cfg = ClusterConfig::default();
        let text = serde_yaml::to_string(&manifest("etcd", &profile(), &cfg)).unwrap();
        let a = parse("etcd.yaml", &text).unwrap();
        let b = parse("etcd.yaml", &text.replace("--name=minik", "--name=other")).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 32);
    }
}
