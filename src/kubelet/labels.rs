//! The labels minik's kubelet puts on the Docker containers it creates.
//!
//! They are dockershim's names (the Docker runtime Kubernetes used until 1.24), so `docker ps`
//! shows a learner the same labels a kubeadm node with Docker once did. They are also how the
//! kubelet finds its containers again after a restart (re-adoption, no duplicates), how the
//! streaming server maps `namespace/pod/container` to a container, and how `minik delete`
//! finds what to remove.

/// The pod's uid.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The container's name in the pod spec; the sandbox is [`SANDBOX_CONTAINER_NAME`].
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How many times this container of the pod was restarted before this attempt (0, 1, …).
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// `podsandbox` for the pause container, `container` for init and app containers.
pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
/// The node (kubelet) that owns the container.
pub const NODE: &str = "minik.dev/node";
/// The profile (cluster) the container belongs to.
pub const PROFILE: &str = "minik.dev/profile";
/// The cluster the container belongs to: its pod network's name, unique on the engine (two
/// profiles of the same name in different `MINIK_HOME`s get different networks).
pub const CLUSTER: &str = "minik.dev/cluster";
/// The hash of the container's spec it was created from (a changed spec means a new container).
pub const CONTAINER_HASH: &str = "minik.dev/container-hash";

/// [`DOCKER_TYPE`] of a pod's sandbox.
pub const TYPE_SANDBOX: &str = "podsandbox";
/// [`DOCKER_TYPE`] of an init or app container.
pub const TYPE_CONTAINER: &str = "container";
/// [`CONTAINER_NAME`] of a pod's sandbox, as dockershim named it.
pub const SANDBOX_CONTAINER_NAME: &str = "POD";

/// The Docker bridge network pods are attached to (one per profile: `minik-<profile>`).
pub fn network_name(profile: &str) -> String {
    format!("minik-{profile}")
}
