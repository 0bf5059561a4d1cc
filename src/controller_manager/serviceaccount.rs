//! The service account controller: a `default` ServiceAccount in every namespace (pods that name
//! no service account run as it), recreated if deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use super::informer::{Change, Queue};
use super::util;

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("serviceaccount");
    let q = queue.clone();
    ctx.inf.namespaces.on_change(move |ns, change| {
        if change == Change::Applied && ns.metadata.deletion_timestamp.is_none() {
            q.add(ns.name_any());
        }
    });
    let q = queue.clone();
    ctx.inf.serviceaccounts.on_change(move |sa, change| {
        if change == Change::Deleted && sa.name_any() == "default" {
            q.add(sa.namespace().unwrap_or_default());
        }
    });
    let c = ctx.clone();
    queue.run_when_synced(ctx, workers, move |ns| {
        let c = c.clone();
        Box::pin(async move { sync(&c, &ns).await })
    });
}

async fn sync(ctx: &Ctx, ns: &str) -> anyhow::Result<()> {
    let Some(n) = ctx.inf.namespaces.store().get(&ObjectRef::new(ns)) else {
        return Ok(());
    };
    if n.metadata.deletion_timestamp.is_some()
        || ctx
            .inf
            .serviceaccounts
            .store()
            .get(&ObjectRef::new("default").within(ns))
            .is_some()
    {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_conflict(&e) || util::is_not_found(&e) => Ok(()),
        // A namespace being deleted refuses new objects (403): nothing to do.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
