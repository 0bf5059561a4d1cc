//! What kube-apiserver creates itself at start-up (its "bootstrap controllers"): the system
//! namespaces `default`, `kube-system`, `kube-public`, `kube-node-lease`, and the `kubernetes`
//! Service in `default` — the first address of the service range — with the Endpoints and
//! EndpointSlice pointing at this API server. Existing objects are kept; the endpoints are
//! brought up to date (the port may differ from the last run).

use serde_json::{Value, json};

use std::sync::Arc;

use super::cache::{CacheWatch, Event, EventKind, Freshness, WatchFrom};
use super::handlers::{self, FieldValidation, Target, WriteOptions};
use super::resources;
use super::server::Ctx;

fn target(group: &str, name: &str, namespace: Option<&str>) -> anyhow::Result<Target> {
    let resource = resources::find(group, "v1", name)
        .ok_or_else(|| anyhow::anyhow!("resource {name} is not served"))?;
    Ok(Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: None,
        subresource: None,
    })
}

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        validation: FieldValidation::Strict,
        warnings: Vec::new(),
        manager: "kube-apiserver".into(),
        applying: false,
        raw_json: None,
        stored: None,
    }
}

/// Creates `obj` unless it exists; with `reconcile`, an existing object gets `obj`'s content.
async fn ensure(ctx: &Ctx, t: Target, obj: Value, reconcile: bool) -> anyhow::Result<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match handlers::create(ctx, &t, obj.clone(), &mut options()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 && reconcile => {
            handlers::update(ctx, &t, &name, false, &mut options(), |old| {
                let mut next = obj.clone();
                next["metadata"]["labels"] = old["metadata"]["labels"].clone();
                Ok(next)
            })
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!(e.message))
        }
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{}", e.message)),
    }
}

/// The default RBAC policy (cluster-admin, admin, edit, view, system:*), created when missing,
/// then the authorizer fed with every role and binding: the current ones now, changes as they
/// happen (from the watch cache).
async fn rbac(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let kinds = [
        ("clusterroles", "ClusterRole"),
        ("clusterrolebindings", "ClusterRoleBinding"),
        ("roles", "Role"),
        ("rolebindings", "RoleBinding"),
    ];
    for (plural, kind) in kinds {
        let t = target("rbac.authorization.k8s.io", plural, None)?;
        let prefix = t.resource.key(None, "");
        let (existing, _) = ctx
            .cache
            .list(&prefix, &prefix, Freshness::Current)
            .await
            .map_err(|e| anyhow::anyhow!("listing {plural}: {e:?}"))?;
        let have: std::collections::HashSet<String> = existing
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for obj in super::auth::bootstrap_policy()
            .into_iter()
            .filter(|o| o["kind"] == kind)
        {
            let name = obj["metadata"]["name"].as_str().unwrap_or("");
            if !have.contains(name) {
                ensure(
                    ctx,
                    target("rbac.authorization.k8s.io", plural, None)?,
                    obj,
                    false,
                )
                .await?;
            }
        }
        let watch = ctx
            .cache
            .watch(&prefix, &prefix, WatchFrom::Now)
            .await
            .map_err(|e| anyhow::anyhow!("watching {plural}: {e:?}"))?;
        for ev in &watch.initial {
            ctx.rbac.upsert(kind, &ev.object);
        }
        let ctx2 = ctx.clone();
        tokio::spawn(async move { feed(ctx2, kind, prefix, watch).await });
    }
    Ok(())
}

/// One role or binding change, told to the authorizer.
fn observe(ctx: &Ctx, kind: &str, ev: &Event) {
    match ev.kind {
        EventKind::Deleted => {
            let meta = &ev.object["metadata"];
            ctx.rbac.remove(
                kind,
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or(""),
            );
        }
        _ => ctx.rbac.upsert(kind, &ev.object),
    }
}

/// Keeps the authorizer current with one kind of role or binding; resumes when the watch ends.
async fn feed(ctx: Arc<Ctx>, kind: &'static str, prefix: String, mut watch: CacheWatch) {
    let mut last = watch.after;
    loop {
        match watch.live.recv().await {
            Ok(ev) => {
                if ev.revision <= watch.after {
                    continue;
                }
                last = ev.revision;
                observe(&ctx, kind, &ev);
            }
            Err(_) => {
                // The cache stopped or we fell behind: resume from the last change seen, or
                // start over from the current state.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let from = match ctx
                    .cache
                    .watch(&prefix, &prefix, WatchFrom::Revision(last))
                    .await
                {
                    Ok(w) => Ok(w),
                    Err(_) => ctx.cache.watch(&prefix, &prefix, WatchFrom::Now).await,
                };
                match from {
                    Ok(w) => {
                        for ev in &w.initial {
                            observe(&ctx, kind, ev);
                            last = last.max(ev.revision);
                        }
                        watch = w;
                    }
                    Err(e) => tracing::warn!("RBAC feed for {kind}: {e:?}"),
                }
            }
        }
    }
}

pub(super) async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    // Custom resources of the CRDs stored earlier are served again.
    let crds = target("apiextensions.k8s.io", "customresourcedefinitions", None)?;
    let page = ctx
        .storage
        .list(&crds.resource.key(None, ""), 0, 0, None)
        .await
        .map_err(|e| anyhow::anyhow!("listing CustomResourceDefinitions: {e:?}"))?;
    for s in &page.items {
        if let Ok(crd) = handlers::served(s) {
            super::crd::register(&crd);
        }
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        ensure(ctx, target("", "namespaces", None)?, obj, false).await?;
    }
    let ip = ctx.allocator.first().to_string();
    let port = ctx.secure_port;
    let host = ctx
        .address
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h)
        .to_string();
    let host = if host == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"clusterIP": ip, "type": "ClusterIP", "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    ensure(
        ctx,
        target("", "services", Some("default"))?,
        service,
        false,
    )
    .await?;
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    ensure(
        ctx,
        target("", "endpoints", Some("default"))?,
        endpoints,
        true,
    )
    .await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    ensure(
        ctx,
        target("discovery.k8s.io", "endpointslices", Some("default"))?,
        slice,
        true,
    )
    .await?;
    rbac(ctx).await
}
