//! [`SameAs`]: whether a value serializes (through `serde_json::to_value`) to exactly a given
//! JSON `Value`, checked while it serializes, without building anything.
//!
//! The typed decode turns a body into its k8s-openapi type and back into JSON, which drops unknown
//! fields and nulls and rewrites times and base64 the way Go writes them. For most bodies that
//! JSON is the body itself: this check says so at a fraction of the cost of building it. It
//! follows serde_json's own `Value` serializer rule by rule (numbers through `Value::from`, a
//! struct or map as an object with exactly the keys given, `None` and unit as null), and says
//! "differs" for anything it does not model, so the caller falls back to building the JSON.

use std::fmt;

use serde::ser::{
    Error, Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeTuple,
    SerializeTupleStruct, Serializer,
};
use serde_json::{Map, Number, Value};

/// A serializer that succeeds only if what it is given serializes to exactly its `Value`.
pub struct SameAs<'a>(pub &'a Value);

/// The value does not serialize to the expected JSON (or uses something not modelled here).
#[derive(Debug)]
pub struct Differs;

impl fmt::Display for Differs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("serializes to other JSON")
    }
}

impl std::error::Error for Differs {}

impl Error for Differs {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Differs
    }
}

fn check(same: bool) -> Result<(), Differs> {
    if same { Ok(()) } else { Err(Differs) }
}

/// Whether `expected` is the JSON serde_json makes of a number (`None`: not finite, null).
fn same_number(expected: &Value, n: Option<Number>) -> Result<(), Differs> {
    check(match (expected, n) {
        (Value::Number(e), Some(n)) => *e == n,
        (Value::Null, None) => true,
        _ => false,
    })
}

/// Smaller integers are checked as the 64-bit ones serde_json widens them to.
macro_rules! widen {
    ($($method:ident($ty:ty)),* => $wide:ident($wide_ty:ty)) => {$(
        fn $method(self, v: $ty) -> Result<(), Differs> {
            self.$wide(<$wide_ty>::from(v))
        }
    )*};
}

impl<'a> Serializer for SameAs<'a> {
    type Ok = ();
    type Error = Differs;
    type SerializeSeq = Items<'a>;
    type SerializeTuple = Items<'a>;
    type SerializeTupleStruct = Items<'a>;
    type SerializeTupleVariant = Impossible<(), Differs>;
    type SerializeMap = Fields<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Impossible<(), Differs>;

    fn serialize_bool(self, v: bool) -> Result<(), Differs> {
        check(matches!(self.0, Value::Bool(b) if *b == v))
    }
    widen!(serialize_i8(i8), serialize_i16(i16), serialize_i32(i32) => serialize_i64(i64));
    fn serialize_i64(self, v: i64) -> Result<(), Differs> {
        same_number(self.0, Some(Number::from(v)))
    }
    widen!(serialize_u8(u8), serialize_u16(u16), serialize_u32(u32) => serialize_u64(u64));
    fn serialize_u64(self, v: u64) -> Result<(), Differs> {
        same_number(self.0, Some(Number::from(v)))
    }
    fn serialize_f32(self, v: f32) -> Result<(), Differs> {
        // serde_json keeps an f32 as the f64 it widens to.
        same_number(self.0, Number::from_f64(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Differs> {
        same_number(self.0, Number::from_f64(v))
    }
    fn serialize_char(self, v: char) -> Result<(), Differs> {
        let mut buf = [0; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }
    fn serialize_str(self, v: &str) -> Result<(), Differs> {
        check(matches!(self.0, Value::String(s) if s == v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Differs> {
        // serde_json writes bytes as an array of numbers.
        check(matches!(self.0, Value::Array(a)
            if a.len() == v.len()
                && a.iter().zip(v).all(|(x, b)| same_number(x, Some(Number::from(*b))).is_ok())))
    }
    fn serialize_none(self) -> Result<(), Differs> {
        check(self.0.is_null())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Differs> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Differs> {
        check(self.0.is_null())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Differs> {
        check(self.0.is_null())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Differs> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Differs> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Differs> {
        // serde_json: `{variant: value}`.
        match self.0 {
            Value::Object(m) if m.len() == 1 => match m.get(variant) {
                Some(inner) => value.serialize(SameAs(inner)),
                None => Err(Differs),
            },
            _ => Err(Differs),
        }
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items<'a>, Differs> {
        match self.0 {
            Value::Array(a) => Ok(Items(a.iter())),
            _ => Err(Differs),
        }
    }
    fn serialize_tuple(self, len: usize) -> Result<Items<'a>, Differs> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Items<'a>, Differs> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Differs> {
        Err(Differs)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a>, Differs> {
        match self.0 {
            Value::Object(m) => Ok(Fields {
                expected: m,
                matched: 0,
                key: None,
            }),
            _ => Err(Differs),
        }
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Fields<'a>, Differs> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Differs> {
        Err(Differs)
    }
}

/// The elements of an expected array, matched one by one.
pub struct Items<'a>(std::slice::Iter<'a, Value>);

impl Items<'_> {
    fn next<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Differs> {
        match self.0.next() {
            Some(expected) => value.serialize(SameAs(expected)),
            None => Err(Differs),
        }
    }

    fn done(mut self) -> Result<(), Differs> {
        check(self.0.next().is_none())
    }
}

/// Sequences, tuples and tuple structs are all arrays to serde_json.
macro_rules! items {
    ($($trait:ident::$method:ident),*) => {$(
        impl $trait for Items<'_> {
            type Ok = ();
            type Error = Differs;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Differs> {
                self.next(value)
            }
            fn end(self) -> Result<(), Differs> {
                self.done()
            }
        }
    )*};
}

items!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

/// The members of an expected object: each key given must be there with the same value, and
/// every member must be given (once: the types serialized here never repeat a key).
pub struct Fields<'a> {
    expected: &'a Map<String, Value>,
    matched: usize,
    /// The map key just serialized, awaiting its value.
    key: Option<String>,
}

impl Fields<'_> {
    fn member<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Differs> {
        let expected = self.expected.get(key).ok_or(Differs)?;
        value.serialize(SameAs(expected))?;
        self.matched += 1;
        Ok(())
    }

    fn done(self) -> Result<(), Differs> {
        check(self.matched == self.expected.len())
    }
}

impl SerializeMap for Fields<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Differs> {
        // The types serialized here have string keys only; any other key "differs".
        match key.serialize(serde_json::value::Serializer) {
            Ok(Value::String(key)) => {
                self.key = Some(key);
                Ok(())
            }
            _ => Err(Differs),
        }
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Differs> {
        let key = self.key.take().ok_or(Differs)?;
        self.member(&key, value)
    }
    fn end(self) -> Result<(), Differs> {
        self.done()
    }
}

impl SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Differs> {
        self.member(key, value)
    }
    fn end(self) -> Result<(), Differs> {
        self.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use serde::Deserialize;
    use serde_json::json;

    /// The check agrees with building the JSON: same exactly when `to_value` gives the input.
    /// None when the input does not decode as `T`.
    fn agrees<T: for<'de> Deserialize<'de> + Serialize>(input: Value) -> Option<bool> {
        let typed = T::deserialize(&input).ok()?;
        let same = typed.serialize(SameAs(&input)).is_ok();
        let built = serde_json::to_value(&typed).expect("serializes");
        assert_eq!(same, built == input, "{input}");
        Some(same)
    }

    #[test]
    fn same_exactly_when_the_built_json_is_the_input() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"},
                "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80,
                "protocol": "TCP"}], "resources": {"limits": {"cpu": "1"}}}],
                "terminationGracePeriodSeconds": 30, "restartPolicy": "Always"},
            "status": {"phase": "Pending"}});
        assert_eq!(agrees::<Pod>(pod.clone()), Some(true));
        // (where, what, same): unknown fields at the top and deep down, a null the type drops,
        // a time Go writes without its fraction, an empty list and map (kept), a value of
        // another type in a free-form map.
        let variants = [
            ("/colour", json!("red"), false),
            ("/spec/containers/0/colour", json!("red"), false),
            ("/spec/nodeName", Value::Null, false),
            (
                "/metadata/creationTimestamp",
                json!("2026-01-01T00:00:00.5Z"),
                false,
            ),
            ("/spec/volumes", json!([]), true),
            ("/metadata/annotations", json!({}), true),
            ("/spec/nodeSelector", json!({"a": "b"}), true),
        ];
        for (pointer, value, same) in variants {
            let mut v = pod.clone();
            let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
            let Some(Value::Object(m)) = v.pointer_mut(parent) else {
                panic!("{parent}")
            };
            m.insert(key.to_string(), value);
            assert_eq!(agrees::<Pod>(v), Some(same), "{pointer}");
        }
        // Base64 the way Go writes it, and otherwise.
        let secret = |data: &str| {
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"k": data}})
        };
        assert_eq!(agrees::<Secret>(secret("aGk=")), Some(true));
        agrees::<Secret>(secret("aGk"));
    }

    #[test]
    fn missing_and_extra_members_and_items_differ() {
        let v = json!({"a": [1, 2], "b": "x"});
        assert!(v.serialize(SameAs(&v)).is_ok());
        for other in [
            json!({"a": [1, 2]}),
            json!({"a": [1, 2], "b": "x", "c": null}),
            json!({"a": [1], "b": "x"}),
            json!({"a": [1, 2, 3], "b": "x"}),
            json!({"a": [1, 2.0], "b": "x"}),
            json!({"a": [1, -2], "b": "x"}),
            json!(["a", "b"]),
        ] {
            assert!(v.serialize(SameAs(&other)).is_err(), "{other}");
        }
    }
}
