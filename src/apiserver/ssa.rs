//! Server-side apply and `metadata.managedFields`, as the real kube-apiserver does them
//! (sigs.k8s.io/structured-merge-diff v6 under k8s.io/apimachinery/pkg/util/managedfields).
//!
//! * [`apply`]: `PATCH` with `Content-Type: application/apply-patch+yaml`. The applied
//!   configuration is merged into the live object, its fields become owned by the manager
//!   (operation `Apply`), fields the manager applied last time and no longer applies are removed
//!   unless someone else owns them, and setting a field another manager owns to a different
//!   value is a conflict (409) unless `force`. Same value → shared ownership.
//! * [`track_update`]: every other write (create, update, JSON/merge/strategic patch): the fields
//!   that changed become owned by the writer (operation `Update`) and are taken from the others.
//!
//! The field sets are encoded as the real `FieldsV1` (`f:` fields, `k:{…}` associative list
//! items, `v:` set items, `.` for "this node too"); entries are one per (manager, operation,
//! apiVersion for updates, subresource), sorted as the real server sorts them (Apply before
//! Update, then by time, manager, apiVersion, subresource); `time` moves only when the write
//! changed something. What the real stack layers do is done here in the same order: version
//! check, last-applied handling for the `kubectl` manager (a client-side-applied object can be
//! server-side applied without conflicts on the fields its annotation already had),
//! `before-first-apply` for objects that had no managed fields, the cap of 10 update managers
//! (`ancient-changes`), the strip of `apiVersion`/`kind`/`metadata.{name,namespace,uid,…}`, and
//! the reset-fields filter (`status` is not owned through the main resource, only `status`
//! through `/status`).
//!
//! Types come from the OpenAPI v2 `definitions` (`$ref`, `allOf`, `items`,
//! `additionalProperties`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-patch-strategy`/`-merge-key`) the way kube-openapi's
//! `schemaconv` reads them, plus a table of the built-in facts the generated definitions lack
//! (list-map keys such as `containerPort`+`protocol`, atomic structs and maps, Go non-pointer
//! structs that the real server always sees as present). Unknown types are "deduced": maps are
//! granular, lists atomic.

use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// The kind of write a managedFields entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write (create, update, patch).
    Update,
}

impl Operation {
    /// The wire spelling, `Apply` or `Update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes: field manager name, operation and subresource (`""` or `"status"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manager<'a> {
    /// `?fieldManager=` or [`default_manager`] of the User-Agent.
    pub name: &'a str,
    /// Apply or Update.
    pub operation: Operation,
    /// `""` for the main resource, `"status"` for `/status`.
    pub subresource: &'a str,
}

/// One field another manager owns that the applied configuration sets to another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// The field as structured-merge-diff prints paths: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
    /// The other manager's operation.
    pub operation: Operation,
    /// The other manager's apiVersion (`""` for Apply entries).
    pub api_version: String,
    /// The other manager's subresource.
    pub subresource: String,
    identifier: String,
}

impl Conflict {
    /// The manager as the real server prints it: `"kubectl-client-side-apply" using apps/v1`,
    /// `"kubectl"`, `"kubelet" with subresource "status" using v1`.
    pub fn manager_display(&self) -> String {
        let mut s = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            let _ = write!(s, " with subresource {}", go_quote(&self.subresource));
        }
        if self.operation == Operation::Update {
            let _ = write!(s, " using {}", self.api_version);
        }
        s
    }

    /// The `message` of this conflict's Status cause (type `FieldManagerConflict`, field
    /// [`Conflict::field`]): `conflict with "kubectl-client-side-apply" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// 409 Conflict (reason `Conflict`), one cause per conflict.
    #[error("{}", self.message())]
    Conflicts(Vec<Conflict>),
    /// 400 Bad Request with this message (bad applied configuration).
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    /// The real message: `Apply failed with 1 conflict: conflict with "x" using apps/v1: .spec.replicas`,
    /// or for several, `Apply failed with 2 conflicts: conflicts with "x" using apps/v1:\n- .a\n- .b`.
    pub fn message(&self) -> String {
        match self {
            ApplyError::Invalid(m) => m.clone(),
            ApplyError::Conflicts(cs) => conflict_message(cs),
        }
    }
}

fn conflict_message(cs: &[Conflict]) -> String {
    if cs.len() == 1 {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            cs[0].manager_display(),
            cs[0].field
        );
    }
    let mut by: BTreeMap<&str, (&Conflict, Vec<&str>)> = BTreeMap::new();
    for c in cs {
        by.entry(c.identifier.as_str())
            .or_insert_with(|| (c, Vec::new()))
            .1
            .push(&c.field);
    }
    let mut lines = Vec::new();
    for (c, fields) in by.values() {
        lines.push(format!("conflicts with {}:", c.manager_display()));
        for f in fields {
            lines.push(format!("- {f}"));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        cs.len(),
        lines.join("\n")
    )
}

/// The field manager of a request without `?fieldManager=`: the User-Agent up to its first `/`
/// (`kubectl-client-side-apply/v1.33.0 (linux/amd64) kubernetes/…` → `kubectl-client-side-apply`),
/// as the real server's `prefixFromUserAgent`, cut to 128 bytes; an empty result is recorded as
/// `unknown`.
pub fn default_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut end = prefix.len().min(128);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    prefix[..end].to_string()
}

/// Server-side apply of `applied` onto `live` (None: the object does not exist and apply
/// creates it). `root` names the object's definition (`io.k8s.api.apps.v1.Deployment`); None or
/// unknown → deduced types. Returns the new object with `metadata.managedFields`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    definitions: &Map<String, Value>,
    root: Option<&str>,
    now: &str,
) -> Result<Value, ApplyError> {
    let schema = Schema { defs: definitions };
    let ty = schema.root(root);
    let Some(cfg) = applied.as_object() else {
        return Err(ApplyError::Invalid(
            "error decoding patch: the applied configuration is not an object".into(),
        ));
    };
    let api_version = cfg.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = cfg.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "invalid object type: {}",
            gvk_string(api_version, kind)
        )));
    }
    let meta = cfg.get("metadata").and_then(Value::as_object);
    if meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(ApplyError::Invalid(
            "metadata.name: Required value: name is required".into(),
        ));
    }
    if meta.is_some_and(|m| m.get("managedFields").is_some_and(|v| !v.is_null())) {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    if let Some(l) = live {
        let la = l.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let lk = l.get("kind").and_then(Value::as_str).unwrap_or("");
        if (!la.is_empty() && la != api_version) || (!lk.is_empty() && lk != kind) {
            if la != api_version {
                return Err(ApplyError::Invalid(format!(
                    "Incorrect version specified in apply patch. Specified patch version: {}, expected: {}",
                    api_version, la
                )));
            }
            return Err(ApplyError::Invalid(format!(
                "invalid object type: {}",
                gvk_string(api_version, kind)
            )));
        }
    }
    // The config must be a valid typed value: associative lists need their keys, no duplicates.
    if let Err(e) = validate(&schema, applied, &ty, &mut Vec::new()) {
        return Err(ApplyError::Invalid(e));
    }

    let empty = Value::Object(Map::new());
    let live_obj = live.unwrap_or(&empty);
    let managed = decode_managed(live_obj).unwrap_or_default();
    let ctx = Ctx {
        schema,
        root: ty,
        api_version,
        now,
    };

    let first = apply_layers(&ctx, live_obj, applied, managed.clone(), manager, force);
    let (mut object, managed) = match first {
        Err(conflicts) if manager == "kubectl" && !force => {
            // lastAppliedManager: conflicts only on fields the client-side-apply annotation
            // already had with the live value are forgiven (apply is retried with force).
            let allowed = allowed_from_last_applied(&ctx, live_obj);
            let all_allowed = allowed
                .as_ref()
                .is_some_and(|a| conflicts.iter().all(|(_, p)| a.has(p)));
            if all_allowed {
                match apply_layers(&ctx, live_obj, applied, managed, manager, true) {
                    Ok(r) => r,
                    Err(c) => return Err(conflicts_error(&c)),
                }
            } else {
                let rest: Vec<_> = conflicts
                    .into_iter()
                    .filter(|(_, p)| !allowed.as_ref().is_some_and(|a| a.has(p)))
                    .collect();
                return Err(conflicts_error(&rest));
            }
        }
        Err(conflicts) => return Err(conflicts_error(&conflicts)),
        Ok(r) => r,
    };
    // lastAppliedUpdater: kubectl keeps the client-side-apply annotation in step.
    if manager == "kubectl" && has_last_applied(&object) {
        let mut cfg = applied.clone();
        if let Some(ann) = cfg
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(Value::as_object_mut)
        {
            ann.remove(LAST_APPLIED);
        }
        let mut text = String::new();
        write_go_json(&mut text, &cfg);
        text.push('\n');
        if let Some(ann) = object
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(Value::as_object_mut)
        {
            ann.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    encode_managed(&mut object, &managed);
    Ok(object)
}

/// Records an ordinary write (create/update/patch by `manager`, on `subresource`): the fields
/// that changed from `old` to `new` become owned by `manager` with operation Update and are
/// taken from the other managers. `old` None on create. Returns `new` with
/// `metadata.managedFields` set (managedFields the client sent are used when valid and
/// non-empty, `[]` or `[{}]` clears them, invalid ones are ignored — as the real server).
pub fn track_update(
    old: Option<&Value>,
    mut new: Value,
    manager: &str,
    subresource: &str,
    definitions: &Map<String, Value>,
    root: Option<&str>,
    now: &str,
) -> Value {
    let schema = Schema { defs: definitions };
    let ty = schema.root(root);
    let empty = Value::Object(Map::new());
    let old_obj = old.unwrap_or(&empty);
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .or_else(|| old_obj.get("apiVersion").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();

    // decodeLiveOrNew
    let managed = if !subresource.is_empty() {
        decode_managed(old_obj).unwrap_or_default()
    } else {
        let sent = new.get("metadata").and_then(|m| m.get("managedFields"));
        if is_reset(sent) {
            Managed::default()
        } else {
            match decode_managed(&new) {
                Some(m) if !m.entries.is_empty() => m,
                _ => decode_managed(old_obj).unwrap_or_default(),
            }
        }
    };
    remove_managed_fields(&mut new);

    // skipNonAppliedManager: an existing object without managed fields stays untracked.
    let has_uid = old_obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    if managed.entries.is_empty() && has_uid {
        return new;
    }
    let ctx = Ctx {
        schema,
        root: ty,
        api_version: &api_version,
        now,
    };
    let id = ManagerId::new(manager, Operation::Update, &api_version, subresource);
    let mut managed = managed;
    update_layers(&ctx, old_obj, &new, &mut managed, id, subresource);
    encode_managed(&mut new, &managed);
    new
}

// ---------------------------------------------------------------------------------------------
// Managers and managedFields entries
// ---------------------------------------------------------------------------------------------

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const MAX_UPDATE_MANAGERS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagerId {
    manager: String,
    operation: Operation,
    /// Empty for Apply (not part of the identity).
    api_version: String,
    subresource: String,
}

impl ManagerId {
    fn new(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> Self {
        ManagerId {
            manager: if manager.is_empty() {
                "unknown".into()
            } else {
                manager.into()
            },
            operation,
            api_version: if operation == Operation::Apply {
                String::new()
            } else {
                api_version.into()
            },
            subresource: subresource.into(),
        }
    }

    /// BuildManagerIdentifier: the JSON of the entry without fieldsType/fieldsV1/time.
    fn identifier(&self) -> String {
        let mut s = String::from("{");
        if !self.manager.is_empty() {
            s.push_str("\"manager\":");
            write_go_string(&mut s, &self.manager);
            s.push(',');
        }
        s.push_str("\"operation\":\"");
        s.push_str(self.operation.as_str());
        s.push('"');
        if !self.api_version.is_empty() {
            s.push_str(",\"apiVersion\":");
            write_go_string(&mut s, &self.api_version);
        }
        if !self.subresource.is_empty() {
            s.push_str(",\"subresource\":");
            write_go_string(&mut s, &self.subresource);
        }
        s.push('}');
        s
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: ManagerId,
    /// The version the set is in (for Apply entries, the applied config's).
    api_version: String,
    set: Set,
    time: Option<String>,
}

/// fieldpath.ManagedFields plus times, keyed by manager identifier.
#[derive(Debug, Clone, Default)]
struct Managed {
    entries: BTreeMap<String, Entry>,
}

fn is_reset(sent: Option<&Value>) -> bool {
    match sent {
        Some(Value::Array(a)) if a.is_empty() => true,
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_object().is_some_and(|o| {
            o.values().all(|v| match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Object(m) => m.is_empty(),
                _ => false,
            })
        }),
        _ => false,
    }
}

/// DecodeManagedFields: None when any entry is invalid (absent managedFields → empty).
fn decode_managed(obj: &Value) -> Option<Managed> {
    let mut out = Managed::default();
    let Some(list) = obj.get("metadata").and_then(|m| m.get("managedFields")) else {
        return Some(out);
    };
    let list = match list {
        Value::Null => return Some(out),
        Value::Array(a) => a,
        _ => return None,
    };
    for e in list {
        let e = e.as_object()?;
        let s = |k: &str| -> Option<&str> {
            match e.get(k) {
                None | Some(Value::Null) => Some(""),
                Some(Value::String(s)) => Some(s),
                _ => None,
            }
        };
        let operation = match s("operation")? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        let api_version = s("apiVersion")?;
        if api_version.is_empty() || s("fieldsType")? != "FieldsV1" {
            return None;
        }
        let set = match e.get("fieldsV1") {
            None | Some(Value::Null) => Set::default(),
            Some(v) => set_from_fields(v)?,
        };
        let time = match e.get("time") {
            Some(Value::String(t)) if !t.is_empty() => {
                parse_rfc3339(t)?;
                Some(t.clone())
            }
            None | Some(Value::Null) => None,
            Some(Value::String(_)) => None,
            _ => return None,
        };
        let id = ManagerId {
            manager: s("manager")?.to_string(),
            operation,
            api_version: if operation == Operation::Apply {
                String::new()
            } else {
                api_version.to_string()
            },
            subresource: s("subresource")?.to_string(),
        };
        out.entries.insert(
            id.identifier(),
            Entry {
                id,
                api_version: api_version.to_string(),
                set,
                time,
            },
        );
    }
    Some(out)
}

fn remove_managed_fields(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
}

/// encodeManagedFields + sortEncodedManagedFields; no entries → no `managedFields`.
fn encode_managed(obj: &mut Value, managed: &Managed) {
    remove_managed_fields(obj);
    if managed.entries.is_empty() {
        return;
    }
    let mut entries: Vec<&Entry> = managed.entries.values().collect();
    entries.sort_by(|p, q| {
        p.id.operation
            .as_str()
            .cmp(q.id.operation.as_str())
            .then_with(|| time_secs(&p.time).cmp(&time_secs(&q.time)))
            .then_with(|| p.id.manager.cmp(&q.id.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.id.subresource.cmp(&q.id.subresource))
    });
    let list: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), Value::String(e.id.manager.clone()));
            m.insert(
                "operation".into(),
                Value::String(e.id.operation.as_str().into()),
            );
            m.insert("apiVersion".into(), Value::String(e.api_version.clone()));
            if let Some(t) = &e.time {
                m.insert("time".into(), Value::String(t.clone()));
            }
            m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
            m.insert("fieldsV1".into(), set_to_fields(&e.set));
            if !e.id.subresource.is_empty() {
                m.insert(
                    "subresource".into(),
                    Value::String(e.id.subresource.clone()),
                );
            }
            Value::Object(m)
        })
        .collect();
    if !obj.is_object() {
        return;
    }
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn time_secs(t: &Option<String>) -> i64 {
    t.as_deref().and_then(parse_rfc3339).unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T10:00:00Z`, fractions and offsets
/// allowed).
fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !(rb[0] == b'+' || rb[0] == b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if rb[0] == b'-' { -o } else { o }
        }
    };
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s - offset)
}

fn gvk_string(api_version: &str, kind: &str) -> String {
    let (g, v) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    if g.is_empty() {
        format!("/{v}, Kind={kind}")
    } else {
        format!("{g}/{v}, Kind={kind}")
    }
}

fn has_last_applied(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

fn conflicts_error(conflicts: &[(ManagerId, Path)]) -> ApplyError {
    ApplyError::Conflicts(
        conflicts
            .iter()
            .map(|(id, p)| Conflict {
                manager: id.manager.clone(),
                field: path_string(p),
                operation: id.operation,
                api_version: id.api_version.clone(),
                subresource: id.subresource.clone(),
                identifier: id.identifier(),
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// The manager layers (fieldmanager.go's stack) and SMD's Updater
// ---------------------------------------------------------------------------------------------

struct Ctx<'d, 'a> {
    schema: Schema<'d>,
    root: TyRef<'d>,
    api_version: &'a str,
    now: &'a str,
}

/// Fields the stripMetaManager never lets anyone own.
fn strip_set() -> Set {
    let mut s = Set::default();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        let path: Path = p.iter().map(|f| PE::Field((*f).to_string())).collect();
        s.insert(&path);
    }
    s
}

/// The reset-fields filter: `status` is not tracked on the main resource, only `status` on
/// `/status`.
fn filter_set(mut s: Set, subresource: &str) -> Set {
    let status = PE::Field("status".into());
    if subresource.is_empty() {
        s.members.remove(&status);
        s.children.remove(&status);
        s
    } else {
        let mut out = Set::default();
        if s.members.contains(&status) {
            out.members.insert(status.clone());
        }
        if let Some(c) = s.children.remove(&status) {
            out.children.insert(status, c);
        }
        out
    }
}

struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

fn compare_filtered(ctx: &Ctx, old: &Value, new: &Value, subresource: &str) -> Comparison {
    let mut c = Comparison {
        added: Set::default(),
        modified: Set::default(),
        removed: Set::default(),
    };
    let mut path = Vec::new();
    compare(
        &ctx.schema,
        Some(old),
        Some(new),
        &ctx.root,
        &mut path,
        &mut c,
    );
    Comparison {
        added: filter_set(c.added, subresource),
        modified: filter_set(c.modified, subresource),
        removed: filter_set(c.removed, subresource),
    }
}

/// SMD Updater.update: takes changed fields from every manager but `workflow`; conflicts
/// (fields others own that changed) are returned unless `force`.
fn smd_update(
    managed: &mut Managed,
    cmp: &Comparison,
    workflow: &str,
    force: bool,
) -> Result<(), Vec<(ManagerId, Path)>> {
    smd_update_changed(
        managed,
        &cmp.modified.union(&cmp.added),
        &cmp.removed,
        workflow,
        force,
    )
}

/// [`smd_update`] with the changed fields (modified ∪ added) already computed.
fn smd_update_changed(
    managed: &mut Managed,
    changed: &Set,
    removed: &Set,
    workflow: &str,
    force: bool,
) -> Result<(), Vec<(ManagerId, Path)>> {
    let mut conflicts = Vec::new();
    let mut conflict_sets = Vec::new();
    for (key, e) in &managed.entries {
        if key == workflow {
            continue;
        }
        let c = e.set.intersection(changed);
        if !c.is_empty() {
            c.for_each_path(&mut Vec::new(), &mut |p| {
                conflicts.push((e.id.clone(), p.to_vec()))
            });
            conflict_sets.push((key.clone(), c));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (key, c) in conflict_sets {
        if let Some(e) = managed.entries.get_mut(&key) {
            e.set = e.set.difference(&c);
        }
    }
    if !removed.is_empty() {
        for (key, e) in managed.entries.iter_mut() {
            if key != workflow {
                e.set = std::mem::take(&mut e.set).difference_owned(removed);
            }
        }
    }
    managed.entries.retain(|_, e| !e.set.is_empty());
    Ok(())
}

/// Update path: managedFieldsUpdater(stripMeta(structuredMerge)) then capManagers.
fn update_layers(
    ctx: &Ctx,
    old: &Value,
    new: &Value,
    managed: &mut Managed,
    id: ManagerId,
    subresource: &str,
) {
    let Comparison {
        added,
        modified,
        removed,
    } = compare_filtered(ctx, old, new, subresource);
    const SELF: &str = "current-operation";
    let changed = modified.union_owned(added);
    // force=true: never fails.
    let _ = smd_update_changed(managed, &changed, &removed, SELF, true);
    let set = changed.difference_owned(&strip_set());
    if !set.is_empty() {
        let key = id.identifier();
        let merged = match managed.entries.remove(&key) {
            Some(prev) => set.union_owned(prev.set),
            None => set,
        };
        managed.entries.insert(
            key,
            Entry {
                id,
                api_version: ctx.api_version.to_string(),
                set: merged,
                time: Some(ctx.now.to_string()),
            },
        );
    }
    cap_managers(managed);
}

fn cap_managers(managed: &mut Managed) {
    let mut updaters: Vec<(i64, String)> = managed
        .entries
        .iter()
        .filter(|(_, e)| e.id.operation == Operation::Update)
        .map(|(k, e)| (time_secs(&e.time), k.clone()))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort();
    let mut length = updaters.len();
    let mut first_for_version: BTreeMap<String, String> = BTreeMap::new();
    for (_, key) in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(e) = managed.entries.get(&key).cloned() else {
            continue;
        };
        let version = e.api_version.clone();
        let bucket_id = ManagerId::new("ancient-changes", Operation::Update, &version, "");
        let bucket = bucket_id.identifier();
        if let Some(first) = first_for_version.get(&version).cloned() {
            if !managed.entries.contains_key(&bucket)
                && let Some(mut f) = managed.entries.remove(&first)
            {
                f.id = bucket_id.clone();
                managed.entries.insert(bucket.clone(), f);
            }
            if let Some(b) = managed.entries.get_mut(&bucket) {
                b.set = e.set.union(&b.set);
                b.time = e.time.clone();
            }
            managed.entries.remove(&key);
            length -= 1;
        } else {
            first_for_version.insert(version, key);
        }
    }
}

/// Apply path: skipNonApplied → buildManagerInfo → managedFieldsUpdater → stripMeta → SMD Apply.
/// Err carries the conflicts.
fn apply_layers(
    ctx: &Ctx,
    live: &Value,
    config: &Value,
    mut managed: Managed,
    manager: &str,
    force: bool,
) -> Result<(Value, Managed), Vec<(ManagerId, Path)>> {
    let mut live = live.clone();
    remove_managed_fields(&mut live);
    if managed.entries.is_empty() {
        // before-first-apply: whoever wrote the object owns what is there.
        let empty = Value::Object(Map::new());
        let id = ManagerId::new("before-first-apply", Operation::Update, ctx.api_version, "");
        update_layers(ctx, &empty, &live, &mut managed, id, "");
    }
    let id = ManagerId::new(manager, Operation::Apply, "", "");
    let key = id.identifier();
    let s = &ctx.schema;

    let mut path = Vec::new();
    let merged = merge(s, Some(&live), Some(config), &ctx.root, &mut path)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let last = managed.entries.get(&key).map(|e| e.set.clone());
    let set = filter_set(to_field_set(s, config, &ctx.root), "");
    managed.entries.insert(
        key.clone(),
        Entry {
            id: id.clone(),
            api_version: ctx.api_version.to_string(),
            set,
            time: managed.entries.get(&key).and_then(|e| e.time.clone()),
        },
    );
    let merged = match &last {
        Some(last) if !last.is_empty() => prune(ctx, merged, &managed, last),
        _ => merged,
    };
    let cmp = compare_filtered(ctx, &live, &merged, "");
    smd_update(&mut managed, &cmp, &key, force)?;
    // stripMeta on the applier's set.
    if let Some(e) = managed.entries.get_mut(&key) {
        e.set = e.set.difference(&strip_set());
        if e.set.is_empty() {
            managed.entries.remove(&key);
        }
    }
    let changed = !json_equal(&live, &merged);
    if changed {
        if let Some(e) = managed.entries.get_mut(&key) {
            e.time = Some(ctx.now.to_string());
        }
        Ok((merged, managed))
    } else {
        Ok((live, managed))
    }
}

/// Updater.prune: removes what the applier owned last time, no longer applies, and nobody
/// else owns.
fn prune(ctx: &Ctx, merged: Value, managed: &Managed, last: &Set) -> Value {
    let s = &ctx.schema;
    let root = &ctx.root;
    let last_n = ensure_named(s, last, root);
    let pruned1 =
        remove_items(s, &merged, &last_n, root).unwrap_or_else(|| Value::Object(Map::new()));
    let mut all = Set::default();
    for e in managed.entries.values() {
        all = all.union(&e.set);
    }
    let merged_set = ensure_named(s, &to_field_set(s, &merged, root), root);
    let pruned1_set = ensure_named(s, &to_field_set(s, &pruned1, root), root);
    let managed_n = ensure_named(s, &all, root);
    let remove2 = merged_set.difference(&pruned1_set.union(&managed_n));
    let pruned2 =
        remove_items(s, &merged, &remove2, root).unwrap_or_else(|| Value::Object(Map::new()));
    let pruned2_set = ensure_named(s, &to_field_set(s, &pruned2, root), root);
    let remove3 = merged_set.difference(&pruned2_set).intersection(&last_n);
    remove_items(s, &merged, &remove3, root).unwrap_or_else(|| Value::Object(Map::new()))
}

/// lastAppliedManager.allowedConflictsFromLastApplied.
fn allowed_from_last_applied(ctx: &Ctx, live: &Value) -> Option<Set> {
    let text = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    if text.is_empty() {
        return None;
    }
    let last: Value = serde_json::from_str(text).ok()?;
    if !last.is_object() || last.get("apiVersion").and_then(Value::as_str) != Some(ctx.api_version)
    {
        return None;
    }
    validate(&ctx.schema, &last, &ctx.root, &mut Vec::new()).ok()?;
    let set = to_field_set(&ctx.schema, &last, &ctx.root);
    let mut c = Comparison {
        added: Set::default(),
        modified: Set::default(),
        removed: Set::default(),
    };
    compare(
        &ctx.schema,
        Some(&last),
        Some(live),
        &ctx.root,
        &mut Vec::new(),
        &mut c,
    );
    Some(
        set.difference(&c.modified)
            .difference(&c.added)
            .difference(&c.removed),
    )
}

// ---------------------------------------------------------------------------------------------
// Paths and sets (fieldpath)
// ---------------------------------------------------------------------------------------------

/// A path element: field name, associative-list key (fields sorted by name), set value, index.
#[derive(Debug, Clone)]
enum PE {
    Field(String),
    Key(Vec<(String, Value)>),
    Val(Value),
    Index(i64),
}

type Path = Vec<PE>;

impl PE {
    fn rank(&self) -> u8 {
        match self {
            PE::Field(_) => 0,
            PE::Key(_) => 1,
            PE::Val(_) => 2,
            PE::Index(_) => 3,
        }
    }
}

impl Ord for PE {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PE::Field(a), PE::Field(b)) => a.cmp(b),
            (PE::Key(a), PE::Key(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let c = x.0.cmp(&y.0).then_with(|| value_cmp(&x.1, &y.1));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PE::Val(a), PE::Val(b)) => value_cmp(a, b),
            (PE::Index(a), PE::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PE {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PE {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PE {}

/// value.Compare: numbers < strings < bools < lists < maps < null; ints and floats compare
/// numerically.
fn value_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                i.cmp(&j)
            } else if let (Some(i), Some(j)) = (x.as_u64(), y.as_u64()) {
                i.cmp(&j)
            } else {
                let (i, j) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                i.partial_cmp(&j).unwrap_or(Ordering::Equal)
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (i, j) in x.iter().zip(y.iter()) {
                let c = value_cmp(i, j);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xk: Vec<&String> = x.keys().collect();
            let mut yk: Vec<&String> = y.keys().collect();
            xk.sort();
            yk.sort();
            for (i, j) in xk.iter().zip(yk.iter()) {
                let c = i.cmp(j).then_with(|| match (x.get(*i), y.get(*j)) {
                    (Some(p), Some(q)) => value_cmp(p, q),
                    _ => Ordering::Equal,
                });
                if c != Ordering::Equal {
                    return c;
                }
            }
            xk.len().cmp(&yk.len())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => rank(a).cmp(&rank(b)),
    }
}

/// value.Equals (ints and floats of the same number are equal).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| json_equal(p, q))
        }
        (Value::Number(_), Value::Number(_)) => value_cmp(a, b) == Ordering::Equal,
        _ => a == b,
    }
}

/// fieldpath.Set: leaf members and child sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Set {
    members: BTreeSet<PE>,
    children: BTreeMap<PE, Set>,
}

impl Set {
    fn insert(&mut self, path: &[PE]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => match self.children.get_mut(first) {
                Some(child) => child.insert(rest),
                None => {
                    let mut child = Set::default();
                    child.insert(rest);
                    self.children.insert(first.clone(), child);
                }
            },
        }
    }

    fn has(&self, path: &[PE]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    fn with_prefix(&self, pe: &PE) -> Option<&Set> {
        self.children.get(pe)
    }

    fn union(&self, o: &Set) -> Set {
        self.clone().union_owned(o.clone())
    }

    /// `self ∪ o`, reusing both sets' nodes instead of copying them.
    fn union_owned(mut self, o: Set) -> Set {
        if self.members.is_empty() && self.children.is_empty() {
            return o;
        }
        self.members.extend(o.members);
        for (k, v) in o.children {
            match self.children.get_mut(&k) {
                Some(c) => *c = std::mem::take(c).union_owned(v),
                None => {
                    self.children.insert(k, v);
                }
            }
        }
        self
    }

    /// `self − o`, in place.
    fn difference_owned(mut self, o: &Set) -> Set {
        if o.members.is_empty() && o.children.is_empty() {
            return self;
        }
        self.members.retain(|m| !o.members.contains(m));
        let children = std::mem::take(&mut self.children);
        for (k, v) in children {
            let d = match o.children.get(&k) {
                Some(w) => v.difference_owned(w),
                None => v,
            };
            if !d.is_empty() {
                self.children.insert(k, d);
            }
        }
        self
    }

    fn intersection(&self, o: &Set) -> Set {
        let mut out = Set {
            members: self.members.intersection(&o.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(w) = o.children.get(k) {
                let i = v.intersection(w);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    fn difference(&self, o: &Set) -> Set {
        self.clone().difference_owned(o)
    }

    /// Set.Iterate order: members, then children depth first.
    fn for_each_path(&self, prefix: &mut Path, f: &mut dyn FnMut(&[PE])) {
        for m in &self.members {
            prefix.push(m.clone());
            f(prefix);
            prefix.pop();
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.for_each_path(prefix, f);
            prefix.pop();
        }
    }
}

/// Path.String(): `.spec.containers[name="web"].image`, `[="x"]`, `[0]`.
fn path_string(p: &[PE]) -> String {
    let mut s = String::new();
    for pe in p {
        match pe {
            PE::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PE::Key(k) => {
                s.push('[');
                for (i, (name, v)) in k.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(name);
                    s.push('=');
                    s.push_str(&value_to_string(v));
                }
                s.push(']');
            }
            PE::Val(v) => {
                s.push_str("[=");
                s.push_str(&value_to_string(v));
                s.push(']');
            }
            PE::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

/// value.ToString.
fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value_to_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_to_string(v)))
            .collect::<Vec<_>>()
            .join(""),
    }
}

/// Go's `%q` for ordinary strings.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON string as Go's encoding/json writes it (HTML-safe escapes).
fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// JSON as Go writes an unstructured value (object keys sorted).
fn write_go_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_go_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(out, k);
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_go_json(out, x);
                }
            }
            out.push('}');
        }
    }
}

fn pe_key(pe: &PE) -> String {
    let mut s = String::new();
    match pe {
        PE::Field(f) => {
            s.push_str("f:");
            s.push_str(f);
        }
        PE::Key(k) => {
            s.push_str("k:{");
            for (i, (name, v)) in k.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_go_string(&mut s, name);
                s.push(':');
                write_go_json(&mut s, v);
            }
            s.push('}');
        }
        PE::Val(v) => {
            s.push_str("v:");
            write_go_json(&mut s, v);
        }
        PE::Index(i) => {
            let _ = write!(s, "i:{i}");
        }
    }
    s
}

fn parse_pe(s: &str) -> Result<Option<PE>, ()> {
    let b = s.as_bytes();
    if b.len() < 2 || b[1] != b':' {
        return Err(());
    }
    let body = &s[2..];
    match b[0] {
        b'f' => Ok(Some(PE::Field(body.to_string()))),
        b'v' => serde_json::from_str::<Value>(body)
            .map(|v| Some(PE::Val(v)))
            .map_err(|_| ()),
        b'k' => {
            let v: Value = serde_json::from_str(body).map_err(|_| ())?;
            let Value::Object(m) = v else { return Err(()) };
            let mut fields: Vec<(String, Value)> = m.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Some(PE::Key(fields)))
        }
        b'i' => body.parse().map(|i| Some(PE::Index(i))).map_err(|_| ()),
        _ => Ok(None),
    }
}

/// FieldsV1 → Set; None when malformed.
fn set_from_fields(v: &Value) -> Option<Set> {
    fn read(m: &Map<String, Value>) -> Option<(Option<Set>, bool)> {
        let mut children: Option<Set> = None;
        let mut is_member = false;
        for (k, v) in m {
            if k == "." {
                is_member = true;
                continue;
            }
            let pe = match parse_pe(k) {
                Ok(Some(pe)) => pe,
                Ok(None) => continue,
                Err(()) => return None,
            };
            let sub = v.as_object()?;
            let (grand, child_member) = read(sub)?;
            if child_member {
                children
                    .get_or_insert_with(Set::default)
                    .members
                    .insert(pe.clone());
            }
            if let Some(g) = grand {
                children
                    .get_or_insert_with(Set::default)
                    .children
                    .insert(pe, g);
            }
        }
        if children.is_none() {
            is_member = true;
        }
        Some((children, is_member))
    }
    let m = v.as_object()?;
    let (s, _) = read(m)?;
    Some(s.unwrap_or_default())
}

/// Set → FieldsV1.
fn set_to_fields(s: &Set) -> Value {
    fn emit(s: &Set, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !(s.members.is_empty() && s.children.is_empty()) {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        // Path-element order (what a key-order-preserving Map keeps).
        let all: BTreeSet<&PE> = s.members.iter().chain(s.children.keys()).collect();
        for pe in all {
            let member = s.members.contains(pe);
            let inner = match s.children.get(pe) {
                Some(c) => emit(c, member),
                None => Map::new(),
            };
            out.insert(pe_key(pe), Value::Object(inner));
        }
        out
    }
    Value::Object(emit(s, false))
}

// ---------------------------------------------------------------------------------------------
// Schema (kube-openapi schemaconv over the OpenAPI v2 definitions)
// ---------------------------------------------------------------------------------------------

const DEFS_PREFIX: &str = "#/definitions/";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

#[derive(Clone, Copy)]
struct Schema<'d> {
    defs: &'d Map<String, Value>,
}

#[derive(Clone, Copy, Debug)]
enum Base<'d> {
    Named(&'d str),
    Inline(&'d Value),
    /// `__untyped_deduced_`: maps granular, lists atomic.
    Deduced,
    /// `__untyped_atomic_`.
    Untyped,
}

#[derive(Clone, Debug)]
struct TyRef<'d> {
    base: Base<'d>,
    /// `x-kubernetes-map-type` on the reference (or the built-in table).
    map_atomic: Option<bool>,
    /// List semantics from the built-in table, overriding the extensions.
    list: Option<ListRel<'d>>,
}

impl<'d> TyRef<'d> {
    fn of(base: Base<'d>) -> Self {
        TyRef {
            base,
            map_atomic: None,
            list: None,
        }
    }
}

#[derive(Clone, Debug)]
enum ListRel<'d> {
    Atomic,
    Set,
    /// Keys, each with the default used when an item omits it.
    Map(Vec<(&'d str, Option<&'d str>)>),
}

struct ListT<'d> {
    rel: ListRel<'d>,
    elem: TyRef<'d>,
}

struct MapT<'d> {
    def: Option<&'d str>,
    props: Option<&'d Map<String, Value>>,
    elem: TyRef<'d>,
    atomic: bool,
}

impl<'d> MapT<'d> {
    fn field(&self, key: &str) -> Option<TyRef<'d>> {
        let p = self.props?.get(key)?;
        Some(make_ref(p, self.def, key))
    }
    fn child(&self, key: &str) -> TyRef<'d> {
        self.field(key).unwrap_or_else(|| self.elem.clone())
    }
    fn has_field(&self, key: &str) -> bool {
        self.props.is_some_and(|p| p.contains_key(key))
    }
    /// What the real server's typed objects carry for a field the JSON lacks: `{}` for Go
    /// non-pointer structs, `null` for slices without `omitempty`.
    fn absent_as(&self, key: &str) -> Option<&'static Value> {
        let def = self.def?;
        if key == "metadata" && self.has_field(key) {
            return Some(&EMPTY_OBJECT);
        }
        if NULL_LISTS.contains(&(def, key)) {
            return Some(&Value::Null);
        }
        let i = ZERO_STRUCTS.binary_search_by(|(d, _)| (*d).cmp(def)).ok()?;
        ZERO_STRUCTS[i].1.contains(&key).then_some(&*EMPTY_OBJECT)
    }
}

struct Atom<'d> {
    scalar: bool,
    list: Option<ListT<'d>>,
    map: Option<MapT<'d>>,
}

enum Picked<'a, 'd> {
    Scalar,
    List(&'a ListT<'d>),
    Map(&'a MapT<'d>),
    Nothing,
}

impl<'d> Atom<'d> {
    fn deduced() -> Self {
        Atom {
            scalar: true,
            list: Some(ListT {
                rel: ListRel::Atomic,
                elem: TyRef::of(Base::Untyped),
            }),
            map: Some(MapT {
                def: None,
                props: None,
                elem: TyRef::of(Base::Deduced),
                atomic: false,
            }),
        }
    }
    fn untyped() -> Self {
        Atom {
            scalar: true,
            list: Some(ListT {
                rel: ListRel::Atomic,
                elem: TyRef::of(Base::Untyped),
            }),
            map: Some(MapT {
                def: None,
                props: None,
                elem: TyRef::of(Base::Untyped),
                atomic: true,
            }),
        }
    }
    fn scalar() -> Self {
        Atom {
            scalar: true,
            list: None,
            map: None,
        }
    }

    /// deduceAtom + handleAtom: which part applies to `v`.
    fn pick(&self, v: Option<&Value>) -> Picked<'_, 'd> {
        match v {
            Some(Value::Number(_) | Value::String(_) | Value::Bool(_)) if self.scalar => {
                return Picked::Scalar;
            }
            Some(Value::Array(_)) if self.list.is_some() => {
                if let Some(l) = &self.list {
                    return Picked::List(l);
                }
            }
            Some(Value::Object(_)) if self.map.is_some() => {
                if let Some(m) = &self.map {
                    return Picked::Map(m);
                }
            }
            _ => {}
        }
        if let Some(m) = &self.map {
            Picked::Map(m)
        } else if self.scalar {
            Picked::Scalar
        } else if let Some(l) = &self.list {
            Picked::List(l)
        } else {
            Picked::Nothing
        }
    }
}

fn ref_name(p: &Value) -> Option<&str> {
    let r = p.get("$ref").and_then(Value::as_str).or_else(|| {
        let all = p.get("allOf")?.as_array()?;
        if all.len() == 1 {
            all[0].get("$ref")?.as_str()
        } else {
            None
        }
    })?;
    Some(r.strip_prefix(DEFS_PREFIX).unwrap_or(r))
}

/// makeOpenAPIRef for property `field` of definition `def`.
fn make_ref<'d>(p: &'d Value, def: Option<&'d str>, field: &str) -> TyRef<'d> {
    // The tables only name inline arrays and inline maps.
    let inline_kind = p.get("type").and_then(Value::as_str);
    let def = def.filter(|_| matches!(inline_kind, Some("array" | "object")));
    let table_atomic = def.is_some_and(|d| ATOMIC_MAP_FIELDS.contains(&(d, field)));
    let ext_atomic = p
        .get("x-kubernetes-map-type")
        .and_then(Value::as_str)
        .map(|t| t == "atomic");
    let map_atomic = if table_atomic { Some(true) } else { ext_atomic };
    let list = def.and_then(|d| {
        LIST_OVERRIDES
            .iter()
            .find(|(od, of, _)| *od == d && *of == field)
            .map(|(_, _, spec)| match spec {
                ListSpec::Atomic => ListRel::Atomic,
                ListSpec::Set => ListRel::Set,
                ListSpec::Map(keys) => ListRel::Map(keys.to_vec()),
            })
    });
    match ref_name(p) {
        Some(name) => TyRef {
            base: Base::Named(name),
            map_atomic,
            list,
        },
        None => TyRef {
            base: Base::Inline(p),
            map_atomic,
            list,
        },
    }
}

impl<'d> Schema<'d> {
    fn root(&self, root: Option<&str>) -> TyRef<'d> {
        match root.and_then(|r| self.defs.get_key_value(r)) {
            Some((name, _)) => TyRef::of(Base::Named(name.as_str())),
            None => TyRef::of(Base::Deduced),
        }
    }

    fn resolve(&self, ty: &TyRef<'d>) -> Atom<'d> {
        self.resolve_depth(ty, 0)
    }

    fn resolve_depth(&self, ty: &TyRef<'d>, depth: u8) -> Atom<'d> {
        match ty.base {
            Base::Deduced => Atom::deduced(),
            Base::Untyped => Atom::untyped(),
            Base::Named(name) => {
                if name == QUANTITY {
                    return Atom::scalar();
                }
                if name == RAW_EXTENSION {
                    return Atom::untyped();
                }
                match self.defs.get_key_value(name) {
                    Some((n, sch)) => self.parse(sch, Some(n.as_str()), ty, depth),
                    None => Atom::deduced(),
                }
            }
            Base::Inline(sch) => self.parse(sch, None, ty, depth),
        }
    }

    fn parse(&self, sch: &'d Value, def: Option<&'d str>, ty: &TyRef<'d>, depth: u8) -> Atom<'d> {
        if let Some(name) = ref_name(sch) {
            if depth > 8 {
                return Atom::deduced();
            }
            let inner = TyRef {
                base: Base::Named(name),
                map_atomic: ty.map_atomic,
                list: ty.list.clone(),
            };
            return self.resolve_depth(&inner, depth + 1);
        }
        let typ = match sch.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or(""),
            _ => "",
        };
        match typ {
            "object" => Atom {
                scalar: false,
                list: None,
                map: Some(self.parse_object(sch, def, ty)),
            },
            "array" => Atom {
                scalar: false,
                list: Some(self.parse_list(sch, ty)),
                map: None,
            },
            "" => Atom {
                scalar: true,
                list: Some(self.parse_list(sch, ty)),
                map: Some(self.parse_object(sch, def, ty)),
            },
            _ => Atom::scalar(),
        }
    }

    fn parse_object(&self, sch: &'d Value, def: Option<&'d str>, ty: &TyRef<'d>) -> MapT<'d> {
        let props = sch
            .get("properties")
            .and_then(Value::as_object)
            .filter(|p| !p.is_empty());
        let elem = match sch.get("additionalProperties") {
            Some(ap @ Value::Object(_)) => make_ref(ap, None, ""),
            _ => TyRef::of(Base::Deduced),
        };
        let atomic = ty.map_atomic.unwrap_or_else(|| {
            sch.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
                || def.is_some_and(|d| ATOMIC_STRUCTS.contains(&d))
        });
        MapT {
            def,
            props,
            elem,
            atomic,
        }
    }

    fn parse_list(&self, sch: &'d Value, ty: &TyRef<'d>) -> ListT<'d> {
        let elem = match sch.get("items") {
            Some(it @ Value::Object(_)) => make_ref(it, None, ""),
            _ => TyRef::of(Base::Untyped),
        };
        let rel = match &ty.list {
            Some(r) => r.clone(),
            None => list_rel_from_ext(sch),
        };
        ListT { rel, elem }
    }

    /// The schema `default` of key `name` of the list's element type.
    fn key_default(&self, elem: &TyRef<'d>, name: &str) -> Option<&'d Value> {
        let sch = match elem.base {
            Base::Named(n) => self.defs.get(n)?,
            Base::Inline(v) => v,
            _ => return None,
        };
        sch.get("properties")?.get(name)?.get("default")
    }
}

fn list_rel_from_ext(sch: &Value) -> ListRel<'_> {
    if let Some(t) = sch.get("x-kubernetes-list-type").and_then(Value::as_str) {
        return match t {
            "set" => ListRel::Set,
            "map" => {
                let keys: Vec<(&str, Option<&str>)> = sch
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|k| (k, None))
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListRel::Set
                } else {
                    ListRel::Map(keys)
                }
            }
            _ => ListRel::Atomic,
        };
    }
    match sch
        .get("x-kubernetes-patch-strategy")
        .and_then(Value::as_str)
    {
        Some("merge" | "merge,retainKeys") => {
            match sch
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
            {
                Some(k) => ListRel::Map(vec![(k, None)]),
                None => ListRel::Set,
            }
        }
        _ => ListRel::Atomic,
    }
}

/// listItemToPathElement.
fn item_pe<'d>(s: &Schema<'d>, lt: &ListT<'d>, item: &Value) -> Result<PE, String> {
    match &lt.rel {
        ListRel::Atomic => Err("invalid indexing of non-associative list".into()),
        ListRel::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            v => Ok(PE::Val(v.clone())),
        },
        ListRel::Map(keys) => {
            let m = match item {
                Value::Object(m) => m,
                Value::Null => {
                    return Err("associative list with keys may not have a null element".into());
                }
                _ => return Err("associative list with keys may not have non-map elements".into()),
            };
            let mut fields = Vec::with_capacity(keys.len());
            for (name, table_default) in keys {
                if let Some(v) = m.get(*name) {
                    fields.push(((*name).to_string(), v.clone()));
                } else if let Some(d) = table_default {
                    fields.push(((*name).to_string(), Value::String((*d).to_string())));
                } else if let Some(d) = s.key_default(&lt.elem, name) {
                    fields.push(((*name).to_string(), d.clone()));
                }
            }
            if fields.is_empty() {
                let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "associative list with keys has an element that omits all key fields {names:?} (and doesn't have default values for any key fields)"
                ));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PE::Key(fields))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Walkers (typed: validate, ToFieldSet, Compare, Merge, RemoveItems)
// ---------------------------------------------------------------------------------------------

/// The checks ObjectToTyped makes on an applied configuration: list items carry their keys,
/// no duplicates in associative lists.
fn validate<'d>(s: &Schema<'d>, v: &Value, ty: &TyRef<'d>, path: &mut Path) -> Result<(), String> {
    let atom = s.resolve(ty);
    match atom.pick(Some(v)) {
        Picked::List(lt) => {
            let Value::Array(items) = v else {
                return Ok(());
            };
            if matches!(lt.rel, ListRel::Atomic) {
                return Ok(());
            }
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe(s, lt, item)
                    .map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?;
                if !seen.insert(pe.clone()) {
                    return Err(format!(
                        "{}: duplicate entries for key {}",
                        path_string(path),
                        path_string(std::slice::from_ref(&pe))
                    ));
                }
                path.push(pe);
                let r = validate(s, item, &lt.elem, path);
                path.pop();
                r?;
            }
            Ok(())
        }
        Picked::Map(mt) => {
            let Value::Object(m) = v else { return Ok(()) };
            if mt.atomic {
                return Ok(());
            }
            for (k, val) in m {
                path.push(PE::Field(k.clone()));
                let r = validate(s, val, &mt.child(k), path);
                path.pop();
                r?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn to_field_set<'d>(s: &Schema<'d>, v: &Value, ty: &TyRef<'d>) -> Set {
    let mut set = Set::default();
    fs_walk(s, v, ty, &mut Vec::new(), &mut set);
    set
}

fn fs_walk<'d>(s: &Schema<'d>, v: &Value, ty: &TyRef<'d>, path: &mut Path, set: &mut Set) {
    let atom = s.resolve(ty);
    match atom.pick(Some(v)) {
        Picked::Scalar | Picked::Nothing => set.insert(path),
        Picked::List(lt) => {
            if matches!(lt.rel, ListRel::Atomic) {
                set.insert(path);
                return;
            }
            let Value::Array(items) = v else { return };
            let pes: Vec<Option<PE>> = items.iter().map(|i| item_pe(s, lt, i).ok()).collect();
            let mut seen = BTreeSet::new();
            let mut dups = BTreeSet::new();
            for pe in pes.iter().flatten() {
                if !seen.insert(pe) && dups.insert(pe) {
                    path.push(pe.clone());
                    set.insert(path);
                    path.pop();
                }
            }
            for (item, pe) in items.iter().zip(pes.iter()) {
                let Some(pe) = pe else { continue };
                if dups.contains(pe) {
                    continue;
                }
                path.push(pe.clone());
                fs_walk(s, item, &lt.elem, path, set);
                set.insert(path);
                path.pop();
            }
        }
        Picked::Map(mt) => {
            if mt.atomic {
                set.insert(path);
                return;
            }
            let Value::Object(m) = v else { return };
            for (k, val) in m {
                path.push(PE::Field(k.clone()));
                let field = mt.field(k);
                let is_field = field.is_some();
                let cty = field.unwrap_or_else(|| mt.elem.clone());
                fs_walk(s, val, &cty, path, set);
                let empty_map = matches!(val, Value::Object(o) if o.is_empty());
                if val.is_null() || empty_map || !is_field {
                    set.insert(path);
                }
                path.pop();
            }
        }
    }
}

/// Set.EnsureNamedFieldsAreMembers.
fn ensure_named<'d>(s: &Schema<'d>, set: &Set, ty: &TyRef<'d>) -> Set {
    let atom = s.resolve(ty);
    let mut out = Set {
        members: set.members.clone(),
        children: BTreeMap::new(),
    };
    for (pe, child) in &set.children {
        let cty = match pe {
            PE::Field(name) => {
                if let Some(m) = &atom.map {
                    if m.has_field(name) {
                        out.members.insert(pe.clone());
                    }
                    m.child(name)
                } else {
                    TyRef::of(Base::Deduced)
                }
            }
            _ => match &atom.list {
                Some(l) => l.elem.clone(),
                None => TyRef::of(Base::Deduced),
            },
        };
        out.children
            .insert(pe.clone(), ensure_named(s, child, &cty));
    }
    out
}

fn as_list(v: Option<&Value>) -> Option<&Vec<Value>> {
    v.and_then(Value::as_array)
}

fn as_map(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

fn kind_of(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Array(_)) => 1,
        Some(Value::Object(_)) => 2,
        Some(_) => 3,
    }
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(Map::new()));

fn compare<'d>(
    s: &Schema<'d>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: &TyRef<'d>,
    path: &mut Path,
    c: &mut Comparison,
) {
    if lhs.is_none() && rhs.is_none() {
        return;
    }
    // An unchanged map or list holds no change: an update that touches one annotation does not
    // walk the rest of the object field by field.
    if let (Some(a), Some(b)) = (lhs, rhs)
        && (a.is_object() || a.is_array())
        && json_equal(a, b)
    {
        return;
    }
    let atom = s.resolve(ty);
    let leaf = |c: &mut Comparison, path: &Path| match (lhs, rhs) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        (Some(a), Some(b)) => {
            if !json_equal(a, b) {
                c.modified.insert(path)
            }
        }
    };
    let (kl, kr) = (kind_of(lhs), kind_of(rhs));
    let mixed = kl != 0 && kr != 0 && kl != kr;
    let picked = atom.pick(rhs.or(lhs));
    let picked = if mixed { Picked::Scalar } else { picked };
    match picked {
        Picked::Scalar | Picked::Nothing => {
            leaf(c, path);
            return;
        }
        Picked::List(lt) => {
            let (l, r) = (as_list(lhs), as_list(rhs));
            let empty = l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty);
            if matches!(lt.rel, ListRel::Atomic) || empty {
                leaf(c, path);
                return;
            }
            compare_list(s, lt, l, r, path, c);
        }
        Picked::Map(mt) => {
            let (l, r) = (as_map(lhs), as_map(rhs));
            let empty = l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty);
            if mt.atomic || empty {
                leaf(c, path);
                return;
            }
            let both = l.is_some() && r.is_some();
            let mut keys: BTreeSet<&String> = BTreeSet::new();
            keys.extend(l.iter().flat_map(|m| m.keys()));
            keys.extend(r.iter().flat_map(|m| m.keys()));
            for k in keys {
                let mut lv = l.and_then(|m| m.get(k.as_str()));
                let mut rv = r.and_then(|m| m.get(k.as_str()));
                if both
                    && (lv.is_none() || rv.is_none())
                    && let Some(z) = mt.absent_as(k)
                {
                    let other = kind_of(lv.or(rv));
                    if other == kind_of(Some(z)) || (z.is_null() && other == 1) {
                        lv = lv.or(Some(z));
                        rv = rv.or(Some(z));
                    }
                }
                path.push(PE::Field(k.clone()));
                compare(s, lv, rv, &mt.child(k), path, c);
                path.pop();
            }
        }
    }
    if lhs.is_none() {
        c.added.insert(path);
    } else if rhs.is_none() {
        c.removed.insert(path);
    }
}

fn compare_list<'d>(
    s: &Schema<'d>,
    lt: &ListT<'d>,
    l: Option<&Vec<Value>>,
    r: Option<&Vec<Value>>,
    path: &mut Path,
    c: &mut Comparison,
) {
    let mut order: Vec<PE> = Vec::new();
    let mut lvals: BTreeMap<PE, Vec<&Value>> = BTreeMap::new();
    let mut rvals: BTreeMap<PE, Vec<&Value>> = BTreeMap::new();
    for item in l.into_iter().flatten() {
        let Ok(pe) = item_pe(s, lt, item) else {
            continue;
        };
        let e = lvals.entry(pe.clone()).or_default();
        if e.is_empty() {
            order.push(pe);
        }
        e.push(item);
    }
    for item in r.into_iter().flatten() {
        let Ok(pe) = item_pe(s, lt, item) else {
            continue;
        };
        let e = rvals.entry(pe.clone()).or_default();
        if e.is_empty() && !lvals.contains_key(&pe) {
            order.push(pe);
        }
        e.push(item);
    }
    for pe in order {
        let ll = lvals.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
        let rl = rvals.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
        path.push(pe);
        if ll.len() <= 1 && rl.len() <= 1 {
            compare(
                s,
                ll.first().copied(),
                rl.first().copied(),
                &lt.elem,
                path,
                c,
            );
        } else if ll.len() >= 2 && rl.len() >= 2 {
            let eq = ll.len() == rl.len() && ll.iter().zip(rl).all(|(a, b)| json_equal(a, b));
            if !eq {
                c.modified.insert(path);
            }
        } else if ll.len() >= 2 {
            if let Some(rv) = rl.first() {
                compare(s, None, Some(rv), &lt.elem, path, c);
            }
            c.removed.insert(path);
        } else {
            if let Some(lv) = ll.first() {
                compare(s, Some(lv), None, &lt.elem, path, c);
            }
            c.added.insert(path);
        }
        path.pop();
    }
}

/// typed Merge with ruleKeepRHS (the applied config wins at leaves).
fn merge<'d>(
    s: &Schema<'d>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: &TyRef<'d>,
    path: &mut Path,
) -> Option<Value> {
    if lhs.is_none() && rhs.is_none() {
        return None;
    }
    let leaf = || rhs.or(lhs).cloned();
    let (kl, kr) = (kind_of(lhs), kind_of(rhs));
    if kl != 0 && kr != 0 && kl != kr {
        return leaf();
    }
    let atom = s.resolve(ty);
    match atom.pick(rhs.or(lhs)) {
        Picked::Scalar | Picked::Nothing => leaf(),
        Picked::List(lt) => {
            let (l, r) = (as_list(lhs), as_list(rhs));
            let empty = l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty);
            if matches!(lt.rel, ListRel::Atomic) || empty {
                return leaf();
            }
            merge_list(s, lt, l, r, path).or_else(leaf)
        }
        Picked::Map(mt) => {
            let (l, r) = (as_map(lhs), as_map(rhs));
            let empty = l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty);
            if mt.atomic || empty {
                return leaf();
            }
            let mut out = Map::new();
            let mut keys: BTreeSet<&String> = BTreeSet::new();
            keys.extend(l.iter().flat_map(|m| m.keys()));
            keys.extend(r.iter().flat_map(|m| m.keys()));
            for k in keys {
                let lv = l.and_then(|m| m.get(k.as_str()));
                let rv = r.and_then(|m| m.get(k.as_str()));
                path.push(PE::Field(k.clone()));
                let v = merge(s, lv, rv, &mt.child(k), path);
                path.pop();
                match v {
                    Some(Value::Null) | None => {}
                    Some(v) => {
                        out.insert(k.clone(), v);
                    }
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            }
        }
    }
}

/// mergingWalker.visitListItems: the merged order keeps live items in place and inserts the
/// applied ones in the applied order. None (→ leaf rule) when an item cannot be keyed.
fn merge_list<'d>(
    s: &Schema<'d>,
    lt: &ListT<'d>,
    l: Option<&Vec<Value>>,
    r: Option<&Vec<Value>>,
    path: &mut Path,
) -> Option<Value> {
    type Index = (Vec<PE>, BTreeMap<PE, Option<usize>>);
    let index = |list: Option<&Vec<Value>>| -> Option<Index> {
        let mut pes = Vec::new();
        let mut observed: BTreeMap<PE, Option<usize>> = BTreeMap::new();
        for (i, item) in list.into_iter().flatten().enumerate() {
            let pe = item_pe(s, lt, item).ok()?;
            match observed.get_mut(&pe) {
                Some(slot) => *slot = None,
                None => {
                    observed.insert(pe.clone(), Some(i));
                }
            }
            pes.push(pe);
        }
        Some((pes, observed))
    };
    let (rpes, robs) = index(r)?;
    let (lpes, lobs) = index(l)?;
    let get =
        |list: Option<&Vec<Value>>, obs: &BTreeMap<PE, Option<usize>>, pe: &PE| -> Option<Value> {
            match obs.get(pe) {
                Some(Some(i)) => list.and_then(|x| x.get(*i)).cloned(),
                Some(None) => Some(Value::Null),
                None => None,
            }
        };
    let mut shared: std::collections::VecDeque<&PE> =
        rpes.iter().filter(|pe| lobs.contains_key(*pe)).collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: BTreeSet<PE> = BTreeSet::new();
    let mut out = Vec::new();
    let item = |pe: &PE, out: &mut Vec<Value>, path: &mut Path| {
        let lv = get(l, &lobs, pe);
        let rv = get(r, &robs, pe);
        path.push(pe.clone());
        if let Some(v) = merge(s, lv.as_ref(), rv.as_ref(), &lt.elem, path) {
            out.push(v);
        }
        path.pop();
    };
    let (ll, rl) = (lpes.len(), rpes.len());
    let (mut li, mut ri) = (0, 0);
    while li < ll || ri < rl {
        if li < ll && ri < rl {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged_rhs.insert(pe.clone());
                item(pe, &mut out, path);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if robs.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < ll {
            let pe = &lpes[li];
            if !robs.contains_key(pe) {
                item(pe, &mut out, path);
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
            }
        }
        if ri < rl {
            let pe = &rpes[ri];
            merged_rhs.insert(pe.clone());
            item(pe, &mut out, path);
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(Value::Array(out))
    }
}

/// typed RemoveItems: drops the paths of `set` (a member path drops the whole subtree).
fn remove_items<'d>(s: &Schema<'d>, v: &Value, set: &Set, ty: &TyRef<'d>) -> Option<Value> {
    let atom = s.resolve(ty);
    match atom.pick(Some(v)) {
        Picked::Scalar | Picked::Nothing => Some(v.clone()),
        Picked::List(lt) => {
            let Value::Array(items) = v else { return None };
            if items.is_empty() || matches!(lt.rel, ListRel::Atomic) {
                return None;
            }
            let mut out = Vec::new();
            for item in items {
                let Ok(pe) = item_pe(s, lt, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.members.contains(&pe) {
                    continue;
                }
                match set.with_prefix(&pe).filter(|p| !p.is_empty()) {
                    Some(sub) => {
                        if let Some(x) = remove_items(s, item, sub, &lt.elem) {
                            out.push(x);
                        }
                    }
                    None => out.push(item.clone()),
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Array(out))
            }
        }
        Picked::Map(mt) => {
            let Value::Object(m) = v else { return None };
            if m.is_empty() || mt.atomic {
                return None;
            }
            let mut out = Map::new();
            for (k, val) in m {
                let pe = PE::Field(k.clone());
                if set.members.contains(&pe) {
                    continue;
                }
                match set.with_prefix(&pe).filter(|p| !p.is_empty()) {
                    Some(sub) => {
                        if let Some(x) = remove_items(s, val, sub, &mt.child(k)) {
                            out.insert(k.clone(), x);
                        }
                    }
                    None => {
                        out.insert(k.clone(), val.clone());
                    }
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in facts the generated definitions lack (Kubernetes 1.33 `+listType`, `+listMapKey`,
// `+structType`, `+mapType` markers, and Go non-pointer struct fields)
// ---------------------------------------------------------------------------------------------

enum ListSpec {
    Atomic,
    Set,
    /// Keys with the default the schema gives them (`protocol` defaults to `TCP`).
    Map(&'static [(&'static str, Option<&'static str>)]),
}

macro_rules! core {
    ($name:literal) => {
        concat!("io.k8s.api.core.v1.", $name)
    };
}

const PORT_KEYS: &[(&str, Option<&str>)] = &[("containerPort", None), ("protocol", Some("TCP"))];
const NAME_KEY: &[(&str, Option<&str>)] = &[("name", None)];
const TYPE_KEY: &[(&str, Option<&str>)] = &[("type", None)];

/// List semantics where the real `x-kubernetes-list-type` differs from what the patch
/// extensions alone give.
static LIST_OVERRIDES: &[(&str, &str, ListSpec)] = &[
    (core!("Container"), "ports", ListSpec::Map(PORT_KEYS)),
    (
        core!("EphemeralContainer"),
        "ports",
        ListSpec::Map(PORT_KEYS),
    ),
    (
        core!("ServiceSpec"),
        "ports",
        ListSpec::Map(&[("port", None), ("protocol", Some("TCP"))]),
    ),
    (
        core!("PodSpec"),
        "topologySpreadConstraints",
        ListSpec::Map(&[("topologyKey", None), ("whenUnsatisfiable", None)]),
    ),
    (core!("PodStatus"), "hostIPs", ListSpec::Atomic),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        ListSpec::Atomic,
    ),
    (
        core!("ResourceRequirements"),
        "claims",
        ListSpec::Map(NAME_KEY),
    ),
    (core!("PodSpec"), "resourceClaims", ListSpec::Map(NAME_KEY)),
    (core!("PodSpec"), "schedulingGates", ListSpec::Map(NAME_KEY)),
    (
        core!("PodSpec"),
        "imagePullSecrets",
        ListSpec::Map(NAME_KEY),
    ),
    (
        core!("PodStatus"),
        "resourceClaimStatuses",
        ListSpec::Map(NAME_KEY),
    ),
    (
        core!("ContainerStatus"),
        "allocatedResourcesStatus",
        ListSpec::Map(NAME_KEY),
    ),
    (
        core!("ResourceStatus"),
        "resources",
        ListSpec::Map(&[("resourceID", None)]),
    ),
    (core!("VolumeMount"), "bindMountOptions", ListSpec::Set),
    (core!("NodeSpec"), "podCIDRs", ListSpec::Set),
    (core!("NodeStatus"), "addresses", ListSpec::Map(TYPE_KEY)),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        ListSpec::Set,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        ListSpec::Map(&[("uid", None)]),
    ),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "succeeded",
        ListSpec::Set,
    ),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "failed",
        ListSpec::Set,
    ),
    (
        "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        "values",
        ListSpec::Set,
    ),
    (
        "io.k8s.api.discovery.v1.Endpoint",
        "addresses",
        ListSpec::Set,
    ),
    (
        "io.k8s.api.storage.v1.CSIDriverSpec",
        "volumeLifecycleModes",
        ListSpec::Set,
    ),
    (
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        ListSpec::Map(NAME_KEY),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        "matchConditions",
        ListSpec::Map(NAME_KEY),
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        "matchConditions",
        ListSpec::Map(NAME_KEY),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "matchConditions",
        ListSpec::Map(NAME_KEY),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "variables",
        ListSpec::Map(NAME_KEY),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus",
        "conditions",
        ListSpec::Map(TYPE_KEY),
    ),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
        "conditions",
        ListSpec::Map(TYPE_KEY),
    ),
    (
        "io.k8s.api.flowcontrol.v1.FlowSchemaStatus",
        "conditions",
        ListSpec::Map(TYPE_KEY),
    ),
    (
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus",
        "conditions",
        ListSpec::Map(TYPE_KEY),
    ),
];

/// `+structType=atomic` definitions.
static ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
    core!("SecretReference"),
    core!("FileKeySelector"),
    core!("ObjectFieldSelector"),
    core!("ResourceFieldSelector"),
    core!("ConfigMapKeySelector"),
    core!("SecretKeySelector"),
    core!("NodeSelector"),
    core!("NodeSelectorTerm"),
    core!("TopologySelectorTerm"),
    core!("EndpointAddress"),
    core!("EndpointPort"),
    core!("ObjectReference"),
    core!("LocalObjectReference"),
    core!("TypedLocalObjectReference"),
    core!("ScopeSelector"),
    "io.k8s.api.networking.v1.ServiceBackendPort",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.api.rbac.v1.RoleRef",
    "io.k8s.api.autoscaling.v1.CrossVersionObjectReference",
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.admissionregistration.v1.ParamKind",
    "io.k8s.api.admissionregistration.v1.Variable",
    "io.k8s.api.admissionregistration.v1.ParamRef",
    "io.k8s.api.admissionregistration.v1.MatchResources",
    "io.k8s.api.admissionregistration.v1.NamedRuleWithOperations",
];

/// Granular list fields without `omitempty`: a typed Go object always has them (`null`).
static NULL_LISTS: &[(&str, &str)] = &[
    (core!("PodSpec"), "containers"),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers"),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses"),
];

/// `+mapType=atomic` fields.
static ATOMIC_MAP_FIELDS: &[(&str, &str)] = &[
    (core!("PodSpec"), "nodeSelector"),
    (core!("ReplicationControllerSpec"), "selector"),
    (core!("ServiceSpec"), "selector"),
    ("io.k8s.api.node.v1.Scheduling", "nodeSelector"),
];

/// Go non-pointer struct fields (definition → fields), sorted by definition: the typed objects
/// the real server compares always carry them, at least as `{}`.
static ZERO_STRUCTS: &[(&str, &[&str])] = &[
    (
        "io.k8s.api.admissionregistration.v1.MutatingAdmissionPolicy",
        &["spec"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingAdmissionPolicyBinding",
        &["spec"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        &["clientConfig"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
        &["spec", "status"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
        &["spec"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        &["clientConfig"],
    ),
    ("io.k8s.api.apps.v1.DaemonSet", &["spec", "status"]),
    (
        "io.k8s.api.apps.v1.DaemonSetSpec",
        &["template", "updateStrategy"],
    ),
    ("io.k8s.api.apps.v1.Deployment", &["spec", "status"]),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        &["template", "strategy"],
    ),
    ("io.k8s.api.apps.v1.ReplicaSet", &["spec", "status"]),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", &["template"]),
    ("io.k8s.api.apps.v1.StatefulSet", &["spec", "status"]),
    (
        "io.k8s.api.apps.v1.StatefulSetSpec",
        &["template", "updateStrategy"],
    ),
    (
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
        &["spec", "status"],
    ),
    (
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerSpec",
        &["scaleTargetRef"],
    ),
    ("io.k8s.api.autoscaling.v1.ObjectMetricSource", &["target"]),
    ("io.k8s.api.autoscaling.v1.ObjectMetricStatus", &["target"]),
    ("io.k8s.api.autoscaling.v1.Scale", &["spec", "status"]),
    (
        "io.k8s.api.autoscaling.v2.ContainerResourceMetricSource",
        &["target"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ContainerResourceMetricStatus",
        &["current"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ExternalMetricSource",
        &["metric", "target"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ExternalMetricStatus",
        &["metric", "current"],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
        &["spec", "status"],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        &["scaleTargetRef"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ObjectMetricSource",
        &["describedObject", "target", "metric"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ObjectMetricStatus",
        &["metric", "current", "describedObject"],
    ),
    (
        "io.k8s.api.autoscaling.v2.PodsMetricSource",
        &["metric", "target"],
    ),
    (
        "io.k8s.api.autoscaling.v2.PodsMetricStatus",
        &["metric", "current"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ResourceMetricSource",
        &["target"],
    ),
    (
        "io.k8s.api.autoscaling.v2.ResourceMetricStatus",
        &["current"],
    ),
    ("io.k8s.api.batch.v1.CronJob", &["spec", "status"]),
    ("io.k8s.api.batch.v1.CronJobSpec", &["jobTemplate"]),
    ("io.k8s.api.batch.v1.Job", &["spec", "status"]),
    ("io.k8s.api.batch.v1.JobSpec", &["template"]),
    ("io.k8s.api.batch.v1.JobTemplateSpec", &["spec"]),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequest",
        &["spec", "status"],
    ),
    ("io.k8s.api.certificates.v1.ClusterTrustBundle", &["spec"]),
    (
        "io.k8s.api.certificates.v1.PodCertificateRequest",
        &["spec", "status"],
    ),
    ("io.k8s.api.coordination.v1.Lease", &["spec"]),
    ("io.k8s.api.core.v1.Binding", &["target"]),
    ("io.k8s.api.core.v1.Container", &["resources"]),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        &["state", "lastState"],
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", &["resources"]),
    ("io.k8s.api.core.v1.Event", &["involvedObject", "source"]),
    ("io.k8s.api.core.v1.LimitRange", &["spec"]),
    ("io.k8s.api.core.v1.Namespace", &["spec", "status"]),
    ("io.k8s.api.core.v1.Node", &["spec", "status"]),
    (
        "io.k8s.api.core.v1.NodeDaemonEndpoints",
        &["kubeletEndpoint"],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        &["daemonEndpoints", "nodeInfo"],
    ),
    ("io.k8s.api.core.v1.PersistentVolume", &["spec", "status"]),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        &["spec", "status"],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
        &["resources"],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimTemplate",
        &["spec"],
    ),
    ("io.k8s.api.core.v1.Pod", &["spec", "status"]),
    ("io.k8s.api.core.v1.PodTemplate", &["template"]),
    ("io.k8s.api.core.v1.PodTemplateSpec", &["spec"]),
    ("io.k8s.api.core.v1.PreferAvoidPodsEntry", &["podSignature"]),
    (
        "io.k8s.api.core.v1.PreferredSchedulingTerm",
        &["preference"],
    ),
    (
        "io.k8s.api.core.v1.ReplicationController",
        &["spec", "status"],
    ),
    ("io.k8s.api.core.v1.ResourceQuota", &["spec", "status"]),
    ("io.k8s.api.core.v1.SerializedReference", &["reference"]),
    ("io.k8s.api.core.v1.Service", &["spec", "status"]),
    ("io.k8s.api.core.v1.ServiceStatus", &["loadBalancer"]),
    (
        "io.k8s.api.core.v1.WeightedPodAffinityTerm",
        &["podAffinityTerm"],
    ),
    ("io.k8s.api.discovery.v1.Endpoint", &["conditions"]),
    ("io.k8s.api.networking.v1.HTTPIngressPath", &["backend"]),
    ("io.k8s.api.networking.v1.IPAddress", &["spec"]),
    ("io.k8s.api.networking.v1.Ingress", &["spec", "status"]),
    ("io.k8s.api.networking.v1.IngressClass", &["spec"]),
    ("io.k8s.api.networking.v1.IngressServiceBackend", &["port"]),
    ("io.k8s.api.networking.v1.IngressStatus", &["loadBalancer"]),
    ("io.k8s.api.networking.v1.NetworkPolicy", &["spec"]),
    ("io.k8s.api.networking.v1.ServiceCIDR", &["spec", "status"]),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        &["spec", "status"],
    ),
    ("io.k8s.api.rbac.v1.ClusterRoleBinding", &["roleRef"]),
    ("io.k8s.api.rbac.v1.RoleBinding", &["roleRef"]),
    ("io.k8s.api.storage.v1.CSIDriver", &["spec"]),
    ("io.k8s.api.storage.v1.CSINode", &["spec", "status"]),
    (
        "io.k8s.api.storage.v1.VolumeAttachment",
        &["spec", "status"],
    ),
    ("io.k8s.api.storage.v1.VolumeAttachmentSpec", &["source"]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    const T1: &str = "2024-05-01T10:00:00Z";
    const T2: &str = "2024-05-01T10:05:00Z";
    const T3: &str = "2024-05-01T10:09:00Z";
    const DEPLOY: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");
    const SVC: Option<&str> = Some("io.k8s.api.core.v1.Service");
    const CM: Option<&str> = Some("io.k8s.api.core.v1.ConfigMap");

    fn defs() -> &'static Map<String, Value> {
        static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
        DEFS.get_or_init(|| {
            use super::super::openapi::{OpenApi, ServedKind};
            let k = |group, kind, plural, subresources| ServedKind {
                group,
                version: "v1",
                kind,
                plural,
                namespaced: true,
                subresources,
            };
            let kinds = [
                k(
                    "apps",
                    "Deployment",
                    "deployments",
                    &["status", "scale"][..],
                ),
                k("", "Service", "services", &["status"]),
                k("", "ConfigMap", "configmaps", &[]),
                k("", "Pod", "pods", &["status"]),
            ];
            OpenApi::build(&kinds).definitions().clone()
        })
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn stored(mut v: Value) -> Value {
        let m = v["metadata"].as_object_mut().unwrap();
        m.insert("uid".into(), json!("u-1"));
        m.insert("resourceVersion".into(), json!("5"));
        m.insert("creationTimestamp".into(), json!(T1));
        v
    }

    fn mf(v: &Value) -> &Vec<Value> {
        v["metadata"]["managedFields"].as_array().unwrap()
    }

    fn entry<'a>(v: &'a Value, manager: &str) -> &'a Value {
        mf(v).iter().find(|e| e["manager"] == manager).unwrap()
    }

    #[test]
    fn fields_v1_encoding_roundtrips_and_matches_the_real_format() {
        let fields = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                       "f:finalizers": {"v:\"a\"": {}}}
        });
        let set = set_from_fields(&fields).unwrap();
        assert_eq!(set_to_fields(&set), fields);
        let key = PE::Key(vec![
            ("port".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        assert!(set.has(&[
            PE::Field("spec".into()),
            PE::Field("ports".into()),
            key.clone()
        ]));
        assert!(set.has(&[PE::Field("metadata".into()), PE::Field("labels".into())]));
        assert_eq!(
            path_string(&[
                PE::Field("spec".into()),
                PE::Field("ports".into()),
                key,
                PE::Field("port".into())
            ]),
            ".spec.ports[port=80,protocol=\"TCP\"].port"
        );
        assert_eq!(pe_key(&PE::Val(json!("a<b"))), "v:\"a\\u003cb\"");
        assert!(set_from_fields(&json!({"k:{bad": {}})).is_none());
        assert!(set_from_fields(&json!({"f:a": 3})).is_none());
        // Unknown element kinds are skipped, as the Go reader does.
        assert!(set_from_fields(&json!({"x:y": {}})).unwrap().is_empty());
    }

    #[test]
    fn create_records_the_creator_like_kubectl_create() {
        let new = track_update(
            None,
            deployment(2, "nginx:1"),
            "kubectl-create",
            "",
            defs(),
            DEPLOY,
            T1,
        );
        let list = mf(&new);
        assert_eq!(list.len(), 1);
        let e = &list[0];
        assert_eq!(e["manager"], "kubectl-create");
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T1);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert!(e.get("subresource").is_none());
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn update_moves_changed_fields_to_the_writer() {
        let created = stored(track_update(
            None,
            deployment(2, "nginx:1"),
            "kubectl-create",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        let mut next = created.clone();
        next["spec"]["replicas"] = json!(5);
        let out = track_update(
            Some(&created),
            next,
            "kubectl-scale",
            "",
            defs(),
            DEPLOY,
            T2,
        );
        let scale = entry(&out, "kubectl-scale");
        assert_eq!(scale["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(scale["time"], T2);
        let create = entry(&out, "kubectl-create");
        assert!(create["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert_eq!(create["time"], T1);
        // A write that changes nothing keeps times and sets.
        let again = track_update(
            Some(&out),
            out.clone(),
            "kubectl-edit",
            "",
            defs(),
            DEPLOY,
            T3,
        );
        assert_eq!(mf(&again), mf(&out));
    }

    #[test]
    fn status_is_tracked_only_through_the_status_subresource() {
        let mut d = deployment(1, "a");
        d["status"] = json!({"replicas": 1});
        let created = stored(track_update(None, d, "m", "", defs(), DEPLOY, T1));
        assert!(entry(&created, "m")["fieldsV1"].get("f:status").is_none());
        let mut next = created.clone();
        next["status"]["replicas"] = json!(3);
        next["spec"]["replicas"] = json!(9);
        let out = track_update(
            Some(&created),
            next,
            "kube-controller-manager",
            "status",
            defs(),
            DEPLOY,
            T2,
        );
        let e = entry(&out, "kube-controller-manager");
        assert_eq!(e["subresource"], "status");
        assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    }

    #[test]
    fn apply_creates_and_owns_the_applied_fields() {
        let out = apply(
            None,
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            defs(),
            DEPLOY,
            T1,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        let list = mf(&out);
        assert_eq!(list.len(), 1);
        let e = &list[0];
        assert_eq!(e["manager"], "kubectl");
        assert_eq!(e["operation"], "Apply");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T1);
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn conflicting_apply_is_refused_with_the_real_message() {
        let created = stored(track_update(
            None,
            deployment(2, "nginx:1"),
            "kubectl-client-side-apply",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        let err = apply(
            Some(&created),
            &deployment(3, "nginx:1"),
            "ci",
            false,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let ApplyError::Conflicts(cs) = &err else {
            panic!()
        };
        assert_eq!(cs[0].field, ".spec.replicas");
        assert_eq!(
            cs[0].cause_message(),
            "conflict with \"kubectl-client-side-apply\" using apps/v1"
        );

        let err = apply(
            Some(&created),
            &deployment(3, "nginx:2"),
            "ci",
            false,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn force_takes_ownership_and_same_values_share() {
        let created = stored(track_update(
            None,
            deployment(2, "nginx:1"),
            "kubectl-create",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        let out = apply(
            Some(&created),
            &deployment(3, "nginx:1"),
            "ci",
            true,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let ci = entry(&out, "ci");
        assert!(ci["fieldsV1"]["f:spec"].get("f:replicas").is_some());
        let create = entry(&out, "kubectl-create");
        assert!(create["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        // Shared: image stays owned by both.
        assert!(create["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
            .get("f:image").is_some());
        // Apply entries sort before Update entries.
        assert_eq!(mf(&out)[0]["operation"], "Apply");
        assert_eq!(mf(&out)[1]["operation"], "Update");

        // A second applier with the same values: no conflict, nothing changes, no time.
        let again = apply(
            Some(&stored(out.clone())),
            &deployment(3, "nginx:1"),
            "other",
            false,
            defs(),
            DEPLOY,
            T3,
        )
        .unwrap();
        let other = entry(&again, "other");
        assert!(other.get("time").is_none());
        assert_eq!(entry(&again, "ci")["time"], T2);
    }

    #[test]
    fn fields_dropped_from_the_config_are_removed_unless_owned_by_others() {
        let mut cfg = deployment(2, "nginx:1");
        cfg["metadata"]["labels"]["tier"] = json!("front");
        cfg["spec"]["minReadySeconds"] = json!(5);
        let first = stored(apply(None, &cfg, "kubectl", false, defs(), DEPLOY, T1).unwrap());
        // Someone else also sets the tier label (same value → shared).
        let mut shared = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "front"}}});
        let second =
            stored(apply(Some(&first), &shared, "other", false, defs(), DEPLOY, T2).unwrap());
        let out = apply(
            Some(&second),
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            defs(),
            DEPLOY,
            T3,
        )
        .unwrap();
        assert!(out["spec"].get("minReadySeconds").is_none());
        assert_eq!(out["metadata"]["labels"]["tier"], "front");
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        // Now the other applier drops it too: gone.
        shared["metadata"]["labels"] = json!({});
        let out = apply(
            Some(&stored(out)),
            &shared,
            "other",
            false,
            defs(),
            DEPLOY,
            T3,
        )
        .unwrap();
        assert!(out["metadata"]["labels"].get("tier").is_none());
        // `labels: {}` is itself a field the other applier now owns.
        assert_eq!(
            entry(&out, "other")["fieldsV1"],
            json!({"f:metadata": {"f:labels": {}}})
        );
        assert_eq!(out["metadata"]["uid"], "u-1");
    }

    #[test]
    fn removed_list_items_are_pruned_in_order() {
        let mut cfg = deployment(1, "a");
        cfg["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]);
        let first = stored(apply(None, &cfg, "kubectl", false, defs(), DEPLOY, T1).unwrap());
        cfg["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "c", "image": "c"}, {"name": "a", "image": "a2"}]);
        let out = apply(Some(&first), &cfg, "kubectl", false, defs(), DEPLOY, T2).unwrap();
        let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["image"],
            "a2"
        );
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}, {"port": 80, "protocol": "UDP"}]}});
        let out = apply(None, &svc, "kubectl", false, defs(), SVC, T1).unwrap();
        let f = &entry(&out, "kubectl")["fieldsV1"]["f:spec"];
        assert!(
            f["f:ports"]
                .get("k:{\"port\":80,\"protocol\":\"TCP\"}")
                .is_some()
        );
        assert!(
            f["f:ports"]
                .get("k:{\"port\":80,\"protocol\":\"UDP\"}")
                .is_some()
        );
        // selector is an atomic map.
        assert_eq!(f["f:selector"], json!({}));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let no_kind = json!({"apiVersion": "v1", "metadata": {"name": "x"}});
        assert!(matches!(
            apply(None, &no_kind, "k", false, defs(), CM, T1),
            Err(ApplyError::Invalid(_))
        ));
        let no_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert!(matches!(
            apply(None, &no_name, "k", false, defs(), CM, T1),
            Err(ApplyError::Invalid(_))
        ));
        let mut dup = deployment(1, "a");
        dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
        let err = apply(None, &dup, "k", false, defs(), DEPLOY, T1).unwrap_err();
        assert!(
            err.message()
                .contains("duplicate entries for key [name=\"a\"]"),
            "{}",
            err.message()
        );
        let mut mf = deployment(1, "a");
        mf["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(None, &mf, "k", false, defs(), DEPLOY, T1)
                .unwrap_err()
                .message(),
            "metadata.managedFields must be nil"
        );
        let v1 = json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "web"}});
        let live = stored(deployment(1, "a"));
        assert!(apply(Some(&live), &v1, "k", false, defs(), DEPLOY, T1).is_err());
    }

    #[test]
    fn client_managed_fields_are_used_reset_or_ignored() {
        let created = stored(track_update(
            None,
            deployment(2, "a"),
            "kubectl-create",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        // Invalid managedFields sent by the client: ignored, the live ones are used.
        let mut bad = created.clone();
        bad["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Bogus"}]);
        let out = track_update(Some(&created), bad, "kubectl-edit", "", defs(), DEPLOY, T2);
        assert_eq!(mf(&out), mf(&created));
        // `[]` resets: an existing object then stays untracked.
        let mut reset = created.clone();
        reset["metadata"]["managedFields"] = json!([]);
        reset["spec"]["replicas"] = json!(4);
        let out = track_update(
            Some(&created),
            reset,
            "kubectl-edit",
            "",
            defs(),
            DEPLOY,
            T2,
        );
        assert!(out["metadata"].get("managedFields").is_none());
        // Valid ones sent by the client replace the live ones.
        let mut sent = created.clone();
        sent["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
        let out = track_update(Some(&created), sent, "kubectl-edit", "", defs(), DEPLOY, T2);
        assert_eq!(mf(&out).len(), 1);
        assert_eq!(mf(&out)[0]["manager"], "x");
    }

    #[test]
    fn apply_on_an_untracked_object_records_before_first_apply() {
        let live = stored(deployment(2, "a"));
        let err = apply(
            Some(&live),
            &deployment(3, "a"),
            "ci",
            false,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
        let out = apply(
            Some(&live),
            &deployment(2, "a"),
            "ci",
            false,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap();
        assert!(
            mf(&out)
                .iter()
                .any(|e| e["manager"] == "before-first-apply")
        );
    }

    #[test]
    fn kubectl_can_take_over_a_client_side_applied_object() {
        let mut cfg = deployment(2, "a");
        let text = serde_json::to_string(&cfg).unwrap();
        cfg["metadata"]["annotations"] = json!({LAST_APPLIED: text});
        let created = stored(track_update(
            None,
            cfg,
            "kubectl-client-side-apply",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        let out = apply(
            Some(&created),
            &deployment(3, "a"),
            "kubectl",
            false,
            defs(),
            DEPLOY,
            T2,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let ann = out["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert!(ann.ends_with('\n'));
        let last: Value = serde_json::from_str(ann).unwrap();
        assert_eq!(last["spec"]["replicas"], 3);
        // Another manager name gets the conflict.
        assert!(
            apply(
                Some(&created),
                &deployment(3, "a"),
                "ci",
                false,
                defs(),
                DEPLOY,
                T2
            )
            .is_err()
        );
    }

    #[test]
    fn update_managers_are_capped_at_ten() {
        let mut obj = stored(track_update(
            None,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {}}),
            "creator",
            "",
            defs(),
            CM,
            T1,
        ));
        for i in 0..12 {
            let mut next = obj.clone();
            next["data"][format!("k{i}")] = json!("v");
            let t = format!("2024-05-01T11:{i:02}:00Z");
            obj = track_update(Some(&obj), next, &format!("m{i:02}"), "", defs(), CM, &t);
        }
        let list = mf(&obj);
        assert_eq!(list.len(), 10);
        assert!(list.iter().any(|e| e["manager"] == "ancient-changes"));
        // Sorted by time.
        let times: Vec<i64> = list
            .iter()
            .map(|e| parse_rfc3339(e["time"].as_str().unwrap()).unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn default_manager_is_the_user_agent_prefix() {
        assert_eq!(
            default_manager("kubectl-client-side-apply/v1.33.0 (linux/amd64) kubernetes/abc"),
            "kubectl-client-side-apply"
        );
        assert_eq!(default_manager("kubectl-edit/v1.30.1"), "kubectl-edit");
        assert_eq!(
            default_manager(
                "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/x/system:serviceaccount:kube-system:deployment-controller"
            ),
            "kube-controller-manager"
        );
        assert_eq!(default_manager(""), "");
        assert_eq!(default_manager(&"é".repeat(100)).len(), 128);
    }

    #[test]
    fn unknown_kinds_are_deduced() {
        let cr = json!({"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"},
            "spec": {"list": [1, 2], "map": {"a": {"b": 1}}}});
        let out = apply(None, &cr, "kubectl", false, defs(), None, T1).unwrap();
        assert_eq!(
            entry(&out, "kubectl")["fieldsV1"],
            json!({"f:spec": {".": {}, "f:list": {}, "f:map": {".": {}, "f:a": {".": {}, "f:b": {}}}}})
        );
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00.123+02:00"),
            Some(1714557600 - 7200)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            json!(null),
            json!([]),
            json!("x"),
            json!({"metadata": 3}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "managedFields": "x"}, "spec": []}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
                   "spec": {"template": {"spec": {"containers": [3, null, {"image": "x"}, [1]]}}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w",
                   "managedFields": [{"manager": "a", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:spec": {"k:{}": {}, "v:[": {}, "i:x": {}}}}]}, "spec": {"replicas": "x"}}),
        ];
        for a in &odd {
            for b in &odd {
                let _ = track_update(Some(a), b.clone(), "m", "", defs(), DEPLOY, T1);
                let _ = track_update(Some(a), b.clone(), "m", "status", defs(), None, "bad time");
                let _ = apply(Some(a), b, "kubectl", false, defs(), DEPLOY, T1);
                let _ = apply(Some(a), b, "m", true, defs(), None, T1);
            }
        }
    }

    #[test]
    fn a_deployment_applies_quickly() {
        let mut cfg = deployment(3, "nginx:1");
        let containers: Vec<Value> = (0..20)
            .map(|i| json!({"name": format!("c{i}"), "image": "nginx", "env": (0..10).map(|j| json!({"name": format!("ENV_VARIABLE_{j}"), "value": "some-value"})).collect::<Vec<_>>(),
                "ports": [{"containerPort": 8000 + i}], "resources": {"limits": {"cpu": "1"}}}))
            .collect();
        cfg["spec"]["template"]["spec"]["containers"] = Value::Array(containers);
        assert!(serde_json::to_string(&cfg).unwrap().len() > 10_000);
        let live = stored(track_update(
            None,
            cfg.clone(),
            "kubectl-create",
            "",
            defs(),
            DEPLOY,
            T1,
        ));
        cfg["spec"]["replicas"] = json!(3);
        let start = std::time::Instant::now();
        let n = 20;
        for _ in 0..n {
            apply(Some(&live), &cfg, "kubectl", true, defs(), DEPLOY, T2).unwrap();
        }
        eprintln!("apply of a 10 KB deployment: {:?}", start.elapsed() / n);
    }
}
