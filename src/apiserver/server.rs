//! `minik apiserver`: where a request enters — HTTPS, authentication by client certificate,
//! and the routing of a path to discovery, health, or a resource handler in [`super::handlers`].
//!
//! A request's path is read the way kube-apiserver reads it: `/api/v1/...` for the core group,
//! `/apis/<group>/<version>/...` for the others, then `[namespaces/<ns>/]<resource>[/<name>[/<sub>]]`;
//! the verb comes from the method and `?watch=true`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;

use super::admission::Allocator;
use super::auth::{Attributes, Decision, Rbac, TokenAuthenticator, TokenIssuer, forbidden_message};
use super::cache::WatchCache;
use super::handlers;
use super::openapi::{self, OpenApi, ServedKind};
use super::resources::{self, Resource};
use super::status::ApiError;
use super::storage::{EtcdConfig, EtcdStorage};

/// The largest request body accepted (kube-apiserver's 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// How `minik apiserver` runs (kube-apiserver's flag names).
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    pub etcd: EtcdConfig,
    pub bind_address: String,
    pub secure_port: u16,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: PathBuf,
    /// `--service-cluster-ip-range` (10.96.0.0/12).
    pub service_cluster_ip_range: String,
    /// `--service-node-port-range` (30000-32767).
    pub service_node_port_range: String,
    /// `--service-account-key-file`: keys that verify service-account tokens.
    pub service_account_key_files: Vec<PathBuf>,
    /// `--service-account-signing-key-file`: the key new tokens are signed with.
    pub service_account_signing_key_file: Option<PathBuf>,
    /// `--service-account-issuer`: the first is written into new tokens, all are accepted.
    pub service_account_issuers: Vec<String>,
    /// `--kubelet-client-certificate`, `--kubelet-client-key`, `--kubelet-certificate-authority`:
    /// how logs/exec/attach/port-forward reach kubelets (all three, or none: then they can't).
    pub kubelet_client: Option<KubeletClientFiles>,
}

/// The files of the API server's kubelet client identity.
#[derive(Debug, Clone)]
pub struct KubeletClientFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub certificate_authority: PathBuf,
}

pub use super::auth::User;

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// What every handler shares.
pub(super) struct Ctx {
    pub storage: EtcdStorage,
    /// host:port clients reach the server on.
    pub address: String,
    pub secure_port: u16,
    pub allocator: Allocator,
    /// Held across the read and write of a service allocation.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// Held while the ResourceQuota admission plugin checks and charges a namespace's quotas.
    pub quota_lock: tokio::sync::Mutex<()>,
    /// Lists and watches are served from here.
    pub cache: Arc<WatchCache>,
    /// `/openapi/v2` and `/openapi/v3`, built once; its definitions also drive strategic merge
    /// patches.
    pub openapi: OpenApi,
    /// (group, kind) → OpenAPI definition name (`io.k8s.api.apps.v1.Deployment`).
    pub definition_names: HashMap<(String, String), String>,
    /// The RBAC authorizer, fed from the stored roles and bindings.
    pub rbac: Rbac,
    /// Verifies service-account bearer tokens.
    pub tokens: Option<TokenAuthenticator>,
    /// Signs new service-account tokens (TokenRequest).
    pub issuer: Option<TokenIssuer>,
    /// TLS to kubelets (logs, exec, attach, port-forward).
    pub kubelet: Option<super::kubelet_proxy::KubeletClient>,
}

impl Ctx {
    /// The OpenAPI definition of a served kind.
    pub fn definition_of(&self, r: &Resource) -> Option<&str> {
        self.definition_names
            .get(&(r.group.to_string(), r.kind.to_string()))
            .map(String::as_str)
    }
}

/// The OpenAPI documents of everything in [`resources::RESOURCES`].
fn build_openapi() -> (OpenApi, HashMap<(String, String), String>) {
    let kinds: Vec<ServedKind> = resources::RESOURCES
        .iter()
        .map(|r| ServedKind {
            group: r.group,
            version: r.version,
            kind: r.kind,
            plural: r.name,
            namespaced: r.namespaced,
            subresources: r.subresources,
        })
        .collect();
    let api = OpenApi::build(&kinds);
    let mut names = HashMap::new();
    for (name, def) in api.definitions() {
        for gvk in def["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let group = gvk["group"].as_str().unwrap_or("").to_string();
            let kind = gvk["kind"].as_str().unwrap_or("").to_string();
            if resources::by_kind(&group, &kind).is_some() {
                names.insert((group, kind), name.clone());
            }
        }
    }
    (api, names)
}

fn tls_acceptor(cfg: &ApiServerConfig) -> anyhow::Result<TlsAcceptor> {
    // Requests without a certificate are let through the handshake and answered 401, as
    // kube-apiserver does; a certificate from another CA fails the handshake.
    crate::component_base::tls::serving_acceptor(
        &cfg.tls_cert_file,
        &cfg.tls_private_key_file,
        &cfg.client_ca_file,
        true,
        &[b"h2", b"http/1.1"],
    )
}

fn user_of(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let mut groups: Vec<String> = groups;
    groups.push(super::auth::ALL_AUTHENTICATED.to_string());
    Some(User {
        name,
        groups,
        ..User::default()
    })
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    cfg: ApiServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tls_acceptor(&cfg)?;
    let allocator = Allocator::new(&cfg.service_cluster_ip_range, &cfg.service_node_port_range)
        .map_err(|e| anyhow::anyhow!(e))?;
    let issuers = if cfg.service_account_issuers.is_empty() {
        vec![DEFAULT_ISSUER.to_string()]
    } else {
        cfg.service_account_issuers.clone()
    };
    let tokens = if cfg.service_account_key_files.is_empty() {
        None
    } else {
        Some(
            TokenAuthenticator::from_pem_files(&cfg.service_account_key_files, &issuers, &[])
                .map_err(|e| anyhow::anyhow!("--service-account-key-file: {e}"))?,
        )
    };
    let issuer = match &cfg.service_account_signing_key_file {
        Some(path) => Some(TokenIssuer::from_pem_file(path, &issuers[0]).map_err(|e| {
            anyhow::anyhow!("--service-account-signing-key-file {}: {e}", path.display())
        })?),
        None => None,
    };
    let kubelet = match &cfg.kubelet_client {
        Some(f) => Some(super::kubelet_proxy::KubeletClient::from_files(
            &f.certificate,
            &f.key,
            &f.certificate_authority,
        )?),
        None => None,
    };
    let storage = EtcdStorage::connect(&cfg.etcd).await?;
    let addr: SocketAddr = format!("{}:{}", cfg.bind_address, cfg.secure_port)
        .parse()
        .with_context(|| format!("--bind-address {:?} is not an IP address", cfg.bind_address))?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {addr}: {}; stop it or pass another --secure-port",
            crate::cluster::ports::in_use_message(addr.port())
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
    };
    let (openapi, definition_names) = tokio::task::spawn_blocking(build_openapi)
        .await
        .context("building the OpenAPI documents")?;
    let ctx = Arc::new(Ctx {
        rbac: Rbac::new(),
        kubelet,
        tokens,
        issuer,
        cache: WatchCache::new(storage.clone()),
        openapi,
        definition_names,
        storage,
        address: addr.to_string(),
        secure_port: cfg.secure_port,
        allocator,
        alloc_lock: tokio::sync::Mutex::new(()),
        quota_lock: tokio::sync::Mutex::new(()),
    });
    ctx.cache.check_store().await;
    super::bootstrap::run(&ctx)
        .await
        .context("creating the default namespaces and the `kubernetes` service")?;
    let mut stored: Vec<String> = super::resources::RESOURCES
        .iter()
        .filter(|r| r.verbs == super::resources::Verbs::All)
        .map(|r| r.key(None, ""))
        .collect();
    stored.sort();
    stored.dedup();
    ctx.cache.warm(stored);
    tracing::info!("serving the Kubernetes API on https://{addr}");
    println!("ready to serve on https://{addr}");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(user_of);
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let (ctx, user) = (ctx.clone(), user.clone());
                // Proxied requests carry it on (`X-Forwarded-For`).
                req.extensions_mut().insert(super::proxy::Peer(peer));
                async move { Ok::<_, Infallible>(handle(&ctx, user.as_ref(), req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

pub(super) fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

pub(super) fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub(super) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

pub(super) fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The media type of aggregated discovery the client asked for (`v2` or `v2beta1`), if any.
fn aggregated_discovery(req: &Request<Incoming>) -> Option<&'static str> {
    let accept = req.headers().get(header::ACCEPT)?.to_str().ok()?;
    // Clients list what they take in order of preference.
    accept.split(',').find_map(|part| {
        let p = part.replace(' ', "");
        if !p.contains("as=APIGroupDiscoveryList") || !p.contains("g=apidiscovery.k8s.io") {
            return None;
        }
        if p.contains("v=v2beta1") {
            Some("v2beta1")
        } else if p.contains("v=v2") {
            Some("v2")
        } else {
            None
        }
    })
}

fn not_found() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

async fn handle(ctx: &Ctx, user: Option<&User>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Health and version are public, as kube-apiserver's system:public-info-viewer makes them.
    match segments.as_slice() {
        [endpoint @ ("healthz" | "livez" | "readyz"), rest @ ..] => {
            let verbose = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "verbose" || p.starts_with("verbose="))
            });
            return health(ctx, endpoint, rest.first().copied(), verbose).await;
        }
        ["version"] => return json_response(StatusCode::OK, &version()),
        _ => {}
    }
    let token_user;
    let user = match user {
        Some(u) => u,
        None => match bearer_user(ctx, &req).await {
            Some(u) => {
                token_user = u;
                &token_user
            }
            None => return error_response(&ApiError::unauthorized()),
        },
    };
    // `kubectl --as`: act as another user, if allowed to impersonate them.
    let impersonated;
    let user = match impersonate(ctx, user, &req) {
        Ok(Some(u)) => {
            impersonated = u;
            &impersonated
        }
        Ok(None) => user,
        Err(e) => return error_response(&e),
    };
    // Discovery and OpenAPI are non-resource paths, authorized as such (system:discovery).
    if matches!(segments.first(), Some(&"openapi"))
        || matches!(
            segments.as_slice(),
            ["api"] | ["apis"] | ["api", "v1"] | ["apis", _] | ["apis", _, _]
        )
    {
        let attrs = Attributes {
            user,
            verb: "get",
            api_group: "",
            resource: "",
            subresource: "",
            namespace: "",
            name: "",
            path: Some(&path),
        };
        if let Decision::Deny(reason) = ctx.rbac.authorize(&attrs) {
            return error_response(&ApiError {
                code: 403,
                reason: "Forbidden",
                message: forbidden_message(&attrs, &reason),
                details: None,
            });
        }
    }
    let aggregated = aggregated_discovery(&req);
    let discovery = |v: Value, version: &str| {
        full(
            StatusCode::OK,
            &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
            serde_json::to_vec(&v).unwrap_or_default(),
        )
    };
    match segments.as_slice() {
        ["openapi", "v2"] => openapi_v2(ctx, &req),
        ["openapi", "v3"] => openapi_v3_discovery(ctx),
        ["openapi", "v3", rest @ ..] => openapi_v3(ctx, &rest.join("/"), &req),
        ["api"] => match aggregated {
            Some(v) => discovery(resources::aggregated(true, v), v),
            None => json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.address}],
                }),
            ),
        },
        ["apis"] => match aggregated {
            Some(v) => discovery(resources::aggregated(false, v), v),
            None => json_response(StatusCode::OK, &resources::api_group_list()),
        },
        ["apis", group] => match resources::groups().into_iter().find(|(g, _)| g == group) {
            Some((g, v)) => json_response(StatusCode::OK, &resources::api_group(g, &v)),
            None => error_response(&not_found()),
        },
        ["api", "v1"] | ["apis", _, _] => {
            let (g, v) = match segments.as_slice() {
                ["apis", g, v] => (*g, *v),
                _ => ("", "v1"),
            };
            match resources::resource_list(g, v) {
                Some(list) => json_response(StatusCode::OK, &list),
                None => error_response(&not_found()),
            }
        }
        ["api", "v1", rest @ ..] | ["apis", _, _, rest @ ..] => {
            let (g, v) = match segments.as_slice() {
                ["apis", g, v, ..] => (*g, *v),
                _ => ("", "v1"),
            };
            match handlers::parse_target(g, v, rest) {
                Ok(t) => match handlers::resource_request(ctx, user, t, req).await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                },
                Err(e) => error_response(&e),
            }
        }
        _ => error_response(&not_found()),
    }
}

/// `GET /openapi/v2`: JSON, or the gnostic protobuf kubectl 1.27/1.28 ask for; ETag and 304.
fn openapi_v2(ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let header_of = |h| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let etag = ctx.openapi.v2_etag();
    let mut resp = if header_of(header::IF_NONE_MATCH) == etag {
        full(StatusCode::NOT_MODIFIED, "application/json", Vec::new())
    } else if openapi::wants_v2_protobuf(header_of(header::ACCEPT)) {
        full(
            StatusCode::OK,
            openapi::V2_PROTOBUF_CONTENT_TYPE,
            ctx.openapi.v2_protobuf().to_vec(),
        )
    } else {
        full(
            StatusCode::OK,
            "application/json",
            ctx.openapi.v2_json().to_vec(),
        )
    };
    if let Ok(v) = http::HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut()
        .insert(header::VARY, http::HeaderValue::from_static("Accept"));
    resp
}

/// `GET /openapi/v3/<api/v1|apis/G/V>[?hash=]`: one group-version's document, immutable when
/// asked for by its current hash, a redirect for an old one.
/// `GET /openapi/v3`: the built-in group-versions, and those of the custom resources.
fn openapi_v3_discovery(ctx: &Ctx) -> Response<Body> {
    let mut doc: Value =
        serde_json::from_slice(ctx.openapi.v3_discovery()).unwrap_or_else(|_| json!({"paths": {}}));
    for (group, version) in super::crd::openapi_v3_paths() {
        if let Some(custom) = super::crd::openapi_v3(&group, &version) {
            let key = format!("apis/{group}/{version}");
            let hash = custom_hash(&custom);
            doc["paths"][&key] =
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")});
        }
    }
    json_response(StatusCode::OK, &doc)
}

fn custom_hash(doc: &Value) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    sha2::Sha512::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn openapi_v3(ctx: &Ctx, path: &str, req: &Request<Incoming>) -> Response<Body> {
    let custom;
    let (body, hash): (&[u8], String) = match ctx.openapi.v3_group_version(path) {
        Some((b, h)) => (b, h.to_string()),
        None => {
            let parts: Vec<&str> = path.split('/').collect();
            let doc = match parts.as_slice() {
                ["apis", g, v] => super::crd::openapi_v3(g, v),
                _ => None,
            };
            let Some(doc) = doc else {
                return error_response(&not_found());
            };
            let hash = custom_hash(&doc);
            custom = serde_json::to_vec(&doc).unwrap_or_default();
            (custom.as_slice(), hash)
        }
    };
    let hash = hash.as_str();
    let asked = query(req).get("hash").cloned();
    let mut resp = match asked.as_deref() {
        Some(h) if h != hash => {
            let mut r = full(
                StatusCode::MOVED_PERMANENTLY,
                "application/json",
                Vec::new(),
            );
            let url = format!("/openapi/v3/{}?hash={hash}", path.trim_start_matches('/'));
            if let Ok(v) = http::HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        _ => full(StatusCode::OK, "application/json", body.to_vec()),
    };
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{hash}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if asked.is_some() {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, immutable"),
        );
    }
    resp
}

/// `/healthz`, `/livez`, `/readyz`: "ok", or with `?verbose` one line per check as
/// kube-apiserver prints them; `/readyz/etcd` runs one check.
async fn health(ctx: &Ctx, endpoint: &str, only: Option<&str>, verbose: bool) -> Response<Body> {
    let etcd = ctx.storage.current_revision().await;
    let checks = [("ping", Ok(())), ("etcd", etcd.map(|_| ()))];
    let selected: Vec<_> = checks
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == *name))
        .collect();
    if selected.is_empty() {
        return error_response(&ApiError::not_found("", endpoint, only.unwrap_or("")));
    }
    let failed = selected.iter().any(|(_, r)| r.is_err());
    let body = if verbose || failed {
        let mut out: String = selected
            .iter()
            .map(|(name, r)| match r {
                Ok(()) => format!("[+]{name} ok\n"),
                Err(e) => format!("[-]{name} failed: {e}\n"),
            })
            .collect();
        out.push_str(&format!(
            "{endpoint} check {}\n",
            if failed { "failed" } else { "passed" }
        ));
        out
    } else {
        "ok".to_string()
    };
    let code = if failed {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    full(code, "text/plain; charset=utf-8", body.into_bytes())
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0-minik.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// The issuer of service-account tokens when `--service-account-issuer` is not given.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A request's service-account bearer token, checked: signature, issuer, audience, expiry, and
/// that the service account (and the pod it is bound to) still exist with the same uid.
async fn bearer_user(ctx: &Ctx, req: &Request<Incoming>) -> Option<User> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    let (user, claims) = ctx
        .tokens
        .as_ref()?
        .authenticate(token, handlers::now_secs())
        .ok()?;
    let live_uid = |key: String| async move {
        let stored = ctx.storage.get(&key).await.ok()?;
        let v = handlers::served(&stored).ok()?;
        v["metadata"]["uid"].as_str().map(str::to_string)
    };
    let sa = resources::find("", "v1", "serviceaccounts")?;
    let uid = live_uid(sa.key(Some(&claims.namespace), &claims.service_account.name)).await?;
    if !claims.service_account.uid.is_empty() && uid != claims.service_account.uid {
        return None;
    }
    if let Some(pod) = &claims.pod {
        let pods = resources::find("", "v1", "pods")?;
        let uid = live_uid(pods.key(Some(&claims.namespace), &pod.name)).await?;
        if !pod.uid.is_empty() && uid != pod.uid {
            return None;
        }
    }
    Some(user)
}

/// The Impersonate-User / -Group / -Uid / -Extra-* headers: the user to act as, after checking
/// that `user` may `impersonate` each of them (as kube-apiserver's impersonation filter).
fn impersonate(ctx: &Ctx, user: &User, req: &Request<Incoming>) -> Result<Option<User>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let names = values("impersonate-user");
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid");
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = v.to_str()
        {
            extra
                .entry(percent_decode(key))
                .or_default()
                .push(v.to_string());
        }
    }
    let Some(name) = names.first().cloned() else {
        if groups.is_empty() && uid.is_empty() && extra.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::bad_request(
            "requested [{Kind=Group ...}] without impersonating a user",
        ));
    };
    let check = |resource: &str, namespace: &str, object: &str, subresource: &str| {
        let attrs = Attributes {
            user,
            verb: "impersonate",
            api_group: if resource == "users" || resource == "groups" || resource == "uids" {
                ""
            } else if resource == "userextras" {
                "authentication.k8s.io"
            } else {
                ""
            },
            resource,
            subresource,
            namespace,
            name: object,
            path: None,
        };
        match ctx.rbac.authorize(&attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(_) => Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "{resource} \"{object}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\"{}",
                    user.name,
                    if namespace.is_empty() {
                        " at the cluster scope".to_string()
                    } else {
                        format!(" in the namespace \"{namespace}\"")
                    }
                ),
                details: Some(json!({"name": object, "kind": resource})),
            }),
        }
    };
    let mut as_groups: Vec<String> = Vec::new();
    if let Some(sa) = name.strip_prefix("system:serviceaccount:") {
        let (ns, sa_name) = sa.split_once(':').unwrap_or(("", sa));
        check("serviceaccounts", ns, sa_name, "")?;
        if groups.is_empty() {
            as_groups.push("system:serviceaccounts".into());
            as_groups.push(format!("system:serviceaccounts:{ns}"));
        }
    } else {
        check("users", "", &name, "")?;
    }
    for g in &groups {
        check("groups", "", g, "")?;
    }
    for u in &uid {
        check("uids", "", u, "")?;
    }
    for (k, vs) in &extra {
        for v in vs {
            check("userextras", "", v, k)?;
        }
    }
    as_groups.extend(groups);
    if name != super::auth::ANONYMOUS
        && !as_groups
            .iter()
            .any(|g| g == super::auth::ALL_AUTHENTICATED)
    {
        as_groups.push(super::auth::ALL_AUTHENTICATED.to_string());
    }
    Ok(Some(User {
        name,
        uid: uid.first().cloned().unwrap_or_default(),
        groups: as_groups,
        extra,
    }))
}

/// RBAC: may `user` do `verb` on the resource (system:masters may do everything)?
pub(super) fn authorize(
    ctx: &Ctx,
    user: &User,
    verb: &str,
    resource: &Resource,
    subresource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let attrs = Attributes {
        user,
        verb,
        api_group: resource.group,
        resource: resource.name,
        subresource,
        namespace: namespace.unwrap_or(""),
        name,
        path: None,
    };
    match ctx.rbac.authorize(&attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => {
            let mut details = json!({"kind": resource.name});
            if !resource.group.is_empty() {
                details["group"] = json!(resource.group);
            }
            if !name.is_empty() {
                details["name"] = json!(name);
            }
            Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: forbidden_message(&attrs, &reason),
                details: Some(details),
            })
        }
    }
}
