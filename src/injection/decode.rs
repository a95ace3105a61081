//! Texts hidden in encodings: base64 and hex runs that decode to printable text, and
//! ROT13 where the text names it. Bounded per input.

use unicode_normalization::UnicodeNormalization;

/// The bytes of a base64 or hex run.
const RUN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_');
        b += 1;
    }
    t
};

/// The most decoded text kept per input.
const MAX_DECODED: usize = 64 * 1024;

/// Base64 runs of 20+ characters and hex runs of 24+ digits that decode to mostly printable
/// text, and the whole text ROT13'd when it mentions ROT13. `original` keeps base64's case.
pub(super) fn decode_runs(text: &str, original: &str, out: &mut Vec<String>) {
    let mut budget = MAX_DECODED;
    let bytes = original.as_bytes();
    let is_run = |b: u8| RUN[usize::from(b)];
    let mut i = 0;
    while i < bytes.len() && budget > 0 {
        if !is_run(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_run(bytes[i]) {
            i += 1;
        }
        if i - start < 20 {
            continue;
        }
        // ASCII bytes on both sides: a char boundary.
        let run = &original[start..i];
        let decoded = if run.len() >= 24 && run.len() % 2 == 0 && run.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex(run)
        } else if run.len() >= 20
            && run.bytes().any(|b| b.is_ascii_uppercase())
            && run.bytes().any(|b| b.is_ascii_lowercase())
        {
            base64(run)
        } else {
            None
        };
        if let Some(s) = decoded.filter(|s| printable(s)) {
            budget = budget.saturating_sub(s.len());
            out.push(views_flat(&s));
        }
    }
    if text.contains("rot") && (text.contains("rot13") || text.contains("rot-13") || text.contains("rot 13")) {
        out.push(text.chars().map(rot13).collect());
    }
}

/// A decoded text, lower-cased (decoded texts are not decoded again).
fn views_flat(s: &str) -> String {
    s.nfkc().collect::<String>().to_lowercase()
}

fn printable(s: &str) -> bool {
    let total = s.chars().count();
    total >= 8 && s.chars().filter(|c| !c.is_control() || c.is_whitespace()).count() * 10 >= total * 9
}

fn hex(run: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> =
        (0..run.len()).step_by(2).map(|i| u8::from_str_radix(&run[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn base64(run: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    for b in run.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    // A cut-off run still decodes its whole characters.
    match String::from_utf8(out) {
        Ok(s) => Some(s),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).ok()
        }
    }
}

fn rot13(c: char) -> char {
    match c {
        'a'..='m' | 'A'..='M' => char::from(c as u8 + 13),
        'n'..='z' | 'N'..='Z' => char::from(c as u8 - 13),
        c => c,
    }
}
