//! Shared harness for the integration tests that drive the real `etcdctl` against a real etcd and
//! against `minik etcd serve`.
//!
//! Use it from a test file with `mod common;` (the file lives in `tests/common/mod.rs`, so cargo
//! does not build it as a test of its own).
//!
//! What it gives:
//!
//! - [`free_port`]: an unused TCP port on 127.0.0.1, never handed out twice by one test process.
//! - [`Pki`]: a throw-away PKI made with rcgen (CA, server cert for 127.0.0.1/localhost, client
//!   cert, plus an *untrusted* CA with a client cert of its own), written as PEM files.
//! - [`Server`]: a running etcd-compatible server — the real `/usr/bin/etcd` ([`Server::real_etcd`])
//!   or minik ([`Server::minik`], [`Server::minik_at`]) — on a free loopback port, with its data in
//!   a temp dir and its stdout/stderr in a log file there. It is ready (etcdctl `endpoint health`
//!   succeeded) when the constructor returns. [`Server::kill9`] / [`Server::restart`] are there for
//!   crash tests; dropping a `Server` kills its process and removes its temp dirs, also when the
//!   test panics.
//! - [`etcdctl`] (and the [`Etcdctl`] builder for other credentials, timeouts or background
//!   commands such as `watch`): runs the real `/usr/bin/etcdctl` with `ETCDCTL_API=3`, the server's
//!   endpoint and, for a TLS server, `--cacert/--cert/--key`; a command that hangs fails the test.
//! - [`normalize`]: blanks out what legitimately differs between two etcd servers (member/cluster
//!   and lease ids, raft term/index, db size, version strings, durations, timestamps, URLs/ports),
//!   so the output of one command against two servers can be compared with `assert_eq!`.
//!   Revisions, keys, values, counts and key versions are kept: they must match.
//! - [`assert_same_text`] / [`line_diff`]: compare two transcripts and show a readable diff.
//!
//! Binaries: `/usr/bin/etcd` and `/usr/bin/etcdctl` (Debian packages `etcd-server` and
//! `etcd-client`, 3.4.23); `MINIK_TEST_ETCD` / `MINIK_TEST_ETCDCTL` override the paths. A missing
//! binary makes the tests *fail* with a clear message — they are never skipped.
//!
//! Self-test: with `MINIK_INTEROP_SELFTEST=1`, [`Server::minik`] and [`Server::minik_at`] start a
//! second real etcd instead of minik. Every differential test must then pass, which proves that
//! [`normalize`] makes two real etcds compare equal (so a difference found against minik is
//! minik's).
#![allow(dead_code)]

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use regex::{Captures, Regex};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Binaries and settings
// ---------------------------------------------------------------------------------------------

/// Where the real etcd server is looked for (override: `MINIK_TEST_ETCD`).
pub const DEFAULT_ETCD: &str = "/usr/bin/etcd";
/// Where the real etcdctl is looked for (override: `MINIK_TEST_ETCDCTL`).
pub const DEFAULT_ETCDCTL: &str = "/usr/bin/etcdctl";
/// The member name given to every server (real etcd and minik), so `member list` compares equal.
pub const MEMBER_NAME: &str = "interop";
/// How long a server may take to become ready before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit for one etcdctl command.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The minik binary built by cargo for this test crate.
pub fn minik_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_minik"))
}

/// Path of the real etcd binary; panics (fails the test, never skips) if it is missing.
pub fn etcd_bin() -> PathBuf {
    required_binary("MINIK_TEST_ETCD", DEFAULT_ETCD, "etcd-server")
}

/// Path of the real etcdctl binary; panics (fails the test, never skips) if it is missing.
pub fn etcdctl_bin() -> PathBuf {
    required_binary("MINIK_TEST_ETCDCTL", DEFAULT_ETCDCTL, "etcd-client")
}

fn required_binary(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        panic!(
            "required binary {} not found (set {var} to override). These tests need the real etcd \
             3.4 tools: install them with `apt-get install -y etcd-server etcd-client` (Debian package \
             `{package}`). They are deliberately not skipped when missing.",
            path.display()
        );
    }
    path
}

/// True when `MINIK_INTEROP_SELFTEST=1`: [`Server::minik`] then starts a second real etcd.
pub fn selftest() -> bool {
    std::env::var("MINIK_INTEROP_SELFTEST").is_ok_and(|v| v == "1" || v == "true")
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);

/// A TCP port on 127.0.0.1 that is free right now and that this process has not handed out before.
///
/// Ports are picked at random below the kernel's ephemeral range (32768+), so they do not collide
/// with the source ports of outgoing connections nor, in practice, with other test processes.
/// Servers started by [`Server`] on a port that turns out to be taken are retried on new ports.
pub fn free_port() -> u16 {
    let state = RandomState::new();
    for attempt in 0u64.. {
        let mut h = state.build_hasher();
        h.write_u64(attempt);
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if HANDED_OUT.lock().unwrap().contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HANDED_OUT.lock().unwrap().insert(port);
            return port;
        }
        assert!(attempt < 10_000, "no free port found on 127.0.0.1");
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// Certificates for mutual-TLS tests, written as PEM files in a temp dir (removed when the last
/// clone is dropped; a [`Server`] keeps a clone so a restart still finds its files).
///
/// - `ca_cert`: the CA trusted by servers (`--trusted-ca-file`) and by clients (`--cacert`);
/// - `server_cert`/`server_key`: signed by the CA, SANs `127.0.0.1` and `localhost`, usable for
///   server and client auth (real etcd's gateway dials itself with it);
/// - `client_cert`/`client_key`: signed by the CA (a good client);
/// - `untrusted_ca_cert`, `untrusted_client_cert`/`untrusted_client_key`: a second CA that no server
///   trusts and a client cert it signed (a client that must be refused).
#[derive(Clone)]
pub struct Pki {
    dir: Arc<TempDir>,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub untrusted_ca_cert: PathBuf,
    pub untrusted_client_cert: PathBuf,
    pub untrusted_client_key: PathBuf,
}

impl Pki {
    /// Generates a fresh PKI (ECDSA P-256 keys) into a new temp dir.
    pub fn new() -> Pki {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::Builder::new()
            .prefix("minik-pki-")
            .tempdir()
            .expect("temp dir");
        let write = |name: &str, pem: &str| -> PathBuf {
            let path = dir.path().join(name);
            fs::write(&path, pem).expect("write PEM");
            path
        };

        let ca1 = test_ca("minik-test-ca");
        let (server, sk) = signed_leaf(
            &ca1,
            "minik-test-server",
            None,
            &["127.0.0.1", "localhost"],
            vec![ServerAuth, ClientAuth],
        );
        let (client, ck) = signed_leaf(&ca1, "minik-test-client", None, &[], vec![ClientAuth]);
        let ca2 = test_ca("untrusted-ca");
        let (untrusted, uk) = signed_leaf(&ca2, "untrusted-client", None, &[], vec![ClientAuth]);

        Pki {
            ca_cert: write("ca.pem", &ca1.pem()),
            server_cert: write("server.pem", &server),
            server_key: write("server-key.pem", &sk),
            client_cert: write("client.pem", &client),
            client_key: write("client-key.pem", &ck),
            untrusted_ca_cert: write("untrusted-ca.pem", &ca2.pem()),
            untrusted_client_cert: write("untrusted-client.pem", &untrusted),
            untrusted_client_key: write("untrusted-client-key.pem", &uk),
            dir: Arc::new(dir),
        }
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Server-side flags shared by etcd and minik:
    /// `--cert-file --key-file --trusted-ca-file --client-cert-auth`.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            "--cert-file".into(),
            path_str(&self.server_cert),
            "--key-file".into(),
            path_str(&self.server_key),
            "--trusted-ca-file".into(),
            path_str(&self.ca_cert),
            "--client-cert-auth".into(),
        ]
    }
}

/// A self-signed test CA (ECDSA P-256).
pub fn test_ca(cn: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `issuer`: CN `cn`, optionally O `group` (the Kubernetes group;
/// rcgen keeps one value per DN attribute), the given SANs and extended key usages. Returns the
/// certificate and key as PEM.
pub fn signed_leaf(
    issuer: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
    cn: &str,
    group: Option<&str>,
    sans: &[&str],
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(g) = group {
        p.distinguished_name.push(DnType::OrganizationName, g);
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = ekus;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// Which TLS credentials etcdctl presents (only used when the server speaks TLS).
#[derive(Clone, Debug, Default)]
pub enum Creds {
    /// The good client: `--cacert` = the CA, `--cert/--key` = the CA-signed client cert.
    #[default]
    Good,
    /// Trusts the server (`--cacert`) but presents no client certificate.
    NoClientCert,
    /// Trusts the server but presents the client cert of the untrusted CA.
    Untrusted,
    /// Explicit files.
    Files {
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    },
}

impl Creds {
    fn flags(&self, pki: &Pki) -> Vec<String> {
        let (cacert, cert, key) = match self {
            Creds::Good => (
                Some(&pki.ca_cert),
                Some(&pki.client_cert),
                Some(&pki.client_key),
            ),
            Creds::NoClientCert => (Some(&pki.ca_cert), None, None),
            Creds::Untrusted => (
                Some(&pki.ca_cert),
                Some(&pki.untrusted_client_cert),
                Some(&pki.untrusted_client_key),
            ),
            Creds::Files { cacert, cert, key } => (cacert.as_ref(), cert.as_ref(), key.as_ref()),
        };
        let mut out = Vec::new();
        for (flag, v) in [("--cacert", cacert), ("--cert", cert), ("--key", key)] {
            if let Some(p) = v {
                out.push(format!("{flag}={}", p.display()));
            }
        }
        out
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Which program a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/usr/bin/etcd`.
    RealEtcd,
    /// `minik etcd serve`.
    Minik,
}

/// A running etcd-compatible server on 127.0.0.1 (see the module docs).
///
/// The process is killed (SIGKILL) and its temp dirs are removed on drop.
pub struct Server {
    flavor: Flavor,
    /// True when this server was asked for as minik but runs real etcd (self-test mode).
    stand_in: bool,
    port: u16,
    peer_port: u16,
    /// Whether `port`/`peer_port` were chosen here (and may be re-chosen if taken).
    own_ports: bool,
    data_dir: PathBuf,
    tls: Option<Pki>,
    log_path: PathBuf,
    child: Option<Child>,
    /// Temp dir for the log file (and the data dir unless one was given).
    work: TempDir,
}

impl Server {
    /// Starts the real etcd (`/usr/bin/etcd`) on a fresh data dir and free ports; with `tls`, the
    /// client URLs are https and client certificates are required.
    pub fn real_etcd(tls: Option<&Pki>) -> Server {
        Server::launch(Flavor::RealEtcd, false, None, None, tls)
    }

    /// Starts the real etcd on an existing (or new) data dir and a given client port.
    pub fn real_etcd_at(data_dir: &Path, port: u16, tls: Option<&Pki>) -> Server {
        Server::launch(Flavor::RealEtcd, false, Some(data_dir), Some(port), tls)
    }

    /// Starts `minik etcd serve` on a fresh data dir and a free port (see [`selftest`]).
    pub fn minik(tls: Option<&Pki>) -> Server {
        Server::launch(Server::minik_flavor(), selftest(), None, None, tls)
    }

    /// Starts `minik etcd serve` on an existing data dir (e.g. to restart after [`Server::kill9`]
    /// on a dir the test owns) and a given client port. The data dir is not removed on drop.
    pub fn minik_at(data_dir: &Path, port: u16, tls: Option<&Pki>) -> Server {
        Server::launch(
            Server::minik_flavor(),
            selftest(),
            Some(data_dir),
            Some(port),
            tls,
        )
    }

    fn minik_flavor() -> Flavor {
        if selftest() {
            Flavor::RealEtcd
        } else {
            Flavor::Minik
        }
    }

    fn launch(
        flavor: Flavor,
        stand_in: bool,
        data_dir: Option<&Path>,
        port: Option<u16>,
        tls: Option<&Pki>,
    ) -> Server {
        // Fail early and clearly when the tools are missing.
        etcdctl_bin();
        if flavor == Flavor::RealEtcd {
            etcd_bin();
        }
        let work = tempfile::Builder::new()
            .prefix(match flavor {
                Flavor::RealEtcd => "etcd-test-",
                Flavor::Minik => "minik-test-",
            })
            .tempdir()
            .expect("temp dir");
        let data_dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| work.path().join("data"));
        let mut server = Server {
            flavor,
            stand_in,
            own_ports: port.is_none(),
            port: port.unwrap_or_else(free_port),
            peer_port: free_port(),
            data_dir,
            tls: tls.cloned(),
            log_path: work.path().join("server.log"),
            child: None,
            work,
        };
        server.start();
        server
    }

    /// Starts the process (it must not be running) and waits until it is ready. If the chosen
    /// ports turn out to be taken, new ones are picked (only for ports chosen by the harness).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.label());
        for attempt in 1.. {
            // Make sure nothing else answers on our port, or readiness would be checked against it.
            if !self.ports_free() {
                if self.own_ports {
                    self.port = free_port();
                    self.peer_port = free_port();
                    continue;
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.ports_free() {
                    assert!(
                        Instant::now() < deadline,
                        "cannot start {}: port {} on 127.0.0.1 is in use by another process",
                        self.label(),
                        self.port
                    );
                    thread::sleep(Duration::from_millis(50));
                }
            }
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(why) => {
                    let log = self.log();
                    self.kill9();
                    if self.own_ports && attempt < 4 && log.contains("address already in use") {
                        self.port = free_port();
                        self.peer_port = free_port();
                        continue;
                    }
                    panic!(
                        "{} did not become ready at {}: {why}\n--- command: {}\n--- last lines of {}:\n{}",
                        self.label(),
                        self.endpoint(),
                        self.command_line().join(" "),
                        self.log_path.display(),
                        tail(&log, 40)
                    );
                }
            }
        }
    }

    /// Kills the process with SIGKILL (no clean shutdown) and reaps it. The data dir is kept.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit (then SIGKILL).
    /// Returns the exit status if it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills the process (if running) with SIGKILL and starts it again on the same data dir, ports
    /// and TLS files; returns when it is ready again.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` for a TLS server.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// A scratch dir owned by this server (removed on drop), e.g. for snapshot files.
    pub fn scratch_dir(&self) -> &Path {
        self.work.path()
    }
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }
    pub fn tls(&self) -> Option<&Pki> {
        self.tls.as_ref()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The server's stdout/stderr so far (all runs, appended).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `"etcd"`, `"minik"`, or `"minik (self-test: real etcd)"`.
    pub fn label(&self) -> &'static str {
        match (self.flavor, self.stand_in) {
            (Flavor::Minik, _) => "minik",
            (Flavor::RealEtcd, false) => "etcd",
            (Flavor::RealEtcd, true) => "minik (self-test: real etcd)",
        }
    }

    /// The full command line used to start the server.
    pub fn command_line(&self) -> Vec<String> {
        let client_url = self.endpoint();
        let mut cmd: Vec<String> = match self.flavor {
            Flavor::RealEtcd => {
                let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
                vec![
                    path_str(&etcd_bin()),
                    "--name".into(),
                    MEMBER_NAME.into(),
                    "--data-dir".into(),
                    path_str(&self.data_dir),
                    "--listen-client-urls".into(),
                    client_url.clone(),
                    "--advertise-client-urls".into(),
                    client_url,
                    "--listen-peer-urls".into(),
                    peer_url.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer_url.clone(),
                    "--initial-cluster".into(),
                    format!("{MEMBER_NAME}={peer_url}"),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--logger".into(),
                    "zap".into(),
                ]
            }
            Flavor::Minik => vec![
                path_str(&minik_bin()),
                "etcd".into(),
                "serve".into(),
                "--name".into(),
                MEMBER_NAME.into(),
                "--data-dir".into(),
                path_str(&self.data_dir),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url,
            ],
        };
        if let Some(pki) = &self.tls {
            cmd.extend(pki.server_flags());
        }
        cmd
    }

    fn ports_free(&self) -> bool {
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        free(self.port) && (self.flavor != Flavor::RealEtcd || free(self.peer_port))
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let cmd = self.command_line();
        let mut command = Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // Real etcd reads ETCD_* variables as flags: keep the test's environment out of it.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("ETCD")) {
                command.env_remove(k);
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} ({})", self.label(), cmd.join(" ")));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last: String;
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("process exited early with {status}"));
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                let out = Etcdctl::new(self)
                    .args([
                        "--dial-timeout=1s",
                        "--command-timeout=2s",
                        "endpoint",
                        "health",
                    ])
                    .timeout(Duration::from_secs(10))
                    .try_run();
                match out {
                    Ok(o) if o.status.success() => return Ok(()),
                    Ok(o) => {
                        last = format!(
                            "last `etcdctl endpoint health`: {}\n{}{}",
                            o.status,
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    }
                    Err(e) => last = e,
                }
            } else {
                last = "client port not accepting connections".into();
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {READY_TIMEOUT:?}; {last}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts a real etcd and the server under test (minik, or a second real etcd in self-test mode)
/// in parallel; returns `(etcd, minik)`.
pub fn start_pair(tls: Option<&Pki>) -> (Server, Server) {
    thread::scope(|s| {
        let a = s.spawn(|| Server::real_etcd(tls));
        let b = s.spawn(|| Server::minik(tls));
        let b = b.join();
        let a = a.join();
        match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------------------------

/// Runs `/usr/bin/etcdctl ARGS` against `server` (with the good client cert if it uses TLS),
/// feeding `stdin` if given; panics if it takes longer than [`ETCDCTL_TIMEOUT`].
pub fn etcdctl(server: &Server, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Etcdctl::new(server).args(args.iter().copied());
    if let Some(input) = stdin {
        cmd = cmd.stdin(input);
    }
    cmd.run()
}

/// Starts `etcdctl ARGS` in the background (for `watch` and the like); see [`Background`].
pub fn etcdctl_bg(server: &Server, args: &[&str]) -> Background {
    Etcdctl::new(server).args(args.iter().copied()).spawn()
}

/// Builder for one etcdctl invocation.
pub struct Etcdctl {
    endpoint: String,
    tls: Option<Pki>,
    creds: Creds,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Etcdctl {
    pub fn new(server: &Server) -> Etcdctl {
        Etcdctl {
            endpoint: server.endpoint(),
            tls: server.tls.clone(),
            creds: Creds::Good,
            args: Vec::new(),
            stdin: None,
            timeout: ETCDCTL_TIMEOUT,
        }
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_string()));
        self
    }
    /// Overrides the endpoint (default: the server's own).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.to_string();
        self
    }
    pub fn creds(mut self, creds: Creds) -> Self {
        self.creds = creds;
        self
    }
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The full argv (binary first), for messages.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            path_str(&etcdctl_bin()),
            format!("--endpoints={}", self.endpoint),
        ];
        if let Some(pki) = &self.tls {
            v.extend(self.creds.flags(pki));
        }
        v.extend(self.args.iter().cloned());
        v
    }

    fn command(&self) -> Command {
        let argv = self.argv();
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("ETCDCTL_")) {
                c.env_remove(k);
            }
        }
        c.env("ETCDCTL_API", "3");
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Runs to completion; panics on timeout (with the partial output).
    pub fn run(self) -> Output {
        match self.try_run() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs to completion; `Err` (with the partial output) on timeout.
    pub fn try_run(self) -> Result<Output, String> {
        let bg = self.spawn_inner();
        let deadline = Instant::now() + bg.timeout;
        let mut bg = bg;
        loop {
            if let Ok(Some(_)) = bg.child.try_wait() {
                return Ok(bg.finish());
            }
            if Instant::now() > deadline {
                let cmd = bg.argv.join(" ");
                let t = bg.timeout;
                let out = bg.finish();
                return Err(format!(
                    "etcdctl did not finish within {t:?}: {cmd}\n--- stdout:\n{}\n--- stderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts in the background.
    pub fn spawn(self) -> Background {
        self.spawn_inner()
    }

    fn spawn_inner(self) -> Background {
        let argv = self.argv();
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv.join(" ")));
        let feeder = match (self.stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => Some(thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })),
            _ => None,
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), stdout.clone()),
            pump(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Background {
            child,
            argv,
            stdout,
            stderr,
            readers,
            feeder,
            timeout: self.timeout,
        }
    }
}

fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// A background etcdctl (e.g. `watch`). Killed on drop.
pub struct Background {
    child: Child,
    argv: Vec<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    feeder: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl Background {
    /// Stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until `pred(stdout so far)` holds, the process exits, or `timeout` passes;
    /// returns whether `pred` held.
    pub fn wait_for_stdout(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stdout_so_far()) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Let the readers drain what the process wrote last.
                thread::sleep(Duration::from_millis(50));
                return pred(&self.stdout_so_far());
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process if still running and returns everything it printed. The status is the
    /// process's own exit status if it had exited, else the kill's.
    pub fn finish(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait etcdctl");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Convenience accessors on [`Output`].
pub trait OutputExt {
    fn out(&self) -> String;
    fn err(&self) -> String;
    /// Panics with stdout/stderr if the command failed.
    fn expect_ok(&self, what: &str) -> &Self;
}

impl OutputExt for Output {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn expect_ok(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status,
            self.out(),
            self.err()
        );
        self
    }
}

/// The exit code as text (`"0"`, `"1"`, or `"signal"`), for transcripts.
pub fn exit_code(status: &ExitStatus) -> String {
    status
        .code()
        .map_or_else(|| "signal".to_string(), |c| c.to_string())
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

fn re(s: &str) -> Regex {
    Regex::new(s).unwrap()
}

/// Table columns whose cells legitimately differ, and their placeholder.
fn table_placeholder(header: &str) -> Option<&'static str> {
    Some(match header {
        "ID" => "<ID>",
        "VERSION" => "<VERSION>",
        "DB SIZE" => "<SIZE>",
        "RAFT TERM" | "RAFT INDEX" | "RAFT APPLIED INDEX" => "<RAFT>",
        "TOOK" => "<DURATION>",
        "HASH" => "<HASH>",
        _ => return None,
    })
}

/// JSON (`-w json`) and `-w fields` keys whose values legitimately differ; zero values are kept
/// (etcd omits them in JSON, so a zero where etcd has a value still shows as a difference).
fn key_placeholder(key: &str, value: &str) -> Option<&'static str> {
    let is_string = value.starts_with('"');
    Some(match key {
        "cluster_id" | "member_id" | "ClusterID" | "MemberID" | "id" | "ID" | "lease" | "Lease"
        | "leader" | "Leader" => "<ID>",
        "raft_term" | "RaftTerm" | "raftTerm" | "raftIndex" | "RaftIndex" | "raftAppliedIndex"
        | "RaftAppliedIndex" => "<RAFT>",
        "dbSize" | "DBSize" | "dbSizeInUse" | "DBSizeInUse" | "size" => "<SIZE>",
        // A key's version is a number and must match; the server version is a string.
        "version" | "Version" if is_string => "<VERSION>",
        // Remaining TTL of a lease (`lease timetolive -w json`): depends on timing (-1, for a
        // lease that does not exist, is kept).
        "ttl" if !value.starts_with('-') => "<TTL>",
        "took" | "Took" => "<DURATION>",
        "ts" => "<TS>",
        "target" => "<TARGET>",
        "hash" | "Hash" => "<HASH>",
        _ => return None,
    })
}

struct Rules {
    status_line: Regex,
    hashkv_line: Regex,
    member_line: Regex,
    took_eq: Regex,
    remaining: Regex,
    attached_keys: Regex,
    json_keys: Regex,
    fields_took: Regex,
    keyed: Regex,
    url: Regex,
    host_port: Regex,
    uuid: Regex,
    hex_id: Regex,
    size: Regex,
    duration: Regex,
    time: Regex,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| Rules {
    // `endpoint status` (simple): endpoint, id, version, db size, is leader, is learner,
    // raft term, raft index, raft applied index, errors
    status_line: re(
        r"^(\S+), ([0-9a-f]{1,16}), ([^,]*), ([^,]*), (true|false), (true|false), (\d+), (\d+), (\d+), (.*)$",
    ),
    // `endpoint hashkv` (simple): endpoint, hash
    hashkv_line: re(r"^(\S+://\S+), (\d+)$"),
    // `member list` (simple): id (`%x`, so not always 16 digits), status, name, peer urls, ...
    member_line: re(r"^[0-9a-f]{1,16}, (started|unstarted), "),
    took_eq: re(r"took = \S+"),
    remaining: re(r"remaining\(-?\d+s\)"),
    attached_keys: re(r"attached keys\(\[([^\]]*)\]\)"),
    json_keys: re(r#""keys":\[([^\]]*)\]"#),
    fields_took: re(r#"^"Took" : .*$"#),
    keyed: re(r#""([A-Za-z_]+)"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)"#),
    url: re(r#"\b(https?|unixs?)://[^\s,\]\)"|]+"#),
    host_port: re(r"\b(127\.0\.0\.1|localhost|\[::1\]):\d+\b"),
    uuid: re(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
    hex_id: re(r"\b[0-9a-f]{16}\b"),
    size: re(r"\b\d+(\.\d+)? (B|kB|MB|GB|KiB|MiB|GiB)\b"),
    duration: re(r"\b\d+(\.\d+)?(ns|µs|us|ms)\b|\b\d+\.\d+(s|m|h)\b|\b\d+m\d+(\.\d+)?s\b"),
    time: re(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?"),
});

/// Replaces what legitimately differs between two etcd servers with placeholders, so the output of
/// one etcdctl command against two servers can be compared with `assert_eq!`:
///
/// - member / cluster / lease ids (hex as printed by etcdctl — `%016x` for leases, `%x` for
///   members in `member list` / `endpoint status` — and the decimal
///   `cluster_id`, `member_id`, `ID`, `id`, `lease`, `leader` values of `-w json`/`-w fields`) → `<ID>`
///   (a zero stays `0`);
/// - raft term / index / applied index → `<RAFT>`; db size → `<SIZE>`; server version → `<VERSION>`;
/// - durations (`took = …`, `TOOK`, `µs`/`ms` values) → `<DURATION>`; timestamps → `<TIME>`/`<TS>`;
///   a lease's *remaining* TTL → `<TTL>`; hashes → `<HASH>`;
/// - the keys attached to a lease (`lease timetolive --keys`, random order in etcd) are sorted;
/// - URLs → `SCHEME://<ADDR>`; `127.0.0.1:PORT` → `127.0.0.1:<PORT>`; client UUIDs → `<UUID>`;
/// - ASCII tables are re-rendered without padding (`| a | b |`), since column widths follow the
///   normalized-away content.
///
/// Revisions, keys, values, counts, key versions, granted TTLs, exit texts are kept.
pub fn normalize(text: &str) -> String {
    let r = &*RULES;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        // ASCII tables: a run of lines starting with '+' or '|'.
        let is_table = |l: &str| l.starts_with('+') || l.starts_with('|');
        if is_table(lines[i]) {
            let start = i;
            while i < lines.len() && is_table(lines[i]) {
                i += 1;
            }
            out.extend(normalize_table(&lines[start..i]));
            continue;
        }
        let mut line = lines[i].to_string();
        // `-w fields` of `lease timetolive`: "TTL" (remaining) is followed by "GrantedTTL".
        if line.starts_with("\"TTL\" : ")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("\"GrantedTTL\""))
        {
            line = "\"TTL\" : <TTL>".into();
        }
        line = r
            .fields_took
            .replace(&line, "\"Took\" : <DURATION>")
            .into_owned();
        line = r
            .status_line
            .replace(
                &line,
                "$1, <ID>, <VERSION>, <SIZE>, $5, $6, <RAFT>, <RAFT>, <RAFT>, $10",
            )
            .into_owned();
        line = r.hashkv_line.replace(&line, "$1, <HASH>").into_owned();
        line = r.member_line.replace(&line, "<ID>, $1, ").into_owned();
        line = r
            .took_eq
            .replace_all(&line, "took = <DURATION>")
            .into_owned();
        line = r
            .remaining
            .replace_all(&line, "remaining(<TTL>s)")
            .into_owned();
        // The keys attached to a lease come in map order (random in etcd): sort them.
        line = r
            .attached_keys
            .replace_all(&line, |c: &Captures| {
                format!("attached keys([{}])", sorted_join(c[1].split(' '), " "))
            })
            .into_owned();
        line = r
            .json_keys
            .replace_all(&line, |c: &Captures| {
                format!("\"keys\":[{}]", sorted_join(c[1].split(','), ","))
            })
            .into_owned();
        line = r
            .keyed
            .replace_all(&line, |c: &Captures| {
                let (key, sep, value) = (&c[1], &c[2], &c[3]);
                match key_placeholder(key, value) {
                    Some(p) if value != "0" && value != "\"\"" => format!("\"{key}\"{sep}{p}"),
                    _ => c[0].to_string(),
                }
            })
            .into_owned();
        out.push(generic(&line));
        i += 1;
    }
    out.join("\n")
}

fn sorted_join<'a>(items: impl Iterator<Item = &'a str>, sep: &str) -> String {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.join(sep)
}

fn generic(line: &str) -> String {
    let r = &*RULES;
    let mut s = r.url.replace_all(line, "$1://<ADDR>").into_owned();
    s = r.host_port.replace_all(&s, "$1:<PORT>").into_owned();
    s = r.uuid.replace_all(&s, "<UUID>").into_owned();
    s = r.time.replace_all(&s, "<TIME>").into_owned();
    s = r.hex_id.replace_all(&s, "<ID>").into_owned();
    s = r.size.replace_all(&s, "<SIZE>").into_owned();
    s = r.duration.replace_all(&s, "<DURATION>").into_owned();
    s
}

fn normalize_table(lines: &[&str]) -> Vec<String> {
    let cells = |l: &str| -> Vec<String> {
        let t = l.trim();
        let inner = t.strip_prefix('|').unwrap_or(t);
        let inner = inner.strip_suffix('|').unwrap_or(inner);
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut header: Option<Vec<String>> = None;
    let mut out = Vec::new();
    for l in lines {
        if l.starts_with('+') {
            out.push("+".to_string());
            continue;
        }
        let row = cells(l);
        let rendered: Vec<String> = match &header {
            None => {
                header = Some(row.clone());
                row
            }
            Some(h) => row
                .iter()
                .enumerate()
                .map(|(i, c)| match h.get(i).and_then(|h| table_placeholder(h)) {
                    Some(p) if !c.is_empty() => p.to_string(),
                    _ => generic(c),
                })
                .collect(),
        };
        out.push(format!("| {} |", rendered.join(" | ")));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Comparing transcripts
// ---------------------------------------------------------------------------------------------

/// A line diff of `a` and `b` (LCS-based; `-` lines only in `a`, `+` lines only in `b`,
/// two lines of context).
pub fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{c} {l}");
        } else {
            skipped = true;
        }
    }
    out
}

/// Asserts two (normalized) transcripts are equal; on failure panics with a line diff and both
/// texts in full.
pub fn assert_same_text(what: &str, label_a: &str, a: &str, label_b: &str, b: &str) {
    if a != b {
        panic!(
            "{what}: {label_a} and {label_b} differ (after normalization)\n\
             === diff (- {label_a}, + {label_b}) ===\n{}\n\
             === {label_a} ===\n{a}\n=== {label_b} ===\n{b}",
            line_diff(a, b)
        );
    }
}

/// Reads a file into a string (lossy); empty if missing.
pub fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
