//! The pod garbage collector (`pod-garbage-collector`): deletes pods nothing else will delete.
//!
//! Normally a pod's kubelet finishes its deletion. Some pods have no kubelet left to do that, and
//! finished pods are never deleted by anyone. The collector force-deletes (grace period 0):
//!
//! - **orphaned pods**, bound to a node that no longer exists: first marked `Failed` with the
//!   condition `DisruptionTarget` (reason `DeletionByPodGC`, "PodGC: node no longer exists");
//! - **terminating pods on an out-of-service node** (not Ready and tainted
//!   `node.kubernetes.io/out-of-service`, the operator's statement that the node is gone for good);
//! - **unscheduled terminating pods**: deleted before any node took them, so no kubelet will
//!   finish them;
//! - **terminated pods** (Succeeded/Failed) beyond `--terminated-pod-gc-threshold` (12500; 0
//!   turns this off): the oldest first, evicted ones before the others.
//!
//! It records no events (as the real one, which only logs "PodGC is force deleting Pod").
//!
//! Timing: the real collector looks at everything every 20 s and waits a 40 s quarantine before
//! believing that a pod's node is gone (its node cache may be behind). Here pod and node changes
//! queue the checks: a node the cache saw deleted is confirmed with a GET and its pods are
//! collected at once; a pod bound to a node the cache never saw waits the 40 s quarantine, then
//! the same GET decides.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use super::informer::{Change, Queue};
use super::util;

/// How long a pod's unknown node may be missing before its pods count as orphans.
const QUARANTINE: Duration = Duration::from_secs(40);
const TERMINATED_KEY: &str = "terminated";
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// The real `isPodTerminated`: the phase is neither Pending, Running nor Unknown.
fn is_terminated(p: &Pod) -> bool {
    !matches!(util::pod_phase(p), "Pending" | "Running" | "Unknown")
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn out_of_service(n: &Node) -> bool {
    !node_ready(n)
        && n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE))
}

/// The order terminated pods are collected in: evicted first, then oldest, then by name.
fn collection_order(p: &Pod) -> (bool, i128, String) {
    let evicted = util::pod_phase(p) == "Failed"
        && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_nanosecond());
    (!evicted, created, p.name_any())
}

/// Which terminated pods go: the `len - threshold` first in collection order.
pub fn terminated_to_delete(mut pods: Vec<Arc<Pod>>, threshold: i64) -> Vec<Arc<Pod>> {
    if threshold <= 0 {
        return Vec::new();
    }
    pods.retain(|p| is_terminated(p));
    let n = pods.len() as i64 - threshold;
    if n <= 0 {
        return Vec::new();
    }
    pods.sort_by_cached_key(|p| collection_order(p));
    pods.truncate(n as usize);
    pods
}

pub struct PodGc {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
}

pub fn start(ctx: &Arc<Ctx>) {
    let queue = Queue::new("podgc");
    let c = Arc::new(PodGc {
        ctx: ctx.clone(),
        queue: queue.clone(),
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, change| {
        if let Some(c) = weak.upgrade()
            && change == Change::Applied
        {
            c.pod_changed(pod);
        }
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.nodes.on_change(move |node, change| {
        if let Some(c) = weak.upgrade() {
            c.node_changed(node, change);
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, 4, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

impl PodGc {
    fn pod_changed(&self, pod: &Pod) {
        if self.ctx.config.terminated_pod_gc_threshold > 0 && is_terminated(pod) {
            self.queue.add(TERMINATED_KEY);
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.queue
                .add(format!("pod/{}", util::key_of(&pod.metadata)));
        }
        if let Some(node) = node_of(pod)
            && self
                .ctx
                .inf
                .nodes
                .store()
                .get(&ObjectRef::new(node))
                .is_none()
        {
            self.queue.add_after(format!("node/{node}"), QUARANTINE);
        }
    }

    fn node_changed(&self, node: &Node, change: Change) {
        let name = node.name_any();
        match change {
            Change::Deleted => self.queue.add(format!("node/{name}")),
            Change::Applied if out_of_service(node) => {
                for pod in self.ctx.inf.pods.store().state() {
                    if node_of(&pod) == Some(name.as_str())
                        && pod.metadata.deletion_timestamp.is_some()
                    {
                        self.queue
                            .add(format!("pod/{}", util::key_of(&pod.metadata)));
                    }
                }
            }
            Change::Applied => {}
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        if key == TERMINATED_KEY {
            return self.gc_terminated().await;
        }
        if let Some(node) = key.strip_prefix("node/") {
            return self.gc_orphaned(node).await;
        }
        if let Some(pod) = key.strip_prefix("pod/") {
            return self.gc_terminating(pod).await;
        }
        Ok(())
    }

    async fn gc_terminated(&self) -> anyhow::Result<()> {
        let threshold = self.ctx.config.terminated_pod_gc_threshold;
        let victims = terminated_to_delete(self.ctx.inf.pods.store().state(), threshold);
        if victims.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = victims.len(),
            threshold,
            "garbage collecting terminated pods"
        );
        let mut first_err = None;
        for pod in victims {
            if let Err(e) = self.force_delete(&pod, None).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn gc_orphaned(&self, node: &str) -> anyhow::Result<()> {
        if self
            .ctx
            .inf
            .nodes
            .store()
            .get(&ObjectRef::new(node))
            .is_some()
        {
            return Ok(());
        }
        let pods: Vec<Arc<Pod>> = self
            .ctx
            .inf
            .pods
            .store()
            .state()
            .into_iter()
            .filter(|p| node_of(p) == Some(node))
            .collect();
        if pods.is_empty() {
            return Ok(());
        }
        // The cache may be behind: ask the API server.
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        if nodes.get_opt(node).await?.is_some() {
            return Ok(());
        }
        let mut first_err = None;
        for pod in pods {
            tracing::info!(pod = %util::key_of(&pod.metadata), node, "Found orphaned Pod assigned to the Node, deleting");
            let condition = json!({
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
                "lastTransitionTime": util::now(),
            });
            if let Err(e) = self.force_delete(&pod, Some(condition)).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Unscheduled terminating pods, and terminating pods on out-of-service nodes.
    async fn gc_terminating(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(pod) = self
            .ctx
            .inf
            .pods
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        match node_of(&pod) {
            None => {
                tracing::info!(
                    pod = key,
                    "Found unscheduled terminating Pod not assigned to any Node, deleting"
                );
                self.force_delete(&pod, None).await
            }
            Some(node) => {
                let Some(n) = self.ctx.inf.nodes.store().get(&ObjectRef::new(node)) else {
                    return Ok(());
                };
                if is_terminated(&pod) || !out_of_service(&n) {
                    return Ok(());
                }
                tracing::info!(
                    pod = key,
                    node,
                    "Found terminating Pod on an out-of-service Node, deleting"
                );
                self.force_delete(&pod, None).await
            }
        }
    }

    /// The real `markFailedAndDeletePodWithCondition`: a pod that has not finished is marked
    /// Failed (with `condition`), then deleted with grace period 0.
    async fn force_delete(
        &self,
        pod: &Pod,
        condition: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        tracing::info!(pod = %format!("{ns}/{name}"), "PodGC is force deleting Pod");
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        if !matches!(util::pod_phase(pod), "Succeeded" | "Failed") {
            let mut status = json!({"phase": "Failed"});
            if let Some(c) = condition {
                status["conditions"] = json!([c]);
            }
            let patch = json!({"metadata": {"uid": pod.uid()}, "status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: &str, phase: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d", "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn oldest_and_evicted_terminated_pods_go_first() {
        let pods = vec![
            pod("new", "2024-01-03T00:00:00Z", "Succeeded", None),
            pod("old", "2024-01-01T00:00:00Z", "Failed", None),
            pod("running", "2023-01-01T00:00:00Z", "Running", None),
            pod("evicted", "2024-01-05T00:00:00Z", "Failed", Some("Evicted")),
            pod("mid", "2024-01-02T00:00:00Z", "Succeeded", None),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(terminated_to_delete(pods.clone(), 2)),
            ["evicted", "old"]
        );
        assert_eq!(
            names(terminated_to_delete(pods.clone(), 4)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(terminated_to_delete(pods.clone(), 0)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(terminated_to_delete(pods, 1)),
            ["evicted", "old", "mid"]
        );
    }
}
