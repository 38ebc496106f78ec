//! SCIM PATCH (RFC 7644 section 3.5.2) applied to a resource's JSON
//! representation: `add`, `replace` and `remove`, with a path (an
//! attribute, `name.givenName`, a schema URN prefix, a value filter such as
//! `emails[type eq "work"].value` or `members[value eq "..."]`) or without
//! one (a value object, Okta's and Entra's `{"op":"replace","value":
//! {"active":false}}`, dotted keys included). Operation names and attribute
//! names are case-insensitive. The caller writes the result as a PUT would.

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use crate::domain::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug)]
pub struct Op {
    pub kind: Kind,
    pub path: Option<PatchPath>,
    /// The path is a whole extension object (its schema URN).
    pub extension: Option<String>,
    pub value: Option<Value>,
}

/// Whether `s` names a whole schema extension (`urn:...:extension:...`),
/// which the filter grammar would read as an attribute `User` of a URN.
fn extension_urn(s: &str) -> Option<String> {
    let s = s.trim();
    s.eq_ignore_ascii_case(crate::service::scim::ENTERPRISE_SCHEMA)
        .then(|| crate::service::scim::ENTERPRISE_SCHEMA.to_string())
}

/// An extension object as a client sent it, without the `schemas` key some
/// clients put in it.
fn extension_value(v: Value) -> Value {
    match v {
        Value::Object(mut o) => {
            if let Some(k) = key_ci(&o, "schemas") {
                o.remove(&k);
            }
            Value::Object(o)
        }
        other => other,
    }
}

/// The most operations one PATCH may carry.
pub const MAX_OPERATIONS: usize = 1000;

fn invalid_syntax(detail: impl Into<String>) -> Error {
    Error::invalid("invalidSyntax", detail)
}

fn invalid_path(detail: impl Into<String>) -> Error {
    Error::invalid("invalidPath", detail)
}

fn no_target(detail: impl Into<String>) -> Error {
    Error::invalid("noTarget", detail)
}

/// The operations of a PatchOp body.
pub fn operations(body: &Value) -> Result<Vec<Op>> {
    let o = body.as_object().ok_or_else(|| invalid_syntax("the body must be a PatchOp object"))?;
    let schemas = o.get("schemas").and_then(Value::as_array);
    if !schemas.is_some_and(|s| s.iter().any(|x| x.as_str() == Some(crate::service::scim::PATCH_SCHEMA))) {
        return Err(invalid_syntax(format!("schemas must list {}", crate::service::scim::PATCH_SCHEMA)));
    }
    let ops = o
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .and_then(|(_, v)| v.as_array())
        .ok_or_else(|| invalid_syntax("Operations must be a list"))?;
    if ops.is_empty() || ops.len() > MAX_OPERATIONS {
        return Err(invalid_syntax(format!("a PATCH has 1 to {MAX_OPERATIONS} operations")));
    }
    ops.iter()
        .map(|op| {
            let op = op.as_object().ok_or_else(|| invalid_syntax("each operation is an object"))?;
            let field = |name: &str| op.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let kind = match field("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => Kind::Add,
                Some("replace") => Kind::Replace,
                Some("remove") => Kind::Remove,
                _ => return Err(invalid_syntax("op must be add, replace or remove")),
            };
            let (path, extension) = match field("path") {
                None | Some(Value::Null) => (None, None),
                Some(Value::String(p)) if p.trim().is_empty() => (None, None),
                Some(Value::String(p)) => match extension_urn(p) {
                    Some(urn) => (None, Some(urn)),
                    None => (
                        Some(p.trim().parse::<PatchPath>().map_err(|e| invalid_path(format!("path {p:?}: {e}")))?),
                        None,
                    ),
                },
                Some(_) => return Err(invalid_path("path must be a string")),
            };
            let value = field("value").cloned();
            if kind != Kind::Remove && value.is_none() {
                return Err(invalid_syntax("add and replace need a value"));
            }
            if kind == Kind::Remove && path.is_none() && extension.is_none() {
                return Err(no_target("remove needs a path"));
            }
            Ok(Op { kind, path, extension, value })
        })
        .collect()
}

/// The key of `o` that is `name` without regard to case, if any.
fn key_ci(o: &Map<String, Value>, name: &str) -> Option<String> {
    o.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// The object an attribute path lives in: the resource, or its extension
/// object when the path has a schema URN other than the resource's core one.
fn container<'a>(repr: &'a mut Value, uri: Option<&str>) -> Result<&'a mut Map<String, Value>> {
    let root = repr.as_object_mut().ok_or_else(|| invalid_path("the resource is not an object"))?;
    let Some(uri) = uri else { return Ok(root) };
    if uri.starts_with("urn:ietf:params:scim:schemas:core:2.0:") {
        return Ok(root);
    }
    let key = key_ci(root, uri).unwrap_or_else(|| uri.to_string());
    let ext = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !ext.is_object() {
        *ext = Value::Object(Map::new());
    }
    ext.as_object_mut().ok_or_else(|| invalid_path("the extension is not an object"))
}

/// Adds `value` at `name` of `o`: a list is extended (without repeating
/// equal values), an object merged, anything else set.
fn add_at(o: &mut Map<String, Value>, name: &str, value: Value) {
    let key = key_ci(o, name).unwrap_or_else(|| name.to_string());
    match (o.get_mut(&key), value) {
        (Some(Value::Array(list)), Value::Array(new)) => {
            for v in new {
                if !list.contains(&v) {
                    list.push(v);
                }
            }
        }
        (Some(Value::Array(list)), v) => {
            if !list.contains(&v) {
                list.push(v);
            }
        }
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                add_at(old, &k, v);
            }
        }
        (_, v) => {
            o.insert(key, v);
        }
    }
}

fn replace_at(o: &mut Map<String, Value>, name: &str, value: Value) {
    let key = key_ci(o, name).unwrap_or_else(|| name.to_string());
    match (o.get_mut(&key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                replace_at(old, &k, v);
            }
        }
        (_, v) => {
            o.insert(key, v);
        }
    }
}

fn set(o: &mut Map<String, Value>, path: &AttrPath, kind: Kind, value: Value) {
    match &path.sub_attr {
        None => match kind {
            Kind::Add => add_at(o, &path.name, value),
            _ => replace_at(o, &path.name, value),
        },
        Some(sub) => {
            let key = key_ci(o, &path.name).unwrap_or_else(|| path.name.clone());
            let inner = o.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Some(inner) = inner.as_object_mut() {
                match kind {
                    Kind::Add => add_at(inner, sub, value),
                    _ => replace_at(inner, sub, value),
                }
            }
        }
    }
}

/// Applies one operation to `repr`.
pub fn apply(repr: &mut Value, op: &Op) -> Result<()> {
    let value = op.value.clone().unwrap_or(Value::Null);
    if let Some(urn) = &op.extension {
        let root = repr.as_object_mut().ok_or_else(|| invalid_path("the resource is not an object"))?;
        let key = key_ci(root, urn).unwrap_or_else(|| urn.clone());
        match op.kind {
            Kind::Remove => {
                root.remove(&key);
            }
            Kind::Replace => {
                root.insert(key, extension_value(value));
            }
            Kind::Add => add_at(root, &key, extension_value(value)),
        }
        return Ok(());
    }
    match &op.path {
        None => {
            let Value::Object(fields) = value else {
                return Err(invalid_syntax("an operation without a path needs an object value"));
            };
            for (k, v) in fields {
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                if let Some(urn) = extension_urn(&k) {
                    // The whole extension object, merged.
                    let target = container(repr, Some(&urn))?;
                    if let Value::Object(ext) = extension_value(v) {
                        for (ek, ev) in ext {
                            set(target, &AttrPath::with_name(ek), op.kind, ev);
                        }
                    }
                    continue;
                }
                // Entra's `{"name.givenName": "..."}` and URN-prefixed keys.
                let path = k.parse::<PatchPath>().map_err(|e| invalid_path(format!("{k:?}: {e}")))?;
                let PatchPath::Attr(attr) = path else {
                    return Err(invalid_path(format!("{k:?} is not an attribute")));
                };
                let target = container(repr, attr.uri.as_deref())?;
                set(target, &attr, op.kind, v);
            }
            Ok(())
        }
        Some(PatchPath::Attr(attr)) => {
            let target = container(repr, attr.uri.as_deref())?;
            if op.kind == Kind::Remove {
                match &attr.sub_attr {
                    None => {
                        if let Some(k) = key_ci(target, &attr.name) {
                            target.remove(&k);
                        }
                    }
                    Some(sub) => {
                        if let Some(Value::Object(inner)) = key_ci(target, &attr.name).and_then(|k| target.get_mut(&k))
                        {
                            if let Some(k) = key_ci(inner, sub) {
                                inner.remove(&k);
                            }
                        }
                    }
                }
                return Ok(());
            }
            set(target, attr, op.kind, value);
            Ok(())
        }
        Some(PatchPath::Value(vp)) => {
            let target = container(repr, vp.attr.uri.as_deref())?;
            let key = key_ci(target, &vp.attr.name);
            let list = key.as_ref().and_then(|k| target.get_mut(k)).and_then(Value::as_array_mut);
            let Some(list) = list else {
                return match op.kind {
                    Kind::Remove => Ok(()),
                    _ => Err(no_target(format!("{} has no values to match", vp.attr))),
                };
            };
            let matched: Vec<usize> =
                list.iter().enumerate().filter(|(_, e)| matches(e, &vp.filter)).map(|(i, _)| i).collect();
            if matched.is_empty() && op.kind == Kind::Replace {
                return Err(no_target(format!("no value of {} matches the filter", vp.attr)));
            }
            match (op.kind, &vp.sub_attr) {
                (Kind::Remove, None) => {
                    for i in matched.into_iter().rev() {
                        list.remove(i);
                    }
                }
                (Kind::Remove, Some(sub)) => {
                    for i in matched {
                        if let Some(o) = list[i].as_object_mut() {
                            if let Some(k) = key_ci(o, sub) {
                                o.remove(&k);
                            }
                        }
                    }
                }
                (_, Some(sub)) => {
                    for i in matched {
                        if let Some(o) = list[i].as_object_mut() {
                            replace_at(o, sub, value.clone());
                        }
                    }
                }
                (_, None) => {
                    for i in matched {
                        match (&mut list[i], &value) {
                            (Value::Object(o), Value::Object(new)) => {
                                for (k, v) in new {
                                    replace_at(o, k, v.clone());
                                }
                            }
                            (slot, v) => *slot = v.clone(),
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// Whether one value of a multi-valued attribute matches a value filter.
fn matches(element: &Value, f: &ValFilter) -> bool {
    match f {
        ValFilter::Attr(e) => attr_matches(element, e),
        ValFilter::Not(inner) => !matches(element, inner),
        ValFilter::And(all) => all.iter().all(|f| matches(element, f)),
        ValFilter::Or(any) => any.iter().any(|f| matches(element, f)),
    }
}

fn attr_matches(element: &Value, e: &AttrExp) -> bool {
    let field = |path: &AttrPath| -> Option<Value> {
        let o = element.as_object()?;
        let v = o.iter().find(|(k, _)| k.eq_ignore_ascii_case(&path.name)).map(|(_, v)| v.clone())?;
        match &path.sub_attr {
            None => Some(v),
            Some(sub) => v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub)).map(|(_, v)| v.clone()),
        }
    };
    match e {
        AttrExp::Present(path) => field(path).is_some_and(|v| !v.is_null() && v != Value::String(String::new())),
        AttrExp::Comparison(path, op, expected) => {
            let Some(actual) = field(path) else { return matches!((op, expected), (CompareOp::Eq, CompValue::Null)) };
            compare(&actual, op, expected)
        }
    }
}

fn compare(actual: &Value, op: &CompareOp, expected: &CompValue) -> bool {
    match (actual, expected) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = (a.to_lowercase(), b.to_lowercase());
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
            }
        }
        (Value::Bool(a), CompValue::True | CompValue::False) => {
            let b = matches!(expected, CompValue::True);
            match op {
                CompareOp::Eq => *a == b,
                CompareOp::Ne => *a != b,
                _ => false,
            }
        }
        (Value::Number(a), CompValue::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                _ => false,
            }
        }
        (Value::Null, CompValue::Null) => matches!(op, CompareOp::Eq),
        _ => matches!(op, CompareOp::Ne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(repr: &mut Value, ops: Value) -> Result<()> {
        let body = json!({"schemas": [crate::service::scim::PATCH_SCHEMA], "Operations": ops});
        for op in operations(&body)? {
            apply(repr, &op)?;
        }
        Ok(())
    }

    #[test]
    fn paths_filters_and_the_directories_idioms() {
        let mut u = json!({"userName": "a", "name": {"givenName": "A"}, "active": true,
            "emails": [{"value": "a@x.org", "type": "work", "primary": true}, {"value": "h@x.org", "type": "home"}]});
        // Entra: capitalised op, string boolean, dotted key without a path.
        patch(&mut u, json!([{"op": "Replace", "value": {"active": "False", "name.familyName": "B"}}])).unwrap();
        assert_eq!(u["active"], "False");
        assert_eq!(u["name"]["familyName"], "B");
        assert_eq!(u["name"]["givenName"], "A");
        patch(&mut u, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x.org"}]))
            .unwrap();
        assert_eq!(u["emails"][0]["value"], "w@x.org");
        patch(&mut u, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}])).unwrap();
        assert_eq!(u["emails"].as_array().unwrap().len(), 1);
        let e = patch(&mut u, json!([{"op": "replace", "path": "emails[type eq \"other\"].value", "value": "z"}]));
        assert_eq!(e.unwrap_err().code(), "noTarget");
        // The enterprise extension by URN path, and whole (a `schemas` key in the value is dropped).
        let urn = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        patch(&mut u, json!([{"op": "add", "path": format!("{urn}:department"), "value": "Imaging"}])).unwrap();
        assert_eq!(u[urn]["department"], "Imaging");
        patch(&mut u, json!([{"op": "replace", "path": urn, "value": {"schemas": [urn], "division": "D"}}])).unwrap();
        assert_eq!(u[urn], json!({"division": "D"}));
        patch(&mut u, json!([{"op": "remove", "path": urn}])).unwrap();
        assert!(u.get(urn).is_none());
        patch(&mut u, json!([{"op": "remove", "path": format!("{urn}:division")}])).unwrap();
        // Members: add two, remove one by a filtered path (Entra), then Okta's replace-all.
        let mut g = json!({"displayName": "g", "members": []});
        patch(&mut g, json!([{"op": "add", "path": "members", "value": [{"value": "1"}, {"value": "2"}]}])).unwrap();
        patch(&mut g, json!([{"op": "remove", "path": "members[value eq \"1\"]"}])).unwrap();
        assert_eq!(g["members"], json!([{"value": "2"}]));
        patch(&mut g, json!([{"op": "replace", "path": "members", "value": [{"value": "3"}]}])).unwrap();
        assert_eq!(g["members"], json!([{"value": "3"}]));
        // Bad input is a SCIM error, never a panic.
        assert_eq!(patch(&mut g, json!([{"op": "move", "path": "x"}])).unwrap_err().code(), "invalidSyntax");
        assert_eq!(patch(&mut g, json!([{"op": "remove"}])).unwrap_err().code(), "noTarget");
        assert_eq!(
            patch(&mut g, json!([{"op": "add", "path": "members[", "value": 1}])).unwrap_err().code(),
            "invalidPath"
        );
    }
}
