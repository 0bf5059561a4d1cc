//! The API server's storage layer behaves the same on minik's store and on the real etcd:
//! kube-apiserver's transactions (create / guarded update / guarded delete), paged lists at one
//! revision, and watches from a resourceVersion (including 410 Expired after compaction).

mod common;

use std::time::Duration;

use minik::apiserver::storage::{EtcdConfig, EtcdStorage, Page, StorageError, WatchEvent};
use minik::etcd::proto::etcdserverpb::CompactionRequest;
use minik::etcd::proto::etcdserverpb::kv_client::KvClient;
use tokio_stream::StreamExt;

async fn storage(s: &common::Server) -> EtcdStorage {
    EtcdStorage::connect(&EtcdConfig {
        servers: vec![format!("http://127.0.0.1:{}", s.port())],
        ..Default::default()
    })
    .await
    .expect("connect")
}

fn names(p: &Page) -> Vec<String> {
    p.items.iter().map(|s| s.key.clone()).collect()
}

/// Runs the scenario against one server and returns a transcript of what it observed.
async fn scenario(s: &common::Server) -> Vec<String> {
    let st = storage(s).await;
    let mut t = Vec::new();
    let base = st.current_revision().await.unwrap();
    let rel = |r: i64| r - base;

    let r1 = st
        .create("/registry/configmaps/default/a", b"{\"v\":1}".to_vec())
        .await
        .unwrap();
    t.push(format!("create a at +{}", rel(r1)));
    let dup = st
        .create("/registry/configmaps/default/a", b"{}".to_vec())
        .await;
    t.push(format!("create a again: {dup:?}"));
    let mut watch = st.watch("/registry/configmaps/", r1).await.unwrap();

    for n in ["b", "c", "d", "e"] {
        st.create(
            &format!("/registry/configmaps/default/{n}"),
            format!("{{\"n\":\"{n}\"}}").into_bytes(),
        )
        .await
        .unwrap();
    }
    st.create("/registry/configmaps/kube-system/x", b"{}".to_vec())
        .await
        .unwrap();
    let r2 = st
        .update("/registry/configmaps/default/a", r1, b"{\"v\":2}".to_vec())
        .await
        .unwrap();
    t.push(format!("update a at +{}", rel(r2)));
    let stale = st
        .update("/registry/configmaps/default/a", r1, b"{\"v\":3}".to_vec())
        .await;
    t.push(format!(
        "stale update: {:?}",
        stale.map_err(|e| match e {
            StorageError::Conflict {
                expected, current, ..
            } => format!("conflict {} vs {}", rel(expected), rel(current)),
            e => e.to_string(),
        })
    ));
    let missing = st
        .update("/registry/configmaps/default/zz", 5, b"{}".to_vec())
        .await;
    t.push(format!("update missing: {missing:?}"));

    // Paged list: every page at the first page's revision, even after a later write.
    let p1 = st
        .list("/registry/configmaps/default/", 2, 0, None)
        .await
        .unwrap();
    st.create("/registry/configmaps/default/f", b"{}".to_vec())
        .await
        .unwrap();
    let token = p1.continue_token.clone().unwrap();
    let p2 = st
        .list("/registry/configmaps/default/", 2, 0, Some(&token))
        .await
        .unwrap();
    let p3 = st
        .list(
            "/registry/configmaps/default/",
            2,
            0,
            p2.continue_token.as_deref(),
        )
        .await
        .unwrap();
    t.push(format!(
        "pages {:?} rem {:?} | {:?} rem {:?} | {:?} more {}",
        names(&p1),
        p1.remaining,
        names(&p2),
        p2.remaining,
        names(&p3),
        p3.continue_token.is_some()
    ));
    t.push(format!(
        "pages at one revision: {}",
        p1.revision == p3.revision
    ));
    let all = st.list("/registry/configmaps/", 0, 0, None).await.unwrap();
    t.push(format!("all: {:?}", names(&all)));

    let (gone, drev) = st
        .delete(
            "/registry/configmaps/default/b",
            st.get("/registry/configmaps/default/b")
                .await
                .unwrap()
                .revision,
        )
        .await
        .unwrap();
    t.push(format!(
        "deleted {} ({}) at +{}",
        gone.key,
        String::from_utf8_lossy(&gone.value),
        rel(drev)
    ));
    let again = st.delete("/registry/configmaps/default/b", 0).await;
    t.push(format!("delete again: {again:?}"));

    // The watch saw everything after r1, in order, with previous values.
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("no error");
        seen.push(match ev {
            WatchEvent::Added(o) => format!("ADDED {} +{}", o.key, rel(o.revision)),
            WatchEvent::Modified { object, previous } => format!(
                "MODIFIED {} {} (was {})",
                object.key,
                String::from_utf8_lossy(&object.value),
                String::from_utf8_lossy(&previous.value)
            ),
            WatchEvent::Deleted { object, revision } => {
                format!("DELETED {} +{}", object.key, rel(revision))
            }
            // Progress notifications carry no change (the two stores send them at different
            // moments), so they are not part of the compared transcript.
            WatchEvent::Progress(_) => continue,
        });
    }
    t.extend(seen);

    // After compaction a watch from before it is Expired (410 in Kubernetes terms).
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{}", s.port()))
        .await
        .unwrap();
    kv.compact(CompactionRequest {
        revision: r2,
        physical: true,
    })
    .await
    .unwrap();
    let mut old = st.watch("/registry/configmaps/", r1).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), old.next())
        .await
        .expect("an answer in time");
    t.push(format!(
        "watch from before compaction: {}",
        match first {
            Some(Err(StorageError::Expired { compacted, .. })) =>
                format!("expired at +{}", rel(compacted)),
            other => format!("{other:?}"),
        }
    ));
    let old_list = st.list("/registry/configmaps/", 0, r1, None).await;
    t.push(format!(
        "list before compaction: {}",
        matches!(old_list, Err(StorageError::Expired { .. }))
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_behaviour_on_minik_and_real_etcd() {
    let (etcd, minik) = common::start_pair(None);
    let want = scenario(&etcd).await;
    let got = scenario(&minik).await;
    assert_eq!(
        got, want,
        "minik's store must behave as etcd for the API server"
    );
    // And the scenario says what kube-apiserver relies on.
    assert!(
        want.iter()
            .any(|l| l.starts_with("create a again: Err(AlreadyExists"))
    );
    assert!(
        want.iter()
            .any(|l| l.starts_with("stale update: Err(\"conflict"))
    );
    assert!(want.contains(&"pages at one revision: true".to_string()));
    assert!(want.iter().any(|l| {
        l.starts_with("MODIFIED /registry/configmaps/default/a {\"v\":2} (was {\"v\":1})")
    }));
    assert!(want.contains(&"list before compaction: true".to_string()));
}
