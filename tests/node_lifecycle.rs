//! Node lifecycle with real processes (`minik up` with 3 fake nodes, a 4 s
//! `--node-monitor-grace-period` and 1 s fake heartbeats through the config's `extraArgs`) and the
//! real kubectl: a stopped node becomes NotReady (Ready Unknown), is tainted unreachable, its pods
//! are marked not ready and evicted after their `tolerationSeconds` (TaintManagerEviction, the
//! DisruptionTarget condition) and replaced on the other nodes, while pods with the default 300 s
//! toleration stay; the node comes back Ready and untainted (the pending eviction cancelled);
//! `kubectl cordon` taints a node unschedulable; the pods of a deleted node are collected, and
//! finished pods beyond `--terminated-pod-gc-threshold` (3 here), oldest first.

mod lab;

use std::time::Duration;

use lab::{Lab, taints};
use serde_json::Value;

const PROFILE: &str = "nodes";
const CTX: &str = "minik-nodes";
const WAIT: Duration = Duration::from_secs(40);

fn json(lab: &Lab, args: &[&str]) -> Value {
    lab.kubectl_json(CTX, args)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

fn node(lab: &Lab, name: &str) -> Value {
    json(lab, &["get", "node", name])
}

/// The web deployment's live pods: (name, node).
fn web_pods(lab: &Lab) -> Vec<(String, String)> {
    items(&json(lab, &["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn events(lab: &Lab, reason: &str) -> Vec<Value> {
    items(&json(lab, &["get", "events", "-A"]))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn apply(lab: &Lab, name: &str, yaml: &str) {
    let path = lab.home.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    lab.kubectl_ok(CTX, &["apply", "-f", path.to_str().unwrap()]);
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: c
        image: nginx
        resources: {requests: {cpu: '1'}}
";

/// Two pods on fake-1: `held` tolerates unreachable for 2 s and has a finalizer (so its
/// eviction can be looked at), `patient` has the 300 s default tolerations.
const PODS_ON_FAKE_1: &str = "apiVersion: v1
kind: Pod
metadata: {name: held, finalizers: [minik.dev/test-hold]}
spec:
  nodeName: fake-1
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: patient}
spec:
  nodeName: fake-1
  containers: [{name: c, image: nginx}]
";

#[test]
fn silent_nodes_are_tainted_and_their_pods_evicted() {
    let lab = Lab::new();
    lab.up_with_config(
        PROFILE,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nfakeNodes: 3\nextraArgs:\n  kube-controller-manager: {node-monitor-grace-period: 4s, terminated-pod-gc-threshold: '3'}\n  fake-kubelet: {heartbeat: 1s}\n",
        "60s",
    );
    lab.wait_for("3 Ready untainted nodes", WAIT, || {
        let nodes = items(&json(&lab, &["get", "nodes"]));
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| condition(n, "Ready")["status"] == "True" && taints(n).is_empty())
    });
    let registered = events(&lab, "RegisteredNode");
    assert!(
        registered
            .iter()
            .any(|e| e["message"] == "Node fake-1 event: Registered Node fake-1 in Controller"),
        "{registered:?}"
    );

    // A deployment spread over the three nodes, and two pods of our own on fake-1.
    apply(&lab, "web.yaml", DEPLOYMENT);
    apply(&lab, "pods.yaml", PODS_ON_FAKE_1);
    lab.wait_for("6 web pods Running on 3 nodes", WAIT, || {
        let pods = web_pods(&lab);
        let mut nodes: Vec<&String> = pods.iter().map(|(_, n)| n).collect();
        nodes.sort();
        nodes.dedup();
        pods.len() == 6
            && nodes.len() == 3
            && lab.kubectl_ok(
                CTX,
                &[
                    "get",
                    "deploy",
                    "web",
                    "-o",
                    "jsonpath={.status.availableReplicas}",
                ],
            ) == "6"
    });
    lab.wait_for("held and patient Ready", WAIT, || {
        ["held", "patient"]
            .iter()
            .all(|p| condition(&json(&lab, &["get", "pod", p]), "Ready")["status"] == "True")
    });
    // DefaultTolerationSeconds: the defaults are added, a pod's own toleration is kept.
    let patient = json(&lab, &["get", "pod", "patient"]);
    let tols = patient["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tols.iter().any(|t| t["key"] == key
                && t["effect"] == "NoExecute"
                && t["tolerationSeconds"] == 300),
            "{tols:?}"
        );
    }
    let held = json(&lab, &["get", "pod", "held"]);
    let unreachable: Vec<&Value> = held["spec"]["tolerations"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["key"] == "node.kubernetes.io/unreachable")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(unreachable.len(), 1, "{held}");
    assert_eq!(unreachable[0]["tolerationSeconds"], 2);
    let on_fake_1: Vec<String> = web_pods(&lab)
        .into_iter()
        .filter(|(_, n)| n == "fake-1")
        .map(|(p, _)| p)
        .collect();
    assert!(!on_fake_1.is_empty());

    // fake-1 goes silent: NotReady (Ready Unknown), tainted unreachable.
    lab.ok(&["node", "stop", "fake-1", "--name", PROFILE]);
    lab.wait_for("fake-1 Ready Unknown", WAIT, || {
        condition(&node(&lab, "fake-1"), "Ready")["status"] == "Unknown"
    });
    let n = node(&lab, "fake-1");
    let ready = condition(&n, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&n, c)["status"], "Unknown", "{c}: {n}");
    }
    let table = lab.kubectl_ok(CTX, &["get", "nodes"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fake-1 ") && l.contains("NotReady")),
        "{table}"
    );
    lab.wait_for("unreachable taints on fake-1", WAIT, || {
        let t = taints(&node(&lab, "fake-1"));
        t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
    });
    let n = node(&lab, "fake-1");
    assert!(
        n["spec"]["taints"]
            .as_array()
            .is_some_and(|ts| ts.iter().all(|t| t["timeAdded"].is_string())),
        "{n}"
    );
    lab.wait_for("NodeNotReady event", WAIT, || {
        events(&lab, "NodeNotReady")
            .iter()
            .any(|e| e["message"] == "Node fake-1 status is now: NodeNotReady")
    });
    // The other nodes are fine.
    for other in ["fake-0", "fake-2"] {
        let n = node(&lab, other);
        assert_eq!(condition(&n, "Ready")["status"], "True", "{n}");
        assert!(taints(&n).is_empty(), "{n}");
    }

    // Its pods: marked not ready; evicted after 2 s (held stays Terminating on its finalizer
    // and shows the condition); patient (300 s) stays.
    lab.wait_for("held evicted", WAIT, || {
        !json(&lab, &["get", "pod", "held"])["metadata"]["deletionTimestamp"].is_null()
    });
    let held = json(&lab, &["get", "pod", "held"]);
    let dt = condition(&held, "DisruptionTarget");
    assert_eq!(dt["status"], "True", "{held}");
    assert_eq!(dt["reason"], "DeletionByTaintManager");
    assert_eq!(condition(&held, "Ready")["status"], "False", "{held}");
    lab.wait_for("TaintManagerEviction events", WAIT, || {
        let ev = events(&lab, "TaintManagerEviction");
        let has = |p: &str| {
            ev.iter()
                .any(|e| e["message"] == format!("Marking for deletion Pod default/{p}"))
        };
        has("held") && on_fake_1.iter().all(|p| has(p))
    });
    lab.wait_for("web replaced on fake-0 and fake-2", WAIT, || {
        let pods = web_pods(&lab);
        pods.len() == 6
            && pods.iter().all(|(_, n)| n == "fake-0" || n == "fake-2")
            && lab.kubectl_ok(
                CTX,
                &[
                    "get",
                    "deploy",
                    "web",
                    "-o",
                    "jsonpath={.status.availableReplicas}",
                ],
            ) == "6"
    });
    let patient = json(&lab, &["get", "pod", "patient"]);
    assert!(
        patient["metadata"]["deletionTimestamp"].is_null(),
        "{patient}"
    );
    assert_eq!(condition(&patient, "Ready")["status"], "False", "{patient}");
    let not_ready = events(&lab, "NodeNotReady");
    assert!(
        not_ready
            .iter()
            .any(|e| e["involvedObject"]["name"] == "patient"
                && e["message"] == "Node is not ready"
                && e["type"] == "Warning"),
        "{not_ready:?}"
    );

    // fake-1 comes back: Ready, untainted, patient Ready again and its eviction cancelled.
    lab.ok(&["node", "start", "fake-1", "--name", PROFILE]);
    lab.wait_for("fake-1 Ready and untainted", WAIT, || {
        let n = node(&lab, "fake-1");
        condition(&n, "Ready")["status"] == "True" && taints(&n).is_empty()
    });
    lab.wait_for("patient Ready again, eviction cancelled", WAIT, || {
        condition(&json(&lab, &["get", "pod", "patient"]), "Ready")["status"] == "True"
            && events(&lab, "TaintManagerEviction")
                .iter()
                .any(|e| e["message"] == "Cancelling deletion of Pod default/patient")
    });
    lab.kubectl_ok(
        CTX,
        &[
            "patch",
            "pod",
            "held",
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ],
    );

    // kubectl cordon / uncordon.
    lab.kubectl_ok(CTX, &["cordon", "fake-2"]);
    lab.wait_for("unschedulable taint", WAIT, || {
        taints(&node(&lab, "fake-2")) == ["node.kubernetes.io/unschedulable:NoSchedule"]
    });
    lab.kubectl_ok(CTX, &["uncordon", "fake-2"]);
    lab.wait_for("unschedulable taint removed", WAIT, || {
        taints(&node(&lab, "fake-2")).is_empty()
    });

    // A deleted node's pods are garbage-collected, and the deployment runs them elsewhere.
    let on_fake_0 = web_pods(&lab)
        .into_iter()
        .filter(|(_, n)| n == "fake-0")
        .count();
    assert!(on_fake_0 > 0);
    lab.kubectl_ok(CTX, &["delete", "node", "fake-0"]);
    lab.wait_for("no pod left on fake-0", WAIT, || {
        items(&json(&lab, &["get", "pods", "-A"]))
            .iter()
            .all(|p| p["spec"]["nodeName"] != "fake-0")
    });
    lab.wait_for("web back to 6 on fake-1 and fake-2", WAIT, || {
        let pods = web_pods(&lab);
        pods.len() == 6 && pods.iter().all(|(_, n)| n == "fake-1" || n == "fake-2")
    });

    // Finished pods over the threshold: the oldest go.
    for i in 0..5 {
        apply(
            &lab,
            &format!("done-{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: done-{i}, labels: {{app: done}}, annotations: {{fake.minik.dev/complete-after: 1s}}}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: c, image: busybox}}]\n"
            ),
        );
    }
    lab.wait_for("3 finished pods left: the newest", WAIT, || {
        let pods = items(&json(&lab, &["get", "pods", "-l", "app=done"]));
        let mut left: Vec<&str> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        left.sort();
        left == ["done-2", "done-3", "done-4"]
            && pods.iter().all(|p| p["status"]["phase"] == "Succeeded")
    });
    assert!(
        events(&lab, "RemovingNode")
            .iter()
            .any(|e| e["message"] == "Node fake-0 event: Removing Node fake-0 from Controller")
    );
}
