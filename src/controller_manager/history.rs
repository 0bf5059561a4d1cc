//! ControllerRevisions, and claiming pods: what the daemon set and stateful set controllers share.
//!
//! A Deployment keeps old versions of its template in old ReplicaSets. DaemonSets and
//! StatefulSets own their pods directly, so they keep the history of their pod template in
//! ControllerRevision objects instead: each revision holds, in `data`, the strategic merge patch
//! `{"spec":{"template":{…,"$patch":"replace"}}}` that puts that template back on the owner (what
//! `kubectl rollout undo` applies), and a `revision` number (higher is newer). Pods carry the label
//! `controller-revision-hash` naming the revision they were made from, so the controllers can
//! tell updated pods from old ones. Only `revisionHistoryLimit` old revisions no live pod still
//! uses are kept.
//!
//! Claiming: a controller owns the pods with its controller reference that its selector still
//! matches; it releases those that stopped matching and adopts matching orphans (the real
//! `PodControllerRefManager`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::Ctx;
use super::util;

/// The label naming the revision a pod (or a revision itself) belongs to.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The revision data of a template: a strategic merge patch that replaces `spec.template`.
pub fn template_patch(template: Option<&PodTemplateSpec>) -> Value {
    let mut t = template
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// Whether `rev` holds `patch`.
pub fn holds(rev: &ControllerRevision, patch: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == patch)
}

/// The template stored in a revision (without its `$patch` directive).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The revisions controlled by the object with `uid` in `ns`, oldest (lowest revision) first.
pub fn owned(ctx: &Ctx, ns: &str, uid: &str) -> Vec<Arc<ControllerRevision>> {
    let mut v: Vec<Arc<ControllerRevision>> = ctx
        .inf
        .controllerrevisions
        .store()
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
        .filter(|r| util::controller_ref(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    sort_by_revision(&mut v);
    v
}

pub fn sort_by_revision(v: &mut [Arc<ControllerRevision>]) {
    v.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

pub fn max_revision(v: &[Arc<ControllerRevision>]) -> i64 {
    v.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// What a new revision is made of.
pub struct NewRevision<'a> {
    pub namespace: &'a str,
    pub owner_name: &'a str,
    pub owner_ref: OwnerReference,
    pub labels: BTreeMap<String, String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub data: Value,
    pub revision: i64,
}

/// Creates the revision `<owner>-<hash(collision_count)>`. When that name is taken by a revision
/// holding other data (a hash collision), bumps `collision_count` and tries the next name, as
/// the real `CreateControllerRevision` does; the caller records the count in its status.
/// `hash` maps a collision count to the hash; the revision is labelled with it.
pub async fn create(
    client: &Client,
    new: NewRevision<'_>,
    collision_count: &mut i32,
    hash: impl Fn(i32) -> String,
) -> anyhow::Result<ControllerRevision> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), new.namespace);
    for _ in 0..100 {
        let h = hash(*collision_count);
        let name = format!("{}-{h}", new.owner_name);
        let mut labels = new.labels.clone();
        labels.insert(HASH_LABEL.into(), h.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(new.namespace.into()),
                labels: Some(labels),
                annotations: new.annotations.clone(),
                owner_references: Some(vec![new.owner_ref.clone()]),
                ..Default::default()
            },
            data: Some(RawExtension(new.data.clone())),
            revision: new.revision,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => return Ok(r),
            Err(e) if util::is_conflict(&e) => {
                let existing = api.get(&name).await?;
                if holds(&existing, &new.data)
                    && util::controller_ref(&existing.metadata)
                        .is_some_and(|o| o.uid == new.owner_ref.uid)
                {
                    return Ok(existing);
                }
                *collision_count += 1;
                tracing::info!(
                    owner = new.owner_name,
                    collision_count = *collision_count,
                    "hash collision between controller revisions; bumping collisionCount"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "could not find a free controller revision name for {}",
        new.owner_name
    )
}

/// Renumbers `rev` (it became current again, e.g. after a rollback).
pub async fn set_revision(
    client: &Client,
    rev: &ControllerRevision,
    revision: i64,
) -> anyhow::Result<ControllerRevision> {
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &rev.namespace().unwrap_or_default());
    let patch = json!({"revision": revision, "metadata": {"uid": rev.uid()}});
    Ok(api
        .patch(
            &rev.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Deletes the oldest of `old` (sorted oldest first) beyond `limit`, sparing revisions named in
/// `live` (still used by a pod).
pub async fn truncate(
    client: &Client,
    old: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> anyhow::Result<()> {
    let mut to_kill = old.len() as i64 - i64::from(limit.max(0));
    for rev in old {
        if to_kill <= 0 {
            break;
        }
        if live.contains(&rev.name_any()) {
            continue;
        }
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &rev.namespace().unwrap_or_default());
        match api.delete(&rev.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        to_kill -= 1;
    }
    Ok(())
}

/// Claims the pods of `owner` in its namespace: those it controls and its selector still
/// matches, plus the orphans it matches that `may_adopt` accepts (adopted by adding a controller
/// reference); pods it controls that no longer match are released. Being deleted, an owner
/// keeps what it has and adopts nothing.
pub async fn claim_pods<K>(
    ctx: &Ctx,
    owner: &K,
    selector: &LabelSelector,
    may_adopt: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Vec<Arc<Pod>>>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selectable = !util::selector_is_empty(selector);
    let mut owned = Vec::new();
    for pod in ctx.inf.pods.store().state() {
        if pod.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = selectable && util::selector_matches(selector, pod.metadata.labels.as_ref());
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(pod);
                    continue;
                }
                let refs: Vec<&OwnerReference> = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
                match pods_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {}
            None => {
                if matches
                    && !deleting
                    && pod.metadata.deletion_timestamp.is_none()
                    && may_adopt(&pod)
                {
                    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(util::new_controller_ref(owner));
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
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
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_replaces_the_template_and_round_trips() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let p = template_patch(Some(&t));
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            data: Some(RawExtension(p.clone())),
            ..Default::default()
        };
        assert!(holds(&rev, &p));
        assert_eq!(template_of(&rev), Some(t));
    }
}
