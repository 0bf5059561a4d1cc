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
