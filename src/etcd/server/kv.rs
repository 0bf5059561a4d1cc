//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use prost::Message;
use tonic::{Request, Response, Status};

use super::EtcdService;
use crate::etcd::error::{EtcdError, MAX_REQUEST_BYTES};
use crate::etcd::mvcc::apply::{check_delete, check_put, check_range, check_txn};
use crate::etcd::mvcc::{WriteOp, WriteResult};
use crate::etcd::proto::etcdserverpb::kv_server::Kv;
use crate::etcd::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// etcd refuses requests above `--max-request-bytes` with its own error, before applying them.
pub(crate) fn check_size(m: &impl Message) -> Result<(), EtcdError> {
    if m.encoded_len() > MAX_REQUEST_BYTES {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

fn unexpected() -> Status {
    Status::internal("etcdserver: unexpected result from the store's writer")
}

#[tonic::async_trait]
impl Kv for EtcdService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        check_range(&req)?;
        let resp = if req.range_end.is_empty() {
            self.store.range(&req)?
        } else {
            // A range may cover many keys: keep it off the async workers.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.range(&req))
                .await
                .map_err(|e| Status::internal(e.to_string()))??
        };
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        check_put(&req)?;
        match self.writer.submit(WriteOp::Put(req)).await? {
            (WriteResult::Put(mut resp), rev) => {
                resp.header = Some(self.store.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        check_delete(&req)?;
        match self.writer.submit(WriteOp::DeleteRange(req)).await? {
            (WriteResult::DeleteRange(mut resp), rev) => {
                resp.header = Some(self.store.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        check_txn(&req)?;
        match self.writer.submit(WriteOp::Txn(req)).await? {
            (WriteResult::Txn(mut resp), rev) => {
                resp.header = Some(self.store.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        // Compaction runs inside the writer's commit, so it is physical by the time it answers
        // (what `physical: true` asks to wait for).
        let (_, rev) = self.writer.submit(WriteOp::Compact(req.revision)).await?;
        Ok(Response::new(CompactionResponse {
            header: Some(self.store.header(rev)),
        }))
    }
}
