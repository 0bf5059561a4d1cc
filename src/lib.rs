//! minik: Kubernetes' architecture, built for real and run on one machine.
//!
//! The modules mirror the Kubernetes architecture diagram: one module per component, each opening
//! with a short note on what the component does in the cluster.
//!
//! - [`etcd`]: the etcd-compatible store (the real etcd v3 gRPC API on redb), where all cluster state lives.
//! - [`apiserver`]: kube-apiserver, the front door of the control plane: the Kubernetes REST API over HTTPS.
//! - [`scheduler`]: kube-scheduler, which picks a node for each new pod (filters, scores,
//!   preemption) and binds it.
//! - [`kubelet`]: the node agent; so far its connection to Docker and the images (built locally,
//!   no registry).
//! - [`fake_kubelet`]: simulated nodes for scale labs (kwok-style): Leases, pods marked Running.
//! - [`component_base`]: what every component shares: its health endpoint, API client, leader
//!   election.
//! - [`bench`]: benchmarks of minik's components against the real ones (`minik bench …`).
//! - [`supervisor`]: runs the control plane's static pods as local processes (the kubelet's
//!   static-pod role on a kubeadm node), with mirror pods in kube-system.
//! - [`cluster`]: profiles, config, PKI, kubeconfigs, manifests and backups of a cluster on this machine.
//! - [`controller_manager`]: kube-controller-manager, the control loops (replica sets, deployments,
//!   garbage collection, namespaces, jobs, cron jobs, service accounts, endpoints).
//! - [`quota`]: resource quota accounting shared by the API server's quota admission and the
//!   controller-manager's quota controller.
//! - [`cli`]: the command line — user verbs and component entry points of the multi-call binary.

pub mod apiserver;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod component_base;
pub mod controller_manager;
pub mod etcd;
pub mod fake_kubelet;
pub mod kubelet;
pub mod quota;
pub mod scheduler;
pub mod supervisor;
