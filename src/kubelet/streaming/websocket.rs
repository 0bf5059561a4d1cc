//! WebSocket (RFC 6455, server side) and Kubernetes' channel protocols over it.
//!
//! kubectl 1.30+ runs `exec` and `attach` over a WebSocket with the subprotocol
//! `v5.channel.k8s.io` (`v4.channel.k8s.io` is the same without the stdin-close signal): every
//! binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (the final
//! Status), 4 resize (`{"Width":…,"Height":…}`) — and v5 adds channel 255, `[255, n]` meaning
//! "the client closed stream n". kubectl 1.31+ runs `port-forward` over a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io`: the binary messages carry a SPDY connection's bytes
//! ([`tunnel`]).
//!
//! The framing is small enough to write here rather than adding a WebSocket crate (and its SHA-1
//! and random-number dependencies): the server reads masked client frames, reassembles
//! fragmented messages, answers pings with pongs and a close with a close, and writes unmasked
//! frames. SHA-1 for the handshake comes from `ring`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The GUID of the RFC 6455 handshake.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The exec/attach channel protocol of kubectl 1.30+.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
/// The exec/attach channel protocol before v5 (no stdin close).
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// The port-forward tunnel of kubectl 1.31+: SPDY inside binary messages.
pub const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The channels of the `v4`/`v5.channel.k8s.io` protocols.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, n]` — the peer will send nothing more on channel n.
    pub const CLOSE: u8 = 255;
}

/// The largest message accepted (a client never sends much at once).
const MAX_MESSAGE: usize = 16 << 20;

mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_websocket_request(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "websocket")
}

/// The subprotocols the client offers, in its order.
pub fn offered_protocols(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A data message with the channel byte in front.
pub fn channel_message(ch: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(ch);
    b.put_slice(data);
    b.freeze()
}

/// A framing error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("reserved bits set in a frame")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("a control frame is fragmented or longer than 125 bytes")]
    BadControl,
    #[error("message of {0} bytes is too large")]
    TooLarge(u64),
}

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

/// Appends a frame (masked with `mask` when given: that is what clients send).
pub fn encode_frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut BytesMut) {
    out.put_u8(if fin { 0x80 } else { 0 } | (op & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(m | n as u8),
        n if n <= 0xffff => {
            out.put_u8(m | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(m | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(key) => {
            out.put_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.put_slice(payload),
    }
}

/// Takes one whole frame off `buf` (unmasking it); `None` until it is complete.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<RawFrame>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let op = b0 & 0x0f;
    if !matches!(op, 0x0..=0x2 | 0x8..=0xa) {
        return Err(WsError::Opcode(op));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(l), 10)
        }
        n => (u64::from(n), 2),
    };
    if op >= 0x8 && (len > 125 || b0 & 0x80 == 0) {
        return Err(WsError::BadControl);
    }
    if len > MAX_MESSAGE as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize;
    let key = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        buf.reserve(at + len - buf.len());
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some(RawFrame {
        fin: b0 & 0x80 != 0,
        opcode: op,
        payload: payload.freeze(),
    }))
}

#[derive(Debug)]
enum Out {
    Binary(Bytes),
    Pong(Bytes),
    /// Close frame with a status code, then shut the connection down.
    Close(u16),
}

/// Sends messages on a WebSocket (cheap to clone).
#[derive(Debug, Clone)]
pub struct WsWriter {
    out: mpsc::Sender<Out>,
}

impl WsWriter {
    /// Sends one binary message; false when the connection is gone.
    pub async fn send(&self, msg: Bytes) -> bool {
        self.out.send(Out::Binary(msg)).await.is_ok()
    }

    /// Sends a close frame (1000 = normal) and ends the connection once queued messages are out.
    pub async fn close(&self, code: u16) {
        let _ = self.out.send(Out::Close(code)).await;
    }
}

/// A server-side WebSocket connection after the 101.
#[derive(Debug)]
pub struct WsSession {
    /// Data messages (text or binary) from the client; closed when the client closes or goes.
    pub incoming: mpsc::Receiver<Bytes>,
    pub writer: WsWriter,
}

impl WsSession {
    /// Starts reading and writing frames on an upgraded connection.
    pub fn start<T>(io: T) -> WsSession
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(64);
        tokio::spawn(write_loop(wr, out_rx));
        tokio::spawn(read_loop(rd, in_tx, out_tx.clone()));
        WsSession {
            incoming: in_rx,
            writer: WsWriter { out: out_tx },
        }
    }
}

async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(wr);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        while let Some(item) = next.take() {
            match item {
                Out::Binary(b) => encode_frame(true, opcode::BINARY, &b, None, &mut buf),
                Out::Pong(b) => encode_frame(true, opcode::PONG, &b, None, &mut buf),
                Out::Close(code) => {
                    encode_frame(true, opcode::CLOSE, &code.to_be_bytes(), None, &mut buf);
                    closing = true;
                    break;
                }
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        buf.clear();
        if closing {
            let _ = wr.shutdown().await;
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(rd: R, incoming: mpsc::Sender<Bytes>, out: mpsc::Sender<Out>) {
    tokio::pin!(rd);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut message: Option<BytesMut> = None;
    loop {
        let frame = match decode_frame(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(e) => {
                tracing::debug!("websocket: {e}");
                let _ = out.send(Out::Close(1002)).await;
                return;
            }
        };
        match frame.opcode {
            opcode::PING => {
                let _ = out.send(Out::Pong(frame.payload)).await;
            }
            opcode::PONG => {}
            opcode::CLOSE => {
                let _ = out.send(Out::Close(1000)).await;
                return;
            }
            op => {
                let m = match (op, message.take()) {
                    (opcode::CONTINUATION, Some(mut m)) => {
                        m.extend_from_slice(&frame.payload);
                        m
                    }
                    (opcode::TEXT | opcode::BINARY, None) => BytesMut::from(&frame.payload[..]),
                    _ => {
                        let _ = out.send(Out::Close(1002)).await;
                        return;
                    }
                };
                if m.len() > MAX_MESSAGE {
                    let _ = out.send(Out::Close(1009)).await;
                    return;
                }
                if frame.fin {
                    if incoming.send(m.freeze()).await.is_err() {
                        return;
                    }
                } else {
                    message = Some(m);
                }
            }
        }
    }
}

/// For the port-forward tunnel: a byte stream whose reads are the client's binary messages and
/// whose writes go out as binary messages.
pub fn tunnel(mut ws: WsSession) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let writer = ws.writer.clone();
    tokio::spawn(async move {
        while let Some(msg) = ws.incoming.recv().await {
            if wr.write_all(&msg).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.send(Bytes::copy_from_slice(&buf[..n])).await {
                        return;
                    }
                }
            }
        }
        writer.close(1000).await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_key_is_rfc6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_round_trip_masked_and_not() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut buf = BytesMut::new();
                encode_frame(true, opcode::BINARY, &payload, mask, &mut buf);
                // Byte by byte: incomplete until the last one.
                let whole = buf.clone();
                let mut part = BytesMut::new();
                for (i, b) in whole.iter().enumerate() {
                    part.put_u8(*b);
                    let got = decode_frame(&mut part).expect("decode");
                    if i + 1 < whole.len() {
                        assert_eq!(got, None);
                    } else {
                        assert_eq!(
                            got,
                            Some(RawFrame {
                                fin: true,
                                opcode: opcode::BINARY,
                                payload: Bytes::from(payload.clone())
                            })
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut b = BytesMut::from(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        let f = decode_frame(&mut b).expect("decode").expect("whole");
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, 1, &b"Hello"[..]));
        // Unmasked ping "Hello".
        let mut b = BytesMut::from(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f][..]);
        let f = decode_frame(&mut b).expect("decode").expect("whole");
        assert_eq!((f.opcode, &f.payload[..]), (opcode::PING, &b"Hello"[..]));
        // Reserved bits, unknown opcodes and long control frames are errors.
        assert_eq!(
            decode_frame(&mut BytesMut::from(&[0xc1, 0x00][..])),
            Err(WsError::Reserved)
        );
        assert_eq!(
            decode_frame(&mut BytesMut::from(&[0x83, 0x00][..])),
            Err(WsError::Opcode(3))
        );
        assert_eq!(
            decode_frame(&mut BytesMut::from(&[0x89, 126, 0, 200][..])),
            Err(WsError::BadControl)
        );
    }

    #[test]
    fn channel_messages_and_protocols() {
        assert_eq!(&channel_message(channel::STDOUT, b"hi")[..], b"\x01hi");
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONNECTION,
            "keep-alive, Upgrade".parse().expect("v"),
        );
        h.insert(http::header::UPGRADE, "websocket".parse().expect("v"));
        h.append(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v5.channel.k8s.io, v4.channel.k8s.io".parse().expect("v"),
        );
        assert!(is_websocket_request(&h));
        assert_eq!(offered_protocols(&h), vec![V5_CHANNEL, V4_CHANNEL]);
    }

    #[tokio::test]
    async fn a_session_answers_pings_reassembles_and_closes() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut ws = WsSession::start(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut out = BytesMut::new();
        let k = Some([9, 8, 7, 6]);
        encode_frame(false, opcode::BINARY, b"\x00par", k, &mut out);
        encode_frame(true, opcode::PING, b"beat", k, &mut out);
        encode_frame(true, opcode::CONTINUATION, b"ts", k, &mut out);
        encode_frame(true, opcode::CLOSE, &1000u16.to_be_bytes(), k, &mut out);
        cwr.write_all(&out).await.expect("write");
        assert_eq!(ws.incoming.recv().await.as_deref(), Some(&b"\x00parts"[..]));
        assert_eq!(ws.incoming.recv().await, None);
        let mut got = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            match decode_frame(&mut got).expect("decode") {
                Some(f) => frames.push((f.opcode, f.payload.to_vec())),
                None => {
                    if crd.read_buf(&mut got).await.expect("read") == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            frames,
            vec![
                (opcode::PONG, b"beat".to_vec()),
                (opcode::CLOSE, 1000u16.to_be_bytes().to_vec())
            ]
        );
    }
}
