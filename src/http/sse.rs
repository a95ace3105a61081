//! An incremental server-sent events parser (the WHATWG event-stream format): frames are fed
//! as they arrive, split anywhere, even inside a CRLF, and complete events come out. Lines
//! end in LF, CRLF or a lone CR; `:` lines are comments; `data:` lines join with `\n`;
//! `event:` names the event; `id:` and `retry:` are read and ignored. One event may hold at
//! most `max_event_bytes`, so an upstream cannot make warden buffer without bound.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any (`None` means the default type, `message`).
    pub name: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The stream broke the format's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an upstream event is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("an upstream event is not UTF-8")]
    NotUtf8,
}

/// Parser state carried between frames.
#[derive(Debug)]
pub struct SseParser {
    /// The current line, not yet terminated.
    line: Vec<u8>,
    /// The previous frame ended in CR: an LF that starts this one belongs to it.
    after_cr: bool,
    name: Option<String>,
    data: String,
    /// Whether a `data` field was seen for the pending event (an empty one counts).
    has_data: bool,
    /// Bytes of the pending event so far (lines and fields), for the cap.
    size: usize,
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            name: None,
            data: String::new(),
            has_data: false,
            size: 0,
            max_event_bytes,
        }
    }

    /// Feeds the next frame; every event it completes is pushed to `out` with the offset in
    /// this frame just past the blank line that ends it. Returns the offset just past the
    /// last blank line in the frame (events and comment-only blocks alike): the bytes before
    /// it form whole blocks that can be forwarded; the rest belongs to a block not yet ended.
    pub fn feed(&mut self, frame: &[u8], out: &mut Vec<(Event, usize)>) -> Result<Option<usize>, SseError> {
        let mut chunk = frame;
        let mut boundary = None;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (line, rest) = chunk.split_at(end);
            let blank = line.is_empty() && self.line.is_empty();
            self.grow(line.len())?;
            let complete = if self.line.is_empty() {
                self.field(line)?
            } else {
                self.line.extend_from_slice(line);
                let whole = std::mem::take(&mut self.line);
                let r = self.field(&whole);
                self.line = whole;
                self.line.clear();
                r?
            };
            chunk = match (rest[0], rest.get(1)) {
                (b'\r', Some(b'\n')) => &rest[2..],
                (b'\r', None) => {
                    self.after_cr = true;
                    &rest[1..]
                }
                _ => &rest[1..],
            };
            let end = frame.len() - chunk.len();
            if blank {
                boundary = Some(end);
            }
            if let Some(ev) = complete {
                out.push((ev, end));
            }
        }
        self.grow(chunk.len())?;
        self.line.extend_from_slice(chunk);
        Ok(boundary)
    }

    /// Whether the stream stopped in the middle of an event (its bytes would be lost).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.name.is_some()
    }

    fn grow(&mut self, n: usize) -> Result<(), SseError> {
        self.size += n;
        if self.size > self.max_event_bytes {
            return Err(SseError::TooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    /// Handles one complete line; a blank line dispatches the pending event.
    fn field(&mut self, line: &[u8]) -> Result<Option<Event>, SseError> {
        if line.is_empty() {
            self.size = 0;
            let name = self.name.take();
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            return Ok(Some(Event { name, data: std::mem::take(&mut self.data) }));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(value.to_string()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out.into_iter().map(|(e, _)| e).collect()
    }

    #[test]
    fn reports_where_whole_blocks_end() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        let frame = b"data: a\n\n: ping\n\ndata: b";
        assert_eq!(p.feed(frame, &mut out).unwrap(), Some(17));
        assert_eq!(out[0].1, 9);
        out.clear();
        assert_eq!(p.feed(b"\n", &mut out).unwrap(), None);
        assert_eq!(p.feed(b"\r\n", &mut out).unwrap(), Some(2));
        assert_eq!(out[0].0.data, "b");
    }

    fn ev(name: Option<&str>, data: &str) -> Event {
        Event { name: name.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn parses_names_multiline_data_comments_and_line_endings() {
        let text = b": keep-alive\nevent: message_start\ndata: {\"a\":1}\n\nevent: ping\r\ndata: x\r\ndata:  y\r\n\r\ndata:z\r\rid: 7\nretry: 10\ndata\n\n";
        assert_eq!(
            parse_all(&[text]),
            vec![ev(Some("message_start"), "{\"a\":1}"), ev(Some("ping"), "x\n y"), ev(None, "z"), ev(None, "")]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_a_cut_event_is_partial() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"event: x\n\ndata: half", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
    }

    #[test]
    fn the_size_cap_holds_across_frames() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(b"data: 0123456789", &mut out).unwrap();
        assert_eq!(p.feed(b"0123456789\n\n", &mut out), Err(SseError::TooLarge { limit: 16 }));
        let mut p = SseParser::new(16);
        for _ in 0..10 {
            p.feed(b"data: 0123456789\n\n", &mut out).unwrap();
        }
        assert_eq!(out.len(), 10);
    }

    proptest::proptest! {
        /// Wherever the frames split the stream, even inside a CRLF, the events are the same.
        #[test]
        fn split_points_never_change_the_events(
            events in proptest::collection::vec(
                (proptest::option::of("[a-z_]{1,12}"), proptest::collection::vec("[ -~]{0,20}", 1..4), 0usize..3),
                0..8,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut text = String::new();
            for (i, (name, lines, ending)) in events.iter().enumerate() {
                let nl = ["\n", "\r\n", "\r"][*ending];
                if i % 3 == 0 {
                    text.push_str(": comment");
                    text.push_str(nl);
                }
                if let Some(n) = name {
                    text.push_str(&format!("event: {n}{nl}"));
                }
                for l in lines {
                    text.push_str(&format!("data: {l}{nl}"));
                }
                text.push_str(nl);
            }
            let bytes = text.as_bytes();
            let whole = parse_all(&[bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for p in points {
                chunks.push(&bytes[at..p]);
                at = p;
            }
            chunks.push(&bytes[at..]);
            proptest::prop_assert_eq!(parse_all(&chunks), whole.clone());
            proptest::prop_assert_eq!(whole.len(), events.len());
        }
    }
}
