//! The stateful set controller: pods with stable identities, made and removed in order.
//!
//! A StatefulSet of `replicas: 3` named `web` runs the pods `web-0`, `web-1`, `web-2` (ordinals
//! from `spec.ordinals.start`, 0 by default). Each pod keeps its name for life: deleted, it is
//! recreated with the same name, hostname (`spec.hostname`) and DNS subdomain (`serviceName`,
//! the headless service giving `web-0.nginx.default.svc`), labels
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, and the same volume
//! claims: each `volumeClaimTemplates` entry `www` gives the pod a PersistentVolumeClaim
//! `www-web-0`, created before the pod and kept when the pod goes (unless
//! `persistentVolumeClaimRetentionPolicy` asks to delete it with the set or on scale-down).
//!
//! `podManagementPolicy: OrderedReady` (the default) creates pods one at a time in ordinal order,
//! each only once the one before is Running and Ready (and available for `minReadySeconds`),
//! and removes them one at a time from the highest ordinal down; `Parallel` creates and removes
//! them all at once. Template changes roll out from ControllerRevisions (see
//! [`super::history`]): each pod's `controller-revision-hash` label names the revision it was
//! made from; `updateStrategy: RollingUpdate` deletes the pods not of the update revision from the
//! highest ordinal down to `partition`, one at a time, each time waiting for the replacement to
//! be healthy (or up to `maxUnavailable` at a time when that is set); `OnDelete` waits for someone
//! to delete them. Pods below the partition are recreated from the current revision.
//!
//! The status (`replicas`, `readyReplicas`, `availableReplicas`, `currentReplicas`,
//! `updatedReplicas`, `currentRevision`, `updateRevision`, `collisionCount`,
//! `observedGeneration`) is what `kubectl rollout status sts/NAME` waits on; `kubectl rollout
//! undo` puts an older revision's template back, and the controller rolls to it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use super::expectations::Expectations;
use super::history::{self, HASH_LABEL};
use super::informer::Queue;
use super::util::{self, Events};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSetController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    expectations: Expectations,
    events: Events,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("statefulset");
    let c = Arc::new(StatefulSetController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: Events::new(ctx.client.clone(), "statefulset-controller"),
    });
    let q = queue.clone();
    ctx.inf
        .statefulsets
        .on_change(move |s, _| q.add(util::key_of(&s.metadata)));
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, _| {
        if let Some(c) = weak.upgrade() {
            let sets = c.ctx.inf.statefulsets.store().state();
            for key in util::owners_to_wake(&pod.metadata, "StatefulSet", &sets, |s| {
                s.spec.as_ref().map(|s| &s.selector)
            }) {
                c.queue.add(key);
            }
        }
    });
    let q = queue.clone();
    ctx.inf.controllerrevisions.on_change(move |rev, _| {
        if let Some(r) = util::controller_ref(&rev.metadata)
            && r.kind == "StatefulSet"
        {
            q.add(format!(
                "{}/{}",
                rev.metadata.namespace.as_deref().unwrap_or(""),
                r.name
            ));
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// The parent name and ordinal of a pod name `<parent>-<ordinal>` (the real `getParentNameAndOrdinal`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

fn ordinal_of(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Running and Ready (the real `isRunningAndReady`).
fn is_running_and_ready(pod: &Pod) -> bool {
    util::pod_phase(pod) == "Running" && util::pod_is_ready(pod)
}

/// Running, Ready and not terminating (the real `isHealthy`).
fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

/// The claim name of volume claim template `template` for pod `pod_name`.
pub fn claim_name(template: &str, pod_name: &str) -> String {
    format!("{template}-{pod_name}")
}

/// The pod for `ordinal`, from `template` at revision `revision` (the real
/// `newVersionedStatefulSetPod`): stable name, identity labels, hostname and subdomain, and a
/// volume per claim template pointing at its claim.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(svc) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc);
    }
    let claims = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[]);
    for claim in claims {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        let volume = Volume {
            name: cname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&cname, &name),
                read_only: None,
            }),
            ..Default::default()
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != cname);
        volumes.push(volume);
    }
    let mut pod = Pod {
        metadata: Default::default(),
        spec: Some(spec),
        status: None,
    };
    pod.metadata.name = Some(name);
    pod.metadata.namespace = set.namespace();
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![util::new_controller_ref(set)]);
    pod
}

/// One ordinal's state in a sync.
enum Slot {
    Existing(Arc<Pod>),
    /// Not in the API yet: the pod to create.
    Missing(Box<Pod>),
}

/// What one sync does to the pods.
#[derive(Debug)]
pub enum Action {
    Create(Box<Pod>),
    /// Delete a pod that ran to completion (Failed or Succeeded); it comes back next sync.
    Recreate(Arc<Pod>),
    Delete(Arc<Pod>),
    FixIdentity(Arc<Pod>),
}

#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Look again then (a pod becomes available after minReadySeconds).
    pub wake: Option<std::time::Duration>,
}

/// One step towards the wanted pods (the real `updateStatefulSet`), as a plan: create the
/// missing ordinals, recreate finished pods, scale down from the highest ordinal, then roll
/// out the update revision. With OrderedReady the plan stops at the first pod that is not yet
/// Running, Ready and available (and after each creation or deletion), so pods come and go one
/// at a time in order; with Parallel everything happens at once. `current` is the current
/// revision's name and template (for the pods below the partition).
pub fn plan_update(
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    current: (&str, &PodTemplateSpec),
    update_name: &str,
    now: jiff::Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = set.spec.as_ref() else {
        return plan;
    };
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let n = spec.replicas.unwrap_or(1).max(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let partition = ru.and_then(|r| r.partition).unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let mut by_ord: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for p in pods {
        if let Some(o) = ordinal_of(p) {
            if o >= start && o < start + n {
                by_ord.insert(o, p.clone());
            } else {
                condemned.push(p.clone());
            }
        }
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(n as usize);
    for ord in start..start + n {
        slots.push(match by_ord.remove(&ord) {
            Some(p) => Slot::Existing(p),
            // Below the partition, a missing pod comes back at the current revision.
            None if rolling && ord < partition => {
                Slot::Missing(Box::new(new_pod(set, current.1, current.0, ord)))
            }
            None => Slot::Missing(Box::new(new_pod(set, &spec.template, update_name, ord))),
        });
    }
    // Highest ordinal first.
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p)));
    let first_unhealthy: Option<String> = slots
        .iter()
        .find_map(|s| match s {
            Slot::Existing(p) if !is_healthy(p) => Some(p.name_any()),
            _ => None,
        })
        .or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|p| !is_healthy(p))
                .map(|p| p.name_any())
        });

    // Create, recreate and wait, in ordinal order.
    for slot in &slots {
        match slot {
            Slot::Missing(pod) => {
                plan.actions.push(Action::Create(pod.clone()));
                if monotonic {
                    return plan;
                }
            }
            Slot::Existing(pod) => {
                if matches!(util::pod_phase(pod), "Failed" | "Succeeded") {
                    if !is_terminating(pod) {
                        plan.actions.push(Action::Recreate(pod.clone()));
                    }
                    if monotonic {
                        return plan;
                    }
                    continue;
                }
                if monotonic && (is_terminating(pod) || !is_running_and_ready(pod)) {
                    return plan;
                }
                if let Some(d) = util::available_in(pod, min_ready, now).filter(|_| min_ready > 0) {
                    plan.wake = Some(plan.wake.map_or(d, |w| w.min(d)));
                    if monotonic {
                        return plan;
                    }
                }
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                let name = pod.name_any();
                if labels.get(POD_NAME_LABEL) != Some(&name)
                    || ordinal_of(pod).map(|o| o.to_string()).as_ref()
                        != labels.get(POD_INDEX_LABEL)
                {
                    plan.actions.push(Action::FixIdentity(pod.clone()));
                }
            }
        }
    }

    // Scale down: highest ordinal first, one at a time when monotonic.
    for pod in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        if monotonic
            && !is_running_and_ready(pod)
            && first_unhealthy.as_deref() != Some(pod.name_any().as_str())
        {
            return plan;
        }
        plan.actions.push(Action::Delete(pod.clone()));
        if monotonic {
            return plan;
        }
    }

    if !rolling {
        return plan;
    }
    // Rolling update: from the highest ordinal down to the partition.
    let existing: Vec<&Arc<Pod>> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Existing(p) => Some(p),
            Slot::Missing(_) => None,
        })
        .collect();
    let targets = existing
        .iter()
        .rev()
        .filter(|p| ordinal_of(p).is_some_and(|o| o >= partition));
    match ru.and_then(|r| r.max_unavailable.as_ref()) {
        None => {
            for pod in targets {
                if revision_of(pod) != update_name && !is_terminating(pod) {
                    plan.actions.push(Action::Delete((*pod).clone()));
                    return plan;
                }
                if !is_healthy(pod) {
                    return plan;
                }
            }
        }
        Some(mu) => {
            let max_unavailable = util::scaled_value(Some(mu), n, true, "1").max(1);
            let unavailable = existing.iter().filter(|p| !is_healthy(p)).count() as i32
                + (n - existing.len() as i32);
            let mut budget = max_unavailable - unavailable;
            for pod in targets {
                if budget <= 0 {
                    break;
                }
                if revision_of(pod) != update_name && !is_terminating(pod) {
                    plan.actions.push(Action::Delete((*pod).clone()));
                    budget -= 1;
                }
            }
        }
    }
    plan
}

impl StatefulSetController {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(set) = self
            .ctx
            .inf
            .statefulsets
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        if util::selector_is_empty(&spec.selector) {
            return Ok(());
        }
        let set_name = set.name_any();
        let pods = history::claim_pods(&self.ctx, set.as_ref(), &spec.selector, |p| {
            p.metadata
                .name
                .as_deref()
                .and_then(parent_and_ordinal)
                .is_some_and(|(parent, _)| parent == set_name)
        })
        .await?;
        let mut collision_count = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let (current_rev, update_rev, revisions) =
            self.revisions(&set, &mut collision_count).await?;

        let satisfied = self
            .expectations
            .satisfied(key, ns, self.ctx.inf.pods.store());
        if satisfied && set.metadata.deletion_timestamp.is_none() {
            self.update_set(key, &set, &pods, &current_rev, &update_rev)
                .await?;
            self.claim_owners(&set, &pods).await?;
        }
        self.update_status(&set, &pods, &current_rev, &update_rev, collision_count)
            .await?;
        // Old revisions beyond revisionHistoryLimit that no pod uses.
        let mut live: HashSet<String> = pods.iter().map(|p| revision_of(p).to_string()).collect();
        live.insert(current_rev.name_any());
        live.insert(update_rev.name_any());
        let old: Vec<Arc<ControllerRevision>> = revisions
            .into_iter()
            .filter(|r| !live.contains(&r.name_any()))
            .collect();
        history::truncate(
            &self.ctx.client,
            &old,
            &HashSet::new(),
            spec.revision_history_limit.unwrap_or(10),
        )
        .await
    }

    /// (current revision, update revision, all revisions) — the update revision holds the
    /// set's template (found, renumbered to be the newest if an older one holds it, or created);
    /// the current revision is the one `status.currentRevision` names, else the update one.
    async fn revisions(
        &self,
        set: &StatefulSet,
        collision_count: &mut i32,
    ) -> anyhow::Result<(
        ControllerRevision,
        ControllerRevision,
        Vec<Arc<ControllerRevision>>,
    )> {
        let ns = set.namespace().unwrap_or_default();
        let template = set.spec.as_ref().map(|s| &s.template);
        let patch = history::template_patch(template);
        let revisions = history::owned(&self.ctx, &ns, &set.uid().unwrap_or_default());
        let max = history::max_revision(&revisions);
        let update = match revisions.iter().rev().find(|r| history::holds(r, &patch)) {
            Some(r) if r.revision == max => (**r).clone(),
            Some(r) => history::set_revision(&self.ctx.client, r, max + 1).await?,
            None => {
                let labels = template
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                let data = patch.clone();
                history::create(
                    &self.ctx.client,
                    history::NewRevision {
                        namespace: &ns,
                        owner_name: &set.name_any(),
                        owner_ref: util::new_controller_ref(set),
                        labels,
                        annotations: None,
                        data: patch,
                        revision: max + 1,
                    },
                    collision_count,
                    |c| util::compute_hash(&data, Some(c).filter(|c| *c != 0)),
                )
                .await?
            }
        };
        let wanted = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_default();
        let current = revisions
            .iter()
            .find(|r| !wanted.is_empty() && r.name_any() == wanted)
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update.clone());
        Ok((current, update, revisions))
    }

    /// One step towards the wanted pods: plans it ([`plan_update`]), then carries it out.
    async fn update_set(
        &self,
        key: &str,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        current_rev: &ControllerRevision,
        update_rev: &ControllerRevision,
    ) -> anyhow::Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        let current_template =
            history::template_of(current_rev).unwrap_or_else(|| spec.template.clone());
        let plan = plan_update(
            set,
            pods,
            (&current_rev.name_any(), &current_template),
            &update_rev.name_any(),
            util::now(),
        );
        if let Some(d) = plan.wake {
            self.queue.add_after(key.to_string(), d);
        }
        for action in plan.actions {
            match action {
                Action::Create(pod) => self.create_pod(key, set, &pod).await?,
                Action::Recreate(pod) => {
                    let (reason, what) = if util::pod_phase(&pod) == "Failed" {
                        ("RecreatingFailedPod", "failed")
                    } else {
                        ("RecreatingTerminatedPod", "terminated")
                    };
                    self.events.warning(
                        util::object_ref(set),
                        reason,
                        format!(
                            "StatefulSet {}/{} is recreating {what} Pod {}",
                            set.namespace().unwrap_or_default(),
                            set.name_any(),
                            pod.name_any()
                        ),
                    );
                    self.delete_pod(key, set, &pod).await?
                }
                Action::Delete(pod) => self.delete_pod(key, set, &pod).await?,
                Action::FixIdentity(pod) => self.fix_identity(set, &pod).await?,
            }
        }
        Ok(())
    }

    async fn create_pod(&self, key: &str, set: &StatefulSet, pod: &Pod) -> anyhow::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let pname = pod.name_any();
        self.create_claims(set, &pname).await?;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.expectations.created(key, pname.clone());
                self.events.normal(
                    util::object_ref(set),
                    "SuccessfulCreate",
                    format!(
                        "create Pod {pname} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            Err(e) => {
                self.events.warning(
                    util::object_ref(set),
                    "FailedCreate",
                    format!(
                        "create Pod {pname} in StatefulSet {} failed error: {}",
                        set.name_any(),
                        util::error_message(&e)
                    ),
                );
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, key: &str, set: &StatefulSet, pod: &Pod) -> anyhow::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let pname = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        self.expectations
            .deleted(key, pod.uid().unwrap_or_default());
        match api.delete(&pname, &DeleteParams::default()).await {
            Ok(_) => {
                self.events.normal(
                    util::object_ref(set),
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {pname} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => {
                self.expectations.forget(key);
                self.events.warning(
                    util::object_ref(set),
                    "FailedDelete",
                    format!(
                        "delete Pod {pname} in StatefulSet {} failed error: {}",
                        set.name_any(),
                        util::error_message(&e)
                    ),
                );
                Err(e.into())
            }
        }
    }

    /// Puts back the identity labels of a pod that lost them (the real `updateIdentity`; the
    /// hostname and subdomain of a live pod cannot change).
    async fn fix_identity(&self, set: &StatefulSet, pod: &Pod) -> anyhow::Result<()> {
        let pname = pod.name_any();
        let Some(ord) = ordinal_of(pod) else {
            return Ok(());
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get(POD_NAME_LABEL) == Some(&pname)
            && labels.get(POD_INDEX_LABEL) == Some(&ord.to_string())
        {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &set.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"labels": {
            POD_NAME_LABEL: pname, POD_INDEX_LABEL: ord.to_string()}}});
        match api
            .patch(&pname, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.events.normal(
                    util::object_ref(set),
                    "SuccessfulUpdate",
                    format!(
                        "update Pod {pname} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The owner references the retention policy wants on a claim: the set when
    /// `whenDeleted: Delete`; the pod when `whenScaled: Delete` and its ordinal is beyond the
    /// replicas.
    fn claim_owner_refs(
        set: &StatefulSet,
        pod: Option<&Pod>,
        condemned: bool,
    ) -> Vec<OwnerReference> {
        let policy = set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        let mut refs = Vec::new();
        if policy.and_then(|p| p.when_deleted.as_deref()) == Some("Delete") {
            let mut r = util::new_controller_ref(set);
            r.controller = Some(true);
            refs.push(r);
        }
        if condemned
            && policy.and_then(|p| p.when_scaled.as_deref()) == Some("Delete")
            && let Some(pod) = pod
        {
            let mut r = util::new_controller_ref(pod);
            r.controller = Some(false);
            r.block_owner_deletion = None;
            refs.push(r);
        }
        refs
    }

    /// Creates the claims of `pod_name` that do not exist yet.
    async fn create_claims(&self, set: &StatefulSet, pod_name: &str) -> anyhow::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
        for t in spec.volume_claim_templates.iter().flatten() {
            let cname = claim_name(t.metadata.name.as_deref().unwrap_or(""), pod_name);
            if self
                .ctx
                .inf
                .persistentvolumeclaims
                .store()
                .get(&ObjectRef::new(&cname).within(&ns))
                .is_some()
            {
                continue;
            }
            let mut claim = PersistentVolumeClaim {
                metadata: t.metadata.clone(),
                spec: t.spec.clone(),
                status: None,
            };
            claim.metadata.name = Some(cname.clone());
            claim.metadata.namespace = Some(ns.clone());
            claim.metadata.uid = None;
            claim.metadata.resource_version = None;
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            claim.metadata.labels = Some(labels);
            let refs = Self::claim_owner_refs(set, None, false);
            claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.events.normal(
                    util::object_ref(set),
                    "SuccessfulCreate",
                    format!(
                        "create Claim {cname} Pod {pod_name} in StatefulSet {} success",
                        set.name_any()
                    ),
                ),
                Err(e) if util::is_conflict(&e) => {}
                Err(e) => {
                    self.events.warning(
                        util::object_ref(set),
                        "FailedCreate",
                        format!(
                            "create Claim {cname} for Pod {pod_name} in StatefulSet {} failed error: {}",
                            set.name_any(),
                            util::error_message(&e)
                        ),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Keeps the claims' owner references as the retention policy wants them (so the garbage
    /// collector deletes a claim with its set, or with its scaled-away pod).
    async fn claim_owners(&self, set: &StatefulSet, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        if spec.persistent_volume_claim_retention_policy.is_none()
            || spec
                .volume_claim_templates
                .as_ref()
                .is_none_or(|v| v.is_empty())
        {
            return Ok(());
        }
        let ns = set.namespace().unwrap_or_default();
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let n = spec.replicas.unwrap_or(1).max(0);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
        let set_uid = set.uid().unwrap_or_default();
        for pod in pods {
            let Some(ord) = ordinal_of(pod) else {
                continue;
            };
            let condemned = ord < start || ord >= start + n;
            let want = Self::claim_owner_refs(set, Some(pod), condemned);
            for t in spec.volume_claim_templates.iter().flatten() {
                let cname = claim_name(t.metadata.name.as_deref().unwrap_or(""), &pod.name_any());
                let Some(claim) = self
                    .ctx
                    .inf
                    .persistentvolumeclaims
                    .store()
                    .get(&ObjectRef::new(&cname).within(&ns))
                else {
                    continue;
                };
                // Other owners stay; ours (the set, this pod) become what the policy says.
                let ours = |r: &OwnerReference| {
                    r.uid == set_uid || Some(&r.uid) == pod.metadata.uid.as_ref()
                };
                let mut refs: Vec<OwnerReference> = claim
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| !ours(r))
                    .cloned()
                    .collect();
                refs.extend(want.iter().cloned());
                let have: Vec<&OwnerReference> =
                    claim.metadata.owner_references.iter().flatten().collect();
                if have.len() == refs.len() && refs.iter().all(|r| have.contains(&r)) {
                    continue;
                }
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": claim.uid()}});
                match api
                    .patch(&cname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn update_status(
        &self,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        current_rev: &ControllerRevision,
        update_rev: &ControllerRevision,
        collision_count: i32,
    ) -> anyhow::Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = util::now();
        let (current_name, update_name) = (current_rev.name_any(), update_rev.name_any());
        let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
        for p in pods {
            replicas += 1;
            if is_running_and_ready(p) {
                ready += 1;
                if util::pod_is_available(p, min_ready, now) {
                    available += 1;
                }
            }
            if !is_terminating(p) {
                if revision_of(p) == current_name {
                    current += 1;
                }
                if revision_of(p) == update_name {
                    updated += 1;
                }
            }
        }
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let mut current_revision = current_name;
        // A finished rolling update: the update revision becomes the current one.
        if rolling && updated == replicas && ready == replicas {
            current = updated;
            current_revision = update_name.clone();
        }
        let old = set.status.clone().unwrap_or_default();
        let generation = set.metadata.generation;
        let collision =
            (collision_count != 0 || old.collision_count.is_some()).then_some(collision_count);
        if old.replicas == replicas
            && old.ready_replicas.unwrap_or(0) == ready
            && old.available_replicas.unwrap_or(0) == available
            && old.current_replicas.unwrap_or(0) == current
            && old.updated_replicas.unwrap_or(0) == updated
            && old.current_revision.as_deref() == Some(current_revision.as_str())
            && old.update_revision.as_deref() == Some(update_name.as_str())
            && old.observed_generation == generation
            && old.collision_count == collision
        {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(
            self.ctx.client.clone(),
            &set.namespace().unwrap_or_default(),
        );
        let patch = json!({"status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": available,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_name,
            "observedGeneration": generation,
            "collisionCount": collision,
        }});
        match api
            .patch_status(
                &set.name_any(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(extra: serde_json::Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"]}}],
            }
        });
        if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web"), None);
    }

    #[test]
    fn pods_get_their_identity() {
        let s = set(json!({}));
        let p = new_pod(&s, &s.spec.as_ref().unwrap().template, "web-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[HASH_LABEL], "web-abc");
        assert_eq!(l["app"], "web");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let v = &spec.volumes.unwrap()[0];
        assert_eq!(v.name, "www");
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        assert_eq!(p.metadata.owner_references.unwrap()[0].kind, "StatefulSet");
    }

    #[test]
    fn retention_policy_owner_refs() {
        let s = set(json!({}));
        assert!(StatefulSetController::claim_owner_refs(&s, None, false).is_empty());
        let s = set(json!({"persistentVolumeClaimRetentionPolicy":
            {"whenDeleted": "Delete", "whenScaled": "Delete"}}));
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web-3", "uid": "p3"}})).unwrap();
        assert_eq!(
            StatefulSetController::claim_owner_refs(&s, Some(&pod), false).len(),
            1
        );
        let refs = StatefulSetController::claim_owner_refs(&s, Some(&pod), true);
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].uid, "p3");
    }
    fn pod(name: &str, rev: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": format!("uid-{name}"),
                    "labels": {"app": "web", HASH_LABEL: rev, POD_NAME_LABEL: name,
                               POD_INDEX_LABEL: name.rsplit('-').next().unwrap()}},
                "status": {"phase": if ready {"Running"} else {"Pending"}, "conditions": [
                    {"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Create(p) => format!("create {}", p.name_any()),
                Action::Recreate(p) => format!("recreate {}", p.name_any()),
                Action::Delete(p) => format!("delete {}", p.name_any()),
                Action::FixIdentity(p) => format!("fix {}", p.name_any()),
            })
            .collect()
    }

    fn plan(s: &StatefulSet, pods: &[Arc<Pod>]) -> Vec<String> {
        let t = s.spec.as_ref().unwrap().template.clone();
        names(&plan_update(
            s,
            pods,
            ("web-old", &t),
            "web-new",
            util::now(),
        ))
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let s = set(json!({"replicas": 3}));
        assert_eq!(plan(&s, &[]), vec!["create web-0"]);
        // web-0 not ready yet: nothing, web-1 waits.
        assert!(plan(&s, &[pod("web-0", "web-new", false)]).is_empty());
        assert_eq!(
            plan(&s, &[pod("web-0", "web-new", true)]),
            vec!["create web-1"]
        );
        // A hole is filled first, with the same name.
        assert_eq!(
            plan(
                &s,
                &[pod("web-0", "web-new", true), pod("web-2", "web-new", true)]
            ),
            vec!["create web-1"]
        );
        // Parallel: all at once.
        let p = set(json!({"replicas": 3, "podManagementPolicy": "Parallel"}));
        assert_eq!(
            plan(&p, &[]),
            vec!["create web-0", "create web-1", "create web-2"]
        );
        // ordinals.start
        let o = set(json!({"replicas": 2, "ordinals": {"start": 5}}));
        assert_eq!(plan(&o, &[]), vec!["create web-5"]);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal() {
        let s = set(json!({"replicas": 1}));
        let pods = [
            pod("web-0", "web-new", true),
            pod("web-1", "web-new", true),
            pod("web-2", "web-new", true),
        ];
        assert_eq!(plan(&s, &pods), vec!["delete web-2"]);
        let p = set(json!({"replicas": 1, "podManagementPolicy": "Parallel"}));
        assert_eq!(plan(&p, &pods), vec!["delete web-2", "delete web-1"]);
        // An unready remaining pod blocks an ordered scale-down.
        let pods = [
            pod("web-0", "web-new", false),
            pod("web-1", "web-new", true),
            pod("web-2", "web-new", true),
        ];
        assert!(plan(&s, &pods).is_empty());
        // So does an unready condemned pod that is not the first unhealthy one.
        let pods = [
            pod("web-0", "web-new", true),
            pod("web-1", "web-new", false),
            pod("web-2", "web-new", false),
        ];
        assert!(plan(&s, &pods).is_empty());
        // The first unhealthy one may go.
        let pods = [
            pod("web-0", "web-new", true),
            pod("web-1", "web-new", false),
        ];
        assert_eq!(plan(&s, &pods), vec!["delete web-1"]);
    }

    #[test]
    fn rolling_update_from_the_top_down_to_the_partition() {
        let s = set(json!({"replicas": 3}));
        let old = [
            pod("web-0", "web-old", true),
            pod("web-1", "web-old", true),
            pod("web-2", "web-old", true),
        ];
        assert_eq!(plan(&s, &old), vec!["delete web-2"]);
        let mid = [
            pod("web-0", "web-old", true),
            pod("web-1", "web-old", true),
            pod("web-2", "web-new", true),
        ];
        assert_eq!(plan(&s, &mid), vec!["delete web-1"]);
        let p = set(json!({"replicas": 3,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}));
        assert!(plan(&p, &mid).is_empty());
        let d = set(json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}));
        assert!(plan(&d, &old).is_empty());
        let m = set(json!({"replicas": 3,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}));
        assert_eq!(plan(&m, &old), vec!["delete web-2", "delete web-1"]);
    }
}
