//! Admission: what kube-apiserver does to a new or changed object after validation-free
//! defaulting and before it is stored — the mutations of the built-in admission plugins and the
//! type strategies' `PrepareForCreate` / `PrepareForUpdate`:
//!
//! - status is the server's: reset on create, kept from the stored object on update (the
//!   `/status` subresource changes it), `metadata.generation` counts spec changes;
//! - pods get their service account and its token volume (ServiceAccount plugin), the default
//!   not-ready/unreachable tolerations (DefaultTolerationSeconds), a priority (Priority), and
//!   start `Pending` with their QoS class;
//! - services get a cluster IP from `--service-cluster-ip-range` and node ports from
//!   `--service-node-port-range` ([`Allocator`]);
//! - jobs get their generated selector and labels.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::resources::Resource;
use super::status::FieldError;

/// Types whose `metadata.generation` counts changes of everything but status and metadata.
pub fn has_generation(r: &Resource) -> bool {
    r.custom.is_some()
        || matches!(
            (r.group, r.name),
            (
                "apps",
                "deployments" | "replicasets" | "statefulsets" | "daemonsets"
            ) | ("batch", "jobs" | "cronjobs")
                | ("", "replicationcontrollers")
                | ("autoscaling", "horizontalpodautoscalers")
                | ("policy", "poddisruptionbudgets")
                | ("networking.k8s.io", "ingresses" | "networkpolicies")
                | ("apiextensions.k8s.io", "customresourcedefinitions")
                | ("scheduling.k8s.io", "priorityclasses")
        )
}

/// Whether the type's status is written only through `/status` (the main resource keeps it).
pub fn status_is_separate(r: &Resource) -> bool {
    r.has_subresource("status")
}

/// Everything except metadata and status: what generation counts.
fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// `PrepareForCreate`: status and generation as the server starts them.
pub fn prepare_create(r: &Resource, obj: &mut Value, uid: &str) {
    if has_generation(r) {
        obj["metadata"]["generation"] = json!(1);
    }
    match (r.group, r.name) {
        ("", "pods") => {
            pod(obj);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "namespaces") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "persistentvolumeclaims" | "persistentvolumes") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "services") => obj["status"] = json!({"loadBalancer": {}}),
        ("", "nodes") => {}
        ("batch", "jobs") => {
            job_selector(obj, uid);
            obj["status"] = json!({});
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let now = obj["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string();
            super::crd::set_status(obj, None, &now);
        }
        _ if status_is_separate(r) => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// `PrepareForUpdate` of the main resource: status stays as stored, generation counts spec
/// changes.
pub fn prepare_update(r: &Resource, obj: &mut Value, old: &Value) {
    if status_is_separate(r) && r.name != "nodes" {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    generation(r, obj, old);
    if r.group == "apiextensions.k8s.io" && r.name == "customresourcedefinitions" {
        let now = super::handlers::now_rfc3339();
        super::crd::set_status(obj, Some(old), &now);
    }
}

/// `PrepareForUpdate` of `/status`: only status changes; spec and metadata stay as stored
/// (bar the fields every update may change: finalizers, owner references).
pub fn prepare_status_update(obj: &mut Value, old: &Value) {
    let status = obj.get("status").cloned();
    let mut next = old.clone();
    match status {
        Some(s) => next["status"] = s,
        None => {
            if let Some(m) = next.as_object_mut() {
                m.remove("status");
            }
        }
    }
    next["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
    *obj = next;
}

fn generation(r: &Resource, obj: &mut Value, old: &Value) {
    if !has_generation(r) {
        return;
    }
    let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let next = if spec_of(obj) != spec_of(old) {
        old_gen + 1
    } else {
        old_gen
    };
    obj["metadata"]["generation"] = json!(next);
}

/// The annotation that marks a mirror pod (its value is the static pod's config hash).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The pod admission plugins: ServiceAccount, DefaultTolerationSeconds, Priority.
/// Mirror pods (the API copies of a node's static pods, annotated `kubernetes.io/config.mirror`)
/// get no service account, as the ServiceAccount plugin leaves them alone.
fn pod(obj: &mut Value) {
    let mirror = obj["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if !mirror {
        let sa = spec["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        spec["serviceAccountName"] = json!(sa);
        spec["serviceAccount"] = json!(sa);
        if spec["automountServiceAccountToken"] != json!(false) {
            token_volume(spec);
        }
    }
    let tolerations = spec
        .as_object_mut()
        .map(|m| m.entry("tolerations").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                    && (t["effect"].is_null() || t["effect"] == "NoExecute")
            });
            if !tolerated {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    if spec["priority"].is_null() {
        spec["priority"] = json!(0);
    }
    if spec["preemptionPolicy"].is_null() {
        spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
}

/// The projected `kube-api-access-<suffix>` volume with the service-account token, the cluster
/// CA and the namespace, mounted read-only in every container.
fn token_volume(spec: &mut Value) {
    const PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let mounted = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == PATH))
    };
    let suffix: String = format!("{:x}", crate::etcd::lease::random_id())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let mut added = false;
    for list in ["containers", "initContainers"] {
        // `get_mut`, not indexing: a missing list must stay missing, not become null.
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter(|c| c.is_object() && !mounted(c)) {
                let mount = json!({"name": name, "readOnly": true, "mountPath": PATH});
                match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    Some(ms) => ms.push(mount),
                    None => c["volumeMounts"] = json!([mount]),
                }
                added = true;
            }
        }
    }
    if added {
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        let has = |m: &Value| m.as_object().is_some_and(|m| !m.is_empty());
        if has(req) || has(lim) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = &lim[res];
            let r = if req[res].is_null() { l } else { &req[res] };
            if l.is_null() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A job's generated selector and the labels its pods carry.
fn job_selector(obj: &mut Value, uid: &str) {
    let name = obj["metadata"]["name"].clone();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec["manualSelector"] == json!(true) {
        return;
    }
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    if let Some(meta) = spec.get_mut("template").filter(|t| t.is_object()).map(|t| {
        if !t["metadata"].is_object() {
            t["metadata"] = json!({});
        }
        &mut t["metadata"]
    }) {
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        let labels = &mut meta["labels"];
        labels["batch.kubernetes.io/controller-uid"] = json!(uid);
        labels["batch.kubernetes.io/job-name"] = name.clone();
        labels["controller-uid"] = json!(uid);
        labels["job-name"] = name;
    }
}

/// Cluster IPs and node ports for services, from the configured ranges. Allocation reads the
/// services stored (the caller holds one lock across the read and the write, so two creates
/// never take the same address).
#[derive(Debug, Clone)]
pub struct Allocator {
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub node_ports: (u16, u16),
}

impl Allocator {
    /// Parses `--service-cluster-ip-range` (`10.96.0.0/12`) and `--service-node-port-range`
    /// (`30000-32767`).
    pub fn new(cidr: &str, node_ports: &str) -> Result<Allocator, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("--service-cluster-ip-range {cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("--service-cluster-ip-range {cidr:?} is not an IPv4 CIDR"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("--service-cluster-ip-range {cidr:?}: bad prefix length"))?;
        let mask = u32::MAX << (32 - prefix);
        let (lo, hi) = node_ports
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
            .filter(|(a, b)| a <= b)
            .ok_or_else(|| {
                format!("--service-node-port-range {node_ports:?} is not a range like 30000-32767")
            })?;
        Ok(Allocator {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
            node_ports: (lo, hi),
        })
    }

    /// The range as written (`10.96.0.0/12`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The first usable address: the `kubernetes` service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let size = 1u32 << (32 - self.prefix);
        let n = u32::from(ip);
        let base = u32::from(self.network);
        n > base && n < base + size - 1
    }

    /// Fills `spec.clusterIP(s)` and node ports of a service being created or updated, given
    /// every other stored service. Errors are the real apiserver's field errors.
    pub fn allocate(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        others: &[Value],
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let ty = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(());
        }
        let used_ips: Vec<&str> = others
            .iter()
            .filter_map(|s| s["spec"]["clusterIP"].as_str())
            .collect();
        let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str().map(str::to_string));
        let wanted = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ip = match (wanted, old_ip) {
            (Some(w), _) if w == "None" => Some("None".to_string()),
            (Some(w), Some(o)) if w == o => Some(w),
            (None, Some(o)) => Some(o),
            (Some(w), _) => match w.parse::<Ipv4Addr>() {
                Ok(ip) if !self.contains(ip) => {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!(format!("[]string{{\"{w}\"}}")),
                        format!(
                            "failed to allocate IP {w}: provided IP is not in the valid range. The range of valid IPs is {}",
                            self.cidr()
                        ),
                    ));
                    None
                }
                Ok(_) if used_ips.contains(&w.as_str()) => {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!(format!("[]string{{\"{w}\"}}")),
                        format!("failed to allocate IP {w}: provided IP is already allocated"),
                    ));
                    None
                }
                Ok(_) => Some(w),
                Err(_) => {
                    errors.push(FieldError::invalid_str(
                        "spec.clusterIPs[0]",
                        &w,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                    None
                }
            },
            (None, None) => {
                let size = 1u32 << (32 - self.prefix);
                let base = u32::from(self.network);
                // Start past the addresses kubeadm reserves by convention (.1 API, .10 DNS).
                let free = (11..size - 1)
                    .chain(2..11)
                    .map(|i| Ipv4Addr::from(base + i).to_string())
                    .find(|ip| !used_ips.contains(&ip.as_str()));
                match free {
                    Some(ip) => Some(ip),
                    None => {
                        errors.push(FieldError::invalid(
                            "spec.clusterIPs",
                            &Value::Null,
                            "failed to allocate IP: range is full",
                        ));
                        None
                    }
                }
            }
        };
        if let Some(ip) = ip {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let mut used: Vec<i64> = others
                .iter()
                .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["nodePort"].as_i64())
                .collect();
            let old_ports: Vec<Value> = old
                .and_then(|o| o["spec"]["ports"].as_array().cloned())
                .unwrap_or_default();
            let (lo, hi) = (i64::from(self.node_ports.0), i64::from(self.node_ports.1));
            if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for (i, p) in ports.iter_mut().enumerate() {
                    let field = format!("spec.ports[{i}].nodePort");
                    if let Some(n) = p["nodePort"].as_i64() {
                        let had = old_ports.iter().any(|o| o["nodePort"].as_i64() == Some(n));
                        if had {
                            used.push(n);
                            continue;
                        }
                        if n < lo || n > hi {
                            errors.push(FieldError::invalid(
                                field,
                                &json!(n),
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                                ),
                            ));
                        } else if used.contains(&n) {
                            errors.push(FieldError::invalid(
                                field,
                                &json!(n),
                                "provided port is already allocated",
                            ));
                        } else {
                            used.push(n);
                        }
                        continue;
                    }
                    let kept = old_ports
                        .iter()
                        .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                        .and_then(|o| o["nodePort"].as_i64());
                    let n = kept.or_else(|| {
                        // Spread allocations over the range, as the real bitmap allocator
                        // picks randomly.
                        let span = hi - lo + 1;
                        let start = (crate::etcd::lease::random_id().unsigned_abs() as i64) % span;
                        (0..span)
                            .map(|k| lo + (start + k) % span)
                            .find(|n| !used.contains(n))
                    });
                    match n {
                        Some(n) => {
                            used.push(n);
                            p["nodePort"] = json!(n);
                        }
                        None => errors.push(FieldError::invalid(
                            field,
                            &Value::Null,
                            "failed to allocate port: range is full",
                        )),
                    }
                }
            }
        } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort").is_some_and(|n| n == 0) {
                    p.remove("nodePort");
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn pods_start_pending_with_their_service_account() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}, "status": {"phase": "Running"}});
        prepare_create(pods, &mut p, "u");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        // Lists the pod does not have stay absent (not null), as the real API server keeps them.
        let spec = p["spec"].as_object().unwrap();
        assert!(!spec.contains_key("initContainers"), "{spec:?}");
        assert!(!spec.contains_key("ephemeralContainers"), "{spec:?}");
        let mount = &p["spec"]["containers"][0]["volumeMounts"][0];
        assert_eq!(
            mount["mountPath"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert!(
            p["spec"]["volumes"][0]["name"]
                .as_str()
                .unwrap()
                .starts_with("kube-api-access-")
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "c"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn default_toleration_seconds_keeps_the_pods_own() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}],
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 2}]}});
        prepare_create(pods, &mut p, "u");
        assert_eq!(
            p["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        // Tolerating everything: nothing added.
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}],
            "tolerations": [{"operator": "Exists"}]}});
        prepare_create(pods, &mut p, "u");
        assert_eq!(p["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut old =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        prepare_create(d, &mut old, "u");
        assert_eq!(old["metadata"]["generation"], 1);
        assert!(old.get("status").is_none());
        let mut same = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_update(d, &mut same, &old);
        assert_eq!(same["metadata"]["generation"], 1);
        assert!(same.get("status").is_none());
        let mut changed = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        prepare_update(d, &mut changed, &old);
        assert_eq!(changed["metadata"]["generation"], 2);
    }

    #[test]
    fn cluster_ips_and_node_ports() {
        let a = Allocator::new("10.96.0.0/12", "30000-32767").unwrap();
        assert_eq!(a.first().to_string(), "10.96.0.1");
        let kubernetes = json!({"spec": {"clusterIP": "10.96.0.1"}});
        let mut s =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.allocate(&mut s, None, std::slice::from_ref(&kubernetes))
            .unwrap();
        let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_ne!(ip, "10.96.0.1");
        let np = s["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut clash = json!({"spec": {"type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": np}]}});
        let e = a
            .allocate(&mut clash, None, &[kubernetes, s.clone()])
            .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[1].body().contains("provided port is already allocated"));
        let mut outside = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        let e = a.allocate(&mut outside, None, &[]).unwrap_err();
        assert!(
            e[0].body()
                .contains("The range of valid IPs is 10.96.0.0/12")
        );
        // An update keeps the address and the node port.
        let mut upd =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.allocate(&mut upd, Some(&s), &[]).unwrap();
        assert_eq!(upd["spec"]["clusterIP"], s["spec"]["clusterIP"]);
        assert_eq!(upd["spec"]["ports"][0]["nodePort"], np);
        assert!(Allocator::new("10.96.0.0", "1-2").is_err());
        assert!(Allocator::new("10.96.0.0/12", "3-2").is_err());
    }
}
