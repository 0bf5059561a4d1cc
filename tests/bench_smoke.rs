//! `minik bench apiserver` in a tiny configuration, so that the benchmark cannot rot: every
//! section runs against both stores (minik's and the real `/usr/bin/etcd`, which must be
//! installed — the test fails, never skips, without it), the Markdown report has its tables and
//! PASS lines for the correctness checks, and the benchmark leaves no process or temp dir
//! behind — also when it is interrupted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MINIK: &str = env!("CARGO_BIN_EXE_minik");

/// A fresh directory used as the benchmark's TMPDIR (so its leftovers can be checked).
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "minik-bench-smoke-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Processes whose command line mentions `dir` (the store and API server started by the
/// benchmark have their data and certificates there).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn bench(tmp: &Tmp, args: &[&str]) -> Command {
    assert!(
        Path::new("/usr/bin/etcd").is_file(),
        "/usr/bin/etcd is missing (apt-get install etcd-server); this test is deliberately not \
         skipped"
    );
    let mut c = Command::new(MINIK);
    c.args(["bench", "apiserver"])
        .args(args)
        .env("TMPDIR", &tmp.0)
        .env_remove("RUST_LOG")
        .env_remove("MINIK_LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` up to `limit`; kills it and fails the test if it takes longer.
fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the benchmark did not finish within {limit:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bench_apiserver_tiny_run() {
    let tmp = Tmp::new("run");
    let child = bench(
        &tmp,
        &[
            "--store=both",
            "--clients=1,3",
            "--requests=3",
            "--list-pods=100",
            "--list-runs=1",
            "--page-size=30",
            "--load-clients=5",
            "--watchers=5",
            "--watch-events=100",
            "--watch-writers=3",
            "--watch-timeout=20",
        ],
    )
    .spawn()
    .expect("run minik bench apiserver");
    let out = wait(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(
        out.status.success(),
        "exit status {}\n{context}",
        out.status
    );
    for want in [
        "## API server: on minik's store vs on etcd",
        "### Single-object calls",
        "| UPDATE pod       |       3 |",
        "| store call       | clients |",
        "(for comparison) minik: UPDATE pod straight on the store (no API server) p99 at 3 clients",
        "(for comparison) etcd: UPDATE pod straight on the store (no API server) p99 at 3 clients",
        "### LIST of 100 pods",
        "| LIST Table, limit=30 pages |",
        "### Watch fan-out",
        "| events delivered / expected ",
        "### Targets (issue 3)",
        "**PASS** minik: every LIST returned all 100 pods",
        "**PASS** etcd: every LIST returned all 100 pods",
        "**PASS** minik: every one of 5 watchers received all 100 events in order",
        "**PASS** etcd: every one of 5 watchers received all 100 events in order",
    ] {
        assert!(stdout.contains(want), "missing {want:?}\n{context}");
    }
    assert!(!stdout.contains("failed (see Targets)"), "{context}");
    // Every single-object cell measured 3 requests per client without errors.
    assert!(!stdout.contains("failed requests"), "{context}");
    assert_eq!(tmp.leftovers(), Vec::<String>::new(), "temp files left");
    assert_eq!(
        processes_using(&tmp.0),
        Vec::<String>::new(),
        "processes left"
    );
}

#[test]
fn bench_apiserver_cleans_up_when_interrupted() {
    let tmp = Tmp::new("sigterm");
    let mut child = bench(
        &tmp,
        &["--store=minik", "--section=single", "--duration=30"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("run minik bench apiserver");
    // Wait until the first measurement runs (the store and the API server are up).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("GET configmap with 1 client") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the benchmark did not start measuring within 60 s");
    }
    assert!(
        !processes_using(&tmp.0).is_empty(),
        "the store and API server should be running"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(130), "interrupted exit code");
    assert_eq!(tmp.leftovers(), Vec::<String>::new(), "temp files left");
    assert_eq!(
        processes_using(&tmp.0),
        Vec::<String>::new(),
        "processes left"
    );
}
