//! Label selectors as `?labelSelector=` carries them: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
//! `a in (x,y)`, `a notin (x,y)`, comma-separated (all must hold).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Req>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {values:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl Selector {
    /// No requirement: everything matches.
    pub fn is_empty(&self) -> bool {
        self == &Selector::default()
    }

    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(v)?)
            } else if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(p.into())
            };
            let key = match &req {
                Req::Eq(k, _)
                | Req::NotEq(k, _)
                | Req::Exists(k)
                | Req::NotExists(k)
                | Req::In(k, _)
                | Req::NotIn(k, _) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("unable to parse requirement: {p:?}"));
            }
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators() {
        let l: BTreeMap<String, String> = [
            ("app".to_string(), "x".to_string()),
            ("tier".into(), "db".into()),
        ]
        .into();
        let yes = |s: &str| Selector::parse(s).unwrap().matches(&l);
        assert!(yes("app=x"));
        assert!(yes("app==x,tier"));
        assert!(!yes("app!=x"));
        assert!(yes("!missing"));
        assert!(yes("tier in (db,web)"));
        assert!(!yes("tier notin (db)"));
        assert!(yes("missing notin (a,b)"));
        assert!(Selector::parse("a b").is_err());
        assert!(Selector::parse("x in a,b").is_err());
    }
}

/// A field selector (`?fieldSelector=`): `path=value`, `path==value`, `path!=value`, comma-separated,
/// over the fields a type supports (`metadata.name`, `involvedObject.uid`, `type`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `s`, accepting only the fields in `supported`; the error reads as the real
    /// apiserver's ("field label not supported: x").
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// No requirement: everything matches.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.reqs.iter().all(|(field, eq, want)| {
            let v = field.split('.').fold(obj, |v, part| &v[part]);
            // Field values compare as text: booleans and numbers as Go formats them, an absent
            // field as "" (and `spec.hostNetwork` absent as "false").
            let got = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null
                    if field == "spec.hostNetwork" || field == "spec.unschedulable" =>
                {
                    "false".into()
                }
                _ => String::new(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let obj = serde_json::json!({"metadata": {"name": "a"}, "involvedObject": {"uid": "u1"}, "type": "Normal"});
        let ok = |s: &str| {
            FieldSelector::parse(s, &["metadata.name", "involvedObject.uid", "type"])
                .unwrap()
                .matches(&obj)
        };
        assert!(ok("metadata.name=a,involvedObject.uid==u1"));
        assert!(!ok("type!=Normal"));
        assert!(ok(""));
        assert_eq!(
            FieldSelector::parse("spec.x=1", &["metadata.name"]),
            Err("field label not supported: spec.x".into())
        );
    }
}

/// A LabelSelector object (`matchLabels`, `matchExpressions`) as the text form
/// `app=web,tier in (a,b),!legacy` — kubectl's SELECTOR column and a Scale's `status.selector`.
pub fn selector_text(sel: &serde_json::Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
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
