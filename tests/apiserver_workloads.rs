//! The built-in workload and networking types through the real kubectl (1.27, 1.30, 1.33, and
//! 1.32 on a real etcd): deployments with their defaults, Table columns, `scale` and
//! generation; services with cluster IPs and node ports from the ranges, the `kubernetes`
//! service and `cluster-info`; pods (Pending, admission's service account and tolerations,
//! binding, field selectors, log checks); jobs and cronjobs; finalizers, graceful deletion and
//! `delete --cascade=foreground`; the real validation messages.

mod apiserver_util;
mod common;

use apiserver_util::{Cluster, Identity, Kubectl, Store, table_rows};
use serde_json::{Value, json};

macro_rules! for_kubectl_versions {
    ($($module:ident => $version:literal on $store:ident),* $(,)?) => {$(
        mod $module {
            #[test]
            fn deployments() {
                super::deployments($version, super::Store::$store)
            }
            #[test]
            fn services() {
                super::services($version, super::Store::$store)
            }
            #[test]
            fn pods() {
                super::pods($version, super::Store::$store)
            }
            #[test]
            fn generators_apply_and_explain() {
                super::generators_apply_and_explain($version, super::Store::$store)
            }
            #[test]
            fn custom_resources() {
                super::custom_resources($version, super::Store::$store)
            }
            #[test]
            fn jobs_and_finalizers() {
                super::jobs_and_finalizers($version, super::Store::$store)
            }
        }
    )*};
}

for_kubectl_versions!(
    kubectl_1_27 => "1.27" on Minik,
    kubectl_1_30 => "1.30" on Minik,
    kubectl_1_33 => "1.33" on Minik,
    kubectl_1_32_on_real_etcd => "1.32" on RealEtcd,
);

fn create(c: &Cluster, k: &Kubectl, file: &str, obj: &Value) -> String {
    let path = c.manifest(file, obj);
    k.ok(&["create", "-f", &path, "--validate=false"])
}

fn create_fails(c: &Cluster, k: &Kubectl, file: &str, obj: &Value) -> String {
    let path = c.manifest(file, obj);
    k.fails(&["create", "-f", &path, "--validate=false"])
}

fn setup(v: &str, store: Store) -> (Cluster, Kubectl) {
    let c = Cluster::start(store);
    let k = c.kubectl(v, Identity::Admin);
    create(
        &c,
        &k,
        "ns.json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}}),
    );
    (c, k)
}

fn deployment(name: &str, replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "lab"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}},
        },
    })
}

fn header_of(table: &str) -> Vec<String> {
    table_rows(table).into_iter().next().unwrap_or_default()
}

fn deployments(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    create(
        &c,
        &k,
        "d.json",
        &deployment("web", 2, json!({"app": "web"})),
    );
    let d = k.json(&["get", "deploy", "web", "-n", "lab", "-o", "json"]);
    // The real defaults.
    assert_eq!(d["metadata"]["generation"], 1, "{d:#}");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "{d:#}");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");

    // Server-side columns, with the wide ones.
    let table = k.ok(&["get", "deploy", "-n", "lab"]);
    assert_eq!(
        header_of(&table),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    let wide = k.ok(&["get", "deployments.apps", "-n", "lab", "-o", "wide"]);
    let rows = table_rows(&wide);
    assert_eq!(rows[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"], "{wide}");
    assert_eq!(
        rows[1][..2],
        ["web".to_string(), "0/2".to_string()],
        "{wide}"
    );
    assert_eq!(rows[1][5..], ["web", "nginx:1.27", "app=web"], "{wide}");

    // scale goes through deployments/scale; generation counts the spec change.
    k.ok(&["scale", "deploy", "web", "-n", "lab", "--replicas=5"]);
    let d = k.json(&["get", "deploy", "web", "-n", "lab", "-o", "json"]);
    assert_eq!(d["spec"]["replicas"], 5, "{d:#}");
    assert_eq!(d["metadata"]["generation"], 2, "{d:#}");
    // A label change is no spec change.
    k.ok(&["label", "deploy", "web", "-n", "lab", "tier=front"]);
    let d = k.json(&["get", "deploy", "web", "-n", "lab", "-o", "json"]);
    assert_eq!(d["metadata"]["generation"], 2, "{d:#}");

    // Invalid: a selector that does not match the template, negative replicas.
    let err = create_fails(
        &c,
        &k,
        "bad.json",
        &deployment("bad", -1, json!({"app": "other"})),
    );
    for want in [
        "The Deployment \"bad\" is invalid",
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let err = k.fails(&["get", "deploy", "bad", "-n", "lab"]);
    assert!(err.contains("NotFound"), "{err}");
    // A wrong JSON type is a 400 naming the field.
    let mut wrong = deployment("wrong", 1, json!({"app": "wrong"}));
    wrong["spec"]["replicas"] = json!("three");
    let err = create_fails(&c, &k, "wrong.json", &wrong);
    assert!(
        err.contains("(BadRequest)")
            && err.contains("Deployment in version \"v1\" cannot be handled as a Deployment")
            && err.contains("spec.replicas"),
        "{err}"
    );
    // Discovery knows the short names and the scale subresource.
    let res = k.ok(&["api-resources", "--api-group=apps"]);
    assert!(
        res.contains("deploy") && res.contains("sts") && res.contains("ds"),
        "{res}"
    );
}

fn services(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    // The API server's own service, at the first address of the range.
    let kubernetes = k.json(&["get", "svc", "kubernetes", "-n", "default", "-o", "json"]);
    assert_eq!(
        kubernetes["spec"]["clusterIP"], "10.96.0.1",
        "{kubernetes:#}"
    );
    let eps = k.json(&[
        "get",
        "endpoints",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    assert_eq!(eps["subsets"][0]["ports"][0]["port"], c.port(), "{eps:#}");
    let info = k.ok(&["cluster-info"]);
    // kubectl colours the words; the text is what matters.
    assert!(
        info.contains("Kubernetes control plane") && info.contains("is running at"),
        "{info}"
    );
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        k.ok(&["get", "ns", ns]);
    }

    let svc = |name: &str, ty: &str, node_port: Option<i64>| {
        let mut port = json!({"port": 80, "targetPort": 8080});
        if let Some(n) = node_port {
            port["nodePort"] = json!(n);
        }
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "lab"},
            "spec": {"type": ty, "selector": {"app": name}, "ports": [port]}})
    };
    create(&c, &k, "a.json", &svc("a", "ClusterIP", None));
    create(&c, &k, "b.json", &svc("b", "NodePort", Some(30080)));
    let a = k.json(&["get", "svc", "a", "-n", "lab", "-o", "json"]);
    let ip = a["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(ip.starts_with("10.9") && ip != "10.96.0.1", "{a:#}");
    assert_eq!(a["spec"]["clusterIPs"][0], ip.as_str());
    assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
    let table = k.ok(&["get", "svc", "-n", "lab", "-o", "wide"]);
    let rows = table_rows(&table);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ],
        "{table}"
    );
    let b = rows.iter().find(|r| r[0] == "b").expect("row b");
    assert_eq!(b[4], "80:30080/TCP", "{table}");
    assert_eq!(b[6], "app=b", "{table}");

    // The same node port again: the real 422.
    let err = create_fails(&c, &k, "c.json", &svc("c", "NodePort", Some(30080)));
    assert!(
        err.contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{err}"
    );
    let err = create_fails(&c, &k, "d.json", &svc("d", "NodePort", Some(80)));
    assert!(
        err.contains(
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        ),
        "{err}"
    );
    // A cluster IP outside the range, and one taken.
    let mut e = svc("e", "ClusterIP", None);
    e["spec"]["clusterIP"] = json!(ip);
    let err = create_fails(&c, &k, "e.json", &e);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    // An update keeps the allocated address.
    k.ok(&["label", "svc", "a", "-n", "lab", "x=y"]);
    let a2 = k.json(&["get", "svc", "a", "-n", "lab", "-o", "json"]);
    assert_eq!(a2["spec"]["clusterIP"], ip.as_str());
}

fn pods(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "lab", "labels": {"app": "p"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}});
    create(&c, &k, "p.json", &pod);
    let p = k.json(&["get", "pod", "p", "-n", "lab", "-o", "json"]);
    assert_eq!(p["status"]["phase"], "Pending", "{p:#}");
    assert_eq!(p["status"]["qosClass"], "Burstable", "{p:#}");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(p["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let table = k.ok(&["get", "pods", "-n", "lab", "-o", "wide"]);
    let rows = table_rows(&table);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ],
        "{table}"
    );
    assert_eq!(rows[1][..4], ["p", "0/1", "Pending", "0"], "{table}");

    // Logs need a node.
    let err = k.fails(&["logs", "p", "-n", "lab"]);
    assert!(err.contains("pod p does not have a host assigned"), "{err}");
    let err = k.fails(&["logs", "p", "-n", "lab", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod p"),
        "{err}"
    );

    // The scheduler's binding, through the subresource.
    let binding = c.manifest(
        "binding.json",
        &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}),
    );
    k.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/lab/pods/p/binding",
        "-f",
        &binding,
    ]);
    let bound = k.ok(&[
        "get",
        "pods",
        "-n",
        "lab",
        "--field-selector",
        "spec.nodeName=node-1",
        "-o",
        "name",
    ]);
    assert_eq!(bound.trim(), "pod/p");
    let none = k.ok(&[
        "get",
        "pods",
        "-n",
        "lab",
        "--field-selector",
        "spec.nodeName=node-2",
        "-o",
        "name",
    ]);
    assert!(none.trim().is_empty(), "{none}");
    let err = k.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/lab/pods/p/binding",
        "-f",
        &binding,
    ]);
    assert!(err.contains("is already assigned to node"), "{err}");
    let p = k.json(&["get", "pod", "p", "-n", "lab", "-o", "json"]);
    assert_eq!(
        p["status"]["conditions"][0]["type"], "PodScheduled",
        "{p:#}"
    );

    // A pod's spec is immutable but for images.
    let err = k.fails(&[
        "patch",
        "pod",
        "p",
        "-n",
        "lab",
        "--type=merge",
        "-p",
        r#"{"spec":{"restartPolicy":"Never"}}"#,
    ]);
    assert!(
        err.contains("pod updates may not change fields other than"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "pod",
        "p",
        "-n",
        "lab",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/containers/0/image","value":"busybox:1.36"}]"#,
    ]);

    // Invalid pods: the real messages.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "lab"},
        "spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": 70000}]},
            {"name": "c", "image": "i"}]}});
    let err = create_fails(&c, &k, "bad.json", &bad);
    for want in [
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.containers[1].name: Duplicate value: \"c\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // A bound pod is deleted gracefully: Terminating until its kubelet confirms.
    k.ok(&["delete", "pod", "p", "-n", "lab", "--wait=false"]);
    let p = k.json(&["get", "pod", "p", "-n", "lab", "-o", "json"]);
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p:#}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let status = k.ok(&["get", "pod", "p", "-n", "lab"]);
    assert!(status.contains("Terminating"), "{status}");
    k.ok(&[
        "delete",
        "pod",
        "p",
        "-n",
        "lab",
        "--grace-period=0",
        "--force",
    ]);
}

fn jobs_and_finalizers(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "lab"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "pi", "image": "perl:5.34"}]}}}});
    create(&c, &k, "job.json", &job);
    let j = k.json(&["get", "job", "pi", "-n", "lab", "-o", "json"]);
    let uid = j["metadata"]["uid"].as_str().unwrap_or("").to_string();
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str(),
        "{j:#}"
    );
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"]["job-name"],
        "pi"
    );
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(j["spec"]["completions"], 1);
    let table = k.ok(&["get", "jobs", "-n", "lab"]);
    assert_eq!(
        header_of(&table),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{table}"
    );
    let mut always = job.clone();
    always["metadata"]["name"] = json!("always");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let err = create_fails(&c, &k, "always.json", &always);
    assert!(
        err.contains("spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""),
        "{err}"
    );
    let cron = |schedule: &str| {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "lab"},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    let err = create_fails(&c, &k, "badcron.json", &cron("61 * * * *"));
    assert!(
        err.contains("spec.schedule: Invalid value: \"61 * * * *\""),
        "{err}"
    );
    create(&c, &k, "cron.json", &cron("*/5 * * * *"));
    let table = k.ok(&["get", "cj", "-n", "lab"]);
    let rows = table_rows(&table);
    assert_eq!(rows[0][..3], ["NAME", "SCHEDULE", "TIMEZONE"], "{table}");
    assert_eq!(rows[1][1..3], ["*/5", "*"], "{table}");

    // A finalizer holds an object being deleted until it is removed.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "lab", "finalizers": ["example.com/hold"]}});
    create(&c, &k, "held.json", &cm);
    k.ok(&["delete", "cm", "held", "-n", "lab", "--wait=false"]);
    let held = k.json(&["get", "cm", "held", "-n", "lab", "-o", "json"]);
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "{held:#}"
    );
    k.ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "lab",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let err = k.fails(&["get", "cm", "held", "-n", "lab"]);
    assert!(err.contains("NotFound"), "{err}");

    // Foreground deletion: the foregroundDeletion finalizer until the dependents are gone (the
    // garbage collector's work); `kubectl delete --cascade=foreground --wait=false` returns.
    create(
        &c,
        &k,
        "fg.json",
        &deployment("fg", 1, json!({"app": "fg"})),
    );
    k.ok(&[
        "delete",
        "deploy",
        "fg",
        "-n",
        "lab",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let fg = k.json(&["get", "deploy", "fg", "-n", "lab", "-o", "json"]);
    assert_eq!(
        fg["metadata"]["finalizers"][0], "foregroundDeletion",
        "{fg:#}"
    );

    // deletecollection with a label selector.
    for n in ["x1", "x2"] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": n, "namespace": "lab", "labels": {"batch": "x"}}});
        create(&c, &k, &format!("{n}.json"), &cm);
    }
    let r = c
        .https(
            Identity::Admin,
            "DELETE",
            "/api/v1/namespaces/lab/configmaps?labelSelector=batch%3Dx",
            None,
        )
        .expect("deletecollection");
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(
        r.json()["items"].as_array().map(Vec::len),
        Some(2),
        "{r:#?}"
    );
    let left = k.ok(&["get", "cm", "-n", "lab", "-l", "batch=x", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");

    // Unknown fields: Strict refuses, Warn warns and drops them.
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"colour":"red"}"#;
    let r = c
        .https(
            Identity::Admin,
            "POST",
            "/api/v1/namespaces/lab/configmaps?fieldValidation=Strict",
            Some(body),
        )
        .expect("strict create");
    assert_eq!(r.status, 400, "{r:#?}");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("strict decoding error: unknown field \"colour\"")),
        "{r:#?}"
    );
    let r = c
        .https(
            Identity::Admin,
            "POST",
            "/api/v1/namespaces/lab/configmaps?fieldValidation=Warn",
            Some(body),
        )
        .expect("warn create");
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(
        r.header("warning"),
        Some("299 - \"unknown field \\\"colour\\\"\""),
        "{r:#?}"
    );
    assert!(r.json().get("colour").is_none(), "{r:#?}");
}

fn generators_apply_and_explain(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    // Generators (kubectl 1.32+ send these as protobuf).
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "-n",
        "lab",
    ]);
    k.ok(&[
        "create",
        "configmap",
        "conf",
        "--from-literal=a=1",
        "-n",
        "lab",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=user=admin",
        "-n",
        "lab",
    ]);
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "-n",
        "lab",
    ]);
    k.ok(&["create", "job", "once", "--image=busybox", "-n", "lab"]);
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "-n",
        "lab",
    ]);
    k.ok(&["create", "namespace", "other"]);
    k.ok(&["run", "solo", "--image=busybox", "-n", "lab"]);
    let d = k.json(&["get", "deploy", "web", "-n", "lab", "-o", "json"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d:#}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d:#}");
    let s = k.json(&["get", "secret", "pw", "-n", "lab", "-o", "json"]);
    assert_eq!(s["data"]["user"], "YWRtaW4=", "{s:#}");
    let svc = k.json(&["get", "svc", "web", "-n", "lab", "-o", "json"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc:#}");
    for what in ["job/once", "cronjob/tick", "pod/solo", "configmap/conf"] {
        k.ok(&["get", what, "-n", "lab"]);
    }
    let can = k.ok(&["auth", "can-i", "create", "pods", "-n", "lab"]);
    assert_eq!(can.trim(), "yes");

    // explain reads the OpenAPI schemas.
    let explained = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explained.contains("KIND:") && explained.contains("Pod") && explained.contains("image"),
        "{explained}"
    );

    // Client-side apply with the default (strict) validation; re-applying an edited manifest
    // patches only what changed and keeps what others set.
    let mut manifest = deployment("applied", 1, json!({"app": "applied"}));
    let path = c.manifest("applied.json", &manifest);
    k.ok(&["apply", "-f", &path]);
    k.ok(&[
        "label",
        "deploy",
        "applied",
        "-n",
        "lab",
        "owner=someone-else",
    ]);
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let path = c.manifest("applied.json", &manifest);
    let diff = k.run(&["diff", "-f", &path]);
    let diff_out = String::from_utf8_lossy(&diff.stdout).to_string();
    assert_eq!(diff.status.code(), Some(1), "kubectl diff: {diff:?}");
    assert!(diff_out.contains("nginx:1.28"), "{diff_out}");
    k.ok(&["apply", "-f", &path]);
    let d = k.json(&["get", "deploy", "applied", "-n", "lab", "-o", "json"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    assert_eq!(d["metadata"]["labels"]["owner"], "someone-else", "{d:#}");
    assert_eq!(d["metadata"]["generation"], 2, "{d:#}");
    // A strategic merge patch adds a container by name without touching the other.
    k.ok(&[
        "patch",
        "deploy",
        "applied",
        "-n",
        "lab",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}"#,
    ]);
    let d = k.json(&["get", "deploy", "applied", "-n", "lab", "-o", "json"]);
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{d:#}");
    assert!(names.contains(&"web") && names.contains(&"side"), "{d:#}");
    // An unknown field in a manifest: kubectl's strict validation (server-side) refuses it.
    let mut unknown = deployment("unknown", 1, json!({"app": "unknown"}));
    unknown["spec"]["replicaz"] = json!(2);
    let path = c.manifest("unknown.json", &unknown);
    let err = k.fails(&["apply", "-f", &path]);
    assert!(
        err.contains("unknown field") && err.contains("replicaz"),
        "{err}"
    );

    // edit with an editor script.
    let editor = c.work_dir().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/a: \"1\"/a: \"2\"/' \"$1\"\n").expect("editor");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = std::process::Command::new(&k.argv(&[])[0])
        .args(&k.argv(&["edit", "cm", "conf", "-n", "lab"])[1..])
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("kubectl edit");
    assert!(out.status.success(), "kubectl edit: {out:?}");
    let cm = k.json(&["get", "cm", "conf", "-n", "lab", "-o", "json"]);
    assert_eq!(cm["data"]["a"], "2", "{cm:#}");
}

fn custom_resources(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                "additionalPrinterColumns": [
                    {"name": "Colour", "type": "string", "jsonPath": ".spec.colour"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["colour"], "properties": {
                        "size": {"type": "integer", "minimum": 0},
                        "colour": {"type": "string", "enum": ["red", "blue"]}}},
                    "status": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}});
    let path = c.manifest("crd.json", &crd);
    k.ok(&["apply", "-f", &path]);
    let got = k.json(&["get", "crd", "widgets.example.com", "-o", "json"]);
    let established = got["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "{got:#}");
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);

    let widget = |name: &str, colour: &str, size: i64| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "lab"},
            "spec": {"colour": colour, "size": size}})
    };
    let path = c.manifest("w1.json", &widget("w1", "red", 2));
    k.ok(&["apply", "-f", &path]);
    let table = k.ok(&["get", "widgets", "-n", "lab"]);
    let rows = table_rows(&table);
    assert_eq!(rows[0], ["NAME", "COLOUR", "SIZE", "AGE"], "{table}");
    assert_eq!(rows[1][..3], ["w1", "red", "2"], "{table}");
    k.ok(&["get", "wd", "w1", "-n", "lab"]);
    // Schema checks with the real words.
    let path = c.manifest("bad.json", &widget("bad", "green", -1));
    let err = k.fails(&["apply", "-f", &path]);
    for want in [
        "spec.colour: Unsupported value: \"green\": supported values: \"red\", \"blue\"",
        "spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Unknown fields are pruned (warned about by default).
    let mut extra = widget("w2", "blue", 1);
    extra["spec"]["shape"] = json!("round");
    let path = c.manifest("w2.json", &extra);
    k.ok(&["create", "-f", &path, "--validate=false"]);
    let w2 = k.json(&["get", "widget", "w2", "-n", "lab", "-o", "json"]);
    assert!(w2["spec"].get("shape").is_none(), "{w2:#}");
    assert_eq!(w2["metadata"]["generation"], 1, "{w2:#}");
    // The scale subresource follows the CRD's paths; status is separate.
    k.ok(&["scale", "widget", "w2", "-n", "lab", "--replicas=4"]);
    let w2 = k.json(&["get", "widget", "w2", "-n", "lab", "-o", "json"]);
    assert_eq!(w2["spec"]["size"], 4, "{w2:#}");
    assert_eq!(w2["metadata"]["generation"], 2, "{w2:#}");
    // Deleting the CRD takes its objects and its API with it.
    k.ok(&["delete", "crd", "widgets.example.com"]);
    let r = c
        .https(
            Identity::Admin,
            "GET",
            "/apis/example.com/v1/namespaces/lab/widgets",
            None,
        )
        .expect("GET widgets");
    assert_eq!(r.status, 404, "{r:#?}");
    let out = common::etcdctl(
        c.store(),
        &["get", "/registry/example.com/", "--prefix", "--keys-only"],
        None,
    );
    let keys = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        keys.trim().is_empty(),
        "custom objects left in etcd: {keys}"
    );
}
