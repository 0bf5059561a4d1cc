//! Subresources with logic of their own, and the create-only "review" resources:
//!
//! - `<workload>/scale`: an `autoscaling/v1` Scale view of `spec.replicas` (`kubectl scale`);
//! - `pods/binding` (and the `bindings` resource): the scheduler's decision, setting
//!   `spec.nodeName` once and the `PodScheduled` condition;
//! - `pods/eviction`: a delete that respects PodDisruptionBudgets (`kubectl drain`);
//! - `pods/log`, `exec`, `attach`, `portforward`: checked here (pod, container, node), then
//!   served by the pod's kubelet (the `proxy` subresources are [`super::proxy`]'s);
//! - `namespaces/<n>/finalize`: the namespace controller's last step;
//! - SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview, SubjectAccessReview:
//!   answered from the authorizer, never stored (`kubectl auth can-i`, `auth whoami`).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::auth::{Attributes, Decision, TokenRequest};
use super::handlers::{
    self, PatchKind, Target, WriteOptions, for_storage, now_rfc3339, parse_patch, read_body,
    read_raw, served, storage_error, written,
};
use super::resources::{self, Resource};
use super::selector::selector_text;
use super::server::{Body, Ctx, User, json_response};
use super::status::{ApiError, FieldError};
use super::storage::StorageError;

fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn handle(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    sub: &str,
    verb: &str,
    req: Request<Incoming>,
    q: &BTreeMap<String, String>,
    opts: &mut WriteOptions,
) -> Result<Response<Body>, ApiError> {
    match (sub, verb) {
        ("scale", "get" | "update" | "patch") => scale(ctx, t, name, verb, req, opts).await,
        ("binding", "create") => {
            let body = read_body(req).await?;
            bind(ctx, t.namespace.as_deref().unwrap_or(""), name, &body).await
        }
        ("eviction", "create") => {
            let body = read_body(req).await?;
            evict(ctx, t, name, &body).await
        }
        ("token", "create") => {
            let body = read_body(req).await?;
            token_request(ctx, t, name, body).await
        }
        ("finalize", "update") => {
            let body = read_body(req).await?;
            finalize(ctx, t, name, &body).await
        }
        ("log" | "exec" | "attach" | "portforward", _) => {
            pod_stream(ctx, t, name, sub, req, q).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Where a type keeps its replica counts and selector (custom resources: their CRD's paths).
fn scale_paths(r: &Resource) -> (String, String, Option<String>) {
    match r.custom.and_then(|c| c.scale.as_ref()) {
        Some(p) => (
            p.spec_replicas.clone(),
            p.status_replicas.clone(),
            p.label_selector.clone(),
        ),
        None => (".spec.replicas".into(), ".status.replicas".into(), None),
    }
}

fn scale_of(r: &Resource, obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let (spec_path, status_path, selector_path) = scale_paths(r);
    let selector = match selector_path {
        Some(p) => super::crd::json_path(obj, &p)
            .as_str()
            .unwrap_or("")
            .to_string(),
        None => selector_text(&obj["spec"]["selector"]),
    };
    let spec_replicas = super::crd::json_path(obj, &spec_path).as_i64().unwrap_or(0);
    let status_replicas = super::crd::json_path(obj, &status_path)
        .as_i64()
        .unwrap_or(0);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": spec_replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    })
}

async fn scale(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    verb: &str,
    req: Request<Incoming>,
    opts: &mut WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let r = t.resource;
    if verb == "get" {
        let stored = ctx
            .storage
            .get(&r.key(t.namespace.as_deref(), name))
            .await
            .map_err(|e| storage_error(t, name, e))?;
        return Ok(json_response(
            StatusCode::OK,
            &scale_of(r, &served(&stored)?),
        ));
    }
    let change: Change = if verb == "update" {
        Change::Replace(read_body(req).await?)
    } else {
        let (mime, raw) = read_raw(req).await?;
        Change::Patch(parse_patch(&mime, &raw)?)
    };
    let (obj, _) = handlers::update(ctx, t, name, false, opts, |old| {
        let current = scale_of(r, old);
        let next = match &change {
            Change::Replace(body) => body.clone(),
            Change::Patch(p) => {
                let mut s = current.clone();
                match p {
                    PatchKind::Json(ops) => {
                        json_patch::patch(&mut s, ops).map_err(|e| ApiError {
                            code: 422,
                            reason: "Invalid",
                            message: format!("the JSON patch could not be applied: {e}"),
                            details: None,
                        })?
                    }
                    PatchKind::Merge(m) | PatchKind::Strategic(m) | PatchKind::Apply(m) => {
                        json_patch::merge(&mut s, m)
                    }
                }
                s
            }
        };
        let replicas = &next["spec"]["replicas"];
        let n = match replicas.as_i64() {
            Some(n) if n >= 0 => n,
            _ => {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &[FieldError::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
        };
        let mut obj = old.clone();
        super::crd::set_path(&mut obj, &scale_paths(r).0, json!(n));
        // A Scale that names a resourceVersion must be current.
        match next["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() => obj["metadata"]["resourceVersion"] = json!(rv),
            _ => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
        }
        Ok(obj)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(r, &obj)))
}

enum Change {
    Replace(Value),
    Patch(PatchKind),
}

fn pods() -> &'static Resource {
    resources::find("", "v1", "pods").unwrap_or(&resources::RESOURCES[0])
}

fn pod_target(ns: &str, name: &str) -> Target {
    Target {
        resource: pods(),
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        subresource: None,
    }
}

/// The scheduler's binding of a pod to a node.
async fn bind(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    binding: &Value,
) -> Result<Response<Body>, ApiError> {
    let t = pod_target(ns, name);
    let node = binding["target"]["name"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            &[FieldError::required("target.name", "")],
        ));
    }
    let key = pods().key(Some(ns), name);
    for _ in 0..8 {
        let current = ctx
            .storage
            .get(&key)
            .await
            .map_err(|e| storage_error(&t, name, e))?;
        let old = served(&current)?;
        let conflict = |why: String| ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
            details: Some(json!({"name": name, "kind": "pods/binding"})),
        };
        if old["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        if let Some(on) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(conflict(format!(
                "pod {name} is already assigned to node \"{on}\""
            )));
        }
        let mut obj = old.clone();
        obj["spec"]["nodeName"] = json!(node);
        let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
        let conditions = obj["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(condition);
        obj["status"]["conditions"] = Value::Array(conditions);
        let bytes = for_storage(&mut obj, &old)?;
        match ctx.storage.update(&key, current.revision, bytes).await {
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &success(201))),
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(storage_error(&t, name, e)),
        }
    }
    Err(ApiError::conflict("", "pods", name))
}

/// An eviction: the pod is deleted unless a PodDisruptionBudget covering it allows no
/// disruption now.
async fn evict(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    eviction: &Value,
) -> Result<Response<Body>, ApiError> {
    let ns = t.namespace.as_deref().unwrap_or("");
    let pod = ctx
        .storage
        .get(&pods().key(Some(ns), name))
        .await
        .map_err(|e| storage_error(t, name, e))?;
    let pod = served(&pod)?;
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if let Some(pdbs) = resources::find("policy", "v1", "poddisruptionbudgets")
        && !terminal
    {
        let page = ctx
            .storage
            .list(&pdbs.key(Some(ns), ""), 0, 0, None)
            .await
            .map_err(|e| storage_error(t, name, e))?;
        for s in &page.items {
            let pdb = served(s)?;
            let selector = selector_text(&pdb["spec"]["selector"]);
            let Ok(sel) = super::selector::Selector::parse(&selector) else {
                continue;
            };
            if selector.is_empty() || !sel.matches(&handlers::labels_of(&pod)) {
                continue;
            }
            if pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0) <= 0 {
                return Err(ApiError {
                    code: 429,
                    reason: "TooManyRequests",
                    message: "Cannot evict pod as it would violate the pod's disruption budget."
                        .into(),
                    details: Some(
                        json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
                            "The disruption budget {} needs {} healthy pods and has {} currently",
                            pdb["metadata"]["name"].as_str().unwrap_or(""),
                            pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                            pdb["status"]["currentHealthy"].as_i64().unwrap_or(0),
                        )}]}),
                    ),
                });
            }
        }
    }
    let raw = serde_json::to_vec(&eviction["deleteOptions"]).unwrap_or_default();
    let raw = if eviction["deleteOptions"].is_object() {
        raw
    } else {
        Vec::new()
    };
    let options = handlers::delete_options_from(&raw)?;
    handlers::delete(ctx, &pod_target(ns, name), name, &options, false).await?;
    Ok(json_response(StatusCode::CREATED, &success(201)))
}

/// `POST serviceaccounts/<sa>/token`: a TokenRequest — a signed, expiring token for the
/// service account, optionally bound to a pod (`kubectl create token`).
async fn token_request(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    mut body: Value,
) -> Result<Response<Body>, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let Some(issuer) = ctx.issuer.as_ref() else {
        return Err(ApiError::internal(
            "no --service-account-signing-key-file: this API server does not issue service-account tokens",
        ));
    };
    let sa = served(
        &ctx.storage
            .get(&t.resource.key(Some(&ns), name))
            .await
            .map_err(|e| storage_error(t, name, e))?,
    )?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let spec = &body["spec"];
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    // A token bound to a pod dies with the pod.
    let bound = &spec["boundObjectRef"];
    let mut pod: Option<(String, String, String)> = None;
    if bound.is_object() {
        let pod_name = bound["name"].as_str().unwrap_or("");
        if bound["kind"] != "Pod" {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                &[FieldError::not_supported(
                    "spec.boundObjectRef.kind",
                    &bound["kind"],
                    &["Pod", "Secret", "Node"],
                )],
            ));
        }
        let p = served(
            &ctx.storage
                .get(&pods().key(Some(&ns), pod_name))
                .await
                .map_err(|_| ApiError::not_found("", "pods", pod_name))?,
        )?;
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict("", "pods", pod_name));
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        pod = Some((pod_name.to_string(), uid, node));
    }
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let now = handlers::now_secs();
    let req = TokenRequest {
        namespace: &ns,
        service_account: name,
        service_account_uid: &sa_uid,
        audiences: &audiences,
        expiration_seconds: expiration,
        bound_pod: pod.as_ref().map(|(n, u, _)| (n.as_str(), u.as_str())),
        bound_node: None,
        warn_after: None,
        now,
    };
    let (token, exp) = issuer
        .issue(&req)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    body["kind"] = json!("TokenRequest");
    body["apiVersion"] = json!("authentication.k8s.io/v1");
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["metadata"]["name"] = json!(name);
    body["metadata"]["namespace"] = json!(ns);
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["spec"]["expirationSeconds"] = json!(expiration);
    if audiences.is_empty() {
        body["spec"]["audiences"] = json!([issuer.issuer()]);
    }
    body["status"] = json!({"token": token, "expirationTimestamp": handlers::rfc3339(exp)});
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `PUT namespaces/<n>/finalize`: the namespace controller removes `spec.finalizers`; with
/// none left, a terminating namespace is gone.
async fn finalize(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    body: &Value,
) -> Result<Response<Body>, ApiError> {
    let key = t.resource.key(None, name);
    let current = ctx
        .storage
        .get(&key)
        .await
        .map_err(|e| storage_error(t, name, e))?;
    let old = served(&current)?;
    let mut obj = old.clone();
    obj["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
    let spec_done = obj["spec"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    let meta_done = obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if obj["metadata"]["deletionTimestamp"].is_string() && spec_done && meta_done {
        let (gone, _) = ctx
            .storage
            .delete(&key, current.revision)
            .await
            .map_err(|e| storage_error(t, name, e))?;
        return Ok(json_response(StatusCode::OK, &served(&gone)?));
    }
    let bytes = for_storage(&mut obj, &old)?;
    let rev = ctx
        .storage
        .update(&key, current.revision, bytes)
        .await
        .map_err(|e| storage_error(t, name, e))?;
    Ok(written(StatusCode::OK, obj, rev))
}

/// log / exec / attach / portforward: the pod, container and node checks of
/// kube-apiserver, then the request is proxied to the pod's kubelet
/// ([`super::kubelet_proxy`]).
async fn pod_stream(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    sub: &str,
    req: Request<Incoming>,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let stored = ctx
        .storage
        .get(&t.resource.key(t.namespace.as_deref(), name))
        .await
        .map_err(|e| storage_error(t, name, e))?;
    let obj = served(&stored)?;
    if t.resource.name == "pods" && sub != "portforward" {
        let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|l| obj["spec"][*l].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str())
            .collect();
        match q.get("container").map(String::as_str) {
            Some(c) if !c.is_empty() => {
                if !names.contains(&c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
            }
            _ => {
                let main: Vec<&str> = obj["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                if main.len() > 1 {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        main.join(" ")
                    )));
                }
            }
        }
    }
    let node = obj["spec"]["nodeName"].as_str().unwrap_or("");
    if t.resource.name == "pods" && node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if t.resource.name != "pods" {
        return Err(ApiError::unavailable(format!(
            "{sub} of {} is not served by minik yet",
            t.resource.name
        )));
    }
    let ns = t.namespace.as_deref().unwrap_or("default");
    let container = match q.get("container").map(String::as_str) {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => obj["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    };
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
    let node_obj = match ctx.storage.get(&nodes.key(None, node)).await {
        Ok(stored) => served(&stored)?,
        Err(StorageError::NotFound { .. }) => {
            return Err(ApiError::not_found("", "nodes", node));
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let Some(client) = &ctx.kubelet else {
        return Err(ApiError::unavailable(format!(
            "cannot reach the kubelet of node {node:?}: the API server runs without \
             --kubelet-client-certificate, --kubelet-client-key and \
             --kubelet-certificate-authority"
        )));
    };
    let (host, port) = super::kubelet_proxy::kubelet_address(&node_obj);
    let raw: Vec<(String, String)> =
        crate::kubelet::streaming::server::query_pairs(req.uri().query().unwrap_or(""));
    let enc = |s: &str| encode_component(s);
    let (ns_e, pod_e, c_e) = (enc(ns), enc(name), enc(&container));
    match sub {
        "log" => {
            let mut params = Vec::new();
            for (k, v) in &raw {
                match k.as_str() {
                    "follow" | "previous" | "timestamps" if v == "true" || v == "1" => {
                        params.push(format!("{k}=true"))
                    }
                    "sinceSeconds" | "sinceTime" | "tailLines" | "limitBytes" if !v.is_empty() => {
                        params.push(format!("{k}={}", enc(v)))
                    }
                    _ => {}
                }
            }
            let mut path = format!("/containerLogs/{ns_e}/{pod_e}/{c_e}");
            if !params.is_empty() {
                path = format!("{path}?{}", params.join("&"));
            }
            client.stream_get(&host, port, &path).await
        }
        "exec" | "attach" => {
            let mut params = Vec::new();
            for (k, v) in &raw {
                let on = v == "true" || v == "1";
                match k.as_str() {
                    "stdin" if on => params.push("input=1".to_string()),
                    "stdout" if on => params.push("output=1".to_string()),
                    "stderr" if on => params.push("error=1".to_string()),
                    "tty" if on => params.push("tty=1".to_string()),
                    "command" if sub == "exec" => params.push(format!("command={}", enc(v))),
                    _ => {}
                }
            }
            let path = format!("/{sub}/{ns_e}/{pod_e}/{c_e}?{}", params.join("&"));
            client.upgrade(&host, port, &path, req).await
        }
        _ => {
            let path = format!("/portForward/{ns_e}/{pod_e}");
            client.upgrade(&host, port, &path, req).await
        }
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The create-only resources: access reviews, whoami, and the `bindings` resource.
pub(super) async fn review(
    ctx: &Ctx,
    user: &User,
    t: &Target,
    mut body: Value,
) -> Result<Response<Body>, ApiError> {
    let r = t.resource;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    body["kind"] = json!(r.kind);
    body["apiVersion"] = json!(r.api_version());
    // The authorizer's answer for `u` on the attributes of a review.
    let allowed = |u: &User, attrs: &Value, non_resource: &Value| -> (bool, String) {
        let verb = attrs["verb"]
            .as_str()
            .or(non_resource["verb"].as_str())
            .unwrap_or("");
        let path = non_resource["path"].as_str();
        let a = Attributes {
            user: u,
            verb,
            api_group: attrs["group"].as_str().unwrap_or(""),
            resource: attrs["resource"].as_str().unwrap_or(""),
            subresource: attrs["subresource"].as_str().unwrap_or(""),
            namespace: attrs["namespace"].as_str().unwrap_or(""),
            name: attrs["name"].as_str().unwrap_or(""),
            path: if attrs.is_object() { None } else { path },
        };
        match ctx.rbac.authorize(&a) {
            Decision::Allow => (true, String::new()),
            Decision::Deny(reason) => (false, reason),
        }
    };
    let review_status = |(ok, reason): (bool, String)| {
        let mut st = json!({"allowed": ok});
        if ok {
            st["reason"] = json!("RBAC: allowed");
        } else if !reason.is_empty() {
            st["reason"] = json!(reason);
        }
        st
    };
    match r.kind {
        "Binding" => {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            return bind(ctx, t.namespace.as_deref().unwrap_or(""), &name, &body).await;
        }
        "SelfSubjectReview" => {
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            if !user.extra.is_empty() {
                info["extra"] = json!(user.extra);
            }
            body["status"] = json!({"userInfo": info});
        }
        "SelfSubjectAccessReview" => {
            let spec = &body["spec"];
            body["status"] = review_status(allowed(
                user,
                &spec["resourceAttributes"],
                &spec["nonResourceAttributes"],
            ));
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec = &body["spec"];
            let subject = User {
                name: spec["user"].as_str().unwrap_or("").to_string(),
                uid: spec["uid"].as_str().unwrap_or("").to_string(),
                groups: spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
                extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
            };
            let mut attrs = spec["resourceAttributes"].clone();
            if r.kind == "LocalSubjectAccessReview" && attrs.is_object() {
                attrs["namespace"] = json!(t.namespace.clone().unwrap_or_default());
            }
            body["status"] =
                review_status(allowed(&subject, &attrs, &spec["nonResourceAttributes"]));
        }
        "SelfSubjectRulesReview" => {
            let ns = body["spec"]["namespace"].as_str().unwrap_or("").to_string();
            body["status"] = ctx.rbac.rules_review_status(user, &ns);
        }
        "TokenReview" => {
            let token = body["spec"]["token"].as_str().unwrap_or("");
            let now = handlers::now_secs();
            body["status"] = match ctx.tokens.as_ref().map(|a| a.authenticate(token, now)) {
                Some(Ok((u, claims))) => json!({
                    "authenticated": true,
                    "user": {"username": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra},
                    "audiences": claims.audiences,
                }),
                Some(Err(e)) => json!({"authenticated": false, "error": e.to_string()}),
                None => {
                    json!({"authenticated": false, "error": "service-account token authentication is not configured (--service-account-key-file)"})
                }
            };
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    if body["metadata"].is_null() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_response(StatusCode::CREATED, &body))
}
