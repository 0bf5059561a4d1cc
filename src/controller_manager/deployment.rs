//! The deployment controller: rolls a pod template out through replica sets.
//!
//! A Deployment never creates pods itself. For each version of its pod template it owns one
//! ReplicaSet named `<deployment>-<hash>`, where the hash (also the pods' `pod-template-hash`
//! label, which keeps the replica sets' selectors apart) is computed from the template. A sync:
//!
//! 1. claims its replica sets (adopting orphans its selector matches);
//! 2. finds the *new* replica set (the one whose template equals the deployment's, ignoring the
//!    hash label) and the *old* ones, and numbers revisions (`deployment.kubernetes.io/revision`:
//!    the new one gets max(old)+1, which is also how `kubectl rollout undo` works: kubectl copies
//!    an old replica set's template back, and that replica set becomes the newest revision);
//! 3. if paused, or only `replicas` changed, scales the replica sets proportionally; otherwise
//!    rolls out: **RollingUpdate** scales the new set up by at most `maxSurge` above `replicas` and
//!    the old ones down while keeping at least `replicas - maxUnavailable` available;
//!    **Recreate** scales the old sets to 0, waits for their pods to go, then scales up the new;
//! 4. deletes old, empty replica sets beyond `revisionHistoryLimit`;
//! 5. writes status (replicas, updated, ready, available, unavailable) and the conditions
//!    `Available` and `Progressing` (with `progressDeadlineSeconds`), which
//!    `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::Ctx;
use super::informer::Queue;
use super::util::{self, Events};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const HASH_LABEL: &str = "pod-template-hash";

pub struct DeploymentController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    events: Events,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("deployment");
    let c = Arc::new(DeploymentController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "deployment-controller"),
    });
    let q = queue.clone();
    ctx.inf
        .deployments
        .on_change(move |d, _| q.add(util::key_of(&d.metadata)));
    let weak = Arc::downgrade(&c);
    ctx.inf.replicasets.on_change(move |rs, _| {
        if let Some(c) = weak.upgrade() {
            c.rs_changed(rs);
        }
    });
    // Recreate waits for old pods to be gone: a deleted pod wakes its deployment.
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, change| {
        if change != super::informer::Change::Deleted {
            return;
        }
        let Some(c) = weak.upgrade() else { return };
        let ns = pod.namespace().unwrap_or_default();
        if let Some(r) = util::controller_ref(&pod.metadata)
            && r.kind == "ReplicaSet"
            && let Some(rs) = c
                .ctx
                .inf
                .replicasets
                .store()
                .get(&ObjectRef::new(&r.name).within(&ns))
            && let Some(dr) = util::controller_ref(&rs.metadata)
            && dr.kind == "Deployment"
        {
            c.queue.add(format!("{ns}/{}", dr.name));
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (i64, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        rs.name_any(),
    )
}

/// The template without the `pod-template-hash` label, as JSON (for equality and hashing).
fn template_without_hash(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    v
}

struct Fence {
    max_surge: i32,
    max_unavailable: i32,
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// The real `ResolveFenceposts`: maxSurge rounds up, maxUnavailable down; both 0 → 1 unavailable.
fn fenceposts(d: &Deployment) -> Fence {
    let replicas = desired(d);
    if !is_rolling(d) {
        return Fence {
            max_surge: 0,
            max_unavailable: 0,
        };
    }
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = util::scaled_value(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, "25%");
    let mut unavail = util::scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        "25%",
    );
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    Fence {
        max_surge: surge,
        max_unavailable: unavail,
    }
}

fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// The real `MaxUnavailable`: at most `replicas`.
fn max_unavailable(d: &Deployment) -> i32 {
    let r = desired(d);
    if !is_rolling(d) || r == 0 {
        return 0;
    }
    fenceposts(d).max_unavailable.min(r)
}

fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).max_surge
}

fn condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == t)
}

fn new_condition(t: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time(util::now());
    DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The real `SetDeploymentCondition`: no change when status and reason are the same; the
/// transition time kept when only the reason changes.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(s: &mut DeploymentStatus, t: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|x| x.type_ != t);
    }
}

impl DeploymentController {
    fn rs_changed(&self, rs: &ReplicaSet) {
        let deployments = self.ctx.inf.deployments.store().state();
        for key in util::owners_to_wake(&rs.metadata, "Deployment", &deployments, |d| {
            d.spec.as_ref().map(|s| &s.selector)
        }) {
            self.queue.add(key);
        }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(d) = self
            .ctx
            .inf
            .deployments
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            return Ok(());
        };
        let mut d: Deployment = (*d).clone();
        let Some(spec) = d.spec.clone() else {
            return Ok(());
        };
        if util::selector_is_empty(&spec.selector) {
            self.events.warning(
                util::object_ref(&d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(());
        }
        let mut rs_list = self.claim_replica_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut d, &mut rs_list).await;
        }
        // Paused: a Progressing condition saying so, and scaling only.
        self.check_paused_conditions(&mut d).await?;
        if spec.paused == Some(true) {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if self.is_scaling_event(&d, &rs_list) {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(&mut d, &mut rs_list).await
        } else {
            self.rollout_recreate(&mut d, &mut rs_list).await
        }
    }

    /// The replica sets this deployment controls, adopting matching orphans and releasing
    /// owned ones that no longer match.
    async fn claim_replica_sets(&self, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.uid().unwrap_or_default();
        let Some(sel) = d.spec.as_ref().map(|s| &s.selector) else {
            return Ok(vec![]);
        };
        let api = self.rs_api(&ns);
        let mut out = Vec::new();
        for rs in self.ctx.inf.replicasets.store().state() {
            if rs.namespace().as_deref() != Some(ns.as_str()) {
                continue;
            }
            let matches = util::selector_matches(sel, rs.metadata.labels.as_ref());
            match util::controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || d.metadata.deletion_timestamp.is_some() {
                        out.push((*rs).clone());
                    } else {
                        let refs: Vec<_> = rs
                            .owner_references()
                            .iter()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        let p = json!({"metadata": {"ownerReferences": refs, "uid": rs.uid()}});
                        match api
                            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p))
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if util::is_not_found(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if matches
                        && d.metadata.deletion_timestamp.is_none()
                        && rs.metadata.deletion_timestamp.is_none()
                    {
                        let mut refs = rs.owner_references().to_vec();
                        refs.push(util::new_controller_ref(d));
                        let p = json!({"metadata": {"ownerReferences": refs, "uid": rs.uid()}});
                        match api
                            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p))
                            .await
                        {
                            Ok(rs) => out.push(rs),
                            Err(e) if util::is_not_found(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        out.sort_by_key(created);
        Ok(out)
    }

    fn split_new_old<'a>(
        &self,
        d: &Deployment,
        rs_list: &'a [ReplicaSet],
    ) -> (Option<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
        let want = template_without_hash(d.spec.as_ref().map(|s| &s.template));
        // The oldest replica set with an equal template is the new one.
        let new = rs_list.iter().find(|rs| {
            template_without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want
        });
        let old = rs_list
            .iter()
            .filter(|rs| new.is_none_or(|n| n.uid() != rs.uid()))
            .collect();
        (new, old)
    }

    fn is_scaling_event(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> bool {
        let want = desired(d).to_string();
        rs_list.iter().filter(|rs| replicas_of(rs) > 0).any(|rs| {
            rs.annotations()
                .get(DESIRED_REPLICAS)
                .is_some_and(|v| *v != want)
        })
    }

    async fn check_paused_conditions(&self, d: &mut Deployment) -> anyhow::Result<()> {
        let spec = d.spec.clone().unwrap_or_default();
        if spec.progress_deadline_seconds.is_none() {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let cur = condition(&status, "Progressing").cloned();
        let paused = spec.paused == Some(true);
        let paused_cond = cur
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        let c = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        set_condition(&mut status, c);
        self.write_status(d, status).await
    }

    /// Finds (and, when `create`, creates) the new replica set; syncs revision annotations.
    async fn new_and_old(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> anyhow::Result<Option<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let (new, old) = self.split_new_old(d, rs_list);
        let max_old = old.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let want = desired(d);
        let max_total = want + max_surge(d);
        let mut status = d.status.clone().unwrap_or_default();
        if let Some(new) = new {
            let new = new.clone();
            let mut rs = new.clone();
            let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
            let mut changed = false;
            if revision_of(&new) < max_old + 1 {
                // An old template came back (rollout undo): its revisions are remembered.
                if let Some(prev) = a.get(REVISION).cloned()
                    && revision_of(&new) > 0
                {
                    let hist = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
                    let hist = if hist.is_empty() {
                        prev
                    } else {
                        format!("{hist},{prev}")
                    };
                    a.insert(REVISION_HISTORY.into(), hist);
                }
                a.insert(REVISION.into(), new_revision.clone());
                changed = true;
            }
            if a.get(DESIRED_REPLICAS) != Some(&want.to_string()) && replicas_of(&new) == want {
                a.insert(DESIRED_REPLICAS.into(), want.to_string());
                a.insert(MAX_REPLICAS.into(), max_total.to_string());
                changed = true;
            }
            let rs = if changed {
                self.rs_api(&ns)
                    .replace(&rs.name_any(), &PostParams::default(), &rs)
                    .await?
            } else {
                new
            };
            if let Some(slot) = rs_list.iter_mut().find(|x| x.uid() == rs.uid()) {
                *slot = rs.clone();
            }
            self.set_deployment_revision(d, &revision_of(&rs).to_string())
                .await?;
            if condition(&status, "Progressing").is_none()
                && d.spec
                    .as_ref()
                    .and_then(|s| s.progress_deadline_seconds)
                    .is_some()
            {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
                self.write_status(d, status).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        // Create the new replica set `<deployment>-<hash>`.
        let spec = d.spec.clone().unwrap_or_default();
        let collision = status.collision_count;
        let hash = util::compute_hash(&template_without_hash(Some(&spec.template)), collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = d
            .annotations()
            .iter()
            .filter(|(k, _)| {
                k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                    && k.as_str() != REVISION
                    && k.as_str() != "deployment.kubernetes.io/revision-history"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION.into(), new_revision.clone());
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), max_total.to_string());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![util::new_controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = rs_list.iter().collect();
        let count = if is_rolling(d) {
            new_rs_new_replicas(d, &all, 0)
        } else {
            want
        };
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        let rs = match self.rs_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(rs) => rs,
            Err(e) if util::is_conflict(&e) => {
                // A replica set of that name exists: ours with this template (a stale cache),
                // or a hash collision — then bump collisionCount and try another name.
                let name = rs.name_any();
                let existing = self.rs_api(&ns).get(&name).await?;
                let ours = util::controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.uid().as_ref());
                if ours
                    && template_without_hash(
                        existing.spec.as_ref().and_then(|s| s.template.as_ref()),
                    ) == template_without_hash(Some(&spec.template))
                {
                    rs_list.push(existing.clone());
                    return Ok(Some(existing));
                }
                status.collision_count = Some(collision.unwrap_or(0) + 1);
                self.write_status(d, status).await?;
                anyhow::bail!("hash collision for replica set {name}; collisionCount bumped");
            }
            Err(e) => return Err(e.into()),
        };
        if count > 0 {
            self.events.normal(
                util::object_ref(d),
                "ScalingReplicaSet",
                format!("Scaled up replica set {} to {count} from 0", rs.name_any()),
            );
        }
        rs_list.push(rs.clone());
        self.set_deployment_revision(d, &new_revision).await?;
        if d.spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_some()
        {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{}\"", rs.name_any()),
                ),
            );
            self.write_status(d, status).await?;
        }
        Ok(Some(rs))
    }

    async fn set_deployment_revision(&self, d: &mut Deployment, rev: &str) -> anyhow::Result<()> {
        if d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> =
            Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let p = json!({"metadata": {"annotations": {REVISION: rev}}});
        *d = api
            .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await?;
        Ok(())
    }

    async fn write_status(
        &self,
        d: &mut Deployment,
        status: DeploymentStatus,
    ) -> anyhow::Result<()> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Deployment> =
            Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let mut body = d.clone();
        body.status = Some(status);
        *d = api
            .replace_status(&d.name_any(), &PostParams::default(), &body)
            .await?;
        Ok(())
    }

    /// Sets a replica set's size and replica annotations; records ScalingReplicaSet.
    async fn scale_rs(
        &self,
        d: &Deployment,
        rs_list: &mut [ReplicaSet],
        uid: &str,
        to: i32,
    ) -> anyhow::Result<bool> {
        let Some(rs) = rs_list.iter_mut().find(|r| r.uid().as_deref() == Some(uid)) else {
            return Ok(false);
        };
        let from = replicas_of(rs);
        let want = desired(d).to_string();
        let max = (desired(d) + max_surge(d)).to_string();
        let a = rs.annotations();
        let annotations_stale =
            a.get(DESIRED_REPLICAS) != Some(&want) || a.get(MAX_REPLICAS) != Some(&max);
        if from == to && !annotations_stale {
            return Ok(false);
        }
        let mut body = rs.clone();
        if let Some(s) = body.spec.as_mut() {
            s.replicas = Some(to);
        }
        let a = body.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(DESIRED_REPLICAS.into(), want);
        a.insert(MAX_REPLICAS.into(), max);
        let updated = self
            .rs_api(&rs.namespace().unwrap_or_default())
            .replace(&rs.name_any(), &PostParams::default(), &body)
            .await?;
        *rs = updated;
        if from != to {
            let op = if to > from { "up" } else { "down" };
            self.events.normal(
                util::object_ref(d),
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} to {to} from {from}",
                    rs.name_any()
                ),
            );
            return Ok(true);
        }
        Ok(false)
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let new = self.new_and_old(d, rs_list, true).await?;
        let Some(new) = new else {
            return Ok(());
        };
        let new_uid = new.uid().unwrap_or_default();
        // Scale up the new replica set.
        let want = desired(d);
        let cur = replicas_of(&new);
        if cur != want {
            let to = if cur > want {
                want
            } else {
                let all: Vec<&ReplicaSet> = rs_list.iter().collect();
                new_rs_new_replicas(d, &all, cur)
            };
            if self.scale_rs(d, rs_list, &new_uid, to).await? {
                return self.sync_rollout_status(d, rs_list, Some(&new_uid)).await;
            }
        }
        // Scale down old replica sets, keeping minAvailable.
        if self.reconcile_old(d, rs_list, &new_uid).await? {
            return self.sync_rollout_status(d, rs_list, Some(&new_uid)).await;
        }
        self.sync_rollout_status(d, rs_list, Some(&new_uid)).await?;
        if deployment_complete(d) {
            self.cleanup(d, rs_list, &new_uid).await?;
        }
        Ok(())
    }

    async fn reconcile_old(
        &self,
        d: &Deployment,
        rs_list: &mut [ReplicaSet],
        new_uid: &str,
    ) -> anyhow::Result<bool> {
        let old_count: i32 = rs_list
            .iter()
            .filter(|r| r.uid().as_deref() != Some(new_uid))
            .map(replicas_of)
            .sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count: i32 = rs_list.iter().map(replicas_of).sum();
        let min_available = desired(d) - max_unavailable(d);
        let new = rs_list.iter().find(|r| r.uid().as_deref() == Some(new_uid));
        let new_unavailable = new.map(|n| replicas_of(n) - status_of(n).2).unwrap_or(0);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut old: Vec<(String, i32, i32)> = rs_list
            .iter()
            .filter(|r| r.uid().as_deref() != Some(new_uid) && replicas_of(r) > 0)
            .map(|r| (r.uid().unwrap_or_default(), replicas_of(r), status_of(r).2))
            .collect();
        // Oldest first (rs_list is sorted by creation).
        let mut total_scaled = 0;
        // First, unhealthy replicas of old sets (cleanupUnhealthyReplicas).
        for (uid, replicas, available) in old.iter_mut() {
            if total_scaled >= max_scaled_down {
                break;
            }
            // Only replicas beyond the available ones are unhealthy. (The status may lag the
            // spec: a set just scaled down still reports its old available count; the real
            // cleanupUnhealthyReplicas refuses to "scale down" upwards, and so does this.)
            if *available >= *replicas {
                continue;
            }
            let n = (*replicas - *available).min(max_scaled_down - total_scaled);
            if n <= 0 {
                continue;
            }
            let to = *replicas - n;
            self.scale_rs(d, rs_list, uid, to).await?;
            total_scaled += n;
            *replicas = to;
        }
        // Then, available replicas down to minAvailable.
        let available_all: i32 = rs_list.iter().map(|r| status_of(r).2).sum();
        if available_all > min_available {
            let mut budget = (available_all - min_available).min(max_scaled_down - total_scaled);
            for (uid, replicas, _) in old.iter_mut() {
                if budget <= 0 {
                    break;
                }
                if *replicas == 0 {
                    continue;
                }
                let n = (*replicas).min(budget);
                self.scale_rs(d, rs_list, uid, *replicas - n).await?;
                budget -= n;
                total_scaled += n;
            }
        }
        Ok(total_scaled > 0)
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let new = self.new_and_old(d, rs_list, false).await?;
        let new_uid = new.as_ref().and_then(|n| n.uid()).unwrap_or_default();
        let old: Vec<String> = rs_list
            .iter()
            .filter(|r| r.uid().as_deref() != Some(new_uid.as_str()) && replicas_of(r) > 0)
            .filter_map(|r| r.uid())
            .collect();
        let mut scaled = false;
        for uid in &old {
            scaled |= self.scale_rs(d, rs_list, uid, 0).await?;
        }
        if scaled {
            return self.sync_rollout_status(d, rs_list, Some(&new_uid)).await;
        }
        // Wait for every old pod to be gone.
        let old_uids: Vec<String> = rs_list
            .iter()
            .filter(|r| r.uid().as_deref() != Some(new_uid.as_str()))
            .filter_map(|r| r.uid())
            .collect();
        let ns = d.namespace().unwrap_or_default();
        let old_running = self.ctx.inf.pods.store().state().iter().any(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && util::controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && !matches!(util::pod_phase(p), "Succeeded" | "Failed")
        });
        if old_running {
            return self.sync_rollout_status(d, rs_list, Some(&new_uid)).await;
        }
        let new = match new {
            Some(n) => n,
            None => match self.new_and_old(d, rs_list, true).await? {
                Some(n) => n,
                None => return Ok(()),
            },
        };
        let new_uid = new.uid().unwrap_or_default();
        let want = desired(d);
        if self.scale_rs(d, rs_list, &new_uid, want).await? {
            return self.sync_rollout_status(d, rs_list, Some(&new_uid)).await;
        }
        self.sync_rollout_status(d, rs_list, Some(&new_uid)).await?;
        if deployment_complete(d) {
            self.cleanup(d, rs_list, &new_uid).await?;
        }
        Ok(())
    }

    /// Scaling without a rollout (paused, or only `replicas` changed): the real `scale`.
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let new = self.new_and_old(d, rs_list, false).await?;
        let new_uid = new.as_ref().and_then(|n| n.uid());
        let want = desired(d);
        let active: Vec<(String, i32)> = rs_list
            .iter()
            .filter(|r| replicas_of(r) > 0)
            .map(|r| (r.uid().unwrap_or_default(), replicas_of(r)))
            .collect();
        if active.len() <= 1 {
            // One active replica set (or none: the newest) takes all replicas.
            let target = active
                .first()
                .map(|(u, _)| u.clone())
                .or_else(|| new_uid.clone())
                .or_else(|| rs_list.last().and_then(|r| r.uid()));
            if let Some(uid) = target {
                self.scale_rs(d, rs_list, &uid, want).await?;
            }
        } else if let Some(nu) = new_uid.clone()
            && rs_list.iter().any(|r| {
                r.uid().as_deref() == Some(nu.as_str())
                    && replicas_of(r) == want
                    && status_of(r).2 == want
            })
        {
            // The new replica set is saturated: old ones go to 0.
            for (uid, _) in active.iter().filter(|(u, _)| *u != nu) {
                self.scale_rs(d, rs_list, uid, 0).await?;
            }
        } else if is_rolling(d) {
            // Proportional scaling across the active replica sets.
            let allowed = want + max_surge(d);
            let current: i32 = active.iter().map(|(_, r)| *r).sum();
            let to_add = allowed - current;
            let mut plan: Vec<(String, i32)> = Vec::new();
            let mut added = 0;
            // Largest first, newest first on ties (the real ReplicaSetsBySizeNewer).
            let mut order: Vec<&ReplicaSet> =
                rs_list.iter().filter(|r| replicas_of(r) > 0).collect();
            order.sort_by(|a, b| {
                replicas_of(b)
                    .cmp(&replicas_of(a))
                    .then(created(b).cmp(&created(a)))
            });
            for rs in &order {
                let r = replicas_of(rs);
                let share = if current > 0 {
                    let f = f64::from(r) * f64::from(to_add) / f64::from(current);
                    f.round() as i32
                } else {
                    0
                };
                let share = if to_add > 0 {
                    share.min(to_add - added)
                } else {
                    share.max(to_add - added)
                };
                added += share;
                plan.push((rs.uid().unwrap_or_default(), (r + share).max(0)));
            }
            if let Some(first) = plan.first_mut() {
                first.1 = (first.1 + to_add - added).max(0);
            }
            for (uid, to) in plan {
                self.scale_rs(d, rs_list, &uid, to).await?;
            }
        }
        if let Some(nu) = &new_uid
            && deployment_complete(d)
        {
            self.cleanup(d, rs_list, nu).await?;
        }
        self.sync_rollout_status(d, rs_list, new_uid.as_deref())
            .await
    }

    async fn sync_status_only(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let new = self.new_and_old(d, rs_list, false).await?;
        let new_uid = new.and_then(|n| n.uid());
        self.sync_rollout_status(d, rs_list, new_uid.as_deref())
            .await
    }

    /// Deletes old empty replica sets beyond `revisionHistoryLimit` (default 10), oldest
    /// revision first.
    async fn cleanup(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
        new_uid: &str,
    ) -> anyhow::Result<()> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut old: Vec<&ReplicaSet> = rs_list
            .iter()
            .filter(|r| {
                r.uid().as_deref() != Some(new_uid) && r.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        old.sort_by_key(|r| (revision_of(r), created(r)));
        let excess = old.len() - limit;
        for rs in old
            .into_iter()
            .filter(|r| replicas_of(r) == 0 && status_of(r).0 == 0)
            .take(excess)
        {
            match self
                .rs_api(&rs.namespace().unwrap_or_default())
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes status and conditions; asks to be woken at the progress deadline.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        new_uid: Option<&str>,
    ) -> anyhow::Result<()> {
        let spec = d.spec.clone().unwrap_or_default();
        let old_status = d.status.clone().unwrap_or_default();
        let new = new_uid.and_then(|u| rs_list.iter().find(|r| r.uid().as_deref() == Some(u)));
        let want = desired(d);
        let mut s = old_status.clone();
        s.observed_generation = d.metadata.generation;
        s.replicas = Some(rs_list.iter().map(|r| status_of(r).0).sum());
        s.updated_replicas = Some(new.map(|n| status_of(n).0).unwrap_or(0));
        s.ready_replicas = Some(rs_list.iter().map(|r| status_of(r).1).sum());
        s.available_replicas = Some(rs_list.iter().map(|r| status_of(r).2).sum());
        let total_spec: i32 = rs_list.iter().map(replicas_of).sum();
        s.unavailable_replicas = Some((total_spec - s.available_replicas.unwrap_or(0)).max(0));
        // Zero counts are omitted in the real API (omitempty).
        for f in [
            &mut s.replicas,
            &mut s.updated_replicas,
            &mut s.ready_replicas,
            &mut s.available_replicas,
            &mut s.unavailable_replicas,
        ] {
            if *f == Some(0) {
                *f = None;
            }
        }
        if s.available_replicas.unwrap_or(0) >= want - max_unavailable(d) {
            set_condition(
                &mut s,
                new_condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut s,
                new_condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        let mut requeue = None;
        if let Some(deadline) = spec.progress_deadline_seconds
            && spec.paused != Some(true)
        {
            let complete = s.updated_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
                && s.observed_generation >= d.metadata.generation;
            let cur = condition(&s, "Progressing").cloned();
            let rs_name = new.map(|n| n.name_any()).unwrap_or_default();
            let progressing = s.updated_replicas > old_status.updated_replicas
                || s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0)
                    < old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0)
                || s.ready_replicas > old_status.ready_replicas
                || s.available_replicas > old_status.available_replicas;
            if complete && new.is_some() {
                set_condition(
                    &mut s,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    ),
                );
            } else if progressing && new.is_some() {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                );
                if let Some(cur) = &cur
                    && cur.status == "True"
                {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut s, "Progressing");
                set_condition(&mut s, c);
            } else if let Some(cur) = &cur
                && cur.reason.as_deref() != Some("NewReplicaSetAvailable")
                && cur.reason.as_deref() != Some("ProgressDeadlineExceeded")
                && !complete
            {
                let since = cur
                    .last_update_time
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(0);
                let due = since + i64::from(deadline);
                let now = util::now().as_second();
                if now > due {
                    set_condition(
                        &mut s,
                        new_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                        ),
                    );
                } else {
                    requeue = Some(Duration::from_secs((due - now + 1) as u64));
                }
            }
            if !complete
                && requeue.is_none()
                && condition(&s, "Progressing")
                    .is_some_and(|c| c.reason.as_deref() != Some("ProgressDeadlineExceeded"))
            {
                requeue = Some(Duration::from_secs(u64::from(deadline.max(0) as u32) + 1));
            }
        }
        // Keep conditions in the order the real controller shows them: Available, Progressing.
        if let Some(c) = s.conditions.as_mut() {
            c.sort_by_key(|c| match c.type_.as_str() {
                "Available" => 0,
                "Progressing" => 1,
                _ => 2,
            });
        }
        self.write_status(d, s).await?;
        if let Some(after) = requeue {
            self.queue.add_after(util::key_of(&d.metadata), after);
        }
        Ok(())
    }
}

/// The real `NewRSNewReplicas` for RollingUpdate: scale up by what maxSurge allows.
fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_current: i32) -> i32 {
    let want = desired(d);
    let current: i32 = all.iter().map(|r| replicas_of(r)).sum();
    let max_total = want + max_surge(d);
    if current >= max_total {
        return new_current;
    }
    let up = (max_total - current).min(want - new_current).max(0);
    new_current + up
}

/// The real `DeploymentComplete`, on the deployment's last written status.
fn deployment_complete(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    let want = desired(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation >= d.metadata.generation
}
