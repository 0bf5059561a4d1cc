//! A gRPC connection to an etcd v3 server (minik's store or a real etcd), with etcd's TLS flags:
//! what the API server (`--etcd-servers`, `--etcd-cafile` …) and `minik etcd backup` use.

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the servers are and how to authenticate to them.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    pub servers: Vec<String>,
    /// CA bundle the servers' certificates are checked against.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Connects to the servers (balanced over all of them when there are several).
pub async fn connect(cfg: &ClientConfig) -> anyhow::Result<Channel> {
    if cfg.servers.is_empty() {
        anyhow::bail!("--etcd-servers: at least one etcd URL is needed");
    }
    let tls = match (&cfg.ca_file, &cfg.cert_file, &cfg.key_file) {
        (None, None, None) => None,
        (ca, cert, key) => {
            let mut t = ClientTlsConfig::new();
            if let Some(ca) = ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading --etcd-cafile {}", ca.display()))?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            match (cert, key) {
                (Some(c), Some(k)) => {
                    let cert = std::fs::read(c)
                        .with_context(|| format!("reading --etcd-certfile {}", c.display()))?;
                    let key = std::fs::read(k)
                        .with_context(|| format!("reading --etcd-keyfile {}", k.display()))?;
                    t = t.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile go together"),
            }
            Some(t)
        }
    };
    let mut endpoints = Vec::new();
    for url in &cfg.servers {
        let mut ep = Endpoint::from_shared(url.clone())
            .with_context(|| format!("--etcd-servers: {url:?} is not a URL"))?
            .tcp_nodelay(true);
        if let Some(t) = &tls {
            ep = ep.tls_config(t.clone())?;
        }
        endpoints.push(ep);
    }
    if endpoints.len() == 1 {
        let ep = endpoints.remove(0);
        ep.connect()
            .await
            .with_context(|| format!("connecting to etcd at {}", cfg.servers[0]))
    } else {
        Ok(Channel::balance_list(endpoints.into_iter()))
    }
}
