//! **etcd** — the cluster's memory.
//!
//! Every object in a Kubernetes cluster (pods, services, nodes, secrets …) is stored here, and only
//! kube-apiserver talks to it. minik's store is a real etcd v3 server: it speaks etcd's gRPC API
//! (KV, Watch, Lease, Maintenance, Cluster), so the real `etcdctl` and any etcd client work against
//! it, and it keeps etcd's MVCC semantics (one global revision, history until compaction, watches
//! from any revision). Underneath, the data lives in the embedded database redb.
//!
//! - [`mvcc`]: revisions, the key index, the redb backend, group commit, the event log;
//! - [`lease`]: leases and their expiry;
//! - [`server`]: the gRPC services and `minik etcd serve`;
//! - [`snapshot`]: snapshot images (save, status, restore);
//! - [`client`]: a gRPC connection to a store (minik's or a real etcd), for the API server and
//!   `minik etcd backup`;
//! - [`error`]: etcd's error messages and codes; [`codec`]: the gRPC codec with etcd's request checks;
//! - [`proto`]: the etcd v3 API generated from `proto/etcd/*.proto`.

pub mod client;
pub mod codec;
pub mod error;
pub mod lease;
pub mod mvcc;
pub mod proto;
pub mod server;
pub mod snapshot;
