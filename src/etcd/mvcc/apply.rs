//! Applying one write request inside the writer's redb transaction (etcd's `applierV3backend`
//! over `storeTxnWrite`).
//!
//! One request = at most one new revision: every change it makes gets that main revision and its
//! own sub revision. A request that changes nothing (a delete that matches no key, a read-only
//! txn) does not advance the revision.

use redb::{ReadableTable, Table};

use super::backend::{KV, LEASES, encode_record, rev_key};
use super::index::{Index, KeyRange, Rev};
use super::store::{Picked, Store, fetch, pick};
use crate::etcd::error::{EtcdError, MAX_LEASE_TTL, MAX_TXN_OPS};
use crate::etcd::lease::{Lessor, MIN_TTL, now_ms, random_id};
use crate::etcd::mvcc::backend::{StorageError, decode_record};
use crate::etcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcd::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, request_op,
    response_op,
};
use crate::etcd::proto::mvccpb::{Event, KeyValue, event::EventType};

pub(crate) type KvTable<'t> = Table<'t, (u64, u64), &'static [u8]>;
pub(crate) type LeaseTable<'t> = Table<'t, i64, (i64, i64)>;

/// The state one request is applied against: the index and lessor (locked by the writer), the
/// open redb tables, and the revision the request starts from.
pub(crate) struct Apply<'a, 't> {
    pub store: &'a Store,
    pub index: &'a mut Index,
    pub lessor: &'a mut Lessor,
    pub kv: &'a mut KvTable<'t>,
    pub leases: &'a mut LeaseTable<'t>,
    /// The revision before this request.
    pub begin: i64,
    /// Changes made so far (the next change's sub revision).
    pub sub: i64,
    pub events: Vec<Event>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Apply<'_, '_> {
    fn main(&self) -> i64 {
        self.begin + 1
    }

    /// The revision a read inside this request reports: the new one once something changed.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    fn next_rev(&mut self) -> Rev {
        let rev = Rev::new(self.main(), self.sub);
        self.sub += 1;
        rev
    }

    fn load(&self, rev: Rev) -> Result<KeyValue, EtcdError> {
        let v = self
            .kv
            .get(rev_key(rev))
            .map_err(StorageError::from)?
            .ok_or_else(|| EtcdError::Storage(format!("missing record {rev:?}")))?;
        Ok(decode_record(rev_key(rev), v.value())?.kv)
    }

    /// The key's value as this request sees it (including its own earlier changes).
    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        match self.index.key(key).and_then(|ki| ki.latest()) {
            Some(rev) => Ok(Some(self.load(rev)?)),
            None => Ok(None),
        }
    }

    fn range_kvs(&self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, EtcdError> {
        let mut revs = Vec::new();
        self.index
            .range_at(KeyRange::new(key, end), self.main(), |_, rev| {
                revs.push(rev);
                true
            });
        revs.into_iter().map(|r| self.load(r)).collect()
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let at = if req.revision > 0 {
            req.revision
        } else {
            self.main()
        };
        let picked: Picked = pick(self.index, req, at);
        let mut resp = fetch(&*self.kv, req, picked)?;
        resp.header = header(self.read_rev());
        Ok(resp)
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        // As etcd: the requested lease is checked before the key an ignore_* flag needs.
        if req.lease != 0 && !self.lessor.contains(req.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        let prev = if req.ignore_value || req.ignore_lease || req.prev_kv {
            self.latest(&req.key)?
        } else {
            None
        };
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.lessor.contains(lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        let rev = self.next_rev();
        let meta = self.index.put_meta(&req.key, rev);
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: meta.create_revision,
            mod_revision: rev.main,
            version: meta.version,
            value,
            lease,
        };
        self.kv
            .insert(rev_key(rev), encode_record(false, &kv).as_slice())
            .map_err(StorageError::from)?;
        self.index.put(&req.key, rev);
        self.lessor.detach(&req.key);
        if lease != 0 {
            self.lessor.attach(lease, &req.key);
        }
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        Ok(PutResponse {
            header: header(rev.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_key(&mut self, key: &[u8]) -> Result<(), EtcdError> {
        let rev = self.next_rev();
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..Default::default()
        };
        self.kv
            .insert(rev_key(rev), encode_record(true, &kv).as_slice())
            .map_err(StorageError::from)?;
        self.index.tombstone(key, rev);
        self.lessor.detach(key);
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        Ok(())
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        let mut keys = Vec::new();
        self.index.range_at(
            KeyRange::new(&req.key, &req.range_end),
            self.main(),
            |k, _| {
                keys.push(k.to_vec());
                true
            },
        );
        let prev_kvs = if req.prev_kv {
            self.range_kvs(&req.key, &req.range_end)?
        } else {
            Vec::new()
        };
        for k in &keys {
            self.delete_key(k)?;
        }
        Ok(DeleteRangeResponse {
            header: header(self.read_rev()),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    fn compare(&self, c: &Compare) -> Result<bool, EtcdError> {
        let kvs = self.range_kvs(&c.key, &c.range_end)?;
        let target = CompareTarget::try_from(c.target).ok();
        if kvs.is_empty() {
            if target == Some(CompareTarget::Value) {
                // A missing key has no value to compare: always false, as in etcd.
                return Ok(false);
            }
            return Ok(compare_kv(c, target, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }

    /// Evaluates the compares of a txn and of the nested txns on the branch it takes, in
    /// depth-first order (etcd's `compareToPath`).
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in branch(t, ok) {
            if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
                self.txn_path(inner, path)?;
            }
        }
        Ok(())
    }

    /// The requests on the chosen path, in the order they will run.
    fn path_ops<'r>(
        t: &'r TxnRequest,
        path: &[bool],
        pos: &mut usize,
        out: &mut Vec<&'r RequestOp>,
    ) {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        for op in branch(t, ok) {
            match &op.request {
                Some(request_op::Request::RequestTxn(inner)) => {
                    Self::path_ops(inner, path, pos, out)
                }
                Some(_) => out.push(op),
                None => {}
            }
        }
    }

    /// Checks the requests on the chosen path before anything changes, so that a txn either
    /// applies whole or not at all (etcd's `checkRequests`: every put first, then every range).
    ///
    /// A put with `ignore_value`/`ignore_lease` needs its key to exist when it runs; the check
    /// follows the txn's own earlier puts and deletes, so that a txn deleting the key first is
    /// refused up front instead of failing half-applied (etcd 3.4 crashes on such a txn).
    fn check_path(&self, t: &TxnRequest, path: &[bool]) -> Result<(), EtcdError> {
        let mut ops = Vec::new();
        Self::path_ops(t, path, &mut 0, &mut ops);
        for (i, op) in ops.iter().enumerate() {
            if let Some(request_op::Request::RequestPut(p)) = &op.request {
                if (p.ignore_value || p.ignore_lease) && !self.exists_after(&p.key, &ops[..i])? {
                    return Err(EtcdError::KeyNotFound);
                }
                if p.lease != 0 && !self.lessor.contains(p.lease) {
                    return Err(EtcdError::LeaseNotFound);
                }
            }
        }
        for op in &ops {
            if let Some(request_op::Request::RequestRange(r)) = &op.request {
                if r.revision == 0 {
                    continue;
                }
                if r.revision > self.begin {
                    return Err(EtcdError::FutureRev);
                }
                if r.revision < self.store.compacted() {
                    return Err(EtcdError::Compacted);
                }
            }
        }
        Ok(())
    }

    /// Whether `key` exists once the ops `before` (earlier in the same txn) have run.
    fn exists_after(&self, key: &[u8], before: &[&RequestOp]) -> Result<bool, EtcdError> {
        for op in before.iter().rev() {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) if p.key == key => return Ok(true),
                Some(request_op::Request::RequestDeleteRange(d))
                    if KeyRange::new(&d.key, &d.range_end).contains(key) =>
                {
                    return Ok(false);
                }
                _ => {}
            }
        }
        Ok(self.latest(key)?.is_some())
    }

    fn exec_path(
        &mut self,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, EtcdError> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        let mut responses = Vec::new();
        for op in branch(t, ok) {
            let resp = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range(r)?)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.put(p)?)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(d)?)
                }
                Some(request_op::Request::RequestTxn(inner)) => {
                    let mut r = self.exec_path(inner, path, pos)?;
                    r.header = Some(ResponseHeader::default());
                    response_op::Response::ResponseTxn(r)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    pub fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.txn_path(t, &mut path)?;
        self.check_path(t, &path)?;
        let mut resp = self.exec_path(t, &path, &mut 0)?;
        resp.header = header(self.read_rev());
        Ok(resp)
    }

    /// Compacts history at `rev`: the index forgets older revisions and the backend frees them.
    pub fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.store.compacted() {
            return Err(EtcdError::Compacted);
        }
        if rev > self.begin {
            return Err(EtcdError::FutureRev);
        }
        for r in self.index.compact(rev) {
            self.kv.remove(rev_key(r)).map_err(StorageError::from)?;
        }
        // Published while the index is still locked, so no reader sees the compacted index
        // without also seeing the new compacted revision.
        self.store.set_compacted(rev);
        Ok(())
    }

    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(i64, i64), EtcdError> {
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let mut id = id;
        if id == 0 {
            id = random_id();
            while self.lessor.contains(id) {
                id = random_id();
            }
        } else if self.lessor.contains(id) {
            return Err(EtcdError::LeaseExists);
        }
        let ttl = ttl.max(MIN_TTL);
        let expiry = now_ms() + ttl * 1000;
        self.lessor.insert(id, ttl, expiry);
        self.leases
            .insert(id, (ttl, expiry))
            .map_err(StorageError::from)?;
        Ok((id, ttl))
    }

    /// Revokes a lease, deleting its keys (in key order) in one revision. With `only_if_expired`
    /// (the expiry loop), a lease renewed in the meantime is left alone.
    pub fn lease_revoke(&mut self, id: i64, only_if_expired: bool) -> Result<(), EtcdError> {
        let Some(lease) = self.lessor.get(id) else {
            return Err(EtcdError::LeaseNotFound);
        };
        if only_if_expired && lease.expiry_ms > now_ms() {
            return Ok(());
        }
        let Some(lease) = self.lessor.remove(id) else {
            return Err(EtcdError::LeaseNotFound);
        };
        for key in &lease.keys {
            if self.index.key(key).is_some_and(|ki| ki.alive()) {
                self.delete_key(key)?;
            }
        }
        self.leases.remove(id).map_err(StorageError::from)?;
        Ok(())
    }

    /// Persists a renewed lease's new expiry.
    pub fn lease_checkpoint(&mut self, id: i64) -> Result<(), EtcdError> {
        if let Some(l) = self.lessor.get(id) {
            let row = (l.ttl, l.expiry_ms);
            self.leases.insert(id, row).map_err(StorageError::from)?;
        }
        Ok(())
    }
}

fn branch(t: &TxnRequest, ok: bool) -> &[RequestOp] {
    if ok { &t.success } else { &t.failure }
}

/// etcd's `compareKV`: the compared value comes from the union member matching the target (a
/// mismatched member counts as 0 or empty); an unknown target compares equal.
fn compare_kv(c: &Compare, target: Option<CompareTarget>, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let tu = c.target_union.as_ref();
    let ord = match target {
        Some(CompareTarget::Value) => {
            let v: &[u8] = match tu {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Some(CompareTarget::Create) => kv.create_revision.cmp(&match tu {
            Some(TargetUnion::CreateRevision(v)) => *v,
            _ => 0,
        }),
        Some(CompareTarget::Mod) => kv.mod_revision.cmp(&match tu {
            Some(TargetUnion::ModRevision(v)) => *v,
            _ => 0,
        }),
        Some(CompareTarget::Version) => kv.version.cmp(&match tu {
            Some(TargetUnion::Version(v)) => *v,
            _ => 0,
        }),
        Some(CompareTarget::Lease) => kv.lease.cmp(&match tu {
            Some(TargetUnion::Lease(v)) => *v,
            _ => 0,
        }),
        None => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

// ---- Request checks done before a request reaches the writer (etcd's v3rpc `check*Request`).

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Validates a txn: op counts, keys, and etcd's rule that a txn may not put the same key twice
/// nor put a key that it also deletes.
pub fn check_txn(t: &TxnRequest) -> Result<(), EtcdError> {
    check_txn_ops(t, MAX_TXN_OPS)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

fn check_txn_ops(t: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(request_op::Request::RequestTxn(inner)) => {
                check_txn_ops(inner, max_ops.saturating_sub(opc))?
            }
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted interval as etcd's interval tree sees it: a point, or `[start, end)` compared as
/// plain byte strings.
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.start.as_slice(),
            Some(end) => k >= self.start.as_slice() && k < end.as_slice(),
        }
    }
}

type Puts = std::collections::HashSet<Vec<u8>>;

fn check_intervals(reqs: &[RequestOp]) -> Result<(Puts, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = reqs
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => Some(Interval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Interval], k: &[u8]| dels.iter().any(|iv| iv.contains(k));
    let mut puts = Puts::new();
    for op in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            // Then and else are exclusive, so the same key in both is fine.
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Opens the tables the writer applies requests to.
pub(crate) fn open_tables(
    txn: &redb::WriteTransaction,
) -> Result<(KvTable<'_>, LeaseTable<'_>), StorageError> {
    Ok((txn.open_table(KV)?, txn.open_table(LEASES)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: k.into(),
                    range_end: end.into(),
                    ..Default::default()
                },
            )),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_keys() {
        assert!(check_txn(&txn(vec![put("a"), put("b")], vec![put("a")])).is_ok());
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert!(check_txn(&txn(vec![del("a", "c"), put("c")], vec![])).is_ok());
        let nested = RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(
                vec![put("x")],
                vec![put("x")],
            ))),
        };
        assert!(check_txn(&txn(vec![nested.clone()], vec![])).is_ok());
        assert_eq!(
            check_txn(&txn(vec![nested, put("x")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&txn(many, vec![])), Err(EtcdError::TooManyOps));
        assert_eq!(
            check_txn(&txn(vec![put("")], vec![])),
            Err(EtcdError::EmptyKey)
        );
    }
}
