//! Mirror pods: the API server's view of the static pods, as the kubelet keeps it.
//!
//! For each supervised component the supervisor keeps a pod `<name>-<node>` in the manifest's
//! namespace (kube-system) with the annotations the kubelet sets (`kubernetes.io/config.hash`,
//! `kubernetes.io/config.mirror`, `kubernetes.io/config.source: file`, `…config.seen`), and a
//! status that tells the truth about the process: Running or CrashLoopBackOff, the restart count,
//! the last exit, start times, host IP and readiness from the probes. A mirror pod someone
//! deletes comes back; an edited manifest replaces its mirror pod; a removed one deletes it.
//!
//! Like every component, the supervisor talks to the cluster only through the API server (as
//! `kubernetes-admin`, from `admin.conf`; the kubelet's node identity arrives with the kubelet).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::apiserver::admission::MIRROR_ANNOTATION;
use crate::cluster::manifests;
use crate::cluster::profile::Profile;

use super::Shared;
use super::state::{ComponentState, SupervisorState, now_rfc3339};

/// The host IP of every mirror pod: components listen on loopback.
const HOST_IP: &str = "127.0.0.1";

/// Keeps the mirror pods in step with the supervisor's state until shutdown.
pub async fn run(shared: Arc<Shared>, profile: Profile) {
    let mut client: Option<kube::Client> = None;
    let mut written: HashMap<String, (String, Value)> = HashMap::new();
    loop {
        let st = shared.state.lock().clone();
        let apiserver_ready = st
            .component("kube-apiserver")
            .is_some_and(|c| c.ready && c.state == "Running");
        if apiserver_ready && st.phase == "Running" {
            if client.is_none() {
                match connect(&profile).await {
                    Ok(c) => client = Some(c),
                    Err(e) => tracing::warn!("mirror pods: {e:#}"),
                }
            }
            if let Some(c) = &client {
                let synced = match sync(c, &profile, &st, &mut written).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!("mirror pods: {e:#}");
                        false
                    }
                };
                shared.state.lock().mirrors_synced = synced;
            }
        }
        if shared.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn connect(profile: &Profile) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(profile.conf("admin"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// The mirror pod's name for a static pod.
pub fn mirror_name(component: &str, node: &str) -> String {
    format!("{component}-{node}")
}

async fn sync(
    client: &kube::Client,
    profile: &Profile,
    st: &SupervisorState,
    written: &mut HashMap<String, (String, Value)>,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let existing = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", st.node)))
        .await?;
    let mut mirrors: HashMap<String, Pod> = existing
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
        })
        .filter_map(|p| p.metadata.name.clone().map(|n| (n, p)))
        .collect();
    for c in &st.components {
        if c.state == "Stopped" || c.manifest.starts_with(crate::cluster::nodes::UNIT_PREFIX) {
            continue;
        }
        let name = mirror_name(&c.name, &st.node);
        let current = mirrors.remove(&name);
        let current_hash = current.as_ref().and_then(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION).cloned())
        });
        let uid = match (current, current_hash) {
            (Some(p), Some(h)) if h == c.hash => p.metadata.uid.unwrap_or_default(),
            (existing, _) => {
                if existing.is_some() {
                    delete(&api, &name).await?;
                }
                let Some(body) = mirror_pod(profile, c, &st.node) else {
                    continue;
                };
                written.remove(&name);
                let created = api.create(&PostParams::default(), &body).await?;
                created.metadata.uid.unwrap_or_default()
            }
        };
        let status = pod_status(c, &name, &uid);
        if written.get(&name) == Some(&(uid.clone(), status.clone())) {
            continue;
        }
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
        written.insert(name, (uid, status));
    }
    // Mirror pods of static pods that are gone.
    for name in mirrors.into_keys() {
        written.remove(&name);
        delete(&api, &name).await?;
    }
    Ok(())
}

async fn delete(api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The mirror pod for a component, from its manifest as the supervisor runs it.
fn mirror_pod(profile: &Profile, c: &ComponentState, node: &str) -> Option<Pod> {
    let path = profile.manifests_dir().join(&c.manifest);
    let text = std::fs::read_to_string(path).ok()?;
    let sp = manifests::parse(&c.manifest, &text).ok()?;
    // The manifest changed again since the state was published: the next round has it.
    if sp.hash != c.hash {
        return None;
    }
    let mut pod = sp.pod;
    pod.status = None;
    let meta = &mut pod.metadata;
    meta.name = Some(mirror_name(&c.name, node));
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert("kubernetes.io/config.hash".into(), c.hash.clone());
    annotations.insert(MIRROR_ANNOTATION.into(), c.hash.clone());
    annotations.insert("kubernetes.io/config.seen".into(), now_rfc3339());
    annotations.insert("kubernetes.io/config.source".into(), "file".into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
        // The kubelet tolerates every NoExecute taint for static pods.
        spec.tolerations.get_or_insert_with(Vec::new).push(
            k8s_openapi::api::core::v1::Toleration {
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                ..Default::default()
            },
        );
        spec.restart_policy.get_or_insert_with(|| "Always".into());
    }
    Some(pod)
}

/// A mirror pod's status, from the component's state.
pub fn pod_status(c: &ComponentState, pod_name: &str, uid: &str) -> Value {
    let image = manifests::image();
    let container_id = c.pid.map(|p| format!("minik://{p}"));
    let since = c
        .first_started_at
        .clone()
        .or_else(|| c.started_at.clone())
        .unwrap_or_default();
    let state = match c.state.as_str() {
        "Running" => json!({"running": {"startedAt": c.started_at}}),
        "CrashLoopBackOff" => json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!(
                "back-off {} restarting failed container={} pod={pod_name}_kube-system({uid})",
                human_ms(c.backoff_ms.unwrap_or(0)), c.name),
        }}),
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    let last_state = match &c.last_exit {
        Some(e) => json!({"terminated": {
            "exitCode": e.exit_code,
            "reason": e.reason,
            "startedAt": e.started_at,
            "finishedAt": e.finished_at,
        }}),
        None => json!({}),
    };
    let running = c.state == "Running";
    let ready = running && c.ready;
    let cond = |t: &str, ok: bool, when: &str| {
        let mut v = json!({"type": t, "status": if ok {"True"} else {"False"},
                           "lastProbeTime": null, "lastTransitionTime": when});
        if !ok && (t == "Ready" || t == "ContainersReady") {
            v["reason"] = json!("ContainersNotReady");
            v["message"] = json!(format!("containers with unready status: [{}]", c.name));
        }
        v
    };
    let ready_since = c.started_at.clone().unwrap_or_else(|| since.clone());
    let mut container = json!({
        "name": c.name,
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": c.restarts,
        "started": running,
        "state": state,
        "lastState": last_state,
    });
    if let Some(id) = container_id.filter(|_| running) {
        container["containerID"] = json!(id);
    }
    json!({
        "phase": "Running",
        "conditions": [
            cond("PodReadyToStartContainers", true, &since),
            cond("Initialized", true, &since),
            cond("Ready", ready, &ready_since),
            cond("ContainersReady", ready, &ready_since),
            cond("PodScheduled", true, &since),
        ],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": since,
        "containerStatuses": [container],
        "qosClass": "Burstable",
    })
}

/// A back-off as the kubelet prints it: `200ms`, `10s`, `1m20s`.
fn human_ms(ms: u64) -> String {
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{}s", m / 1000),
        m => format!("{}m{}s", m / 60_000, m % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::state::ExitInfo;

    #[test]
    fn status_tells_the_process_state() {
        let mut c = ComponentState {
            name: "etcd".into(),
            state: "Running".into(),
            ready: true,
            pid: Some(42),
            started_at: Some("2026-11-22T06:00:00Z".into()),
            first_started_at: Some("2026-11-22T05:00:00Z".into()),
            restarts: 2,
            ..Default::default()
        };
        let s = pod_status(&c, "etcd-minik", "u1");
        assert_eq!(s["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(s["containerStatuses"][0]["containerID"], "minik://42");
        assert_eq!(s["conditions"][2]["status"], "True");
        assert_eq!(s["startTime"], "2026-11-22T05:00:00Z");
        c.state = "CrashLoopBackOff".into();
        c.backoff_ms = Some(400);
        c.last_exit = Some(ExitInfo {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            ..Default::default()
        });
        let s = pod_status(&c, "etcd-minik", "u1");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["message"],
            "back-off 400ms restarting failed container=etcd pod=etcd-minik_kube-system(u1)"
        );
        assert_eq!(
            s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );
        assert_eq!(s["conditions"][2]["status"], "False");
        assert_eq!(s["conditions"][2]["reason"], "ContainersNotReady");
    }
}
