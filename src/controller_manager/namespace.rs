//! The namespace controller: empties a namespace being deleted, then lets it go.
//!
//! `kubectl delete namespace x` only marks the namespace (deletionTimestamp, phase
//! Terminating); the `kubernetes` entry in its `spec.finalizers` keeps it. This controller then
//! finds every namespaced resource type through discovery, deletes all objects of each in the
//! namespace, and — once nothing is left — removes `kubernetes` through the `finalize`
//! subresource, and the namespace disappears. While content remains it writes the real
//! conditions (`NamespaceContentRemaining`, `NamespaceDeletionContentFailure`, …) and looks
//! again a little later.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use super::informer::Queue;
use super::util;

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("namespace");
    let q = queue.clone();
    ctx.inf.namespaces.on_change(move |ns, _| {
        if ns.metadata.deletion_timestamp.is_some() {
            q.add(ns.name_any());
        }
    });
    let c = ctx.clone();
    let q = queue.clone();
    queue.run_when_synced(ctx, workers, move |key| {
        let c = c.clone();
        let q = q.clone();
        Box::pin(async move { sync(&c, &q, &key).await })
    });
}

async fn sync(ctx: &Ctx, queue: &Arc<Queue>, name: &str) -> anyhow::Result<()> {
    let Some(ns) = ctx.inf.namespaces.store().get(&ObjectRef::new(name)) else {
        return Ok(());
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(());
    }
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let mut remaining: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, &ar);
            let list = match api.list_metadata(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{}: {e}", ar.plural));
                    continue;
                }
            };
            if list.items.is_empty() {
                continue;
            }
            for o in &list.items {
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match api.delete(&o.name_any(), &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => failures.push(format!("{}/{}: {e}", ar.plural, o.name_any())),
                }
            }
            let left = api.list_metadata(&ListParams::default()).await?;
            if !left.items.is_empty() {
                let kind = if ar.group.is_empty() {
                    ar.plural.clone()
                } else {
                    format!("{}.{}", ar.plural, ar.group)
                };
                remaining.push(format!(
                    "{kind} has {} resource instances",
                    left.items.len()
                ));
            }
        }
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.is_empty() || !failures.is_empty() {
        let now = Time(util::now());
        let mut conds = vec![];
        if !failures.is_empty() {
            conds.push(NamespaceCondition {
                type_: "NamespaceDeletionContentFailure".into(),
                status: "True".into(),
                reason: Some("ContentDeletionFailed".into()),
                message: Some(format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    failures.len(),
                    failures.join(", ")
                )),
                last_transition_time: Some(now.clone()),
            });
        }
        if !remaining.is_empty() {
            conds.push(NamespaceCondition {
                type_: "NamespaceContentRemaining".into(),
                status: "True".into(),
                reason: Some("SomeResourcesRemain".into()),
                message: Some(format!(
                    "Some resources are remaining: {}",
                    remaining.join(", ")
                )),
                last_transition_time: Some(now),
            });
        }
        let p = json!({"status": {"conditions": conds}});
        let _ = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&p))
            .await;
        queue.add_after(name.to_string(), Duration::from_secs(2));
        return Ok(());
    }
    // Empty: remove `kubernetes` from spec.finalizers through the finalize subresource.
    let mut body = (*ns).clone();
    if let Some(spec) = body.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .iter()
                .flatten()
                .filter(|f| *f != "kubernetes")
                .cloned()
                .collect(),
        );
    }
    let req = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    match ctx.client.request::<Namespace>(req).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
