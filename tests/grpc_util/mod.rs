//! Small helpers for driving an etcd v3 server over gRPC with minik's generated tonic clients:
//! connecting (plain or mutual TLS) and building requests. Shared by `crash_safety.rs`,
//! `bad_input.rs` and `differential.rs` (`mod grpc_util;`).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use minik::etcd::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use minik::etcd::proto::etcdserverpb::kv_client::KvClient;
use minik::etcd::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Connects a plain-text channel to `endpoint` (`http://127.0.0.1:PORT`).
pub async fn connect(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(endpoint.to_string())
        .expect("valid endpoint URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Connects over TLS, trusting `ca` and presenting `identity` = (cert, key) PEM files if given.
pub async fn connect_tls(
    endpoint: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read CA")));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("read client cert"),
            std::fs::read(key).expect("read client key"),
        ));
    }
    Channel::from_shared(endpoint.to_string())
        .expect("valid endpoint URL")
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

/// A KV client on a fresh plain-text connection, with no client-side message size limits.
pub async fn kv(endpoint: &str) -> KvClient<Channel> {
    let ch = connect(endpoint)
        .await
        .unwrap_or_else(|e| panic!("connect {endpoint}: {e:?}"));
    KvClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

pub fn put_req(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn get_req(key: impl Into<Vec<u8>>) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

pub fn range_req(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn op_put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put_req(key, value))),
    }
}

pub fn op_get(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(get_req(key))),
    }
}

pub fn op_range(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(req)),
    }
}

pub fn op_delete(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            },
        )),
    }
}

/// `mod_revision(key) == rev`.
pub fn cmp_mod_eq(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::ModRevision(rev)),
    }
}

/// `create_revision(key) == 0`, i.e. the key does not exist.
pub fn cmp_absent(key: impl Into<Vec<u8>>) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(0)),
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// The smallest key greater than every key with prefix `p` (etcd's `--prefix` range end).
pub fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A seed for this run: `$var` if set (to replay a failure), else from the clock. Printed.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("seed: {var}={seed}");
    seed
}
