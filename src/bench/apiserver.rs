//! `minik bench apiserver`: `minik apiserver` over HTTPS, on minik's store and on the real etcd,
//! side by side (issue 3's targets).
//!
//! Each section gets a fresh cluster per store: `minik etcd serve` (or the real etcd) and
//! `minik apiserver` in front of it, child processes of this executable on free 127.0.0.1
//! ports, with a PKI made by [`crate::cluster::pki`] in a temp dir. Processes are killed and temp
//! dirs removed when a section ends, also on error and on Ctrl-C (the caller drops the future;
//! every guard here cleans up on drop). One cluster runs at a time.
//!
//! The client talks as the admin (client certificate, `system:masters`) over HTTP/2 (ALPN `h2`,
//! what client-go negotiates) or HTTP/1.1 keep-alive (`--protocol http1`), one connection per
//! client task, and runs in this process on the same CPUs as the servers.
//!
//! Sections:
//!
//! 1. single-object GET / CREATE / UPDATE (PUT) of a ConfigMap (~1 KiB) and a Pod (~2 KiB as
//!    sent, ~4 KiB with the server's defaults) at 1, 10 and 100 concurrent clients, each client
//!    issuing requests back to back: p50/p99/max, throughput, and CPU per request of the API
//!    server, the store and this client (from `/proc/<pid>/stat`); then the same calls straight
//!    on the store, with the API server's own store client and transactions (the floor under
//!    each row: a call through the API server contains one of these);
//! 2. LIST of 10,000 pods as JSON and as a Table (`Accept:
//!    application/json;as=Table;v=v1;g=meta.k8s.io`, what kubectl asks for), whole and paged
//!    with `limit=500` as kubectl pages: time to the full result, median of several runs;
//! 3. watch fan-out: 100 watchers on a namespace's pods from a resourceVersion, then 10,000
//!    writes (creates, then updates) to that namespace: the time until every watcher has every
//!    event, whether each received every event exactly once and in order (by resourceVersion),
//!    and the latency from the start of a write to its delivery.
//!
//! Output is Markdown on stdout, progress on stderr. Performance targets are printed as
//! PASS/FAIL lines; a *correctness* failure (a failed request, a wrong LIST, a lost, duplicated
//! or reordered watch event) makes [`run`] return `false`, so the command exits non-zero.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use tokio::task::JoinSet;

use super::etcd::{
    Bins, Server as Store, Target, display_command, emit, percentile, progress, ratio, tool_version,
};
use super::{
    MachineInfo, Table, TempDir, command_line, fmt_bytes, fmt_ms, fmt_thousands, free_ports,
    load_average, process_cpu, shell_quote, tail, utc_now,
};
use crate::apiserver::storage::{EtcdConfig, EtcdStorage, StorageError};
use crate::cluster::pki::{self, Pki};

/// How long the API server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One request (a 20 MB LIST included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The issue's targets.
const TARGET_P99: Duration = Duration::from_millis(10);
const TARGET_LIST: Duration = Duration::from_millis(300);
const TARGET_CLIENTS: usize = 100;
const TARGET_LIST_PODS: usize = 10_000;
/// Namespaces of the sections.
const NS_SINGLE: &str = "bench-single";
const NS_LIST: &str = "bench-list";
const NS_WATCH: &str = "bench-watch";
/// The Accept header kubectl sends for `kubectl get` (Table, then plain JSON).
const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const ACCEPT_JSON: &str = "application/json";

/// Which store(s) the API server runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// minik's etcd-compatible store (`minik etcd serve`).
    Minik,
    /// The real etcd (`--etcd-bin`), the reference.
    Etcd,
    /// Both, one after the other, reported side by side.
    Both,
}

/// The HTTP version the client speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 over TLS (ALPN h2), as client-go.
    H2,
    /// HTTP/1.1 keep-alive over TLS.
    Http1,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::H2 => "HTTP/2",
            Protocol::Http1 => "HTTP/1.1",
        }
    }
}

/// The benchmark's sections.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Single-object GET / CREATE / UPDATE latency.
    Single,
    /// LIST of many pods, JSON and Table, whole and paged.
    List,
    /// Watch fan-out.
    Watch,
}

/// What `minik bench apiserver` measures.
#[derive(Debug, Clone)]
pub struct Options {
    pub store: StoreChoice,
    pub etcd_bin: PathBuf,
    pub protocol: Protocol,
    pub sections: Vec<Section>,
    /// Concurrent client counts of the single-object section.
    pub clients: Vec<usize>,
    /// How long each single-object measurement runs…
    pub duration: Duration,
    /// …or, when set, how many requests each client issues.
    pub requests: Option<usize>,
    pub list_pods: usize,
    pub list_runs: usize,
    pub page_size: usize,
    /// Creates in flight while loading the LIST section's pods.
    pub load_clients: usize,
    pub watchers: usize,
    pub watch_events: usize,
    /// Writers (connections, one write in flight each) of the watch section.
    pub watch_writers: usize,
    /// How long the watchers may take to receive everything.
    pub watch_timeout: Duration,
}

impl Options {
    fn targets(&self) -> Vec<Target> {
        match self.store {
            StoreChoice::Minik => vec![Target::Minik],
            StoreChoice::Etcd => vec![Target::Etcd],
            StoreChoice::Both => vec![Target::Minik, Target::Etcd],
        }
    }

    fn describe_duration(&self) -> String {
        match self.requests {
            Some(n) => format!("{n} requests per client"),
            None => format!("{} s per measurement", self.duration.as_secs_f64()),
        }
    }
}

/// Runs the benchmark and prints its report. `Ok(false)`: something was incorrect (see the
/// module docs); performance targets alone never make it `false`.
pub async fn run(mut opts: Options) -> anyhow::Result<bool> {
    opts.clients.retain(|c| *c > 0);
    opts.clients.sort_unstable();
    opts.clients.dedup();
    if opts.clients.is_empty() {
        opts.clients = vec![1];
    }
    opts.list_pods = opts.list_pods.max(1);
    opts.list_runs = opts.list_runs.max(1);
    opts.page_size = opts.page_size.max(1);
    opts.load_clients = opts.load_clients.max(1);
    opts.watchers = opts.watchers.max(1);
    opts.watch_events = opts.watch_events.max(2);
    opts.watch_writers = opts.watch_writers.max(1);
    let mut seen = Vec::new();
    opts.sections.retain(|s| {
        let new = !seen.contains(s);
        seen.push(*s);
        new
    });

    let bins = Bins {
        minik: std::env::current_exe().context("locating the minik binary")?,
        etcd: opts.etcd_bin.clone(),
    };
    let mut targets = opts.targets();
    let mut notes = Vec::new();
    let etcd_version = tool_version(&opts.etcd_bin, "--version");
    if let Err(why) = &etcd_version
        && targets.contains(&Target::Etcd)
    {
        if opts.store == StoreChoice::Etcd {
            bail!("--store etcd, but the real etcd is unusable: {why}");
        }
        let msg = format!(
            "real etcd unusable ({why}); measuring on minik's store only. Install it with \
             `apt-get install etcd-server` or pass --etcd-bin PATH."
        );
        eprintln!("WARNING: {msg}");
        notes.push(msg);
        targets.retain(|t| *t != Target::Etcd);
    }

    // Connections at once in this process (the API server has as many, plus its store's).
    let peak = opts
        .sections
        .iter()
        .map(|s| match s {
            Section::Single => *opts.clients.last().unwrap_or(&1),
            Section::List => opts.load_clients + 1,
            Section::Watch => opts.watchers + opts.watch_writers,
        })
        .max()
        .unwrap_or(1);
    if let Some(limit) = open_files_limit()
        && limit < (peak as u64) * 2 + 256
    {
        bail!(
            "this run opens about {peak} connections per process, but the open-files limit is \
             {limit}; raise it (`ulimit -n {}`) or lower --clients / --watchers",
            (peak * 2 + 256).next_power_of_two()
        );
    }

    let run_dir = TempDir::new("minik-bench-apiserver").context("creating the temp dir")?;
    let pki = Pki::create(&run_dir.path().join("pki"), &pki::ServingOptions::default())
        .context("creating the PKI")?;
    let machine = MachineInfo::collect(&std::env::temp_dir());

    // Header.
    let mut h = String::new();
    let _ = writeln!(h, "## API server: on minik's store vs on etcd\n");
    let _ = writeln!(h, "- Command: `{}`", command_line());
    let _ = writeln!(h, "- Date: {}", utc_now());
    h.push_str(&machine.markdown());
    if let Some(load) = load_average() {
        let _ = writeln!(h, "- Load average (1/5/15 min) at start: {load}");
    }
    let build = if cfg!(debug_assertions) {
        "**debug build: numbers are not representative**"
    } else {
        "release build"
    };
    let _ = writeln!(
        h,
        "- minik: {} ({build}), `{} apiserver --etcd-servers http://127.0.0.1:PORT \
         --secure-port PORT --tls-cert-file … --tls-private-key-file … --client-ca-file …`",
        env!("CARGO_PKG_VERSION"),
        shell_quote(&bins.minik.display().to_string())
    );
    for &t in &targets {
        let v = match t {
            Target::Minik | Target::Noop => format!("minik {}", env!("CARGO_PKG_VERSION")),
            Target::Etcd => etcd_version.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            h,
            "- Store **{}**: `{v}`, `{}`",
            t.name(),
            display_command(t, &bins)
        );
    }
    let _ = writeln!(
        h,
        "- Client: this process, {} over TLS with the admin's client certificate, one connection \
         per client, on the same {} CPUs as the servers. Each section starts a fresh store + API \
         server; one cluster runs at a time.",
        opts.protocol.name(),
        machine.cpus
    );
    for n in &notes {
        let _ = writeln!(h, "- **Note:** {n}");
    }
    emit(&h);

    let tls = TlsConfigs::new(&pki)?;
    let mut checks = Checks::default();
    for &section in &opts.sections {
        let mut results = Vec::new();
        for &t in &targets {
            let name = match section {
                Section::Single => "single",
                Section::List => "list",
                Section::Watch => "watch",
            };
            progress(&format!("{name}: starting a cluster on {}", t.name()));
            let r = async {
                let cluster =
                    Cluster::start(t, &bins, &pki, run_dir.path(), name, &tls, opts.protocol)
                        .await?;
                let r = match section {
                    Section::Single => single_bench(&cluster, &opts).await.map(Outcome::Single),
                    Section::List => list_bench(&cluster, &opts).await.map(Outcome::List),
                    Section::Watch => watch_bench(&cluster, &opts).await.map(Outcome::Watch),
                };
                if r.is_err() {
                    eprintln!(
                        "[bench] apiserver log ({}):\n{}",
                        t.name(),
                        cluster.api.log_tail(20)
                    );
                }
                r
            }
            .await;
            let r = r.map_err(|e| {
                eprintln!("[bench] {name} on {} failed: {e:#}", t.name());
                let first = format!("{e}");
                format!(
                    "error: {}",
                    first
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(80)
                        .collect::<String>()
                )
            });
            results.push((t, r));
        }
        let md = match section {
            Section::Single => single_section(&opts, &results, &mut checks),
            Section::List => list_section(&opts, &results, &mut checks),
            Section::Watch => watch_section(&opts, &results, &mut checks),
        };
        emit(&md);
    }
    emit(&checks.render());
    drop(run_dir);
    if let Some(load) = load_average() {
        emit(&format!("Load average (1/5/15 min) at the end: {load}.\n"));
    }
    Ok(!checks.any_incorrect)
}

/// The soft `RLIMIT_NOFILE` of this process, from /proc.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

enum Outcome {
    Single(Vec<Cell>),
    List(ListResult),
    Watch(WatchResult),
}

type Results = [(Target, Result<Outcome, String>)];

/// A table cell for a store whose section failed; the error is in the Targets section.
const FAILED: &str = "failed (see Targets)";

fn single_of(r: &Result<Outcome, String>) -> Result<&Vec<Cell>, String> {
    match r {
        Ok(Outcome::Single(c)) => Ok(c),
        Ok(_) => Err("—".into()),
        Err(_) => Err(FAILED.into()),
    }
}

fn list_of(r: &Result<Outcome, String>) -> Result<&ListResult, String> {
    match r {
        Ok(Outcome::List(l)) => Ok(l),
        Ok(_) => Err("—".into()),
        Err(_) => Err(FAILED.into()),
    }
}

fn watch_of(r: &Result<Outcome, String>) -> Result<&WatchResult, String> {
    match r {
        Ok(Outcome::Watch(w)) => Ok(w),
        Ok(_) => Err("—".into()),
        Err(_) => Err(FAILED.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// PASS/FAIL
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Checks {
    lines: Vec<String>,
    /// A correctness check failed.
    any_incorrect: bool,
}

impl Checks {
    fn target(&mut self, ok: bool, what: String) {
        self.lines
            .push(format!("- **{}** {what}", if ok { "PASS" } else { "FAIL" }));
    }

    fn correctness(&mut self, ok: bool, what: String) {
        if !ok {
            self.any_incorrect = true;
        }
        self.target(ok, what);
    }

    /// A measurement that is neither a target nor a check (shown beside them).
    fn note(&mut self, what: String) {
        self.lines.push(format!("- (for comparison) {what}"));
    }

    fn render(&self) -> String {
        let mut s = String::from("### Targets (issue 3)\n\n");
        if self.lines.is_empty() {
            s.push_str("Nothing measured.\n");
        }
        for l in &self.lines {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A store and an API server in front of it. Field order = drop order: the API server is
/// killed first, then the store.
struct Cluster {
    api: ApiServer,
    store: Store,
    endpoint: Endpoint,
}

impl Cluster {
    async fn start(
        target: Target,
        bins: &Bins,
        pki: &Pki,
        parent: &Path,
        name: &str,
        tls: &TlsConfigs,
        protocol: Protocol,
    ) -> anyhow::Result<Cluster> {
        let store = Store::start(target, bins, parent, &format!("{name}-store")).await?;
        let dir = parent.join(format!("{name}-apiserver-{}", target.name()));
        let (api, endpoint) =
            ApiServer::start(bins, &store.endpoint(), pki, &dir, tls, protocol).await?;
        Ok(Cluster {
            api,
            store,
            endpoint,
        })
    }

    /// CPU time used so far by the API server, the store and this process.
    fn cpu(&self) -> Cpu {
        let of = |pid: Option<u32>| pid.and_then(|p| process_cpu(&p.to_string()));
        Cpu {
            api: of(self.api.pid()).unwrap_or_default(),
            store: of(self.store.pid()).unwrap_or_default(),
            client: process_cpu("self").unwrap_or_default(),
        }
    }
}

/// `minik apiserver`; dropping it kills the process and removes its directory.
struct ApiServer {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl ApiServer {
    async fn start(
        bins: &Bins,
        etcd: &str,
        pki: &Pki,
        dir: &Path,
        tls: &TlsConfigs,
        protocol: Protocol,
    ) -> anyhow::Result<(ApiServer, Endpoint)> {
        const ATTEMPTS: usize = 3;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for attempt in 1..=ATTEMPTS {
            let port = free_ports(1).context("finding a free port")?[0];
            let path = |p: &Path| p.display().to_string();
            let args = [
                "apiserver".to_string(),
                "--etcd-servers".into(),
                etcd.to_string(),
                "--secure-port".into(),
                port.to_string(),
                "--bind-address".into(),
                "127.0.0.1".into(),
                "--tls-cert-file".into(),
                path(&pki.apiserver().cert),
                "--tls-private-key-file".into(),
                path(&pki.apiserver().key),
                "--client-ca-file".into(),
                path(&pki.ca().cert),
            ];
            let log_path = dir.join(format!("apiserver-{attempt}.log"));
            let log = File::create(&log_path)?;
            let mut command = std::process::Command::new(&bins.minik);
            command
                .args(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .env_remove("RUST_LOG")
                .env_remove("MINIK_LOG_LEVEL");
            let child = command
                .spawn()
                .with_context(|| format!("starting {} {}", bins.minik.display(), args.join(" ")))?;
            let mut api = ApiServer {
                child: Some(child),
                dir: dir.to_path_buf(),
                log: log_path,
            };
            let endpoint = Endpoint {
                port,
                tls: tls.for_protocol(protocol),
                protocol,
            };
            match api.wait_ready(&endpoint).await {
                Ok(()) => return Ok((api, endpoint)),
                Err(e) => {
                    let log = api.log_tail(15);
                    if let Some(mut c) = api.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    if log.contains("in use") && attempt < ATTEMPTS {
                        continue;
                    }
                    bail!("minik apiserver did not start: {e:#}\n--- log ---\n{log}");
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self, n: usize) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), n)
    }

    async fn wait_ready(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        super::wait_until_ready(&mut self.child, READY_TIMEOUT, || async {
            let mut c = Client::connect(endpoint).await?;
            let (status, body) = c.call(Method::GET, "/readyz", ACCEPT_JSON, None).await?;
            if status == StatusCode::OK && body.as_ref() == b"ok" {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "/readyz: {status} {}",
                    String::from_utf8_lossy(&body)
                ))
            }
        })
        .await
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time of the three processes.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    api: Duration,
    store: Duration,
    client: Duration,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            api: self.api.saturating_sub(before.api),
            store: self.store.saturating_sub(before.store),
            client: self.client.saturating_sub(before.client),
        }
    }

    /// `api / store / client` per unit of work, in µs.
    fn per(&self, n: usize) -> String {
        let us = |d| micros_per(d, n);
        format!(
            "{:.0} / {:.0} / {:.0}",
            us(self.api),
            us(self.store),
            us(self.client)
        )
    }

    /// `store / client` per unit of work, in µs (the API server took no part).
    fn per_without_api(&self, n: usize) -> String {
        let us = |d| micros_per(d, n);
        format!("{:.0} / {:.0}", us(self.store), us(self.client))
    }
}

/// `d` divided over `n` units of work, in µs.
fn micros_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// HTTPS client
// ---------------------------------------------------------------------------------------------

/// The admin's TLS client configurations, one per ALPN.
struct TlsConfigs {
    h2: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
}

impl TlsConfigs {
    fn new(pki: &Pki) -> anyhow::Result<TlsConfigs> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca().cert)? {
            roots.add(cert?)?;
        }
        let admin = pki.admin();
        let chain = CertificateDer::pem_file_iter(&admin.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&admin.key)?;
        let base = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
        let with = |alpn: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(TlsConfigs {
            h2: with(b"h2"),
            http1: with(b"http/1.1"),
        })
    }

    fn for_protocol(&self, p: Protocol) -> Arc<rustls::ClientConfig> {
        match p {
            Protocol::H2 => self.h2.clone(),
            Protocol::Http1 => self.http1.clone(),
        }
    }
}

/// Where and how to reach the API server.
#[derive(Clone)]
struct Endpoint {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    protocol: Protocol,
}

enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(http1::SendRequest<Full<Bytes>>),
}

/// One connection to the API server, one request at a time.
struct Client {
    sender: Sender,
    authority: String,
}

impl Client {
    async fn connect(ep: &Endpoint) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, ep.port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{}", ep.port))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = tokio_rustls::TlsConnector::from(ep.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let io = TokioIo::new(tls);
        let sender = match ep.protocol {
            Protocol::H2 => {
                // Go's HTTP/2 client windows (4 MiB per stream), so a 20 MB LIST streams freely.
                let (s, conn) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(4 << 20)
                    .initial_connection_window_size(16 << 20)
                    .handshake(io)
                    .await
                    .context("HTTP/2 handshake")?;
                tokio::spawn(conn);
                Sender::H2(s)
            }
            Protocol::Http1 => {
                let (s, conn) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
                tokio::spawn(conn);
                Sender::H1(s)
            }
        };
        Ok(Client {
            sender,
            authority: format!("127.0.0.1:{}", ep.port),
        })
    }

    /// Sends a request; the response's body is still to be read.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method)
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, "minik-bench");
        b = match self.sender {
            Sender::H2(_) => b.uri(format!("https://{}{path}", self.authority)),
            Sender::H1(_) => b.uri(path).header(header::HOST, &self.authority),
        };
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(Full::new(body.unwrap_or_default()))?;
        let resp = match &mut self.sender {
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        Ok(resp)
    }

    /// One request and its whole response body, within [`REQUEST_TIMEOUT`].
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let fut = async {
            let resp = self.send(method, path, accept, body).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .with_context(|| format!("{what} timed out after {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what.clone())
    }

    /// A request that must succeed (2xx); returns the body.
    async fn ok(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Bytes> {
        let (status, resp) = self.call(method.clone(), path, ACCEPT_JSON, body).await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", snippet(&resp));
        }
        Ok(resp)
    }
}

/// `n` connections, opened concurrently.
async fn connect_many(ep: &Endpoint, n: usize) -> anyhow::Result<Vec<Client>> {
    futures_util::future::try_join_all((0..n).map(|_| Client::connect(ep))).await
}

/// The first 200 characters of a body, for messages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

#[derive(Deserialize)]
struct WithMeta {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

/// `metadata.resourceVersion` of an object (or list) in a response body.
fn resource_version(body: &[u8]) -> anyhow::Result<String> {
    let m: WithMeta = serde_json::from_slice(body)
        .with_context(|| format!("response is not an object: {}", snippet(body)))?;
    Ok(m.metadata.resource_version)
}

async fn create_namespace(c: &mut Client, name: &str) -> anyhow::Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    c.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(Bytes::from(ns.to_string())),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// A JSON body with holes for the name, the resourceVersion and a sequence number, rendered
/// without parsing (the client shares the CPUs with the servers, so it must be cheap).
struct Template {
    pieces: Vec<Piece>,
}

enum Piece {
    Lit(String),
    Name,
    Rv,
    Seq,
}

const NAME_HOLE: &str = "@@NAME@@";
const RV_HOLE: &str = "@@RV@@";
const SEQ_HOLE: &str = "@@SEQ@@";

impl Template {
    fn new(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("@@") {
            let (lit, tail) = rest.split_at(i);
            let hole = if tail.starts_with(NAME_HOLE) {
                Some((NAME_HOLE, Piece::Name))
            } else if tail.starts_with(RV_HOLE) {
                Some((RV_HOLE, Piece::Rv))
            } else if tail.starts_with(SEQ_HOLE) {
                Some((SEQ_HOLE, Piece::Seq))
            } else {
                None
            };
            match hole {
                Some((h, piece)) => {
                    pieces.push(Piece::Lit(lit.to_string()));
                    pieces.push(piece);
                    rest = &tail[h.len()..];
                }
                None => {
                    pieces.push(Piece::Lit(rest[..i + 2].to_string()));
                    rest = &tail[2..];
                }
            }
        }
        pieces.push(Piece::Lit(rest.to_string()));
        Template { pieces }
    }

    fn render(&self, name: &str, rv: &str, seq: u64) -> Bytes {
        let mut out = BytesMut::with_capacity(4096);
        let mut seq_buf = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Piece::Name => out.extend_from_slice(name.as_bytes()),
                Piece::Rv => out.extend_from_slice(rv.as_bytes()),
                Piece::Seq => {
                    seq_buf.clear();
                    let _ = write!(seq_buf, "{seq}");
                    out.extend_from_slice(seq_buf.as_bytes());
                }
            }
        }
        out.freeze()
    }
}

/// The object kinds of the single-object section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ConfigMap,
    Pod,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::ConfigMap, Kind::Pod];

    fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Pod => "pod",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Pod => "pods",
        }
    }

    fn collection(self, ns: &str) -> String {
        format!("/api/v1/namespaces/{ns}/{}", self.plural())
    }

    /// The object as a user sends it (with `@@RV@@` in its metadata when `with_rv`).
    fn manifest(self, ns: &str, with_rv: bool) -> serde_json::Value {
        let mut v = match self {
            Kind::ConfigMap => configmap_manifest(ns),
            Kind::Pod => pod_manifest(ns),
        };
        if with_rv {
            v["metadata"]["resourceVersion"] = json!(RV_HOLE);
        }
        v
    }

    fn template(self, ns: &str, with_rv: bool) -> Template {
        Template::new(&self.manifest(ns, with_rv).to_string())
    }
}

/// A ConfigMap of about 1 KiB: an application's properties file and two small keys.
fn configmap_manifest(ns: &str) -> serde_json::Value {
    let props: String = (0..24)
        .map(|i| format!("feature.flag.{i:02}=enabled\n"))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME_HOLE,
            "namespace": ns,
            "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "bench"},
            "annotations": {"bench.minik.dev/seq": SEQ_HOLE},
        },
        "data": {
            "application.properties": props,
            "log.level": "info",
            "listen.address": "0.0.0.0:8080",
        },
    })
}

/// A Deployment's pod as its ReplicaSet would create it: two containers (an app with ports,
/// env, resources, probes and mounts, and a log shipper), two volumes, an owner reference.
fn pod_manifest(ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": NAME_HOLE,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/part-of": "bench",
                "pod-template-hash": "7c9f8b6d5",
            },
            "annotations": {
                "bench.minik.dev/seq": SEQ_HOLE,
                "kubectl.kubernetes.io/default-container": "web",
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7c9f8b6d5",
                "uid": "6f1c1c86-1e8d-4b8e-9a0e-3c2a1f5d7b10",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.k8s.io/nginx-slim:0.27",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {
                        "httpGet": {"path": "/livez", "port": "http"},
                        "initialDelaySeconds": 10,
                        "periodSeconds": 10,
                    },
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/web", "readOnly": true},
                        {"name": "cache", "mountPath": "/var/cache/web"},
                    ],
                },
                {
                    "name": "log-shipper",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", "tail -F /var/cache/web/access.log"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/web"}],
                },
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "web-config"}},
                {"name": "cache", "emptyDir": {}},
            ],
            "terminationGracePeriodSeconds": 30,
        },
    })
}

/// A server-returned object (GET/POST response) turned into an update template: its
/// resourceVersion and the `bench.minik.dev/seq` annotation become holes. This is what
/// client-go's Update sends: the object as read, modified.
fn update_template(server_object: &[u8]) -> anyhow::Result<Template> {
    let mut v: serde_json::Value = serde_json::from_slice(server_object)
        .with_context(|| format!("not an object: {}", snippet(server_object)))?;
    v["metadata"]["resourceVersion"] = json!(RV_HOLE);
    v["metadata"]["annotations"]["bench.minik.dev/seq"] = json!(SEQ_HOLE);
    Ok(Template::new(&v.to_string()))
}

// ---------------------------------------------------------------------------------------------
// 1. Single-object calls
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Create,
    Update,
}

impl Op {
    const ALL: [Op; 3] = [Op::Get, Op::Create, Op::Update];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
        }
    }
}

/// The path a measurement's requests take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// HTTPS to the API server (what the targets are about).
    Api,
    /// Straight to the store, with the API server's own store client ([`EtcdStorage`], one
    /// gRPC connection) and the same transactions, keys and value sizes: the floor under the
    /// API server's latency at that concurrency.
    Store,
}

/// One measurement: an op on a kind at a concurrency.
struct Cell {
    via: Via,
    kind: Kind,
    op: Op,
    clients: usize,
    /// Successful requests' latencies, sorted.
    lat: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    cpu: Cpu,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p99(&self) -> Duration {
        percentile(&self.lat, 99.0)
    }

    /// p50, p99, max and req/s as table cells.
    fn latency_cells(&self) -> [String; 4] {
        [
            fmt_ms(percentile(&self.lat, 50.0)),
            fmt_ms(self.p99()),
            fmt_ms(*self.lat.last().unwrap_or(&Duration::ZERO)),
            fmt_thousands(self.rate().round() as u64),
        ]
    }

    /// Requests sent, failed ones included.
    fn requests(&self) -> usize {
        self.lat.len() + self.errors
    }

    /// Failed requests as a note and a failed correctness check (`label` names the call).
    fn report_failures(
        &self,
        store: &str,
        label: &str,
        checks: &mut Checks,
        notes: &mut Vec<String>,
    ) {
        let n = self.clients;
        let first = self.first_error.as_deref().unwrap_or("?");
        if self.lat.is_empty() {
            checks.correctness(
                false,
                format!("{store}: {label} at {n} clients: no request succeeded ({first})"),
            );
        } else if self.errors > 0 {
            notes.push(format!(
                "{store}: {label} at {n} clients: {} failed requests, first: {first}",
                self.errors
            ));
            checks.correctness(
                false,
                format!(
                    "{store}: {label} at {n} clients: {} of {} requests failed",
                    self.errors,
                    self.requests()
                ),
            );
        }
    }
}

/// The cell of `via`, `kind`, `op` at `n` clients in one store's results.
fn find_cell(
    r: &Result<Outcome, String>,
    via: Via,
    kind: Kind,
    op: Op,
    n: usize,
) -> Result<Option<&Cell>, String> {
    single_of(r).map(|cs| {
        cs.iter()
            .find(|c| c.via == via && c.kind == kind && c.op == op && c.clients == n)
    })
}

/// What one client task does, and its state between measurements.
enum Job {
    Get {
        path: String,
    },
    Create {
        collection: String,
        template: Arc<Template>,
        prefix: String,
    },
    Update {
        path: String,
        template: Template,
        rv: String,
    },
}

#[derive(Clone, Copy)]
enum Stop {
    At(Instant),
    After(usize),
}

impl Stop {
    /// Whether a client that has issued `sent` requests stops now.
    fn reached(self, sent: u64) -> bool {
        match self {
            Stop::At(t) => Instant::now() >= t,
            Stop::After(n) => sent >= n as u64,
        }
    }
}

struct WorkerOut {
    lat: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl WorkerOut {
    fn new() -> WorkerOut {
        WorkerOut {
            lat: Vec::with_capacity(4096),
            errors: 0,
            first_error: None,
        }
    }
}

async fn worker(mut client: Client, mut job: Job, stop: Stop) -> (Client, Job, WorkerOut) {
    let mut out = WorkerOut::new();
    let mut seq: u64 = 0;
    while !stop.reached(seq) {
        seq += 1;
        let t0 = Instant::now();
        let r = match &job {
            Job::Get { path } => client.call(Method::GET, path, ACCEPT_JSON, None).await,
            Job::Create {
                collection,
                template,
                prefix,
            } => {
                let body = template.render(&format!("{prefix}-{seq}"), "", seq);
                client
                    .call(Method::POST, collection, ACCEPT_JSON, Some(body))
                    .await
            }
            Job::Update { path, template, rv } => {
                let body = template.render("", rv, seq);
                client
                    .call(Method::PUT, path, ACCEPT_JSON, Some(body))
                    .await
            }
        };
        let d = t0.elapsed();
        let failure = match r {
            Ok((status, body)) if status.is_success() => match &mut job {
                Job::Update { rv, .. } => match resource_version(&body) {
                    Ok(v) => {
                        *rv = v;
                        out.lat.push(d);
                        None
                    }
                    Err(e) => Some(format!("{e:#}")),
                },
                _ => {
                    out.lat.push(d);
                    None
                }
            },
            Ok((status, body)) => Some(format!("{status}: {}", snippet(&body))),
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(f) = failure {
            out.errors += 1;
            out.first_error.get_or_insert(f);
            // A failed update (a conflict, say) re-reads the object before going on.
            if let Job::Update { path, rv, .. } = &mut job
                && let Ok((s, body)) = client.call(Method::GET, path, ACCEPT_JSON, None).await
                && s.is_success()
                && let Ok(v) = resource_version(&body)
            {
                *rv = v;
            }
            if matches!(stop, Stop::At(_)) && out.errors > 1000 {
                break;
            }
        }
    }
    (client, job, out)
}

async fn single_bench(cluster: &Cluster, opts: &Options) -> anyhow::Result<Vec<Cell>> {
    let max_c = *opts.clients.last().unwrap_or(&1);
    let mut clients = connect_many(&cluster.endpoint, max_c).await?;
    create_namespace(&mut clients[0], NS_SINGLE).await?;
    let stop = || match opts.requests {
        Some(n) => Stop::After(n),
        None => Stop::At(Instant::now() + opts.duration),
    };
    let storage = Arc::new(
        EtcdStorage::connect(&EtcdConfig {
            servers: vec![cluster.store.endpoint()],
            ..Default::default()
        })
        .await
        .context("connecting to the store")?,
    );
    let mut cells = Vec::new();
    for kind in Kind::ALL {
        let collection = kind.collection(NS_SINGLE);
        let create = Arc::new(kind.template(NS_SINGLE, false));
        // Per client: an object to GET and one to UPDATE (created with that client, which
        // warms its connection up too).
        let mut update_jobs = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            c.ok(
                Method::POST,
                &collection,
                Some(create.render(&format!("get-{i}"), "", 0)),
            )
            .await?;
            let created = c
                .ok(
                    Method::POST,
                    &collection,
                    Some(create.render(&format!("upd-{i}"), "", 0)),
                )
                .await?;
            update_jobs.push(Some(Job::Update {
                path: format!("{collection}/upd-{i}"),
                template: update_template(&created)?,
                rv: resource_version(&created)?,
            }));
        }
        let mut state = (std::mem::take(&mut clients), update_jobs);
        cells.extend(
            measure_ops(
                cluster,
                opts,
                Via::Api,
                kind,
                &stop,
                &mut state,
                |(clients, update_jobs), op, n, i, stop| {
                    let client = clients.pop().expect("max_c clients");
                    let job = match op {
                        Op::Get => Job::Get {
                            path: format!("{collection}/get-{i}"),
                        },
                        Op::Create => Job::Create {
                            collection: collection.clone(),
                            template: create.clone(),
                            prefix: format!("c{n}-{i}"),
                        },
                        Op::Update => update_jobs[i].take().expect("update job present"),
                    };
                    async move {
                        let (client, job, out) = worker(client, job, stop).await;
                        ((client, job), out)
                    }
                },
                |(clients, update_jobs), i, (client, job)| {
                    clients.push(client);
                    if let Job::Update { .. } = job {
                        update_jobs[i] = Some(job);
                    }
                },
            )
            .await?,
        );
        clients = state.0;
        cells.extend(store_cells(cluster, &storage, kind, opts, stop).await?);
    }
    Ok(cells)
}

/// Every op at every client count, for one kind along one path: `start(state, op, n, i,
/// stop)` makes client `i`'s task of a measurement with `n` clients, `done(state, i, r)` takes
/// back what that task handed back when it ended.
#[allow(clippy::too_many_arguments)]
async fn measure_ops<S, R, F>(
    cluster: &Cluster,
    opts: &Options,
    via: Via,
    kind: Kind,
    stop: &impl Fn() -> Stop,
    state: &mut S,
    mut start: impl FnMut(&mut S, Op, usize, usize, Stop) -> F,
    mut done: impl FnMut(&mut S, usize, R),
) -> anyhow::Result<Vec<Cell>>
where
    R: Send + 'static,
    F: Future<Output = (R, WorkerOut)> + Send + 'static,
{
    let mut cells = Vec::new();
    for op in Op::ALL {
        for &n in &opts.clients {
            let path = match via {
                Via::Api => "",
                Via::Store => ", straight on the store",
            };
            progress(&format!(
                "  {} {} with {n} client(s){path}, {}",
                op.name(),
                kind.name(),
                opts.describe_duration()
            ));
            let stop = stop();
            let tasks = (0..n).map(|i| start(state, op, n, i, stop)).collect();
            let (cell, back) = measure(cluster, via, kind, op, tasks).await?;
            for (i, r) in back.into_iter().enumerate() {
                done(state, i, r);
            }
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// Runs one measurement: the client tasks `tasks` (not started yet) all at once, until each
/// stops; returns the cell and what each task handed back, in task order.
async fn measure<R, F>(
    cluster: &Cluster,
    via: Via,
    kind: Kind,
    op: Op,
    tasks: Vec<F>,
) -> anyhow::Result<(Cell, Vec<R>)>
where
    R: Send + 'static,
    F: Future<Output = (R, WorkerOut)> + Send + 'static,
{
    let n = tasks.len();
    let mut set = JoinSet::new();
    let cpu0 = cluster.cpu();
    let start = Instant::now();
    for (i, t) in tasks.into_iter().enumerate() {
        set.spawn(async move { (i, t.await) });
    }
    let mut cell = Cell {
        via,
        kind,
        op,
        clients: n,
        lat: Vec::new(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        cpu: Cpu::default(),
    };
    let mut back = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        let (i, (r, out)) = r.context("client task panicked")?;
        back.push((i, r));
        cell.lat.extend(out.lat);
        cell.errors += out.errors;
        if cell.first_error.is_none() {
            cell.first_error = out.first_error;
        }
    }
    cell.elapsed = start.elapsed();
    cell.cpu = cluster.cpu().since(cpu0);
    cell.lat.sort_unstable();
    if let Some(e) = &cell.first_error {
        eprintln!("[bench]    {} errors, first: {e}", cell.errors);
    }
    back.sort_unstable_by_key(|(i, _)| *i);
    Ok((cell, back.into_iter().map(|(_, r)| r).collect()))
}

/// Where [`store_cells`] writes: outside `/registry`, so that no watch of the API server sees
/// these keys (its cache would otherwise decode every write, and its CPU would count).
const STORE_FLOOR_PREFIX: &str = "/minik-bench";

/// What one client task of [`store_cells`] does.
enum StoreJob {
    Get {
        key: String,
    },
    Create {
        prefix: String,
        value: Arc<Vec<u8>>,
    },
    Update {
        key: String,
        value: Arc<Vec<u8>>,
        revision: i64,
    },
}

/// The single-object calls of `kind` straight on the store ([`Via::Store`]), at the same
/// client counts and for as long: GET is a Range of one key, CREATE and UPDATE the API server's
/// own guarded transactions (create if absent; put if still at the revision read), each with
/// the bytes the API server stored for this kind's objects.
async fn store_cells(
    cluster: &Cluster,
    storage: &Arc<EtcdStorage>,
    kind: Kind,
    opts: &Options,
    stop: impl Fn() -> Stop,
) -> anyhow::Result<Vec<Cell>> {
    let max_c = *opts.clients.last().unwrap_or(&1);
    let registry = |name: &str| format!("/registry/{}/{NS_SINGLE}/{name}", kind.plural());
    let floor = |name: &str| format!("{STORE_FLOOR_PREFIX}/{}/{NS_SINGLE}/{name}", kind.plural());
    let mut gets = Vec::new();
    let mut updates = Vec::new();
    for i in 0..max_c {
        let get = storage.get(&registry(&format!("get-{i}"))).await?;
        let key = floor(&format!("get-{i}"));
        storage.create(&key, get.value.clone()).await?;
        gets.push((key, Arc::new(get.value)));
        let upd = storage.get(&registry(&format!("upd-{i}"))).await?;
        let key = floor(&format!("upd-{i}"));
        let revision = storage.create(&key, upd.value.clone()).await?;
        updates.push(Some(StoreJob::Update {
            key,
            value: Arc::new(upd.value),
            revision,
        }));
    }
    measure_ops(
        cluster,
        opts,
        Via::Store,
        kind,
        &stop,
        &mut updates,
        |updates, op, n, i, stop| {
            let (get_key, value) = &gets[i];
            let job = match op {
                Op::Get => StoreJob::Get {
                    key: get_key.clone(),
                },
                Op::Create => StoreJob::Create {
                    prefix: floor(&format!("c{n}-{i}")),
                    value: value.clone(),
                },
                Op::Update => updates[i].take().expect("update job present"),
            };
            store_worker(storage.clone(), job, stop)
        },
        |updates, i, job| {
            if let StoreJob::Update { .. } = job {
                updates[i] = Some(job);
            }
        },
    )
    .await
}

/// One client task of [`store_cells`]: requests back to back until `stop`.
async fn store_worker(
    storage: Arc<EtcdStorage>,
    mut job: StoreJob,
    stop: Stop,
) -> (StoreJob, WorkerOut) {
    let mut out = WorkerOut::new();
    let mut seq: u64 = 0;
    while !stop.reached(seq) {
        seq += 1;
        let t0 = Instant::now();
        let r = match &mut job {
            StoreJob::Get { key } => storage.get(key).await.map(drop),
            StoreJob::Create { prefix, value } => storage
                .create(&format!("{prefix}-{seq}"), value.to_vec())
                .await
                .map(drop),
            StoreJob::Update {
                key,
                value,
                revision,
            } => match storage.update(key, *revision, value.to_vec()).await {
                Ok(r) => {
                    *revision = r;
                    Ok(())
                }
                Err(e) => {
                    if let StorageError::Conflict { current, .. } = e {
                        *revision = current;
                    }
                    Err(e)
                }
            },
        };
        let d = t0.elapsed();
        match r {
            Ok(()) => out.lat.push(d),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
                if matches!(stop, Stop::At(_)) && out.errors > 1000 {
                    break;
                }
            }
        }
    }
    (job, out)
}

fn single_section(opts: &Options, results: &Results, checks: &mut Checks) -> String {
    let mut headers = vec!["call".to_string(), "clients".to_string()];
    for (t, _) in results {
        for m in ["p50", "p99", "max", "req/s"] {
            headers.push(format!("{} {m}", t.name()));
        }
    }
    if results.len() == 2 {
        headers.push("p99 minik ÷ etcd".into());
    }
    let mut lat = Table::new(headers);
    let mut cpu_headers = vec!["call".to_string(), "clients".to_string()];
    for (t, _) in results {
        cpu_headers.push(format!("{}: apiserver / store / client", t.name()));
    }
    let mut cpu = Table::new(cpu_headers);
    let mut notes = Vec::new();
    for kind in Kind::ALL {
        for op in Op::ALL {
            for &n in &opts.clients {
                let label = format!("{} {}", op.name(), kind.name());
                let mut row = vec![label.clone(), n.to_string()];
                let mut crow = vec![label.clone(), n.to_string()];
                let mut p99s = Vec::new();
                for (t, r) in results {
                    match find_cell(r, Via::Api, kind, op, n) {
                        Ok(Some(c)) if !c.lat.is_empty() => {
                            let p99 = c.p99();
                            p99s.push(p99.as_secs_f64());
                            row.extend(c.latency_cells());
                            crow.push(c.cpu.per(c.requests()));
                            if n == *opts.clients.last().unwrap_or(&1) {
                                let scale = if n == TARGET_CLIENTS {
                                    String::new()
                                } else {
                                    format!(" (measured at {n}, not the issue's {TARGET_CLIENTS})")
                                };
                                checks.target(
                                    p99 <= TARGET_P99,
                                    format!(
                                        "{}: {label} p99 at {n} clients = {} (target ≤ {}){scale}",
                                        t.name(),
                                        fmt_ms(p99),
                                        fmt_ms(TARGET_P99)
                                    ),
                                );
                            }
                            c.report_failures(t.name(), &label, checks, &mut notes);
                        }
                        Ok(c) => {
                            row.extend(std::iter::repeat_n("—".to_string(), 4));
                            crow.push("—".into());
                            if let Some(c) = c {
                                c.report_failures(t.name(), &label, checks, &mut notes);
                            }
                        }
                        Err(e) => {
                            row.extend([e.clone(), "".into(), "".into(), "".into()]);
                            crow.push(e.clone());
                        }
                    }
                }
                if results.len() == 2 {
                    row.push(if p99s.len() == 2 {
                        ratio(p99s[0], p99s[1])
                    } else {
                        "—".into()
                    });
                }
                lat.row(row);
                cpu.row(crow);
            }
        }
    }
    for (t, r) in results {
        if let Err(e) = r {
            checks.correctness(false, format!("{}: single-object section: {e}", t.name()));
        }
    }
    let floor = store_table(opts, results, checks, &mut notes);
    let cm = fmt_bytes(configmap_manifest(NS_SINGLE).to_string().len() as u64);
    let pod = fmt_bytes(pod_manifest(NS_SINGLE).to_string().len() as u64);
    let mut s = format!(
        "### Single-object calls\n\n\
         Each client is a task on its own connection issuing requests back to back ({}); \
         latency is request sent → whole response read. GET reads the client's own object; \
         CREATE posts new objects ({cm} ConfigMap, {pod} Pod as sent — the server adds its \
         defaults, the service-account volume and the status); UPDATE PUTs the client's own \
         object as last returned by the server with one annotation changed.\n\n{}\n\
         CPU per request in µs (API server / store / this client), from /proc/PID/stat over \
         each measurement (10 ms ticks):\n\n{}\n\
         The same calls straight on the store, without the API server: this process uses the \
         API server's own store client (one gRPC connection) with as many tasks as clients \
         above, each issuing the API server's request for the call back to back — GET a Range \
         of one key, CREATE a transaction that puts a new key if absent, UPDATE one that puts \
         the task's key if it is still at the revision last written — with the bytes the API \
         server stored for these objects, on keys under `{STORE_FLOOR_PREFIX}/` (outside \
         `/registry`, so no watch of the API server sees them). A call through the API server \
         includes one of these (UPDATE: in the API server, after the object was read from its \
         watch cache), so at the same concurrency its latency cannot be lower.\n\n{}",
        opts.describe_duration(),
        lat.render(),
        cpu.render(),
        floor
    );
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The [`Via::Store`] cells as a table (latency, throughput, CPU of the store and this
/// process), with a line per store in the Targets at the largest client count.
fn store_table(
    opts: &Options,
    results: &Results,
    checks: &mut Checks,
    notes: &mut Vec<String>,
) -> String {
    let mut headers = vec!["store call".to_string(), "clients".to_string()];
    for (t, _) in results {
        for m in ["p50", "p99", "max", "req/s", "CPU µs store / client"] {
            headers.push(format!("{} {m}", t.name()));
        }
    }
    let mut table = Table::new(headers);
    let top = *opts.clients.last().unwrap_or(&1);
    for kind in Kind::ALL {
        for op in Op::ALL {
            for &n in &opts.clients {
                let label = format!("{} {}", op.name(), kind.name());
                let mut row = vec![label.clone(), n.to_string()];
                for (t, r) in results {
                    match find_cell(r, Via::Store, kind, op, n) {
                        Ok(Some(c)) if !c.lat.is_empty() => {
                            row.extend(c.latency_cells());
                            row.push(c.cpu.per_without_api(c.requests()));
                            if n == top {
                                checks.note(format!(
                                    "{}: {label} straight on the store (no API server) p99 at {n} \
                                     clients = {}",
                                    t.name(),
                                    fmt_ms(c.p99())
                                ));
                            }
                            c.report_failures(t.name(), &format!("store {label}"), checks, notes);
                        }
                        Ok(c) => {
                            row.extend(std::iter::repeat_n("—".to_string(), 5));
                            if let Some(c) = c {
                                c.report_failures(
                                    t.name(),
                                    &format!("store {label}"),
                                    checks,
                                    notes,
                                );
                            }
                        }
                        Err(e) => {
                            row.push(e.clone());
                            row.extend(std::iter::repeat_n(String::new(), 4));
                        }
                    }
                }
                table.row(row);
            }
        }
    }
    table.render()
}

// ---------------------------------------------------------------------------------------------
// 2. LIST
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListKind {
    Json,
    Table,
}

/// One way of listing: JSON or Table, whole or paged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListVariant {
    kind: ListKind,
    paged: bool,
}

impl ListVariant {
    const ALL: [ListVariant; 4] = [
        ListVariant {
            kind: ListKind::Json,
            paged: false,
        },
        ListVariant {
            kind: ListKind::Json,
            paged: true,
        },
        ListVariant {
            kind: ListKind::Table,
            paged: false,
        },
        ListVariant {
            kind: ListKind::Table,
            paged: true,
        },
    ];

    fn label(self, page: usize) -> String {
        let k = match self.kind {
            ListKind::Json => "JSON",
            ListKind::Table => "Table",
        };
        if self.paged {
            format!("{k}, limit={page} pages")
        } else {
            format!("{k}, one response")
        }
    }
}

struct ListRun {
    /// Sum of the requests' times (sent → last byte), i.e. the server's share.
    time: Duration,
    /// Wall time including this client's decoding of every page.
    wall: Duration,
    bytes: usize,
    pages: usize,
    cpu: Cpu,
}

struct ListResult {
    load: Duration,
    pod_bytes: usize,
    variants: Vec<(ListVariant, Result<Vec<ListRun>, String>)>,
}

#[derive(Deserialize)]
struct Page {
    metadata: Meta,
    #[serde(default)]
    items: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    rows: Option<Vec<IgnoredAny>>,
}

async fn list_bench(cluster: &Cluster, opts: &Options) -> anyhow::Result<ListResult> {
    let ep = &cluster.endpoint;
    let mut c = Client::connect(ep).await?;
    create_namespace(&mut c, NS_LIST).await?;
    let collection = Kind::Pod.collection(NS_LIST);
    let create = Arc::new(Kind::Pod.template(NS_LIST, false));
    progress(&format!(
        "  creating {} pods ({} in flight)",
        opts.list_pods, opts.load_clients
    ));
    let loaders = connect_many(ep, opts.load_clients.min(opts.list_pods)).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for mut l in loaders {
        let (next, create, collection, n) = (
            next.clone(),
            create.clone(),
            collection.clone(),
            opts.list_pods,
        );
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let body = create.render(&format!("web-7c9f8b6d5-{i:05}"), "", i as u64);
                l.ok(Method::POST, &collection, Some(body)).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("loader panicked")??;
    }
    let load = start.elapsed();
    let one = c
        .ok(
            Method::GET,
            &format!("{collection}/web-7c9f8b6d5-00000"),
            None,
        )
        .await?;

    let mut variants = Vec::new();
    for v in ListVariant::ALL {
        progress(&format!(
            "  LIST {}: {} runs",
            v.label(opts.page_size),
            opts.list_runs
        ));
        let accept = match v.kind {
            ListKind::Json => ACCEPT_JSON,
            ListKind::Table => ACCEPT_TABLE,
        };
        let mut runs = Vec::new();
        let mut failure = None;
        for _ in 0..opts.list_runs {
            match list_once(cluster, &mut c, &collection, v, accept, opts).await {
                Ok(run) => runs.push(run),
                Err(e) => {
                    eprintln!("[bench]    LIST {} failed: {e:#}", v.label(opts.page_size));
                    failure = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        variants.push((v, failure.map_or(Ok(runs), Err)));
    }
    Ok(ListResult {
        load,
        pod_bytes: one.len(),
        variants,
    })
}

/// One LIST of the whole collection (all pages when paged), checked for the item count.
async fn list_once(
    cluster: &Cluster,
    c: &mut Client,
    collection: &str,
    v: ListVariant,
    accept: &str,
    opts: &Options,
) -> anyhow::Result<ListRun> {
    let cpu0 = cluster.cpu();
    let wall0 = Instant::now();
    let mut run = ListRun {
        time: Duration::ZERO,
        wall: Duration::ZERO,
        bytes: 0,
        pages: 0,
        cpu: Cpu::default(),
    };
    let mut items = 0;
    let mut token: Option<String> = None;
    loop {
        let mut path = collection.to_string();
        if v.paged {
            let _ = write!(path, "?limit={}", opts.page_size);
            if let Some(t) = &token {
                let _ = write!(path, "&continue={}", percent_encode(t));
            }
        }
        let t0 = Instant::now();
        let (status, body) = c.call(Method::GET, &path, accept, None).await?;
        run.time += t0.elapsed();
        if !status.is_success() {
            bail!("LIST {path}: {status}: {}", snippet(&body));
        }
        run.bytes += body.len();
        run.pages += 1;
        let page: Page = serde_json::from_slice(&body)
            .with_context(|| format!("LIST {path}: {}", snippet(&body)))?;
        items += match v.kind {
            ListKind::Json => page.items.map_or(0, |i| i.len()),
            ListKind::Table => page.rows.map_or(0, |r| r.len()),
        };
        token = page.metadata.continue_token.filter(|t| !t.is_empty());
        if !v.paged || token.is_none() {
            break;
        }
        if run.pages > opts.list_pods + 1 {
            bail!("LIST {path}: paging does not end");
        }
    }
    run.wall = wall0.elapsed();
    run.cpu = cluster.cpu().since(cpu0);
    if items != opts.list_pods {
        bail!(
            "LIST {} returned {items} items, expected {}",
            v.label(opts.page_size),
            opts.list_pods
        );
    }
    Ok(run)
}

/// Percent-encodes a query value (continue tokens are base64, with `=`, `+` and `/`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An error as a table cell: its first 60 characters.
fn short_error(e: &str) -> String {
    let first = e.lines().next().unwrap_or("");
    let mut s: String = first.chars().take(60).collect();
    if s.len() < first.len() {
        s.push('…');
    }
    format!("error: {s}")
}

/// The median run (by server time).
fn median_run(runs: &[ListRun]) -> Option<&ListRun> {
    let mut v: Vec<&ListRun> = runs.iter().collect();
    v.sort_by_key(|r| r.time);
    v.get(v.len() / 2).copied()
}

fn list_section(opts: &Options, results: &Results, checks: &mut Checks) -> String {
    let of = list_of;
    let n = fmt_thousands(opts.list_pods as u64);
    let mut headers = vec![format!("{n} pods")];
    for (t, _) in results {
        headers.push(format!("{} median (min–max)", t.name()));
        headers.push(format!("{} incl. client decode", t.name()));
    }
    if results.len() == 2 {
        headers.push("minik ÷ etcd".into());
    }
    let mut table = Table::new(headers);
    let mut detail_headers = vec![format!("{n} pods")];
    for (t, _) in results {
        detail_headers.push(format!(
            "{}: size, pages, CPU ms apiserver / store / client",
            t.name()
        ));
    }
    let mut detail = Table::new(detail_headers);
    let mut load_row = vec![format!(
        "create them ({} in flight)",
        opts.load_clients.min(opts.list_pods)
    )];
    let mut pod_size = None;
    for (_, r) in results {
        match of(r) {
            Ok(l) => {
                pod_size = Some(l.pod_bytes);
                load_row.push(format!(
                    "{:.2} s ({} pods/s)",
                    l.load.as_secs_f64(),
                    fmt_thousands((opts.list_pods as f64 / l.load.as_secs_f64()).round() as u64)
                ));
                load_row.push(String::new());
            }
            Err(e) => {
                load_row.push(e);
                load_row.push(String::new());
            }
        }
    }
    table.row(load_row);
    for v in ListVariant::ALL {
        let label = format!("LIST {}", v.label(opts.page_size));
        let mut row = vec![label.clone()];
        let mut drow = vec![label.clone()];
        let mut medians = Vec::new();
        for (t, r) in results {
            let runs = of(r).and_then(|l| {
                match l.variants.iter().find(|(vv, _)| *vv == v).map(|(_, r)| r) {
                    Some(Ok(runs)) => Ok(runs.as_slice()),
                    Some(Err(e)) => {
                        checks.correctness(false, format!("{}: {label}: {e}", t.name()));
                        Err(short_error(e))
                    }
                    None => Ok(&[]),
                }
            });
            match runs {
                Ok(runs) if !runs.is_empty() => {
                    let m = median_run(runs).expect("non-empty");
                    let min = runs.iter().map(|r| r.time).min().unwrap_or_default();
                    let max = runs.iter().map(|r| r.time).max().unwrap_or_default();
                    medians.push(m.time.as_secs_f64());
                    row.push(format!(
                        "{} ({}–{})",
                        fmt_ms(m.time),
                        fmt_ms(min),
                        fmt_ms(max)
                    ));
                    row.push(fmt_ms(m.wall));
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    drow.push(format!(
                        "{}, {}, {:.0} / {:.0} / {:.0}",
                        fmt_bytes(m.bytes as u64),
                        m.pages,
                        ms(m.cpu.api),
                        ms(m.cpu.store),
                        ms(m.cpu.client)
                    ));
                    let scale = if opts.list_pods == TARGET_LIST_PODS {
                        String::new()
                    } else {
                        format!(" (measured with {n} pods, not the issue's 10,000)")
                    };
                    checks.target(
                        m.time <= TARGET_LIST,
                        format!(
                            "{}: {label} of {n} pods = {} median (target ≤ {}){scale}",
                            t.name(),
                            fmt_ms(m.time),
                            fmt_ms(TARGET_LIST)
                        ),
                    );
                }
                Ok(_) => {
                    row.extend(["—".to_string(), "—".into()]);
                    drow.push("—".into());
                }
                Err(e) => {
                    row.extend([e.clone(), String::new()]);
                    drow.push(e);
                }
            }
        }
        if results.len() == 2 {
            row.push(if medians.len() == 2 {
                ratio(medians[0], medians[1])
            } else {
                "—".into()
            });
        }
        table.row(row);
        detail.row(drow);
    }
    for (t, r) in results {
        match r {
            Err(e) => checks.correctness(false, format!("{}: LIST section: {e}", t.name())),
            Ok(Outcome::List(l)) if l.variants.iter().all(|(_, r)| r.is_ok()) => checks
                .correctness(
                    true,
                    format!(
                        "{}: every LIST returned all {n} pods (JSON items / Table rows, whole \
                         and paged)",
                        t.name()
                    ),
                ),
            Ok(_) => {}
        }
    }
    format!(
        "### LIST of {n} pods\n\n\
         {n} pods ({} each as the server returns them) in one namespace, listed over one \
         connection {} times per variant: JSON (`Accept: {ACCEPT_JSON}`) and Table \
         (`Accept: {ACCEPT_TABLE}`, as kubectl), as one response and paged with \
         `limit={}` + `continue` as kubectl pages. The time is the sum of the requests' times \
         (sent → last byte; median, min–max); \"incl. client decode\" adds this client's \
         decoding of each page (item count and continue token).\n\n{}\n{}",
        pod_size.map_or("?".into(), |b| fmt_bytes(b as u64)),
        opts.list_runs,
        opts.page_size,
        table.render(),
        detail.render()
    )
}

// ---------------------------------------------------------------------------------------------
// 3. Watch fan-out
// ---------------------------------------------------------------------------------------------

struct WatchResult {
    watchers: usize,
    expected: usize,
    writes: Duration,
    /// First write start → the last watcher's last event.
    all_delivered: Option<Duration>,
    delivered: usize,
    /// Watchers that received every event exactly once, in order.
    complete: usize,
    out_of_order: usize,
    unexpected: usize,
    wrong_type: usize,
    missing: usize,
    errors: Vec<String>,
    /// Write start → delivery, over every delivered event, sorted.
    latency: Vec<Duration>,
    cpu: Cpu,
}

/// One delivered event: its resourceVersion, whether it was ADDED (else MODIFIED), when.
type Delivery = (i64, bool, Instant);

/// The event type and `object.metadata.resourceVersion` of one watch line, found without a
/// full parse (a watcher reads thousands of 4 KiB events a second on a CPU the servers need).
/// The event's own `"type"` is the first key (Go's order) or the last (sorted keys).
fn scan_event(line: &[u8]) -> Option<(&str, i64)> {
    let s = std::str::from_utf8(line).ok()?;
    const TYPE: &str = "\"type\":\"";
    let ti = if s.starts_with(&format!("{{{TYPE}")) {
        1
    } else {
        s.rfind(TYPE)?
    };
    let t = &s[ti + TYPE.len()..];
    let kind = &t[..t.find('"')?];
    const RV: &str = "\"resourceVersion\":\"";
    let r = &s[s.find(RV)? + RV.len()..];
    let rv = r[..r.find('"')?].parse().ok()?;
    Some((kind, rv))
}

async fn watcher(
    mut client: Client,
    path: String,
    expected: usize,
    deadline: tokio::time::Instant,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<(Vec<Delivery>, Vec<String>)> {
    let resp = client.send(Method::GET, &path, ACCEPT_JSON, None).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        bail!("watch {path}: {status}: {}", snippet(&body));
    }
    let _ = ready.send(()).await;
    drop(ready);
    let mut body = resp.into_body();
    let mut got: Vec<Delivery> = Vec::with_capacity(expected);
    let mut other = Vec::new();
    let mut buf = BytesMut::new();
    while got.len() < expected {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => break,
            Ok(None) => {
                other.push("the watch ended early".into());
                break;
            }
            Ok(Some(f)) => f?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(i + 1);
            match scan_event(&line) {
                Some(("ADDED", rv)) => got.push((rv, true, now)),
                Some(("MODIFIED", rv)) => got.push((rv, false, now)),
                _ if other.len() < 5 => other.push(snippet(&line)),
                _ => {}
            }
        }
    }
    Ok((got, other))
}

async fn watch_bench(cluster: &Cluster, opts: &Options) -> anyhow::Result<WatchResult> {
    let ep = &cluster.endpoint;
    let mut writers = connect_many(ep, opts.watch_writers).await?;
    create_namespace(&mut writers[0], NS_WATCH).await?;
    let collection = Kind::Pod.collection(NS_WATCH);
    let rv = resource_version(
        &writers[0]
            .ok(Method::GET, &format!("{collection}?limit=1"), None)
            .await?,
    )?;
    let expected = opts.watch_events;
    let path = format!("{collection}?watch=true&resourceVersion={rv}&allowWatchBookmarks=false");
    progress(&format!(
        "  {} watchers from resourceVersion {rv}, then {expected} writes by {} writers",
        opts.watchers, opts.watch_writers
    ));
    let watch_clients = connect_many(ep, opts.watchers).await?;
    let deadline = tokio::time::Instant::now() + opts.watch_timeout;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(opts.watchers);
    let mut watchers = JoinSet::new();
    for c in watch_clients {
        watchers.spawn(watcher(
            c,
            path.clone(),
            expected,
            deadline,
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    // Every watch is established (its response headers arrived) before the first write.
    let mut established = 0;
    while established < opts.watchers {
        match tokio::time::timeout(Duration::from_secs(30), ready_rx.recv()).await {
            Ok(Some(())) => established += 1,
            Ok(None) => break,
            Err(_) => bail!("only {established} of {} watches started", opts.watchers),
        }
    }
    if established < opts.watchers {
        // A watcher failed before it was ready: its error is the useful one.
        while let Some(r) = watchers.join_next().await {
            r.context("watcher panicked")??;
        }
        bail!("only {established} of {} watches started", opts.watchers);
    }

    // Writes: creates of `expected / 2` pods, then updates (PUT) of them, in that order of
    // indices (an update never overtakes its pod's create: phase 2 starts after phase 1).
    let cpu0 = cluster.cpu();
    let creates = expected / 2;
    let updates = expected - creates;
    let create = Arc::new(Kind::Pod.template(NS_WATCH, false));
    // Per pod: the update template made from the create's response (the object as the server
    // has it, as client-go's Update sends it) and the pod's current resourceVersion.
    type PodState = parking_lot::Mutex<Option<(Arc<Template>, String)>>;
    let pods: Arc<Vec<PodState>> =
        Arc::new((0..creates.max(1)).map(|_| Default::default()).collect());
    // (resourceVersion, write start, was a create)
    let mut written: Vec<(i64, Instant, bool)> = Vec::with_capacity(expected);
    let start = Instant::now();
    for phase in [false, true] {
        let total = if phase { updates } else { creates };
        let next = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for mut w in writers.drain(..) {
            let (next, create, pods, collection) = (
                next.clone(),
                create.clone(),
                pods.clone(),
                collection.clone(),
            );
            set.spawn(async move {
                let mut mine = Vec::new();
                let r = async {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return anyhow::Ok(());
                        }
                        if phase {
                            let j = i % pods.len();
                            let name = format!("w-{j:05}");
                            let (template, rv) = pods[j]
                                .lock()
                                .clone()
                                .with_context(|| format!("pod {name} was not created"))?;
                            let body = template.render(&name, &rv, i as u64 + 1);
                            let t0 = Instant::now();
                            let resp = w
                                .ok(Method::PUT, &format!("{collection}/{name}"), Some(body))
                                .await?;
                            let rv = resource_version(&resp)?;
                            mine.push((rv.parse::<i64>()?, t0, false));
                            *pods[j].lock() = Some((template, rv));
                        } else {
                            let body = create.render(&format!("w-{i:05}"), "", 0);
                            let t0 = Instant::now();
                            let resp = w.ok(Method::POST, &collection, Some(body)).await?;
                            let rv = resource_version(&resp)?;
                            mine.push((rv.parse::<i64>()?, t0, true));
                            *pods[i].lock() = Some((Arc::new(update_template(&resp)?), rv));
                        }
                    }
                }
                .await;
                (w, mine, r)
            });
        }
        while let Some(r) = set.join_next().await {
            let (w, mine, r) = r.context("writer panicked")?;
            writers.push(w);
            written.extend(mine);
            r?;
        }
    }
    let writes = start.elapsed();
    progress(&format!(
        "  {expected} writes in {:.2} s; waiting for the watchers",
        writes.as_secs_f64()
    ));

    let mut result = WatchResult {
        watchers: opts.watchers,
        expected,
        writes,
        all_delivered: None,
        delivered: 0,
        complete: 0,
        out_of_order: 0,
        unexpected: 0,
        wrong_type: 0,
        missing: 0,
        errors: Vec::new(),
        latency: Vec::with_capacity(expected * opts.watchers),
        cpu: Cpu::default(),
    };
    // rv → (write start, was a create).
    let starts: HashMap<i64, (Instant, bool)> = written
        .iter()
        .map(|&(rv, t, create)| (rv, (t, create)))
        .collect();
    if starts.len() != expected {
        result.errors.push(format!(
            "{} distinct resourceVersions for {expected} writes",
            starts.len()
        ));
    }
    let mut last_delivery: Option<Instant> = None;
    let mut all_complete = true;
    while let Some(r) = watchers.join_next().await {
        let (got, other) = match r.context("watcher panicked")? {
            Ok(x) => x,
            Err(e) => {
                all_complete = false;
                result.errors.push(format!("{e:#}"));
                continue;
            }
        };
        result.errors.extend(other);
        result.delivered += got.len();
        let mut prev = i64::MIN;
        let mut in_order = true;
        let mut seen = 0;
        for &(rv, added, at) in &got {
            if rv <= prev {
                result.out_of_order += 1;
                in_order = false;
            }
            prev = prev.max(rv);
            match starts.get(&rv) {
                Some(&(t0, create)) => {
                    seen += 1;
                    if create != added {
                        result.wrong_type += 1;
                    }
                    result.latency.push(at.saturating_duration_since(t0));
                }
                None => result.unexpected += 1,
            }
            last_delivery = Some(last_delivery.map_or(at, |l| l.max(at)));
        }
        let missing = expected.saturating_sub(seen);
        result.missing += missing;
        if in_order && missing == 0 && got.len() == expected {
            result.complete += 1;
        } else {
            all_complete = false;
        }
    }
    result.cpu = cluster.cpu().since(cpu0);
    if all_complete && let Some(l) = last_delivery {
        result.all_delivered = Some(l.saturating_duration_since(start));
    }
    result.latency.sort_unstable();
    Ok(result)
}

fn watch_section(opts: &Options, results: &Results, checks: &mut Checks) -> String {
    let of = watch_of;
    let mut headers = vec!["watch fan-out".to_string()];
    headers.extend(results.iter().map(|(t, _)| t.name().to_string()));
    if results.len() == 2 {
        headers.push("minik ÷ etcd".into());
    }
    let mut table = Table::new(headers);
    type Getter = fn(&WatchResult) -> Option<f64>;
    let row = |label: &str, cell: &dyn Fn(&WatchResult) -> String, value: Option<Getter>| {
        let mut r = vec![label.to_string()];
        let mut vals = Vec::new();
        for (_, res) in results {
            match of(res) {
                Ok(w) => {
                    r.push(cell(w));
                    if let Some(f) = value {
                        vals.push(f(w));
                    }
                }
                Err(e) => r.push(e),
            }
        }
        if results.len() == 2 {
            r.push(match vals.as_slice() {
                [Some(a), Some(b)] => ratio(*a, *b),
                _ => "—".into(),
            });
        }
        r
    };
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    table.row(row(
        "writes (creates, then updates)",
        &|w| {
            format!(
                "{} ({} writes/s)",
                secs(w.writes),
                fmt_thousands((w.expected as f64 / w.writes.as_secs_f64()).round() as u64)
            )
        },
        Some(|w| Some(w.writes.as_secs_f64())),
    ));
    table.row(row(
        "every watcher has every event",
        &|w| w.all_delivered.map_or("never".into(), secs),
        Some(|w| w.all_delivered.map(|d| d.as_secs_f64())),
    ));
    table.row(row(
        "events delivered / expected",
        &|w| {
            format!(
                "{} / {}",
                fmt_thousands(w.delivered as u64),
                fmt_thousands((w.expected * w.watchers) as u64)
            )
        },
        None,
    ));
    table.row(row(
        "delivery rate",
        &|w| {
            let d = w.all_delivered.unwrap_or(opts.watch_timeout);
            format!(
                "{} events/s",
                fmt_thousands((w.delivered as f64 / d.as_secs_f64()).round() as u64)
            )
        },
        None,
    ));
    table.row(row(
        "watchers complete and in order",
        &|w| format!("{} / {}", w.complete, w.watchers),
        None,
    ));
    table.row(row(
        "missing / duplicate or reordered / foreign / wrong type",
        &|w| {
            format!(
                "{} / {} / {} / {}",
                w.missing, w.out_of_order, w.unexpected, w.wrong_type
            )
        },
        None,
    ));
    for (label, p) in [
        ("write → delivery p50", 50.0),
        ("write → delivery p99", 99.0),
        ("write → delivery max", 100.0),
    ] {
        // Closures capturing `p` cannot be fn pointers; compute the ratio cells by hand.
        let mut r = vec![label.to_string()];
        let mut vals = Vec::new();
        for (_, res) in results {
            match of(res) {
                Ok(w) => {
                    let d = percentile(&w.latency, p);
                    vals.push(d.as_secs_f64());
                    r.push(fmt_ms(d));
                }
                Err(e) => r.push(e),
            }
        }
        if results.len() == 2 {
            r.push(if vals.len() == 2 {
                ratio(vals[0], vals[1])
            } else {
                "—".into()
            });
        }
        table.row(r);
    }
    table.row(row(
        "CPU µs per delivered event: apiserver / store / client",
        &|w| w.cpu.per(w.delivered),
        None,
    ));
    let mut notes = Vec::new();
    for (t, r) in results {
        match of(r) {
            Ok(w) => {
                let ok = w.complete == w.watchers
                    && w.delivered == w.expected * w.watchers
                    && w.unexpected == 0
                    && w.wrong_type == 0;
                checks.correctness(
                    ok,
                    format!(
                        "{}: every one of {} watchers received all {} events in order, none \
                         missing or twice ({} / {} delivered)",
                        t.name(),
                        w.watchers,
                        fmt_thousands(w.expected as u64),
                        fmt_thousands(w.delivered as u64),
                        fmt_thousands((w.expected * w.watchers) as u64)
                    ),
                );
                for e in w.errors.iter().take(5) {
                    notes.push(format!("{}: {e}", t.name()));
                }
            }
            Err(_) => {
                if let Err(e) = r {
                    checks.correctness(false, format!("{}: watch section: {e}", t.name()));
                }
            }
        }
    }
    let mut s = format!(
        "### Watch fan-out\n\n\
         {} watchers (one connection each) on the pods of one namespace from its current \
         resourceVersion (`?watch=true&resourceVersion=RV`); once all are established, {} \
         writers (one connection each, one write in flight) create {} pods and then update them \
         (PUT, one annotation changed) for {} events in all. Each watcher checks that it gets \
         every write's event exactly once, in resourceVersion order, with the right type. \
         Latency is from the start of the write request to the moment the watcher read the \
         event.\n\n{}",
        opts.watchers,
        opts.watch_writers,
        fmt_thousands((opts.watch_events / 2) as u64),
        fmt_thousands(opts.watch_events as u64),
        table.render()
    );
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_holes() {
        let t = Template::new(r#"{"n":"@@NAME@@","rv":"@@RV@@","s":"@@SEQ@@","x":"a@@b"}"#);
        assert_eq!(
            t.render("pod-1", "42", 7),
            Bytes::from_static(br#"{"n":"pod-1","rv":"42","s":"7","x":"a@@b"}"#)
        );
        let pod = Kind::Pod.template("ns", true).render("p", "9", 3);
        let v: serde_json::Value = serde_json::from_slice(&pod).unwrap();
        assert_eq!(v["metadata"]["name"], "p");
        assert_eq!(v["metadata"]["resourceVersion"], "9");
        assert_eq!(v["metadata"]["annotations"]["bench.minik.dev/seq"], "3");
    }

    #[test]
    fn scans_watch_events() {
        let sorted = br#"{"object":{"metadata":{"name":"a","resourceVersion":"17"},"spec":{"x":{"type":"y"}}},"type":"MODIFIED"}"#;
        assert_eq!(scan_event(sorted), Some(("MODIFIED", 17)));
        let go = br#"{"type":"ADDED","object":{"metadata":{"resourceVersion":"5"},"type":"z"}}"#;
        assert_eq!(scan_event(go), Some(("ADDED", 5)));
        assert_eq!(scan_event(b"{}"), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_encode("a+b/c="), "a%2Bb%2Fc%3D");
        let cpu = process_cpu("self");
        assert!(cpu.is_some());
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
