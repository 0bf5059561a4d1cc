//! The container runtime: pods as Docker containers, the way dockershim made them.
//!
//! A pod is a **sandbox** — a `pause` container that owns the pod's network namespace and IP on
//! the profile's bridge network — plus its init and app containers, each started with
//! `--network container:<sandbox>` (and the sandbox's IPC namespace), so they share `localhost`
//! and the pod IP as the containers of a real pod do. Every container carries the labels of
//! [`super::labels`], which is how the kubelet finds them again after a restart.
//!
//! Pod IPs come from the node's pod CIDR (`--pod-cidr`, a /24 of the cluster CIDR the network
//! was created with), assigned explicitly so that a node's pods sit in its range as on a real
//! cluster; the host reaches them directly over the bridge.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, Mount,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use parking_lot::Mutex;

use super::docker::{Engine, is_not_found, message};
use super::labels;

/// An IPv4 network `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.244.1.0/24`.
    pub fn parse(s: &str) -> anyhow::Result<Cidr> {
        let (a, p) = s
            .split_once('/')
            .with_context(|| format!("invalid CIDR {s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .with_context(|| format!("invalid CIDR {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .with_context(|| format!("invalid CIDR {s:?}: prefix must be 0..32"))?;
        let mask = Cidr::mask(prefix);
        Ok(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Cidr::mask(self.prefix) == u32::from(self.addr)
    }

    /// The first usable address (`.1`), the bridge's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The host addresses, network and broadcast addresses excluded.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.addr);
        let size = 1u64 << (32 - u32::from(self.prefix));
        (1..size.saturating_sub(1)).map(move |i| Ipv4Addr::from(base + i as u32))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which of a pod's containers a Docker container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sandbox,
    Container,
}

/// What Docker says about a container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created, never started (or a start failed).
    Created,
    Running {
        started_at: String,
    },
    Exited {
        exit_code: i64,
        oom_killed: bool,
        /// Docker's error, e.g. an exec format error on start.
        error: String,
        started_at: String,
        finished_at: String,
    },
}

/// One of a pod's Docker containers, as the kubelet sees it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub kind: Kind,
    /// The spec's container name (`POD` for the sandbox).
    pub name: String,
    /// The attempt (restart count before it).
    pub attempt: u32,
    /// The hash of the spec it was made from.
    pub hash: String,
    pub state: State,
    /// The image as the spec named it.
    pub image: String,
    /// `docker-pullable://…@sha256` or `docker://sha256:…`.
    pub image_id: String,
    /// The sandbox's IP on the pod network (sandboxes only).
    pub ip: Option<String>,
    /// Docker's creation time (seconds).
    pub created: i64,
}

impl ContainerInfo {
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// `docker://<id>`, the containerID of a container status.
    pub fn container_id(&self) -> String {
        format!("docker://{}", self.id)
    }
}

/// The runtime of one node.
pub struct Runtime {
    pub engine: Engine,
    pub node: String,
    pub profile: String,
    pub network: String,
    pub cluster_cidr: Cidr,
    pub pod_cidr: Cidr,
    /// Pod IPs in use by this node's sandboxes.
    ips: Mutex<BTreeSet<Ipv4Addr>>,
}

/// What a container is created with, beyond the pod's identity.
#[derive(Debug, Default)]
pub struct ContainerConfig {
    pub name: String,
    pub image: String,
    pub hash: String,
    pub attempt: u32,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub oom_score_adj: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub group_add: Vec<String>,
    pub privileged: bool,
    pub read_only_root: bool,
    pub stop_signal: Option<String>,
}

/// The identity of the pod a container belongs to.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl Runtime {
    pub fn new(
        engine: Engine,
        node: &str,
        profile: &str,
        network: &str,
        cluster_cidr: Cidr,
        pod_cidr: Cidr,
    ) -> Runtime {
        Runtime {
            engine,
            node: node.to_string(),
            profile: profile.to_string(),
            network: network.to_string(),
            cluster_cidr,
            pod_cidr,
            ips: Mutex::new(BTreeSet::new()),
        }
    }

    /// Creates the profile's bridge network if it is missing (another node's kubelet may be
    /// creating it at the same time: a conflict is success).
    pub async fn ensure_network(&self) -> anyhow::Result<()> {
        let docker = &self.engine.docker;
        if docker
            .inspect_network(
                &self.network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok()
        {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(self.cluster_cidr.to_string()),
                    gateway: Some(self.cluster_cidr.gateway().to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            labels: Some(HashMap::from([(
                labels::PROFILE.to_string(),
                self.profile.clone(),
            )])),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => bail!(
                "cannot create the pod network {} ({}): {}",
                self.network,
                self.cluster_cidr,
                message(&e)
            ),
        }
    }

    fn node_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={}", labels::NODE, self.node),
                format!("{}={}", labels::CLUSTER, self.network),
            ],
        )])
    }

    /// The uids of the pods with containers on this node (for housekeeping), with the ids of
    /// those containers.
    pub async fn pods_on_node(&self) -> anyhow::Result<HashMap<String, Vec<String>>> {
        let list = self
            .engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.node_filter()),
                ..Default::default()
            }))
            .await
            .map_err(|e| anyhow::anyhow!("listing containers: {}", message(&e)))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for c in list {
            let (Some(id), Some(uid)) =
                (c.id, c.labels.as_ref().and_then(|l| l.get(labels::POD_UID)))
            else {
                continue;
            };
            out.entry(uid.clone()).or_default().push(id);
        }
        Ok(out)
    }

    /// Records the IPs of this node's running sandboxes (after a kubelet restart).
    pub async fn load_ips(&self) -> anyhow::Result<()> {
        let mut filters = self.node_filter();
        if let Some(l) = filters.get_mut("label") {
            l.push(format!("{}={}", labels::DOCKER_TYPE, labels::TYPE_SANDBOX));
        }
        let list = self
            .engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| anyhow::anyhow!("listing sandboxes: {}", message(&e)))?;
        let mut ips = self.ips.lock();
        for c in list {
            let nets = c
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default();
            for (_, ep) in nets {
                if let Some(ip) = ep.ip_address.and_then(|a| a.parse().ok()) {
                    ips.insert(ip);
                }
            }
        }
        Ok(())
    }

    /// A pod's containers, newest attempt last per name.
    pub async fn pod_containers(&self, uid: &str) -> anyhow::Result<Vec<ContainerInfo>> {
        let mut filters = self.node_filter();
        if let Some(l) = filters.get_mut("label") {
            l.push(format!("{}={uid}", labels::POD_UID));
        }
        let list = self
            .engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| anyhow::anyhow!("listing the pod's containers: {}", message(&e)))?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            match self.inspect(&id).await {
                Ok(Some(info)) => out.push(info),
                Ok(None) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|c| (c.attempt, c.created));
        Ok(out)
    }

    /// One container, or `None` when it is gone.
    pub async fn inspect(&self, id: &str) -> anyhow::Result<Option<ContainerInfo>> {
        let c = match self
            .engine
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => bail!("inspecting container {id}: {}", message(&e)),
        };
        let config = c.config.unwrap_or_default();
        let l = config.labels.unwrap_or_default();
        let kind = if l.get(labels::DOCKER_TYPE).map(String::as_str) == Some(labels::TYPE_SANDBOX) {
            Kind::Sandbox
        } else {
            Kind::Container
        };
        let st = c.state.unwrap_or_default();
        use bollard::models::ContainerStateStatusEnum as S;
        let state = match st.status {
            Some(S::RUNNING | S::PAUSED | S::RESTARTING) => State::Running {
                started_at: st.started_at.clone().unwrap_or_default(),
            },
            Some(S::EXITED | S::DEAD) => State::Exited {
                exit_code: st.exit_code.unwrap_or(0),
                oom_killed: st.oom_killed.unwrap_or(false),
                error: st.error.clone().unwrap_or_default(),
                started_at: st.started_at.clone().unwrap_or_default(),
                finished_at: st.finished_at.clone().unwrap_or_default(),
            },
            _ => State::Created,
        };
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(&self.network).and_then(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        let created = c
            .created
            .as_ref()
            .and_then(|d| d.to_string().parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .unwrap_or(0);
        let image_ref = c.image.unwrap_or_default();
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_else(|| id.to_string()),
            kind,
            name: l.get(labels::CONTAINER_NAME).cloned().unwrap_or_default(),
            attempt: l
                .get(labels::RESTART_COUNT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            hash: l.get(labels::CONTAINER_HASH).cloned().unwrap_or_default(),
            state,
            image: config.image.unwrap_or_default(),
            image_id: format!("docker://{image_ref}"),
            ip,
            created,
        }))
    }

    fn pod_labels(
        &self,
        pod: &PodRef,
        kind: &str,
        name: &str,
        attempt: u32,
    ) -> HashMap<String, String> {
        HashMap::from([
            (labels::POD_UID.to_string(), pod.uid.clone()),
            (labels::POD_NAMESPACE.to_string(), pod.namespace.clone()),
            (labels::POD_NAME.to_string(), pod.name.clone()),
            (labels::CONTAINER_NAME.to_string(), name.to_string()),
            (labels::RESTART_COUNT.to_string(), attempt.to_string()),
            (labels::DOCKER_TYPE.to_string(), kind.to_string()),
            (labels::NODE.to_string(), self.node.clone()),
            (labels::PROFILE.to_string(), self.profile.clone()),
            (labels::CLUSTER.to_string(), self.network.clone()),
        ])
    }

    /// dockershim's container name: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`.
    pub fn docker_name(pod: &PodRef, container: &str, attempt: u32) -> String {
        format!(
            "k8s_{container}_{}_{}_{}_{attempt}",
            pod.name, pod.namespace, pod.uid
        )
    }

    fn take_ip(&self) -> anyhow::Result<Ipv4Addr> {
        let mut ips = self.ips.lock();
        let gateway = self.cluster_cidr.gateway();
        let ip = self
            .pod_cidr
            .hosts()
            .find(|ip| *ip != gateway && !ips.contains(ip))
            .with_context(|| format!("no free pod IP left in {}", self.pod_cidr))?;
        ips.insert(ip);
        Ok(ip)
    }

    /// Returns a sandbox's IP to the pool.
    pub fn release_ip(&self, ip: &str) {
        if let Ok(ip) = ip.parse() {
            self.ips.lock().remove(&ip);
        }
    }

    /// Creates and starts a pod's sandbox; returns (id, pod IP).
    pub async fn run_sandbox(
        &self,
        pod: &PodRef,
        attempt: u32,
        hostname: &str,
        host_network: bool,
        pause_image: &str,
    ) -> anyhow::Result<(String, String)> {
        let name = Runtime::docker_name(pod, labels::SANDBOX_CONTAINER_NAME, attempt);
        let docker = &self.engine.docker;
        for _ in 0..8 {
            let ip = if host_network {
                None
            } else {
                Some(self.take_ip()?)
            };
            let body = ContainerCreateBody {
                image: Some(pause_image.to_string()),
                hostname: (!host_network).then(|| hostname.to_string()),
                labels: Some(self.pod_labels(
                    pod,
                    labels::TYPE_SANDBOX,
                    labels::SANDBOX_CONTAINER_NAME,
                    attempt,
                )),
                host_config: Some(HostConfig {
                    network_mode: Some(if host_network {
                        "host".into()
                    } else {
                        self.network.clone()
                    }),
                    ipc_mode: Some("shareable".into()),
                    // The kubelet gives sandboxes -998; lowering a score needs a privilege
                    // that engines in containers or user namespaces lack (runc then fails to
                    // start the container), so minik leaves the sandbox's score alone.
                    ..Default::default()
                }),
                networking_config: ip.map(|ip| NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        self.network.clone(),
                        EndpointSettings {
                            ipam_config: Some(EndpointIpamConfig {
                                ipv4_address: Some(ip.to_string()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )])),
                }),
                ..Default::default()
            };
            let created = self
                .create_named(&name, body)
                .await
                .map_err(|e| anyhow::anyhow!("creating the pod sandbox: {}", message(&e)))?;
            match docker.start_container(&created.id, None).await {
                Ok(()) => {
                    let ip = match ip {
                        Some(ip) => ip.to_string(),
                        None => "127.0.0.1".to_string(),
                    };
                    return Ok((created.id, ip));
                }
                Err(e) => {
                    let msg = message(&e);
                    let _ = docker
                        .remove_container(
                            &created.id,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                    // Another process holds the address (a container of a previous kubelet):
                    // keep it marked and try the next one.
                    if ip.is_some() && msg.contains("Address already in use") {
                        continue;
                    }
                    if let Some(ip) = ip {
                        self.ips.lock().remove(&ip);
                    }
                    bail!("starting the pod sandbox: {msg}");
                }
            }
        }
        bail!("no free pod IP in {} after 8 tries", self.pod_cidr)
    }

    /// Creates a container in the pod's sandbox (not started).
    pub async fn create_container(
        &self,
        pod: &PodRef,
        sandbox_id: &str,
        c: ContainerConfig,
    ) -> anyhow::Result<String> {
        let name = Runtime::docker_name(pod, &c.name, c.attempt);
        let mut l = self.pod_labels(pod, labels::TYPE_CONTAINER, &c.name, c.attempt);
        l.insert(labels::CONTAINER_HASH.to_string(), c.hash.clone());
        let body = ContainerCreateBody {
            image: Some(c.image.clone()),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: Some(c.env),
            working_dir: c.working_dir,
            user: c.user,
            tty: Some(c.tty),
            open_stdin: Some(c.stdin),
            stdin_once: Some(c.stdin_once),
            attach_stdin: Some(false),
            labels: Some(l),
            stop_signal: c.stop_signal,
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{sandbox_id}")),
                ipc_mode: Some(format!("container:{sandbox_id}")),
                mounts: (!c.mounts.is_empty()).then_some(c.mounts),
                memory: c.memory_limit,
                // No swap beyond the limit, as the kubelet sets it.
                memory_swap: c.memory_limit,
                nano_cpus: c.nano_cpus,
                cpu_shares: c.cpu_shares,
                oom_score_adj: c.oom_score_adj,
                cap_add: (!c.cap_add.is_empty()).then_some(c.cap_add),
                cap_drop: (!c.cap_drop.is_empty()).then_some(c.cap_drop),
                group_add: (!c.group_add.is_empty()).then_some(c.group_add),
                privileged: Some(c.privileged),
                readonly_rootfs: Some(c.read_only_root),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .create_named(&name, body)
            .await
            .map_err(|e| anyhow::anyhow!("{}", message(&e)))?;
        Ok(created.id)
    }

    /// Creates a container by name; a leftover of the same name (a create whose start failed,
    /// an earlier kubelet's) is removed and the create tried once more.
    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<bollard::models::ContainerCreateResponse, bollard::errors::Error> {
        let docker = &self.engine.docker;
        let opts = || {
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            })
        };
        match docker.create_container(opts(), body.clone()).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let _ = docker
                    .remove_container(
                        name,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                docker.create_container(opts(), body).await
            }
            other => other,
        }
    }

    /// Starts a created container.
    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.engine
            .docker
            .start_container(id, None)
            .await
            .map_err(|e| anyhow::anyhow!("{}", message(&e)))
    }

    /// Stops a container: its stop signal (SIGTERM), then SIGKILL after `grace` seconds.
    pub async fn stop(&self, id: &str, grace: i64) -> anyhow::Result<()> {
        match self
            .engine
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(grace.clamp(0, i32::MAX as i64) as i32),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()), // already stopped
            Err(e) => bail!("stopping container {id}: {}", message(&e)),
        }
    }

    /// Removes a container (and its anonymous volumes).
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        match self
            .engine
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => bail!("removing container {id}: {}", message(&e)),
        }
    }

    /// The images the engine holds, as the node status lists them (names and size).
    pub async fn images(&self) -> anyhow::Result<Vec<(Vec<String>, i64)>> {
        let list = self
            .engine
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(|e| anyhow::anyhow!("listing images: {}", message(&e)))?;
        Ok(list
            .into_iter()
            .map(|i| {
                let mut names: Vec<String> = i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect();
                names.extend(i.repo_digests);
                (names, i.size)
            })
            .filter(|(n, _)| !n.is_empty())
            .collect())
    }
}

/// Creates a profile's pod network when `minik up` makes the profile: `want_name` with
/// `want_subnet` when both are free, else the next free name (`-2`, `-3`, …) and the next /16
/// that overlaps no existing Docker network (10.244 … 10.254, then 10.200 … 10.243). Returns the
/// (name, subnet) made. Two profiles made at once cannot take the same subnet: the engine refuses
/// the second, which then tries the next.
pub async fn create_pod_network(
    engine: &Engine,
    want_name: &str,
    want_subnet: &str,
    profile: &str,
) -> anyhow::Result<(String, String)> {
    let docker = &engine.docker;
    let wanted = Cidr::parse(want_subnet)?;
    let mut candidates = vec![wanted];
    for second in (244..=254).chain(200..244) {
        let c = Cidr {
            addr: Ipv4Addr::new(10, second, 0, 0),
            prefix: 16,
        };
        if c != wanted {
            candidates.push(c);
        }
    }
    for attempt in 0..64 {
        let existing = docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(|e| anyhow::anyhow!("listing Docker networks: {}", message(&e)))?;
        let names: BTreeSet<String> = existing.iter().filter_map(|n| n.name.clone()).collect();
        let used: Vec<Cidr> = existing
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.clone())
            .flatten()
            .filter_map(|c| c.subnet.and_then(|s| Cidr::parse(&s).ok()))
            .collect();
        let overlaps = |a: &Cidr, b: &Cidr| a.contains(b.addr) || b.contains(a.addr);
        let Some(subnet) = candidates
            .iter()
            .find(|c| !used.iter().any(|u| overlaps(c, u)))
            .copied()
        else {
            bail!("no free /16 for the pod network: every candidate overlaps a Docker network");
        };
        let name = std::iter::once(want_name.to_string())
            .chain((2..).map(|i| format!("{want_name}-{i}")))
            .find(|n| !names.contains(n))
            .unwrap_or_else(|| want_name.to_string());
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: Some(subnet.gateway().to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            labels: Some(HashMap::from([(
                labels::PROFILE.to_string(),
                profile.to_string(),
            )])),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => return Ok((name, subnet.to_string())),
            Err(e) => {
                // Taken meanwhile (a name or an overlapping pool): look again.
                tracing::debug!(
                    attempt,
                    "creating network {name} ({subnet}): {}",
                    message(&e)
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    bail!("could not create a pod network for profile {profile}")
}

/// Stops the running containers of a cluster's pods (`minik down`: the nodes power off; a
/// restarted kubelet makes new sandboxes, as after a reboot). Returns how many.
pub async fn stop_pod_containers(
    engine: &Engine,
    network: &str,
    node: Option<&str>,
) -> anyhow::Result<usize> {
    let docker = &engine.docker;
    let mut wanted = vec![format!("{}={network}", labels::CLUSTER)];
    if let Some(node) = node {
        wanted.push(format!("{}={node}", labels::NODE));
    }
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            filters: Some(HashMap::from([("label".to_string(), wanted)])),
            ..Default::default()
        }))
        .await
        .map_err(|e| anyhow::anyhow!("listing containers: {}", message(&e)))?;
    let stops = list.iter().filter_map(|c| c.id.as_deref()).map(|id| {
        docker.stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(5),
                signal: None,
            }),
        )
    });
    let n = futures_util::future::join_all(stops).await.len();
    Ok(n)
}

/// Removes a profile's pod network and every container on it made by its kubelets.
pub async fn remove_pod_network(engine: &Engine, network: &str) -> anyhow::Result<usize> {
    let n = remove_pod_containers(engine, network, None).await?;
    match engine.docker.remove_network(network).await {
        Ok(()) => Ok(n),
        Err(e) if is_not_found(&e) => Ok(n),
        Err(e) => bail!("removing network {network}: {}", message(&e)),
    }
}

/// Removes the containers of a cluster's pods (of one node, or all). Returns how many.
pub async fn remove_pod_containers(
    engine: &Engine,
    network: &str,
    node: Option<&str>,
) -> anyhow::Result<usize> {
    let docker = &engine.docker;
    let mut wanted = vec![format!("{}={network}", labels::CLUSTER)];
    if let Some(node) = node {
        wanted.push(format!("{}={node}", labels::NODE));
    }
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), wanted)])),
            ..Default::default()
        }))
        .await
        .map_err(|e| anyhow::anyhow!("listing containers: {}", message(&e)))?;
    let n = list.len();
    for c in list {
        if let Some(id) = c.id {
            match docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => bail!("removing container {id}: {}", message(&e)),
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_enumerate() {
        let c = Cidr::parse("10.244.1.7/24").expect("valid");
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert!(c.contains("10.244.1.200".parse().expect("ip")));
        assert!(!c.contains("10.244.2.1".parse().expect("ip")));
        let hosts: Vec<_> = c.hosts().collect();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0].to_string(), "10.244.1.1");
        assert_eq!(hosts[253].to_string(), "10.244.1.254");
        assert_eq!(
            Cidr::parse("10.244.0.0/16")
                .expect("valid")
                .gateway()
                .to_string(),
            "10.244.0.1"
        );
        for bad in ["10.244.0.0", "10.244.0.0/33", "x/24", "10.244.0/24"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_names_are_dockershims() {
        let p = PodRef {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        assert_eq!(
            Runtime::docker_name(&p, "POD", 0),
            "k8s_POD_web_default_u1_0"
        );
        assert_eq!(
            Runtime::docker_name(&p, "app", 3),
            "k8s_app_web_default_u1_3"
        );
    }
}
