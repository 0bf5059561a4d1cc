//! The replica set controller: keeps `spec.replicas` pods of `spec.template` in existence.
//!
//! Each sync of a replica set key: claim the pods (adopt orphans its selector matches, release
//! pods that no longer match), count the active ones, create the missing pods from the template
//! (named by `generateName` `<rs>-`, with a controller owner reference) or delete the surplus
//! (not-ready, unscheduled, pending pods first), then write `status`. Expectations keep it from
//! acting twice on the same shortfall while its pod cache catches up.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use super::expectations::Expectations;
use super::informer::{Change, Queue};
use super::util::{self, Events};

/// At most this many pods are created or deleted per sync (the real `burstReplicas`).
const BURST_REPLICAS: usize = 500;

pub struct ReplicaSetController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    expectations: Expectations,
    events: Events,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("replicaset");
    let c = Arc::new(ReplicaSetController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: Events::new(ctx.client.clone(), "replicaset-controller"),
    });
    let q = queue.clone();
    ctx.inf
        .replicasets
        .on_change(move |rs, _| q.add(util::key_of(&rs.metadata)));
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, _change: Change| {
        if let Some(c) = weak.upgrade() {
            c.pod_changed(pod);
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

impl ReplicaSetController {
    /// A pod changed: its controlling replica set, or (for an orphan) every replica set whose
    /// selector matches it, must look again.
    fn pod_changed(&self, pod: &Pod) {
        let replicasets = self.ctx.inf.replicasets.store().state();
        for key in util::owners_to_wake(&pod.metadata, "ReplicaSet", &replicasets, |rs| {
            rs.spec.as_ref().map(|s| &s.selector)
        }) {
            self.queue.add(key);
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(rs) = self
            .ctx
            .inf
            .replicasets
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(spec) = rs.spec.as_ref() else {
            return Ok(());
        };
        let rs_uid = rs.uid().unwrap_or_default();
        let satisfied = self
            .expectations
            .satisfied(key, ns, self.ctx.inf.pods.store());
        let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        tracing::trace!(key, satisfied, "replicaset sync");

        // Claim pods: ours and still matching, plus orphans we adopt; release the rest.
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let selectable = !util::selector_is_empty(&spec.selector);
        for pod in self.ctx.inf.pods.store().state() {
            if pod.namespace().as_deref() != Some(ns) {
                continue;
            }
            let matches =
                selectable && util::selector_matches(&spec.selector, pod.metadata.labels.as_ref());
            match util::controller_ref(&pod.metadata) {
                Some(r) if r.uid == rs_uid => {
                    if matches || rs.metadata.deletion_timestamp.is_some() {
                        owned.push(pod);
                    } else {
                        // Release: drop our owner reference (the pod's labels left the selector).
                        let refs: Vec<_> = pod
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != rs_uid)
                            .collect();
                        let patch =
                            json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
                        if let Err(e) = pods_api
                            .patch(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await
                            && !util::is_not_found(&e)
                        {
                            return Err(e.into());
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if matches
                        && rs.metadata.deletion_timestamp.is_none()
                        && pod.metadata.deletion_timestamp.is_none()
                    {
                        tracing::trace!(pod = %pod.name_any(), "adopting");
                        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                        refs.push(util::new_controller_ref(rs.as_ref()));
                        let patch =
                            json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
                        match pods_api
                            .patch(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await
                        {
                            Ok(p) => owned.push(Arc::new(p)),
                            Err(e) if util::is_not_found(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| util::pod_is_active(p))
            .cloned()
            .collect();

        let mut manage_err = None;
        let mut failure = None;
        if satisfied && rs.metadata.deletion_timestamp.is_none() {
            let want = spec.replicas.unwrap_or(1).max(0) as usize;
            if let Err(e) = self.manage(key, &rs, &active, want, &pods_api).await {
                // The ReplicaFailure condition says why (the real `calculateStatus`).
                let reason = if active.len() < want {
                    "FailedCreate"
                } else {
                    "FailedDelete"
                };
                let text = match e.downcast_ref::<kube::Error>() {
                    Some(k) => util::error_message(k),
                    None => format!("{e:#}"),
                };
                failure = Some((reason, text));
                manage_err = Some(e);
            } else {
                failure = Some(("", String::new()));
            }
        }
        self.update_status(&rs, &owned, failure).await?;
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn manage(
        &self,
        key: &str,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
        want: usize,
        pods_api: &Api<Pod>,
    ) -> anyhow::Result<()> {
        let have = active.len();
        if have < want {
            let n = (want - have).min(BURST_REPLICAS);
            let pod = pod_from_template(rs);
            tracing::trace!(key, n, "creating pods");
            // Slow start: 1, 2, 4, … pods at a time, stopping at the first error (the real
            // `slowStartBatch`), so a broken template does not produce a flood of failures.
            let mut left = n;
            let mut batch = 1usize;
            while left > 0 {
                let size = batch.min(left);
                let pp = PostParams::default();
                let mut calls = Vec::with_capacity(size);
                for _ in 0..size {
                    calls.push(pods_api.create(&pp, &pod));
                }
                let results = futures_util::future::join_all(calls).await;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            let pname = p.name_any();
                            self.expectations.created(key, pname.clone());
                            self.events.normal(
                                util::object_ref(rs),
                                "SuccessfulCreate",
                                format!("Created pod: {pname}"),
                            );
                        }
                        Err(e) => {
                            self.events.warning(
                                util::object_ref(rs),
                                "FailedCreate",
                                format!("Error creating: {}", util::error_message(&e)),
                            );
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e.into());
                }
                left -= size;
                batch *= 2;
            }
        } else if have > want {
            let n = (have - want).min(BURST_REPLICAS);
            let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
            ranked.sort_by_key(|p| deletion_rank(p));
            for pod in ranked.into_iter().take(n) {
                let pname = pod.name_any();
                self.expectations
                    .deleted(key, pod.uid().unwrap_or_default());
                match pods_api.delete(&pname, &DeleteParams::default()).await {
                    Ok(_) => self.events.normal(
                        util::object_ref(rs),
                        "SuccessfulDelete",
                        format!("Deleted pod: {pname}"),
                    ),
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => {
                        self.expectations.forget(key);
                        self.events.warning(
                            util::object_ref(rs),
                            "FailedDelete",
                            format!("Error deleting: {}", util::error_message(&e)),
                        );
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the counts, and the `ReplicaFailure` condition from `failure`: `Some((reason,
    /// message))` after a failed create or delete (added when missing), `Some(("", _))` after a
    /// successful manage (removed), `None` when nothing was managed (kept as is).
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        owned: &[Arc<Pod>],
        failure: Option<(&str, String)>,
    ) -> anyhow::Result<()> {
        let Some(spec) = rs.spec.as_ref() else {
            return Ok(());
        };
        let now = util::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let template_labels: BTreeMap<String, String> = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| util::pod_is_active(p)).collect();
        let replicas = active.len() as i32;
        let fully = active
            .iter()
            .filter(|p| {
                let l = p.metadata.labels.clone().unwrap_or_default();
                template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count() as i32;
        let ready = active.iter().filter(|p| util::pod_is_ready(p)).count() as i32;
        let available = active
            .iter()
            .filter(|p| util::pod_is_available(p, min_ready, now))
            .count() as i32;
        // A ready pod that is not yet available becomes so after minReadySeconds: look again then.
        if min_ready > 0
            && let Some(d) = active
                .iter()
                .filter_map(|p| util::available_in(p, min_ready, now))
                .min()
        {
            self.queue.add_after(util::key_of(&rs.metadata), d);
        }
        let old = rs.status.clone().unwrap_or_default();
        let generation = rs.metadata.generation;
        let old_conditions = old.conditions.clone().unwrap_or_default();
        let has_failure = old_conditions.iter().any(|c| c.type_ == "ReplicaFailure");
        let conditions = match failure {
            Some((reason, message)) if !reason.is_empty() && !has_failure => {
                let mut c = serde_json::to_value(&old_conditions)?;
                if let Some(list) = c.as_array_mut() {
                    list.push(json!({
                        "type": "ReplicaFailure",
                        "status": "True",
                        "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                        "reason": reason,
                        "message": message,
                    }));
                }
                Some(c)
            }
            Some(("", _)) if has_failure => Some(serde_json::to_value(
                old_conditions
                    .iter()
                    .filter(|c| c.type_ != "ReplicaFailure")
                    .collect::<Vec<_>>(),
            )?),
            _ => None,
        };
        if conditions.is_none()
            && old.replicas == replicas
            && old.fully_labeled_replicas.unwrap_or(0) == fully
            && old.ready_replicas.unwrap_or(0) == ready
            && old.available_replicas.unwrap_or(0) == available
            && old.observed_generation == generation
        {
            return Ok(());
        }
        let api: Api<ReplicaSet> =
            Api::namespaced(self.ctx.client.clone(), &rs.namespace().unwrap_or_default());
        let mut patch = json!({"status": {
            "replicas": replicas,
            "fullyLabeledReplicas": fully,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": generation,
        }});
        if let Some(c) = conditions {
            patch["status"]["conditions"] = c;
        }
        match api
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A new pod from the replica set's template: `generateName: <rs>-`, the template's labels and
/// annotations, and the replica set as its controller.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut pod = Pod {
        metadata: Default::default(),
        spec: template.spec,
        status: None,
    };
    pod.metadata.generate_name = Some(format!("{}-", rs.name_any()));
    pod.metadata.namespace = rs.namespace();
    pod.metadata.labels = tmeta.labels;
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![util::new_controller_ref(rs)]);
    pod
}

/// Sort key: pods to delete first come first (the real `ActivePodsWithRanks` order, without
/// the co-location rank): unassigned before assigned, Pending before Unknown before Running,
/// not ready before ready, ready for less time first, more restarts first, newer first.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64, i64) {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| !n.is_empty());
    let phase = match util::pod_phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let ready_since = util::ready_since(p);
    let ready = u8::from(ready_since.is_some());
    let ready_at = ready_since.map(|t| -t.as_second()).unwrap_or(0);
    let restarts: i64 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| -t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(assigned),
        phase,
        ready,
        ready_at,
        -restarts,
        created,
    )
}
