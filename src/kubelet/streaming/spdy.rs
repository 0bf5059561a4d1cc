//! SPDY/3.1 framing: the connection protocol under `kubectl exec`/`attach` (kubectl ≤ 1.29) and
//! under every `kubectl port-forward`.
//!
//! There is no maintained Rust crate for SPDY (HTTP/2 replaced it everywhere except in
//! Kubernetes' streaming API), so this module implements the part Kubernetes uses, from the
//! SPDY/3 draft and the behaviour of Go's `moby/spdystream` (what kubectl and the real kubelet
//! speak):
//!
//! - the frames ([`Frame`]): SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
//!   WINDOW_UPDATE and DATA, with their big-endian 8-byte headers ([`Codec::encode`],
//!   [`Codec::decode`]);
//! - header blocks: a count and length-prefixed lowercase names and values, **zlib-compressed with
//!   SPDY/3's preset dictionary** ([`HEADER_DICTIONARY`], Adler-32 `0xe3c6a7c2`), each block ended
//!   with a sync flush, and one compression context per direction for the whole connection (the
//!   second block refers back to the first) — so a [`Codec`] belongs to one connection;
//! - [`Session`]: the server side of a connection over any byte stream: the peer opens streams
//!   (SYN_STREAM, answered with SYN_REPLY), their DATA arrives on a channel, FIN half-closes,
//!   RST_STREAM resets, PINGs are echoed. Flow control (WINDOW_UPDATE) is read and ignored, as
//!   spdystream does.
//!
//! zlib with a preset dictionary comes from `flate2` with its `zlib-rs` backend (a Rust port of
//! zlib): flate2's default miniz backend cannot set dictionaries.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's last frame on the stream (half-close).
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest frame payload (24-bit length).
pub const MAX_FRAME_LEN: usize = 0x00ff_ffff;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// DATA frames written are at most this long.
const MAX_DATA_CHUNK: usize = 32 * 1024;

/// RST_STREAM status codes (SPDY/3 §2.6.2).
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
}

/// Control frame types.
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// SPDY/3's zlib dictionary for header blocks (from the SPDY/3 draft, §2.6.10.1).
#[rustfmt::skip]
pub const HEADER_DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\
\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\
\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-contr\
ol\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\
\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\
\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\
\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\
\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\
\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pra\
gma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05rang\
e\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\
\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\
\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10\
www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\
\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\
\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120\
1202205206300302303304305306307402405406407408409410411412413414415416417502504505203\x20Non\
-Authoritative\x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Re\
quest401\x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20Server\x20Erro\
r501\x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Ju\
n\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20\
Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,a\
pplication/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharse\
t=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// A header block: names (lowercase on the wire) and values; several values of one name are
/// joined with NUL, as SPDY/3 specifies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Adds `name: value` (the name is lowercased).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// A framing error: the connection can't continue.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0} (minik speaks SPDY/3.1)")]
    Version(u16),
    #[error("malformed {frame} frame: {why}")]
    Malformed { frame: &'static str, why: String },
    #[error("frame too large: {0} bytes")]
    TooLarge(usize),
    #[error("header block: {0}")]
    HeaderBlock(String),
}

fn malformed(frame: &'static str, why: impl Into<String>) -> SpdyError {
    SpdyError::Malformed {
        frame,
        why: why.into(),
    }
}

/// The framer of one connection: frame layout plus the two zlib contexts.
pub struct Codec {
    compress: Compress,
    decompress: Decompress,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Codec")
    }
}

impl Codec {
    /// A framer with fresh compression contexts.
    pub fn new() -> Result<Codec, SpdyError> {
        let mut compress = Compress::new(Compression::best(), true);
        compress
            .set_dictionary(HEADER_DICTIONARY)
            .map_err(|e| SpdyError::HeaderBlock(format!("setting the zlib dictionary: {e}")))?;
        Ok(Codec {
            compress,
            decompress: Decompress::new(true),
        })
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME_LEN {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                control(out, kind::SYN_STREAM, *flags, 10 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0); // slot
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                control(out, kind::SYN_REPLY, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                control(out, kind::HEADERS, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, kind::RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(out, kind::SETTINGS, *flags, 4 + 8 * entries.len())?;
                out.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    out.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control(out, kind::PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, kind::GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, kind::WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
        }
        Ok(())
    }

    /// Takes the next whole frame off the front of `buf`; `None` until one is complete.
    /// Control frames of unknown types are skipped, as the protocol requires.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        loop {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len =
                (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
            if buf.len() < 8 + len {
                buf.reserve(8 + len - buf.len());
                return Ok(None);
            }
            let mut head = buf.split_to(8);
            let payload = buf.split_to(len).freeze();
            let first = head.get_u32();
            let flags = head.get_u8();
            if first & 0x8000_0000 == 0 {
                return Ok(Some(Frame::Data {
                    stream_id: first & 0x7fff_ffff,
                    flags,
                    data: payload,
                }));
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
            if let Some(frame) = self.control_frame((first & 0xffff) as u16, flags, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    fn control_frame(
        &mut self,
        t: u16,
        flags: u8,
        mut p: Bytes,
    ) -> Result<Option<Frame>, SpdyError> {
        let need = |p: &Bytes, n: usize, frame: &'static str| {
            if p.len() < n {
                Err(malformed(frame, format!("{} bytes, needs {n}", p.len())))
            } else {
                Ok(())
            }
        };
        Ok(Some(match t {
            kind::SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                let headers = self.decompress_headers(&p)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            kind::SYN_REPLY | kind::HEADERS => {
                need(&p, 4, "SYN_REPLY")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&p)?;
                if t == kind::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            kind::RST_STREAM => {
                need(&p, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            kind::SETTINGS => {
                need(&p, 4, "SETTINGS")?;
                let n = p.get_u32() as usize;
                if p.len() != n.saturating_mul(8) {
                    return Err(malformed(
                        "SETTINGS",
                        format!("{n} entries in {} bytes", p.len()),
                    ));
                }
                let entries = (0..n)
                    .map(|_| {
                        let fid = p.get_u32();
                        ((fid >> 24) as u8, fid & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                need(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            kind::GOAWAY => {
                need(&p, 4, "GOAWAY")?;
                let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
                // SPDY/2 had no status; be lenient.
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            kind::WINDOW_UPDATE => {
                need(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            _ => return Ok(None),
        }))
    }

    fn compress_headers(&mut self, h: &Headers) -> Result<Vec<u8>, SpdyError> {
        let raw = raw_header_block(h)?;
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(format!("compressing: {e}")))?;
            consumed += (self.compress.total_in() - before) as usize;
            // A sync flush is complete when it returns with output space to spare.
            if consumed >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress_headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut consumed = 0;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock(format!(
                    "decompresses to more than {MAX_HEADER_BLOCK} bytes"
                )));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in_before, out_before) = (self.decompress.total_in(), out.len());
            let r =
                self.decompress
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.decompress.total_in() - in_before) as usize;
            match r {
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == dictionary_id() => {
                        self.decompress
                            .set_dictionary(HEADER_DICTIONARY)
                            .map_err(|e| {
                                SpdyError::HeaderBlock(format!("setting the dictionary: {e}"))
                            })?;
                        continue;
                    }
                    Some(id) => {
                        return Err(SpdyError::HeaderBlock(format!(
                            "compressed with an unknown dictionary (Adler-32 {id:#010x})"
                        )));
                    }
                    None => return Err(SpdyError::HeaderBlock(format!("decompressing: {e}"))),
                },
            }
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
            if consumed >= block.len() && out.len() == out_before {
                break;
            }
        }
        parse_header_block(&out)
    }
}

/// The Adler-32 of [`HEADER_DICTIONARY`] (what a zlib stream names it by).
pub fn dictionary_id() -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in HEADER_DICTIONARY {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u8(flags);
    out.put_u8((len >> 16) as u8);
    out.put_u16((len & 0xffff) as u16);
}

fn control(out: &mut BytesMut, t: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    if len > MAX_FRAME_LEN {
        return Err(SpdyError::TooLarge(len));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(t);
    put_flags_len(out, flags, len);
    Ok(())
}

/// The uncompressed header block: count, then length-prefixed lowercase names and values.
fn raw_header_block(h: &Headers) -> Result<Vec<u8>, SpdyError> {
    // Several values of one name travel as one NUL-joined value.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, v) in &h.0 {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some((_, existing)) => {
                existing.push('\0');
                existing.push_str(v);
            }
            None => merged.push((n, v.clone())),
        }
    }
    let mut out = Vec::new();
    out.put_u32(merged.len() as u32);
    for (n, v) in &merged {
        if n.is_empty() {
            return Err(SpdyError::HeaderBlock("empty header name".into()));
        }
        out.put_u32(n.len() as u32);
        out.put_slice(n.as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
    Ok(out)
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |why: &str| SpdyError::HeaderBlock(why.to_string());
    if b.len() < 4 {
        return Err(bad("shorter than its count"));
    }
    let n = b.get_u32() as usize;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut field = || -> Result<String, SpdyError> {
            if b.len() < 4 {
                return Err(bad("truncated length"));
            }
            let len = b.get_u32() as usize;
            if b.len() < len {
                return Err(bad("truncated name or value"));
            }
            let s = String::from_utf8(b[..len].to_vec())
                .map_err(|_| bad("a name or value is not UTF-8"))?;
            b.advance(len);
            Ok(s)
        };
        let name = field()?;
        let value = field()?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        for v in value.split('\0') {
            out.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    Ok(Headers(out))
}

// ---------------------------------------------------------------------------------------------
// The session: the server side of a SPDY connection.

/// A stream the peer opened: its headers, its incoming data, and a writer.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The peer's DATA; closed on its FIN, a reset or the end of the connection.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// Writes DATA on one stream (cheap to clone).
#[derive(Debug, Clone)]
pub struct StreamWriter {
    pub id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends `data` (split into frames); false when the connection is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            let frame = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            };
            if self.out.send(Out::Frame(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes our side (an empty DATA frame with FIN).
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }))
            .await;
    }

    /// Resets the stream (RST_STREAM CANCEL).
    pub async fn reset(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status: status::CANCEL,
            }))
            .await;
    }
}

#[derive(Debug)]
enum Out {
    Frame(Frame),
    /// GOAWAY, flush, shut the connection down.
    Close,
}

/// The server side of a SPDY connection.
#[derive(Debug)]
pub struct Session {
    /// Streams as the peer opens them (already answered with SYN_REPLY).
    pub incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
}

impl Session {
    /// Starts reading and writing frames on `io`.
    pub fn start<T>(io: T) -> Result<Session, SpdyError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        // One codec per direction: its compressor writes, the other's decompressor reads.
        let (encoder, decoder) = (Codec::new()?, Codec::new()?);
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Out>(256);
        let (in_tx, in_rx) = mpsc::channel::<Stream>(32);
        tokio::spawn(write_loop(wr, encoder, out_rx));
        tokio::spawn(read_loop(rd, decoder, out_tx.clone(), in_tx));
        Ok(Session {
            incoming: in_rx,
            out: out_tx,
        })
    }

    /// A handle that can close the session while `incoming` is borrowed elsewhere.
    pub fn closer(&self) -> Closer {
        Closer(self.out.clone())
    }
}

/// Closes a session: GOAWAY, then the connection is shut down once queued frames are written.
#[derive(Debug, Clone)]
pub struct Closer(mpsc::Sender<Out>);

impl Closer {
    pub async fn close(&self) {
        let _ = self.0.send(Out::Close).await;
    }
}

async fn write_loop<W: AsyncWrite>(wr: W, mut codec: Codec, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(wr);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut last_stream = 0;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        // Batch what is already queued into one write.
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) => {
                    if let Frame::SynReply { stream_id, .. } = f {
                        last_stream = last_stream.max(stream_id);
                    }
                    if let Err(e) = codec.encode(&f, &mut buf) {
                        tracing::debug!("spdy: cannot encode a frame: {e}");
                    }
                }
                Out::Close => {
                    closing = true;
                    let goaway = Frame::GoAway {
                        last_good_stream_id: last_stream,
                        status: 0,
                    };
                    let _ = codec.encode(&goaway, &mut buf);
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

async fn read_loop<R: AsyncRead>(
    rd: R,
    mut codec: Codec,
    out: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Stream>,
) {
    tokio::pin!(rd);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match codec.decode(&mut buf) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("spdy: {e}");
                let _ = out
                    .send(Out::Frame(Frame::GoAway {
                        last_good_stream_id: 0,
                        status: status::PROTOCOL_ERROR,
                    }))
                    .await;
                let _ = out.send(Out::Close).await;
                return;
            }
        };
        let Some(frame) = frame else {
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if stream_id == 0 || streams.contains_key(&stream_id) {
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: status::PROTOCOL_ERROR,
                        }))
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let reply = Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Headers::default(),
                };
                if out.send(Out::Frame(reply)).await.is_err() {
                    return;
                }
                let stream = Stream {
                    id: stream_id,
                    headers,
                    data: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        out: out.clone(),
                    },
                };
                if incoming.send(stream).await.is_err() {
                    // Nobody takes new streams any more: refuse it.
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: status::REFUSED_STREAM,
                        }))
                        .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(tx) = streams.get(&stream_id)
                    && tx.send(data).await.is_err()
                {
                    streams.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Only the peer pings (we never do): answer with the same id.
                if out.send(Out::Frame(Frame::Ping { id })).await.is_err() {
                    return;
                }
            }
            Frame::GoAway { .. } => return,
            Frame::SynReply { .. } | Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) {
        let (mut tx, mut rx) = (Codec::new().expect("codec"), Codec::new().expect("codec"));
        let mut wire = BytesMut::new();
        for f in frames {
            tx.encode(f, &mut wire).expect("encode");
        }
        for f in frames {
            assert_eq!(rx.decode(&mut wire).expect("decode").as_ref(), Some(f));
        }
        assert!(wire.is_empty());
        assert_eq!(rx.decode(&mut wire).expect("decode"), None);
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .fold(Headers::default(), |h, (n, v)| h.with(n, v))
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: 0,
                headers: hdrs(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: Headers::default(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: hdrs(&[("a", "b")]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: status::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(0, 4, 100), (1, 7, 65536)],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello\0world"),
            },
        ]);
    }

    #[test]
    fn later_header_blocks_share_the_compression_context() {
        let mut tx = Codec::new().expect("codec");
        let mut wire = BytesMut::new();
        let h = hdrs(&[
            ("streamtype", "stdout"),
            ("x-long-header", "abcdefghijklmnop"),
        ]);
        for id in [1, 3] {
            let f = Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h.clone(),
            };
            tx.encode(&f, &mut wire).expect("encode");
        }
        let first_len = (usize::from(wire[6]) << 8) | usize::from(wire[7]);
        let second = &wire[8 + first_len..];
        let second_len = (usize::from(second[6]) << 8) | usize::from(second[7]);
        // The repeated block is mostly a back-reference into the first one.
        assert!(second_len < first_len, "{second_len} vs {first_len}");
        // A second block can't be read without the first (shared context).
        let mut alone = BytesMut::from(second);
        assert!(Codec::new().expect("codec").decode(&mut alone).is_err());
        let mut rx = Codec::new().expect("codec");
        for _ in 0..2 {
            match rx.decode(&mut wire).expect("decode") {
                Some(Frame::SynStream { headers, .. }) => assert_eq!(headers, h),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The SPDY/3 dictionary's Adler-32, as every SPDY/3 zlib header names it.
        assert_eq!(dictionary_id(), 0xe3c6_a7c2);
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        let mut wire = BytesMut::new();
        Codec::new()
            .expect("codec")
            .encode(
                &Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    headers: hdrs(&[("a", "b")]),
                },
                &mut wire,
            )
            .expect("encode");
        // zlib header with FDICT set, then the dictionary id.
        assert_eq!(wire[12] & 0x0f, 8, "deflate");
        assert_ne!(wire[13] & 0x20, 0, "FDICT");
        assert_eq!(&wire[14..18], &[0xe3, 0xc6, 0xa7, 0xc2]);
    }

    /// A SYN_REPLY with headers `bar: foo`, `foo: bar`, compressed by another SPDY/3
    /// implementation (Chromium's framer test data): our decoder must read it.
    #[test]
    fn reads_a_header_block_compressed_elsewhere() {
        let frame: &[u8] = &[
            0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x01, 0x38, 0xea,
            0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xe5, 0x0e, 0x50, 0xc2, 0x4b, 0x4a, 0x04, 0xe5, 0x0b,
            0x66, 0x80, 0x00, 0x4a, 0xcb, 0xcf, 0x07, 0x08, 0x20, 0x10, 0x95, 0x96, 0x9f, 0x0f,
            0xa2, 0x00, 0x02, 0x28, 0x29, 0xb1, 0x08, 0x20, 0x80, 0x00, 0x00, 0x00, 0x00, 0xff,
            0xff,
        ];
        let mut wire = BytesMut::from(frame);
        let got = Codec::new()
            .expect("codec")
            .decode(&mut wire)
            .expect("decode");
        assert_eq!(
            got,
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: hdrs(&[("bar", "foo"), ("foo", "bar")]),
            })
        );
    }

    #[test]
    fn partial_input_waits_and_bad_input_is_an_error() {
        let mut tx = Codec::new().expect("codec");
        let mut wire = BytesMut::new();
        tx.encode(&Frame::Ping { id: 1 }, &mut wire)
            .expect("encode");
        let mut rx = Codec::new().expect("codec");
        let mut part = BytesMut::from(&wire[..5]);
        assert_eq!(rx.decode(&mut part).expect("partial"), None);
        part.extend_from_slice(&wire[5..]);
        assert_eq!(
            rx.decode(&mut part).expect("whole"),
            Some(Frame::Ping { id: 1 })
        );
        // SPDY/2
        let mut v2 = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(rx.decode(&mut v2), Err(SpdyError::Version(2)));
        // A short RST_STREAM.
        let mut short = BytesMut::from(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            rx.decode(&mut short),
            Err(SpdyError::Malformed { .. })
        ));
        // Garbage in a header block.
        let mut junk =
            BytesMut::from(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(matches!(
            Codec::new().expect("codec").decode(&mut junk),
            Err(SpdyError::HeaderBlock(_))
        ));
        // Unknown control frame types are skipped.
        let mut unknown = BytesMut::from(&[0x80, 0x03, 0x00, 0x0b, 0, 0, 0, 2, 0xd4, 0x74][..]);
        unknown.extend_from_slice(&wire);
        assert_eq!(
            rx.decode(&mut unknown).expect("skip"),
            Some(Frame::Ping { id: 1 })
        );
    }

    #[tokio::test]
    async fn a_session_replies_echoes_pings_and_delivers_data() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::start(server).expect("session");
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut codec = Codec::new().expect("codec");
        let mut out = BytesMut::new();
        for f in [
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[("streamType", "stdin")]),
            },
            Frame::Ping { id: 1 },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"input"),
            },
        ] {
            codec.encode(&f, &mut out).expect("encode");
        }
        cwr.write_all(&out).await.expect("write");
        let mut stream = session.incoming.recv().await.expect("a stream");
        assert_eq!(stream.headers.get("streamtype"), Some("stdin"));
        assert_eq!(stream.data.recv().await.as_deref(), Some(&b"input"[..]));
        assert_eq!(stream.data.recv().await, None, "FIN closes");
        assert!(stream.writer.write(b"output").await);
        stream.writer.close().await;
        session.closer().close().await;
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        loop {
            match codec.decode(&mut buf).expect("decode") {
                Some(f) => got.push(f),
                None => {
                    if crd.read_buf(&mut buf).await.expect("read") == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    headers: Headers::default()
                },
                Frame::Ping { id: 1 },
                Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: Bytes::from_static(b"output")
                },
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: Bytes::new()
                },
                Frame::GoAway {
                    last_good_stream_id: 1,
                    status: 0
                },
            ]
        );
    }
}
