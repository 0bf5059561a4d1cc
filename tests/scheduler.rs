//! kube-scheduler as `minik up` runs it, with the real kubectl: binding, FailedScheduling in the
//! real format, requeue when a node appears, nodeSelector and taints, preemption, leader election,
//! and `minik scheduler why`.
//!
//! The cluster has no kubelet (`--nodes 0`): the nodes are Node objects created through the API
//! (as a scale lab's fake nodes are) and the pods stay Pending on their node: the scheduler's part
//! is the binding.

mod lab;

use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const CTX: &str = "minik-sched";

fn node(lab: &Lab, name: &str, cpu: &str, extra: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}{extra}}}\nstatus:\n  capacity: {{cpu: '{cpu}', memory: 8Gi, pods: '110'}}\n  allocatable: {{cpu: '{cpu}', memory: 8Gi, pods: '110'}}\n  conditions: [{{type: Ready, status: 'True'}}]\n"
    );
    apply(lab, &manifest);
}

fn apply(lab: &Lab, manifest: &str) {
    let path = lab.home.path().join(format!("m-{}.yaml", rand_suffix()));
    std::fs::write(&path, manifest).unwrap();
    lab.kubectl_ok(CTX, &["apply", "-f", path.to_str().unwrap()]);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn pod(lab: &Lab, name: &str, cpu: &str, spec_extra: &str) {
    apply(
        lab,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{spec_extra}  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: '{cpu}'}}}}\n"
        ),
    );
}

fn node_of(lab: &Lab, pod: &str) -> String {
    lab.kubectl_ok(CTX, &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_bound(lab: &Lab, pod: &str) -> String {
    lab.wait_for(
        &format!("{pod} to be bound"),
        Duration::from_secs(30),
        || !node_of(lab, pod).is_empty(),
    );
    node_of(lab, pod)
}

fn events_for(lab: &Lab, pod: &str) -> Vec<Value> {
    let out = lab.kubectl_ok(
        CTX,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_scheduler_binds_explains_and_preempts() {
    let lab = Lab::new();
    // The nodes are made by hand here: no kubelet node.
    lab.ok(&["up", "--name", "sched", "--nodes", "0", "--wait", "60s"]);
    // The scheduler is a control-plane pod.
    let pods = lab.kubectl_ok(CTX, &["get", "pods", "-n", "kube-system"]);
    assert!(pods.contains("kube-scheduler-sched"), "{pods}");
    // It leads through a Lease.
    let holder = lab.kubectl_ok(
        CTX,
        &[
            "get",
            "lease",
            "kube-scheduler",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert!(!holder.is_empty());

    node(&lab, "small", "1", "");
    node(&lab, "medium", "2", ", disk: ssd");
    apply(
        &lab,
        "apiVersion: v1\nkind: Node\nmetadata: {name: cp, labels: {kubernetes.io/hostname: cp}}\nspec:\n  taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]\nstatus:\n  capacity: {cpu: '64', memory: 64Gi, pods: '110'}\n  allocatable: {cpu: '64', memory: 64Gi, pods: '110'}\n",
    );

    // Fits only on medium.
    pod(&lab, "web", "1500m", "");
    assert_eq!(wait_bound(&lab, "web"), "medium");
    lab.wait_for("the Scheduled event", Duration::from_secs(20), || {
        events_for(&lab, "web").iter().any(|e| {
            e["reason"] == "Scheduled"
                && e["message"] == "Successfully assigned default/web to medium"
        })
    });

    // Fits nowhere: Pending, with the real message and the PodScheduled condition.
    pod(&lab, "huge", "3", "");
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    lab.wait_for("FailedScheduling", Duration::from_secs(20), || {
        events_for(&lab, "huge").iter().any(|e| {
            e["reason"] == "FailedScheduling" && e["type"] == "Warning" && e["message"] == want
        })
    });
    let cond = lab.kubectl_ok(
        CTX,
        &[
            "get",
            "pod",
            "huge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ],
    );
    assert_eq!(cond, "Unschedulable");
    let describe = lab.kubectl_ok(CTX, &["describe", "pod", "huge"]);
    assert!(describe.contains("FailedScheduling"), "{describe}");

    // `minik scheduler why` shows each node's verdict.
    let why = lab.ok(&["scheduler", "why", "default/huge", "--name", "sched"]);
    assert!(why.contains("Insufficient cpu"), "{why}");
    assert!(why.contains("untolerated taint"), "{why}");
    for n in ["small", "medium", "cp"] {
        assert!(why.contains(n), "{why}");
    }
    let why_web = lab.ok(&[
        "scheduler",
        "why",
        "default/web",
        "--name",
        "sched",
        "--json",
    ]);
    let e: Value = serde_json::from_str(&why_web).unwrap();
    assert_eq!(e["selected"], "medium");
    let out = lab.minik(&["scheduler", "why", "default/never-seen", "--name", "sched"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("has not tried to schedule pod default/never-seen")
    );

    // A new node that fits: the unschedulable pod is tried again and bound.
    node(&lab, "large", "4", "");
    assert_eq!(wait_bound(&lab, "huge"), "large");

    // nodeSelector.
    pod(&lab, "picky", "100m", "  nodeSelector: {disk: ssd}\n");
    assert_eq!(wait_bound(&lab, "picky"), "medium");

    // Preemption: a high-priority pod that only fits if a low-priority one goes.
    apply(
        &lab,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000000\n",
    );
    pod(
        &lab,
        "filler",
        "800m",
        "  nodeSelector: {kubernetes.io/hostname: small}\n",
    );
    assert_eq!(wait_bound(&lab, "filler"), "small");
    pod(
        &lab,
        "vip",
        "900m",
        "  priorityClassName: high\n  nodeSelector: {kubernetes.io/hostname: small}\n",
    );
    lab.wait_for(
        "the victim to be preempted",
        Duration::from_secs(30),
        || {
            !lab.kubectl_ok(
                CTX,
                &[
                    "get",
                    "pod",
                    "filler",
                    "-o",
                    "jsonpath={.metadata.deletionTimestamp}",
                ],
            )
            .is_empty()
        },
    );
    assert!(
        events_for(&lab, "filler")
            .iter()
            .any(|e| e["reason"] == "Preempted")
    );
    assert_eq!(
        lab.kubectl_ok(
            CTX,
            &[
                "get",
                "pod",
                "vip",
                "-o",
                "jsonpath={.status.nominatedNodeName}"
            ]
        ),
        "small"
    );
    // The kubelet would stop the victim's containers and remove the pod; stand in for it.
    lab.kubectl_ok(
        CTX,
        &["delete", "pod", "filler", "--grace-period=0", "--force"],
    );
    assert_eq!(wait_bound(&lab, "vip"), "small");
}
