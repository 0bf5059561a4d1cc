//! Harness for the tests that drive `minik apiserver` with the real `kubectl`.
//!
//! Use it from a test file with `mod common; mod apiserver_util;` (it builds on `tests/common`:
//! [`common::Server`] for the store, [`common::free_port`], [`common::etcdctl`]).
//!
//! What it gives:
//!
//! - [`KubePki`]: a throw-away PKI made with rcgen, written as PEM files — the cluster CA, a
//!   serving certificate for `127.0.0.1`/`localhost`, client certificates for the admin
//!   (CN `kubernetes-admin`, O `system:masters`) and for `jane` (no groups), and a client
//!   certificate signed by a second CA that the API server does not trust.
//! - [`Cluster`]: minik's store ([`common::Server::minik`]) plus `minik apiserver` in front of
//!   it, on free loopback ports, with its stdout/stderr in a log file. It is ready
//!   (`kubectl get --raw /readyz` answers `ok`) when [`Cluster::start`] returns. A kubeconfig is
//!   written per [`Identity`]. Dropping a `Cluster` kills the API server and the store and
//!   removes their temp dirs, also when the test panics — in which case the tail of the API
//!   server's log is printed, to see why.
//! - [`Kubectl`]: one real kubectl binary of a given minor version ([`kubectl_bin`]), bound to a
//!   cluster, an identity's kubeconfig and a cache dir of its own (discovery is cached per
//!   cluster, identity and version, so no test sees another's cache). Every command has a time
//!   limit; [`Kubectl::ok`] / [`Kubectl::fails`] assert the exit status and show the full output
//!   when it is not the expected one; [`Kubectl::spawn`] runs a command such as `get -w` in the
//!   background ([`Background`]).
//! - [`Cluster::https`]: one raw HTTPS request as an identity (rustls, HTTP/1.1), for what kubectl
//!   hides — status codes, Status bodies, requests without any credentials.
//!
//! Binaries: `kubectl` on `PATH` is a version dispatcher; the versioned binaries
//! `kubectl.1.27` … `kubectl.1.33` live next to the file it resolves to
//! (`readlink -f $(command -v kubectl)`). `MINIK_TEST_KUBECTL_DIR` overrides that directory. A
//! missing binary makes the test *fail* with a clear message — it is never skipped.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::common;

// ---------------------------------------------------------------------------------------------
// Settings and binaries
// ---------------------------------------------------------------------------------------------

/// The kubectl minor versions the tests are run with (oldest and newest supported, and one between).
pub const KUBECTL_VERSIONS: &[&str] = &["1.27", "1.30", "1.33"];
/// The kubectl used to probe readiness while a [`Cluster`] starts.
pub const PROBE_KUBECTL: &str = "1.33";
/// How long the API server may take to become ready before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for one kubectl command.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory holding `kubectl.1.XX`: `MINIK_TEST_KUBECTL_DIR`, else the directory of the
/// file that `kubectl` on `PATH` resolves to.
pub fn kubectl_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MINIK_TEST_KUBECTL_DIR") {
        return PathBuf::from(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl not found on PATH (set MINIK_TEST_KUBECTL_DIR to the directory holding \
                 kubectl.1.27 … kubectl.1.33). These tests need the real kubectl; they are \
                 deliberately not skipped when it is missing."
            )
        });
    let real = fs::canonicalize(&found)
        .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", found.display()));
    real.parent()
        .expect("kubectl has a parent dir")
        .to_path_buf()
}

/// Path of `kubectl.<version>` (e.g. `"1.27"`); panics (fails the test, never skips) if missing.
pub fn kubectl_bin(version: &str) -> PathBuf {
    let bin = kubectl_dir().join(format!("kubectl.{version}"));
    if !bin.is_file() {
        panic!(
            "required binary {} not found (kubectl {version}; set MINIK_TEST_KUBECTL_DIR to the \
             directory holding kubectl.1.XX). The test is deliberately not skipped.",
            bin.display()
        );
    }
    bin
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates of a test cluster, as PEM files in a temp dir (removed on drop):
///
/// - `ca`: the cluster CA (`--client-ca-file`, and the kubeconfigs' `certificate-authority`);
/// - `serving`: signed by the CA, SANs `127.0.0.1` and `localhost` (`--tls-cert-file`/`-key-file`);
/// - `admin`: CN `kubernetes-admin`, O `system:masters` — may do everything;
/// - `jane`: CN `jane`, no groups — authenticated, but authorized for nothing but discovery;
/// - `untrusted`: CN `mallory`, O `system:masters`, signed by a second CA the server does not trust.
pub struct KubePki {
    dir: TempDir,
    pub ca_cert: PathBuf,
    pub serving: CertFiles,
    pub admin: CertFiles,
    pub jane: CertFiles,
    pub untrusted_ca_cert: PathBuf,
    pub untrusted: CertFiles,
    /// The service-account signing key (PKCS#8) and its public key.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl KubePki {
    /// Generates a fresh PKI (ECDSA P-256 keys) into a new temp dir.
    pub fn new() -> KubePki {
        use rcgen::ExtendedKeyUsagePurpose::{self, ClientAuth, ServerAuth};
        use rcgen::{CertifiedIssuer, KeyPair};

        let dir = tempfile::Builder::new()
            .prefix("minik-kube-pki-")
            .tempdir()
            .expect("temp dir");
        let write = |name: &str, pem: &str| -> PathBuf {
            let path = dir.path().join(name);
            fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca = common::test_ca;
        // A leaf certificate signed by `issuer`, written as `<name>.crt` / `<name>.key`.
        let leaf = |name: &str,
                    issuer: &CertifiedIssuer<'_, KeyPair>,
                    cn: &str,
                    group: Option<&str>,
                    sans: &[&str],
                    eku: ExtendedKeyUsagePurpose| {
            let (cert, key) = common::signed_leaf(issuer, cn, group, sans, vec![eku]);
            CertFiles {
                cert: write(&format!("{name}.crt"), &cert),
                key: write(&format!("{name}.key"), &key),
            }
        };

        let ca1 = ca("minik-test-kubernetes-ca");
        let serving = leaf(
            "apiserver",
            &ca1,
            "kube-apiserver",
            None,
            &["127.0.0.1", "localhost"],
            ServerAuth,
        );
        let admin = leaf(
            "admin",
            &ca1,
            "kubernetes-admin",
            Some("system:masters"),
            &[],
            ClientAuth,
        );
        let jane = leaf("jane", &ca1, "jane", None, &[], ClientAuth);
        let ca2 = ca("untrusted-ca");
        let untrusted = leaf(
            "untrusted",
            &ca2,
            "mallory",
            Some("system:masters"),
            &[],
            ClientAuth,
        );

        let sa = KeyPair::generate().expect("service-account key");
        KubePki {
            sa_key: write("sa.key", &sa.serialize_pem()),
            sa_pub: write("sa.pub", &sa.public_key_pem()),
            ca_cert: write("ca.crt", &ca1.pem()),
            untrusted_ca_cert: write("untrusted-ca.crt", &ca2.pem()),
            serving,
            admin,
            jane,
            untrusted,
            dir,
        }
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for KubePki {
    fn default() -> Self {
        KubePki::new()
    }
}

/// Who a client talks as. Each has its own kubeconfig; all of them trust the cluster CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// CN `kubernetes-admin`, O `system:masters`.
    Admin,
    /// CN `jane`, no groups.
    Jane,
    /// No credentials at all. Only useful with [`Cluster::https`]: kubectl, given a kubeconfig
    /// user without credentials, prompts for a username and fails with `error: EOF` before it
    /// sends anything.
    Anonymous,
    /// No client certificate, but a bearer token the server does not know (what kubectl sends
    /// for a kubeconfig user with a stale or made-up token).
    BogusToken,
    /// A client certificate signed by a CA the server does not trust.
    UntrustedCa,
}

/// The bearer token of [`Identity::BogusToken`].
pub const BOGUS_TOKEN: &str = "not-a-token-this-server-knows";

impl Identity {
    pub const ALL: [Identity; 5] = [
        Identity::Admin,
        Identity::Jane,
        Identity::Anonymous,
        Identity::BogusToken,
        Identity::UntrustedCa,
    ];

    /// Short name, used for file names and the kubeconfig's user entry.
    pub fn name(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Jane => "jane",
            Identity::Anonymous => "anonymous",
            Identity::BogusToken => "bogus-token",
            Identity::UntrustedCa => "untrusted",
        }
    }

    /// The client certificate presented in the TLS handshake, if any.
    pub fn cert(self, pki: &KubePki) -> Option<&CertFiles> {
        match self {
            Identity::Admin => Some(&pki.admin),
            Identity::Jane => Some(&pki.jane),
            Identity::Anonymous | Identity::BogusToken => None,
            Identity::UntrustedCa => Some(&pki.untrusted),
        }
    }

    /// The bearer token sent, if any.
    pub fn token(self) -> Option<&'static str> {
        (self == Identity::BogusToken).then_some(BOGUS_TOKEN)
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster: store + API server
// ---------------------------------------------------------------------------------------------

/// minik's store and `minik apiserver` in front of it (see the module docs).
///
/// Field order matters for drop: the API server (killed in `Drop`) goes first, then the store,
/// then the temp dirs.
pub struct Cluster {
    child: Option<Child>,
    port: u16,
    store: common::Server,
    pki: KubePki,
    /// Log, kubeconfigs, kubectl cache dirs and manifests.
    work: TempDir,
    log_path: PathBuf,
}

/// Which etcd the API server stores into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// minik's etcd-compatible store.
    Minik,
    /// The real etcd 3.4 (`/usr/bin/etcd`): the API server must run on it unchanged.
    RealEtcd,
}

impl Cluster {
    /// Starts a fresh store and an API server on it; returns when `/readyz` answers `ok`.
    pub fn start(kind: Store) -> Cluster {
        kubectl_bin(PROBE_KUBECTL); // fail early and clearly when kubectl is missing
        let store = match kind {
            Store::Minik => common::Server::minik(None),
            Store::RealEtcd => common::Server::real_etcd(None),
        };
        let pki = KubePki::new();
        let work = tempfile::Builder::new()
            .prefix("minik-apiserver-test-")
            .tempdir()
            .expect("temp dir");
        for sub in ["cache", "home", "manifests"] {
            fs::create_dir_all(work.path().join(sub)).expect("create work dir");
        }
        let log_path = work.path().join("apiserver.log");
        let mut cluster = Cluster {
            child: None,
            port: common::free_port(),
            store,
            pki,
            work,
            log_path,
        };
        cluster.launch();
        cluster
    }

    /// Spawns the API server and waits until it is ready; picks a new port (up to 3 times) if
    /// the chosen one turns out to be taken.
    fn launch(&mut self) {
        for attempt in 1.. {
            self.write_kubeconfigs();
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(why) => {
                    self.kill();
                    let log = self.log();
                    if attempt < 4 && log.to_lowercase().contains("address already in use") {
                        self.port = common::free_port();
                        continue;
                    }
                    panic!(
                        "minik apiserver did not become ready on {}: {why}\n--- command: {}\n\
                         --- last lines of {}:\n{}",
                        self.server_url(),
                        self.command_line().join(" "),
                        self.log_path.display(),
                        common::tail(&log, 40)
                    );
                }
            }
        }
    }

    /// The full command line of the API server.
    pub fn command_line(&self) -> Vec<String> {
        vec![
            path_str(&common::minik_bin()),
            "apiserver".into(),
            "--etcd-servers".into(),
            format!("http://127.0.0.1:{}", self.store.port()),
            "--secure-port".into(),
            self.port.to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            path_str(&self.pki.serving.cert),
            "--tls-private-key-file".into(),
            path_str(&self.pki.serving.key),
            "--client-ca-file".into(),
            path_str(&self.pki.ca_cert),
            "--service-account-key-file".into(),
            path_str(&self.pki.sa_pub),
            "--service-account-signing-key-file".into(),
            path_str(&self.pki.sa_key),
            "--service-account-issuer".into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ]
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open apiserver log");
        let cmd = self.command_line();
        let child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start minik apiserver: {e} ({})", cmd.join(" ")));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let probe = self
            .kubectl(PROBE_KUBECTL, Identity::Admin)
            .timeout(Duration::from_secs(5));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("process exited early with {status}"));
            }
            let last = if TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                match probe.try_run(&["get", "--raw", "/readyz", "--request-timeout=2s"]) {
                    Ok(o) if o.status.success() && o.out().trim() == "ok" => return Ok(()),
                    Ok(o) => format!(
                        "last `kubectl get --raw /readyz`: {}\n{}{}",
                        o.status,
                        o.out(),
                        o.err()
                    ),
                    Err(e) => e,
                }
            } else {
                "secure port not accepting connections".into()
            };
            if Instant::now() > deadline {
                return Err(format!("timed out after {READY_TIMEOUT:?}; {last}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the API server (SIGKILL) and reaps it. The store keeps running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the API server (SIGKILL) if it runs and starts it again on the same port, on the same
    /// store, with the same PKI and kubeconfigs; returns when `/readyz` answers `ok` again.
    /// Panics (with the log's tail) if it does not come back.
    pub fn restart_apiserver(&mut self) {
        self.kill();
        self.spawn();
        if let Err(why) = self.wait_ready() {
            self.kill();
            panic!(
                "minik apiserver did not become ready again on {}: {why}\n--- last lines of {}:\n{}",
                self.server_url(),
                self.log_path.display(),
                common::tail(&self.log(), 40)
            );
        }
    }

    /// Whether the API server process is running (not killed, not exited).
    pub fn apiserver_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    /// The store under the API server (for etcdctl: [`common::etcdctl`]`(cluster.store(), …)`).
    pub fn store(&self) -> &common::Server {
        &self.store
    }
    pub fn pki(&self) -> &KubePki {
        &self.pki
    }
    /// A scratch dir owned by this cluster (removed on drop).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The API server's stdout/stderr so far.
    pub fn log(&self) -> String {
        common::read_lossy(&self.log_path)
    }

    /// The kubeconfig of `id` (written by [`Cluster::start`]).
    pub fn kubeconfig(&self, id: Identity) -> PathBuf {
        self.work.path().join(format!("kubeconfig-{}", id.name()))
    }

    /// Writes one kubeconfig per identity: cluster `minik` at [`Cluster::server_url`] trusting
    /// the cluster CA, a user with the identity's client certificate and/or token.
    fn write_kubeconfigs(&self) {
        for id in Identity::ALL {
            let mut user = serde_json::json!({});
            if let Some(c) = id.cert(&self.pki) {
                user["client-certificate"] = path_str(&c.cert).into();
                user["client-key"] = path_str(&c.key).into();
            }
            if let Some(token) = id.token() {
                user["token"] = token.into();
            }
            let context = format!("{}@minik", id.name());
            let config = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "minik", "cluster": {
                    "server": self.server_url(),
                    "certificate-authority": path_str(&self.pki.ca_cert),
                }}],
                "users": [{"name": id.name(), "user": user}],
                "contexts": [{"name": context, "context": {"cluster": "minik", "user": id.name()}}],
                "current-context": context,
            });
            fs::write(
                self.kubeconfig(id),
                serde_json::to_string_pretty(&config).unwrap(),
            )
            .expect("write kubeconfig");
        }
    }

    /// kubectl `version` (e.g. `"1.27"`) as `id` against this cluster, with a cache dir of its
    /// own (per cluster, version and identity).
    pub fn kubectl(&self, version: &str, id: Identity) -> Kubectl {
        let cache_dir = self
            .work
            .path()
            .join("cache")
            .join(format!("{version}-{}", id.name()));
        Kubectl {
            bin: kubectl_bin(version),
            version: version.to_string(),
            kubeconfig: self.kubeconfig(id),
            cache_dir,
            home: self.work.path().join("home"),
            timeout: KUBECTL_TIMEOUT,
        }
    }

    /// Writes `object` as pretty JSON to `manifests/<name>` in the work dir; returns its path
    /// (as a string, ready for `-f`).
    pub fn manifest(&self, name: &str, object: &Value) -> String {
        let path = self.work.path().join("manifests").join(name);
        fs::write(&path, serde_json::to_string_pretty(object).unwrap()).expect("write manifest");
        path_str(&path)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- minik apiserver ({}), last lines of {}:\n{}",
                self.command_line().join(" "),
                self.log_path.display(),
                common::tail(&self.log(), 40)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTPS
// ---------------------------------------------------------------------------------------------

/// An HTTP response read by [`Cluster::https`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics (with the response) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:#?}"))
    }
}

impl Cluster {
    /// One HTTP/1.1 request over TLS, as `id` (client certificate and/or bearer token), with
    /// `Accept: application/json` and `Connection: close`; for what kubectl cannot show, such as
    /// the Status body of a 401 or a request with no credentials at all. `Err` when the
    /// connection or the TLS handshake fails (the message says why).
    pub fn https(
        &self,
        id: Identity,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let body = body.unwrap_or("");
        let content_type = (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH"))
            .then_some("application/json");
        self.https_raw(id, method, path, content_type, body.as_bytes())
    }

    /// Like [`Cluster::https`], with any `Content-Type` (none if `None`) and a body of any bytes
    /// (sent with `Content-Length` whenever a content type is given or the body is not empty).
    pub fn https_raw(
        &self,
        id: Identity,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<HttpResponse, String> {
        use std::io::Write;

        let config = self.tls_client_config(id)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let sock = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
        sock.set_write_timeout(Some(Duration::from_secs(10))).ok();
        let mut tls = rustls::StreamOwned::new(conn, sock);

        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\
             User-Agent: minik-test\r\nConnection: close\r\n",
            self.port
        );
        if let Some(token) = id.token() {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if content_type.is_some() || !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        // A large body is announced first (`Expect: 100-continue`), as curl does: a server that
        // refuses it (413) answers without reading it, and the answer is not lost to the reset
        // that closing a connection with unread bytes causes.
        let expect_continue = body.len() > 1024 * 1024;
        if expect_continue {
            req.push_str("Expect: 100-continue\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        if expect_continue {
            tls.write_all(&bytes)
                .and_then(|()| tls.flush())
                .map_err(|e| format!("sending the request head: {e}"))?;
            bytes.clear();
            // Read up to the end of the first answer's head.
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(format!("reading the answer to the head: {e}")),
                }
            }
            if raw.starts_with(b"HTTP/1.1 100") {
                let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                raw.drain(..end);
                bytes.extend_from_slice(body);
            }
        } else {
            bytes.extend_from_slice(body);
        }
        // A server may answer (413) and close before it has read a body: a failed write is only
        // an error if no answer can be read.
        let sent = if bytes.is_empty() {
            Ok(())
        } else {
            tls.write_all(&bytes)
                .and_then(|()| tls.flush())
                .map_err(|e| format!("sending the request: {e}"))
        };

        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // A peer that closes without close_notify: keep what came.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
                // A reset after a complete answer (the server closed with unread body bytes).
                Err(_) if !raw.is_empty() && parse_http_response(&raw).is_ok() => break,
                Err(e) => {
                    sent?;
                    return Err(format!("reading the response: {e}"));
                }
            }
        }
        if raw.is_empty() {
            sent?;
        }
        parse_http_response(&raw)
    }

    fn tls_client_config(&self, id: Identity) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.pki.ca_cert).map_err(|e| e.to_string())? {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        let mut config = match id.cert(&self.pki) {
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Parses a complete HTTP/1.1 response (status line, headers, body; chunked bodies decoded).
fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete HTTP response: {text:?}"))?;
    let mut head_lines = head.split("\r\n");
    let status_line = head_lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest
                .split_once("\r\n")
                .ok_or_else(|| format!("bad chunked body: {rest:?}"))?;
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
            if size == 0 {
                break;
            }
            let chunk = after
                .get(..size)
                .ok_or_else(|| format!("truncated chunk: {after:?}"))?;
            out.push_str(chunk);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// kubectl
// ---------------------------------------------------------------------------------------------

/// One kubectl binary bound to a kubeconfig and a cache dir (see [`Cluster::kubectl`]).
#[derive(Clone, Debug)]
pub struct Kubectl {
    bin: PathBuf,
    version: String,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    home: PathBuf,
    timeout: Duration,
}

impl Kubectl {
    /// The same kubectl with another time limit per command.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The minor version, e.g. `"1.27"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The full argv (binary first), for messages.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            path_str(&self.bin),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--cache-dir={}", self.cache_dir.display()),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn command(&self, args: &[&str]) -> Command {
        let argv = self.argv(args);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        // Keep the developer's own kubectl setup (KUBECONFIG, ~/.kube, kuberc, proxies) out.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| {
                k.starts_with("KUBE") || k.to_ascii_lowercase().ends_with("_proxy")
            }) {
                c.env_remove(k);
            }
        }
        c.env("HOME", &self.home);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs to completion; panics on timeout (with the partial output). The exit status is not
    /// checked: see [`Kubectl::ok`] and [`Kubectl::fails`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs to completion; `Err` (with the partial output) on timeout.
    pub fn try_run(&self, args: &[&str]) -> Result<Output, String> {
        let mut bg = self.spawn(args);
        match bg.wait_exit(self.timeout) {
            Some(_) => Ok(bg.finish()),
            None => {
                let cmd = bg.argv.join(" ");
                let out = bg.finish();
                Err(format!(
                    "kubectl did not finish within {:?}: {cmd}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.timeout,
                    out.out(),
                    out.err()
                ))
            }
        }
    }

    /// Runs `args`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed with {}: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.version,
            out.status,
            self.argv(args).join(" "),
            out.out(),
            out.err()
        );
        out.out()
    }

    /// Runs `args`, which must succeed, and parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "kubectl {}: {} printed no JSON ({e}):\n{out}",
                self.version,
                args.join(" ")
            )
        })
    }

    /// Runs `args`, which must fail; returns stderr (followed by stdout, if any).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} succeeded but should have failed: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.version,
            self.argv(args).join(" "),
            out.out(),
            out.err()
        );
        out.err() + &out.out()
    }

    /// Starts `args` in the background (e.g. `get -w`); see [`Background`].
    pub fn spawn(&self, args: &[&str]) -> Background {
        let argv = self.argv(args);
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv.join(" ")));
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

/// A kubectl running in the background, its output collected as it comes. Killed on drop.
pub struct Background {
    child: Child,
    argv: Vec<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

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
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return pred(&self.stdout_so_far());
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process if still running and returns everything it printed. The status is the
    /// process's own exit status if it had exited, else the kill's.
    pub fn finish(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait kubectl");
        for r in self.readers.drain(..) {
            let _ = r.join();
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

// ---------------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------------

/// Convenience accessors on [`Output`].
pub trait OutputText {
    fn out(&self) -> String;
    fn err(&self) -> String;
}

impl OutputText for Output {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The complete JSON values in `text`, one after the other (as printed by `kubectl get -w -o
/// json`); a value still being written at the end is left out.
pub fn json_stream(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// The rows of a kubectl table (`NAME  AGE` …) as whitespace-separated cells, header first.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// A string field at a JSON pointer (`""` if absent or not a string).
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
