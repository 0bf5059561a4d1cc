//! The store: index + backend + lessor + event log, and the read path.
//!
//! Reads never wait for the disk's writer: a read takes the index's read lock just long enough to
//! pick the revisions it needs and to open a redb read transaction (a snapshot), then fetches
//! values from that snapshot without any lock. Writes go through the single writer thread
//! ([`super::writer`]), which groups concurrent requests into one durable redb commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::ReadableTable;
use tokio::sync::watch;

use super::backend::{
    self, Backend, KV, LEASES, META, META_CLUSTER_ID, META_COMPACT_REV, META_CURRENT_REV,
    META_MEMBER_ID, META_RAFT_INDEX, StorageError, decode_record, meta_get, rev_key,
};
use super::index::{Index, KeyRange, Rev};
use super::watchable::{EventLog, RevEvents};
use crate::etcd::error::EtcdError;
use crate::etcd::lease::{Lessor, random_id};
use crate::etcd::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::etcd::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::etcd::proto::mvccpb::{Event, KeyValue, event::EventType};

/// The raft term the single member reports (it is leader from the start and never re-elects).
pub const RAFT_TERM: u64 = 2;

/// Byte budget of the in-memory event log that serves watchers.
const EVENT_LOG_BYTES: usize = 64 << 20;

pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) index: RwLock<Index>,
    pub(crate) lessor: Mutex<Lessor>,
    pub(crate) events: EventLog,
    current: AtomicI64,
    compacted: AtomicI64,
    raft_index: AtomicU64,
    rev_tx: watch::Sender<i64>,
    pub cluster_id: u64,
    pub member_id: u64,
}

/// What a range needs from the index: the revisions to fetch, and the count of matching keys.
pub(crate) struct Picked {
    pub revs: Vec<Rev>,
    pub count: i64,
}

impl Store {
    /// Opens the store in `data_dir`: opens redb and rebuilds the index and the lessor from it.
    pub fn open(data_dir: &Path) -> Result<Store, StorageError> {
        let backend = Backend::open(data_dir)?;
        let mut index = Index::default();
        let mut lessor = Lessor::default();
        let (current, compacted, raft_index, cluster_id, member_id);
        {
            let view = backend.read()?;
            let meta = view.txn.open_table(META)?;
            current = meta_get(&meta, META_CURRENT_REV)?.unwrap_or(1);
            // -1 until the first compaction, as etcd's compactMainRev: compacting at 0 is allowed.
            compacted = meta_get(&meta, META_COMPACT_REV)?.unwrap_or(-1);
            raft_index = meta_get(&meta, META_RAFT_INDEX)?.unwrap_or(0);
            cluster_id = meta_get(&meta, META_CLUSTER_ID)?;
            member_id = meta_get(&meta, META_MEMBER_ID)?;

            let leases = view.txn.open_table(LEASES)?;
            for row in leases.iter()? {
                let (id, v) = row?;
                let (ttl, expiry) = v.value();
                lessor.insert(id.value(), ttl, expiry);
            }

            let kv = view.txn.open_table(KV)?;
            // Records come in revision order, so the last one seen for a key is its current
            // state: that gives the index and which lease each live key is attached to.
            let mut leased: std::collections::HashMap<Vec<u8>, i64> = Default::default();
            for row in kv.iter()? {
                let (k, v) = row?;
                let rec = decode_record(k.value(), v.value())?;
                index.restore_record(&rec);
                if rec.tombstone || rec.kv.lease == 0 {
                    leased.remove(&rec.kv.key);
                } else {
                    leased.insert(rec.kv.key, rec.kv.lease);
                }
            }
            for (key, lease) in leased {
                lessor.attach(lease, &key);
            }
        }
        let (cluster_id, member_id) = match (cluster_id, member_id) {
            (Some(c), Some(m)) => (c as u64, m as u64),
            _ => {
                let ids = (random_id(), random_id());
                backend.write(|txn| {
                    let mut meta = txn.open_table(META)?;
                    meta.insert(META_CLUSTER_ID, ids.0)?;
                    meta.insert(META_MEMBER_ID, ids.1)?;
                    meta.insert(META_CURRENT_REV, current)?;
                    Ok(())
                })?;
                (ids.0 as u64, ids.1 as u64)
            }
        };
        let (rev_tx, _) = watch::channel(current);
        Ok(Store {
            backend,
            index: RwLock::new(index),
            lessor: Mutex::new(lessor),
            events: EventLog::new(current + 1, EVENT_LOG_BYTES),
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            raft_index: AtomicU64::new(raft_index as u64),
            rev_tx,
            cluster_id,
            member_id,
        })
    }

    /// The newest committed revision.
    pub fn current(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    /// The revision history was compacted at (-1 when never).
    pub fn compacted(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    pub fn raft_index(&self) -> u64 {
        self.raft_index.load(Ordering::Acquire)
    }

    pub(crate) fn set_compacted(&self, rev: i64) {
        self.compacted.store(rev, Ordering::Release);
    }

    /// Called by the writer after a durable commit: makes the new revisions visible and wakes
    /// watchers.
    pub(crate) fn publish(&self, current: i64, revs: Vec<RevEvents>, applied: u64) {
        if !revs.is_empty() {
            self.events.append(revs);
        }
        self.raft_index.fetch_add(applied, Ordering::AcqRel);
        self.current.store(current, Ordering::Release);
        self.rev_tx.send_replace(current);
    }

    /// A receiver that sees every new committed revision.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.rev_tx.subscribe()
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }

    /// Checks a requested read revision against history: 0 means "current".
    pub fn resolve_rev(&self, requested: i64, current: i64) -> Result<i64, EtcdError> {
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(EtcdError::FutureRev);
        }
        if requested < self.compacted() {
            return Err(EtcdError::Compacted);
        }
        Ok(requested)
    }

    /// KV.Range outside a transaction.
    ///
    /// The index is walked in chunks, releasing its lock in between, so that ranging over a large
    /// store never holds up the writer for long.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        const CHUNK: usize = 8192;
        let mut picked = Picked {
            revs: Vec::new(),
            count: 0,
        };
        let (at, view, current, mut resume) = {
            let index = self.index.read();
            let current = self.current();
            let at = self.resolve_rev(req.revision, current)?;
            let view = self.backend.read()?;
            let resume = pick_chunk(&index, req, at, &mut picked, None, CHUNK);
            (at, view, current, resume)
        };
        while let Some(after) = resume {
            let index = self.index.read();
            if at < self.compacted() {
                // Compacted past the revision being read while the lock was let go.
                return Err(EtcdError::Compacted);
            }
            resume = pick_chunk(&index, req, at, &mut picked, Some(&after), CHUNK);
        }
        let table = view.txn.open_table(KV).map_err(StorageError::from)?;
        let mut resp = fetch(&table, req, picked)?;
        resp.header = Some(self.header(current));
        Ok(resp)
    }

    /// The previous value of each event's key, for watchers that asked for prev_kv — as etcd
    /// computes it: the key's value at the revision before the event, except for a put that
    /// created the key (none), and none once that revision is compacted.
    pub fn fill_prev_kvs(&self, events: &mut [Event]) -> Result<(), EtcdError> {
        let (revs, view) = {
            let index = self.index.read();
            let compacted = self.compacted();
            let revs: Vec<Option<Rev>> = events
                .iter()
                .map(|e| {
                    let kv = e.kv.as_ref()?;
                    let created =
                        e.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
                    let before = kv.mod_revision - 1;
                    if created || before < compacted {
                        return None;
                    }
                    index.key(&kv.key)?.get(before)
                })
                .collect();
            (revs, self.backend.read()?)
        };
        let table = view.txn.open_table(KV).map_err(StorageError::from)?;
        for (e, rev) in events.iter_mut().zip(revs) {
            if let Some(rev) = rev
                && let Some(v) = table.get(rev_key(rev)).map_err(StorageError::from)?
            {
                e.prev_kv = Some(decode_record(rev_key(rev), v.value())?.kv);
            }
        }
        Ok(())
    }

    /// Events of revisions `from..=to` (at most `max_revs` revisions), from the event log when it
    /// still holds them, otherwise from the backend's history.
    pub fn events_between(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<Arc<RevEvents>>, EtcdError> {
        // The log holds every event, but history at the compacted revision itself is only what
        // compaction kept (no tombstones): read that from the backend, as etcd does.
        if from > self.compacted()
            && let Some(revs) = self.events.read(from, to, max_revs)
        {
            return Ok(revs);
        }
        let view = self.backend.read()?;
        let table = view.txn.open_table(KV).map_err(StorageError::from)?;
        let mut out: Vec<Arc<RevEvents>> = Vec::new();
        let mut cur: Option<(i64, Vec<Event>)> = None;
        for row in table
            .range((from as u64, 0)..(to as u64 + 1, 0))
            .map_err(StorageError::from)?
        {
            let (k, v) = row.map_err(StorageError::from)?;
            let rec = decode_record(k.value(), v.value())?;
            if cur.as_ref().is_some_and(|(r, _)| *r != rec.rev.main) {
                if out.len() + 1 >= max_revs {
                    break;
                }
                if let Some((r, evs)) = cur.take() {
                    out.push(Arc::new(RevEvents::new(r, evs)));
                }
            }
            let ev = record_event(rec.tombstone, rec.kv);
            match &mut cur {
                Some((_, evs)) => evs.push(ev),
                None => cur = Some((rec.rev.main, vec![ev])),
            }
        }
        if let Some((r, evs)) = cur {
            out.push(Arc::new(RevEvents::new(r, evs)));
        }
        Ok(out)
    }

    pub fn db_size(&self) -> u64 {
        self.backend.size()
    }

    pub fn key_count(&self) -> usize {
        let index = self.index.read();
        let cur = self.current();
        let mut n = 0;
        index.range_at(KeyRange::new(&[0], &[0]), cur, |_, _| {
            n += 1;
            true
        });
        n
    }
}

/// The watch event a backend record stands for.
pub fn record_event(tombstone: bool, kv: KeyValue) -> Event {
    if tombstone {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: kv.key,
                mod_revision: kv.mod_revision,
                ..Default::default()
            }),
            prev_kv: None,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        }
    }
}

fn sort_order(req: &RangeRequest) -> SortOrder {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    if target != SortTarget::Key && order == SortOrder::None {
        // etcd sorts ascending by default when a non-key target is given.
        SortOrder::Ascend
    } else {
        order
    }
}

fn has_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// Picks the revisions a range reads, as of revision `at` (etcd's `rangeKeys`).
pub(crate) fn pick(index: &Index, req: &RangeRequest, at: i64) -> Picked {
    let mut picked = Picked {
        revs: Vec::new(),
        count: 0,
    };
    pick_chunk(index, req, at, &mut picked, None, usize::MAX);
    picked
}

/// Picks up to `budget` keys of a range, starting after `after`; returns the key to resume
/// after when the budget ran out before the range did.
pub(crate) fn pick_chunk(
    index: &Index,
    req: &RangeRequest,
    at: i64,
    picked: &mut Picked,
    after: Option<&[u8]>,
    budget: usize,
) -> Option<Vec<u8>> {
    let range = KeyRange::new(&req.key, &req.range_end);
    let fetch_all = req.sort_order != SortOrder::None as i32 || has_filters(req);
    let want = if req.count_only {
        0
    } else if fetch_all || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    };
    let mut visited = 0usize;
    let mut last: Option<&[u8]> = None;
    let mut more = false;
    index.visit_after(range, after, |k, ki| {
        if visited == budget {
            more = true;
            return false;
        }
        visited += 1;
        last = Some(k);
        if let Some(rev) = ki.get(at) {
            picked.count += 1;
            if picked.revs.len() < want {
                picked.revs.push(rev);
            }
        }
        true
    });
    if more { last.map(<[u8]>::to_vec) } else { None }
}

/// Fetches picked revisions and applies filters, sort, limit and keys_only.
pub(crate) fn fetch(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    req: &RangeRequest,
    picked: Picked,
) -> Result<RangeResponse, EtcdError> {
    let mut kvs = Vec::with_capacity(picked.revs.len());
    for rev in picked.revs {
        let Some(v) = table.get(rev_key(rev)).map_err(StorageError::from)? else {
            // Compacted between picking and fetching: the read view predates the compaction, so
            // this only happens when the index and backend disagree.
            return Err(EtcdError::Storage(format!(
                "revision {}/{} is indexed but not stored",
                rev.main, rev.sub
            )));
        };
        kvs.push(backend::decode_record(rev_key(rev), v.value())?.kv);
    }
    if has_filters(req) {
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
    }
    let order = sort_order(req);
    if order != SortOrder::None {
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        kvs.sort_by(|a, b| {
            let ord = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: None,
        kvs,
        more,
        count: picked.count,
    })
}
