//! Static pods: pods the kubelet runs from manifest files (`--pod-manifest-path`), without the
//! API server having asked for them — how kubeadm's kubelet runs the control plane.
//!
//! Every 20 s (the kubelet's file check frequency) the folder is read; each `*.yaml`, `*.yml`
//! or `*.json` file holding a Pod becomes a pod named `<name>-<node>` whose uid is a hash of the
//! file and the node (an edit makes a new pod: the old one is stopped, the new one started). The
//! kubelet runs it like any other pod and, so that the API shows it, keeps a **mirror pod** of
//! the same name in the API server, annotated `kubernetes.io/config.mirror`; the pod's status is
//! written onto the mirror. Deleting the mirror (`kubectl delete pod`) does not stop the static
//! pod: the kubelet makes a new mirror; removing the file does.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::api::{Api, DeleteParams, PostParams};
use sha2::Digest as _;

/// `kubernetes.io/config.source` of a static pod.
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// The annotation that marks a mirror pod (its value: the static pod's hash).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// `kubernetes.io/config.hash`.
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";

/// Whether a pod came from a file (a static pod, run by this kubelet).
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_ANNOTATION))
        .is_some_and(|s| s == "file")
        && !is_mirror(pod)
}

/// Whether a pod is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// The static pods of `dir` for `node`, by uid; files that are no Pod are reported and skipped.
pub fn read(dir: &Path, node: &str) -> HashMap<String, Pod> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.')
            || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match parse(&name, &text, node) {
            Ok(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    out.insert(uid, pod);
                }
            }
            Err(e) => tracing::warn!("static pod {}: {e:#}", path.display()),
        }
    }
    out
}

/// One manifest as the static pod the kubelet runs.
pub fn parse(file: &str, text: &str, node: &str) -> anyhow::Result<Pod> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{file}{at}: {e}")
    })?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "Pod" {
        anyhow::bail!("{file}: kind: must be \"Pod\", got {kind:?}");
    }
    let mut pod: Pod = serde_yaml::from_value(value).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{file}: metadata.name: Required value"))?;
    let Some(spec) = pod.spec.as_mut() else {
        anyhow::bail!("{file}: spec: Required value");
    };
    if spec.containers.is_empty() {
        anyhow::bail!("{file}: spec.containers: Required value");
    }
    // The real kubelet: the uid is a hash of the pod as read and the node.
    let d = sha2::Sha256::digest(format!("{node}\n{text}").as_bytes());
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    spec.node_name = Some(node.to_string());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    // Static pods tolerate every NoExecute taint (they stay on their node).
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{name}-{node}"));
    meta.namespace = Some(
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    meta.uid = Some(uid.clone());
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    a.insert(HASH_ANNOTATION.into(), h.clone());
    a.insert(SOURCE_ANNOTATION.into(), "file".into());
    a.insert(
        "kubernetes.io/config.seen".into(),
        jiff::Timestamp::now().to_string(),
    );
    pod.status = None;
    Ok(pod)
}

/// The mirror pod of a static pod (what is posted to the API server).
pub fn mirror_of(pod: &Pod) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION).cloned())
        .unwrap_or_default();
    let a = m.metadata.annotations.get_or_insert_with(BTreeMap::new);
    a.insert(MIRROR_ANNOTATION.into(), hash);
    m.status = None;
    m
}

/// Makes the API's mirror pods match the static pods: creates missing ones, replaces those of
/// an older manifest or being deleted, removes those whose file is gone (`ours` are the mirror
/// names this kubelet made before).
pub async fn sync_mirrors(
    client: &kube::Client,
    node: &str,
    pods: &HashMap<String, Pod>,
) -> anyhow::Result<()> {
    let all: Api<Pod> = Api::all(client.clone());
    let existing = all
        .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let hash_of = |p: &Pod, key: &str| -> Option<String> {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let mut wanted: HashMap<(String, String), &Pod> = pods
        .values()
        .map(|p| {
            (
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                p,
            )
        })
        .collect();
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for m in existing.items.iter().filter(|p| is_mirror(p)) {
        // Only the mirrors of this kubelet's file pods (the supervisor keeps its own).
        if hash_of(m, SOURCE_ANNOTATION).as_deref() != Some("file")
            || hash_of(m, "minik.dev/static-pod-of").as_deref() != Some(node)
        {
            continue;
        }
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        let name = m.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let key = (ns, name.clone());
        let keep = match wanted.get(&key) {
            Some(p) => {
                hash_of(m, MIRROR_ANNOTATION) == hash_of(p, HASH_ANNOTATION)
                    && m.metadata.deletion_timestamp.is_none()
            }
            None => false,
        };
        if keep {
            wanted.remove(&key);
        } else {
            match api.delete(&name, &force).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for ((ns, _), p) in wanted {
        let mut mirror = mirror_of(p);
        mirror
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert("minik.dev/static-pod-of".into(), node.to_string());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => {}
            // A deleted mirror still terminating: the next round makes it.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: minik/echo:1.0}]\n";

    #[test]
    fn a_manifest_becomes_a_static_pod_of_the_node() {
        let p = parse("web.yaml", WEB, "minik-m02").expect("valid");
        assert_eq!(p.metadata.name.as_deref(), Some("web-minik-m02"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("minik-m02"));
        assert!(is_static(&p));
        assert!(!is_mirror(&p));
        // The same file on another node, or an edit, is another pod.
        let q = parse("web.yaml", WEB, "minik-m03").expect("valid");
        assert_ne!(p.metadata.uid, q.metadata.uid);
        let edited = WEB.replace("echo:1.0", "echo:1.1");
        let r = parse("web.yaml", &edited, "minik-m02").expect("valid");
        assert_ne!(p.metadata.uid, r.metadata.uid);
        let m = mirror_of(&p);
        assert!(is_mirror(&m));
        assert!(m.metadata.uid.is_none());
    }

    #[test]
    fn bad_manifests_are_refused_with_the_file() {
        for (text, want) in [
            ("kind: Service\n", "web.yaml: kind: must be \"Pod\""),
            (
                "kind: Pod\nspec: {containers: [{name: c}]}\n",
                "metadata.name: Required value",
            ),
            (
                "kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
                "spec.containers: Required value",
            ),
            ("kind: [\n", "web.yaml:"),
        ] {
            let e = parse("web.yaml", text, "n").expect_err(text).to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
