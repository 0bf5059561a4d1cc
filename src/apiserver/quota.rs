//! The ResourceQuota admission plugin: a create in a namespace with quotas is refused when it
//! would take a quota's usage over its `hard` limits, and otherwise charged to the quotas
//! before the object is stored.
//!
//! As kube-apiserver's plugin does, it reads the namespace's quotas, checks the new object
//! against each quota that covers it (`status.hard`, scopes), refuses with 403 Forbidden
//! (`pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited:
//! pods=2`, `failed quota: q: must specify limits.cpu for: c`, `status unknown for quota: q,
//! resources: pods`), then writes the new `status.used` of every quota it charged with
//! optimistic concurrency (the quota's revision must not have moved; on a conflict it reads the
//! quotas again and retries), so two quick creates can never both take the last unit. The
//! resource quota controller (`controller_manager::resourcequota`) later corrects `used` from
//! what really exists (objects deleted, creates that failed after admission).

use serde_json::Value;

use super::cache::Freshness;
use super::handlers::{Target, now_secs, storage_error};
use super::resources;
use super::server::Ctx;
use super::status::ApiError;
use super::storage::StorageError;
use crate::quota::{self, ResourceList};

/// Types the plugin never charges (the real plugin's ignored resources).
fn ignored(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        ("", "events") | ("events.k8s.io", "events")
    )
}

/// How many times a conflicting quota write is retried (the real `checkQuotas` recursion).
const RETRIES: usize = 3;

/// `<resource> "<name>" is forbidden: <why>` (admission's `NewForbidden`).
fn forbidden(group: &str, resource: &str, name: &str, why: String) -> ApiError {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let mut details = serde_json::json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = serde_json::json!(group);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("{qualified} \"{name}\" is forbidden: {why}"),
        details: Some(details),
    }
}

/// One stored quota: its key, revision, stored JSON and status.
struct Stored {
    key: String,
    revision: i64,
    raw: Value,
    name: String,
    hard: ResourceList,
    used: ResourceList,
}

/// Admits the create of `obj` (named `name`) into `t`'s namespace, charging the quotas that
/// cover it. `dry_run`: check only.
pub(super) async fn admit_create(
    ctx: &Ctx,
    t: &Target,
    obj: &Value,
    name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let r = t.resource;
    let Some(ns) = t.namespace.as_deref().filter(|_| r.namespaced) else {
        return Ok(());
    };
    if ignored(r.group, r.name) {
        return Ok(());
    }
    let Some(rq) = resources::find("", "v1", "resourcequotas") else {
        return Ok(());
    };
    let prefix = rq.key(Some(ns), "");
    // Most namespaces have no quota: the watch cache says so without a store round trip or the
    // lock (the real plugin reads its informer the same way). A quota the cache has not seen yet
    // is a window of one watch event, as with the real one's lister.
    let cached = ctx
        .cache
        .list(&rq.key(None, ""), &prefix, Freshness::Any)
        .await;
    if cached.is_ok_and(|(items, _)| items.is_empty()) {
        return Ok(());
    }
    // One quota evaluation at a time, so this server never races itself for a quota; the quotas
    // themselves are read from the store, current.
    let _guard = ctx.quota_lock.lock().await;
    let usage = quota::usage(r.group, r.name, obj, now_secs());
    // Names of the quotas already charged (on a retry only the others are tried again).
    let mut charged: Vec<String> = Vec::new();
    for _ in 0..=RETRIES {
        let page = ctx
            .storage
            .list(&prefix, 0, 0, None)
            .await
            .map_err(|e| storage_error(t, name, e))?;
        let mut quotas = Vec::new();
        for s in &page.items {
            let Ok(raw) = serde_json::from_slice::<Value>(&s.value) else {
                continue;
            };
            let qname = raw["metadata"]["name"].as_str().unwrap_or("").to_string();
            if charged.contains(&qname) {
                continue;
            }
            quotas.push(Stored {
                key: s.key.clone(),
                revision: s.revision,
                hard: quota::parse_list(&raw["status"]["hard"]),
                used: quota::parse_list(&raw["status"]["used"]),
                name: qname,
                raw,
            });
        }
        if quotas.is_empty() {
            return Ok(());
        }
        // The quotas that cover this object, and the usage each would have after it.
        let mut changes: Vec<(usize, ResourceList)> = Vec::new();
        for (i, q) in quotas.iter().enumerate() {
            let scopes = quota::scope_selectors(&q.raw);
            if !quota::quota_matches(r.group, r.name, &q.hard, &scopes, obj) {
                continue;
            }
            let restricted = quota::matching_resources(r.group, r.name, q.hard.keys());
            if let Err(e) = quota::constraints(r.group, r.name, &restricted, obj) {
                return Err(forbidden(
                    r.group,
                    r.name,
                    name,
                    format!("failed quota: {}: {e}", q.name),
                ));
            }
            let mut unknown: Vec<&String> = restricted
                .iter()
                .filter(|n| !q.used.contains_key(*n))
                .collect();
            if !unknown.is_empty() {
                unknown.sort();
                let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                return Err(forbidden(
                    r.group,
                    r.name,
                    name,
                    format!(
                        "status unknown for quota: {}, resources: {}",
                        q.name,
                        list.join(",")
                    ),
                ));
            }
            let requested: ResourceList = quota::mask(&usage, q.hard.keys())
                .into_iter()
                .filter(|(_, v)| v.nanos != 0)
                .collect();
            if requested.is_empty() {
                continue;
            }
            let new_used = quota::add(&q.used, &requested);
            let exceeded: Vec<String> = requested
                .keys()
                .filter(|k| match (new_used.get(*k), q.hard.get(*k)) {
                    (Some(u), Some(h)) => u.nanos > h.nanos,
                    _ => false,
                })
                .cloned()
                .collect();
            if !exceeded.is_empty() {
                return Err(forbidden(
                    r.group,
                    r.name,
                    name,
                    format!(
                        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                        q.name,
                        quota::pretty(&quota::mask(&requested, &exceeded)),
                        quota::pretty(&quota::mask(&q.used, &exceeded)),
                        quota::pretty(&quota::mask(&q.hard, &exceeded)),
                    ),
                ));
            }
            changes.push((i, new_used));
        }
        if changes.is_empty() || dry_run {
            return Ok(());
        }
        let mut conflicted = false;
        for (i, used) in changes {
            let q = &quotas[i];
            let mut next = q.raw.clone();
            next["status"]["used"] = quota::list_json(&used);
            let bytes = serde_json::to_vec(&next).map_err(|e| ApiError::internal(e.to_string()))?;
            match ctx.storage.update(&q.key, q.revision, bytes).await {
                Ok(_) => charged.push(q.name.clone()),
                Err(StorageError::Conflict { .. }) => conflicted = true,
                // A quota deleted meanwhile no longer limits anything.
                Err(StorageError::NotFound { .. }) => charged.push(q.name.clone()),
                Err(e) => return Err(storage_error(t, name, e)),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(ApiError::conflict("", "resourcequotas", name))
}
