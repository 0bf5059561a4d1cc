//! The REST verbs on resources — what kube-apiserver's generic registry does for every type:
//! get, list, watch, create, update (PUT), patch, delete and deletecollection, plus the
//! `/status` subresource. Each write runs the same pipeline as in Kubernetes: decode (typed, per
//! `fieldValidation`), default ([`super::defaults`]), admit ([`super::admission`]), validate
//! ([`super::validation`]), then a store transaction guarded by resourceVersion
//! ([`super::storage`]). Subresources with their own logic (scale, binding, eviction, log) live
//! in [`super::subresources`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use std::sync::Arc;

use super::admission;
use super::cache::{CacheWatch, CachedObject, Event, Freshness, WatchFrom, watch_line};
use super::defaults;
use super::gojson;
use super::printers;
use super::resources::{self, Resource};
use super::selector::{FieldSelector, Selector};
use super::server::{Body, Ctx, MAX_BODY, User, authorize, full, json_response, query};
use super::status::{ApiError, FieldError};
use super::storage::{StorageError, Stored};
use super::subresources;
use super::typed;
use super::validation;

/// The request target, parsed.
pub(super) struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn not_found() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

/// Reads `[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]` of a group/version.
pub(super) fn parse_target(
    group: &str,
    version: &str,
    segments: &[&str],
) -> Result<Target, ApiError> {
    let (namespace, rest) = match segments {
        // `namespaces/<name>/status` is the namespace's own subresource.
        ["namespaces", _, "status" | "finalize"] => (None, segments),
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (res, name, sub) = match rest {
        [res] => (*res, None, None),
        [res, name] => (*res, Some(name.to_string()), None),
        [res, name, sub] => (*res, Some(name.to_string()), Some(sub.to_string())),
        // `…/<name>/proxy/<path>`: the rest is the path at the backend.
        [res, name, "proxy", ..] => (*res, Some(name.to_string()), Some("proxy".to_string())),
        _ => return Err(not_found()),
    };
    let resource = resources::find(group, version, res).ok_or_else(not_found)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(not_found());
    }
    if let Some(s) = &sub
        && !resource.has_subresource(s)
    {
        return Err(not_found());
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource: sub,
    })
}

/// `?fieldValidation=`: what to do with fields the type does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

fn field_validation(q: &BTreeMap<String, String>) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// Per-request options every write shares.
pub(super) struct WriteOptions {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// `Warning` headers for the answer (unknown fields under `Warn`).
    pub warnings: Vec<String>,
    /// Who writes, for managedFields (`?fieldManager=`, or from the User-Agent).
    pub manager: String,
    /// Server-side apply writes its own managedFields.
    pub applying: bool,
    /// The request body when it is the object itself in JSON (for the strict decoder's
    /// duplicate-field check, which serde_json's `Value` can no longer make).
    pub raw_json: Option<RawJson>,
    /// Set by a write that reached the store: the key and the revision it was written at.
    pub stored: Option<(String, i64)>,
}

/// A JSON request body as it came, and whether it gives a key twice in an object (found by
/// the parse that made the object).
#[derive(Debug, Clone)]
pub struct RawJson {
    pub bytes: Bytes,
    pub duplicates: bool,
}

/// Adds `Warning: 299 - "…"` headers, as kubectl prints them.
pub(super) fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Checks an incoming object against the URL and its type, decodes it as the type, fills the
/// defaults and validates it (`old` is the stored object on update). Returns the name.
pub(super) fn admit(
    ctx: &Ctx,
    t: &Target,
    name_from_url: Option<&str>,
    obj: &mut Value,
    old: Option<&Value>,
    opts: &mut WriteOptions,
) -> Result<String, ApiError> {
    let r = t.resource;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    // A key given twice: serde_json kept the last, Go's decoder decodes the second into what the
    // first left (under Strict the request is refused below, nothing is stored either way). The
    // body's parse noted whether it does; a second, ordered scan only when there is something to
    // say.
    let duplicates = opts.raw_json.as_ref().is_some_and(|raw| raw.duplicates);
    if let (Some(raw), Some(root)) = (&opts.raw_json, ctx.definition_of(r))
        && opts.validation != FieldValidation::Strict
        && duplicates
        && let Some(go) = gojson::decode_like_go(&raw.bytes, ctx.openapi.definitions(), root)
        && go.is_object()
    {
        *obj = go;
    }
    let kind = obj["kind"].as_str().unwrap_or("").to_string();
    let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
    // As the real decoder words it: an apiVersion the type is not served in, or another kind.
    let body_version = api_version.rsplit('/').next().unwrap_or("").to_string();
    if !api_version.is_empty() && api_version != r.api_version() {
        let kind_shown = if kind.is_empty() {
            r.kind
        } else {
            kind.as_str()
        };
        return Err(ApiError::bad_request(format!(
            "{kind_shown} in version \"{body_version}\" cannot be handled as a {}: no kind \"{kind_shown}\" is registered for version \"{api_version}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\"",
            r.kind
        )));
    }
    if !kind.is_empty() && kind != r.kind {
        let internal = if r.group.is_empty() {
            "core"
        } else {
            r.group.split('.').next().unwrap_or(r.group)
        };
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{body_version}\" cannot be handled as a {}: converting ({body_version}.{kind}) to ({internal}.{}): unknown conversion",
            r.kind, r.kind
        )));
    }
    let handled = |why: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {why}",
            r.kind, r.version, r.kind
        ))
    };
    // metadata must be an object (Go's decoder refuses anything else).
    if obj
        .get("metadata")
        .is_some_and(|m| !m.is_null() && !m.is_object())
    {
        let path = [gojson::Step::Key("metadata".into())];
        let why = ctx
            .definition_of(r)
            .and_then(|root| gojson::unmarshal_error(ctx.openapi.definitions(), root, obj, &path))
            .unwrap_or_else(|| "metadata: invalid type, expected an object".to_string());
        return Err(handled(why));
    }
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    let mut name = meta["name"].as_str().unwrap_or("").to_string();
    let mut generated_from: Option<String> = None;
    if name.is_empty()
        && let Some(prefix) = meta["generateName"].as_str()
    {
        generated_from = Some(prefix.to_string());
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
    if name.is_empty() {
        return Err(ApiError::invalid(
            r.group,
            r.kind,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
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
    // The typed decode: wrong JSON types are a 400, unknown fields are dropped (and reported).
    if let Some(decoded) = typed::decode(r, obj) {
        let decoded = decoded.map_err(|e| {
            handled(e.go_message(ctx.openapi.definitions(), ctx.definition_of(r), obj))
        })?;
        // The strict decoder's complaints, in the order it meets them in the body: unknown
        // fields, and keys given twice (which only the raw JSON still shows).
        let strict: Vec<String> = match (&opts.validation, &opts.raw_json) {
            (FieldValidation::Ignore, _) => Vec::new(),
            (_, Some(_)) if !duplicates && decoded.unknown.is_empty() => Vec::new(),
            (_, Some(raw)) => gojson::strict_errors(&raw.bytes, &decoded.unknown, false),
            (_, None) => decoded
                .unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect(),
        };
        match opts.validation {
            FieldValidation::Strict if !strict.is_empty() => {
                return Err(handled(format!(
                    "strict decoding error: {}",
                    strict.join(", ")
                )));
            }
            FieldValidation::Warn => opts.warnings.extend(strict),
            _ => {}
        }
        if let Some(typed) = decoded.object {
            *obj = typed;
        }
    } else if let Some(custom) = r.custom {
        // A custom object: checked against its CRD's schema and pruned of unknown fields.
        let mut errors = Vec::new();
        let mut unknown = Vec::new();
        super::crd::validate_object(custom, obj, &mut errors, &mut unknown);
        // A custom object is decoded into a map first: only its top level is checked for
        // duplicate keys, and those come before the unknown fields the schema prunes.
        let mut strict = match (&opts.validation, &opts.raw_json) {
            (FieldValidation::Ignore, _) | (_, None) => Vec::new(),
            (_, Some(_)) if !duplicates => Vec::new(),
            (_, Some(raw)) => gojson::strict_errors(&raw.bytes, &[], true),
        };
        strict.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
        let unknown = strict;
        match opts.validation {
            FieldValidation::Strict if !unknown.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    r.kind,
                    r.version,
                    r.kind,
                    unknown.join(", ")
                )));
            }
            FieldValidation::Warn => opts.warnings.extend(unknown),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(r.group, r.kind, &name, &errors));
        }
    }
    if r.group.is_empty() && r.name == "secrets" {
        secret_string_data(obj);
    }
    defaults::apply(r, obj);
    let mut errors: Vec<FieldError> = Vec::new();
    // apimachinery's ValidateObjectMeta: the generateName as a prefix, then the name (the
    // generated one too).
    if let Some(prefix) = &generated_from {
        errors.extend(validation::generate_name_error(r, prefix));
    }
    errors.extend(validation::name_error(r, &name));
    validation::validate(r, obj, old, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(r.group, r.kind, &name, &errors));
    }
    Ok(name)
}

/// A Secret's `stringData` is a write-only convenience: merged into `data`, encoded.
fn secret_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj
        .as_object_mut()
        .and_then(|m| m.remove("stringData"))
        .and_then(|v| v.as_object().cloned())
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

pub(super) async fn resource_request(
    ctx: &Ctx,
    user: &User,
    t: Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if t.subresource.as_deref() == Some("proxy") && t.name.is_some() {
        return super::proxy::handle(ctx, user, &t, req).await;
    }
    let q = query(&req);
    let table = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(printers::wants_table);
    // `?dryRun=All`: every check runs, nothing is stored.
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            let options = match *req.method() {
                Method::POST => "CreateOptions",
                Method::PUT => "UpdateOptions",
                Method::PATCH => "PatchOptions",
                _ => "DeleteOptions",
            };
            let mut e = FieldError::not_supported("dryRun", &Value::Null, &["All"]);
            e.value = format!("[]string{{{other:?}}}");
            return Err(ApiError::invalid("meta.k8s.io", options, "", &[e]));
        }
    };
    let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be more than 128 bytes (got {})",
                m.len()
            )));
        }
        Some(m) => m.clone(),
        None => super::ssa::default_manager(
            req.headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
    };
    let mut opts = WriteOptions {
        dry_run,
        validation: field_validation(&q)?,
        warnings: Vec::new(),
        manager,
        applying: false,
        raw_json: None,
        stored: None,
    };
    let ns = t.namespace.clone();
    let r = t.resource;
    let method = req.method().clone();
    let verb = match (&method, &t.name) {
        (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => return Err(ApiError::method_not_allowed()),
    };
    if !r.verbs().contains(&verb) && t.subresource.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    authorize(
        ctx,
        user,
        verb,
        r,
        t.subresource.as_deref().unwrap_or(""),
        ns.as_deref(),
        t.name.as_deref().unwrap_or(""),
    )?;
    // A version served in another form than the stored one works on the stored form.
    let view = super::convert::view(r);
    let outer = r;
    let (t, r) = match &view {
        Some(v) => (
            Target {
                resource: v.storage,
                ..t
            },
            v.storage,
        ),
        None => (t, r),
    };
    let present = |v: Value| match &view {
        Some(vw) => vw.present(&v),
        None => v,
    };
    // An update's answer: in the stored form, also handed to the watch cache with its JSON.
    let answer_update = |obj: Value, rev: i64, opts: &WriteOptions| match &view {
        None => answer_written(ctx, &t, StatusCode::OK, obj, opts),
        Some(_) => written(StatusCode::OK, present(obj), rev),
    };
    let to_storage = |v: Value| -> Result<Value, ApiError> {
        let Some(vw) = &view else { return Ok(v) };
        let mut errors = Vec::new();
        (vw.validate)(&v, &mut errors);
        if !errors.is_empty() {
            let name = v["metadata"]["name"].as_str().unwrap_or("");
            return Err(ApiError::invalid(outer.group, outer.kind, name, &errors));
        }
        Ok((vw.to_storage)(&v))
    };
    let resp = match (verb, t.name.clone(), t.subresource.as_deref()) {
        ("watch", None, None) => return watch(ctx, &t, &q, table, view).await,
        ("list", None, None) => return list(ctx, &t, &q, table, view).await,
        ("get", Some(name), None | Some("status")) => {
            // A get at a resourceVersion is served by the watch cache, which parses it: one that
            // does not parse is its bare error (500, no reason).
            if let Some(rv) = q.get("resourceVersion").filter(|rv| !rv.is_empty()) {
                parse_resource_version(rv).map_err(|e| ApiError::new(500, "", e))?;
            }
            let stored = ctx
                .storage
                .get(&r.key(ns.as_deref(), &name))
                .await
                .map_err(|e| storage_error(&t, &name, e))?;
            // The stored JSON as it is, with its resourceVersion written in: no decode.
            if !table
                && view.is_none()
                && let Some(body) = stored.served_json()
            {
                return Ok(full(StatusCode::OK, "application/json", body));
            }
            let obj = served(&stored)?;
            if table {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(
                    StatusCode::OK,
                    &printers::table(r, &[obj], meta, now_secs()),
                ));
            }
            Ok(json_response(StatusCode::OK, &present(obj)))
        }
        ("create", None, None) => {
            let (body, raw) = read_object(req, outer).await?;
            if r.verbs == resources::Verbs::CreateOnly {
                return subresources::review(ctx, user, &t, body).await;
            }
            if view.is_none() {
                opts.raw_json = raw;
                create(ctx, &t, body, &mut opts).await
            } else {
                let body = if body.is_object() {
                    to_storage(body)?
                } else {
                    body
                };
                let (code, obj) = create_object(ctx, &t, body, &mut opts).await?;
                Ok(json_response(code, &present(obj)))
            }
        }
        ("update", Some(name), sub @ (None | Some("status"))) => {
            let (mime, bytes) = read_raw(req).await?;
            let (mut body, raw) = parse_with_raw(&mime, &bytes, outer)?;
            if view.is_none() {
                opts.raw_json = raw;
            }
            let status = sub.is_some();
            let expected = body["metadata"]["resourceVersion"]
                .as_str()
                .filter(|rv| !rv.is_empty())
                .map(str::to_string);
            if let Some(rv) = &expected
                && rv.parse::<i64>().is_err()
            {
                return Err(ApiError::invalid(
                    r.group,
                    r.kind,
                    &name,
                    &[FieldError::invalid_str(
                        "metadata.resourceVersion",
                        rv,
                        "must be a number",
                    )],
                ));
            }
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ));
            }
            if view.is_some() {
                body = to_storage(body)?;
            }
            // The body itself for the first try; a try after a conflict (a PUT without a
            // resourceVersion is retried) decodes it again, so no try pays for a copy.
            let mut first = Some(body);
            let (obj, rev) = update(ctx, &t, &name, status, &mut opts, |_old| {
                match first.take() {
                    Some(body) => Ok(body),
                    None => {
                        let (body, _) = parse_object(&mime, &bytes, outer)?;
                        if view.is_some() {
                            to_storage(body)
                        } else {
                            Ok(body)
                        }
                    }
                }
            })
            .await?;
            Ok(answer_update(obj, rev, &opts))
        }
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let (mime, raw) = read_raw(req).await?;
            let patch = parse_patch(&mime, &raw)?;
            if let PatchKind::Apply(applied) = &patch {
                return server_side_apply(ctx, &t, &name, sub, applied, &q, &mut opts)
                    .await
                    .map(|resp| with_warnings(resp, &opts.warnings));
            }
            let validation = opts.validation;
            let (obj, rev) = update(ctx, &t, &name, sub.is_some(), &mut opts, |old| {
                match &view {
                    // Patches apply to the served form.
                    Some(vw) => {
                        let patched = apply_patch(ctx, outer, &vw.present(old), &patch)?;
                        to_storage(patched)
                    }
                    None => {
                        let patched = apply_patch(ctx, r, old, &patch)?;
                        patched_decodes(ctx, r, &patched, &patch, validation)?;
                        Ok(patched)
                    }
                }
            })
            .await?;
            Ok(answer_update(obj, rev, &opts))
        }
        ("delete", Some(name), None) => {
            let (_, raw) = read_raw(req).await?;
            let options = delete_options(&raw, &q)?;
            delete(ctx, &t, &name, &options, opts.dry_run).await
        }
        ("deletecollection", None, None) => {
            let (_, raw) = read_raw(req).await?;
            let options = delete_options(&raw, &q)?;
            delete_collection(ctx, &t, &q, &options, opts.dry_run).await
        }
        (_, Some(name), Some(sub)) => {
            subresources::handle(ctx, &t, &name, sub, verb, req, &q, &mut opts).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }?;
    Ok(with_warnings(resp, &opts.warnings))
}

/// `POST` of a new object.
pub(super) async fn create(
    ctx: &Ctx,
    t: &Target,
    obj: Value,
    opts: &mut WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let (code, obj) = create_object(ctx, t, obj, opts).await?;
    Ok(answer_written(ctx, t, code, obj, opts))
}

/// The answer to a write: the object as JSON. When the write reached the store, the object also
/// goes to the watch cache (whose event for that write then needs no decode), serialized once
/// for both.
fn answer_written(
    ctx: &Ctx,
    t: &Target,
    code: StatusCode,
    obj: Value,
    opts: &WriteOptions,
) -> Response<Body> {
    let Some((key, revision)) = &opts.stored else {
        return json_response(code, &obj);
    };
    // Offered before it is serialized: the store's watch may deliver the write any moment, and
    // an object offered too late is decoded again by the cache.
    let cached = Arc::new(CachedObject::new(obj));
    ctx.cache
        .offer(&t.resource.key(None, ""), key, *revision, cached.clone());
    full(code, "application/json", cached.json().clone())
}

/// Creates an object; the answer's code and the object as stored (with its resourceVersion).
pub(super) async fn create_object(
    ctx: &Ctx,
    t: &Target,
    mut obj: Value,
    opts: &mut WriteOptions,
) -> Result<(StatusCode, Value), ApiError> {
    let r = t.resource;
    let ns = t.namespace.clone();
    let name = admit(ctx, t, None, &mut obj, None, opts)?;
    if let Some(ns) = &ns {
        // NamespaceLifecycle: objects go only into namespaces that exist and are not going.
        // From the watch cache, as the real plugin reads its informer; etcd when the cache
        // does not have it (yet).
        let ns_res = resources::find("", "v1", "namespaces").unwrap_or(r);
        let ns_key = ns_res.key(None, ns);
        let namespace = match ctx.cache.get(&ns_res.key(None, ""), &ns_key).await {
            Some(cached) => cached.value.clone(),
            None => {
                let stored = ctx
                    .storage
                    .get(&ns_key)
                    .await
                    .map_err(|_| ApiError::not_found("", "namespaces", ns))?;
                served(&stored)?
            }
        };
        if namespace["status"]["phase"] == "Terminating" {
            return Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    qualified(r)
                ),
                details: Some(
                    json!({"name": name, "kind": r.name, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                ),
            });
        }
    }
    let uid = new_uid();
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(now_rfc3339());
    if let Some(m) = meta.as_object_mut() {
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(f);
        }
    }
    admission::prepare_create(r, &mut obj, &uid);
    if r.group.is_empty() && r.name == "pods" {
        priority_admission(ctx, &mut obj, &name).await?;
    }
    super::quota::admit_create(ctx, t, &obj, &name, opts.dry_run).await?;
    if !opts.applying {
        obj = track(ctx, r, None, obj, &opts.manager, "");
    }
    let key = r.key(ns.as_deref(), &name);
    let _guard = if r.group.is_empty() && r.name == "services" {
        let guard = ctx.alloc_lock.lock().await;
        // An existing service is AlreadyExists, not a clash with its own address.
        if !opts.dry_run && ctx.storage.get(&key).await.is_ok() {
            return Err(ApiError::already_exists(r.group, r.name, &name));
        }
        let others = stored_objects(ctx, t, "").await?;
        ctx.allocator
            .allocate(&mut obj, None, &others)
            .map_err(|e| ApiError::invalid(r.group, r.kind, &name, &e))?;
        Some(guard)
    } else {
        None
    };
    if opts.dry_run {
        if ctx.storage.get(&key).await.is_ok() {
            return Err(ApiError::already_exists(r.group, r.name, &name));
        }
        return Ok((StatusCode::CREATED, obj));
    }
    let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
    let rev = ctx
        .storage
        .create(&key, bytes)
        .await
        .map_err(|e| storage_error(t, &name, e))?;
    opts.stored = Some((key, rev));
    if is_crd(r) {
        super::crd::register(&obj);
    }
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
    Ok((StatusCode::CREATED, obj))
}

/// The Priority admission plugin: a pod's `priorityClassName` becomes its `spec.priority` (and
/// its `preemptionPolicy`, unless set). The two classes every cluster has,
/// `system-node-critical` and `system-cluster-critical`, need no object. (A `globalDefault`
/// class is not looked up: a pod without a class gets priority 0.)
async fn priority_admission(ctx: &Ctx, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let Some(class) = obj["spec"]["priorityClassName"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let (value, policy) = match class.as_str() {
        "system-node-critical" => (2_000_001_000i64, None),
        "system-cluster-critical" => (2_000_000_000, None),
        _ => {
            let Some(pc) = super::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            else {
                return Ok(());
            };
            let stored = ctx.storage.get(&pc.key(None, &class)).await.ok();
            let Some(pc) = stored.and_then(|s| s.object().ok()) else {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "pods \"{name}\" is forbidden: no PriorityClass with name {class} was found"
                    ),
                ));
            };
            (
                pc["value"].as_i64().unwrap_or(0),
                pc["preemptionPolicy"].as_str().map(str::to_string),
            )
        }
    };
    let spec = &mut obj["spec"];
    if let Some(given) = spec["priority"].as_i64()
        && given != value
        && given != 0
    {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            ),
        ));
    }
    spec["priority"] = json!(value);
    if let Some(p) = policy {
        spec["preemptionPolicy"] = json!(p);
    }
    Ok(())
}

/// Every stored object of the target's type in all namespaces (for allocations and checks).
async fn stored_objects(ctx: &Ctx, t: &Target, except: &str) -> Result<Vec<Value>, ApiError> {
    let page = ctx
        .storage
        .list(&t.resource.key(None, ""), 0, 0, None)
        .await
        .map_err(|e| storage_error(t, "", e))?;
    let mut out = Vec::new();
    for s in &page.items {
        let v = served(s)?;
        if v["metadata"]["uid"] != except {
            out.push(v);
        }
    }
    Ok(out)
}

/// An update of a stored object (PUT, PATCH, the `/status` subresource, and the server's own
/// changes): `change` makes the new object from the current one; it is re-run on a conflict
/// with a concurrent writer (as kube-apiserver's GuaranteedUpdate) unless the new object names
/// a resourceVersion, which must then be the current one (409 otherwise).
pub(super) async fn update(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    status: bool,
    opts: &mut WriteOptions,
    mut change: impl FnMut(&Value) -> Result<Value, ApiError>,
) -> Result<(Value, i64), ApiError> {
    let r = t.resource;
    let key = r.key(t.namespace.as_deref(), name);
    // The first try starts from the watch cache's copy, as kube-apiserver's cacher hands
    // GuaranteedUpdate the cached object: no store read when it is current. The write itself
    // is conditional on the revision, so a stale copy only costs a retry from the store.
    let mut cached = ctx.cache.get(&r.key(None, ""), &key).await;
    // An update without a resourceVersion is retried until it lands, as GuaranteedUpdate loops
    // (bounded here only so that a store gone wrong cannot spin a request forever).
    for attempt in 0..UPDATE_TRIES {
        if attempt > 0 {
            tokio::task::yield_now().await;
        }
        // The cached copy is only read (never cloned): the change builds a new object.
        let from_cache = cached.take().and_then(|c| {
            let rev = c.value["metadata"]["resourceVersion"]
                .as_str()?
                .parse::<i64>()
                .ok()?;
            Some((c, rev))
        });
        let was_cached = from_cache.is_some();
        let (holder, revision) = match from_cache {
            Some(found) => found,
            None => {
                let current = ctx
                    .storage
                    .get(&key)
                    .await
                    .map_err(|e| storage_error(t, name, e))?;
                (
                    Arc::new(CachedObject::new(served(&current)?)),
                    current.revision,
                )
            }
        };
        let old: &Value = &holder.value;
        let mut obj = change(old)?;
        let pinned = obj["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        if let Some(rv) = &pinned
            && *rv != revision.to_string()
        {
            if was_cached {
                // The cache may not have seen the client's version yet: ask the store.
                continue;
            }
            return Err(ApiError::conflict(r.group, r.name, name));
        }
        if status {
            admission::prepare_status_update(&mut obj, old);
            admit(ctx, t, Some(name), &mut obj, Some(old), opts)?;
        } else {
            admit(ctx, t, Some(name), &mut obj, Some(old), opts)?;
            admission::prepare_update(r, &mut obj, old);
        }
        if !opts.applying {
            obj = track(
                ctx,
                r,
                Some(old),
                obj,
                &opts.manager,
                if status { "status" } else { "" },
            );
        }
        // Deletion is the server's: clients can neither set nor clear deletionTimestamp.
        for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match old["metadata"].get(f) {
                Some(v) => obj["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        let _guard = if r.group.is_empty() && r.name == "services" && !status {
            let guard = ctx.alloc_lock.lock().await;
            let uid = old["metadata"]["uid"].as_str().unwrap_or("").to_string();
            let others = stored_objects(ctx, t, &uid).await?;
            ctx.allocator
                .allocate(&mut obj, Some(old), &others)
                .map_err(|e| ApiError::invalid(r.group, r.kind, name, &e))?;
            Some(guard)
        } else {
            None
        };
        let bytes = for_storage(&mut obj, old)?;
        // Nothing changed: no write, no event, the same resourceVersion (as kube-apiserver).
        let unchanged = same_but_resource_version(&obj, old);
        // The last finalizer of an object being deleted is gone: the object goes.
        let delete_now = r.name != "pods"
            && obj["metadata"]["deletionTimestamp"].is_string()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if was_cached && (unchanged || opts.dry_run || delete_now) {
            // A no-op or dry run writes nothing the copy could be checked against, and the
            // delete acts (on custom objects) before its write: confirm a cached copy with the
            // store first (as GuaranteedUpdate refreshes a cached state).
            continue;
        }
        if unchanged || opts.dry_run {
            obj["metadata"]["resourceVersion"] = json!(revision.to_string());
            return Ok((obj, revision));
        }
        if delete_now {
            if is_crd(r) {
                remove_custom_objects(ctx, t, &obj).await?;
            }
            let (_, rev) = ctx
                .storage
                .delete(&key, revision)
                .await
                .map_err(|e| storage_error(t, name, e))?;
            obj["metadata"]["resourceVersion"] = json!(rev.to_string());
            return Ok((obj, rev));
        }
        match ctx.storage.update(&key, revision, bytes).await {
            Ok(rev) => {
                obj["metadata"]["resourceVersion"] = json!(rev.to_string());
                if is_crd(r) {
                    super::crd::register(&obj);
                }
                opts.stored = Some((key, rev));
                return Ok((obj, rev));
            }
            Err(StorageError::Conflict { .. }) if pinned.is_none() => continue,
            Err(e) => return Err(storage_error(t, name, e)),
        }
    }
    Err(ApiError::conflict(r.group, r.name, name))
}

/// How many times an update re-reads and retries after losing a race to another writer.
const UPDATE_TRIES: usize = 1000;

/// Applies a PATCH body to the current object.
pub(super) fn apply_patch(
    ctx: &Ctx,
    r: &Resource,
    old: &Value,
    patch: &PatchKind,
) -> Result<Value, ApiError> {
    let mut obj = old.clone();
    match patch {
        PatchKind::Strategic(p) => {
            let Some(root) = ctx.definition_of(r) else {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            };
            obj =
                super::strategic::apply(old, p, ctx.openapi.definitions(), root).map_err(|e| {
                    let code = e.status_code();
                    ApiError {
                        code,
                        reason: match code {
                            400 => "BadRequest",
                            422 => "Invalid",
                            // An unconverted error: StatusReasonUnknown.
                            _ => "",
                        },
                        message: e.to_string(),
                        details: None,
                    }
                })?;
        }
        PatchKind::Json(ops) => json_patch::patch(&mut obj, ops).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: "the server rejected our request due to an error in our request".into(),
            details: Some(json!({"causes": [{"reason": "FieldValueInvalid", "message": e.to_string(), "field": "patch"}]})),
        })?,
        PatchKind::Merge(m) | PatchKind::Apply(m) => json_patch::merge(&mut obj, m),
    }
    Ok(obj)
}

/// The patched object must decode as its type. kube-apiserver's patcher decodes the result
/// itself and answers a failure with 422 and one field error on `patch` (no kind, no name): its
/// value the patched object's JSON (JSON and merge patches) or the patch map as Go prints it
/// (strategic merge patches, whose result goes through the unstructured converter), its detail
/// the decoder's error — under `fieldValidation=Strict` the unknown fields too.
fn patched_decodes(
    ctx: &Ctx,
    r: &Resource,
    patched: &Value,
    patch: &PatchKind,
    validation: FieldValidation,
) -> Result<(), ApiError> {
    let Some(decoded) = typed::decode(r, patched) else {
        return Ok(());
    };
    let defs = ctx.openapi.definitions();
    let root = ctx.definition_of(r);
    let why = match &decoded {
        Err(e) => match patch {
            PatchKind::Strategic(_) if !e.go => root
                .and_then(|root| gojson::converter_error(defs, root, patched, &e.path))
                .unwrap_or_else(|| e.message.clone()),
            _ => e.go_message(defs, root, patched),
        },
        Ok(d) if validation == FieldValidation::Strict && !d.unknown.is_empty() => {
            let unknown: Vec<String> = d
                .unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            format!("strict decoding error: {}", unknown.join(", "))
        }
        Ok(_) => return Ok(()),
    };
    let value = match patch {
        PatchKind::Strategic(p) => super::strategic::gofmt(p),
        _ => patched.to_string(),
    };
    Err(ApiError::invalid(
        "",
        "",
        "",
        &[FieldError::invalid_str("patch", &value, why)],
    ))
}

/// DeleteOptions from the body (kubectl sends them there) or the query.
pub(super) struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period: Option<i64>,
    pub propagation: String,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// DeleteOptions from a body alone (an Eviction's `deleteOptions`).
pub(super) fn delete_options_from(raw: &[u8]) -> Result<DeleteOptions, ApiError> {
    delete_options(raw, &BTreeMap::new())
}

fn delete_options(raw: &[u8], q: &BTreeMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let body: Value = if raw.is_empty() {
        json!({})
    } else {
        parse_json(raw)?
    };
    let propagation = body["propagationPolicy"]
        .as_str()
        .or(q.get("propagationPolicy").map(String::as_str))
        .unwrap_or("Background")
        .to_string();
    if !["Background", "Foreground", "Orphan"].contains(&propagation.as_str()) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[FieldError::not_supported(
                "propagationPolicy",
                &json!(propagation),
                &["Foreground", "Background", "Orphan", "nil"],
            )],
        ));
    }
    let grace_period = body["gracePeriodSeconds"].as_i64().or_else(|| {
        q.get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
    });
    if body["orphanDependents"] == json!(true) && body["propagationPolicy"].is_string() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[FieldError::invalid(
                "propagationPolicy",
                &body["propagationPolicy"],
                "orphanDependents and deletionPropagation cannot be both set",
            )],
        ));
    }
    let propagation = if body["orphanDependents"] == json!(true) {
        "Orphan".to_string()
    } else {
        propagation
    };
    Ok(DeleteOptions {
        dry_run: body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All")),
        grace_period,
        propagation,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

/// DELETE of one object: gone at once, or — when finalizers, Foreground/Orphan propagation or
/// a pod's grace period say so — marked with a deletionTimestamp for its finalizers (the
/// garbage collector, the namespace controller, the kubelet) to finish.
pub(super) async fn delete(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let r = t.resource;
    let dry_run = dry_run || options.dry_run;
    let key = r.key(t.namespace.as_deref(), name);
    for _ in 0..8 {
        let current = ctx
            .storage
            .get(&key)
            .await
            .map_err(|e| storage_error(t, name, e))?;
        let old = served(&current)?;
        if options
            .precondition_uid
            .as_ref()
            .is_some_and(|u| old["metadata"]["uid"] != *u)
            || options
                .precondition_rv
                .as_ref()
                .is_some_and(|rv| old["metadata"]["resourceVersion"] != *rv)
        {
            return Err(ApiError::conflict(r.group, r.name, name));
        }
        let mut obj = old.clone();
        let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let extra = match options.propagation.as_str() {
            "Foreground" => Some("foregroundDeletion"),
            "Orphan" => Some("orphan"),
            _ => None,
        };
        if let Some(f) = extra
            && !finalizers.iter().any(|x| x == f)
            && obj["metadata"]["deletionTimestamp"].is_null()
        {
            finalizers.push(json!(f));
        }
        let is_namespace = r.group.is_empty() && r.name == "namespaces";
        // A pod on a node is deleted gracefully: its kubelet stops it and then deletes it.
        let grace = if r.group.is_empty() && r.name == "pods" && obj["spec"]["nodeName"].is_string()
        {
            options
                .grace_period
                .or(obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0)
        } else {
            0
        };
        let graceful = is_namespace || !finalizers.is_empty() || grace > 0;
        if !graceful {
            if dry_run {
                return Ok(json_response(StatusCode::OK, &old));
            }
            if is_crd(r) {
                // Deleting a CRD deletes its custom objects first (the real CRD finalizer's work).
                remove_custom_objects(ctx, t, &old).await?;
            }
            match ctx.storage.delete(&key, current.revision).await {
                Ok((gone, _)) => return Ok(json_response(StatusCode::OK, &served(&gone)?)),
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(storage_error(t, name, e)),
            }
        }
        if obj["metadata"]["deletionTimestamp"].is_string() && extra.is_none() {
            // Already being deleted: nothing more to do.
            return Ok(json_response(StatusCode::OK, &old));
        }
        let when = if grace > 0 {
            rfc3339(now_secs() + grace)
        } else {
            now_rfc3339()
        };
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(when);
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if !finalizers.is_empty() {
            obj["metadata"]["finalizers"] = Value::Array(finalizers);
        }
        if is_namespace {
            obj["status"]["phase"] = json!("Terminating");
        }
        if dry_run {
            return Ok(json_response(StatusCode::OK, &obj));
        }
        let bytes = for_storage(&mut obj, &old)?;
        match ctx.storage.update(&key, current.revision, bytes).await {
            Ok(rev) => {
                let code = if grace > 0 || is_namespace {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                return Ok(written(code, obj, rev));
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(storage_error(t, name, e)),
        }
    }
    Err(ApiError::conflict(r.group, r.name, name))
}

/// DELETE of a collection: every object the selectors match, each as a single DELETE.
async fn delete_collection(
    ctx: &Ctx,
    t: &Target,
    q: &BTreeMap<String, String>,
    options: &DeleteOptions,
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let page = ctx
        .storage
        .list(&collection_prefix(t), 0, 0, None)
        .await
        .map_err(|e| storage_error(t, "", e))?;
    let mut deleted = Vec::new();
    for s in &page.items {
        let v = served(s)?;
        if !(fields.matches(&v) && labels.matches(&labels_of(&v))) {
            continue;
        }
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let one = Target {
            resource: t.resource,
            namespace: v["metadata"]["namespace"].as_str().map(str::to_string),
            name: Some(name.clone()),
            subresource: None,
        };
        match delete(ctx, &one, &name, options, dry_run).await {
            Ok(_) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.resource.kind),
            "apiVersion": t.resource.api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": deleted,
        }),
    ))
}

/// Whether an update changes nothing: equal objects but for `metadata.resourceVersion`.
fn same_but_resource_version(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if a.len() != b.len()
        || !a
            .iter()
            .filter(|(k, _)| *k != "metadata")
            .all(|(k, v)| b.get(k) == Some(v))
    {
        return false;
    }
    let empty = serde_json::Map::new();
    let ma = a
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mb = b
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let count =
        |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != "resourceVersion").count();
    count(ma) == count(mb)
        && ma
            .iter()
            .filter(|(k, _)| *k != "resourceVersion")
            .all(|(k, v)| mb.get(k) == Some(v))
}

/// managedFields after an ordinary write by `manager`.
fn track(
    ctx: &Ctx,
    r: &Resource,
    old: Option<&Value>,
    new: Value,
    manager: &str,
    subresource: &str,
) -> Value {
    super::ssa::track_update(
        old,
        new,
        manager,
        subresource,
        ctx.openapi.definitions(),
        ctx.definition_of(r),
        &now_rfc3339(),
    )
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply, creating the object when it
/// does not exist; conflicts with other managers are a 409 unless `?force=true`.
async fn server_side_apply(
    ctx: &Ctx,
    t: &Target,
    name: &str,
    sub: Option<&str>,
    applied: &Value,
    q: &BTreeMap<String, String>,
    opts: &mut WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let r = t.resource;
    if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let force = match q.get("force").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force: Invalid value: {other:?}: must be true or false"
            )));
        }
    };
    let manager = opts.manager.clone();
    let defs = ctx.openapi.definitions();
    let root = ctx.definition_of(r);
    let ssa_error = |e: super::ssa::ApplyError| match &e {
        super::ssa::ApplyError::Conflicts(conflicts) => ApiError {
            code: 409,
            reason: "Conflict",
            message: e.message(),
            details: Some(json!({
                "name": name,
                "group": r.group,
                "kind": r.name,
                "causes": conflicts.iter().map(|c| json!({
                    "reason": "FieldManagerConflict",
                    "message": c.cause_message(),
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
        },
        super::ssa::ApplyError::Invalid(m) => ApiError::bad_request(m.clone()),
    };
    opts.applying = true;
    let exists = ctx
        .storage
        .get(&r.key(t.namespace.as_deref(), name))
        .await
        .is_ok();
    if !exists {
        if sub.is_some() {
            return Err(ApiError::not_found(r.group, r.name, name));
        }
        let mut obj = super::ssa::apply(None, applied, &manager, force, defs, root, &now_rfc3339())
            .map_err(ssa_error)?;
        if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
            obj["metadata"]["name"] = json!(name);
        }
        return create(ctx, t, obj, opts).await;
    }
    let (obj, rev) = update(ctx, t, name, sub.is_some(), opts, |old| {
        super::ssa::apply(
            Some(old),
            applied,
            &manager,
            force,
            defs,
            root,
            &now_rfc3339(),
        )
        .map_err(ssa_error)
    })
    .await?;
    Ok(written(StatusCode::OK, obj, rev))
}

fn is_crd(r: &Resource) -> bool {
    r.group == "apiextensions.k8s.io" && r.name == "customresourcedefinitions"
}

/// Deletes every custom object of `crd` and takes its types out of the API.
async fn remove_custom_objects(ctx: &Ctx, t: &Target, crd: &Value) -> Result<(), ApiError> {
    super::crd::unregister(crd);
    let Some(prefix) = super::crd::objects_prefix(crd) else {
        return Ok(());
    };
    let page = ctx
        .storage
        .list(&prefix, 0, 0, None)
        .await
        .map_err(|e| storage_error(t, "", e))?;
    for s in &page.items {
        match ctx.storage.delete(&s.key, s.revision).await {
            Ok(_) | Err(StorageError::NotFound { .. }) | Err(StorageError::Conflict { .. }) => {}
            Err(e) => return Err(storage_error(t, "", e)),
        }
    }
    Ok(())
}

fn qualified(r: &Resource) -> String {
    if r.group.is_empty() {
        r.name.to_string()
    } else {
        format!("{}.{}", r.name, r.group)
    }
}

/// The answer to a successful write: the object at its new resourceVersion.
pub(super) fn written(code: StatusCode, mut obj: Value, revision: i64) -> Response<Body> {
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    json_response(code, &obj)
}

/// The bytes to store for an update of `old`: the server-owned fields (uid, creation time) are
/// kept from `old`, and the resourceVersion is not stored (it is the key's etcd revision).
pub(super) fn for_storage(obj: &mut Value, old: &Value) -> Result<Vec<u8>, ApiError> {
    let meta = &mut obj["metadata"];
    meta["uid"] = old["metadata"]["uid"].clone();
    meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(obj).map_err(|e| ApiError::internal(e.to_string()))
}

pub(super) fn storage_error(t: &Target, name: &str, e: StorageError) -> ApiError {
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
pub(super) fn served(stored: &Stored) -> Result<Value, ApiError> {
    stored.object().map_err(ApiError::internal)
}

pub(super) fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn read_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let (mime, body) = read_raw(req).await?;
    parse_body(&mime, &body)
}

/// A request body in one of the formats the API accepts for objects.
pub(super) fn parse_body(mime: &str, body: &[u8]) -> Result<Value, ApiError> {
    match mime {
        "application/json" | "" | "*/*" => parse_json(body),
        // kubectl 1.32+ sends typed built-in objects as Kubernetes protobuf.
        "application/vnd.kubernetes.protobuf" => {
            super::protobuf::decode(body).map_err(|e| match super::protobuf::type_meta(body) {
                Ok((api_version, kind)) if !kind.is_empty() => {
                    let version = api_version.rsplit('/').next().unwrap_or("").to_string();
                    ApiError::bad_request(format!(
                        "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"
                    ))
                }
                _ => ApiError::bad_request(e.to_string()),
            })
        }
        "application/yaml" => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding the request body as YAML: {e}"))
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// An object body for `r`, with the real decoder's words when it is not one; and the body
/// itself when it is JSON.
pub(super) async fn read_object(
    req: Request<Incoming>,
    r: &Resource,
) -> Result<(Value, Option<RawJson>), ApiError> {
    let (mime, bytes) = read_raw(req).await?;
    parse_with_raw(&mime, &bytes, r)
}

/// An object body for `r`, and the body itself when it is JSON.
fn parse_with_raw(
    mime: &str,
    bytes: &Bytes,
    r: &Resource,
) -> Result<(Value, Option<RawJson>), ApiError> {
    let (obj, duplicates) = parse_object(mime, bytes, r)?;
    let raw = is_json(mime).then(|| RawJson {
        bytes: bytes.clone(),
        duplicates,
    });
    Ok((obj, raw))
}

/// Whether a request's media type is JSON (the API's default).
fn is_json(mime: &str) -> bool {
    matches!(mime, "application/json" | "" | "*/*")
}

/// An object body for `r`, and whether it gives a key twice in an object (JSON only: the other
/// decoders do not say).
fn parse_object(mime: &str, body: &Bytes, r: &Resource) -> Result<(Value, bool), ApiError> {
    let unrecognized = |why: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {why}",
            r.kind
        ))
    };
    let excerpt = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
    // Only the JSON parse notes keys given twice.
    let parsed = match mime {
        "application/json" | "" | "*/*" => {
            return gojson::parse_noting_duplicates(body).map_err(|e| {
                let why = if e.is_eof() {
                    "unexpected end of JSON input".to_string()
                } else {
                    e.to_string()
                };
                unrecognized(format!(
                    "couldn't get version/kind; json parse error: {why} ({})",
                    excerpt(body)
                ))
            });
        }
        "application/yaml" => serde_yaml::from_slice(body).map_err(|e| {
            let text = e.to_string();
            let msg = text.split(" at line ").next().unwrap_or(&text).to_string();
            let line = e.location().map_or(0, |l| l.line());
            unrecognized(format!(
                "error converting YAML to JSON: yaml: line {line}: {msg}"
            ))
        }),
        "application/vnd.kubernetes.protobuf" if super::protobuf::type_meta(body).is_ok() => {
            parse_body(mime, body)
        }
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body).map_err(|e| {
            let hex: String = body.iter().take(32).map(|b| format!("{b:02x}")).collect();
            unrecognized(format!("{e} ({hex})"))
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    };
    parsed.map(|v| (v, false))
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

/// The body (within [`MAX_BODY`]) and its media type without parameters.
pub(super) async fn read_raw(req: Request<Incoming>) -> Result<(String, Bytes), ApiError> {
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
pub(super) enum PatchKind {
    Json(json_patch::Patch),
    Merge(Value),
    /// Strategic merge patch: merge keys and directives from the type's OpenAPI schema.
    Strategic(Value),
    /// Server-side apply: the applied configuration.
    Apply(Value),
}

pub(super) fn parse_patch(mime: &str, body: &[u8]) -> Result<PatchKind, ApiError> {
    match mime {
        "application/json-patch+json" => {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error decoding the JSON patch: {e}"))
            })?;
            if !v.is_array() {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                    if v.is_object() { "object" } else { "value" }
                )));
            }
            serde_json::from_value(v)
                .map(PatchKind::Json)
                .map_err(|e| ApiError::bad_request(format!("error decoding the JSON patch: {e}")))
        }
        "application/merge-patch+json" => parse_json(body).map(PatchKind::Merge),
        "application/strategic-merge-patch+json" => parse_json(body).map(PatchKind::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            serde_yaml::from_slice::<Value>(body)
                .map(PatchKind::Apply)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        other => Err(ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ),
            details: None,
        }),
    }
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64
}

pub(super) fn now_rfc3339() -> String {
    rfc3339(now_secs())
}

/// An RFC 3339 UTC timestamp (`2026-11-22T01:52:59Z`) of seconds since the epoch.
pub(super) fn rfc3339(secs: i64) -> String {
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

pub(super) fn new_uid() -> String {
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

pub(super) fn selectors(
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<(Selector, FieldSelector), ApiError> {
    let labels = match q.get("labelSelector") {
        Some(s) => Selector::parse(s)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => Selector::default(),
    };
    let supported = t.resource.field_selectors();
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), &supported)
        .map_err(|e| {
            // Types without field labels of their own answer with the default conversion's
            // words.
            match e.strip_prefix("field label not supported: ") {
                Some(field) if supported.iter().all(|f| f.starts_with("metadata.")) => {
                    ApiError::bad_request(format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    ))
                }
                _ => ApiError::bad_request(e),
            }
        })?;
    Ok((labels, fields))
}

pub(super) fn collection_prefix(t: &Target) -> String {
    t.resource.key(t.namespace.as_deref(), "")
}

/// The storage's `APIObjectVersioner.ParseResourceVersion`: Go's `strconv.ParseUint`, whose
/// failure is the field error `resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing
/// "abc": invalid syntax`.
fn parse_resource_version(rv: &str) -> Result<u64, String> {
    let fail = |why: &str| {
        let e = FieldError::invalid_str(
            "resourceVersion",
            rv,
            format!("strconv.ParseUint: parsing {rv:?}: {why}"),
        );
        format!("{}: {}", e.field, e.body())
    };
    if rv.is_empty() {
        return Err(fail("invalid syntax"));
    }
    let mut n: u64 = 0;
    for b in rv.bytes() {
        if !b.is_ascii_digit() {
            return Err(fail("invalid syntax"));
        }
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
        {
            Some(n) => n,
            None => return Err(fail("value out of range")),
        };
    }
    Ok(n)
}

/// `?resourceVersion=` of a list or watch. One that does not parse is refused as the real
/// apiserver does: a list (the storage's `ValidateListOptions`) with 400 BadRequest `invalid
/// resource version: …`; a watch with the bare storage error, which no layer turns into an API
/// status (500, no reason).
fn resource_version(q: &BTreeMap<String, String>, list: bool) -> Result<Option<i64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(rv) => match parse_resource_version(rv) {
            Ok(n) => Ok(Some(i64::try_from(n).unwrap_or(i64::MAX))),
            Err(e) if list => Err(ApiError::bad_request(format!(
                "invalid resource version: {e}"
            ))),
            Err(e) => Err(ApiError::new(500, "", e)),
        },
    }
}

async fn list(
    ctx: &Ctx,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    view: Option<super::convert::View>,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let rv = resource_version(q, true)?;
    let continue_token = q
        .get("continue")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let prefix = collection_prefix(t);
    let no_selectors = labels.is_empty() && fields.is_empty();
    let wanted = |v: &Value| no_selectors || (fields.matches(v) && labels.matches(&labels_of(v)));
    let cache_prefix = t.resource.key(None, "");
    // A later page comes from the cache when nothing changed since the first one (else from
    // etcd at the list's revision); exact historical reads from etcd; everything else from the
    // watch cache.
    let continued = match continue_token {
        Some(token) if !exact => match super::storage::decode_continue(token) {
            Ok((revision, start)) => ctx
                .cache
                .list_continue(
                    &cache_prefix,
                    &prefix,
                    &format!("{prefix}{start}"),
                    revision,
                )
                .await
                .map(|items| (items, revision)),
            Err(e) => return Err(storage_error(t, "", e)),
        },
        _ => None,
    };
    let from_cache = if continued.is_some() {
        continued
    } else if continue_token.is_some() || exact {
        None
    } else {
        let freshness = match rv {
            None => Freshness::Current,
            Some(0) => Freshness::Any,
            Some(n) => Freshness::AtLeast(n),
        };
        ctx.cache.list(&cache_prefix, &prefix, freshness).await.ok()
    };
    let (items, meta): (Vec<Arc<CachedObject>>, Value) = match from_cache {
        Some((all, revision)) => {
            let matching: Vec<Arc<CachedObject>> = all.into_iter().filter(|v| wanted(v)).collect();
            let mut meta = json!({"resourceVersion": revision.to_string()});
            let total = matching.len();
            let mut items = matching;
            if limit > 0 && total > limit as usize {
                items.truncate(limit as usize);
                let last = items
                    .last()
                    .map(|v| {
                        let m = &v["metadata"];
                        let name = m["name"].as_str().unwrap_or("");
                        match m["namespace"].as_str() {
                            Some(ns) if t.resource.namespaced && t.namespace.is_none() => {
                                format!("{ns}/{name}")
                            }
                            _ => name.to_string(),
                        }
                    })
                    .unwrap_or_default();
                meta["continue"] = json!(super::storage::encode_continue(
                    revision,
                    &format!("{last}\u{0}")
                ));
                if no_selectors {
                    meta["remainingItemCount"] = json!(total - items.len());
                }
            }
            (items, meta)
        }
        None => {
            let page = ctx
                .storage
                .list(
                    &prefix,
                    limit,
                    if exact { rv.unwrap_or(0) } else { 0 },
                    continue_token,
                )
                .await
                .map_err(|e| storage_error(t, "", e))?;
            let mut items = Vec::new();
            for s in &page.items {
                let v = served(s)?;
                if wanted(&v) {
                    items.push(Arc::new(CachedObject::new(v)));
                }
            }
            let mut meta = json!({"resourceVersion": page.revision.to_string()});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(n) = page.remaining {
                meta["remainingItemCount"] = json!(n);
            }
            (items, meta)
        }
    };
    if table {
        let values: Vec<&Value> = items.iter().map(|i| &i.value).collect();
        let out = printers::table_bytes(t.resource, &values, &meta, now_secs())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(full(StatusCode::OK, "application/json", out));
    }
    let (kind, api_version, items) = match view {
        Some(vw) => (
            format!("{}List", t.resource.kind),
            items
                .first()
                .map(|i| {
                    vw.present(i)["apiVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_else(|| {
                    vw.present(&json!({}))["apiVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                }),
            items
                .iter()
                .map(|i| Arc::new(CachedObject::new(vw.present(i))))
                .collect(),
        ),
        None => (
            format!("{}List", t.resource.kind),
            t.resource.api_version(),
            items,
        ),
    };
    // Written piece by piece from each object's JSON, serialized once in the cache.
    let size: usize = items.iter().map(|i| i.json().len() + 1).sum();
    let mut out = Vec::with_capacity(256 + size);
    out.extend_from_slice(b"{\"kind\":");
    let write = |out: &mut Vec<u8>| -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *out, &kind)?;
        out.extend_from_slice(b",\"apiVersion\":");
        serde_json::to_writer(&mut *out, &api_version)?;
        out.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut *out, &meta)?;
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item.json());
        }
        out.extend_from_slice(b"]}");
        Ok(())
    };
    write(&mut out).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(full(StatusCode::OK, "application/json", out))
}

/// The object of a watch event as the client asked for it: itself, or a one-row Table.
fn event_line(t: &Target, table: bool, ev: &Event, view: Option<&super::convert::View>) -> Bytes {
    if let Some(vw) = view
        && !table
    {
        return watch_line(ev.kind.name(), &vw.present(&ev.object));
    }
    if !table {
        return ev.json_line();
    }
    let meta = json!({"resourceVersion": ev.object["metadata"]["resourceVersion"]});
    let rows = printers::table(t.resource, &[&ev.object.value], meta, now_secs());
    watch_line(ev.kind.name(), &rows)
}

async fn watch(
    ctx: &Ctx,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    view: Option<super::convert::View>,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, q)?;
    let prefix = collection_prefix(t);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let initial_events = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    if initial_events && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    // The storage parses the resourceVersion after the handler checked the options.
    let rv = resource_version(q, false)?;
    let from = match rv {
        None | Some(0) => WatchFrom::Now,
        Some(_) if initial_events => WatchFrom::Now,
        Some(n) => WatchFrom::Revision(n),
    };
    let cw = match ctx
        .cache
        .watch(&t.resource.key(None, ""), &prefix, from)
        .await
    {
        Ok(cw) => cw,
        // Too old: as the real watch cache, a 200 whose only event is the 410 ERROR, so that
        // clients (informers, kube-rs) relist.
        Err(e @ StorageError::Expired { .. }) => {
            let line = watch_line("ERROR", &storage_error(t, "", e).to_status());
            let body = Full::new(line).boxed();
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())));
        }
        Err(e) => return Err(storage_error(t, "", e)),
    };
    // Every watcher checks every event: no label map is built when there are no selectors.
    let no_selectors = labels.is_empty() && fields.is_empty();
    let wants =
        move |v: &Value| no_selectors || (fields.matches(v) && labels.matches(&labels_of(v)));
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let target = Target {
        resource: t.resource,
        namespace: t.namespace.clone(),
        name: None,
        subresource: None,
    };
    let bookmark = move |rv: i64, end_of_initial: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end_of_initial {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        watch_line(
            "BOOKMARK",
            &json!({"kind": target.resource.kind, "apiVersion": target.resource.api_version(), "metadata": meta}),
        )
    };
    let target = Target {
        resource: t.resource,
        namespace: t.namespace.clone(),
        name: None,
        subresource: None,
    };
    tokio::spawn(async move {
        let send = |line: Bytes| tx.send(Ok(Frame::data(line)));
        let CacheWatch {
            initial,
            mut live,
            after,
            ..
        } = cw;
        let mut last = after;
        for ev in &initial {
            if wants(&ev.object)
                && send(event_line(&target, table, ev, view.as_ref()))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if initial_events && send(bookmark(after, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_secs(15));
        ticker.tick().await;
        let mut sent_rv = after;
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if last > sent_rv {
                        sent_rv = last;
                        if send(bookmark(last, false)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                ev = live.recv() => ev,
            };
            let ev = match ev {
                Ok(ev) => ev,
                // Too slow to keep up, or the cache stopped: end the watch; the client
                // resumes from the last resourceVersion it saw.
                Err(_) => return,
            };
            if ev.revision <= after || !ev.key.starts_with(&prefix) {
                continue;
            }
            last = ev.revision;
            if !wants(&ev.object) {
                continue;
            }
            sent_rv = ev.revision;
            if send(event_line(&target, table, &ev, view.as_ref()))
                .await
                .is_err()
            {
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
    use crate::apiserver::server::percent_decode;

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
        let t = parse_target("", "v1", &["namespaces", "lab", "configmaps", "x"]).unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref()),
            (Some("lab"), Some("x"))
        );
        let t = parse_target("", "v1", &["namespaces", "lab"]).unwrap();
        assert_eq!(
            (t.resource.name, t.name.as_deref()),
            ("namespaces", Some("lab"))
        );
        let t = parse_target("", "v1", &["namespaces", "lab", "status"]).unwrap();
        assert_eq!(
            (t.resource.name, t.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let t = parse_target(
            "apps",
            "v1",
            &["namespaces", "lab", "deployments", "d", "scale"],
        )
        .unwrap();
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        assert!(
            parse_target(
                "apps",
                "v1",
                &["namespaces", "lab", "deployments", "d", "log"]
            )
            .is_err()
        );
        assert!(parse_target("", "v1", &["namespaces", "lab", "namespaces"]).is_err());
        assert!(parse_target("", "v1", &["widgets"]).is_err());
    }
}
