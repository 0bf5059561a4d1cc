//! The Lease service: grant, revoke, keep-alive, time-to-live, list; and the expiry loop.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::EtcdService;
use crate::etcd::lease::now_ms;
use crate::etcd::mvcc::{Store, WriteOp, WriteResult, Writer};
use crate::etcd::proto::etcdserverpb::lease_server::Lease;
use crate::etcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

impl EtcdService {
    /// Renews a lease: in memory at once, then durably, so that a restarted store still gives
    /// it the time it had. Returns the TTL, or 0 when the lease does not exist (etcd's answer).
    async fn renew(&self, id: i64) -> Result<i64, Status> {
        let renewed = self.store.lessor.lock().renew(id, now_ms());
        match renewed {
            Some((ttl, _)) => {
                self.writer.submit(WriteOp::LeaseCheckpoint(id)).await?;
                Ok(ttl)
            }
            None => Ok(0),
        }
    }
}

#[tonic::async_trait]
impl Lease for EtcdService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        match self
            .writer
            .submit(WriteOp::LeaseGrant {
                id: req.id,
                ttl: req.ttl,
            })
            .await?
        {
            (WriteResult::LeaseGranted { id, ttl }, rev) => Ok(Response::new(LeaseGrantResponse {
                header: Some(self.store.header(rev)),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(Status::internal(
                "etcdserver: unexpected lease grant result",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        let (_, rev) = self
            .writer
            .submit(WriteOp::LeaseRevoke {
                id: req.id,
                only_if_expired: false,
            })
            .await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.store.header(rev)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let resp = svc.renew(req.id).await.map(|ttl| LeaseKeepAliveResponse {
                    header: Some(svc.store.header(svc.store.current())),
                    id: req.id,
                    ttl,
                });
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = Some(self.store.header(self.store.current()));
        let lessor = self.store.lessor.lock();
        let resp = match lessor.get(req.id) {
            Some(l) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: l.remaining_secs(now_ms()),
                granted_ttl: l.ttl,
                keys: if req.keys {
                    l.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            // etcd answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let ids = self.store.lessor.lock().ids();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.store.header(self.store.current())),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}

/// Revokes leases as they expire, deleting their keys.
pub async fn expiry_loop(store: Arc<Store>, writer: Writer) {
    loop {
        let now = now_ms();
        let (expired, next) = {
            let lessor = store.lessor.lock();
            (lessor.expired(now), lessor.next_expiry())
        };
        for id in expired {
            if let Err(e) = writer
                .submit(WriteOp::LeaseRevoke {
                    id,
                    only_if_expired: true,
                })
                .await
            {
                tracing::debug!("revoking expired lease {id:016x}: {e}");
            }
        }
        let wait = next.map(|t| (t - now_ms()).clamp(10, 500)).unwrap_or(500);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}
