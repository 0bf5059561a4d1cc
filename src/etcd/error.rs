//! The errors the store returns, worded and coded exactly as etcd's (`rpctypes`), because clients
//! (etcdctl, kube-apiserver's storage layer) match on the message text.

use tonic::{Code, Status};

use super::mvcc::backend::StorageError;

/// The largest request the store accepts, as etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// gRPC's own limit sits this far above it, as in etcd, so "request is too large" is etcd's answer
/// for requests in between.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// The largest lease TTL etcd accepts.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: {0}")]
    Unsupported(&'static str),
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
}

impl EtcdError {
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists => Code::FailedPrecondition,
            DuplicateKey | TooManyOps | RequestTooLarge | EmptyKey | KeyNotFound
            | ValueProvided | LeaseProvided => Code::InvalidArgument,
            Unsupported(_) => Code::Unimplemented,
            Stopped => Code::Unavailable,
            Storage(_) => Code::Internal,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<StorageError> for EtcdError {
    fn from(e: StorageError) -> Self {
        EtcdError::Storage(e.0)
    }
}
