//! The node's side of the kubelet: registering the Node, renewing its Lease in
//! `kube-node-lease` every 10 s (the heartbeat the node-lifecycle controller watches), and
//! posting the node's status — capacity and allocatable, conditions (Ready, MemoryPressure,
//! DiskPressure, PIDPressure), addresses, the kubelet's endpoint, node info and images.
//!
//! When the Docker engine can't be reached the node still registers and heartbeats, but reports
//! `Ready=False` with the reason, as a kubelet whose container runtime is down does.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The Lease's duration (the kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_SECONDS: i32 = 40;
/// How often the Lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The kubelet version the node reports.
pub const KUBELET_VERSION: &str = "v1.33.0-minik";

/// What the Node is registered with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub pod_cidr: String,
    pub address: String,
    pub port: u16,
    pub capacity: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
}

/// The machine's capacity: CPUs, memory from /proc/meminfo, 110 pods, the disk of `root`.
pub fn machine_capacity(root: &std::path::Path) -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    let disk = disk_bytes(root);
    let mut cap = BTreeMap::from([
        ("cpu".to_string(), cpus.to_string()),
        ("memory".to_string(), format!("{mem_kib}Ki")),
        ("pods".to_string(), "110".to_string()),
        ("hugepages-2Mi".to_string(), "0".to_string()),
    ]);
    if let Some(d) = disk {
        cap.insert("ephemeral-storage".into(), format!("{}Ki", d / 1024));
    }
    cap
}

fn disk_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks as u64 * st.f_frsize as u64)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The conditions a kubelet posts: healthy, or Ready=False with `runtime_problem`; a
/// condition keeps its transition time from `old` while its status stays.
pub fn conditions(runtime_problem: Option<&str>, old: &Node) -> Value {
    let now = now();
    let since = |t: &str, status: &str| -> String {
        old.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == status))
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_else(|| now.clone())
    };
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since(t, status)})
    };
    let ready = match runtime_problem {
        None => cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        Some(p) => cond(
            "Ready",
            "False",
            "KubeletNotReady",
            &format!("container runtime is down: {p}"),
        ),
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        ready,
    ])
}

/// The node's status as posted.
pub fn status(
    spec: &NodeSpec,
    runtime_version: &str,
    runtime_problem: Option<&str>,
    images: &[(Vec<String>, i64)],
    old: &Node,
) -> Value {
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut imgs: Vec<&(Vec<String>, i64)> = images.iter().collect();
    imgs.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    json!({
        "capacity": spec.capacity,
        "allocatable": spec.capacity,
        "conditions": conditions(runtime_problem, old),
        "addresses": [
            {"type": "InternalIP", "address": spec.address},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.port}},
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": machine_id,
            "bootID": boot_id,
            "kernelVersion": kernel(),
            "osImage": os_image(),
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch(),
        },
        "images": imgs.iter().take(50).map(|(names, size)| json!({"names": names, "sizeBytes": size})).collect::<Vec<_>>(),
    })
}

/// The Node object to create.
pub fn node_object(spec: &NodeSpec) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch(),
    });
    for (k, v) in &spec.labels {
        labels[k] = json!(v);
    }
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]},
    });
    if !spec.taints.is_empty() {
        node["spec"]["taints"] = json!(spec.taints);
    }
    node
}

/// Registers the node: creates it, or (a restarted kubelet) updates its labels and pod CIDR.
pub async fn register(client: &kube::Client, spec: &NodeSpec) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let obj: Node = serde_json::from_value(node_object(spec))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": node_object(spec)["metadata"]["labels"]},
                               "spec": {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]}});
            api.patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .or_else(|e| match e {
                    // podCIDR is immutable once set: keep the registered one.
                    kube::Error::Api(s) if s.code == 422 => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| anyhow::anyhow!("updating node {}: {e}", spec.name))
        }
        Err(e) => Err(anyhow::anyhow!("registering node {}: {e}", spec.name)),
    }
}

/// Posts the node's status.
pub async fn post_status(
    client: &kube::Client,
    spec: &NodeSpec,
    runtime_version: &str,
    runtime_problem: Option<&str>,
    images: &[(Vec<String>, i64)],
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let old = api
        .get(&spec.name)
        .await
        .map_err(|e| anyhow::anyhow!("reading node {}: {e}", spec.name))?;
    let st = status(spec, runtime_version, runtime_problem, images, &old);
    api.patch_status(
        &spec.name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": st})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("posting the status of node {}: {e}", spec.name))?;
    Ok(())
}

/// Renews (or creates) the node's Lease.
pub async fn renew_lease(client: &kube::Client, node: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(jiff::Timestamp::now());
    match api.get_opt(node).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(node.to_string());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            api.replace(node, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "minik-m02".into(),
            pod_cidr: "10.244.1.0/24".into(),
            address: "127.0.0.1".into(),
            port: 10251,
            capacity: BTreeMap::from([("cpu".into(), "2".into())]),
            labels: BTreeMap::from([("node-role.kubernetes.io/worker".into(), "".into())]),
            taints: vec![json!({"key": "k", "effect": "NoSchedule"})],
        }
    }

    #[test]
    fn the_node_object_has_the_standard_labels() {
        let n = node_object(&spec());
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/hostname"],
            "minik-m02"
        );
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(
            n["metadata"]["labels"]["node-role.kubernetes.io/worker"],
            ""
        );
        assert_eq!(n["spec"]["podCIDR"], "10.244.1.0/24");
        assert_eq!(n["spec"]["taints"][0]["key"], "k");
    }

    #[test]
    fn a_runtime_problem_makes_the_node_not_ready() {
        let old = Node::default();
        let ok = status(&spec(), "docker://20.10", None, &[], &old);
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
                .unwrap_or_default()
        };
        assert_eq!(ready(&ok)["status"], "True");
        let down = status(
            &spec(),
            "docker://20.10",
            Some("cannot reach the Docker engine"),
            &[],
            &old,
        );
        assert_eq!(ready(&down)["status"], "False");
        assert!(
            ready(&down)["message"]
                .as_str()
                .unwrap_or("")
                .contains("container runtime is down: cannot reach")
        );
        assert_eq!(ok["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10251);
    }
}
