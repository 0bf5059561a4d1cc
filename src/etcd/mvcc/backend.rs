//! The backend: the store's durable half, a redb database on disk.
//!
//! As in etcd (where the backend is bbolt), every change is a record keyed by its revision, so
//! the `kv` table is at once the current state, the history and the watch event log:
//!
//! | table    | key                     | value                                        |
//! |----------|-------------------------|----------------------------------------------|
//! | `kv`     | `(main, sub)` revision  | a kind byte (put/tombstone) + `mvccpb.KeyValue` |
//! | `meta`   | name                    | `i64` (current and compacted revision, ids)   |
//! | `leases` | lease id                | `(granted ttl s, expiry unix ms)`            |
//!
//! The in-memory [`super::index`] maps keys to the revisions that hold them.

use std::path::{Path, PathBuf};

use parking_lot::{RwLock, RwLockReadGuard};
use prost::Message;
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition};

use super::index::Rev;
use crate::etcd::proto::mvccpb::KeyValue;

pub const KV: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("kv");
pub const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");

pub const META_CURRENT_REV: &str = "current_revision";
pub const META_COMPACT_REV: &str = "compact_revision";
pub const META_CLUSTER_ID: &str = "cluster_id";
pub const META_MEMBER_ID: &str = "member_id";
pub const META_RAFT_INDEX: &str = "raft_index";

const KIND_PUT: u8 = b'p';
const KIND_TOMBSTONE: u8 = b't';

/// The file name of the database inside the data dir.
pub const DB_FILE: &str = "minik-etcd.redb";

/// A backend error: redb failing is a storage fault, never a client's fault.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { StorageError(e.to_string()) }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    std::io::Error
);

/// One record of the `kv` table, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub rev: Rev,
    pub tombstone: bool,
    pub kv: KeyValue,
}

pub fn rev_key(rev: Rev) -> (u64, u64) {
    (rev.main as u64, rev.sub as u64)
}

pub fn encode_record(tombstone: bool, kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(if tombstone { KIND_TOMBSTONE } else { KIND_PUT });
    // Encoding into a Vec cannot fail: it grows as needed.
    let _ = kv.encode(&mut buf);
    buf
}

pub fn decode_record(key: (u64, u64), bytes: &[u8]) -> Result<Record, StorageError> {
    let (kind, body) = bytes
        .split_first()
        .ok_or_else(|| StorageError(format!("empty record at revision {key:?}")))?;
    let kv = KeyValue::decode(body)
        .map_err(|e| StorageError(format!("corrupt record at revision {key:?}: {e}")))?;
    Ok(Record {
        rev: Rev::new(key.0 as i64, key.1 as i64),
        tombstone: *kind == KIND_TOMBSTONE,
        kv,
    })
}

/// The redb database. Readers share it; [`Backend::defragment`] takes it alone.
pub struct Backend {
    db: RwLock<Database>,
    path: PathBuf,
}

/// A read transaction together with the guard that keeps defragmentation out while it lives.
pub struct ReadView<'a> {
    pub txn: ReadTransaction,
    _guard: RwLockReadGuard<'a, Database>,
}

impl Backend {
    /// Opens (or creates) the database in `dir`, creating the tables on first use.
    pub fn open(dir: &Path) -> Result<Backend, StorageError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(256 << 20)
            .create(&path)
            .map_err(|e| StorageError(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(KV)?;
            txn.open_table(META)?;
            txn.open_table(LEASES)?;
        }
        txn.commit()?;
        Ok(Backend {
            db: RwLock::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent read view of the database.
    pub fn read(&self) -> Result<ReadView<'_>, StorageError> {
        let guard = self.db.read();
        let txn = guard.begin_read()?;
        Ok(ReadView { txn, _guard: guard })
    }

    /// Runs `f` with a write transaction and commits it durably (fsync) before returning.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let db = self.db.read();
        let txn = db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// The size of the database file.
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes of the file that hold live data (the rest is free space a defragment returns).
    /// redb reports this only from a write transaction, so only the writer thread calls it.
    pub fn size_in_use(&self) -> Result<u64, StorageError> {
        let db = self.db.read();
        let txn = db.begin_write()?;
        let stats = txn.stats()?;
        let in_use = stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
        txn.abort()?;
        Ok(in_use)
    }

    /// Rewrites the database without its free pages. Waits for readers to finish and keeps new
    /// ones out while it runs, as etcd's defragment does.
    pub fn defragment(&self) -> Result<(), StorageError> {
        let mut db = self.db.write();
        db.compact()?;
        Ok(())
    }
}

/// Reads one meta value.
pub fn meta_get(
    table: &impl redb::ReadableTable<&'static str, i64>,
    name: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(table.get(name)?.map(|v| v.value()))
}
