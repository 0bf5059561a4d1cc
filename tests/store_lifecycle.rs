//! The store across its life: restarts (leases keep their remaining TTL), snapshots taken by the
//! real `etcdctl snapshot save` and restored by `minik etcd restore`, refused corrupt images, and
//! watch features etcdctl does not reach (progress requests, fragments, compacted starts).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, etcdctl, minik_bin};
use minik::etcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse, kv_client::KvClient,
    lease_client::LeaseClient, watch_client::WatchClient, watch_request::RequestUnion,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn minik(args: &[&str]) -> std::process::Output {
    Command::new(minik_bin())
        .args(args)
        .output()
        .expect("run minik")
}

async fn channel(s: &Server) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{}", s.port()))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str, lease: i64) -> i64 {
    kv.put(PutRequest {
        key: k.into(),
        value: v.into(),
        lease,
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .unwrap()
    .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart_with_the_time_they_had_left() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut s = Server::minik_at(dir.path(), port, None);
    let ch = channel(&s).await;
    let mut leases = LeaseClient::new(ch.clone());
    let mut kv = KvClient::new(ch);
    let long = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    let short = leases
        .lease_grant(LeaseGrantRequest { ttl: 3, id: 77 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short.id, 77);
    put(&mut kv, "/l/long", "a", long.id).await;
    put(&mut kv, "/l/short", "b", short.id).await;
    s.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.start();
    let ch = channel(&s).await;
    let mut leases = LeaseClient::new(ch.clone());
    let mut kv = KvClient::new(ch);
    let ttl = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: long.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(
        // At least 1.5 s passed while it was down: a TTL reset on restart would read 59 or 60.
        (40..=58).contains(&ttl.ttl),
        "the lease kept its remaining time, not a fresh TTL: {}",
        ttl.ttl
    );
    assert_eq!(ttl.keys, vec![b"/l/long".to_vec()]);
    // The short lease ran out while the store was down or right after: its key goes with it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = kv
        .range(RangeRequest {
            key: "/l/".into(),
            range_end: "/l0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = got.kvs.iter().map(|k| k.key.clone()).collect();
    assert_eq!(keys, vec![b"/l/long".to_vec()]);
    let gone = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: 77,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl, -1);
}

#[test]
fn snapshot_save_status_restore_round_trip() {
    let s = Server::minik(None);
    for i in 0..50 {
        ok(&etcdctl(
            &s,
            &["put", &format!("/snap/k{i:02}"), &format!("v{i}")],
            None,
        ));
    }
    ok(&etcdctl(&s, &["del", "/snap/k07"], None));
    ok(&etcdctl(&s, &["put", "/snap/k08", "changed"], None));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("snap.db");
    let file_s = file.to_str().unwrap();
    let saved = ok(&etcdctl(&s, &["snapshot", "save", file_s], None));
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);

    let status = ok(&minik(&[
        "etcd", "snapshot", "status", file_s, "-w", "json",
    ]));
    // 50 puts + 1 delete + 1 put after the initial revision 1.
    assert!(status.contains("\"revision\":53"), "{status}");
    assert!(status.contains("\"totalKey\":49"), "{status}");
    let table = ok(&minik(&[
        "etcd", "snapshot", "status", file_s, "-w", "table",
    ]));
    assert!(table.contains("TOTAL KEYS"), "{table}");

    let restored = work.path().join("restored");
    ok(&minik(&[
        "etcd",
        "restore",
        file_s,
        "--data-dir",
        restored.to_str().unwrap(),
    ]));
    // Restoring over an existing data dir is refused and changes nothing.
    let again = minik(&[
        "etcd",
        "restore",
        file_s,
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let r = Server::minik_at(&restored, common::free_port(), None);
    let got = ok(&etcdctl(
        &r,
        &["get", "/snap/", "--prefix", "-w", "json"],
        None,
    ));
    assert!(got.contains("\"count\":49"), "{got}");
    let v = ok(&etcdctl(
        &r,
        &["get", "/snap/k08", "--print-value-only"],
        None,
    ));
    assert_eq!(v.trim(), "changed");
    // History survives too: the deleted key is readable at an old revision.
    let old = ok(&etcdctl(
        &r,
        &["get", "/snap/k07", "--rev=20", "--print-value-only"],
        None,
    ));
    assert_eq!(old.trim(), "v7");
    // And the restored store carries on from the snapshot's revision.
    let put = ok(&etcdctl(&r, &["put", "/snap/new", "x", "-w", "json"], None));
    assert!(put.contains("\"revision\":54"), "{put}");
}

fn corrupt_copy(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut data = std::fs::read(src).unwrap();
    f(&mut data);
    std::fs::write(dst, data).unwrap();
}

#[test]
fn corrupt_or_truncated_images_are_refused_and_change_nothing() {
    let s = Server::minik(None);
    for i in 0..20 {
        ok(&etcdctl(&s, &["put", &format!("k{i}"), "v"], None));
    }
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.db");
    ok(&etcdctl(
        &s,
        &["snapshot", "save", good.to_str().unwrap()],
        None,
    ));

    type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "truncated",
            Box::new(|d: &mut Vec<u8>| d.truncate(d.len() / 2)),
        ),
        ("flipped", Box::new(|d: &mut Vec<u8>| d[100] ^= 0xff)),
        ("empty", Box::new(|d: &mut Vec<u8>| d.clear())),
        (
            "garbage",
            Box::new(|d: &mut Vec<u8>| *d = b"not a snapshot at all".repeat(100)),
        ),
    ];
    for (name, f) in cases {
        let bad = work.path().join(format!("{name}.db"));
        corrupt_copy(&good, &bad, f);
        let st = minik(&["etcd", "snapshot", "status", bad.to_str().unwrap()]);
        assert!(!st.status.success(), "{name}: status accepted a bad image");
        let target = work.path().join(format!("restore-{name}"));
        std::fs::create_dir(&target).unwrap();
        let r = minik(&[
            "etcd",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ]);
        assert!(!r.status.success(), "{name}: restore accepted a bad image");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("corrupt") || err.contains("not a minik snapshot"),
            "{name}: unclear error: {err}"
        );
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "{name}: the data dir was touched"
        );
        assert!(!Path::new(&format!("{}.restoring", target.display())).exists());
    }
}

/// A watch stream driven by hand.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    async fn open(ch: Channel) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let rx = WatchClient::new(ch)
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Stream { tx, rx }
    }
    async fn send(&self, r: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(r),
            })
            .await
            .unwrap();
    }
    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a watch response in time")
            .expect("stream ok")
            .expect("stream open")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_fragments_and_compacted_starts() {
    let s = Server::minik(None);
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    for i in 0..5 {
        put(&mut kv, &format!("/w/{i}"), "x", 0).await;
    }
    let mut w = Stream::open(ch.clone()).await;

    // A progress request on an idle stream answers with the current revision and watch id -1.
    w.send(RequestUnion::CreateRequest(WatchCreateRequest {
        key: "/other".into(),
        ..Default::default()
    }))
    .await;
    let created = w.next().await;
    assert!(created.created);
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.unwrap().revision, 6);

    // A revision larger than the response limit arrives in fragments when the client allows it:
    // deleting four 600 KiB keys is one revision whose events, with prev_kv, carry 2.4 MiB.
    let big = "v".repeat(600 * 1024);
    for i in 0..4 {
        put(&mut kv, &format!("/big/{i}"), &big, 0).await;
    }
    let del_rev = kv
        .delete_range(minik::etcd::proto::etcdserverpb::DeleteRangeRequest {
            key: "/big/".into(),
            range_end: "/big0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    let mut f = Stream::open(ch.clone()).await;
    f.send(RequestUnion::CreateRequest(WatchCreateRequest {
        key: "/big/".into(),
        range_end: "/big0".into(),
        start_revision: 1,
        fragment: true,
        prev_kv: true,
        ..Default::default()
    }))
    .await;
    assert!(f.next().await.created);
    let mut events = Vec::new();
    let mut fragments = 0;
    while events.len() < 8 {
        let r = f.next().await;
        if r.fragment {
            fragments += 1;
        }
        events.extend(r.events);
    }
    assert_eq!(events.len(), 8);
    assert!(fragments >= 1, "the 2.4 MiB revision was sent in fragments");
    for e in &events[4..] {
        assert_eq!(e.kv.as_ref().unwrap().mod_revision, del_rev);
        assert_eq!(e.prev_kv.as_ref().unwrap().value.len(), 600 * 1024);
    }

    // A start revision below the compacted one is cancelled with the compacted revision.
    kv.compact(minik::etcd::proto::etcdserverpb::CompactionRequest {
        revision: 4,
        physical: true,
    })
    .await
    .unwrap();
    let mut c = Stream::open(ch).await;
    c.send(RequestUnion::CreateRequest(WatchCreateRequest {
        key: "/w/".into(),
        range_end: "/w0".into(),
        start_revision: 2,
        ..Default::default()
    }))
    .await;
    assert!(c.next().await.created);
    let cancelled = c.next().await;
    assert!(cancelled.canceled);
    assert_eq!(cancelled.compact_revision, 4);
}
