//! The taint eviction controller (`taint-eviction-controller`, once the node controller's
//! "NoExecuteTaintManager"): evicts pods from nodes with `NoExecute` taints.
//!
//! A `NoSchedule` taint only keeps new pods away; a `NoExecute` taint also drives out the pods
//! already running on the node. The node lifecycle controller puts
//! `node.kubernetes.io/unreachable:NoExecute` on a node whose kubelet went silent (and
//! `not-ready:NoExecute` on one that reports NotReady); users may add their own
//! (`kubectl taint node n1 k=v:NoExecute`). For every pod bound to a tainted node:
//!
//! - a taint the pod does not tolerate: the pod is deleted at once;
//! - all taints tolerated, some toleration with `tolerationSeconds`: the pod is deleted when the
//!   shortest of those has passed, counted from when the taint was added (its `timeAdded`) or
//!   the pod was bound, whichever is later;
//! - all tolerated without `tolerationSeconds`: the pod stays.
//!
//! The API server's DefaultTolerationSeconds admission gives every pod 300 s tolerations for the
//! not-ready and unreachable taints, so by default pods leave a dead node after five minutes.
//! Before deleting, the controller records the event `TaintManagerEviction` ("Marking for
//! deletion Pod ns/name") and adds the pod condition `DisruptionTarget` (reason
//! `DeletionByTaintManager`), as Kubernetes 1.26+ does; a scheduled eviction that is no longer
//! due (the taint went away) is cancelled with "Cancelling deletion of Pod ns/name".
//!
//! Nothing polls: node and pod changes queue the pods concerned, and a pending eviction wakes
//! its pod's key at the moment it is due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use serde_json::json;

use super::Ctx;
use super::informer::{Change, Queue};
use super::util::{self, Events};

/// `Toleration.ToleratesTaint`: the effect and key must match when the toleration sets them;
/// `Exists` matches any value, `Equal` (or no operator) the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The real `GetMatchingTolerations`: whether every taint is tolerated, and for each taint the
/// first toleration that tolerates it.
pub fn matching_tolerations<'a>(
    taints: &[&Taint],
    tolerations: &'a [Toleration],
) -> (bool, Vec<&'a Toleration>) {
    let mut used = Vec::new();
    for taint in taints {
        match tolerations.iter().find(|t| tolerates(t, taint)) {
            Some(t) => used.push(t),
            None => return (false, Vec::new()),
        }
    }
    (true, used)
}

/// The real `getMinTolerationTime`: the shortest `tolerationSeconds` of the tolerations used;
/// zero when none is used or one is zero or negative; `None` (forever) when none sets it.
pub fn min_toleration_time(used: &[&Toleration]) -> Option<Duration> {
    if used.is_empty() {
        return Some(Duration::ZERO);
    }
    let mut min: Option<i64> = None;
    for t in used {
        if let Some(s) = t.toleration_seconds {
            if s <= 0 {
                return Some(Duration::ZERO);
            }
            min = Some(min.map_or(s, |m| m.min(s)));
        }
    }
    min.map(|s| Duration::from_secs(s as u64))
}

/// What to do with a pod on a node with these `NoExecute` taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No NoExecute taint, or all tolerated forever.
    Keep,
    /// Delete at this time (now or earlier: at once).
    EvictAt(Timestamp),
}

/// Decides a pod's fate: `taints` are the node's NoExecute taints, `since` when the pod was
/// bound to the node, `now` the time taints without `timeAdded` count from.
pub fn decide(
    taints: &[&Taint],
    tolerations: &[Toleration],
    since: Option<Timestamp>,
    now: Timestamp,
) -> Decision {
    if taints.is_empty() {
        return Decision::Keep;
    }
    let (all, used) = matching_tolerations(taints, tolerations);
    if !all {
        return Decision::EvictAt(now);
    }
    let Some(wait) = min_toleration_time(&used) else {
        return Decision::Keep;
    };
    // The eviction clock starts when the first of the taints was added, or when the pod came to
    // the node if that was later.
    let added = taints
        .iter()
        .map(|t| t.time_added.as_ref().map(|t| t.0).unwrap_or(now))
        .min()
        .unwrap_or(now);
    let start = since.map_or(added, |s| s.max(added));
    let at = start
        .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    Decision::EvictAt(at)
}

/// The node's `NoExecute` taints.
pub fn no_execute_taints(node: &Node) -> Vec<&Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

/// When the pod was bound to its node: its PodScheduled condition, else its creation.
fn bound_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

pub struct TaintEvictionController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    events: Events,
    /// Pods with an eviction scheduled for later: key → (uid, when).
    scheduled: Mutex<HashMap<String, (String, Timestamp)>>,
}

pub fn start(ctx: &Arc<Ctx>) {
    let queue = Queue::new("taint-eviction");
    let c = Arc::new(TaintEvictionController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "taint-eviction-controller"),
        scheduled: Mutex::new(HashMap::new()),
    });
    let q = queue.clone();
    ctx.inf.pods.on_change(move |pod, _| {
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
        {
            q.add(util::key_of(&pod.metadata));
        }
    });
    let weak = Arc::downgrade(&c);
    ctx.inf.nodes.on_change(move |node, _change: Change| {
        if let Some(c) = weak.upgrade() {
            c.node_changed(node);
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, 8, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

impl TaintEvictionController {
    /// A node's taints may have changed: every pod on it looks again.
    fn node_changed(&self, node: &Node) {
        let name = node.name_any();
        for pod in self.ctx.inf.pods.store().state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()) {
                self.queue.add(util::key_of(&pod.metadata));
            }
        }
    }

    /// Drops a scheduled eviction; with `event`, tells the pod (the real
    /// `cancelWorkWithEvent`).
    fn cancel(&self, key: &str, pod: Option<&Pod>) {
        let was = self.scheduled.lock().remove(key);
        if was.is_some()
            && let Some(pod) = pod
        {
            tracing::info!(pod = key, "cancelling scheduled eviction");
            self.events.normal(
                util::object_ref(pod),
                "TaintManagerEviction",
                format!("Cancelling deletion of Pod {key}"),
            );
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(pod) = self
            .ctx
            .inf
            .pods
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            self.scheduled.lock().remove(key);
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // Already on its way out (perhaps evicted by us).
            self.scheduled.lock().remove(key);
            return Ok(());
        }
        let Some(node_name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            self.cancel(key, Some(&pod));
            return Ok(());
        };
        let node = self.ctx.inf.nodes.store().get(&ObjectRef::new(node_name));
        let taints = node.as_deref().map(no_execute_taints).unwrap_or_default();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let now = util::now();
        match decide(&taints, &tolerations, bound_since(&pod), now) {
            Decision::Keep => {
                self.cancel(key, Some(&pod));
                Ok(())
            }
            Decision::EvictAt(at) if at > now => {
                let uid = pod.uid().unwrap_or_default();
                let mut s = self.scheduled.lock();
                if s.get(key) != Some(&(uid.clone(), at)) {
                    tracing::info!(pod = key, node = node_name, at = %at, "eviction scheduled");
                    s.insert(key.to_string(), (uid, at));
                }
                drop(s);
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
                    + Duration::from_millis(1);
                self.queue.add_after(key, wait);
                Ok(())
            }
            Decision::EvictAt(_) => self.evict(key, &pod).await,
        }
    }

    /// The real `deletePodHandler`: event, DisruptionTarget condition, then delete.
    async fn evict(&self, key: &str, pod: &Pod) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        tracing::info!(pod = key, "deleting pod because of a NoExecute taint");
        self.events.normal(
            util::object_ref(pod),
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let has_condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("DeletionByTaintManager")
                })
            });
        if !has_condition {
            let patch = json!({
                "metadata": {"uid": pod.uid()},
                "status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                    "lastTransitionTime": util::now(),
                }]},
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {
                    self.scheduled.lock().remove(key);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.scheduled.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, value: &str, effect: &str, added: Option<Timestamp>) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: added.map(Time),
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: secs,
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn toleration_matching_follows_tolerates_taint() {
        let t = taint("k", "v", "NoExecute", None);
        assert!(tolerates(&tol("k", "Equal", "v", "NoExecute", None), &t));
        assert!(
            tolerates(&tol("k", "", "v", "", None), &t),
            "empty op = Equal"
        );
        assert!(!tolerates(&tol("k", "Equal", "w", "NoExecute", None), &t));
        assert!(tolerates(&tol("k", "Exists", "", "", None), &t));
        assert!(!tolerates(&tol("k", "Exists", "", "NoSchedule", None), &t));
        assert!(!tolerates(&tol("other", "Exists", "", "", None), &t));
        assert!(
            tolerates(&tol("", "Exists", "", "", None), &t),
            "tolerate everything"
        );
        assert!(!tolerates(&tol("k", "Gt", "v", "", None), &t));
    }

    #[test]
    fn min_toleration_time_is_the_shortest_or_forever() {
        let a = tol("a", "Exists", "", "", Some(30));
        let b = tol("b", "Exists", "", "", Some(10));
        let forever = tol("c", "Exists", "", "", None);
        let zero = tol("d", "Exists", "", "", Some(-5));
        assert_eq!(min_toleration_time(&[]), Some(Duration::ZERO));
        assert_eq!(
            min_toleration_time(&[&a, &b, &forever]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(min_toleration_time(&[&forever]), None);
        assert_eq!(min_toleration_time(&[&a, &zero]), Some(Duration::ZERO));
    }

    #[test]
    fn decisions() {
        let now = ts(100);
        let unreachable = taint(
            "node.kubernetes.io/unreachable",
            "",
            "NoExecute",
            Some(ts(90)),
        );
        let custom = taint("dedicated", "gpu", "NoExecute", Some(ts(50)));
        let default_tols = vec![
            tol(
                "node.kubernetes.io/not-ready",
                "Exists",
                "",
                "NoExecute",
                Some(300),
            ),
            tol(
                "node.kubernetes.io/unreachable",
                "Exists",
                "",
                "NoExecute",
                Some(300),
            ),
        ];
        // No taints: stay.
        assert_eq!(decide(&[], &default_tols, None, now), Decision::Keep);
        // Not tolerated: now.
        assert_eq!(
            decide(&[&custom], &default_tols, None, now),
            Decision::EvictAt(now)
        );
        assert_eq!(decide(&[&custom], &[], None, now), Decision::EvictAt(now));
        // Tolerated for 300 s from the taint's timeAdded.
        assert_eq!(
            decide(&[&unreachable], &default_tols, Some(ts(0)), now),
            Decision::EvictAt(ts(390))
        );
        // A pod bound after the taint was added gets its full toleration from then.
        assert_eq!(
            decide(&[&unreachable], &default_tols, Some(ts(95)), now),
            Decision::EvictAt(ts(395))
        );
        // The shortest of the used tolerations, from the earliest taint.
        let mut tols = default_tols.clone();
        tols.push(tol("dedicated", "Equal", "gpu", "NoExecute", Some(20)));
        assert_eq!(
            decide(&[&unreachable, &custom], &tols, None, now),
            Decision::EvictAt(ts(70))
        );
        // Tolerated forever.
        let forever = vec![tol("", "Exists", "", "", None)];
        assert_eq!(
            decide(&[&unreachable, &custom], &forever, None, now),
            Decision::Keep
        );
        // No timeAdded: counted from now.
        let bare = taint("node.kubernetes.io/unreachable", "", "NoExecute", None);
        assert_eq!(
            decide(&[&bare], &default_tols, None, now),
            Decision::EvictAt(ts(400))
        );
    }
}
