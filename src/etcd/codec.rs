//! The gRPC codec of the etcd services: protobuf (prost), plus the two checks etcd's Go gRPC
//! server makes before a request reaches the handlers.
//!
//! - **Size**: a request above etcd's gRPC limit (`--max-request-bytes` + 512 KiB) is refused with
//!   gRPC's own `ResourceExhausted "grpc: received message larger than max (N vs. M)"`.
//! - **Nesting**: a Txn can nest txns; Go decodes any depth and etcd then refuses more than
//!   `--max-txn-ops` levels as "too many operations". prost stops at 100 levels by default, so
//!   minik decodes without that limit (the `no-recursion-limit` feature) and instead measures a
//!   TxnRequest's depth on the wire first, refusing it as etcd does before any deep recursion.

use std::any::{TypeId, type_name};
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use super::error::{EtcdError, GRPC_OVERHEAD_BYTES, MAX_REQUEST_BYTES, MAX_TXN_OPS};
use super::proto::etcdserverpb::TxnRequest;

/// The codec `build.rs` wires into every generated etcd service and client.
#[derive(Debug, Clone)]
pub struct EtcdCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for EtcdCodec<T, U> {
    fn default() -> Self {
        EtcdCodec(PhantomData)
    }
}

impl<T, U> Codec for EtcdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = EtcdDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EtcdDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct EtcdDecoder<U>(PhantomData<U>);

/// The largest gRPC message the server accepts, as etcd computes it.
pub const GRPC_MAX_RECV: usize = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;

impl<U: Message + Default + 'static> Decoder for EtcdDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        // Only requests (decoded by the server) are limited; responses decoded by clients aren't.
        if len > GRPC_MAX_RECV && type_name::<U>().ends_with("Request") {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({len} vs. {GRPC_MAX_RECV})"
            )));
        }
        if TypeId::of::<U>() == TypeId::of::<TxnRequest>() {
            let bytes = buf.copy_to_bytes(len);
            if txn_depth(&bytes, 1).is_none() {
                return Err(EtcdError::TooManyOps.into());
            }
            return U::decode(bytes)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Walks a TxnRequest on the wire (fields 2 and 3 are RequestOps; a RequestOp's field 4 is a
/// nested TxnRequest). None when nesting goes deeper than etcd allows. Malformed input is left
/// for the protobuf decoder to report.
fn txn_depth(mut b: &[u8], depth: usize) -> Option<()> {
    if depth > MAX_TXN_OPS {
        return None;
    }
    while let Some((field, body, rest)) = next_field(b) {
        b = rest;
        if let (2 | 3, Some(op)) = (field, body) {
            let mut o = op;
            while let Some((f, inner, rest)) = next_field(o) {
                o = rest;
                if let (4, Some(txn)) = (f, inner) {
                    txn_depth(txn, depth + 1)?;
                }
            }
        }
    }
    Some(())
}

/// One protobuf field: its number, its body if length-delimited, and the bytes after it.
type Field<'a> = (u64, Option<&'a [u8]>, &'a [u8]);

/// Splits the next field off a protobuf message. None at the end or on malformed input.
fn next_field(b: &[u8]) -> Option<Field<'_>> {
    let (key, mut b) = varint(b)?;
    let body = match key & 7 {
        0 => {
            b = varint(b)?.1;
            None
        }
        1 => {
            b = b.get(8..)?;
            None
        }
        2 => {
            let (len, rest) = varint(b)?;
            let len = usize::try_from(len).ok()?;
            let body = rest.get(..len)?;
            b = rest.get(len..)?;
            Some(body)
        }
        5 => {
            b = b.get(4..)?;
            None
        }
        _ => return None,
    };
    Some((key >> 3, body, b))
}

fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::proto::etcdserverpb::{RequestOp, request_op};

    fn nested(depth: usize) -> TxnRequest {
        let mut t = TxnRequest::default();
        for _ in 1..depth {
            t = TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        t
    }

    #[test]
    fn depth_is_measured_on_the_wire() {
        assert!(txn_depth(&nested(1).encode_to_vec(), 1).is_some());
        assert!(txn_depth(&nested(MAX_TXN_OPS).encode_to_vec(), 1).is_some());
        assert!(txn_depth(&nested(MAX_TXN_OPS + 1).encode_to_vec(), 1).is_none());
        // Deep nesting decodes once it has been let through.
        let deep = nested(MAX_TXN_OPS).encode_to_vec();
        assert!(TxnRequest::decode(deep.as_slice()).is_ok());
        assert!(
            txn_depth(&[0xff, 0xff], 1).is_some(),
            "garbage is left to the decoder"
        );
    }
}
