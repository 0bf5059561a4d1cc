//! Probes and lifecycle handlers, as the kubelet's prober (pkg/kubelet/prober, pkg/probe) and
//! lifecycle handler runner run them, against Docker containers.
//!
//! **One probe** ([`run_probe`]): `exec` (a Docker exec in the container; exit code 0 is
//! success; stdout and stderr together, at most 10 KiB, are the output an `Unhealthy` event
//! shows, stdout before stderr as the CRI returns them; a timeout is a failure `command "…"
//! timed out`, and the timed-out process is left running, as with the CRI), `httpGet` (HTTP or HTTPS without
//! certificate verification; host defaults to the pod IP; port by number or by the name of a
//! container port; `httpHeaders`; `User-Agent: kube-probe/1.33` and `Accept: */*` unless
//! given; 200–399 is success; redirects are followed while they stay on the same host, at most
//! 10, and a redirect elsewhere ends the probe as a success with a `ProbeWarning`), `tcpSocket`
//! (a connection is success) and `grpc` (grpc.health.v1 `Check` with `service`; `SERVING` is
//! success). All within `timeoutSeconds` (default 1). Messages use the kubelet's (Go's)
//! wording: `HTTP probe failed with statuscode: 500`, `Get "http://…": dial tcp …: connect:
//! connection refused`, `service unhealthy (responded with "NOT_SERVING")`.
//!
//! **The worker** ([`ProbeWorker`], one per container and probe kind; [`ContainerProbes`]
//! holds a container's three): the kubelet's `worker.doProbe` state machine. Nothing is probed
//! before `initialDelaySeconds` after the container started, then every `periodSeconds`;
//! liveness and readiness wait until the startup probe has succeeded, and the startup probe
//! stops once it has; a verdict changes only after `failureThreshold` consecutive failures or
//! `successThreshold` consecutive successes; a liveness or startup failure puts the worker on
//! hold until the next container (`Killing`: "Container x failed liveness probe, will be
//! restarted"). Initial verdicts: liveness Success, readiness Failure, startup Unknown. Time is
//! passed in (`now: Instant`), so the pod worker drives it and tests use a fake clock; probes
//! are run through a [`ProbeRunner`] ([`DockerProbeRunner`] for real containers).
//!
//! **Lifecycle handlers** ([`run_handler`]): postStart / preStop `exec`, `httpGet`
//! (`User-Agent: kube-lifecycle/1.33`; any HTTP answer is success, as in the kubelet) and
//! `sleep`; a failure returns the kubelet's event message ("Exec lifecycle hook ([sh -c exit
//! 1]) for Container \"c\" in Pod \"p_ns(uid)\" failed - error: command 'sh -c exit 1' exited
//! with 1: , message: \"\"") for a `FailedPostStartHook` / `FailedPreStopHook` event.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Pod, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

/// At most this much probe output is kept (the kubelet's `maxReadLength`, 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// The User-Agent of probes.
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";
/// The User-Agent of httpGet lifecycle handlers.
pub const LIFECYCLE_USER_AGENT: &str = "kube-lifecycle/1.33";

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        })
    }
}

/// The outcome of one probe run, with its output (`pkg/probe.Result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Healthy; the output (an HTTP body, exec output).
    Success(String),
    /// Healthy, with something to tell (a redirect to another host was not followed).
    Warning(String),
    /// Unhealthy: the message for the `Unhealthy` event.
    Failure(String),
    /// The probe could not be run (a bad port name, …): the result is thrown away.
    Unknown(String),
}

/// A probe worker's current verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    Unknown,
}

/// An event the pod worker records on the pod (`involvedObject.fieldPath:
/// spec.containers{name}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Unhealthy`, `ProbeWarning`, `Killing`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// The container it is about.
    pub container: String,
}

/// Runs one probe (so tests can script results).
pub trait ProbeRunner: Send + Sync {
    /// Runs `probe` (of `kind`) once.
    fn run(&self, kind: ProbeKind, probe: &Probe) -> impl Future<Output = ProbeResult> + Send;
}

/// Runs probes against a Docker container of a pod.
pub struct DockerProbeRunner<'a> {
    /// The engine.
    pub docker: &'a Docker,
    /// The container's Docker id.
    pub container_id: &'a str,
    /// The pod's IP (the default host of httpGet, tcpSocket and grpc).
    pub pod_ip: &'a str,
    /// The container's spec (for named ports).
    pub container: &'a Container,
}

impl ProbeRunner for DockerProbeRunner<'_> {
    async fn run(&self, _kind: ProbeKind, probe: &Probe) -> ProbeResult {
        run_probe(probe, self).await
    }
}

fn probe_timeout(probe: &Probe) -> Duration {
    Duration::from_secs(probe.timeout_seconds.filter(|t| *t > 0).unwrap_or(1) as u64)
}

/// Runs `probe` once against the target.
pub async fn run_probe(probe: &Probe, target: &DockerProbeRunner<'_>) -> ProbeResult {
    let timeout = probe_timeout(probe);
    if let Some(e) = &probe.exec {
        return exec_probe(target.docker, target.container_id, e, timeout).await;
    }
    if let Some(h) = &probe.http_get {
        return http_probe(
            h,
            target.container,
            target.pod_ip,
            timeout,
            PROBE_USER_AGENT,
        )
        .await;
    }
    if let Some(t) = &probe.tcp_socket {
        return tcp_probe(t, target.container, target.pod_ip, timeout).await;
    }
    if let Some(g) = &probe.grpc {
        return grpc_probe(g, target.pod_ip, timeout).await;
    }
    ProbeResult::Unknown("missing probe handler".to_string())
}

/// What an exec in a container gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code (None when Docker did not report one).
    pub exit_code: Option<i64>,
    /// stdout followed by stderr (the CRI's ExecSync does not interleave them), at most
    /// `limit` bytes.
    pub combined: Vec<u8>,
    /// stderr alone, at most `limit` bytes.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` in the container and waits for it (no timeout here), keeping at most `limit`
/// bytes of output.
pub async fn exec_in_container(
    docker: &Docker,
    container_id: &str,
    cmd: &[String],
    limit: usize,
) -> Result<ExecOutput, String> {
    use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
    let created = docker
        .create_exec(
            container_id,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| super::docker::message(&e))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| super::docker::message(&e))?;
    let mut out = ExecOutput::default();
    let mut stdout = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(item) = output.next().await {
            let item = item.map_err(|e| super::docker::message(&e))?;
            let (bytes, is_err) = match item {
                bollard::container::LogOutput::StdErr { message } => (message, true),
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => (message, false),
                bollard::container::LogOutput::StdIn { .. } => continue,
            };
            let buf = if is_err { &mut out.stderr } else { &mut stdout };
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
    // As the CRI's ExecSync gives it: stdout, then stderr.
    out.combined = stdout;
    out.combined.extend_from_slice(&out.stderr);
    out.combined.truncate(limit);
    // The exit code may lag the end of the stream a little.
    for _ in 0..50 {
        let info = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| super::docker::message(&e))?;
        if info.running != Some(true) {
            out.exit_code = info.exit_code;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

/// An `exec` probe.
pub async fn exec_probe(
    docker: &Docker,
    container_id: &str,
    action: &ExecAction,
    timeout: Duration,
) -> ProbeResult {
    let cmd = action.command.clone().unwrap_or_default();
    match tokio::time::timeout(
        timeout,
        exec_in_container(docker, container_id, &cmd, MAX_OUTPUT),
    )
    .await
    {
        Err(_) => ProbeResult::Failure(format!("command {:?} timed out", cmd.join(" "))),
        Ok(Err(e)) => ProbeResult::Unknown(e),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.combined).into_owned();
            match out.exit_code {
                Some(0) => ProbeResult::Success(text),
                Some(_) => ProbeResult::Failure(text),
                None => ProbeResult::Unknown(format!(
                    "command '{}' did not report an exit code",
                    cmd.join(" ")
                )),
            }
        }
    }
}

/// The port of an httpGet/tcpSocket action: a number, or the name of a container port (or a
/// number written as a string), as the kubelet resolves it.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n: i64 = match port {
        IntOrString::Int(n) => *n as i64,
        IntOrString::String(name) => {
            let by_name = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port as i64);
            match by_name {
                Some(n) => n,
                None => name
                    .parse::<i64>()
                    .map_err(|_| format!("strconv.Atoi: parsing {name:?}: invalid syntax"))?,
            }
        }
    };
    if n > 0 && n < 65536 {
        Ok(n as u16)
    } else {
        Err(format!("invalid port number: {n}"))
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn dial_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        _ => format!("dial tcp {addr}: {e}"),
    }
}

/// A `tcpSocket` probe.
pub async fn tcp_probe(
    action: &TCPSocketAction,
    container: &Container,
    pod_ip: &str,
    timeout: Duration,
) -> ProbeResult {
    let port = match resolve_port(&action.port, container) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Unknown(e),
    };
    let host = action
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(pod_ip);
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Err(_) => ProbeResult::Failure(format!("dial tcp {addr}: i/o timeout")),
        Ok(Err(e)) => ProbeResult::Failure(dial_error(&addr, &e)),
        Ok(Ok(_)) => ProbeResult::Success(String::new()),
    }
}

/// A `grpc` probe (grpc.health.v1 `Check`).
pub async fn grpc_probe(action: &GRPCAction, pod_ip: &str, timeout: Duration) -> ProbeResult {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let addr = join_host_port(pod_ip, action.port.clamp(0, 65535) as u16);
    let secs = format!("{}s", timeout.as_secs());
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return ProbeResult::Unknown(e.to_string()),
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Err(_) => {
            return ProbeResult::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}: context deadline exceeded"
            ));
        }
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            return ProbeResult::Failure(format!(
                "error: failed to connect service at {addr:?}: {msg}"
            ));
        }
        Ok(Ok(c)) => c,
    };
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: action.service.clone().unwrap_or_default(),
    };
    match tokio::time::timeout(timeout, client.check(req)).await {
        Err(_) => ProbeResult::Failure(format!(
            "timeout: health rpc did not complete within {secs}"
        )),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unimplemented => ProbeResult::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            )),
            tonic::Code::DeadlineExceeded => ProbeResult::Failure(format!(
                "timeout: health rpc did not complete within {secs}"
            )),
            _ => ProbeResult::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            )),
        },
        Ok(Ok(resp)) => {
            let st = resp.into_inner().status();
            if st == ServingStatus::Serving {
                ProbeResult::Success("service healthy".to_string())
            } else {
                ProbeResult::Failure(format!(
                    "service unhealthy (responded with {:?})",
                    st.as_str_name()
                ))
            }
        }
    }
}

struct HttpTarget {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

struct HttpAnswer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// An `httpGet` probe (also the httpGet lifecycle handler with its own User-Agent).
pub async fn http_probe(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
    timeout: Duration,
    user_agent: &str,
) -> ProbeResult {
    let port = match resolve_port(&action.port, container) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Unknown(e),
    };
    let https = action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut target = HttpTarget {
        https,
        host,
        port,
        path,
    };
    let first_url = target.url();
    let first_host = target.host.clone();
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut redirects = 0;
    loop {
        let url = target.url();
        let answer = match tokio::time::timeout_at(
            deadline,
            http_get_once(&target, &headers, user_agent),
        )
        .await
        {
            Err(_) => {
                return ProbeResult::Failure(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                ));
            }
            Ok(Err(e)) => return ProbeResult::Failure(format!("Get {url:?}: {e}")),
            Ok(Ok(a)) => a,
        };
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        let follows = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
        if follows && let Some(loc) = &answer.location {
            match resolve_location(&target, loc) {
                Some(next) if next.host == first_host => {
                    if redirects >= 10 {
                        return ProbeResult::Failure(format!(
                            "Get {first_url:?}: stopped after 10 redirects"
                        ));
                    }
                    redirects += 1;
                    target = next;
                    continue;
                }
                _ => {
                    return ProbeResult::Warning(format!(
                        "Probe terminated redirects, Response body: {body}"
                    ));
                }
            }
        }
        return if (200..400).contains(&answer.status) {
            if answer.status >= 300 {
                ProbeResult::Warning(format!("Probe terminated redirects, Response body: {body}"))
            } else {
                ProbeResult::Success(body)
            }
        } else {
            ProbeResult::Failure(format!(
                "HTTP probe failed with statuscode: {}",
                answer.status
            ))
        };
    }
}

/// The next target of a redirect (absolute or relative `Location`).
fn resolve_location(current: &HttpTarget, location: &str) -> Option<HttpTarget> {
    if let Some(rest) = location
        .strip_prefix("http://")
        .map(|r| (false, r))
        .or_else(|| location.strip_prefix("https://").map(|r| (true, r)))
    {
        let (https, rest) = rest;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let uri: http::uri::Authority = authority.parse().ok()?;
        let host = uri
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        return Some(HttpTarget {
            https,
            host,
            port,
            path,
        });
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = current.path.split('?').next().unwrap_or("/");
        let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(1)];
        format!("{dir}{location}")
    };
    Some(HttpTarget {
        https: current.https,
        host: current.host.clone(),
        port: current.port,
        path,
    })
}

async fn http_get_once(
    target: &HttpTarget,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<HttpAnswer, String> {
    let addr = join_host_port(&target.host, target.port);
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| dial_error(&addr, &e))?;
    let mut req = http::Request::builder().method("GET").uri(&target.path);
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req = req.header("Host", &addr);
    }
    if !has("user-agent") {
        req = req.header("User-Agent", user_agent);
    }
    if !has("accept") {
        req = req.header("Accept", "*/*");
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req = req.header("Connection", "close");
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    if target.https {
        let connector =
            tokio_rustls::TlsConnector::from(crate::component_base::tls::insecure_client()?);
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{}: {e}", target.host))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        send(tls, req).await
    } else {
        send(tcp, req).await
    }
}

async fn send<S>(
    io: S,
    req: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<HttpAnswer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while data.len() < MAX_OUTPUT {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(chunk) = f.into_data() {
                        data.extend_from_slice(&chunk);
                    }
                }
                // A body cut short is still an answer (the kubelet keeps what it read).
                Some(Err(_)) | None => break,
            }
        }
        data.truncate(MAX_OUTPUT);
        Ok(HttpAnswer {
            status,
            location,
            body: data,
        })
    }
    .await;
    driver.abort();
    result
}

/// One probe of one container: the kubelet's probe worker.
#[derive(Debug, Clone)]
pub struct ProbeWorker {
    kind: ProbeKind,
    probe: Probe,
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    verdict: Verdict,
    last_result: Option<Verdict>,
    result_run: u32,
    on_hold: bool,
    running_since: Option<Instant>,
    last_probe: Option<Instant>,
}

impl ProbeWorker {
    /// The worker for `probe` of `kind`, before any container.
    pub fn new(kind: ProbeKind, probe: &Probe) -> ProbeWorker {
        let pos = |v: Option<i32>, d: u32| v.filter(|v| *v > 0).map(|v| v as u32).unwrap_or(d);
        let success_threshold = match kind {
            // Validation requires 1 for liveness and startup.
            ProbeKind::Liveness | ProbeKind::Startup => 1,
            ProbeKind::Readiness => pos(probe.success_threshold, 1),
        };
        ProbeWorker {
            kind,
            probe: probe.clone(),
            initial_delay: Duration::from_secs(
                probe.initial_delay_seconds.filter(|v| *v > 0).unwrap_or(0) as u64,
            ),
            period: Duration::from_secs(pos(probe.period_seconds, 10) as u64),
            success_threshold,
            failure_threshold: pos(probe.failure_threshold, 3),
            verdict: initial_verdict(kind),
            last_result: None,
            result_run: 0,
            on_hold: false,
            running_since: None,
            last_probe: None,
        }
    }

    /// Which probe this is.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// A new container (a new id) started running at `at`: counters reset, hold lifted.
    pub fn container_started(&mut self, at: Instant) {
        self.verdict = initial_verdict(self.kind);
        self.last_result = None;
        self.result_run = 0;
        self.on_hold = false;
        self.running_since = Some(at);
        self.last_probe = None;
    }

    /// The container is not running (any more): readiness and liveness verdicts are Failure
    /// (the kubelet's results for a non-running container), nothing is probed.
    pub fn container_stopped(&mut self) {
        self.running_since = None;
        if self.kind != ProbeKind::Startup {
            self.verdict = Verdict::Failure;
        }
    }

    /// When the next probe is due (None: not while the container is not running, on hold, or
    /// gated by `started`).
    pub fn next_due(&self, started: bool) -> Option<Instant> {
        let since = self.running_since?;
        if self.on_hold {
            return None;
        }
        match self.kind {
            ProbeKind::Startup if started => return None,
            ProbeKind::Liveness | ProbeKind::Readiness if !started => return None,
            _ => {}
        }
        let first = since + self.initial_delay;
        Some(match self.last_probe {
            None => first,
            Some(last) => (last + self.period).max(first),
        })
    }

    /// Whether a probe is due at `now`.
    pub fn due(&self, now: Instant, started: bool) -> bool {
        self.next_due(started).is_some_and(|t| now >= t)
    }

    /// Takes the result of a probe run at `now`: updates the counters and the verdict, returns
    /// the events (`Unhealthy`, `ProbeWarning`).
    pub fn observe(
        &mut self,
        now: Instant,
        result: ProbeResult,
        container: &str,
    ) -> Vec<ProbeEvent> {
        self.last_probe = Some(now);
        let ev = |reason: &'static str, message: String| ProbeEvent {
            type_: "Warning",
            reason,
            message,
            container: container.to_string(),
        };
        let mut events = Vec::new();
        let r = match result {
            ProbeResult::Success(_) => Verdict::Success,
            ProbeResult::Warning(out) => {
                events.push(ev(
                    "ProbeWarning",
                    format!("{} probe warning: {out}", self.kind),
                ));
                Verdict::Success
            }
            ProbeResult::Failure(out) => {
                events.push(ev(
                    "Unhealthy",
                    format!("{} probe failed: {out}", self.kind),
                ));
                Verdict::Failure
            }
            ProbeResult::Unknown(err) => {
                events.push(ev(
                    "Unhealthy",
                    format!(
                        "{} probe errored and resulted in unknown state: {err}",
                        self.kind
                    ),
                ));
                // The kubelet throws an errored result away.
                return events;
            }
        };
        if self.last_result == Some(r) {
            self.result_run += 1;
        } else {
            self.last_result = Some(r);
            self.result_run = 1;
        }
        let threshold = match r {
            Verdict::Failure => self.failure_threshold,
            _ => self.success_threshold,
        };
        if self.result_run < threshold {
            return events;
        }
        self.verdict = r;
        if r == Verdict::Failure && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.on_hold = true;
            self.result_run = 0;
        }
        events
    }

    /// Runs the probe if it is due at `now`.
    pub async fn tick(
        &mut self,
        now: Instant,
        started: bool,
        runner: &impl ProbeRunner,
        container: &str,
    ) -> Vec<ProbeEvent> {
        if !self.due(now, started) {
            return Vec::new();
        }
        let result = runner.run(self.kind, &self.probe).await;
        self.observe(now, result, container)
    }
}

fn initial_verdict(kind: ProbeKind) -> Verdict {
    match kind {
        ProbeKind::Liveness => Verdict::Success,
        ProbeKind::Readiness => Verdict::Failure,
        ProbeKind::Startup => Verdict::Unknown,
    }
}

/// The probes of one container and what the pod worker asks of them.
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    name: String,
    restart_on_failure: bool,
    running: bool,
    /// The startup probe's worker.
    pub startup: Option<ProbeWorker>,
    /// The liveness probe's worker.
    pub liveness: Option<ProbeWorker>,
    /// The readiness probe's worker.
    pub readiness: Option<ProbeWorker>,
    killed_for: Option<ProbeKind>,
}

impl ContainerProbes {
    /// The workers for `container`'s probes; `restart_policy` is the pod's (`Always`,
    /// `OnFailure`, `Never`; for the Killing message).
    pub fn new(container: &Container, restart_policy: Option<&str>) -> ContainerProbes {
        let w = |k, p: &Option<Probe>| p.as_ref().map(|p| ProbeWorker::new(k, p));
        ContainerProbes {
            name: container.name.clone(),
            restart_on_failure: restart_policy != Some("Never"),
            running: false,
            startup: w(ProbeKind::Startup, &container.startup_probe),
            liveness: w(ProbeKind::Liveness, &container.liveness_probe),
            readiness: w(ProbeKind::Readiness, &container.readiness_probe),
            killed_for: None,
        }
    }

    fn workers(&mut self) -> impl Iterator<Item = &mut ProbeWorker> {
        [&mut self.startup, &mut self.liveness, &mut self.readiness]
            .into_iter()
            .flatten()
    }

    /// A new container instance started running at `at`.
    pub fn container_started(&mut self, at: Instant) {
        self.running = true;
        self.killed_for = None;
        self.workers().for_each(|w| w.container_started(at));
    }

    /// The container stopped.
    pub fn container_stopped(&mut self) {
        self.running = false;
        self.workers().for_each(ProbeWorker::container_stopped);
    }

    /// The container status' `started`: running, and the startup probe (if any) succeeded.
    pub fn started(&self) -> bool {
        self.running
            && self
                .startup
                .as_ref()
                .is_none_or(|w| w.verdict() == Verdict::Success)
    }

    /// The container status' `ready`: started, and the readiness probe (if any) succeeded.
    pub fn ready(&self) -> bool {
        self.started()
            && self
                .readiness
                .as_ref()
                .is_none_or(|w| w.verdict() == Verdict::Success)
    }

    /// The liveness verdict (Success without a liveness probe).
    pub fn liveness(&self) -> Verdict {
        self.liveness
            .as_ref()
            .map_or(Verdict::Success, ProbeWorker::verdict)
    }

    /// The startup verdict (Success without a startup probe).
    pub fn startup(&self) -> Verdict {
        self.startup
            .as_ref()
            .map_or(Verdict::Success, ProbeWorker::verdict)
    }

    /// Whether a liveness or startup failure asks for the container to be killed (and, under
    /// restartPolicy Always/OnFailure, restarted).
    pub fn needs_kill(&self) -> Option<ProbeKind> {
        if !self.running {
            return None;
        }
        if self.liveness() == Verdict::Failure {
            Some(ProbeKind::Liveness)
        } else if self.startup() == Verdict::Failure {
            Some(ProbeKind::Startup)
        } else {
            None
        }
    }

    /// The `Killing` message for a probe failure, as the kubelet words it.
    pub fn killing_message(&self, kind: ProbeKind) -> String {
        let what = match kind {
            ProbeKind::Startup => "startup",
            _ => "liveness",
        };
        let mut m = format!("Container {} failed {what} probe", self.name);
        if self.restart_on_failure {
            m.push_str(", will be restarted");
        }
        m
    }

    /// The earliest time a probe is due (for the pod worker's timer).
    pub fn next_due(&self) -> Option<Instant> {
        let started = self.started();
        [&self.startup, &self.liveness, &self.readiness]
            .into_iter()
            .flatten()
            .filter_map(|w| w.next_due(started))
            .min()
    }

    /// Runs every due probe at `now` (startup first, so a startup success opens liveness and
    /// readiness in the same tick); returns the events, with a `Killing` event (type Normal)
    /// when liveness or startup has just failed.
    pub async fn tick(&mut self, now: Instant, runner: &impl ProbeRunner) -> Vec<ProbeEvent> {
        let mut events = Vec::new();
        if !self.running {
            return events;
        }
        let name = self.name.clone();
        let started = self.started();
        if let Some(w) = self.startup.as_mut() {
            events.extend(w.tick(now, started, runner, &name).await);
        }
        let started = self.started();
        if let Some(w) = self.liveness.as_mut() {
            events.extend(w.tick(now, started, runner, &name).await);
        }
        if let Some(w) = self.readiness.as_mut() {
            events.extend(w.tick(now, started, runner, &name).await);
        }
        if self.killed_for.is_none()
            && let Some(kind) = self.needs_kill()
        {
            self.killed_for = Some(kind);
            events.push(ProbeEvent {
                type_: "Normal",
                reason: "Killing",
                message: self.killing_message(kind),
                container: name,
            });
        }
        events
    }
}

/// `name_namespace(uid)`, the kubelet's `format.Pod`.
pub fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// Where a lifecycle handler runs.
pub struct HandlerTarget<'a> {
    /// The engine.
    pub docker: &'a Docker,
    /// The container's Docker id.
    pub container_id: &'a str,
    /// The pod's IP.
    pub pod_ip: &'a str,
    /// The pod.
    pub pod: &'a Pod,
    /// The container's spec.
    pub container: &'a Container,
}

/// The event reasons of failed hooks.
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
/// See [`FAILED_POST_START_HOOK`].
pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";

/// Runs a postStart/preStop handler; `Err` is the kubelet's event message. There is no
/// timeout here: the caller bounds a preStop hook by the grace period.
pub async fn run_handler(handler: &LifecycleHandler, t: &HandlerTarget<'_>) -> Result<(), String> {
    let cname = &t.container.name;
    let pod = format_pod(t.pod);
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let shown = format!("[{}]", cmd.join(" "));
        let out = exec_in_container(t.docker, t.container_id, &cmd, MAX_OUTPUT).await;
        let (err, output) = match out {
            Ok(o) if o.exit_code == Some(0) => return Ok(()),
            Ok(o) => (
                format!(
                    "command '{}' exited with {}: {}",
                    cmd.join(" "),
                    o.exit_code.unwrap_or(-1),
                    String::from_utf8_lossy(&o.stderr)
                ),
                String::from_utf8_lossy(&o.combined).into_owned(),
            ),
            Err(e) => (e, String::new()),
        };
        return Err(format!(
            "Exec lifecycle hook ({shown}) for Container {cname:?} in Pod {pod:?} failed - error: {err}, message: {}",
            crate::kubelet::env::go_quote(&output)
        ));
    }
    if let Some(h) = &handler.http_get {
        // The kubelet's hook client has no timeout of its own; 30 s keeps a dead server from
        // holding the pod worker forever.
        let r = http_probe(
            h,
            t.container,
            t.pod_ip,
            Duration::from_secs(30),
            LIFECYCLE_USER_AGENT,
        )
        .await;
        let err = match r {
            // Any HTTP answer is success for a hook; only an unreachable server fails it.
            ProbeResult::Success(_) | ProbeResult::Warning(_) => return Ok(()),
            ProbeResult::Failure(m) if m.starts_with("HTTP probe failed with statuscode") => {
                return Ok(());
            }
            ProbeResult::Failure(m) | ProbeResult::Unknown(m) => m,
        };
        return Err(format!(
            "HTTP lifecycle hook ({}) for Container {cname:?} in Pod {pod:?} failed - error: {err}",
            h.path.as_deref().unwrap_or("")
        ));
    }
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if handler.tcp_socket.is_some() {
        // Deprecated and not run by the kubelet either (it only logs).
        return Ok(());
    }
    Err(format!(
        "Cannot run handler: invalid handler for Container {cname:?} in Pod {pod:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::Mutex;

    /// Returns scripted results per kind (Success when the script is empty).
    #[derive(Default)]
    struct Script(Mutex<std::collections::HashMap<&'static str, VecDeque<ProbeResult>>>);

    impl Script {
        fn push(&self, kind: ProbeKind, r: ProbeResult) {
            let key = match kind {
                ProbeKind::Liveness => "l",
                ProbeKind::Readiness => "r",
                ProbeKind::Startup => "s",
            };
            self.0
                .lock()
                .expect("lock")
                .entry(key)
                .or_default()
                .push_back(r);
        }
    }

    impl ProbeRunner for Script {
        async fn run(&self, kind: ProbeKind, _p: &Probe) -> ProbeResult {
            let key = match kind {
                ProbeKind::Liveness => "l",
                ProbeKind::Readiness => "r",
                ProbeKind::Startup => "s",
            };
            self.0
                .lock()
                .expect("lock")
                .get_mut(key)
                .and_then(VecDeque::pop_front)
                .unwrap_or(ProbeResult::Success(String::new()))
        }
    }

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    fn fail(m: &str) -> ProbeResult {
        ProbeResult::Failure(m.to_string())
    }

    #[tokio::test]
    async fn liveness_thresholds_and_killing() {
        let c = Container {
            name: "app".into(),
            liveness_probe: Some(probe(5, 10, 1, 3)),
            ..Default::default()
        };
        let mut cp = ContainerProbes::new(&c, Some("Always"));
        let script = Script::default();
        let t0 = Instant::now();
        cp.container_started(t0);
        assert_eq!(cp.liveness(), Verdict::Success);
        assert!(cp.ready(), "no readiness probe: ready once started");
        // Before the initial delay: nothing runs.
        script.push(ProbeKind::Liveness, fail("boom"));
        assert!(
            cp.tick(t0 + Duration::from_secs(4), &script)
                .await
                .is_empty()
        );
        assert_eq!(cp.next_due(), Some(t0 + Duration::from_secs(5)));
        // Failures 1 and 2: events, verdict unchanged.
        let ev = cp.tick(t0 + Duration::from_secs(5), &script).await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, "Unhealthy");
        assert_eq!(ev[0].message, "Liveness probe failed: boom");
        // Not due again until a period has passed.
        script.push(ProbeKind::Liveness, fail("boom"));
        assert!(
            cp.tick(t0 + Duration::from_secs(14), &script)
                .await
                .is_empty()
        );
        assert_eq!(
            cp.tick(t0 + Duration::from_secs(15), &script).await.len(),
            1
        );
        assert_eq!(cp.liveness(), Verdict::Success);
        // A success in between resets the run.
        assert!(
            cp.tick(t0 + Duration::from_secs(25), &script)
                .await
                .is_empty()
        );
        for i in 0..3 {
            script.push(ProbeKind::Liveness, fail("boom"));
            let ev = cp
                .tick(t0 + Duration::from_secs(35 + 10 * i), &script)
                .await;
            if i < 2 {
                assert_eq!(ev.len(), 1, "{ev:?}");
                assert_eq!(cp.liveness(), Verdict::Success);
            } else {
                assert_eq!(ev.len(), 2, "{ev:?}");
                assert_eq!(ev[1].reason, "Killing");
                assert_eq!(ev[1].type_, "Normal");
                assert_eq!(
                    ev[1].message,
                    "Container app failed liveness probe, will be restarted"
                );
            }
        }
        assert_eq!(cp.liveness(), Verdict::Failure);
        assert_eq!(cp.needs_kill(), Some(ProbeKind::Liveness));
        // On hold: nothing more until a new container.
        assert_eq!(cp.next_due(), None);
        assert!(
            cp.tick(t0 + Duration::from_secs(100), &script)
                .await
                .is_empty()
        );
        let t1 = t0 + Duration::from_secs(120);
        cp.container_started(t1);
        assert_eq!(cp.liveness(), Verdict::Success);
        assert_eq!(cp.needs_kill(), None);
        assert_eq!(cp.next_due(), Some(t1 + Duration::from_secs(5)));

        let never = ContainerProbes::new(&c, Some("Never"));
        assert_eq!(
            never.killing_message(ProbeKind::Liveness),
            "Container app failed liveness probe"
        );
    }

    #[tokio::test]
    async fn readiness_success_threshold_and_startup_gating() {
        let c = Container {
            name: "web".into(),
            startup_probe: Some(probe(0, 1, 1, 2)),
            readiness_probe: Some(probe(0, 1, 2, 1)),
            liveness_probe: Some(probe(0, 1, 1, 1)),
            ..Default::default()
        };
        let mut cp = ContainerProbes::new(&c, None);
        let s = Script::default();
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        cp.container_started(t0);
        assert!(!cp.started() && !cp.ready());
        assert_eq!(cp.startup(), Verdict::Unknown);
        // The startup probe fails once (below its threshold of 2); liveness would fail, but is
        // gated until startup succeeds.
        s.push(ProbeKind::Startup, fail("not yet"));
        s.push(ProbeKind::Liveness, fail("dead"));
        let ev = cp.tick(at(0), &s).await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].message, "Startup probe failed: not yet");
        assert!(!cp.started());
        // Startup succeeds: liveness (now open) runs its scripted failure → kill.
        let ev = cp.tick(at(1), &s).await;
        assert!(cp.started());
        assert_eq!(cp.startup(), Verdict::Success);
        assert!(
            ev.iter()
                .any(|e| e.message == "Liveness probe failed: dead"),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|e| e.message == "Container web failed liveness probe, will be restarted")
        );
        // New container; readiness needs two successes in a row.
        cp.container_started(at(10));
        cp.tick(at(10), &s).await; // startup success
        assert!(cp.started());
        assert!(
            !cp.ready(),
            "one readiness success is below the threshold of 2"
        );
        cp.tick(at(11), &s).await;
        assert!(cp.ready());
        // Started: the startup probe is not run again (a scripted failure stays unused).
        assert_eq!(cp.startup.as_ref().and_then(|w| w.next_due(true)), None);
        s.push(ProbeKind::Startup, fail("never run"));
        // One readiness failure (threshold 1): not ready.
        s.push(ProbeKind::Readiness, fail("busy"));
        let ev = cp.tick(at(12), &s).await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].message, "Readiness probe failed: busy");
        assert!(!cp.ready() && cp.started());
        assert_eq!(cp.liveness(), Verdict::Success);
        assert_eq!(cp.startup(), Verdict::Success);
        s.0.lock().expect("lock").clear();
        // A startup probe that fails its threshold kills.
        let mut cp2 = ContainerProbes::new(&c, Some("OnFailure"));
        cp2.container_started(t0);
        s.push(ProbeKind::Startup, fail("x"));
        s.push(ProbeKind::Startup, fail("x"));
        cp2.tick(at(0), &s).await;
        let ev = cp2.tick(at(1), &s).await;
        assert_eq!(
            ev.last().map(|e| e.message.as_str()),
            Some("Container web failed startup probe, will be restarted")
        );
        // Errored results are thrown away; warnings count as success.
        let mut w = ProbeWorker::new(ProbeKind::Readiness, &probe(0, 1, 1, 1));
        w.container_started(t0);
        let ev = w.observe(at(0), ProbeResult::Unknown("bad port".into()), "c");
        assert_eq!(
            ev[0].message,
            "Readiness probe errored and resulted in unknown state: bad port"
        );
        assert_eq!(w.verdict(), Verdict::Failure);
        let ev = w.observe(
            at(1),
            ProbeResult::Warning("Probe terminated redirects, Response body: x".into()),
            "c",
        );
        assert_eq!(ev[0].reason, "ProbeWarning");
        assert_eq!(w.verdict(), Verdict::Success);
        // A stopped container is not ready and not probed.
        cp.container_stopped();
        assert!(!cp.ready() && cp.next_due().is_none());
    }

    #[test]
    fn ports_resolve_by_name_or_number() {
        let c = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert_eq!(resolve_port(&IntOrString::Int(9090), &c), Ok(9090));
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &c),
            Err("strconv.Atoi: parsing \"web\": invalid syntax".into())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
    }

    /// A tiny HTTP server: answers each connection from `f(path, raw request)`.
    async fn serve(
        f: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let f = Arc::new(f);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let f = f.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&req).into_owned();
                    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().expect("lock").push(req.clone());
                    let _ = s.write_all(f(&path, &req).as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn resp(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn get(port: i32, path: &str) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            host: Some("127.0.0.1".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_probe_statuses_headers_redirects() {
        let (port, seen) = serve(move |path, _| match path {
            "/ok" => resp("200 OK", "", "fine"),
            "/bad" => resp("500 Internal Server Error", "", "oops"),
            "/hop" => resp("302 Found", "Location: /ok\r\n", ""),
            "/away" => resp(
                "302 Found",
                "Location: http://example.invalid/x\r\n",
                "moved",
            ),
            "/loop" => resp("302 Found", "Location: /loop\r\n", ""),
            _ => resp("404 Not Found", "", ""),
        })
        .await;
        let port = port as i32;
        let c = Container::default();
        let t = Duration::from_secs(2);
        let run = |a: HTTPGetAction| {
            let c = c.clone();
            async move { http_probe(&a, &c, "127.0.0.1", t, PROBE_USER_AGENT).await }
        };
        assert_eq!(
            run(get(port, "/ok")).await,
            ProbeResult::Success("fine".into())
        );
        assert_eq!(
            run(get(port, "/bad")).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            run(get(port, "/hop")).await,
            ProbeResult::Success("fine".into())
        );
        assert_eq!(
            run(get(port, "/away")).await,
            ProbeResult::Warning("Probe terminated redirects, Response body: moved".into())
        );
        assert_eq!(
            run(get(port, "/loop")).await,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
            ))
        );
        let mut with_headers = get(port, "ok");
        with_headers.http_headers = Some(vec![HTTPHeader {
            name: "X-Probe".into(),
            value: "yes".into(),
        }]);
        assert!(matches!(run(with_headers).await, ProbeResult::Success(_)));
        let last = seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default();
        assert!(last.starts_with("GET /ok HTTP/1.1\r\n"), "{last}");
        let lower = last.to_lowercase();
        assert!(lower.contains("user-agent: kube-probe/1.33"), "{last}");
        assert!(lower.contains("accept: */*"), "{last}");
        assert!(lower.contains("x-probe: yes"), "{last}");

        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port") as i32;
        assert_eq!(
            run(get(closed, "/")).await,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        let tcp = |p: i32| TCPSocketAction {
            host: Some("127.0.0.1".into()),
            port: IntOrString::Int(p),
        };
        assert_eq!(
            tcp_probe(&tcp(port), &c, "", t).await,
            ProbeResult::Success(String::new())
        );
        assert_eq!(
            tcp_probe(&tcp(closed), &c, "", t).await,
            ProbeResult::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn http_probe_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port() as i32;
        // Accept and never answer.
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let mut a = get(port, "/slow");
        a.scheme = Some("HTTP".into());
        let r = http_probe(
            &a,
            &Container::default(),
            "",
            Duration::from_millis(300),
            PROBE_USER_AGENT,
        )
        .await;
        keep.abort();
        assert_eq!(
            r,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
    }

    #[tokio::test]
    async fn grpc_probe_against_tonic_health() {
        use tonic_health::ServingStatus;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("ok", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("down", ServingStatus::NotServing)
            .await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port() as i32;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        let g = |svc: &str| GRPCAction {
            port,
            service: Some(svc.into()),
        };
        let t = Duration::from_secs(2);
        assert_eq!(
            grpc_probe(&g("ok"), "127.0.0.1", t).await,
            ProbeResult::Success("service healthy".into())
        );
        assert_eq!(
            grpc_probe(&g("down"), "127.0.0.1", t).await,
            ProbeResult::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        server.abort();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port") as i32;
        let r = grpc_probe(
            &GRPCAction {
                port: closed,
                service: None,
            },
            "127.0.0.1",
            t,
        )
        .await;
        match r {
            ProbeResult::Failure(m) => assert!(
                m.starts_with(&format!(
                    "error: failed to connect service at \"127.0.0.1:{closed}\": "
                )),
                "{m}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn pod_format() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("u1".into());
        assert_eq!(format_pod(&p), "web_ns(u1)");
    }
}
