//! The `proxy` subresources through `minik up` and the real kubectl: an echo pod reached through
//! `pods/proxy` (`kubectl get --raw`, and `kubectl proxy` with plain HTTP from the test: GET,
//! POST with a body, the redirect of `…/proxy` to `…/proxy/`), a service through
//! `services/proxy` by port name and by port number, the node's kubelet through `nodes/proxy`
//! (`/healthz`, `/pods`), RBAC on `pods/proxy`, and kube-apiserver's errors: a service without
//! endpoints (503), a missing pod (404), a missing service (404), a pod without an IP
//! (400 `address not allowed`), a port that is not a number (400), a port nothing listens on
//! (503 `error trying to reach service`). `minik delete` (the lab's drop) leaves no container.

mod lab;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const PROFILE: &str = "proxy";
const WAIT: Duration = Duration::from_secs(90);

const OBJECTS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
    - name: echo
      image: minik/echo:1.0
      imagePullPolicy: IfNotPresent
      ports:
        - name: http
          containerPort: 8080
      readinessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: lonely
spec:
  selector:
    app: nobody
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: stuck
spec:
  nodeSelector:
    no-such-node: \"true\"
  containers:
    - name: echo
      image: minik/echo:1.0
      imagePullPolicy: IfNotPresent
";

fn ctx() -> String {
    format!("minik-{PROFILE}")
}

fn json(lab: &Lab, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = lab.kubectl(&ctx(), &a);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `kubectl get --raw PATH`: (success, stdout, stderr).
fn raw(lab: &Lab, path: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["get", "--raw", path];
    args.extend(extra);
    let out = lab.kubectl(&ctx(), &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl proxy --port=0`, killed on drop.
struct KubectlProxy {
    child: Child,
    port: u16,
}

impl KubectlProxy {
    fn start(lab: &Lab) -> KubectlProxy {
        let mut child = lab
            .cmd("kubectl")
            .args(["--context", &ctx(), "proxy", "--port=0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl proxy");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("kubectl proxy's first line");
        // "Starting to serve on 127.0.0.1:41234"
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        KubectlProxy { child, port }
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo server's JSON answer.
fn echo(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (chunked answers decoded).
fn http(port: u16, method: &str, path: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to kubectl proxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Test: yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

#[test]
fn pods_services_and_nodes_are_reached_through_the_proxy_subresources() {
    let lab = Lab::new();
    lab.ok(&["image", "build", "echo"]);
    lab.up(PROFILE);
    let objects = lab.home.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    lab.kubectl_ok(&ctx(), &["apply", "-f", objects.to_str().unwrap()]);
    lab.wait_for("web Ready with an IP", WAIT, || {
        let p = json(&lab, &["get", "pod", "web"]);
        p["status"]["podIP"].is_string()
            && p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    });
    lab.wait_for("the endpoints of web", WAIT, || {
        json(&lab, &["get", "endpoints", "web"])["subsets"][0]["addresses"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let pod_ip = json(&lab, &["get", "pod", "web"])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // pods/proxy with `kubectl get --raw` (which asks for JSON, so the echo server answers
    // JSON): the method, path and query reach the pod.
    let (ok, out, err) = raw(
        &lab,
        "/api/v1/namespaces/default/pods/web:8080/proxy/hello/there?x=1&y=two",
        &[],
    );
    assert!(ok, "{err}");
    let e = echo(&out);
    assert_eq!(e["pod"], "web", "{out}");
    assert_eq!(e["method"], "GET", "{out}");
    assert_eq!(e["path"], "/hello/there", "{out}");
    assert_eq!(e["query"], "x=1&y=two", "{out}");
    // kube-apiserver's forwarding headers; the caller's credentials stay behind.
    let h = &e["headers"];
    assert_eq!(
        h["x-forwarded-uri"], "/api/v1/namespaces/default/pods/web:8080/proxy/hello/there",
        "{out}"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{out}");
    assert!(
        h["user-agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("kubectl/")),
        "{out}"
    );
    assert!(h.get("authorization").is_none(), "{out}");
    // No port: the first container port; the scheme form too.
    let (ok, out, err) = raw(&lab, "/api/v1/namespaces/default/pods/web/proxy/", &[]);
    assert!(ok && echo(&out)["path"] == "/", "{out}{err}");
    let (ok, out, err) = raw(
        &lab,
        "/api/v1/namespaces/default/pods/http:web:8080/proxy/s",
        &[],
    );
    assert!(ok && echo(&out)["path"] == "/s", "{out}{err}");

    // services/proxy by port name and by port number: the pod behind the service answers.
    let (ok, out, err) = raw(
        &lab,
        "/api/v1/namespaces/default/services/web:http/proxy/via-service",
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(echo(&out)["pod"], "web", "{out}");
    assert_eq!(echo(&out)["path"], "/via-service", "{out}");
    let (ok, out, err) = raw(
        &lab,
        "/api/v1/namespaces/default/services/web:80/proxy/by-number",
        &[],
    );
    assert!(ok && echo(&out)["path"] == "/by-number", "{out}{err}");
    // No port means the port named "" — web's is named http.
    let (ok, _, err) = raw(&lab, "/api/v1/namespaces/default/services/web/proxy/", &[]);
    assert!(!ok, "no port named \"\"");
    assert!(
        err.contains("(ServiceUnavailable): no endpoints available for service \"web\""),
        "{err}"
    );

    // nodes/proxy: the kubelet's /healthz and /pods, through its HTTPS port.
    let (ok, out, err) = raw(&lab, &format!("/api/v1/nodes/{PROFILE}/proxy/healthz"), &[]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ok");
    let (ok, out, err) = raw(&lab, &format!("/api/v1/nodes/{PROFILE}/proxy/pods"), &[]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    assert_eq!(list["kind"], "PodList", "{out}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"web"), "{names:?}");
    assert!(!names.contains(&"stuck"), "{names:?}");
    // The kubelet's port named explicitly is the same kubelet.
    let node = json(&lab, &["get", "node", PROFILE]);
    let kubelet_port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(0);
    let (ok, out, err) = raw(
        &lab,
        &format!("/api/v1/nodes/{PROFILE}:{kubelet_port}/proxy/healthz"),
        &[],
    );
    assert!(ok && out.trim() == "ok", "{out}{err}");

    // The errors of kube-apiserver, as kubectl prints them.
    let cases: &[(&str, &str)] = &[
        (
            "/api/v1/namespaces/default/services/lonely/proxy/",
            "Error from server (ServiceUnavailable): no endpoints available for service \"lonely\"",
        ),
        (
            "/api/v1/namespaces/default/pods/nope:8080/proxy/",
            "Error from server (NotFound): pods \"nope\" not found",
        ),
        (
            "/api/v1/namespaces/default/services/nope:80/proxy/",
            "Error from server (NotFound): services \"nope\" not found",
        ),
        (
            "/api/v1/namespaces/default/services/nope:http/proxy/",
            "Error from server (NotFound): endpoints \"nope\" not found",
        ),
        (
            "/api/v1/namespaces/default/services/web:81/proxy/",
            "Error from server (ServiceUnavailable): no service port 81 found for service \"web\"",
        ),
        (
            "/api/v1/namespaces/default/pods/stuck/proxy/",
            "Error from server (BadRequest): address not allowed",
        ),
        (
            "/api/v1/namespaces/default/pods/web:http/proxy/",
            "Error from server (BadRequest): invalid pod request \"web:http\"",
        ),
        (
            "/api/v1/namespaces/default/pods/ftp:web:21/proxy/",
            "Error from server (BadRequest): invalid pod request \"ftp:web:21\"",
        ),
        (
            "/api/v1/nodes/no-such-node/proxy/healthz",
            "Error from server (NotFound): nodes \"no-such-node\" not found",
        ),
    ];
    for (path, want) in cases {
        let (ok, out, err) = raw(&lab, path, &[]);
        assert!(!ok, "{path}: {out}");
        assert!(err.contains(want), "{path}: {err}");
    }
    let (ok, _, err) = raw(&lab, "/api/v1/namespaces/default/pods/web:9/proxy/", &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "(ServiceUnavailable): error trying to reach service: dial tcp {pod_ip}:9: connect: connection refused"
        )),
        "{err}"
    );

    // RBAC: pods/proxy is its own resource.
    let (ok, _, err) = raw(
        &lab,
        "/api/v1/namespaces/default/pods/web:8080/proxy/",
        &["--as", "viewer"],
    );
    assert!(!ok);
    assert!(
        err.contains("(Forbidden)")
            && err.contains("User \"viewer\" cannot get resource \"pods/proxy\""),
        "{err}"
    );
    lab.kubectl_ok(
        &ctx(),
        &[
            "create",
            "role",
            "pod-proxy",
            "--verb=get",
            "--resource=pods/proxy",
        ],
    );
    lab.kubectl_ok(
        &ctx(),
        &[
            "create",
            "rolebinding",
            "pod-proxy",
            "--role=pod-proxy",
            "--user=viewer",
        ],
    );
    lab.wait_for("viewer may get pods/proxy", WAIT, || {
        raw(
            &lab,
            "/api/v1/namespaces/default/pods/web:8080/proxy/as-viewer",
            &["--as", "viewer"],
        )
        .1
        .contains("\"path\":\"/as-viewer\"")
    });
    // … but not services/proxy, nor create on pods/proxy.
    let (ok, _, err) = raw(
        &lab,
        "/api/v1/namespaces/default/services/web:http/proxy/",
        &["--as", "viewer"],
    );
    assert!(
        !ok && err.contains("cannot get resource \"services/proxy\""),
        "{err}"
    );

    // `kubectl proxy`, then plain HTTP from here.
    let proxy = KubectlProxy::start(&lab);
    let a = http(
        proxy.port,
        "GET",
        "/api/v1/namespaces/default/pods/web:8080/proxy/",
        "",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("pod: web") && a.body.contains("path: /\n"),
        "{}",
        a.body
    );
    assert!(
        a.body.to_ascii_lowercase().contains("x-test: yes"),
        "{}",
        a.body
    );
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    // A body goes through, with the method.
    let a = http(
        proxy.port,
        "POST",
        "/api/v1/namespaces/default/services/web:http/proxy/submit?k=v",
        "hello, echo",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    for want in [
        "method: POST",
        "path: /submit",
        "query: k=v",
        "body: 11 bytes",
    ] {
        assert!(a.body.contains(want), "{want}: {}", a.body);
    }
    let a = http(
        proxy.port,
        "DELETE",
        "/api/v1/namespaces/default/pods/web:8080/proxy/thing",
        "",
    );
    assert!(
        a.status == 200 && a.body.contains("method: DELETE"),
        "{}",
        a.body
    );
    // `…/proxy` without the slash: a redirect to `…/proxy/`, query kept.
    let a = http(
        proxy.port,
        "GET",
        "/api/v1/namespaces/default/pods/web:8080/proxy?a=b",
        "",
    );
    assert_eq!(a.status, 301, "{}", a.body);
    assert_eq!(
        a.header("location"),
        Some("/api/v1/namespaces/default/pods/web:8080/proxy/?a=b")
    );
    // Errors are Status objects with their codes.
    let a = http(
        proxy.port,
        "GET",
        "/api/v1/namespaces/default/services/lonely:http/proxy/",
        "",
    );
    assert_eq!(a.status, 503, "{}", a.body);
    let st = a.status_json();
    assert_eq!(st["reason"], "ServiceUnavailable", "{st}");
    assert_eq!(
        st["message"], "no endpoints available for service \"lonely\"",
        "{st}"
    );
    let a = http(
        proxy.port,
        "GET",
        "/api/v1/namespaces/default/pods/nope/proxy/",
        "",
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.status_json()["details"]["kind"], "pods", "{}", a.body);
    let a = http(
        proxy.port,
        "GET",
        &format!("/api/v1/nodes/{PROFILE}/proxy/pods"),
        "",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"PodList\""), "{}", a.body);
    drop(proxy);

    // Nothing of the cluster is left once it is deleted.
    let net = {
        let text = std::fs::read_to_string(lab.profile_dir(PROFILE).join("config.yaml"))
            .unwrap_or_default();
        let cfg: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
        cfg["networking"]["podNetwork"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(!net.is_empty(), "the profile's pod network");
    lab.ok(&["delete", "--name", PROFILE]);
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=minik.dev/cluster={net}"),
        ])
        .output()
        .expect("docker CLI");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
