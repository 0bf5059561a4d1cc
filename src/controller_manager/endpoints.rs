//! The endpoints controller: for each service with a selector, an Endpoints object of the same
//! name listing the pods it selects — `addresses` for ready pods with an IP, `notReadyAddresses`
//! for the others — and the service's ports resolved against each pod (a named `targetPort`
//! looks up the container port of that name). kube-proxy and DNS read these. The `kubernetes`
//! service in `default` is the API server's own and is skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use super::informer::Queue;
use super::util;

/// Queues the services a pod change concerns (every service with a selector in its namespace).
pub fn watch_services_and_pods(ctx: &Arc<Ctx>, queue: &Arc<Queue>) {
    let q = queue.clone();
    ctx.inf
        .services
        .on_change(move |s, _| q.add(util::key_of(&s.metadata)));
    let q = queue.clone();
    let weak = Arc::downgrade(ctx);
    ctx.inf.pods.on_change(move |p, _| {
        let Some(ctx) = weak.upgrade() else { return };
        let ns = p.namespace().unwrap_or_default();
        for s in ctx.inf.services.store().state() {
            if s.namespace().as_deref() == Some(ns.as_str())
                && s.spec
                    .as_ref()
                    .and_then(|sp| sp.selector.as_ref())
                    .is_some_and(|sel| !sel.is_empty())
            {
                q.add(util::key_of(&s.metadata));
            }
        }
    });
}

/// The service (if it selects pods and is not the API server's) and the pods it selects.
pub fn service_pods(ctx: &Ctx, key: &str) -> Option<(Arc<Service>, Vec<Arc<Pod>>)> {
    let (ns, name) = util::split_key(key);
    if ns == "default" && name == "kubernetes" {
        return None;
    }
    let svc = ctx
        .inf
        .services
        .store()
        .get(&ObjectRef::new(name).within(ns))?;
    let sel: BTreeMap<String, String> = svc.spec.as_ref()?.selector.clone()?;
    if sel.is_empty() {
        return None;
    }
    let pods = ctx
        .inf
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| {
            let l = p.labels();
            sel.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .filter(|p| {
            !matches!(util::pod_phase(p), "Succeeded" | "Failed")
                && p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some_and(|ip| !ip.is_empty())
        })
        .collect();
    Some((svc, pods))
}

/// A service port's target on a pod: a number, or a named container port looked up.
pub fn target_port(pod: &Pod, port: &k8s_openapi::api::core::v1::ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

pub fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.namespace(),
        name: Some(p.name_any()),
        uid: p.uid(),
        ..Default::default()
    }
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("endpoints");
    watch_services_and_pods(ctx, &queue);
    let c = ctx.clone();
    queue.run_when_synced(ctx, workers, move |key| {
        let c = c.clone();
        Box::pin(async move { sync(&c, &key).await })
    });
}

async fn sync(ctx: &Ctx, key: &str) -> anyhow::Result<()> {
    let Some((svc, pods)) = service_pods(ctx, key) else {
        return Ok(());
    };
    let (ns, name) = util::split_key(key);
    // One subset per distinct set of resolved ports (the real controller's repacking).
    let mut subsets: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    let ports_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    for p in &pods {
        let ports: Vec<EndpointPort> = ports_spec
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: sp.name.clone(),
                    port: target_port(p, sp)?,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let sig = serde_json::to_string(&ports).unwrap_or_default();
        let subset = subsets.entry(sig).or_insert_with(|| EndpointSubset {
            ports: Some(ports),
            ..Default::default()
        });
        let addr = EndpointAddress {
            ip: p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(p)),
            hostname: None,
        };
        let list = if util::pod_is_ready(p) && p.metadata.deletion_timestamp.is_none() {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(addr);
        list.sort_by(|a, b| a.ip.cmp(&b.ip));
    }
    let subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let current = ctx
        .inf
        .endpoints
        .store()
        .get(&ObjectRef::new(name).within(ns));
    let want_subsets = (!subsets.is_empty()).then_some(subsets);
    match current {
        Some(cur) => {
            if cur.subsets == want_subsets && cur.labels() == svc.labels() {
                return Ok(());
            }
            let mut body = (*cur).clone();
            body.subsets = want_subsets;
            body.metadata.labels = svc.metadata.labels.clone();
            match api.replace(name, &PostParams::default(), &body).await {
                Ok(_) => Ok(()),
                Err(e) if util::is_not_found(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: svc.metadata.labels.clone(),
                    ..Default::default()
                },
                subsets: want_subsets,
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => Ok(()),
                Err(e) if util::is_conflict(&e) => Err(e.into()),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}
