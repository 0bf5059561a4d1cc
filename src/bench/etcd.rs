//! `minik bench etcd`: minik's etcd-compatible store against the real etcd, side by side.
//!
//! Every measurement gets a freshly started server (a child process on a free 127.0.0.1 port, with a
//! fresh data dir under one temp dir); one server runs at a time, so the two never compete for the
//! CPUs or the disk. Servers are killed and their data removed when a measurement ends, also on
//! error and on Ctrl-C (the caller drops the future; every guard here cleans up on drop).
//!
//! Sections:
//!
//! 1. single-client put latency: sequential puts of 256-byte keys and 1 KiB values (the sizes
//!    `etcdctl check perf` writes) over one gRPC connection; p50/p90/p99/max.
//! 2. range over 100k keys: a bulk load with many puts in flight, then one Range over all keys
//!    (full, `keys_only`, `count_only`), best of 3.
//! 3. `etcdctl check perf --load=…` (60 s per load and server), parsed into a table, with the
//!    CPU each write cost the server and etcdctl (from `/proc`, over seconds 10–50 of the load).
//!    With `--ceiling`, also against [`super::noop_etcd`], a server on the same gRPC stack that
//!    stores nothing: what the client and the transport alone reach on this machine.
//!
//! Output is Markdown on stdout, progress on stderr.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};

use super::{
    MachineInfo, Table, TempDir, command_line, fmt_bytes, fmt_ms, fmt_thousands, free_ports,
    load_average, process_cpu, shell_quote, tail, utc_now,
};
use crate::etcd::proto::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};

/// How long a server may take to answer its first Range.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One `etcdctl check perf` run: 60 s of load, then the prefix delete (30 s limit in etcdctl).
const CHECK_PERF_TIMEOUT: Duration = Duration::from_secs(60 + 300);
/// One request of the gRPC sections (a 100 MB Range included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Puts before the measured ones (connection set-up, first allocations, first fsyncs).
const WARMUP_PUTS: usize = 20;
/// Key and value sizes `etcdctl check perf` writes (its keys are 256 bytes after the prefix).
const KEY_SIZE: usize = 256;
const VALUE_SIZE: usize = 1024;
/// The member name of every server.
const MEMBER_NAME: &str = "bench";

/// The server a measurement runs against.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `minik etcd serve` (this binary).
    Minik,
    /// The real etcd (`--etcd-bin`).
    Etcd,
    /// `minik bench etcd-noop-server`: the gRPC stack with no store (`--ceiling`, check perf only).
    #[value(skip)]
    Noop,
}

impl Target {
    pub(super) fn name(self) -> &'static str {
        match self {
            Target::Minik => "minik",
            Target::Etcd => "etcd",
            Target::Noop => "no-op server (ceiling)",
        }
    }
}

/// `etcdctl check perf` workload models.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    S,
    M,
    L,
    Xl,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::S => "s",
            Load::M => "m",
            Load::L => "l",
            Load::Xl => "xl",
        }
    }

    /// (target writes/s, clients), as etcdctl 3.4's `checkPerfCfgMap`; each runs 60 s.
    fn model(self) -> (u64, u64) {
        match self {
            Load::S => (150, 50),
            Load::M => (1000, 200),
            Load::L => (8000, 500),
            Load::Xl => (15000, 1000),
        }
    }
}

/// What `minik bench etcd` measures and against what.
#[derive(Debug, Clone)]
pub struct Options {
    /// `check perf` loads, in order (duplicates are dropped).
    pub loads: Vec<Load>,
    /// Measure one side only.
    pub only: Option<Target>,
    pub skip_check_perf: bool,
    /// Also run `check perf` against the no-op server.
    pub ceiling: bool,
    pub etcd_bin: PathBuf,
    pub etcdctl_bin: PathBuf,
    /// Measured sequential puts of the latency section.
    pub puts: usize,
    /// Keys written before the Range section's queries.
    pub range_keys: usize,
    /// Puts in flight while writing them.
    pub in_flight: usize,
    /// Repetitions of each Range query (the best one is reported).
    pub rounds: usize,
}

/// The binaries under test.
pub(super) struct Bins {
    pub(super) minik: PathBuf,
    pub(super) etcd: PathBuf,
}

/// Runs the benchmark and prints its report.
pub async fn run(mut opts: Options) -> anyhow::Result<()> {
    opts.puts = opts.puts.max(1);
    opts.range_keys = opts.range_keys.max(1);
    opts.in_flight = opts.in_flight.max(1);
    opts.rounds = opts.rounds.max(1);
    let mut seen = Vec::new();
    opts.loads.retain(|l| {
        let new = !seen.contains(l);
        seen.push(*l);
        new
    });

    let bins = Bins {
        minik: std::env::current_exe().context("locating the minik binary")?,
        etcd: opts.etcd_bin.clone(),
    };
    let etcd_version = tool_version(&opts.etcd_bin, "--version");
    let etcdctl_version = tool_version(&opts.etcdctl_bin, "version");

    let mut targets = vec![Target::Minik, Target::Etcd];
    if let Some(only) = opts.only {
        targets.retain(|t| *t == only);
    }
    let mut notes = Vec::new();
    if let Err(why) = &etcd_version {
        if opts.only == Some(Target::Etcd) {
            bail!("--only etcd, but the real etcd is unusable: {why}");
        }
        if targets.contains(&Target::Etcd) {
            let msg = format!(
                "real etcd unusable ({why}); measuring minik only. Install it with \
                 `apt-get install etcd-server` or pass --etcd-bin PATH."
            );
            eprintln!("WARNING: {msg}");
            notes.push(msg);
            targets.retain(|t| *t != Target::Etcd);
        }
    }
    let mut check_perf = !opts.skip_check_perf && !opts.loads.is_empty();
    if check_perf && let Err(why) = &etcdctl_version {
        let msg = format!(
            "etcdctl unusable ({why}); skipping `etcdctl check perf`. Install it with \
             `apt-get install etcd-client` or pass --etcdctl-bin PATH."
        );
        eprintln!("WARNING: {msg}");
        notes.push(msg);
        check_perf = false;
    }

    let run_dir = TempDir::new("minik-bench-etcd").context("creating the temp dir")?;
    let machine = MachineInfo::collect(&std::env::temp_dir());

    // Header.
    let mut h = String::new();
    let _ = writeln!(h, "## etcd: minik vs etcd\n");
    let _ = writeln!(h, "- Command: `{}`", command_line());
    let _ = writeln!(h, "- Date: {}", utc_now());
    h.push_str(&machine.markdown());
    if let Some(load) = load_average() {
        let _ = writeln!(h, "- Load average (1/5/15 min) at start: {load}");
        let busy = load
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l > machine.cpus as f64 / 2.0);
        if busy {
            eprintln!(
                "WARNING: the machine is busy (load average {load} on {} CPUs): numbers will be noisy",
                machine.cpus
            );
        }
    }
    let build = if cfg!(debug_assertions) {
        "**debug build: numbers are not representative**"
    } else {
        "release build"
    };
    let _ = writeln!(
        h,
        "- minik: {} ({build}), `{}`",
        env!("CARGO_PKG_VERSION"),
        display_command(Target::Minik, &bins)
    );
    match &etcd_version {
        Ok(v) => {
            let _ = writeln!(
                h,
                "- etcd: `{v}`, `{}`",
                display_command(Target::Etcd, &bins)
            );
        }
        Err(why) => {
            let _ = writeln!(h, "- etcd: not measured ({why})");
        }
    }
    match &etcdctl_version {
        Ok(v) => {
            let _ = writeln!(h, "- etcdctl: `{v}`, `{}`", opts.etcdctl_bin.display());
        }
        Err(why) => {
            let _ = writeln!(h, "- etcdctl: not available ({why})");
        }
    }
    if opts.ceiling {
        let _ = writeln!(
            h,
            "- {}: `{}` — `minik etcd serve`'s gRPC serving threads with a KV service that \
             acknowledges every put without storing it (`check perf` only)",
            Target::Noop.name(),
            display_command(Target::Noop, &bins)
        );
    }
    let _ = writeln!(
        h,
        "- Each measurement starts a fresh server on a fresh data dir; one server runs at a time, \
         on the same machine as the client (which shares its CPUs)."
    );
    for n in &notes {
        let _ = writeln!(h, "- **Note:** {n}");
    }
    emit(&h);

    // 1. Put latency.
    let mut lat = Vec::new();
    for &t in &targets {
        progress(&format!(
            "put latency: {} sequential puts against {}",
            opts.puts,
            t.name()
        ));
        let r = async {
            let server = Server::start(t, &bins, run_dir.path(), "latency").await?;
            put_latency(&server, opts.puts).await
        }
        .await;
        lat.push((t, report_err(t, "put latency", r)));
    }
    emit(&latency_section(&opts, &lat));

    // 2. Range over many keys.
    let mut ranges = Vec::new();
    for &t in &targets {
        progress(&format!(
            "range: writing {} keys ({} in flight) to {}, then {} rounds of Range",
            opts.range_keys,
            opts.in_flight,
            t.name(),
            opts.rounds
        ));
        let r = async {
            let server = Server::start(t, &bins, run_dir.path(), "range").await?;
            range_bench(&server, opts.range_keys, opts.in_flight, opts.rounds).await
        }
        .await;
        ranges.push((t, report_err(t, "range", r)));
    }
    emit(&range_section(&opts, &ranges));

    // 3. etcdctl check perf.
    if check_perf {
        let mut results = Vec::new();
        let mut targets = targets.clone();
        if opts.ceiling {
            targets.push(Target::Noop);
        }
        for &load in &opts.loads {
            for &t in &targets {
                progress(&format!(
                    "etcdctl check perf --load={} against {} (60 s)",
                    load.name(),
                    t.name()
                ));
                let r = async {
                    let server =
                        Server::start(t, &bins, run_dir.path(), &format!("perf-{}", load.name()))
                            .await?;
                    run_check_perf(&server, &opts.etcdctl_bin, load).await
                }
                .await;
                if let Ok(r) = &r {
                    progress(&format!("  {}: {}", t.name(), r.summary()));
                }
                results.push((load, t, report_err(t, "check perf", r)));
            }
        }
        emit(&check_perf_section(&opts, &targets, &results));
    } else if opts.skip_check_perf {
        emit("### etcdctl check perf\n\nSkipped (`--skip-check-perf`).\n");
    }
    drop(run_dir);
    if let Some(load) = load_average() {
        emit(&format!("Load average (1/5/15 min) at the end: {load}.\n"));
    }
    Ok(())
}

pub(super) fn emit(markdown: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{markdown}");
    let _ = out.flush();
}

pub(super) fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Keeps the result; an error is printed in full on stderr and becomes a short table cell.
fn report_err<T>(t: Target, what: &str, r: anyhow::Result<T>) -> Result<T, String> {
    r.map_err(|e| {
        eprintln!("[bench] {what} against {} failed: {e:#}", t.name());
        let first = format!("{e}");
        let first = first.lines().next().unwrap_or("").to_string();
        format!("error: {}", first.chars().take(80).collect::<String>())
    })
}

/// The first line of `<bin> <arg>`, or why the binary cannot be used.
pub(super) fn tool_version(bin: &Path, arg: &str) -> Result<String, String> {
    if !bin.is_file() {
        return Err(format!("{} not found", bin.display()));
    }
    let out = std::process::Command::new(bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() => Ok(line.trim().to_string()),
        _ => Err(format!("`{} {arg}` failed ({})", bin.display(), out.status)),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// The command line starting `target` with its data in `data_dir` on the given ports.
fn server_command(
    target: Target,
    bins: &Bins,
    data_dir: &str,
    port: &str,
    peer_port: &str,
) -> Vec<String> {
    let client = format!("http://127.0.0.1:{port}");
    let mut cmd = match target {
        Target::Minik => vec![
            bins.minik.display().to_string(),
            "etcd".into(),
            "serve".into(),
        ],
        Target::Etcd => vec![bins.etcd.display().to_string()],
        Target::Noop => {
            return [
                &bins.minik.display().to_string(),
                "bench",
                "etcd-noop-server",
                "--listen-client-urls",
                &client,
            ]
            .map(String::from)
            .to_vec();
        }
    };
    cmd.extend(
        [
            "--name",
            MEMBER_NAME,
            "--data-dir",
            data_dir,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ]
        .map(String::from),
    );
    if target == Target::Etcd {
        let peer = format!("http://127.0.0.1:{peer_port}");
        cmd.extend(
            [
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("{MEMBER_NAME}={peer}"),
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
            ]
            .map(String::from),
        );
    }
    cmd
}

/// The server command line for the report, with placeholders for what changes between runs.
pub(super) fn display_command(target: Target, bins: &Bins) -> String {
    server_command(target, bins, "DIR", "PORT", "PEER_PORT")
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running server; dropping it kills the process and removes its directory.
pub(super) struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `target` in a new directory under `parent` and waits until it serves a Range.
    pub(super) async fn start(
        target: Target,
        bins: &Bins,
        parent: &Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = parent.join(format!("{name}-{}-{attempt}", target.name()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let ports = free_ports(2).context("finding free ports")?;
            let data = dir.join("data");
            let cmd = server_command(
                target,
                bins,
                &data.display().to_string(),
                &ports[0].to_string(),
                &ports[1].to_string(),
            );
            let log_path = dir.join("server.log");
            let log = File::create(&log_path)?;
            let mut command = std::process::Command::new(&cmd[0]);
            command
                .args(&cmd[1..])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // etcd reads ETCD_* variables as flags; minik's log level should not follow the caller's.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("ETCD") || k == "RUST_LOG" || k == "MINIK_LOG_LEVEL" {
                    command.env_remove(OsStr::new(k.as_ref()));
                }
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", cmd.join(" ")))?;
            let mut server = Server {
                child: Some(child),
                port: ports[0],
                dir,
                log: log_path,
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = server.log_tail(15);
                    drop(server);
                    if log.contains("address already in use") && attempt < ATTEMPTS {
                        continue;
                    }
                    bail!(
                        "{} did not start: {e:#}\n--- {} ---\n{log}",
                        target.name(),
                        cmd.join(" ")
                    );
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    pub(super) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id (while it runs).
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `n` lines of the server's log.
    pub(super) fn log_tail(&self, n: usize) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), n)
    }

    /// A KV client on a new connection, without message size limits (a Range may be 100+ MB).
    async fn kv(&self) -> anyhow::Result<KvClient<Channel>> {
        let channel = Endpoint::from_shared(self.endpoint())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let endpoint = self.endpoint();
        super::wait_until_ready(&mut self.child, READY_TIMEOUT, || {
            let endpoint = endpoint.clone();
            async move {
                let channel = Endpoint::from_shared(endpoint)?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                KvClient::new(channel)
                    .range(RangeRequest {
                        key: b"minik-bench-ready".to_vec(),
                        ..Default::default()
                    })
                    .await?;
                anyhow::Ok(())
            }
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Put latency
// ---------------------------------------------------------------------------------------------

/// A key of exactly `KEY_SIZE` bytes: `prefix`, a zero-padded index, then padding.
fn sized_key(prefix: &str, i: usize) -> Vec<u8> {
    let mut k = format!("{prefix}{i:010}").into_bytes();
    k.resize(KEY_SIZE, b'.');
    k
}

struct Latency {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
    total: Duration,
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn put_latency(server: &Server, n: usize) -> anyhow::Result<Latency> {
    let mut kv = server.kv().await?;
    let value = vec![0u8; VALUE_SIZE];
    let put = |key: Vec<u8>| PutRequest {
        key,
        value: value.clone(),
        ..Default::default()
    };
    for i in 0..WARMUP_PUTS {
        kv.put(put(sized_key("/bench/warmup/", i))).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let req = put(sized_key("/bench/put-latency/", i));
        let t = Instant::now();
        tokio::time::timeout(REQUEST_TIMEOUT, kv.put(req))
            .await
            .context("put timed out")??;
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    Ok(Latency {
        n,
        p50: percentile(&samples, 50.0),
        p90: percentile(&samples, 90.0),
        p99: percentile(&samples, 99.0),
        max: *samples.last().unwrap_or(&Duration::ZERO),
        mean: samples.iter().sum::<Duration>() / n as u32,
        total,
    })
}

/// `a ÷ b` as `0.42×`.
pub(super) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

/// Headers `[first, <targets>…, "minik ÷ etcd" if both]`.
fn side_headers<T>(first: &str, results: &[(Target, T)]) -> Vec<String> {
    let mut h = vec![first.to_string()];
    h.extend(results.iter().map(|(t, _)| t.name().to_string()));
    if results.len() == 2 {
        h.push("minik ÷ etcd".into());
    }
    h
}

/// A row of a side-by-side table: one cell per target plus their ratio when both have a value.
fn side_row<T>(
    label: &str,
    results: &[(Target, Result<T, String>)],
    value: impl Fn(&T) -> f64,
    cell: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut row = vec![label.to_string()];
    for (_, r) in results {
        row.push(match r {
            Ok(v) => cell(v),
            Err(e) => e.clone(),
        });
    }
    if results.len() == 2 {
        row.push(match (&results[0].1, &results[1].1) {
            (Ok(a), Ok(b)) => ratio(value(a), value(b)),
            _ => "—".into(),
        });
    }
    row
}

fn latency_section(opts: &Options, results: &[(Target, Result<Latency, String>)]) -> String {
    let mut t = Table::new(side_headers("put latency", results));
    let ms = |d: Duration| d.as_secs_f64();
    for (label, f) in [
        ("p50", (|l: &Latency| l.p50) as fn(&Latency) -> Duration),
        ("p90", |l| l.p90),
        ("p99", |l| l.p99),
        ("max", |l| l.max),
        ("mean", |l| l.mean),
    ] {
        t.row(side_row(label, results, |l| ms(f(l)), |l| fmt_ms(f(l))));
    }
    let rate = |l: &Latency| l.n as f64 / l.total.as_secs_f64();
    t.row(side_row("throughput", results, rate, |l| {
        format!("{} puts/s", fmt_thousands(rate(l).round() as u64))
    }));
    format!(
        "### Single-client put latency\n\n\
         {} sequential puts (after {WARMUP_PUTS} warm-up puts) from one tonic client on one \
         connection, {KEY_SIZE}-byte keys, {} values, each acknowledged (durable) before the \
         next is sent.\n\n{}",
        fmt_thousands(opts.puts as u64),
        fmt_bytes(VALUE_SIZE as u64),
        t.render()
    )
}

// ---------------------------------------------------------------------------------------------
// 2. Range over many keys
// ---------------------------------------------------------------------------------------------

const RANGE_PREFIX: &[u8] = b"/bench/range/";
const RANGE_END: &[u8] = b"/bench/range0";

struct Query {
    best: Duration,
    bytes: usize,
}

struct RangeResult {
    load: Duration,
    full: Query,
    keys_only: Query,
    count_only: Query,
}

async fn range_bench(
    server: &Server,
    n: usize,
    in_flight: usize,
    rounds: usize,
) -> anyhow::Result<RangeResult> {
    let kv = server.kv().await?;
    let next = Arc::new(AtomicUsize::new(0));
    let value = Arc::new(vec![0u8; VALUE_SIZE]);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (mut kv, next, value) = (kv.clone(), next.clone(), value.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let mut key = RANGE_PREFIX.to_vec();
                key.extend_from_slice(format!("{i:08}").as_bytes());
                let req = PutRequest {
                    key,
                    value: value.to_vec(),
                    ..Default::default()
                };
                tokio::time::timeout(REQUEST_TIMEOUT, kv.put(req))
                    .await
                    .context("put timed out")??;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let load = start.elapsed();

    let query = async |keys_only: bool, count_only: bool| -> anyhow::Result<Query> {
        let mut best = Duration::MAX;
        let mut bytes = 0;
        for _ in 0..rounds {
            let mut kv = kv.clone();
            let req = RangeRequest {
                key: RANGE_PREFIX.to_vec(),
                range_end: RANGE_END.to_vec(),
                keys_only,
                count_only,
                ..Default::default()
            };
            let t = Instant::now();
            let resp = tokio::time::timeout(REQUEST_TIMEOUT, kv.range(req))
                .await
                .context("range timed out")??
                .into_inner();
            best = best.min(t.elapsed());
            bytes = resp.encoded_len();
            let want_kvs = if count_only { 0 } else { n };
            if resp.count != n as i64 || resp.kvs.len() != want_kvs {
                bail!(
                    "range returned count {} and {} kvs, expected {n} and {want_kvs}",
                    resp.count,
                    resp.kvs.len()
                );
            }
            if keys_only && resp.kvs.iter().any(|kv| !kv.value.is_empty()) {
                bail!("keys_only range returned values");
            }
        }
        Ok(Query { best, bytes })
    };
    let full = query(false, false).await?;
    let keys_only = query(true, false).await?;
    let count_only = query(false, true).await?;
    Ok(RangeResult {
        load,
        full,
        keys_only,
        count_only,
    })
}

fn range_section(opts: &Options, results: &[(Target, Result<RangeResult, String>)]) -> String {
    let n = fmt_thousands(opts.range_keys as u64);
    let mut t = Table::new(side_headers(&format!("{n} keys"), results));
    let load_rate = |r: &RangeResult| opts.range_keys as f64 / r.load.as_secs_f64();
    t.row(side_row(
        &format!("write them, {} puts in flight", opts.in_flight),
        results,
        |r| r.load.as_secs_f64(),
        |r| {
            format!(
                "{:.2} s ({} puts/s)",
                r.load.as_secs_f64(),
                fmt_thousands(load_rate(r).round() as u64)
            )
        },
    ));
    let size = |f: fn(&RangeResult) -> &Query| {
        results
            .iter()
            .find_map(|(_, r)| r.as_ref().ok().map(|r| fmt_bytes(f(r).bytes as u64)))
            .map(|s| format!(", {s} response"))
            .unwrap_or_default()
    };
    for (label, f) in [
        (
            "Range all",
            (|r: &RangeResult| &r.full) as fn(&RangeResult) -> &Query,
        ),
        ("Range all, keys_only", |r| &r.keys_only),
        ("Range all, count_only", |r| &r.count_only),
    ] {
        t.row(side_row(
            &format!("{label}{}", size(f)),
            results,
            |r| f(r).best.as_secs_f64(),
            |r| fmt_ms(f(r).best),
        ));
    }
    format!(
        "### Range over {n} keys\n\n\
         Keys `/bench/range/NNNNNNNN` with {} values, written by {} concurrent puts on one \
         connection; then one linearizable Range over all of them, client-side wall time \
         including transfer and decoding, best of {}.\n\n{}",
        fmt_bytes(VALUE_SIZE as u64),
        opts.in_flight,
        opts.rounds,
        t.render()
    )
}

// ---------------------------------------------------------------------------------------------
// 3. etcdctl check perf
// ---------------------------------------------------------------------------------------------

/// What `etcdctl check perf` printed.
#[derive(Debug, Default, Clone, PartialEq)]
struct CheckPerf {
    /// Writes/s and whether it passed.
    throughput: Option<(u64, bool)>,
    /// Slowest request in seconds, pass.
    slowest: Option<(f64, bool)>,
    /// Standard deviation in seconds, pass.
    stddev: Option<(f64, bool)>,
    /// `FAIL: ERROR(…) -> n` lines.
    errors: Vec<String>,
    /// The final `PASS` / `FAIL`.
    verdict: Option<bool>,
    exit_code: Option<i32>,
    /// CPU per write over [`CPU_WINDOW`].
    cpu: Option<CpuPerWrite>,
    /// When no verdict was printed: the last line of stderr.
    problem: Option<String>,
    wall: Duration,
}

/// The number at the start of `s` (`0.166515s` → 0.166515).
fn leading_number(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

impl CheckPerf {
    fn parse(stdout: &str, stderr: &str, exit_code: Option<i32>) -> CheckPerf {
        let mut r = CheckPerf {
            exit_code,
            ..Default::default()
        };
        // The progress bar redraws with '\r' and the first result follows it on the same line.
        for line in stdout.split(['\n', '\r']).map(str::trim) {
            let find = |pat: &str| line.find(pat).map(|i| &line[i + pat.len()..]);
            if let Some(v) = find("PASS: Throughput is ") {
                r.throughput = leading_number(v).map(|n| (n as u64, true));
            } else if let Some(v) = find("FAIL: Throughput too low: ") {
                r.throughput = leading_number(v).map(|n| (n as u64, false));
            } else if let Some(v) = find("PASS: Slowest request took ") {
                r.slowest = leading_number(v).map(|n| (n, true));
            } else if let Some(v) = find("Slowest request took too long: ") {
                r.slowest = leading_number(v).map(|n| (n, false));
            } else if let Some(v) = find("PASS: Stddev is ") {
                r.stddev = leading_number(v).map(|n| (n, true));
            } else if let Some(v) = find("Stddev too high: ") {
                r.stddev = leading_number(v).map(|n| (n, false));
            } else if line.contains("FAIL: ERROR(") {
                r.errors
                    .push(line[line.find("FAIL: ").unwrap_or(0) + 6..].to_string());
            } else if line == "PASS" {
                r.verdict = Some(true);
            } else if line == "FAIL" {
                r.verdict = Some(false);
            }
        }
        if r.verdict.is_none() {
            r.problem = stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(String::from)
                .or_else(|| Some(format!("no verdict (exit code {exit_code:?})")));
        }
        r
    }

    /// Failed requests, summed over the `ERROR(…) -> n` lines.
    fn error_count(&self) -> u64 {
        self.errors
            .iter()
            .map(|e| {
                e.rsplit_once("-> ")
                    .and_then(|(_, n)| n.trim().parse().ok())
                    .unwrap_or(1)
            })
            .sum()
    }

    fn summary(&self) -> String {
        match (self.verdict, &self.problem) {
            (Some(ok), _) => format!(
                "{} — {} writes/s, slowest {}, stddev {}",
                if ok { "PASS" } else { "FAIL" },
                self.throughput.map_or("?".into(), |(n, _)| n.to_string()),
                self.slowest
                    .map_or("?".into(), |(s, _)| format!("{s:.3} s")),
                self.stddev.map_or("?".into(), |(s, _)| format!("{s:.3} s")),
            ),
            (None, Some(p)) => format!("no result: {p}"),
            (None, None) => "no result".into(),
        }
    }
}

async fn run_check_perf(server: &Server, etcdctl: &Path, load: Load) -> anyhow::Result<CheckPerf> {
    let mut cmd = tokio::process::Command::new(etcdctl);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{}", server.port))
        .args(["check", "perf", &format!("--load={}", load.name())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("running {}", etcdctl.display()))?;
    let pid = child.id();
    let (out, cpu) = tokio::join!(
        tokio::time::timeout(CHECK_PERF_TIMEOUT, child.wait_with_output()),
        cpu_window(server, pid),
    );
    let out = out
        .with_context(|| format!("etcdctl check perf did not finish in {CHECK_PERF_TIMEOUT:?}"))?
        .with_context(|| format!("running {}", etcdctl.display()))?;
    let mut r = CheckPerf::parse(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
        out.status.code(),
    );
    r.wall = start.elapsed();
    r.cpu = cpu;
    Ok(r)
}

/// The seconds of `check perf`'s 60 s load over which CPU per write is measured (after
/// etcdctl's 1,000 connections are up, before its clean-up).
const CPU_WINDOW: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(50));

/// CPU time per write of the server and of etcdctl during `check perf`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuPerWrite {
    server: Duration,
    client: Duration,
}

/// Measures [`CpuPerWrite`] over [`CPU_WINDOW`]: `/proc` CPU times of both processes, and the
/// server's revision (one per put) from a Range at each end. `None` if either process ended or
/// the server did not answer.
async fn cpu_window(server: &Server, etcdctl: Option<u32>) -> Option<CpuPerWrite> {
    let (pid, client) = (server.pid()?.to_string(), etcdctl?.to_string());
    let mut kv = server.kv().await.ok()?;
    let mut snapshot = async || {
        let revision = kv
            .range(RangeRequest {
                key: b"minik-bench-ready".to_vec(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .header?
            .revision;
        Some((process_cpu(&pid)?, process_cpu(&client)?, revision))
    };
    tokio::time::sleep(CPU_WINDOW.0).await;
    let (server0, client0, rev0) = snapshot().await?;
    tokio::time::sleep(CPU_WINDOW.1 - CPU_WINDOW.0).await;
    let (server1, client1, rev1) = snapshot().await?;
    let writes = u32::try_from(rev1 - rev0).ok().filter(|w| *w > 0)?;
    Some(CpuPerWrite {
        server: server1.saturating_sub(server0) / writes,
        client: client1.saturating_sub(client0) / writes,
    })
}

fn check_perf_section(
    opts: &Options,
    targets: &[Target],
    results: &[(Load, Target, Result<CheckPerf, String>)],
) -> String {
    let mut headers = vec!["load".to_string(), "metric".to_string()];
    headers.extend(targets.iter().map(|t| t.name().to_string()));
    let mut table = Table::new(headers).left(1);
    let mut notes = Vec::new();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    for &load in &opts.loads {
        let row: Vec<&Result<CheckPerf, String>> = targets
            .iter()
            .map(|t| {
                &results
                    .iter()
                    .find(|(l, tt, _)| *l == load && tt == t)
                    .expect("every load and target ran")
                    .2
            })
            .collect();
        let (limit, clients) = load.model();
        let mut first = Some(format!(
            "**{}**: {} writes/s, {} clients",
            load.name(),
            fmt_thousands(limit),
            clients
        ));
        let mut line = |metric: &str, f: &dyn Fn(&CheckPerf) -> String| {
            let mut cells = vec![first.take().unwrap_or_default(), metric.to_string()];
            cells.extend(row.iter().map(|r| match r {
                Ok(c) => f(c),
                Err(e) => e.clone(),
            }));
            table.row(cells);
        };
        line("throughput", &|c| {
            c.throughput.map_or("—".into(), |(n, ok)| {
                format!("{} writes/s ({})", fmt_thousands(n), verdict(ok))
            })
        });
        line("slowest request", &|c| {
            c.slowest.map_or("—".into(), |(s, ok)| {
                format!("{s:.3} s ({})", verdict(ok))
            })
        });
        line("stddev", &|c| {
            c.stddev.map_or("—".into(), |(s, ok)| {
                format!("{s:.3} s ({})", verdict(ok))
            })
        });
        line("CPU per write: server · etcdctl", &|c| {
            c.cpu.map_or("—".into(), |c| {
                format!("{} µs · {} µs", c.server.as_micros(), c.client.as_micros())
            })
        });
        line("failed requests", &|c| fmt_thousands(c.error_count()));
        line("result", &|c| match (c.verdict, &c.problem) {
            (Some(ok), _) => format!("**{}**", verdict(ok)),
            (None, _) => "no result".into(),
        });
        line("wall time (incl. cleanup)", &|c| {
            format!("{:.1} s", c.wall.as_secs_f64())
        });
        for (t, r) in targets.iter().zip(&row) {
            if let Ok(c) = r {
                for e in &c.errors {
                    notes.push(format!("{} `--load={}`: {e}", t.name(), load.name()));
                }
                if let Some(p) = &c.problem {
                    notes.push(format!("{} `--load={}`: {p}", t.name(), load.name()));
                }
            }
        }
    }
    let mut s = format!(
        "### etcdctl check perf\n\n\
         `ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:PORT check perf --load=X`: 60 s of 1 KiB \
         puts at a fixed rate from many clients (etcdctl runs on the same 2-CPU machine). PASS \
         needs throughput > 90% of the target, slowest request ≤ 0.5 s, stddev ≤ 0.1 s, and no \
         errors. CPU per write: user + system time of each process over seconds {}–{} of the \
         load, divided by the revisions written meanwhile.\n\n{}",
        CPU_WINDOW.0.as_secs(),
        CPU_WINDOW.1.as_secs(),
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
    fn parses_check_perf_output() {
        let out = " 59 / 60   98.33%\r 60 / 60 Boooo! 100.00% 1m0s\rPASS: Throughput is 147 writes/s\n\
                   PASS: Slowest request took 0.166515s\nPASS: Stddev is 0.008389s\nPASS\n";
        let r = CheckPerf::parse(out, "", Some(0));
        assert_eq!(r.throughput, Some((147, true)));
        assert_eq!(r.slowest, Some((0.166515, true)));
        assert_eq!(r.stddev, Some((0.008389, true)));
        assert_eq!(r.verdict, Some(true));
        assert!(r.problem.is_none());

        let out = "FAIL: too many errors\nFAIL: ERROR(context deadline exceeded) -> 12\n\
                   FAIL: Throughput too low: 6491 writes/s\n\
                   Slowest request took too long: 0.786915s\nStddev too high: 0.2s\nFAIL\n";
        let r = CheckPerf::parse(out, "", Some(1));
        assert_eq!(r.throughput, Some((6491, false)));
        assert_eq!(r.slowest, Some((0.786915, false)));
        assert_eq!(r.stddev, Some((0.2, false)));
        assert_eq!(r.error_count(), 12);
        assert_eq!(r.verdict, Some(false));

        let r = CheckPerf::parse("", "Error: context deadline exceeded\n", Some(1));
        assert_eq!(r.verdict, None);
        assert_eq!(
            r.problem.as_deref(),
            Some("Error: context deadline exceeded")
        );
    }

    #[test]
    fn keys_and_percentiles() {
        assert_eq!(sized_key("/p/", 7).len(), KEY_SIZE);
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(100));
    }
}
