//! One pod's worker: the kubelet's `syncPod`, run for one pod at a time.
//!
//! Each pod bound to the node gets a task that receives the pod's newest version and is woken
//! when one of its containers changes (Docker events) or a back-off ends. Each sync compares what
//! the spec asks for with what Docker shows and does the next steps, as the kubelet's
//! `computePodActions` does:
//!
//! 1. a sandbox: if the pod has no running one, make one (a new attempt) and restart all the
//!    pod's containers in it;
//! 2. init containers, in order, each to a successful exit (a failed one is restarted with
//!    back-off, or fails the pod under `restartPolicy: Never`);
//! 3. app containers: start the missing ones, restart the exited ones the restart policy wants
//!    restarted — after the **CrashLoopBackOff** delay (10 s doubling to 5 min, forgotten after
//!    10 min of running) — and pull images per `imagePullPolicy` (`ErrImagePull`, then
//!    `ImagePullBackOff`; `ErrImageNeverPull`);
//! 4. the status (phase, conditions, container statuses, IPs, QoS) patched when it changed.
//!
//! A pod being deleted has its containers stopped (SIGTERM, SIGKILL after the grace period),
//! removed, and is then deleted for good (grace 0, uid precondition), which is the kubelet's
//! half of graceful deletion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::sync::{Notify, watch};

use super::env::{self, EnvContext, KubeSource};
use super::events::{Recorder, Type};
use super::prober::{self, ContainerProbes, DockerProbeRunner, HandlerTarget};
use super::runtime::{ContainerConfig, ContainerInfo, Kind, PodRef, Runtime, State};
use super::status::{self, Waiting};
use super::volumes::{PodVolumes, VolumeManager};
use crate::component_base::quantity;

/// The first restart delay, doubled per crash up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest restart (and image pull) back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts its back-off over.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// A pod with nothing to wait for is synced again after this long.
const RESYNC: Duration = Duration::from_secs(10);
/// How often volumes are set up again (configMap edits, token rotation reach the containers).
const VOLUME_RESYNC: Duration = Duration::from_secs(60);

/// What every worker shares: the node, its runtime, the API.
pub struct Shared {
    pub client: kube::Client,
    pub runtime: Arc<Runtime>,
    pub recorder: Recorder,
    pub node: String,
    pub host_ip: String,
    pub pause_image: String,
    /// Pod volumes under the kubelet's root directory.
    pub volumes: VolumeManager,
    /// ConfigMaps, Secrets, Services and tokens for env and volumes.
    pub source: KubeSource,
    /// The node's allocatable (limits default to it in the downward API).
    pub allocatable:
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// A back-off: the delay to wait after `since` before trying again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub delay: Duration,
    pub since: Instant,
}

impl Backoff {
    /// Whether `now` is still inside the back-off, and until when.
    pub fn blocks(&self, now: Instant) -> Option<Instant> {
        let until = self.since + self.delay;
        (now < until).then_some(until)
    }

    /// The back-off after one more failure at `now`.
    pub fn next(prev: Option<Backoff>, now: Instant) -> Backoff {
        Backoff {
            delay: prev.map_or(INITIAL_BACKOFF, |b| (b.delay * 2).min(MAX_BACKOFF)),
            since: now,
        }
    }
}

/// What a worker remembers between syncs.
#[derive(Default)]
struct Memory {
    /// Restart back-off per container name.
    restarts: HashMap<String, Backoff>,
    /// Image pull back-off per image.
    pulls: HashMap<String, Backoff>,
    /// The last pull error per image (the ImagePullBackOff message repeats it).
    pull_errors: HashMap<String, String>,
    /// Back-off after a sandbox could not be made.
    sandbox_retry: Option<Backoff>,
    /// Why a container waits (failed pull, config error …), per container name.
    waiting: HashMap<String, Waiting>,
    /// The last status sent, to patch only changes.
    sent: Option<Value>,
    /// The sandbox's IP.
    pod_ip: Option<String>,
    /// This sync started or stopped a container (its view of the containers is stale).
    acted: bool,
    /// The pod's volumes, set up (again) at most every [`VOLUME_RESYNC`].
    vols: Option<(PodVolumes, Instant)>,
    /// The probe workers per container name, with the Docker container they probe.
    probes: HashMap<String, (String, ContainerProbes)>,
    start_time: Option<String>,
}

/// The handle the pod manager keeps for a worker.
pub struct Handle {
    pub pod: watch::Sender<Pod>,
    pub poke: Arc<Notify>,
}

/// Starts a worker for `pod`; it ends when the pod is deleted and its containers are gone.
pub fn spawn(shared: Arc<Shared>, pod: Pod, on_exit: impl FnOnce() + Send + 'static) -> Handle {
    let (tx, rx) = watch::channel(pod);
    let poke = Arc::new(Notify::new());
    let p = poke.clone();
    tokio::spawn(async move {
        run(shared, rx, p).await;
        on_exit();
    });
    Handle { pod: tx, poke }
}

async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Pod>, poke: Arc<Notify>) {
    let mut mem = Memory::default();
    loop {
        let pod = rx.borrow_and_update().clone();
        let wake = match sync(&shared, &pod, &mut mem).await {
            Ok(Next::Done) => return,
            Ok(Next::After(d)) => d,
            Err(e) => {
                tracing::warn!(pod = %key(&pod), "sync failed: {e:#}");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() {
                // The manager dropped us: the pod is gone from the API; clean up.
                let mut gone = pod.clone();
                gone.metadata.deletion_timestamp.get_or_insert_with(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
                });
                let _ = kill_and_remove(&shared, &gone, &mut mem, false).await;
                return;
            },
            _ = poke.notified() => {}
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

enum Next {
    Done,
    After(Duration),
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
    }
}

/// The pod's `name_namespace(uid)` as the kubelet's messages write it.
fn pod_desc(pod: &Pod) -> String {
    let r = pod_ref(pod);
    format!("{}_{}({})", r.name, r.namespace, r.uid)
}

/// The hash of a container's spec: a change (a new image) means a new container.
pub fn container_hash(c: &Container) -> String {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    let d = sha2::Sha256::digest(&bytes);
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn newest<'a>(cs: &'a [ContainerInfo], name: &str) -> Option<&'a ContainerInfo> {
    cs.iter()
        .filter(|c| c.kind == Kind::Container && c.name == name)
        .max_by_key(|c| (c.attempt, c.created))
}

fn previous<'a>(
    cs: &'a [ContainerInfo],
    name: &str,
    current: &ContainerInfo,
) -> Option<&'a ContainerInfo> {
    cs.iter()
        .filter(|c| c.kind == Kind::Container && c.name == name && c.id != current.id)
        .max_by_key(|c| (c.attempt, c.created))
}

/// How long the container ran before it exited (for the back-off reset).
fn ran_for(c: &ContainerInfo) -> Option<Duration> {
    if let State::Exited {
        started_at,
        finished_at,
        ..
    } = &c.state
    {
        let s: jiff::Timestamp = started_at.parse().ok()?;
        let f: jiff::Timestamp = finished_at.parse().ok()?;
        let secs = f.as_second() - s.as_second();
        return (secs >= 0).then(|| Duration::from_secs(secs as u64));
    }
    None
}

async fn sync(shared: &Shared, pod: &Pod, mem: &mut Memory) -> anyhow::Result<Next> {
    if pod.metadata.deletion_timestamp.is_some() {
        kill_and_remove(shared, pod, mem, true).await?;
        return Ok(Next::Done);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Next::After(RESYNC));
    };
    let rt = &shared.runtime;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pref = pod_ref(pod);
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let mut cs = rt.pod_containers(&uid).await?;
    mem.acted = false;
    mem.start_time.get_or_insert_with(|| {
        pod.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| {
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            })
    });

    // A finished pod stays finished: stop what still runs, keep the containers for logs.
    if phase == "Succeeded" || phase == "Failed" {
        for c in cs.iter().filter(|c| c.running()) {
            rt.stop(&c.id, grace_seconds(pod)).await?;
        }
        return Ok(Next::After(Duration::from_secs(60)));
    }

    // 1. The sandbox.
    let sandbox = cs
        .iter()
        .filter(|c| c.kind == Kind::Sandbox && c.running())
        .max_by_key(|c| (c.attempt, c.created))
        .cloned();
    let sandbox = match sandbox {
        Some(s) => s,
        None => {
            let old: Vec<ContainerInfo> = cs
                .iter()
                .filter(|c| c.kind == Kind::Sandbox)
                .cloned()
                .collect();
            // A pod whose containers all finished for good needs no new sandbox.
            if !old.is_empty() && all_done(spec, &cs, restart_policy) {
                return report(shared, pod, mem, &cs, None).await;
            }
            if let Some(until) = mem.sandbox_retry.and_then(|b| b.blocks(Instant::now())) {
                report(shared, pod, mem, &cs, None).await?;
                return Ok(Next::After(until.saturating_duration_since(Instant::now())));
            }
            let attempt = old.iter().map(|s| s.attempt + 1).max().unwrap_or(0);
            if !old.is_empty() {
                shared.recorder.pod(
                    pod,
                    None,
                    Type::Normal,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.".into(),
                );
                for c in &cs {
                    if c.running() {
                        rt.stop(&c.id, grace_seconds(pod)).await?;
                    }
                }
            }
            let hostname = spec
                .hostname
                .clone()
                .unwrap_or_else(|| pref.name.chars().take(63).collect());
            let host_network = spec.host_network.unwrap_or(false);
            match rt
                .run_sandbox(&pref, attempt, &hostname, host_network, &shared.pause_image)
                .await
            {
                Ok((_, ip)) => {
                    mem.sandbox_retry = None;
                    mem.pod_ip = Some(if host_network {
                        shared.host_ip.clone()
                    } else {
                        ip
                    });
                }
                Err(e) => {
                    shared.recorder.pod(
                        pod,
                        None,
                        Type::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e:#}"),
                    );
                    let b = Backoff::next(mem.sandbox_retry, Instant::now());
                    mem.sandbox_retry = Some(b);
                    report(shared, pod, mem, &cs, None).await?;
                    return Ok(Next::After(b.delay));
                }
            }
            for s in &old {
                if let Some(ip) = &s.ip {
                    rt.release_ip(ip);
                }
                rt.remove(&s.id).await?;
            }
            cs = rt.pod_containers(&uid).await?;
            match cs
                .iter()
                .filter(|c| c.kind == Kind::Sandbox && c.running())
                .max_by_key(|c| (c.attempt, c.created))
            {
                Some(s) => s.clone(),
                None => return Ok(Next::After(Duration::from_secs(1))),
            }
        }
    };
    if mem.pod_ip.is_none() {
        mem.pod_ip = Some(if spec.host_network.unwrap_or(false) {
            shared.host_ip.clone()
        } else {
            sandbox.ip.clone().unwrap_or_default()
        });
    }
    // Containers of an older sandbox are dead with it: a new sandbox restarts them all.
    let stale: Vec<&ContainerInfo> = cs
        .iter()
        .filter(|c| c.kind == Kind::Container && c.created < sandbox.created && c.running())
        .collect();
    for c in stale {
        rt.stop(&c.id, 0).await?;
        mem.acted = true;
    }

    // Volumes before any container: a missing configMap or secret keeps them waiting.
    let fresh = mem
        .vols
        .as_ref()
        .is_some_and(|(_, at)| at.elapsed() < VOLUME_RESYNC);
    if !fresh {
        match shared.volumes.setup(pod).await {
            Ok(v) => mem.vols = Some((v, Instant::now())),
            Err(e) => {
                shared
                    .recorder
                    .pod(pod, None, Type::Warning, "FailedMount", e.to_string());
                if mem.vols.is_none() {
                    report(shared, pod, mem, &cs, None).await?;
                    return Ok(Next::After(Duration::from_secs(2)));
                }
            }
        }
    }

    let now = Instant::now();
    let mut wake = RESYNC;
    let mut note_wake = |at: Instant| {
        wake = wake.min(
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
    };

    // 2. Init containers, in order.
    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut init_failed = false;
    let mut init_done = true;
    for ic in &inits {
        let sidecar = ic.restart_policy.as_deref() == Some("Always");
        let cur = newest(&cs, &ic.name).cloned();
        match cur.as_ref().map(|c| &c.state) {
            None => {
                start_container(shared, pod, ic, 0, &sandbox, mem).await;
                init_done = false;
                break;
            }
            Some(State::Running { .. }) if sidecar => continue,
            Some(State::Running { .. }) => {
                init_done = false;
                break;
            }
            Some(State::Exited { exit_code: 0, .. }) if !sidecar => continue,
            Some(_) => {
                let c = cur.as_ref().map(|c| (c.attempt, ran_for(c)));
                if restart_policy == "Never" && !sidecar {
                    init_failed = true;
                    init_done = false;
                    break;
                }
                let (attempt, ran) = c.unwrap_or((0, None));
                if let Some(at) = restart_blocked(shared, pod, mem, &ic.name, ran, now) {
                    note_wake(at);
                } else {
                    start_container(shared, pod, ic, attempt + 1, &sandbox, mem).await;
                }
                init_done = false;
                break;
            }
        }
    }

    // 3. App containers.
    if init_done {
        for c in &spec.containers {
            let cur = newest(&cs, &c.name).cloned();
            match cur {
                None => {
                    start_container(shared, pod, c, 0, &sandbox, mem).await;
                }
                Some(cur) if cur.running() => {
                    if let Some(at) = probe(shared, pod, c, &cur, mem, restart_policy).await? {
                        note_wake(at);
                    }
                    if cur.hash != container_hash(c) {
                        shared.recorder.pod(
                            pod,
                            Some(&c.name),
                            Type::Normal,
                            "Killing",
                            format!("Container {} definition changed, will be restarted", c.name),
                        );
                        rt.stop(&cur.id, grace_seconds(pod)).await?;
                        mem.acted = true;
                        start_container(shared, pod, c, cur.attempt + 1, &sandbox, mem).await;
                    }
                }
                Some(cur) => {
                    let code = match &cur.state {
                        State::Exited { exit_code, .. } => *exit_code,
                        _ => 128,
                    };
                    let restart = match restart_policy {
                        "Always" => true,
                        "OnFailure" => code != 0,
                        _ => false,
                    };
                    if !restart {
                        mem.waiting.remove(&c.name);
                        continue;
                    }
                    if let Some(at) = restart_blocked(shared, pod, mem, &c.name, ran_for(&cur), now)
                    {
                        note_wake(at);
                    } else {
                        start_container(shared, pod, c, cur.attempt + 1, &sandbox, mem).await;
                    }
                }
            }
        }
    }
    // Image and config failures retry after their back-off; a failed pull shows as
    // ImagePullBackOff for the rest of it (a sync a second later says so).
    for b in mem.pulls.values() {
        if let Some(at) = b.blocks(now) {
            note_wake(at);
        }
    }
    if mem.waiting.values().any(|w| w.reason == "ErrImagePull") {
        note_wake(Instant::now() + Duration::from_secs(1));
    }

    // Keep the newest and the previous container of each name (for `logs --previous`); look
    // again only when this sync started or stopped something.
    if mem.acted {
        cs = rt.pod_containers(&uid).await?;
    }
    let mut by_name: HashMap<&str, Vec<&ContainerInfo>> = HashMap::new();
    for c in cs.iter().filter(|c| c.kind == Kind::Container) {
        by_name.entry(&c.name).or_default().push(c);
    }
    for list in by_name.values_mut() {
        list.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created)));
        for old in list.iter().skip(2) {
            if !old.running() {
                rt.remove(&old.id).await?;
            }
        }
    }
    report(shared, pod, mem, &cs, Some((init_done, init_failed))).await?;
    Ok(Next::After(wake))
}

/// Whether every container finished and will not be restarted.
fn all_done(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    cs: &[ContainerInfo],
    restart_policy: &str,
) -> bool {
    if restart_policy == "Always" {
        return false;
    }
    spec.containers
        .iter()
        .all(|c| match newest(cs, &c.name).map(|c| &c.state) {
            Some(State::Exited { exit_code, .. }) => restart_policy == "Never" || *exit_code == 0,
            _ => false,
        })
}

/// Whether the container's restart must wait (CrashLoopBackOff); records the back-off event and
/// the waiting reason. Returns when the wait ends.
fn restart_blocked(
    shared: &Shared,
    pod: &Pod,
    mem: &mut Memory,
    name: &str,
    ran: Option<Duration>,
    now: Instant,
) -> Option<Instant> {
    if ran.is_some_and(|r| r >= BACKOFF_RESET) {
        mem.restarts.remove(name);
    }
    let b = mem.restarts.get(name).copied()?;
    let until = b.blocks(now)?;
    let msg = format!(
        "back-off {} restarting failed container={name} pod={}",
        human(b.delay),
        pod_desc(pod)
    );
    let w = Waiting {
        reason: "CrashLoopBackOff".into(),
        message: msg,
    };
    if mem.waiting.get(name) != Some(&w) {
        shared.recorder.pod(
            pod,
            Some(name),
            Type::Warning,
            "BackOff",
            format!(
                "Back-off restarting failed container {name} in pod {}",
                pod_desc(pod)
            ),
        );
    }
    mem.waiting.insert(name.to_string(), w);
    Some(until)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
}

/// The image pull policy, defaulted by tag as the API server defaults it.
fn pull_policy(c: &Container) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or("");
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || name.contains(':') && !name.ends_with(":latest") {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

/// Makes sure the image is there per the pull policy; on failure records why the container
/// waits.
async fn ensure_image(shared: &Shared, pod: &Pod, c: &Container, mem: &mut Memory) -> bool {
    let image = c.image.clone().unwrap_or_default();
    let policy = pull_policy(c);
    let engine = &shared.runtime.engine;
    let present = engine.docker.inspect_image(&image).await.is_ok();
    let fail = |mem: &mut Memory, reason: &str, message: String| {
        mem.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: reason.into(),
                message,
            },
        );
        false
    };
    match policy.as_str() {
        "Never" if !present => {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                "ErrImageNeverPull",
                msg.clone(),
            );
            return fail(mem, "ErrImageNeverPull", msg);
        }
        "Never" | "IfNotPresent" if present => {
            if mem
                .waiting
                .get(&c.name)
                .is_none_or(|w| w.reason != "PodInitializing")
            {
                shared.recorder.pod(
                    pod,
                    Some(&c.name),
                    Type::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
            }
            return true;
        }
        _ => {}
    }
    let now = Instant::now();
    if let Some(b) = mem.pulls.get(&image)
        && b.blocks(now).is_some()
    {
        let msg = format!("Back-off pulling image \"{image}\"");
        shared
            .recorder
            .pod(pod, Some(&c.name), Type::Normal, "BackOff", msg.clone());
        // As kubelets since 1.30 word it: the back-off and the error behind it.
        let msg = match mem.pull_errors.get(&image) {
            Some(e) => format!("{msg}: ErrImagePull: {e}"),
            None => msg,
        };
        return fail(mem, "ImagePullBackOff", msg);
    }
    shared.recorder.pod(
        pod,
        Some(&c.name),
        Type::Normal,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = Instant::now();
    match super::images::pull(engine, &image).await {
        Ok(()) => {
            mem.pulls.remove(&image);
            let secs = started.elapsed().as_secs_f64();
            shared.recorder.pod(pod, Some(&c.name), Type::Normal, "Pulled",
                format!("Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting)"));
            true
        }
        Err(e) => {
            let prev = mem.pulls.get(&image).copied();
            mem.pulls.insert(image.clone(), Backoff::next(prev, now));
            mem.pull_errors.insert(image.clone(), format!("{e:#}"));
            let msg = format!("Failed to pull image \"{image}\": {e:#}");
            shared
                .recorder
                .pod(pod, Some(&c.name), Type::Warning, "Failed", msg.clone());
            shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                "Failed",
                "Error: ErrImagePull".into(),
            );
            fail(mem, "ErrImagePull", msg)
        }
    }
}

/// The Docker configuration of a container spec.
fn container_config(pod: &Pod, c: &Container, attempt: u32) -> ContainerConfig {
    let spec = pod.spec.as_ref();
    let res = c.resources.clone().unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let memory_limit = limits
        .get("memory")
        .and_then(|q| quantity::parse_value(&q.0));
    let cpu_limit = limits.get("cpu").and_then(|q| quantity::parse_milli(&q.0));
    let cpu_request = requests
        .get("cpu")
        .or(limits.get("cpu"))
        .and_then(|q| quantity::parse_milli(&q.0));
    let qos = status::qos_class(pod);
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = spec
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let uid = sc.run_as_user.or(psc.run_as_user);
    let gid = sc.run_as_group.or(psc.run_as_group);
    let user = uid.map(|u| match gid {
        Some(g) => format!("{u}:{g}"),
        None => u.to_string(),
    });
    let caps = sc.capabilities.clone().unwrap_or_default();
    ContainerConfig {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        hash: container_hash(c),
        attempt,
        entrypoint: c.command.clone().filter(|v| !v.is_empty()),
        cmd: c.args.clone().filter(|v| !v.is_empty()).or_else(|| {
            // A command without args runs the command alone, not the image's CMD.
            c.command
                .as_ref()
                .filter(|v| !v.is_empty())
                .map(|_| Vec::new())
        }),
        env: Vec::new(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        mounts: Vec::new(),
        memory_limit,
        nano_cpus: cpu_limit.map(|m| m * 1_000_000),
        // The kubelet's MilliCPUToShares: 1024 per CPU, at least 2.
        cpu_shares: Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2))),
        // The kubelet's scores per QoS class: Guaranteed -997 (left out: lowering a score
        // needs a privilege engines in containers lack), BestEffort 1000, Burstable
        // 1000 - 1000 × request / capacity within 3..999 (capacity unknown here: the middle).
        oom_score_adj: match qos {
            "Guaranteed" => None,
            "BestEffort" => Some(1000),
            _ => Some(500),
        },
        cap_add: caps.add.unwrap_or_default(),
        cap_drop: caps.drop.unwrap_or_default(),
        // fsGroup and supplementalGroups join the container's groups (volume files are
        // group-owned by fsGroup).
        group_add: psc
            .fs_group
            .into_iter()
            .chain(psc.supplemental_groups.clone().unwrap_or_default())
            .map(|g| g.to_string())
            .collect(),
        privileged: sc.privileged.unwrap_or(false),
        read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
        stop_signal: None,
    }
}

/// Pulls (per policy), creates and starts one container; failures become its waiting reason
/// and an event, not an error of the sync.
async fn start_container(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    attempt: u32,
    sandbox: &ContainerInfo,
    mem: &mut Memory,
) {
    mem.acted = true;
    if !ensure_image(shared, pod, c, mem).await {
        return;
    }
    let rt = &shared.runtime;
    let ctx = EnvContext {
        pod_ip: mem.pod_ip.clone(),
        pod_ips: Vec::new(),
        host_ip: Some(shared.host_ip.clone()),
        host_ips: Vec::new(),
        node_allocatable: shared.allocatable.clone(),
        strict_env_from_names: false,
    };
    let config_error = |mem: &mut Memory, msg: String| {
        shared.recorder.pod(
            pod,
            Some(&c.name),
            Type::Warning,
            "Failed",
            format!("Error: {msg}"),
        );
        mem.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: env::EnvError::REASON.into(),
                message: msg,
            },
        );
    };
    let environment = match env::container_env(&shared.source, pod, c, &ctx).await {
        Ok(e) => e,
        Err(e) => return config_error(mem, e.to_string()),
    };
    for ev in &environment.events {
        shared.recorder.pod(
            pod,
            Some(&c.name),
            Type::Warning,
            &ev.reason,
            ev.message.clone(),
        );
    }
    let mounts = match mem
        .vols
        .as_ref()
        .map(|(v, _)| v.mounts_for_env(c, &environment))
    {
        Some(Ok(m)) => m,
        Some(Err(e)) => return config_error(mem, e.to_string()),
        None => Vec::new(),
    };
    let mut cfg = container_config(pod, c, attempt);
    cfg.env = environment.docker_env();
    cfg.mounts = mounts;
    let id = match rt.create_container(&pod_ref(pod), &sandbox.id, cfg).await {
        Ok(id) => id,
        Err(e) => {
            let msg = format!("{e:#}");
            shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                "Failed",
                format!("Error: {msg}"),
            );
            mem.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CreateContainerError".into(),
                    message: msg,
                },
            );
            return;
        }
    };
    shared.recorder.pod(
        pod,
        Some(&c.name),
        Type::Normal,
        "Created",
        format!("Created container: {}", c.name),
    );
    if attempt > 0 {
        let prev = mem.restarts.get(&c.name).copied();
        mem.restarts
            .insert(c.name.clone(), Backoff::next(prev, Instant::now()));
    }
    match rt.start(&id).await {
        Ok(()) => {
            mem.waiting.remove(&c.name);
            let restart_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
            let mut probes = ContainerProbes::new(c, restart_policy);
            probes.container_started(Instant::now());
            mem.probes.insert(c.name.clone(), (id.clone(), probes));
            shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Normal,
                "Started",
                format!("Started container {}", c.name),
            );
            if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                let target = HandlerTarget {
                    docker: &rt.engine.docker,
                    container_id: &id,
                    pod_ip: &pod_ip_for_hooks(mem),
                    pod,
                    container: c,
                };
                if let Err(msg) = prober::run_handler(hook, &target).await {
                    shared.recorder.pod(
                        pod,
                        Some(&c.name),
                        Type::Warning,
                        prober::FAILED_POST_START_HOOK,
                        msg,
                    );
                    // The kubelet kills a container whose postStart hook failed.
                    let _ = rt.stop(&id, grace_seconds(pod)).await;
                }
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                "Failed",
                format!("Error: {msg}"),
            );
            mem.restarts.entry(c.name.clone()).or_insert(Backoff {
                delay: INITIAL_BACKOFF,
                since: Instant::now(),
            });
            mem.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: msg,
                },
            );
        }
    }
}

fn pod_ip_for_hooks(mem: &Memory) -> String {
    mem.pod_ip.clone().unwrap_or_default()
}

/// Runs the due probes of a running container; a failed liveness (or startup) probe stops it
/// (preStop first) so that it is restarted. Returns when the next probe is due.
async fn probe(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    cur: &ContainerInfo,
    mem: &mut Memory,
    restart_policy: &str,
) -> anyhow::Result<Option<Instant>> {
    if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
        return Ok(None);
    }
    // A container this worker did not start (adopted after a kubelet restart): new workers.
    if mem.probes.get(&c.name).is_none_or(|(id, _)| *id != cur.id) {
        let mut p = ContainerProbes::new(c, Some(restart_policy));
        p.container_started(Instant::now());
        mem.probes.insert(c.name.clone(), (cur.id.clone(), p));
    }
    let pod_ip = mem.pod_ip.clone().unwrap_or_default();
    let Some((_, probes)) = mem.probes.get_mut(&c.name) else {
        return Ok(None);
    };
    let runner = DockerProbeRunner {
        docker: &shared.runtime.engine.docker,
        container_id: &cur.id,
        pod_ip: &pod_ip,
        container: c,
    };
    let events = probes.tick(Instant::now(), &runner).await;
    let kill = probes.needs_kill().is_some();
    let next = probes.next_due();
    for ev in events {
        let t = if ev.type_ == "Warning" {
            Type::Warning
        } else {
            Type::Normal
        };
        shared
            .recorder
            .pod(pod, Some(&ev.container), t, ev.reason, ev.message);
    }
    if kill {
        stop_container(shared, pod, c, &cur.id).await?;
        mem.acted = true;
        if let Some((_, p)) = mem.probes.get_mut(&c.name) {
            p.container_stopped();
        }
    }
    Ok(next)
}

/// Stops one container as the kubelet kills it: its preStop hook (bounded by the grace
/// period), then SIGTERM and SIGKILL after what is left of the grace period.
async fn stop_container(shared: &Shared, pod: &Pod, c: &Container, id: &str) -> anyhow::Result<()> {
    let grace = grace_seconds(pod);
    let started = Instant::now();
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let target = HandlerTarget {
            docker: &shared.runtime.engine.docker,
            container_id: id,
            pod_ip: &pod_ip,
            pod,
            container: c,
        };
        let limit = Duration::from_secs(grace.max(0) as u64);
        match tokio::time::timeout(limit, prober::run_handler(hook, &target)).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                prober::FAILED_PRE_STOP_HOOK,
                msg,
            ),
            Err(_) => shared.recorder.pod(
                pod,
                Some(&c.name),
                Type::Warning,
                prober::FAILED_PRE_STOP_HOOK,
                format!(
                    "PreStopHook failed: the hook did not finish within the {grace}s grace period"
                ),
            ),
        }
    }
    let left = grace - started.elapsed().as_secs() as i64;
    shared.runtime.stop(id, left.max(0)).await
}

/// Computes the status and patches it when it changed.
async fn report(
    shared: &Shared,
    pod: &Pod,
    mem: &mut Memory,
    cs: &[ContainerInfo],
    init: Option<(bool, bool)>,
) -> anyhow::Result<Next> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Next::After(RESYNC));
    };
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let sandbox_ready = cs.iter().any(|c| c.kind == Kind::Sandbox && c.running());
    let (init_done, init_failed) = init.unwrap_or_else(|| {
        let inits = spec.init_containers.as_deref().unwrap_or(&[]);
        let done = inits.iter().all(|ic| {
            matches!(
                newest(cs, &ic.name).map(|c| &c.state),
                Some(State::Exited { exit_code: 0, .. })
            ) || ic.restart_policy.as_deref() == Some("Always")
        });
        (done, false)
    });
    let entry = |c: &Container, waiting_default: &str| -> Value {
        let cur = newest(cs, &c.name);
        let prev = cur.and_then(|cur| previous(cs, &c.name, cur));
        let mut w = mem.waiting.get(&c.name).cloned();
        if w.is_none() && cur.is_none() {
            w = Some(Waiting {
                reason: waiting_default.into(),
                message: String::new(),
            });
        }
        let running = cur.is_some_and(|c| c.running());
        let probes = cur.and_then(|cur| {
            mem.probes
                .get(&c.name)
                .filter(|(id, _)| *id == cur.id)
                .map(|(_, p)| p)
        });
        let ready = running && probes.map_or(c.readiness_probe.is_none(), |p| p.ready());
        let started = running && probes.is_none_or(|p| p.started());
        status::container_status(c, cur, prev, w.as_ref(), ready, started)
    };
    let init_statuses: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| entry(c, "PodInitializing"))
        .collect();
    let waiting_default = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| entry(c, waiting_default))
        .collect();
    let phase = status::phase(restart_policy, init_failed, init_done, &statuses);
    let all_ready = statuses.iter().all(|s| s["ready"] == true);
    let not_ready: Vec<&str> = statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let why = (!all_ready).then(|| {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", not_ready.join(" ")),
        )
    });
    let pending_inits: Vec<&str> = init_statuses
        .iter()
        .filter(|s| s["state"]["terminated"]["exitCode"] != 0 && s["state"]["running"].is_null())
        .filter_map(|s| s["name"].as_str())
        .collect();
    let init_why = (!init_done).then(|| {
        (
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                pending_inits.join(" ")
            ),
        )
    });
    let terminal = phase == "Succeeded" || phase == "Failed";
    let why_terminal = || Some(("PodCompleted", String::new()));
    let conditions = status::conditions(
        pod,
        &[
            ("PodReadyToStartContainers", sandbox_ready, None),
            (
                "Initialized",
                init_done,
                if terminal && init_done {
                    why_terminal()
                } else {
                    init_why
                },
            ),
            (
                "Ready",
                all_ready && !terminal,
                if terminal {
                    why_terminal()
                } else {
                    why.clone()
                },
            ),
            (
                "ContainersReady",
                all_ready && !terminal,
                if terminal { why_terminal() } else { why },
            ),
            ("PodScheduled", true, None),
        ],
    );
    let pod_ip = mem.pod_ip.clone().filter(|ip| !ip.is_empty());
    let mut st = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": shared.host_ip,
        "hostIPs": [{"ip": shared.host_ip}],
        "podIP": pod_ip,
        "podIPs": pod_ip.as_ref().map(|ip| json!([{"ip": ip}])),
        "startTime": mem.start_time,
        "qosClass": status::qos_class(pod),
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        st["initContainerStatuses"] = json!(init_statuses);
    }
    // Compare without the condition times, which only move with the statuses.
    if mem.sent.as_ref() != Some(&st) {
        let api: Api<Pod> = Api::namespaced(
            shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": st});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => mem.sent = Some(st),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(anyhow::anyhow!("updating the status of {}: {e}", key(pod))),
        }
    }
    Ok(Next::After(RESYNC))
}

/// Stops every container of the pod (graceful), removes them, and with `delete` removes the
/// pod from the API for good.
async fn kill_and_remove(
    shared: &Shared,
    pod: &Pod,
    mem: &mut Memory,
    delete: bool,
) -> anyhow::Result<()> {
    let rt = &shared.runtime;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let cs = rt.pod_containers(&uid).await?;
    let grace = grace_seconds(pod);
    let specs: Vec<Container> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut stops = Vec::new();
    for c in cs
        .iter()
        .filter(|c| c.kind == Kind::Container && c.running())
    {
        shared.recorder.pod(
            pod,
            Some(&c.name),
            Type::Normal,
            "Killing",
            format!("Stopping container {}", c.name),
        );
        match specs.iter().find(|s| s.name == c.name) {
            Some(spec) => stops.push(futures_util::future::Either::Left(stop_container(
                shared, pod, spec, &c.id,
            ))),
            None => stops.push(futures_util::future::Either::Right(rt.stop(&c.id, grace))),
        }
    }
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    for c in cs.iter().filter(|c| c.kind == Kind::Container) {
        rt.remove(&c.id).await?;
    }
    for s in cs.iter().filter(|c| c.kind == Kind::Sandbox) {
        rt.stop(&s.id, 0).await?;
        if let Some(ip) = &s.ip {
            rt.release_ip(ip);
        }
        rt.remove(&s.id).await?;
    }
    mem.pod_ip = None;
    mem.probes.clear();
    if let Err(e) = shared.volumes.teardown(&uid).await {
        tracing::warn!(pod = %key(pod), "removing the pod's volumes: {e}");
    }
    if delete {
        let api: Api<Pod> = Api::namespaced(
            shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or(""), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(anyhow::anyhow!("deleting {}: {e}", key(pod))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let t0 = Instant::now();
        let mut b = Backoff::next(None, t0);
        assert_eq!(b.delay, Duration::from_secs(10));
        assert!(b.blocks(t0 + Duration::from_secs(9)).is_some());
        assert!(b.blocks(t0 + Duration::from_secs(10)).is_none());
        let mut seen = vec![b.delay.as_secs()];
        for _ in 0..7 {
            b = Backoff::next(Some(b), t0);
            seen.push(b.delay.as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn pull_policy_defaults_by_tag() {
        let c = |image: &str| Container {
            name: "c".into(),
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("minik/echo:1.0")), "IfNotPresent");
        assert_eq!(pull_policy(&c("minik/echo")), "Always");
        assert_eq!(pull_policy(&c("minik/echo:latest")), "Always");
        assert_eq!(pull_policy(&c("localhost:5000/echo")), "Always");
        assert_eq!(pull_policy(&c("x@sha256:abc")), "IfNotPresent");
    }

    #[test]
    fn back_off_messages_read_as_the_kubelets() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_secs(160)), "2m40s");
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
    }
}
