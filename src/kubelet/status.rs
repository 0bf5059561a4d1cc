//! A pod's status as the kubelet reports it: phase, conditions and container statuses computed
//! from what the runtime shows (the kubelet's `generateAPIPodStatus` / `getPhase`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::runtime::{ContainerInfo, State};

/// Why a container is waiting, as the status shows it (`ContainerCreating`, `ErrImagePull`,
/// `ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerConfigError`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// The container's status entry, from its newest and previous Docker containers.
pub fn container_status(
    spec: &Container,
    current: Option<&ContainerInfo>,
    previous: Option<&ContainerInfo>,
    waiting: Option<&Waiting>,
    ready: bool,
    started: bool,
) -> Value {
    let terminated = |c: &ContainerInfo| -> Option<Value> {
        match &c.state {
            State::Exited {
                exit_code,
                oom_killed,
                error,
                started_at,
                finished_at,
            } => {
                let reason = if *oom_killed {
                    "OOMKilled"
                } else if !error.is_empty() {
                    "ContainerCannotRun"
                } else if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let mut t = json!({
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": zero_time(started_at),
                    "finishedAt": zero_time(finished_at),
                    "containerID": c.container_id(),
                });
                if !error.is_empty() {
                    t["message"] = json!(error);
                }
                Some(t)
            }
            // Created but never started: the start failed.
            State::Created => Some(json!({
                "exitCode": 128,
                "reason": "ContainerCannotRun",
                "containerID": c.container_id(),
            })),
            State::Running { .. } => None,
        }
    };
    let restart_count = current.map(|c| c.attempt).unwrap_or(0);
    let (state, last_state) = match (current, waiting) {
        // A restart is pending (back-off, a failed pull of the new image …): waiting, with the
        // exited container as the last state.
        (Some(c), Some(w)) if !c.running() => (
            json!({"waiting": {"reason": w.reason, "message": w.message}}),
            terminated(c).map(|t| json!({"terminated": t})),
        ),
        (Some(c), _) => {
            let state = match &c.state {
                State::Running { started_at } => {
                    json!({"running": {"startedAt": zero_time(started_at)}})
                }
                _ => terminated(c).map_or(json!({}), |t| json!({"terminated": t})),
            };
            (
                state,
                previous
                    .and_then(terminated)
                    .map(|t| json!({"terminated": t})),
            )
        }
        (None, Some(w)) => (
            json!({"waiting": {"reason": w.reason, "message": w.message}}),
            None,
        ),
        (None, None) => (json!({"waiting": {"reason": "ContainerCreating"}}), None),
    };
    let mut s = json!({
        "name": spec.name,
        "image": spec.image.clone().unwrap_or_default(),
        "imageID": current.map(|c| c.image_id.clone()).unwrap_or_default(),
        "ready": ready,
        "restartCount": restart_count,
        "started": started,
        "state": state,
        "lastState": last_state.unwrap_or(json!({})),
    });
    if let Some(c) = current {
        s["containerID"] = json!(c.container_id());
    }
    if let Some(w) = waiting
        && s["state"]["waiting"].is_object()
        && w.message.is_empty()
        && let Some(o) = s["state"]["waiting"].as_object_mut()
    {
        o.remove("message");
    }
    s
}

/// Docker reports never-set times as `0001-01-01T00:00:00Z`; the API leaves them out.
fn zero_time(t: &str) -> Value {
    if t.is_empty() || t.starts_with("0001-") {
        Value::Null
    } else {
        // Docker's nanoseconds → the API's seconds.
        match t.parse::<jiff::Timestamp>() {
            Ok(ts) => json!(
                jiff::Timestamp::from_second(ts.as_second())
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
            Err(_) => json!(t),
        }
    }
}

/// The pod phase from its container statuses (the kubelet's `getPhase`).
pub fn phase(
    restart_policy: &str,
    init_failed: bool,
    init_done: bool,
    statuses: &[Value],
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = &s["state"];
        if state["running"].is_object() {
            running += 1;
        } else if let Some(t) = state["terminated"].as_object() {
            stopped += 1;
            if t.get("exitCode").and_then(Value::as_i64) == Some(0) {
                succeeded += 1;
            }
        } else if state["waiting"].is_object() {
            if s["lastState"]["terminated"].is_object() {
                stopped += 1;
                if s["lastState"]["terminated"]["exitCode"].as_i64() == Some(0) {
                    succeeded += 1;
                }
            } else {
                waiting += 1;
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 && stopped == statuses.len() {
        return match restart_policy {
            "Always" => "Running",
            "OnFailure" if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ if succeeded == stopped => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

/// The QoS class of a pod (Guaranteed, Burstable, BestEffort), as the API shows it.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.get(res);
            let q = req.get(res).or(l);
            if l.is_none() || q.map(|q| &q.0) != l.map(|l| &l.0) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A condition the kubelet sets: (type, true?, (reason, message) when not true).
pub type Condition<'a> = (&'a str, bool, Option<(&'a str, String)>);

/// The kubelet's conditions, keeping each one's transition time while its status stays, and
/// the conditions other components own (DisruptionTarget, readiness gates …) as they are.
pub fn conditions(pod: &Pod, mine: &[Condition<'_>]) -> Vec<Value> {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let old: HashMap<String, Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok().map(|v| (c.type_.clone(), v)))
        .collect();
    let mut out = Vec::new();
    for (t, ok, why) in mine {
        let status = if *ok { "True" } else { "False" };
        let since = old
            .get(*t)
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null,
                           "lastTransitionTime": since});
        if let Some((reason, message)) = why {
            c["reason"] = json!(reason);
            if !message.is_empty() {
                c["message"] = json!(message);
            }
        }
        out.push(c);
    }
    for (t, c) in old {
        if !mine.iter().any(|(m, _, _)| *m == t) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: Value, last: Value) -> Value {
        json!({"state": state, "lastState": last})
    }

    #[test]
    fn phases_follow_the_kubelets_rules() {
        let running = st(json!({"running": {}}), json!({}));
        let ok = st(json!({"terminated": {"exitCode": 0}}), json!({}));
        let bad = st(json!({"terminated": {"exitCode": 1}}), json!({}));
        let creating = st(
            json!({"waiting": {"reason": "ContainerCreating"}}),
            json!({}),
        );
        let backoff = st(
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"exitCode": 1}}),
        );
        assert_eq!(phase("Always", false, false, &[]), "Pending");
        assert_eq!(phase("Never", true, false, &[]), "Failed");
        assert_eq!(
            phase("Always", false, true, std::slice::from_ref(&creating)),
            "Pending"
        );
        assert_eq!(
            phase("Always", false, true, &[running.clone(), ok.clone()]),
            "Running"
        );
        assert_eq!(
            phase("Always", false, true, std::slice::from_ref(&backoff)),
            "Running"
        );
        assert_eq!(
            phase("Always", false, true, std::slice::from_ref(&ok)),
            "Running"
        );
        assert_eq!(
            phase("Never", false, true, std::slice::from_ref(&ok)),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", false, true, &[ok.clone(), bad.clone()]),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", false, true, std::slice::from_ref(&bad)),
            "Running"
        );
        assert_eq!(phase("OnFailure", false, true, &[ok]), "Succeeded");
        assert_eq!(phase("Never", false, true, &[running, creating]), "Pending");
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Value| -> Pod {
            serde_json::from_value(
                json!({"spec": {"containers": [{"name": "a", "resources": res}]}}),
            )
            .expect("pod")
        };
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"},
                                  "requests": {"cpu": "500m"}}))),
            "Burstable"
        );
    }
}
