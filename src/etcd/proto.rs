//! Generated etcd v3 API types: protobuf messages plus tonic servers and clients.
//!
//! Built by `build.rs` from `proto/etcd/{kv,auth,rpc}.proto`, which mirror upstream etcd's wire
//! format (packages, field numbers, enum values), so real etcd clients can talk to minik.
//! The three modules must stay siblings: generated code refers across them via `super::`.

/// Storage types: `KeyValue` and watch `Event`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Auth-store types: `User`, `Role`, `Permission`, `UserAddOptions`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance, Auth) and their messages.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
