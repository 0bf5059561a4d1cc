//! The API server's half of `pods/log`, `exec`, `attach` and `portforward`: proxying to the
//! pod's kubelet, as kube-apiserver does (`nodes/proxy`, in [`super::proxy`], dials kubelets
//! with the same client).
//!
//! The kubelet is found from the Node: its `status.addresses` (InternalIP, else Hostname) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset). The API server connects
//! with TLS, presenting `--kubelet-client-certificate`/`--kubelet-client-key` and checking the
//! kubelet's serving certificate against `--kubelet-certificate-authority`, then:
//!
//! - for `log`, sends `GET /containerLogs/…` and streams the body through, chunk by chunk;
//! - for the interactive verbs (UpgradeAwareHandler), forwards the upgrade request (method,
//!   query, `Upgrade`, `Connection`, `Sec-WebSocket-*`, `X-Stream-Protocol-Version`), relays the
//!   kubelet's `101 Switching Protocols` and then copies bytes both ways between the two
//!   upgraded connections; a kubelet that does not upgrade has its answer relayed as is (kubectl
//!   prints `unable to upgrade connection: <body>`).
//!
//! A kubelet that can't be reached gives kube-apiserver's errors: `Get "https://…": dial tcp …:
//! connect: connection refused` for logs and `error dialing backend: dial tcp …` for upgrades
//! (500, no reason).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

use super::server::Body;
use super::status::ApiError;

/// The kubelet's default port (kube-apiserver's `--kubelet-port`).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers an upgrade request carries to the kubelet.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// TLS to kubelets with the API server's client certificate.
#[derive(Clone)]
pub struct KubeletClient {
    tls: TlsConnector,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletClient")
    }
}

impl KubeletClient {
    /// From `--kubelet-client-certificate`, `--kubelet-client-key` and
    /// `--kubelet-certificate-authority`.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<KubeletClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("--kubelet-client-certificate {}", cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--kubelet-client-certificate {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("--kubelet-client-key {}", key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("--kubelet-certificate-authority {}", ca.display()))?
        {
            roots
                .add(
                    c.with_context(|| format!("--kubelet-certificate-authority {}", ca.display()))?,
                )
                .context("--kubelet-certificate-authority: not a CA certificate")?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("--kubelet-client-certificate/--kubelet-client-key do not form a key pair")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: TlsConnector::from(Arc::new(cfg)),
        })
    }
}

/// Where a node's kubelet listens: (host, port).
pub fn kubelet_address(node: &Value) -> (String, u16) {
    let addresses = node["status"]["addresses"].as_array();
    let of = |kind: &str| {
        addresses
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    let host = of("InternalIP")
        .or_else(|| of("Hostname"))
        .or_else(|| node["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    (host, port)
}

pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A 500 without a reason: how kube-apiserver reports an error that is not an API status.
fn unknown(message: String) -> ApiError {
    ApiError::new(500, "", message)
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        503 => "ServiceUnavailable",
        500 => "InternalError",
        _ => "",
    }
}

pub(super) type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl KubeletClient {
    /// A TLS connection to the kubelet at `host:port`, or Go's wording of why not.
    pub(super) async fn dial(&self, host: &str, port: u16) -> Result<Tls, String> {
        let addr = host_port(host, port);
        let tcp =
            match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return Err(format!("dial tcp {addr}: connect: {}", io_text(&e))),
                Err(_) => return Err(format!("dial tcp {addr}: i/o timeout")),
            };
        let _ = tcp.set_nodelay(true);
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())
                .map_err(|_| format!("{host:?} is not a valid host name"))?,
        };
        match tokio::time::timeout(DIAL_TIMEOUT, self.tls.connect(name, tcp)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(format!("tls: {e}")),
            Err(_) => Err("net/http: TLS handshake timeout".to_string()),
        }
    }

    /// `GET https://host:port{path}` with the body streamed through (logs).
    pub async fn stream_get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<Response<Body>, ApiError> {
        let url = format!("https://{}{path_and_query}", host_port(host, port));
        let tls = self
            .dial(host, port)
            .await
            .map_err(|e| unknown(format!("Get {url:?}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unknown(format!("Get {url:?}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path_and_query)
            .header(header::HOST, host_port(host, port))
            .body(Empty::<Bytes>::new())
            .map_err(|e| unknown(format!("Get {url:?}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unknown(format!("Get {url:?}: {e}")))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let code = status.as_u16();
            let body = read_limited(resp.into_body(), 64 * 1024).await;
            let text = String::from_utf8_lossy(&body).trim().to_string();
            return Err(ApiError::new(code, reason_of(code), text));
        }
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let mut r = Response::new(super::proxy::relay(resp.into_body()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            content_type.unwrap_or(HeaderValue::from_static("text/plain")),
        );
        Ok(r)
    }

    /// Forwards an upgrade request and, on 101, splices the two connections.
    pub async fn upgrade(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let tls = self
            .dial(host, port)
            .await
            .map_err(|e| unknown(format!("error dialing backend: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unknown(format!("error dialing backend: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut out = Request::builder()
            .method(req.method().clone())
            .uri(path_and_query)
            .header(header::HOST, host_port(host, port));
        for name in UPGRADE_HEADERS {
            for v in req.headers().get_all(*name) {
                out = out.header(*name, v.clone());
            }
        }
        let out = out
            .body(Empty::<Bytes>::new())
            .map_err(|e| unknown(format!("error dialing backend: {e}")))?;
        let mut resp = sender
            .send_request(out)
            .await
            .map_err(|e| unknown(format!("error dialing backend: {e}")))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Not upgraded: the kubelet's answer goes back as it is.
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_limited(resp.into_body(), 64 * 1024).await;
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
            *r.status_mut() = status;
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            return Ok(r);
        }
        let mut r = Response::new(http_body_util::Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, v) in resp.headers() {
            r.headers_mut().append(name.clone(), v.clone());
        }
        let from_client = hyper::upgrade::on(&mut req);
        let from_kubelet = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, kubelet) = match tokio::join!(from_client, from_kubelet) {
                (Ok(c), Ok(k)) => (c, k),
                (c, k) => {
                    tracing::debug!(
                        client_ok = c.is_ok(),
                        kubelet_ok = k.is_ok(),
                        "a streaming upgrade did not complete"
                    );
                    return;
                }
            };
            let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                tracing::debug!("streaming proxy ended: {e}");
            }
        });
        Ok(r)
    }
}

async fn read_limited(mut body: Incoming, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
    }
    out
}

/// An I/O error worded as Go's syscall errors.
pub(super) fn io_text(e: &std::io::Error) -> String {
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
    use serde_json::json;

    #[test]
    fn the_kubelet_address_comes_from_the_node_status() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(kubelet_address(&node), ("10.0.0.5".to_string(), 10251));
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "host-1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}});
        assert_eq!(
            kubelet_address(&node),
            ("host-1".to_string(), DEFAULT_KUBELET_PORT)
        );
        assert_eq!(host_port("::1", 5), "[::1]:5");
    }
}
