//! Bad input against `minik etcd serve`: each bad request gets etcd's answer (gRPC code and
//! message, compared with the real etcd 3.4 on the same requests), and the server keeps serving
//! everyone else — after each bad input a good client, on a connection of its own, does a put and
//! a get.
//!
//! Each test starts a real etcd and minik (in parallel), sends the same requests to both in the
//! same order (so revisions line up) and collects every difference; a test fails at its end with
//! the full list. "etcd answered …, the test expected …" lines mean the expectation written in the
//! test is wrong; "minik differs from etcd" lines are minik bugs.

mod common;
mod grpc_util;

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use minik::etcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use minik::etcd::proto::etcdserverpb::kv_client::KvClient;
use minik::etcd::proto::etcdserverpb::lease_client::LeaseClient;
use minik::etcd::proto::etcdserverpb::watch_client::WatchClient;
use minik::etcd::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchRequest,
    WatchResponse, request_op, watch_request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use common::{Creds, Etcdctl, OutputExt, Pki, Server, start_pair};
use grpc_util::*;

const RPC_TIMEOUT: Duration = Duration::from_secs(15);
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Machinery
// ---------------------------------------------------------------------------------------------

/// The clients of one server, on one connection.
#[derive(Clone)]
struct Clients {
    name: &'static str,
    endpoint: String,
    pki: Option<Pki>,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

async fn channel(endpoint: &str, pki: Option<&Pki>) -> Channel {
    let r = match pki {
        None => connect(endpoint).await,
        Some(p) => connect_tls(endpoint, &p.ca_cert, Some((&p.client_cert, &p.client_key))).await,
    };
    r.unwrap_or_else(|e| panic!("connect {endpoint}: {e:?}"))
}

impl Clients {
    async fn new(server: &Server) -> Clients {
        let ch = channel(&server.endpoint(), server.tls()).await;
        Clients {
            name: server.label(),
            endpoint: server.endpoint(),
            pki: server.tls().cloned(),
            kv: KvClient::new(ch.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            lease: LeaseClient::new(ch.clone()),
            watch: WatchClient::new(ch).max_decoding_message_size(usize::MAX),
        }
    }

    /// A good client on a fresh connection of its own puts a key and reads it back.
    async fn healthy(&self, tag: &str) -> Result<(), String> {
        let ch = match self.pki.as_ref() {
            None => connect(&self.endpoint).await,
            Some(p) => {
                connect_tls(
                    &self.endpoint,
                    &p.ca_cert,
                    Some((&p.client_cert, &p.client_key)),
                )
                .await
            }
        }
        .map_err(|e| format!("a good client cannot connect: {e:?}"))?;
        let mut kv = KvClient::new(ch);
        let key = format!("health/{tag}");
        let value = format!("ok after {tag}");
        timeout(kv.put(put_req(key.clone(), value.clone())))
            .await
            .map_err(|e| format!("good put failed: {e:?}"))?;
        let r = timeout(kv.range(get_req(key.clone())))
            .await
            .map_err(|e| format!("good get failed: {e:?}"))?;
        match r.kvs.first() {
            Some(kv) if kv.value == value.as_bytes() => Ok(()),
            other => Err(format!("good get of {key} returned {other:?}")),
        }
    }
}

async fn timeout<T>(
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "(test) no answer within {RPC_TIMEOUT:?}"
        ))),
    }
}

/// A real etcd and minik with clients, plus the list of differences found so far.
struct Duo {
    etcd: Server,
    minik: Server,
    e: Clients,
    m: Clients,
    problems: Vec<String>,
    checks: usize,
}

impl Duo {
    fn start(rt: &tokio::runtime::Runtime, tls: Option<&Pki>) -> Duo {
        let (etcd, minik) = start_pair(tls);
        let (e, m) = rt.block_on(async { (Clients::new(&etcd).await, Clients::new(&minik).await) });
        Duo {
            etcd,
            minik,
            e,
            m,
            problems: Vec::new(),
            checks: 0,
        }
    }

    /// Runs `f` against both servers (etcd first).
    async fn both<T, Fut>(
        &self,
        f: impl Fn(Clients) -> Fut,
    ) -> (Result<T, Status>, Result<T, Status>)
    where
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let e = timeout(f(self.e.clone())).await;
        let m = timeout(f(self.m.clone())).await;
        (e, m)
    }

    /// Both must fail with `code` and `message` (checked on etcd first: the expectation), and
    /// minik's answer must equal etcd's. Then both must still serve a good client.
    async fn expect_error<T: Debug>(
        &mut self,
        what: &str,
        (e, m): (Result<T, Status>, Result<T, Status>),
        code: Code,
        message: Option<&str>,
    ) {
        self.checks += 1;
        let show = |r: &Result<T, Status>| match r {
            Ok(v) => format!("OK {v:?}"),
            Err(s) => format!("{:?} {:?}", s.code(), clip(s.message())),
        };
        let (es, ms) = (show(&e), show(&m));
        eprintln!("{what}:\n    etcd : {es}\n    minik: {ms}");
        let expected = format!(
            "{code:?} {}",
            message.map_or_else(|| "<any message>".to_string(), |m| format!("{m:?}"))
        );
        let matches = |r: &Result<T, Status>| match r {
            Err(s) => s.code() == code && message.is_none_or(|msg| s.message() == msg),
            Ok(_) => false,
        };
        if !matches(&e) {
            self.problems.push(format!(
                "{what}: TEST EXPECTATION: etcd answered {es}, the test expected {expected}"
            ));
        }
        let same = match (&e, &m) {
            (Err(a), Err(b)) => {
                a.code() == b.code() && (message.is_none() || a.message() == b.message())
            }
            _ => false,
        };
        if !same || !matches(&m) {
            self.problems.push(format!(
                "{what}: minik differs from etcd: etcd {es}, minik {ms} (expected {expected})"
            ));
        }
        self.healthy(what).await;
    }

    /// Both must succeed with equal answers (compared after `norm`), then serve a good client.
    async fn expect_same<T: Debug, U: Debug + PartialEq>(
        &mut self,
        what: &str,
        (e, m): (Result<T, Status>, Result<T, Status>),
        norm: impl Fn(T) -> U,
    ) -> Option<(U, U)> {
        self.checks += 1;
        let (e, m) = (e.map(&norm), m.map(&norm));
        eprintln!("{what}:\n    etcd : {e:?}\n    minik: {m:?}");
        let out = match (e, m) {
            (Ok(a), Ok(b)) => {
                if a != b {
                    self.problems.push(format!(
                        "{what}: minik differs from etcd:\n      etcd : {a:?}\n      minik: {b:?}"
                    ));
                }
                Some((a, b))
            }
            (Err(a), _) => {
                self.problems.push(format!(
                    "{what}: TEST EXPECTATION: etcd failed with {:?} {:?}",
                    a.code(),
                    a.message()
                ));
                None
            }
            (Ok(a), Err(b)) => {
                self.problems.push(format!(
                    "{what}: minik failed with {:?} {:?}, etcd answered {a:?}",
                    b.code(),
                    b.message()
                ));
                None
            }
        };
        self.healthy(what).await;
        out
    }

    /// Both must answer alike: equal successes (after `norm`) or the same error code and message.
    /// For inputs where what etcd does is the reference, whatever it is.
    async fn expect_same_or_same_error<T: Debug, U: Debug + PartialEq>(
        &mut self,
        what: &str,
        (e, m): (Result<T, Status>, Result<T, Status>),
        norm: impl Fn(T) -> U,
    ) {
        self.checks += 1;
        let (e, m) = (e.map(&norm), m.map(&norm));
        let show = |r: &Result<U, Status>| match r {
            Ok(v) => format!("OK {v:?}"),
            Err(s) => format!("{:?} {:?}", s.code(), clip(s.message())),
        };
        let (es, ms) = (show(&e), show(&m));
        eprintln!("{what}:\n    etcd : {es}\n    minik: {ms}");
        let same = match (&e, &m) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.code() == b.code() && a.message() == b.message(),
            _ => false,
        };
        if !same {
            self.problems.push(format!(
                "{what}: minik differs from etcd:\n      etcd : {es}\n      minik: {ms}"
            ));
        }
        self.healthy(what).await;
    }

    /// A good client on its own connection puts and gets, on both servers (keeping revisions in
    /// step); a failure on minik is a problem, on etcd a broken test.
    async fn healthy(&mut self, after: &str) {
        let tag: String = after
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if let Err(e) = self.e.healthy(&tag).await {
            self.problems.push(format!(
                "after {after}: TEST: real etcd stopped serving: {e}"
            ));
        }
        if let Err(e) = self.m.healthy(&tag).await {
            self.problems.push(format!(
                "after {after}: minik stopped serving a good client: {e}"
            ));
        }
    }

    fn finish(mut self, test: &str) {
        if !self.minik.is_running() {
            self.problems
                .push("minik's process is no longer running".into());
        }
        if !self.problems.is_empty() {
            panic!(
                "{test}: {} of {} checks found problems:\n  - {}\n--- minik log (tail):\n{}",
                self.problems.len(),
                self.checks,
                self.problems.join("\n  - "),
                common::tail(&self.minik.log(), 20)
            );
        }
        eprintln!("{test}: {} checks, all as etcd", self.checks);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The first 160 characters of an error message (some quote a whole nested request).
fn clip(s: &str) -> String {
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A response header with only the revision kept (ids and raft term differ between servers).
fn rev_only(h: Option<ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision)
}

fn put_op(key: &str, value: &str) -> RequestOp {
    op_put(key, value)
}

fn big(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

// ---------------------------------------------------------------------------------------------
// Request size
// ---------------------------------------------------------------------------------------------

#[test]
fn oversized_requests() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        let value = big(MIB * 16 / 10);
        let r = d
            .both(|mut c| {
                let v = value.clone();
                async move { c.kv.put(put_req("big", v)).await }
            })
            .await;
        d.expect_error(
            "put of a 1.6 MiB value",
            r,
            Code::InvalidArgument,
            Some("etcdserver: request is too large"),
        )
        .await;

        let r = d
            .both(|mut c| {
                let v = value.clone();
                async move {
                    c.kv.txn(txn(vec![], vec![op_put("big-txn", v)], vec![]))
                        .await
                }
            })
            .await;
        d.expect_error(
            "txn putting a 1.6 MiB value",
            r,
            Code::InvalidArgument,
            Some("etcdserver: request is too large"),
        )
        .await;

        // Several values that are fine alone but too large together.
        let r = d
            .both(|mut c| async move {
                let ops = (0..3)
                    .map(|i| op_put(format!("part{i}"), big(MIB * 6 / 10)))
                    .collect();
                c.kv.txn(txn(vec![], ops, vec![])).await
            })
            .await;
        d.expect_error(
            "txn of three 0.6 MiB puts",
            r,
            Code::InvalidArgument,
            Some("etcdserver: request is too large"),
        )
        .await;

        // A 1.4 MiB value is below the limit: accepted by both.
        let r = d
            .both(|mut c| async move { c.kv.put(put_req("fits", big(MIB * 14 / 10))).await })
            .await;
        d.expect_same("put of a 1.4 MiB value", r, |p| rev_only(p.header))
            .await;

        // Above gRPC's own limit (max-request-bytes + 512 KiB): the transport refuses it.
        let value = big(MIB * 25 / 10);
        let r = d
            .both(|mut c| {
                let v = value.clone();
                async move { c.kv.put(put_req("huge", v)).await }
            })
            .await;
        d.expect_error("put of a 2.5 MiB value", r, Code::ResourceExhausted, None)
            .await;

        // The connection that sent it still works.
        let r = d
            .both(|mut c| async move { c.kv.put(put_req("same-conn", "v")).await })
            .await;
        d.expect_same("put on the connection that sent 2.5 MiB", r, |p| {
            rev_only(p.header)
        })
        .await;

        // The oversized requests left nothing behind.
        let r = d
            .both(|mut c| async move {
                c.kv.range(RangeRequest {
                    keys_only: true,
                    ..range_req(vec![0], vec![0])
                })
                .await
            })
            .await;
        d.expect_same("keys after the oversized requests", r, |r| {
            (
                rev_only(r.header),
                r.kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                    .collect::<Vec<_>>(),
            )
        })
        .await;
    });
    d.finish("oversized_requests");
}

// ---------------------------------------------------------------------------------------------
// Inverted ranges
// ---------------------------------------------------------------------------------------------

#[test]
fn inverted_ranges() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        for k in ["a", "b", "c"] {
            let r = d
                .both(|mut c| async move { c.kv.put(put_req(k, k)).await })
                .await;
            d.expect_same(&format!("put {k}"), r, |p| rev_only(p.header))
                .await;
        }
        let r = d
            .both(|mut c| async move { c.kv.range(range_req("b", "a")).await })
            .await;
        d.expect_same("range [b, a)", r, |r| {
            (rev_only(r.header), r.kvs, r.count, r.more)
        })
        .await;
        let r = d
            .both(|mut c| async move { c.kv.range(range_req("b", "b")).await })
            .await;
        d.expect_same("range [b, b)", r, |r| {
            (rev_only(r.header), r.kvs, r.count, r.more)
        })
        .await;
        let r = d
            .both(|mut c| async move {
                c.kv.range(RangeRequest {
                    count_only: true,
                    ..range_req("c", "a")
                })
                .await
            })
            .await;
        d.expect_same("count_only range [c, a)", r, |r| {
            (rev_only(r.header), r.kvs, r.count, r.more)
        })
        .await;
        let r = d
            .both(|mut c| async move {
                c.kv.delete_range(DeleteRangeRequest {
                    key: b"c".to_vec(),
                    range_end: b"a".to_vec(),
                    prev_kv: true,
                })
                .await
            })
            .await;
        d.expect_same("delete [c, a)", r, |r| {
            (rev_only(r.header), r.deleted, r.prev_kvs)
        })
        .await;
        // A txn guarded by a compare over an inverted range (no keys: compares a zero KeyValue).
        let r = d
            .both(|mut c| async move {
                let mut cmp = cmp_absent("b");
                cmp.range_end = b"a".to_vec();
                c.kv.txn(txn(vec![cmp], vec![op_range(range_req("b", "a"))], vec![]))
                    .await
            })
            .await;
        d.expect_same("txn compare over [b, a)", r, |r| {
            (
                rev_only(r.header),
                r.succeeded,
                format!("{:?}", r.responses),
            )
        })
        .await;
        let r = d
            .both(|mut c| async move { c.kv.range(range_req(vec![0], vec![0])).await })
            .await;
        d.expect_same("all keys afterwards", r, |r| (rev_only(r.header), r.kvs))
            .await;
    });
    d.finish("inverted_ranges");
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_lease_and_bad_puts() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        let r = d
            .both(|mut c| async move {
                c.kv.put(PutRequest {
                    lease: 12345,
                    ..put_req("leased", "v")
                })
                .await
            })
            .await;
        d.expect_error(
            "put with unknown lease 12345",
            r,
            Code::NotFound,
            Some("etcdserver: requested lease not found"),
        )
        .await;

        let r = d
            .both(|mut c| async move {
                let put = PutRequest {
                    lease: 12345,
                    ..put_req("leased", "v")
                };
                let op = RequestOp {
                    request: Some(request_op::Request::RequestPut(put)),
                };
                c.kv.txn(txn(vec![], vec![op_put("other", "v"), op], vec![]))
                    .await
            })
            .await;
        d.expect_error(
            "txn putting with unknown lease 12345",
            r,
            Code::NotFound,
            Some("etcdserver: requested lease not found"),
        )
        .await;

        let r = d
            .both(
                |mut c| async move { c.lease.lease_revoke(LeaseRevokeRequest { id: 12345 }).await },
            )
            .await;
        d.expect_error(
            "revoke of unknown lease 12345",
            r,
            Code::NotFound,
            Some("etcdserver: requested lease not found"),
        )
        .await;

        let r = d
            .both(|mut c| async move {
                c.lease
                    .lease_time_to_live(LeaseTimeToLiveRequest {
                        id: 12345,
                        keys: true,
                    })
                    .await
            })
            .await;
        d.expect_same("timetolive of unknown lease 12345", r, |r| {
            (rev_only(r.header), r.id, r.ttl, r.granted_ttl, r.keys)
        })
        .await;

        // Keep-alive of an unknown lease: etcd answers TTL 0 on the stream.
        let r = d
            .both(|mut c| async move {
                let (tx, rx) = mpsc::channel(1);
                tx.send(LeaseKeepAliveRequest { id: 12345 }).await.unwrap();
                let mut s = c
                    .lease
                    .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let first = s.message().await?;
                drop(tx);
                Ok(tonic::Response::new(first))
            })
            .await;
        d.expect_same("keep-alive of unknown lease 12345", r, |r| {
            r.map(|r| (rev_only(r.header), r.id, r.ttl))
        })
        .await;

        let r = d
            .both(|mut c| async move {
                c.lease
                    .lease_grant(LeaseGrantRequest {
                        ttl: 9_000_000_001,
                        id: 0,
                    })
                    .await
            })
            .await;
        d.expect_error(
            "lease grant with TTL 9000000001",
            r,
            Code::OutOfRange,
            Some("etcdserver: too large lease TTL"),
        )
        .await;
        let r = d
            .both(|mut c| async move {
                c.lease
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 777 })
                    .await
            })
            .await;
        d.expect_same("lease grant id 777", r, |r| {
            (rev_only(r.header), r.id, r.ttl, r.error)
        })
        .await;
        let r = d
            .both(|mut c| async move {
                c.lease
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 777 })
                    .await
            })
            .await;
        d.expect_error(
            "lease grant of existing id 777",
            r,
            Code::FailedPrecondition,
            Some("etcdserver: lease already exists"),
        )
        .await;
        for (id, ttl) in [(778, -5), (-1, 60)] {
            let r = d
                .both(
                    |mut c| async move { c.lease.lease_grant(LeaseGrantRequest { ttl, id }).await },
                )
                .await;
            d.expect_same_or_same_error(&format!("lease grant id {id} ttl {ttl}"), r, |r| {
                (rev_only(r.header), r.id, r.ttl, r.error)
            })
            .await;
        }
        for id in [777, 778, -1, 0] {
            let r = d
                .both(|mut c| async move { c.lease.lease_revoke(LeaseRevokeRequest { id }).await })
                .await;
            d.expect_same_or_same_error(&format!("lease revoke {id}"), r, |r| rev_only(r.header))
                .await;
        }

        // Put flags that contradict the request or the key.
        let cases: Vec<(&str, PutRequest, &str)> = vec![
            (
                "put ignore_value on a missing key",
                PutRequest {
                    ignore_value: true,
                    ..put_req("missing", "")
                },
                "etcdserver: key not found",
            ),
            (
                "put ignore_lease on a missing key",
                PutRequest {
                    ignore_lease: true,
                    ..put_req("missing", "v")
                },
                "etcdserver: key not found",
            ),
            (
                "put ignore_value with a value",
                PutRequest {
                    ignore_value: true,
                    ..put_req("k", "v")
                },
                "etcdserver: value is provided",
            ),
            (
                "put ignore_lease with a lease",
                PutRequest {
                    ignore_lease: true,
                    lease: 5,
                    ..put_req("k", "v")
                },
                "etcdserver: lease is provided",
            ),
        ];
        for (what, req, msg) in cases {
            let r = d
                .both(|mut c| {
                    let req = req.clone();
                    async move { c.kv.put(req).await }
                })
                .await;
            d.expect_error(what, r, Code::InvalidArgument, Some(msg))
                .await;
        }

        // Nothing was written by the failed requests.
        let r = d
            .both(|mut c| async move { c.kv.range(range_req(vec![0], vec![0])).await })
            .await;
        d.expect_same("all keys afterwards", r, |r| (rev_only(r.header), r.kvs))
            .await;
    });
    d.finish("unknown_lease_and_bad_puts");
}

// ---------------------------------------------------------------------------------------------
// Compacted and future revisions
// ---------------------------------------------------------------------------------------------

fn watch_create(key: &[u8], end: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        start_revision,
        ..Default::default()
    }
}

fn create_watch(key: &[u8], end: &[u8], start_revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(watch_create(
            key,
            end,
            start_revision,
        ))),
    }
}

/// A watch stream: the sender for more requests, and the responses.
struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream with `first` already queued: etcd (grpc-go) sends the response headers
    /// only with its first message, so the call does not return before a request was sent.
    async fn open(c: &mut Clients, first: WatchRequest) -> Result<WatchStream, Status> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(first).await.expect("queue first watch request");
        let rx = timeout(
            c.watch
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await?;
        Ok(WatchStream { tx, rx })
    }

    async fn send(&self, r: WatchRequest) {
        self.tx.send(r).await.expect("watch request stream closed");
    }

    /// The next response within `wait`, or None.
    async fn next(&mut self, wait: Duration) -> Result<Option<WatchResponse>, Status> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }
}

/// A watch response with the header reduced to its revision.
fn norm_watch(r: WatchResponse) -> String {
    format!(
        "rev={} watch_id={} created={} canceled={} compact_revision={} cancel_reason={:?} \
         fragment={} events={}",
        rev_only(r.header),
        r.watch_id,
        r.created,
        r.canceled,
        r.compact_revision,
        r.cancel_reason,
        r.fragment,
        r.events.len()
    )
}

/// Sends `reqs` on a new watch stream and collects every response that arrives within `wait`
/// of the previous one.
async fn watch_transcript(
    mut c: Clients,
    reqs: Vec<WatchRequest>,
    wait: Duration,
) -> Result<tonic::Response<Vec<String>>, Status> {
    let mut reqs = reqs.into_iter();
    let mut w = WatchStream::open(&mut c, reqs.next().expect("a watch request")).await?;
    let mut out = Vec::new();
    let mut first = true;
    loop {
        if !first {
            let Some(r) = reqs.next() else { break };
            w.send(r).await;
        }
        first = false;
        while let Some(resp) = w.next(wait).await? {
            out.push(norm_watch(resp));
        }
    }
    Ok(tonic::Response::new(out))
}

#[test]
fn compacted_and_future_revisions() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        // Revisions 2..=6.
        for i in 0..5 {
            let r = d
                .both(|mut c| async move {
                    c.kv.put(put_req(format!("k{}", i % 2), format!("v{i}")))
                        .await
                })
                .await;
            d.expect_same(&format!("put #{i}"), r, |p| rev_only(p.header))
                .await;
        }
        // (each expect_* adds a health put, so the revision is now well above 6)
        // Compaction at revision 0 and -1 on a never-compacted store.
        for rev in [-1, 0] {
            let r = d
                .both(|mut c| async move {
                    c.kv.compact(CompactionRequest {
                        revision: rev,
                        physical: false,
                    })
                    .await
                })
                .await;
            d.expect_same_or_same_error(&format!("compact at {rev} (never compacted)"), r, |r| {
                rev_only(r.header)
            })
            .await;
        }
        let r = d
            .both(|mut c| async move {
                c.kv.compact(CompactionRequest {
                    revision: 5,
                    physical: true,
                })
                .await
            })
            .await;
        d.expect_same("compact at 5", r, |r| rev_only(r.header))
            .await;

        let r = d
            .both(|mut c| async move {
                c.kv.range(RangeRequest {
                    revision: 4,
                    ..get_req("k0")
                })
                .await
            })
            .await;
        d.expect_error(
            "range at compacted revision 4",
            r,
            Code::OutOfRange,
            Some("etcdserver: mvcc: required revision has been compacted"),
        )
        .await;

        let r = d
            .both(|mut c| async move {
                c.kv.range(RangeRequest {
                    revision: 5,
                    ..range_req("k", "l")
                })
                .await
            })
            .await;
        d.expect_same("range at the compaction revision 5", r, |r| {
            (rev_only(r.header), r.kvs, r.count)
        })
        .await;

        let r = d
            .both(|mut c| async move {
                c.kv.range(RangeRequest {
                    revision: 1000,
                    ..get_req("k0")
                })
                .await
            })
            .await;
        d.expect_error(
            "range at future revision 1000",
            r,
            Code::OutOfRange,
            Some("etcdserver: mvcc: required revision is a future revision"),
        )
        .await;

        let r = d
            .both(|mut c| async move {
                c.kv.txn(txn(
                    vec![],
                    vec![op_range(RangeRequest {
                        revision: 3,
                        ..get_req("k0")
                    })],
                    vec![],
                ))
                .await
            })
            .await;
        d.expect_error(
            "txn range at compacted revision 3",
            r,
            Code::OutOfRange,
            Some("etcdserver: mvcc: required revision has been compacted"),
        )
        .await;

        let r = d
            .both(|mut c| async move {
                c.kv.txn(txn(
                    vec![],
                    vec![op_range(RangeRequest {
                        revision: 1000,
                        ..get_req("k0")
                    })],
                    vec![],
                ))
                .await
            })
            .await;
        d.expect_error(
            "txn range at future revision 1000",
            r,
            Code::OutOfRange,
            Some("etcdserver: mvcc: required revision is a future revision"),
        )
        .await;

        for rev in [5, 3] {
            let r = d
                .both(|mut c| async move {
                    c.kv.compact(CompactionRequest {
                        revision: rev,
                        physical: false,
                    })
                    .await
                })
                .await;
            d.expect_error(
                &format!("compact again at {rev} (already compacted at 5)"),
                r,
                Code::OutOfRange,
                Some("etcdserver: mvcc: required revision has been compacted"),
            )
            .await;
        }

        let r = d
            .both(|mut c| async move {
                c.kv.compact(CompactionRequest {
                    revision: 1000,
                    physical: false,
                })
                .await
            })
            .await;
        d.expect_error(
            "compact at future revision 1000",
            r,
            Code::OutOfRange,
            Some("etcdserver: mvcc: required revision is a future revision"),
        )
        .await;

        // A watch from a compacted revision is created, then canceled with the compact revision.
        let r = d
            .both(|c| async move {
                watch_transcript(
                    c,
                    vec![create_watch(b"k", b"l", 2)],
                    Duration::from_millis(700),
                )
                .await
            })
            .await;
        d.expect_same("watch from compacted revision 2", r, |t| t)
            .await;
    });
    d.finish("compacted_and_future_revisions");
}

// ---------------------------------------------------------------------------------------------
// Txn and key validation
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_txns_and_keys() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        let dup = "etcdserver: duplicate key given in txn request";
        let cases: Vec<(&str, TxnRequest)> = vec![
            (
                "txn putting the same key twice",
                txn(vec![], vec![put_op("d", "1"), put_op("d", "2")], vec![]),
            ),
            (
                "txn putting the same key twice (failure branch)",
                txn(
                    vec![cmp_absent("zz")],
                    vec![],
                    vec![put_op("d", "1"), put_op("d", "2")],
                ),
            ),
            (
                "txn deleting [a, e) and putting d",
                txn(vec![], vec![op_delete("a", "e"), put_op("d", "1")], vec![]),
            ),
            (
                "txn putting d and in a nested txn d again",
                txn(
                    vec![],
                    vec![
                        put_op("d", "1"),
                        RequestOp {
                            request: Some(request_op::Request::RequestTxn(txn(
                                vec![],
                                vec![put_op("d", "2")],
                                vec![],
                            ))),
                        },
                    ],
                    vec![],
                ),
            ),
        ];
        for (what, t) in cases {
            let r = d
                .both(|mut c| {
                    let t = t.clone();
                    async move { c.kv.txn(t).await }
                })
                .await;
            d.expect_error(what, r, Code::InvalidArgument, Some(dup))
                .await;
        }

        let many = "etcdserver: too many operations in txn request";
        let puts = |n: usize| -> Vec<RequestOp> {
            (0..n).map(|i| put_op(&format!("op{i:03}"), "v")).collect()
        };
        let cases: Vec<(&str, TxnRequest)> = vec![
            ("txn with 129 puts", txn(vec![], puts(129), vec![])),
            ("txn with 129 failure ops", txn(vec![], vec![], puts(129))),
            (
                "txn with 129 compares",
                txn(
                    (0..129).map(|i| cmp_absent(format!("c{i}"))).collect(),
                    vec![],
                    vec![],
                ),
            ),
        ];
        for (what, t) in cases {
            let r = d
                .both(|mut c| {
                    let t = t.clone();
                    async move { c.kv.txn(t).await }
                })
                .await;
            d.expect_error(what, r, Code::InvalidArgument, Some(many))
                .await;
        }
        let r = d
            .both(|mut c| async move { c.kv.txn(txn(vec![], puts(128), vec![])).await })
            .await;
        d.expect_same("txn with 128 puts (the limit)", r, |r| {
            (rev_only(r.header), r.succeeded, r.responses.len())
        })
        .await;

        let empty = "etcdserver: key is not provided";
        let r = d
            .both(|mut c| async move { c.kv.put(put_req("", "v")).await })
            .await;
        d.expect_error(
            "put with an empty key",
            r,
            Code::InvalidArgument,
            Some(empty),
        )
        .await;
        let r = d
            .both(|mut c| async move { c.kv.range(get_req("")).await })
            .await;
        d.expect_error(
            "range with an empty key",
            r,
            Code::InvalidArgument,
            Some(empty),
        )
        .await;
        let r = d
            .both(|mut c| async move {
                c.kv.delete_range(DeleteRangeRequest {
                    key: Vec::new(),
                    ..Default::default()
                })
                .await
            })
            .await;
        d.expect_error(
            "delete with an empty key",
            r,
            Code::InvalidArgument,
            Some(empty),
        )
        .await;
        let r = d
            .both(|mut c| async move { c.kv.txn(txn(vec![], vec![put_op("", "v")], vec![])).await })
            .await;
        d.expect_error(
            "txn put with an empty key",
            r,
            Code::InvalidArgument,
            Some(empty),
        )
        .await;
        let r = d
            .both(|mut c| async move {
                c.kv.txn(txn(vec![cmp_absent("")], vec![put_op("x", "v")], vec![]))
                    .await
            })
            .await;
        d.expect_error(
            "txn compare on an empty key",
            r,
            Code::InvalidArgument,
            Some(empty),
        )
        .await;
        let r = d
            .both(|mut c| async move {
                c.kv.txn(txn(vec![], vec![RequestOp { request: None }], vec![]))
                    .await
            })
            .await;
        d.expect_error(
            "txn with an empty RequestOp",
            r,
            Code::InvalidArgument,
            Some("etcdserver: key not found"),
        )
        .await;

        // Odd compares: a target union that does not match the target, unknown enum values,
        // no target union at all, a ">= key" range. etcd's answer is the reference.
        let r = d
            .both(|mut c| async move { c.kv.put(put_req("cmp", "v")).await })
            .await;
        let cmp_rev = d
            .expect_same("put cmp", r, |p| rev_only(p.header))
            .await
            .map_or(0, |(e, _)| e);
        let odd: Vec<(String, Compare)> = vec![
            (
                format!("target MOD with a CreateRevision({cmp_rev}) union"),
                Compare {
                    target: CompareTarget::Mod as i32,
                    target_union: Some(TargetUnion::CreateRevision(cmp_rev)),
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "target VERSION with a Value(\"v\") union".into(),
                Compare {
                    target: CompareTarget::Version as i32,
                    target_union: Some(TargetUnion::Value(b"v".to_vec())),
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "target VALUE with a Version(1) union".into(),
                Compare {
                    target: CompareTarget::Value as i32,
                    target_union: Some(TargetUnion::Version(1)),
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "unknown target 9 with a Version(5) union".into(),
                Compare {
                    target: 9,
                    target_union: Some(TargetUnion::Version(5)),
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "unknown result 9".into(),
                Compare {
                    result: 9,
                    target: CompareTarget::Version as i32,
                    target_union: Some(TargetUnion::Version(5)),
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "no target union, version == (nothing)".into(),
                Compare {
                    target: CompareTarget::Version as i32,
                    target_union: None,
                    ..cmp_mod_eq("cmp", 0)
                },
            ),
            (
                "version > 0 over [c, \\0) (all keys from c)".into(),
                Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Version as i32,
                    range_end: vec![0],
                    target_union: Some(TargetUnion::Version(0)),
                    ..cmp_mod_eq("c", 0)
                },
            ),
        ];
        for (what, cmp) in odd {
            let r = d
                .both(|mut c| {
                    let cmp = cmp.clone();
                    async move { c.kv.txn(txn(vec![cmp], vec![op_get("cmp")], vec![])).await }
                })
                .await;
            d.expect_same(&format!("txn compare: {what}"), r, |r| {
                (rev_only(r.header), r.succeeded)
            })
            .await;
        }

        // Nested txns: within the op budget, and deeper than the protobuf recursion limits of
        // some decoders.
        fn nested(depth: usize, key: &str) -> TxnRequest {
            if depth == 1 {
                txn(vec![], vec![put_op(key, "deep")], vec![])
            } else {
                txn(
                    vec![],
                    vec![RequestOp {
                        request: Some(request_op::Request::RequestTxn(nested(depth - 1, key))),
                    }],
                    vec![],
                )
            }
        }
        // The deep txn sits in the success branch of a txn whose compare fails, so etcd's
        // answer is flat (this test's own client could not decode a deeply nested response).
        for depth in [10, 45, 60, 100, 130] {
            let r = d
                .both(|mut c| async move {
                    let deep = RequestOp {
                        request: Some(request_op::Request::RequestTxn(nested(
                            depth,
                            &format!("deep{depth}"),
                        ))),
                    };
                    let never = Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Version as i32,
                        target_union: Some(TargetUnion::Version(0)),
                        ..cmp_mod_eq("no-such-key", 0)
                    };
                    c.kv.txn(txn(vec![never], vec![deep], vec![])).await
                })
                .await;
            d.expect_same_or_same_error(
                &format!("txn with a txn nested {depth} deep in its untaken branch"),
                r,
                |r| (rev_only(r.header), r.succeeded),
            )
            .await;
        }

        let r = d
            .both(|mut c| async move { c.kv.range(range_req(vec![0], vec![0])).await })
            .await;
        d.expect_same("all keys afterwards", r, |r| {
            (
                rev_only(r.header),
                r.kvs
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            kv.mod_revision,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await;
    });
    d.finish("invalid_txns_and_keys");
}

// ---------------------------------------------------------------------------------------------
// Watch with an inverted range
// ---------------------------------------------------------------------------------------------

#[test]
fn watch_inverted_range() {
    let rt = runtime();
    let mut d = Duo::start(&rt, None);
    rt.block_on(async {
        let r = d
            .both(|c| async move {
                watch_transcript(
                    c,
                    vec![
                        create_watch(b"b", b"a", 0),
                        create_watch(b"b", b"b", 0),
                        // The stream still works: a valid watch on it is created.
                        create_watch(b"a", b"c", 0),
                        // A client-chosen watch id, then the same id again (duplicate).
                        WatchRequest {
                            request_union: Some(watch_request::RequestUnion::CreateRequest(
                                WatchCreateRequest {
                                    watch_id: 7,
                                    ..watch_create(b"x", b"", 0)
                                },
                            )),
                        },
                        WatchRequest {
                            request_union: Some(watch_request::RequestUnion::CreateRequest(
                                WatchCreateRequest {
                                    watch_id: 7,
                                    ..watch_create(b"y", b"", 0)
                                },
                            )),
                        },
                        // Cancel of a watch id that does not exist, then of the real one.
                        WatchRequest {
                            request_union: Some(watch_request::RequestUnion::CancelRequest(
                                WatchCancelRequest { watch_id: 4242 },
                            )),
                        },
                        WatchRequest {
                            request_union: Some(watch_request::RequestUnion::CancelRequest(
                                WatchCancelRequest { watch_id: 7 },
                            )),
                        },
                    ],
                    Duration::from_millis(400),
                )
                .await
            })
            .await;
        d.expect_same(
            "watch [b, a), [b, b), [a, c), id 7 twice, cancel 4242 and 7 on one stream",
            r,
            |t| t,
        )
        .await;
        // And the valid watch on that stream gets events.
        let r = d
            .both(|mut c| async move {
                let mut w = WatchStream::open(&mut c, create_watch(b"b", b"a", 0)).await?;
                w.send(create_watch(b"a", b"c", 0)).await;
                let mut out = Vec::new();
                for _ in 0..2 {
                    if let Some(r) = w.next(Duration::from_secs(2)).await? {
                        out.push(norm_watch(r));
                    }
                }
                c.kv.put(put_req("ab", "v")).await?;
                if let Some(r) = w.next(Duration::from_secs(5)).await? {
                    out.push(norm_watch(r));
                }
                Ok(tonic::Response::new(out))
            })
            .await;
        d.expect_same("events on a stream after an inverted-range watch", r, |t| t)
            .await;
        // An empty key: etcd watches the key "\0" (and with range_end "\0", every key).
        for (what, end) in [
            ("watch key \"\" then put \"\\0\"", &b""[..]),
            ("watch [\"\", \\0) then put \"\\0\"", &[0u8][..]),
        ] {
            let r = d
                .both(|mut c| async move {
                    let mut w = WatchStream::open(&mut c, create_watch(b"", end, 0)).await?;
                    let mut out = Vec::new();
                    if let Some(r) = w.next(Duration::from_secs(2)).await? {
                        out.push(norm_watch(r));
                    }
                    c.kv.put(put_req(vec![0u8], "nul")).await?;
                    if let Some(r) = w.next(Duration::from_secs(2)).await? {
                        out.push(format!(
                            "{} keys={:?}",
                            norm_watch(r.clone()),
                            r.events
                                .iter()
                                .map(|e| e.kv.as_ref().map(|kv| kv.key.clone()))
                                .collect::<Vec<_>>()
                        ));
                    }
                    Ok(tonic::Response::new(out))
                })
                .await;
            d.expect_same(what, r, |t| t).await;
        }
    });
    d.finish("watch_inverted_range");
}

// ---------------------------------------------------------------------------------------------
// Garbage on the gRPC port
// ---------------------------------------------------------------------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Raw byte streams that are not gRPC. Each is written on its own TCP connection.
fn garbage_inputs(seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut random = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut random);
    let mut small = vec![0u8; rng.random_range(1..64)];
    rng.fill_bytes(&mut small);
    let mut after_preface = H2_PREFACE.to_vec();
    let mut junk = vec![0u8; 4096];
    rng.fill_bytes(&mut junk);
    after_preface.extend_from_slice(&junk);
    // A valid preface and SETTINGS, then a HEADERS frame claiming 16 MiB of payload.
    let mut huge_frame = H2_PREFACE.to_vec();
    huge_frame.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    huge_frame.extend_from_slice(&[0xff, 0xff, 0xff, 1, 4, 0, 0, 0, 1]);
    huge_frame.extend_from_slice(&[0u8; 100]);
    // A valid preface and SETTINGS, then HEADERS with an undecodable HPACK block.
    let mut bad_hpack = H2_PREFACE.to_vec();
    bad_hpack.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bad_hpack.extend_from_slice(&[0, 0, 8, 1, 4, 0, 0, 0, 1]);
    bad_hpack.extend_from_slice(&[0xff; 8]);
    vec![
        ("64 KiB of random bytes", random),
        ("a few random bytes", small),
        (
            "an HTTP/1.1 request",
            b"GET /etcdserverpb.KV/Range HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
                .to_vec(),
        ),
        (
            "an HTTP/1.1 upgrade to h2c",
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        ("a truncated HTTP/2 preface", H2_PREFACE[..10].to_vec()),
        ("an HTTP/2 preface followed by random bytes", after_preface),
        ("an HTTP/2 frame header claiming 16 MiB", huge_frame),
        ("an HTTP/2 HEADERS frame with a garbage HPACK block", bad_hpack),
        ("a TLS ClientHello start on a plain-text port", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
    ]
}

/// Writes `bytes` on a new connection, then reads whatever comes back for up to `wait`
/// (the connection is held open meanwhile). Returns what was read and how it ended.
async fn send_raw(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, String) {
    let mut s = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), format!("connect failed: {e}")),
    };
    if let Err(e) = s.write_all(bytes).await {
        return (Vec::new(), format!("write failed: {e}"));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, "still open".into()),
            Ok(Ok(0)) => return (got, "closed by server".into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (got, format!("read error: {e}")),
        }
    }
}

fn preview(b: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&b[..b.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("{} bytes {s:?}", b.len())
}

/// Garbage on every connection of `server`'s port, while a good client works concurrently.
async fn garbage_against(server_port: u16, good: &Clients, seed: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, bytes) in garbage_inputs(seed) {
        // The garbage connection is held open (up to 1.5 s) while a good client works.
        let raw = tokio::spawn(async move {
            send_raw(server_port, &bytes, Duration::from_millis(1500)).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tag = what.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        if let Err(e) = good.healthy(&format!("during_{tag}")).await {
            problems.push(format!(
                "{}: while a connection sent {what}: {e}",
                good.name
            ));
        }
        let (reply, end) = raw.await.unwrap();
        eprintln!(
            "{} <- {what}: replied {}, {end}",
            good.name,
            preview(&reply)
        );
        if let Err(e) = good.healthy(&format!("after_{tag}")).await {
            problems.push(format!(
                "{}: after a connection sent {what}: {e}",
                good.name
            ));
        }
    }
    // Many connections at once, each stuck in the middle of a preface, held open.
    let mut held = Vec::new();
    for i in 0..200 {
        match TcpStream::connect(("127.0.0.1", server_port)).await {
            Ok(mut s) => {
                let _ = s.write_all(&H2_PREFACE[..(i % H2_PREFACE.len())]).await;
                held.push(s);
            }
            Err(e) => {
                problems.push(format!("{}: connection {i} of 200 refused: {e}", good.name));
                break;
            }
        }
    }
    if let Err(e) = good.healthy("with_200_stuck_connections").await {
        problems.push(format!(
            "{}: with 200 connections stuck in the preface: {e}",
            good.name
        ));
    }
    drop(held);
    if let Err(e) = good.healthy("after_200_stuck_connections").await {
        problems.push(format!(
            "{}: after 200 stuck connections closed: {e}",
            good.name
        ));
    }
    problems
}

#[test]
fn garbage_on_grpc_port() {
    let rt = runtime();
    let seed = seed("GARBAGE_SEED");
    let (mut etcd, mut minik) = start_pair(None);
    let problems = rt.block_on(async {
        let e = Clients::new(&etcd).await;
        let m = Clients::new(&minik).await;
        let mut problems: Vec<String> = garbage_against(etcd.port(), &e, seed)
            .await
            .into_iter()
            .map(|p| format!("TEST (real etcd fails too): {p}"))
            .collect();
        problems.extend(garbage_against(minik.port(), &m, seed).await);
        problems
    });
    let mut problems = problems;
    if !etcd.is_running() {
        problems.push("TEST: real etcd died".into());
    }
    if !minik.is_running() {
        problems.push(format!("minik died:\n{}", common::tail(&minik.log(), 20)));
    }
    assert!(
        problems.is_empty(),
        "problems:\n  - {}",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: an untrusted client certificate
// ---------------------------------------------------------------------------------------------

/// What happens to a client with these credentials: Ok if an RPC succeeded.
async fn try_tls_client(
    endpoint: &str,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(), String> {
    let ch = connect_tls(endpoint, ca, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut kv = KvClient::new(ch);
    timeout(kv.range(get_req("x")))
        .await
        .map(|_| ())
        .map_err(|s| format!("rpc: {:?} {}", s.code(), s.message()))
}

#[test]
fn untrusted_tls_client() {
    let rt = runtime();
    let pki = Pki::new();
    let mut d = Duo::start(&rt, Some(&pki));
    let servers = [
        (d.etcd.endpoint(), d.etcd.port()),
        (d.minik.endpoint(), d.minik.port()),
    ];
    rt.block_on(async {
        for (i, (endpoint, port)) in servers.iter().enumerate() {
            let name = if i == 0 { "etcd" } else { "minik" };
            let good = if i == 0 { d.e.clone() } else { d.m.clone() };
            let mut problems = Vec::new();
            let mut refused = |what: &str, r: Result<(), String>| match r {
                Ok(()) => problems.push(format!("{name}: {what} was served")),
                Err(e) => eprintln!("{name}: {what} refused: {e}"),
            };
            refused(
                "a client with a certificate from an untrusted CA",
                try_tls_client(
                    endpoint,
                    &pki.ca_cert,
                    Some((&pki.untrusted_client_cert, &pki.untrusted_client_key)),
                )
                .await,
            );
            refused(
                "a client without a certificate",
                try_tls_client(endpoint, &pki.ca_cert, None).await,
            );
            // Plain-text gRPC on the TLS port.
            let plain = endpoint.replace("https://", "http://");
            let r = match connect(&plain).await {
                Ok(ch) => timeout(KvClient::new(ch).range(get_req("x")))
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?} {}", s.code(), s.message())),
                Err(e) => Err(format!("connect: {e:?}")),
            };
            refused("a plain-text gRPC client on the TLS port", r);
            // Raw garbage and idle connections on the TLS port while a good client works: the
            // TLS handshake of one connection must not hold up the others.
            let mut held = Vec::new();
            for bytes in [
                Vec::new(),
                vec![0x16, 0x03, 0x01, 0x00, 0xff, 0x01],
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                H2_PREFACE.to_vec(),
            ] {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", *port)).await {
                    let _ = s.write_all(&bytes).await;
                    held.push(s);
                }
            }
            if let Err(e) = good.healthy("tls_with_stuck_handshakes").await {
                problems.push(format!(
                    "{name}: good mTLS client while 4 connections stall their TLS handshake: {e}"
                ));
            }
            drop(held);
            if let Err(e) = good.healthy("tls_after_bad_clients").await {
                problems.push(format!("{name}: good mTLS client afterwards: {e}"));
            }
            // The real etcdctl with the untrusted certificate fails, with the good one works.
            let server = if i == 0 { &d.etcd } else { &d.minik };
            let out = Etcdctl::new(server)
                .creds(Creds::Untrusted)
                .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "x"])
                .run();
            if out.status.success() {
                problems.push(format!("{name}: etcdctl with the untrusted cert succeeded"));
            }
            Etcdctl::new(server)
                .args(["put", "tls-ok", "yes"])
                .run()
                .expect_ok("etcdctl put with the good cert");
            let prefix = if i == 0 { "TEST (real etcd): " } else { "" };
            d.problems
                .extend(problems.into_iter().map(|p| format!("{prefix}{p}")));
        }
    });
    d.checks += 1;
    d.finish("untrusted_tls_client");
}
