//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`), applied the way
//! the real kube-apiserver applies it (k8s.io/apimachinery/pkg/util/strategicpatch,
//! `StrategicMergeMapPatch` with `MergeParallelList` and `IgnoreUnmatchedNulls`).
//!
//! The real kubectl sends these patches for client-side `kubectl apply` (3-way patches),
//! `kubectl patch` (default type), `kubectl edit`, `label`, `annotate`, `scale`, … . Semantics:
//!
//! * `null` deletes a field; maps merge recursively; primitives and type changes replace.
//! * Lists whose field has patch strategy `merge` merge: lists of maps by their merge key
//!   (matching items merge recursively, new items are added), lists of primitives as a set.
//!   Any other list is replaced.
//! * Directives: `$patch: replace|delete` on a map or as a list item (`$patch: merge` in a list
//!   and unknown directives are errors), `$setElementOrder/<list>`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/<list>`. Directives never reach the result.
//! * Ordering follows the Go code: `$setElementOrder` wins, then the order in the patch list,
//!   then the live order; without `$setElementOrder` an item the live list does not have is
//!   placed right after the patch items that precede it and before remaining live-only items
//!   (the reason a plain `kubectl patch` adding a container puts it first).
//!
//! Patch facts come from an OpenAPI v2 `definitions` object carrying the
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` extensions
//! ([`add_extensions`] writes them from [`PATCH_STRATEGIES`], the table of every built-in field
//! with a patch strategy in Kubernetes 1.33). As with the Go struct lookup, a field a known
//! definition does not declare is an error when it has to be looked up (both sides are maps or
//! both are lists, or a `$setElementOrder` names it); where there is no schema (unknown
//! definitions, free-form objects) maps merge and lists are replaced.

use serde_json::{Map, Value};
use std::fmt;

/// Patch strategy facts of one field, as the real OpenAPI publishes them in
/// x-kubernetes-patch-strategy / x-kubernetes-patch-merge-key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchStrategy {
    /// OpenAPI definition name, e.g. "io.k8s.api.core.v1.PodSpec".
    pub definition: &'static str,
    /// JSON field name, e.g. "containers".
    pub field: &'static str,
    /// "merge", "retainKeys", "merge,retainKeys" or "replace".
    pub strategy: &'static str,
    /// Merge key of a list of maps, e.g. `Some("name")`.
    pub merge_key: Option<&'static str>,
}

const fn ps(
    definition: &'static str,
    field: &'static str,
    strategy: &'static str,
    merge_key: Option<&'static str>,
) -> PatchStrategy {
    PatchStrategy {
        definition,
        field,
        strategy,
        merge_key,
    }
}

macro_rules! core {
    ($name:literal) => {
        concat!("io.k8s.api.core.v1.", $name)
    };
}

/// Every built-in field with a patch strategy (Kubernetes 1.33 OpenAPI).
pub static PATCH_STRATEGIES: &[PatchStrategy] = &[
    // meta/v1
    ps(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    ps(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    // core/v1: pods
    ps(
        core!("PodSpec"),
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    ps(core!("PodSpec"), "initContainers", "merge", Some("name")),
    ps(core!("PodSpec"), "containers", "merge", Some("name")),
    ps(
        core!("PodSpec"),
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    ps(core!("PodSpec"), "imagePullSecrets", "merge", Some("name")),
    ps(core!("PodSpec"), "hostAliases", "merge", Some("ip")),
    ps(
        core!("PodSpec"),
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    ps(core!("PodSpec"), "schedulingGates", "merge", Some("name")),
    ps(
        core!("PodSpec"),
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    ps(core!("Container"), "ports", "merge", Some("containerPort")),
    ps(core!("Container"), "env", "merge", Some("name")),
    ps(
        core!("Container"),
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    ps(
        core!("Container"),
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    ps(
        core!("EphemeralContainer"),
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ps(core!("EphemeralContainer"), "env", "merge", Some("name")),
    ps(
        core!("EphemeralContainer"),
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    ps(
        core!("EphemeralContainer"),
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    ps(core!("PodStatus"), "conditions", "merge", Some("type")),
    ps(core!("PodStatus"), "podIPs", "merge", Some("ip")),
    ps(core!("PodStatus"), "hostIPs", "merge", Some("ip")),
    ps(
        core!("PodStatus"),
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    ps(
        core!("ContainerStatus"),
        "allocatedResourcesStatus",
        "merge",
        Some("name"),
    ),
    ps(
        core!("ContainerStatus"),
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    // core/v1: other kinds
    ps(core!("NodeSpec"), "podCIDRs", "merge", None),
    ps(core!("NodeStatus"), "conditions", "merge", Some("type")),
    ps(core!("NodeStatus"), "addresses", "merge", Some("type")),
    ps(core!("ServiceSpec"), "ports", "merge", Some("port")),
    ps(core!("ServiceStatus"), "conditions", "merge", Some("type")),
    ps(core!("ServiceAccount"), "secrets", "merge", Some("name")),
    ps(
        core!("PersistentVolumeClaimStatus"),
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        core!("NamespaceStatus"),
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        core!("ReplicationControllerStatus"),
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        core!("ComponentStatus"),
        "conditions",
        "merge",
        Some("type"),
    ),
    // apps/v1
    ps(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    ps(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // batch/v1
    ps(
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // autoscaling/v2
    ps(
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // policy/v1
    ps(
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // networking
    ps(
        "io.k8s.api.networking.v1.ServiceCIDRStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    ps(
        "io.k8s.api.networking.v1beta1.ServiceCIDRStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // admissionregistration/v1
    ps(
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        "webhooks",
        "merge",
        Some("name"),
    ),
    ps(
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        "webhooks",
        "merge",
        Some("name"),
    ),
    // storage/v1
    ps(
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        "merge",
        Some("name"),
    ),
    // resource.k8s.io
    ps(
        "io.k8s.api.resource.v1alpha3.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
    ps(
        "io.k8s.api.resource.v1beta1.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
    ps(
        "io.k8s.api.resource.v1beta2.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
    // storagemigration.k8s.io/v1alpha1
    ps(
        "io.k8s.api.storagemigration.v1alpha1.StorageVersionMigrationStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // apiregistration.k8s.io/v1
    ps(
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

const EXT_STRATEGY: &str = "x-kubernetes-patch-strategy";
const EXT_MERGE_KEY: &str = "x-kubernetes-patch-merge-key";

/// Writes the [`PATCH_STRATEGIES`] facts into `definitions` as the
/// `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` extensions of the properties
/// they describe (next to the property's `$ref`/`type`, as the real OpenAPI v2 spec has them).
/// Definitions or properties `definitions` lacks are skipped.
pub fn add_extensions(definitions: &mut Map<String, Value>) {
    for fact in PATCH_STRATEGIES {
        let Some(prop) = definitions
            .get_mut(fact.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(fact.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert(EXT_STRATEGY.into(), Value::String(fact.strategy.into()));
        if let Some(key) = fact.merge_key {
            prop.insert(EXT_MERGE_KEY.into(), Value::String(key.into()));
        }
    }
}

/// Why a strategic merge patch could not be applied. The texts are the real apiserver's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch (or original) is not a JSON object.
    BadJsonDoc,
    /// A list holds lists.
    NoListOfLists,
    /// A `$deleteFromPrimitiveList` key without `/<field>`.
    BadPatchFormatForPrimitiveList,
    /// `$retainKeys` is not a list, or the patch sets a field the list does not name.
    BadPatchFormatForRetainKeys,
    /// A `$setElementOrder` key without `/<field>`.
    BadPatchFormatForSetElementOrderList,
    /// A list item lacks the list's merge key.
    NoMergeKey { map: String, key: String },
    /// A value has the wrong JSON type (Go type names).
    BadArgType { expected: String, actual: String },
    /// `$patch` with a value other than replace/delete (or merge in a list).
    UnknownPatchType { directive: String, map: String },
    /// The schema of the object does not declare the field.
    FieldNotFound { structure: String, field: String },
    /// `$patch: merge` inside a list.
    MergingListsNotSupported,
    /// A list of maps with merge strategy but no merge key.
    NoMergeKeyForList { kind: String },
    /// A list mixes element types.
    ListElementTypesNotIdentical { lists: String },
    /// Element type of empty lists asked for.
    NoElements,
    /// A merge list holds a non-map where maps were expected.
    NotAMap { index: usize },
    /// The patch list is not in `$setElementOrder` order.
    OrderMismatch { patch: String, order: String },
    /// A patch strategy value the Go code rejects.
    UnexpectedPatchStrategy { strategies: String },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadJsonDoc => f.write_str("invalid JSON document"),
            Self::NoListOfLists => f.write_str("lists of lists are not supported"),
            Self::BadPatchFormatForPrimitiveList => {
                f.write_str("invalid patch format of primitive list")
            }
            Self::BadPatchFormatForRetainKeys => f.write_str("invalid patch format of retainKeys"),
            Self::BadPatchFormatForSetElementOrderList => {
                f.write_str("invalid patch format of setElementOrder list")
            }
            Self::NoMergeKey { map, key } => {
                write!(f, "map: {map} does not contain declared merge key: {key}")
            }
            Self::BadArgType { expected, actual } => {
                write!(f, "expected a {expected}, but received a {actual}")
            }
            Self::UnknownPatchType { directive, map } => {
                write!(f, "unknown patch type: {directive} in map: {map}")
            }
            Self::FieldNotFound { structure, field } => write!(
                f,
                "unable to find api field in struct {structure} for the json field {field:?}"
            ),
            Self::MergingListsNotSupported => {
                f.write_str("merging lists cannot yet be specified in the patch")
            }
            Self::NoMergeKeyForList { kind } => {
                write!(f, "cannot merge lists without merge key for {kind}")
            }
            Self::ListElementTypesNotIdentical { lists } => {
                write!(f, "list element types are not identical: {lists}")
            }
            Self::NoElements => f.write_str("no elements in any of the given slices"),
            Self::NotAMap { index } => write!(f, "value for key {index} is not a map"),
            Self::OrderMismatch { patch, order } => write!(
                f,
                "the order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}"
            ),
            Self::UnexpectedPatchStrategy { strategies } => {
                write!(f, "unexpected patch strategy: {strategies}")
            }
        }
    }
}

impl std::error::Error for PatchError {}

impl PatchError {
    /// The HTTP status the real apiserver answers with for this error
    /// (`interpretStrategicMergePatchError`): 400 (reason BadRequest) for malformed patches,
    /// 422 for lists of lists, otherwise 500: the apiserver passes the raw error on, which
    /// becomes a Status with reason Unknown and this error's text as the message.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::BadJsonDoc
            | Self::BadPatchFormatForPrimitiveList
            | Self::BadPatchFormatForRetainKeys
            | Self::BadPatchFormatForSetElementOrderList => 400,
            Self::NoListOfLists => 422,
            _ => 500,
        }
    }
}

type Result<T> = std::result::Result<T, PatchError>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PREFIX: &str = "$deleteFromPrimitiveList";
const ORDER_PREFIX: &str = "$setElementOrder";

/// Applies a strategic merge patch to `original`. `definitions` is the OpenAPI v2 `definitions`
/// object (name -> schema; fields whose type is another definition use
/// `{"$ref": "#/definitions/<name>"}`, arrays use `items`, maps use `additionalProperties`;
/// `allOf`/`anyOf`/`oneOf` wrappers are followed) carrying the x-kubernetes-patch-strategy /
/// x-kubernetes-patch-merge-key extensions; `root` is the definition of the patched object
/// (e.g. "io.k8s.api.apps.v1.Deployment"). Where the schema has no entry (unknown definition,
/// free-form object), maps merge recursively and lists are replaced.
pub fn apply(
    original: &Value,
    patch: &Value,
    definitions: &Map<String, Value>,
    root: &str,
) -> Result<Value> {
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::BadJsonDoc),
    };
    let patch = match patch {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::BadJsonDoc),
    };
    let ctx = Ctx { defs: definitions };
    let schema = match definitions.get(root) {
        Some(def) => ctx.schema_of_node(def, Some(root)),
        None => Schema::Unstructured,
    };
    ctx.merge_map(original, patch, schema).map(Value::Object)
}

// ---------------------------------------------------------------------------------------------
// Schema lookup

#[derive(Clone, Copy)]
enum Schema<'a> {
    /// No schema: maps merge, lists are replaced.
    Unstructured,
    /// A definition with properties (a Go struct).
    Struct {
        name: &'a str,
        props: &'a Map<String, Value>,
    },
    /// A map; the schema of its values.
    MapOf(&'a Value),
}

impl Schema<'_> {
    fn kind_name(&self) -> &'static str {
        match self {
            Schema::Struct { .. } => "struct",
            Schema::MapOf(_) => "map",
            Schema::Unstructured => "interface",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Meta<'a> {
    strategy: &'a str,
    merge_key: &'a str,
}

struct Ctx<'a> {
    defs: &'a Map<String, Value>,
}

impl<'a> Ctx<'a> {
    fn resolve(&self, node: &'a Value) -> (&'a Value, Option<&'a str>) {
        resolve_schema(self.defs, node)
    }

    fn schema_of(&self, node: &'a Value) -> Schema<'a> {
        let (node, name) = self.resolve(node);
        self.schema_of_node(node, name)
    }

    fn schema_of_node(&self, node: &'a Value, name: Option<&'a str>) -> Schema<'a> {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            let name = name.map_or("", |n| n.rsplit('.').next().unwrap_or(n));
            return Schema::Struct { name, props };
        }
        if let Some(ap) = node.get("additionalProperties") {
            return Schema::MapOf(ap);
        }
        Schema::Unstructured
    }

    fn meta_of(node: &'a Value) -> Meta<'a> {
        let mut meta = Meta::default();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if meta.strategy.is_empty()
                && let Some(s) = n.get(EXT_STRATEGY).and_then(Value::as_str)
            {
                meta.strategy = s;
            }
            if meta.merge_key.is_empty()
                && let Some(k) = n.get(EXT_MERGE_KEY).and_then(Value::as_str)
            {
                meta.merge_key = k;
            }
            for w in ["allOf", "anyOf", "oneOf"] {
                if let Some(alts) = n.get(w).and_then(Value::as_array) {
                    stack.extend(alts.iter().filter(|a| a.get("$ref").is_none()));
                }
            }
        }
        meta
    }

    fn property(&self, schema: Schema<'a>, key: &str) -> Result<Option<&'a Value>> {
        match schema {
            Schema::Unstructured => Ok(None),
            Schema::MapOf(v) => Ok(Some(v)),
            Schema::Struct { name, props } => match props.get(key) {
                Some(p) => Ok(Some(p)),
                None => Err(PatchError::FieldNotFound {
                    structure: name.to_string(),
                    field: key.to_string(),
                }),
            },
        }
    }

    /// Schema and patch meta of a map-valued field.
    fn lookup_struct(&self, schema: Schema<'a>, key: &str) -> Result<(Schema<'a>, Meta<'a>)> {
        Ok(match self.property(schema, key)? {
            None => (Schema::Unstructured, Meta::default()),
            Some(p) => {
                let meta = if matches!(schema, Schema::MapOf(_)) {
                    Meta::default()
                } else {
                    Self::meta_of(p)
                };
                (self.schema_of(p), meta)
            }
        })
    }

    /// Element schema and patch meta of a list-valued field.
    fn lookup_slice(&self, schema: Schema<'a>, key: &str) -> Result<(Schema<'a>, Meta<'a>)> {
        Ok(match self.property(schema, key)? {
            None => (Schema::Unstructured, Meta::default()),
            Some(p) => {
                let meta = if matches!(schema, Schema::MapOf(_)) {
                    Meta::default()
                } else {
                    Self::meta_of(p)
                };
                let (node, _) = self.resolve(p);
                let elem = match node.get("items") {
                    Some(items) => self.schema_of(items),
                    None => Schema::Unstructured,
                };
                (elem, meta)
            }
        })
    }
}

/// Follows `$ref`s and single wrappers (`allOf`/`anyOf`/`oneOf` around one non-null schema) to the
/// node that describes a value in the OpenAPI definitions, and the definition's name. Also what the
/// Go-wording decoder errors ([`super::gojson`]) walk.
pub(super) fn resolve_schema<'a>(
    defs: &'a Map<String, Value>,
    mut node: &'a Value,
) -> (&'a Value, Option<&'a str>) {
    let mut name = None;
    for _ in 0..32 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let def_name = r.rsplit('/').next().unwrap_or(r);
            match defs.get_key_value(def_name) {
                Some((k, def)) => {
                    node = def;
                    name = Some(k.as_str());
                    continue;
                }
                None => return (&Value::Null, None),
            }
        }
        let wrapped = ["allOf", "anyOf", "oneOf"].iter().find_map(|w| {
            node.get(*w)
                .and_then(Value::as_array)
                .and_then(|alts| alts.iter().find(|alt| !is_null_schema(alt)))
        });
        match wrapped {
            Some(inner)
                if node.get("properties").is_none()
                    && node.get("items").is_none()
                    && node.get("additionalProperties").is_none() =>
            {
                node = inner
            }
            _ => break,
        }
    }
    (node, name)
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

/// Splits a patch strategy into (retainKeys present, other strategy) like the Go code.
fn extract_retain_keys(strategy: &str) -> Result<(bool, &str)> {
    let parts: Vec<&str> = strategy.split(',').collect();
    match parts.as_slice() {
        [] => Ok((false, "")),
        ["retainKeys"] => Ok((true, "")),
        [one] => Ok((false, one)),
        ["retainKeys", other] | [other, "retainKeys"] => Ok((true, other)),
        _ => Err(PatchError::UnexpectedPatchStrategy {
            strategies: format!("[{}]", parts.join(" ")),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Go-style formatting for error texts

/// Go's `reflect.TypeOf(v).String()` for a decoded JSON value.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

const GO_MAP: &str = "map[string]interface {}";
const GO_SLICE: &str = "[]interface {}";

fn bad_arg(expected: &str, actual: &Value) -> PatchError {
    PatchError::BadArgType {
        expected: expected.to_string(),
        actual: go_type(actual).to_string(),
    }
}

/// Go's `%v` of a decoded JSON value.
pub(super) fn gofmt(v: &Value) -> String {
    let mut s = String::new();
    gofmt_into(v, &mut s);
    s
}

fn gofmt_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => {
                out.push_str(&format!("{f:.0}"))
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                gofmt_into(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => gofmt_map(m, out),
    }
}

fn gofmt_map(m: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push_str("map[");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        gofmt_into(&m[k.as_str()], out);
    }
    out.push(']');
}

fn gofmt_m(m: &Map<String, Value>) -> String {
    let mut s = String::new();
    gofmt_map(m, &mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// Directive removal for values inserted verbatim

/// Returns `v` without directives and without null map values, or `None` when `v` itself is a
/// directive map (`{"$patch": …}`) and must not be kept. Mirrors the Go code's
/// `removeDirectives` + `discardNullValuesFromPatch`; it also drops `$retainKeys`,
/// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` keys, which the Go code leaves for the
/// typed decoding to drop.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            let mut out = Map::new();
            for (k, x) in m {
                if is_directive_key(&k) || x.is_null() {
                    continue;
                }
                if let Some(x) = clean(x) {
                    out.insert(k, x);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => Some(Value::Array(clean_list(a))),
        other => Some(other),
    }
}

fn clean_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter().filter_map(clean).collect()
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(ORDER_PREFIX)
        || k.starts_with(DELETE_PREFIX)
}

// ---------------------------------------------------------------------------------------------
// List helpers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Map,
}

fn elem_kind(v: &Value) -> Option<Kind> {
    Some(match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_f64() => Kind::Float,
        Value::Number(_) => Kind::Int,
        Value::String(_) => Kind::Str,
        Value::Object(_) => Kind::Map,
        Value::Array(_) => return None,
    })
}

/// The common element type of the lists (Go `sliceElementType`).
fn slice_element_kind(lists: &[&[Value]]) -> Result<Kind> {
    let mut prev: Option<Kind> = None;
    for list in lists {
        for v in list.iter() {
            let k = elem_kind(v).ok_or(PatchError::NoListOfLists)?;
            match prev {
                None => prev = Some(k),
                Some(p) if p != k => {
                    let all: Vec<Value> = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                    return Err(PatchError::ListElementTypesNotIdentical {
                        lists: gofmt(&Value::Array(all)),
                    });
                }
                Some(_) => {}
            }
        }
    }
    prev.ok_or(PatchError::NoElements)
}

/// The value an item is identified by: its merge key's value for maps, itself otherwise.
fn ident<'v>(item: &'v Value, merge_key: &str, kind: Kind) -> Option<&'v Value> {
    if kind == Kind::Map {
        item.as_object().and_then(|m| m.get(merge_key))
    } else {
        Some(item)
    }
}

fn index_of(list: &[Value], item: &Value, merge_key: &str, kind: Kind) -> Option<usize> {
    let want = ident(item, merge_key, kind);
    list.iter().position(|v| ident(v, merge_key, kind) == want)
}

/// Go `findMapInSliceBasedOnKeyValue`.
fn find_map(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (i, v) in list.iter().enumerate() {
        let m = v.as_object().ok_or(PatchError::NotAMap { index: i })?;
        if m.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn merge_key_value<'v>(item: &'v Value, key: &str) -> Result<&'v Value> {
    let m = item.as_object().ok_or_else(|| bad_arg(GO_MAP, item))?;
    m.get(key).ok_or_else(|| PatchError::NoMergeKey {
        map: gofmt_m(m),
        key: key.to_string(),
    })
}

fn is_delete_item(v: &Value) -> bool {
    v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// Sorts `to_sort` by the order of `order` (Go `normalizeSliceOrder`); `$patch: delete` items go
/// last.
fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let (mut keep, deletes) = if kind == Kind::Map {
        for v in to_sort.iter().chain(order) {
            merge_key_value(v, merge_key)?;
        }
        to_sort.into_iter().partition(|v| !is_delete_item(v))
    } else {
        (to_sort, Vec::new())
    };
    // Every item is found in `order` on the paths that reach here; unfound ones keep their
    // relative order at the end.
    keep.sort_by_key(|v| index_of(order, v, merge_key, kind).unwrap_or(usize::MAX));
    keep.extend(deletes);
    Ok(keep)
}

/// Go `mergeSortedSlice`: interleaves server-only items (`left`) into patch items (`right`),
/// comparing positions in the live list.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (
                    index_of(server_order, l, merge_key, kind),
                    index_of(server_order, r, merge_key, kind),
                ),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let patch_items = normalize_slice_order(patch_items, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        merge_key,
        kind,
    ))
}

/// Splits `merged` into items present in `by` and the rest.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for v in merged {
        let found = if merge_key.is_empty() {
            by.contains(&v)
        } else {
            let key_value = merge_key_value(&v, merge_key)?;
            find_map(by, merge_key, key_value)?.is_some()
        };
        if found {
            inside.push(v);
        } else {
            outside.push(v);
        }
    }
    Ok((inside, outside))
}

fn dedup_scalars(list: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for v in list {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn extract_key<'k>(key: &'k str, prefix: &str) -> Result<&'k str> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest),
        _ if prefix == DELETE_PREFIX => Err(PatchError::BadPatchFormatForPrimitiveList),
        _ => Err(PatchError::BadPatchFormatForSetElementOrderList),
    }
}

/// Go `validatePatchWithSetOrderList`: the patch items (deletions and directive items aside)
/// must appear in the `$setElementOrder` list, in the same relative order.
fn validate_set_order(patch_list: &[Value], order: &[Value], merge_key: &str) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = if merge_key.is_empty() {
        patch_list.iter().collect()
    } else {
        let mut v = Vec::new();
        for item in patch_list {
            if !item.is_object() {
                return Err(bad_arg(GO_MAP, item));
            }
            if !is_delete_item(item) {
                v.push(item);
            }
        }
        v
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if non_delete[pi].get(DIRECTIVE).is_some() {
            pi += 1;
            continue;
        }
        let equal = if merge_key.is_empty() {
            non_delete[pi] == &order[oi]
        } else {
            merge_key_value(non_delete[pi], merge_key)? == merge_key_value(&order[oi], merge_key)?
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(PatchError::OrderMismatch {
            patch: gofmt(&Value::Array(patch_list.to_vec())),
            order: gofmt(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Merging

impl<'a> Ctx<'a> {
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        schema: Schema<'a>,
    ) -> Result<Map<String, Value>> {
        if let Some(directive) = patch.get(DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => {
                    patch.remove(DIRECTIVE);
                    match clean(Value::Object(patch)) {
                        Some(Value::Object(m)) => Ok(m),
                        _ => Ok(Map::new()),
                    }
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(PatchError::UnknownPatchType {
                    directive: gofmt(directive),
                    map: gofmt_m(&patch),
                }),
            };
        }

        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_orders(&mut original, &mut patch, schema)?;

        // Regular fields first, then the primitive deletion lists (so a value both added and
        // deleted ends up deleted).
        let (deletions, regular): (Vec<_>, Vec<_>) = patch
            .into_iter()
            .partition(|(k, _)| k.starts_with(DELETE_PREFIX));
        for (key, patch_v) in regular.into_iter().chain(deletions) {
            let (key, is_delete_list) = if key.starts_with(DELETE_PREFIX) {
                (extract_key(&key, DELETE_PREFIX)?.to_string(), true)
            } else {
                (key, false)
            };
            if patch_v.is_null() {
                original.remove(&key);
                continue;
            }
            let Some(orig_v) = original.remove(&key) else {
                if !is_delete_list && let Some(v) = clean(patch_v) {
                    original.insert(key, v);
                }
                continue;
            };
            if go_type(&orig_v) != go_type(&patch_v) {
                if is_delete_list {
                    original.insert(key, orig_v);
                } else if let Some(v) = clean(patch_v) {
                    original.insert(key, v);
                }
                continue;
            }
            let merged = match (orig_v, patch_v) {
                (Value::Object(o), Value::Object(p)) => {
                    let (sub, meta) = self.lookup_struct(schema, &key)?;
                    let (_, strategy) = extract_retain_keys(meta.strategy)?;
                    if strategy == "replace" {
                        clean(Value::Object(p))
                    } else {
                        Some(Value::Object(self.merge_map(o, p, sub)?))
                    }
                }
                (Value::Array(o), Value::Array(p)) => {
                    let (elem, meta) = self.lookup_slice(schema, &key)?;
                    let (_, strategy) = extract_retain_keys(meta.strategy)?;
                    Some(Value::Array(self.merge_slice_handler(
                        o,
                        p,
                        elem,
                        strategy,
                        meta.merge_key,
                        is_delete_list,
                    )?))
                }
                (_, p) => clean(p),
            };
            if let Some(v) = merged {
                original.insert(key, v);
            }
        }
        Ok(original)
    }

    /// Go `mergePatchIntoOriginal`: merges each list named by a `$setElementOrder/<list>`
    /// directive together with the patch's list and puts the result in the directive's order.
    fn merge_set_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        schema: Schema<'a>,
    ) -> Result<()> {
        let keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(ORDER_PREFIX))
            .cloned()
            .collect();
        for key in keys {
            let Some(order_v) = patch.remove(&key) else {
                continue;
            };
            let Value::Array(order) = order_v else {
                return Err(bad_arg(GO_SLICE, &order_v));
            };
            let field = extract_key(&key, ORDER_PREFIX)?.to_string();
            let original_list = match original.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg(GO_SLICE, other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg(GO_SLICE, other)),
            };
            let (elem, meta) = self.lookup_slice(schema, &field)?;
            let (_, strategy) = extract_retain_keys(meta.strategy)?;
            let merge_key = meta.merge_key;
            validate_set_order(patch_list.as_deref().unwrap_or(&[]), &order, merge_key)?;

            let orig_slice = original_list.clone().unwrap_or_default();
            let patch_slice = patch_list.clone().unwrap_or_default();
            let merged = match (original_list, patch_list) {
                (Some(o), None) => o,
                (None, Some(p)) => clean_list(p),
                (Some(o), Some(p)) => {
                    self.merge_slice_handler(o, p, elem, strategy, merge_key, false)?
                }
                (None, None) => continue,
            };
            let (patch_items, server_only) = partition(merged, &order, merge_key)?;
            let kind = slice_element_kind(&[&orig_slice, &patch_slice])?;
            let both = normalize_element_order(
                patch_items,
                server_only,
                &order,
                &orig_slice,
                merge_key,
                kind,
            )?;
            original.insert(field.clone(), Value::Array(both));
            patch.remove(&field);
        }
        Ok(())
    }

    fn merge_slice_handler(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        elem: Schema<'a>,
        strategy: &str,
        merge_key: &str,
        is_delete_list: bool,
    ) -> Result<Vec<Value>> {
        if strategy == "merge" || is_delete_list {
            self.merge_slice(original, patch, elem, merge_key, is_delete_list)
        } else {
            Ok(clean_list(patch))
        }
    }

    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        elem: Schema<'a>,
        merge_key: &str,
        is_delete_list: bool,
    ) -> Result<Vec<Value>> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let kind = slice_element_kind(&[&original, &patch])?;
        let (original, patch, merged) = if kind != Kind::Map {
            if is_delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.contains(v))
                    .collect());
            }
            let mut both = original.clone();
            both.extend(patch.iter().cloned());
            (original, patch, dedup_scalars(both))
        } else {
            if merge_key.is_empty() {
                return Err(PatchError::NoMergeKeyForList {
                    kind: elem.kind_name().to_string(),
                });
            }
            let (original, patch) = special_elements(original, patch, merge_key)?;
            let merged = self.merge_without_special(original.clone(), &patch, merge_key, elem)?;
            (original, patch, merged)
        };
        let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
        normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)
    }

    /// Go `mergeSliceWithoutSpecialElements`.
    fn merge_without_special(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        merge_key: &str,
        elem: Schema<'a>,
    ) -> Result<Vec<Value>> {
        for item in patch {
            let key_value = merge_key_value(item, merge_key)?;
            match find_map(&original, merge_key, key_value)? {
                Some(i) => {
                    let Value::Object(o) = std::mem::take(&mut original[i]) else {
                        return Err(PatchError::NotAMap { index: i });
                    };
                    let Value::Object(p) = item.clone() else {
                        return Err(bad_arg(GO_MAP, item));
                    };
                    original[i] = Value::Object(self.merge_map(o, p, elem)?);
                }
                None => original.extend(clean(item.clone())),
            }
        }
        Ok(original)
    }
}

/// Go `mergeSliceWithSpecialElements`: applies `$patch` items of a merge list; returns the
/// updated original and the patch without them (or, for `$patch: replace`, the patch's other
/// items as the new original and an empty patch).
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut rest = Vec::new();
    let mut replace = false;
    for item in patch {
        let Some(m) = item.as_object() else {
            return Err(bad_arg(GO_MAP, &item));
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            rest.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(key_value) = m.get(merge_key) else {
                    return Err(PatchError::NoMergeKey {
                        map: gofmt_m(m),
                        key: merge_key.to_string(),
                    });
                };
                while let Some(i) = find_map(&original, merge_key, key_value)? {
                    original.remove(i);
                }
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::MergingListsNotSupported),
            _ => {
                return Err(PatchError::UnknownPatchType {
                    directive: gofmt(directive),
                    map: gofmt_m(m),
                });
            }
        }
    }
    if replace {
        Ok((clean_list(rest), Vec::new()))
    } else {
        Ok((original, rest))
    }
}

/// Go `applyRetainKeysDirective` (server side): drops the original's fields the `$retainKeys`
/// list does not name, after checking the patch sets only named fields.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(PatchError::BadPatchFormatForRetainKeys);
    };
    let named = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PREFIX) || k.starts_with(ORDER_PREFIX) {
            continue;
        }
        if !named(k) {
            return Err(PatchError::BadPatchFormatForRetainKeys);
        }
    }
    original.retain(|k, _| named(k));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn r(name: &str) -> Value {
        json!({ "$ref": format!("#/definitions/{name}") })
    }
    fn arr(name: &str) -> Value {
        json!({ "type": "array", "items": r(name) })
    }
    fn strmap() -> Value {
        json!({ "type": "object", "additionalProperties": { "type": "string" } })
    }
    fn strs() -> Value {
        json!({ "type": "array", "items": { "type": "string" } })
    }
    fn s() -> Value {
        json!({ "type": "string" })
    }

    /// A slice of the real definitions (apps/v1 Deployment down to containers), with the
    /// extensions written by `add_extensions`.
    fn defs() -> Map<String, Value> {
        let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
        let d = json!({
            "io.k8s.api.apps.v1.Deployment": { "properties": {
                "apiVersion": s(), "kind": s(), "metadata": r(meta),
                "spec": { "allOf": [r("io.k8s.api.apps.v1.DeploymentSpec")] },
                "status": r("io.k8s.api.apps.v1.DeploymentStatus"),
            }},
            "io.k8s.api.apps.v1.DeploymentSpec": { "properties": {
                "replicas": { "type": "integer" }, "paused": { "type": "boolean" },
                "selector": r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
                "strategy": r("io.k8s.api.apps.v1.DeploymentStrategy"),
                "template": r("io.k8s.api.core.v1.PodTemplateSpec"),
            }},
            "io.k8s.api.apps.v1.DeploymentStrategy": { "properties": {
                "type": s(), "rollingUpdate": r("io.k8s.api.apps.v1.RollingUpdateDeployment"),
            }},
            "io.k8s.api.apps.v1.RollingUpdateDeployment": { "properties": {
                "maxSurge": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString"),
                "maxUnavailable": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString"),
            }},
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": { "type": "string", "format": "int-or-string" },
            "io.k8s.api.apps.v1.DeploymentStatus": { "properties": {
                "replicas": { "type": "integer" },
                "conditions": arr("io.k8s.api.apps.v1.DeploymentCondition"),
            }},
            "io.k8s.api.apps.v1.DeploymentCondition": { "properties": {
                "type": s(), "status": s(), "reason": s(), "message": s(),
            }},
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": { "properties": {
                "name": s(), "namespace": s(), "uid": s(), "resourceVersion": s(),
                "labels": strmap(), "annotations": strmap(), "finalizers": strs(),
                "ownerReferences": arr("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"),
            }},
            "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference": { "properties": {
                "uid": s(), "name": s(), "kind": s(), "apiVersion": s(), "controller": { "type": "boolean" },
            }},
            "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": { "properties": {
                "matchLabels": strmap(), "matchExpressions": { "type": "array", "items": { "type": "object" } },
            }},
            "io.k8s.api.core.v1.PodTemplateSpec": { "properties": {
                "metadata": r(meta), "spec": r("io.k8s.api.core.v1.PodSpec"),
            }},
            "io.k8s.api.core.v1.PodSpec": { "properties": {
                "containers": arr("io.k8s.api.core.v1.Container"),
                "initContainers": arr("io.k8s.api.core.v1.Container"),
                "volumes": arr("io.k8s.api.core.v1.Volume"),
                "tolerations": arr("io.k8s.api.core.v1.Toleration"),
                "imagePullSecrets": arr("io.k8s.api.core.v1.LocalObjectReference"),
                "nodeSelector": strmap(), "restartPolicy": s(),
            }},
            "io.k8s.api.core.v1.Container": { "properties": {
                "name": s(), "image": s(), "imagePullPolicy": s(), "args": strs(), "command": strs(),
                "env": arr("io.k8s.api.core.v1.EnvVar"),
                "ports": arr("io.k8s.api.core.v1.ContainerPort"),
                "volumeMounts": arr("io.k8s.api.core.v1.VolumeMount"),
                "resources": r("io.k8s.api.core.v1.ResourceRequirements"),
            }},
            "io.k8s.api.core.v1.EnvVar": { "properties": {
                "name": s(), "value": s(), "valueFrom": r("io.k8s.api.core.v1.EnvVarSource"),
            }},
            "io.k8s.api.core.v1.EnvVarSource": { "properties": {
                "fieldRef": { "type": "object" }, "secretKeyRef": { "type": "object" },
            }},
            "io.k8s.api.core.v1.ContainerPort": { "properties": {
                "containerPort": { "type": "integer" }, "name": s(), "protocol": s(),
            }},
            "io.k8s.api.core.v1.VolumeMount": { "properties": { "name": s(), "mountPath": s() }},
            "io.k8s.api.core.v1.ResourceRequirements": { "properties": {
                "limits": { "type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity") },
                "requests": { "type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity") },
            }},
            "io.k8s.apimachinery.pkg.api.resource.Quantity": { "type": "string" },
            "io.k8s.api.core.v1.Volume": { "properties": {
                "name": s(),
                "configMap": r("io.k8s.api.core.v1.ConfigMapVolumeSource"),
                "emptyDir": r("io.k8s.api.core.v1.EmptyDirVolumeSource"),
            }},
            "io.k8s.api.core.v1.ConfigMapVolumeSource": { "properties": { "name": s(), "optional": { "type": "boolean" } }},
            "io.k8s.api.core.v1.EmptyDirVolumeSource": { "properties": { "medium": s(), "sizeLimit": s() }},
            "io.k8s.api.core.v1.Toleration": { "properties": { "key": s(), "operator": s(), "effect": s(), "value": s() }},
            "io.k8s.api.core.v1.LocalObjectReference": { "properties": { "name": s() }},
        });
        let mut m = d.as_object().cloned().unwrap_or_default();
        add_extensions(&mut m);
        m
    }

    fn ap(original: Value, patch: Value) -> Value {
        match apply(&original, &patch, &defs(), DEPLOY) {
            Ok(v) => v,
            Err(e) => panic!("apply failed: {e}"),
        }
    }

    fn err(original: Value, patch: Value) -> PatchError {
        match apply(&original, &patch, &defs(), DEPLOY) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn deploy(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d", "labels": { "app": "d" } },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "d" } },
                "template": { "metadata": { "labels": { "app": "d" } }, "spec": { "containers": containers } },
            },
        })
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x[key].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pod_patch(spec: Value) -> Value {
        json!({ "spec": { "template": { "spec": spec } } })
    }

    // ---- basics -------------------------------------------------------------------------

    #[test]
    fn null_deletes_and_maps_merge() {
        let out = ap(
            json!({ "metadata": { "labels": { "a": "1", "b": "2" }, "name": "x" } }),
            json!({ "metadata": { "labels": { "a": null, "c": "3" } } }),
        );
        assert_eq!(
            out,
            json!({ "metadata": { "labels": { "b": "2", "c": "3" }, "name": "x" } })
        );
    }

    #[test]
    fn null_for_missing_field_is_ignored() {
        let out = ap(
            json!({ "metadata": { "name": "x" } }),
            json!({ "metadata": { "labels": null } }),
        );
        assert_eq!(out, json!({ "metadata": { "name": "x" } }));
    }

    #[test]
    fn primitives_replace() {
        let out = ap(
            deploy(json!([])),
            json!({ "spec": { "replicas": 3, "paused": true } }),
        );
        assert_eq!(out["spec"]["replicas"], json!(3));
        assert_eq!(out["spec"]["paused"], json!(true));
    }

    #[test]
    fn type_change_replaces() {
        let out = ap(
            json!({ "spec": { "strategy": "weird" } }),
            json!({ "spec": { "strategy": { "type": "Recreate", "x": null } } }),
        );
        assert_eq!(out["spec"]["strategy"], json!({ "type": "Recreate" }));
    }

    #[test]
    fn new_field_drops_nested_nulls() {
        let out = ap(
            json!({ "metadata": { "name": "x" } }),
            json!({ "metadata": { "annotations": { "a": "1", "b": null } } }),
        );
        assert_eq!(out["metadata"]["annotations"], json!({ "a": "1" }));
    }

    #[test]
    fn kubectl_scale_label_annotate() {
        let d = deploy(json!([{ "name": "c", "image": "nginx" }]));
        let out = ap(d.clone(), json!({ "spec": { "replicas": 5 } }));
        assert_eq!(out["spec"]["replicas"], json!(5));
        let out = ap(
            d.clone(),
            json!({ "metadata": { "labels": { "tier": "web" } } }),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({ "app": "d", "tier": "web" })
        );
        let out = ap(out, json!({ "metadata": { "labels": { "tier": null } } }));
        assert_eq!(out["metadata"]["labels"], json!({ "app": "d" }));
        let out = ap(
            d,
            json!({ "metadata": { "annotations": { "kubernetes.io/change-cause": "x" } } }),
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({ "kubernetes.io/change-cause": "x" })
        );
    }

    #[test]
    fn patch_must_be_an_object() {
        let e = err(json!({}), json!([1]));
        assert_eq!(e, PatchError::BadJsonDoc);
        assert_eq!(e.to_string(), "invalid JSON document");
        assert_eq!(e.status_code(), 400);
        assert_eq!(ap(json!({ "a": 1 }), Value::Null), json!({ "a": 1 }));
    }

    #[test]
    fn unknown_root_is_unstructured() {
        let out = apply(
            &json!({ "a": { "b": 1, "c": 2 }, "l": [1, 2] }),
            &json!({ "a": { "b": null, "d": 3 }, "l": [3] }),
            &defs(),
            "no.such.Definition",
        );
        assert_eq!(out, Ok(json!({ "a": { "c": 2, "d": 3 }, "l": [3] })));
    }

    // ---- merge lists of maps -----------------------------------------------------------

    #[test]
    fn kubectl_patch_container_image() {
        let d = deploy(json!([
            { "name": "a", "image": "a:1" },
            { "name": "c", "image": "c:1", "args": ["x"] },
        ]));
        let out = ap(
            d,
            pod_patch(json!({ "containers": [{ "name": "c", "image": "x" }] })),
        );
        assert_eq!(
            containers(&out),
            &json!([{ "name": "a", "image": "a:1" }, { "name": "c", "image": "x", "args": ["x"] }])
        );
    }

    #[test]
    fn new_item_without_order_goes_before_live_only_items() {
        // As the Go code does (and the Kubernetes docs show for `kubectl patch`).
        let d = deploy(json!([{ "name": "a" }, { "name": "b" }]));
        let out = ap(
            d.clone(),
            pod_patch(json!({ "containers": [{ "name": "n", "image": "n" }] })),
        );
        assert_eq!(names(containers(&out), "name"), ["n", "a", "b"]);
        // A new item after a patched one follows it.
        let out = ap(
            d,
            pod_patch(json!({ "containers": [{ "name": "b", "image": "b2" }, { "name": "n" }] })),
        );
        assert_eq!(names(containers(&out), "name"), ["a", "b", "n"]);
        assert_eq!(containers(&out)[1]["image"], json!("b2"));
    }

    #[test]
    fn patch_order_wins_over_live_order() {
        let d = deploy(json!([{ "name": "a" }, { "name": "b" }, { "name": "c" }]));
        let out = ap(
            d,
            pod_patch(json!({ "containers": [{ "name": "c" }, { "name": "a" }] })),
        );
        // Patch items keep the patch order; the live-only item keeps its place before them.
        assert_eq!(names(containers(&out), "name"), ["b", "c", "a"]);
    }

    #[test]
    fn delete_directive_in_list() {
        let d = deploy(json!([{ "name": "a" }, { "name": "b" }]));
        let out = ap(
            d,
            pod_patch(json!({ "containers": [{ "$patch": "delete", "name": "a" }] })),
        );
        assert_eq!(containers(&out), &json!([{ "name": "b" }]));
    }

    #[test]
    fn replace_directive_in_list() {
        let d = deploy(json!([{ "name": "a", "image": "a" }, { "name": "b" }]));
        let out = ap(
            d,
            pod_patch(
                json!({ "containers": [{ "name": "z", "image": "z" }, { "$patch": "replace" }] }),
            ),
        );
        assert_eq!(containers(&out), &json!([{ "name": "z", "image": "z" }]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let out = ap(
            json!({ "metadata": { "ownerReferences": [{ "uid": "1", "name": "a" }] } }),
            json!({ "metadata": { "ownerReferences": [{ "uid": "1", "controller": true }, { "uid": "2", "name": "b" }] } }),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{ "uid": "1", "name": "a", "controller": true }, { "uid": "2", "name": "b" }])
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let out = ap(
            json!({ "status": { "conditions": [
                { "type": "Available", "status": "False" },
                { "type": "Progressing", "status": "True" },
            ] } }),
            json!({ "status": { "conditions": [{ "type": "Available", "status": "True" }] } }),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{ "type": "Available", "status": "True" }, { "type": "Progressing", "status": "True" }])
        );
    }

    #[test]
    fn lists_without_strategy_replace() {
        let d = deploy(json!([{ "name": "c", "args": ["a", "b"] }]));
        let mut d2 = d.clone();
        d2["spec"]["template"]["spec"]["tolerations"] = json!([{ "key": "k1" }]);
        let out = ap(
            d2,
            pod_patch(json!({
                "tolerations": [{ "key": "k2" }],
                "containers": [{ "name": "c", "args": ["z"] }],
            })),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{ "key": "k2" }])
        );
        assert_eq!(containers(&out)[0]["args"], json!(["z"]));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let d = deploy(json!([{ "name": "a" }]));
        let e = err(d, pod_patch(json!({ "containers": [{ "image": "x" }] })));
        assert_eq!(
            e.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
        assert_eq!(e.status_code(), 500);
        let d = deploy(json!([{ "name": "a" }]));
        let e = err(
            d,
            pod_patch(json!({ "containers": [{ "$patch": "delete" }] })),
        );
        assert_eq!(
            e.to_string(),
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
    }

    #[test]
    fn unknown_directives_are_errors() {
        let e = err(
            json!({ "spec": { "strategy": { "type": "Recreate" } } }),
            json!({ "spec": { "strategy": { "$patch": "foo", "type": "x" } } }),
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: foo in map: map[$patch:foo type:x]"
        );
        let d = deploy(json!([{ "name": "a" }]));
        let e = err(
            d.clone(),
            pod_patch(json!({ "containers": [{ "$patch": "bar", "name": "a" }] })),
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: bar in map: map[$patch:bar name:a]"
        );
        let e = err(
            d,
            pod_patch(json!({ "containers": [{ "$patch": "merge" }] })),
        );
        assert_eq!(
            e.to_string(),
            "merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn list_type_errors() {
        let e = err(
            json!({ "metadata": { "finalizers": ["a"] } }),
            json!({ "metadata": { "finalizers": [["b"]] } }),
        );
        assert_eq!(e, PatchError::NoListOfLists);
        assert_eq!(e.status_code(), 422);
        let e = err(
            json!({ "metadata": { "finalizers": ["a"] } }),
            json!({ "metadata": { "finalizers": [1] } }),
        );
        assert_eq!(
            e.to_string(),
            "list element types are not identical: [[a] [1]]"
        );
    }

    // ---- maps with directives ------------------------------------------------------------

    #[test]
    fn replace_directive_on_map() {
        let out = ap(
            json!({ "spec": { "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1 } } } }),
            json!({ "spec": { "strategy": { "$patch": "replace", "type": "Recreate" } } }),
        );
        assert_eq!(out["spec"]["strategy"], json!({ "type": "Recreate" }));
    }

    #[test]
    fn delete_directive_on_map() {
        // The Go code leaves an empty map where a `$patch: delete` map met a live map.
        let out = ap(
            json!({ "metadata": { "labels": { "a": "1" }, "name": "n" } }),
            json!({ "metadata": { "labels": { "$patch": "delete" } } }),
        );
        assert_eq!(out, json!({ "metadata": { "labels": {}, "name": "n" } }));
        // Where there is nothing to delete, the directive is dropped.
        let out = ap(
            json!({ "metadata": {} }),
            json!({ "metadata": { "labels": { "$patch": "delete" } } }),
        );
        assert_eq!(out, json!({ "metadata": {} }));
    }

    #[test]
    fn directives_never_leak() {
        let d = deploy(json!([{ "name": "a" }]));
        let out = ap(
            d,
            json!({
                "metadata": { "annotations": { "$patch": "replace", "x": "y" } },
                "spec": { "template": { "spec": {
                    "volumes": [{ "name": "v", "$retainKeys": ["name"] }],
                    "containers": [{
                        "name": "b", "$setElementOrder/env": [{ "name": "E" }],
                        "env": [{ "name": "E", "value": "1" }, { "$patch": "delete", "name": "F" }],
                    }],
                } } },
            }),
        );
        let text = out.to_string();
        assert!(!text.contains('$'), "{text}");
        assert_eq!(
            containers(&out)[0],
            json!({ "name": "b", "env": [{ "name": "E", "value": "1" }] })
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{ "name": "v" }])
        );
    }

    // ---- $retainKeys ---------------------------------------------------------------------

    #[test]
    fn retain_keys_on_deployment_strategy() {
        let out = ap(
            json!({ "spec": { "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%" } } } }),
            json!({ "spec": { "strategy": { "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null } } }),
        );
        assert_eq!(out["spec"]["strategy"], json!({ "type": "Recreate" }));
    }

    #[test]
    fn retain_keys_on_volume_source() {
        let mut d = deploy(json!([{ "name": "c" }]));
        d["spec"]["template"]["spec"]["volumes"] =
            json!([{ "name": "v", "configMap": { "name": "cm" } }]);
        let out = ap(
            d,
            pod_patch(json!({
                "$setElementOrder/volumes": [{ "name": "v" }],
                "volumes": [{ "$retainKeys": ["emptyDir", "name"], "emptyDir": {}, "name": "v" }],
            })),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{ "name": "v", "emptyDir": {} }])
        );
    }

    #[test]
    fn retain_keys_errors() {
        let orig = json!({ "spec": { "strategy": { "type": "RollingUpdate" } } });
        let e = err(
            orig.clone(),
            json!({ "spec": { "strategy": { "$retainKeys": ["type"], "rollingUpdate": {} } } }),
        );
        assert_eq!(e.to_string(), "invalid patch format of retainKeys");
        let e = err(
            orig,
            json!({ "spec": { "strategy": { "$retainKeys": "type" } } }),
        );
        assert_eq!(e, PatchError::BadPatchFormatForRetainKeys);
        assert_eq!(e.status_code(), 400);
    }

    // ---- primitive merge lists -----------------------------------------------------------

    #[test]
    fn primitive_merge_list_union() {
        let out = ap(
            json!({ "metadata": { "finalizers": ["a", "b"] } }),
            json!({ "metadata": { "finalizers": ["b", "c"] } }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        // Go places values the live list lacks before the following live-only values.
        let out = ap(
            json!({ "metadata": { "finalizers": ["a"] } }),
            json!({ "metadata": { "finalizers": ["z"] } }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "a"]));
    }

    #[test]
    fn delete_from_primitive_list() {
        let out = ap(
            json!({ "metadata": { "finalizers": ["a", "b", "c"] } }),
            json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": ["b", "x"] } }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
        // Nothing to delete from: no field appears.
        let out = ap(
            json!({ "metadata": {} }),
            json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": ["b"] } }),
        );
        assert_eq!(out, json!({ "metadata": {} }));
        let e = err(
            json!({ "metadata": {} }),
            json!({ "metadata": { "$deleteFromPrimitiveList": ["b"] } }),
        );
        assert_eq!(e.to_string(), "invalid patch format of primitive list");
    }

    #[test]
    fn set_element_order_on_primitive_list() {
        // What kubectl apply sends when the config's finalizers go from [a, b] to [c, a].
        let out = ap(
            json!({ "metadata": { "finalizers": ["a", "b", "live"] } }),
            json!({ "metadata": {
                "$setElementOrder/finalizers": ["c", "a"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "finalizers": ["c"],
            } }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "live"]));
    }

    // ---- $setElementOrder and client-side apply ------------------------------------------

    #[test]
    fn set_element_order_alone_reorders() {
        let d = deploy(json!([{ "name": "a" }, { "name": "b" }]));
        let out = ap(
            d,
            pod_patch(json!({ "$setElementOrder/containers": [{ "name": "b" }, { "name": "a" }] })),
        );
        assert_eq!(names(containers(&out), "name"), ["b", "a"]);
    }

    #[test]
    fn apply_changes_one_image() {
        let d = deploy(json!([{ "name": "a", "image": "a:1" }, { "name": "b", "image": "b:1" }]));
        let out = ap(
            d,
            pod_patch(json!({
                "$setElementOrder/containers": [{ "name": "a" }, { "name": "b" }],
                "containers": [{ "name": "b", "image": "b:2" }],
            })),
        );
        assert_eq!(
            containers(&out),
            &json!([{ "name": "a", "image": "a:1" }, { "name": "b", "image": "b:2" }])
        );
    }

    #[test]
    fn apply_removes_env_var_and_adds_one_keeping_server_only_items() {
        let d = deploy(json!([{ "name": "c", "env": [
            { "name": "A", "value": "1" }, { "name": "S", "value": "server" },
            { "name": "B", "value": "2" }, { "name": "C", "value": "3" },
        ] }]));
        let out = ap(
            d,
            pod_patch(json!({
                "$setElementOrder/containers": [{ "name": "c" }],
                "containers": [{
                    "name": "c",
                    "$setElementOrder/env": [{ "name": "A" }, { "name": "C" }, { "name": "D" }],
                    "env": [{ "name": "D", "value": "4" }, { "$patch": "delete", "name": "B" }],
                }],
            })),
        );
        assert_eq!(
            names(&containers(&out)[0]["env"], "name"),
            ["A", "S", "C", "D"]
        );
        assert_eq!(
            containers(&out)[0]["env"][3],
            json!({ "name": "D", "value": "4" })
        );
    }

    #[test]
    fn apply_adds_port() {
        let d = deploy(json!([{ "name": "c", "ports": [{ "containerPort": 80 }] }]));
        let out = ap(
            d,
            pod_patch(json!({
                "$setElementOrder/containers": [{ "name": "c" }],
                "containers": [{
                    "name": "c",
                    "$setElementOrder/ports": [{ "containerPort": 443 }, { "containerPort": 80 }],
                    "ports": [{ "containerPort": 443, "name": "https" }],
                }],
            })),
        );
        assert_eq!(
            containers(&out)[0]["ports"],
            json!([{ "containerPort": 443, "name": "https" }, { "containerPort": 80 }])
        );
    }

    #[test]
    fn apply_label_changes() {
        let d = deploy(json!([{ "name": "c" }]));
        let out = ap(
            d,
            json!({
                "metadata": { "labels": { "app": null, "team": "x" } },
                "spec": { "template": { "metadata": { "labels": { "team": "x" } } } },
            }),
        );
        assert_eq!(out["metadata"]["labels"], json!({ "team": "x" }));
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({ "app": "d", "team": "x" })
        );
    }

    #[test]
    fn apply_adds_container_list_from_nothing() {
        let out = ap(
            json!({ "spec": { "template": { "spec": {} } } }),
            pod_patch(json!({
                "$setElementOrder/initContainers": [{ "name": "i1" }, { "name": "i2" }],
                "initContainers": [{ "name": "i1" }, { "name": "i2", "image": null }],
            })),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["initContainers"],
            json!([{ "name": "i1" }, { "name": "i2" }])
        );
    }

    #[test]
    fn set_element_order_mismatch_is_an_error() {
        let d = deploy(json!([{ "name": "a" }]));
        let e = err(
            d,
            pod_patch(
                json!({ "$setElementOrder/containers": [{ "name": "a" }], "containers": [{ "name": "b" }] }),
            ),
        );
        assert_eq!(
            e.to_string(),
            "the order in patch list:\n[map[name:b]]\n doesn't match $setElementOrder list:\n[map[name:a]]"
        );
        let e = err(json!({}), json!({ "$setElementOrder": [] }));
        assert_eq!(
            e.to_string(),
            "invalid patch format of setElementOrder list"
        );
        let e = err(json!({}), json!({ "$setElementOrder/metadata": "x" }));
        assert_eq!(
            e.to_string(),
            "expected a []interface {}, but received a string"
        );
    }

    // ---- schema lookups ------------------------------------------------------------------

    #[test]
    fn unknown_field_in_struct_is_an_error() {
        let mut d = deploy(json!([{ "name": "c" }]));
        d["spec"]["template"]["spec"]["bogus"] = json!({ "a": 1 });
        let e = err(d.clone(), pod_patch(json!({ "bogus": { "b": 2 } })));
        assert_eq!(
            e.to_string(),
            "unable to find api field in struct PodSpec for the json field \"bogus\""
        );
        let e = err(
            d.clone(),
            pod_patch(json!({ "$setElementOrder/nothing": [] })),
        );
        assert_eq!(
            e.to_string(),
            "unable to find api field in struct PodSpec for the json field \"nothing\""
        );
        // A primitive or a new unknown field needs no lookup (the typed decoding judges it).
        let out = ap(d, pod_patch(json!({ "other": [1] })));
        assert_eq!(out["spec"]["template"]["spec"]["other"], json!([1]));
    }

    #[test]
    fn free_form_objects_merge_and_their_lists_replace() {
        let mut d = deploy(
            json!([{ "name": "c", "env": [{ "name": "E", "valueFrom": { "fieldRef": { "a": 1, "l": [1] } } }] }]),
        );
        d["spec"]["selector"]["matchExpressions"] = json!([{ "key": "x" }]);
        let out = ap(
            d,
            json!({
                "spec": {
                    "selector": { "matchExpressions": [{ "key": "y" }] },
                    "template": { "spec": { "containers": [{ "name": "c", "env": [{ "name": "E", "valueFrom": { "fieldRef": { "b": 2, "l": [2] } } }] }] } },
                },
            }),
        );
        assert_eq!(
            out["spec"]["selector"]["matchExpressions"],
            json!([{ "key": "y" }])
        );
        assert_eq!(
            containers(&out)[0]["env"][0]["valueFrom"]["fieldRef"],
            json!({ "a": 1, "b": 2, "l": [2] })
        );
    }

    #[test]
    fn resources_map_of_quantities_merges() {
        let d = deploy(
            json!([{ "name": "c", "resources": { "limits": { "cpu": "1", "memory": "1Gi" } } }]),
        );
        let out = ap(
            d,
            pod_patch(
                json!({ "containers": [{ "name": "c", "resources": { "limits": { "cpu": "2", "memory": null } } }] }),
            ),
        );
        assert_eq!(
            containers(&out)[0]["resources"],
            json!({ "limits": { "cpu": "2" } })
        );
    }

    // ---- the table -----------------------------------------------------------------------

    #[test]
    fn add_extensions_writes_facts() {
        let d = defs();
        let containers = &d["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers[EXT_STRATEGY], json!("merge"));
        assert_eq!(containers[EXT_MERGE_KEY], json!("name"));
        let volumes = &d["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes[EXT_STRATEGY], json!("merge,retainKeys"));
        let strategy = &d["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy[EXT_STRATEGY], json!("retainKeys"));
        assert!(strategy.get(EXT_MERGE_KEY).is_none());
        // Missing definitions are skipped, not created.
        assert!(d.get("io.k8s.api.core.v1.ServiceSpec").is_none());
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for f in PATCH_STRATEGIES {
            assert!(
                seen.insert((f.definition, f.field)),
                "duplicate {}.{}",
                f.definition,
                f.field
            );
            assert!(extract_retain_keys(f.strategy).is_ok());
            assert!(["merge", "retainKeys", "merge,retainKeys", "replace"].contains(&f.strategy));
            let primitive = matches!((f.definition, f.field), (_, "finalizers") | (_, "podCIDRs"));
            let is_list_merge = f.strategy.starts_with("merge");
            assert_eq!(
                is_list_merge && !primitive,
                f.merge_key.is_some(),
                "{}.{}",
                f.definition,
                f.field
            );
        }
    }

    #[test]
    fn gofmt_matches_go() {
        assert_eq!(
            gofmt(&json!({ "b": [1, 2.5, true, null], "a": { "x": "y" } })),
            "map[a:map[x:y] b:[1 2.5 true <nil>]]"
        );
        assert_eq!(gofmt(&json!(3.0)), "3");
    }
}
