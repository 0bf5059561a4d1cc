//! Killing the controller-manager and the scheduler mid-rollout loses nothing and creates no
//! duplicate pod: `minik up` with 3 fake nodes (pods become Ready 300 ms after they are bound, so
//! a rollout takes a few seconds), a deployment of 12 replicas rolled to a new template while
//! kube-controller-manager is killed (SIGKILL) twice and kube-scheduler once; the supervisor
//! restarts them, they re-acquire their Leases and pick up from the API's state. At the end the
//! rollout completes (`kubectl rollout status`), exactly 12 pods exist, all of the new template,
//! every one bound, owned by the new replica set, two replica sets in all, no pod was ever created
//! beyond the 12 old and 12 new ones, and the replica sets never wanted more than
//! `replicas + maxSurge` pods.

mod lab;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lab::{Lab, libc_kill};
use serde_json::Value;

const PROFILE: &str = "restarts";
const CTX: &str = "minik-restarts";

fn json(lab: &Lab, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = lab.kubectl(CTX, &a);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Kills a control-plane component and waits until the supervisor has started a new one.
fn kill(lab: &Lab, component: &str) {
    let old = lab
        .component_pid(PROFILE, component)
        .expect("component running");
    unsafe {
        libc_kill(old as i32, 9);
    }
    lab.wait_for(
        &format!("{component} to be restarted"),
        Duration::from_secs(30),
        || {
            lab.component_pid(PROFILE, component)
                .is_some_and(|p| p != old)
        },
    );
}

const REPLICAS: usize = 12;
const MAX_SURGE: usize = 3;

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {REPLICAS}
  strategy: {{rollingUpdate: {{maxSurge: {MAX_SURGE}, maxUnavailable: 2}}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: c
        image: {image}
        resources: {{requests: {{cpu: 10m}}}}
"
    )
}

fn apply(lab: &Lab, yaml: &str) {
    let path = lab.home.path().join("web.yaml");
    std::fs::write(&path, yaml).expect("write manifest");
    lab.kubectl_ok(CTX, &["apply", "-f", path.to_str().expect("utf-8 path")]);
}

fn describe(p: &Value) -> String {
    format!(
        "{} {} {} created {}",
        p["metadata"]["name"].as_str().unwrap_or(""),
        p["spec"]["containers"][0]["image"].as_str().unwrap_or(""),
        p["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or(""),
        p["metadata"]["creationTimestamp"].as_str().unwrap_or(""),
    )
}

/// Pods per owning replica set (live pods only).
fn pods_by_owner(pods: &[Value]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for p in pods {
        if !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let owner = p["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *counts.entry(owner).or_default() += 1;
    }
    counts.into_iter().collect()
}

#[test]
fn killing_the_controller_manager_and_scheduler_mid_rollout_loses_nothing() {
    let lab = Lab::new();
    lab.up_with_config(
        PROFILE,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nfakeNodes: 3\nextraArgs:\n  fake-kubelet: {pod-ready-delay: 300ms}\n",
        "60s",
    );
    lab.wait_for("3 nodes", Duration::from_secs(40), || {
        items(&json(&lab, &["get", "nodes"])).len() == 3
    });
    apply(&lab, &deployment("nginx:1.0"));
    lab.kubectl_ok(
        CTX,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    );

    // uid -> (name, image, owner), of every pod seen.
    let mut seen_uids: std::collections::BTreeMap<String, String> =
        items(&json(&lab, &["get", "pods", "-l", "app=web"]))
            .iter()
            .filter_map(|p| Some((p["metadata"]["uid"].as_str()?.to_string(), describe(p))))
            .collect();
    assert_eq!(seen_uids.len(), REPLICAS);

    // Roll to a new template, and kill the controller-manager and the scheduler while it runs.
    apply(&lab, &deployment("nginx:2.0"));
    let start = Instant::now();
    let mut max_total = 0;
    let mut killed_cm = 0;
    let mut killed_sched = false;
    loop {
        let pods = items(&json(&lab, &["get", "pods", "-l", "app=web"]));
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        // What maxSurge bounds: the replica sets' desired replicas (pods being deleted and
        // created by the replica set controller may overlap for a moment, as in Kubernetes).
        let desired: u64 = items(&json(&lab, &["get", "replicasets", "-l", "app=web"]))
            .iter()
            .map(|rs| rs["spec"]["replicas"].as_u64().unwrap_or(0))
            .sum();
        max_total = max_total.max(desired as usize);
        for p in &pods {
            if let Some(uid) = p["metadata"]["uid"].as_str() {
                seen_uids.insert(uid.to_string(), describe(p));
            }
        }
        let new = live
            .iter()
            .filter(|p| p["spec"]["containers"][0]["image"] == "nginx:2.0")
            .count();
        if killed_cm == 0 && new >= 1 {
            kill(&lab, "kube-controller-manager");
            killed_cm = 1;
        } else if !killed_sched && new >= 4 {
            kill(&lab, "kube-scheduler");
            killed_sched = true;
        } else if killed_cm == 1 && new >= 7 {
            kill(&lab, "kube-controller-manager");
            killed_cm = 2;
        }
        let d = json(&lab, &["get", "deployment", "web"]);
        let done = d["status"]["updatedReplicas"].as_u64() == Some(REPLICAS as u64)
            && d["status"]["availableReplicas"].as_u64() == Some(REPLICAS as u64)
            && d["status"]["replicas"].as_u64() == Some(REPLICAS as u64);
        if done && killed_cm == 2 && killed_sched {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the rollout did not finish: killed cm {killed_cm}, scheduler {killed_sched}; {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.kubectl_ok(
        CTX,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );

    // Exactly the desired pods, all new, all bound, all owned by the new replica set.
    lab.wait_for("the old pods to be gone", Duration::from_secs(30), || {
        let pods = items(&json(&lab, &["get", "pods", "-l", "app=web"]));
        pods.len() == REPLICAS
    });
    let pods = items(&json(&lab, &["get", "pods", "-l", "app=web"]));
    assert_eq!(pods.len(), REPLICAS, "{pods:?}");
    for p in &pods {
        if let Some(uid) = p["metadata"]["uid"].as_str() {
            seen_uids.insert(uid.to_string(), describe(p));
        }
    }
    let names: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), REPLICAS);
    for p in &pods {
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:2.0", "{p}");
        assert!(p["spec"]["nodeName"].as_str().is_some(), "unbound: {p}");
        assert_eq!(p["status"]["phase"], "Running", "{p}");
    }
    let owners = pods_by_owner(&pods);
    assert_eq!(owners.len(), 1, "{owners:?}");
    let rs = json(&lab, &["get", "replicaset", &owners[0].0]);
    assert_eq!(rs["spec"]["replicas"], REPLICAS as u64);
    assert_eq!(rs["status"]["replicas"], REPLICAS as u64);
    // Two replica sets (old scaled to 0, new), never a third from a restarted controller.
    let sets = items(&json(&lab, &["get", "replicasets", "-l", "app=web"]));
    assert_eq!(sets.len(), 2, "{sets:?}");
    // maxSurge held across the restarts (as the replica sets' desired total), and no pod was
    // created twice over: the rollout made the 12 old and the 12 new pods and nothing else.
    assert!(
        max_total <= REPLICAS + MAX_SURGE,
        "replica sets wanted {max_total} pods at once (replicas {REPLICAS} + maxSurge {MAX_SURGE})"
    );
    assert_eq!(
        seen_uids.len(),
        2 * REPLICAS,
        "pods ever seen: {seen_uids:#?}\nevents: {}",
        lab.kubectl_ok(
            CTX,
            &["get", "events", "--sort-by=.metadata.creationTimestamp"]
        )
    );
    let restarts = lab.status(PROFILE);
    let restarted = |name: &str| {
        restarts["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .and_then(|c| c["restarts"].as_u64())
            .unwrap_or(0)
    };
    assert!(restarted("kube-controller-manager") >= 2);
    assert!(restarted("kube-scheduler") >= 1);
}
