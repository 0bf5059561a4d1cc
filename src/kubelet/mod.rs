//! The kubelet: the node agent that turns pods into running containers.
//!
//! In Kubernetes, one kubelet runs on every node. It registers the Node, renews its Lease,
//! watches the pods bound to its node and makes them real through a container runtime: a sandbox
//! (`pause`) container per pod that holds the pod's IP and namespaces, the init and app containers
//! joined to it, their volumes, probes, restarts and status. minik's kubelet will do this with the
//! local Docker engine, one kubelet process per node (issue 6).
//!
//! So far this folder holds what that kubelet stands on — the connection to Docker and the images:
//!
//! - [`docker`]: connecting to the local Docker engine with bollard (`DOCKER_HOST` respected, the
//!   unix socket by default), negotiating the API version (this machine's engine speaks 1.41), and
//!   a clear error when the engine can't be reached.
//! - [`images`]: images without a registry. `images/<name>/` in the repository holds a std-only
//!   Rust crate and a `FROM scratch` Dockerfile; building compiles the crate as a static binary,
//!   sends it with the Dockerfile as an in-memory build context and tags the result
//!   (`minik/pause:3.10` = `registry.k8s.io/pause:3.10`, `minik/echo:1.0`; `minik/busybox:1.0`
//!   is the host's static busybox instead of a crate). Also listing the
//!   cluster's images and loading `docker save` tarballs (what `kind load` and `minikube image load`
//!   do; with a single engine "load" means "make sure the engine has it").
//! - [`tar`]: the small ustar writer the build context is made with.
//! - [`streaming`]: the kubelet's streaming server — container logs, exec, attach and
//!   port-forward over SPDY/3.1 and WebSocket, which the API server proxies `kubectl` to.
//!
//! The pods themselves (sandboxes, containers, volumes, probes, logs, exec) are still to come;
//! until then `minik fake-kubelet` simulates nodes.

pub mod docker;
pub mod images;
pub mod labels;
pub mod streaming;
pub mod tar;
