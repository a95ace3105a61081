//! JSON Schema validation behind one small seam, pure like the rest of `config` (below the
//! policies and the pipeline that use it), so the `jsonschema` crate (built without
//! its default features: no remote `$ref`, so no SSRF or blocking HTTP through a policy or a
//! client's schema) is configured in one place: formats are checked, patterns run with a
//! backtracking limit, and warden's domain keyword `x-not-past` is known. Also the JSON
//! pointers with `*` segments that the request rules use, and the bounded cache of
//! validators compiled from schemas that requests declare (runtime state, outside the
//! policy snapshot: apps send the same schema again and again, and it is compiled once).

use std::sync::Arc;

use serde_json::{Map, Value};

/// A compiled JSON Schema.
#[derive(Clone)]
pub struct Compiled(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled(..)")
    }
}

/// One way an instance breaks a schema: where (a JSON pointer into the instance, `""` for
/// the whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

/// At most this many problems are reported per check: enough to repair from, bounded for
/// an error body.
pub const MAX_PROBLEMS: usize = 10;

/// A pattern's matching may take this many backtracking steps, then fails (no ReDoS from a
/// client's schema).
const BACKTRACK_LIMIT: usize = 100_000;

/// Compiles a schema. `Err`: why it is not one warden can use (a remote `$ref` among them).
pub fn compile(schema: &Value) -> Result<Compiled, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::fancy_regex().backtrack_limit(BACKTRACK_LIMIT))
        .with_keyword("x-not-past", not_past_factory)
        .build(schema)
        .map(|v| Compiled(Arc::new(v)))
        .map_err(|e| cut(&e.to_string(), 300))
}

impl Compiled {
    /// The ways `instance` breaks the schema, at most [`MAX_PROBLEMS`].
    pub fn problems(&self, instance: &Value) -> Vec<Problem> {
        if self.0.is_valid(instance) {
            return Vec::new();
        }
        self.0
            .iter_errors(instance)
            .take(MAX_PROBLEMS)
            .map(|e| Problem { pointer: e.instance_path().as_str().to_string(), message: cut(&e.to_string(), 200) })
            .collect()
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `x-not-past: true`: a date (`YYYY-MM-DD`, or the date of a date-time) that is not before
/// today (UTC). Other types pass, as with every format keyword.
struct NotPast;

impl<'i> jsonschema::Keyword<'i> for NotPast {
    fn validate(&self, instance: &'i Value) -> Result<(), jsonschema::ValidationError<'i>> {
        match instance.as_str().map(date_days) {
            Some(Some(days)) if days < today_days() => {
                Err(jsonschema::ValidationError::custom(format!("{instance} is in the past")))
            }
            Some(None) => Err(jsonschema::ValidationError::custom(format!("{instance} is not an ISO 8601 date"))),
            _ => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        match instance.as_str() {
            Some(s) => date_days(s).is_some_and(|d| d >= today_days()),
            None => true,
        }
    }
}

type KeywordResult<'a> = Result<Box<dyn for<'i> jsonschema::Keyword<'i>>, jsonschema::ValidationError<'a>>;

fn not_past_factory<'a>(
    _: &'a Map<String, Value>,
    value: &'a Value,
    _: jsonschema::paths::Location,
) -> KeywordResult<'a> {
    match value {
        Value::Bool(true) => Ok(Box::new(NotPast)),
        Value::Bool(false) => Ok(Box::new(Anything)),
        _ => Err(jsonschema::ValidationError::custom("`x-not-past` must be true or false")),
    }
}

struct Anything;

impl<'i> jsonschema::Keyword<'i> for Anything {
    fn validate(&self, _: &'i Value) -> Result<(), jsonschema::ValidationError<'i>> {
        Ok(())
    }
    fn is_valid(&self, _: &'i Value) -> bool {
        true
    }
}

/// Days since 1970-01-01 of the date a string starts with (`2026-12-02`, `2026-12-02T10:00Z`).
fn date_days(s: &str) -> Option<i64> {
    let d = s.get(..10)?;
    let b = d.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || (s.len() > 10 && !matches!(s.as_bytes()[10], b'T' | b't' | b' ')) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        d.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit()))?.parse().ok()
    };
    let (y, m, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || day == 0 {
        return None;
    }
    let days = crate::clock::days_from_civil(y, m, day);
    // 2026-02-30 is no date: it must survive the round trip.
    (crate::clock::civil_from_days(days) == (y, m, day)).then_some(days)
}

fn today_days() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// The values a pointer with `*` segments (any array item or object member) selects, each
/// with its concrete pointer. `~0`/`~1` escapes as in RFC 6901.
pub fn select<'v>(root: &'v Value, pointer: &str) -> Vec<(String, &'v Value)> {
    let mut found = vec![(String::new(), root)];
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for (at, v) in found {
            match (v, seg.as_str()) {
                (Value::Array(items), "*") => {
                    next.extend(items.iter().enumerate().map(|(i, item)| (format!("{at}/{i}"), item)));
                }
                (Value::Object(m), "*") => {
                    next.extend(m.iter().map(|(k, item)| (format!("{at}/{}", escape(k)), item)));
                }
                (Value::Array(items), s) => {
                    if let Some(item) = s.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        next.push((format!("{at}/{s}"), item));
                    }
                }
                (Value::Object(m), s) => {
                    if let Some(item) = m.get(s) {
                        next.push((format!("{at}/{raw}"), item));
                    }
                }
                _ => {}
            }
        }
        found = next;
    }
    found
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether a pointer is well formed: empty (the whole document) or `/`-separated segments.
pub fn valid_pointer(p: &str) -> bool {
    (p.is_empty() || p.starts_with('/'))
        && p.split('/').all(|seg| {
            let mut chars = seg.chars();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return false;
                }
            }
            true
        })
}

/// Validators compiled from schemas that requests declare, by the SHA-256 of the schema's
/// JSON text. Bounded: a client sending a new schema every time evicts, never grows memory.
pub struct Declared {
    cache: moka::sync::Cache<[u8; 32], Compiled>,
}

impl Default for Declared {
    fn default() -> Self {
        Declared { cache: moka::sync::Cache::new(1024) }
    }
}

impl Declared {
    /// The compiled form of a declared schema's JSON text.
    pub fn get(&self, raw: &str) -> Result<Compiled, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(c) = self.cache.get(&key) {
            return Ok(c);
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        let compiled = compile(&value)?;
        self.cache.insert(key, compiled.clone());
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_name_the_pointer_and_formats_are_checked() {
        let s = compile(&json!({
            "type": "object",
            "required": ["amount", "due_date"],
            "properties": {
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "due_date": {"type": "string", "format": "date"}
            }
        }))
        .unwrap();
        assert!(s.problems(&json!({"amount": 3, "due_date": "2030-01-31"})).is_empty());
        let p = s.problems(&json!({"amount": -1, "currency": "usd", "due_date": "31/01/2030"}));
        let pointers: Vec<&str> = p.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers.len(), 3, "{p:?}");
        assert!(pointers.contains(&"/amount") && pointers.contains(&"/currency") && pointers.contains(&"/due_date"));
        let missing = s.problems(&json!({"amount": 1}));
        assert_eq!(missing[0].pointer, "");
        assert!(missing[0].message.contains("due_date"), "{missing:?}");
    }

    #[test]
    fn not_past_compares_with_today_and_refuses_non_dates() {
        let s = compile(&json!({"x-not-past": true})).unwrap();
        assert!(s.problems(&json!("2999-01-01")).is_empty());
        assert!(s.problems(&json!("2999-01-01T10:00:00Z")).is_empty());
        assert_eq!(s.problems(&json!("2001-01-01"))[0].message, "\"2001-01-01\" is in the past");
        assert!(!s.problems(&json!("2999-02-30")).is_empty());
        assert!(!s.problems(&json!("soon")).is_empty());
        assert!(s.problems(&json!(5)).is_empty());
        assert!(compile(&json!({"x-not-past": "yes"})).is_err());
    }

    #[test]
    fn remote_refs_are_not_fetched() {
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
        assert!(compile(&json!({"$ref": "file:///etc/passwd"})).is_err());
        // Local references work.
        let s = compile(&json!({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})).unwrap();
        assert!(!s.problems(&json!("x")).is_empty());
    }

    #[test]
    fn pathological_patterns_end() {
        let s = compile(&json!({"type": "string", "pattern": "^(a+)+\\1$"})).unwrap();
        // Either outcome is fine; it must return.
        let _ = s.problems(&json!("a".repeat(40) + "b"));
    }

    #[test]
    fn pointers_with_wildcards() {
        let v = json!({"messages": [{"role": "user", "name": "a"}, {"role": "user"}, {"name": "c"}], "a/b": {"~": 1}});
        let at: Vec<String> = select(&v, "/messages/*/name").into_iter().map(|(p, _)| p).collect();
        assert_eq!(at, ["/messages/0/name", "/messages/2/name"]);
        assert_eq!(select(&v, "/a~1b/~0")[0].0, "/a~1b/~0");
        assert_eq!(select(&v, "/messages/1/role")[0].1, "user");
        assert!(select(&v, "/nope").is_empty());
        assert_eq!(select(&v, "").len(), 1);
        assert!(valid_pointer("/a/~1") && valid_pointer("") && !valid_pointer("a") && !valid_pointer("/~2"));
    }

    #[test]
    fn declared_schemas_compile_once() {
        let d = Declared::default();
        let a = d.get(r#"{"type":"integer"}"#).unwrap();
        let b = d.get(r#"{"type":"integer"}"#).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(d.get(r#"{"type": 5}"#).is_err());
    }
}
