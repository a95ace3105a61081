//! Body edits by splicing: a change to a field of a JSON object is applied by replacing or
//! inserting bytes, so the rest of the body is forwarded exactly as the client sent it and
//! nothing is parsed or serialised again. Every stage's edits go into one splice.

use std::ops::Range;

/// A change to one top-level field of a JSON object body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The value's current range, or `None` to add the field.
    pub span: Option<Range<usize>>,
    /// Where the object that gets a new field opens (its `{`).
    pub object: usize,
    pub field: &'static str,
    /// The new value, as JSON text.
    pub value: String,
}

/// Applies edits by splicing bytes: the rest of the body is forwarded exactly as sent, and
/// nothing is parsed or serialised again.
pub fn splice(body: &[u8], mut edits: Vec<Edit>) -> bytes::Bytes {
    // New fields go first in their object, right after its `{`.
    let at = |e: &Edit| e.span.as_ref().map_or(e.object + 1, |r| r.start);
    edits.sort_by_key(at);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut pos = 0;
    for e in &edits {
        match &e.span {
            Some(r) if r.start >= pos && r.end <= body.len() => {
                out.extend_from_slice(&body[pos..r.start]);
                out.extend_from_slice(e.value.as_bytes());
                pos = r.end;
            }
            Some(_) => {}
            None => {
                let open = e.object;
                if body.get(open) != Some(&b'{') || pos > open + 1 {
                    continue;
                }
                out.extend_from_slice(&body[pos..=open]);
                let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
                out.extend_from_slice(format!("\"{}\":{}", e.field, e.value).as_bytes());
                if !empty {
                    out.push(b',');
                }
                pos = open + 1;
            }
        }
    }
    out.extend_from_slice(&body[pos..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_and_inserts_without_touching_the_rest() {
        let body = br#"{ "model" : "fast", "messages":[{"content":"x  y"}], "max_tokens": 900 }"#;
        let edits = vec![
            Edit { span: Some(12..18), object: 0, field: "model", value: "\"gpt-4o-mini\"".into() },
            Edit { span: None, object: 0, field: "max_completion_tokens", value: "512".into() },
        ];
        let out = splice(body, edits);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_completion_tokens":512, "model" : "gpt-4o-mini", "messages":[{"content":"x  y"}], "max_tokens": 900 }"#
        );
        assert_eq!(
            &splice(b"{ }", vec![Edit { span: None, object: 0, field: "n", value: "1".into() }])[..],
            br#"{"n":1 }"#
        );
        let nested = br#"{"requests":[{"params":{"model":"m"}}]}"#;
        let edits = vec![Edit { span: None, object: 23, field: "max_tokens", value: "5".into() }];
        assert_eq!(&splice(nested, edits)[..], br#"{"requests":[{"params":{"max_tokens":5,"model":"m"}}]}"#);
    }
}
