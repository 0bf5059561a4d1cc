//! The Maintenance and Cluster services: status, snapshot, defragment, alarms, hashes, members.

use std::pin::Pin;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::EtcdService;
use crate::etcd::error::EtcdError;
use crate::etcd::mvcc::{WriteOp, WriteResult};
use crate::etcd::proto::etcdserverpb::cluster_server::Cluster;
use crate::etcd::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::etcd::proto::etcdserverpb::*;
use crate::etcd::snapshot;

/// The etcd API version minik's store implements, reported by Status (kube-apiserver reads it to
/// decide which watch features to use; minik supports progress requests, as etcd 3.5.13+ does).
pub const VERSION: &str = "3.5.17";

const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

fn single_member() -> Status {
    EtcdError::Unsupported("minik's store is a single member; membership changes are not supported")
        .into()
}

impl EtcdService {
    fn member(&self) -> Member {
        Member {
            id: self.store.member_id,
            name: self.config.name.clone(),
            peer_urls: self.config.peer_urls.clone(),
            client_urls: self.config.client_urls.clone(),
            is_learner: false,
        }
    }

    /// A hash of every key-value record up to `rev` (0 = all), for comparing stores.
    fn hash_kv(&self, rev: i64) -> Result<u32, EtcdError> {
        let cur = self.store.current();
        let upto = self.store.resolve_rev(rev, cur)?;
        let mut h = Sha256::new();
        let mut from = 1;
        while from <= upto {
            let revs = self.store.events_between(from, upto, 4096)?;
            let Some(last) = revs.last() else { break };
            from = last.rev + 1;
            for r in &revs {
                for e in &r.events {
                    if let Some(kv) = &e.kv {
                        h.update(r.rev.to_be_bytes());
                        h.update(&kv.key);
                        h.update(&kv.value);
                        h.update(e.r#type.to_be_bytes());
                    }
                }
            }
        }
        let d = h.finalize();
        Ok(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdService {
    async fn alarm(&self, _r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // The store raises no alarms (it has no space quota and no peers to disagree with).
        Ok(Response::new(AlarmResponse {
            header: Some(self.store.header(self.store.current())),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let in_use = match self.writer.submit(WriteOp::SizeInUse).await? {
            (WriteResult::SizeInUse(n), _) => n as i64,
            _ => 0,
        };
        let index = self.store.raft_index();
        Ok(Response::new(StatusResponse {
            header: Some(self.store.header(self.store.current())),
            version: VERSION.into(),
            db_size: self.store.db_size() as i64,
            leader: self.store.member_id,
            raft_index: index,
            raft_term: crate::etcd::mvcc::store::RAFT_TERM,
            raft_applied_index: index,
            errors: Vec::new(),
            db_size_in_use: in_use,
            is_learner: false,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let (_, rev) = self.writer.submit(WriteOp::Defragment).await?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.store.header(rev)),
        }))
    }

    async fn hash(&self, _r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let svc = self.clone();
        let hash = tokio::task::spawn_blocking(move || svc.hash_kv(0))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(HashResponse {
            header: Some(self.store.header(self.store.current())),
            hash,
        }))
    }

    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let rev = r.into_inner().revision;
        let svc = self.clone();
        let hash = tokio::task::spawn_blocking(move || svc.hash_kv(rev))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(HashKvResponse {
            header: Some(self.store.header(self.store.current())),
            hash,
            compact_revision: self.store.compacted(),
            ..Default::default()
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let store = self.store.clone();
        let path = self
            .config
            .data_dir
            .join(format!("snapshot-{}.tmp", crate::etcd::lease::random_id()));
        let p = path.clone();
        let size = tokio::task::spawn_blocking(move || snapshot::save(&store, &p))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // The open handle keeps the data; the name can go now.
        let _ = tokio::fs::remove_file(&path).await;
        let (tx, rx) = mpsc::channel(4);
        let header = self.store.header(self.store.current());
        tokio::spawn(async move {
            let mut remaining = size;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            while remaining > 0 {
                let n = match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                remaining -= n as u64;
                let resp = SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: remaining,
                    blob: buf[..n].to_vec(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        if r.into_inner().target_id == self.store.member_id {
            return Ok(Response::new(MoveLeaderResponse {
                header: Some(self.store.header(self.store.current())),
            }));
        }
        Err(EtcdError::MemberNotFound.into())
    }

    async fn downgrade(
        &self,
        _r: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(EtcdError::Unsupported("minik's store does not support cluster downgrades").into())
    }
}

#[tonic::async_trait]
impl Cluster for EtcdService {
    async fn member_add(
        &self,
        _r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(single_member())
    }

    async fn member_remove(
        &self,
        _r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(single_member())
    }

    async fn member_update(
        &self,
        _r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(single_member())
    }

    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // etcd's cluster service leaves the revision out of its headers.
        Ok(Response::new(MemberListResponse {
            header: Some(self.store.header(0)),
            members: vec![self.member()],
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(single_member())
    }
}
