//! The root CA certificate publisher (kube-controller-manager's `root-ca-cert-publisher`): a
//! configMap `kube-root-ca.crt` in every namespace whose `ca.crt` is the cluster CA, the bundle
//! of `--root-ca-file`.
//!
//! Pods verify the API server with it: the `kube-api-access-…` volume the API server injects into
//! every pod projects this configMap's `ca.crt` next to the service-account token, so a client in
//! a pod trusts `https://kubernetes.default.svc`. The configMap is recreated when deleted and its
//! data put back when edited (labels and other annotations are left alone); terminating
//! namespaces are skipped. Without `--root-ca-file` the controller does not run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use super::informer::Queue;
use super::util;

/// The configMap's name in every namespace.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// The annotation describing what the configMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Its value, the real controller's words.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Reads `--root-ca-file`: PEM text holding at least one certificate.
pub fn read_ca(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("error reading root-ca-file at {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!(
            "error parsing root-ca-file at {}: data does not contain any valid RSA or ECDSA certificates",
            path.display()
        );
    }
    Ok(pem)
}

pub fn start(ctx: &Arc<Ctx>, ca: String) {
    let queue = Queue::new("root-ca-cert-publisher");
    let q = queue.clone();
    ctx.inf.namespaces.on_change(move |ns, _| {
        if !terminating(ns) {
            q.add(ns.name_any());
        }
    });
    // The informer holds only configMaps named `kube-root-ca.crt`: any change to one (an edit,
    // a deletion) is a reason to look at its namespace again.
    let q = queue.clone();
    ctx.inf.root_ca_configmaps.on_change(move |cm, _| {
        if cm.name_any() == CONFIG_MAP {
            q.add(cm.namespace().unwrap_or_default());
        }
    });
    let c = ctx.clone();
    let ca = Arc::new(ca);
    // One worker, as kube-controller-manager runs it.
    queue.run_when_synced(ctx, 1, move |ns| {
        let (c, ca) = (c.clone(), ca.clone());
        Box::pin(async move { sync(&c, &ca, &ns).await })
    });
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// What to write to a namespace's `kube-root-ca.crt`, given what is there.
#[derive(Debug, PartialEq)]
enum Plan {
    Create(ConfigMap),
    Update(ConfigMap),
    Nothing,
}

fn plan(ns: &str, existing: Option<&ConfigMap>, ca: &str) -> Plan {
    let data: BTreeMap<String, String> = [("ca.crt".to_string(), ca.to_string())].into();
    let Some(cm) = existing else {
        return Plan::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP.into()),
                namespace: Some(ns.into()),
                annotations: Some([(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into())].into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        });
    };
    let described = cm
        .annotations()
        .get(DESCRIPTION_ANNOTATION)
        .is_some_and(|d| !d.is_empty());
    if cm.data.as_ref() == Some(&data) && described {
        return Plan::Nothing;
    }
    let mut cm = cm.clone();
    cm.data = Some(data);
    cm.annotations_mut()
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Plan::Update(cm)
}

async fn sync(ctx: &Ctx, ca: &str, ns: &str) -> anyhow::Result<()> {
    let Some(n) = ctx.inf.namespaces.store().get(&ObjectRef::new(ns)) else {
        return Ok(());
    };
    if terminating(&n) {
        return Ok(());
    }
    let existing = ctx
        .inf
        .root_ca_configmaps
        .store()
        .get(&ObjectRef::new(CONFIG_MAP).within(ns));
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let result = match plan(ns, existing.as_deref(), ca) {
        Plan::Nothing => return Ok(()),
        Plan::Create(cm) => api.create(&PostParams::default(), &cm).await,
        Plan::Update(cm) => api.replace(CONFIG_MAP, &PostParams::default(), &cm).await,
    };
    match result {
        Ok(_) => Ok(()),
        // Already created, or changed since the cache saw it: the configMap's own event
        // queues the namespace again.
        Err(e) if util::is_conflict(&e) => Ok(()),
        // The namespace is gone, or being deleted (403 NamespaceTerminating): nothing to do.
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn created(ns: &str) -> ConfigMap {
        match plan(ns, None, CA) {
            Plan::Create(cm) => cm,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_missing_config_map_is_created_with_the_ca_and_the_description() {
        let cm = created("team");
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], CA);
        assert_eq!(cm.data.as_ref().unwrap().len(), 1);
        assert_eq!(cm.annotations()["kubernetes.io/description"], DESCRIPTION);
    }

    #[test]
    fn a_published_config_map_is_left_alone() {
        let mut cm = created("team");
        cm.labels_mut().insert("team".into(), "a".into());
        cm.annotations_mut().insert("note".into(), "mine".into());
        assert_eq!(plan("team", Some(&cm), CA), Plan::Nothing);
    }

    #[test]
    fn edited_data_and_a_removed_description_are_put_back() {
        let good = created("team");
        let mut edited = good.clone();
        edited.metadata.resource_version = Some("7".into());
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("ca.crt".into(), "PEM".into());
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        edited
            .annotations_mut()
            .insert("note".into(), "mine".into());
        let Plan::Update(fixed) = plan("team", Some(&edited), CA) else {
            panic!("an update");
        };
        assert_eq!(fixed.data, good.data);
        // The update is of the version read (optimistic concurrency), other annotations kept.
        assert_eq!(fixed.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(fixed.annotations()["note"], "mine");

        let mut undescribed = good.clone();
        undescribed.metadata.annotations = None;
        let Plan::Update(fixed) = plan("team", Some(&undescribed), CA) else {
            panic!("an update");
        };
        assert_eq!(
            fixed.annotations()["kubernetes.io/description"],
            DESCRIPTION
        );
        // Another CA (the file changed across restarts) replaces the old one.
        assert!(matches!(
            plan("team", Some(&good), "other"),
            Plan::Update(_)
        ));
    }

    #[test]
    fn the_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, CA).unwrap();
        assert_eq!(read_ca(&path).unwrap(), CA);
        std::fs::write(&path, "not a certificate").unwrap();
        let e = read_ca(&path).unwrap_err().to_string();
        assert!(e.contains("error parsing root-ca-file"), "{e}");
        assert!(read_ca(&dir.path().join("missing")).is_err());
    }
}
