//! Images without a registry, against the running Docker daemon: `minik image build` of every
//! folder in `images/` (pause, echo, busybox), the echo server and the pause process running as
//! containers, `minik image ls`, `minik image load` of a `docker save` tarball and of names, the
//! error when Docker can't be reached, and the `examples/` manifests checked by the apiserver.
//!
//! Containers are named `minik-test-…` and removed on drop, also when a test fails. The built
//! images are left in the engine (later tests and the kubelet reuse them); building is
//! idempotent, so every test builds first and the later builds are quick.

mod apiserver_util;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use apiserver_util::{Cluster, Identity, Store};
use serde_json::Value;

const IMAGES: [&str; 6] = [
    "minik/pause:3.10",
    "registry.k8s.io/pause:3.10",
    "minik/echo:1.0",
    "minik/echo:latest",
    "minik/busybox:1.0",
    "minik/busybox:latest",
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn minik(args: &[&str]) -> Output {
    Command::new(common::minik_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run minik")
}

fn minik_ok(args: &[&str]) -> String {
    let out = minik(args);
    assert!(
        out.status.success(),
        "{}",
        show(&format!("minik {args:?}"), &out)
    );
    text(&out.stdout)
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI is installed")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "{}",
        show(&format!("docker {args:?}"), &out)
    );
    text(&out.stdout).trim().to_string()
}

fn image_id(name: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", name])
}

/// Builds every image once per test process (each test needs them; building is idempotent).
fn build_images() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = minik(&["image", "build"]);
        assert!(out.status.success(), "{}", show("minik image build", &out));
        let stdout = text(&out.stdout);
        for image in IMAGES {
            assert!(
                stdout.contains(image),
                "build output names {image}:\n{stdout}"
            );
            image_id(image);
        }
        stdout
    })
}

/// A container removed (`docker rm -f`) when dropped.
struct Container {
    name: String,
}

impl Container {
    /// `docker run -d --name minik-test-<what>-<pid> ARGS…`.
    fn run(what: &str, args: &[&str]) -> Container {
        let name = format!("minik-test-{what}-{}", std::process::id());
        // A leftover of an earlier run with the same pid.
        let _ = docker(&["rm", "-f", &name]);
        let c = Container { name };
        let mut argv = vec!["run", "-d", "--name", &c.name];
        argv.extend_from_slice(args);
        docker_ok(&argv);
        c
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Waits until the container has exited; its exit code.
    fn wait_exit(&self, limit: Duration) -> i64 {
        let start = Instant::now();
        loop {
            if self.inspect("{{.State.Running}}") == "false" {
                return self
                    .inspect("{{.State.ExitCode}}")
                    .parse()
                    .expect("exit code");
            }
            assert!(
                start.elapsed() < limit,
                "{} still running after {limit:?}; logs:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback address Docker published the container's `port` on.
    fn published(&self, port: u16) -> String {
        let out = docker_ok(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no loopback port for {port}: {out}"))
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// An HTTP response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a Content-Length body) from `r`.
fn read_response(r: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    r.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body: text(&body),
    })
}

/// Sends `raw` on a new connection and reads one response.
fn http(addr: &str, raw: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw.as_bytes())?;
    read_response(&mut BufReader::new(s), raw.starts_with("HEAD "))
}

fn get(addr: &str, path: &str, extra: &str) -> Response {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n"),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// Waits until `/healthz` answers 200 (Docker's proxy accepts before the server listens).
fn wait_healthy(c: &Container, addr: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        ) && r.status == 200
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "echo never became healthy at {addr}; logs:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn build_is_idempotent_and_ls_lists_the_images() {
    build_images();
    let ids: Vec<String> = IMAGES.iter().map(|i| image_id(i)).collect();
    assert_eq!(
        ids[0], ids[1],
        "registry.k8s.io/pause:3.10 is minik/pause:3.10"
    );
    assert_eq!(ids[2], ids[3]);
    assert_eq!(ids[4], ids[5]);

    // Nothing changed: nothing is built, nothing is re-tagged, and it is quick.
    let start = Instant::now();
    let again = minik_ok(&["image", "build"]);
    let took = start.elapsed();
    for name in ["pause", "echo", "busybox"] {
        let line = again
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{again}"));
        assert!(line.contains("(up to date"), "{line}");
    }
    assert!(
        took < Duration::from_secs(30),
        "an idle rebuild took {took:?}"
    );
    let after: Vec<String> = IMAGES.iter().map(|i| image_id(i)).collect();
    assert_eq!(ids, after, "an idle rebuild keeps the image IDs");

    // One image by name; an unknown name is refused with the list of known ones.
    let one = minik_ok(&["image", "build", "pause"]);
    assert!(one.starts_with("pause: ") && !one.contains("echo"), "{one}");
    let bad = minik(&["image", "build", "nope"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr)
            .contains(r#"no image source "nope"; the images folder has: busybox, echo, pause"#),
        "{}",
        show("build nope", &bad)
    );

    // --force builds anew; the replaced image is removed, not left dangling (unless a container
    // of another test still uses it).
    let old = image_id("minik/pause:3.10");
    let forced = minik_ok(&["image", "build", "--force", "pause"]);
    assert!(forced.contains("(built"), "{forced}");
    let new = image_id("minik/pause:3.10");
    assert_ne!(old, new);
    assert_eq!(image_id("registry.k8s.io/pause:3.10"), new);
    if docker(&["image", "inspect", &old]).status.success() {
        let users = docker_ok(&["ps", "-aq", "--filter", &format!("ancestor={old}")]);
        assert!(
            !users.is_empty(),
            "the replaced image {old} was left behind unused"
        );
    }
    let ids: Vec<String> = IMAGES.iter().map(|i| image_id(i)).collect();

    // `ls`: a table with the short IDs and sizes as docker prints them.
    let table = minik_ok(&["image", "ls"]);
    let header = table.lines().next().unwrap_or("");
    for col in ["IMAGE", "TAG", "IMAGE ID", "SIZE"] {
        assert!(header.contains(col), "{table}");
    }
    for (image, id) in IMAGES.iter().zip(&ids) {
        let (repo, tag) = image.rsplit_once(':').unwrap();
        let short = &id.trim_start_matches("sha256:")[..12];
        let row = table
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 4 && f[0] == repo && f[1] == tag
            })
            .unwrap_or_else(|| panic!("no row for {image}:\n{table}"));
        assert!(row.contains(short), "{row} has id {short}");
        assert!(row.trim_end().ends_with("MB"), "{row}");
    }
    let short = minik_ok(&["image", "ls", "--format", "short"]);
    for image in IMAGES {
        assert!(short.lines().any(|l| l == image), "{image} in:\n{short}");
    }
    let json: Value = serde_json::from_str(&minik_ok(&["image", "ls", "--format", "json"]))
        .expect("ls --format json is JSON");
    let echo = json
        .as_array()
        .expect("an array")
        .iter()
        .find(|r| r["repository"] == "minik/echo" && r["tag"] == "1.0")
        .expect("minik/echo:1.0 listed");
    assert_eq!(echo["id"], Value::String(ids[2].clone()));
    assert!(echo["size"].as_i64().unwrap_or(0) > 100_000, "{echo}");
}

#[test]
fn echo_answers_with_pod_name_path_and_headers() {
    build_images();
    let c = Container::run(
        "echo",
        &[
            "-e",
            "POD_NAME=echo-test-pod",
            "-p",
            "127.0.0.1::8080",
            "minik/echo:1.0",
        ],
    );
    let addr = c.published(8080);
    wait_healthy(&c, &addr);

    let r = get(&addr, "/some/path?x=1", "X-Minik-Test: abc\r\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );
    assert!(r.body.contains("pod: echo-test-pod\n"), "{}", r.body);
    assert!(r.body.contains("method: GET\n"), "{}", r.body);
    assert!(r.body.contains("path: /some/path\n"), "{}", r.body);
    assert!(r.body.contains("query: x=1\n"), "{}", r.body);
    assert!(r.body.contains("  X-Minik-Test: abc\n"), "{}", r.body);

    // JSON with ?format=json or Accept: application/json.
    for (path, extra) in [
        ("/j?format=json", ""),
        ("/j", "Accept: application/json\r\n"),
    ] {
        let r = get(&addr, path, &format!("{extra}X-Minik-Test: \"q\"\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(v["pod"], "echo-test-pod");
        assert_eq!(v["path"], "/j");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["headers"]["x-minik-test"], "\"q\"");
    }

    // Health checks, and HEAD (headers only).
    let r = get(&addr, "/healthz", "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = http(
        &addr,
        "HEAD /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // A body is read and counted (chunked too), and the next request on the connection works.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let a = read_response(&mut reader, false).unwrap();
    assert!(
        a.body.contains("path: /a\n") && a.body.contains("body: 5 bytes"),
        "{}",
        a.body
    );
    assert_eq!(a.header("connection"), Some("keep-alive"));
    let b = read_response(&mut reader, false).unwrap();
    assert!(
        b.body.contains("path: /b\n") && b.body.contains("body: 3 bytes"),
        "{}",
        b.body
    );

    // An idle connection doesn't block others (a thread per connection).
    let idle = TcpStream::connect(&addr).unwrap();
    assert_eq!(get(&addr, "/while-idle", "").status, 200);

    // Bad requests get 400 (431 for an oversized head), and the server lives on.
    for raw in [
        "NONSENSE\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n".to_string(),
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n".to_string(),
        "\u{1}\u{2}\u{3}\r\n\r\n".to_string(),
    ] {
        let r = http(&addr, &raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(r.status, 400, "{raw:?}: {}", r.body);
    }
    let huge = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(&addr, &huge).unwrap().status, 431);
    // Non-ASCII bytes in the target (the server once sliced inside a character there).
    let r = http(
        &addr,
        "GET /a€€ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(
        r.status == 200 && r.body.contains("path: /a€€\n"),
        "{}",
        r.body
    );
    // A client that disconnects mid-request.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /half HTTP/1.1\r\nHo").unwrap();
    drop(half);
    drop(idle);
    assert_eq!(get(&addr, "/still-up", "").status, 200);
    assert_eq!(c.inspect("{{.State.Running}}"), "true");

    // SIGTERM (docker stop) exits 0 at once.
    let start = Instant::now();
    docker_ok(&["stop", "-t", "10", &c.name]);
    let took = start.elapsed();
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 0, "{}", c.logs());
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
    assert!(c.logs().contains("got SIGTERM"), "{}", c.logs());
}

#[test]
fn echo_without_pod_name_answers_with_its_hostname() {
    build_images();
    let c = Container::run(
        "echo-host",
        &[
            "--hostname",
            "my-pod-0",
            "-e",
            "PORT=9090",
            "-p",
            "127.0.0.1::9090",
            "minik/echo:1.0",
        ],
    );
    let addr = c.published(9090);
    wait_healthy(&c, &addr);
    let r = get(&addr, "/", "");
    assert!(
        r.body.starts_with("pod: my-pod-0\nhostname: my-pod-0\n"),
        "{}",
        r.body
    );
    // SIGINT exits 0 too.
    docker_ok(&["kill", "-s", "INT", &c.name]);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.logs());
}

#[test]
fn pause_stays_up_and_exits_0_on_sigterm() {
    build_images();
    let v = docker(&["run", "--rm", "minik/pause:3.10", "-v"]);
    assert!(
        text(&v.stdout).starts_with("pause 3.10"),
        "{}",
        show("pause -v", &v)
    );

    let c = Container::run("pause", &["registry.k8s.io/pause:3.10"]);
    assert_eq!(c.inspect("{{.Config.User}}"), "65535:65535");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.inspect("{{.State.Running}}"), "true", "{}", c.logs());
    // It sleeps: no CPU time to speak of after two seconds.
    let pid = c.inspect("{{.State.Pid}}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    assert!(ticks < 20, "pause used {ticks} clock ticks: {stat}");

    let start = Instant::now();
    docker_ok(&["kill", "-s", "TERM", &c.name]);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.logs());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        c.logs().contains("Shutting down, got signal: Terminated"),
        "{}",
        c.logs()
    );
}

/// Zombie processes in a container: `ps` lines with state Z.
fn zombies(c: &Container) -> Vec<String> {
    let out = docker_ok(&["exec", &c.name, "/busybox", "ps", "-o", "pid,stat,comm"]);
    out.lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with('Z'))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn pause_reaps_orphaned_children() {
    build_images();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: install Debian's busybox-static (.ci/run does)"
    );
    // PID 1 starts a child that orphans a grandchild (re-parented to PID 1), then becomes
    // pause (exec keeps PID 1). Both exit within a second; pause must reap them.
    let script = "(/busybox sleep 0.5 &); /busybox sleep 0.5 & exec /pause";
    let mount = "/bin/busybox:/busybox:ro";
    let c = Container::run(
        "pause-reap",
        &[
            "-v",
            mount,
            "--entrypoint",
            "/busybox",
            "minik/pause:3.10",
            "sh",
            "-c",
            script,
        ],
    );
    // The control: the same children under a PID 1 that doesn't reap (busybox sleep).
    let control = Container::run(
        "no-reap",
        &[
            "-v",
            mount,
            "--entrypoint",
            "/busybox",
            "minik/pause:3.10",
            "sh",
            "-c",
            "(/busybox sleep 0.5 &); /busybox sleep 0.5 & exec /busybox sleep 600",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.inspect("{{.State.Running}}"), "true", "{}", c.logs());
    let z = zombies(&control);
    assert_eq!(z.len(), 2, "the control leaves two zombies: {z:?}");
    let z = zombies(&c);
    assert!(z.is_empty(), "pause left zombies: {z:?}");
}

/// An image tag removed on drop.
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

#[test]
fn load_tarballs_and_names() {
    build_images();
    let dir = tempfile::Builder::new()
        .prefix("minik-test-images-")
        .tempdir()
        .unwrap();

    // A tarball of an image the engine doesn't have (under that name): load brings it back.
    let tag = Tag(format!("minik-test/load-{}:1", std::process::id()));
    docker_ok(&["tag", "minik/echo:1.0", &tag.0]);
    let tarball = dir.path().join("echo.tar");
    docker_ok(&["save", "-o", tarball.to_str().unwrap(), &tag.0]);
    docker_ok(&["rmi", &tag.0]);
    assert!(!docker(&["image", "inspect", &tag.0]).status.success());
    let out = minik_ok(&["image", "load", tarball.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {}", tag.0)), "{out}");
    assert_eq!(image_id(&tag.0), image_id("minik/echo:1.0"));

    // A name in the engine: said so; several at once.
    let out = minik_ok(&[
        "image",
        "load",
        "minik/echo:1.0",
        "registry.k8s.io/pause:3.10",
    ]);
    assert!(
        out.contains(r#"Image "minik/echo:1.0" ("#) && out.contains("is in the Docker engine"),
        "{out}"
    );
    assert!(
        out.contains(r#"Image "registry.k8s.io/pause:3.10" ("#),
        "{out}"
    );

    // A name the engine doesn't have: a clear error, non-zero exit, the others still done.
    let out = minik(&["image", "load", "minik-test/absent:nope", "minik/echo:1.0"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"image "minik-test/absent:nope" is not in the Docker engine at "#)
            && err.contains("minik image build"),
        "{}",
        show("load absent", &out)
    );
    assert!(text(&out.stdout).contains(r#"Image "minik/echo:1.0""#));

    // A missing file and a file that isn't an image tarball.
    let missing = dir.path().join("missing.tar");
    let out = minik(&["image", "load", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot open"),
        "{}",
        show("missing", &out)
    );
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball").unwrap();
    let out = minik(&["image", "load", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("could not load")
            || text(&out.stderr).contains("loaded nothing"),
        "{}",
        show("junk", &out)
    );
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let out = Command::new(common::minik_bin())
        .args(["image", "ls"])
        .env("DOCKER_HOST", "unix:///nonexistent/minik-test.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the Docker engine at unix:///nonexistent/minik-test.sock: ")
            && err.contains("is Docker running?"),
        "{err}"
    );
}

#[test]
fn the_api_version_is_negotiated_down_to_the_engine() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = minik::kubelet::docker::Engine::connect()
            .await
            .expect("the Docker engine is running");
        let server_api = engine.version.api_version.clone().expect("an API version");
        assert_eq!(engine.api_version(), server_api);
        // Requests work at the negotiated version.
        engine
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .expect("list images");
        // The negotiated version is the engine's when the engine is older than bollard's
        // default (1.41 on Docker 20.10 here), and the minimum minik accepts.
        let (major, minor) = server_api.split_once('.').expect("MAJOR.MINOR");
        let server = (
            major.parse::<usize>().unwrap(),
            minor.parse::<usize>().unwrap(),
        );
        let client = engine.docker.client_version();
        assert!(
            (client.major_version, client.minor_version) <= server
                && (client.major_version, client.minor_version)
                    >= minik::kubelet::docker::MIN_API_VERSION,
            "negotiated {client} with an engine at {server_api}"
        );
    });
}

/// Every container (and init container) of a pod spec.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

#[test]
fn examples_are_accepted_and_use_only_local_images() {
    build_images();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let c = Cluster::start(Store::Minik);
    let k = c.kubectl("1.33", Identity::Admin);
    let out = k.ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        examples.to_str().unwrap(),
        "-o",
        "json",
    ]);
    // One object or a List, depending on the count.
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let items: Vec<Value> = match v["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![v],
    };
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "Job",
        "CronJob",
        "DaemonSet",
        "Pod",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let mut seen = 0;
    for item in &items {
        let spec = match item["kind"].as_str() {
            Some("Pod") => &item["spec"],
            Some("Deployment" | "DaemonSet" | "Job") => &item["spec"]["template"]["spec"],
            Some("CronJob") => &item["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        for ctr in containers(spec) {
            let image = ctr["image"].as_str().unwrap_or("");
            assert!(image.starts_with("minik/"), "{image} is built locally");
            assert_eq!(ctr["imagePullPolicy"], "IfNotPresent", "{ctr}");
            image_id(image);
            seen += 1;
        }
    }
    assert!(seen >= 7, "{seen} containers");
    // Dry run: nothing was stored.
    let pods = k.ok(&["get", "pods,deployments,configmaps", "-o", "name"]);
    assert!(!pods.contains("lab") && !pods.contains("echo"), "{pods}");
}
