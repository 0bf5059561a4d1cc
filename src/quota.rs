//! Resource quota accounting: how much of a namespace's ResourceQuota one object uses.
//!
//! Two components charge quota and must agree to the unit: the API server's ResourceQuota
//! admission plugin (which refuses a create that would go over `hard` and adds the object's
//! usage to the quota's `status.used` before the object is stored) and the controller-manager's
//! resource quota controller (which recomputes `status.used` from the objects that exist, e.g.
//! after deletions). Both use this module, Kubernetes' quota evaluators:
//!
//! - pods: `pods`, `count/pods`, `cpu`/`requests.cpu`, `memory`/`requests.memory`,
//!   `limits.cpu`, `limits.memory`, ephemeral storage and hugepages (pods in a terminal phase,
//!   or past their deletion grace period, use nothing but `count/pods`); pods alone match quota
//!   scopes (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass`,
//!   `CrossNamespacePodAffinity`);
//! - services: `services`, `count/services`, `services.nodeports`, `services.loadbalancers`;
//! - persistent volume claims: `persistentvolumeclaims`, `requests.storage`;
//! - everything else: the object count `count/<resource>.<group>` (and the old names
//!   `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`).
//!
//! Objects are JSON (`serde_json::Value`) as the API server stores them; quantities are summed
//! exactly in nano-units and printed back as Kubernetes prints them (`500m`, `1`, `128Mi`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::component_base::quantity::{self, Format, Quantity};

const NANO: i128 = 1_000_000_000;

/// A quantity in a resource list: its exact value and the format it prints in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub nanos: i128,
    pub format: Format,
}

impl Amount {
    pub fn parse(s: &str) -> Option<Amount> {
        let q = Quantity::parse(s).ok()?;
        Some(Amount {
            nanos: q.nanos(),
            format: Format::of(s),
        })
    }

    /// A whole number of objects.
    pub fn count(n: i64) -> Amount {
        Amount {
            nanos: i128::from(n) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// The sum; a zero takes the other's format (apimachinery's `Quantity.Add`).
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quantity::format_nanos(self.nanos, self.format))
    }
}

/// Resource name → amount (`corev1.ResourceList`), sorted by name.
pub type ResourceList = BTreeMap<String, Amount>;

/// A resource list from its JSON form (`{"pods": "2", "requests.cpu": "500m"}`); malformed
/// quantities are left out.
pub fn parse_list(v: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    for (k, v) in v.as_object().into_iter().flatten() {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if let Some(a) = Amount::parse(&s) {
            out.insert(k.clone(), a);
        }
    }
    out
}

/// The JSON form, every quantity canonical.
pub fn list_json(l: &ResourceList) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect(),
    )
}

/// `a + b`, key by key.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = match out.get(k) {
            Some(have) => have.plus(*v),
            None => *v,
        };
        out.insert(k.clone(), sum);
    }
    out
}

/// The larger of the two, key by key.
fn max(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        match out.get(k) {
            Some(have) if have.nanos >= v.nanos => {}
            _ => {
                out.insert(k.clone(), *v);
            }
        }
    }
    out
}

/// Only the entries named in `names`.
pub fn mask<'a>(l: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    let names: BTreeSet<&String> = names.into_iter().collect();
    l.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Whether two lists hold the same values (formats aside).
pub fn equal(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| w.nanos == v.nanos))
}

/// `name=value,name=value`, sorted: how quota errors list resources.
pub fn pretty(l: &ResourceList) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `count/<resource>` for the core group, `count/<resource>.<group>` otherwise.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// The names some core types were counted by before `count/…` existed.
fn legacy_count_name(group: &str, resource: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match resource {
        "configmaps" => "configmaps",
        "secrets" => "secrets",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        _ => return None,
    })
}

const POD_RESOURCES: &[&str] = &[
    "pods",
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// Names a pod must state for each container when a quota constrains them.
const POD_VALIDATION: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const SERVICE_RESOURCES: &[&str] = &[
    "services",
    "count/services",
    "services.nodeports",
    "services.loadbalancers",
];

const PVC_RESOURCES: &[&str] = &[
    "persistentvolumeclaims",
    "count/persistentvolumeclaims",
    "requests.storage",
];

fn is_pods(group: &str, resource: &str) -> bool {
    group.is_empty() && resource == "pods"
}

/// Of the quota's resource names, those the objects of this type use (`MatchingResources`).
pub fn matching_resources<'a>(
    group: &str,
    resource: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let count = object_count_name(group, resource);
    let legacy = legacy_count_name(group, resource);
    names
        .into_iter()
        .filter(|n| match (group, resource) {
            ("", "pods") => {
                POD_RESOURCES.contains(&n.as_str())
                    || n.starts_with("hugepages-")
                    || n.starts_with("requests.hugepages-")
                    || n.starts_with("limits.hugepages-")
            }
            ("", "services") => SERVICE_RESOURCES.contains(&n.as_str()),
            ("", "persistentvolumeclaims") => PVC_RESOURCES.contains(&n.as_str()),
            _ => **n == count || legacy == Some(n.as_str()),
        })
        .cloned()
        .collect()
}

/// What one object uses (`Evaluator.Usage`). `now` (Unix seconds) decides whether a pod being
/// deleted is past its grace period.
pub fn usage(group: &str, resource: &str, obj: &Value, now: i64) -> ResourceList {
    match (group, resource) {
        ("", "pods") => pod_usage(obj, now),
        ("", "services") => service_usage(obj),
        ("", "persistentvolumeclaims") => pvc_usage(obj),
        _ => {
            let mut out = ResourceList::new();
            out.insert(object_count_name(group, resource), Amount::count(1));
            if let Some(l) = legacy_count_name(group, resource) {
                out.insert(l.to_string(), Amount::count(1));
            }
            out
        }
    }
}

/// Whether a pod still uses compute quota: not Succeeded or Failed, and not past the end of
/// its deletion grace period (`QuotaV1Pod`).
pub fn pod_is_charged(pod: &Value, now: i64) -> bool {
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod["metadata"]["deletionTimestamp"].as_str(),
        pod["metadata"]["deletionGracePeriodSeconds"].as_i64(),
    ) && let Some(at) = parse_rfc3339(ts)
        && now > at.saturating_add(grace)
    {
        return false;
    }
    true
}

fn parse_rfc3339(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    pod["spec"][field].as_array().into_iter().flatten()
}

fn pod_usage(pod: &Value, now: i64) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/pods".into(), Amount::count(1));
    if !pod_is_charged(pod, now) {
        return out;
    }
    let overhead = parse_list(&pod["spec"]["overhead"]);
    let requests = add(&pod_resources(pod, "requests"), &overhead);
    let limits = add(&pod_resources(pod, "limits"), &overhead);
    add(&out, &compute_usage(&requests, &limits))
}

/// A pod's effective `requests` or `limits` (component-helpers' `PodRequests` / `PodLimits`,
/// as the scheduler's `pod_requests`): the containers' sum; init containers run one at a time
/// before them, each beside the sidecars (`restartPolicy: Always` init containers) started so
/// far, which keep running and so add to the sum; the larger of the two counts.
fn pod_resources(pod: &Value, which: &str) -> ResourceList {
    let mut total = ResourceList::new();
    for c in containers(pod, "containers") {
        total = add(&total, &parse_list(&c["resources"][which]));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in containers(pod, "initContainers") {
        let own = parse_list(&c["resources"][which]);
        let running = if c["restartPolicy"] == "Always" {
            total = add(&total, &own);
            sidecars = add(&sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        init_max = max(&init_max, &running);
    }
    max(&total, &init_max)
}

/// A pod's (or one container's) compute usage from its requests and limits
/// (`podComputeUsageHelper`).
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Amount::count(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(v) = requests.get(r) {
            out.insert(r.to_string(), *v);
            out.insert(format!("requests.{r}"), *v);
        }
        if let Some(v) = limits.get(r) {
            out.insert(format!("limits.{r}"), *v);
        }
    }
    for (r, v) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), *v);
            out.insert(format!("requests.{r}"), *v);
        }
    }
    out
}

fn service_usage(svc: &Value) -> ResourceList {
    let ports = svc["spec"]["ports"].as_array().map_or(0, Vec::len) as i64;
    let mut out = ResourceList::new();
    out.insert("count/services".into(), Amount::count(1));
    out.insert("services".into(), Amount::count(1));
    out.insert("services.loadbalancers".into(), Amount::count(0));
    out.insert("services.nodeports".into(), Amount::count(0));
    match svc["spec"]["type"].as_str() {
        Some("NodePort") => {
            out.insert("services.nodeports".into(), Amount::count(ports));
        }
        Some("LoadBalancer") => {
            let node_ports = if svc["spec"]["allocateLoadBalancerNodePorts"] == json!(false) {
                0
            } else {
                ports
            };
            out.insert("services.nodeports".into(), Amount::count(node_ports));
            out.insert("services.loadbalancers".into(), Amount::count(1));
        }
        _ => {}
    }
    out
}

fn pvc_usage(pvc: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/persistentvolumeclaims".into(), Amount::count(1));
    out.insert("persistentvolumeclaims".into(), Amount::count(1));
    if let Some(s) = pvc["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(Amount::parse)
    {
        out.insert("requests.storage".into(), s);
    }
    out
}

/// A quota's scopes as selector requirements: each of `spec.scopes` (operator `Exists`) and
/// the expressions of `spec.scopeSelector`.
pub fn scope_selectors(quota: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| json!({"scopeName": s, "operator": "Exists"}))
        .collect();
    out.extend(
        quota["spec"]["scopeSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    out
}

/// Whether an object is in a quota scope. Only pods are: a scoped quota counts nothing else.
pub fn scope_matches(group: &str, resource: &str, selector: &Value, obj: &Value) -> bool {
    if !is_pods(group, resource) {
        return false;
    }
    let spec = &obj["spec"];
    match selector["scopeName"].as_str().unwrap_or("") {
        "Terminating" => is_terminating(obj),
        "NotTerminating" => !is_terminating(obj),
        "BestEffort" => is_best_effort(obj),
        "NotBestEffort" => !is_best_effort(obj),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().unwrap_or("");
            let values: Vec<&str> = selector["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match selector["operator"].as_str().unwrap_or("") {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => !class.is_empty() && values.contains(&class),
                "NotIn" => class.is_empty() || !values.contains(&class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(spec),
        _ => false,
    }
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|d| d >= 0)
}

/// BestEffort: no container or init container requests or limits cpu or memory.
fn is_best_effort(pod: &Value) -> bool {
    if let Some(q) = pod["status"]["qosClass"].as_str() {
        return q == "BestEffort";
    }
    containers(pod, "containers")
        .chain(containers(pod, "initContainers"))
        .all(|c| {
            ["requests", "limits"].iter().all(|k| {
                let l = &c["resources"][*k];
                l.get("cpu").is_none() && l.get("memory").is_none()
            })
        })
}

fn uses_cross_namespace_affinity(spec: &Value) -> bool {
    let cross = |term: &Value| {
        term["namespaces"].as_array().is_some_and(|n| !n.is_empty())
            || !term["namespaceSelector"].is_null()
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|a| {
        let a = &spec["affinity"][*a];
        a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .any(cross)
            || a["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| cross(&w["podAffinityTerm"]))
    })
}

/// Whether a quota with these hard resources and scopes covers the object (`Matches`): it
/// limits at least one resource the type uses, and the object is in every scope.
pub fn quota_matches(
    group: &str,
    resource: &str,
    hard: &ResourceList,
    scopes: &[Value],
    obj: &Value,
) -> bool {
    !matching_resources(group, resource, hard.keys()).is_empty()
        && scopes
            .iter()
            .all(|s| scope_matches(group, resource, s, obj))
}

/// Checks that the object states what the quota must count (`Constraints`): with `cpu` or
/// `memory` under quota, every container of a pod must request (or limit) it. The error is
/// the real one: `must specify limits.cpu for: c; limits.memory for: c`.
pub fn constraints(
    group: &str,
    resource: &str,
    required: &[String],
    obj: &Value,
) -> Result<(), String> {
    if is_pods(group, resource) {
        let required: BTreeSet<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|r| POD_VALIDATION.contains(r))
            .collect();
        let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for c in containers(obj, "containers").chain(containers(obj, "initContainers")) {
            let used = compute_usage(
                &parse_list(&c["resources"]["requests"]),
                &parse_list(&c["resources"]["limits"]),
            );
            for r in &required {
                if !used.contains_key(*r) {
                    missing
                        .entry(r)
                        .or_default()
                        .insert(c["name"].as_str().unwrap_or(""));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|(r, cs)| {
                format!(
                    "{r} for: {}",
                    cs.iter().copied().collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        return Err(format!("must specify {}", parts.join("; ")));
    }
    let used = usage(group, resource, obj, 0);
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !used.contains_key(*r))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("must specify {}", missing.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &ResourceList) -> Vec<(&str, String)> {
        l.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect()
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}, "status": {"phase": "Pending"}})
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
        let mut p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}},
        ]));
        p["spec"]["initContainers"] =
            json!([{"name": "i", "resources": {"requests": {"cpu": "2"}}}]);
        let u = usage("", "pods", &p, 0);
        assert_eq!(
            names(&u),
            vec![
                ("count/pods", "1".into()),
                ("cpu", "2".into()),
                ("limits.cpu", "1".into()),
                ("limits.memory", "256Mi".into()),
                ("memory", "128Mi".into()),
                ("pods", "1".into()),
                ("requests.cpu", "2".into()),
                ("requests.memory", "128Mi".into()),
            ]
        );
    }

    #[test]
    fn pod_usage_counts_sidecars_beside_the_containers() {
        // A sidecar (restartable init container) keeps running: it adds to the containers and
        // to every init container that starts after it (the real PodRequests / PodLimits).
        let mut p = pod(json!([
            {"name": "app", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "1"}}},
        ]));
        p["spec"]["initContainers"] = json!([
            {"name": "log", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}},
            {"name": "migrate", "resources": {"requests": {"cpu": "500m"}}},
        ]);
        let u = usage("", "pods", &p, 0);
        assert_eq!(u["requests.cpu"].to_string(), "600m"); // migrate 500m + the sidecar's 100m
        assert_eq!(u["limits.cpu"].to_string(), "1100m"); // app 1 + the sidecar's 100m
        p["spec"]["initContainers"][1]["resources"]["requests"]["cpu"] = json!("100m");
        let u = usage("", "pods", &p, 0);
        assert_eq!(u["requests.cpu"].to_string(), "300m"); // app 200m + the sidecar's 100m
    }

    #[test]
    fn finished_pods_count_only_as_objects() {
        let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        p["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            names(&usage("", "pods", &p, 0)),
            vec![("count/pods", "1".into())]
        );
        p["status"]["phase"] = json!("Running");
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let at = parse_rfc3339("2024-01-01T00:00:00Z").unwrap_or(0);
        assert!(usage("", "pods", &p, at + 10).contains_key("pods"));
        assert!(!usage("", "pods", &p, at + 31).contains_key("pods"));
    }

    #[test]
    fn services_count_node_ports_and_load_balancers() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc, 0);
        assert_eq!(u["services.nodeports"].to_string(), "2");
        assert_eq!(u["services.loadbalancers"].to_string(), "0");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        assert_eq!(
            usage("", "services", &lb, 0)["services.loadbalancers"].to_string(),
            "1"
        );
    }

    #[test]
    fn object_counts() {
        let u = usage("apps", "deployments", &json!({}), 0);
        assert_eq!(names(&u), vec![("count/deployments.apps", "1".into())]);
        let u = usage("", "configmaps", &json!({}), 0);
        assert_eq!(
            names(&u),
            vec![("configmaps", "1".into()), ("count/configmaps", "1".into())]
        );
        let hard = parse_list(&json!({"count/jobs.batch": "1", "pods": "2"}));
        assert_eq!(
            matching_resources("batch", "jobs", hard.keys()),
            vec!["count/jobs.batch"]
        );
        assert_eq!(matching_resources("", "pods", hard.keys()), vec!["pods"]);
    }

    #[test]
    fn pods_without_limits_are_refused_by_name() {
        let p = pod(json!([{"name": "c"}, {"name": "d", "resources": {"limits": {"cpu": "1"}}}]));
        let required = vec![
            "limits.cpu".to_string(),
            "limits.memory".to_string(),
            "pods".to_string(),
        ];
        assert_eq!(
            constraints("", "pods", &required, &p),
            Err("must specify limits.cpu for: c; limits.memory for: c,d".to_string())
        );
    }

    #[test]
    fn scopes() {
        let best = pod(json!([{"name": "c"}]));
        let mut burst = pod(json!([{"name": "c", "resources": {"requests": {"cpu": "1"}}}]));
        let be = json!({"scopeName": "BestEffort", "operator": "Exists"});
        assert!(scope_matches("", "pods", &be, &best));
        assert!(!scope_matches("", "pods", &be, &burst));
        let term = json!({"scopeName": "Terminating", "operator": "Exists"});
        assert!(!scope_matches("", "pods", &term, &burst));
        burst["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(scope_matches("", "pods", &term, &burst));
        assert!(!scope_matches("", "services", &term, &json!({})));
        let pc = json!({"scopeName": "PriorityClass", "operator": "In", "values": ["high"]});
        burst["spec"]["priorityClassName"] = json!("high");
        assert!(scope_matches("", "pods", &pc, &burst));
        let q = json!({"spec": {"scopes": ["NotTerminating"], "scopeSelector": {"matchExpressions": [pc]}}});
        assert_eq!(scope_selectors(&q).len(), 2);
    }

    #[test]
    fn sums_keep_the_first_non_zero_format() {
        let a = parse_list(&json!({"memory": "0"}));
        let b = parse_list(&json!({"memory": "128Mi"}));
        let s = add(&add(&a, &b), &b);
        assert_eq!(s["memory"].to_string(), "256Mi");
        assert_eq!(
            pretty(&parse_list(&json!({"pods": "2", "cpu": "1500m"}))),
            "cpu=1500m,pods=2"
        );
    }
}
