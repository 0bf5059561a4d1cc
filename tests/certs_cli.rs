//! `minik certs` makes a PKI the API server starts with and an admin kubeconfig the real
//! kubectl uses unmodified.

mod apiserver_util;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn certs_start_an_api_server_kubectl_can_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    let store = common::Server::minik(None);
    let port = common::free_port();
    let server = format!("https://127.0.0.1:{port}");
    let out = Command::new(common::minik_bin())
        .args(["certs", "--dir"])
        .arg(&pki)
        .args(["--server", &server])
        .output()
        .expect("minik certs");
    assert!(out.status.success(), "minik certs: {out:?}");
    // A second run on the same folder refuses to overwrite the CA.
    let again = Command::new(common::minik_bin())
        .args(["certs", "--dir"])
        .arg(&pki)
        .output()
        .expect("minik certs again");
    assert!(
        !again.status.success(),
        "overwrote an existing PKI: {again:?}"
    );

    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("log");
    let mut apiserver = Command::new(common::minik_bin())
        .args(["apiserver", "--etcd-servers"])
        .arg(format!("http://127.0.0.1:{}", store.port()))
        .args(["--secure-port", &port.to_string()])
        .args(["--tls-cert-file", &p("apiserver.crt")])
        .args(["--tls-private-key-file", &p("apiserver.key")])
        .args(["--client-ca-file", &p("ca.crt")])
        .args(["--service-account-key-file", &p("sa.pub")])
        .args(["--service-account-signing-key-file", &p("sa.key")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start minik apiserver");
    let kubectl = apiserver_util::kubectl_bin("1.33");
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", p("admin.conf")))
            .arg(format!("--cache-dir={}", cache.display()))
            .args(args)
            .env("HOME", dir.path())
            .output()
            .expect("kubectl")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = run(&["get", "ns", "kube-system", "-o", "name"]);
    while !out.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        out = run(&["get", "ns", "kube-system", "-o", "name"]);
    }
    let _ = apiserver.kill();
    let _ = apiserver.wait();
    assert!(
        out.status.success(),
        "kubectl with the generated kubeconfig: {out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/kube-system"
    );
}
