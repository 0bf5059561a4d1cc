//! The watchable part of the store: the recent event log and the "new revision" signal.
//!
//! Every committed revision's events are appended here, then the committed revision is announced
//! on a `tokio::sync::watch` channel. Watch streams *pull*: each watcher remembers the next revision
//! it needs and reads forward from this log (or, for revisions the log no longer holds, from the
//! backend's revision-keyed `kv` table, which is the complete history down to the compacted
//! revision). Pulling by revision means no event can be lost, duplicated or reordered, however slow
//! a client is.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::etcd::proto::mvccpb::Event;

/// The events of one revision, in the order the transaction made them.
#[derive(Debug)]
pub struct RevEvents {
    pub rev: i64,
    pub events: Vec<Event>,
    size: usize,
}

impl RevEvents {
    pub fn new(rev: i64, events: Vec<Event>) -> Self {
        let size = events
            .iter()
            .map(|e| e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 48)
            .sum();
        RevEvents { rev, events, size }
    }
}

struct Log {
    entries: VecDeque<Arc<RevEvents>>,
    /// Every revision >= `covered_from` is in `entries`.
    covered_from: i64,
    bytes: usize,
}

/// A bounded in-memory log of the most recent revisions' events.
pub struct EventLog {
    log: RwLock<Log>,
    max_bytes: usize,
}

impl EventLog {
    /// A log that starts covering at `next_rev` (the revision after the current one).
    pub fn new(next_rev: i64, max_bytes: usize) -> Self {
        EventLog {
            log: RwLock::new(Log {
                entries: VecDeque::new(),
                covered_from: next_rev,
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// Appends the events of newly committed revisions (in revision order).
    pub fn append(&self, revs: Vec<RevEvents>) {
        let mut log = self.log.write();
        for r in revs {
            log.bytes += r.size;
            log.entries.push_back(Arc::new(r));
        }
        while log.bytes > self.max_bytes && log.entries.len() > 1 {
            if let Some(old) = log.entries.pop_front() {
                log.bytes -= old.size;
                log.covered_from = old.rev + 1;
            }
        }
    }

    /// The events of revisions `from..=to`, at most `max_revs` of them, or None when the log no
    /// longer holds `from` (the caller then reads the backend).
    pub fn read(&self, from: i64, to: i64, max_revs: usize) -> Option<Vec<Arc<RevEvents>>> {
        let log = self.log.read();
        if from < log.covered_from {
            return None;
        }
        let start = log.entries.partition_point(|e| e.rev < from);
        Some(
            log.entries
                .iter()
                .skip(start)
                .take_while(|e| e.rev <= to)
                .take(max_revs)
                .cloned()
                .collect(),
        )
    }

    /// The oldest revision the log still holds in full; older ones are read from the backend.
    pub fn covered_from(&self) -> i64 {
        self.log.read().covered_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::proto::mvccpb::KeyValue;

    fn ev(rev: i64) -> RevEvents {
        RevEvents::new(
            rev,
            vec![Event {
                r#type: 0,
                kv: Some(KeyValue {
                    key: vec![b'k'; 100],
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv: None,
            }],
        )
    }

    #[test]
    fn bounded_and_contiguous() {
        let log = EventLog::new(2, 1000);
        log.append((2..20).map(ev).collect());
        let from = log.covered_from();
        assert!(from > 2, "old revisions were evicted");
        assert!(log.read(from - 1, 19, 100).is_none());
        let got = log.read(from, 19, 100).unwrap();
        assert_eq!(got.first().unwrap().rev, from);
        assert_eq!(got.last().unwrap().rev, 19);
        assert_eq!(log.read(19, 30, 100).unwrap().len(), 1);
        assert_eq!(log.read(from, 19, 2).unwrap().len(), 2);
    }
}
