//! The watch cache (kube-apiserver's `cacher`): one in-memory copy of every type that someone
//! lists or watches, kept current by a single etcd watch per type, so that lists and watches
//! are served from memory instead of one store round trip (and one etcd watch) per client.
//!
//! Per type (`/registry/pods/`) it holds the current objects, the revision it is up to date
//! with, and a window of recent events. A watch from resourceVersion N replays the window after
//! N and then follows the live events (410 Expired when N fell out of the window); a list waits
//! until the cache has caught up with the revision asked for — for a consistent list (no
//! resourceVersion) it asks etcd for a progress notification to learn the current revision, as
//! Kubernetes 1.31+ does. Each event is serialized once, however many watchers receive it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;

use super::storage::{EtcdStorage, ProgressRequester, StorageError, Stored, WatchEvent};

/// Events kept per type for watches that resume from an older resourceVersion.
const HISTORY: usize = 20_000;

/// The newest events of the history keep their decoded object; older ones keep only its JSON
/// (a decoded pod takes several times the memory of its JSON), decoded again if a watch
/// replays them.
const HISTORY_DECODED: usize = 1_024;

/// Live events buffered for watchers that fall behind; one that falls further behind ends,
/// and its client resumes from the last resourceVersion it got (replayed from the history).
const LIVE_BUFFER: usize = 2_048;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// An object in the cache: its served form, and that form serialized once (for lists and
/// watches, however many clients read it).
#[derive(Debug)]
pub struct CachedObject {
    pub value: Value,
    json: OnceLock<Bytes>,
}

impl CachedObject {
    pub fn new(value: Value) -> CachedObject {
        CachedObject {
            value,
            json: OnceLock::new(),
        }
    }

    /// An object whose JSON is known already.
    fn with_json(value: Value, json: Bytes) -> CachedObject {
        CachedObject {
            value,
            json: OnceLock::from(json),
        }
    }

    /// The object as JSON.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }
}

impl std::ops::Deref for CachedObject {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change of one object, as watchers receive it.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The object as served (for a delete: its last state, at the delete's revision).
    pub object: Arc<CachedObject>,
    pub revision: i64,
    line: OnceLock<Bytes>,
}

impl Event {
    fn new(kind: EventKind, key: String, object: Arc<CachedObject>, revision: i64) -> Event {
        Event {
            kind,
            key,
            object,
            revision,
            line: OnceLock::new(),
        }
    }

    /// The watch line (`{"type":…,"object":…}\n`), serialized once for every watcher.
    pub fn json_line(&self) -> Bytes {
        self.line
            .get_or_init(|| {
                let object = self.object.json();
                let kind = self.kind.name();
                let mut line = Vec::with_capacity(object.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(object);
                line.extend_from_slice(b"}\n");
                Bytes::from(line)
            })
            .clone()
    }
}

/// A watch event line.
pub fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The object as served; objects that are not Kubernetes objects are left out of the cache.
fn served(stored: &Stored) -> Option<Value> {
    stored.object().ok()
}

/// A written object decoded from its stored bytes, with its JSON made from those bytes too (the
/// resourceVersion written in, no re-encoding): watchers and the history need that JSON.
fn served_with_json(stored: &Stored) -> Option<CachedObject> {
    let value = served(stored)?;
    Some(match stored.served_json() {
        Some(json) => CachedObject::with_json(value, Bytes::from(json)),
        None => CachedObject::new(value),
    })
}

/// An event of the history: as it was sent, or (once older than [`HISTORY_DECODED`] events)
/// only its object's JSON.
#[derive(Debug, Clone)]
enum Past {
    Decoded(Arc<Event>),
    Encoded {
        kind: EventKind,
        key: String,
        revision: i64,
        json: Bytes,
    },
}

impl Past {
    fn revision(&self) -> i64 {
        match self {
            Past::Decoded(e) => e.revision,
            Past::Encoded { revision, .. } => *revision,
        }
    }

    fn key(&self) -> &str {
        match self {
            Past::Decoded(e) => &e.key,
            Past::Encoded { key, .. } => key,
        }
    }

    /// Keeps only the object's JSON; the decoded object is freed unless the current state
    /// (or a watcher) still holds it.
    fn encode(&mut self) {
        if let Past::Decoded(e) = self {
            *self = Past::Encoded {
                kind: e.kind,
                key: e.key.clone(),
                revision: e.revision,
                json: e.object.json().clone(),
            };
        }
    }

    /// The event to replay; None if its JSON no longer decodes (it always does: it was
    /// serialized from a decoded object).
    fn event(&self) -> Option<Arc<Event>> {
        match self {
            Past::Decoded(e) => Some(e.clone()),
            Past::Encoded {
                kind,
                key,
                revision,
                json,
            } => {
                let value = serde_json::from_slice(json).ok()?;
                let object = Arc::new(CachedObject::with_json(value, json.clone()));
                Some(Arc::new(Event::new(*kind, key.clone(), object, *revision)))
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    /// Everything up to this revision is reflected.
    revision: i64,
    history: VecDeque<Past>,
    /// Every event after this revision is in `history`.
    oldest: i64,
}

/// Objects this API server has just written, handed over by the handler that wrote them (see
/// [`WatchCache::offer`]): the watch event of that write then takes the object as it is instead
/// of decoding the stored bytes again. At most one per key; an entry goes when its event (or a
/// later one of its key) arrives.
#[derive(Debug, Default)]
struct Offered {
    /// The revision of the last event taken from the store's watch.
    seen: i64,
    objects: HashMap<String, (i64, Arc<CachedObject>)>,
}

/// The cache of one type.
struct TypeCache {
    state: parking_lot::RwLock<State>,
    offered: parking_lot::Mutex<Offered>,
    events: broadcast::Sender<Arc<Event>>,
    progress: ProgressRequester,
    revision: tokio::sync::watch::Sender<i64>,
}

/// How fresh a list must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// `resourceVersion=0`: whatever the cache has.
    Any,
    /// No resourceVersion: as fresh as etcd right now (a consistent read).
    Current,
    /// `resourceVersion=N`: at least N.
    AtLeast(i64),
}

/// A watch served from the cache: the events to send first, then the live ones.
pub struct CacheWatch {
    /// Replayed history or the synthetic ADDED events of the current state.
    pub initial: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Live events at or below this revision were already covered by `initial`.
    pub after: i64,
    /// Weak: a cache that stops must drop its event sender so its watchers end.
    cache: std::sync::Weak<TypeCache>,
}

impl CacheWatch {
    /// The revision the cache is up to date with (for bookmarks), if it still runs.
    pub fn revision(&self) -> Option<i64> {
        self.cache.upgrade().map(|c| c.state.read().revision)
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// The current state as ADDED events, then changes.
    Now,
    /// Changes after this resourceVersion.
    Revision(i64),
}

/// All type caches of one API server.
pub struct WatchCache {
    storage: EtcdStorage,
    types: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<TypeCache>>>>>,
    /// Whether the store's watch progress notifications come only after the events before
    /// them, so that a consistent list may be served from the cache (see [`Self::check_store`]).
    progress_ordered: std::sync::atomic::AtomicBool,
}

impl WatchCache {
    pub fn new(storage: EtcdStorage) -> Arc<WatchCache> {
        Arc::new(WatchCache {
            storage,
            types: parking_lot::Mutex::new(HashMap::new()),
            progress_ordered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks the store its version. etcd before 3.4.31 and 3.5.13 can send a watch progress
    /// notification ahead of events it has not delivered yet (etcd-io/etcd#15220), so a list at
    /// the current revision read from the cache could miss objects; with those, kube-apiserver
    /// reads consistent lists from etcd, and so does this cache (until this says otherwise).
    pub async fn check_store(&self) {
        let ordered = match self.storage.server_version().await {
            Ok(v) => progress_is_ordered(&v),
            Err(e) => {
                tracing::warn!("asking the store its version: {e:?}");
                false
            }
        };
        if !ordered {
            tracing::info!(
                "the store's watch progress notifications may run ahead of its events: lists at the current revision are read from it"
            );
        }
        self.progress_ordered
            .store(ordered, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the caches of the types stored under `prefixes`, one after another, in the
    /// background — as kube-apiserver starts a cacher for every resource it serves, so that the
    /// first list, watch or update of a type does not wait for its initial list.
    pub fn warm(self: &Arc<Self>, prefixes: Vec<String>) {
        let this = self.clone();
        tokio::spawn(async move {
            for prefix in prefixes {
                if let Err(e) = this.type_cache(&prefix).await {
                    tracing::debug!("watch cache for {prefix} not started yet: {e:?}");
                }
            }
        });
    }

    /// The cache of the type stored under `prefix`, started (list + watch) on first use.
    async fn type_cache(self: &Arc<Self>, prefix: &str) -> Result<Arc<TypeCache>, StorageError> {
        let cell = self
            .types
            .lock()
            .entry(prefix.to_string())
            .or_default()
            .clone();
        let started = cell
            .get_or_try_init(|| async { self.start(prefix).await })
            .await?;
        Ok(started.clone())
    }

    async fn start(self: &Arc<Self>, prefix: &str) -> Result<Arc<TypeCache>, StorageError> {
        let page = self.storage.list(prefix, 0, 0, None).await?;
        let mut state = State {
            revision: page.revision,
            oldest: page.revision,
            ..State::default()
        };
        for s in &page.items {
            if let Some(v) = served(s) {
                state
                    .objects
                    .insert(s.key.clone(), Arc::new(CachedObject::new(v)));
            }
        }
        let (mut stream, progress) = self
            .storage
            .watch_with_progress(prefix, page.revision)
            .await?;
        let (events, _) = broadcast::channel(LIVE_BUFFER);
        let (revision, _) = tokio::sync::watch::channel(page.revision);
        let cache = Arc::new(TypeCache {
            state: parking_lot::RwLock::new(state),
            offered: parking_lot::Mutex::new(Offered {
                seen: page.revision,
                objects: HashMap::new(),
            }),
            events,
            progress,
            revision,
        });
        let weak = Arc::downgrade(&cache);
        let owner = Arc::downgrade(self);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                let Some(cache) = weak.upgrade() else { return };
                match ev {
                    Ok(ev) => cache.apply(ev),
                    Err(e) => {
                        tracing::warn!("watch cache for {prefix} stopped: {e:?}");
                        break;
                    }
                }
            }
            // The etcd watch ended (store restarted, compacted past us): forget this cache so
            // the next request starts a fresh one; dropping it ends its watchers, who resume
            // from their last resourceVersion (or relist on 410).
            if let Some(owner) = owner.upgrade() {
                owner.types.lock().remove(&prefix);
            }
        });
        Ok(cache)
    }

    /// The objects under `sub_prefix` (a type's prefix, or one namespace of it), sorted by key,
    /// and the revision they are current at.
    pub async fn list(
        self: &Arc<Self>,
        prefix: &str,
        sub_prefix: &str,
        freshness: Freshness,
    ) -> Result<(Vec<Arc<CachedObject>>, i64), StorageError> {
        if freshness == Freshness::Current
            && !self
                .progress_ordered
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            let page = self.storage.list(sub_prefix, 0, 0, None).await?;
            let items = page
                .items
                .iter()
                .filter_map(served)
                .map(|v| Arc::new(CachedObject::new(v)))
                .collect();
            return Ok((items, page.revision));
        }
        let cache = self.type_cache(prefix).await?;
        let want = match freshness {
            Freshness::Any => 0,
            Freshness::AtLeast(n) => n,
            Freshness::Current => self.storage.current_revision().await?,
        };
        cache
            .wait_for(want, freshness == Freshness::Current)
            .await?;
        let state = cache.state.read();
        let items = state
            .objects
            .range(sub_prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(sub_prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, state.revision))
    }

    /// Hands the cache an object its caller has just written to `key` at `revision`, in its
    /// served form (resourceVersion set): when the store's watch delivers that write, the
    /// cache takes this object instead of decoding the stored bytes again. The object must be
    /// exactly what those bytes decode to. Does nothing when the type has no running cache or
    /// the cache is already past that revision.
    pub fn offer(&self, prefix: &str, key: &str, revision: i64, object: Arc<CachedObject>) {
        let cell = self.types.lock().get(prefix).cloned();
        if let Some(cache) = cell.as_ref().and_then(|c| c.get()) {
            let mut offered = cache.offered.lock();
            if offered.seen < revision {
                offered.objects.insert(key.to_string(), (revision, object));
            }
        }
    }

    /// One object of the type under `prefix`, as the cache has it (no freshness wait).
    pub async fn get(self: &Arc<Self>, prefix: &str, key: &str) -> Option<Arc<CachedObject>> {
        let cache = self.type_cache(prefix).await.ok()?;
        let state = cache.state.read();
        state.objects.get(key).cloned()
    }

    /// The continuation of a paged list at `revision`, from `start` on, when the cache is still
    /// exactly at that revision (nothing changed since the first page); None otherwise (the
    /// caller reads that page from etcd at the revision).
    pub async fn list_continue(
        self: &Arc<Self>,
        prefix: &str,
        sub_prefix: &str,
        start: &str,
        revision: i64,
    ) -> Option<Vec<Arc<CachedObject>>> {
        let cache = self.type_cache(prefix).await.ok()?;
        let state = cache.state.read();
        if state.revision != revision {
            return None;
        }
        Some(
            state
                .objects
                .range(start.to_string()..)
                .take_while(|(k, _)| k.starts_with(sub_prefix))
                .map(|(_, v)| v.clone())
                .collect(),
        )
    }

    /// A watch of the type under `prefix`.
    pub async fn watch(
        self: &Arc<Self>,
        prefix: &str,
        sub_prefix: &str,
        from: WatchFrom,
    ) -> Result<CacheWatch, StorageError> {
        let cache = self.type_cache(prefix).await?;
        if let WatchFrom::Revision(n) = from {
            // A resourceVersion from the future: wait for the cache to get there.
            cache.wait_for(n, false).await?;
        }
        let state = cache.state.read();
        let live = cache.events.subscribe();
        let initial = match from {
            WatchFrom::Now => state
                .objects
                .range(sub_prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(sub_prefix))
                .map(|(k, v)| {
                    Arc::new(Event::new(
                        EventKind::Added,
                        k.clone(),
                        v.clone(),
                        state.revision,
                    ))
                })
                .collect(),
            WatchFrom::Revision(n) => {
                if n < state.oldest {
                    return Err(StorageError::Expired {
                        requested: n,
                        compacted: state.oldest,
                    });
                }
                // Copied out (cheap: shared buffers) and decoded after the lock is released,
                // so that a long replay does not hold up the cache's updates.
                let past: Vec<Past> = state
                    .history
                    .iter()
                    .filter(|e| e.revision() > n && e.key().starts_with(sub_prefix))
                    .cloned()
                    .collect();
                let after = state.revision;
                drop(state);
                let mut replay = Vec::with_capacity(past.len());
                for p in &past {
                    // An event that cannot be replayed: the client relists instead.
                    let Some(ev) = p.event() else {
                        return Err(StorageError::Expired {
                            requested: n,
                            compacted: after,
                        });
                    };
                    replay.push(ev);
                }
                return Ok(CacheWatch {
                    initial: replay,
                    live,
                    after,
                    cache: Arc::downgrade(&cache),
                });
            }
        };
        let after = state.revision;
        drop(state);
        Ok(CacheWatch {
            initial,
            live,
            after,
            cache: Arc::downgrade(&cache),
        })
    }
}

impl TypeCache {
    fn apply(&self, ev: WatchEvent) {
        // Decode before taking the lock: readers (GETs, lists, new watches) wait only for the
        // map update and the broadcast, not for the JSON parse.
        let (kind, key, object, revision) = match ev {
            WatchEvent::Progress(rev) => {
                let mut state = self.state.write();
                state.revision = state.revision.max(rev);
                let r = state.revision;
                drop(state);
                self.revision.send_replace(r);
                return;
            }
            WatchEvent::Added(s) => {
                let Some(object) = self.written(&s) else {
                    return;
                };
                (EventKind::Added, s.key, object, s.revision)
            }
            WatchEvent::Modified { object: s, .. } => {
                let Some(object) = self.written(&s) else {
                    return;
                };
                (EventKind::Modified, s.key, object, s.revision)
            }
            WatchEvent::Deleted { object, revision } => {
                self.take_offered(&object.key, revision);
                // Served at the delete's revision (the bytes are moved, not copied).
                let last = Stored { revision, ..object };
                let Some(object) = served_with_json(&last) else {
                    // Undecodable: still gone from the cache.
                    self.state.write().objects.remove(&last.key);
                    return;
                };
                (EventKind::Deleted, last.key, Arc::new(object), revision)
            }
        };
        let mut state = self.state.write();
        if kind == EventKind::Deleted {
            state.objects.remove(&key);
        } else {
            state.objects.insert(key.clone(), object.clone());
        }
        let event = Arc::new(Event::new(kind, key, object, revision));
        state.revision = state.revision.max(event.revision);
        state.history.push_back(Past::Decoded(event.clone()));
        while state.history.len() > HISTORY {
            if let Some(old) = state.history.pop_front() {
                state.oldest = old.revision();
            }
        }
        if let Some(i) = state.history.len().checked_sub(HISTORY_DECODED + 1) {
            state.history[i].encode();
        }
        // Broadcast under the lock: a watch subscribing meanwhile sees either the event in
        // the history it replays or live, never both, never neither.
        let _ = self.events.send(event);
        let r = state.revision;
        drop(state);
        self.revision.send_replace(r);
    }

    /// The object a put event wrote: the one offered for it, else its bytes decoded (None when
    /// they are not a Kubernetes object).
    fn written(&self, s: &Stored) -> Option<Arc<CachedObject>> {
        match self.take_offered(&s.key, s.revision) {
            Some(object) => Some(object),
            None => served_with_json(s).map(Arc::new),
        }
    }

    /// The object offered for `key` at `revision`, if any; marks everything up to `revision`
    /// as seen, so that nothing is offered for it any more.
    fn take_offered(&self, key: &str, revision: i64) -> Option<Arc<CachedObject>> {
        let mut offered = self.offered.lock();
        offered.seen = offered.seen.max(revision);
        if offered.objects.is_empty() {
            return None;
        }
        match offered.objects.remove(key) {
            Some((rev, object)) if rev == revision => Some(object),
            // Offered for a later write of the key (its event is still to come): keep it.
            Some(later) if later.0 > revision => {
                offered.objects.insert(key.to_string(), later);
                None
            }
            _ => None,
        }
    }

    /// Waits (up to 3 s, as kube-apiserver) until the cache reflects revision `want`; with
    /// `ask`, requests a progress notification from etcd to learn it.
    async fn wait_for(&self, want: i64, ask: bool) -> Result<(), StorageError> {
        if self.state.read().revision >= want {
            return Ok(());
        }
        let mut rx = self.revision.subscribe();
        if ask {
            self.progress.request().await;
        }
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= want {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), wait).await {
            Ok(true) => Ok(()),
            _ => Err(StorageError::Unavailable(format!(
                "Too large resource version: {want}, current: {}",
                self.state.read().revision
            ))),
        }
    }
}

/// Whether an etcd of version `v` sends progress notifications only after the events before
/// them: 3.4.31+, 3.5.13+, 3.6 and later (kube-apiserver's feature support checker).
fn progress_is_ordered(v: &str) -> bool {
    let mut parts = v.trim().split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .ok()
    });
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_history_event_replays_as_it_was_sent() {
        let object = Arc::new(CachedObject::new(json!({
            "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}},
            "spec": {"x": 1.5, "y": [null, "\u{e9} \"q\""]},
        })));
        let sent = Arc::new(Event::new(
            EventKind::Modified,
            "/registry/pods/d/p".into(),
            object.clone(),
            7,
        ));
        let mut past = Past::Decoded(sent.clone());
        past.encode();
        assert!(matches!(past, Past::Encoded { .. }));
        // Only the JSON is kept: the decoded object is the current state's alone.
        assert_eq!(Arc::strong_count(&object), 2, "the event and this test");
        assert_eq!((past.revision(), past.key()), (7, "/registry/pods/d/p"));
        let replayed = past.event().unwrap();
        assert_eq!(replayed.kind, EventKind::Modified);
        assert_eq!(replayed.object.value, object.value);
        assert_eq!(replayed.json_line(), sent.json_line());
    }

    #[test]
    fn etcd_versions_with_ordered_progress_notifications() {
        for (v, ok) in [
            ("3.4.23", false),
            ("3.4.30", false),
            ("3.4.31", true),
            ("3.5.12", false),
            ("3.5.13", true),
            ("3.5.17", true),
            ("3.6.0", true),
            ("3.3.27", false),
            ("4.0.0", true),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(progress_is_ordered(v), ok, "{v}");
        }
    }
}
