//! Server-side printing: the `Table` kubectl asks for (`Accept: application/json;as=Table;…`), with
//! the real apiserver's columns for each type (kube's `pkg/printers/internalversion`).

use serde_json::{Value, json};

use super::resources::Resource;
use super::selector::selector_text;

/// A column: name, type, format, description, priority (`-o wide` only when > 0).
type Column = (&'static str, &'static str, &'static str, &'static str, u8);

const NAME: Column = (
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    0,
);
const AGE: Column = (
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
    0,
);

fn columns(resource: &str) -> Vec<Column> {
    match resource {
        "namespaces" => vec![
            NAME,
            ("Status", "string", "", "The status of the namespace", 0),
            AGE,
        ],
        "secrets" => vec![
            NAME,
            ("Type", "string", "", "The type of secret", 0),
            ("Data", "string", "", "Data contains the secret data.", 0),
            AGE,
        ],
        "serviceaccounts" => vec![
            NAME,
            (
                "Secrets",
                "string",
                "",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                0,
            ),
            AGE,
        ],
        "events" => vec![
            (
                "Last Seen",
                "string",
                "",
                "Time when this Event was last observed.",
                0,
            ),
            (
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            (
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            (
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            (
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            (
                "Source",
                "string",
                "",
                "The component reporting this event. Should be a short machine understandable string.",
                1,
            ),
            (
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                1,
            ),
            (
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            (NAME.0, NAME.1, NAME.2, NAME.3, 1),
        ],
        "configmaps" => vec![
            NAME,
            (
                "Data",
                "string",
                "",
                "Data contains the configuration data.",
                0,
            ),
            AGE,
        ],
        other => match more_columns(other) {
            Some(cols) => cols,
            None => vec![
                NAME,
                (
                    "Created At",
                    "date",
                    "",
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                    0,
                ),
            ],
        },
    }
}

/// A column with a short description.
const fn col(name: &'static str, ty: &'static str, priority: u8) -> Column {
    (name, ty, "", "", priority)
}

fn more_columns(resource: &str) -> Option<Vec<Column>> {
    let s = "string";
    let i = "integer";
    let wide_containers = [
        col("Containers", s, 1),
        col("Images", s, 1),
        col("Selector", s, 1),
    ];
    Some(match resource {
        "pods" => vec![
            NAME,
            col("Ready", s, 0),
            col("Status", s, 0),
            col("Restarts", s, 0),
            AGE,
            col("IP", s, 1),
            col("Node", s, 1),
            col("Nominated Node", s, 1),
            col("Readiness Gates", s, 1),
        ],
        "deployments" => [
            vec![
                NAME,
                col("Ready", s, 0),
                col("Up-to-date", i, 0),
                col("Available", i, 0),
                AGE,
            ],
            wide_containers.to_vec(),
        ]
        .concat(),
        "replicasets" | "replicationcontrollers" => [
            vec![
                NAME,
                col("Desired", i, 0),
                col("Current", i, 0),
                col("Ready", i, 0),
                AGE,
            ],
            wide_containers.to_vec(),
        ]
        .concat(),
        "statefulsets" => vec![
            NAME,
            col("Ready", s, 0),
            AGE,
            col("Containers", s, 1),
            col("Images", s, 1),
        ],
        "daemonsets" => [
            vec![
                NAME,
                col("Desired", i, 0),
                col("Current", i, 0),
                col("Ready", i, 0),
                col("Up-to-date", i, 0),
                col("Available", i, 0),
                col("Node Selector", s, 0),
                AGE,
            ],
            wide_containers.to_vec(),
        ]
        .concat(),
        "jobs" => [
            vec![
                NAME,
                col("Status", s, 0),
                col("Completions", s, 0),
                col("Duration", s, 0),
                AGE,
            ],
            wide_containers.to_vec(),
        ]
        .concat(),
        "cronjobs" => [
            vec![
                NAME,
                col("Schedule", s, 0),
                col("Timezone", s, 0),
                col("Suspend", "boolean", 0),
                col("Active", i, 0),
                col("Last Schedule", s, 0),
                AGE,
            ],
            wide_containers.to_vec(),
        ]
        .concat(),
        "services" => vec![
            NAME,
            col("Type", s, 0),
            col("Cluster-IP", s, 0),
            col("External-IP", s, 0),
            col("Port(s)", s, 0),
            AGE,
            col("Selector", s, 1),
        ],
        "endpoints" => vec![NAME, col("Endpoints", s, 0), AGE],
        "endpointslices" => vec![
            NAME,
            col("AddressType", s, 0),
            col("Ports", s, 0),
            col("Endpoints", s, 0),
            AGE,
        ],
        "nodes" => vec![
            NAME,
            col("Status", s, 0),
            col("Roles", s, 0),
            AGE,
            col("Version", s, 0),
            col("Internal-IP", s, 1),
            col("External-IP", s, 1),
            col("OS-Image", s, 1),
            col("Kernel-Version", s, 1),
            col("Container-Runtime", s, 1),
        ],
        "leases" => vec![NAME, col("Holder", s, 0), AGE],
        "priorityclasses" => vec![
            NAME,
            col("Value", i, 0),
            col("Global-Default", "boolean", 0),
            AGE,
            col("PreemptionPolicy", s, 0),
        ],
        "roles" | "clusterroles" | "limitranges" | "podtemplates" => {
            vec![NAME, col("Created At", "date", 0)]
        }
        "rolebindings" | "clusterrolebindings" => vec![
            NAME,
            col("Role", s, 0),
            AGE,
            col("Users", s, 1),
            col("Groups", s, 1),
            col("ServiceAccounts", s, 1),
        ],
        "persistentvolumeclaims" => vec![
            NAME,
            col("Status", s, 0),
            col("Volume", s, 0),
            col("Capacity", s, 0),
            col("Access Modes", s, 0),
            col("StorageClass", s, 0),
            col("VolumeAttributesClass", s, 0),
            AGE,
            col("VolumeMode", s, 1),
        ],
        "persistentvolumes" => vec![
            NAME,
            col("Capacity", s, 0),
            col("Access Modes", s, 0),
            col("Reclaim Policy", s, 0),
            col("Status", s, 0),
            col("Claim", s, 0),
            col("StorageClass", s, 0),
            col("VolumeAttributesClass", s, 0),
            col("Reason", s, 0),
            AGE,
            col("VolumeMode", s, 1),
        ],
        "storageclasses" => vec![
            NAME,
            col("Provisioner", s, 0),
            col("ReclaimPolicy", s, 0),
            col("VolumeBindingMode", s, 0),
            col("AllowVolumeExpansion", s, 0),
            AGE,
        ],
        "ingresses" => vec![
            NAME,
            col("Class", s, 0),
            col("Hosts", s, 0),
            col("Address", s, 0),
            col("Ports", s, 0),
            AGE,
        ],
        "ingressclasses" => vec![NAME, col("Controller", s, 0), col("Parameters", s, 0), AGE],
        "networkpolicies" => vec![NAME, col("Pod-Selector", s, 0), AGE],
        "poddisruptionbudgets" => vec![
            NAME,
            col("Min Available", s, 0),
            col("Max Unavailable", s, 0),
            col("Allowed Disruptions", i, 0),
            AGE,
        ],
        "horizontalpodautoscalers" => vec![
            NAME,
            col("Reference", s, 0),
            col("Targets", s, 0),
            col("MinPods", s, 0),
            col("MaxPods", i, 0),
            col("Replicas", i, 0),
            AGE,
        ],
        "resourcequotas" => vec![NAME, AGE, col("Request", s, 0), col("Limit", s, 0)],
        "controllerrevisions" => vec![NAME, col("Controller", s, 0), col("Revision", i, 0), AGE],
        _ => return None,
    })
}

fn cells(resource: &str, obj: &Value, now: i64) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    let created = json!(age(obj["metadata"]["creationTimestamp"].as_str(), now));
    match resource {
        "namespaces" => vec![name, obj["status"]["phase"].clone(), created],
        "secrets" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len());
            vec![name, obj["type"].clone(), json!(n), created]
        }
        "serviceaccounts" => {
            let n = obj["secrets"].as_array().map_or(0, |a| a.len());
            vec![name, json!(n), created]
        }
        "events" => {
            let last = obj["lastTimestamp"]
                .as_str()
                .or(obj["eventTime"].as_str())
                .or(obj["metadata"]["creationTimestamp"].as_str());
            let involved = &obj["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or("").to_lowercase(),
                involved["name"].as_str().unwrap_or("")
            );
            let source = obj["source"]["component"]
                .as_str()
                .or(obj["reportingComponent"].as_str())
                .unwrap_or("");
            vec![
                json!(age(last, now)),
                obj["type"].clone(),
                obj["reason"].clone(),
                json!(object),
                obj["message"].clone(),
                json!(source),
                json!(age(obj["firstTimestamp"].as_str().or(last), now)),
                json!(obj["count"].as_i64().unwrap_or(1)),
                name,
            ]
        }
        "configmaps" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), created]
        }
        other => more_cells(other, obj, now)
            .unwrap_or_else(|| vec![name, obj["metadata"]["creationTimestamp"].clone()]),
    }
}

/// `<none>` for an empty text, as kubectl prints missing values.
fn none_if_empty(s: String) -> Value {
    if s.is_empty() {
        json!("<none>")
    } else {
        json!(s)
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// Containers, Images, Selector of a workload's `-o wide`.
fn wide_workload(pod_spec: &Value, selector: String) -> [Value; 3] {
    let containers: Vec<&Value> = pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    [
        json!(names.join(",")),
        json!(images.join(",")),
        none_if_empty(selector),
    ]
}

/// The pod's STATUS column, as kubectl's printer works it out (reason, init progress,
/// waiting/terminated reasons, Terminating, NodeLost).
pub fn pod_status(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = status["reason"]
        .as_str()
        .or(status["phase"].as_str())
        .unwrap_or("")
        .to_string();
    let init_specs = pod["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    let mut initializing = false;
    for (i, c) in status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let state = &c["state"];
        if state["terminated"]["exitCode"] == 0 && state["terminated"].is_object() {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            format!("Init:{r}")
        } else if state["terminated"].is_object() {
            format!("Init:ExitCode:{}", int(&state["terminated"]["exitCode"]))
        } else if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_specs}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in status["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
        {
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                reason =
                    if let Some(sig) = state["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                        format!("Signal:{sig}")
                    } else {
                        format!("ExitCode:{}", int(&state["terminated"]["exitCode"]))
                    };
            } else if state["running"].is_object() && c["ready"] == true {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if status["reason"] == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn more_cells(resource: &str, obj: &Value, now: i64) -> Option<Vec<Value>> {
    let name = obj["metadata"]["name"].clone();
    let created = json!(age(obj["metadata"]["creationTimestamp"].as_str(), now));
    let spec = &obj["spec"];
    let status = &obj["status"];
    Some(match resource {
        "pods" => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses: Vec<&Value> = status["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            let ready = statuses
                .iter()
                .filter(|c| c["ready"] == true && c["state"]["running"].is_object())
                .count();
            let restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
            let last_restart = statuses
                .iter()
                .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
                .filter_map(parse_timestamp)
                .max();
            let restarts = match last_restart {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
                _ => restarts.to_string(),
            };
            let gates: Vec<&str> = spec["readinessGates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["conditionType"].as_str())
                .collect();
            let gates = if gates.is_empty() {
                "<none>".to_string()
            } else {
                let ok = gates
                    .iter()
                    .filter(|g| {
                        status["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == **g && c["status"] == "True")
                    })
                    .count();
                format!("{ok}/{}", gates.len())
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts),
                created,
                none_if_empty(status["podIP"].as_str().unwrap_or("").into()),
                none_if_empty(spec["nodeName"].as_str().unwrap_or("").into()),
                none_if_empty(status["nominatedNodeName"].as_str().unwrap_or("").into()),
                json!(gates),
            ]
        }
        "deployments" => {
            let w = wide_workload(&spec["template"]["spec"], selector_text(&spec["selector"]));
            [
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        int(&status["readyReplicas"]),
                        int(&spec["replicas"])
                    )),
                    json!(int(&status["updatedReplicas"])),
                    json!(int(&status["availableReplicas"])),
                    created,
                ],
                w.to_vec(),
            ]
            .concat()
        }
        "replicasets" | "replicationcontrollers" => {
            let sel = if resource == "replicasets" {
                selector_text(&spec["selector"])
            } else {
                spec["selector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let w = wide_workload(&spec["template"]["spec"], sel);
            [
                vec![
                    name,
                    json!(int(&spec["replicas"])),
                    json!(int(&status["replicas"])),
                    json!(int(&status["readyReplicas"])),
                    created,
                ],
                w.to_vec(),
            ]
            .concat()
        }
        "statefulsets" => {
            let w = wide_workload(&spec["template"]["spec"], String::new());
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                created,
                w[0].clone(),
                w[1].clone(),
            ]
        }
        "daemonsets" => {
            let w = wide_workload(&spec["template"]["spec"], selector_text(&spec["selector"]));
            let node_selector: Vec<String> = spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            [
                vec![
                    name,
                    json!(int(&status["desiredNumberScheduled"])),
                    json!(int(&status["currentNumberScheduled"])),
                    json!(int(&status["numberReady"])),
                    json!(int(&status["updatedNumberScheduled"])),
                    json!(int(&status["numberAvailable"])),
                    none_if_empty(node_selector.join(",")),
                    created,
                ],
                w.to_vec(),
            ]
            .concat()
        }
        "jobs" => {
            let w = wide_workload(&spec["template"]["spec"], selector_text(&spec["selector"]));
            let cond = |t: &str| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let state = if cond("Complete") {
                "Complete"
            } else if cond("Failed") {
                "Failed"
            } else if obj["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else if cond("FailureTarget") {
                "FailureTarget"
            } else if cond("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else if cond("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = match spec["completions"].as_i64() {
                Some(c) => format!("{}/{c}", int(&status["succeeded"])),
                None => {
                    let p = int(&spec["parallelism"]);
                    if p > 1 {
                        format!("{}/1 of {p}", int(&status["succeeded"]))
                    } else {
                        format!("{}/1", int(&status["succeeded"]))
                    }
                }
            };
            let start = status["startTime"].as_str().and_then(parse_timestamp);
            let end = status["completionTime"].as_str().and_then(parse_timestamp);
            let duration = match (start, end) {
                (Some(s), Some(e)) => human_duration(e - s),
                (Some(s), None) => human_duration(now - s),
                _ => String::new(),
            };
            [
                vec![
                    name,
                    json!(state),
                    json!(completions),
                    json!(duration),
                    created,
                ],
                w.to_vec(),
            ]
            .concat()
        }
        "cronjobs" => {
            let pod_spec = &spec["jobTemplate"]["spec"]["template"]["spec"];
            let w = wide_workload(
                pod_spec,
                selector_text(&spec["jobTemplate"]["spec"]["selector"]),
            );
            let last = status["lastScheduleTime"]
                .as_str()
                .map_or("<none>".to_string(), |t| age(Some(t), now));
            [
                vec![
                    name,
                    spec["schedule"].clone(),
                    none_if_empty(spec["timeZone"].as_str().unwrap_or("").into()),
                    json!(spec["suspend"].as_bool().unwrap_or(false)),
                    json!(status["active"].as_array().map_or(0, Vec::len)),
                    json!(last),
                    created,
                ],
                w.to_vec(),
            ]
            .concat()
        }
        "services" => {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(n) if n > 0 => format!("{}:{n}/{proto}", int(&p["port"])),
                        _ => format!("{}/{proto}", int(&p["port"])),
                    }
                })
                .collect();
            let mut external: Vec<String> =
                strs(&spec["externalIPs"]).map(str::to_string).collect();
            for ing in status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(x) = ing["ip"].as_str().or(ing["hostname"].as_str()) {
                    external.push(x.to_string());
                }
            }
            let external = match ty {
                "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
                "LoadBalancer" if external.is_empty() => "<pending>".into(),
                _ => external.join(","),
            };
            let selector: Vec<String> = spec["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            vec![
                name,
                json!(ty),
                none_if_empty(spec["clusterIP"].as_str().unwrap_or("").into()),
                none_if_empty(external),
                none_if_empty(ports.join(",")),
                created,
                none_if_empty(selector.join(",")),
            ]
        }
        "endpoints" => {
            let mut eps = Vec::new();
            for subset in obj["subsets"].as_array().into_iter().flatten() {
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = a["ip"].as_str().unwrap_or("");
                    match subset["ports"].as_array().filter(|p| !p.is_empty()) {
                        Some(ports) => {
                            for p in ports {
                                eps.push(format!("{ip}:{}", int(&p["port"])));
                            }
                        }
                        None => eps.push(ip.to_string()),
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, none_if_empty(shown), created]
        }
        "endpointslices" => {
            let ports: Vec<String> = obj["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| int(&p["port"]).to_string())
                .collect();
            let addrs: Vec<&str> = obj["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| strs(&e["addresses"]))
                .collect();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            vec![
                name,
                obj["addressType"].clone(),
                none_if_empty(ports.join(",")),
                none_if_empty(shown),
                created,
            ]
        }
        "nodes" => {
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut st = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if spec["unschedulable"] == true {
                st.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = obj["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .filter(|r| !r.is_empty())
                .collect();
            roles.sort();
            let addr = |t: &str| {
                status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let info = &status["nodeInfo"];
            vec![
                name,
                json!(st),
                none_if_empty(roles.join(",")),
                created,
                info["kubeletVersion"].clone(),
                none_if_empty(addr("InternalIP")),
                none_if_empty(addr("ExternalIP")),
                none_if_empty(info["osImage"].as_str().unwrap_or("").into()),
                none_if_empty(info["kernelVersion"].as_str().unwrap_or("").into()),
                none_if_empty(
                    info["containerRuntimeVersion"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                ),
            ]
        }
        "leases" => vec![
            name,
            none_if_empty(spec["holderIdentity"].as_str().unwrap_or("").into()),
            created,
        ],
        "priorityclasses" => vec![
            name,
            obj["value"].clone(),
            json!(obj["globalDefault"].as_bool().unwrap_or(false)),
            created,
            obj["preemptionPolicy"].clone(),
        ],
        "roles" | "clusterroles" | "limitranges" | "podtemplates" => {
            vec![name, obj["metadata"]["creationTimestamp"].clone()]
        }
        "rolebindings" | "clusterrolebindings" => {
            let subjects = |kind: &str| {
                obj["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| {
                        let n = s["name"].as_str().unwrap_or("");
                        match s["namespace"].as_str() {
                            Some(ns) if kind == "ServiceAccount" => format!("{ns}/{n}"),
                            _ => n.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    obj["roleRef"]["kind"].as_str().unwrap_or(""),
                    obj["roleRef"]["name"].as_str().unwrap_or("")
                )),
                created,
                json!(subjects("User")),
                json!(subjects("Group")),
                json!(subjects("ServiceAccount")),
            ]
        }
        "persistentvolumeclaims" => vec![
            name,
            status["phase"].clone(),
            json!(spec["volumeName"].as_str().unwrap_or("")),
            json!(status["capacity"]["storage"].as_str().unwrap_or("")),
            json!(access_modes(&status["accessModes"])),
            none_if_empty(spec["storageClassName"].as_str().unwrap_or("").into()),
            none_if_empty(
                spec["volumeAttributesClassName"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
            ),
            created,
            spec["volumeMode"].clone(),
        ],
        "persistentvolumes" => {
            let claim = &spec["claimRef"];
            let claim = if claim.is_object() {
                format!(
                    "{}/{}",
                    claim["namespace"].as_str().unwrap_or(""),
                    claim["name"].as_str().unwrap_or("")
                )
            } else {
                String::new()
            };
            vec![
                name,
                json!(spec["capacity"]["storage"].as_str().unwrap_or("")),
                json!(access_modes(&spec["accessModes"])),
                json!(spec["persistentVolumeReclaimPolicy"].as_str().unwrap_or("")),
                status["phase"].clone(),
                json!(claim),
                json!(spec["storageClassName"].as_str().unwrap_or("")),
                none_if_empty(
                    spec["volumeAttributesClassName"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                ),
                json!(status["reason"].as_str().unwrap_or("")),
                created,
                spec["volumeMode"].clone(),
            ]
        }
        "storageclasses" => {
            let default = obj["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true";
            let shown = if default {
                format!(
                    "{} (default)",
                    obj["metadata"]["name"].as_str().unwrap_or("")
                )
            } else {
                obj["metadata"]["name"].as_str().unwrap_or("").to_string()
            };
            vec![
                json!(shown),
                obj["provisioner"].clone(),
                json!(obj["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(obj["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                json!(obj["allowVolumeExpansion"].as_bool().unwrap_or(false)),
                created,
            ]
        }
        "ingresses" => {
            let hosts: Vec<&str> = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["host"].as_str())
                .collect();
            let addrs: Vec<&str> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect();
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                none_if_empty(spec["ingressClassName"].as_str().unwrap_or("").into()),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(ports),
                created,
            ]
        }
        "ingressclasses" => vec![
            name,
            spec["controller"].clone(),
            none_if_empty(spec["parameters"]["name"].as_str().unwrap_or("").into()),
            created,
        ],
        "networkpolicies" => {
            let sel = selector_text(&spec["podSelector"]);
            vec![
                name,
                json!(if sel.is_empty() {
                    "<none>".to_string()
                } else {
                    sel
                }),
                created,
            ]
        }
        "poddisruptionbudgets" => {
            let show = |v: &Value| match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => "N/A".into(),
            };
            vec![
                name,
                json!(show(&spec["minAvailable"])),
                json!(show(&spec["maxUnavailable"])),
                json!(int(&status["disruptionsAllowed"])),
                created,
            ]
        }
        "horizontalpodautoscalers" => {
            let target = &spec["scaleTargetRef"];
            let targets = hpa_metrics(spec, status);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    target["kind"].as_str().unwrap_or(""),
                    target["name"].as_str().unwrap_or("")
                )),
                json!(targets),
                json!(
                    spec["minReplicas"]
                        .as_i64()
                        .map_or("<unset>".to_string(), |m| m.to_string())
                ),
                json!(int(&spec["maxReplicas"])),
                json!(int(&status["currentReplicas"])),
                created,
            ]
        }
        "resourcequotas" => {
            // From status (what the quota controller has seen), as the real printer.
            let pairs = |used: &Value, hard: &Value, limits: bool| {
                hard.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        let mut pieces = k.split('.');
                        let first = pieces.next().unwrap_or("");
                        (first == "limits" && pieces.next().is_some()) == limits
                    })
                    .map(|(k, v)| {
                        format!(
                            "{k}: {}/{}",
                            used[k].as_str().unwrap_or("0"),
                            v.as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                created,
                json!(pairs(&status["used"], &status["hard"], false)),
                json!(pairs(&status["used"], &status["hard"], true)),
            ]
        }
        "controllerrevisions" => {
            let owner = obj["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|o| o.iter().find(|r| r["controller"] == true));
            let controller = owner.map_or("<none>".to_string(), |o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("").to_lowercase()
                        + "."
                        + o["apiVersion"]
                            .as_str()
                            .unwrap_or("")
                            .split('/')
                            .next()
                            .unwrap_or(""),
                    o["name"].as_str().unwrap_or("")
                )
            });
            vec![name, json!(controller), obj["revision"].clone(), created]
        }
        _ => return None,
    })
}

/// The TARGETS column (`formatHPAMetrics`): `cpu: <unknown>/50%` per metric, current values
/// from `status.currentMetrics`, at most two then `+ N more...`.
fn hpa_metrics(spec: &Value, status: &Value) -> String {
    let Some(specs) = spec["metrics"].as_array().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let statuses = status["currentMetrics"].as_array();
    let quantity = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = statuses.and_then(|s| s.get(i)).unwrap_or(&Value::Null);
            let unknown = || "<unknown>".to_string();
            match m["type"].as_str().unwrap_or("") {
                t @ ("Resource" | "ContainerResource") => {
                    let field = if t == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let (src, cur) = (&m[field], &st[field]["current"]);
                    let name = src["name"].as_str().unwrap_or("");
                    if !src["target"]["averageValue"].is_null() {
                        let now = if st[field].is_null() {
                            unknown()
                        } else {
                            quantity(&cur["averageValue"])
                        };
                        format!("{name}: {now}/{}", quantity(&src["target"]["averageValue"]))
                    } else {
                        let now = cur["averageUtilization"]
                            .as_i64()
                            .map_or_else(unknown, |u| format!("{u}%"));
                        let want = src["target"]["averageUtilization"]
                            .as_i64()
                            .map_or("<auto>".to_string(), |u| format!("{u}%"));
                        format!("{name}: {now}/{want}")
                    }
                }
                "Pods" => {
                    let now = if st["pods"].is_null() {
                        unknown()
                    } else {
                        quantity(&st["pods"]["current"]["averageValue"])
                    };
                    format!("{now}/{}", quantity(&m["pods"]["target"]["averageValue"]))
                }
                t @ ("Object" | "External") => {
                    let field = if t == "Object" { "object" } else { "external" };
                    let target = &m[field]["target"];
                    let (key, avg) = if target["averageValue"].is_null() {
                        ("value", "")
                    } else {
                        ("averageValue", " (avg)")
                    };
                    let now = if st[field].is_null() || st[field]["current"][key].is_null() {
                        unknown()
                    } else {
                        quantity(&st[field]["current"][key])
                    };
                    format!("{now}/{}{avg}", quantity(&target[key]))
                }
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

fn access_modes(modes: &Value) -> String {
    strs(modes)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The Table for `objects` (already in their served form).
pub fn table<T: std::borrow::Borrow<Value>>(
    resource: &Resource,
    objects: &[T],
    list_meta: Value,
    now: i64,
) -> Value {
    if let Some(custom) = resource.custom {
        return custom_table(custom, objects, list_meta, now);
    }
    let defs: Vec<Value> = columns(resource.name)
        .into_iter()
        .map(|(name, ty, format, description, priority)| {
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(std::borrow::Borrow::borrow)
        .map(|o: &Value| {
            json!({
                "cells": cells(resource.name, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// Object metadata without managedFields, for Table rows: kubectl reads names, namespaces,
/// labels and timestamps from them, never the field managers (and they are most of the bytes).
struct RowMetadata<'a>(&'a Value);

impl serde::Serialize for RowMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(m) = self.0.as_object() else {
            return self.0.serialize(ser);
        };
        let mut map = ser.serialize_map(None)?;
        for (k, v) in m.iter().filter(|(k, _)| *k != "managedFields") {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The Table of `objects`, serialized straight to bytes (lists of thousands of rows).
pub fn table_bytes(
    resource: &Resource,
    objects: &[&Value],
    list_meta: &Value,
    now: i64,
) -> Result<Vec<u8>, serde_json::Error> {
    if let Some(custom) = resource.custom {
        return serde_json::to_vec(&custom_table(custom, objects, list_meta.clone(), now));
    }
    let defs: Vec<Value> = columns(resource.name)
        .into_iter()
        .map(|(name, ty, format, description, priority)| {
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect();
    let mut out = Vec::with_capacity(1024 + objects.len() * 512);
    out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":");
    serde_json::to_writer(&mut out, list_meta)?;
    out.extend_from_slice(b",\"columnDefinitions\":");
    serde_json::to_writer(&mut out, &defs)?;
    out.extend_from_slice(b",\"rows\":[");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"cells\":");
        serde_json::to_writer(&mut out, &cells(resource.name, o, now))?;
        out.extend_from_slice(
            b",\"object\":{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":",
        );
        serde_json::to_writer(&mut out, &RowMetadata(&o["metadata"]))?;
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// A custom resource's Table: NAME, then the CRD's additionalPrinterColumns (NAME and AGE when
/// it has none).
fn custom_table<T: std::borrow::Borrow<Value>>(
    custom: &crate::apiserver::crd::CustomVersion,
    objects: &[T],
    list_meta: Value,
    now: i64,
) -> Value {
    use crate::apiserver::crd::json_path;
    let mut defs = vec![
        json!({"name": NAME.0, "type": NAME.1, "format": NAME.2, "description": NAME.3, "priority": 0}),
    ];
    if custom.columns.is_empty() {
        defs.push(json!({"name": AGE.0, "type": AGE.1, "format": AGE.2, "description": AGE.3, "priority": 0}));
    }
    for c in &custom.columns {
        defs.push(json!({"name": c.name, "type": c.column_type, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(std::borrow::Borrow::borrow)
        .map(|o: &Value| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            if custom.columns.is_empty() {
                cells.push(json!(age(o["metadata"]["creationTimestamp"].as_str(), now)));
            }
            for c in &custom.columns {
                let v = json_path(o, &c.json_path);
                cells.push(match (c.column_type.as_str(), &v) {
                    ("date", Value::String(t)) => json!(age(Some(t), now)),
                    (_, Value::Array(items)) => json!(items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(",")),
                    _ => v,
                });
            }
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-22T01:52:59Z`).
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    // Time (`…:59Z`) and MicroTime (`…:59.123456Z`, events' eventTime) alike.
    ts.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn age(ts: Option<&str>, now: i64) -> String {
    match ts.and_then(parse_timestamp) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// kube's `duration.HumanDuration`: 45s, 3m20s, 25m, 5h10m, 30h, 4d6h, 200d, 3y5d.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    let d = h / 24;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        let y = d / 365;
        if y < 8 && d % 365 != 0 {
            format!("{y}y{}d", d % 365)
        } else {
            format!("{y}y")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(25 * 60), "25m");
        assert_eq!(human_duration(5 * 3600 + 600), "5h10m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(4 * 86_400 + 6 * 3600), "4d6h");
        assert_eq!(parse_timestamp("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(
            parse_timestamp("2026-11-22T01:52:59Z").map(|t| t > 0),
            Some(true)
        );
        assert_eq!(parse_timestamp("garbage"), None);
        assert_eq!(parse_timestamp("1970-01-02T00:00:01.123456Z"), Some(86_401));
    }

    #[test]
    fn configmap_table() {
        let cm = find("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "1970-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}});
        let t = table(cm, &[obj], json!({"resourceVersion": "5"}), 30);
        assert_eq!(t["rows"][0]["cells"], json!(["a", 2, "30s"]));
        assert_eq!(t["columnDefinitions"][1]["name"], "Data");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
