//! Snapshot images: a consistent point-in-time copy of the whole store, as `etcdctl snapshot save`
//! receives it from `Maintenance.Snapshot`, and `minik etcd snapshot status` / `minik etcd restore`.
//!
//! An image is a logical dump of the backend taken from one read transaction, padded to a multiple
//! of 512 bytes and followed by the sha256 of everything before it — the framing etcd uses, so the
//! real etcdctl accepts it. (etcd's own images are bbolt files; etcdutl cannot read minik's and
//! minik cannot read etcd's.) All integers are big-endian:
//!
//! ```text
//! "MINIK-ETCD-SNAPSHOT v1\n"   magic
//! i64 revision, i64 compact revision, i64 raft index
//! records: 0x01 u64 main, u64 sub, u32 len, record bytes     (a kv record)
//!          0x02 i64 id, i64 ttl, i64 expiry (unix ms)         (a lease)
//! 0xFF u64 number of records
//! zero padding to a multiple of 512 bytes, then 32 bytes of sha256
//! ```

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use redb::ReadableTable;
use sha2::{Digest, Sha256};

use super::mvcc::Store;
use super::mvcc::backend::{
    Backend, KV, LEASES, META, META_COMPACT_REV, META_CURRENT_REV, META_RAFT_INDEX, StorageError,
    decode_record, meta_get,
};
use super::mvcc::index::{Index, KeyRange};

const MAGIC: &[u8] = b"MINIK-ETCD-SNAPSHOT v1\n";
const TAG_KV: u8 = 1;
const TAG_LEASE: u8 = 2;
const TAG_END: u8 = 0xFF;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a minik snapshot (an etcd/bbolt image? restore it with etcdutl instead)")]
    NotASnapshot(String),
    #[error("{0}: the file is truncated or corrupt (sha256 checksum mismatch): refusing to use it")]
    Corrupt(String),
    #[error("{path}: malformed snapshot: {why}")]
    Malformed { path: String, why: String },
    #[error(
        "data-dir {0} exists and is not empty: restore into a new directory (nothing was changed)"
    )]
    DataDirExists(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a complete image of `store` (a single consistent read view) to `path`. Returns its size.
pub fn save(store: &Store, path: &Path) -> Result<u64, SnapshotError> {
    let file = File::create(path).map_err(io(path))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        len: 0,
    };
    write_image(&store.backend, &mut w).map_err(|e| match e {
        ImageError::Io(e) => io(path)(e),
        ImageError::Storage(e) => SnapshotError::Storage(e),
    })?;
    let pad = (512 - (w.len % 512)) % 512;
    w.write_all(&vec![0u8; pad as usize]).map_err(io(path))?;
    let digest = w.hash.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&digest).map_err(io(path))?;
    let file = inner.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.sync_all().map_err(io(path))?;
    Ok(w.len + HASH_LEN as u64)
}

enum ImageError {
    Io(std::io::Error),
    Storage(StorageError),
}

impl From<std::io::Error> for ImageError {
    fn from(e: std::io::Error) -> Self {
        ImageError::Io(e)
    }
}

fn st<E: Into<StorageError>>(e: E) -> ImageError {
    ImageError::Storage(e.into())
}

fn write_image(backend: &Backend, w: &mut impl Write) -> Result<(), ImageError> {
    let view = backend.read().map_err(ImageError::Storage)?;
    let meta = view.txn.open_table(META).map_err(st)?;
    let rev = meta_get(&meta, META_CURRENT_REV)
        .map_err(ImageError::Storage)?
        .unwrap_or(1);
    let compact = meta_get(&meta, META_COMPACT_REV)
        .map_err(ImageError::Storage)?
        .unwrap_or(-1);
    let raft = meta_get(&meta, META_RAFT_INDEX)
        .map_err(ImageError::Storage)?
        .unwrap_or(0);
    w.write_all(MAGIC)?;
    for v in [rev, compact, raft] {
        w.write_all(&v.to_be_bytes())?;
    }
    let mut count = 0u64;
    let kv = view.txn.open_table(KV).map_err(st)?;
    for row in kv.iter().map_err(st)? {
        let (k, v) = row.map_err(st)?;
        let (main, sub) = k.value();
        let bytes = v.value();
        w.write_all(&[TAG_KV])?;
        w.write_all(&main.to_be_bytes())?;
        w.write_all(&sub.to_be_bytes())?;
        w.write_all(&(bytes.len() as u32).to_be_bytes())?;
        w.write_all(bytes)?;
        count += 1;
    }
    let leases = view.txn.open_table(LEASES).map_err(st)?;
    for row in leases.iter().map_err(st)? {
        let (id, v) = row.map_err(st)?;
        let (ttl, expiry) = v.value();
        w.write_all(&[TAG_LEASE])?;
        for x in [id.value(), ttl, expiry] {
            w.write_all(&x.to_be_bytes())?;
        }
        count += 1;
    }
    w.write_all(&[TAG_END])?;
    w.write_all(&count.to_be_bytes())?;
    Ok(())
}

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The first four bytes of the image's sha256, as a number (etcd prints a 32-bit hash).
    pub hash: u32,
    pub revision: i64,
    pub total_keys: usize,
    pub total_size: u64,
}

/// The parsed content of an image.
struct Image {
    revision: i64,
    compact: i64,
    raft_index: i64,
    kvs: Vec<((u64, u64), Vec<u8>)>,
    leases: Vec<(i64, i64, i64)>,
}

/// Reads and verifies an image: the sha256 must match and every record must parse.
fn read_image(path: &Path) -> Result<(Image, Status), SnapshotError> {
    let name = path.display().to_string();
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(path))?;
    if data.len() < MAGIC.len() + HASH_LEN || !data.starts_with(MAGIC) {
        if data.len() >= HASH_LEN && data.starts_with(&MAGIC[..8.min(data.len())]) {
            return Err(SnapshotError::Corrupt(name));
        }
        return Err(SnapshotError::NotASnapshot(name));
    }
    let (body, sum) = data.split_at(data.len() - HASH_LEN);
    let digest = Sha256::digest(body);
    if digest.as_slice() != sum || body.len() % 512 != 0 {
        return Err(SnapshotError::Corrupt(name));
    }
    let bad = |why: &str| SnapshotError::Malformed {
        path: name.clone(),
        why: why.to_string(),
    };
    let mut r = Reader {
        buf: &body[MAGIC.len()..],
    };
    let revision = r.i64().ok_or_else(|| bad("no header"))?;
    let compact = r.i64().ok_or_else(|| bad("no header"))?;
    let raft_index = r.i64().ok_or_else(|| bad("no header"))?;
    let mut img = Image {
        revision,
        compact,
        raft_index,
        kvs: Vec::new(),
        leases: Vec::new(),
    };
    let mut index = Index::default();
    loop {
        match r.u8().ok_or_else(|| bad("records end early"))? {
            TAG_KV => {
                let main = r.u64().ok_or_else(|| bad("kv record cut short"))?;
                let sub = r.u64().ok_or_else(|| bad("kv record cut short"))?;
                let len = r.u32().ok_or_else(|| bad("kv record cut short"))? as usize;
                let bytes = r.take(len).ok_or_else(|| bad("kv record cut short"))?;
                let rec = decode_record((main, sub), bytes).map_err(|e| bad(&e.0))?;
                index.restore_record(&rec);
                img.kvs.push(((main, sub), bytes.to_vec()));
            }
            TAG_LEASE => {
                let id = r.i64().ok_or_else(|| bad("lease record cut short"))?;
                let ttl = r.i64().ok_or_else(|| bad("lease record cut short"))?;
                let exp = r.i64().ok_or_else(|| bad("lease record cut short"))?;
                img.leases.push((id, ttl, exp));
            }
            TAG_END => {
                let n = r.u64().ok_or_else(|| bad("no record count"))?;
                if n as usize != img.kvs.len() + img.leases.len() {
                    return Err(bad("record count does not match"));
                }
                if r.buf.iter().any(|b| *b != 0) {
                    return Err(bad("data after the end marker"));
                }
                break;
            }
            t => return Err(bad(&format!("unknown record tag {t:#x}"))),
        }
    }
    let mut total_keys = 0;
    index.range_at(KeyRange::new(&[0], &[0]), revision, |_, _| {
        total_keys += 1;
        true
    });
    let status = Status {
        hash: u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
        revision,
        total_keys,
        total_size: data.len() as u64,
    };
    Ok((img, status))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
}

/// Verifies an image and reports what it holds.
pub fn status(path: &Path) -> Result<Status, SnapshotError> {
    read_image(path).map(|(_, s)| s)
}

/// Restores an image into a new data dir. The image is verified completely before anything is
/// written, and the data dir appears only once the restore has succeeded.
pub fn restore(path: &Path, data_dir: &Path) -> Result<Status, SnapshotError> {
    let (img, status) = read_image(path)?;
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(SnapshotError::DataDirExists(data_dir.display().to_string()));
    }
    let tmp = PathBuf::from(format!("{}.restoring", data_dir.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let backend = Backend::open(&tmp)?;
        backend.write(|txn| {
            let mut kv = txn.open_table(KV)?;
            for (k, v) in &img.kvs {
                kv.insert(*k, v.as_slice())?;
            }
            let mut leases = txn.open_table(LEASES)?;
            for (id, ttl, exp) in &img.leases {
                leases.insert(*id, (*ttl, *exp))?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_CURRENT_REV, img.revision)?;
            meta.insert(META_COMPACT_REV, img.compact)?;
            meta.insert(META_RAFT_INDEX, img.raft_index)?;
            Ok(())
        })?;
        drop(backend);
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(io(data_dir))?;
        }
        std::fs::rename(&tmp, data_dir).map_err(io(data_dir))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_short_input() {
        let mut r = Reader { buf: &[1, 2, 3] };
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u32(), None);
    }
}
