//! The text fields of a `multipart/form-data` body (RFC 7578), for pass-through uploads such
//! as audio transcriptions, whose `model` is a form field. Strict on purpose: a body that a
//! lenient server could split differently from warden is refused, not guessed at.

use http::HeaderMap;

/// Why a form could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FormProblem {
    /// The body does not have the shape its `content-type` promises.
    Malformed(&'static str),
    /// A field warden reads appears more than once.
    Repeated(String),
}

/// The value of the text field `name` of a multipart body, or `None` when the request is
/// not multipart or has no such field. File parts are never read.
pub fn text_field(headers: &HeaderMap, body: &[u8], name: &str) -> Result<Option<String>, FormProblem> {
    let Some(boundary) = boundary(headers)? else { return Ok(None) };
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    if !body.starts_with(delimiter) {
        return Err(FormProblem::Malformed("the body does not start with its boundary"));
    }
    let mut found = None;
    let mut rest = &body[delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Ok(found);
        }
        rest = rest.strip_prefix(b"\r\n").ok_or(FormProblem::Malformed("a boundary is not followed by CRLF"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or(FormProblem::Malformed("a part has no header end"))?;
        let head =
            std::str::from_utf8(&rest[..head_end]).map_err(|_| FormProblem::Malformed("part headers are not UTF-8"))?;
        let content = &rest[head_end + 4..];
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(delimiter);
        let end = find(content, &close).ok_or(FormProblem::Malformed("a part is not closed by the boundary"))?;
        if part_name(head)?.as_deref() == Some(name) {
            if found.is_some() {
                return Err(FormProblem::Repeated(name.to_string()));
            }
            let value = std::str::from_utf8(&content[..end])
                .map_err(|_| FormProblem::Malformed("a text field is not UTF-8"))?;
            found = Some(value.to_string());
        }
        rest = &content[end + close.len()..];
    }
}

fn boundary(headers: &HeaderMap) -> Result<Option<String>, FormProblem> {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let mut params = ct.split(';').map(str::trim);
    if !params.next().is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data")) {
        return Ok(None);
    }
    let boundary = params
        .find_map(|p| {
            p.split_once('=').filter(|(k, _)| k.trim().eq_ignore_ascii_case("boundary")).map(|(_, v)| v.trim())
        })
        .map(|v| v.trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(FormProblem::Malformed("multipart/form-data without a valid boundary"))?;
    Ok(Some(boundary))
}

/// The `name` of a part from its `content-disposition`; `None` for file parts.
fn part_name(head: &str) -> Result<Option<String>, FormProblem> {
    let mut names = Vec::new();
    for line in head.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else { continue };
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut name = None;
        let mut file = false;
        for param in value.split(';').skip(1).map(str::trim) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v.trim().trim_matches('"').to_string()),
                "filename" | "filename*" => file = true,
                // An encoded name could decode to `model` on the server.
                "name*" => return Err(FormProblem::Malformed("`name*` parameters are not accepted")),
                _ => {}
            }
        }
        names.push(if file { None } else { name });
    }
    match names.len() {
        0 => Err(FormProblem::Malformed("a part has no content-disposition")),
        1 => Ok(names.pop().flatten()),
        _ => Err(FormProblem::Malformed("a part has two content-disposition headers")),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(ct).unwrap());
        h
    }

    const FORM: &str = "--xyz\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\nRIFF--model\r\n--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--xyz--\r\n";

    #[test]
    fn reads_text_fields_and_skips_files() {
        let h = headers("multipart/form-data; boundary=xyz");
        assert_eq!(text_field(&h, FORM.as_bytes(), "model"), Ok(Some("whisper-1".into())));
        assert_eq!(text_field(&h, FORM.as_bytes(), "file"), Ok(None));
        assert_eq!(text_field(&headers("application/json"), b"{}", "model"), Ok(None));
    }

    #[test]
    fn refuses_repeats_and_malformed_forms() {
        let h = headers("multipart/form-data; boundary=\"xyz\"");
        let twice =
            FORM.replace("--xyz--", "--xyz\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\no3\r\n--xyz--");
        assert_eq!(text_field(&h, twice.as_bytes(), "model"), Err(FormProblem::Repeated("model".into())));
        assert!(text_field(&h, b"garbage", "model").is_err());
        assert!(text_field(&headers("multipart/form-data"), FORM.as_bytes(), "model").is_err());
        let star = FORM.replace("name=\"model\"", "name*=utf-8''model");
        assert!(text_field(&h, star.as_bytes(), "model").is_err());
    }
}
