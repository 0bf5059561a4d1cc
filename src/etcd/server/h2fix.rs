//! A transparent shim under plaintext client connections that repairs malformed `:authority`
//! pseudo-headers before hyper/h2 sees them.
//!
//! # Why this exists
//!
//! etcdctl 3.4 dials its maintenance connections (`endpoint status`, `defrag`, `endpoint hashkv`,
//! …) as `passthrough:///http://127.0.0.1:2379`, so grpc-go sends
//! `:authority: http://127.0.0.1:2379`. That is not a URI authority; Go's HTTP/2 server (and so
//! real etcd) accepts it, but the h2 crate rejects the request as malformed and resets the stream
//! with `PROTOCOL_ERROR`. Neither tonic nor hyper offer a hook before h2's validation, so this
//! module fixes the bytes on the wire instead.
//!
//! # How
//!
//! [`H2Fix`] wraps the accepted socket. Writes (server → client) pass through untouched. Reads
//! (client → server) go through a small state machine: the 24-byte client preface and every frame
//! other than HEADERS/CONTINUATION pass through as they are; a header block (HEADERS plus its
//! CONTINUATIONs) is collected, HPACK-decoded with a decoder that tracks the client's dynamic
//! table, and:
//!
//! - on the *first* header block of the connection, if every `:authority` is valid, the block is
//!   forwarded byte for byte and the shim switches itself off for the rest of the connection: from
//!   then on reads go straight to the socket, so well-behaved clients (every real workload) pay
//!   for one HPACK decode per connection and nothing per request. Clients keep one authority per
//!   connection (grpc-go, hyper and Go's `net/http` all do), so the first request decides.
//! - otherwise the connection switches to rewriting: every header block, this one included, is
//!   re-encoded with one HPACK encoder per connection (so h2's decoder state follows ours, not the
//!   client's), `:authority` repaired ([`fix_authority`]), and sent as a HEADERS frame (same
//!   stream, END_STREAM and priority; padding dropped) plus CONTINUATIONs of at most 16 KiB, the
//!   protocol's default SETTINGS_MAX_FRAME_SIZE (also hyper's).
//!
//! Anything unexpected while deciding (HPACK error, a block over [`MAX_BLOCK`], frames interleaved
//! into a header block, a bad preface) makes the shim forward the original bytes and switch itself
//! off, so h2 reports the error exactly as it would without the shim. Once rewriting, h2's HPACK
//! state follows our encoder, so forwarding original bytes would make h2 misread them: the shim
//! fails the connection with an I/O error instead.
//!
//! TLS listeners are not wrapped: the bytes are encrypted there, and etcdctl sends a valid
//! authority over https anyway.

use std::borrow::Cow;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload we emit: the protocol default for SETTINGS_MAX_FRAME_SIZE, which
/// every peer must accept (and what hyper's server advertises).
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The most header-block bytes (raw frames) held for one block, and the most decoded header-list
/// bytes (RFC 7541 sizes) accepted from one block.
pub const MAX_BLOCK: usize = 1 << 20;
/// SETTINGS_HEADER_TABLE_SIZE: the protocol default, which hyper's server (as tonic sets it up)
/// does not change. The client's table may not grow beyond it, and our encoder's table is sized so.
const HPACK_TABLE_SIZE: usize = 4096;
/// How much is read from the socket at a time while the shim is active.
const READ_CHUNK: usize = 16 * 1024;

/// An accepted plaintext connection, with `:authority` repaired on the way in.
pub struct H2Fix<IO = TcpStream> {
    io: IO,
    /// `None` once the shim is off (or was never on): reads go straight to `io`.
    rw: Option<Box<Rewriter>>,
}

impl<IO> H2Fix<IO> {
    /// Wraps `io`, repairing `:authority` if `rewrite`, passing everything through otherwise
    /// (for TLS, where the bytes seen here are encrypted).
    pub fn new(io: IO, rewrite: bool) -> Self {
        Self {
            io,
            rw: rewrite.then(|| Box::new(Rewriter::new())),
        }
    }
}

impl Connected for H2Fix<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for H2Fix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let Some(rw) = this.rw.as_deref_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            if rw.out_pos < rw.out.len() {
                let n = buf.remaining().min(rw.out.len() - rw.out_pos);
                buf.put_slice(&rw.out[rw.out_pos..rw.out_pos + n]);
                rw.out_pos += n;
                if rw.out_pos == rw.out.len() {
                    rw.out.clear();
                    rw.out_pos = 0;
                    if matches!(rw.state, State::Off) {
                        this.rw = None;
                    }
                }
                return Poll::Ready(Ok(()));
            }
            match rw.state {
                State::Off => {
                    this.rw = None;
                    continue;
                }
                State::Failed => return Poll::Ready(Err(failed())),
                _ => {}
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = ReadBuf::new(&mut rw.inbuf[..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            if n == 0 {
                rw.eof();
                if rw.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let inbuf = std::mem::take(&mut rw.inbuf);
            let res = rw.process(&inbuf[..n]);
            rw.inbuf = inbuf;
            if let Err(e) = res {
                rw.state = State::Failed;
                rw.out.clear();
                rw.out_pos = 0;
                return Poll::Ready(Err(e));
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H2Fix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "h2fix: cannot rewrite the client's header block",
    )
}

/// Whether h2 accepts `value` as `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    Authority::try_from(value).is_ok()
}

/// Repairs an `:authority` value: a valid one is kept; otherwise a leading `scheme://` and any
/// path, query or fragment are stripped (`http://127.0.0.1:2379/x` → `127.0.0.1:2379`); `None`
/// if even that is not valid (the header is then dropped).
pub fn fix_authority(value: &[u8]) -> Option<&[u8]> {
    if valid_authority(value) {
        return Some(value);
    }
    let mut v = value;
    if let Some(i) = v.windows(3).position(|w| w == b"://") {
        v = &v[i + 3..];
    }
    if let Some(i) = v.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')) {
        v = &v[..i];
    }
    valid_authority(v).then_some(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// So many bytes of the client preface seen.
    Preface(usize),
    /// Collecting a frame header into `head`.
    Head,
    /// Passing through so many more bytes of a frame payload.
    Skip(usize),
    /// Collecting so many more payload bytes of a HEADERS/CONTINUATION frame into `raw`.
    Block(usize),
    /// Passing everything through.
    Off,
    /// Rewriting failed: the connection is dead.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No header block seen yet.
    Deciding,
    /// Every header block is re-encoded.
    Rewriting,
}

/// The read-side state machine.
struct Rewriter {
    state: State,
    mode: Mode,
    /// Bytes ready for the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Socket reads land here.
    inbuf: Vec<u8>,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// The raw frames of the header block being collected.
    raw: Vec<u8>,
    /// Where the payload of the frame being collected starts in `raw`.
    frame_start: usize,
    /// The header block fragment collected so far.
    frag: Vec<u8>,
    /// Whether a header block is open (a HEADERS without END_HEADERS was seen).
    open: bool,
    /// The open block's stream identifier (as on the wire) and END_STREAM flag.
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// Decoded headers of a block while deciding: names and values back to back, and their
    /// lengths.
    names_values: Vec<u8>,
    lens: Vec<(usize, usize)>,
    /// The re-encoded block.
    encoded: Vec<u8>,
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(HPACK_TABLE_SIZE);
        Self {
            state: State::Preface(0),
            mode: Mode::Deciding,
            out: Vec::with_capacity(READ_CHUNK),
            out_pos: 0,
            inbuf: vec![0; READ_CHUNK],
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            raw: Vec::new(),
            frame_start: 0,
            frag: Vec::new(),
            open: false,
            stream: [0; 4],
            end_stream: false,
            priority: None,
            decoder,
            encoder,
            names_values: Vec::new(),
            lens: Vec::new(),
            encoded: Vec::new(),
        }
    }

    /// Consumes bytes read from the client, appending what the server should read to `out`.
    fn process(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Off => {
                    self.out.extend_from_slice(input);
                    return Ok(());
                }
                State::Failed => return Err(failed()),
                State::Preface(seen) => {
                    let k = input.len().min(PREFACE.len() - seen);
                    if input[..k] != PREFACE[seen..seen + k] {
                        // Not HTTP/2 after all: let hyper deal with it.
                        self.state = State::Off;
                        continue;
                    }
                    self.out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if seen + k == PREFACE.len() {
                        State::Head
                    } else {
                        State::Preface(seen + k)
                    };
                }
                State::Skip(left) => {
                    let k = input.len().min(left);
                    self.out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if k == left {
                        State::Head
                    } else {
                        State::Skip(left - k)
                    };
                }
                State::Head => {
                    let k = input.len().min(FRAME_HEADER_LEN - self.head_len);
                    self.head[self.head_len..self.head_len + k].copy_from_slice(&input[..k]);
                    self.head_len += k;
                    input = &input[k..];
                    if self.head_len == FRAME_HEADER_LEN {
                        self.head_len = 0;
                        self.on_frame_head()?;
                    }
                }
                State::Block(left) => {
                    let k = input.len().min(left);
                    self.raw.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    if k == left {
                        self.on_block_frame()?;
                    } else {
                        self.state = State::Block(left - k);
                    }
                }
            }
        }
        Ok(())
    }

    /// The client closed its side: while deciding, forward whatever is held, as it came.
    fn eof(&mut self) {
        if self.mode == Mode::Deciding {
            self.out.extend_from_slice(&self.raw);
            self.out.extend_from_slice(&self.head[..self.head_len]);
        }
        self.raw.clear();
        self.head_len = 0;
        self.state = State::Off;
    }

    /// A whole frame header is in `head`.
    fn on_frame_head(&mut self) -> io::Result<()> {
        let head = self.head;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let ty = head[3];
        let same_stream = head[5..9] == self.stream;
        if self.open && !(ty == CONTINUATION && same_stream) {
            // Frames interleaved into a header block: a protocol error for h2 to report.
            self.raw.extend_from_slice(&head);
            return self.give_up();
        }
        if !self.open && ty != HEADERS {
            self.out.extend_from_slice(&head);
            self.state = if len == 0 {
                State::Head
            } else {
                State::Skip(len)
            };
            return Ok(());
        }
        if !self.open {
            self.stream.copy_from_slice(&head[5..9]);
            self.end_stream = head[4] & END_STREAM != 0;
            self.priority = None;
        }
        self.raw.extend_from_slice(&head);
        if self.raw.len() + len > MAX_BLOCK {
            return self.give_up();
        }
        self.frame_start = self.raw.len();
        if len == 0 {
            self.on_block_frame()
        } else {
            self.state = State::Block(len);
            Ok(())
        }
    }

    /// A whole HEADERS/CONTINUATION frame is in `raw`, its payload from `frame_start`.
    fn on_block_frame(&mut self) -> io::Result<()> {
        let head = &self.raw[self.frame_start - FRAME_HEADER_LEN..self.frame_start];
        let (ty, flags) = (head[3], head[4]);
        let mut payload = &self.raw[self.frame_start..];
        if ty == HEADERS {
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some((&p, rest)) = payload.split_first() else {
                    return self.give_up();
                };
                pad = usize::from(p);
                payload = rest;
            }
            if flags & PRIORITY != 0 {
                let Some((prio, rest)) = payload.split_first_chunk::<5>() else {
                    return self.give_up();
                };
                self.priority = Some(*prio);
                payload = rest;
            }
            if pad > payload.len() {
                return self.give_up();
            }
            payload = &payload[..payload.len() - pad];
        }
        self.frag.extend_from_slice(payload);
        self.state = State::Head;
        if flags & END_HEADERS == 0 {
            self.open = true;
            return Ok(());
        }
        self.open = false;
        let res = self.finish_block();
        self.raw.clear();
        self.frag.clear();
        res
    }

    /// The header block is complete in `frag`: forward or re-encode it.
    fn finish_block(&mut self) -> io::Result<()> {
        match self.mode {
            Mode::Deciding => {
                let (ok, needs_fix) = self.decode_to_list();
                if !ok {
                    return self.give_up();
                }
                if !needs_fix {
                    self.out.extend_from_slice(&self.raw);
                    self.state = State::Off;
                    return Ok(());
                }
                self.mode = Mode::Rewriting;
                tracing::debug!(
                    "h2fix: the client sends a malformed :authority; rewriting this connection"
                );
                self.encoded.clear();
                let mut at = 0;
                for &(n, v) in &self.lens {
                    let name = &self.names_values[at..at + n];
                    let value = &self.names_values[at + n..at + n + v];
                    at += n + v;
                    encode(&mut self.encoder, &mut self.encoded, name, value);
                }
                self.names_values.clear();
                self.lens.clear();
            }
            Mode::Rewriting => {
                if !self.decode_reencode() {
                    return self.give_up();
                }
            }
        }
        self.emit_block();
        Ok(())
    }

    /// Decodes `frag` into `names_values`/`lens`; (decoded fine and within limits, some
    /// `:authority` needs fixing).
    fn decode_to_list(&mut self) -> (bool, bool) {
        let (decoder, frag) = (&mut self.decoder, &self.frag);
        let (names_values, lens) = (&mut self.names_values, &mut self.lens);
        names_values.clear();
        lens.clear();
        let mut size = 0usize;
        let mut needs_fix = false;
        let res = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode_with_cb(frag, |name: Cow<[u8]>, value: Cow<[u8]>| {
                size += name.len() + value.len() + 32;
                if size > MAX_BLOCK {
                    return;
                }
                if &*name == b":authority" && !valid_authority(&value) {
                    needs_fix = true;
                }
                names_values.extend_from_slice(&name);
                names_values.extend_from_slice(&value);
                lens.push((name.len(), value.len()));
            })
        }));
        (matches!(res, Ok(Ok(()))) && size <= MAX_BLOCK, needs_fix)
    }

    /// Decodes `frag` and re-encodes it, repaired, into `encoded`; false on error or over limits.
    fn decode_reencode(&mut self) -> bool {
        let (decoder, encoder, frag) = (&mut self.decoder, &mut self.encoder, &self.frag);
        let encoded = &mut self.encoded;
        encoded.clear();
        let mut size = 0usize;
        let res = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode_with_cb(frag, |name: Cow<[u8]>, value: Cow<[u8]>| {
                size += name.len() + value.len() + 32;
                if size <= MAX_BLOCK {
                    encode(encoder, encoded, &name, &value);
                }
            })
        }));
        matches!(res, Ok(Ok(()))) && size <= MAX_BLOCK
    }

    /// Writes `encoded` as a HEADERS frame and CONTINUATIONs.
    fn emit_block(&mut self) {
        let prio_len = if self.priority.is_some() { 5 } else { 0 };
        let mut rest = &self.encoded[..];
        let mut first = true;
        while first || !rest.is_empty() {
            let room = MAX_FRAME_PAYLOAD - if first { prio_len } else { 0 };
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            rest = tail;
            let mut flags = if rest.is_empty() { END_HEADERS } else { 0 };
            let (ty, len) = if first {
                if self.end_stream {
                    flags |= END_STREAM;
                }
                if self.priority.is_some() {
                    flags |= PRIORITY;
                }
                (HEADERS, prio_len + chunk.len())
            } else {
                (CONTINUATION, chunk.len())
            };
            let len = (len as u32).to_be_bytes();
            self.out.extend_from_slice(&len[1..]);
            self.out.extend_from_slice(&[ty, flags]);
            self.out.extend_from_slice(&self.stream);
            if first && let Some(prio) = &self.priority {
                self.out.extend_from_slice(prio);
            }
            self.out.extend_from_slice(chunk);
            first = false;
        }
    }

    /// Something is off with the client's header block. While deciding, forward everything as it
    /// came and step aside; once rewriting, h2's HPACK state no longer matches the client's, so
    /// fail the connection.
    fn give_up(&mut self) -> io::Result<()> {
        self.open = false;
        self.frag.clear();
        match self.mode {
            Mode::Deciding => {
                self.out.extend_from_slice(&self.raw);
                self.raw.clear();
                self.state = State::Off;
                Ok(())
            }
            Mode::Rewriting => {
                self.raw.clear();
                self.state = State::Failed;
                Err(failed())
            }
        }
    }
}

/// Encodes one header, repairing `:authority`.
fn encode(encoder: &mut Encoder<'_>, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let value = if name == b":authority" {
        match fix_authority(value) {
            Some(v) => v,
            None => return,
        }
    } else {
        value
    };
    // Writing into a Vec cannot fail.
    let _ = encoder.encode_header_into((name, value), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[ty, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// How a header block is framed.
    #[derive(Clone, Copy, Default)]
    struct Framing {
        end_stream: bool,
        pad: Option<u8>,
        priority: Option<[u8; 5]>,
        /// Split the fragment into frames of at most this many bytes.
        split: Option<usize>,
    }

    /// Encodes `headers` as a client would. `:authority` goes in as grpc-go sends it: a literal
    /// with incremental indexing (name index 1) the first time, so that later requests reference
    /// it from the dynamic table (`authority_index`).
    fn client_block(
        enc: &mut Encoder<'_>,
        headers: &Headers,
        authority_index: Option<u8>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in headers {
            if n == b":authority" {
                match authority_index {
                    Some(i) => out.push(0x80 | i),
                    None => {
                        out.push(0x41);
                        out.push(u8::try_from(v.len()).unwrap());
                        out.extend_from_slice(v);
                    }
                }
            } else {
                enc.encode_header_into((n, v), &mut out).unwrap();
            }
        }
        out
    }

    fn frames_for_block(stream: u32, block: &[u8], framing: Framing) -> Vec<u8> {
        let chunks: Vec<&[u8]> = match framing.split {
            Some(n) if !block.is_empty() => block.chunks(n).collect(),
            _ => vec![block],
        };
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            if i > 0 {
                out.extend(frame(CONTINUATION, flags, stream, chunk));
                continue;
            }
            let mut payload = Vec::new();
            if framing.end_stream {
                flags |= END_STREAM;
            }
            if let Some(pad) = framing.pad {
                flags |= PADDED;
                payload.push(pad);
            }
            if let Some(p) = framing.priority {
                flags |= PRIORITY;
                payload.extend_from_slice(&p);
            }
            payload.extend_from_slice(chunk);
            payload.extend(std::iter::repeat_n(0xAA, framing.pad.unwrap_or(0).into()));
            out.extend(frame(HEADERS, flags, stream, &payload));
        }
        out
    }

    /// What the server sees: per header block (stream, END_STREAM, priority, headers); other
    /// frames as they are.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Block(u32, bool, Option<[u8; 5]>, Headers),
        Other(u8, u8, u32, Vec<u8>),
    }

    /// Parses the frames the server reads and decodes the header blocks with one HPACK decoder,
    /// as h2 does. Also checks the framing rules the rewriter must keep.
    fn server_view(mut b: &[u8]) -> Vec<Seen> {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut seen = Vec::new();
        let mut frag = Vec::new();
        let mut cur: Option<(u32, bool, Option<[u8; 5]>)> = None;
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let (ty, flags) = (b[3], b[4]);
            let stream = u32::from_be_bytes(b[5..9].try_into().unwrap());
            let payload = &b[9..9 + len];
            b = &b[9 + len..];
            assert!(len <= MAX_FRAME_PAYLOAD);
            match ty {
                HEADERS => {
                    assert!(cur.is_none());
                    let mut p = payload;
                    let mut pad = 0;
                    if flags & PADDED != 0 {
                        pad = usize::from(p[0]);
                        p = &p[1..];
                    }
                    let mut prio = None;
                    if flags & PRIORITY != 0 {
                        prio = Some(p[..5].try_into().unwrap());
                        p = &p[5..];
                    }
                    frag.extend_from_slice(&p[..p.len() - pad]);
                    cur = Some((stream, flags & END_STREAM != 0, prio));
                }
                CONTINUATION => {
                    assert_eq!(cur.unwrap().0, stream);
                    frag.extend_from_slice(payload);
                }
                _ => {
                    assert!(cur.is_none());
                    seen.push(Seen::Other(ty, flags, stream, payload.to_vec()));
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let (s, es, prio) = cur.take().unwrap();
                seen.push(Seen::Block(s, es, prio, dec.decode(&frag).unwrap()));
                frag.clear();
            }
        }
        assert!(cur.is_none());
        seen
    }

    /// Feeds `input` through a rewriter `chunk` bytes at a time.
    fn run(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut rw = Rewriter::new();
        for c in input.chunks(chunk) {
            rw.process(c)?;
        }
        rw.eof();
        Ok(rw.out)
    }

    fn request(path: &str, authority: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.26.0"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn with(mut headers: Headers, name: &str, value: &[u8]) -> Headers {
        headers.push((name.as_bytes().to_vec(), value.to_vec()));
        headers
    }

    /// A connection of several requests reusing the client's dynamic table, with padding,
    /// priority and CONTINUATIONs, and other frames in between. Returns the bytes and what the
    /// server should see, `:authority` being `expect` (dropped if `None`).
    fn conversation(authority: &str, expect: Option<&str>) -> (Vec<u8>, Vec<Seen>) {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        let mut want = Vec::new();
        input.extend(frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0]));
        want.push(Seen::Other(0x4, 0, 0, vec![0, 2, 0, 0, 0, 0]));
        let big = vec![b'x'; 40_000];
        let (status, defrag) = (
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Maintenance/Defragment",
        );
        // (headers, framing, where :authority is in the client's table, if it is)
        let requests: Vec<(Headers, Framing, Option<u8>)> = vec![
            // Adds :authority, then te (:authority at 63).
            (request(status, authority), Framing::default(), None),
            (
                request(defrag, authority),
                Framing {
                    pad: Some(7),
                    priority: Some([0x80, 0, 0, 1, 200]),
                    ..Framing::default()
                },
                Some(63),
            ),
            // Adds x-custom; then x-big, larger than the table, empties it.
            (
                with(
                    with(
                        request("/etcdserverpb.Maintenance/HashKV", authority),
                        "x-custom",
                        b"v1",
                    ),
                    "x-big",
                    &big,
                ),
                Framing {
                    split: Some(10_000),
                    pad: Some(0),
                    ..Framing::default()
                },
                Some(63),
            ),
            // The table is empty: :authority is a literal again; then te, x-custom.
            (
                with(request(status, authority), "x-custom", b"v2"),
                Framing {
                    split: Some(3),
                    priority: Some([0, 0, 0, 0, 15]),
                    end_stream: true,
                    ..Framing::default()
                },
                None,
            ),
            (
                request("/etcdserverpb.KV/Range", authority),
                Framing {
                    split: Some(1),
                    ..Framing::default()
                },
                Some(64),
            ),
        ];
        for (i, (headers, framing, index)) in requests.into_iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            let block = client_block(&mut enc, &headers, index);
            input.extend(frames_for_block(stream, &block, framing));
            let fixed = headers
                .into_iter()
                .filter_map(|(n, v)| match (&n[..], expect) {
                    (b":authority", Some(a)) => Some((n, a.as_bytes().to_vec())),
                    (b":authority", None) => None,
                    _ => Some((n, v)),
                })
                .collect();
            want.push(Seen::Block(
                stream,
                framing.end_stream,
                framing.priority,
                fixed,
            ));
            if !framing.end_stream {
                input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 3, 1, 2, 3]));
                want.push(Seen::Other(
                    0x0,
                    END_STREAM,
                    stream,
                    vec![0, 0, 0, 0, 3, 1, 2, 3],
                ));
            }
            input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
            want.push(Seen::Other(0x8, 0, 0, vec![0, 0, 1, 0]));
            input.extend(frame(0x6, 0, 0, &[i as u8; 8]));
            want.push(Seen::Other(0x6, 0, 0, vec![i as u8; 8]));
        }
        (input, want)
    }

    #[test]
    fn fix_authority_values() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("http://127.0.0.1:1234", Some("127.0.0.1:1234")),
            ("https://example.com:443/a/b?c#d", Some("example.com:443")),
            ("localhost:2379/", Some("localhost:2379")),
            ("[::1]:2379", Some("[::1]:2379")),
            ("http://[::1]:2379", Some("[::1]:2379")),
            ("unix:///tmp/etcd.sock", None),
            ("", None),
            ("a b", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                fix_authority(input.as_bytes()),
                want.map(str::as_bytes),
                "{input}"
            );
        }
    }

    #[test]
    fn rewrites_authority_across_requests_and_splits() {
        let (input, want) = conversation("http://127.0.0.1:1234", Some("127.0.0.1:1234"));
        let whole = run(&input, input.len()).unwrap();
        assert_eq!(server_view(&whole), want);
        for chunk in [1, 2, 3, 5, 8, 9, 10, 17, 1000, 16_393] {
            assert_eq!(run(&input, chunk).unwrap(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn drops_an_unfixable_authority() {
        let (input, want) = conversation("unix:///tmp/etcd.sock", None);
        assert_eq!(server_view(&run(&input, 7).unwrap()), want);
    }

    #[test]
    fn valid_authority_passes_through_untouched() {
        let (input, want) = conversation("127.0.0.1:1234", Some("127.0.0.1:1234"));
        for chunk in [1, 9, input.len()] {
            assert_eq!(run(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
        assert_eq!(server_view(&input), want);
        // The first request decides, and the shim steps aside.
        let first_block_end = PREFACE.len() + 15 + 9 + usize::from(input[PREFACE.len() + 17]);
        let mut rw = Rewriter::new();
        rw.process(&input[..first_block_end]).unwrap();
        assert_eq!(rw.state, State::Off);
    }

    #[test]
    fn huffman_coded_valid_authority_passes_through() {
        // RFC 7541 C.4.1: GET http://www.example.com/, Huffman-coded.
        let block = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
        assert_eq!(run(&input, 1).unwrap(), input);
    }

    /// While deciding, anything odd is forwarded as it came, for h2 to judge.
    #[test]
    fn malformed_input_passes_through_while_deciding() {
        let mut cases = Vec::new();
        // An HPACK error (index out of range), then DATA.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0x7f]));
        c.extend(frame(0x0, END_STREAM, 1, b"data"));
        cases.push(c);
        // A frame interleaved into a header block.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, 0, 1, &[0x83]));
        c.extend(frame(0x0, END_STREAM, 1, b"data"));
        c.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x86]));
        cases.push(c);
        // A CONTINUATION on another stream.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, 0, 1, &[0x83]));
        c.extend(frame(CONTINUATION, END_HEADERS, 3, &[0x86]));
        cases.push(c);
        // Padding longer than the payload; PRIORITY without its fields.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x83]));
        cases.push(c);
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]));
        cases.push(c);
        // A header block over the limit.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, 0, 1, &[0x83]));
        for _ in 0..70 {
            c.extend(frame(CONTINUATION, 0, 1, &[0x86; 16_384]));
        }
        c.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x86]));
        cases.push(c);
        // A truncated connection.
        let mut c = PREFACE.to_vec();
        c.extend(frame(HEADERS, 0, 1, &[0x83, 0x86]));
        c.extend(&frame(CONTINUATION, END_HEADERS, 1, &[0x84])[..6]);
        cases.push(c);
        // Not HTTP/2.
        cases.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        for (i, c) in cases.iter().enumerate() {
            for chunk in [1, 4096, c.len()] {
                assert_eq!(&run(c, chunk).unwrap(), c, "case {i}, chunk {chunk}");
            }
        }
    }

    /// Once rewriting, h2's HPACK state follows ours, so original bytes cannot be forwarded.
    #[test]
    fn hpack_error_while_rewriting_fails_the_connection() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        let block = client_block(&mut enc, &request("/a", "http://h:1"), None);
        input.extend(frames_for_block(1, &block, Framing::default()));
        let mut rw = Rewriter::new();
        rw.process(&input).unwrap();
        assert_eq!(rw.mode, Mode::Rewriting);
        let bad = frame(HEADERS, END_HEADERS, 3, &[0xff, 0xff, 0x7f]);
        assert!(rw.process(&bad).is_err());
        assert!(rw.process(b"more").is_err());
    }

    /// Yields `step` bytes per read.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .step
                .min(buf.remaining())
                .min(self.data.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn async_read_with_small_reads_and_buffers() {
        let (input, want) = conversation("http://127.0.0.1:1234", Some("127.0.0.1:1234"));
        for (step, bufsize) in [(1, 1), (1, 5), (7, 3), (100_000, 10), (100_000, 65_536)] {
            let trickle = Trickle {
                data: input.clone(),
                pos: 0,
                step,
            };
            let mut io = H2Fix::new(trickle, true);
            let mut out = Vec::new();
            let mut buf = vec![0; bufsize];
            loop {
                let n = io.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(server_view(&out), want, "step {step}, buffer {bufsize}");
        }
        // Untouched when valid, and once decided the shim is gone.
        let (input, _) = conversation("127.0.0.1:1234", Some("127.0.0.1:1234"));
        let mut io = H2Fix::new(
            Trickle {
                data: input.clone(),
                pos: 0,
                step: 3,
            },
            true,
        );
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, input);
        assert!(io.rw.is_none());
        // Pass-through mode (TLS) never looks.
        let data = b"\x16\x03\x01 not http/2".to_vec();
        let mut io = H2Fix::new(
            Trickle {
                data: data.clone(),
                pos: 0,
                step: 4,
            },
            false,
        );
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }
}
