//! The Watch service: one task per gRPC stream, holding any number of watchers.
//!
//! Each watcher remembers the next revision it needs. When the store announces a new revision,
//! the stream's task reads the events from that revision on (the event log, or the backend for
//! older history), hands every watcher the events in its key range, and moves it forward. A slow
//! client only slows its own stream: nothing is dropped, the task simply reads further back.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::EtcdService;
use crate::etcd::error::{EtcdError, MAX_REQUEST_BYTES};
use crate::etcd::mvcc::Store;
use crate::etcd::mvcc::index::KeyRange;
use crate::etcd::proto::etcdserverpb::watch_create_request::FilterType;
use crate::etcd::proto::etcdserverpb::watch_server::Watch;
use crate::etcd::proto::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
};
use crate::etcd::proto::mvccpb::{Event, event::EventType};

/// Revisions read per step while a watcher catches up.
const STEP_REVS: usize = 512;

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

struct Watcher {
    id: i64,
    key: Vec<u8>,
    end: Vec<u8>,
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    progress_notify: bool,
    /// Whether events went out since the last progress tick.
    active: bool,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        let is_put = e.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        KeyRange::new(&self.key, &self.end).contains(&kv.key)
    }
}

struct Session {
    store: Arc<Store>,
    out: Out,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

/// The stream closed (the client went away): stop the session.
struct Closed;

impl Session {
    async fn send(&self, r: WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(r)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, rev: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.store.header(rev)),
            watch_id,
            ..Default::default()
        }
    }

    fn behind(&self) -> bool {
        let cur = self.store.current();
        self.watchers.values().any(|w| w.next <= cur)
    }

    async fn create(&mut self, mut c: WatchCreateRequest) -> Result<(), Closed> {
        let cur = self.store.current();
        if c.key.is_empty() {
            // As etcd: "\0" is the smallest key.
            c.key = vec![0];
        }
        let mut resp = self.response(c.watch_id, cur);
        resp.created = true;
        if !c.range_end.is_empty() && c.range_end != [0] && c.key >= c.range_end {
            resp.watch_id = -1;
            resp.canceled = true;
            resp.cancel_reason = "mvcc: watcher range is empty".into();
            return self.send(resp).await;
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                resp.watch_id = -1;
                resp.canceled = true;
                resp.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
                return self.send(resp).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        resp.watch_id = id;
        let next = if c.start_revision > 0 {
            c.start_revision
        } else {
            cur + 1
        };
        self.send(resp).await?;
        let compacted = self.store.compacted();
        if next <= cur && next < compacted {
            return self.send_compacted(id, compacted).await;
        }
        self.watchers.insert(
            id,
            Watcher {
                id,
                key: c.key,
                end: c.range_end,
                next,
                prev_kv: c.prev_kv,
                no_put: c.filters.contains(&(FilterType::Noput as i32)),
                no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                active: false,
            },
        );
        Ok(())
    }

    /// etcd's answer to a watcher whose start revision was compacted: cancelled, with the
    /// compacted revision (and, as etcd sends it, header revision 0 and no reason text).
    async fn send_compacted(&self, id: i64, compacted: i64) -> Result<(), Closed> {
        let mut resp = self.response(id, 0);
        resp.canceled = true;
        resp.compact_revision = compacted;
        self.send(resp).await
    }

    async fn cancel(&mut self, id: i64) -> Result<(), Closed> {
        if self.watchers.remove(&id).is_some() {
            let mut resp = self.response(id, self.store.current());
            resp.canceled = true;
            self.send(resp).await?;
        }
        Ok(())
    }

    /// Moves every lagging watcher forward by up to [`STEP_REVS`] revisions.
    async fn step(&mut self) -> Result<(), Closed> {
        let cur = self.store.current();
        let compacted = self.store.compacted();
        let lagging: Vec<i64> = self
            .watchers
            .values()
            .filter(|w| w.next <= cur && w.next < compacted)
            .map(|w| w.id)
            .collect();
        for id in lagging {
            self.watchers.remove(&id);
            self.send_compacted(id, compacted).await?;
        }
        let Some(from) = self
            .watchers
            .values()
            .filter(|w| w.next <= cur)
            .map(|w| w.next)
            .min()
        else {
            return Ok(());
        };
        let revs = if from >= self.store.events.covered_from() && from > compacted {
            self.store.events_between(from, cur, STEP_REVS)
        } else {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.events_between(from, cur, STEP_REVS))
                .await
                .unwrap_or(Err(EtcdError::Stopped))
        };
        let revs = match revs {
            Ok(r) => r,
            Err(e) => {
                let _ = self.out.send(Err(e.into())).await;
                return Err(Closed);
            }
        };
        let upto = if revs.len() >= STEP_REVS {
            revs.last().map_or(cur, |r| r.rev)
        } else {
            cur
        };
        let ids: Vec<i64> = self
            .watchers
            .values()
            .filter(|w| w.next <= upto)
            .map(|w| w.id)
            .collect();
        for id in ids {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            let mut groups: Vec<Vec<Event>> = Vec::new();
            for r in revs.iter().filter(|r| r.rev >= w.next && r.rev <= upto) {
                let evs: Vec<Event> = r.events.iter().filter(|e| w.wants(e)).cloned().collect();
                if !evs.is_empty() {
                    groups.push(evs);
                }
            }
            w.next = upto + 1;
            if groups.is_empty() {
                continue;
            }
            w.active = true;
            let (prev_kv, fragment) = (w.prev_kv, w.fragment);
            if prev_kv {
                for g in &mut groups {
                    let _ = self.store.fill_prev_kvs(g);
                }
            }
            for resp in self.pack(id, upto, groups, fragment) {
                self.send(resp).await?;
            }
        }
        Ok(())
    }

    /// Packs one watcher's events into responses under the request size limit, never splitting
    /// a revision across responses unless the client allowed fragments.
    fn pack(
        &self,
        id: i64,
        rev: i64,
        groups: Vec<Vec<Event>>,
        fragment: bool,
    ) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut size = 0usize;
        let flush = |batch: &mut Vec<Event>, out: &mut Vec<WatchResponse>, frag: bool| {
            if !batch.is_empty() {
                let mut r = self.response(id, rev);
                r.events = std::mem::take(batch);
                r.fragment = frag;
                out.push(r);
            }
        };
        for g in groups {
            let gsize: usize = g.iter().map(|e| e.encoded_len()).sum();
            if !batch.is_empty() && size + gsize > MAX_REQUEST_BYTES {
                flush(&mut batch, &mut out, false);
                size = 0;
            }
            if gsize > MAX_REQUEST_BYTES && fragment {
                let mut part: Vec<Event> = Vec::new();
                let mut psize = 0;
                for e in g {
                    let es = e.encoded_len();
                    if !part.is_empty() && psize + es > MAX_REQUEST_BYTES {
                        flush(&mut part, &mut out, true);
                        psize = 0;
                    }
                    psize += es;
                    part.push(e);
                }
                flush(&mut part, &mut out, false);
                continue;
            }
            size += gsize;
            batch.extend(g);
        }
        flush(&mut batch, &mut out, false);
        out
    }

    async fn progress_tick(&mut self) -> Result<(), Closed> {
        let cur = self.store.current();
        let due: Vec<i64> = self
            .watchers
            .values_mut()
            .filter_map(|w| {
                let idle = !std::mem::replace(&mut w.active, false);
                (w.progress_notify && idle && w.next > cur).then_some(w.id)
            })
            .collect();
        for id in due {
            self.send(self.response(id, cur)).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Answer once every watcher has everything up to the revision reported.
                while self.behind() {
                    self.step().await?;
                }
                self.send(self.response(-1, self.store.current())).await
            }
            None => Ok(()),
        }
    }

    async fn run(mut self, mut inbound: Streaming<WatchRequest>, progress: Duration) {
        let mut rev_rx = self.store.subscribe();
        let mut ticker = tokio::time::interval(progress);
        ticker.tick().await;
        loop {
            rev_rx.borrow_and_update();
            let behind = self.behind();
            let r = tokio::select! {
                biased;
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    _ => return,
                },
                _ = std::future::ready(()), if behind => self.step().await,
                changed = rev_rx.changed(), if !behind => match changed {
                    Ok(()) => Ok(()),
                    Err(_) => return,
                },
                _ = ticker.tick() => self.progress_tick().await,
            };
            if r.is_err() {
                return;
            }
        }
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for EtcdService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let session = Session {
            store: self.store.clone(),
            out: tx,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(inbound, self.config.watch_progress_interval));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
