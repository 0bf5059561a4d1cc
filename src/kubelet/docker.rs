//! The connection to the local Docker engine.
//!
//! [`Engine::connect`] reads `DOCKER_HOST` (`unix://…`, `tcp://…` or `http://…`; the default is
//! `unix:///var/run/docker.sock`, as the docker CLI's), asks the engine for its version and
//! negotiates the API version down to what the engine speaks: bollard defaults to the newest API
//! it knows, and an older engine (API 1.41 here, Docker 20.10) refuses requests above its own
//! version. An engine that can't be reached gives one clear error naming the address, the cause
//! and what to check.
//!
//! A caveat of bollard 0.21: its URL builder joins the request path onto `/vX.Y` as an absolute
//! path, which drops the version prefix, so requests go out unversioned (`/images/json`) and the
//! engine answers at its own API version. The negotiated version ([`Engine::api_version`]) is
//! still what minik checks against [`MIN_API_VERSION`] and what later code should consult before
//! using a newer API feature.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::SystemVersion;

/// Where the engine is looked for when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The oldest engine API minik talks to (Docker 20.10).
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// How long connecting and the version handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Requests other than the handshake (builds, loads) may take this long (seconds).
const REQUEST_TIMEOUT_SECS: u64 = 600;

/// The address of the engine: `DOCKER_HOST` when set (and not empty), else [`DEFAULT_HOST`].
pub fn host() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ => DEFAULT_HOST.to_string(),
    }
}

/// A connected Docker engine with a negotiated API version.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The bollard client, speaking the negotiated API version.
    pub docker: Docker,
    /// The address it was reached at (`unix:///var/run/docker.sock`, `tcp://…`).
    pub host: String,
    /// The engine's own version report (`docker version`'s Server part).
    pub version: SystemVersion,
}

impl Engine {
    /// Connects to the engine at [`host()`] and negotiates the API version.
    pub async fn connect() -> anyhow::Result<Engine> {
        Engine::connect_to(&host()).await
    }

    /// Connects to the engine at `host` and negotiates the API version.
    pub async fn connect_to(host: &str) -> anyhow::Result<Engine> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Engine::handshake(host)).await {
            Ok(Ok(engine)) => Ok(engine),
            Ok(Err(e)) => Err(unreachable(host, &format!("{e:#}"))),
            Err(_) => Err(unreachable(
                host,
                &format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn handshake(host: &str) -> anyhow::Result<Engine> {
        let docker = open(host)?;
        let docker = docker.negotiate_version().await?;
        let version = docker.version().await?;
        let api = docker.client_version();
        if (api.major_version, api.minor_version) < MIN_API_VERSION {
            bail!(
                "the engine speaks Docker API {api}, older than {}.{} (Docker 20.10), the oldest \
                 minik supports",
                MIN_API_VERSION.0,
                MIN_API_VERSION.1
            );
        }
        tracing::debug!(
            host,
            api = %api,
            engine = version.version.as_deref().unwrap_or("unknown"),
            "connected to the Docker engine"
        );
        Ok(Engine {
            docker,
            host: host.to_string(),
            version,
        })
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub fn engine_version(&self) -> &str {
        self.version.version.as_deref().unwrap_or("unknown")
    }
}

/// A client for `host` (nothing is sent yet).
fn open(host: &str) -> anyhow::Result<Docker> {
    use bollard::API_DEFAULT_VERSION;
    if let Some(path) = host.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            bail!("{path} does not exist");
        }
        return Ok(Docker::connect_with_unix(
            host,
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )?);
    }
    if host.starts_with("tcp://") || host.starts_with("http://") {
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
            bail!("DOCKER_TLS_VERIFY is set, but minik talks to Docker without TLS");
        }
        return Ok(Docker::connect_with_http(
            host,
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )?);
    }
    bail!("unsupported DOCKER_HOST {host:?} (use unix:///path/to/docker.sock or tcp://host:port)")
}

fn unreachable(host: &str, cause: &str) -> anyhow::Error {
    anyhow::anyhow!("cannot reach the Docker engine at {host}: {cause}; is Docker running?")
}

/// Whether a bollard error is the engine's 404 (no such image, container, …).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's message for an error (without bollard's wrapping), for user-facing text.
pub fn message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Runs `f` with a connected engine on a small current-thread runtime (for CLI verbs).
pub fn with_engine<T>(f: impl AsyncFnOnce(&Engine) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let engine = Engine::connect().await?;
        f(&engine).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_socket_is_a_clear_error() {
        let err = Engine::connect_to("unix:///nonexistent/minik-test/docker.sock")
            .await
            .expect_err("no engine there");
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(
                "cannot reach the Docker engine at unix:///nonexistent/minik-test/docker.sock: "
            ) && msg.ends_with("; is Docker running?"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_closed_tcp_port_is_a_clear_error() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let host = format!("tcp://127.0.0.1:{port}");
        let err = Engine::connect_to(&host)
            .await
            .expect_err("no engine there");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("cannot reach the Docker engine at {host}: ")),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_hosts_are_refused() {
        let err = open("ssh://somewhere").expect_err("ssh is not supported");
        assert!(err.to_string().contains("unsupported DOCKER_HOST"), "{err}");
    }
}
