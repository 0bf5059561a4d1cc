//! CustomResourceDefinitions: how the API grows new types at run time (the apiextensions part
//! of kube-apiserver).
//!
//! Creating a CRD (`widgets.example.com`) checks and defaults it, marks it `NamesAccepted` and
//! `Established`, and registers each served version as a resource in [`super::resources`], so
//! discovery lists it and `/apis/example.com/v1/namespaces/<ns>/widgets` serves CRUD, list and
//! watch like any built-in type. Custom objects are checked against the version's
//! `openAPIV3Schema` (types, required, enums, bounds) and **pruned** of unknown fields (reported
//! for `fieldValidation`); the `status` and `scale` subresources and the additional printer
//! columns follow the CRD. Custom objects live in etcd at `/registry/<group>/<plural>/…`.

use serde_json::{Value, json};

use super::resources::{NameRule, Resource, Verbs};
use super::status::FieldError;

/// One served version of a custom resource: what its CRD says about it.
#[derive(Debug)]
pub struct CustomVersion {
    /// `openAPIV3Schema` (Null when the version has none).
    pub schema: Value,
    /// additionalPrinterColumns.
    pub columns: Vec<PrinterColumn>,
    pub scale: Option<ScalePaths>,
    /// The CRD's generation this was built from.
    pub generation: i64,
}

#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub column_type: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Where the scale subresource finds its numbers (`.spec.replicas`, …).
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Versions in Kubernetes' priority order: GA by number, then beta, then alpha, then others.
fn version_rank(v: &str) -> (u8, i64, i64, String) {
    let parse = |s: &str| -> Option<(i64, u8, i64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 0, 0));
        }
        let (kind, n) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        Some((major, kind, n.parse().ok()?))
    };
    match parse(v) {
        Some((major, kind, minor)) => (kind, -major, -minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// Registers (or re-registers after a change) the served versions of `crd`.
pub fn register(crd: &Value) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return;
    }
    let generation = crd["metadata"]["generation"].as_i64().unwrap_or(0);
    let same = super::resources::all().into_iter().any(|r| {
        r.group == group && r.name == plural && r.custom.is_some_and(|c| c.generation == generation)
    });
    if same {
        return;
    }
    let namespaced = spec["scope"] != "Cluster";
    let kind = names["kind"].as_str().unwrap_or("");
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<&'static str> = names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    let categories: Vec<&'static str> = names["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    let (group_s, plural_s, kind_s, singular_s) =
        (leak(group), leak(plural), leak(kind), leak(&singular));
    let short: &'static [&'static str] = Box::leak(short.into_boxed_slice());
    let categories: &'static [&'static str] = Box::leak(categories.into_boxed_slice());
    let storage = leak(&format!("{group}/{plural}"));
    let mut versions: Vec<&Value> = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == true)
        .collect();
    versions.sort_by_key(|v| version_rank(v["name"].as_str().unwrap_or("")));
    let mut served = Vec::new();
    for v in versions {
        let name = v["name"].as_str().unwrap_or("");
        let subs = &v["subresources"];
        let subresources: &'static [&'static str] =
            match (subs["scale"].is_object(), subs["status"].is_object()) {
                (true, true) => &["scale", "status"],
                (true, false) => &["scale"],
                (false, true) => &["status"],
                (false, false) => &[],
            };
        let scale = subs["scale"].is_object().then(|| ScalePaths {
            spec_replicas: subs["scale"]["specReplicasPath"]
                .as_str()
                .unwrap_or(".spec.replicas")
                .to_string(),
            status_replicas: subs["scale"]["statusReplicasPath"]
                .as_str()
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: subs["scale"]["labelSelectorPath"]
                .as_str()
                .map(str::to_string),
        });
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c["name"].as_str().unwrap_or("").to_string(),
                column_type: c["type"].as_str().unwrap_or("string").to_string(),
                format: c["format"].as_str().unwrap_or("").to_string(),
                description: c["description"].as_str().unwrap_or("").to_string(),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: c["jsonPath"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let custom: &'static CustomVersion = Box::leak(Box::new(CustomVersion {
            schema: v["schema"]["openAPIV3Schema"].clone(),
            columns,
            scale,
            generation,
        }));
        let r: &'static Resource = Box::leak(Box::new(Resource {
            group: group_s,
            version: leak(name),
            name: plural_s,
            singular: singular_s,
            kind: kind_s,
            namespaced,
            short_names: short,
            categories,
            names: NameRule::Subdomain,
            storage,
            subresources,
            verbs: Verbs::All,
            custom: Some(custom),
        }));
        served.push(r);
    }
    super::resources::set_custom(group, plural, served);
}

/// Removes the custom resources of `crd` from the API.
pub fn unregister(crd: &Value) {
    let spec = &crd["spec"];
    if let (Some(group), Some(plural)) = (spec["group"].as_str(), spec["names"]["plural"].as_str())
    {
        super::resources::set_custom(group, plural, Vec::new());
    }
}

/// The etcd prefix of a CRD's custom objects.
pub fn objects_prefix(crd: &Value) -> Option<String> {
    let spec = &crd["spec"];
    Some(format!(
        "/registry/{}/{}/",
        spec["group"].as_str()?,
        spec["names"]["plural"].as_str()?
    ))
}

/// The CRD's own defaults (`names.singular`, `names.listKind`, `conversion`).
pub fn defaults(crd: &mut Value) {
    let kind = crd["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(names) = crd["spec"]["names"].as_object_mut() {
        if names.get("singular").is_none_or(Value::is_null) && !kind.is_empty() {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if names.get("listKind").is_none_or(Value::is_null) && !kind.is_empty() {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd["spec"].as_object_mut()
        && spec.get("conversion").is_none_or(Value::is_null)
    {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
}

/// `ValidateCustomResourceDefinition` (the checks a learner meets first).
pub fn validate(crd: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errors.push(FieldError::invalid_str(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"].as_str().unwrap_or("").is_empty() {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid_str(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Cluster" | "Namespaced") => {}
        None => errors.push(FieldError::required("spec.scope", "")),
        Some(other) => errors.push(FieldError::not_supported(
            "spec.scope",
            &json!(other),
            &["Cluster", "Namespaced"],
        )),
    }
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if versions.is_empty() {
        errors.push(FieldError::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            &Value::Null,
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let schema = &v["schema"]["openAPIV3Schema"];
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        if schema.is_null() {
            errors.push(FieldError::required(path, "schemas are required"));
        } else if schema["type"] != "object" {
            errors.push(FieldError::required(
                format!("{path}.type"),
                "must not be empty at the root",
            ));
        }
        if v["name"].as_str().unwrap_or("").is_empty() {
            errors.push(FieldError::required(format!("spec.versions[{i}].name"), ""));
        }
    }
    if let Some(old) = old {
        for field in ["group", "scope"] {
            if old["spec"][field] != spec[field] {
                errors.push(FieldError::invalid(
                    format!("spec.{field}"),
                    &spec[field],
                    "field is immutable",
                ));
            }
        }
    }
}

/// The status the apiextensions controllers give an accepted CRD.
pub fn set_status(crd: &mut Value, old: Option<&Value>, now: &str) {
    let storage = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or("")
        .to_string();
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !storage.is_empty() && !stored.iter().any(|s| s == storage.as_str()) {
        stored.push(json!(storage));
    }
    let since = |t: &str| {
        old.and_then(|o| o["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(now))
    };
    crd["status"] = json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
        "storedVersions": stored,
    });
}

/// Checks a custom object against its version's schema, prunes fields the schema does not
/// have (their paths go to `unknown`), and reports invalid fields to `errors`.
pub fn validate_object(
    v: &CustomVersion,
    obj: &mut Value,
    errors: &mut Vec<FieldError>,
    unknown: &mut Vec<String>,
) {
    if v.schema.is_null() {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let props = &v.schema["properties"];
    let preserve = v.schema["x-kubernetes-preserve-unknown-fields"] == true;
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.get(&k) {
            Some(schema) => {
                if let Some(value) = map.get_mut(&k) {
                    check(schema, value, &k, errors, unknown);
                }
            }
            None if preserve => {}
            None => {
                map.remove(&k);
                unknown.push(k);
            }
        }
    }
    required(&v.schema, map, "", errors);
}

fn required(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for r in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if map.get(r).is_none_or(Value::is_null) {
            let p = if path.is_empty() {
                r.to_string()
            } else {
                format!("{path}.{r}")
            };
            errors.push(FieldError::required(p, ""));
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One value against its schema (recursively), as kube-openapi's validator words its errors.
fn check(
    schema: &Value,
    value: &mut Value,
    path: &str,
    errors: &mut Vec<FieldError>,
    unknown: &mut Vec<String>,
) {
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let given = json_type(value);
    if int_or_string {
        if given != "integer" && given != "string" {
            errors.push(FieldError::invalid(
                path,
                &json!(given),
                format!("{path} in body must be of type integer,string: {given:?}"),
            ));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let ok = want == given || (want == "number" && given == "integer");
        if !ok {
            errors.push(FieldError::invalid(
                path,
                &json!(given),
                format!("{path} in body must be of type {want}: {given:?}"),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<&'static str> = allowed.iter().map(|a| leak_display(a)).collect();
        errors.push(FieldError::not_supported(path, value, &list));
    }
    match value {
        Value::Object(map) => {
            let props = &schema["properties"];
            let additional = &schema["additionalProperties"];
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = format!("{path}.{k}");
                let sub = props
                    .get(&k)
                    .or_else(|| additional.is_object().then_some(additional));
                match sub {
                    Some(s) => {
                        if let Some(v) = map.get_mut(&k) {
                            check(s, v, &p, errors, unknown);
                        }
                    }
                    None if preserve || additional == &Value::Bool(true) => {}
                    None if schema["type"].is_null() && props.is_null() => {}
                    None => {
                        map.remove(&k);
                        unknown.push(p);
                    }
                }
            }
            required(schema, map, path, errors);
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errors.push(FieldError {
                    kind: super::status::ErrorType::Invalid,
                    field: path.to_string(),
                    value: items.len().to_string(),
                    detail: format!("must have at most {max} items"),
                });
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errors.push(FieldError::invalid(
                    path,
                    &Value::Null,
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter_mut().enumerate() {
                    check(
                        &schema["items"],
                        item,
                        &format!("{path}[{i}]"),
                        errors,
                        unknown,
                    );
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                errors.push(FieldError::invalid(
                    path,
                    &Value::String(s.clone()),
                    format!("{path} in body should be at most {max} chars long"),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                errors.push(FieldError::invalid(
                    path,
                    &Value::String(s.clone()),
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            // Bounds print as Go prints them: 1, not 1.0.
            let show = |b: &Value| match b.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                _ => b.to_string(),
            };
            if let Some(min) = schema["minimum"].as_f64() {
                let exclusive = schema["exclusiveMinimum"] == true;
                if x < min || (exclusive && x == min) {
                    let word = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        path,
                        &Value::Number(n.clone()),
                        format!(
                            "{path} in body should be {word} {}",
                            show(&schema["minimum"])
                        ),
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                let exclusive = schema["exclusiveMaximum"] == true;
                if x > max || (exclusive && x == max) {
                    let word = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        path,
                        &Value::Number(n.clone()),
                        format!(
                            "{path} in body should be {word} {}",
                            show(&schema["maximum"])
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
}

/// Enum values for an error message (a handful per error; leaked only on that error path).
fn leak_display(v: &Value) -> &'static str {
    match v {
        Value::String(s) => leak(s),
        other => leak(&other.to_string()),
    }
}

/// The OpenAPI v3 document of one custom group/version (`/openapi/v3/apis/<group>/<version>`),
/// built from the CRDs' schemas, so that `kubectl explain` and kubectl's validation find the
/// custom kinds. None when no custom resource is served there.
pub fn openapi_v3(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&'static Resource> = super::resources::all()
        .into_iter()
        .filter(|r| r.custom.is_some() && r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for r in served {
        let Some(custom) = r.custom else { continue };
        let name = format!("{}.{version}.{}", reversed.join("."), r.kind);
        let mut schema = if custom.schema.is_object() {
            custom.schema.clone()
        } else {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        };
        if !schema["properties"].is_object() {
            schema["properties"] = json!({});
        }
        schema["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
        schema["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
        schema["properties"]["metadata"] = json!({"type": "object", "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
        let gvk = json!([{"group": group, "version": version, "kind": r.kind}]);
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        schemas.insert(name.clone(), schema);
        let item = if r.namespaced {
            format!(
                "/apis/{group}/{version}/namespaces/{{namespace}}/{}/{{name}}",
                r.name
            )
        } else {
            format!("/apis/{group}/{version}/{}/{{name}}", r.name)
        };
        let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}});
        let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk[0],
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "requestBody": body,
                "responses": {"200": body},
            })
        };
        paths.insert(
            item,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The custom group/versions served (`apis/<group>/<version>` keys of `/openapi/v3`).
pub fn openapi_v3_paths() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in super::resources::all()
        .into_iter()
        .filter(|r| r.custom.is_some())
    {
        let gv = (r.group.to_string(), r.version.to_string());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// A value at a simple JSONPath (`.spec.replicas`, `.status.conditions[0].type`,
/// `.spec.items[*].name`), as printer columns and the scale subresource use them.
pub fn json_path(obj: &Value, path: &str) -> Value {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = vec![obj.clone()];
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, Some(rest.trim_end_matches(']'))),
            None => (part, None),
        };
        let mut next = Vec::new();
        for v in &current {
            let v = if field.is_empty() { v } else { &v[field] };
            match index {
                None => next.push(v.clone()),
                Some("*") => next.extend(v.as_array().cloned().unwrap_or_default()),
                Some(i) => {
                    if let Ok(i) = i.parse::<usize>() {
                        next.push(v[i].clone());
                    }
                }
            }
        }
        current = next;
    }
    match current.len() {
        0 => Value::Null,
        1 => current.pop().unwrap_or(Value::Null),
        _ => Value::Array(current),
    }
}

/// Sets the value at a simple `.a.b.c` path, creating objects on the way.
pub fn set_path(obj: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = obj;
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == parts.len() {
            cur[*p] = value;
            return;
        }
        cur = &mut cur[*p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "generation": 1},
            "spec": {"group": "example.com", "scope": "Namespaced",
              "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
              "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                  "spec": {"type": "object", "required": ["colour"], "properties": {
                    "size": {"type": "integer", "minimum": 0},
                    "colour": {"type": "string", "enum": ["red", "blue"]},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                    "port": {"x-kubernetes-int-or-string": true}}},
                  "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}})
    }

    #[test]
    fn crds_register_and_validate() {
        let mut crd = widget_crd();
        defaults(&mut crd);
        assert_eq!(crd["spec"]["names"]["singular"], "widget");
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        let mut errors = Vec::new();
        validate(&crd, None, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("gadgets.example.com");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        validate(&bad, None, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");

        register(&crd);
        let r = super::super::resources::find("example.com", "v1", "widgets").unwrap();
        assert_eq!(r.kind, "Widget");
        assert_eq!(
            r.key(Some("lab"), "w"),
            "/registry/example.com/widgets/lab/w"
        );
        assert!(r.has_subresource("scale"));
        let v = r.custom.unwrap();
        let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": -1, "colour": "green", "extra": 1, "tags": ["a", "b", "c"], "port": "http"},
            "status": {"anything": true}, "junk": 1});
        let (mut errors, mut unknown) = (Vec::new(), Vec::new());
        validate_object(v, &mut obj, &mut errors, &mut unknown);
        assert_eq!(unknown, vec!["junk".to_string(), "spec.extra".to_string()]);
        assert!(obj.get("junk").is_none() && obj["spec"].get("extra").is_none());
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        assert!(text.contains(&"spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0".to_string()), "{text:?}");
        assert!(
            text.contains(
                &"spec.colour: Unsupported value: \"green\": supported values: \"red\", \"blue\""
                    .to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("spec.tags: Invalid value: 3: must have at most 2 items")),
            "{text:?}"
        );
        let mut wrong = json!({"spec": {"size": "big"}});
        let mut errors = Vec::new();
        validate_object(v, &mut wrong, &mut errors, &mut unknown);
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        assert!(text.contains(&"spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"".to_string()), "{text:?}");
        assert!(
            text.contains(&"spec.colour: Required value".to_string()),
            "{text:?}"
        );
        unregister(&crd);
        assert!(super::super::resources::find("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn json_paths_and_versions() {
        let obj = json!({"spec": {"size": 3, "items": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(json_path(&obj, ".spec.size"), json!(3));
        assert_eq!(json_path(&obj, ".spec.items[1].name"), json!("b"));
        assert_eq!(json_path(&obj, ".spec.items[*].name"), json!(["a", "b"]));
        assert_eq!(json_path(&obj, ".spec.missing"), Value::Null);
        let mut o = json!({});
        set_path(&mut o, ".spec.size", json!(5));
        assert_eq!(o["spec"]["size"], 5);
        let mut vs = vec!["v1alpha1", "v2", "v1beta1", "v1", "foo"];
        vs.sort_by_key(|v| version_rank(v));
        assert_eq!(vs, ["v2", "v1", "v1beta1", "v1alpha1", "foo"]);
    }
}
