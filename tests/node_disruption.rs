//! The node lifecycle controller's per-zone disruption handling with real processes: 10
//! simulated nodes in two zones (`a-0`…`a-7` in zone-a, `b-0`, `b-1` in zone-b), a 4 s
//! `--node-monitor-grace-period`, 1 s fake heartbeats and a `--node-eviction-rate` of 0.15
//! nodes/s (one taint per ~6.7 s per zone), all through the config's `extraArgs`:
//!
//! 1. one node stops: it is tainted unreachable:NoExecute and its pod evicted, as before;
//! 2. three nodes of the healthy large zone stop at once (3 of 8: still Normal): they are
//!    tainted one at a time, at the zone's rate (the taints' `timeAdded` seconds apart);
//! 3. every node of every zone stops: all go NotReady (Unknown), but the controller enters
//!    "master disruption mode": the NoExecute taints there are removed, none are added, and no
//!    pod is evicted;
//! 4. one node comes back: the mode ends and the silent nodes are tainted again.

mod lab;

use std::time::{Duration, Instant};

use lab::{Lab, taints};
use serde_json::Value;

const PROFILE: &str = "disrupt";
const CTX: &str = "minik-disrupt";
const WAIT: Duration = Duration::from_secs(40);
/// 1 / `--node-eviction-rate` is 6.67 s; `timeAdded` has whole seconds, so two taints of the
/// same zone are at least 6 s apart as written. Without any limit the three nodes, silent from
/// the same second, would be tainted within a second or two.
const MIN_SPACING_S: i64 = 4;

const NODES: &str = "nodes:
- namePrefix: a
  count: 8
  labels: {topology.kubernetes.io/zone: zone-a}
- namePrefix: b
  count: 2
  labels: {topology.kubernetes.io/zone: zone-b}
";

const PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: evict-me}
spec:
  nodeName: a-0
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 0}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: stay-a}
spec:
  nodeName: a-5
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: stay-b}
spec:
  nodeName: b-1
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
  containers: [{name: c, image: nginx}]
";

fn json(lab: &Lab, args: &[&str]) -> Value {
    lab.kubectl_json(CTX, args)
}

fn nodes(lab: &Lab) -> Vec<Value> {
    json(lab, &["get", "nodes"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn ready(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn has_no_execute(node: &Value) -> bool {
    taints(node).iter().any(|t| t.ends_with(":NoExecute"))
}

/// The `timeAdded` of the node's unreachable NoExecute taint, in Unix seconds.
fn tainted_at(node: &Value) -> Option<i64> {
    let t = node["spec"]["taints"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")?;
    let ts: jiff::Timestamp = t["timeAdded"].as_str()?.parse().ok()?;
    Some(ts.as_second())
}

fn by_name<'a>(nodes: &'a [Value], n: &str) -> Option<&'a Value> {
    nodes.iter().find(|x| name(x) == n)
}

fn stop(lab: &Lab, node: &str) {
    lab.ok(&["node", "stop", node, "--name", PROFILE]);
}

fn start(lab: &Lab, node: &str) {
    lab.ok(&["node", "start", node, "--name", PROFILE]);
}

fn evicted(lab: &Lab, pod: &str) -> bool {
    let out = lab.kubectl(CTX, &["get", "pod", pod, "-o", "json"]);
    if !out.status.success() {
        return true; // gone
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .is_ok_and(|p| !p["metadata"]["deletionTimestamp"].is_null())
}

fn controller_log(lab: &Lab) -> String {
    std::fs::read_to_string(
        lab.profile_dir(PROFILE)
            .join("logs")
            .join("kube-controller-manager.log"),
    )
    .unwrap_or_default()
}

#[test]
fn zones_rate_limit_tainting_and_full_disruption_stops_it() {
    let lab = Lab::new();
    let profile = lab.home.path().join("nodes.yaml");
    std::fs::write(&profile, NODES).unwrap();
    let config = format!(
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 0\nfakeNodeProfile: {}\nextraArgs:\n  kube-controller-manager: {{node-monitor-grace-period: 4s, node-eviction-rate: '0.15'}}\n  fake-kubelet: {{heartbeat: 1s}}\n",
        profile.display()
    );
    lab.up_with_config(PROFILE, &config, "60s");
    lab.wait_for("10 Ready untainted nodes", WAIT, || {
        let ns = nodes(&lab);
        ns.len() == 10
            && ns
                .iter()
                .all(|n| ready(n) == "True" && taints(n).is_empty())
    });
    let pods = lab.home.path().join("pods.yaml");
    std::fs::write(&pods, PODS).unwrap();
    lab.kubectl_ok(CTX, &["apply", "-f", pods.to_str().unwrap()]);
    lab.wait_for("the pods Running", WAIT, || {
        ["evict-me", "stay-a", "stay-b"]
            .iter()
            .all(|p| json(&lab, &["get", "pod", p])["status"]["phase"] == "Running")
    });

    // 1. One node of zone-a stops: tainted, its pod evicted; back, untainted at once.
    stop(&lab, "a-0");
    lab.wait_for("a-0 tainted unreachable:NoExecute", WAIT, || {
        by_name(&nodes(&lab), "a-0")
            .is_some_and(|n| ready(n) == "Unknown" && tainted_at(n).is_some())
    });
    lab.wait_for("evict-me evicted", WAIT, || evicted(&lab, "evict-me"));
    let ns = nodes(&lab);
    for n in ns.iter().filter(|n| name(n) != "a-0") {
        assert!(taints(n).is_empty(), "{}: {:?}", name(n), taints(n));
    }
    start(&lab, "a-0");
    lab.wait_for("a-0 Ready and untainted", WAIT, || {
        by_name(&nodes(&lab), "a-0").is_some_and(|n| ready(n) == "True" && taints(n).is_empty())
    });

    // 2. Three nodes of zone-a (3 of 8: the zone stays Normal) stop at once: tainted one at a
    //    time at --node-eviction-rate.
    let three = ["a-1", "a-2", "a-3"];
    for n in three {
        stop(&lab, n);
    }
    let stopped = Instant::now();
    lab.wait_for("a-1, a-2, a-3 Unknown", WAIT, || {
        let ns = nodes(&lab);
        three
            .iter()
            .all(|n| by_name(&ns, n).is_some_and(|n| ready(n) == "Unknown"))
    });
    lab.wait_for("a-1, a-2, a-3 tainted", Duration::from_secs(60), || {
        let ns = nodes(&lab);
        three
            .iter()
            .all(|n| by_name(&ns, n).and_then(tainted_at).is_some())
    });
    let ns = nodes(&lab);
    let mut at: Vec<i64> = three
        .iter()
        .filter_map(|n| by_name(&ns, n).and_then(tainted_at))
        .collect();
    at.sort();
    let transitions: Vec<String> = three
        .iter()
        .filter_map(|n| by_name(&ns, n))
        .map(|n| {
            n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["lastTransitionTime"].to_string())
                .unwrap_or_default()
        })
        .collect();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= MIN_SPACING_S,
            "taints not rate-limited: added at {at:?} (Unknown since {transitions:?})"
        );
    }
    eprintln!(
        "taints added at {at:?} (Unknown since {transitions:?}), {:?} after the stops",
        stopped.elapsed()
    );
    // The rest of the cluster is untouched.
    for n in ns.iter().filter(|n| !three.contains(&name(n))) {
        assert!(!has_no_execute(n), "{}: {:?}", name(n), taints(n));
    }

    // 3. Every node of every zone stops: all NotReady, but master disruption mode: the taints
    //    of a-1…a-3 are removed, none are added, no pod is evicted.
    for n in ["a-0", "a-4", "a-5", "a-6", "a-7", "b-0", "b-1"] {
        stop(&lab, n);
    }
    lab.wait_for("all 10 nodes Unknown", WAIT, || {
        let ns = nodes(&lab);
        ns.len() == 10 && ns.iter().all(|n| ready(n) == "Unknown")
    });
    lab.wait_for("no NoExecute taint left", WAIT, || {
        nodes(&lab).iter().all(|n| !has_no_execute(n))
    });
    // … and none comes back while the cluster stays down.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(6) {
        let ns = nodes(&lab);
        for n in &ns {
            assert_eq!(ready(n), "Unknown", "{}", name(n));
            assert!(
                !has_no_execute(n),
                "tainted in full disruption: {}: {:?}",
                name(n),
                taints(n)
            );
            assert!(
                taints(n).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
                "{}: {:?}",
                name(n),
                taints(n)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for p in ["stay-a", "stay-b"] {
        assert!(!evicted(&lab, p), "{p} evicted in full disruption");
    }
    let log = controller_log(&lab);
    assert!(
        log.contains("Entering master disruption mode"),
        "no master disruption mode in the controller-manager's log"
    );

    // 4. One node comes back: out of the mode, the silent nodes are tainted again (at the rate).
    start(&lab, "b-0");
    lab.wait_for("b-0 Ready", WAIT, || {
        by_name(&nodes(&lab), "b-0").is_some_and(|n| ready(n) == "True" && taints(n).is_empty())
    });
    lab.wait_for("silent nodes tainted again", WAIT, || {
        nodes(&lab)
            .iter()
            .any(|n| name(n) != "b-0" && ready(n) == "Unknown" && tainted_at(n).is_some())
    });
    assert!(
        controller_log(&lab).contains("Exiting master disruption mode"),
        "no exit from master disruption mode in the controller-manager's log"
    );
    let ns = nodes(&lab);
    assert!(
        !by_name(&ns, "b-0").is_some_and(has_no_execute),
        "the node that came back is tainted"
    );
    // What the controller did, for the record (shown with --no-capture).
    for l in controller_log(&lab).lines().filter(|l| {
        l.contains("disruption") || l.contains("new state") || l.contains("NoExecute taint")
    }) {
        eprintln!("{l}");
    }
}
