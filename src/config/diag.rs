//! Diagnostics: every configuration error, syntactic or semantic, as `file:line:col: message`
//! with an optional `hint:` line ("did you mean `routes`?").

use std::fmt;

use serde_saphyr::Location;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub col: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn at(file: &str, loc: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: file.to_string(), line: loc.line(), col: loc.column(), message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    /// A YAML syntax or type error from the deserializer, with its own location.
    pub fn from_yaml(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
        let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = friendlier(yaml_message(err));
        let hint = unknown_field_hint(&message);
        Diagnostic { file: file.to_string(), line, col, message, hint }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The deserializer's message without its own location prefix and source snippet: the
/// snippet could echo a line holding a secret, and we print the location ourselves.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error:").unwrap_or(first).trim();
    // "line 6 column 18: invalid floating point" -> "invalid floating point"
    match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    }
}

/// Plain words for the deserializer's type names.
fn friendlier(message: String) -> String {
    match message.as_str() {
        "invalid i64" | "invalid u64" | "invalid i32" | "invalid u32" => "expected a whole number".into(),
        "invalid floating point" => "expected a number".into(),
        "invalid boolean" => "expected true or false".into(),
        _ => message,
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message, the closest expected name.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (field, rest) = rest.split_once('`')?;
    let list = rest.split_once("expected one of ").or_else(|| rest.split_once("expected "))?.1;
    let expected = list.split(',').map(|s| s.trim().trim_matches('`'));
    hint_for(field, expected)
}

/// "did you mean `x`?" for the candidate closest to `input`, if one is close enough.
pub fn hint_for<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(input, candidates).map(|s| format!("did you mean `{s}`?"))
}

/// The candidate closest to `input` by edit distance, when it is close enough to be a typo.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(input, c), c))
        .filter(|(d, c)| *d <= c.len().max(input.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("rate_limit", ["rate_limits", "budgets"]), Some("rate_limits"));
        assert_eq!(did_you_mean("provders", ["providers", "routes"]), Some("providers"));
        assert_eq!(did_you_mean("zzz", ["providers", "routes"]), None);
    }
}
