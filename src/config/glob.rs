//! Model-name globs: `*` matches any run of characters, `?` exactly one. Enough for
//! `gpt-*`, `o*`, `claude-3-?-*`, and cheap to match without a regex engine.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty model pattern".into());
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(format!("model pattern `{pattern}` contains whitespace"));
        }
        Ok(Glob { pattern: pattern.to_string() })
    }

    /// A path glob for `extra_paths`: an absolute `/v1/...` path; `*` and `?` allowed.
    pub fn path(pattern: &str) -> Result<Glob, String> {
        if !pattern.starts_with("/v1/") {
            return Err(format!("extra path `{pattern}` must start with `/v1/`"));
        }
        Glob::new(pattern)
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern has no wildcard, so it can be looked up by hash.
    pub fn is_literal(&self) -> bool {
        !self.pattern.contains(['*', '?'])
    }

    pub fn matches(&self, text: &str) -> bool {
        // Matched on every request, often several times: bytes when both sides are ASCII
        // (model names and paths nearly always are), chars otherwise so `?` is one character.
        if self.pattern.is_ascii() && text.is_ascii() {
            wildcard(self.pattern.as_bytes(), text.as_bytes())
        } else {
            let p: Vec<char> = self.pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            wildcard(&p, &t)
        }
    }
}

/// Iterative wildcard match with single-star backtracking: linear in practice.
fn wildcard<T: Copy + PartialEq + From<u8>>(p: &[T], t: &[T]) -> bool {
    let (any, one) = (T::from(b'*'), T::from(b'?'));
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == any {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).map(|g| g.matches(t)).unwrap_or(false)
    }

    #[test]
    fn matches_like_a_shell_glob() {
        assert!(m("gpt-*", "gpt-4o-mini"));
        assert!(m("o*", "o3-mini"));
        assert!(!m("o*", "gpt-4o"));
        assert!(m("claude-?-*", "claude-3-opus"));
        assert!(!m("claude-?-*", "claude-35-opus"));
        assert!(m("*mini", "gpt-4o-mini"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("mock-1", "mock-1"));
        assert!(!m("mock-1", "mock-10"));
        assert!(m("modèle-?", "modèle-é"));
        assert!(!m("modèle-?", "modèle-éé"));
    }

    #[test]
    fn rejects_empty_and_whitespace() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("gpt *").is_err());
    }
}
