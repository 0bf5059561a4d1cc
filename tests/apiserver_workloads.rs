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
            fn every_built_in_type() {
                super::every_built_in_type($version, super::Store::$store)
            }
            #[test]
            fn service_accounts_and_rbac() {
                super::service_accounts_and_rbac($version, super::Store::$store)
            }
            #[test]
            fn server_side_apply() {
                super::server_side_apply($version, super::Store::$store)
            }
            #[test]
            fn wait_and_delete() {
                super::wait_and_delete($version, super::Store::$store)
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
    k.ok(&["create", "-f", &path])
}

fn create_fails(c: &Cluster, k: &Kubectl, file: &str, obj: &Value) -> String {
    let path = c.manifest(file, obj);
    k.fails(&["create", "-f", &path])
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
    // autoscale sends autoscaling/v1 (kubectl < 1.33) or v2: both land as one stored HPA.
    k.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--min=1",
        "--max=3",
        "--cpu-percent=70",
        "-n",
        "lab",
    ]);
    let hpa = k.json(&["get", "hpa", "web", "-n", "lab", "-o", "json"]);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{hpa:#}");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70,
        "{hpa:#}"
    );
    let v1 = k.json(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-n",
        "lab",
        "-o",
        "json",
    ]);
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70, "{v1:#}");
    // An events.k8s.io/v1 Event is a core Event too.
    let ev = r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e1"},
        "eventTime":"2026-01-01T00:00:00.000000Z","reportingController":"example.com/ctl",
        "reportingInstance":"ctl-1","action":"Testing","reason":"Tested","type":"Normal",
        "regarding":{"kind":"Pod","name":"solo","namespace":"lab"},"note":"new-style event"}"#;
    let r = c
        .https(
            Identity::Admin,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/lab/events",
            Some(ev),
        )
        .expect("POST events.k8s.io event");
    assert_eq!(r.status, 201, "{r:#?}");
    assert_eq!(r.json()["note"], "new-style event", "{r:#?}");
    let core = k.json(&["get", "events.v1.", "e1", "-n", "lab", "-o", "json"]);
    assert_eq!(core["message"], "new-style event", "{core:#}");
    assert_eq!(core["involvedObject"]["name"], "solo", "{core:#}");
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
    // explain reads the CRD's schema from /openapi/v3.
    let explained = k.ok(&["explain", "widgets.spec"]);
    assert!(
        explained.contains("colour") && explained.contains("size"),
        "{explained}"
    );
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
    // kubectl's default validation is Strict: refused, naming the field.
    let err = k.fails(&["create", "-f", &path]);
    assert!(
        err.contains("strict decoding error: unknown field \"spec.shape\""),
        "{err}"
    );
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

/// One minimal valid object of every built-in type that stores objects.
fn one_of_each() -> Vec<(&'static str, Value)> {
    let pod_template = json!({"metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    let sel = json!({"matchLabels": {"app": "x"}});
    let meta = |name: &str| json!({"name": name, "namespace": "lab", "labels": {"kind": "sample"}});
    let cluster_meta = |name: &str| json!({"name": name, "labels": {"kind": "sample"}});
    vec![
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm1"), "data": {"a": "b"}}),
        ),
        (
            "endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("ep1"),
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": meta("ev1"),
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "lab"}, "reason": "Test", "message": "hello", "type": "Normal"}),
        ),
        (
            "limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("lr1"),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
        ),
        (
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": cluster_meta("node1")}),
        ),
        (
            "persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("pvc1"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "persistentvolumes",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": cluster_meta("pv1"),
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/pv1"}}}),
        ),
        (
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("pod1"), "spec": pod_template["spec"]}),
        ),
        (
            "podtemplates",
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("pt1"), "template": pod_template}),
        ),
        (
            "replicationcontrollers",
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("rc1"),
            "spec": {"replicas": 1, "selector": {"app": "x"}, "template": pod_template}}),
        ),
        (
            "resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("rq1"), "spec": {"hard": {"pods": "10"}}}),
        ),
        (
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("s1"), "stringData": {"k": "v"}}),
        ),
        (
            "serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("sa1")}),
        ),
        (
            "services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("svc1"), "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
        ),
        (
            "controllerrevisions",
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta("cr1"), "revision": 1, "data": {"a": 1}}),
        ),
        (
            "daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("ds1"), "spec": {"selector": sel, "template": pod_template}}),
        ),
        (
            "deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("deploy1"), "spec": {"selector": sel, "template": pod_template}}),
        ),
        (
            "replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("rs1"), "spec": {"selector": sel, "template": pod_template}}),
        ),
        (
            "statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("sts1"), "spec": {"selector": sel, "serviceName": "svc1", "template": pod_template}}),
        ),
        (
            "horizontalpodautoscalers",
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("hpa1"),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "deploy1"}, "minReplicas": 1, "maxReplicas": 3,
              "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        ),
        (
            "cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("cj1"),
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        ),
        (
            "jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("job1"),
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta("lease1"), "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
        ),
        (
            "endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta("es1"), "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"port": 80}]}),
        ),
        (
            "ingressclasses",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": cluster_meta("ic1"), "spec": {"controller": "example.com/ingress"}}),
        ),
        (
            "ingresses",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("ing1"),
            "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": "svc1", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "networkpolicies",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("np1"), "spec": {"podSelector": sel}}),
        ),
        (
            "poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("pdb1"), "spec": {"minAvailable": 1, "selector": sel}}),
        ),
        (
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": cluster_meta("crb1"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr1"}, "subjects": [{"kind": "User", "name": "jane"}]}),
        ),
        (
            "clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": cluster_meta("cr1"),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        (
            "rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("rb1"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role1"}, "subjects": [{"kind": "ServiceAccount", "name": "sa1", "namespace": "lab"}]}),
        ),
        (
            "roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("role1"),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
        ),
        (
            "storageclasses",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": cluster_meta("sc1"), "provisioner": "example.com/hostpath"}),
        ),
        (
            "priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": cluster_meta("pc1"), "value": 1000}),
        ),
    ]
}

fn every_built_in_type(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    let objects = one_of_each();
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": objects.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>()});
    let path = c.manifest("all.json", &list);
    // apply with kubectl's default (strict) validation, through the OpenAPI documents.
    k.ok(&["apply", "-f", &path]);
    // All types at once (kubectl prints one server-side table per type).
    let types: Vec<&str> = objects.iter().map(|(p, _)| *p).collect();
    let types = types.join(",");
    let wide = k.ok(&[
        "get",
        &types,
        "-A",
        "-l",
        "kind=sample",
        "-o",
        "wide",
        "--show-labels",
    ]);
    let names = k.ok(&["get", &types, "-A", "-l", "kind=sample", "-o", "name"]);
    let yaml = k.ok(&["get", &types, "-A", "-l", "kind=sample", "-o", "yaml"]);
    for (plural, obj) in &objects {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        assert!(wide.contains(name), "get {plural} -o wide:\n{wide}");
        assert!(
            names.lines().any(|l| l.ends_with(&format!("/{name}"))),
            "{plural}: {names}"
        );
        assert!(yaml.contains(&format!("name: {name}")), "{plural}");
    }
    assert_eq!(
        wide.matches("kind=sample").count(),
        objects.len(),
        "every object's labels are shown:\n{wide}"
    );
    // Server-side columns, e.g. for daemonsets and ingresses.
    for header in [
        "NODE SELECTOR",
        "CLUSTER-IP",
        "HOLDER",
        "PROVISIONER",
        "MIN AVAILABLE",
        "REFERENCE",
    ] {
        assert!(wide.contains(header), "no {header} column:\n{wide}");
    }
    let jp = k.ok(&[
        "get",
        "deploy",
        "deploy1",
        "-n",
        "lab",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(jp, "busybox:1.36");
    let cc = k.ok(&[
        "get",
        "pods",
        "-n",
        "lab",
        "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
    ]);
    assert_eq!(table_rows(&cc)[1], ["pod1", "Pending"], "{cc}");
    k.ok(&["create", "configmap", "aaa", "-n", "lab"]);
    let sorted = k.ok(&[
        "get",
        "cm",
        "-n",
        "lab",
        "--sort-by=.metadata.name",
        "-o",
        "name",
    ]);
    let order: Vec<&str> = sorted.lines().collect();
    let mut want = order.clone();
    want.sort();
    assert_eq!(order, want, "{sorted}");
    let all = k.ok(&["get", "all", "-n", "lab"]);
    for n in [
        "pod/pod1",
        "service/svc1",
        "deployment.apps/deploy1",
        "statefulset.apps/sts1",
        "cronjob.batch/cj1",
    ] {
        assert!(all.contains(n), "get all is missing {n}:\n{all}");
    }
    for what in [
        ["pod", "pod1"],
        ["deployment", "deploy1"],
        ["node", "node1"],
        ["service", "svc1"],
    ] {
        let ns: &[&str] = if what[0] == "node" {
            &[]
        } else {
            &["-n", "lab"]
        };
        let mut args = vec!["describe", what[0], what[1]];
        args.extend_from_slice(ns);
        let d = k.ok(&args);
        assert!(
            d.contains("Name:") && d.contains(what[1]),
            "describe {what:?}:\n{d}"
        );
    }
}

fn service_accounts_and_rbac(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    k.ok(&["create", "serviceaccount", "robot", "-n", "lab"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=a=b",
        "-n",
        "lab",
    ]);
    let token = k.ok(&["create", "token", "robot", "-n", "lab"]);
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    // The robot, authenticated by its token alone.
    let bogus = c.kubeconfig(Identity::BogusToken);
    let robot = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        let argv = k.argv(&[]);
        let out = std::process::Command::new(&argv[0])
            .arg(format!("--kubeconfig={}", bogus.display()))
            .arg(&argv[2])
            .args(&all)
            .output()
            .expect("kubectl as robot");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    if v != "1.27" {
        // (kubectl 1.27 looks for SelfSubjectReview in v1alpha1/v1beta1 only.)
        let (ok, whoami) = robot(&["auth", "whoami", "-o", "json"]);
        assert!(
            ok && whoami.contains("system:serviceaccount:lab:robot"),
            "{whoami}"
        );
    }
    // No role binding: 403 with the RBAC authorizer's words.
    let (ok, err) = robot(&["get", "secrets", "-n", "lab"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("secrets is forbidden: User \"system:serviceaccount:lab:robot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"lab\""),
        "{err}"
    );
    let (_, can) = robot(&["auth", "can-i", "list", "secrets", "-n", "lab"]);
    assert!(can.trim().starts_with("no"), "{can}");
    let can = k.run(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        "lab",
        "--as=system:serviceaccount:lab:robot",
    ]);
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");
    // Bind the `view` ClusterRole (configmaps yes, secrets no), then a Role for secrets.
    k.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=lab:robot",
        "-n",
        "lab",
    ]);
    let can_cm = || robot(&["auth", "can-i", "list", "configmaps", "-n", "lab"]).1;
    let mut answer = can_cm();
    for _ in 0..50 {
        if answer.trim() == "yes" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        answer = can_cm();
    }
    assert_eq!(answer.trim(), "yes", "view lets the robot list configmaps");
    let (ok, err) = robot(&["get", "secrets", "-n", "lab"]);
    assert!(
        !ok && err.contains("forbidden"),
        "view must not read secrets: {err}"
    );
    k.ok(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
        "-n",
        "lab",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "robot-secrets",
        "--role=secret-reader",
        "--serviceaccount=lab:robot",
        "-n",
        "lab",
    ]);
    let mut listed = robot(&["get", "secrets", "-n", "lab", "-o", "name"]);
    for _ in 0..50 {
        if listed.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        listed = robot(&["get", "secrets", "-n", "lab", "-o", "name"]);
    }
    assert!(listed.0 && listed.1.contains("secret/s"), "{}", listed.1);
    // Deleting the service account revokes its tokens.
    k.ok(&["delete", "serviceaccount", "robot", "-n", "lab"]);
    let (ok, err) = robot(&["get", "secrets", "-n", "lab"]);
    assert!(
        !ok && err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    // The default policy is there.
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:kube-scheduler",
    ] {
        k.ok(&["get", "clusterrole", role]);
    }
}

fn server_side_apply(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    let mut d = deployment("ssa", 2, json!({"app": "ssa"}));
    let path = c.manifest("ssa.json", &d);
    // Apply creates the object and owns its fields.
    k.ok(&["apply", "--server-side", "-f", &path]);
    let got = k.json(&[
        "get",
        "deploy",
        "ssa",
        "-n",
        "lab",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let managers: Vec<(String, String)> = got["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or("").to_string(),
                m["operation"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("kubectl".to_string(), "Apply".to_string())),
        "{got:#}"
    );
    let fields = got["metadata"]["managedFields"][0]["fieldsV1"].to_string();
    assert!(
        fields.contains("f:replicas") && fields.contains("k:{\\\"name\\\":\\\"web\\\"}"),
        "{fields}"
    );
    // Re-applying an edited manifest changes that field only.
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let path = c.manifest("ssa.json", &d);
    k.ok(&["apply", "--server-side", "-f", &path]);
    let got = k.json(&["get", "deploy", "ssa", "-n", "lab", "-o", "json"]);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(got["metadata"]["generation"], 2, "{got:#}");
    // Another manager setting the same field to another value: the real conflict.
    let mut other = deployment("ssa", 5, json!({"app": "ssa"}));
    other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let path = c.manifest("other.json", &other);
    let err = k.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &path,
    ]);
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    let got = k.json(&["get", "deploy", "ssa", "-n", "lab", "-o", "json"]);
    assert_eq!(got["spec"]["replicas"], 2, "nothing changed on a conflict");
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &path,
    ]);
    let got = k.json(&[
        "get",
        "deploy",
        "ssa",
        "-n",
        "lab",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert_eq!(got["spec"]["replicas"], 5);
    // An ordinary create records its manager as an Update.
    k.ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=a=b",
        "-n",
        "lab",
    ]);
    let cm = k.json(&[
        "get",
        "cm",
        "plain",
        "-n",
        "lab",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert_eq!(
        cm["metadata"]["managedFields"][0]["manager"], "kubectl-create",
        "{cm:#}"
    );
    assert_eq!(
        cm["metadata"]["managedFields"][0]["operation"], "Update",
        "{cm:#}"
    );
}

fn wait_and_delete(v: &str, store: Store) {
    let (c, k) = setup(v, store);
    create(
        &c,
        &k,
        "d.json",
        &deployment("waited", 1, json!({"app": "waited"})),
    );
    // `wait --for=condition` watches until the status (written through /status) says so.
    let mut waiter = k.spawn(&[
        "wait",
        "--for=condition=Available",
        "deploy/waited",
        "-n",
        "lab",
        "--timeout=20s",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    k.ok(&[
        "patch", "deploy", "waited", "-n", "lab", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"observedGeneration":1,"replicas":1,"readyReplicas":1,"availableReplicas":1,"updatedReplicas":1,"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable","message":"ok"}]}}"#,
    ]);
    let status = waiter.wait_exit(std::time::Duration::from_secs(20));
    let out = waiter.finish();
    assert!(
        status.is_some_and(|s| s.success()),
        "wait --for=condition: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("condition met"),
        "{out:?}"
    );
    // A status write through the main resource is ignored; through /status it is kept.
    let d = k.json(&["get", "deploy", "waited", "-n", "lab", "-o", "json"]);
    assert_eq!(d["status"]["availableReplicas"], 1, "{d:#}");
    let rows = table_rows(&k.ok(&["get", "deploy", "waited", "-n", "lab"]));
    assert_eq!(rows[1][1..4], ["1/1", "1", "1"], "{rows:?}");
    k.ok(&[
        "rollout",
        "status",
        "deploy/waited",
        "-n",
        "lab",
        "--timeout=10s",
    ]);

    // `wait --for=delete` returns when the object is gone.
    for n in ["a", "b", "c"] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": n, "namespace": "lab", "labels": {"group": if n == "c" { "other" } else { "ab" }}}});
        create(&c, &k, &format!("{n}.json"), &cm);
    }
    let mut gone = k.spawn(&["wait", "--for=delete", "cm/a", "-n", "lab", "--timeout=20s"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    k.ok(&["delete", "cm", "-l", "group=ab", "-n", "lab"]);
    let status = gone.wait_exit(std::time::Duration::from_secs(20));
    let out = gone.finish();
    assert!(
        status.is_some_and(|s| s.success()),
        "wait --for=delete: {out:?}"
    );
    let left = k.ok(&["get", "cm", "-n", "lab", "-l", "group", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/c");
    k.ok(&["delete", "cm", "--all", "-n", "lab"]);
    let left = k.ok(&["get", "cm", "-n", "lab", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}
