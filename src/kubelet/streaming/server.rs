//! The HTTPS server: the kubelet's streaming paths, client-certificate authentication, and the
//! lookup of a pod's containers in Docker.
//!
//! Paths (the real kubelet's):
//! - `GET /healthz`
//! - `GET /pods`: the PodList of the pods this kubelet runs (what `kubectl get --raw
//!   /api/v1/nodes/<node>/proxy/pods` shows)
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow&tailLines&timestamps&previous&…`
//! - `GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}?command=…&input&output&error&tty`
//! - `GET|POST /attach/{namespace}/{pod}[/{uid}]/{container}?input&output&error&tty`
//! - `GET|POST /portForward/{namespace}/{pod}[/{uid}]`
//!
//! Only clients with a certificate from `client_ca_file` get through the TLS handshake; of those,
//! the API server's identity (`kube-apiserver-kubelet-client`) and `system:masters` are allowed,
//! as the kubelet's webhook authorizer would (`nodes/proxy` is what the API server holds).
//!
//! Containers are found by their dockershim labels ([`crate::kubelet::labels`]), on this node
//! only: the current attempt is the one with the highest restart count; `previous=true` logs
//! read the one before it (the kubelet keeps the last exited attempt).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

use super::{logs, portforward, remotecommand, websocket};
use crate::kubelet::docker::Engine;
use crate::kubelet::labels;

/// How the streaming server runs (the kubelet's flag names in the comments).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--address`:`--port` (10250 by default).
    pub addr: SocketAddr,
    /// `--tls-cert-file`: the serving certificate (PEM).
    pub tls_cert_file: PathBuf,
    /// `--tls-private-key-file`.
    pub tls_private_key_file: PathBuf,
    /// `--client-ca-file`: client certificates must be signed by this CA.
    pub client_ca_file: PathBuf,
    /// The node this kubelet runs (only its containers are served).
    pub node_name: String,
    /// Labels (name, value) every served container must also carry besides the node's, e.g.
    /// the cluster's, so two profiles with a node of the same name stay apart.
    pub container_labels: Vec<(String, String)>,
    /// The pods the kubelet runs (`GET /pods`); none when not given.
    pub pods: PodSource,
}

/// Where `GET /pods` gets the kubelet's pods from (its pod manager).
#[derive(Clone, Default)]
pub struct PodSource(Option<Arc<dyn Fn() -> Vec<Pod> + Send + Sync>>);

impl PodSource {
    pub fn new(pods: impl Fn() -> Vec<Pod> + Send + Sync + 'static) -> PodSource {
        PodSource(Some(Arc::new(pods)))
    }

    fn pods(&self) -> Vec<Pod> {
        self.0.as_ref().map(|f| f()).unwrap_or_default()
    }
}

impl std::fmt::Debug for PodSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PodSource(..)"
        } else {
            "PodSource(none)"
        })
    }
}

type Body = BoxBody<Bytes, Infallible>;

struct State {
    docker: Docker,
    node: String,
    container_labels: Vec<(String, String)>,
    pods: PodSource,
}

/// Binds `opts.addr` and serves until `shutdown` resolves.
pub async fn serve(
    opts: ServerOptions,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = match tokio::net::TcpListener::bind(opts.addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {}: {}; stop it or pass another --port",
            opts.addr,
            crate::cluster::ports::in_use_message(opts.addr.port())
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", opts.addr)),
    };
    serve_on(listener, opts, engine, shutdown).await
}

/// Serves on an already bound listener (`opts.addr` is not used) until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tls_acceptor(&opts)?;
    let state = Arc::new(State {
        docker: engine.docker,
        node: opts.node_name.clone(),
        container_labels: opts.container_labels.clone(),
        pods: opts.pods.clone(),
    });
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, node = %opts.node_name, "the kubelet's streaming server is listening");
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity);
            let service = hyper::service::service_fn(move |req| {
                let (state, user) = (state.clone(), user.clone());
                async move { Ok::<_, Infallible>(handle(&state, user.as_ref(), req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn tls_acceptor(opts: &ServerOptions) -> anyhow::Result<TlsAcceptor> {
    // No certificate, or one from another CA: the handshake fails. Upgrades (SPDY, WebSocket)
    // need HTTP/1.1.
    crate::component_base::tls::serving_acceptor(
        &opts.tls_cert_file,
        &opts.tls_private_key_file,
        &opts.client_ca_file,
        false,
        &[b"http/1.1"],
    )
}

/// The user a client certificate names: (CN, O…).
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    groups: Vec<String>,
}

fn identity(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity { name, groups })
}

/// The API server's kubelet-client identity.
pub const APISERVER_USER: &str = "kube-apiserver-kubelet-client";

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `a=b&c=d` → pairs, percent-decoded.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(state: &State, user: Option<&Identity>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    if seg == ["healthz"] {
        return text(StatusCode::OK, "ok");
    }
    let Some(user) = user else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let verb = match *req.method() {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        _ => "update",
    };
    if user.name != APISERVER_USER && !user.groups.iter().any(|g| g == "system:masters") {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource=proxy)",
                user.name
            ),
        );
    }
    let q = query_pairs(req.uri().query().unwrap_or(""));
    let method_ok = matches!(*req.method(), Method::GET | Method::POST);
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    match seg.as_slice() {
        ["pods"] | ["pods", ""] if reading => pod_list(state),
        ["containerLogs", ns, pod, container] if *req.method() == Method::GET => {
            container_logs(state, ns, pod, container, &q).await
        }
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if method_ok => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(state, req, &ns, &pod, &container, &q, true).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if method_ok => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(state, req, &ns, &pod, &container, &q, false).await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if method_ok => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(state, req, &ns, &pod).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// `GET /pods`: a PodList of the kubelet's pods, sorted by namespace and name (the items
/// without kind and apiVersion, as the kubelet's encoder leaves them).
fn pod_list(state: &State) -> Response<Body> {
    let mut pods = state.pods.pods();
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let items: Vec<serde_json::Value> = pods
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    let list =
        serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    let mut r = Response::new(Full::new(Bytes::from(list.to_string())).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Containers

/// The attempts of container `container` of pod `ns/pod` on this node, newest first.
async fn attempts(
    state: &State,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<ContainerSummary>, Refusal> {
    let mut wanted = vec![
        format!("{}={ns}", labels::POD_NAMESPACE),
        format!("{}={pod}", labels::POD_NAME),
        format!("{}={container}", labels::CONTAINER_NAME),
        format!("{}={}", labels::NODE, state.node),
    ];
    wanted.extend(
        state
            .container_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    let mut filters = std::collections::HashMap::new();
    filters.insert("label".to_string(), wanted);
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let mut list = state
        .docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "failed to list containers: {}",
                    crate::kubelet::docker::message(&e)
                ),
            )
        })?;
    let restarts = |c: &ContainerSummary| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(labels::RESTART_COUNT))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    list.sort_by_key(|c| std::cmp::Reverse((restarts(c), c.created.unwrap_or(0))));
    Ok(list)
}

fn is_running(c: &ContainerSummary) -> bool {
    c.state
        .as_ref()
        .is_some_and(|s| s.to_string().eq_ignore_ascii_case("running"))
}

async fn container_logs(
    state: &State,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
) -> Response<Body> {
    let opts = match logs::LogOptions::from_query(q) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let list = match attempts(state, ns, pod, container).await {
        Ok(l) => l,
        Err((code, msg)) => return text(code, msg),
    };
    let chosen = if opts.previous {
        match list.get(1) {
            Some(c) => c,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                );
            }
        }
    } else {
        match list.first() {
            Some(c) => c,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                    ),
                );
            }
        }
    };
    let Some(id) = chosen.id.clone() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a container without an id",
        );
    };
    let follow = opts.follow && !opts.previous;
    let opts = logs::LogOptions { follow, ..opts };
    // The body reads from a channel fed by a task, so that it is Sync and ends when the client
    // goes away (the send fails).
    let mut lines = logs::stream(&state.docker, &id, &opts);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(chunk) = lines.next().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

// ---------------------------------------------------------------------------------------------
// Upgrades

/// A request refused before any upgrade: the status and the text the kubelet answers with.
type Refusal = (StatusCode, String);

/// The transport and protocol a client asked for.
enum Transport {
    Spdy(String),
    WebSocket(String),
}

/// Picks the transport and protocol and builds the 101, or the error answer.
fn negotiate(
    headers: &http::HeaderMap,
    ws_protocols: &[&str],
    spdy_protocols: &[&str],
) -> Result<(Transport, Response<Body>), Refusal> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if websocket::is_websocket_request(headers) {
        let offered = websocket::offered_protocols(headers);
        let Some(p) = offered.iter().find(|p| ws_protocols.contains(&p.as_str())) else {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {ws_protocols:?}"
                ),
            ));
        };
        let Some(key) = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|k| k.to_str().ok())
        else {
            return Err((
                StatusCode::BAD_REQUEST,
                "missing Sec-WebSocket-Key".to_string(),
            ));
        };
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&websocket::accept_key(key)) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Ok(v) = HeaderValue::from_str(p) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        return Ok((Transport::WebSocket(p.clone()), r));
    }
    let spdy = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy {
        return Err((
            StatusCode::BAD_REQUEST,
            "Upgrade request required".to_string(),
        ));
    }
    let offered: Vec<String> = headers
        .get_all("x-stream-protocol-version")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let Some(p) = offered
        .iter()
        .find(|p| spdy_protocols.contains(&p.as_str()))
    else {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {spdy_protocols:?}"
            ),
        ));
    };
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(p) {
        h.insert("x-stream-protocol-version", v);
    }
    Ok((Transport::Spdy(p.clone()), r))
}

async fn remote_command(
    state: &State,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
    exec: bool,
) -> Response<Body> {
    let opts = remotecommand::Options::from_query(q);
    if exec && opts.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        );
    }
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let list = match attempts(state, ns, pod, container).await {
        Ok(l) => l,
        Err((code, msg)) => return text(code, msg),
    };
    let Some(current) = list.first() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("container not found ({container:?})"),
        );
    };
    if !is_running(current) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    }
    let Some(id) = current.id.clone() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a container without an id",
        );
    };
    let (transport, response) = match negotiate(
        req.headers(),
        remotecommand::WEBSOCKET_PROTOCOLS,
        remotecommand::SPDY_PROTOCOLS,
    ) {
        Ok(t) => t,
        Err((code, msg)) => return text(code, msg),
    };
    let action = if exec {
        remotecommand::Action::Exec { container_id: id }
    } else {
        remotecommand::Action::Attach { container_id: id }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let docker = state.docker.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("exec: upgrade failed: {e}");
                return;
            }
        };
        match transport {
            Transport::Spdy(p) => {
                tracing::debug!(protocol = %p, "exec/attach over SPDY");
                remotecommand::serve_spdy(io, opts, action, docker).await
            }
            Transport::WebSocket(p) => {
                remotecommand::serve_websocket(io, &p, opts, action, docker).await
            }
        }
    });
    response
}

async fn port_forward(
    state: &State,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let sandboxes = match attempts(state, ns, pod, labels::SANDBOX_CONTAINER_NAME).await {
        Ok(l) => l,
        Err((code, msg)) => return text(code, msg),
    };
    let Some(sandbox) = sandboxes.iter().find(|c| is_running(c)) else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let uid = sandbox
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::POD_UID))
        .cloned()
        .unwrap_or_default();
    let ip = match &sandbox.id {
        Some(id) => pod_ip(&state.docker, id).await,
        None => None,
    };
    let (transport, response) = match negotiate(
        req.headers(),
        &[websocket::PORTFORWARD_TUNNEL],
        &[portforward::PROTOCOL],
    ) {
        Ok(t) => t,
        Err((code, msg)) => return text(code, msg),
    };
    let target = portforward::Target {
        pod: format!("{pod}_{ns}"),
        uid,
        ip,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("port-forward: upgrade failed: {e}");
                return;
            }
        };
        match transport {
            Transport::Spdy(p) => {
                tracing::debug!(protocol = %p, "port-forward over SPDY");
                portforward::serve(io, target).await
            }
            Transport::WebSocket(_) => {
                let ws = websocket::WsSession::start(io);
                portforward::serve(websocket::tunnel(ws), target).await
            }
        }
    });
    response
}

/// The sandbox's IP on its Docker network.
async fn pod_ip(docker: &Docker, sandbox_id: &str) -> Option<IpAddr> {
    let info = docker.inspect_container(sandbox_id, None).await.ok()?;
    let nets = info.network_settings?.networks?;
    nets.values()
        .filter_map(|n| n.ip_address.as_deref())
        .find_map(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("command=sh&command=-c&command=echo%20a%2Bb+c&tty&x=%zz%4"),
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".to_string(), "-c".to_string()),
                ("command".to_string(), "echo a+b c".to_string()),
                ("tty".to_string(), String::new()),
                ("x".to_string(), "%zz%4".to_string()),
            ]
        );
        assert_eq!(percent_decode("%e2%9c%93"), "✓");
    }

    #[test]
    fn negotiation_picks_the_transport() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        match negotiate(
            &h,
            remotecommand::WEBSOCKET_PROTOCOLS,
            remotecommand::SPDY_PROTOCOLS,
        ) {
            Ok((Transport::Spdy(p), r)) => {
                assert_eq!(p, "v4.channel.k8s.io");
                assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
                assert_eq!(
                    r.headers()["x-stream-protocol-version"],
                    "v4.channel.k8s.io"
                );
            }
            _ => panic!("SPDY v4 expected"),
        }
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v1.channel.k8s.io"),
        );
        match negotiate(
            &h,
            remotecommand::WEBSOCKET_PROTOCOLS,
            remotecommand::SPDY_PROTOCOLS,
        ) {
            Err((code, _)) => assert_eq!(code, StatusCode::FORBIDDEN),
            Ok(_) => panic!("v1 is not served"),
        }
        let mut w = http::HeaderMap::new();
        w.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        w.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        w.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        w.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        match negotiate(
            &w,
            remotecommand::WEBSOCKET_PROTOCOLS,
            remotecommand::SPDY_PROTOCOLS,
        ) {
            Ok((Transport::WebSocket(p), r)) => {
                assert_eq!(p, "v5.channel.k8s.io");
                assert_eq!(
                    r.headers()[header::SEC_WEBSOCKET_ACCEPT],
                    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                );
            }
            _ => panic!("WebSocket v5 expected"),
        }
        let plain = http::HeaderMap::new();
        assert!(negotiate(&plain, &[], &[]).is_err());
    }

    /// `GET path` over TLS with `client` (cert, key) as the client certificate: the status and
    /// body, or the handshake/connection error.
    async fn get(
        port: u16,
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
        path: &str,
    ) -> Result<(StatusCode, String), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let cfg = match client {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
                b.with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
            None => b.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, "127.0.0.1")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn only_the_apiservers_certificate_gets_in() {
        use crate::cluster::pki::{Pki, ServingOptions};
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::create(dir.path(), &ServingOptions::default()).expect("pki");
        let serving = pki
            .serving("kubelet", "node-1", &["127.0.0.1".to_string()])
            .expect("serving");
        let apiserver = pki
            .client("apiserver-kubelet-client", APISERVER_USER, &[])
            .expect("client");
        let other = pki.client("someone", "someone", &[]).expect("client");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // No request here reaches Docker; the client is never used.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 5, bollard::API_DEFAULT_VERSION)
                .expect("a client");
        let engine = Engine {
            docker,
            host: "http://127.0.0.1:9".into(),
            version: Default::default(),
        };
        let opts = ServerOptions {
            addr: listener.local_addr().expect("addr"),
            tls_cert_file: serving.cert.clone(),
            tls_private_key_file: serving.key.clone(),
            client_ca_file: pki.ca().cert.clone(),
            node_name: "node-1".into(),
            container_labels: vec![],
            pods: PodSource::new(|| {
                let pod = |ns: &str, name: &str| {
                    serde_json::from_value::<Pod>(serde_json::json!({
                        "metadata": {"namespace": ns, "name": name},
                        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
                    }))
                    .expect("a pod")
                };
                vec![pod("lab", "b"), pod("default", "z"), pod("lab", "a")]
            }),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, opts, engine, async move {
            let _ = stopped.await;
        }));
        let ca = pki.ca().cert;
        let me = Some((apiserver.cert.as_path(), apiserver.key.as_path()));
        assert_eq!(
            get(port, &ca, me, "/healthz").await,
            Ok((StatusCode::OK, "ok".to_string()))
        );
        assert_eq!(
            get(port, &ca, me, "/nope").await.map(|r| r.0),
            Ok(StatusCode::NOT_FOUND)
        );
        // The kubelet's pods, sorted, as a PodList.
        let (status, body) = get(port, &ca, me, "/pods").await.expect("GET /pods");
        assert_eq!(status, StatusCode::OK);
        let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(list["kind"], "PodList");
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["metadata"]["namespace"], p["metadata"]["name"]))
            .collect();
        assert_eq!(
            names,
            ["\"default\"/\"z\"", "\"lab\"/\"a\"", "\"lab\"/\"b\""]
        );
        assert!(list["items"][0].get("kind").is_none(), "{body}");
        let them = Some((other.cert.as_path(), other.key.as_path()));
        assert_eq!(
            get(port, &ca, them, "/pods").await.map(|r| r.0),
            Ok(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            get(port, &ca, them, "/containerLogs/default/p/c").await,
            Ok((
                StatusCode::FORBIDDEN,
                "Forbidden (user=someone, verb=get, resource=nodes, subresource=proxy)".to_string()
            ))
        );
        assert!(
            get(port, &ca, None, "/healthz").await.is_err(),
            "no certificate"
        );
        let _ = stop.send(());
        server.await.expect("join").expect("served");
    }
}
