//! The `kube` crate's watcher and reflector against `minik apiserver`: through 1,000 concurrent
//! changes (creates, updates, deletes from several tasks) the reflector's store ends identical to
//! a fresh LIST, and the watch delivered every change exactly once, in order per object, with
//! the resourceVersion the write answered; after the API server is killed and started again on
//! the same port, the watcher comes back by itself (resuming from its last resourceVersion, or
//! relisting on 410) and stays exact through more changes.

mod apiserver_util;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_util::{Cluster, Identity, Store};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;

const NS: &str = "refl";
/// Writer tasks, names per task, changes per task in the first phase (8 × 125 = 1,000).
const TASKS: usize = 8;
const NAMES_PER_TASK: usize = 5;
const CHANGES_PER_TASK: usize = 125;
/// Changes per task after the restart.
const CHANGES_AFTER_RESTART: usize = 25;
const CATCH_UP: Duration = Duration::from_secs(30);
/// KNOWN GAP: `minik apiserver` does not start on a store it has already bootstrapped: its
/// bootstrap creates the `kubernetes` service again, the create fails with 422 `spec.clusterIPs:
/// Invalid value: "[]string{\"10.96.0.1\"}": failed to allocate IP 10.96.0.1: provided IP is
/// already allocated` (not the 409 the bootstrap tolerates), and the process exits 1. While this
/// is `true` the test deletes that service from etcd before the restart; set it to `false` once
/// the server restarts on its own store.
const RESTART_BOOTSTRAP_GAP: bool = false;
/// KNOWN GAP: a watch from a resourceVersion older than the watch cache's window (every one from
/// before a restart) is refused with an HTTP 410; the real apiserver answers 200 and one ERROR
/// event carrying the 410 Status ("must fail with a watch event of type ERROR, rather than a
/// directly returned error"), which is what kube's watcher relists on — on the HTTP 410 it
/// retries the same resourceVersion forever. While this is `true` the test replaces a watcher
/// stuck that way by a new one; set it to `false` once the server answers like the real one.
const WATCH_410_GAP: bool = false;

/// What the watcher delivered, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Init,
    InitApply(String, String),
    InitDone,
    Apply(String, String),
    Delete(String, String),
    Error(String),
}

/// One write and the resourceVersion it answered (for a delete: the object's as it answered
/// it, if it did; `None` for a Status).
#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Update(String),
    Delete(Option<String>),
}

fn name_and_rv(cm: &ConfigMap) -> (String, String) {
    (
        cm.metadata.name.clone().unwrap_or_default(),
        cm.metadata.resource_version.clone().unwrap_or_default(),
    )
}

async fn client(c: &Cluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(c.kubeconfig(Identity::Admin)).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

fn config_map(name: &str, value: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some([("v".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// `changes` writes over the task's own names (so each object's changes are ordered): a missing
/// object is created, a present one updated (pinned to the version last written) up to three
/// times, then deleted. Returns each name's writes in order.
async fn writer(
    api: Api<ConfigMap>,
    task: usize,
    changes: usize,
    state: &mut BTreeMap<String, (Option<String>, usize)>,
) -> BTreeMap<String, Vec<Op>> {
    let mut ops: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for i in 0..changes {
        let name = format!("t{task}-n{}", i % NAMES_PER_TASK);
        let (rv, updates) = state.entry(name.clone()).or_insert((None, 0));
        let op = match rv.clone() {
            None => {
                let made = api
                    .create(&PostParams::default(), &config_map(&name, i))
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                let (_, new_rv) = name_and_rv(&made);
                *rv = Some(new_rv.clone());
                *updates = 0;
                Op::Create(new_rv)
            }
            Some(old_rv) if *updates < 3 => {
                let mut cm = config_map(&name, i);
                cm.metadata.resource_version = Some(old_rv);
                let made = api
                    .replace(&name, &PostParams::default(), &cm)
                    .await
                    .unwrap_or_else(|e| panic!("replace {name}: {e}"));
                let (_, new_rv) = name_and_rv(&made);
                *rv = Some(new_rv.clone());
                *updates += 1;
                Op::Update(new_rv)
            }
            Some(_) => {
                let gone = api
                    .delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete {name}: {e}"));
                *rv = None;
                Op::Delete(gone.left().map(|cm| name_and_rv(&cm).1))
            }
        };
        ops.entry(name).or_default().push(op);
    }
    ops
}

/// Runs the writer tasks concurrently; merges their per-name writes.
async fn concurrent_changes(
    api: &Api<ConfigMap>,
    states: &mut [BTreeMap<String, (Option<String>, usize)>],
    changes: usize,
) -> BTreeMap<String, Vec<Op>> {
    let handles: Vec<_> = states
        .iter_mut()
        .enumerate()
        .map(|(task, state)| {
            let api = api.clone();
            let mut st = std::mem::take(state);
            tokio::spawn(async move {
                let ops = writer(api, task, changes, &mut st).await;
                (ops, st)
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for (task, h) in handles.into_iter().enumerate() {
        let (ops, st) = h.await.expect("writer task");
        states[task] = st;
        all.extend(ops);
    }
    all
}

/// name → resourceVersion of a fresh LIST.
async fn listed(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(name_and_rv)
        .collect()
}

fn reflected(reader: &Reader<ConfigMap>) -> BTreeMap<String, String> {
    reader.state().iter().map(|cm| name_and_rv(cm)).collect()
}

/// Waits until the reflector's store equals a fresh LIST (names and resourceVersions).
async fn wait_identical(api: &Api<ConfigMap>, reader: &Reader<ConfigMap>, what: &str) {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let want = listed(api).await;
        let got = reflected(reader);
        if want == got {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .collect();
            panic!(
                "{what}: the reflector is not identical to the store after {CATCH_UP:?}:\n\
                 listed but not reflected (or older): {missing:?}\n\
                 reflected but not listed (or other rv): {extra:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `events` (watch events, no relist among them) are exactly `ops`: per object, one
/// event per write, in order, with the written resourceVersion (a delete's between the writes
/// around it); and no (name, rv) twice.
fn exactly_once(what: &str, ops: &BTreeMap<String, Vec<Op>>, events: &[Seen]) {
    let mut per_name: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in events {
        let (name, rv, delete) = match e {
            Seen::Apply(n, rv) => (n, rv, false),
            Seen::Delete(n, rv) => (n, rv, true),
            Seen::Error(_) => continue,
            other => panic!("{what}: a relist ({other:?}) among the watch events: {events:?}"),
        };
        assert!(
            seen.insert((name.clone(), rv.clone())),
            "{what}: event for {name} at rv {rv} delivered twice"
        );
        per_name
            .entry(name.clone())
            .or_default()
            .push((delete, rv.clone()));
    }
    let num = |rv: &str| rv.parse::<u64>().unwrap_or_else(|_| panic!("rv {rv:?}"));
    let names: BTreeSet<&String> = ops.keys().chain(per_name.keys()).collect();
    let mut total = 0;
    for name in names {
        let want = ops.get(name).map(Vec::as_slice).unwrap_or_default();
        let got = per_name.get(name).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            want.len(),
            got.len(),
            "{what}: {name}: {} writes but {} events\nwrites: {want:?}\nevents: {got:?}",
            want.len(),
            got.len()
        );
        for (i, (op, (delete, rv))) in want.iter().zip(got).enumerate() {
            let ok = match op {
                Op::Create(w) | Op::Update(w) => !delete && w == rv,
                // A delete's own revision is in its DELETED event only (the answer to the
                // DELETE is a Status, or the object as it was): it lies between the writes
                // around it.
                Op::Delete(answered) => {
                    let after_answer = answered.as_ref().is_none_or(|w| num(w) < num(rv));
                    let after_prev = i == 0 || num(&got[i - 1].1) < num(rv);
                    let before_next = got.get(i + 1).is_none_or(|n| num(rv) < num(&n.1));
                    *delete && after_answer && after_prev && before_next
                }
            };
            assert!(
                ok,
                "{what}: {name}: write #{i} {op:?} was delivered as {} at rv {rv}\nwrites: {want:?}\nevents: {got:?}",
                if *delete { "DELETED" } else { "ADDED/MODIFIED" }
            );
        }
        total += want.len();
    }
    let _ = total;
}

/// A reflector (over a watcher with the default backoff) on `api`, its events recorded; returns
/// once its first list is in.
async fn spawn_reflector(
    api: &Api<ConfigMap>,
) -> (
    Reader<ConfigMap>,
    Arc<Mutex<Vec<Seen>>>,
    tokio::task::JoinHandle<()>,
) {
    let (reader, writer) = reflector::store();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let stream = reflector::reflector(
            writer,
            watcher(api.clone(), watcher::Config::default()).default_backoff(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let rec = match ev {
                    Ok(watcher::Event::Init) => Seen::Init,
                    Ok(watcher::Event::InitApply(cm)) => {
                        let (n, rv) = name_and_rv(&cm);
                        Seen::InitApply(n, rv)
                    }
                    Ok(watcher::Event::InitDone) => Seen::InitDone,
                    Ok(watcher::Event::Apply(cm)) => {
                        let (n, rv) = name_and_rv(&cm);
                        Seen::Apply(n, rv)
                    }
                    Ok(watcher::Event::Delete(cm)) => {
                        let (n, rv) = name_and_rv(&cm);
                        Seen::Delete(n, rv)
                    }
                    Err(e) => Seen::Error(e.to_string()),
                };
                seen.lock().unwrap().push(rec);
            }
        })
    };
    tokio::time::timeout(CATCH_UP, reader.wait_until_ready())
        .await
        .expect("the reflector's first list within the time limit")
        .expect("reflector ready");
    // The store is ready when the reflector has applied InitDone; the event reaches us after.
    let deadline = Instant::now() + CATCH_UP;
    while !seen.lock().unwrap().contains(&Seen::InitDone) {
        assert!(Instant::now() < deadline, "no InitDone");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (reader, seen, watch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_reflector_stays_identical_through_concurrent_changes_and_a_restart() {
    let mut c = tokio::task::block_in_place(|| Cluster::start(Store::Minik));
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    let r = c
        .https(
            Identity::Admin,
            "POST",
            "/api/v1/namespaces",
            Some(&namespace.to_string()),
        )
        .expect("create namespace");
    assert_eq!(r.status, 201, "{r:#?}");

    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, NS);
    let (reader, seen, watch) = spawn_reflector(&api).await;
    let start = seen.lock().unwrap().len();
    assert_eq!(
        seen.lock().unwrap()[..start],
        [Seen::Init, Seen::InitDone],
        "an empty namespace lists as nothing"
    );

    // Phase 1: 1,000 concurrent changes.
    let started = Instant::now();
    let mut states = vec![BTreeMap::new(); TASKS];
    let ops = concurrent_changes(&api, &mut states, CHANGES_PER_TASK).await;
    let writes: usize = ops.values().map(Vec::len).sum();
    assert_eq!(writes, TASKS * CHANGES_PER_TASK);
    wait_identical(&api, &reader, "after 1,000 concurrent changes").await;
    let phase1: Vec<Seen> = seen.lock().unwrap()[start..].to_vec();
    exactly_once("1,000 concurrent changes", &ops, &phase1);
    eprintln!(
        "1,000 changes written and reflected exactly once in {:?}",
        started.elapsed()
    );

    // Phase 2: the API server dies and comes back on the same port.
    let port = c.port();
    let before_kill = seen.lock().unwrap().len();
    tokio::task::block_in_place(|| c.kill());
    // The watch breaks; the watcher reports errors while the server is away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if RESTART_BOOTSTRAP_GAP {
        // Work around the known gap (see the constant): drop the `kubernetes` service so that
        // the restarted server's bootstrap can create it again.
        let out = common::etcdctl(
            c.store(),
            &["del", "/registry/services/specs/default/kubernetes"],
            None,
        );
        assert!(out.status.success(), "etcdctl del: {out:?}");
    }
    tokio::task::block_in_place(|| c.restart_apiserver());
    assert_eq!(c.port(), port, "restarted on the same port");
    // A first write after the restart; the watcher must bring it in by itself.
    let probe = api
        .create(&PostParams::default(), &config_map("probe", 0))
        .await
        .expect("create after the restart");
    let (_, probe_rv) = name_and_rv(&probe);
    let deadline = Instant::now() + CATCH_UP;
    let (mut reader, mut seen, mut watch) = (reader, seen, watch);
    let mut replaced = false;
    while reflected(&reader).get("probe") != Some(&probe_rv) {
        let since = seen.lock().unwrap()[before_kill..].to_vec();
        let stuck_on_410 = since.iter().rev().take(2).all(|e| {
            matches!(e, Seen::Error(m) if m.contains("failed to start watching object")
                && m.contains("too old resource version") && m.contains("410"))
        }) && since.len() >= 3;
        if WATCH_410_GAP && stuck_on_410 {
            eprintln!(
                "KNOWN GAP: after the restart the watch from the last resourceVersion is refused \
                 with an HTTP 410, which kube's watcher retries forever; starting a new watcher"
            );
            watch.abort();
            (reader, seen, watch) = spawn_reflector(&api).await;
            replaced = true;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not come back after the restart: {since:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_kill = if replaced { 0 } else { before_kill };
    let reconnect: Vec<Seen> = seen.lock().unwrap()[before_kill..].to_vec();
    let relisted = reconnect.contains(&Seen::Init);
    if !relisted {
        // Resumed from its last resourceVersion: only watch events, the probe's among them.
        assert!(
            reconnect.contains(&Seen::Apply("probe".into(), probe_rv.clone())),
            "{reconnect:?}"
        );
    }
    wait_identical(&api, &reader, "after the restart").await;
    eprintln!(
        "after the restart the watcher {} ({} errors reported meanwhile)",
        if relisted {
            "relisted"
        } else {
            "resumed from its resourceVersion"
        },
        reconnect
            .iter()
            .filter(|e| matches!(e, Seen::Error(_)))
            .count()
    );

    // More concurrent changes after the restart: delivered exactly once again.
    let mark = seen.lock().unwrap().len();
    let ops = concurrent_changes(&api, &mut states, CHANGES_AFTER_RESTART).await;
    wait_identical(&api, &reader, "after the changes following the restart").await;
    let phase2: Vec<Seen> = seen.lock().unwrap()[mark..].to_vec();
    exactly_once("changes after the restart", &ops, &phase2);

    watch.abort();
}
