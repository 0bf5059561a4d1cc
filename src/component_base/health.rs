//! The component's own HTTPS endpoint (`--bind-address`, `--secure-port`): `/healthz`, `/livez`
//! and `/readyz` answer `ok` (what the static-pod probes call), and a component may add debug
//! pages (the scheduler's `/debug/why/NS/POD`). The certificate is self-signed at start, as
//! kube-scheduler and kube-controller-manager make one when none is given.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A debug page: the path → `(status, content type, body)`, or `None` for 404.
pub type Pages = Arc<dyn Fn(&str) -> Option<(StatusCode, &'static str, String)> + Send + Sync>;

/// Serves the endpoint until the process ends. Binding errors are returned at once.
pub async fn serve(bind: &str, port: u16, pages: Pages) -> anyhow::Result<()> {
    let listener = TcpListener::bind((bind, port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                anyhow::anyhow!(
                    "--secure-port: {}",
                    crate::cluster::ports::in_use_message(port)
                )
            }
            _ => anyhow::anyhow!("--secure-port {port}: {e}"),
        })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(self_signed(bind)?));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let pages = pages.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let pages = pages.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(req.uri().path(), &pages))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn answer(path: &str, pages: &Pages) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => (StatusCode::OK, "text/plain", "ok".to_string()),
        p => pages(p).unwrap_or((
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found\n".to_string(),
        )),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn self_signed(bind: &str) -> anyhow::Result<rustls::ServerConfig> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !names.iter().any(|n| n == bind) && bind != "0.0.0.0" {
        names.push(bind.to_string());
    }
    let cert = rcgen::generate_simple_self_signed(names).context("a self-signed certificate")?;
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the self-signed key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
