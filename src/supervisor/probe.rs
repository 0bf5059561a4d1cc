//! Probes, as the kubelet runs them: `httpGet` (HTTP or HTTPS, certificate not checked, any
//! status from 200 to 399 is a success), `tcpSocket` (a connection is a success) and `exec`
//! (exit code 0), each bounded by the probe's `timeoutSeconds`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Runs one probe; `Err` says why it failed.
pub async fn run(probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).clamp(1, 3600) as u64);
    match tokio::time::timeout(timeout, attempt(probe)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {}s", timeout.as_secs())),
    }
}

fn port_of(port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(s) => s
            .parse()
            .map_err(|_| format!("named port {s:?} is not supported for a local process")),
    }
}

async fn attempt(probe: &Probe) -> Result<(), String> {
    if let Some(h) = &probe.http_get {
        let host = h.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = port_of(&h.port)?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let https = h.scheme.as_deref() == Some("HTTPS");
        let (status, _) = http_get(&host, port, &path, https).await?;
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = port_of(&t.port)?;
        return TcpStream::connect((host.as_str(), port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let Some((prog, args)) = cmd.split_first() else {
            return Err("exec probe without a command".into());
        };
        let status = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("{prog}: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("command {cmd:?} exited with {status}"))
        };
    }
    Err("the probe has no handler (httpGet, tcpSocket or exec)".into())
}

fn scheme(https: bool) -> &'static str {
    if https { "https" } else { "http" }
}

/// `GET path` over HTTP or HTTPS (any server certificate accepted, as the kubelet's probes
/// do): the status code and the body. Also what `minik scheduler why` reads debug pages with.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    https: bool,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{}://{host}:{port}{path}\": {e}", scheme(https)))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let response = if https {
        let connector =
            tokio_rustls::TlsConnector::from(crate::component_base::tls::insecure_client()?);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        exchange(&mut tls, &request).await?
    } else {
        let mut tcp = tcp;
        exchange(&mut tcp, &request).await?
    };
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_string())?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sends the request and reads the response until the server closes (at most 16 MiB).
async fn exchange<S>(stream: &mut S, request: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify: what was read is the answer.
            Err(_) if !buf.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() > 16 << 20 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut code = 200;
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
                code = 500;
            }
        });
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(port.into()),
            }),
            ..Default::default()
        };
        assert_eq!(run(&tcp).await, Ok(()));
        let http = Probe {
            http_get: Some(HTTPGetAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(port.into()),
                path: Some("/readyz".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The tcp probe's connection took the 200; this one gets the 500.
        assert_eq!(
            run(&http).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        let closed = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(1),
            }),
            ..Default::default()
        };
        assert!(
            run(&closed)
                .await
                .unwrap_err()
                .starts_with("dial tcp 127.0.0.1:1")
        );
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["false".into()]),
            }),
            ..Default::default()
        };
        assert!(run(&exec).await.is_err());
    }
}
