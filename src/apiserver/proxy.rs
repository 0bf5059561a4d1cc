//! The `proxy` subresources of pods, services and nodes (kube-apiserver's `ProxyREST`s):
//! `kubectl proxy`, `kubectl get --raw …/proxy/…` and dashboards reach cluster HTTP servers
//! through the API server.
//!
//! The object is named `name`, `name:port` or `scheme:name:port` (scheme `http` or `https`):
//!
//! - `/api/v1/namespaces/<ns>/pods/<id>/proxy[/<path>]`: the pod's first IP
//!   (`status.podIPs[0]`) on the given port, else on its first container port; a pod without a
//!   routable IP is `400 address not allowed`;
//! - `/api/v1/namespaces/<ns>/services/<id>/proxy[/<path>]`: a ready address of the service's
//!   Endpoints with a port of the requested name (a port number is first turned into the name of
//!   the service port that has it), the address checked against the pod it names; none is
//!   `503 no endpoints available for service "<name>"`, a missing Endpoints object
//!   `404 endpoints "<name>" not found`;
//! - `/api/v1/nodes/<id>/proxy[/<path>]`: the node's kubelet over HTTPS with the API server's
//!   kubelet client certificate ([`super::kubelet_proxy`]), or another port of the node if one is
//!   asked for.
//!
//! The verb authorized on `<resource>/proxy` follows the method: GET and HEAD are `get`, POST
//! `create`, PUT `update`, PATCH `patch`, DELETE `delete`. Then, as kube-apiserver's
//! UpgradeAwareHandler and proxy transport do: the request (method, path, query, headers, body)
//! is forwarded and the answer streamed back; `…/proxy` without a trailing slash is redirected
//! (301) to `…/proxy/` for GET and HEAD; the caller's `Authorization` and `Impersonate-*`
//! headers and the hop-by-hop headers stay behind; `X-Forwarded-Uri` and `X-Forwarded-For` are
//! set; a `Location` pointing at the backend is rewritten to go through the proxy; the backend's
//! `Access-Control-Allow-*` headers are dropped; an upgrade (WebSocket, SPDY) is relayed and, on
//! `101`, the two connections are spliced. A backend that cannot be reached is
//! `503 error trying to reach service: dial tcp …: connect: connection refused`. HTTPS backends'
//! certificates are not checked (pods and services are reached by IP), the kubelet's are.
//! Not done: rewriting the links inside HTML pages.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::handlers::{Target, served, storage_error};
use super::kubelet_proxy::{DIAL_TIMEOUT, host_port, io_text, kubelet_address};
use super::resources;
use super::server::{self, Body, Ctx, User};
use super::status::ApiError;

/// The address a request came from (the server records it in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    /// Straight to `host:port`; over TLS that checks no certificate when `https`.
    Direct {
        https: bool,
        host: String,
        port: u16,
    },
    /// The node's kubelet, with the API server's kubelet client certificate.
    Kubelet { host: String, port: u16 },
}

impl Backend {
    fn authority(&self) -> String {
        match self {
            Backend::Direct { host, port, .. } | Backend::Kubelet { host, port } => {
                host_port(host, *port)
            }
        }
    }
}

/// Request headers that belong to one connection (Go's `httputil.ReverseProxy` drops them).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What kube-apiserver's proxy transport removes from answers.
const CORS: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
];

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// `GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS <…>/<id>/proxy[/<path>]`.
pub(super) async fn handle(
    ctx: &Ctx,
    user: &User,
    t: &Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let id = server::percent_decode(t.name.as_deref().unwrap_or(""));
    let verb = match *req.method() {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        // kube-apiserver serves OPTIONS on proxy paths with an empty verb.
        Method::OPTIONS => "",
        _ => return Err(ApiError::method_not_allowed()),
    };
    server::authorize(
        ctx,
        user,
        verb,
        t.resource,
        "proxy",
        t.namespace.as_deref(),
        &id,
    )?;
    let backend = match t.resource.name {
        "pods" => pod_location(ctx, t, &id).await?,
        "services" => service_location(ctx, t, &id).await?,
        "nodes" => node_location(ctx, t, &id).await?,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let path = req.uri().path().to_string();
    let api_segments = if path.trim_start_matches('/').starts_with("apis/") {
        3
    } else {
        2
    };
    let namespace_segments = if t.namespace.is_some() { 2 } else { 0 };
    let (prepend, tail) = split_proxy_path(&path, api_segments + namespace_segments + 3);
    let upgrading = is_upgrade(req.headers());
    if !upgrading && tail.is_empty() && matches!(*req.method(), Method::GET | Method::HEAD) {
        // kubernetes/kubernetes#4958: relative links need the trailing slash.
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("{path}/{query}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let backend_path = if tail.is_empty() { "/" } else { tail };
    let out = Outgoing {
        authority: backend.authority(),
        prepend,
        backend_path,
        path_and_query: match req.uri().query() {
            Some(q) => format!("{backend_path}?{q}"),
            None => backend_path.to_string(),
        },
    };
    match &backend {
        Backend::Direct {
            https: false,
            host,
            port,
        } => {
            let tcp = connect(host, *port).await.map_err(unreachable)?;
            forward(tcp, &out, req).await
        }
        Backend::Direct {
            https: true,
            host,
            port,
        } => {
            let tcp = connect(host, *port).await.map_err(unreachable)?;
            let config = crate::component_base::tls::insecure_client()
                .map_err(|e| unreachable(format!("tls: {e}")))?;
            let name = server_name(host).map_err(unreachable)?;
            let tls = tokio::time::timeout(
                DIAL_TIMEOUT,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| unreachable("net/http: TLS handshake timeout".to_string()))?
            .map_err(|e| unreachable(format!("tls: {e}")))?;
            forward(tls, &out, req).await
        }
        Backend::Kubelet { host, port } => {
            let Some(client) = &ctx.kubelet else {
                return Err(ApiError::unavailable(format!(
                    "cannot reach the kubelet at {}: the API server runs without \
                     --kubelet-client-certificate, --kubelet-client-key and \
                     --kubelet-certificate-authority",
                    host_port(host, *port)
                )));
            };
            let tls = client.dial(host, *port).await.map_err(unreachable)?;
            forward(tls, &out, req).await
        }
    }
}

/// `503 error trying to reach service: <why>` (kube-apiserver's proxy transport).
fn unreachable(why: String) -> ApiError {
    ApiError::unavailable(format!("error trying to reach service: {why}"))
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => {
            ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a host"))
        }
    }
}

async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let addr = host_port(host, port);
    match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_text(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// `name`, `name:port` or `scheme:name:port` (apimachinery's `SplitSchemeNamePort`): the
/// scheme is `http`, `https` or empty, the name is not empty; (scheme, name, port).
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// A TCP port: 1 to 65535.
fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p > 0)
}

/// Go's `IP.IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or broadcast
/// (private ranges are global unicast).
fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The request path up to and including the `proxy` segment (the `segments`-th non-empty one),
/// and the rest (the path sent to the backend, empty or starting with `/`).
fn split_proxy_path(path: &str, segments: usize) -> (&str, &str) {
    let mut seen = 0;
    let mut i = 0;
    while i < path.len() {
        if path.as_bytes()[i] == b'/' {
            i += 1;
            continue;
        }
        let end = path[i..].find('/').map_or(path.len(), |e| i + e);
        seen += 1;
        if seen == segments {
            return (&path[..end], &path[end..]);
        }
        i = end;
    }
    (path, "")
}

async fn get(ctx: &Ctx, t: &Target, name: &str) -> Result<Value, ApiError> {
    let stored = ctx
        .storage
        .get(&t.resource.key(t.namespace.as_deref(), name))
        .await
        .map_err(|e| storage_error(t, name, e))?;
    served(&stored)
}

/// The IPs a pod has (`status.podIPs`, else `status.podIP`).
fn pod_ips(pod: &Value) -> Vec<&str> {
    let ips: Vec<&str> = pod["status"]["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["ip"].as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        pod["status"]["podIP"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .into_iter()
            .collect()
    } else {
        ips
    }
}

/// The pod `ResourceLocation`.
async fn pod_location(ctx: &Ctx, t: &Target, id: &str) -> Result<Backend, ApiError> {
    let invalid = || ApiError::bad_request(format!("invalid pod request {id:?}"));
    let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(invalid)?;
    let pod = get(ctx, t, name).await?;
    // No port: the first declared container port.
    let declared = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["ports"][0]["containerPort"].as_u64());
    let ip = pod_ips(&pod)
        .first()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let Some(ip) = ip.filter(|ip| global_unicast(*ip)) else {
        return Err(ApiError::bad_request("address not allowed"));
    };
    let https = scheme == "https";
    let port = match (port, declared) {
        ("", Some(p)) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(invalid)?,
        ("", None) if https => 443,
        ("", None) => 80,
        (p, _) => parse_port(p).ok_or_else(invalid)?,
    };
    Ok(Backend::Direct {
        https,
        host: ip.to_string(),
        port,
    })
}

/// A pseudo-random start, to spread requests over subsets and addresses.
fn seed() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
}

/// The service `ResourceLocation`.
async fn service_location(ctx: &Ctx, t: &Target, id: &str) -> Result<Backend, ApiError> {
    let Some((scheme, name, port)) = split_scheme_name_port(id) else {
        return Err(ApiError::bad_request(format!(
            "invalid service request {id:?}"
        )));
    };
    // A port number stands for the service port that has it.
    let mut port_name = port.to_string();
    if let Ok(number) = port.parse::<i64>() {
        let svc = get(ctx, t, name).await?;
        let found = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(number));
        match found {
            Some(p) => port_name = p["name"].as_str().unwrap_or("").to_string(),
            None => {
                return Err(ApiError::unavailable(format!(
                    "no service port {number} found for service {name:?}"
                )));
            }
        }
    }
    let endpoints = resources::find("", "v1", "endpoints")
        .ok_or_else(|| ApiError::internal("the endpoints resource is not served"))?;
    let et = Target {
        resource: endpoints,
        namespace: t.namespace.clone(),
        name: Some(name.to_string()),
        subresource: None,
    };
    let eps = get(ctx, &et, name).await?;
    let subsets = eps["subsets"].as_array().cloned().unwrap_or_default();
    if subsets.is_empty() {
        return Err(ApiError::unavailable(format!(
            "no endpoints available for service {name:?}"
        )));
    }
    let start = seed();
    for i in 0..subsets.len() {
        let ss = &subsets[(start + i) % subsets.len()];
        let addresses = ss["addresses"].as_array().cloned().unwrap_or_default();
        if addresses.is_empty() {
            continue;
        }
        for p in ss["ports"].as_array().into_iter().flatten() {
            if p["name"].as_str().unwrap_or("") != port_name {
                continue;
            }
            let Some(port) = p["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let first = seed();
            for k in 0..addresses.len() {
                let addr = &addresses[(first + k) % addresses.len()];
                match valid_address(ctx, t, addr).await {
                    Ok(ip) => {
                        return Ok(Backend::Direct {
                            https: scheme == "https",
                            host: ip,
                            port,
                        });
                    }
                    Err(why) => {
                        tracing::debug!(service = name, "address {addr} isn't valid: {why}")
                    }
                }
            }
        }
    }
    Err(ApiError::unavailable(format!(
        "no endpoints available for service {id:?}"
    )))
}

/// An endpoint address that names a pod of this namespace which has that IP.
async fn valid_address(ctx: &Ctx, t: &Target, addr: &Value) -> Result<String, String> {
    let ip = addr["ip"].as_str().unwrap_or("");
    let target = &addr["targetRef"];
    if !target.is_object() {
        return Err("the address has no target ref".into());
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    if target["namespace"].as_str().unwrap_or("") != ns {
        return Err("the address's namespace is not the service's".into());
    }
    let pods = resources::find("", "v1", "pods").ok_or("the pods resource is not served")?;
    let pod_name = target["name"].as_str().unwrap_or("");
    let stored = ctx
        .storage
        .get(&pods.key(Some(ns), pod_name))
        .await
        .map_err(|e| e.to_string())?;
    let pod = stored.object()?;
    if pod_ips(&pod).contains(&ip) {
        Ok(ip.to_string())
    } else {
        Err(format!("the IPs of pod {ns}/{pod_name} are not {ip}"))
    }
}

/// The node `ResourceLocation`: its kubelet, or another port of it.
async fn node_location(ctx: &Ctx, t: &Target, id: &str) -> Result<Backend, ApiError> {
    let invalid = || ApiError::bad_request(format!("invalid node request {id:?}"));
    let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(invalid)?;
    let node = get(ctx, t, name).await?;
    let (host, kubelet_port) = kubelet_address(&node);
    if port.is_empty() || port == kubelet_port.to_string() {
        return Ok(Backend::Kubelet {
            host,
            port: kubelet_port,
        });
    }
    Ok(Backend::Direct {
        https: scheme == "https",
        host,
        port: parse_port(port).ok_or_else(invalid)?,
    })
}

/// What is sent to the backend.
struct Outgoing<'a> {
    /// The backend's `host:port`.
    authority: String,
    /// The request path up to `…/proxy` (what links through the proxy start with).
    prepend: &'a str,
    /// The path at the backend.
    backend_path: &'a str,
    path_and_query: String,
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && tokens(headers, header::CONNECTION.as_str())
            .iter()
            .any(|t| t == "upgrade")
}

/// The comma-separated tokens of a header, lower-cased.
fn tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The headers the backend gets: the caller's, without its credentials, the hop-by-hop ones
/// (kept on an upgrade, which needs them) and `Host`.
fn request_headers(src: &HeaderMap, upgrading: bool) -> HeaderMap {
    let listed = if upgrading {
        Vec::new()
    } else {
        tokens(src, header::CONNECTION.as_str())
    };
    let mut out = HeaderMap::new();
    for (name, v) in src {
        let n = name.as_str();
        if n == "authorization" || n == "host" || n.starts_with("impersonate-") {
            continue;
        }
        if !upgrading && (HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n)) {
            continue;
        }
        out.append(name.clone(), v.clone());
    }
    out
}

/// The headers of the backend's answer the caller gets.
fn response_headers(src: &HeaderMap) -> HeaderMap {
    let listed = tokens(src, header::CONNECTION.as_str());
    let mut out = HeaderMap::new();
    for (name, v) in src {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || CORS.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), v.clone());
    }
    out
}

/// A redirect of the backend's to itself (or to the host the caller used) goes through the
/// proxy: `http://<pod>:8080/login` → `/api/v1/namespaces/ns/pods/p:8080/proxy/login`. Other
/// hosts and relative paths are left alone.
fn rewrite_location(location: &str, backend: &str, request_host: &str, prepend: &str) -> String {
    let (scheme_host, host, rest) = match location.split_once("://") {
        Some((scheme, after)) if !scheme.is_empty() && !scheme.contains('/') => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let host = &after[..end];
            (&location[..scheme.len() + 3 + end], host, &after[end..])
        }
        _ => ("", "", location),
    };
    if !host.is_empty() && host != backend && host != request_host {
        return location.to_string();
    }
    if !rest.starts_with('/') {
        return location.to_string();
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, suffix) = rest.split_at(path_end);
    // The caller's own host stays; the backend's goes (the answer is relative to the proxy).
    let keep = if !host.is_empty() && host == request_host {
        scheme_host
    } else {
        ""
    };
    if path.starts_with(prepend) {
        return format!("{keep}{path}{suffix}");
    }
    format!("{keep}{prepend}{path}{suffix}")
}

/// Forwards the request over `io` and relays the answer (or splices the connections after an
/// upgrade).
async fn forward<S>(
    io: S,
    out: &Outgoing<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Header names as Go writes them (`X-Forwarded-Uri`), which some servers care about.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, ProxyBody>(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrading = is_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    // The backend sees the host the caller asked for, as with kube-apiserver.
    let request_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| out.authority.clone());
    let mut headers = request_headers(req.headers(), upgrading);
    if let Ok(v) = HeaderValue::from_str(&request_host) {
        headers.insert(header::HOST, v);
    }
    if let Some(Peer(peer)) = req.extensions().get::<Peer>() {
        let ip = peer.ip().to_string();
        let prior: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if prior.is_empty() {
            ip
        } else {
            format!("{}, {ip}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if !upgrading
        && let Ok(v) = HeaderValue::from_str(&format!("{}{}", out.prepend, out.backend_path))
    {
        headers.insert("x-forwarded-uri", v);
    }
    let method = req.method().clone();
    let body: ProxyBody = if upgrading {
        Empty::<Bytes>::new()
            .map_err(|never: Infallible| match never {})
            .boxed()
    } else {
        req.into_body().boxed()
    };
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = method;
    *outgoing.uri_mut() = out
        .path_and_query
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid path {:?}", out.path_and_query)))?;
    *outgoing.headers_mut() = headers;
    let mut resp = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if let Some(client_upgrade) = client_upgrade {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            for (name, v) in resp.headers() {
                r.headers_mut().append(name.clone(), v.clone());
            }
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                    (Ok(c), Ok(b)) => (c, b),
                    _ => {
                        tracing::debug!("a proxied upgrade did not complete");
                        return;
                    }
                };
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!("proxied upgrade ended: {e}");
                }
            });
            return Ok(r);
        }
        if status.as_u16() < 400 {
            return Err(ApiError::new(
                500,
                "",
                format!("invalid upgrade response: status code {}", status.as_u16()),
            ));
        }
    }
    let (parts, body) = resp.into_parts();
    let mut headers = response_headers(&parts.headers);
    if let Some(location) = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| rewrite_location(l, &out.authority, &request_host, out.prepend))
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        headers.insert(header::LOCATION, v);
    }
    let mut r = Response::new(relay(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// The backend's body, chunk by chunk (through a channel: flushed per chunk, the body is `Sync`,
/// and it stops being read when the caller goes away). Also the kubelet's streams (logs -f).
pub(super) fn relay(mut body: Incoming) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                break;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_as_apimachinery_does() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(
            split_scheme_name_port("web:8080"),
            Some(("", "web", "8080"))
        );
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            Some(("https", "web", "443"))
        );
        assert_eq!(
            split_scheme_name_port("http:web:"),
            Some(("http", "web", ""))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
        assert_eq!(parse_port("8080"), Some(8080));
        assert_eq!(parse_port("0"), None);
        assert_eq!(parse_port("http"), None);
        assert_eq!(parse_port("70000"), None);
    }

    #[test]
    fn the_path_after_proxy_goes_to_the_backend() {
        let p = "/api/v1/namespaces/default/pods/web:8080/proxy/a/b/?x=1";
        let p = p.split('?').next().unwrap_or_default();
        assert_eq!(
            split_proxy_path(p, 7),
            ("/api/v1/namespaces/default/pods/web:8080/proxy", "/a/b/")
        );
        assert_eq!(
            split_proxy_path("/api/v1/nodes/n1/proxy", 5),
            ("/api/v1/nodes/n1/proxy", "")
        );
        assert_eq!(
            split_proxy_path("/api/v1/nodes/n1/proxy/", 5),
            ("/api/v1/nodes/n1/proxy", "/")
        );
        // A namespace or a pod named "proxy" does not confuse it.
        assert_eq!(
            split_proxy_path("/api/v1/namespaces/proxy/pods/proxy/proxy/healthz", 7),
            ("/api/v1/namespaces/proxy/pods/proxy/proxy", "/healthz")
        );
    }

    #[test]
    fn only_routable_addresses_are_proxied_to() {
        for ok in [
            "172.18.0.5",
            "10.0.0.1",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert!(global_unicast(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!global_unicast(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("accept", HeaderValue::from_static("text/plain"));
        h.insert("host", HeaderValue::from_static("127.0.0.1:6443"));
        let out = request_headers(&h, false);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
        // An upgrade keeps `Connection` and `Upgrade`.
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        assert!(is_upgrade(&h));
        let out = request_headers(&h, true);
        assert!(out.contains_key("upgrade") && out.contains_key("connection"));
        assert!(!out.contains_key("authorization"));

        let mut r = HeaderMap::new();
        r.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        r.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        r.insert("content-type", HeaderValue::from_static("text/plain"));
        let out = response_headers(&r);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }

    /// A front server that forwards every request to `backend` as `…/proxy` does.
    async fn front(backend: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let out = Outgoing {
                            authority: backend.to_string(),
                            prepend: "/api/v1/nodes/n/proxy",
                            backend_path: "/x",
                            path_and_query: "/x?q=1".to_string(),
                        };
                        let resp = match tokio::net::TcpStream::connect(backend).await {
                            Ok(io) => forward(io, &out, req).await,
                            Err(e) => Err(ApiError::internal(e.to_string())),
                        };
                        Ok::<_, Infallible>(resp.unwrap_or_else(|e| {
                            let mut r = Response::new(Full::new(Bytes::from(e.message)).boxed());
                            *r.status_mut() = StatusCode::from_u16(e.code)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            r
                        }))
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades(),
                );
            }
        });
        addr
    }

    /// Reads up to the end of an HTTP head.
    async fn head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn answers_stream_back_and_upgrades_are_spliced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let backend_addr = backend.local_addr().expect("addr");
        let seen = tokio::spawn(async move {
            let mut heads = Vec::new();
            // 1: a POST with a body, answered with a redirect to the backend itself.
            let (mut s, _) = backend.accept().await.expect("accept");
            let h = head(&mut s).await;
            let mut body = [0u8; 3];
            s.read_exact(&mut body).await.expect("the body");
            heads.push(format!("{h}{}", String::from_utf8_lossy(&body)));
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{backend_addr}/login\r\n\
                 Access-Control-Allow-Origin: *\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nhi"
            );
            s.write_all(answer.as_bytes()).await.expect("write");
            // 2: an upgrade, then an echo of the bytes.
            let (mut s, _) = backend.accept().await.expect("accept");
            heads.push(head(&mut s).await);
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .expect("write");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
            heads
        });
        let front = front(backend_addr).await;

        let mut c = tokio::net::TcpStream::connect(front)
            .await
            .expect("connect");
        c.write_all(
            b"POST /api/v1/nodes/n/proxy/x?q=1 HTTP/1.1\r\nHost: front:6443\r\n\
              Authorization: Bearer secret\r\nImpersonate-User: bob\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await
        .expect("write");
        let h = head(&mut c).await;
        assert!(h.starts_with("HTTP/1.1 302"), "{h}");
        let lower = h.to_ascii_lowercase();
        assert!(
            lower.contains("location: /api/v1/nodes/n/proxy/login\r\n"),
            "{h}"
        );
        assert!(lower.contains("x-kept: 1"), "{h}");
        assert!(!lower.contains("access-control-allow-origin"), "{h}");
        let mut body = [0u8; 2];
        c.read_exact(&mut body).await.expect("the body");
        assert_eq!(&body, b"hi");

        let mut c = tokio::net::TcpStream::connect(front)
            .await
            .expect("connect");
        c.write_all(
            b"GET /api/v1/nodes/n/proxy/x?q=1 HTTP/1.1\r\nHost: front:6443\r\n\
              Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        )
        .await
        .expect("write");
        let h = head(&mut c).await;
        assert!(h.starts_with("HTTP/1.1 101"), "{h}");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("the echo");
        assert_eq!(&buf, b"ping");

        let heads = seen.await.expect("the backend");
        let post = &heads[0];
        assert!(post.starts_with("POST /x?q=1 HTTP/1.1\r\n"), "{post}");
        assert!(post.contains("Host: front:6443\r\n"), "{post}");
        assert!(
            post.contains("X-Forwarded-Uri: /api/v1/nodes/n/proxy/x\r\n"),
            "{post}"
        );
        assert!(post.ends_with("\r\n\r\nabc"), "{post}");
        let lower = post.to_ascii_lowercase();
        assert!(
            !lower.contains("authorization") && !lower.contains("impersonate"),
            "{post}"
        );
        let upgrade = &heads[1];
        assert!(upgrade.starts_with("GET /x?q=1 HTTP/1.1\r\n"), "{upgrade}");
        assert!(upgrade.contains("Upgrade: websocket\r\n"), "{upgrade}");
        assert!(upgrade.contains("Sec-Websocket-Key: k\r\n"), "{upgrade}");
    }

    #[test]
    fn redirects_to_the_backend_go_through_the_proxy() {
        let prepend = "/api/v1/namespaces/default/pods/web:8080/proxy";
        let backend = "172.18.0.5:8080";
        let host = "127.0.0.1:6443";
        assert_eq!(
            rewrite_location(
                "http://172.18.0.5:8080/login?next=/",
                backend,
                host,
                prepend
            ),
            format!("{prepend}/login?next=/")
        );
        assert_eq!(
            rewrite_location("/login", backend, host, prepend),
            format!("{prepend}/login")
        );
        assert_eq!(
            rewrite_location(&format!("{prepend}/x"), backend, host, prepend),
            format!("{prepend}/x")
        );
        assert_eq!(
            rewrite_location("https://127.0.0.1:6443/x", backend, host, prepend),
            format!("https://127.0.0.1:6443{prepend}/x")
        );
        // Elsewhere, or relative: as it is.
        assert_eq!(
            rewrite_location("https://example.com/x", backend, host, prepend),
            "https://example.com/x"
        );
        assert_eq!(rewrite_location("next", backend, host, prepend), "next");
    }
}
