//! The API server's storage layer: Kubernetes objects in etcd, as kube-apiserver keeps them
//! (`k8s.io/apiserver/pkg/storage/etcd3`).
//!
//! Every object is one key under `/registry` (`/registry/pods/<namespace>/<name>`,
//! `/registry/namespaces/<name>`, …); its `resourceVersion` is the key's etcd `mod_revision`.
//! Writes are etcd transactions guarded by that revision, so concurrent writers get a conflict
//! instead of overwriting each other:
//!
//! | operation | etcd request |
//! |-----------|--------------|
//! | create    | Txn: if `mod_revision(key) == 0` then Put else Get |
//! | update    | Txn: if `mod_revision(key) == rv` then Put else Get |
//! | delete    | Txn: if `mod_revision(key) == rv` then Delete (prev_kv) else Get |
//! | get       | Range (one key) |
//! | list      | Range `[start, prefix end)` with limit, at one revision for every page |
//! | watch     | Watch the prefix from `rv + 1` with prev_kv |
//!
//! It speaks only the etcd v3 API, so it runs the same on minik's store and on a real etcd.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::etcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcd::proto::etcdserverpb::kv_client::KvClient;
use crate::etcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcd::proto::etcdserverpb::watch_client::WatchClient;
use crate::etcd::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, request_op, response_op, watch_request,
};
use crate::etcd::proto::mvccpb::{KeyValue, event::EventType};

/// Where kube-apiserver keeps everything (`--etcd-prefix`).
pub const DEFAULT_PREFIX: &str = "/registry";

/// How to reach etcd, with kube-apiserver's flags (`--etcd-servers`, `--etcd-cafile`, …).
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub servers: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    /// The object changed since the revision the caller read (an optimistic-concurrency miss).
    #[error("key {key:?}: resource version {expected} is not the current {current}")]
    Conflict {
        key: String,
        expected: i64,
        current: i64,
    },
    /// The requested revision is older than etcd's history (Kubernetes answers 410 Gone).
    #[error("too old resource version: {requested} ({compacted})")]
    Expired { requested: i64, compacted: i64 },
    #[error("invalid continue token: {0}")]
    InvalidContinue(String),
    #[error("etcd: {0}")]
    Unavailable(String),
}

impl From<tonic::Status> for StorageError {
    fn from(s: tonic::Status) -> Self {
        StorageError::Unavailable(s.message().to_string())
    }
}

/// An object as stored: its bytes and its resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: i64,
}

impl Stored {
    /// The object as the API serves it: the stored JSON with `metadata.resourceVersion` set to
    /// the key's revision. An error (never a panic) when someone stored something else there.
    pub fn object(&self) -> Result<serde_json::Value, String> {
        let mut v: serde_json::Value = serde_json::from_slice(&self.value)
            .map_err(|e| format!("stored object {} is not JSON: {e}", self.key))?;
        let meta = v
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| serde_json::json!({})))
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| format!("stored object {} is not a Kubernetes object", self.key))?;
        meta.insert(
            "resourceVersion".into(),
            serde_json::Value::String(self.revision.to_string()),
        );
        Ok(v)
    }

    /// The object as the API serves it, straight from the stored bytes: [`Stored::object`]'s
    /// JSON without decoding it — `"resourceVersion":"N"` is written into `metadata` where a
    /// sorted serialization puts it. None when the bytes are not a compact object with a
    /// `metadata` object that lacks a resourceVersion (the caller decodes them instead).
    pub fn served_json(&self) -> Option<Vec<u8>> {
        let b = &self.value;
        let mut i = scan::object_start(b, 0)?;
        // The top-level keys, in order, up to `metadata`.
        let meta = loop {
            let (key, after) = scan::key(b, i)?;
            if key == b"metadata" {
                break scan::object_start(b, after)?;
            }
            i = scan::next_member(b, scan::value_end(b, after)?)?;
        };
        // Inside metadata: the first key that sorts after resourceVersion, or the end.
        let rv = format!("\"resourceVersion\":\"{}\"", self.revision);
        let mut at = meta;
        let mut first = true;
        let insert_at = loop {
            if b.get(at) == Some(&b'}') {
                break at;
            }
            let (key, after) = scan::key(b, at)?;
            match key.cmp(b"resourceVersion".as_slice()) {
                std::cmp::Ordering::Equal => return None,
                std::cmp::Ordering::Greater => break at,
                std::cmp::Ordering::Less => {}
            }
            first = false;
            let end = scan::value_end(b, after)?;
            match b.get(end) {
                Some(b',') => at = end + 1,
                Some(b'}') => at = end,
                _ => return None,
            }
        };
        let closing = b.get(insert_at) == Some(&b'}');
        let mut out = Vec::with_capacity(b.len() + rv.len() + 1);
        out.extend_from_slice(&b[..insert_at]);
        if closing && !first {
            out.push(b',');
        }
        out.extend_from_slice(rv.as_bytes());
        if !closing {
            out.push(b',');
        }
        out.extend_from_slice(&b[insert_at..]);
        Some(out)
    }

    fn from_kv(kv: KeyValue) -> Stored {
        Stored {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: kv.value,
            revision: kv.mod_revision,
        }
    }
}

/// Just enough of a JSON scanner to walk compact JSON (no whitespace, as serde_json writes it)
/// member by member without decoding it. Every function answers None on anything else.
mod scan {
    /// After the `{` that starts an object at `i`.
    pub fn object_start(b: &[u8], i: usize) -> Option<usize> {
        (b.get(i) == Some(&b'{')).then_some(i + 1)
    }

    /// The raw bytes of the key at `i` (a string without escapes) and where its value starts.
    pub fn key(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
        let end = string_end(b, i)?;
        let key = &b[i + 1..end - 1];
        if key.contains(&b'\\') || b.get(end) != Some(&b':') {
            return None;
        }
        Some((key, end + 1))
    }

    /// After the `,` that follows a member ending at `i` (a `}` there: no next member).
    pub fn next_member(b: &[u8], i: usize) -> Option<usize> {
        (b.get(i) == Some(&b',')).then_some(i + 1)
    }

    /// Where the string starting at `i` ends (after its closing quote).
    fn string_end(b: &[u8], i: usize) -> Option<usize> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let mut j = i + 1;
        loop {
            match b.get(j)? {
                b'"' => return Some(j + 1),
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
    }

    /// Where the value starting at `i` ends.
    pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match b.get(j)? {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let len = b[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']'))?;
                Some(i + len)
            }
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Stored>,
    /// The revision the whole list is read at (the list's resourceVersion).
    pub revision: i64,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// Items after this page (`metadata.remainingItemCount`).
    pub remaining: Option<i64>,
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Added(Stored),
    Modified {
        object: Stored,
        previous: Stored,
    },
    /// The object as it was before the delete, at the delete's revision.
    Deleted {
        object: Stored,
        revision: i64,
    },
    /// The store has sent everything up to this revision (a progress notification).
    Progress(i64),
}

/// Asks a running watch for a progress notification (etcd's `WatchProgressRequest`).
#[derive(Debug, Clone)]
pub struct ProgressRequester(mpsc::Sender<WatchRequest>);

impl ProgressRequester {
    /// Requests a [`WatchEvent::Progress`]; false when the watch is gone.
    pub async fn request(&self) -> bool {
        self.0
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::ProgressRequest(
                    WatchProgressRequest {},
                )),
            })
            .await
            .is_ok()
    }
}

/// kube-apiserver's continue token: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}`,
/// `start` being the next key to read relative to the list's prefix.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

pub fn encode_continue(revision: i64, next_key_in_prefix: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv: revision,
        start: next_key_in_prefix.into(),
    };
    B64.encode(serde_json::to_vec(&t).unwrap_or_default())
}

pub fn decode_continue(token: &str) -> Result<(i64, String), StorageError> {
    let bad = |why: &str| StorageError::InvalidContinue(why.to_string());
    let raw = B64.decode(token).map_err(|_| bad("not base64"))?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad("not a token"))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(bad("unknown version"));
    }
    if t.rv <= 0 {
        return Err(bad("no resource version"));
    }
    if t.start.contains("..") || t.start.starts_with('/') {
        return Err(bad("bad start key"));
    }
    Ok((t.rv, t.start))
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The API server's connection to etcd.
#[derive(Clone)]
pub struct EtcdStorage {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

impl EtcdStorage {
    /// Connects to the etcd servers (balanced over all of them).
    pub async fn connect(cfg: &EtcdConfig) -> anyhow::Result<EtcdStorage> {
        let channel = crate::etcd::client::connect(&crate::etcd::client::ClientConfig {
            servers: cfg.servers.clone(),
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
        })
        .await?;
        Ok(EtcdStorage {
            // No 4 MiB cap on answers: a list of thousands of objects is far larger (as
            // kube-apiserver, which sets the same unlimited size).
            kv: KvClient::new(channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            watch: WatchClient::new(channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            maintenance: MaintenanceClient::new(channel),
        })
    }

    /// The store's version (etcd's `Status`), as `3.5.17`.
    pub async fn server_version(&self) -> Result<String, StorageError> {
        let resp = self
            .maintenance
            .clone()
            .status(crate::etcd::proto::etcdserverpb::StatusRequest {})
            .await?
            .into_inner();
        Ok(resp.version)
    }

    /// The current revision of the store.
    pub async fn current_revision(&self) -> Result<i64, StorageError> {
        let resp = self
            .kv
            .clone()
            .range(RangeRequest {
                key: b"/registry/health".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    pub async fn get(&self, key: &str) -> Result<Stored, StorageError> {
        let resp = self
            .kv
            .clone()
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        resp.kvs
            .into_iter()
            .next()
            .map(Stored::from_kv)
            .ok_or_else(|| StorageError::NotFound { key: key.into() })
    }

    /// A txn guarded on the key's mod revision; returns (succeeded, responses).
    async fn guarded(
        &self,
        key: &str,
        mod_revision: i64,
        then: request_op::Request,
    ) -> Result<(bool, Vec<response_op::Response>, i64), StorageError> {
        let resp = self
            .kv
            .clone()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                    target_union: Some(TargetUnion::ModRevision(mod_revision)),
                }],
                success: vec![RequestOp {
                    request: Some(then),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                }],
            })
            .await?
            .into_inner();
        let rev = resp.header.map_or(0, |h| h.revision);
        let responses = resp
            .responses
            .into_iter()
            .filter_map(|r| r.response)
            .collect();
        Ok((resp.succeeded, responses, rev))
    }

    /// Why a guarded write did not happen: the key moved on (Conflict) or is gone (NotFound).
    fn miss(key: &str, expected: i64, responses: Vec<response_op::Response>) -> StorageError {
        match Self::current_of(responses) {
            Some(cur) => StorageError::Conflict {
                key: key.into(),
                expected,
                current: cur.revision,
            },
            None => StorageError::NotFound { key: key.into() },
        }
    }

    fn current_of(responses: Vec<response_op::Response>) -> Option<Stored> {
        responses.into_iter().find_map(|r| match r {
            response_op::Response::ResponseRange(rr) => {
                rr.kvs.into_iter().next().map(Stored::from_kv)
            }
            _ => None,
        })
    }

    /// Creates `key`; fails with AlreadyExists when it is there. Returns the new revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        match self.guarded(key, 0, put).await? {
            (true, _, rev) => Ok(rev),
            (false, _, _) => Err(StorageError::AlreadyExists { key: key.into() }),
        }
    }

    /// Replaces `key` if it is still at revision `expected`. Returns the new revision.
    pub async fn update(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
    ) -> Result<i64, StorageError> {
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        match self.guarded(key, expected, put).await? {
            (true, _, rev) => Ok(rev),
            (false, responses, _) => Err(Self::miss(key, expected, responses)),
        }
    }

    /// Deletes `key` if it is still at revision `expected`; returns the deleted object and the
    /// delete's revision.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<(Stored, i64), StorageError> {
        let del = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            prev_kv: true,
            ..Default::default()
        });
        match self.guarded(key, expected, del).await? {
            (true, responses, rev) => {
                let prev = responses.into_iter().find_map(|r| match r {
                    response_op::Response::ResponseDeleteRange(d) => {
                        d.prev_kvs.into_iter().next().map(Stored::from_kv)
                    }
                    _ => None,
                });
                prev.map(|p| (p, rev))
                    .ok_or_else(|| StorageError::NotFound { key: key.into() })
            }
            (false, responses, _) => Err(Self::miss(key, expected, responses)),
        }
    }

    /// Lists the keys under `prefix` (which ends with `/`): a page of at most `limit` items
    /// (0 = all), at `revision` (0 = current), starting from a continue token if given.
    pub async fn list(
        &self,
        prefix: &str,
        limit: i64,
        revision: i64,
        continue_token: Option<&str>,
    ) -> Result<Page, StorageError> {
        let (revision, start) = match continue_token {
            Some(t) => {
                let (rv, start) = decode_continue(t)?;
                (rv, format!("{prefix}{start}"))
            }
            None => (revision, prefix.to_string()),
        };
        let resp = self
            .kv
            .clone()
            .range(RangeRequest {
                key: start.into_bytes(),
                range_end: prefix_end(prefix),
                limit: limit.max(0),
                revision,
                ..Default::default()
            })
            .await
            .map_err(|s| {
                if s.message().contains("required revision has been compacted") {
                    StorageError::Expired {
                        requested: revision,
                        compacted: 0,
                    }
                } else {
                    StorageError::from(s)
                }
            })?
            .into_inner();
        let read_at = if revision > 0 {
            revision
        } else {
            resp.header.map_or(0, |h| h.revision)
        };
        let items: Vec<Stored> = resp.kvs.into_iter().map(Stored::from_kv).collect();
        let (continue_token, remaining) = match (resp.more, items.last()) {
            (true, Some(last)) => {
                // The next page starts right after the last key of this one.
                let next = format!("{}\u{0}", &last.key[prefix.len().min(last.key.len())..]);
                (
                    Some(encode_continue(read_at, &next)),
                    Some(resp.count - items.len() as i64),
                )
            }
            _ => (None, None),
        };
        Ok(Page {
            items,
            revision: read_at,
            continue_token,
            remaining,
        })
    }

    /// Watches every key under `prefix` for changes after `revision`. The stream ends with an
    /// `Expired` error when `revision` is no longer in etcd's history.
    pub async fn watch(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<ReceiverStream<Result<WatchEvent, StorageError>>, StorageError> {
        self.watch_with_progress(prefix, revision)
            .await
            .map(|(events, _)| events)
    }

    /// [`EtcdStorage::watch`], with a handle that asks for progress notifications (the watch
    /// cache uses them to know it is up to date without any event).
    pub async fn watch_with_progress(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<
        (
            ReceiverStream<Result<WatchEvent, StorageError>>,
            ProgressRequester,
        ),
        StorageError,
    > {
        let (req_tx, req_rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision: revision + 1,
                    prev_kv: true,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        req_tx
            .send(create)
            .await
            .map_err(|_| StorageError::Unavailable("watch request not sent".into()))?;
        let mut inbound = self
            .watch
            .clone()
            .watch(ReceiverStream::new(req_rx))
            .await?
            .into_inner();
        let (tx, rx) = mpsc::channel(256);
        let requester = ProgressRequester(req_tx.clone());
        tokio::spawn(async move {
            // Keep the request side open for the life of the watch.
            let _req_tx = req_tx;
            loop {
                let resp = match inbound.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(s) => {
                        let _ = tx.send(Err(StorageError::from(s))).await;
                        return;
                    }
                };
                if resp.compact_revision != 0 {
                    let _ = tx
                        .send(Err(StorageError::Expired {
                            requested: revision,
                            compacted: resp.compact_revision,
                        }))
                        .await;
                    return;
                }
                if resp.events.is_empty() && !resp.created && !resp.canceled {
                    if let Some(h) = &resp.header
                        && tx.send(Ok(WatchEvent::Progress(h.revision))).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                for ev in resp.events {
                    let Some(kv) = ev.kv else { continue };
                    let out = if ev.r#type == EventType::Delete as i32 {
                        let rev = kv.mod_revision;
                        match ev.prev_kv {
                            Some(prev) => WatchEvent::Deleted {
                                object: Stored::from_kv(prev),
                                revision: rev,
                            },
                            None => continue,
                        }
                    } else {
                        match ev.prev_kv {
                            Some(prev) if kv.create_revision != kv.mod_revision => {
                                WatchEvent::Modified {
                                    object: Stored::from_kv(kv),
                                    previous: Stored::from_kv(prev),
                                }
                            }
                            _ => WatchEvent::Added(Stored::from_kv(kv)),
                        }
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok((ReceiverStream::new(rx), requester))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_json_writes_the_resource_version_into_the_stored_bytes() {
        let stored = |v: serde_json::Value| Stored {
            key: "/registry/pods/default/p".into(),
            value: serde_json::to_vec(&v).unwrap(),
            revision: 42,
        };
        for v in [
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"}, "spec": {"a": "}{\"]["}}),
            serde_json::json!({"metadata": {}}),
            serde_json::json!({"metadata": {"annotations": {"x": "{\\\"}"}, "labels": {"a": "b"}}, "z": [1, {"q": []}]}),
            serde_json::json!({"a": [[{"metadata": 1}], "x\\"], "b": null, "c": -1.5e-7, "metadata": {"uid": "u"}}),
            serde_json::json!({"metadata": {"name": "p", "namespace": "n", "selfLink": "/x"}, "status": {}}),
        ] {
            let s = stored(v);
            let fast = s
                .served_json()
                .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&s.value)));
            let fast: serde_json::Value = serde_json::from_slice(&fast).unwrap();
            assert_eq!(fast, s.object().unwrap());
            // Where a sorted serialization puts it: the same bytes as decoding and encoding.
            assert_eq!(serde_json::to_vec(&fast).unwrap(), s.served_json().unwrap());
        }
        // Not for this path: left to the decode.
        for raw in [
            &br#"{"metadata":{"resourceVersion":"1"}}"#[..],
            br#"{"metadata": {}}"#,
            br#"{"kind":"Pod"}"#,
            br#"{"metadata":[]}"#,
            br#"[1]"#,
            br#"{"metadata":{"name":"p""#,
            br#"{"a":"unterminated"#,
            b"",
        ] {
            let s = Stored {
                key: "k".into(),
                value: raw.to_vec(),
                revision: 1,
            };
            assert_eq!(s.served_json(), None, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_refuse_garbage() {
        let t = encode_continue(42, "default/b\u{0}");
        assert_eq!(decode_continue(&t).unwrap(), (42, "default/b\u{0}".into()));
        assert!(decode_continue("!!").is_err());
        assert!(decode_continue(&B64.encode(b"{}")).is_err());
        let sneaky = B64.encode(br#"{"v":"meta.k8s.io/v1","rv":3,"start":"../secrets/"}"#);
        assert!(decode_continue(&sneaky).is_err());
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
    }
}
