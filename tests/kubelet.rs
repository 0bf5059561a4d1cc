//! The kubelet with the real Docker engine, driven through `minik up --nodes N` and the real
//! kubectl: the examples' pods run with IPs the host reaches (curl to the echo server), a
//! crash-looping container restarts with a growing back-off, a memory hog is OOMKilled, a
//! missing image gives ErrImagePull then ImagePullBackOff with Docker's reason while the other
//! pods run on; a kubelet killed with SIGKILL adopts its 20 running pods (no duplicate, no
//! restart); a stopped node goes NotReady and its pods are recreated on the other nodes; and
//! nothing of the cluster (containers, network) is left after `minik delete`.

mod lab;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn ctx(profile: &str) -> String {
    format!("minik-{profile}")
}

fn json(lab: &Lab, profile: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = lab.kubectl(&ctx(profile), &a);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn apply(lab: &Lab, profile: &str, name: &str, yaml: &str) {
    let path = lab.home.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    lab.kubectl_ok(&ctx(profile), &["apply", "-f", path.to_str().unwrap()]);
}

fn up(lab: &Lab, profile: &str, config: &str) {
    // The images the pods use (`minik image build` is idempotent and locked).
    lab.ok(&["image", "build"]);
    lab.up_with_config(profile, config, "90s");
}

/// The profile's pod network (recorded in its config by `up`).
fn network(lab: &Lab, profile: &str) -> String {
    let text = std::fs::read_to_string(lab.profile_dir(profile).join("config.yaml")).unwrap();
    let cfg: Value = serde_yaml::from_str(&text).unwrap();
    cfg["networking"]["podNetwork"]
        .as_str()
        .unwrap_or_else(|| panic!("no podNetwork in {text}"))
        .to_string()
}

/// `docker ps -a` of the cluster's containers: (name, status).
fn containers(net: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=minik.dev/cluster={net}"),
            "--format",
            "{{.Names}}\t{{.Status}}",
        ])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn network_exists(net: &str) -> bool {
    std::process::Command::new("docker")
        .args(["network", "inspect", net])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn pod(lab: &Lab, profile: &str, name: &str) -> Value {
    json(lab, profile, &["get", "pod", name])
}

fn waiting_reason(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn http_get(ip: &str, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:8080").parse().unwrap(),
        Duration::from_secs(3),
    )
    .expect("connect to the pod IP");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The Docker creation times (seconds, fractional) of a pod's container attempts.
fn attempt_times(net: &str, pod_name: &str) -> Vec<(u32, f64)> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=minik.dev/cluster={net}"),
            "--filter",
            &format!("label=io.kubernetes.pod.name={pod_name}"),
            "--filter",
            "label=io.kubernetes.docker.type=container",
            "-q",
        ])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mut v = Vec::new();
    for id in ids {
        let out = std::process::Command::new("docker")
            .args(["inspect", &id])
            .output()
            .unwrap();
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let c = &info[0];
        let attempt = c["Config"]["Labels"]["io.kubernetes.container.restartCount"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let started: jiff::Timestamp = match c["State"]["StartedAt"].as_str().unwrap_or("").parse()
        {
            Ok(t) => t,
            Err(_) => continue,
        };
        v.push((attempt, started.as_millisecond() as f64 / 1000.0));
    }
    v.sort_by_key(|a| a.0);
    v
}

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: crash
    image: minik/busybox:1.0
    command: [sh, -c, 'echo crashing; exit 1']
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: minik/busybox:1.0
    command: [sh, -c, 'x=0123456789abcdef; while true; do x=$x$x; done']
    resources: {limits: {memory: 24Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: absent}
spec:
  containers:
  - name: absent
    image: minik/absent:1.0
    imagePullPolicy: IfNotPresent
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  containers:
  - name: done
    image: minik/busybox:1.0
    command: [sh, -c, 'echo $GREETING from $POD; exit 0']
    env:
    - {name: WHO, value: world}
    - {name: GREETING, value: 'hello $(WHO)'}
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
";

#[test]
fn pods_run_in_docker_and_report_their_state() {
    let lab = Lab::new();
    let profile = "kl";
    up(
        &lab,
        profile,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 2\n",
    );
    let net = network(&lab, profile);
    lab.wait_for("2 Ready nodes", WAIT, || {
        let nodes = items(&json(&lab, profile, &["get", "nodes"]));
        nodes.len() == 2
            && nodes.iter().all(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
    });
    // The control-plane node is tainted when there are workers, as kind does.
    let cp = json(&lab, profile, &["get", "node", profile]);
    assert_eq!(
        cp["spec"]["taints"][0]["key"], "node-role.kubernetes.io/control-plane",
        "{cp}"
    );

    // The example: three echo pods Running with IPs the host reaches.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/echo.yaml"))
            .unwrap();
    apply(&lab, profile, "echo.yaml", &example);
    apply(&lab, profile, "pods.yaml", PODS);
    let mut running = Vec::new();
    lab.wait_for("3 echo pods Running with IPs", WAIT, || {
        running = items(&json(&lab, profile, &["get", "pods", "-l", "app=echo"]))
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
            .collect();
        running.len() == 3
    });
    for p in &running {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            p["spec"]["nodeName"],
            format!("{profile}-m02"),
            "workers only: {p}"
        );
        let body = http_get(ip, "/hello");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(&format!("pod: {name}")), "{body}");
        assert!(body.contains("path: /hello"), "{body}");
        let cs = &p["status"]["containerStatuses"][0];
        assert!(
            cs["containerID"]
                .as_str()
                .unwrap_or("")
                .starts_with("docker://"),
            "{cs}"
        );
        assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
        assert_eq!(p["status"]["qosClass"], "Burstable");
    }

    // A finished pod: Succeeded, exit 0, its env expanded ($(WHO)) and the downward API.
    lab.wait_for("done Succeeded", WAIT, || {
        pod(&lab, profile, "done")["status"]["phase"] == "Succeeded"
    });
    let done = pod(&lab, profile, "done");
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let out = std::process::Command::new("docker")
        .args([
            "logs",
            &done["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap()["docker://".len()..],
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello world from done"
    );

    // The memory hog: OOMKilled, reported as such.
    lab.wait_for("hog OOMKilled", WAIT, || {
        pod(&lab, profile, "hog")["status"]["containerStatuses"][0]["state"]["terminated"]["reason"]
            == "OOMKilled"
    });
    let hog = pod(&lab, profile, "hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
    assert_eq!(
        hog["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );

    // The absent image: ErrImagePull with Docker's reason (an event, and the status while it
    // lasts), then ImagePullBackOff naming the error behind it.
    lab.wait_for("ImagePullBackOff", WAIT, || {
        let p = pod(&lab, profile, "absent");
        waiting_reason(&p) == "ImagePullBackOff"
    });
    let p = pod(&lab, profile, "absent");
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.starts_with("Back-off pulling image \"minik/absent:1.0\": ErrImagePull: Error response from daemon: "),
        "{msg}"
    );
    let events = lab.kubectl_ok(
        &ctx(profile),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=absent",
            "-o",
            "json",
        ],
    );
    assert!(events.contains("Error: ErrImagePull"), "{events}");
    assert!(
        events.contains(
            "Failed to pull image \\\"minik/absent:1.0\\\": Error response from daemon: "
        ),
        "{events}"
    );

    // The crash loop: restarts with a growing back-off (10 s, then 20 s).
    lab.wait_for("crash restarted 3 times", Duration::from_secs(120), || {
        pod(&lab, profile, "crash")["status"]["containerStatuses"][0]["restartCount"].as_u64()
            >= Some(3)
    });
    let p = pod(&lab, profile, "crash");
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{cs}");
    let times = attempt_times(&net, "crash");
    // The kubelet keeps the newest two attempts.
    assert!(times.len() >= 2, "{times:?}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let last_attempt = times.last().unwrap().0;
    // Attempt n waits 10·2^(n-2) s after attempt n-1 (the first restart is immediate).
    let expected = 10.0 * 2f64.powi(last_attempt as i32 - 2);
    assert!(
        gaps.last().is_some_and(|g| *g >= expected - 1.5),
        "attempt {last_attempt}: gaps {gaps:?}, expected ≥ {expected}s"
    );
    let events = lab.kubectl_ok(
        &ctx(profile),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash,reason=BackOff",
            "-o",
            "json",
        ],
    );
    assert!(
        events.contains("Back-off restarting failed container crash in pod crash_default"),
        "{events}"
    );

    // The echo pods kept running through all of it; deleting pods removes their containers.
    assert_eq!(
        items(&json(&lab, profile, &["get", "pods", "-l", "app=echo"]))
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count(),
        3
    );
    lab.kubectl_ok(
        &ctx(profile),
        &[
            "delete",
            "pod",
            "crash",
            "hog",
            "absent",
            "done",
            "--wait=true",
        ],
    );
    lab.kubectl_ok(
        &ctx(profile),
        &[
            "delete",
            "-f",
            lab.home.path().join("echo.yaml").to_str().unwrap(),
            "--wait=true",
        ],
    );
    lab.wait_for("no pod containers left", WAIT, || {
        containers(&net).is_empty()
    });

    lab.ok(&["delete", "--name", profile]);
    assert!(
        !network_exists(&net),
        "the pod network {net} is left behind"
    );
}

const MANY: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 20
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: pause
        image: registry.k8s.io/pause:3.10
";

#[test]
fn a_killed_kubelet_adopts_its_pods() {
    let lab = Lab::new();
    let profile = "adopt";
    up(
        &lab,
        profile,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 1\n",
    );
    let net = network(&lab, profile);
    apply(&lab, profile, "many.yaml", MANY);
    let snapshot = |lab: &Lab| -> Vec<(String, String, u64)> {
        let mut v: Vec<(String, String, u64)> =
            items(&json(lab, profile, &["get", "pods", "-l", "app=many"]))
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .map(|p| {
                    let cs = &p["status"]["containerStatuses"][0];
                    (
                        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        cs["containerID"].as_str().unwrap_or("").to_string(),
                        cs["restartCount"].as_u64().unwrap_or(99),
                    )
                })
                .collect();
        v.sort();
        v
    };
    let mut before = Vec::new();
    lab.wait_for("20 pods Running", WAIT, || {
        before = snapshot(&lab);
        before.len() == 20
    });
    assert_eq!(
        containers(&net).len(),
        40,
        "a sandbox and a container per pod"
    );
    let component = format!("kubelet-{profile}");
    let pid = lab.component_pid(profile, &component).expect("kubelet pid");
    unsafe {
        lab::libc_kill(pid as i32, 9);
    }
    // The supervisor restarts it; the new kubelet adopts what runs.
    lab.wait_for("a new kubelet", WAIT, || {
        lab.component_pid(profile, &component)
            .is_some_and(|p| p != pid)
    });
    std::thread::sleep(Duration::from_secs(5));
    let after = snapshot(&lab);
    assert_eq!(before, after, "same containers, no restart");
    let all = containers(&net);
    assert_eq!(all.len(), 40, "no duplicates: {all:?}");
    assert!(all.iter().all(|(_, s)| s.starts_with("Up")), "{all:?}");
    // Pods deleted while the kubelet is down are cleaned up when it is back.
    lab.ok(&["node", "stop", profile, "--name", profile]);
    lab.kubectl_ok(&ctx(profile), &["scale", "deploy", "many", "--replicas=0"]);
    lab.ok(&["node", "start", profile, "--name", profile]);
    lab.wait_for("the scaled-down pods' containers removed", WAIT, || {
        containers(&net).is_empty() && items(&json(&lab, profile, &["get", "pods"])).is_empty()
    });
    lab.ok(&["delete", "--name", profile]);
    assert!(!network_exists(&net));
}

const SPREAD: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: echo
        image: minik/echo:1.0
";

#[test]
fn a_stopped_node_goes_not_ready_and_its_pods_move() {
    let lab = Lab::new();
    let profile = "move";
    // The grace period must outlast the kubelet's 10 s heartbeats: a shorter one makes the
    // healthy nodes flap NotReady together, which the node lifecycle controller takes for a
    // disruption of the whole cluster (master disruption mode: no NoExecute taints at all).
    up(
        &lab,
        profile,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 3\nextraArgs:\n  kube-controller-manager: {node-monitor-grace-period: 15s}\n",
    );
    let net = network(&lab, profile);
    apply(&lab, profile, "web.yaml", SPREAD);
    let on = |lab: &Lab, node: &str| -> usize {
        items(&json(lab, profile, &["get", "pods", "-l", "app=web"]))
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"] == node
                    && p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count()
    };
    let m02 = format!("{profile}-m02");
    let m03 = format!("{profile}-m03");
    lab.wait_for("4 web pods Running, some on each worker", WAIT, || {
        let (a, b) = (on(&lab, &m02), on(&lab, &m03));
        a + b == 4 && a > 0 && b > 0
    });
    lab.ok(&["node", "stop", &m02, "--name", profile]);
    lab.wait_for("m02 NotReady", WAIT, || {
        json(&lab, profile, &["get", "node", &m02])["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] != "True")
            })
    });
    // The replacements go to m03 (the control plane is tainted).
    lab.wait_for("4 web pods Running on m03", WAIT, || on(&lab, &m03) == 4);
    lab.ok(&["node", "start", &m02, "--name", profile]);
    lab.wait_for("m02 Ready again", WAIT, || {
        json(&lab, profile, &["get", "node", &m02])["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    });
    // The evicted pods were deleted while m02 was down: its restarted kubelet removes their
    // containers instead of restarting them.
    lab.wait_for("m02's old containers removed", WAIT, || {
        let web_containers = containers(&net)
            .iter()
            .filter(|(name, _)| name.contains("_web-"))
            .count();
        // (each pod: a sandbox and a container)
        items(&json(&lab, profile, &["get", "pods", "-l", "app=web"])).len() == 4
            && web_containers == 2 * (on(&lab, &m02) + on(&lab, &m03))
    });
    lab.ok(&["delete", "--name", profile]);
    assert!(containers(&net).is_empty());
    assert!(!network_exists(&net));
}

/// The real kubectl of a version (`kubectl.1.27` … beside the `kubectl` on PATH).
fn kubectl_of(lab: &Lab, version: &str) -> std::process::Command {
    let kubectl = std::fs::canonicalize(
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("kubectl"))
                    .find(|k| k.exists())
            })
            .expect("kubectl on PATH (it is never skipped)"),
    )
    .unwrap();
    let bin = kubectl.parent().unwrap().join(format!("kubectl.{version}"));
    assert!(bin.exists(), "{} is missing", bin.display());
    lab.cmd(bin.to_str().unwrap())
}

const LIVENESS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: app
    image: minik/busybox:1.0
    command: [sh, -c, 'sleep 3600']
    livenessProbe:
      exec: {command: ['false']}
      periodSeconds: 1
      failureThreshold: 1
";

#[test]
fn exec_logs_port_forward_volumes_and_probes_on_a_real_node() {
    let lab = Lab::new();
    let profile = "kv";
    up(
        &lab,
        profile,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodes: 1\n",
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/pod-probes-volumes.yaml"
    ))
    .unwrap();
    apply(&lab, profile, "lab.yaml", &example);
    apply(&lab, profile, "live.yaml", LIVENESS);
    lab.wait_for("lab Running and Ready (probes pass)", WAIT, || {
        let p = pod(&lab, profile, "lab");
        p["status"]["phase"] == "Running"
            && p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    });
    let ca = std::fs::read_to_string(lab.profile_dir(profile).join("pki/ca.crt")).unwrap();
    for version in ["1.27", "1.33"] {
        let run = |args: &[&str]| {
            let out = kubectl_of(&lab, version)
                .args(["--context", &ctx(profile)])
                .args(args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let cat = |path: &str| {
            let (code, out, err) = run(&["exec", "lab", "-c", "shell", "--", "cat", path]);
            assert_eq!(code, Some(0), "kubectl {version} exec cat {path}: {err}");
            out
        };
        assert_eq!(cat("/etc/lab/config/greeting"), "hello from a configMap");
        assert!(cat("/etc/lab/config/conf/settings.ini").contains("color = blue"));
        assert_eq!(cat("/etc/lab/secret/password"), "not-a-real-password");
        let labels = cat("/etc/podinfo/labels");
        assert!(labels.contains("app=\"lab\""), "{labels}");
        assert_eq!(cat("/etc/podinfo/cpu_limit_millicores"), "100");
        assert_eq!(cat("/var/run/secrets/tokens/namespace"), "default");
        assert_eq!(cat("/var/run/secrets/tokens/ca.crt"), ca);
        assert_eq!(
            cat("/var/run/secrets/tokens/token").split('.').count(),
            3,
            "a JWT"
        );
        assert_eq!(
            cat("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
            "default"
        );
        assert_eq!(
            cat("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
            ca
        );
        // Exit codes and both output streams.
        let (code, out, err) = run(&[
            "exec",
            "lab",
            "-c",
            "shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        assert_eq!((code, out.as_str()), (Some(3), "out\n"), "{err}");
        assert!(err.contains("err"), "{err}");
        // The container's log (what the init container left in the emptyDir).
        let (code, out, err) = run(&["logs", "lab", "-c", "shell"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out.trim(), "prepared by lab");
        // Port-forward to the echo container, then HTTP through it.
        let mut pf = kubectl_of(&lab, version)
            .args([
                "--context",
                &ctx(profile),
                "port-forward",
                "pod/lab",
                ":8080",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        {
            use std::io::BufRead as _;
            let stdout = pf.stdout.take().unwrap();
            let mut r = std::io::BufReader::new(stdout);
            r.read_line(&mut first).unwrap();
            pf.stdout = Some(r.into_inner());
        }
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let port = first
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("kubectl {version} port-forward said {first:?}"))
            .to_string();
        let body = http_get_at(&format!("127.0.0.1:{port}"), "/through");
        let _ = pf.kill();
        let _ = pf.wait();
        assert!(
            body.contains("pod: lab") && body.contains("path: /through"),
            "{body}"
        );
    }

    // A failing liveness probe restarts the container (Unhealthy, then Killing).
    lab.wait_for("live restarted twice", Duration::from_secs(120), || {
        pod(&lab, profile, "live")["status"]["containerStatuses"][0]["restartCount"].as_u64()
            >= Some(2)
    });
    let ev = lab.kubectl_ok(
        &ctx(profile),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=live",
            "-o",
            "json",
        ],
    );
    assert!(ev.contains("Liveness probe failed"), "{ev}");
    assert!(
        ev.contains("Container app failed liveness probe, will be restarted"),
        "{ev}"
    );
    // A static pod from the node's manifest folder, shown by a mirror pod.
    let net = network(&lab, profile);
    let manifests = lab
        .profile_dir(profile)
        .join("kubelet")
        .join(profile)
        .join("manifests");
    std::fs::write(
        manifests.join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: echo, image: minik/echo:1.0}]\n",
    )
    .unwrap();
    let mirror = format!("web-{profile}");
    let mut first_uid = String::new();
    lab.wait_for("the mirror pod Running with an IP", WAIT, || {
        let p = pod(&lab, profile, &mirror);
        first_uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
    });
    let p = pod(&lab, profile, &mirror);
    assert!(
        p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{p}"
    );
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert!(http_get(&ip, "/static").contains(&format!("pod: {mirror}")));
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    // Deleting the mirror does not stop the static pod: a new mirror, the same container.
    lab.kubectl_ok(&ctx(profile), &["delete", "pod", &mirror, "--wait=false"]);
    lab.wait_for("a new mirror pod", WAIT, || {
        let p = pod(&lab, profile, &mirror);
        let uid = p["metadata"]["uid"].as_str().unwrap_or("");
        !uid.is_empty()
            && uid != first_uid
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["containerStatuses"][0]["containerID"] == id.as_str()
    });
    // Removing the file stops it and removes the mirror.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    lab.wait_for("the static pod gone", Duration::from_secs(60), || {
        lab.kubectl(&ctx(profile), &["get", "pod", &mirror])
            .status
            .code()
            == Some(1)
            && containers(&net).iter().all(|(n, _)| !n.contains(&mirror))
    });
    lab.ok(&["delete", "--name", profile]);
    assert!(containers(&net).is_empty());
}

fn http_get_at(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
