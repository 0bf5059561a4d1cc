//! Multi-version concurrency control: the store keeps every revision of every key until compaction.
//!
//! Split as etcd's `mvcc` package is:
//! - [`index`]: in memory, key → the revisions that hold it (etcd's `treeIndex`);
//! - [`backend`]: on disk (redb), revision → key-value record;
//! - [`store`]: the two together and the read path;
//! - [`apply`]: how each write request changes them;
//! - [`writer`]: the single writer thread with group commit;
//! - [`watchable`]: the event log and new-revision signal watchers follow.

pub mod apply;
pub mod backend;
pub mod index;
pub mod store;
pub mod watchable;
pub mod writer;

pub use index::Rev;
pub use store::Store;
pub use writer::{WriteOp, WriteResult, Writer};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::etcd::proto::etcdserverpb::{PutRequest, RangeRequest};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_larger_than_a_chunk_see_every_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let writer = Writer::start(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20_000u32 {
            let w = writer.clone();
            tasks.spawn(async move {
                w.submit(WriteOp::Put(PutRequest {
                    key: format!("k{i:06}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }))
                .await
                .map(|_| ())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(store.current(), 20_001);
        let all = store
            .range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((all.count, all.kvs.len()), (20_000, 20_000));
        assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
        let limited = store
            .range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                limit: 5,
                revision: 10_000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (limited.count, limited.kvs.len(), limited.more),
            (9_999, 5, true)
        );
        assert_eq!(limited.header.unwrap().revision, 20_001);
    }
}
