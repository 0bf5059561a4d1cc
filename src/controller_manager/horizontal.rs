//! The horizontal pod autoscaler controller: sizes each HPA's target (a Deployment, ReplicaSet,
//! StatefulSet or ReplicationController) through its `scale` subresource.
//!
//! Every 15 seconds (`--horizontal-pod-autoscaler-sync-period`), and when an HPA's spec changes,
//! it reads the target's scale (`AbleToScale`: `SucceededGetScale`, or `FailedGetScale` when the
//! target is missing). A target outside `minReplicas`..`maxReplicas` is scaled to the bound, as
//! the real controller does before it looks at any metric (`SuccessfulRescale`). Within the
//! bounds the replica count comes from metrics; minik has no resource metrics API
//! (`metrics.k8s.io`), so every metric fails exactly as it does on a cluster without
//! metrics-server: `ScalingActive` False `FailedGetResourceMetric`, the Warning events
//! `FailedGetResourceMetric` and `FailedComputeMetricsReplicas`, and the replicas left alone.
//! `status.currentReplicas` is the target's scale; `kubectl get hpa` shows `<unknown>/50%`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Ctx;
use super::informer::{Change, Queue};
use super::util::{self, Events};

/// Workers (`--concurrent-horizontal-pod-autoscaler-syncs`).
pub const WORKERS: usize = 5;

/// `--horizontal-pod-autoscaler-sync-period`.
const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// Why the resource metrics API gives nothing: minik serves no `metrics.k8s.io`, and this is
/// how client-go words the 404 the real controller gets without metrics-server.
const NO_RESOURCE_METRICS: &str = "unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)";

pub struct HorizontalController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    events: Events,
    /// The generation last synced per key: a change of spec is synced at once, the
    /// controller's own status writes are not.
    seen: Mutex<HashMap<String, i64>>,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("horizontalpodautoscaler");
    let c = Arc::new(HorizontalController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "horizontal-pod-autoscaler"),
        seen: Mutex::new(HashMap::new()),
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.hpas.on_change(move |hpa, change| {
        let Some(c) = weak.upgrade() else {
            return;
        };
        let key = util::key_of(&hpa.metadata);
        let generation = hpa.metadata.generation.unwrap_or(0);
        let mut seen = c.seen.lock();
        match change {
            Change::Deleted => {
                seen.remove(&key);
            }
            Change::Applied => {
                if seen.get(&key) != Some(&generation) {
                    seen.insert(key.clone(), generation);
                    c.queue.add(key);
                }
            }
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// Sets a condition (`setCondition`): added when missing, its transition time moved only when
/// its status changes.
fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) {
    let now = now_json();
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = now;
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": type_, "status": status, "lastTransitionTime": now,
            "reason": reason, "message": message,
        })),
    }
}

/// Now, as API timestamps are written (`2024-01-01T00:00:00Z`).
fn now_json() -> Value {
    serde_json::to_value(Time(util::now())).unwrap_or(Value::Null)
}

/// The REST path of a scale target's collection: (`apps/v1`, `Deployment`) →
/// `/apis/apps/v1/namespaces/<ns>/deployments`.
fn target_collection(api_version: &str, kind: &str, ns: &str) -> Result<(String, String), String> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let resource = match (group, kind) {
        ("apps" | "extensions", "Deployment") => "deployments",
        ("apps" | "extensions", "ReplicaSet") => "replicasets",
        ("apps", "StatefulSet") => "statefulsets",
        ("", "ReplicationController") => "replicationcontrollers",
        _ => {
            return Err(format!(
                "no matches for kind \"{kind}\" in group \"{group}\""
            ));
        }
    };
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/v1")
    };
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    Ok((format!("{prefix}/namespaces/{ns}/{resource}"), qualified))
}

/// How one metric fails without a metrics API: (the condition's reason, the error the
/// condition and the per-metric event carry, the error `computeReplicasForMetric` returns).
fn metric_failure(m: &Value) -> (&'static str, String, String) {
    let type_ = m["type"].as_str().unwrap_or("");
    let resource_error = |src: &Value| {
        let name = src["name"].as_str().unwrap_or("");
        let what = if src["target"]["averageValue"].is_null() {
            "utilization"
        } else {
            "usage"
        };
        format!(
            "failed to get {name} {what}: unable to get metrics for resource {name}: {NO_RESOURCE_METRICS}"
        )
    };
    match type_ {
        "Resource" => {
            let inner = resource_error(&m["resource"]);
            let name = m["resource"]["name"].as_str().unwrap_or("");
            let outer = format!("failed to get {name} resource metric value: {inner}");
            ("FailedGetResourceMetric", inner, outer)
        }
        "ContainerResource" => {
            let inner = resource_error(&m["containerResource"]);
            let container = m["containerResource"]["container"].as_str().unwrap_or("");
            let outer = format!("failed to get {container} container metric value: {inner}");
            ("FailedGetContainerResourceMetric", inner, outer)
        }
        "Pods" => {
            let name = m["pods"]["metric"]["name"].as_str().unwrap_or("");
            let inner = format!(
                "unable to get metric {name}: unable to fetch metrics from custom metrics API: the server could not find the requested resource"
            );
            let outer = format!("failed to get pods metric value: {inner}");
            ("FailedGetPodsMetric", inner, outer)
        }
        "Object" => {
            let name = m["object"]["metric"]["name"].as_str().unwrap_or("");
            let inner = format!(
                "unable to get metric {name}: unable to fetch metrics from custom metrics API: the server could not find the requested resource"
            );
            let outer = format!("failed to get object metric value: {inner}");
            ("FailedGetObjectMetric", inner, outer)
        }
        "External" => {
            let name = m["external"]["metric"]["name"].as_str().unwrap_or("");
            let inner = format!(
                "unable to get external metric {name}: unable to fetch metrics from external metrics API: the server could not find the requested resource"
            );
            let outer = format!("failed to get {name} external metric value: {inner}");
            ("FailedGetExternalMetric", inner, outer)
        }
        other => {
            let e = format!("unknown metric source type \"{other}\"");
            ("InvalidMetricSourceType", e.clone(), e)
        }
    }
}

impl HorizontalController {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(hpa) = self
            .ctx
            .inf
            .hpas
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            return Ok(());
        };
        let result = self.reconcile(&hpa, ns).await;
        // Looked at again every sync period, as the real controller's rate-limited queue does.
        self.queue.add_after(key.to_string(), SYNC_PERIOD);
        result
    }

    async fn reconcile(&self, hpa: &HorizontalPodAutoscaler, ns: &str) -> anyhow::Result<()> {
        let mut obj = serde_json::to_value(hpa)?;
        let old_status = obj["status"].clone();
        let mut status = if old_status.is_object() {
            old_status.clone()
        } else {
            json!({})
        };
        let mut conditions: Vec<Value> =
            status["conditions"].as_array().cloned().unwrap_or_default();
        let me = util::object_ref(hpa);
        let spec = obj["spec"].clone();
        let target = &spec["scaleTargetRef"];
        let scale = match target_collection(
            target["apiVersion"].as_str().unwrap_or(""),
            target["kind"].as_str().unwrap_or(""),
            ns,
        ) {
            Err(e) => Err(e),
            Ok((collection, _)) => {
                let path = format!(
                    "{collection}/{}/scale",
                    target["name"].as_str().unwrap_or("")
                );
                let req = http::Request::get(&path).body(Vec::new())?;
                self.ctx
                    .client
                    .request::<Value>(req)
                    .await
                    .map(|s| (path, s))
                    .map_err(|e| util::error_message(&e))
            }
        };
        let (scale_path, scale) = match scale {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(me, "FailedGetScale", e.clone());
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    "False",
                    "FailedGetScale",
                    format!("the HPA controller was unable to get the target's current scale: {e}"),
                );
                status["conditions"] = json!(conditions);
                return self
                    .write_status(hpa, &mut obj, &old_status, status, ns)
                    .await;
            }
        };
        set_condition(
            &mut conditions,
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        let min = spec["minReplicas"].as_i64().unwrap_or(1);
        let max = spec["maxReplicas"].as_i64().unwrap_or(0);
        let desired_before = status["desiredReplicas"].as_i64().unwrap_or(0);
        let (desired, reason) = if current == 0 && min != 0 {
            set_condition(
                &mut conditions,
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
            (0, None)
        } else if current > max {
            (
                max,
                Some("Current number of replicas above Spec.MaxReplicas"),
            )
        } else if current < min {
            (
                min,
                Some("Current number of replicas below Spec.MinReplicas"),
            )
        } else {
            // Within bounds: the metrics decide, and there are none to be had.
            let selector = scale["status"]["selector"].as_str().unwrap_or("");
            let failure = if selector.is_empty() {
                self.events.warning(
                    me.clone(),
                    "SelectorRequired",
                    "selector is required".into(),
                );
                set_condition(
                    &mut conditions,
                    "ScalingActive",
                    "False",
                    "InvalidSelector",
                    "the HPA target's scale is missing a selector".into(),
                );
                ("selector is required".to_string(), None)
            } else {
                let metrics: Vec<Value> = spec["metrics"].as_array().cloned().unwrap_or_default();
                let mut first: Option<(&str, String, String)> = None;
                for m in &metrics {
                    let (reason, inner, outer) = metric_failure(m);
                    self.events.warning(me.clone(), reason, inner.clone());
                    first.get_or_insert((reason, inner, outer));
                }
                let statuses: Vec<Value> = metrics.iter().map(|_| json!({"type": ""})).collect();
                match first {
                    Some((reason, inner, outer)) => {
                        set_condition(
                            &mut conditions,
                            "ScalingActive",
                            "False",
                            reason,
                            format!("the HPA was unable to compute the replica count: {inner}"),
                        );
                        (
                            format!(
                                "invalid metrics ({n} invalid out of {n}), first error is: {outer}",
                                n = metrics.len()
                            ),
                            Some(statuses),
                        )
                    }
                    None => {
                        return self
                            .write_status(hpa, &mut obj, &old_status, status, ns)
                            .await;
                    }
                }
            };
            let (err, statuses) = failure;
            status["currentReplicas"] = json!(current);
            status["desiredReplicas"] = json!(desired_before);
            match statuses {
                Some(s) if !s.is_empty() => status["currentMetrics"] = json!(s),
                _ => {
                    if let Some(m) = status.as_object_mut() {
                        m.remove("currentMetrics");
                    }
                }
            }
            status["conditions"] = json!(conditions);
            let written = self
                .write_status(hpa, &mut obj, &old_status, status, ns)
                .await;
            self.events.warning(me, "FailedComputeMetricsReplicas", err);
            return written;
        };
        let mut rescaled = false;
        if let Some(reason) = reason {
            let req = http::Request::patch(&scale_path)
                .header("Content-Type", "application/merge-patch+json")
                .body(serde_json::to_vec(&json!({"spec": {"replicas": desired}}))?)?;
            match self.ctx.client.request::<Value>(req).await {
                Ok(_) => {
                    rescaled = true;
                    set_condition(
                        &mut conditions,
                        "AbleToScale",
                        "True",
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    );
                    self.events.normal(
                        me.clone(),
                        "SuccessfulRescale",
                        format!("New size: {desired}; reason: {reason}"),
                    );
                }
                Err(e) => {
                    let e = util::error_message(&e);
                    self.events.warning(
                        me,
                        "FailedRescale",
                        format!("New size: {desired}; reason: {reason}; error: {e}"),
                    );
                    set_condition(
                        &mut conditions,
                        "AbleToScale",
                        "False",
                        "FailedUpdateScale",
                        format!("the HPA controller was unable to update the target scale: {e}"),
                    );
                    status["currentReplicas"] = json!(current);
                    status["conditions"] = json!(conditions);
                    return self
                        .write_status(hpa, &mut obj, &old_status, status, ns)
                        .await;
                }
            }
        }
        let mut next = json!({
            "currentReplicas": current,
            "desiredReplicas": desired,
            "conditions": conditions,
        });
        if rescaled {
            next["lastScaleTime"] = now_json();
        } else if !status["lastScaleTime"].is_null() {
            next["lastScaleTime"] = status["lastScaleTime"].clone();
        }
        self.write_status(hpa, &mut obj, &old_status, next, ns)
            .await
    }

    /// Writes the status when it changed (`updateStatusIfNeeded`), naming the resourceVersion
    /// it was computed from.
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        obj: &mut Value,
        old: &Value,
        status: Value,
        ns: &str,
    ) -> anyhow::Result<()> {
        if status == *old {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        obj["status"] = status;
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.ctx.client.clone(), ns);
        match api
            .replace_status(
                &name,
                &PostParams::default(),
                &serde_json::from_value::<HorizontalPodAutoscaler>(obj.clone())?,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => {
                self.events.warning(
                    util::object_ref(hpa),
                    "FailedUpdateStatus",
                    util::error_message(&e),
                );
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_metric_errors() {
        assert_eq!(
            target_collection("apps/v1", "Deployment", "ns").ok(),
            Some((
                "/apis/apps/v1/namespaces/ns/deployments".to_string(),
                "deployments.apps".to_string()
            ))
        );
        assert_eq!(
            target_collection("v1", "ReplicationController", "ns").ok(),
            Some((
                "/api/v1/namespaces/ns/replicationcontrollers".to_string(),
                "replicationcontrollers".to_string()
            ))
        );
        assert_eq!(
            target_collection("example.com/v1", "Widget", "ns").err(),
            Some("no matches for kind \"Widget\" in group \"example.com\"".to_string())
        );
        let (reason, inner, outer) = metric_failure(&json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
        }));
        assert_eq!(reason, "FailedGetResourceMetric");
        assert_eq!(
            inner,
            format!(
                "failed to get cpu utilization: unable to get metrics for resource cpu: {NO_RESOURCE_METRICS}"
            )
        );
        assert_eq!(
            outer,
            format!("failed to get cpu resource metric value: {inner}")
        );
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut c = vec![];
        set_condition(
            &mut c,
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "m".into(),
        );
        c[0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        set_condition(
            &mut c,
            "AbleToScale",
            "True",
            "SucceededRescale",
            "n".into(),
        );
        assert_eq!(c[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(c[0]["reason"], "SucceededRescale");
        set_condition(&mut c, "AbleToScale", "False", "FailedGetScale", "o".into());
        assert_ne!(c[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        set_condition(
            &mut c,
            "ScalingActive",
            "False",
            "FailedGetResourceMetric",
            "p".into(),
        );
        assert_eq!(c.len(), 2);
    }
}
