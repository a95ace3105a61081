//! JSON body hygiene: a body whose object keys repeat means one thing to warden and another
//! to the upstream (Python, Go and Node keep the last value; a careful parser keeps the
//! first or refuses). A policy proxy must refuse such a body wherever the repeat sits, at any
//! depth, with escapes decoded (`"mo\u0064el"` is `"model"`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Where a key repeats, as a path like `messages[0].role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: String,
}

/// Why a body is not one JSON document with unique keys.
#[derive(Debug)]
pub enum JsonProblem {
    Duplicate(DuplicateKey),
    Invalid(serde_json::Error),
}

/// How much text a body carries, measured on the way (the walk sees every string anyway):
/// enough to estimate its tokens without reading it again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TextSize {
    /// Bytes of every key and string value, escapes decoded, except values that look like
    /// encoded binary (see [`looks_binary`]).
    pub bytes: usize,
    /// String values counted.
    pub values: usize,
}

/// Checks that `body` is one JSON value whose objects never repeat a key; measures its text.
pub fn check_unique_keys(body: &[u8]) -> Result<TextSize, JsonProblem> {
    let mut path = Vec::new();
    let mut found = None;
    let mut size = TextSize::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked =
        Walk { path: &mut path, found: &mut found, size: &mut size }.deserialize(&mut de).and_then(|()| de.end());
    match (found, walked) {
        (Some(dup), _) => Err(JsonProblem::Duplicate(dup)),
        (None, Ok(())) => Ok(size),
        (None, Err(e)) => Err(JsonProblem::Invalid(e)),
    }
}

/// Base64 or a data URL (an image, audio, a file): long, one word, base64 and URL bytes only.
/// A model reads such a payload as media, not as text at a few bytes a token. Prose, code
/// and CJK text (never pure ASCII without a space at this length) are not matched.
pub fn looks_binary(s: &str) -> bool {
    s.len() >= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b':' | b';' | b','))
}

enum Seg<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

fn render(path: &[Seg], last: &str) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(last);
    out
}

struct Walk<'p, 'de> {
    path: &'p mut Vec<Seg<'de>>,
    found: &'p mut Option<DuplicateKey>,
    size: &'p mut TextSize,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Objects up to this size are checked by a linear scan; larger ones by a hash set, so a
/// body with many keys cannot make the check quadratic.
const LINEAR_KEYS: usize = 16;

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

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
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.size.values += 1;
        if !looks_binary(v) {
            self.size.bytes += v.len();
        }
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.path.push(Seg::Index(i));
            let next = seq.next_element_seed(Walk { path: self.path, found: self.found, size: self.size });
            self.path.pop();
            if next?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut small: Vec<Cow<'de, str>> = Vec::new();
        let mut large: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let repeated = if large.is_empty() && small.len() < LINEAR_KEYS {
                let hit = small.contains(&key);
                small.push(key.clone());
                hit
            } else {
                large.extend(small.drain(..));
                !large.insert(key.clone())
            };
            if repeated {
                *self.found = Some(DuplicateKey { path: render(self.path, &key) });
                // Stop the parse; the caller reports `found`, not this error.
                return Err(A::Error::custom("duplicate key"));
            }
            self.size.bytes += key.len();
            self.path.push(Seg::Key(key));
            let r = map.next_value_seed(Walk { path: self.path, found: self.found, size: self.size });
            self.path.pop();
            r?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(body: &str) -> Option<String> {
        match check_unique_keys(body.as_bytes()) {
            Err(JsonProblem::Duplicate(d)) => Some(d.path),
            _ => None,
        }
    }

    #[test]
    fn finds_repeats_at_any_depth_with_escapes_decoded() {
        assert_eq!(dup(r#"{"model":"a","model":"b"}"#).as_deref(), Some("model"));
        assert_eq!(dup(r#"{"model":"a","mo\u0064el":"b"}"#).as_deref(), Some("model"));
        assert_eq!(
            dup(r#"{"messages":[{"role":"user"},{"role":"user","role":"system"}]}"#).as_deref(),
            Some("messages[1].role")
        );
        assert_eq!(dup(r#"{"a":{"b":[[{"c":1,"c":2}]]}}"#).as_deref(), Some("a.b[0][0].c"));
        assert_eq!(dup(r#"{"model":"a","x":{"model":"b"}}"#), None);
    }

    #[test]
    fn large_objects_are_checked_too() {
        let mut body = String::from("{");
        for i in 0..100 {
            body.push_str(&format!("\"k{i}\":{i},"));
        }
        body.push_str("\"k7\":0}");
        assert_eq!(dup(&body).as_deref(), Some("k7"));
    }

    #[test]
    fn invalid_json_is_not_a_duplicate() {
        assert!(matches!(check_unique_keys(b"{\"a\":"), Err(JsonProblem::Invalid(_))));
        assert!(matches!(check_unique_keys(b"{} {}"), Err(JsonProblem::Invalid(_))));
        assert!(check_unique_keys(br#"{"a":[1,2.5,true,null,"x"]}"#).is_ok());
    }

    #[test]
    fn measures_text_but_not_encoded_media() {
        let image = format!("data:image/png;base64,{}", "iVBORw0KGgo+/=".repeat(40));
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"h\u00e9llo"}},{{"url":"{image}"}}]}}"#);
        let size = check_unique_keys(body.as_bytes()).unwrap();
        // model, m, messages, role, user, content, héllo (6 bytes decoded), url.
        assert_eq!(size, TextSize { bytes: 5 + 1 + 8 + 4 + 4 + 7 + 6 + 3, values: 4 });
        assert!(!looks_binary(&"这是一段很长的中文文本".repeat(20)));
        assert!(!looks_binary(&"word ".repeat(100)));
    }
}
