//! Shared informers and work queues: the two pieces every controller is built from.
//!
//! An *informer* watches one resource type (list, then watch from the list's resourceVersion,
//! relisting when the watch breaks) and keeps a local cache of every object (a kube-runtime
//! reflector store). All controllers that need pods read the same pod cache: pods are watched
//! once per process, as in kube-controller-manager's SharedInformerFactory. Controllers register
//! event handlers that map a changed object to the keys (`namespace/name`) of the objects they
//! must reconcile, and put them on their *work queue*.
//!
//! A work queue holds each key at most once, never hands the same key to two workers at a time,
//! and re-queues failed keys with exponential back-off (client-go's rate-limited queue).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// What happened to an object, as an event handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Added or modified (the cache already holds the new version).
    Applied,
    /// Deleted (the cache no longer holds it; the handler gets the last known version).
    Deleted,
}

type Handler<K> = Box<dyn Fn(&K, Change) + Send + Sync>;

/// One resource type's watch and cache, shared by every controller.
pub struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    api: Api<K>,
    /// The list and watch options (a field selector for informers over some objects only).
    config: watcher::Config,
    /// True once the first list is in the cache. (kube-runtime's `wait_until_ready` wakes only
    /// one of several waiters, so readiness is tracked here.)
    ready: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// An informer over all namespaces.
    pub fn new(client: Client) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            store,
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            api: Api::all(client),
            config: watcher::Config::default(),
            ready: tokio::sync::watch::Sender::new(false),
        })
    }

    /// An informer over all namespaces, of the objects matching a field selector only (e.g.
    /// `metadata.name=kube-root-ca.crt`: one configMap per namespace, not all of them).
    pub fn with_fields(client: Client, fields: &str) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            store,
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            api: Api::all(client),
            config: watcher::Config::default().fields(fields),
            ready: tokio::sync::watch::Sender::new(false),
        })
    }

    /// An informer over one namespace (e.g. the node Leases in `kube-node-lease`).
    pub fn namespaced(client: Client, namespace: &str) -> Arc<Self>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            store,
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            api: Api::namespaced(client, namespace),
            config: watcher::Config::default(),
            ready: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The cache (empty until the first list is done: see [`Informer::synced`]).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Registers an event handler (before [`Informer::start`]).
    pub fn on_change(&self, f: impl Fn(&K, Change) + Send + Sync + 'static) {
        self.handlers.lock().push(Box::new(f));
    }

    /// Waits until the first list is in the cache.
    pub async fn synced(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    fn dispatch(&self, obj: &K, change: Change) {
        tracing::trace!(kind = %K::kind(&()), name = ?obj.meta().name, ?change, "event");
        for h in self.handlers.lock().iter() {
            h(obj, change);
        }
    }

    /// Starts the watch (once; later calls do nothing).
    pub fn start(self: &Arc<Self>) {
        let Some(mut writer) = self.writer.lock().take() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let stream = watcher(me.api.clone(), me.config.clone()).default_backoff();
            futures_util::pin_mut!(stream);
            // Objects of a (re)list are handed to the handlers once the whole list is in the
            // cache, so that a handler never reads a half-filled cache.
            let mut listed: Vec<K> = Vec::new();
            let mut before: HashMap<String, K> = HashMap::new();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
                        continue;
                    }
                };
                if let watcher::Event::Init = &ev {
                    before = me
                        .store
                        .state()
                        .iter()
                        .map(|o| (uid_of(o.as_ref()), (**o).clone()))
                        .collect();
                }
                writer.apply_watcher_event(&ev);
                match ev {
                    watcher::Event::Apply(o) => me.dispatch(&o, Change::Applied),
                    watcher::Event::Delete(o) => me.dispatch(&o, Change::Deleted),
                    watcher::Event::Init => listed.clear(),
                    watcher::Event::InitApply(o) => listed.push(o),
                    watcher::Event::InitDone => {
                        tracing::debug!(kind = %K::kind(&()), objects = listed.len(), "listed");
                        for o in listed.drain(..) {
                            before.remove(&uid_of(&o));
                            me.dispatch(&o, Change::Applied);
                        }
                        // Objects deleted while the watch was down.
                        for (_, o) in before.drain() {
                            me.dispatch(&o, Change::Deleted);
                        }
                        me.ready.send_replace(true);
                    }
                }
            }
        });
    }
}

fn uid_of<K: Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

type SyncFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

/// A de-duplicating work queue of object keys (client-go's workqueue).
pub struct Queue {
    name: &'static str,
    state: Mutex<QueueState>,
    notify: Notify,
}

impl Queue {
    pub fn new(name: &'static str) -> Arc<Queue> {
        Arc::new(Queue {
            name,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
        })
    }

    /// Queues `key` (no-op when it is already waiting).
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state.lock();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.add(key);
        });
    }

    async fn get(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if let Some(k) = s.queue.pop_front() {
                    s.dirty.remove(&k);
                    s.processing.insert(k.clone());
                    if !s.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    fn done(&self, key: &str, ok: bool) -> Option<Duration> {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            self.notify.notify_one();
        }
        if ok {
            s.failures.remove(key);
            None
        } else {
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            let ms = 5u64.saturating_mul(1u64 << (*n).min(20)).min(60_000);
            Some(Duration::from_millis(ms))
        }
    }

    /// Runs `workers` workers calling `sync(key)` for each queued key, forever.
    /// Starts [`Queue::run`] once the shared caches have their first full lists: a controller
    /// acts only on complete caches.
    pub fn run_when_synced<F>(self: &Arc<Self>, ctx: &Arc<super::Ctx>, workers: usize, sync: F)
    where
        F: Fn(String) -> SyncFuture + Send + Sync + 'static,
    {
        let (queue, ctx) = (self.clone(), ctx.clone());
        tokio::spawn(async move {
            ctx.synced().await;
            queue.run(workers, sync);
        });
    }

    pub fn run<F>(self: &Arc<Self>, workers: usize, sync: F)
    where
        F: Fn(String) -> SyncFuture + Send + Sync + 'static,
    {
        let sync = Arc::new(sync);
        for _ in 0..workers.max(1) {
            let q = self.clone();
            let sync = sync.clone();
            tokio::spawn(async move {
                loop {
                    let key = q.get().await;
                    let started = std::time::Instant::now();
                    let result = sync(key.clone()).await;
                    tracing::debug!(controller = q.name, key = %key, took = ?started.elapsed(), "synced");
                    if let Err(e) = &result {
                        tracing::warn!(controller = q.name, key = %key, error = %format!("{e:#}"), "sync failed; retrying");
                    }
                    if let Some(delay) = q.done(&key, result.is_ok()) {
                        q.add_after(key, delay);
                    }
                }
            });
        }
    }
}
