//! Crash safety of `minik etcd serve`: a write acknowledged to a client survives `kill -9`.
//!
//! One data dir is used for [`ROUNDS`] rounds. In each round [`CLIENTS`] concurrent gRPC clients
//! write as fast as they can — plain puts of unique keys, txns that put two keys `pair/a/N` and
//! `pair/b/N` atomically, and compare-and-swap counters (a txn guarded by the counter's
//! mod_revision) — and after a random 50–300 ms the server is killed with SIGKILL while requests
//! are in flight. Every acknowledged write is recorded with the revision of its response header.
//! The server is then restarted on the same data dir and checked:
//!
//! - every acknowledged write is there, with its value and mod_revision (a counter may have been
//!   superseded by a later write, but its value is still readable at the acknowledged revision);
//! - nothing that was never written appears; no txn is half-applied (both pair keys or neither);
//!   a counter's value equals its version (no lost or duplicated CAS step);
//! - the revision after restart is at least every acknowledged revision and never goes back;
//!   every mod_revision is at most the current revision; ranges at the current revision and at the
//!   previous round's last revision work; the revisions of the round form an unbroken sequence
//!   (read back with a watch from the previous round's revision), each holding exactly one
//!   request's changes;
//! - acknowledged revisions are distinct and increase along each client's request sequence;
//! - a new write after the restart gets the next revision.
//!
//! `CRASH_SEED=N` replays a run's random choices (the seed is printed).

mod common;
mod grpc_util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use minik::etcd::proto::etcdserverpb::kv_client::KvClient;
use minik::etcd::proto::etcdserverpb::watch_client::WatchClient;
use minik::etcd::proto::etcdserverpb::{
    RangeRequest, WatchCreateRequest, WatchRequest, response_op, watch_request,
};
use minik::etcd::proto::mvccpb::{Event, KeyValue, event::EventType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use common::{Server, free_port, tail};
use grpc_util::*;

const ROUNDS: usize = 20;
const CLIENTS: usize = 16;
/// Counters shared by the clients (client `c` uses counter `c % COUNTERS`), for CAS contention.
const COUNTERS: usize = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const PUT_PREFIX: &str = "crash/put/";
const PAIR_A: &str = "crash/pair/a/";
const PAIR_B: &str = "crash/pair/b/";
const COUNTER_PREFIX: &str = "crash/counter/";
const PROBE_PREFIX: &str = "crash/probe/";

/// One write request a client sent.
#[derive(Clone, Debug, PartialEq)]
enum Write {
    /// Put of a unique key.
    Put { key: String, value: String },
    /// Txn `if create(pair/a/N) == 0 then put pair/a/N = value, put pair/b/N = value`.
    Pair { n: String, value: String },
    /// Txn `if mod(key) == expect_mod then put key = value else get key`.
    Counter {
        key: String,
        value: u64,
        expect_mod: i64,
    },
}

/// A write the server acknowledged, with the revision of its response header.
#[derive(Clone, Debug)]
struct Acked {
    write: Write,
    rev: i64,
    client: usize,
}

#[derive(Default)]
struct ClientLog {
    /// Every write sent, acknowledged or not (in order).
    attempted: Vec<Write>,
    acked: Vec<Acked>,
    /// Counter txns that took the failure branch (lost the CAS race).
    cas_failures: usize,
    /// How the client stopped (the error that ended it).
    end: String,
    /// Whether a write was in flight when the client stopped.
    write_in_flight: bool,
    /// Violations seen by the client itself (e.g. a pair txn on a fresh key that failed).
    violations: Vec<String>,
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

fn counter_state(kv: Option<&KeyValue>) -> (u64, i64) {
    match kv {
        Some(kv) => (
            String::from_utf8_lossy(&kv.value)
                .parse()
                .unwrap_or(u64::MAX),
            kv.mod_revision,
        ),
        None => (0, 0),
    }
}

/// One client: writes until a request fails (the server was killed).
async fn run_client(
    endpoint: String,
    round: usize,
    id: usize,
    seed: u64,
    acks: Arc<AtomicUsize>,
) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    let ch = match connect(&endpoint).await {
        Ok(c) => c,
        Err(e) => {
            log.end = format!("connect: {e}");
            return log;
        }
    };
    let mut kv = KvClient::new(ch);
    let counter_key = format!("{COUNTER_PREFIX}{}", id % COUNTERS);
    // (value, mod_revision) of our counter as last seen.
    let mut counter: Option<(u64, i64)> = None;
    for seq in 0u64.. {
        let tag = format!("r{round:02}-c{id:02}-{seq:06}");
        let filler = "x".repeat(rng.random_range(0..256));
        let value = format!("{tag}#{:016x}#{filler}", rng.random::<u64>());
        let dice = rng.random_range(0..100);
        if dice < 50 {
            let key = format!("{PUT_PREFIX}{tag}");
            let w = Write::Put {
                key: key.clone(),
                value: value.clone(),
            };
            log.attempted.push(w.clone());
            match timed(kv.put(put_req(key, value))).await {
                Ok(r) => {
                    acks.fetch_add(1, Ordering::Relaxed);
                    log.acked.push(Acked {
                        write: w,
                        rev: r.header.map_or(0, |h| h.revision),
                        client: id,
                    })
                }
                Err(e) => {
                    log.end = e;
                    log.write_in_flight = true;
                    return log;
                }
            }
        } else if dice < 75 {
            let (a, b) = (format!("{PAIR_A}{tag}"), format!("{PAIR_B}{tag}"));
            let w = Write::Pair {
                n: tag.clone(),
                value: value.clone(),
            };
            log.attempted.push(w.clone());
            let t = txn(
                vec![cmp_absent(a.clone())],
                vec![op_put(a, value.clone()), op_put(b, value)],
                vec![],
            );
            match timed(kv.txn(t)).await {
                Ok(r) if r.succeeded => {
                    acks.fetch_add(1, Ordering::Relaxed);
                    log.acked.push(Acked {
                        write: w,
                        rev: r.header.map_or(0, |h| h.revision),
                        client: id,
                    })
                }
                Ok(r) => log.violations.push(format!(
                    "pair txn {tag} on a never-written key took the failure branch: {r:?}"
                )),
                Err(e) => {
                    log.end = e;
                    log.write_in_flight = true;
                    return log;
                }
            }
        } else {
            let Some((cur, expect_mod)) = counter else {
                match timed(kv.range(get_req(counter_key.clone()))).await {
                    Ok(r) => counter = Some(counter_state(r.kvs.first())),
                    Err(e) => {
                        log.end = e;
                        return log;
                    }
                }
                continue;
            };
            let w = Write::Counter {
                key: counter_key.clone(),
                value: cur + 1,
                expect_mod,
            };
            log.attempted.push(w.clone());
            let t = txn(
                vec![cmp_mod_eq(counter_key.clone(), expect_mod)],
                vec![op_put(counter_key.clone(), (cur + 1).to_string())],
                vec![op_get(counter_key.clone())],
            );
            match timed(kv.txn(t)).await {
                Ok(r) if r.succeeded => {
                    let rev = r.header.map_or(0, |h| h.revision);
                    acks.fetch_add(1, Ordering::Relaxed);
                    log.acked.push(Acked {
                        write: w,
                        rev,
                        client: id,
                    });
                    counter = Some((cur + 1, rev));
                }
                Ok(r) => {
                    log.cas_failures += 1;
                    match r.responses.first().and_then(|o| o.response.as_ref()) {
                        Some(response_op::Response::ResponseRange(rr)) => {
                            counter = Some(counter_state(rr.kvs.first()))
                        }
                        other => {
                            log.violations.push(format!(
                                "counter txn failure branch answered {other:?} instead of a range"
                            ));
                            counter = None;
                        }
                    }
                }
                Err(e) => {
                    log.end = e;
                    log.write_in_flight = true;
                    return log;
                }
            }
        }
    }
    unreachable!()
}

/// Everything the test knows across rounds.
#[derive(Default)]
struct Model {
    /// Value attempted for each unique key (puts, pair keys, probes).
    attempted: HashMap<String, String>,
    /// Values attempted for each counter.
    counter_attempts: HashMap<String, HashSet<u64>>,
    /// Latest acknowledged (value, rev) of each unique key.
    acked: HashMap<String, (String, i64)>,
    /// Acknowledged pair txns: N → (value, rev).
    acked_pairs: HashMap<String, (String, i64)>,
    /// Every acknowledged counter write: key → [(value, rev)].
    acked_counters: HashMap<String, Vec<(u64, i64)>>,
    /// Revision of every acknowledged write → what it was.
    acked_revs: HashMap<i64, Write>,
    max_acked_rev: i64,
}

/// The state after a round's verification write.
struct Base {
    /// Revision of the last verification write (1 for a fresh store).
    rev: i64,
    /// Number of keys at that revision.
    keys: i64,
}

fn kv_str(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Model {
    /// Records a round's client logs; returns violations found in the acknowledgements alone.
    fn record(
        &mut self,
        logs: &[ClientLog],
        base: &Base,
        round_acks: &mut Vec<Acked>,
    ) -> Vec<String> {
        let mut v = Vec::new();
        for log in logs {
            v.extend(log.violations.iter().cloned());
            for w in &log.attempted {
                match w {
                    Write::Put { key, value } => {
                        assert!(
                            self.attempted.insert(key.clone(), value.clone()).is_none(),
                            "test bug: key {key} written twice"
                        );
                    }
                    Write::Pair { n, value } => {
                        for p in [PAIR_A, PAIR_B] {
                            assert!(
                                self.attempted
                                    .insert(format!("{p}{n}"), value.clone())
                                    .is_none(),
                                "test bug: pair {n} written twice"
                            );
                        }
                    }
                    Write::Counter { key, value, .. } => {
                        self.counter_attempts
                            .entry(key.clone())
                            .or_default()
                            .insert(*value);
                    }
                }
            }
            let mut last_rev = base.rev;
            for a in &log.acked {
                if a.rev <= last_rev {
                    v.push(format!(
                        "client {} was acknowledged revision {} after revision {} (its previous \
                         write, or the last revision before the round): {:?}",
                        a.client, a.rev, last_rev, a.write
                    ));
                }
                last_rev = last_rev.max(a.rev);
                if let Some(other) = self.acked_revs.insert(a.rev, a.write.clone()) {
                    v.push(format!(
                        "two acknowledged writes got revision {}: {:?} and {:?}",
                        a.rev, other, a.write
                    ));
                }
                self.max_acked_rev = self.max_acked_rev.max(a.rev);
                match &a.write {
                    Write::Put { key, value } => {
                        self.acked.insert(key.clone(), (value.clone(), a.rev));
                    }
                    Write::Pair { n, value } => {
                        self.acked_pairs.insert(n.clone(), (value.clone(), a.rev));
                    }
                    Write::Counter { key, value, .. } => {
                        self.acked_counters
                            .entry(key.clone())
                            .or_default()
                            .push((*value, a.rev));
                    }
                }
                round_acks.push(a.clone());
            }
        }
        v
    }
}

async fn range_all(
    kv: &mut KvClient<Channel>,
    req: RangeRequest,
) -> Result<(i64, Vec<KeyValue>, i64), String> {
    let r = timed(kv.range(req)).await?;
    Ok((r.header.map_or(0, |h| h.revision), r.kvs, r.count))
}

/// Reads every event of revisions `from..=to` with a watch on the whole key space.
async fn history(endpoint: &str, from: i64, to: i64) -> Result<Vec<Event>, String> {
    let ch = connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut w = WatchClient::new(ch).max_decoding_message_size(usize::MAX);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                start_revision: from,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = timed(w.watch(tokio_stream::wrappers::ReceiverStream::new(rx))).await?;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err("watch stream ended".into()),
            Ok(Err(s)) => return Err(format!("watch failed: {s:?}")),
            Err(_) => {
                return Err(format!(
                    "watch from {from} did not reach revision {to} within 30 s (last event at {:?})",
                    events
                        .last()
                        .and_then(|e: &Event| e.kv.as_ref())
                        .map(|kv| kv.mod_revision)
                ));
            }
        };
        if msg.canceled {
            return Err(format!("watch canceled: {msg:?}"));
        }
        events.extend(msg.events);
        if events
            .last()
            .and_then(|e| e.kv.as_ref())
            .is_some_and(|kv| kv.mod_revision >= to)
        {
            drop(tx);
            return Ok(events);
        }
    }
}

/// Checks the restarted server against the model; returns the new base or the violations.
async fn verify(
    endpoint: &str,
    round: usize,
    model: &mut Model,
    round_acks: &[Acked],
    base: &Base,
) -> Result<Base, Vec<String>> {
    let mut v: Vec<String> = Vec::new();
    let mut kv = KvClient::new(
        connect(endpoint)
            .await
            .map_err(|e| vec![format!("connect: {e}")])?,
    )
    .max_decoding_message_size(usize::MAX);

    // --- Current state of every key.
    let (rev, kvs, count) = range_all(&mut kv, range_req(vec![0], vec![0]))
        .await
        .map_err(|e| vec![format!("full range after restart failed: {e}")])?;
    if count != kvs.len() as i64 {
        v.push(format!("full range: count {count} but {} kvs", kvs.len()));
    }
    if rev < model.max_acked_rev {
        v.push(format!(
            "revision after restart is {rev}, below the highest acknowledged revision {}",
            model.max_acked_rev
        ));
    }
    if rev < base.rev {
        v.push(format!(
            "revision went back: {rev} after restart, {} before the round",
            base.rev
        ));
    }
    let mut current: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut pairs: BTreeMap<String, [Option<KeyValue>; 2]> = BTreeMap::new();
    for item in kvs {
        let key = kv_str(&item.key);
        let value = kv_str(&item.value);
        if item.mod_revision > rev || item.mod_revision < 2 {
            v.push(format!(
                "{key}: mod_revision {} outside 2..={rev} (the current revision)",
                item.mod_revision
            ));
        }
        if item.create_revision > item.mod_revision || item.create_revision < 2 || item.version < 1
        {
            v.push(format!(
                "{key}: inconsistent create_revision {} / mod_revision {} / version {}",
                item.create_revision, item.mod_revision, item.version
            ));
        }
        if key.starts_with(COUNTER_PREFIX) {
            match value.parse::<u64>() {
                Ok(n) => {
                    if n as i64 != item.version {
                        v.push(format!(
                            "{key}: value {n} but version {} (each CAS step adds exactly 1)",
                            item.version
                        ));
                    }
                    if !model
                        .counter_attempts
                        .get(&key)
                        .is_some_and(|s| s.contains(&n))
                    {
                        v.push(format!("{key}: value {n} was never written"));
                    }
                }
                Err(_) => v.push(format!("{key}: garbage value {value:?}")),
            }
        } else if key.starts_with(PUT_PREFIX)
            || key.starts_with(PAIR_A)
            || key.starts_with(PAIR_B)
            || key.starts_with(PROBE_PREFIX)
        {
            match model.attempted.get(&key) {
                Some(want) if *want == value => {}
                Some(want) => v.push(format!(
                    "{key}: value {value:?}, but the only value ever written is {want:?}"
                )),
                None => v.push(format!("{key}: key was never written (value {value:?})")),
            }
            if item.version != 1 || item.create_revision != item.mod_revision {
                v.push(format!(
                    "{key}: written once but version {} create_revision {} mod_revision {}",
                    item.version, item.create_revision, item.mod_revision
                ));
            }
            for (i, p) in [PAIR_A, PAIR_B].iter().enumerate() {
                if let Some(n) = key.strip_prefix(p) {
                    pairs.entry(n.to_string()).or_default()[i] = Some(item.clone());
                }
            }
        } else {
            v.push(format!("unexpected key {key:?} = {value:?}"));
        }
        current.insert(key, item);
    }

    // --- No partial txn.
    for (n, [a, b]) in &pairs {
        match (a, b) {
            (Some(a), Some(b)) => {
                if a.mod_revision != b.mod_revision || a.value != b.value {
                    v.push(format!(
                        "pair {n}: written by one txn but a = ({:?}, rev {}) and b = ({:?}, rev {})",
                        kv_str(&a.value),
                        a.mod_revision,
                        kv_str(&b.value),
                        b.mod_revision
                    ));
                }
            }
            (Some(x), None) | (None, Some(x)) => v.push(format!(
                "partial txn: only one key of pair {n} exists (mod_revision {})",
                x.mod_revision
            )),
            (None, None) => {}
        }
    }

    // --- Every acknowledged write is there.
    for (key, (value, arev)) in &model.acked {
        match current.get(key) {
            None => v.push(format!(
                "LOST: acknowledged put {key} (revision {arev}) is missing"
            )),
            Some(kv) if kv.mod_revision != *arev || kv_str(&kv.value) != *value => v.push(format!(
                "acknowledged put {key} at revision {arev} now has mod_revision {} value {:?}",
                kv.mod_revision,
                kv_str(&kv.value)
            )),
            Some(_) => {}
        }
    }
    for (n, (value, arev)) in &model.acked_pairs {
        for p in [PAIR_A, PAIR_B] {
            let key = format!("{p}{n}");
            match current.get(&key) {
                None => v.push(format!(
                    "LOST: acknowledged pair txn {n} (revision {arev}): {key} is missing"
                )),
                Some(kv) if kv.mod_revision != *arev || kv_str(&kv.value) != *value => {
                    v.push(format!(
                        "acknowledged pair txn {n} at revision {arev}: {key} has mod_revision {} \
                         value {:?}",
                        kv.mod_revision,
                        kv_str(&kv.value)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    for (key, writes) in &model.acked_counters {
        let Some(&(value, arev)) = writes.iter().max_by_key(|(_, r)| *r) else {
            continue;
        };
        match current.get(key) {
            None => v.push(format!(
                "LOST: counter {key} is missing (acknowledged {value} at revision {arev})"
            )),
            Some(kv) => {
                let (now, mrev) = counter_state(Some(kv));
                if mrev < arev || now < value || (mrev == arev && now != value) {
                    v.push(format!(
                        "counter {key}: acknowledged {value} at revision {arev}, now {now} at \
                         revision {mrev}"
                    ));
                }
            }
        }
    }
    // Superseded counter values of this round must still be readable at their revision.
    for a in round_acks {
        if let Write::Counter { key, value, .. } = &a.write {
            let req = RangeRequest {
                revision: a.rev,
                ..get_req(key.clone())
            };
            match range_all(&mut kv, req).await {
                Ok((_, kvs, _)) => {
                    let got = kvs
                        .first()
                        .map(|kv| (counter_state(Some(kv)), kv.mod_revision));
                    if got.map(|((n, _), m)| (n, m)) != Some((*value, a.rev)) {
                        v.push(format!(
                            "counter {key} at revision {}: acknowledged {value}, history says {got:?}",
                            a.rev
                        ));
                    }
                }
                Err(e) => v.push(format!("range {key} at revision {}: {e}", a.rev)),
            }
        }
    }

    // --- Reads at the current revision and at the previous round's last revision.
    match range_all(
        &mut kv,
        RangeRequest {
            revision: rev,
            count_only: true,
            ..range_req(vec![0], vec![0])
        },
    )
    .await
    {
        Ok((_, _, c)) if c == count => {}
        Ok((_, _, c)) => v.push(format!(
            "range at the current revision {rev} counts {c} keys, a plain range {count}"
        )),
        Err(e) => v.push(format!(
            "full range at the current revision {rev} failed: {e}"
        )),
    }
    if base.rev > 1 {
        match range_all(
            &mut kv,
            RangeRequest {
                revision: base.rev,
                count_only: true,
                ..range_req(vec![0], vec![0])
            },
        )
        .await
        {
            Ok((_, _, c)) if c == base.keys => {}
            Ok((_, _, c)) => v.push(format!(
                "range at revision {} (before the round) counts {c} keys, there were {}",
                base.rev, base.keys
            )),
            Err(e) => v.push(format!("full range at revision {} failed: {e}", base.rev)),
        }
    }

    // --- The round's revisions: an unbroken sequence, one request each.
    if rev > base.rev {
        match history(endpoint, base.rev + 1, rev).await {
            Err(e) => v.push(format!("reading history {}..={rev}: {e}", base.rev + 1)),
            Ok(events) => {
                let mut by_rev: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
                for e in &events {
                    let Some(kv) = &e.kv else {
                        v.push(format!("event without kv: {e:?}"));
                        continue;
                    };
                    if e.r#type != EventType::Put as i32 {
                        v.push(format!("unexpected delete event: {e:?}"));
                    }
                    if kv.mod_revision <= rev {
                        by_rev
                            .entry(kv.mod_revision)
                            .or_default()
                            .push((kv_str(&kv.key), kv_str(&kv.value)));
                    }
                }
                for r in base.rev + 1..=rev {
                    let Some(evs) = by_rev.get(&r) else {
                        v.push(format!("revision {r} has no events (a gap in the history)"));
                        continue;
                    };
                    let ok = match evs.as_slice() {
                        [(k, val)] if k.starts_with(COUNTER_PREFIX) => {
                            val.parse::<u64>().is_ok_and(|n| {
                                model
                                    .counter_attempts
                                    .get(k)
                                    .is_some_and(|s| s.contains(&n))
                            })
                        }
                        [(k, val)] if k.starts_with(PUT_PREFIX) => {
                            model.attempted.get(k) == Some(val)
                        }
                        [(a, va), (b, vb)] => {
                            a.strip_prefix(PAIR_A)
                                .is_some_and(|n| b.strip_prefix(PAIR_B) == Some(n))
                                && va == vb
                                && model.attempted.get(a) == Some(va)
                        }
                        _ => false,
                    };
                    if !ok {
                        v.push(format!(
                            "revision {r} holds {evs:?}, which is not one request that was sent"
                        ));
                    }
                    if let Some(w) = model.acked_revs.get(&r) {
                        let expect: Vec<(String, String)> = match w {
                            Write::Put { key, value } => vec![(key.clone(), value.clone())],
                            Write::Pair { n, value } => vec![
                                (format!("{PAIR_A}{n}"), value.clone()),
                                (format!("{PAIR_B}{n}"), value.clone()),
                            ],
                            Write::Counter { key, value, .. } => {
                                vec![(key.clone(), value.to_string())]
                            }
                        };
                        if *evs != expect {
                            v.push(format!(
                                "revision {r} was acknowledged for {w:?} but holds {evs:?}"
                            ));
                        }
                    }
                }
            }
        }
    }

    // --- A new write gets the next revision.
    let key = format!("{PROBE_PREFIX}r{round:02}");
    let value = format!("probe after round {round}");
    model.attempted.insert(key.clone(), value.clone());
    match timed(kv.put(put_req(key.clone(), value.clone()))).await {
        Ok(r) => {
            let prev = r.header.map_or(0, |h| h.revision);
            if prev != rev + 1 {
                v.push(format!(
                    "first write after restart got revision {prev}, expected {}",
                    rev + 1
                ));
            }
            model.acked.insert(key.clone(), (value, prev));
            model.acked_revs.insert(
                prev,
                Write::Put {
                    key: key.clone(),
                    value: format!("probe after round {round}"),
                },
            );
            model.max_acked_rev = model.max_acked_rev.max(prev);
        }
        Err(e) => v.push(format!("write after restart failed: {e}")),
    }
    let after = range_all(
        &mut kv,
        RangeRequest {
            count_only: true,
            ..range_req(vec![0], vec![0])
        },
    )
    .await;
    let new_base = match after {
        Ok((r, _, c)) => {
            if r != rev + 1 || c != count + 1 {
                v.push(format!(
                    "after one new write: revision {r} and {c} keys, expected {} and {}",
                    rev + 1,
                    count + 1
                ));
            }
            Base { rev: r, keys: c }
        }
        Err(e) => {
            v.push(format!("range after the new write failed: {e}"));
            Base {
                rev: rev + 1,
                keys: count + 1,
            }
        }
    };
    if v.is_empty() { Ok(new_base) } else { Err(v) }
}

fn fail(round: usize, what: &str, violations: &[String], server_log: &str, data_dir: &Path) -> ! {
    let shown: Vec<&str> = violations.iter().take(40).map(String::as_str).collect();
    panic!(
        "round {round}: {what}: {} violation(s) (first {}):\n  {}\n--- data dir: {}\n--- server log \
         (tail):\n{}",
        violations.len(),
        shown.len(),
        shown.join("\n  "),
        data_dir.display(),
        tail(server_log, 30)
    );
}

#[test]
fn acknowledged_writes_survive_kill9() {
    let started = Instant::now();
    let seed = seed("CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::Builder::new()
        .prefix("minik-crash-")
        .tempdir()
        .unwrap();
    let data_dir = data.path().join("data");
    let mut model = Model::default();
    let mut base = Base { rev: 1, keys: 0 };
    let mut server = Server::minik_at(&data_dir, free_port(), None);
    let mut total_acked = 0usize;
    let mut total_in_flight = 0usize;
    for round in 0..ROUNDS {
        let endpoint = server.endpoint();
        let acks = Arc::new(AtomicUsize::new(0));
        let spawned = Instant::now();
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                rt.spawn(run_client(
                    endpoint.clone(),
                    round,
                    c,
                    rng.random(),
                    acks.clone(),
                ))
            })
            .collect();
        // The load time counts from the first acknowledgement, so a slow start (connection
        // setup, a busy machine) does not leave a round without acknowledged writes.
        while acks.load(Ordering::Relaxed) == 0 && spawned.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let first_ack = spawned.elapsed();
        let load = Duration::from_millis(rng.random_range(50..=300));
        std::thread::sleep(load);
        server.kill9();
        let killed_at = Instant::now();
        let logs: Vec<ClientLog> = rt.block_on(async {
            let mut logs = Vec::new();
            for h in handles {
                logs.push(h.await.expect("client task panicked"));
            }
            logs
        });
        let stop_time = killed_at.elapsed();
        let mut round_acks = Vec::new();
        let violations = model.record(&logs, &base, &mut round_acks);
        let acked = round_acks.len();
        let attempted: usize = logs.iter().map(|l| l.attempted.len()).sum();
        let in_flight = logs.iter().filter(|l| l.write_in_flight).count();
        let cas_failures: usize = logs.iter().map(|l| l.cas_failures).sum();
        total_acked += acked;
        total_in_flight += in_flight;
        let ends: HashSet<&str> = logs.iter().map(|l| l.end.as_str()).collect();
        if !violations.is_empty() {
            fail(
                round,
                "acknowledgements",
                &violations,
                &server.log(),
                &data_dir,
            );
        }
        assert!(
            acked > 0,
            "round {round}: no write was acknowledged within {first_ack:?} + {load:?}; client \
             errors: {ends:?}\n{}",
            tail(&server.log(), 30)
        );
        let old_log = server.log();
        drop(server);
        let restart = Instant::now();
        server = Server::minik_at(&data_dir, free_port(), None);
        let restart_time = restart.elapsed();
        match rt.block_on(verify(
            &server.endpoint(),
            round,
            &mut model,
            &round_acks,
            &base,
        )) {
            Ok(b) => {
                let unacked = (b.rev - 1 - base.rev) as usize - acked;
                let (first_ack, load, stop, restart) = (
                    first_ack.as_millis(),
                    load.as_millis(),
                    stop_time.as_millis(),
                    restart_time.as_millis(),
                );
                eprintln!(
                    "round {round:2}: first ack after {first_ack:3} ms, load {load:3} ms, \
                     {attempted:4} writes sent, {acked:4} acked + {unacked:2} committed \
                     unacknowledged ({cas_failures:2} CAS conflicts); {in_flight:2}/{CLIENTS} \
                     clients had a write in flight at the kill, stopped {stop:2} ms after it; \
                     restart {restart:3} ms; revision {} -> {}, {} keys",
                    base.rev, b.rev, b.keys
                );
                base = b;
            }
            Err(v) => fail(
                round,
                "state after restart",
                &v,
                &format!("{old_log}\n--- after restart:\n{}", server.log()),
                &data_dir,
            ),
        }
    }
    assert!(
        total_in_flight > 0,
        "no round killed the server with a write in flight: the test proved nothing"
    );
    eprintln!(
        "{ROUNDS} rounds, {total_acked} acknowledged writes, {total_in_flight} in flight at kills, \
         final revision {}, {:.1} s",
        base.rev,
        started.elapsed().as_secs_f64()
    );
}
