//! Defaulting: the values kube-apiserver fills in when a client leaves them out (the
//! `SetDefaults_*` functions of each API group, plus what the built-in admission plugins add to
//! pods: the service account and its token volume, the default tolerations, the priority).
//!
//! Everything here works on the JSON object after it passed the typed decode check in
//! [`super::typed`], so a field either is absent, null or has its declared JSON type; still,
//! nothing here panics on an unexpected shape — such a field is left alone.

use serde_json::{Map, Value, json};

use super::resources::Resource;

/// The object map at `v[key]`, created when absent or null; None when it holds something else.
fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.is_object().then_some(slot)
}

/// Sets `v[key]` to `value` unless it is present (and not null).
fn default(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Each element of the array at `v[key]`, when it is one.
fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Fills the defaults of an incoming object of type `r` (create and update alike).
pub fn apply(r: &Resource, obj: &mut Value) {
    match (r.group, r.name) {
        ("", "pods") => {
            if let Some(spec) = child(obj, "spec") {
                pod_spec(spec);
                requests_from_limits(spec);
            }
        }
        ("", "podtemplates") => {
            if let Some(t) = child(obj, "template") {
                pod_template(t);
            }
        }
        ("", "replicationcontrollers") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "minReadySeconds", json!(0));
                if let Some(t) = child(spec, "template") {
                    pod_template(t);
                }
            }
        }
        ("", "services") => {
            if let Some(spec) = child(obj, "spec") {
                service_spec(spec);
            }
            if let Some(status) = child(obj, "status") {
                default(status, "loadBalancer", json!({}));
            }
        }
        ("", "namespaces") => {
            // kube-apiserver labels every namespace with its own name.
            let name = obj["metadata"]["name"].clone();
            if let Some(meta) = child(obj, "metadata")
                && let Some(labels) = child(meta, "labels")
            {
                labels["kubernetes.io/metadata.name"] = name;
            }
        }
        ("", "secrets") => default(obj, "type", json!("Opaque")),
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                if let Some(strategy) = child(spec, "strategy") {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate"
                        && let Some(ru) = child(strategy, "rollingUpdate")
                    {
                        default(ru, "maxUnavailable", json!("25%"));
                        default(ru, "maxSurge", json!("25%"));
                    }
                }
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(t) = child(spec, "template") {
                    pod_template(t);
                }
            }
        }
        ("apps", "replicasets") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                if let Some(t) = child(spec, "template") {
                    pod_template(t);
                }
            }
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                if let Some(us) = child(spec, "updateStrategy") {
                    default(us, "type", json!("RollingUpdate"));
                    if us["type"] == "RollingUpdate"
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        default(ru, "partition", json!(0));
                    }
                }
                default(spec, "revisionHistoryLimit", json!(10));
                if let Some(p) = child(spec, "persistentVolumeClaimRetentionPolicy") {
                    default(p, "whenDeleted", json!("Retain"));
                    default(p, "whenScaled", json!("Retain"));
                }
                if let Some(t) = child(spec, "template") {
                    pod_template(t);
                }
                for claim in each(spec, "volumeClaimTemplates") {
                    if let Some(s) = child(claim, "spec") {
                        default(s, "volumeMode", json!("Filesystem"));
                    }
                    default(claim, "status", json!({"phase": "Pending"}));
                }
            }
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = child(obj, "spec") {
                if let Some(us) = child(spec, "updateStrategy") {
                    default(us, "type", json!("RollingUpdate"));
                    if us["type"] == "RollingUpdate"
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        default(ru, "maxUnavailable", json!(1));
                        default(ru, "maxSurge", json!(0));
                    }
                }
                default(spec, "revisionHistoryLimit", json!(10));
                if let Some(t) = child(spec, "template") {
                    pod_template(t);
                }
            }
        }
        ("batch", "jobs") => {
            if let Some(spec) = child(obj, "spec") {
                job_spec(spec);
            }
        }
        ("batch", "cronjobs") => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = child(spec, "jobTemplate") {
                    ensure_template_meta(jt);
                    if let Some(js) = child(jt, "spec") {
                        job_spec(js);
                    }
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            for subject in each(obj, "subjects") {
                if subject["kind"] == "User" || subject["kind"] == "Group" {
                    default(subject, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => super::crd::defaults(obj),
        ("scheduling.k8s.io", "priorityclasses") => {
            default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("networking.k8s.io", "networkpolicies") => {
            if let Some(spec) = child(obj, "spec") {
                if spec.get("policyTypes").is_none_or(Value::is_null) {
                    let mut types = vec![json!("Ingress")];
                    if spec.get("egress").is_some_and(|e| !e.is_null()) {
                        types.push(json!("Egress"));
                    }
                    spec["policyTypes"] = Value::Array(types);
                }
                for rule in each(spec, "ingress") {
                    for port in each(rule, "ports") {
                        default(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
        _ => {}
    }
}

/// A job's spec, also inside a CronJob's jobTemplate.
fn job_spec(spec: &mut Value) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(t) = child(spec, "template") {
        pod_template(t);
    }
}

/// `metadata.creationTimestamp: null` as the real server writes it in templates.
fn ensure_template_meta(t: &mut Value) {
    if let Some(meta) = child(t, "metadata").and_then(Value::as_object_mut) {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
}

fn pod_template(t: &mut Value) {
    ensure_template_meta(t);
    if let Some(spec) = child(t, "spec") {
        pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and everything below it (containers, volumes, probes).
pub fn pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    if let Some(name) = spec.get("serviceAccountName").cloned()
        && name.is_string()
    {
        default(spec, "serviceAccount", name);
    }
    for c in each(spec, "containers") {
        container(c);
    }
    for c in each(spec, "initContainers") {
        container(c);
    }
    for c in each(spec, "ephemeralContainers") {
        container(c);
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

/// A pod's containers that state limits but not requests request their limits (pods only,
/// not templates: the real `SetDefaults_Pod`).
fn requests_from_limits(spec: &mut Value) {
    for field in ["containers", "initContainers"] {
        for c in each(spec, field) {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if !c["resources"]["requests"].is_object() {
                c["resources"]["requests"] = json!({});
            }
            if let Some(requests) = c["resources"]["requests"].as_object_mut() {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    default(c, "imagePullPolicy", json!(pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in each(c, "ports") {
        default(p, "protocol", json!("TCP"));
    }
    for e in each(c, "env") {
        if let Some(from) = e.get_mut("valueFrom")
            && let Some(field_ref) = from.get_mut("fieldRef")
        {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").filter(|h| h.is_object()) {
                default(h, "scheme", json!("HTTP"));
                default(h, "path", json!("/"));
            }
        }
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` otherwise (a digest counts as a
/// tag).
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn volume(v: &mut Value) {
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            default(s, "defaultMode", json!(420));
        }
    }
    if let Some(e) = v.get_mut("emptyDir")
        && e.is_null()
    {
        *e = json!({});
    }
}

/// `SetDefaults_Service`: type, session affinity, ports' protocol and targetPort, traffic
/// policies and IP families. The cluster IP and node ports are allocated by the server.
fn service_spec(spec: &mut Value) {
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    for p in each(spec, "ports") {
        default(p, "protocol", json!("TCP"));
        if p.get("targetPort").is_none_or(Value::is_null) {
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            if !port.is_null() {
                p["targetPort"] = port;
            }
        }
    }
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn pods_and_workloads_get_the_real_defaults() {
        let pods = find("", "v1", "pods").unwrap();
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": 80}}}]}});
        apply(pods, &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");

        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
        apply(deploy, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert!(d["spec"]["template"]["metadata"]["creationTimestamp"].is_null());
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );

        let jobs = find("batch", "v1", "jobs").unwrap();
        let mut j = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply(jobs, &mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);

        // A field of the wrong shape is left alone, never a panic.
        let mut odd = json!({"spec": "nope"});
        apply(deploy, &mut odd);
        assert_eq!(odd["spec"], "nope");
    }

    #[test]
    fn services_and_pull_policies() {
        let svc = find("", "v1", "services").unwrap();
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply(svc, &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(pull_policy("localhost:5000/nginx:1"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }
}
