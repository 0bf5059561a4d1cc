//! minik's demo HTTP echo server (image `minik/echo:1.0`).
//!
//! It answers every request with who answered (its pod name: env `POD_NAME`, else the host name,
//! which Docker and the kubelet set to the pod's name) and what it received: the method, path,
//! query, protocol, the peer's address and the headers, as plain text — or as JSON with
//! `?format=json` or `Accept: application/json`. `/healthz` answers `200 ok` (for probes).
//!
//! HTTP/1.0 and 1.1 with keep-alive, one thread per connection, on `0.0.0.0:$PORT` (default
//! 8080). Request bodies (`Content-Length` or chunked) are read and counted, not echoed. A
//! malformed request gets `400 Bad Request` (`431` for an oversized head) and the connection is
//! closed; nothing a client sends can crash the server. SIGTERM and SIGINT exit 0 at once (it is
//! PID 1 in its container, where signals without a handler are ignored).
//!
//! std only, no dependencies: it is built as a static binary (`-C target-feature=+crt-static`)
//! for a `FROM scratch` image by `minik image build echo`.

use std::ffi::c_int;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const VERSION: &str = "1.0";
/// Longest request line or header line.
const MAX_LINE: usize = 8 * 1024;
/// Longest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Connections served at once; more get `503` and are closed.
const MAX_CONNECTIONS: usize = 512;
/// How long an idle keep-alive connection (or a slow client) is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

unsafe extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
    fn write(fd: c_int, buf: *const u8, count: usize) -> isize;
    fn _exit(status: c_int) -> !;
    fn gethostname(name: *mut u8, len: usize) -> c_int;
}

extern "C" fn on_signal(signo: c_int) {
    let msg: &[u8] = if signo == SIGINT {
        b"echo: got SIGINT, exiting\n"
    } else {
        b"echo: got SIGTERM, exiting\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; msg is a valid static buffer.
    unsafe {
        write(2, msg.as_ptr(), msg.len());
        _exit(0);
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for buf.len() bytes.
    if unsafe { gethostname(buf.as_mut_ptr(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// What every answer says about the server.
struct Server {
    pod: String,
    hostname: String,
}

fn main() {
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { signal(signum, on_signal as extern "C" fn(c_int) as usize) };
    }
    let port = match std::env::var("PORT") {
        Ok(p) if !p.trim().is_empty() => match p.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("echo: PORT={p:?} is not a port number (1-65535)");
                std::process::exit(2);
            }
        },
        _ => 8080,
    };
    let hostname = hostname().unwrap_or_else(|| "unknown".to_string());
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| hostname.clone());
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo: cannot listen on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("echo {VERSION}: pod {pod} listening on 0.0.0.0:{port}");
    let server = Arc::new(Server { pod, hostname });
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                eprintln!("echo: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = respond_plain(&mut stream, 503, "too many connections\n", false, false);
            continue;
        }
        let server = Arc::clone(&server);
        let counter = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = serve(&server, stream);
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Path and query of the request target (origin-form, absolute-form or `*`).
    fn path_and_query(&self) -> (&str, &str) {
        let mut t = self.target.as_str();
        for scheme in ["http://", "https://"] {
            if t.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            {
                let rest = &t[scheme.len()..];
                t = rest.find('/').map_or("/", |i| &rest[i..]);
            }
        }
        let t = t.split('#').next().unwrap_or(t);
        match t.split_once('?') {
            Some((p, q)) => (p, q),
            None => (t, ""),
        }
    }

    fn keep_alive(&self) -> bool {
        if self.header_has_token("Connection", "close") {
            return false;
        }
        self.version == "HTTP/1.1" || self.header_has_token("Connection", "keep-alive")
    }
}

/// Why a request could not be read.
#[derive(Debug)]
enum ReadError {
    /// The peer closed (or went idle) between requests: nothing to answer.
    Closed,
    /// The request is malformed: answer with this status and reason, then close.
    Bad(u16, &'static str),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Serves one connection until it closes, a request asks to close, or a request is bad.
fn serve(server: &Server, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let peer = stream.peer_addr().ok();
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_head(&mut reader) {
            Ok(r) => r,
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return Ok(()),
            Err(ReadError::Bad(status, why)) => {
                return respond_plain(&mut writer, status, &format!("{why}\n"), false, false);
            }
        };
        let body_bytes = match read_body(&mut reader, &req) {
            Ok(n) => n,
            Err(ReadError::Bad(status, why)) => {
                return respond_plain(&mut writer, status, &format!("{why}\n"), false, false);
            }
            Err(_) => return Ok(()),
        };
        let keep_alive = req.keep_alive();
        let head_only = req.method == "HEAD";
        let (path, query) = req.path_and_query();
        if path == "/healthz" {
            respond_plain(&mut writer, 200, "ok", keep_alive, head_only)?;
        } else if wants_json(&req, query) {
            let body = json_body(server, &req, peer, body_bytes);
            respond(
                &mut writer,
                200,
                "application/json",
                &body,
                keep_alive,
                head_only,
            )?;
        } else {
            let body = text_body(server, &req, peer, body_bytes);
            respond_plain(&mut writer, 200, &body, keep_alive, head_only)?;
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads one line (up to `\n`) of at most `MAX_LINE` bytes; `None` at end of stream.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    let limit = MAX_LINE.min(*budget) as u64 + 1;
    let n = reader.take(limit).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if n as u64 >= limit {
            return Err(ReadError::Bad(431, "request header too large"));
        }
        return Err(ReadError::Bad(400, "truncated request"));
    }
    *budget = budget.saturating_sub(n);
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn read_head(reader: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 2.2: ignore empty lines before the request line.
    let line = loop {
        match read_line(reader, &mut budget) {
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Ok(None) => return Err(ReadError::Closed),
            Err(ReadError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Closed);
            }
            Err(e) => return Err(e),
        }
    };
    let line = String::from_utf8(line).map_err(|_| ReadError::Bad(400, "bad request line"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "bad request line"));
    };
    if !is_token(method) {
        return Err(ReadError::Bad(400, "bad method"));
    }
    if target.is_empty()
        || target.bytes().any(|b| b <= b' ' || b == 0x7f)
        || !(target.starts_with('/')
            || target == "*"
            || target.to_ascii_lowercase().starts_with("http://")
            || target.to_ascii_lowercase().starts_with("https://"))
    {
        return Err(ReadError::Bad(400, "bad request target"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ReadError::Bad(400, "unsupported HTTP version"));
    }
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Bad(400, "truncated request"));
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many headers"));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(ReadError::Bad(400, "obsolete header line folding"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ReadError::Bad(400, "bad header line"));
        };
        let name = std::str::from_utf8(&line[..colon]).unwrap_or("");
        if !is_token(name) {
            return Err(ReadError::Bad(400, "bad header name"));
        }
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim_matches(|c| c == ' ' || c == '\t')
            .to_string();
        if value.chars().any(|c| c == '\0' || c == '\r' || c == '\n') {
            return Err(ReadError::Bad(400, "bad header value"));
        }
        headers.push((name.to_string(), value));
    }
    let req = Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    };
    if req.version == "HTTP/1.1" && req.header("Host").is_none() {
        return Err(ReadError::Bad(400, "missing Host header"));
    }
    Ok(req)
}

/// Reads and discards the request body; returns its length.
fn read_body(reader: &mut impl BufRead, req: &Request) -> Result<u64, ReadError> {
    let te: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Transfer-Encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    if !te.is_empty() {
        if req.header("Content-Length").is_some() {
            return Err(ReadError::Bad(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err(ReadError::Bad(400, "unsupported Transfer-Encoding"));
        }
        return read_chunked(reader);
    }
    let mut length: Option<u64> = None;
    for (_, v) in req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ReadError::Bad(400, "bad Content-Length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| ReadError::Bad(400, "bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ReadError::Bad(400, "conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    let copied = io::copy(&mut reader.take(length), &mut io::sink())?;
    if copied != length {
        return Err(ReadError::Closed);
    }
    Ok(length)
}

fn read_chunked(reader: &mut impl BufRead) -> Result<u64, ReadError> {
    let mut total = 0u64;
    let mut budget = MAX_HEAD;
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Closed);
        };
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            u64::from_str_radix(size, 16).map_err(|_| ReadError::Bad(400, "bad chunk size"))?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            loop {
                match read_line(reader, &mut budget)? {
                    Some(l) if l.is_empty() => return Ok(total),
                    Some(_) => continue,
                    None => return Err(ReadError::Closed),
                }
            }
        }
        let copied = io::copy(&mut reader.take(size), &mut io::sink())?;
        if copied != size {
            return Err(ReadError::Closed);
        }
        total = total.saturating_add(size);
        match read_line(reader, &mut budget)? {
            Some(l) if l.is_empty() => {}
            Some(_) => return Err(ReadError::Bad(400, "bad chunk")),
            None => return Err(ReadError::Closed),
        }
        budget = MAX_HEAD;
    }
}

fn wants_json(req: &Request, query: &str) -> bool {
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("format", "json")) => return true,
            Some(("format", "text")) => return false,
            _ => {}
        }
    }
    req.header("Accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("application/json"))
}

fn text_body(server: &Server, req: &Request, peer: Option<SocketAddr>, body: u64) -> String {
    let (path, query) = req.path_and_query();
    let mut out = String::new();
    let _ = writeln!(out, "pod: {}", server.pod);
    let _ = writeln!(out, "hostname: {}", server.hostname);
    let _ = writeln!(out, "method: {}", req.method);
    let _ = writeln!(out, "path: {path}");
    if !query.is_empty() {
        let _ = writeln!(out, "query: {query}");
    }
    let _ = writeln!(out, "protocol: {}", req.version);
    if let Some(peer) = peer {
        let _ = writeln!(out, "remote: {peer}");
    }
    if body > 0 {
        let _ = writeln!(out, "body: {body} bytes");
    }
    let _ = writeln!(out, "headers:");
    for (n, v) in &req.headers {
        let _ = writeln!(out, "  {n}: {v}");
    }
    out
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_body(server: &Server, req: &Request, peer: Option<SocketAddr>, body: u64) -> String {
    let (path, query) = req.path_and_query();
    let mut out = String::from("{");
    let fields: [(&str, &str); 6] = [
        ("pod", &server.pod),
        ("hostname", &server.hostname),
        ("method", &req.method),
        ("path", path),
        ("query", query),
        ("protocol", &req.version),
    ];
    for (k, v) in fields {
        json_str(&mut out, k);
        out.push(':');
        json_str(&mut out, v);
        out.push(',');
    }
    json_str(&mut out, "remote");
    out.push(':');
    json_str(&mut out, &peer.map(|p| p.to_string()).unwrap_or_default());
    let _ = write!(out, ",\"bodyBytes\":{body},\"headers\":{{");
    // Header names are case-insensitive: lower-cased keys; repeated fields joined with ", ".
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, v) in &req.headers {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            None => merged.push((n, v.clone())),
        }
    }
    for (i, (n, v)) in merged.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, n);
        out.push(':');
        json_str(&mut out, v);
    }
    out.push_str("}}\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn respond_plain(
    w: &mut impl Write,
    status: u16,
    body: &str,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    respond(
        w,
        status,
        "text/plain; charset=utf-8",
        body,
        keep_alive,
        head_only,
    )
}

fn respond(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &str,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut msg = format!(
        "HTTP/1.1 {status} {}\r\nServer: minik-echo/{VERSION}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        msg.extend_from_slice(body.as_bytes());
    }
    w.write_all(&msg)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Request, ReadError> {
        read_head(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn parses_a_request() {
        let r = head("GET /a/b?format=json&x=1 HTTP/1.1\r\nHost: h\r\nX-Y:  z \r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path_and_query(), ("/a/b", "format=json&x=1"));
        assert_eq!(r.header("x-y"), Some("z"));
        assert!(r.keep_alive());
        assert!(wants_json(&r, r.path_and_query().1));
    }

    #[test]
    fn non_ascii_targets_are_no_problem() {
        for target in ["/a€€", "/€", "/ééé?€=1", "http://h€/€"] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let r = head(&raw).unwrap();
            let _ = r.path_and_query();
        }
    }

    #[test]
    fn absolute_form_and_http10() {
        let r = head("GET http://example/p?q HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.path_and_query(), ("/p", "q"));
        assert!(!r.keep_alive());
    }

    #[test]
    fn rejects_bad_requests() {
        for raw in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            "GET nopath HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nbad header\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n",
        ] {
            assert!(
                matches!(head(raw), Err(ReadError::Bad(400, _))),
                "{raw:?} must be a 400"
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(matches!(head(&long), Err(ReadError::Bad(431, _))));
    }

    #[test]
    fn bodies() {
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\nNEXT";
        let mut r = BufReader::new(raw.as_bytes());
        let req = read_head(&mut r).unwrap();
        assert_eq!(read_body(&mut r, &req).unwrap(), 5);
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd";
        let mut r = BufReader::new(raw.as_bytes());
        let req = read_head(&mut r).unwrap();
        assert!(matches!(
            read_body(&mut r, &req),
            Err(ReadError::Bad(400, _))
        ));
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\u{1}");
        assert_eq!(s, r#""a\"b\\c\u0001""#);
    }
}
