//! `minik etcd serve`: the etcd v3 gRPC services over the store, on plain TCP or (mutual) TLS.
//!
//! - [`kv`]: Range, Put, DeleteRange, Txn, Compact;
//! - [`watch`]: the Watch stream;
//! - [`lease`]: leases, keep-alives and expiry;
//! - [`maintenance`]: Status, Snapshot, Defragment, Alarm, Hash/HashKV and the Cluster service.

pub mod h2fix;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::mvcc::{Store, Writer};
use super::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

/// Certificate files, named as etcd's flags name them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
}

/// How `minik etcd serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    /// The client URLs reported by MemberList.
    pub client_urls: Vec<String>,
    /// The peer URLs reported by MemberList (the store has no peers; etcd's default is shown).
    pub peer_urls: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub watch_progress_interval: Duration,
}

/// Every etcd service, sharing one store and one writer.
#[derive(Clone)]
pub struct EtcdService {
    pub(crate) store: Arc<Store>,
    pub(crate) writer: Writer,
    pub(crate) config: Arc<ServeConfig>,
}

/// Parses `http://host:port` / `https://host:port` into (tls?, address).
pub fn parse_url(url: &str) -> anyhow::Result<(bool, SocketAddr)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("{url:?}: a client URL must start with http:// or https://");
    };
    let hostport = rest.trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("{url:?}: cannot resolve {hostport:?} (expected host:port)"))?
        .find(|a| a.is_ipv4())
        .or_else(|| hostport.to_socket_addrs().ok().and_then(|mut a| a.next()))
        .with_context(|| format!("{url:?}: no address for {hostport:?}"))?;
    Ok((tls, addr))
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
    };
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&files.cert_file, "--cert-file")?,
        read(&files.key_file, "--key-file")?,
    ));
    if let Some(ca) = &files.trusted_ca_file {
        cfg = cfg
            .client_ca_root(Certificate::from_pem(read(ca, "--trusted-ca-file")?))
            .client_auth_optional(!files.client_cert_auth);
    } else if files.client_cert_auth {
        bail!("--client-cert-auth needs --trusted-ca-file to check client certificates against");
    }
    Ok(cfg)
}

/// Opens the store and serves it until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    tracing::info!(
        revision = store.current(),
        compacted = store.compacted(),
        keys = store.key_count(),
        member_id = format!("{:016x}", store.member_id),
        "store opened"
    );
    let writer = Writer::start(store.clone());
    tokio::spawn(lease::expiry_loop(store.clone(), writer.clone()));
    let svc = EtcdService {
        store,
        writer,
        config: Arc::new(config.clone()),
    };
    serve_grpc(
        &config.listen_client_urls,
        config.tls.as_ref(),
        move |tls| router(svc.clone(), tls),
        shutdown,
    )
    .await
}

/// Serves the gRPC services `make_router` builds on every URL of `urls` until `shutdown`
/// resolves: one thread per CPU ([`serving_threads`]), each with its own single-threaded runtime,
/// router and `SO_REUSEPORT` listener per URL. `make_router` gets the TLS settings of the URL
/// (`None` for `http://`). Prints "ready to serve client requests" once every listener is bound.
pub(crate) async fn serve_grpc<F, Fut>(
    urls: &[String],
    tls_files: Option<&TlsFiles>,
    make_router: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    F: Fn(Option<ServerTlsConfig>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<tonic::transport::server::Router>>,
{
    let mut listeners = Vec::new();
    for url in urls {
        let (tls, addr) = parse_url(url)?;
        if tls && tls_files.is_none() {
            bail!("{url}: https needs --cert-file and --key-file");
        }
        // A plain bind first: it fails if anything (another store sharing the port through
        // SO_REUSEPORT included) is already listening there.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                bail!(
                    "cannot listen on {url}: {}; stop it or pass another --listen-client-urls",
                    crate::cluster::ports::in_use_message(addr.port())
                );
            }
            return Err(e).with_context(|| format!("cannot listen on {addr} ({url})"));
        }
        for _ in 0..serving_threads() {
            let listener = reuseport_listener(addr).with_context(|| {
                format!("cannot listen on {addr} ({url}): is another etcd already using it?")
            })?;
            listeners.push((url.clone(), tls, listener));
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut threads = 0;
    for (i, (url, tls, listener)) in listeners.into_iter().enumerate() {
        let tls_cfg = match (tls_files, tls) {
            (Some(files), true) => Some(tls_config(files)?),
            _ => None,
        };
        let (make_router, mut stop, done) = (make_router.clone(), stop_rx.clone(), done_tx.clone());
        if i % serving_threads() == 0 {
            tracing::info!("serving client requests on {url}");
        }
        threads += 1;
        std::thread::Builder::new()
            .name(format!("etcd-grpc-{i}"))
            .spawn(move || {
                let result = (|| -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        listener.set_nonblocking(true)?;
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        // Plaintext connections go through h2fix, which repairs etcdctl's
                        // `http://` authorities.
                        let incoming = tokio_stream::StreamExt::map(
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            move |conn| conn.map(|io| h2fix::H2Fix::new(io, !tls)),
                        );
                        make_router(tls_cfg)
                            .await?
                            .serve_with_incoming_shutdown(incoming, async move {
                                let _ = stop.wait_for(|s| *s).await;
                            })
                            .await
                            .with_context(|| format!("serving {url}"))
                    })
                })();
                let _ = done.send(result);
            })?;
    }
    drop(done_tx);
    println!("ready to serve client requests");
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        }
        Some(res) = done_rx.recv() => {
            threads -= 1;
            res?;
        }
    }
    while threads > 0 {
        match done_rx.recv().await {
            Some(res) => {
                threads -= 1;
                res?;
            }
            None => break,
        }
    }
    Ok(())
}

/// How many threads serve gRPC: one per CPU, each a single-threaded runtime with its own
/// `SO_REUSEPORT` listener, so a connection's request and response stay on one thread (fewer
/// wake-ups and fewer, larger socket writes than a work-stealing pool).
fn serving_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The gRPC server settings of every serving thread.
pub(crate) fn server_builder() -> Server {
    Server::builder()
        .max_concurrent_streams(u32::MAX)
        .http2_keepalive_interval(Some(Duration::from_secs(120)))
}

/// The gRPC services of one serving thread.
async fn router(
    svc: EtcdService,
    tls: Option<ServerTlsConfig>,
) -> anyhow::Result<tonic::transport::server::Router> {
    let mut builder = server_builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // tonic's own limit sits far above etcd's, so that the codec gives etcd's error instead.
    let limit = 64 << 20;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<EtcdService>>().await;
    Ok(builder
        .add_service(health_svc)
        .add_service(
            KvServer::new(svc.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            WatchServer::new(svc.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(LeaseServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(ClusterServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(
            MaintenanceServer::new(svc)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        ))
}
