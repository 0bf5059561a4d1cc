//! The key index: for every key, the revisions at which it changed.
//!
//! This is the in-memory half of etcd's MVCC (etcd calls it `treeIndex`): a sorted map from key to
//! the list of revisions that touched it. The values themselves live in the backend (redb), keyed by
//! revision; the index answers "which revision holds key K as of revision R?" and "which keys lie in
//! [start, end)?" without touching the disk.
//!
//! A key's history is a sequence of *generations*: a generation starts with the first put after a
//! creation (or after a delete) and ends with a tombstone. `create_revision` and `version` of a
//! key are those of its current generation.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A point in the store's history: `main` is the revision a client sees, `sub` orders the changes
/// made inside one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub const fn new(main: i64, sub: i64) -> Self {
        Rev { main, sub }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    rev: Rev,
    tombstone: bool,
}

/// The history of one key.
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    entries: Vec<Entry>,
    /// Create revision of the current generation (meaningful while the key is alive).
    created: i64,
    /// Version of the key within the current generation (0 when deleted).
    version: i64,
}

impl KeyIndex {
    /// The revision holding this key as of `at`, if the key existed then (not deleted).
    pub fn get(&self, at: i64) -> Option<Rev> {
        let idx = self.entries.partition_point(|e| e.rev.main <= at);
        if idx == 0 {
            return None;
        }
        let e = self.entries[idx - 1];
        (!e.tombstone).then_some(e.rev)
    }

    /// The latest live revision strictly before `before` (used for a watch event's prev_kv).
    pub fn get_before(&self, before: Rev) -> Option<Rev> {
        let idx = self.entries.partition_point(|e| e.rev < before);
        if idx == 0 {
            return None;
        }
        let e = self.entries[idx - 1];
        (!e.tombstone).then_some(e.rev)
    }

    /// Whether the key is alive at the newest revision the index knows.
    pub fn alive(&self) -> bool {
        self.entries.last().is_some_and(|e| !e.tombstone)
    }

    pub fn latest(&self) -> Option<Rev> {
        self.entries.last().filter(|e| !e.tombstone).map(|e| e.rev)
    }

    pub fn create_revision(&self) -> i64 {
        self.created
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// Removes history below `compact`: everything strictly before the newest entry at or below
    /// `compact`; that newest entry too when it is a tombstone. Returns the removed revisions.
    fn compact(&mut self, compact: i64, removed: &mut Vec<Rev>) {
        let idx = self.entries.partition_point(|e| e.rev.main <= compact);
        if idx == 0 {
            return;
        }
        let keep_from = if self.entries[idx - 1].tombstone {
            idx
        } else {
            idx - 1
        };
        removed.extend(self.entries[..keep_from].iter().map(|e| e.rev));
        self.entries.drain(..keep_from);
    }
}

/// What a put does to a key's metadata, computed from the index before the put is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutMeta {
    pub create_revision: i64,
    pub version: i64,
}

/// The in-memory index of every key's revisions.
#[derive(Debug, Default)]
pub struct Index {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

/// A key range as etcd expresses it: an empty `end` is the single key, `end == [0]` is every key
/// from `start` on, otherwise the half-open `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub fn new(start: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { start, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        if self.end == [0] {
            (Bound::Included(self.start), Bound::Unbounded)
        } else {
            (Bound::Included(self.start), Bound::Excluded(self.end))
        }
    }

    /// Whether the range can hold any key at all (an inverted range holds none).
    pub fn is_empty(&self) -> bool {
        !self.is_single() && self.end != [0] && self.end <= self.start
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            key == self.start
        } else if self.end == [0] {
            key >= self.start
        } else {
            key >= self.start && key < self.end
        }
    }
}

impl Index {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Visits every key in `range` (in key order) with its index.
    pub fn visit<'s>(&'s self, range: KeyRange<'_>, f: impl FnMut(&'s [u8], &'s KeyIndex) -> bool) {
        self.visit_after(range, None, f)
    }

    /// Like [`Index::visit`], starting after the key `after` (to resume a visit in chunks).
    pub fn visit_after<'s>(
        &'s self,
        range: KeyRange<'_>,
        after: Option<&[u8]>,
        mut f: impl FnMut(&'s [u8], &'s KeyIndex) -> bool,
    ) {
        if range.is_single() {
            if after.is_none()
                && let Some((k, ki)) = self.keys.get_key_value(range.start)
            {
                f(k, ki);
            }
            return;
        }
        if range.is_empty() {
            return;
        }
        let (mut lo, hi) = range.bounds();
        if let Some(a) = after {
            lo = Bound::Excluded(a);
        }
        for (k, ki) in self.keys.range::<[u8], _>((lo, hi)) {
            if !f(k, ki) {
                break;
            }
        }
    }

    /// The revisions of the live keys in `range` as of revision `at`, in key order.
    pub fn range_at(&self, range: KeyRange<'_>, at: i64, mut f: impl FnMut(&[u8], Rev) -> bool) {
        self.visit(range, |k, ki| match ki.get(at) {
            Some(rev) => f(k, rev),
            None => true,
        });
    }

    /// Metadata a put of `key` gets at revision `rev` (does not change the index).
    pub fn put_meta(&self, key: &[u8], rev: Rev) -> PutMeta {
        match self.keys.get(key) {
            Some(ki) if ki.alive() => PutMeta {
                create_revision: ki.created,
                version: ki.version + 1,
            },
            _ => PutMeta {
                create_revision: rev.main,
                version: 1,
            },
        }
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Rev) {
        let ki = match self.keys.get_mut(key) {
            Some(ki) => ki,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        if ki.alive() {
            ki.version += 1;
        } else {
            ki.created = rev.main;
            ki.version = 1;
        }
        ki.entries.push(Entry {
            rev,
            tombstone: false,
        });
    }

    /// Records a delete of `key` at `rev`. Returns false when the key was not alive.
    pub fn tombstone(&mut self, key: &[u8], rev: Rev) -> bool {
        match self.keys.get_mut(key) {
            Some(ki) if ki.alive() => {
                ki.entries.push(Entry {
                    rev,
                    tombstone: true,
                });
                ki.version = 0;
                ki.created = 0;
                true
            }
            _ => false,
        }
    }

    /// Rebuilds a key's history on start-up from a backend record (records arrive in revision order).
    pub fn restore(
        &mut self,
        key: &[u8],
        rev: Rev,
        tombstone: bool,
        create_revision: i64,
        version: i64,
    ) {
        let ki = match self.keys.get_mut(key) {
            Some(ki) => ki,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        ki.entries.push(Entry { rev, tombstone });
        if tombstone {
            ki.version = 0;
            ki.created = 0;
        } else {
            ki.version = version;
            ki.created = create_revision;
        }
    }

    /// [`Index::restore`] from a decoded backend record.
    pub fn restore_record(&mut self, rec: &super::backend::Record) {
        self.restore(
            &rec.kv.key,
            rec.rev,
            rec.tombstone,
            rec.kv.create_revision,
            rec.kv.version,
        );
    }

    /// Drops history below `compact` (see [`KeyIndex`]); returns the revisions the backend may free.
    pub fn compact(&mut self, compact: i64) -> Vec<Rev> {
        let mut removed = Vec::new();
        self.keys.retain(|_, ki| {
            ki.compact(compact, &mut removed);
            !ki.entries.is_empty()
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_generations() {
        let mut ix = Index::default();
        ix.put(b"a", Rev::new(2, 0));
        ix.put(b"a", Rev::new(3, 0));
        assert_eq!(ix.put_meta(b"a", Rev::new(4, 0)).version, 3);
        assert!(ix.tombstone(b"a", Rev::new(4, 0)));
        assert!(!ix.tombstone(b"a", Rev::new(5, 0)));
        ix.put(b"a", Rev::new(6, 0));
        let ki = ix.key(b"a").unwrap();
        assert_eq!(ki.get(1), None);
        assert_eq!(ki.get(2), Some(Rev::new(2, 0)));
        assert_eq!(ki.get(3), Some(Rev::new(3, 0)));
        assert_eq!(ki.get(4), None);
        assert_eq!(ki.get(5), None);
        assert_eq!(ki.get(9), Some(Rev::new(6, 0)));
        assert_eq!((ki.create_revision(), ki.version()), (6, 1));
        assert_eq!(ki.get_before(Rev::new(4, 0)), Some(Rev::new(3, 0)));
        assert_eq!(ki.get_before(Rev::new(6, 0)), None);
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_compacted_revision_need() {
        let mut ix = Index::default();
        ix.put(b"a", Rev::new(2, 0));
        ix.put(b"a", Rev::new(3, 0));
        ix.put(b"b", Rev::new(4, 0));
        ix.tombstone(b"b", Rev::new(5, 0));
        ix.put(b"c", Rev::new(6, 0));
        let removed = ix.compact(5);
        assert_eq!(
            removed,
            vec![Rev::new(2, 0), Rev::new(4, 0), Rev::new(5, 0)]
        );
        assert_eq!(ix.key(b"a").unwrap().get(5), Some(Rev::new(3, 0)));
        assert!(ix.key(b"b").is_none());
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn ranges() {
        let mut ix = Index::default();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            ix.put(*k, Rev::new(i as i64 + 2, 0));
        }
        let mut seen = vec![];
        ix.range_at(KeyRange::new(b"b", b"d"), 10, |k, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
        seen.clear();
        ix.range_at(KeyRange::new(b"b", b"\0"), 10, |k, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen.len(), 3);
        seen.clear();
        ix.range_at(KeyRange::new(b"d", b"b"), 10, |k, _| {
            seen.push(k.to_vec());
            true
        });
        assert!(seen.is_empty());
        assert!(KeyRange::new(b"d", b"b").is_empty());
    }
}
