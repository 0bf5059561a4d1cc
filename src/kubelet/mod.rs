//! The kubelet: the node agent that turns pods into running containers.
//!
//! In Kubernetes, one kubelet runs on every node. It registers the Node, renews its Lease,
//! watches the pods bound to its node and makes them real through a container runtime: a sandbox
//! (`pause`) container per pod that holds the pod's IP and namespaces, the init and app containers
//! joined to it, their volumes, probes, restarts and status.
//!
//! minik's kubelet (`minik kubelet --node-name NAME --kubeconfig F`, one process per node)
//! does this with the local Docker engine. Its parts, each a module:
//!
//! - [`node`]: registering the Node, the Lease heartbeat, the node status (conditions,
//!   capacity, addresses, images); a node without Docker registers `NotReady` with the reason;
//! - [`runtime`]: pods as Docker containers — the `pause` sandbox on the profile's bridge
//!   network holding the pod IP, the containers joined to it, dockershim's names and
//!   [`labels`] (how a restarted kubelet re-adopts its containers);
//! - [`pod_worker`]: one task per pod, the kubelet's `syncPod`: sandbox, init containers, app
//!   containers, restart policy with CrashLoopBackOff, image pull policy with ErrImagePull /
//!   ImagePullBackOff, graceful deletion; [`status`] computes what it reports;
//! - [`static_pods`]: pods from manifest files (`--pod-manifest-path`) with their mirror pods;
//! - [`events`]: the core/v1 Events the kubelet records (`Pulled`, `Created`, `Started`,
//!   `Killing`, `BackOff`, …);
//! - [`docker`], [`images`], [`tar`]: the connection to Docker (bollard, API version
//!   negotiated), the images built from `images/` without a registry (`minik image build`,
//!   `minik image load`), and the tar writer of their build context.
//! - [`volumes`]: the volume manager — emptyDir, hostPath, configMap, secret, downwardAPI and
//!   projected volumes (service-account tokens from the TokenRequest API, rotated) under
//!   `<root>/pods/<uid>/volumes/…`, written with the kubelet's atomic writer, and the Docker
//!   mounts of a container's volumeMounts.
//! - [`env`](mod@env): a container's environment as the kubelet computes it (`$(VAR)` expansion,
//!   downward API, configMap/secret refs, envFrom, service links), over a small [`env::ApiSource`]
//!   trait.
//! - [`prober`]: exec/httpGet/tcpSocket/grpc probes, the per-container probe workers
//!   (thresholds, startup gating, `Unhealthy`/`Killing` events) and postStart/preStop handlers.
//! - [`streaming`]: the kubelet's streaming server — container logs, exec, attach and
//!   port-forward over SPDY/3.1 and WebSocket, which the API server proxies `kubectl` to.
//!
//! [`run`] ties them together: the pods bound to the node come from a watch on the API server
//! (field selector `spec.nodeName`), container changes from Docker's event stream (the
//! kubelet's PLEG), and every component talks only to the API server.

pub mod docker;
pub mod env;
pub mod events;
pub mod images;
pub mod labels;
pub mod node;
pub mod pod_worker;
pub mod prober;
pub mod runtime;
pub mod static_pods;
pub mod status;
pub mod streaming;
pub mod tar;
pub mod volumes;

mod run;
pub use run::{Options, run};
