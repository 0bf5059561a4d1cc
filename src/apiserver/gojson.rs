//! What kube-apiserver's Go decoders say of a body that does not fit its Go type, worked out from
//! the OpenAPI definitions (which name the Go structs and describe every field's type):
//!
//! - [`unmarshal_error`]: encoding/json's `UnmarshalTypeError` (kube-apiserver decodes with the
//!   `sigs.k8s.io/json` fork of it): `json: cannot unmarshal number into Go struct field
//!   ConfigMap.data of type string`. `Struct` is the Go struct holding the last field on the way
//!   to the bad value, the path after it is every struct field from the top (map keys and list
//!   indexes are not fields), and the type is the Go type the value was to be stored in. A number
//!   into an integer it does not fit says the number (`number 10000000000`).
//! - [`converter_error`]: the unstructured converter's words (`runtime.DefaultUnstructuredConverter`,
//!   which a strategic merge patch's result goes through): `cannot convert int64 to string`.
//! - [`strict_errors`]: the strict decoder's `unknown field "…"` and `duplicate field "…"`, in the
//!   order the decoder meets them in the body (serde_json's `Value` keeps only the last of two
//!   equal keys, so duplicates are found in the raw JSON).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The Go shape of a schema node.
#[derive(Debug, Clone, Copy)]
enum Shape<'a> {
    /// A Go struct: its type name (`v1.DeploymentSpec`) and its fields.
    Struct {
        name: &'a str,
        props: &'a Map<String, Value>,
    },
    /// `map[string]T`: the schema of T.
    Map(&'a Value),
    /// `[]T`: the schema of T.
    Slice(&'a Value),
    Str,
    /// `[]byte` (base64 in JSON).
    Bytes,
    Int32,
    Int64,
    Float64,
    Bool,
    /// Types with their own UnmarshalJSON.
    IntOrString,
    Quantity,
    /// `metav1.Time` / `metav1.MicroTime`: the Go type name.
    Time(&'a str),
    /// Anything (`interface{}`, `runtime.RawExtension`, …): the definition name if any.
    Free(Option<&'a str>),
}

struct Schemas<'a> {
    defs: &'a Map<String, Value>,
}

impl<'a> Schemas<'a> {
    /// Follows `$ref`s (and single wrappers) to the node describing the value, and the definition
    /// it is.
    fn resolve(&self, node: &'a Value) -> (&'a Value, Option<&'a str>) {
        super::strategic::resolve_schema(self.defs, node)
    }

    fn shape(&self, node: &'a Value) -> Shape<'a> {
        let (node, def) = self.resolve(node);
        let short = def.map(go_name);
        match def.map(|d| d.rsplit('.').next().unwrap_or(d)) {
            Some("IntOrString") => return Shape::IntOrString,
            Some("Quantity") => return Shape::Quantity,
            Some("Time" | "MicroTime") => return Shape::Time(short.unwrap_or("v1.Time")),
            _ => {}
        }
        if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return Shape::IntOrString;
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            return Shape::Struct {
                name: short.unwrap_or(""),
                props,
            };
        }
        let format = node.get("format").and_then(Value::as_str).unwrap_or("");
        match node.get("type").and_then(Value::as_str) {
            Some("object") => match node.get("additionalProperties") {
                Some(ap) if ap.is_object() => Shape::Map(ap),
                _ => Shape::Free(short),
            },
            Some("array") => match node.get("items") {
                Some(items) => Shape::Slice(items),
                None => Shape::Free(short),
            },
            Some("string") if format == "byte" => Shape::Bytes,
            Some("string") => Shape::Str,
            Some("integer") if format == "int32" => Shape::Int32,
            Some("integer") => Shape::Int64,
            Some("number") => Shape::Float64,
            Some("boolean") => Shape::Bool,
            _ => Shape::Free(short),
        }
    }

    /// Go's `reflect.Type.String()` of the type a schema node describes.
    fn type_name(&self, node: &'a Value, depth: usize) -> String {
        if depth > 16 {
            return "interface {}".into();
        }
        match self.shape(node) {
            Shape::Struct { name, .. } => name.to_string(),
            Shape::Map(v) => format!("map[string]{}", self.type_name(v, depth + 1)),
            Shape::Slice(v) => format!("[]{}", self.type_name(v, depth + 1)),
            Shape::Str => "string".into(),
            Shape::Bytes => "[]uint8".into(),
            Shape::Int32 => "int32".into(),
            Shape::Int64 => "int64".into(),
            Shape::Float64 => "float64".into(),
            Shape::Bool => "bool".into(),
            Shape::IntOrString => "intstr.IntOrString".into(),
            Shape::Quantity => "resource.Quantity".into(),
            Shape::Time(name) => name.to_string(),
            Shape::Free(name) => name.map_or("interface {}".into(), str::to_string),
        }
    }
}

/// `io.k8s.api.apps.v1.DeploymentSpec` → `v1.DeploymentSpec` (Go prints a type with the last
/// element of its package path).
fn go_name(def: &str) -> &str {
    let mut dots = def.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((i, _))) => &def[i + 1..],
        _ => def,
    }
}

/// encoding/json's word for a JSON value (`UnmarshalTypeError.Value`).
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `n` is what Go's `strconv.ParseInt` takes and fits `bits`.
fn fits_int(n: &serde_json::Number, bits: u32) -> bool {
    match n.as_i64() {
        Some(i) => bits >= 64 || (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&i),
        None => false,
    }
}

/// The walk from the root definition to the value at `path`: the schema node of the value, the
/// value, and the struct fields on the way (with the struct that holds the last one).
struct Walk<'a, 'p> {
    node: &'a Value,
    value: &'p Value,
    fields: Vec<&'p str>,
    holder: Option<&'a str>,
}

fn walk<'a, 'p>(
    s: &Schemas<'a>,
    root: &'a Value,
    doc: &'p Value,
    path: &'p [Step],
) -> Option<Walk<'a, 'p>> {
    let mut w = Walk {
        node: root,
        value: doc,
        fields: Vec::new(),
        holder: None,
    };
    for step in path {
        match (step, s.shape(w.node)) {
            (Step::Key(k), Shape::Struct { name, props }) => {
                w.node = props.get(k)?;
                w.value = w.value.get(k)?;
                w.fields.push(k);
                // `reflect.Type.Name()`: without the package.
                w.holder = Some(name.rsplit('.').next().unwrap_or(name));
            }
            (Step::Key(k), Shape::Map(v)) => {
                w.node = v;
                w.value = w.value.get(k)?;
            }
            (Step::Index(i), Shape::Slice(v)) => {
                w.node = v;
                w.value = w.value.get(*i)?;
            }
            _ => return None,
        }
    }
    Some(w)
}

/// A reference to the definition `root` (so that the walk knows its name), if there is one.
fn root_ref(defs: &Map<String, Value>, root: &str) -> Option<Value> {
    defs.contains_key(root)
        .then(|| serde_json::json!({ "$ref": format!("#/definitions/{root}") }))
}

const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// encoding/json's error for the value at `path` of `doc` decoded as the definition `root`
/// (kube-apiserver's words after `… cannot be handled as a Kind: `); None when Go's decoder would
/// take that value (the failure is not one Go has).
pub fn unmarshal_error(
    defs: &Map<String, Value>,
    root: &str,
    doc: &Value,
    path: &[Step],
) -> Option<String> {
    let s = Schemas { defs };
    let root_node = root_ref(defs, root)?;
    let w = walk(&s, &root_node, doc, path)?;
    let value = w.value;
    // JSON null into a value that is not a pointer, map or slice leaves it as it was.
    if value.is_null() {
        return None;
    }
    let shape = s.shape(w.node);
    let what: String = match (shape, value) {
        (Shape::Free(_), _)
        | (Shape::Struct { .. } | Shape::Map(_), Value::Object(_))
        | (Shape::Slice(_), Value::Array(_))
        | (Shape::Str | Shape::Bytes | Shape::Time(_), Value::String(_))
        | (Shape::Bool, Value::Bool(_))
        | (Shape::Float64, Value::Number(_)) => return None,
        (Shape::Int32, Value::Number(n)) | (Shape::IntOrString, Value::Number(n)) => {
            if fits_int(n, 32) {
                return None;
            }
            format!("number {n}")
        }
        (Shape::Int64, Value::Number(n)) => {
            if fits_int(n, 64) {
                return None;
            }
            format!("number {n}")
        }
        // Quantity's UnmarshalJSON parses numbers and strings alike, and refuses the rest.
        (Shape::Quantity, Value::Number(_) | Value::String(_)) => return None,
        (Shape::Quantity, _) => return Some(QUANTITY_FORMAT.to_string()),
        (Shape::IntOrString, Value::String(_)) => return None,
        (_, v) => json_kind(v).to_string(),
    };
    // Types with their own UnmarshalJSON decode with a nested encoding/json call, whose error
    // carries no struct field.
    let nested = match shape {
        Shape::IntOrString => Some("int32"),
        Shape::Time(_) => Some("string"),
        _ => None,
    };
    if let Some(t) = nested {
        return Some(format!(
            "json: cannot unmarshal {what} into Go value of type {t}"
        ));
    }
    let ty = s.type_name(w.node, 0);
    Some(match w.holder {
        Some(holder) => format!(
            "json: cannot unmarshal {what} into Go struct field {holder}.{} of type {ty}",
            w.fields.join(".")
        ),
        None => format!("json: cannot unmarshal {what} into Go value of type {ty}"),
    })
}

/// The unstructured converter's error for the value at `path` of `doc` converted into the
/// definition `root` (what a strategic merge patch's result meets); None when the converter
/// would take the value.
pub fn converter_error(
    defs: &Map<String, Value>,
    root: &str,
    doc: &Value,
    path: &[Step],
) -> Option<String> {
    let s = Schemas { defs };
    let root_node = root_ref(defs, root)?;
    let w = walk(&s, &root_node, doc, path)?;
    // The Go type of the value as the patch holds it (`reflect.Kind` words).
    let from = match w.value {
        Value::Null => return None,
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    };
    let kind_of = |shape: Shape<'_>| match shape {
        Shape::Str => "string",
        Shape::Int32 => "int32",
        Shape::Int64 => "int64",
        Shape::Float64 => "float64",
        _ => "bool",
    };
    match s.shape(w.node) {
        Shape::Free(_) | Shape::IntOrString | Shape::Quantity | Shape::Time(_) => None,
        Shape::Struct { .. } => {
            (from != "map").then(|| format!("cannot restore struct from: {from}"))
        }
        Shape::Map(_) => (from != "map").then(|| format!("cannot restore map from {from}")),
        Shape::Bytes => (from != "string").then(|| format!("cannot restore slice from {from}")),
        Shape::Slice(_) => (from != "slice").then(|| format!("cannot restore slice from {from}")),
        to @ (Shape::Str | Shape::Int32 | Shape::Int64 | Shape::Float64 | Shape::Bool) => {
            let to = kind_of(to);
            let numeric = |k: &str| k != "string" && k != "bool";
            match (from, to) {
                (a, b) if a == b => None,
                // Integers convert to any number (Go's conversion, overflow and all).
                ("int64", t) if numeric(t) => None,
                ("float64", "float64") => None,
                ("float64", t) if numeric(t) => {
                    let whole = w.value.as_f64().is_some_and(|f| f.fract() == 0.0);
                    (!whole).then(|| format!("cannot convert float64 to {t}"))
                }
                // Go converts integers to strings (as runes), which JSON does not: refused.
                ("int64", "string") => Some("cannot convert int64 to string".to_string()),
                (_, t) => Some(format!("unrecognized type: {t}")),
            }
        }
    }
}

/// The strict decoder's complaints about a JSON body, in the order it meets them:
/// `unknown field "p"` for each path in `unknown` (fields the type does not have; what is under
/// them is skipped) and `duplicate field "p"` for a key given twice in one object. With
/// `top_level_only` (a custom resource, decoded into a `map[string]interface{}`) duplicates are
/// looked for in the top object only. Nothing when the body is not JSON.
pub fn strict_errors(raw: &[u8], unknown: &[String], top_level_only: bool) -> Vec<String> {
    let unknown: HashSet<&str> = unknown.iter().map(String::as_str).collect();
    let mut st = ScanState {
        path: String::new(),
        unknown: &unknown,
        top_level_only,
        depth: 0,
        out: Vec::new(),
        seen: HashSet::new(),
    };
    let mut de = serde_json::Deserializer::from_slice(raw);
    // A body that does not parse was refused before; whatever was found up to there is kept.
    let _ = Scan(&mut st).deserialize(&mut de);
    st.out
}

/// The `Visitor` methods of a scan that only looks into objects and lists: any leaf is accepted
/// and skipped.
macro_rules! skip_leaves {
    () => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    };
}

/// A JSON document as serde_json's `Value` (the last of two equal keys kept), and whether it
/// gives a key twice in one object anywhere, in one parse. (Every write's body goes through
/// this; the duplicates' names and order are worked out by [`strict_errors`] only when there are
/// any.)
pub fn parse_noting_duplicates(raw: &[u8]) -> serde_json::Result<(Value, bool)> {
    let duplicates = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = NotingDuplicates(&duplicates).deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates.get()))
}

/// The `Value` builder of [`parse_noting_duplicates`]: what serde_json's own `Value` visitor
/// does, plus a flag raised when an object's key replaces an earlier one.
struct NotingDuplicates<'f>(&'f std::cell::Cell<bool>);

impl<'de> DeserializeSeed<'de> for NotingDuplicates<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NotingDuplicates<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(NotingDuplicates(self.0))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(NotingDuplicates(self.0))?;
            if object.insert(key, value).is_some() {
                self.0.set(true);
            }
        }
        Ok(Value::Object(object))
    }
}

/// A JSON body as Go's decoder stores it into the definition `root` when it gives a key twice:
/// a struct field given again is decoded into what the first one left (objects merge, list
/// elements are decoded into the earlier ones), a map key given again replaces its value.
/// None when the body does not parse.
pub fn decode_like_go(raw: &[u8], defs: &Map<String, Value>, root: &str) -> Option<Value> {
    let doc: Raw = serde_json::from_slice(raw).ok()?;
    let s = Schemas { defs };
    let root_node = root_ref(defs, root)?;
    Some(fold(&s, Some(&root_node), doc, None, 0))
}

/// JSON with every key kept, in order.
enum Raw {
    Object(Vec<(String, Raw)>),
    Array(Vec<Raw>),
    Leaf(Value),
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Leaf(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element::<Raw>()? {
                    out.push(x);
                }
                Ok(Raw::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Raw>()? {
                    out.push((k, v));
                }
                Ok(Raw::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes `raw` into `into` (what an earlier duplicate left there) as Go does for the type
/// `node` describes (None: `interface{}`, which takes the value as it is).
fn fold(
    s: &Schemas<'_>,
    node: Option<&Value>,
    raw: Raw,
    into: Option<Value>,
    depth: usize,
) -> Value {
    let shape = match node {
        Some(n) if depth < 64 => s.shape(n),
        _ => Shape::Free(None),
    };
    match (raw, shape) {
        // Go clears a pointer, map or slice (most optional fields are pointers); what the
        // schema cannot tell, a plain string keeping its earlier value, is not kept here.
        (Raw::Leaf(Value::Null), _) => Value::Null,
        (Raw::Object(entries), Shape::Struct { props, .. }) => {
            let mut m = match into {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (k, v) in entries {
                let before = m.remove(&k);
                let folded = fold(s, props.get(&k), v, before, depth + 1);
                m.insert(k, folded);
            }
            Value::Object(m)
        }
        (Raw::Object(entries), Shape::Map(elem)) => {
            let mut m = match into {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (k, v) in entries {
                let folded = fold(s, Some(elem), v, None, depth + 1);
                m.insert(k, folded);
            }
            Value::Object(m)
        }
        (Raw::Array(items), Shape::Slice(elem)) => {
            let mut before = match into {
                Some(Value::Array(a)) => a.into_iter(),
                _ => Vec::new().into_iter(),
            };
            Value::Array(
                items
                    .into_iter()
                    .map(|x| fold(s, Some(elem), x, before.next(), depth + 1))
                    .collect(),
            )
        }
        // Anything else is stored as given (or refused later by the typed decode).
        (raw, _) => plain(raw),
    }
}

/// `raw` as a `Value`, a later key replacing an earlier one (`interface{}` decoding).
fn plain(raw: Raw) -> Value {
    match raw {
        Raw::Leaf(v) => v,
        Raw::Array(items) => Value::Array(items.into_iter().map(plain).collect()),
        Raw::Object(entries) => {
            Value::Object(entries.into_iter().map(|(k, v)| (k, plain(v))).collect())
        }
    }
}

struct ScanState<'u> {
    path: String,
    unknown: &'u HashSet<&'u str>,
    top_level_only: bool,
    depth: usize,
    out: Vec<String>,
    /// Strict errors already reported (the decoder reports each once).
    seen: HashSet<String>,
}

impl ScanState<'_> {
    fn report(&mut self, what: &str) {
        let e = format!("{what} field {:?}", self.path);
        if self.out.len() < 100 && self.seen.insert(e.clone()) {
            self.out.push(e);
        }
    }
}

struct Scan<'s, 'u>(&'s mut ScanState<'u>);

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> DeserializeSeed<'de> for Scan<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_, '_> {
    type Value = ();

    skip_leaves!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.0;
        let base = st.path.len();
        let mut i = 0usize;
        loop {
            st.path.truncate(base);
            st.path.push_str(&format!("[{i}]"));
            st.depth += 1;
            let more = seq.next_element_seed(Scan(&mut *st));
            st.depth -= 1;
            if more?.is_none() {
                break;
            }
            i += 1;
        }
        st.path.truncate(base);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.0;
        let base = st.path.len();
        let mut keys: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            st.path.truncate(base);
            if base > 0 {
                st.path.push('.');
            }
            st.path.push_str(&key);
            if st.unknown.contains(st.path.as_str()) {
                st.report("unknown");
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let check = !st.top_level_only || st.depth == 0;
            if check && !keys.insert(key) {
                st.report("duplicate");
            }
            if st.top_level_only {
                map.next_value::<IgnoredAny>()?;
            } else {
                st.depth += 1;
                let r = map.next_value_seed(Scan(&mut *st));
                st.depth -= 1;
                r?;
            }
        }
        st.path.truncate(base);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Map<String, Value> {
        let v = json!({
            "io.k8s.api.core.v1.ConfigMap": {"type": "object", "properties": {
                "data": {"type": "object", "additionalProperties": {"type": "string"}},
                "binaryData": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
                "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "x"},
                "immutable": {"type": "boolean"}}},
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object", "properties": {
                "name": {"type": "string"},
                "creationTimestamp": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"}}},
            "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string", "format": "date-time"},
            "io.k8s.api.apps.v1.Deployment": {"type": "object", "properties": {
                "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}}},
            "io.k8s.api.apps.v1.DeploymentSpec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "format": "int32"},
                "template": {"$ref": "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"}}},
            "io.k8s.api.core.v1.PodTemplateSpec": {"type": "object", "properties": {
                "spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec"}}},
            "io.k8s.api.core.v1.PodSpec": {"type": "object", "properties": {
                "containers": {"type": "array", "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}}}},
            "io.k8s.api.core.v1.Container": {"type": "object", "properties": {
                "args": {"type": "array", "items": {"type": "string"}},
                "ports": {"type": "array", "items": {"$ref": "#/definitions/io.k8s.api.core.v1.ContainerPort"}}}},
            "io.k8s.api.core.v1.ContainerPort": {"type": "object", "properties": {
                "containerPort": {"type": "integer", "format": "int32"},
                "hostPort": {"x-kubernetes-int-or-string": true}}},
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn key(k: &str) -> Step {
        Step::Key(k.into())
    }

    #[test]
    fn type_errors_read_as_encoding_json_writes_them() {
        let d = defs();
        let cm = "io.k8s.api.core.v1.ConfigMap";
        let doc = json!({"data": {"a": 1}, "metadata": "x", "immutable": "yes",
            "binaryData": {"b": 2}});
        let e = |path: &[Step]| unmarshal_error(&d, cm, &doc, path);
        assert_eq!(
            e(&[key("data"), key("a")]).as_deref(),
            Some(
                "json: cannot unmarshal number into Go struct field ConfigMap.data of type string"
            )
        );
        assert_eq!(
            e(&[key("metadata")]).as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field ConfigMap.metadata of type v1.ObjectMeta"
            )
        );
        assert_eq!(
            e(&[key("immutable")]).as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field ConfigMap.immutable of type bool"
            )
        );
        assert_eq!(
            e(&[key("binaryData"), key("b")]).as_deref(),
            Some(
                "json: cannot unmarshal number into Go struct field ConfigMap.binaryData of type []uint8"
            )
        );
        let deploy = "io.k8s.api.apps.v1.Deployment";
        let over = json!({"spec": {"replicas": 10_000_000_000i64}});
        assert_eq!(
            unmarshal_error(&d, deploy, &over, &[key("spec"), key("replicas")]).as_deref(),
            Some(
                "json: cannot unmarshal number 10000000000 into Go struct field DeploymentSpec.spec.replicas of type int32"
            )
        );
        let fine = json!({"spec": {"replicas": 3}});
        assert_eq!(
            unmarshal_error(&d, deploy, &fine, &[key("spec"), key("replicas")]),
            None
        );
        let nested = json!({"spec": {"template": {"spec": {"containers": [
            {"args": [1], "ports": [{"containerPort": "80", "hostPort": true}]}]}}}});
        let containers = [key("spec"), key("template"), key("spec"), key("containers")];
        let mut args = containers.to_vec();
        args.extend([Step::Index(0), key("args"), Step::Index(0)]);
        assert_eq!(
            unmarshal_error(&d, deploy, &nested, &args).as_deref(),
            Some(
                "json: cannot unmarshal number into Go struct field Container.spec.template.spec.containers.args of type string"
            )
        );
        let mut port = containers.to_vec();
        port.extend([
            Step::Index(0),
            key("ports"),
            Step::Index(0),
            key("containerPort"),
        ]);
        assert_eq!(
            unmarshal_error(&d, deploy, &nested, &port).as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
            )
        );
        if let Some(Step::Key(k)) = port.last_mut() {
            *k = "hostPort".into();
        }
        assert_eq!(
            unmarshal_error(&d, deploy, &nested, &port).as_deref(),
            Some("json: cannot unmarshal bool into Go value of type int32")
        );
        let string_containers = json!({"spec": {"template": {"spec": {"containers": "c"}}}});
        assert_eq!(
            unmarshal_error(&d, deploy, &string_containers, &containers).as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container"
            )
        );
    }

    #[test]
    fn converter_errors_read_as_the_unstructured_converter_writes_them() {
        let d = defs();
        let cm = "io.k8s.api.core.v1.ConfigMap";
        let doc = json!({"data": {"a": 5, "b": true}, "metadata": "x", "immutable": 1});
        let e = |path: &[Step]| converter_error(&d, cm, &doc, path);
        assert_eq!(
            e(&[key("data"), key("a")]).as_deref(),
            Some("cannot convert int64 to string")
        );
        assert_eq!(
            e(&[key("data"), key("b")]).as_deref(),
            Some("unrecognized type: string")
        );
        assert_eq!(
            e(&[key("metadata")]).as_deref(),
            Some("cannot restore struct from: string")
        );
        assert_eq!(
            e(&[key("immutable")]).as_deref(),
            Some("unrecognized type: bool")
        );
    }

    #[test]
    fn duplicates_are_stored_as_go_decodes_them() {
        let d = defs();
        let raw = br#"{"data":{"a":"1","a":"x"},"metadata":{"name":"n"},"immutable":true,"data":{"b":"2"},"metadata":{"creationTimestamp":null},"immutable":null}"#;
        assert_eq!(
            decode_like_go(raw, &d, "io.k8s.api.core.v1.ConfigMap"),
            Some(
                json!({"data": {"a": "x", "b": "2"}, "metadata": {"name": "n", "creationTimestamp": null},
                "immutable": null})
            )
        );
        let raw = br#"{"spec":{"template":{"spec":{"containers":[{"args":["a"],"ports":[{"containerPort":1}]}]}}},
            "spec":{"template":{"spec":{"containers":[{"ports":[{"hostPort":2}]}]}}}}"#;
        assert_eq!(
            decode_like_go(raw, &d, "io.k8s.api.apps.v1.Deployment"),
            Some(json!({"spec": {"template": {"spec": {"containers": [
                {"args": ["a"], "ports": [{"containerPort": 1, "hostPort": 2}]}]}}}}))
        );
    }

    #[test]
    fn strict_errors_come_in_the_order_of_the_body() {
        let raw = br#"{"kind":"ConfigMap","data":{"a":"1","a":"2"},"bogus":{"x":1,"x":2},"data":{"b":"2"},"list":[{"k":1,"k":2}]}"#;
        assert_eq!(
            strict_errors(raw, &["bogus".to_string()], false),
            vec![
                "duplicate field \"data.a\"".to_string(),
                "unknown field \"bogus\"".to_string(),
                "duplicate field \"data\"".to_string(),
                "duplicate field \"list[0].k\"".to_string(),
            ]
        );
        assert_eq!(
            strict_errors(raw, &[], true),
            vec!["duplicate field \"data\"".to_string()]
        );
        assert!(strict_errors(b"{not json", &[], false).is_empty());
        assert!(dup(raw));
        assert!(!dup(br#"{"a":{"b":1},"c":[{"b":2}]}"#));
        assert!(strict_errors(br#"{"a":{"b":1}}"#, &[], false).is_empty());
    }

    /// Whether the body gives a key twice (false when it does not parse).
    fn dup(raw: &[u8]) -> bool {
        parse_noting_duplicates(raw).is_ok_and(|(_, d)| d)
    }

    #[test]
    fn the_parse_is_serde_jsons_and_keeps_the_last_of_two_keys() {
        for raw in [
            &br#"{"a":[1,-2,3.5,1e300,18446744073709551615,-9223372036854775808],"b":null}"#[..],
            br#"{"s":"\u00e9\n\"x\"","t":true,"f":false,"o":{},"l":[],"n":[[{}]]}"#,
            br#"  {"k":1,"k":{"z":2}}  "#,
            b"[]",
            b"\"top\"",
        ] {
            let want: Value = serde_json::from_slice(raw).unwrap();
            let (got, _) = parse_noting_duplicates(raw).unwrap();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&want).unwrap()
            );
        }
        for bad in [&b"{not json"[..], b"{\"a\":1} x", b"", b"[1,]"] {
            assert!(parse_noting_duplicates(bad).is_err());
            assert!(serde_json::from_slice::<Value>(bad).is_err());
        }
    }

    #[test]
    fn duplicates_are_found_in_large_objects_and_deep_lists() {
        // An object past the list scan's 32 keys: the duplicate among the first and the last.
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let unique = format!("{{\"data\":{{{}}}}}", keys.join(","));
        assert!(!dup(unique.as_bytes()));
        let twice = format!("{{\"data\":{{{},\"k3\":0}}}}", keys.join(","));
        assert!(dup(twice.as_bytes()));
        let early = format!("{{\"data\":{{\"k0\":1,\"k0\":2,{}}}}}", keys.join(","));
        assert!(dup(early.as_bytes()));
        // Inside lists of lists, and the same key in sibling objects is not a duplicate.
        assert!(dup(br#"{"a":[[{"x":1,"y":2,"x":3}]]}"#));
        assert!(!dup(br#"{"a":[[{"x":1},{"x":2}]],"x":0}"#));
        // Escaped keys compare by their decoded text.
        assert!(dup(br#"{"a\u0062":1,"ab":2}"#));
        assert!(!dup(b"{not json"));
    }
}
