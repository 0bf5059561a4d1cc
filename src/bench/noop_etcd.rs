//! `minik bench etcd-noop-server`: an etcd KV endpoint that stores nothing, for measuring what
//! `etcdctl check perf` can reach on this machine with no store behind the gRPC stack.
//!
//! It runs on the same serving threads and gRPC settings as `minik etcd serve`
//! ([`crate::etcd::server::serve_grpc`]) and answers the three calls `check perf` makes: a Range
//! (always empty), Put (acknowledged at once, nothing kept) and DeleteRange (nothing to delete).
//! Each Put still gets its own revision in the response header, so a client can count the puts.
//! Everything else is `Unimplemented`. The difference between this server's `check perf` result
//! and the store's is what storing costs; what this server reaches is the ceiling the client, the
//! kernel's loopback TCP and HTTP/2 + gRPC leave on these CPUs. It is a measuring instrument:
//! `minik etcd serve` has no such mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tonic::{Request, Response, Status};

use crate::etcd::proto::etcdserverpb::kv_server::{Kv, KvServer};
use crate::etcd::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};

/// The KV service that stores nothing.
#[derive(Clone, Default)]
struct NoopKv {
    /// Puts acknowledged so far (the revision of the last one).
    revision: Arc<AtomicI64>,
}

impl NoopKv {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision,
            raft_term: 1,
        })
    }

    fn current(&self) -> Option<ResponseHeader> {
        self.header(self.revision.load(Ordering::Relaxed))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what}: the no-op benchmark server answers only Range, Put and DeleteRange"
    ))
}

#[tonic::async_trait]
impl Kv for NoopKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse {
            header: self.current(),
            ..Default::default()
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(PutResponse {
            header: self.header(revision),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse {
            header: self.current(),
            ..Default::default()
        }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(unimplemented("Txn"))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(unimplemented("Compact"))
    }
}

/// Serves the no-op KV service on `urls` (plain `http://` only) until `shutdown` resolves.
pub async fn serve(
    urls: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kv = NoopKv::default();
    crate::etcd::server::serve_grpc(
        &urls,
        None,
        move |_tls| {
            let kv = kv.clone();
            async move {
                Ok(crate::etcd::server::server_builder()
                    .add_service(KvServer::new(kv).max_decoding_message_size(64 << 20)))
            }
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_count_and_nothing_is_kept() {
        let kv = NoopKv::default();
        for want in 1..=3 {
            let r = kv.put(Request::new(PutRequest::default())).await;
            let header = r.ok().and_then(|r| r.into_inner().header);
            assert_eq!(header.map(|h| h.revision), Some(want));
        }
        let range = kv.range(Request::new(RangeRequest::default())).await;
        let range = range.ok().map(Response::into_inner);
        assert_eq!(range.as_ref().map(|r| r.kvs.len()), Some(0));
        assert_eq!(range.and_then(|r| r.header).map(|h| h.revision), Some(3));
        let txn = kv.txn(Request::new(TxnRequest::default())).await;
        assert_eq!(
            txn.err().map(|e| e.code()),
            Some(tonic::Code::Unimplemented)
        );
    }
}
