//! The garbage collector: deletes objects whose owners are gone, and carries out foreground
//! and orphan deletion.
//!
//! Objects name their owners in `metadata.ownerReferences` (by uid). The API server never
//! follows them; this controller does:
//!
//! - **background** (the default): once an owner is gone (no object with that uid), each
//!   dependent is deleted; a dependent with several owners only loses the dangling references;
//! - **foreground** (`propagationPolicy: Foreground`): the API server marks the owner deleted and
//!   adds the `foregroundDeletion` finalizer; the collector deletes the dependents (in turn in
//!   the foreground) and removes the finalizer once no dependent with `blockOwnerDeletion` is
//!   left, so the owner disappears last;
//! - **orphan** (`propagationPolicy: Orphan`, `kubectl delete --cascade=orphan`): the `orphan`
//!   finalizer; the collector removes the owner's references from its dependents, then the
//!   finalizer.
//!
//! Covered types (the ones this process watches, dependents and owners alike): pods, replica
//! sets, deployments, jobs, cron jobs, services, endpoints, endpoint slices, service
//! accounts, daemon sets, stateful sets, controller revisions and persistent volume claims. Owners of other kinds are looked up live through discovery. The real collector
//! watches the metadata of every deletable resource; dependents of other kinds (config maps,
//! secrets, custom resources…) are not collected here yet.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Ctx;
use super::informer::{Change, Informer, Queue};
use super::util;

type ListFn = Box<dyn Fn() -> Vec<ObjectMeta> + Send + Sync>;
type GetFn = Box<dyn Fn(&str, &str) -> Option<ObjectMeta> + Send + Sync>;

/// One watched type, as the collector sees it: metadata only.
struct Source {
    ar: ApiResource,
    list: ListFn,
    get: GetFn,
}

fn source<K>(inf: &Arc<Informer<K>>) -> Source
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let a = inf.clone();
    let b = inf.clone();
    Source {
        ar: ApiResource::erase::<K>(&()),
        list: Box::new(move || a.store().state().iter().map(|o| o.meta().clone()).collect()),
        get: Box::new(move |ns, name| {
            b.store()
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| o.meta().clone())
        }),
    }
}

pub struct GarbageCollector {
    client: Client,
    queue: Arc<Queue>,
    sources: Vec<Source>,
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

fn has_finalizer(m: &ObjectMeta, f: &str) -> bool {
    m.finalizers.iter().flatten().any(|x| x == f)
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let i = &ctx.inf;
    let sources = vec![
        source(&i.pods),
        source(&i.replicasets),
        source(&i.deployments),
        source(&i.jobs),
        source(&i.cronjobs),
        source(&i.services),
        source(&i.endpoints),
        source(&i.endpointslices),
        source(&i.serviceaccounts),
        source(&i.daemonsets),
        source(&i.statefulsets),
        source(&i.controllerrevisions),
        source(&i.persistentvolumeclaims),
    ];
    let gc = Arc::new(GarbageCollector {
        client: ctx.client.clone(),
        queue: Queue::new("garbagecollector"),
        sources,
    });
    macro_rules! watch {
        ($inf:expr, $idx:expr) => {{
            let w = Arc::downgrade(&gc);
            $inf.on_change(move |o, change| {
                if let Some(gc) = w.upgrade() {
                    gc.changed($idx, o.meta(), change);
                }
            });
        }};
    }
    watch!(i.pods, 0);
    watch!(i.replicasets, 1);
    watch!(i.deployments, 2);
    watch!(i.jobs, 3);
    watch!(i.cronjobs, 4);
    watch!(i.services, 5);
    watch!(i.endpoints, 6);
    watch!(i.endpointslices, 7);
    watch!(i.serviceaccounts, 8);
    let g = gc.clone();
    gc.queue.run_when_synced(ctx, workers, move |key| {
        let g = g.clone();
        Box::pin(async move { g.sync(&key).await })
    });
}

impl GarbageCollector {
    fn key(idx: usize, m: &ObjectMeta) -> String {
        format!(
            "{idx}|{}|{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or("")
        )
    }

    fn source_for(&self, api_version: &str, kind: &str) -> Option<usize> {
        let g = group_of(api_version);
        self.sources
            .iter()
            .position(|s| s.ar.kind == kind && s.ar.group == g)
    }

    /// Every cached object with an owner reference to `uid`: (source index, metadata).
    fn dependents(&self, uid: &str) -> Vec<(usize, ObjectMeta)> {
        let mut out = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            for m in (s.list)() {
                if m.owner_references.iter().flatten().any(|r| r.uid == uid) {
                    out.push((i, m));
                }
            }
        }
        out
    }

    fn changed(&self, idx: usize, m: &ObjectMeta, change: Change) {
        let deleting = m.deletion_timestamp.is_some() || change == Change::Deleted;
        if change == Change::Applied
            && (m.owner_references.as_ref().is_some_and(|r| !r.is_empty())
                || (m.deletion_timestamp.is_some()
                    && (has_finalizer(m, "orphan") || has_finalizer(m, "foregroundDeletion"))))
        {
            self.queue.add(Self::key(idx, m));
        }
        if deleting {
            // An owner going: its dependents look again. A dependent going: its owners (one
            // may be waiting in the foreground for it).
            if let Some(uid) = &m.uid {
                for (i, d) in self.dependents(uid) {
                    self.queue.add(Self::key(i, &d));
                }
            }
            for r in m.owner_references.iter().flatten() {
                if let Some(i) = self.source_for(&r.api_version, &r.kind) {
                    let ns = m.namespace.as_deref().unwrap_or("");
                    self.queue.add(format!("{i}|{ns}|{}", r.name));
                }
            }
        }
    }

    fn api(&self, idx: usize, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.sources[idx].ar)
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let mut parts = key.splitn(3, '|');
        let (Some(idx), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(());
        };
        let Ok(idx) = idx.parse::<usize>() else {
            return Ok(());
        };
        let Some(src) = self.sources.get(idx) else {
            return Ok(());
        };
        let Some(meta) = (src.get)(ns, name) else {
            return Ok(());
        };
        let uid = meta.uid.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_some() {
            if has_finalizer(&meta, "orphan") {
                return self.orphan_dependents(idx, ns, name, &meta, &uid).await;
            }
            if has_finalizer(&meta, "foregroundDeletion") {
                return self.delete_in_foreground(idx, ns, name, &meta, &uid).await;
            }
            return Ok(());
        }
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(());
        }
        let mut dangling = Vec::new();
        for r in &refs {
            if !self.owner_exists(ns, r).await? {
                dangling.push(r.uid.clone());
            }
        }
        if dangling.is_empty() {
            return Ok(());
        }
        let api = self.api(idx, ns);
        if dangling.len() == refs.len() {
            tracing::info!(object = key, "deleting object whose owners are gone");
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return match api.delete(name, &dp).await {
                Ok(_) => Ok(()),
                Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let keep: Vec<_> = refs.iter().filter(|r| !dangling.contains(&r.uid)).collect();
        let p = json!({"metadata": {"ownerReferences": keep, "uid": uid}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the owner a reference names exists (same uid): the cache first, then the API
    /// (a missing cache entry may only be a cache lagging behind).
    async fn owner_exists(
        &self,
        ns: &str,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> anyhow::Result<bool> {
        let ar = match self.source_for(&r.api_version, &r.kind) {
            Some(i) => {
                if let Some(m) = (self.sources[i].get)(ns, &r.name)
                    && m.uid.as_deref() == Some(r.uid.as_str())
                {
                    return Ok(true);
                }
                self.sources[i].ar.clone()
            }
            None => {
                let (g, v) = match r.api_version.split_once('/') {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), r.api_version.clone()),
                };
                let gvk = kube::api::GroupVersionKind::gvk(&g, &v, &r.kind);
                match kube::discovery::pinned_kind(&self.client, &gvk).await {
                    Ok((ar, caps)) => {
                        if caps.scope == kube::discovery::Scope::Cluster {
                            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
                            return Ok(match api.get_opt(&r.name).await? {
                                Some(o) => o.metadata.uid.as_deref() == Some(r.uid.as_str()),
                                None => false,
                            });
                        }
                        ar
                    }
                    // An unknown kind: its owner cannot exist (the real collector treats an
                    // unresolvable reference as absent too, after discovery fails for it).
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        Ok(match api.get_opt(&r.name).await? {
            Some(o) => o.metadata.uid.as_deref() == Some(r.uid.as_str()),
            None => false,
        })
    }

    async fn remove_finalizer(
        &self,
        idx: usize,
        ns: &str,
        name: &str,
        meta: &ObjectMeta,
        f: &str,
    ) -> anyhow::Result<()> {
        let rest: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .collect();
        let p = json!({"metadata": {"finalizers": rest, "uid": meta.uid, "resourceVersion": meta.resource_version}});
        match self
            .api(idx, ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // A pod without finalizers is only removed by a (kubelet's) final delete.
        if idx == 0 && rest.is_empty() {
            match self
                .api(idx, ns)
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn orphan_dependents(
        &self,
        idx: usize,
        ns: &str,
        name: &str,
        meta: &ObjectMeta,
        uid: &str,
    ) -> anyhow::Result<()> {
        for (i, d) in self.dependents(uid) {
            let keep: Vec<_> = d
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != uid)
                .collect();
            let p = json!({"metadata": {"ownerReferences": keep, "uid": d.uid}});
            let dns = d.namespace.as_deref().unwrap_or("");
            let dname = d.name.as_deref().unwrap_or("");
            match self
                .api(i, dns)
                .patch(dname, &PatchParams::default(), &Patch::Merge(&p))
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.remove_finalizer(idx, ns, name, meta, "orphan").await
    }

    async fn delete_in_foreground(
        &self,
        idx: usize,
        ns: &str,
        name: &str,
        meta: &ObjectMeta,
        uid: &str,
    ) -> anyhow::Result<()> {
        let mut blocking = 0;
        for (i, d) in self.dependents(uid) {
            let blocks = d
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if d.deletion_timestamp.is_some() {
                continue;
            }
            // Pods have no dependents: deleted in the background (a pod keeping a finalizer
            // would wait for a kubelet to remove it).
            let policy = if i == 0 {
                PropagationPolicy::Background
            } else {
                PropagationPolicy::Foreground
            };
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                ..Default::default()
            };
            let dns = d.namespace.as_deref().unwrap_or("");
            let dname = d.name.as_deref().unwrap_or("");
            match self.api(i, dns).delete(dname, &dp).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if blocking == 0 {
            self.remove_finalizer(idx, ns, name, meta, "foregroundDeletion")
                .await?;
        }
        Ok(())
    }
}
