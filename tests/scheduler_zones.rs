//! The scheduler end to end on 20 simulated nodes of different sizes, labels, taints and zones
//! (`minik up --fake-node-profile`): deployments and pods with topology spread across zones,
//! required anti-affinity, pod affinity by zone, node affinity, nodeSelector, tolerations and an
//! extended resource all land, and then every placement is checked against the constraints the
//! pods carry, from the objects the API server holds (not from the scheduler's own report). A pod
//! that fits nowhere gets the real FailedScheduling message and `minik scheduler why` explains it.

mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const CTX: &str = "minik-zones";

/// 20 nodes in three zones: (prefix, count, zone, cpu, memory, extra labels, taints, gpus).
const PROFILE: &str = r#"nodes:
- namePrefix: a-small
  count: 4
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  labels: {topology.kubernetes.io/zone: zone-a, disk: hdd}
- namePrefix: a-big
  count: 3
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
  labels: {topology.kubernetes.io/zone: zone-a, disk: ssd}
- namePrefix: b-small
  count: 4
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  labels: {topology.kubernetes.io/zone: zone-b, disk: hdd}
- namePrefix: b-gpu
  count: 2
  capacity: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "2"}
  labels: {topology.kubernetes.io/zone: zone-b, accelerator: gpu, disk: ssd}
  taints: [{key: gpu, value: "true", effect: NoSchedule}]
- namePrefix: c-mid
  count: 5
  capacity: {cpu: "4", memory: 16Gi, pods: "110"}
  labels: {topology.kubernetes.io/zone: zone-c, disk: ssd}
- namePrefix: c-edge
  count: 2
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  labels: {topology.kubernetes.io/zone: zone-c, role: edge}
  taints: [{key: dedicated, value: edge, effect: NoExecute}]
"#;

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 9
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: spread}}}
      containers:
      - {name: c, image: busybox, resources: {requests: {cpu: 250m, memory: 256Mi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: anti}
spec:
  replicas: 6
  selector: {matchLabels: {app: anti}}
  template:
    metadata: {labels: {app: anti}}
    spec:
      nodeSelector: {topology.kubernetes.io/zone: zone-a}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: anti}}}
      containers:
      - {name: c, image: busybox, resources: {requests: {cpu: 500m, memory: 512Mi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: heavy}
spec:
  replicas: 5
  selector: {matchLabels: {app: heavy}}
  template:
    metadata: {labels: {app: heavy}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: disk, operator: In, values: [ssd]}]
      containers:
      - {name: c, image: busybox, resources: {requests: {cpu: "3", memory: 2Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu}
spec:
  replicas: 4
  selector: {matchLabels: {app: gpu}}
  template:
    metadata: {labels: {app: gpu}}
    spec:
      tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - {name: c, image: busybox, resources: {limits: {nvidia.com/gpu: "1"}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: edge}
spec:
  replicas: 3
  selector: {matchLabels: {app: edge}}
  template:
    metadata: {labels: {app: edge}}
    spec:
      nodeSelector: {role: edge}
      tolerations: [{key: dedicated, operator: Equal, value: edge}]
      containers:
      - {name: c, image: busybox, resources: {requests: {cpu: "1"}}}
---
apiVersion: v1
kind: Pod
metadata: {name: leader, labels: {app: leader}}
spec:
  nodeSelector: {topology.kubernetes.io/zone: zone-b}
  containers:
  - {name: c, image: busybox, resources: {requests: {cpu: 100m}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: follower}
spec:
  replicas: 3
  selector: {matchLabels: {app: follower}}
  template:
    metadata: {labels: {app: follower}}
    spec:
      affinity:
        podAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: topology.kubernetes.io/zone, labelSelector: {matchLabels: {app: leader}}}
      containers:
      - {name: c, image: busybox, resources: {requests: {cpu: 100m}}}
"#;

/// `kubectl get KIND -o json` items.
fn items(lab: &Lab, kind: &str) -> Vec<Value> {
    let out = lab.kubectl_ok(CTX, &["get", kind, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("list json");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// A quantity in milli-units (`250m` → 250, `2` → 2000, `4Gi` → 4·2³⁰·1000).
fn milli(q: &str) -> u128 {
    let (num, mult): (&str, u128) = if let Some(n) = q.strip_suffix('m') {
        (n, 1)
    } else if let Some(n) = q.strip_suffix("Ki") {
        (n, 1000 << 10)
    } else if let Some(n) = q.strip_suffix("Mi") {
        (n, 1000 << 20)
    } else if let Some(n) = q.strip_suffix("Gi") {
        (n, 1000 << 30)
    } else {
        (q, 1000)
    };
    num.parse::<u128>().expect("integer quantity") * mult
}

/// What a pod asks for: the sum over its containers (requests, defaulted from limits).
fn requests(pod: &Value) -> BTreeMap<String, u128> {
    let mut out = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let mut r: BTreeMap<String, u128> = BTreeMap::new();
        for field in ["limits", "requests"] {
            if let Some(m) = c["resources"][field].as_object() {
                for (k, v) in m {
                    r.insert(k.clone(), milli(v.as_str().unwrap_or("0")));
                }
            }
        }
        for (k, v) in r {
            *out.entry(k).or_default() += v;
        }
    }
    out
}

fn labels(o: &Value) -> BTreeMap<String, String> {
    o["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn expression_matches(e: &Value, l: &BTreeMap<String, String>) -> bool {
    let key = e["key"].as_str().unwrap_or_default();
    let values: Vec<&str> = e["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let have = l.get(key).map(String::as_str);
    match e["operator"].as_str().unwrap_or_default() {
        "In" => have.is_some_and(|h| values.contains(&h)),
        "NotIn" => !have.is_some_and(|h| values.contains(&h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        op => panic!("operator {op} not used in this test"),
    }
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            let key_ok = t["key"].is_null() || t["key"] == taint["key"];
            let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
            let value_ok = t["operator"] == "Exists" || t["value"] == taint["value"];
            key_ok && effect_ok && value_ok
        })
}

/// Every constraint each bound pod carries, checked against the nodes it and its peers landed on.
fn check_placements(pods: &[Value], nodes: &[Value]) {
    let node_by_name: BTreeMap<&str, &Value> = nodes
        .iter()
        .filter_map(|n| Some((n["metadata"]["name"].as_str()?, n)))
        .collect();
    let node_of = |p: &Value| -> &Value {
        let name = p["spec"]["nodeName"].as_str().expect("bound");
        node_by_name.get(name).expect("a known node")
    };
    let mut used: BTreeMap<&str, BTreeMap<String, u128>> = BTreeMap::new();
    for p in pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let node = node_of(p);
        let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
        let nl = labels(node);
        // nodeSelector.
        for (k, v) in p["spec"]["nodeSelector"].as_object().into_iter().flatten() {
            assert_eq!(
                nl.get(k).map(String::as_str),
                v.as_str(),
                "{name} on {node_name}: nodeSelector {k}"
            );
        }
        // Required node affinity: one term whose expressions all match.
        let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        if let Some(terms) = terms.as_array() {
            assert!(
                terms.iter().any(|t| t["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|e| expression_matches(e, &nl))),
                "{name} on {node_name}: node affinity"
            );
        }
        // Taints: NoSchedule and NoExecute must be tolerated.
        for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
            if taint["effect"] != "PreferNoSchedule" {
                assert!(
                    tolerates(p, taint),
                    "{name} on {node_name}: untolerated {taint}"
                );
            }
        }
        for (k, v) in requests(p) {
            *used.entry(node_name).or_default().entry(k).or_default() += v;
        }
    }
    // Resources: the sum of requests on each node fits its allocatable.
    for (node_name, want) in &used {
        let node = node_by_name[node_name];
        for (res, amount) in want {
            let alloc = node["status"]["allocatable"][res]
                .as_str()
                .map(milli)
                .unwrap_or(0);
            assert!(
                *amount <= alloc,
                "{node_name}: {res} requested {amount} > allocatable {alloc}"
            );
        }
    }
    let zone_of = |p: &Value| labels(node_of(p))["topology.kubernetes.io/zone"].clone();
    let with_app = |app: &str| -> Vec<&Value> {
        pods.iter()
            .filter(|p| labels(p).get("app").map(String::as_str) == Some(app))
            .collect()
    };
    // Topology spread: per zone counts of `spread` differ by at most maxSkew (1) over all zones.
    let mut per_zone: BTreeMap<String, usize> = ["zone-a", "zone-b", "zone-c"]
        .iter()
        .map(|z| (z.to_string(), 0))
        .collect();
    for p in with_app("spread") {
        *per_zone.entry(zone_of(p)).or_default() += 1;
    }
    let (min, max) = (
        per_zone.values().min().copied().unwrap_or(0),
        per_zone.values().max().copied().unwrap_or(0),
    );
    assert!(max - min <= 1, "spread skew: {per_zone:?}");
    // Required anti-affinity by hostname: no two `anti` pods share a node.
    let anti_nodes: Vec<String> = with_app("anti")
        .iter()
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let distinct: BTreeSet<&String> = anti_nodes.iter().collect();
    assert_eq!(distinct.len(), anti_nodes.len(), "anti: {anti_nodes:?}");
    // Required pod affinity by zone: followers share the leader's zone.
    let leader = with_app("leader");
    let leader_zone = zone_of(leader[0]);
    for p in with_app("follower") {
        assert_eq!(zone_of(p), leader_zone, "follower zone");
    }
    // The gpu pods are all on gpu nodes: the extended resource only exists there.
    for p in with_app("gpu") {
        assert_eq!(labels(node_of(p))["accelerator"], "gpu");
    }
}

fn write(lab: &Lab, file: &str, text: &str) -> String {
    let path = lab.home.path().join(file);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn twenty_nodes_in_three_zones_every_placement_honours_its_constraints() {
    let lab = Lab::new();
    let profile = write(&lab, "nodes.yaml", PROFILE);
    lab.ok(&[
        "up",
        "--name",
        "zones",
        "--nodes",
        "0",
        "--fake-node-profile",
        &profile,
        "--wait",
        "90s",
    ]);
    lab.wait_for("20 nodes", Duration::from_secs(60), || {
        items(&lab, "nodes").len() == 20
    });

    let workloads = write(&lab, "workloads.yaml", WORKLOADS);
    lab.kubectl_ok(CTX, &["apply", "-f", &workloads]);
    // 9 + 6 + 5 + 4 + 3 + 1 + 3 pods, all bound and Running.
    let want = 31;
    lab.wait_for("31 Running pods", Duration::from_secs(90), || {
        let pods = items(&lab, "pods");
        pods.len() == want && pods.iter().all(|p| p["status"]["phase"] == "Running")
    });
    let pods = items(&lab, "pods");
    let nodes = items(&lab, "nodes");
    check_placements(&pods, &nodes);
    // heavy (3 cpu, disk=ssd) fits the ssd nodes with 4 cpu or more; b-gpu is tainted: so heavy is on
    // a-big or c-mid.
    for p in &pods {
        if labels(p)["app"] == "heavy" {
            let n = p["spec"]["nodeName"].as_str().unwrap_or_default();
            assert!(n.starts_with("a-big") || n.starts_with("c-mid"), "{n}");
        }
    }

    // All four GPUs are taken: a fifth gpu pod fits nowhere, with the real message.
    lab.kubectl_ok(CTX, &["scale", "deployment", "gpu", "--replicas=5"]);
    let want = "0/20 nodes are available: 18 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint {dedicated: edge}. preemption: 0/20 nodes are available: 18 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.";
    let mut pending = String::new();
    lab.wait_for("FailedScheduling", Duration::from_secs(30), || {
        let pods = items(&lab, "pods");
        let Some(p) = pods
            .iter()
            .find(|p| labels(p)["app"] == "gpu" && p["spec"]["nodeName"].is_null())
        else {
            return false;
        };
        pending = p["metadata"]["name"].as_str().unwrap_or_default().into();
        let cond = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")
            .cloned()
            .unwrap_or_default();
        cond["reason"] == "Unschedulable" && cond["message"] == want
    });
    let events = lab.kubectl_ok(
        CTX,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pending},reason=FailedScheduling"),
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert!(events.contains(want), "{events}");
    // `minik scheduler why` names every node's verdict.
    let why = lab.ok(&[
        "scheduler",
        "why",
        &format!("default/{pending}"),
        "--name",
        "zones",
        "--json",
    ]);
    let why: Value = serde_json::from_str(&why).expect("why json");
    let text = why.to_string();
    for n in items(&lab, "nodes") {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        assert!(text.contains(name), "why lacks {name}: {text}");
    }
    assert!(text.contains("Insufficient nvidia.com/gpu"), "{text}");
    assert!(
        text.contains("untolerated taint {dedicated: edge}"),
        "{text}"
    );
    let plain = lab.ok(&[
        "scheduler",
        "why",
        &format!("default/{pending}"),
        "--name",
        "zones",
    ]);
    assert!(plain.contains("b-gpu-0"), "{plain}");

    // The cluster is not disturbed by the pending pod: a new spread replica still keeps the skew.
    lab.kubectl_ok(CTX, &["scale", "deployment", "spread", "--replicas=12"]);
    lab.wait_for("12 spread pods Running", Duration::from_secs(60), || {
        items(&lab, "pods")
            .iter()
            .filter(|p| labels(p)["app"] == "spread" && p["status"]["phase"] == "Running")
            .count()
            == 12
    });
    let pods: Vec<Value> = items(&lab, "pods")
        .into_iter()
        .filter(|p| !p["spec"]["nodeName"].is_null())
        .collect();
    check_placements(&pods, &items(&lab, "nodes"));
}
