//! The resource quota controller: keeps each ResourceQuota's `status` true to its namespace.
//!
//! The API server's quota admission charges every create to the quotas it falls under, so
//! `status.used` only ever grows there. This controller computes usage from what exists (the
//! shared caches of pods, services, claims, config maps, secrets, workloads…, through the
//! evaluators of [`crate::quota`]) and writes `status.hard` (= `spec.hard`) and `status.used`:
//! when a quota is created or its `spec.hard` changes, when a counted object is deleted or a
//! pod finishes (the real controller's *replenishment*), and every five minutes
//! (`--resource-quota-sync-period`). It does not re-sync on creates: admission has charged them
//! already, and a cache that has not seen a create yet would count too little. Its status
//! write names the quota's resourceVersion, so it can never overwrite a charge admission made
//! meanwhile (a conflict, and the key is synced again).

use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;
use serde_json::{Value, json};

use super::Ctx;
use super::informer::{Change, Informer, Queue};
use super::util;
use crate::quota::{self, Amount, ResourceList};

/// Workers (`--concurrent-resource-quota-syncs`).
pub const WORKERS: usize = 5;

/// Every quota is recomputed this often even when nothing was deleted.
const FULL_RESYNC: Duration = Duration::from_secs(300);

pub struct ResourceQuotaController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("resourcequota");
    let c = Arc::new(ResourceQuotaController {
        ctx: ctx.clone(),
        queue: queue.clone(),
    });
    let q = queue.clone();
    ctx.inf.resourcequotas.on_change(move |rq, change| {
        // A new quota, or one whose limits changed: its status must follow. (Its own status
        // writes, by admission or by this controller, need nothing.)
        if change == Change::Applied && needs_sync(rq) {
            q.add(util::key_of(&rq.metadata));
        }
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod: &Pod, change| {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if change == Change::Deleted || finished || pod.metadata.deletion_timestamp.is_some() {
            replenish(&weak, pod.metadata.namespace.as_deref());
        }
    });
    let inf = &ctx.inf;
    on_delete(&inf.services, &c);
    on_delete(&inf.configmaps, &c);
    on_delete(&inf.secrets, &c);
    on_delete(&inf.persistentvolumeclaims, &c);
    on_delete(&inf.serviceaccounts, &c);
    on_delete(&inf.replicasets, &c);
    on_delete(&inf.deployments, &c);
    on_delete(&inf.statefulsets, &c);
    on_delete(&inf.daemonsets, &c);
    on_delete(&inf.controllerrevisions, &c);
    on_delete(&inf.jobs, &c);
    on_delete(&inf.cronjobs, &c);
    on_delete(&inf.endpoints, &c);
    on_delete(&inf.endpointslices, &c);
    on_delete(&inf.hpas, &c);
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// Whether a quota's status does not yet reflect its spec (new, or `spec.hard` changed).
fn needs_sync(rq: &ResourceQuota) -> bool {
    let spec_hard = rq.spec.as_ref().and_then(|s| s.hard.clone());
    match rq.status.as_ref() {
        Some(st) => st.used.is_none() || st.hard.is_none() || st.hard != spec_hard,
        None => true,
    }
}

/// Something in `ns` was deleted (or a pod finished): every quota there is recomputed.
fn replenish(c: &Weak<ResourceQuotaController>, ns: Option<&str>) {
    let (Some(c), Some(ns)) = (c.upgrade(), ns) else {
        return;
    };
    for rq in c.ctx.inf.resourcequotas.store().state() {
        if rq.metadata.namespace.as_deref() == Some(ns) {
            c.queue.add(util::key_of(&rq.metadata));
        }
    }
}

fn on_delete<K>(inf: &Informer<K>, c: &Arc<ResourceQuotaController>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let weak = Arc::downgrade(c);
    inf.on_change(move |obj: &K, change| {
        if change == Change::Deleted {
            replenish(&weak, obj.meta().namespace.as_deref());
        }
    });
}

/// The objects of one cached type in a namespace, as JSON.
fn objects<K>(inf: &Informer<K>, ns: &str) -> Vec<Value>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    inf.store()
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
        .collect()
}

impl ResourceQuotaController {
    /// Every counted object of the namespace, by (group, resource).
    fn namespace_objects(&self, ns: &str, group: &str, resource: &str) -> Option<Vec<Value>> {
        let inf = &self.ctx.inf;
        Some(match (group, resource) {
            ("", "pods") => objects(&inf.pods, ns),
            ("", "services") => objects(&inf.services, ns),
            ("", "configmaps") => objects(&inf.configmaps, ns),
            ("", "secrets") => objects(&inf.secrets, ns),
            ("", "persistentvolumeclaims") => objects(&inf.persistentvolumeclaims, ns),
            ("", "serviceaccounts") => objects(&inf.serviceaccounts, ns),
            ("", "endpoints") => objects(&inf.endpoints, ns),
            ("", "resourcequotas") => objects(&inf.resourcequotas, ns),
            ("apps", "replicasets") => objects(&inf.replicasets, ns),
            ("apps", "deployments") => objects(&inf.deployments, ns),
            ("apps", "statefulsets") => objects(&inf.statefulsets, ns),
            ("apps", "daemonsets") => objects(&inf.daemonsets, ns),
            ("apps", "controllerrevisions") => objects(&inf.controllerrevisions, ns),
            ("batch", "jobs") => objects(&inf.jobs, ns),
            ("batch", "cronjobs") => objects(&inf.cronjobs, ns),
            ("discovery.k8s.io", "endpointslices") => objects(&inf.endpointslices, ns),
            ("autoscaling", "horizontalpodautoscalers") => objects(&inf.hpas, ns),
            _ => return None,
        })
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(rq) = self
            .ctx
            .inf
            .resourcequotas
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            return Ok(());
        };
        let mut obj = serde_json::to_value(rq.as_ref())?;
        let hard = quota::parse_list(&obj["spec"]["hard"]);
        let old_hard = quota::parse_list(&obj["status"]["hard"]);
        let old_used = quota::parse_list(&obj["status"]["used"]);
        let scopes = quota::scope_selectors(&obj);
        // Past observations stay for what cannot be counted here; the rest is recomputed.
        let mut used = old_used.clone();
        used.extend(calculate_usage(&hard, &scopes, |g, r| {
            self.namespace_objects(ns, g, r)
        }));
        let used = quota::mask(&used, hard.keys());
        let dirty = obj["status"]["hard"].is_null()
            || obj["status"]["used"].is_null()
            || !quota::equal(&hard, &old_hard)
            || !quota::equal(&used, &old_used);
        if dirty {
            obj["status"] =
                json!({"hard": quota::list_json(&hard), "used": quota::list_json(&used)});
            let api: Api<ResourceQuota> = Api::namespaced(self.ctx.client.clone(), ns);
            match api
                .replace_status(
                    name,
                    &PostParams::default(),
                    &serde_json::from_value::<ResourceQuota>(obj)?,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(()),
                // Admission charged it meanwhile: sync again from the newer quota.
                Err(e) => return Err(e.into()),
            }
        }
        self.queue.add_after(key.to_string(), FULL_RESYNC);
        Ok(())
    }
}

/// The types the controller counts, by (group, resource).
const COUNTED: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "services"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "persistentvolumeclaims"),
    ("", "serviceaccounts"),
    ("", "endpoints"),
    ("", "resourcequotas"),
    ("apps", "replicasets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "controllerrevisions"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("discovery.k8s.io", "endpointslices"),
    ("autoscaling", "horizontalpodautoscalers"),
];

/// What a namespace's objects use of the `hard` resources, for the objects in every scope
/// (`quota.CalculateUsage`): each resource a counted type covers starts at zero. `list` gives
/// the namespace's objects of a type (`None`: not cached here).
pub fn calculate_usage(
    hard: &ResourceList,
    scopes: &[Value],
    list: impl Fn(&str, &str) -> Option<Vec<Value>>,
) -> ResourceList {
    let now = jiff::Timestamp::now().as_second();
    let mut out = ResourceList::new();
    for (group, resource) in COUNTED {
        let matching = quota::matching_resources(group, resource, hard.keys());
        if matching.is_empty() {
            continue;
        }
        let Some(objs) = list(group, resource) else {
            continue;
        };
        for m in &matching {
            out.entry(m.clone()).or_insert(Amount::count(0));
        }
        for o in objs {
            if scopes
                .iter()
                .all(|s| quota::scope_matches(group, resource, s, &o))
            {
                let u = quota::mask(&quota::usage(group, resource, &o, now), &matching);
                out = quota::add(&out, &u);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_namespace() {
        let hard = quota::parse_list(&json!({
            "pods": "4", "requests.cpu": "2", "requests.memory": "1Gi",
            "count/deployments.apps": "3", "services.nodeports": "2", "configmaps": "5",
        }));
        let pods = vec![
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}, "status": {"phase": "Running"}}),
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}, "status": {"phase": "Pending"}}),
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Succeeded"}}),
        ];
        let used = calculate_usage(&hard, &[], |g, r| match (g, r) {
            ("", "pods") => Some(pods.clone()),
            ("apps", "deployments") => Some(vec![json!({})]),
            ("", "services") => Some(vec![json!({"spec": {"type": "ClusterIP"}})]),
            _ => Some(vec![]),
        });
        let shown: Vec<(String, String)> = used
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        assert_eq!(
            shown,
            [
                ("configmaps", "0"),
                ("count/deployments.apps", "1"),
                ("pods", "2"),
                ("requests.cpu", "500m"),
                ("requests.memory", "128Mi"),
                ("services.nodeports", "0"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // A BestEffort-scoped quota counts only pods without requests.
        let scoped = calculate_usage(
            &quota::parse_list(&json!({"pods": "4"})),
            &[json!({"scopeName": "BestEffort", "operator": "Exists"})],
            |_, _| {
                Some(vec![
                    json!({"spec": {"containers": [{"name": "a"}]}}),
                    pods[0].clone(),
                ])
            },
        );
        assert_eq!(scoped["pods"].to_string(), "1");
    }
}
