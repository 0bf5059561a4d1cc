//! The daemon set and stateful set controllers in a whole `minik up --fake-nodes` cluster
//! (store, apiserver, scheduler, controller-manager, fake kubelet) with the real kubectl 1.33:
//! one daemon pod per node, none on a tainted node until the pods tolerate it, a node added
//! later gets its pod, a removed or NoExecute-tainted node loses it, a rolling update within
//! maxUnavailable; a stateful set created in order (never `web-<n+1>` before `web-<n>` is
//! Ready), scaled down in reverse, a deleted pod back with its name, rolling update, rollback;
//! `kubectl rollout status` for both.
//!
//! Extra nodes come from a second `minik fake-kubelet` process started by the test (with its
//! own node profile and pod-ready delay), killed on drop.

mod lab;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A process started by the test, killed on drop (also when the test fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    // Field order: the extra processes go before the lab.
    extra: Vec<Proc>,
    lab: Lab,
    ctx: String,
    profile: String,
}

impl Env {
    fn up(profile: &str, nodes: u32) -> Env {
        let lab = Lab::new();
        let out = lab.ok(&[
            "up",
            "--name",
            profile,
            "--fake-nodes",
            &nodes.to_string(),
            "--wait",
            "60s",
        ]);
        assert!(out.contains("Done!"), "{out}");
        let env = Env {
            extra: Vec::new(),
            lab,
            ctx: format!("minik-{profile}"),
            profile: profile.into(),
        };
        env.wait("the nodes to be Ready", || {
            (env.ready_nodes().len() == nodes as usize).then_some(())
        });
        env
    }

    fn k(&self, args: &[&str]) -> String {
        self.lab.kubectl_ok(&self.ctx, args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.k(&a)).expect("kubectl JSON")
    }

    fn apply(&self, manifest: &str) {
        let path = self.lab.home.path().join(format!(
            "m-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::write(&path, manifest).expect("write manifest");
        self.k(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    fn ready_nodes(&self) -> Vec<String> {
        let out = self.lab.kubectl(&self.ctx, &["get", "nodes", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
            .collect()
    }

    /// The pods with `selector`.
    fn pods(&self, selector: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `f` until it returns Some; fails with `what` and the controller-manager's log.
    fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > WAIT {
                let log = std::fs::read_to_string(
                    self.lab
                        .profile_dir(&self.profile)
                        .join("logs/kube-controller-manager.log"),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let pods = self.lab.kubectl(&self.ctx, &["get", "pods", "-o", "wide"]);
                panic!(
                    "timed out waiting for {what}\n--- pods:\n{}\n--- controller-manager log (tail):\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts another `minik fake-kubelet` with its own nodes.
    fn more_nodes(&mut self, profile_yaml: &str, ready_delay: &str) {
        let file = self
            .lab
            .home
            .path()
            .join(format!("nodes-{}.yaml", self.extra.len()));
        std::fs::write(&file, profile_yaml).expect("write node profile");
        let kubeconfig = self.lab.profile_dir(&self.profile).join("admin.conf");
        let child = self
            .lab
            .cmd(lab::MINIK)
            .args([
                "fake-kubelet",
                "--kubeconfig",
                kubeconfig.to_str().expect("utf-8 path"),
                "--fake-node-profile",
                file.to_str().expect("utf-8 path"),
                "--pod-ready-delay",
                ready_delay,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn minik fake-kubelet");
        self.extra.push(Proc(child));
    }

    /// `kubectl rollout status KIND/NAME`, which must end successfully; its output.
    fn rollout_status(&self, what: &str) -> String {
        self.k(&["rollout", "status", what, "--timeout=60s"])
    }

    fn events(&self, kind: &str, name: &str) -> Vec<(String, String)> {
        self.json(&["get", "events"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or("")
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn hash(p: &Value) -> &str {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
}

/// node → the names of the ready pods on it.
fn ready_by_node(pods: &[Value]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m = std::collections::BTreeMap::new();
    for p in pods.iter().filter(|p| is_ready(p)) {
        m.entry(node_of(p).to_string())
            .or_insert_with(Vec::new)
            .push(name(p).to_string());
    }
    m
}

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox:1.36}]
";

#[test]
fn daemonset_runs_one_pod_per_eligible_node() {
    let mut env = Env::up("ds", 3);
    env.k(&["taint", "node", "fake-2", "dedicated=infra:NoSchedule"]);
    env.apply(DAEMONSET);

    // One pod on each untainted node, none on fake-2.
    let pods = env.wait("a ready agent pod on fake-0 and fake-1", || {
        let pods = env.pods("app=agent");
        let by = ready_by_node(&pods);
        (pods.len() == 2 && by.len() == 2 && by.contains_key("fake-0") && by.contains_key("fake-1"))
            .then_some(pods)
    });
    let out = env.rollout_status("ds/agent");
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let p = &pods[0];
    let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0];
    assert_eq!(term["key"], "metadata.name");
    assert_eq!(term["operator"], "In");
    assert_eq!(term["values"][0], node_of(p));
    let tolerations = p["spec"]["tolerations"].to_string();
    for t in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        assert!(tolerations.contains(t), "{tolerations}");
    }
    assert!(
        !tolerations.contains("network-unavailable"),
        "{tolerations}"
    );
    let first_hash = hash(p).to_string();
    assert!(!first_hash.is_empty());
    assert!(pods.iter().all(|p| hash(p) == first_hash));
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let revs = env.json(&["get", "controllerrevisions", "-l", "app=agent"]);
    let revs = revs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(revs.len(), 1, "{revs:?}");
    assert_eq!(revs[0]["metadata"]["name"], format!("agent-{first_hash}"));
    assert_eq!(revs[0]["revision"], 1);
    let st = env.json(&["get", "ds", "agent"])["status"].clone();
    assert_eq!(st["desiredNumberScheduled"], 2, "{st}");
    assert_eq!(st["currentNumberScheduled"], 2, "{st}");
    assert_eq!(st["numberReady"], 2, "{st}");
    assert_eq!(st["updatedNumberScheduled"], 2, "{st}");
    assert_eq!(st["numberAvailable"], 2, "{st}");
    assert_eq!(st["numberMisscheduled"], 0, "{st}");
    let events = env.events("DaemonSet", "agent");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: agent-")),
        "{events:?}"
    );

    // Tolerating the taint is a template change: a rolling update (maxUnavailable 1) that
    // also brings a pod to fake-2. Never more than one of fake-0/fake-1 without a ready pod.
    env.k(&[
        "patch",
        "ds",
        "agent",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/tolerations","value":[{"key":"dedicated","operator":"Equal","value":"infra","effect":"NoSchedule"}]}]"#,
    ]);
    let pods = env.wait("three updated ready agent pods", || {
        let pods = env.pods("app=agent");
        let by = ready_by_node(&pods);
        let down = ["fake-0", "fake-1"]
            .iter()
            .filter(|n| !by.contains_key(**n))
            .count();
        assert!(down <= 1, "maxUnavailable 1 broken: {by:?}");
        let done = pods.len() == 3
            && by.len() == 3
            && by.values().all(|v| v.len() == 1)
            && pods.iter().all(|p| is_ready(p) && hash(p) != first_hash);
        done.then_some(pods)
    });
    assert!(pods.iter().any(|p| node_of(p) == "fake-2"));
    let out = env.rollout_status("ds/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let revs = env.json(&["get", "controllerrevisions", "-l", "app=agent"]);
    assert_eq!(revs["items"].as_array().map(Vec::len), Some(2), "{revs}");
    let events = env.events("DaemonSet", "agent");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: agent-")),
        "{events:?}"
    );

    // A node added later gets its pod; removed, it loses it.
    env.more_nodes("nodes: [{count: 1, namePrefix: late}]\n", "0s");
    env.wait("a ready agent pod on late-0", || {
        ready_by_node(&env.pods("app=agent"))
            .contains_key("late-0")
            .then_some(())
    });
    env.wait("numberReady 4", || {
        (env.json(&["get", "ds", "agent"])["status"]["numberReady"] == 4).then_some(())
    });
    env.extra.clear();
    env.k(&["delete", "node", "late-0"]);
    env.wait("the pod of late-0 gone", || {
        let pods = env.pods("app=agent");
        (pods.len() == 3 && pods.iter().all(|p| node_of(p) != "late-0")).then_some(())
    });

    // A NoExecute taint the pods do not tolerate evicts the node's pod.
    env.k(&["taint", "node", "fake-0", "evict=now:NoExecute"]);
    env.wait("no agent pod on fake-0", || {
        let pods = env.pods("app=agent");
        (pods.len() == 2 && pods.iter().all(|p| node_of(p) != "fake-0")).then_some(())
    });
    env.wait("desiredNumberScheduled 2", || {
        let st = env.json(&["get", "ds", "agent"])["status"].clone();
        (st["desiredNumberScheduled"] == 2 && st["numberReady"] == 2).then_some(())
    });
}

const STATEFULSET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {speed: slow}
      containers: [{name: nginx, image: nginx:1.27}]
";

#[test]
fn statefulset_creates_in_order_and_keeps_names() {
    let mut env = Env::up("sts", 1);
    // Nodes whose pods take a second to become Ready, so that order is visible.
    env.more_nodes(
        "nodes: [{count: 2, namePrefix: slow, labels: {speed: slow}}]\n",
        "1s",
    );
    env.wait("the slow nodes", || {
        let ready = env.ready_nodes();
        (ready.iter().filter(|n| n.starts_with("slow-")).count() == 2).then_some(())
    });
    // Every change to the set's pods, in the order the API server saw them.
    let log = env.lab.home.path().join("watch.log");
    let watch = env
        .lab
        .cmd("kubectl")
        .args([
            "--context",
            &env.ctx,
            "get",
            "pods",
            "-l",
            "app=web",
            "--watch",
            "-o",
            r#"jsonpath={.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("watch log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubectl --watch");
    env.extra.push(Proc(watch));
    std::thread::sleep(Duration::from_millis(500));

    env.apply(STATEFULSET);
    env.wait("web-0, web-1, web-2 Ready", || {
        let pods = env.pods("app=web");
        (pods.len() == 3 && pods.iter().all(is_ready)).then_some(())
    });
    let out = env.rollout_status("sts/web");
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );

    // Creation order: web-<n+1> appears only after web-<n> was seen Ready.
    let watched = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = watched.lines().collect();
    let first = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    for n in 0..2 {
        let ready = first(&|l: &str| l == format!("web-{n} True"))
            .unwrap_or_else(|| panic!("web-{n} never Ready in the watch:\n{watched}"));
        let next = first(&|l: &str| l.starts_with(&format!("web-{} ", n + 1)))
            .unwrap_or_else(|| panic!("web-{} never seen:\n{watched}", n + 1));
        assert!(
            ready < next,
            "web-{} created before web-{n} was Ready:\n{watched}",
            n + 1
        );
    }

    // Identity: labels, hostname, subdomain.
    let p = env.json(&["get", "pod", "web-1"]);
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(p["spec"]["hostname"], "web-1");
    assert_eq!(p["spec"]["subdomain"], "nginx");
    let rev1 = hash(&p).to_string();
    assert!(rev1.starts_with("web-"), "{rev1}");
    let st = env.json(&["get", "sts", "web"])["status"].clone();
    assert_eq!(st["replicas"], 3, "{st}");
    assert_eq!(st["readyReplicas"], 3, "{st}");
    assert_eq!(st["availableReplicas"], 3, "{st}");
    assert_eq!(st["currentRevision"], rev1.as_str(), "{st}");
    assert_eq!(st["updateRevision"], rev1.as_str(), "{st}");
    let events = env.events("StatefulSet", "web");
    assert!(
        events.iter().any(|(r, m)| r == "SuccessfulCreate"
            && m == "create Pod web-0 in StatefulSet web successful"),
        "{events:?}"
    );

    // A pod deleted by hand comes back with its name.
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    env.k(&["delete", "pod", "web-1", "--wait=false"]);
    env.wait("web-1 back", || {
        let out = env
            .lab
            .kubectl(&env.ctx, &["get", "pod", "web-1", "-o", "json"]);
        let p: Value = serde_json::from_slice(&out.stdout).ok()?;
        (p["metadata"]["uid"] != uid.as_str() && is_ready(&p)).then_some(())
    });

    // Rolling update: a new revision, pods replaced from web-2 down.
    env.k(&["set", "image", "sts/web", "nginx=nginx:1.28"]);
    let out = env.rollout_status("sts/web");
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let st = env.wait("the update revision to become current", || {
        let st = env.json(&["get", "sts", "web"])["status"].clone();
        (st["currentRevision"] == st["updateRevision"] && st["currentRevision"] != rev1.as_str())
            .then_some(st)
    });
    let rev2 = st["updateRevision"].as_str().unwrap_or("").to_string();
    assert_ne!(rev2, rev1);
    assert_eq!(st["currentRevision"], rev2.as_str(), "{st}");
    assert_eq!(st["updatedReplicas"], 3, "{st}");
    for p in env.pods("app=web") {
        assert_eq!(hash(&p), rev2, "{p}");
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.28");
    }

    // Rollback to the first revision.
    let out = env.k(&["rollout", "undo", "sts/web"]);
    assert!(out.contains("rolled back"), "{out}");
    env.rollout_status("sts/web");
    env.wait("revision 1 current again", || {
        let st = env.json(&["get", "sts", "web"])["status"].clone();
        (st["currentRevision"] == rev1.as_str() && st["updateRevision"] == rev1.as_str())
            .then_some(())
    });
    for p in env.pods("app=web") {
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.27", "{p}");
        assert_eq!(hash(&p), rev1, "{p}");
    }

    // Scale down: web-2 goes first, then web-1.
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    env.k(&["scale", "sts/web", "--replicas=1"]);
    env.wait("only web-0 left", || {
        let pods = env.pods("app=web");
        (pods.len() == 1 && name(&pods[0]) == "web-0").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let watched = std::fs::read_to_string(&log).unwrap_or_default();
    let after: Vec<&str> = watched.lines().skip(before).collect();
    let last = |p: &str| after.iter().rposition(|l| l.starts_with(p));
    let (w1, w2) = (last("web-1 "), last("web-2 "));
    assert!(w1.is_some() && w2.is_some(), "{after:?}");
    assert!(w2 < w1, "web-1 went before web-2: {after:?}");
    let events = env.events("StatefulSet", "web");
    assert!(
        events.iter().any(|(r, m)| r == "SuccessfulDelete"
            && m == "delete Pod web-2 in StatefulSet web successful"),
        "{events:?}"
    );
}
