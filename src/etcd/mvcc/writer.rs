//! The writer: one thread that applies every write, grouping concurrent requests into one durable
//! redb commit (group commit).
//!
//! Requests queue on a channel. The writer takes everything waiting (up to [`MAX_BATCH`]), applies
//! each request in turn inside one redb write transaction (each request still gets its own
//! revision), commits with an fsync, and only then publishes the new revisions and answers the
//! callers. While one batch is being fsynced the next one queues up, so throughput is not one fsync
//! per request, and no caller hears "ok" before its write is on disk.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::apply::{Apply, open_tables};
use super::backend::{META, META_COMPACT_REV, META_CURRENT_REV, META_RAFT_INDEX, StorageError};
use super::store::Store;
use super::watchable::RevEvents;
use crate::etcd::error::EtcdError;
use crate::etcd::proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

/// The most requests applied in one commit.
pub const MAX_BATCH: usize = 2048;

#[derive(Debug)]
pub enum WriteOp {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
        only_if_expired: bool,
    },
    LeaseCheckpoint(i64),
    Defragment,
    /// Measures the bytes of the database in use (redb measures only inside a write transaction).
    SizeInUse,
}

impl WriteOp {
    /// Operations that need the database without an open write transaction.
    fn outside_txn(&self) -> bool {
        matches!(self, WriteOp::Defragment | WriteOp::SizeInUse)
    }
}

#[derive(Debug)]
pub enum WriteResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    LeaseGranted { id: i64, ttl: i64 },
    SizeInUse(u64),
    Done,
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<(WriteResult, i64), EtcdError>>,
}

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<Store>) -> Writer {
        let (tx, rx) = mpsc::channel(16 * 1024);
        std::thread::Builder::new()
            .name("etcd-writer".into())
            .spawn(move || run(store, rx))
            .map(|_| ())
            .unwrap_or_else(|e| {
                tracing::error!("cannot start the store's writer thread: {e}");
                std::process::exit(1);
            });
        Writer { tx }
    }

    /// Applies `op` and waits until it is durable. Returns the result and the store's revision
    /// right after it.
    pub async fn submit(&self, op: WriteOp) -> Result<(WriteResult, i64), EtcdError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)?
    }
}

fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => return,
            },
        };
        if first.op.outside_txn() {
            let r = match first.op {
                WriteOp::SizeInUse => store.backend.size_in_use().map(WriteResult::SizeInUse),
                _ => store.backend.defragment().map(|_| WriteResult::Done),
            };
            let _ = first
                .reply
                .send(r.map(|r| (r, store.current())).map_err(EtcdError::from));
            continue;
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) if j.op.outside_txn() => {
                    pending = Some(j);
                    break;
                }
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        apply_batch(&store, jobs);
    }
}

fn apply_batch(store: &Store, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let start_rev = store.current();
    let mut revs: Vec<RevEvents> = Vec::new();
    let mut results = Vec::with_capacity(jobs.len());
    let mut applied = 0u64;
    let outcome = store.backend.write(|txn| {
        let (mut kv, mut leases) = open_tables(txn)?;
        let mut cur = start_rev;
        let compacted_before = store.compacted();
        {
            let mut index = store.index.write();
            let mut lessor = store.lessor.lock();
            for job in &jobs {
                let mut ap = Apply {
                    store,
                    index: &mut index,
                    lessor: &mut lessor,
                    kv: &mut kv,
                    leases: &mut leases,
                    begin: cur,
                    sub: 0,
                    events: Vec::new(),
                };
                let r = apply_one(&mut ap, &job.op);
                if r.is_err() && ap.sub > 0 {
                    // Requests are checked before they change anything, so this cannot happen;
                    // if it did, committing would make a failed request half-applied. Stop
                    // without committing: the store restarts from its last durable state.
                    tracing::error!("a request failed after changing the store: {r:?}");
                    std::process::exit(70);
                }
                if ap.sub > 0 {
                    cur += 1;
                    revs.push(RevEvents::new(cur, std::mem::take(&mut ap.events)));
                }
                if r.is_ok() {
                    applied += 1;
                }
                results.push(r.map(|res| (res, cur)));
            }
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(META_CURRENT_REV, cur)?;
        // The store keeps the applied count in memory; no need to read it back each batch.
        meta.insert(META_RAFT_INDEX, (store.raft_index() + applied) as i64)?;
        if store.compacted() != compacted_before {
            meta.insert(META_COMPACT_REV, store.compacted())?;
        }
        Ok::<_, StorageError>(cur)
    });
    match outcome {
        Ok(cur) => {
            tracing::trace!(
                requests = jobs.len(),
                micros = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            store.publish(cur, revs, applied);
            for (job, r) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            // The index already holds this batch's changes; the only safe way on is to restart
            // from what is on disk (the supervisor restarts the store).
            tracing::error!("commit failed, stopping the store: {e}");
            std::process::exit(70);
        }
    }
}

fn apply_one(ap: &mut Apply<'_, '_>, op: &WriteOp) -> Result<WriteResult, EtcdError> {
    Ok(match op {
        WriteOp::Put(p) => WriteResult::Put(ap.put(p)?),
        WriteOp::DeleteRange(d) => WriteResult::DeleteRange(ap.delete_range(d)?),
        WriteOp::Txn(t) => WriteResult::Txn(ap.txn(t)?),
        WriteOp::Compact(rev) => {
            ap.compact(*rev)?;
            WriteResult::Done
        }
        WriteOp::LeaseGrant { id, ttl } => {
            let (id, ttl) = ap.lease_grant(*id, *ttl)?;
            WriteResult::LeaseGranted { id, ttl }
        }
        WriteOp::LeaseRevoke {
            id,
            only_if_expired,
        } => {
            ap.lease_revoke(*id, *only_if_expired)?;
            WriteResult::Done
        }
        WriteOp::LeaseCheckpoint(id) => {
            ap.lease_checkpoint(*id)?;
            WriteResult::Done
        }
        WriteOp::Defragment | WriteOp::SizeInUse => WriteResult::Done,
    })
}
