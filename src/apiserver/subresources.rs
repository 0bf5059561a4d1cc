//! Subresources with logic of their own, and the create-only "review" resources:
//!
//! - `<workload>/scale`: an `autoscaling/v1` Scale view of `spec.replicas` (`kubectl scale`);
//! - `pods/binding` (and the `bindings` resource): the scheduler's decision, setting
//!   `spec.nodeName` once and the `PodScheduled` condition;
//! - `pods/eviction`: a delete that respects PodDisruptionBudgets (`kubectl drain`);
//! - `pods/log`, `exec`, `attach`, `portforward`, `proxy`: checked here (pod, container, node),
//!   then served by the pod's kubelet;
//! - `namespaces/<n>/finalize`: the namespace controller's last step;
//! - SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview, SubjectAccessReview:
//!   answered from the authorizer, never stored (`kubectl auth can-i`, `auth whoami`).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::handlers::{
    self, PatchKind, Target, WriteOptions, for_storage, now_rfc3339, parse_patch, read_body,
    read_raw, served, storage_error, written,
};
use super::resources::{self, Resource};
use super::server::{Body, Ctx, User, authorize, json_response};
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
        ("finalize", "update") => {
            let body = read_body(req).await?;
            finalize(ctx, t, name, &body).await
        }
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => {
            pod_stream(ctx, t, name, sub, q).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `status.selector` of a Scale: the workload's selector as a label-selector string.
fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
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
        None => selector_string(&obj["spec"]["selector"]),
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
                    PatchKind::Merge(m) | PatchKind::Strategic(m) => json_patch::merge(&mut s, m),
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
            let selector = selector_string(&pdb["spec"]["selector"]);
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

/// log / exec / attach / portforward / proxy: the pod, container and node checks of
/// kube-apiserver; the stream itself comes from the pod's kubelet.
async fn pod_stream(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    sub: &str,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let stored = ctx
        .storage
        .get(&t.resource.key(t.namespace.as_deref(), name))
        .await
        .map_err(|e| storage_error(t, name, e))?;
    let obj = served(&stored)?;
    if t.resource.name == "pods" && sub != "portforward" && sub != "proxy" {
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
    Err(ApiError::unavailable(format!(
        "no kubelet is serving node {:?}: {sub} needs the node's kubelet",
        if node.is_empty() { name } else { node }
    )))
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
    let allowed = |u: &User, attrs: &Value| -> bool {
        let group = attrs["group"].as_str().unwrap_or("");
        let resource = attrs["resource"].as_str().unwrap_or("");
        let verb = attrs["verb"].as_str().unwrap_or("");
        let ns = attrs["namespace"].as_str().filter(|n| !n.is_empty());
        let res = resources::RESOURCES
            .iter()
            .find(|x| x.group == group && x.name == resource);
        match res {
            Some(res) => authorize(u, verb, res, ns).is_ok(),
            None => u.groups.iter().any(|g| g == "system:masters"),
        }
    };
    match r.kind {
        "Binding" => {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            return bind(ctx, t.namespace.as_deref().unwrap_or(""), &name, &body).await;
        }
        "SelfSubjectReview" => {
            body["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        "SelfSubjectAccessReview" => {
            let attrs = &body["spec"]["resourceAttributes"];
            let ok = if attrs.is_object() {
                allowed(user, attrs)
            } else {
                user.groups.iter().any(|g| g == "system:masters")
            };
            body["status"] = json!({"allowed": ok});
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec = &body["spec"];
            let subject = User {
                name: spec["user"].as_str().unwrap_or("").to_string(),
                groups: spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
            };
            let ok = allowed(&subject, &spec["resourceAttributes"]);
            body["status"] = json!({"allowed": ok});
        }
        "SelfSubjectRulesReview" => {
            let master = user.groups.iter().any(|g| g == "system:masters");
            body["status"] = if master {
                json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": false,
                })
            } else {
                json!({
                    "resourceRules": [{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}],
                    "incomplete": false,
                })
            };
        }
        "TokenReview" => {
            body["status"] = json!({"authenticated": false, "error": "service-account tokens are not accepted by this server yet"});
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    if body["metadata"].is_null() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_response(StatusCode::CREATED, &body))
}
