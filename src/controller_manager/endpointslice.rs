//! The endpoint slice controller: the same addresses as [`super::endpoints`], as an
//! EndpointSlice per service (`generateName: <service>-`, labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`, owned by the service), with per-endpoint conditions
//! (ready, serving, terminating). One slice per service (the real one splits at 100 endpoints).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::Ctx;
use super::endpoints::{pod_ref, service_pods, target_port, watch_services_and_pods};
use super::informer::Queue;
use super::util;

pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("endpointslice");
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
    let ports_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let ports: Vec<EndpointPort> = ports_spec
        .iter()
        .map(|sp| EndpointPort {
            name: Some(sp.name.clone().unwrap_or_default()),
            port: pods.first().and_then(|p| target_port(p, sp)),
            protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: sp.app_protocol.clone(),
        })
        .collect();
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .map(|p| {
            let terminating = p.metadata.deletion_timestamp.is_some();
            let ready = util::pod_is_ready(p);
            Endpoint {
                addresses: vec![
                    p.status
                        .as_ref()
                        .and_then(|s| s.pod_ip.clone())
                        .unwrap_or_default(),
                ],
                conditions: Some(EndpointConditions {
                    ready: Some(ready && !terminating),
                    serving: Some(ready),
                    terminating: Some(terminating),
                }),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(p)),
                ..Default::default()
            }
        })
        .collect();
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert("kubernetes.io/service-name".into(), name.into());
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        MANAGED_BY.into(),
    );
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let existing = ctx
        .inf
        .endpointslices
        .store()
        .state()
        .into_iter()
        .find(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels()
                    .get("kubernetes.io/service-name")
                    .map(String::as_str)
                    == Some(name)
                && s.labels()
                    .get("endpointslice.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some(MANAGED_BY)
        });
    // The cache may not hold a slice created a moment ago: ask the API before creating one.
    let existing = match existing {
        Some(e) => Some(e),
        None => {
            let lp = kube::api::ListParams::default().labels(&format!(
                "kubernetes.io/service-name={name},endpointslice.kubernetes.io/managed-by={MANAGED_BY}"
            ));
            api.list(&lp).await?.items.into_iter().next().map(Arc::new)
        }
    };
    match existing {
        Some(cur) => {
            if cur.endpoints == endpoints
                && cur.ports.as_ref() == Some(&ports)
                && *cur.labels() == labels
            {
                return Ok(());
            }
            let mut body = (*cur).clone();
            body.endpoints = endpoints;
            body.ports = Some(ports);
            body.metadata.labels = Some(labels);
            match api
                .replace(&cur.name_any(), &PostParams::default(), &body)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if util::is_not_found(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let slice = EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
                    owner_references: Some(vec![util::new_controller_ref(svc.as_ref())]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            };
            match api.create(&PostParams::default(), &slice).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}
