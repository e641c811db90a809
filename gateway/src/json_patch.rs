//! RFC 6902 JSON Patch (add, remove, replace, move, copy, test) over RFC 6901 JSON Pointers,
//! applied one operation at a time so that an error names the operation that failed (as
//! Ironic does). Pure functions over `serde_json::Value`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
    Move { from: String, path: String },
    Copy { from: String, path: String },
    Test { path: String, value: Value },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Add { path, .. }
            | Op::Remove { path }
            | Op::Replace { path, .. }
            | Op::Move { path, .. }
            | Op::Copy { path, .. }
            | Op::Test { path, .. } => path,
        }
    }

    pub fn from(&self) -> Option<&str> {
        match self {
            Op::Move { from, .. } | Op::Copy { from, .. } => Some(from),
            _ => None,
        }
    }

    /// The value the operation writes at its path (none for remove, move and test).
    pub fn written_value(&self) -> Option<&Value> {
        match self {
            Op::Add { value, .. } | Op::Replace { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Replace { .. } => "replace",
            Op::Move { .. } => "move",
            Op::Copy { .. } => "copy",
            Op::Test { .. } => "test",
        }
    }
}

/// One operation with the JSON it came from (for error messages).
#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: Op,
    pub raw: Value,
}

/// Parses a patch document; the error names what is wrong.
pub fn parse(body: &Value) -> Result<Vec<PatchOp>, String> {
    let items = body.as_array().ok_or_else(|| {
        format!(
            "a JSON Patch must be a list of operations, not {}",
            kind(body)
        )
    })?;
    if items.is_empty() {
        return Err("the JSON Patch is empty".into());
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("operation {i} is {}, not an object", kind(item)))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "op" | "path" | "value" | "from") {
                return Err(format!(
                    "Additional properties are not allowed ('{key}' was unexpected) in operation {i}"
                ));
            }
        }
        let text = |field: &str| -> Result<String, String> {
            match obj.get(field) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!(
                    "'{field}' of operation {i} must be a string, not {}",
                    kind(other)
                )),
                None => Err(format!("'{field}' is a required property of operation {i}")),
            }
        };
        let value = || {
            obj.get("value")
                .cloned()
                .ok_or_else(|| format!("'value' is a required property of operation {i}"))
        };
        let op_name = text("op")?;
        let path = text("path")?;
        check_pointer(&path).map_err(|e| format!("'path' of operation {i}: {e}"))?;
        let op = match op_name.as_str() {
            "add" => Op::Add {
                path,
                value: value()?,
            },
            "remove" => Op::Remove { path },
            "replace" => Op::Replace {
                path,
                value: value()?,
            },
            "test" => Op::Test {
                path,
                value: value()?,
            },
            "move" | "copy" => {
                let from = text("from")?;
                check_pointer(&from).map_err(|e| format!("'from' of operation {i}: {e}"))?;
                if op_name == "move" {
                    Op::Move { from, path }
                } else {
                    Op::Copy { from, path }
                }
            }
            other => {
                return Err(format!(
                    "'{other}' is not one of ['add', 'remove', 'replace', 'move', 'copy', 'test'] in operation {i}"
                ))
            }
        };
        out.push(PatchOp {
            op,
            raw: item.clone(),
        });
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not a JSON pointer (it must start with '/')"
        ));
    }
    tokens(p).map(|_| ())
}

/// The reference tokens of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`).
pub fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("{pointer:?} is not a JSON pointer"))?;
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(format!("invalid escape in JSON pointer {pointer:?}")),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// The first token of a pointer (the top-level field a patch operation touches).
pub fn top_field(pointer: &str) -> Option<String> {
    tokens(pointer).ok()?.into_iter().next()
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let idx: usize = if valid {
        token
            .parse()
            .map_err(|_| format!("invalid list index {token:?}"))?
    } else {
        return Err(format!("invalid list index {token:?}"));
    };
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if idx > max || (!allow_end && len == 0) {
        return Err(format!("list index {idx} is out of range"));
    }
    Ok(idx)
}

fn get<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(array_index(t, a.len(), false).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = tokens(path)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    let target = get_mut(doc, parent)
        .ok_or_else(|| format!("can't add to a non-existent object at {path:?}"))?;
    match target {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        other => Err(format!("can't add a member to {} at {path:?}", kind(other))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = tokens(path)?;
    let Some((last, parent)) = toks.split_last() else {
        return Err("can't remove the whole document".into());
    };
    let missing = || format!("can't remove a non-existent object {path:?}");
    match get_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies one operation.
pub fn apply_one(doc: &mut Value, op: &Op) -> Result<(), String> {
    match op {
        Op::Add { path, value } => add(doc, path, value.clone()),
        Op::Remove { path } => remove(doc, path).map(|_| ()),
        Op::Replace { path, value } => {
            let toks = tokens(path)?;
            let slot = get_mut(doc, &toks)
                .ok_or_else(|| format!("can't replace a non-existent object {path:?}"))?;
            *slot = value.clone();
            Ok(())
        }
        Op::Move { from, path } => {
            if path != from && path.starts_with(&format!("{from}/")) {
                return Err(format!("can't move {from:?} into its own child {path:?}"));
            }
            let value = remove(doc, from)
                .map_err(|_| format!("can't move from a non-existent object {from:?}"))?;
            add(doc, path, value)
        }
        Op::Copy { from, path } => {
            let value = get(doc, &tokens(from)?)
                .cloned()
                .ok_or_else(|| format!("can't copy from a non-existent object {from:?}"))?;
            add(doc, path, value)
        }
        Op::Test { path, value } => match get(doc, &tokens(path)?) {
            Some(actual) if actual == value => Ok(()),
            Some(actual) => Err(format!("test failed: {path:?} is {actual}, not {value}")),
            None => Err(format!("test failed: {path:?} does not exist")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, patch: Value) -> Result<Value, String> {
        let mut doc = doc;
        for op in parse(&patch)? {
            apply_one(&mut doc, &op.op)?;
        }
        Ok(doc)
    }

    #[test]
    fn rfc6902_examples() {
        assert_eq!(
            run(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}])
            )
            .unwrap(),
            json!({"foo": "bar", "baz": "qux"})
        );
        assert_eq!(
            run(
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            )
            .unwrap(),
            json!({"foo": ["bar", "qux", "baz"]})
        );
        assert_eq!(
            run(
                json!({"foo": [1]}),
                json!([{"op": "add", "path": "/foo/-", "value": 2}])
            )
            .unwrap(),
            json!({"foo": [1, 2]})
        );
        assert_eq!(
            run(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}])
            )
            .unwrap(),
            json!({"foo": "bar"})
        );
        assert_eq!(
            run(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            )
            .unwrap(),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
        assert_eq!(
            run(
                json!({"a": {"b": 1}}),
                json!([{"op": "copy", "from": "/a/b", "path": "/c"}])
            )
            .unwrap(),
            json!({"a": {"b": 1}, "c": 1})
        );
        assert!(run(
            json!({"a": 1}),
            json!([{"op": "test", "path": "/a", "value": 1}])
        )
        .is_ok());
        assert!(run(
            json!({"a": 1}),
            json!([{"op": "test", "path": "/a", "value": 2}])
        )
        .is_err());
        // Escapes: "/a~1b" is the key "a/b", "/m~0n" is "m~n".
        assert_eq!(
            run(json!({"p": {}}), json!([{"op": "add", "path": "/p/a~1b", "value": 1}, {"op": "add", "path": "/p/m~0n", "value": 2}])).unwrap(),
            json!({"p": {"a/b": 1, "m~n": 2}})
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = run(json!({}), json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
        assert!(e.contains("non-existent"), "{e}");
        let e = run(
            json!({}),
            json!([{"op": "replace", "path": "/nope", "value": 1}]),
        )
        .unwrap_err();
        assert!(e.contains("non-existent"), "{e}");
        let e = parse(&json!([{"op": "add", "path": "/a", "value": 1, "extra": 2}])).unwrap_err();
        assert!(e.contains("'extra' was unexpected"), "{e}");
        let e = parse(&json!([{"op": "frobnicate", "path": "/a"}])).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        let e = parse(&json!([{"op": "add", "path": "a", "value": 1}])).unwrap_err();
        assert!(e.contains("JSON pointer"), "{e}");
        assert!(parse(&json!({"op": "add"})).is_err());
        assert!(parse(&json!([{"op": "add", "path": "/a"}])).is_err());
        assert!(parse(&json!([])).is_err());
        let e = run(
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/5", "value": 1}]),
        )
        .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(run(
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/01", "value": 1}])
        )
        .is_err());
    }

    #[test]
    fn top_field_is_decoded() {
        assert_eq!(top_field("/properties/cpus").as_deref(), Some("properties"));
        assert_eq!(top_field("/a~1b").as_deref(), Some("a/b"));
        assert_eq!(top_field("/"), Some(String::new()));
    }
}
