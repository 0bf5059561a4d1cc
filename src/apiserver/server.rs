//! `minik apiserver`: HTTPS, authentication by client certificate, and the REST handlers.
//!
//! A request's path is read the way kube-apiserver reads it:
//! `/api/v1/<resource>[/<name>]` (cluster-scoped, or all namespaces for a namespaced resource) and
//! `/api/v1/namespaces/<ns>/<resource>[/<name>]`; the verb comes from the method and `?watch=true`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::printers;
use super::resources::{self, Resource};
use super::selector::{FieldSelector, Selector};
use super::status::{ApiError, FieldError};
use super::storage::{EtcdConfig, EtcdStorage, StorageError, Stored, WatchEvent};

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
}

/// Who is asking, from their client certificate: CN is the user, O the groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

type Body = BoxBody<Bytes, Infallible>;

struct Ctx {
    storage: EtcdStorage,
    address: String,
}

fn tls_acceptor(cfg: &ApiServerConfig) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.tls_cert_file)
        .with_context(|| format!("--tls-cert-file {}", cfg.tls_cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert-file {}", cfg.tls_cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_private_key_file).with_context(|| {
        format!(
            "--tls-private-key-file {}",
            cfg.tls_private_key_file.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&cfg.client_ca_file)
        .with_context(|| format!("--client-ca-file {}", cfg.client_ca_file.display()))?
    {
        roots
            .add(ca.with_context(|| format!("--client-ca-file {}", cfg.client_ca_file.display()))?)
            .context("--client-ca-file: not a CA certificate")?;
    }
    // Requests without a certificate are let through the handshake and answered 401, as
    // kube-apiserver does; a certificate from another CA fails the handshake.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("--client-ca-file")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("--tls-cert-file/--tls-private-key-file do not form a key pair")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
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
    Some(User { name, groups })
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    cfg: ApiServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tls_acceptor(&cfg)?;
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
    let ctx = Arc::new(Ctx {
        storage,
        address: addr.to_string(),
    });
    tracing::info!("serving the Kubernetes API on https://{addr}");
    println!("ready to serve on https://{addr}");
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
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
            let service = hyper::service::service_fn(move |req| {
                let (ctx, user) = (ctx.clone(), user.clone());
                async move { Ok::<_, Infallible>(handle(&ctx, user.as_ref(), req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn full(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// The request target, parsed.
struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_target(segments: &[&str]) -> Result<Target, ApiError> {
    let not_found = || ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    };
    let (namespace, rest) = match segments {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (res, name) = match rest {
        [res] => (*res, None),
        [res, name] => (*res, Some(name.to_string())),
        _ => return Err(not_found()),
    };
    let resource = resources::find("", "v1", res).ok_or_else(not_found)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(not_found());
    }
    Ok(Target {
        resource,
        namespace,
        name,
    })
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
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

fn percent_decode(s: &str) -> String {
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
    let Some(user) = user else {
        return error_response(&ApiError::unauthorized());
    };
    match segments.as_slice() {
        ["api"] => json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.address}],
            }),
        ),
        ["apis"] => json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        ),
        ["api", "v1"] => json_response(StatusCode::OK, &resources::core_v1_resource_list()),
        ["api", "v1", rest @ ..] => match parse_target(rest) {
            Ok(t) => match resource_request(ctx, user, t, req).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
            Err(e) => error_response(&e),
        },
        _ => error_response(&ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }),
    }
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
        "minor": "32",
        "gitVersion": format!("v1.32.0-minik.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Authorization: system:masters may do everything; RBAC for everyone else arrives with the
/// RBAC resources, until then they may do nothing.
fn authorize(user: &User, verb: &str, t: &Target) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    Err(ApiError::forbidden(
        &user.name,
        verb,
        t.resource.group,
        t.resource.name,
        t.namespace.as_deref(),
    ))
}

fn storage_error(t: &Target, name: &str, e: StorageError) -> ApiError {
    let r = t.resource;
    match e {
        StorageError::NotFound { .. } => ApiError::not_found(r.group, r.name, name),
        StorageError::AlreadyExists { .. } => ApiError::already_exists(r.group, r.name, name),
        StorageError::Conflict { .. } => ApiError::conflict(r.group, r.name, name),
        StorageError::Expired {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StorageError::InvalidContinue(why) => ApiError::bad_request(format!(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. ({why})"
        )),
        StorageError::Unavailable(m) => ApiError::unavailable(m),
    }
}

/// The object as served: stored JSON with its resourceVersion filled in.
fn served(stored: &Stored) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&stored.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not JSON: {e}", stored.key))
    })?;
    v["metadata"]["resourceVersion"] = json!(stored.revision.to_string());
    Ok(v)
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

async fn read_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let (mime, body) = read_raw(req).await?;
    parse_body(&mime, &body)
}

/// A request body in one of the formats the API accepts for objects.
fn parse_body(mime: &str, body: &[u8]) -> Result<Value, ApiError> {
    match mime {
        "application/json" | "" | "*/*" => parse_json(body),
        "application/yaml" => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding the request body as YAML: {e}"))
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

/// The body (within [`MAX_BODY`]) and its media type without parameters.
async fn read_raw(req: Request<Incoming>) -> Result<(String, Bytes), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(ApiError::too_large());
    }
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::too_large())?
        .to_bytes();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((mime, body))
}

/// The kinds of PATCH kubectl sends.
enum PatchKind {
    Json(json_patch::Patch),
    Merge(Value),
}

fn parse_patch(mime: &str, body: &[u8]) -> Result<PatchKind, ApiError> {
    match mime {
        "application/json-patch+json" => serde_json::from_slice(body)
            .map(PatchKind::Json)
            .map_err(|e| ApiError::bad_request(format!("error decoding the JSON patch: {e}"))),
        "application/merge-patch+json" => parse_json(body).map(PatchKind::Merge),
        "application/strategic-merge-patch+json" => {
            // For the types served so far (no lists of objects with merge keys), a strategic
            // merge patch means exactly a JSON merge patch; its `$`-directives do not yet.
            let v = parse_json(body)?;
            if let Some(d) = first_directive(&v) {
                return Err(ApiError::bad_request(format!(
                    "strategic merge patch directive {d:?} is not supported by minik yet"
                )));
            }
            Ok(PatchKind::Merge(v))
        }
        "application/apply-patch+yaml" => Err(ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: "server-side apply is not supported by minik yet".into(),
            details: None,
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn first_directive(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k.starts_with('$') {
                Some(k.clone())
            } else {
                first_directive(v)
            }
        }),
        Value::Array(a) => a.iter().find_map(first_directive),
        _ => None,
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64
}

fn now_rfc3339() -> String {
    let secs = now_secs();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn new_uid() -> String {
    let a = crate::etcd::lease::random_id() as u64;
    let b = crate::etcd::lease::random_id() as u64;
    let hex = format!("{a:016x}{b:016x}");
    // RFC 4122 version 4 layout.
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][(b & 3) as usize],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The answer to a successful write: the object at its new resourceVersion.
fn written(code: StatusCode, mut obj: Value, revision: i64) -> Response<Body> {
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    json_response(code, &obj)
}

/// The bytes to store for an update of `old`: the server-owned fields (uid, creation time) are
/// kept from `old`, and the resourceVersion is not stored (it is the key's etcd revision).
fn for_storage(obj: &mut Value, old: &Value) -> Result<Vec<u8>, ApiError> {
    let meta = &mut obj["metadata"];
    meta["uid"] = old["metadata"]["uid"].clone();
    meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(obj).map_err(|e| ApiError::internal(e.to_string()))
}

/// Checks an incoming object against the URL and the type, and fills what the server owns.
fn admit(t: &Target, name_from_url: Option<&str>, obj: &mut Value) -> Result<String, ApiError> {
    let r = t.resource;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let kind = obj["kind"].as_str().unwrap_or("");
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    if (!kind.is_empty() && kind != r.kind)
        || (!api_version.is_empty() && api_version != r.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or kind ({kind}) is not {}",
            r.api_version(),
            r.kind
        )));
    }
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    let mut name = meta["name"].as_str().unwrap_or("").to_string();
    if name.is_empty()
        && let Some(prefix) = meta["generateName"].as_str()
    {
        let suffix: String = format!("{:x}", crate::etcd::lease::random_id())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(5)
            .collect();
        name = format!("{prefix}{suffix}");
        meta["name"] = json!(name);
    }
    if let Some(url_name) = name_from_url
        && url_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        )));
    }
    let mut errors: Vec<FieldError> = Vec::new();
    if name.is_empty() {
        return Err(ApiError::invalid(
            r.group,
            r.kind,
            "",
            &[FieldError {
                field: "metadata.name".into(),
                value: String::new(),
                detail: "name or generateName is required".into(),
            }],
        ));
    }
    if let Some(e) = r.validate_name(&name) {
        errors.push(e);
    }
    if r.namespaced {
        let ns = t.namespace.clone().unwrap_or_default();
        match meta["namespace"].as_str() {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => meta["namespace"] = json!(ns),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    r.prepare(obj, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(r.group, r.kind, &name, &errors));
    }
    Ok(name)
}

async fn resource_request(
    ctx: &Ctx,
    user: &User,
    t: Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let table = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(printers::wants_table);
    let r = t.resource;
    let ns = t.namespace.clone();
    let method = req.method().clone();
    // `?dryRun=All`: every check runs, nothing is stored.
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid value: \"{other}\": supported values: \"All\""
            )));
        }
    };
    match (method, t.name.clone()) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            authorize(user, "watch", &t)?;
            watch(ctx, &t, &q).await
        }
        (Method::GET, None) => {
            authorize(user, "list", &t)?;
            list(ctx, &t, &q, table).await
        }
        (Method::GET, Some(name)) => {
            authorize(user, "get", &t)?;
            let stored = ctx
                .storage
                .get(&r.key(ns.as_deref(), &name))
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            let obj = served(&stored)?;
            if table {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(
                    StatusCode::OK,
                    &printers::table(r, &[obj], meta, now_secs()),
                ));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::POST, None) => {
            authorize(user, "create", &t)?;
            let mut obj = read_body(req).await?;
            let name = admit(&t, None, &mut obj)?;
            if let Some(ns) = &ns {
                // NamespaceLifecycle: objects go only into namespaces that exist.
                let ns_res = resources::find("", "v1", "namespaces").unwrap_or(r);
                ctx.storage
                    .get(&ns_res.key(None, ns))
                    .await
                    .map_err(|_| ApiError::not_found("", "namespaces", ns))?;
            }
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(new_uid());
            meta["creationTimestamp"] = json!(now_rfc3339());
            if let Some(m) = meta.as_object_mut() {
                m.remove("resourceVersion");
            }
            if r.name == "namespaces" {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            if dry_run {
                if ctx.storage.get(&r.key(ns.as_deref(), &name)).await.is_ok() {
                    return Err(ApiError::already_exists(r.group, r.name, &name));
                }
                return Ok(json_response(StatusCode::CREATED, &obj));
            }
            let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
            let rev = ctx
                .storage
                .create(&r.key(ns.as_deref(), &name), bytes)
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            Ok(written(StatusCode::CREATED, obj, rev))
        }
        (Method::PUT, Some(name)) => {
            authorize(user, "update", &t)?;
            let mut obj = read_body(req).await?;
            admit(&t, Some(&name), &mut obj)?;
            let key = r.key(ns.as_deref(), &name);
            let current = ctx
                .storage
                .get(&key)
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            let old = served(&current)?;
            let expected = match obj["metadata"]["resourceVersion"].as_str() {
                Some(rv) if !rv.is_empty() => rv.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        r.group,
                        r.kind,
                        &name,
                        &[FieldError {
                            field: "metadata.resourceVersion".into(),
                            value: rv.into(),
                            detail: "must be a number".into(),
                        }],
                    )
                })?,
                // No resourceVersion: an unconditional update, as core types allow.
                _ => current.revision,
            };
            let bytes = for_storage(&mut obj, &old)?;
            if dry_run {
                if expected != current.revision {
                    return Err(ApiError::conflict(r.group, r.name, &name));
                }
                obj["metadata"]["resourceVersion"] = json!(current.revision.to_string());
                return Ok(json_response(StatusCode::OK, &obj));
            }
            let rev = ctx
                .storage
                .update(&key, expected, bytes)
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            Ok(written(StatusCode::OK, obj, rev))
        }
        (Method::PATCH, Some(name)) => {
            authorize(user, "patch", &t)?;
            let (mime, body) = read_raw(req).await?;
            let patch = parse_patch(&mime, &body)?;
            let key = r.key(ns.as_deref(), &name);
            // Re-read and re-apply on a conflict, as kube-apiserver's GuaranteedUpdate does.
            for _ in 0..5 {
                let current = ctx
                    .storage
                    .get(&key)
                    .await
                    .map_err(|e| storage_error(&t, &name, e))?;
                let old = served(&current)?;
                let mut obj = old.clone();
                match &patch {
                    PatchKind::Json(ops) => {
                        json_patch::patch(&mut obj, ops).map_err(|e| ApiError {
                            code: 422,
                            reason: "Invalid",
                            message: format!("the JSON patch could not be applied: {e}"),
                            details: None,
                        })?
                    }
                    PatchKind::Merge(m) => json_patch::merge(&mut obj, m),
                }
                if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                    && rv != current.revision.to_string()
                {
                    return Err(ApiError::conflict(r.group, r.name, &name));
                }
                admit(&t, Some(&name), &mut obj)?;
                let bytes = for_storage(&mut obj, &old)?;
                if dry_run {
                    obj["metadata"]["resourceVersion"] = json!(current.revision.to_string());
                    return Ok(json_response(StatusCode::OK, &obj));
                }
                match ctx.storage.update(&key, current.revision, bytes).await {
                    Ok(rev) => {
                        return Ok(written(StatusCode::OK, obj, rev));
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_error(&t, &name, e)),
                }
            }
            Err(ApiError::conflict(r.group, r.name, &name))
        }
        (Method::DELETE, Some(name)) => {
            authorize(user, "delete", &t)?;
            // kubectl sends DeleteOptions in the body: dryRun and preconditions live there.
            let (_, body) = read_raw(req).await?;
            let options: Value = if body.is_empty() {
                json!({})
            } else {
                parse_json(&body)?
            };
            let dry_run = dry_run
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            let key = r.key(ns.as_deref(), &name);
            let current = ctx
                .storage
                .get(&key)
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            let pre = &options["preconditions"];
            let current_obj = served(&current)?;
            if (pre["uid"].is_string() && pre["uid"] != current_obj["metadata"]["uid"])
                || (pre["resourceVersion"].is_string()
                    && pre["resourceVersion"] != current_obj["metadata"]["resourceVersion"])
            {
                return Err(ApiError::conflict(r.group, r.name, &name));
            }
            if r.name == "namespaces" {
                // A namespace is emptied by the namespace controller before it goes: mark it
                // Terminating; the `kubernetes` finalizer keeps it until then.
                if !current_obj["metadata"]["deletionTimestamp"].is_null() || dry_run {
                    return Ok(json_response(StatusCode::OK, &current_obj));
                }
                let mut obj = current_obj.clone();
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                obj["status"]["phase"] = json!("Terminating");
                let bytes = for_storage(&mut obj, &current_obj)?;
                let rev = ctx
                    .storage
                    .update(&key, current.revision, bytes)
                    .await
                    .map_err(|e| storage_error(&t, &name, e))?;
                return Ok(written(StatusCode::OK, obj, rev));
            }
            if dry_run {
                return Ok(json_response(StatusCode::OK, &current_obj));
            }
            let (gone, _) = ctx
                .storage
                .delete(&key, current.revision)
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            Ok(json_response(StatusCode::OK, &served(&gone)?))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn selectors(
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<(Selector, FieldSelector), ApiError> {
    let labels = match q.get("labelSelector") {
        Some(s) => Selector::parse(s)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => Selector::default(),
    };
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map_or("", String::as_str),
        &t.resource.field_selectors(),
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn collection_prefix(t: &Target) -> String {
    t.resource.key(t.namespace.as_deref(), "")
}

async fn list(
    ctx: &Ctx,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let page = ctx
        .storage
        .list(
            &collection_prefix(t),
            limit,
            0,
            q.get("continue")
                .map(String::as_str)
                .filter(|c| !c.is_empty()),
        )
        .await
        .map_err(|e| storage_error(t, "", e))?;
    let mut items = Vec::new();
    for s in &page.items {
        let v = served(s)?;
        if fields.matches(&v) && labels.matches(&labels_of(&v)) {
            items.push(v);
        }
    }
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    if table {
        return Ok(json_response(
            StatusCode::OK,
            &printers::table(t.resource, &items, meta, now_secs()),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.resource.kind),
            "apiVersion": t.resource.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch(
    ctx: &Ctx,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let prefix = collection_prefix(t);
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let wants = move |v: &Value| fields.matches(v) && labels.matches(&labels_of(v));
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    // resourceVersion "" or "0": start with the current state as ADDED events.
    let from = match rv.as_str() {
        "" | "0" => {
            let page = ctx
                .storage
                .list(&prefix, 0, 0, None)
                .await
                .map_err(|e| storage_error(t, "", e))?;
            for s in &page.items {
                let v = served(s)?;
                if wants(&v) {
                    let _ = tx.send(Ok(Frame::data(watch_line("ADDED", &v)))).await;
                }
            }
            page.revision
        }
        n => n
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {n:?}")))?,
    };
    let mut events = ctx
        .storage
        .watch(&prefix, from)
        .await
        .map_err(|e| storage_error(t, "", e))?;
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                ev = events.next() => ev,
            };
            let line = match ev {
                None => return,
                Some(Err(StorageError::Expired {
                    requested,
                    compacted,
                })) => watch_line(
                    "ERROR",
                    &ApiError::expired(format!(
                        "too old resource version: {requested} ({compacted})"
                    ))
                    .to_status(),
                ),
                Some(Err(_)) => return,
                Some(Ok(WatchEvent::Added(s))) => match served(&s) {
                    Ok(v) if wants(&v) => watch_line("ADDED", &v),
                    _ => continue,
                },
                Some(Ok(WatchEvent::Modified { object, .. })) => match served(&object) {
                    Ok(v) if wants(&v) => watch_line("MODIFIED", &v),
                    _ => continue,
                },
                Some(Ok(WatchEvent::Deleted { object, revision })) => {
                    match served(&Stored { revision, ..object }) {
                        Ok(v) if wants(&v) => watch_line("DELETED", &v),
                        _ => continue,
                    }
                }
            };
            if tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let y = parse_body(
            "application/yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
        )
        .unwrap();
        assert_eq!(y["metadata"]["name"], "a");
        assert_eq!(y["data"]["k"], "v");
        let j = parse_body("application/json", br#"{"kind":"ConfigMap"}"#).unwrap();
        assert_eq!(j["kind"], "ConfigMap");
        assert_eq!(
            parse_body("application/yaml", b"a: [").unwrap_err().code,
            400
        );
        assert_eq!(parse_body("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(parse_body("text/plain", b"x").unwrap_err().code, 415);
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("app%3Dx%2Ctier"), "app=x,tier");
        assert_eq!(percent_decode("a+b%"), "a b%");
        let ts = now_rfc3339();
        assert_eq!(ts.len(), 20);
        assert!(ts.ends_with('Z'));
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        let t = parse_target(&["namespaces", "lab", "configmaps", "x"]).unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref()),
            (Some("lab"), Some("x"))
        );
        let t = parse_target(&["namespaces", "lab"]).unwrap();
        assert_eq!(
            (t.resource.name, t.name.as_deref()),
            ("namespaces", Some("lab"))
        );
        assert!(parse_target(&["namespaces", "lab", "namespaces"]).is_err());
        assert!(parse_target(&["widgets"]).is_err());
    }
}
