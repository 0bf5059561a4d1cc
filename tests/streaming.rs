//! The kubelet's streaming server behind the API server, with the real kubectl 1.27 (SPDY),
//! 1.32 and 1.33 (WebSocket): `logs` (`-f`, `--tail`, `--timestamps`, `--previous`,
//! `--limit-bytes`), `exec` (exit codes, stdin, `-it` through a pty), `attach`, `port-forward` with
//! an HTTP request through it, and the errors of a missing container and an unreachable kubelet.
//!
//! There is no kubelet process here: the test plays its part. It starts a cluster (`minik up`),
//! makes the containers a kubelet would (a `minik/pause` sandbox on a Docker network of its own,
//! a `minik/busybox` app container and a `minik/echo` one joined to it, an exited earlier attempt
//! for `--previous`, all with dockershim's labels), runs `minik::kubelet::streaming::serve_on`
//! in-process with a serving certificate from the cluster CA, and registers a Node whose
//! `daemonEndpoints` point at it and a Pod bound to that Node. Every Docker object is named
//! `minik-test-stream-<pid>-…` and removed by a guard, also when the test fails.

mod lab;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::Lab;
use minik::kubelet::labels;

const PROFILE: &str = "stream";
const CTX: &str = "minik-stream";
const NODE: &str = "stream-node";
const POD: &str = "box";
/// Marks this run's containers (the server is told to serve only those).
const TEST_LABEL: &str = "minik.dev/test";

/// Removes the test's containers and network when dropped.
struct DockerObjects {
    prefix: String,
    network: Option<String>,
}

impl DockerObjects {
    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

impl Drop for DockerObjects {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={}", self.prefix)])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        if let Some(n) = &self.network {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed");
    assert!(
        out.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `kubectl.<version>` next to the real kubectl (`kubectl` itself for "").
fn kubectl_path(version: &str) -> PathBuf {
    if version.is_empty() {
        return PathBuf::from("kubectl");
    }
    let out = Command::new("sh")
        .args(["-c", "dirname \"$(readlink -f \"$(command -v kubectl)\")\""])
        .output()
        .expect("sh");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = PathBuf::from(dir).join(format!("kubectl.{version}"));
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Kubectl<'a> {
    lab: &'a Lab,
    version: &'static str,
    path: PathBuf,
}

impl Kubectl<'_> {
    /// A kubectl command (under `timeout`, so a hang fails the test instead of blocking it).
    fn cmd(&self, secs: u32, args: &[&str]) -> Command {
        let mut c = self.lab.cmd("timeout");
        c.arg(secs.to_string())
            .arg(&self.path)
            .arg("--context")
            .arg(CTX)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(60, args).output().expect("run kubectl")
    }

    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(60, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{}",
            show(&format!("kubectl {} {args:?}", self.version), &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn container_labels(
    run: &str,
    pod_uid: &str,
    container: &str,
    restarts: u32,
    kind: &str,
) -> Vec<String> {
    [
        (TEST_LABEL, run.to_string()),
        (labels::POD_NAMESPACE, "default".to_string()),
        (labels::POD_NAME, POD.to_string()),
        (labels::POD_UID, pod_uid.to_string()),
        (labels::CONTAINER_NAME, container.to_string()),
        (labels::RESTART_COUNT, restarts.to_string()),
        (labels::DOCKER_TYPE, kind.to_string()),
        (labels::NODE, NODE.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
    .collect()
}

fn ensure_images(lab: &Lab) {
    let have = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !["minik/pause:3.10", "minik/busybox:1.0", "minik/echo:1.0"]
        .iter()
        .all(|i| have(i))
    {
        lab.ok(&["image", "build"]);
    }
}

#[test]
fn streaming_through_the_apiserver_with_real_kubectl() {
    let lab = Lab::new();
    ensure_images(&lab);
    lab.up(PROFILE);
    let mut objs = DockerObjects {
        prefix: format!("minik-test-stream-{}", std::process::id()),
        network: None,
    };
    let network = objs.name("net");
    docker(&["network", "create", &network]);
    objs.network = Some(network.clone());

    // The pod's containers, as the kubelet would make them.
    let uid = "5f1f8f0c-0000-4000-8000-000000000001";
    let sandbox = objs.name("k8s_POD_box_default_0");
    let mut args: Vec<String> = ["run", "-d", "--name", &sandbox, "--network", &network]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(container_labels(
        &objs.prefix,
        uid,
        labels::SANDBOX_CONTAINER_NAME,
        0,
        labels::TYPE_SANDBOX,
    ));
    args.push("minik/pause:3.10".into());
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let join = format!("container:{sandbox}");
    let run = |name: &str, container: &str, restarts: u32, detach: bool, image_and_cmd: &[&str]| {
        let mut a: Vec<String> = vec!["run".into()];
        if detach {
            a.push("-d".into());
        }
        a.extend([
            "--name".into(),
            objs.name(name),
            "--network".into(),
            join.clone(),
        ]);
        a.extend(container_labels(
            &objs.prefix,
            uid,
            container,
            restarts,
            labels::TYPE_CONTAINER,
        ));
        a.extend(image_and_cmd.iter().map(|s| s.to_string()));
        docker(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    // An earlier attempt that exited, then the current one.
    run(
        "k8s_shell_box_default_0",
        "shell",
        0,
        false,
        &[
            "minik/busybox:1.0",
            "sh",
            "-c",
            "echo from-the-previous-attempt",
        ],
    );
    run(
        "k8s_shell_box_default_1",
        "shell",
        1,
        true,
        &[
            "minik/busybox:1.0",
            "sh",
            "-c",
            "echo line-one; sleep 0.3; echo line-two >&2; sleep 0.3; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done",
        ],
    );
    run("k8s_web_box_default_0", "web", 0, true, &["minik/echo:1.0"]);

    // The streaming server, in-process, with a serving certificate from the cluster CA.
    let pki_dir = lab.profile_dir(PROFILE).join("pki");
    let pki = minik::cluster::pki::Pki::open(&pki_dir).expect("the cluster CA");
    let serving = pki
        .serving(
            "kubelet-test-serving",
            NODE,
            &["127.0.0.1".into(), "localhost".into(), NODE.into()],
        )
        .expect("a serving certificate");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let engine = rt
        .block_on(minik::kubelet::docker::Engine::connect())
        .expect("Docker");
    let opts = minik::kubelet::streaming::ServerOptions {
        addr: listener.local_addr().expect("addr"),
        tls_cert_file: serving.cert.clone(),
        tls_private_key_file: serving.key.clone(),
        client_ca_file: pki_dir.join("ca.crt"),
        node_name: NODE.into(),
        // Only this run's containers (as the kubelet passes its cluster's label).
        container_labels: vec![(TEST_LABEL.into(), objs.prefix.clone())],
        pods: Default::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(minik::kubelet::streaming::serve_on(
        listener,
        opts,
        engine,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // The Node and the Pod.
    let k = Kubectl {
        lab: &lab,
        version: "1.32",
        path: kubectl_path(""),
    };
    let register = |node: &str, port: u16| {
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node}});
        k.run_with_stdin(&["apply", "-f", "-"], manifest.to_string().as_bytes());
        let status = serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        k.ok(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    };
    register(NODE, port);
    let pod = |name: &str, node: &str, containers: &[(&str, &str)]| {
        let cs: Vec<_> = containers
            .iter()
            .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
            .collect();
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": cs}});
        let out = k.run_with_stdin(&["apply", "-f", "-"], manifest.to_string().as_bytes());
        assert!(out.status.success(), "{}", show("apply pod", &out));
        let status = serde_json::json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}});
        k.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    };
    pod(
        POD,
        NODE,
        &[("shell", "minik/busybox:1.0"), ("web", "minik/echo:1.0")],
    );

    // A pod whose container isn't there.
    pod("ghost", NODE, &[("c", "minik/busybox:1.0")]);

    for version in ["1.27", "1.32", "1.33"] {
        let k = Kubectl {
            lab: &lab,
            version,
            path: kubectl_path(version),
        };
        check_logs(&k);
        check_exec(&k);
        check_attach(&k);
        check_port_forward(&k);
        // The kubelet's 404 comes back through the API server as the failed upgrade's answer.
        let out = k.run(&["exec", "ghost", "--", "true"]);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains(r#"container not found ("c")"#),
            "{}",
            show(
                &format!("kubectl {version} exec in a missing container"),
                &out
            )
        );
        let out = k.run(&["logs", "ghost"]);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(r#"container "c" in pod "ghost" is waiting to start: ContainerCreating"#),
            "{}",
            show(
                &format!("kubectl {version} logs of a missing container"),
                &out
            )
        );
    }

    // A kubelet that can't be reached.
    let k = Kubectl {
        lab: &lab,
        version: "1.33",
        path: kubectl_path("1.33"),
    };
    let closed = free_port();
    register("stream-down", closed);
    pod("orphan", "stream-down", &[("c", "minik/busybox:1.0")]);
    let out = k.run(&["logs", "orphan"]);
    let want = format!(
        "Error from server: Get \"https://127.0.0.1:{closed}/containerLogs/default/orphan/c\": \
         dial tcp 127.0.0.1:{closed}: connect: connection refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want),
        "{}",
        show("logs from an unreachable kubelet", &out)
    );
    let out = k.run(&["exec", "orphan", "--", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "error dialing backend: dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )),
        "{}",
        show("exec through an unreachable kubelet", &out)
    );

    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
    drop(objs);
}

fn check_logs(k: &Kubectl<'_>) {
    let v = k.version;
    let out = k.ok(&["logs", POD, "-c", "shell"]);
    assert!(
        out.starts_with("line-one\nline-two\ntick-0\n"),
        "kubectl {v} logs: {out}"
    );
    let out = k.ok(&["logs", POD, "-c", "shell", "--tail=1"]);
    assert_eq!(out.lines().count(), 1, "kubectl {v} logs --tail=1: {out}");
    assert!(out.starts_with("tick-"), "kubectl {v} logs --tail=1: {out}");
    let out = k.ok(&["logs", POD, "-c", "shell", "--timestamps", "--tail=2"]);
    for line in out.lines() {
        let (ts, _) = line.split_once(' ').unwrap_or(("", ""));
        assert!(
            ts.len() > 20 && ts.ends_with('Z') && ts.contains('T'),
            "kubectl {v} logs --timestamps: {out}"
        );
    }
    let out = k.ok(&["logs", POD, "-c", "shell", "--previous"]);
    assert_eq!(
        out, "from-the-previous-attempt\n",
        "kubectl {v} logs --previous"
    );
    let out = k.ok(&["logs", POD, "-c", "shell", "--limit-bytes=6"]);
    assert_eq!(out, "line-o", "kubectl {v} logs --limit-bytes=6");
    // -f: new lines arrive while it runs.
    let mut child = k
        .cmd(30, &["logs", "-f", POD, "-c", "shell", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let second = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let n = |l: &str| l.strip_prefix("tick-").and_then(|n| n.parse::<u64>().ok());
    assert!(
        matches!((n(&first), n(&second)), (Some(a), Some(b)) if b == a + 1),
        "kubectl {v} logs -f: {first:?} then {second:?}"
    );
}

fn check_exec(k: &Kubectl<'_>) {
    let v = k.version;
    let out = k.run(&[
        "exec",
        POD,
        "-c",
        "shell",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        show(&format!("kubectl {v} exec exit 3"), &out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "kubectl {v}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "{}",
        show(&format!("kubectl {v} exec stderr"), &out)
    );
    let out = k.ok(&["exec", POD, "-c", "shell", "--", "sh", "-c", "echo fine"]);
    assert_eq!(out, "fine\n", "kubectl {v} exec");
    // stdin piped in; its end ends the command.
    let out = k.run_with_stdin(
        &[
            "exec",
            "-i",
            POD,
            "-c",
            "shell",
            "--",
            "sh",
            "-c",
            "wc -l; cat /dev/null",
        ],
        b"a\nb\nc\n",
    );
    assert!(
        out.status.success(),
        "{}",
        show(&format!("kubectl {v} exec -i"), &out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "kubectl {v} exec -i"
    );
    // -it through a pty: an interactive shell that sees a terminal of the size set by kubectl.
    let script_cmd = format!(
        "stty cols 91 rows 37; {} --context {CTX} exec -it {POD} -c shell -- sh",
        k.path.display()
    );
    let mut child = k
        .lab
        .cmd("timeout")
        .args(["60", "script", "-qec", &script_cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = stdin.write_all(b"[ -t 0 ] && echo is-a-tty; stty size; echo sum-$((40+2)); exit 7\n");
    let _ = stdin.flush();
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    assert!(
        text.contains("is-a-tty") && text.contains("37 91") && text.contains("sum-42"),
        "kubectl {v} exec -it: {text:?}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(7),
        "kubectl {v} exec -it: {text:?}"
    );
}

fn check_attach(k: &Kubectl<'_>) {
    let v = k.version;
    let out = k
        .cmd(4, &["attach", POD, "-c", "shell"])
        .output()
        .expect("attach");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("tick-")),
        "{}",
        show(&format!("kubectl {v} attach"), &out)
    );
}

fn check_port_forward(k: &Kubectl<'_>) {
    let v = k.version;
    let mut child = k
        .cmd(60, &["port-forward", &format!("pod/{POD}"), ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // "Forwarding from 127.0.0.1:40123 -> 8080"
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let local: Option<u16> = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    let Some(local) = local else {
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        panic!(
            "kubectl {v} port-forward said {first:?}; {}",
            show("port-forward", &out)
        );
    };
    let mut responses = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(b"GET /through-the-forward HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        responses.push(resp);
    }
    let _ = child.kill();
    let _ = child.wait();
    for resp in responses {
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.contains("minik-echo"),
            "kubectl {v} port-forward: {resp:?}"
        );
    }
}
