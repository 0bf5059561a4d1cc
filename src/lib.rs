//! minik: Kubernetes' architecture, built for real and run on one machine.
//!
//! The modules mirror the Kubernetes architecture diagram: one module per component, each opening
//! with a short note on what the component does in the cluster.
//!
//! - [`etcd`]: the etcd-compatible store (the real etcd v3 gRPC API on redb), where all cluster state lives.
//! - [`apiserver`]: kube-apiserver, the front door of the control plane (a first slice: core resources over HTTPS).
//! - [`bench`]: benchmarks of minik's components against the real ones (`minik bench …`).
//! - [`cluster`]: profiles, PKI, kubeconfigs and ports of a cluster on this machine.
//! - [`cli`]: the command line — user verbs and component entry points of the multi-call binary.

pub mod apiserver;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod etcd;
