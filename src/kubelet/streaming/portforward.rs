//! `port-forward`: the `portforward.k8s.io` protocol over SPDY.
//!
//! kubectl opens, for every connection it accepts locally, two SPDY streams with the headers
//! `streamType: error` / `streamType: data`, `port: <n>` and `requestID: <k>` (the pair shares the
//! request id). The kubelet dials the pod's port — here the pod IP on its Docker network, which
//! the host reaches directly — and copies bytes between the data stream and that TCP connection.
//! A failure is written as text on the error stream (`error forwarding port 8080 to pod …`),
//! which kubectl prints; the error stream is closed when the forwarding ends. kubectl 1.31+
//! sends the same SPDY connection inside a WebSocket ([`super::websocket::tunnel`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::spdy;

/// The one port-forward protocol (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long dialling the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod being forwarded to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `name_namespace`, the kubelet's "pod full name" used in its messages.
    pub pod: String,
    pub uid: String,
    /// The pod's IP, when it has one.
    pub ip: Option<IpAddr>,
}

/// Serves port-forward requests on an upgraded (SPDY) connection until the client hangs up.
pub async fn serve<T>(io: T, target: Target)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = match spdy::Session::start(io) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("port-forward: {e}");
            return;
        }
    };
    // requestID → the stream that arrived first of its pair.
    let mut pending: HashMap<String, spdy::Stream> = HashMap::new();
    while let Some(stream) = session.incoming.recv().await {
        let Some(request) = stream.headers.get("requestid").map(str::to_string) else {
            // Clients older than 1.6 sent no request id; none that minik supports do.
            let msg = "port-forward: a stream without a requestID header";
            tracing::debug!("{msg}");
            stream.writer.reset().await;
            continue;
        };
        let Some(other) = pending.remove(&request) else {
            pending.insert(request, stream);
            continue;
        };
        let (error, data) = match stream.headers.get("streamtype") {
            Some("error") => (stream, other),
            _ => (other, stream),
        };
        if error.headers.get("streamtype") != Some("error")
            || data.headers.get("streamtype") != Some("data")
        {
            tracing::debug!("port-forward: request {request} is not an error+data pair");
            error.writer.reset().await;
            data.writer.reset().await;
            continue;
        }
        tokio::spawn(forward(error, data, target.clone()));
    }
    session.closer().close().await;
}

async fn forward(error: spdy::Stream, data: spdy::Stream, target: Target) {
    let port_text = data.headers.get("port").unwrap_or("").to_string();
    let result = match port_text.parse::<u16>() {
        Ok(port) if port > 0 => copy(data, port, &target).await,
        _ => Err(format!("invalid port {port_text:?}")),
    };
    if let Err(e) = result {
        let msg = format!(
            "error forwarding port {port_text} to pod {}, uid {}: {e}",
            target.pod, target.uid
        );
        tracing::info!("{msg}");
        error.writer.write(msg.as_bytes()).await;
    }
    error.writer.close().await;
}

/// Dials the pod and copies both ways until both directions are done.
async fn copy(mut data: spdy::Stream, port: u16, target: &Target) -> Result<(), String> {
    let Some(ip) = target.ip else {
        return Err("the pod has no IP address".to_string());
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            data.writer.close().await;
            return Err(format!("dial tcp {addr}: connect: {}", io_text(&e)));
        }
        Err(_) => {
            data.writer.close().await;
            return Err(format!("dial tcp {addr}: i/o timeout"));
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let writer = data.writer.clone();
    let upstream = async move {
        while let Some(chunk) = data.data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The client closed its side (or reset): so do we, towards the pod.
        let _ = wr.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.write(&buf[..n]).await {
                        return;
                    }
                }
            }
        }
        writer.close().await;
    };
    tokio::join!(upstream, downstream);
    Ok(())
}

/// An I/O error worded as Go's syscall errors (what the real kubelet's messages show).
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "connection timed out".to_string(),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => "no route to host".to_string(),
            Some(libc::ENETUNREACH) => "network is unreachable".to_string(),
            _ => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use spdy::{Codec, FLAG_FIN, Frame, Headers};

    fn syn(id: u32, kind: &str, port: u16) -> Frame {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::default()
                .with("streamType", kind)
                .with("port", &port.to_string())
                .with("requestID", "0"),
        }
    }

    /// A whole port-forward exchange against a local echo server, at the frame level.
    #[tokio::test]
    async fn forwards_a_connection_and_reports_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(&[b"echo:", &buf[..n]].concat()).await;
                }
            }
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let target = Target {
            pod: "web_default".into(),
            uid: "u1".into(),
            ip: Some(IpAddr::from([127, 0, 0, 1])),
        };
        tokio::spawn(serve(server, target));
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut codec = Codec::new().expect("codec");
        let mut out = BytesMut::new();
        codec
            .encode(&syn(1, "error", port), &mut out)
            .expect("encode");
        codec
            .encode(&syn(3, "data", port), &mut out)
            .expect("encode");
        cwr.write_all(&out).await.expect("write");
        let mut rx = Codec::new().expect("codec");
        let mut buf = BytesMut::new();
        let mut next = async || loop {
            if let Some(f) = rx.decode(&mut buf).expect("decode") {
                return f;
            }
            assert!(crd.read_buf(&mut buf).await.expect("read") > 0, "eof");
        };
        assert!(matches!(next().await, Frame::SynReply { stream_id: 1, .. }));
        assert!(matches!(next().await, Frame::SynReply { stream_id: 3, .. }));
        out.clear();
        let hello = Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hi"),
        };
        codec.encode(&hello, &mut out).expect("encode");
        cwr.write_all(&out).await.expect("write");
        let mut got = Vec::new();
        loop {
            match next().await {
                Frame::Data {
                    stream_id: 3,
                    flags,
                    data,
                } => {
                    got.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                Frame::Data {
                    stream_id: 1, data, ..
                } if !data.is_empty() => panic!("error: {data:?}"),
                _ => {}
            }
        }
        assert_eq!(got, b"echo:hi");
        // A port nothing listens on: the error stream says so.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        out.clear();
        for f in [syn(5, "error", closed), syn(7, "data", closed)] {
            let f = match f {
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                } => Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: Headers(
                        headers
                            .0
                            .into_iter()
                            .map(|(k, v)| {
                                if k == "requestid" {
                                    (k, "1".into())
                                } else {
                                    (k, v)
                                }
                            })
                            .collect(),
                    ),
                },
                f => f,
            };
            codec.encode(&f, &mut out).expect("encode");
        }
        cwr.write_all(&out).await.expect("write");
        loop {
            if let Frame::Data {
                stream_id: 5, data, ..
            } = next().await
                && !data.is_empty()
            {
                let text = String::from_utf8_lossy(&data).to_string();
                assert_eq!(
                    text,
                    format!(
                        "error forwarding port {closed} to pod web_default, uid u1: dial tcp \
                         127.0.0.1:{closed}: connect: connection refused"
                    )
                );
                break;
            }
        }
    }
}
