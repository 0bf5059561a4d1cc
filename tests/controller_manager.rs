//! `minik controller-manager` against `minik apiserver` with the real kubectl 1.33: deployments
//! (replica sets, pods, owner references, the hash label, scaling, rolling updates,
//! `rollout status`, `rollout undo`), replica set adoption and release, the garbage collector
//! (background, foreground and orphan deletion), namespace deletion, jobs, cron jobs, service
//! accounts, the root CA configMap and endpoints.
//!
//! There is no kubelet yet, so pods stay Pending; [`fake_kubelet`] stands in for the kubelet by
//! writing pod status (Running, Ready, a pod IP, or Succeeded/Failed) through the API.

mod apiserver_util;
mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver_util::{Cluster, Identity, Kubectl, Store};
use serde_json::{Value, json};
use tempfile::TempDir;

const V: &str = "1.33";
const WAIT: Duration = Duration::from_secs(60);

/// A `minik controller-manager` child process, killed on drop.
struct ControllerManager {
    child: Child,
    _dir: TempDir,
    log: std::path::PathBuf,
}

impl ControllerManager {
    fn start(c: &Cluster) -> ControllerManager {
        let dir = tempfile::Builder::new()
            .prefix("minik-cm-test-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("controller-manager.log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(common::minik_bin())
            .args([
                "controller-manager",
                "--kubeconfig",
                c.kubeconfig(Identity::Admin).to_str().expect("utf-8 path"),
                "--secure-port",
                &common::free_port().to_string(),
                "--leader-elect=true",
                "--root-ca-file",
                c.pki().ca_cert.to_str().expect("utf-8 path"),
                "--log-level",
                "info,minik=trace",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn minik controller-manager");
        ControllerManager {
            child,
            _dir: dir,
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    // Field order: the controller-manager goes before the cluster.
    cm: ControllerManager,
    k: Kubectl,
    c: Cluster,
}

fn setup() -> Env {
    let c = Cluster::start(Store::Minik);
    let k = c.kubectl(V, Identity::Admin);
    let cm = ControllerManager::start(&c);
    Env { cm, k, c }
}

impl Env {
    /// kubectl for commands that wait (rollout status, delete --wait): a longer time limit.
    fn slow(&self) -> Kubectl {
        self.c
            .kubectl(V, Identity::Admin)
            .timeout(Duration::from_secs(90))
    }

    fn create(&self, file: &str, obj: &Value) {
        let path = self.c.manifest(file, obj);
        self.k.ok(&["create", "-f", &path]);
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        self.k.json(&a)
    }

    fn items(&self, args: &[&str]) -> Vec<Value> {
        self.get(args)["items"]
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
                panic!(
                    "timed out waiting for {what}\n--- controller-manager log (tail):\n{}",
                    common::tail(&self.cm.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stands in for the kubelet: marks every matching pod Running and Ready with a pod IP.
    fn fake_kubelet_ready(&self, ns: &str, selector: &str) -> usize {
        let mut n = 0;
        for (i, p) in self
            .items(&["pods", "-n", ns, "-l", selector])
            .iter()
            .enumerate()
        {
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready || !p["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let status = json!({"status": {
                "phase": "Running",
                "podIP": format!("10.244.0.{}", 10 + i),
                "podIPs": [{"ip": format!("10.244.0.{}", 10 + i)}],
                "conditions": [{"type": "Ready", "status": "True",
                                "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            }});
            let out = self.k.run(&[
                "patch",
                "pod",
                name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ]);
            if out.status.success() {
                n += 1;
            }
        }
        n
    }
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn deployment(name: &str, replicas: i32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    })
}

#[test]
fn deployment_rollout_scale_undo_and_garbage_collection() {
    let e = setup();
    e.create("web.json", &deployment("web", 3, "nginx:1.25"));
    // One replica set `web-<hash>`, labelled with the hash, owned by the deployment.
    let rs = e.wait("the replica set", || {
        let items = e.items(&["rs", "-l", "app=web"]);
        (items.len() == 1).then(|| items[0].clone())
    });
    let rs_name = rs["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!hash.is_empty(), "no pod-template-hash label: {rs}");
    assert_eq!(rs_name, format!("web-{hash}"));
    assert!(
        hash.chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    );
    let owner = &rs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    // Three pods `<rs>-xxxxx`, owned by the replica set, with the hash label.
    let pods = e.wait("3 pods", || {
        let p = e.items(&["pods", "-l", "app=web"]);
        (p.len() == 3).then_some(p)
    });
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        assert!(name.starts_with(&format!("{rs_name}-")), "{name}");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        let o = &p["metadata"]["ownerReferences"][0];
        assert_eq!(o["kind"], "ReplicaSet");
        assert_eq!(o["name"], rs_name.as_str());
        assert_eq!(o["controller"], true);
        assert_eq!(o["blockOwnerDeletion"], true);
    }
    // Never more pods than asked for, even after a while.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(e.items(&["pods", "-l", "app=web"]).len(), 3);

    // Pods ready → the rollout is done.
    e.fake_kubelet_ready("default", "app=web");
    e.slow()
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = e.get(&["deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{d}");
    let conds = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["reason"] == "MinimumReplicasAvailable"),
        "{d}"
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
        "{d}"
    );

    // Scale up and down.
    e.k.ok(&["scale", "deployment/web", "--replicas=5"]);
    e.wait("5 pods", || {
        (e.items(&["pods", "-l", "app=web"]).len() == 5).then_some(())
    });
    e.k.ok(&["scale", "deployment/web", "--replicas=2"]);
    e.wait("2 pods", || {
        (e.items(&["pods", "-l", "app=web"]).len() == 2).then_some(())
    });
    e.fake_kubelet_ready("default", "app=web");
    e.slow()
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // A new image: a second replica set, rolled out as pods become ready.
    e.k.ok(&["set", "image", "deployment/web", "c=nginx:1.26"]);
    let mut status =
        e.k.spawn(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    e.wait("the rollout of nginx:1.26", || {
        e.fake_kubelet_ready("default", "app=web");
        // maxSurge 1, maxUnavailable 0: never more than 3 pods.
        let n = e.items(&["pods", "-l", "app=web"]).len();
        assert!(n <= 3, "{n} pods with replicas 2 and maxSurge 1");
        status
            .wait_exit(Duration::from_millis(10))
            .map(|s| assert!(s.success(), "{}", status.stderr_so_far()))
    });
    let rss = e.items(&["rs", "-l", "app=web"]);
    assert_eq!(rss.len(), 2, "{:?}", names(&rss));
    let new_rs = rss
        .iter()
        .find(|r| r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
        .unwrap_or_else(|| panic!("no revision 2: {rss:?}"));
    assert_eq!(new_rs["spec"]["replicas"], 2);
    assert_eq!(
        new_rs["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    let old = e.get(&["rs", &rs_name]);
    assert_eq!(old["spec"]["replicas"], 0, "{old}");
    let events = e.k.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScalingReplicaSet",
    ]);
    assert!(
        events.contains(&format!("Scaled up replica set {rs_name} to 3 from 0")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {rs_name}")),
        "{events}"
    );

    // rollout undo: the first replica set comes back as revision 3.
    e.k.ok(&["rollout", "undo", "deployment/web"]);
    // Keep standing in for the kubelet until the rollout is done: pods of the rolled-back
    // replica set keep coming while the other one scales down.
    let mut status =
        e.k.spawn(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    e.wait("the undo", || {
        e.fake_kubelet_ready("default", "app=web");
        status
            .wait_exit(Duration::from_millis(10))
            .map(|s| assert!(s.success(), "{}", status.stderr_so_far()))
    });
    let old = e.get(&["rs", &rs_name]);
    assert_eq!(old["spec"]["replicas"], 2, "{old}");
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "{old}"
    );
    let history = e.k.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // Delete the deployment: the garbage collector removes its replica sets and pods.
    e.k.ok(&["delete", "deployment", "web"]);
    e.wait("replica sets and pods to be garbage-collected", || {
        (e.items(&["rs", "-l", "app=web"]).is_empty()
            && e.items(&["pods", "-l", "app=web"]).is_empty())
        .then_some(())
    });
}

#[test]
fn replica_set_adopts_orphans_and_releases_pods() {
    let e = setup();
    e.create(
        "orphan.json",
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "orphan", "labels": {"app": "rs1"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    e.create(
        "rs.json",
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "rs1"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "rs1"}},
                         "template": {"metadata": {"labels": {"app": "rs1"}},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    e.wait("the orphan adopted and one pod created", || {
        let pods = e.items(&["pods", "-l", "app=rs1"]);
        let orphan = e.get(&["pod", "orphan"]);
        (pods.len() == 2 && orphan["metadata"]["ownerReferences"][0]["name"] == "rs1").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(e.items(&["pods", "-l", "app=rs1"]).len(), 2);
    // Relabel the orphan: released, and replaced.
    e.k.ok(&["label", "pod", "orphan", "app=other", "--overwrite"]);
    e.wait("the pod released and replaced", || {
        let orphan = e.get(&["pod", "orphan"]);
        let released = orphan["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty());
        (released && e.items(&["pods", "-l", "app=rs1"]).len() == 2).then_some(())
    });
    let events = e.k.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulCreate",
    ]);
    assert!(events.contains("Created pod: rs1-"), "{events}");
    e.fake_kubelet_ready("default", "app=rs1");
    e.wait("ready replicas in status", || {
        let rs = e.get(&["rs", "rs1"]);
        (rs["status"]["readyReplicas"] == 2 && rs["status"]["availableReplicas"] == 2).then_some(())
    });
}

#[test]
fn foreground_and_orphan_deletion() {
    let e = setup();
    e.create("a.json", &deployment("fg", 2, "nginx"));
    e.create("b.json", &deployment("or", 2, "nginx"));
    e.wait("pods", || {
        (e.items(&["pods", "-l", "app=fg"]).len() == 2
            && e.items(&["pods", "-l", "app=or"]).len() == 2)
            .then_some(())
    });
    // Orphan: the deployment goes, its replica set and pods stay, without the owner reference.
    e.k.ok(&["delete", "deployment", "or", "--cascade=orphan"]);
    e.wait("the orphaned replica set", || {
        let rs = e.items(&["rs", "-l", "app=or"]);
        let gone = e.k.run(&["get", "deployment", "or"]);
        (!gone.status.success()
            && rs.len() == 1
            && rs[0]["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty()))
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(e.items(&["pods", "-l", "app=or"]).len(), 2);
    // Foreground: kubectl waits until the dependents are gone, then the deployment.
    e.k.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=60s",
    ]);
    e.wait("foreground deletion", || {
        (e.items(&["rs", "-l", "app=fg"]).is_empty()
            && e.items(&["pods", "-l", "app=fg"]).is_empty())
        .then_some(())
    });
    // An object whose owner never existed (by uid) is collected.
    e.create(
        "dangling-pod.json",
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "dangling", "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nope",
                    "uid": "00000000-0000-0000-0000-000000000001"}]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    e.wait("the dangling pod collected", || {
        (!e.k.run(&["get", "pod", "dangling"]).status.success()).then_some(())
    });
}

#[test]
fn namespace_deletion_empties_and_removes_it() {
    let e = setup();
    e.k.ok(&["create", "namespace", "doomed"]);
    let mut d = deployment("app", 2, "nginx");
    d["metadata"]["namespace"] = json!("doomed");
    e.create("d.json", &d);
    e.k.ok(&[
        "create",
        "configmap",
        "cm",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    e.wait("pods in the namespace", || {
        (e.items(&["pods", "-n", "doomed"]).len() == 2).then_some(())
    });
    e.slow()
        .ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    e.wait("the namespace gone", || {
        (!e.k.run(&["get", "namespace", "doomed"]).status.success()).then_some(())
    });
    assert!(e.items(&["pods", "-n", "doomed"]).is_empty());
    assert!(e.items(&["configmaps", "-n", "doomed"]).is_empty());
}

/// The root CA publisher: `kube-root-ca.crt` in the namespace holds the `--root-ca-file` bundle
/// with the real description, comes back when deleted, and has its data put back when edited.
fn root_ca_config_map_is_published_and_kept(e: &Env, ns: &str) {
    let ca = fs::read_to_string(&e.c.pki().ca_cert).expect("ca.crt");
    let published = |e: &Env| {
        let out = e.k.run(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            ns,
            "-o",
            "json",
        ]);
        let cm: Value = serde_json::from_slice(&out.stdout).ok()?;
        (cm["data"]["ca.crt"] == ca.as_str()).then_some(cm)
    };
    let cm = e.wait("kube-root-ca.crt in the new namespace", || published(e));
    assert_eq!(
        cm["metadata"]["annotations"]["kubernetes.io/description"],
        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.",
        "{cm}"
    );
    assert_eq!(cm["data"].as_object().map(|d| d.len()), Some(1), "{cm}");
    let uid = cm["metadata"]["uid"].clone();
    // Deleted: recreated (a new object).
    e.k.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", ns]);
    e.wait("kube-root-ca.crt recreated", || {
        published(e).filter(|cm| cm["metadata"]["uid"] != uid)
    });
    // Edited: the data is put back, other changes stay.
    e.k.ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"edited":"yes"}},"data":{"ca.crt":"PEM","extra":"x"}}"#,
    ]);
    let cm = e.wait("kube-root-ca.crt's data put back", || {
        published(e).filter(|cm| cm["data"].as_object().map(|d| d.len()) == Some(1))
    });
    assert_eq!(cm["metadata"]["labels"]["edited"], "yes", "{cm}");
}

#[test]
fn service_accounts_endpoints_and_endpoint_slices() {
    let e = setup();
    e.k.ok(&["create", "namespace", "team"]);
    e.wait("the default service account", || {
        e.k.run(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    });
    root_ca_config_map_is_published_and_kept(&e, "team");
    let mut d = deployment("api", 2, "nginx");
    d["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "http", "containerPort": 8080}]);
    e.create("api.json", &d);
    e.create(
        "svc.json",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                "spec": {"selector": {"app": "api"},
                         "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}),
    );
    e.wait("2 pods", || {
        (e.items(&["pods", "-l", "app=api"]).len() == 2).then_some(())
    });
    // The fake kubelet gives them IPs and readiness.
    e.fake_kubelet_ready("default", "app=api");
    let ep = e.wait("2 ready addresses", || {
        let ep = e.get(&["endpoints", "api"]);
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)).then_some(ep)
    });
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080, "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "web", "{ep}");
    assert_eq!(
        ep["subsets"][0]["addresses"][0]["targetRef"]["kind"], "Pod",
        "{ep}"
    );
    let slices = e.wait("an endpoint slice with 2 endpoints", || {
        let s = e.items(&["endpointslices", "-l", "kubernetes.io/service-name=api"]);
        (s.len() == 1 && s[0]["endpoints"].as_array().map(Vec::len) == Some(2)).then_some(s)
    });
    let s = &slices[0];
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(s["endpoints"][0]["conditions"]["ready"], true, "{s}");
    // Scale down: one address left.
    e.k.ok(&["scale", "deployment/api", "--replicas=1"]);
    e.wait("1 address", || {
        let ep = e.get(&["endpoints", "api"]);
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
}
