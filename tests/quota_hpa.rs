//! ResourceQuota and HorizontalPodAutoscaler in a whole `minik up --fake-nodes` cluster with the
//! real kubectl 1.33: the API server's quota admission refuses creates over a quota with the
//! real messages and stores nothing, charges `status.used` as objects are created; the quota
//! controller gives usage back when they are deleted; a replica set held back by a quota says
//! so (`FailedCreate` event, `ReplicaFailure` condition); `kubectl get quota` shows used/hard.
//! The HPA controller reads its target's scale, reports that no metrics can be had (there is
//! no metrics server), keeps the target within min/max, and says when the target is missing.

mod lab;

use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn up(name: &str) -> Lab {
    let lab = Lab::new();
    let out = lab.ok(&["up", "--name", name, "--fake-nodes", "2", "--wait", "60s"]);
    assert!(out.contains("Done!"), "{out}");
    lab
}

fn json(lab: &Lab, ctx: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = lab.kubectl_ok(ctx, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// `status.used[resource]` of a quota ("" when not there yet).
fn used(lab: &Lab, ctx: &str, ns: &str, quota: &str, resource: &str) -> String {
    let q = json(lab, ctx, &["get", "quota", quota, "-n", ns]);
    q["status"]["used"][resource]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The messages of the events in `ns` that `selector` (a field selector) picks.
fn messages(lab: &Lab, ctx: &str, ns: &str, selector: &str) -> String {
    lab.kubectl_ok(
        ctx,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            selector,
            "-o",
            "jsonpath={.items[*].message}",
        ],
    )
}

fn stderr_of(lab: &Lab, ctx: &str, args: &[&str]) -> String {
    let out = lab.kubectl(ctx, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apply(lab: &Lab, ctx: &str, name: &str, yaml: &str) {
    let path = lab.home.path().join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    lab.kubectl_ok(ctx, &["apply", "-f", path.to_str().expect("utf-8 path")]);
}

#[test]
fn resource_quotas_are_enforced_and_counted() {
    let lab = up("quota");
    let ctx = "minik-quota";

    // Object counts and pods.
    lab.kubectl_ok(ctx, &["create", "namespace", "q1"]);
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "quota",
            "q",
            "-n",
            "q1",
            "--hard=pods=2,count/configmaps=3,services=1,count/deployments.apps=1",
        ],
    );
    lab.wait_for("the quota's first status", WAIT, || {
        used(&lab, ctx, "q1", "q", "pods") == "0"
    });
    // The root CA publisher's configMap is in the namespace too.
    lab.wait_for("kube-root-ca.crt counted", WAIT, || {
        used(&lab, ctx, "q1", "q", "count/configmaps") == "1"
            || lab
                .kubectl_ok(ctx, &["get", "configmap", "-n", "q1", "-o", "name"])
                .is_empty()
    });
    let cms_before: i64 = used(&lab, ctx, "q1", "q", "count/configmaps")
        .parse()
        .unwrap_or(0);
    let q = json(&lab, ctx, &["get", "quota", "q", "-n", "q1"]);
    assert_eq!(q["status"]["hard"]["pods"], "2", "{q}");

    lab.kubectl_ok(ctx, &["run", "a", "-n", "q1", "--image=busybox"]);
    lab.kubectl_ok(ctx, &["run", "b", "-n", "q1", "--image=busybox"]);
    // Admission charged the quota as it admitted the pods.
    assert_eq!(used(&lab, ctx, "q1", "q", "pods"), "2");
    let err = stderr_of(&lab, ctx, &["run", "c", "-n", "q1", "--image=busybox"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{err}"
    );
    let missing = lab.kubectl(ctx, &["get", "pod", "c", "-n", "q1"]);
    assert!(
        !missing.status.success(),
        "the refused pod must not be stored"
    );
    assert_eq!(used(&lab, ctx, "q1", "q", "pods"), "2");

    // Other counted objects.
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "service",
            "clusterip",
            "s1",
            "-n",
            "q1",
            "--tcp=80:80",
        ],
    );
    let err = stderr_of(
        &lab,
        ctx,
        &[
            "create",
            "service",
            "clusterip",
            "s2",
            "-n",
            "q1",
            "--tcp=80:80",
        ],
    );
    assert!(
        err.contains("services \"s2\" is forbidden: exceeded quota: q, requested: services=1, used: services=1, limited: services=1"),
        "{err}"
    );
    lab.kubectl_ok(ctx, &["create", "configmap", "c1", "-n", "q1"]);
    assert_eq!(
        used(&lab, ctx, "q1", "q", "count/configmaps"),
        (cms_before + 1).to_string()
    );

    // kubectl get quota: used/hard, requests and limits columns.
    let table = lab.kubectl_ok(ctx, &["get", "quota", "-n", "q1"]);
    let header = table.lines().next().unwrap_or("");
    for col in ["NAME", "AGE", "REQUEST", "LIMIT"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("pods: 2/2"), "{table}");
    assert!(table.contains("services: 1/1"), "{table}");
    let described = lab.kubectl_ok(ctx, &["describe", "quota", "q", "-n", "q1"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "2", "2"]),
        "{described}"
    );

    // Deleting gives the usage back (the quota controller's replenishment).
    lab.kubectl_ok(ctx, &["delete", "pod", "a", "-n", "q1", "--timeout=30s"]);
    lab.kubectl_ok(ctx, &["delete", "service", "s1", "-n", "q1"]);
    lab.wait_for("pods used back to 1", WAIT, || {
        used(&lab, ctx, "q1", "q", "pods") == "1" && used(&lab, ctx, "q1", "q", "services") == "0"
    });
    lab.kubectl_ok(ctx, &["run", "c", "-n", "q1", "--image=busybox"]);
    assert_eq!(used(&lab, ctx, "q1", "q", "pods"), "2");

    // A deployment whose replica set runs into the quota.
    lab.kubectl_ok(ctx, &["create", "namespace", "q3"]);
    lab.kubectl_ok(
        ctx,
        &["create", "quota", "two-pods", "-n", "q3", "--hard=pods=2"],
    );
    lab.wait_for("two-pods status", WAIT, || {
        used(&lab, ctx, "q3", "two-pods", "pods") == "0"
    });
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "q3",
            "--image=nginx",
            "--replicas=3",
        ],
    );
    lab.wait_for("the replica set's ReplicaFailure condition", WAIT, || {
        let rs = json(&lab, ctx, &["get", "rs", "-n", "q3", "-l", "app=web"]);
        rs["items"][0]["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "ReplicaFailure"
                        && c["status"] == "True"
                        && c["reason"] == "FailedCreate"
                        && c["message"].as_str().is_some_and(|m| {
                            m.starts_with("pods \"web-")
                                && m.ends_with("is forbidden: exceeded quota: two-pods, requested: pods=1, used: pods=2, limited: pods=2")
                        })
                })
            })
    });
    let events = messages(&lab, ctx, "q3", "reason=FailedCreate");
    assert!(
        events.contains("Error creating: pods \"web-")
            && events.contains(
                "exceeded quota: two-pods, requested: pods=1, used: pods=2, limited: pods=2"
            ),
        "{events}"
    );
    let pods = lab.kubectl_ok(ctx, &["get", "pods", "-n", "q3", "-o", "name"]);
    assert_eq!(pods.lines().count(), 2, "{pods}");
    // The job controller words it as the replica set's does: the API's message, not the client
    // library's error.
    lab.kubectl_ok(
        ctx,
        &["create", "job", "batch", "-n", "q3", "--image=busybox"],
    );
    lab.wait_for("the job's FailedCreate event", WAIT, || {
        let events = messages(
            &lab,
            ctx,
            "q3",
            "involvedObject.kind=Job,reason=FailedCreate",
        );
        events.starts_with("Error creating: pods \"batch-")
            && events.contains("is forbidden: exceeded quota: two-pods")
            && !events.contains("ApiError")
    });

    // Compute resources: a limits quota wants every container to state its limits.
    lab.kubectl_ok(ctx, &["create", "namespace", "q2"]);
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "quota",
            "lim",
            "-n",
            "q2",
            "--hard=limits.cpu=1,limits.memory=1Gi,requests.cpu=1",
        ],
    );
    lab.wait_for("lim status", WAIT, || {
        used(&lab, ctx, "q2", "lim", "limits.cpu") == "0"
    });
    let err = stderr_of(
        &lab,
        ctx,
        &["run", "nolimits", "-n", "q2", "--image=busybox"],
    );
    assert!(
        err.contains("pods \"nolimits\" is forbidden: failed quota: lim: must specify limits.cpu for: nolimits; limits.memory for: nolimits; requests.cpu for: nolimits"),
        "{err}"
    );
    apply(
        &lab,
        ctx,
        "limited.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: limited, namespace: q2}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {cpu: 250m, memory: 64Mi}\n      limits: {cpu: 500m, memory: 128Mi}\n",
    );
    let q = json(&lab, ctx, &["get", "quota", "lim", "-n", "q2"]);
    assert_eq!(q["status"]["used"]["limits.cpu"], "500m", "{q}");
    assert_eq!(q["status"]["used"]["limits.memory"], "128Mi", "{q}");
    assert_eq!(q["status"]["used"]["requests.cpu"], "250m", "{q}");
    let table = lab.kubectl_ok(ctx, &["get", "quota", "lim", "-n", "q2"]);
    assert!(table.contains("requests.cpu: 250m/1"), "{table}");
    assert!(
        table.contains("limits.cpu: 500m/1, limits.memory: 128Mi/1Gi"),
        "{table}"
    );
    // Limits only: requests default to the limits, and 500m + 600m is over 1 cpu.
    let path = lab.home.path().join("big.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big, namespace: q2}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      limits: {cpu: 600m, memory: 128Mi}\n",
    )
    .expect("write manifest");
    let err = stderr_of(
        &lab,
        ctx,
        &["create", "-f", path.to_str().expect("utf-8 path")],
    );
    assert!(
        err.contains("pods \"big\" is forbidden: exceeded quota: lim, requested: limits.cpu=600m, used: limits.cpu=500m, limited: limits.cpu=1"),
        "{err}"
    );
}

#[test]
fn horizontal_pod_autoscalers_without_metrics() {
    let lab = up("hpa");
    let ctx = "minik-hpa";
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
    );
    lab.kubectl_ok(
        ctx,
        &[
            "autoscale",
            "deployment",
            "web",
            "--min=2",
            "--max=5",
            "--cpu-percent=50",
        ],
    );
    let condition = |hpa: &Value, t: &str| -> Value {
        hpa["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or(Value::Null)
    };
    lab.wait_for("the HPA's conditions", WAIT, || {
        let hpa = json(&lab, ctx, &["get", "hpa", "web"]);
        condition(&hpa, "ScalingActive")["reason"] == "FailedGetResourceMetric"
    });
    let hpa = json(&lab, ctx, &["get", "hpa", "web"]);
    let able = condition(&hpa, "AbleToScale");
    assert_eq!(able["status"], "True", "{hpa}");
    assert_eq!(able["reason"], "SucceededGetScale", "{hpa}");
    assert_eq!(
        able["message"],
        "the HPA controller was able to get the target's current scale"
    );
    let active = condition(&hpa, "ScalingActive");
    assert_eq!(active["status"], "False", "{hpa}");
    assert_eq!(
        active["message"],
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
    );
    assert_eq!(hpa["status"]["currentReplicas"], 2, "{hpa}");

    let table = lab.kubectl_ok(ctx, &["get", "hpa"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..7],
        [
            "web",
            "Deployment/web",
            "cpu:",
            "<unknown>/50%",
            "2",
            "5",
            "2"
        ],
        "{table}"
    );
    lab.wait_for("the metric events", WAIT, || {
        let events = lab.kubectl_ok(
            ctx,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=web,type=Warning",
            ],
        );
        events.contains("FailedGetResourceMetric")
            && events.contains("FailedComputeMetricsReplicas")
    });
    let events = json(
        &lab,
        ctx,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=FailedComputeMetricsReplicas",
        ],
    );
    assert_eq!(
        events["items"][0]["message"],
        "invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
    );

    // Outside the bounds: scaled back to maxReplicas without any metric.
    lab.kubectl_ok(ctx, &["scale", "deployment", "web", "--replicas=7"]);
    lab.wait_for("web back to 5 replicas", WAIT, || {
        lab.kubectl_ok(
            ctx,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        ) == "5"
    });
    lab.wait_for("the SuccessfulRescale event", WAIT, || {
        lab.kubectl_ok(
            ctx,
            &[
                "get",
                "events",
                "--field-selector",
                "reason=SuccessfulRescale",
            ],
        )
        .contains("New size: 5; reason: Current number of replicas above Spec.MaxReplicas")
    });

    // A missing target.
    apply(
        &lab,
        ctx,
        "ghost.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}\n  minReplicas: 1\n  maxReplicas: 3\n",
    );
    lab.wait_for("FailedGetScale", WAIT, || {
        let hpa = json(&lab, ctx, &["get", "hpa", "ghost"]);
        let c = condition(&hpa, "AbleToScale");
        c["status"] == "False"
            && c["reason"] == "FailedGetScale"
            && c["message"]
                == "the HPA controller was unable to get the target's current scale: deployments.apps \"ghost\" not found"
    });
}
