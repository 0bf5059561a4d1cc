//! A container's environment, computed as the kubelet computes it (`makeEnvironmentVariables` in
//! kubelet_pods.go), and the downward-API value formatting shared with the `downwardAPI` volume.
//!
//! Order of evaluation, as in the kubelet:
//!
//! 1. the service environment variables of the pod's namespace (`enableServiceLinks`, default
//!    true) and of `default/kubernetes` (always) are computed first; they are *visible* to
//!    `$(VAR)` expansion but only *added* at the end, for names no other source defined;
//! 2. `envFrom` (configMapRef / secretRef, with `prefix`); a missing source is an error unless
//!    `optional`. Every key becomes a variable, as in kubelet 1.30+ (with relaxed
//!    environment-variable validation the kubelet no longer filters names; configMap and secret
//!    keys are `[-._a-zA-Z0-9]+`, which Docker accepts). With
//!    [`EnvContext::strict_env_from_names`] the kubelet ≤ 1.29 behaviour instead: keys that are
//!    not C-like names (`[-._a-zA-Z][-._a-zA-Z0-9]*`) are skipped and reported by one
//!    `InvalidEnvironmentVariableNames` warning event per source;
//! 3. `env` in order: `value` with `$(VAR)` expanded against the variables defined so far and the
//!    service variables (`$$` is a literal `$`, an unknown `$(X)` stays as written); `valueFrom`
//!    fieldRef / resourceFieldRef / configMapKeyRef / secretKeyRef (not expanded). A later
//!    definition of a name replaces an earlier one in place.
//!
//! The real kubelet keeps the result in a Go map (its order is random); minik keeps definition
//! order (envFrom, env, then service variables sorted by name), so `docker inspect` is stable.
//!
//! Errors carry the kubelet's wording (what it puts in the container's waiting state with reason
//! `CreateContainerConfigError`): `configmap "x" not found`, `secret "s" not found`,
//! `couldn't find key k in ConfigMap ns/x`, `couldn't find key k in Secret ns/s`.
//!
//! The API objects come from an [`ApiSource`]: [`KubeSource`] reads them from the API server
//! with a `kube::Client`; tests implement the trait over in-memory objects.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;

use crate::component_base::quantity::Quantity;

/// Why an object could not be read from the API (other than "not found", which is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Where the kubelet's modules read API objects from. `Ok(None)` is "not found".
pub trait ApiSource: Send + Sync {
    /// `GET /api/v1/namespaces/{ns}/configmaps/{name}`.
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, SourceError>> + Send;
    /// `GET /api/v1/namespaces/{ns}/secrets/{name}`.
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, SourceError>> + Send;
    /// `GET /api/v1/namespaces/{ns}/services`.
    fn services(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<Service>, SourceError>> + Send;
    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`: the answered TokenRequest.
    fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> impl Future<Output = Result<TokenRequest, SourceError>> + Send;
}

/// An [`ApiSource`] over the API server.
#[derive(Clone)]
pub struct KubeSource {
    /// The kubelet's client.
    pub client: kube::Client,
}

fn read_error(what: &str, ns: &str, name: &str, e: kube::Error) -> SourceError {
    SourceError(format!("cannot read {what} {ns}/{name}: {e}"))
}

impl ApiSource for KubeSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
        kube::Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| read_error("configmap", ns, name, e))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        kube::Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| read_error("secret", ns, name, e))
    }

    async fn services(&self, ns: &str) -> Result<Vec<Service>, SourceError> {
        kube::Api::<Service>::namespaced(self.client.clone(), ns)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .map_err(|e| SourceError(format!("cannot list services in {ns}: {e}")))
    }

    async fn request_token(
        &self,
        ns: &str,
        sa: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, SourceError> {
        kube::Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .create_token_request(sa, &Default::default(), request)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }
}

/// What the kubelet knows besides the pod: its addresses and the node's allocatable resources
/// (the default for a `resourceFieldRef` to a limit the container does not set).
#[derive(Debug, Clone, Default)]
pub struct EnvContext {
    /// The pod's primary IP (`status.podIP`).
    pub pod_ip: Option<String>,
    /// All pod IPs (`status.podIPs`); empty means just `pod_ip`.
    pub pod_ips: Vec<String>,
    /// The node's primary IP (`status.hostIP`).
    pub host_ip: Option<String>,
    /// All node IPs (`status.hostIPs`); empty means just `host_ip`.
    pub host_ips: Vec<String>,
    /// The node's `status.allocatable` (cpu, memory, ephemeral-storage, …).
    pub node_allocatable: BTreeMap<String, KQuantity>,
    /// Skip envFrom keys that are not `[-._a-zA-Z][-._a-zA-Z0-9]*` with an
    /// `InvalidEnvironmentVariableNames` event, as kubelets before 1.30 did (off: 1.33's
    /// behaviour, every key is used).
    pub strict_env_from_names: bool,
}

/// A warning event the kubelet records while computing the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEvent {
    /// `InvalidEnvironmentVariableNames`.
    pub reason: String,
    /// The event message.
    pub message: String,
}

/// The computed environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// `(name, value)` in definition order, each name once.
    pub vars: Vec<(String, String)>,
    /// Warning events to record on the pod.
    pub events: Vec<EnvEvent>,
}

impl ContainerEnv {
    /// `KEY=VALUE` strings for Docker's `Env`.
    pub fn docker_env(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The value of `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }
}

/// Why the environment could not be computed; `Display` is the kubelet's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `configmap "x" not found`.
    ConfigMapNotFound(String),
    /// `secret "x" not found`.
    SecretNotFound(String),
    /// `couldn't find key k in ConfigMap ns/x`.
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    /// `couldn't find key k in Secret ns/x`.
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    /// A fieldRef/resourceFieldRef the kubelet does not support, or a bad quantity.
    Invalid(String),
    /// The API could not be read.
    Source(SourceError),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::ConfigMapNotFound(n) => write!(f, "configmap {n:?} not found"),
            EnvError::SecretNotFound(n) => write!(f, "secret {n:?} not found"),
            EnvError::ConfigMapKeyNotFound {
                key,
                namespace,
                name,
            } => write!(f, "couldn't find key {key} in ConfigMap {namespace}/{name}"),
            EnvError::SecretKeyNotFound {
                key,
                namespace,
                name,
            } => write!(f, "couldn't find key {key} in Secret {namespace}/{name}"),
            EnvError::Invalid(m) => f.write_str(m),
            EnvError::Source(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EnvError {}

impl EnvError {
    /// The container status' waiting reason the kubelet sets for this error.
    pub const REASON: &'static str = "CreateContainerConfigError";
}

/// The environment of `container` in `pod`. See the module documentation for the rules.
pub async fn container_env(
    source: &impl ApiSource,
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext,
) -> Result<ContainerEnv, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let links = spec.and_then(|s| s.enable_service_links).unwrap_or(true);
    let service_env = service_env_map(source, ns, links).await?;

    let mut out = ContainerEnv::default();
    let mut config_maps: BTreeMap<String, ConfigMap> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(cm) = cached_config_map(source, ns, &r.name, &mut config_maps).await? else {
                if optional {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound(r.name.clone()));
            };
            let pairs = cm
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()));
            let strict = ctx.strict_env_from_names;
            add_env_from(&mut out, prefix, pairs, strict, ("configMap", ns, &r.name));
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(s) = cached_secret(source, ns, &r.name, &mut secrets).await? else {
                if optional {
                    continue;
                }
                return Err(EnvError::SecretNotFound(r.name.clone()));
            };
            let pairs = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()));
            let strict = ctx.strict_env_from_names;
            add_env_from(&mut out, prefix, pairs, strict, ("secret", ns, &r.name));
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(v) = var.value.as_deref().filter(|v| !v.is_empty()) {
            let defined: BTreeMap<&str, &str> = out
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            expand(v, |name| {
                defined
                    .get(name)
                    .copied()
                    .or_else(|| service_env.get(name).map(String::as_str))
                    .map(str::to_string)
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field_value(pod, f, ctx)?
            } else if let Some(r) = &from.resource_field_ref {
                let c = defaulted_container(container, &ctx.node_allocatable);
                container_resource_value(r, &c)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(cm) = cached_config_map(source, ns, &r.name, &mut config_maps).await?
                else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound(r.name.clone()));
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.to_string(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(s) = cached_secret(source, ns, &r.name, &mut secrets).await? else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound(r.name.clone()));
                };
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.to_string(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        out.set(var.name.clone(), value);
    }

    for (k, v) in service_env {
        if out.get(&k).is_none() {
            out.vars.push((k, v));
        }
    }
    Ok(out)
}

async fn cached_config_map(
    source: &impl ApiSource,
    ns: &str,
    name: &str,
    cache: &mut BTreeMap<String, ConfigMap>,
) -> Result<Option<ConfigMap>, EnvError> {
    if let Some(cm) = cache.get(name) {
        return Ok(Some(cm.clone()));
    }
    let cm = source
        .config_map(ns, name)
        .await
        .map_err(EnvError::Source)?;
    if let Some(cm) = &cm {
        cache.insert(name.to_string(), cm.clone());
    }
    Ok(cm)
}

async fn cached_secret(
    source: &impl ApiSource,
    ns: &str,
    name: &str,
    cache: &mut BTreeMap<String, Secret>,
) -> Result<Option<Secret>, EnvError> {
    if let Some(s) = cache.get(name) {
        return Ok(Some(s.clone()));
    }
    let s = source.secret(ns, name).await.map_err(EnvError::Source)?;
    if let Some(s) = &s {
        cache.insert(name.to_string(), s.clone());
    }
    Ok(s)
}

fn add_env_from(
    out: &mut ContainerEnv,
    prefix: &str,
    pairs: impl Iterator<Item = (String, String)>,
    strict: bool,
    (kind, ns, name): (&str, &str, &str),
) {
    let mut invalid = Vec::new();
    for (k, v) in pairs {
        let k = format!("{prefix}{k}");
        if strict && !is_env_var_name(&k) {
            invalid.push(k);
            continue;
        }
        out.set(k, v);
    }
    if !invalid.is_empty() {
        invalid.sort();
        out.events.push(EnvEvent {
            reason: "InvalidEnvironmentVariableNames".to_string(),
            message: format!(
                "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ),
        });
    }
}

/// Whether `name` is a valid environment variable name for the kubelet:
/// `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    ok(first) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// Expands `$(VAR)` in `input` as the kubelet does (the forked Go `expansion` package): `$$` is
/// a literal `$`; `$(NAME)` is `mapping(NAME)`, or stays `$(NAME)` when the mapping has no value;
/// an unterminated `$(` and a `$` before any other character are kept as written.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            None => {
                // A trailing `$` is kept.
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match mapping(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The service environment variables visible to a pod in `namespace`: every service of the
/// namespace with a cluster IP when `enable_service_links`, and always `default/kubernetes` (a
/// same-named service of the pod's namespace wins).
pub async fn service_env_map(
    source: &impl ApiSource,
    namespace: &str,
    enable_service_links: bool,
) -> Result<BTreeMap<String, String>, EnvError> {
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    if namespace != "default" || !enable_service_links {
        for s in source.services("default").await.map_err(EnvError::Source)? {
            if s.metadata.name.as_deref() == Some("kubernetes") && service_ip_set(&s) {
                chosen.insert("kubernetes".to_string(), s);
            }
        }
    }
    if enable_service_links {
        for s in source.services(namespace).await.map_err(EnvError::Source)? {
            if let Some(name) = s.metadata.name.clone()
                && service_ip_set(&s)
            {
                chosen.insert(name, s);
            }
        }
    }
    let mut m = BTreeMap::new();
    for s in chosen.values() {
        for (k, v) in service_env_vars(s) {
            m.insert(k, v);
        }
    }
    Ok(m)
}

fn service_ip_set(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|sp| sp.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables of one service (`envvars.FromServices`): `{SVC}_SERVICE_HOST`,
/// `{SVC}_SERVICE_PORT` (the first port), `{SVC}_SERVICE_PORT_{NAME}` per named port, and the
/// Docker-link variables `{SVC}_PORT`, `{SVC}_PORT_{port}_{PROTO}[_PROTO|_PORT|_ADDR]`.
pub fn service_env_vars(s: &Service) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = &s.spec else {
        return out;
    };
    let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()) else {
        return out;
    };
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let Some(first) = ports.first() else {
        return out;
    };
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or(""));
    out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    let port_name = format!("{prefix}_SERVICE_PORT");
    out.push((port_name.clone(), first.port.to_string()));
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{port_name}_{}", env_name(n)), p.port.to_string()));
        }
    }
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{}", host_port(p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// A `fieldRef` of an environment variable (`podFieldSelectorRuntimeValue`).
pub fn pod_field_value(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    ctx: &EnvContext,
) -> Result<String, EnvError> {
    let spec = pod.spec.as_ref();
    let pod_ips: Vec<String> = if ctx.pod_ips.is_empty() {
        ctx.pod_ip.iter().cloned().collect()
    } else {
        ctx.pod_ips.clone()
    };
    let host_ips: Vec<String> = if ctx.host_ips.is_empty() {
        ctx.host_ip.iter().cloned().collect()
    } else {
        ctx.host_ips.clone()
    };
    Ok(match sel.field_path.as_str() {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => host_ips.join(","),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        path => metadata_field_value(pod, path).map_err(EnvError::Invalid)?,
    })
}

/// The metadata fields both the environment and the `downwardAPI` volume offer
/// (`fieldpath.ExtractFieldPathAsString`): `metadata.name`, `.namespace`, `.uid`, `.labels`,
/// `.annotations` (all of them as sorted `key="value"` lines), and `metadata.labels['k']` /
/// `metadata.annotations['k']` (one value, empty when absent).
pub fn metadata_field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let md = &pod.metadata;
    if let Some(s) = path.strip_suffix("']")
        && let Some((field, key)) = s.split_once("['")
        && !field.is_empty()
    {
        return match field {
            "metadata.labels" => Ok(md
                .labels
                .as_ref()
                .and_then(|l| l.get(key).cloned())
                .unwrap_or_default()),
            "metadata.annotations" => Ok(md
                .annotations
                .as_ref()
                .and_then(|a| a.get(key).cloned())
                .unwrap_or_default()),
            _ => Err(format!("fieldPath {path:?} does not support subscript")),
        };
    }
    let empty = BTreeMap::new();
    match path {
        "metadata.name" => Ok(md.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(md.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(md.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(md.labels.as_ref().unwrap_or(&empty))),
        "metadata.annotations" => Ok(format_map(md.annotations.as_ref().unwrap_or(&empty))),
        _ => Err(format!("unsupported fieldPath: {path}")),
    }
}

/// `k="v"` lines sorted by key, without a trailing newline; values quoted as Go's `%q`.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: `"…"` with `\"`, `\\`, the C escapes and `\x`/`\u`/`\U` for
/// non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container with its missing cpu/memory/ephemeral-storage limits set to the node's
/// allocatable (`defaultPodLimitsForDownwardAPI`).
pub fn defaulted_container(
    container: &Container,
    allocatable: &BTreeMap<String, KQuantity>,
) -> Container {
    let mut c = container.clone();
    let resources = c.resources.get_or_insert_with(Default::default);
    let limits = resources.limits.get_or_insert_with(Default::default);
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if !limits.contains_key(r)
            && let Some(q) = allocatable.get(r)
        {
            limits.insert(r.to_string(), q.clone());
        }
    }
    c
}

fn parse_quantity(q: &KQuantity) -> Result<Quantity, EnvError> {
    Quantity::parse(&q.0).map_err(|e| EnvError::Invalid(e.to_string()))
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let (a, b) = (a as i128, b as i128);
    let q = a / b;
    let r = a % b;
    let q = if r != 0 && ((r > 0) == (b > 0)) {
        q + 1
    } else {
        q
    };
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A `resourceFieldRef` against a container (already [`defaulted_container`]):
/// `limits.cpu` / `requests.cpu` in units of the divisor (default 1) rounded up by millis;
/// memory, ephemeral-storage and hugepages-* in units of the divisor, rounded up.
pub fn container_resource_value(
    sel: &ResourceFieldSelector,
    container: &Container,
) -> Result<String, EnvError> {
    let divisor = match &sel.divisor {
        Some(d) => parse_quantity(d)?,
        None => Quantity::parse("1").map_err(|e| EnvError::Invalid(e.to_string()))?,
    };
    let divisor = if divisor.milli_value() == 0 {
        Quantity::parse("1").map_err(|e| EnvError::Invalid(e.to_string()))?
    } else {
        divisor
    };
    let unsupported =
        || EnvError::Invalid(format!("unsupported container resource : {}", sel.resource));
    let (list, name) = sel.resource.split_once('.').ok_or_else(unsupported)?;
    let res = container.resources.as_ref();
    let map = match list {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(unsupported()),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(q) => parse_quantity(q)?,
        None => Quantity::parse("0").map_err(|e| EnvError::Invalid(e.to_string()))?,
    };
    let n = match name {
        "cpu" => ceil_div(value.milli_value(), divisor.milli_value()),
        "memory" | "ephemeral-storage" => ceil_div(value.value(), divisor.value()),
        n if n.starts_with("hugepages-") => ceil_div(value.value(), divisor.value()),
        _ => return Err(unsupported()),
    };
    Ok(n.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ResourceRequirements, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Mutex;

    /// An [`ApiSource`] over in-memory objects; counts token requests.
    #[derive(Default)]
    pub struct FakeSource {
        pub config_maps: Mutex<BTreeMap<(String, String), ConfigMap>>,
        pub secrets: Mutex<BTreeMap<(String, String), Secret>>,
        pub services: Vec<Service>,
        pub tokens_issued: Mutex<u32>,
        /// Seconds since the epoch the fake "server" stamps tokens with.
        pub now: Mutex<i64>,
    }

    impl FakeSource {
        pub fn put_config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            };
            self.config_maps
                .lock()
                .expect("lock")
                .insert((ns.into(), name.into()), cm);
        }

        pub fn put_secret(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                        .collect(),
                ),
                ..Default::default()
            };
            self.secrets
                .lock()
                .expect("lock")
                .insert((ns.into(), name.into()), s);
        }
    }

    impl ApiSource for FakeSource {
        async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
            Ok(self
                .config_maps
                .lock()
                .expect("lock")
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, SourceError> {
            Ok(self
                .secrets
                .lock()
                .expect("lock")
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn services(&self, ns: &str) -> Result<Vec<Service>, SourceError> {
            Ok(self
                .services
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                .cloned()
                .collect())
        }
        async fn request_token(
            &self,
            ns: &str,
            sa: &str,
            request: &TokenRequest,
        ) -> Result<TokenRequest, SourceError> {
            let mut n = self.tokens_issued.lock().expect("lock");
            *n += 1;
            let now = *self.now.lock().expect("lock");
            let exp = request.spec.expiration_seconds.unwrap_or(3600);
            let mut out = request.clone();
            let pod = request
                .spec
                .bound_object_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            out.status = Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
                token: format!("token-{ns}-{sa}-{pod}-{n}"),
                expiration_timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(now + exp)
                        .map_err(|e| SourceError(e.to_string()))?,
                ),
            });
            Ok(out)
        }
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, Option<&str>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(str::to_string),
                            port: *p,
                            protocol: proto.map(str::to_string),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn pod(ns: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: Some("uid-1234".into()),
                labels: Some(
                    [("app", "web"), ("tier", "front \"end\"")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                annotations: Some(
                    [("note", "a\nb")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("builder".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn value(name: &str, v: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(v.into()),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }
    }

    fn map_of(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_the_kubelet_rules() {
        let vars = map_of(&[("A", "1"), ("B", "two")]);
        let m = |n: &str| vars.get(n).cloned();
        assert_eq!(expand("$(A)-$(B)", m), "1-two");
        assert_eq!(expand("$$(A)", m), "$(A)");
        assert_eq!(expand("$$$(A)", m), "$1");
        assert_eq!(expand("$(MISSING)", m), "$(MISSING)");
        assert_eq!(expand("$(A", m), "$(A");
        assert_eq!(expand("a$b", m), "a$b");
        assert_eq!(expand("trailing$", m), "trailing$");
        assert_eq!(expand("$()", m), "$()");
        assert_eq!(expand("ünï$(A)ç", m), "ünï1ç");
        assert_eq!(expand("no vars", m), "no vars");
    }

    #[test]
    fn service_variables_have_the_docker_link_format() {
        let s = svc(
            "ns",
            "my-svc",
            "10.96.0.20",
            &[(Some("http"), 80, None), (Some("dns-udp"), 53, Some("UDP"))],
        );
        let got: BTreeMap<String, String> = service_env_vars(&s).into_iter().collect();
        let want = map_of(&[
            ("MY_SVC_SERVICE_HOST", "10.96.0.20"),
            ("MY_SVC_SERVICE_PORT", "80"),
            ("MY_SVC_SERVICE_PORT_HTTP", "80"),
            ("MY_SVC_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_SVC_PORT", "tcp://10.96.0.20:80"),
            ("MY_SVC_PORT_80_TCP", "tcp://10.96.0.20:80"),
            ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("MY_SVC_PORT_80_TCP_PORT", "80"),
            ("MY_SVC_PORT_80_TCP_ADDR", "10.96.0.20"),
            ("MY_SVC_PORT_53_UDP", "udp://10.96.0.20:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("MY_SVC_PORT_53_UDP_ADDR", "10.96.0.20"),
        ]);
        assert_eq!(got, want);
        let v6 = svc("ns", "v6", "fd00::1", &[(None, 443, None)]);
        let got: BTreeMap<String, String> = service_env_vars(&v6).into_iter().collect();
        assert_eq!(got["V6_PORT"], "tcp://[fd00::1]:443");
        assert!(!got.contains_key("V6_SERVICE_PORT_"));
    }

    fn source_with_services() -> FakeSource {
        FakeSource {
            services: vec![
                svc(
                    "default",
                    "kubernetes",
                    "10.96.0.1",
                    &[(Some("https"), 443, None)],
                ),
                svc("default", "other", "10.96.0.9", &[(None, 9, None)]),
                svc("ns", "web", "10.96.0.30", &[(None, 8080, None)]),
                svc("ns", "headless", "None", &[(None, 80, None)]),
            ],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn service_links_follow_enable_service_links() {
        let src = source_with_services();
        let m = service_env_map(&src, "ns", true).await.expect("env");
        assert_eq!(m["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(m["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(m["WEB_SERVICE_HOST"], "10.96.0.30");
        assert!(!m.contains_key("OTHER_SERVICE_HOST"));
        assert!(!m.keys().any(|k| k.starts_with("HEADLESS")));
        let m = service_env_map(&src, "ns", false).await.expect("env");
        assert!(m.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!m.contains_key("WEB_SERVICE_HOST"));
        let m = service_env_map(&src, "default", true).await.expect("env");
        assert!(m.contains_key("OTHER_SERVICE_HOST") && m.contains_key("KUBERNETES_PORT"));
    }

    #[tokio::test]
    async fn a_full_environment() {
        let src = source_with_services();
        src.put_config_map(
            "ns",
            "cfg",
            &[("LEVEL", "debug"), ("1bad", "x"), ("ok.key", "y")],
        );
        src.put_secret("ns", "creds", &[("password", b"s3cret")]);
        let mut p = pod("ns", "web-0");
        p.spec.as_mut().expect("spec").enable_service_links = Some(true);
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: None,
                secret_ref: None,
            }]),
            env: Some(vec![
                value(
                    "GREETING",
                    "hello $(LEVEL) at $(WEB_SERVICE_HOST) $$(LEVEL)",
                ),
                value("LEVEL", "info"),
                from("POD", field("metadata.name")),
                from("NS", field("metadata.namespace")),
                from("UID", field("metadata.uid")),
                from("APP", field("metadata.labels['app']")),
                from("NOPE", field("metadata.labels['nope']")),
                from("LABELS", field("metadata.labels")),
                from("NOTE", field("metadata.annotations['note']")),
                from("NODE", field("spec.nodeName")),
                from("SA", field("spec.serviceAccountName")),
                from("HOST_IP", field("status.hostIP")),
                from("POD_IP", field("status.podIP")),
                from("POD_IPS", field("status.podIPs")),
                from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "OPT",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "absent".into(),
                            key: "k".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ),
                value("EMPTY", ""),
                value("WEB_SERVICE_HOST", "overridden"),
            ]),
            ..Default::default()
        };
        let ctx = EnvContext {
            pod_ip: Some("10.244.0.5".into()),
            pod_ips: vec!["10.244.0.5".into(), "fd00::5".into()],
            host_ip: Some("172.18.0.2".into()),
            ..Default::default()
        };
        let env = container_env(&src, &p, &c, &ctx).await.expect("env");
        assert_eq!(
            env.get("GREETING"),
            Some("hello debug at 10.96.0.30 $(LEVEL)")
        );
        assert_eq!(env.get("LEVEL"), Some("info"));
        assert_eq!(env.get("ok.key"), Some("y"));
        assert_eq!(env.get("POD"), Some("web-0"));
        assert_eq!(env.get("NS"), Some("ns"));
        assert_eq!(env.get("UID"), Some("uid-1234"));
        assert_eq!(env.get("APP"), Some("web"));
        assert_eq!(env.get("NOPE"), Some(""));
        assert_eq!(
            env.get("LABELS"),
            Some("app=\"web\"\ntier=\"front \\\"end\\\"\"")
        );
        assert_eq!(env.get("NOTE"), Some("a\nb"));
        assert_eq!(env.get("NODE"), Some("node-1"));
        assert_eq!(env.get("SA"), Some("builder"));
        assert_eq!(env.get("HOST_IP"), Some("172.18.0.2"));
        assert_eq!(env.get("POD_IP"), Some("10.244.0.5"));
        assert_eq!(env.get("POD_IPS"), Some("10.244.0.5,fd00::5"));
        assert_eq!(env.get("PASSWORD"), Some("s3cret"));
        assert_eq!(env.get("OPT"), None);
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("WEB_SERVICE_HOST"), Some("overridden"));
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        // 1.33: every envFrom key is used, no event.
        assert_eq!(env.get("1bad"), Some("x"));
        assert!(env.events.is_empty());
        // The kubelet ≤ 1.29: skipped with an event.
        let strict = EnvContext {
            strict_env_from_names: true,
            ..ctx.clone()
        };
        let env = container_env(&src, &p, &c, &strict).await.expect("env");
        assert_eq!(env.get("1bad"), None);
        assert_eq!(env.get("ok.key"), Some("y"));
        assert_eq!(
            env.events,
            vec![EnvEvent {
                reason: "InvalidEnvironmentVariableNames".into(),
                message: "Keys [1bad] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names.".into()
            }]
        );
        let docker = env.docker_env();
        assert!(docker.contains(&"LEVEL=info".to_string()));
        // Each name once.
        let mut names: Vec<&str> = env.vars.iter().map(|(k, _)| k.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[tokio::test]
    async fn errors_have_the_kubelet_wording() {
        let src = FakeSource::default();
        src.put_config_map("ns", "cfg", &[("a", "1")]);
        src.put_secret("ns", "s", &[("a", b"1")]);
        let p = pod("ns", "p");
        let one = |v: EnvVar| Container {
            name: "c".into(),
            env: Some(vec![v]),
            ..Default::default()
        };
        let cm_ref = |name: &str, key: &str| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        };
        let s_ref = |name: &str, key: &str| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        };
        let ctx = EnvContext::default();
        let cases = [
            (from("X", cm_ref("x", "k")), "configmap \"x\" not found"),
            (
                from("X", cm_ref("cfg", "k")),
                "couldn't find key k in ConfigMap ns/cfg",
            ),
            (
                from("X", s_ref("missing", "k")),
                "secret \"missing\" not found",
            ),
            (
                from("X", s_ref("s", "k")),
                "couldn't find key k in Secret ns/s",
            ),
            (
                from("X", field("spec.hostname")),
                "unsupported fieldPath: spec.hostname",
            ),
        ];
        for (var, want) in cases {
            let err = container_env(&src, &p, &one(var), &ctx)
                .await
                .expect_err(want);
            assert_eq!(err.to_string(), want);
        }
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "gone".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let err = container_env(&src, &p, &c, &ctx).await.expect_err("gone");
        assert_eq!(err.to_string(), "configmap \"gone\" not found");
    }

    fn res_ref(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: None,
            divisor: divisor.map(|d| KQuantity(d.into())),
            resource: resource.into(),
        }
    }

    #[test]
    fn resource_values_use_divisors_and_node_allocatable() {
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [("cpu", "250m"), ("memory", "64Mi")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), KQuantity(v.to_string())))
                        .collect(),
                ),
                limits: Some(
                    [("memory", "128Mi")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), KQuantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let alloc: BTreeMap<String, KQuantity> = [("cpu", "4"), ("memory", "8Gi")]
            .iter()
            .map(|(k, v)| (k.to_string(), KQuantity(v.to_string())))
            .collect();
        let d = defaulted_container(&c, &alloc);
        let v =
            |r: &str, div: Option<&str>| container_resource_value(&res_ref(r, div), &d).expect(r);
        assert_eq!(v("requests.cpu", None), "1");
        assert_eq!(v("requests.cpu", Some("1m")), "250");
        assert_eq!(v("limits.cpu", None), "4");
        assert_eq!(v("limits.cpu", Some("100m")), "40");
        assert_eq!(v("limits.memory", None), "134217728");
        assert_eq!(v("limits.memory", Some("1Mi")), "128");
        assert_eq!(v("requests.memory", Some("1Gi")), "1");
        assert_eq!(v("requests.ephemeral-storage", None), "0");
        assert_eq!(v("limits.cpu", Some("0")), "4");
        let err = container_resource_value(&res_ref("limits.gpu", None), &d).expect_err("gpu");
        assert_eq!(
            err.to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\td\u{1}é"), "\"a\\\"b\\\\c\\td\\x01é\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
        assert!(is_env_var_name("A_b.c-1") && !is_env_var_name("1A") && !is_env_var_name(""));
        assert!(!is_env_var_name("a b"));
    }
}
