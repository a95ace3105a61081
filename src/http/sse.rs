//! An incremental server-sent events parser (the WHATWG event-stream format): frames are fed
//! as they arrive, split anywhere, even inside a CRLF, and complete events come out. Lines
//! end in LF, CRLF or a lone CR; `:` lines are comments; `data:` lines join with `\n`;
//! `event:` names the event; `id:` and `retry:` are read and ignored. One event may hold at
//! most `max_event_bytes`, so an upstream cannot make warden buffer without bound.

/// One dispatched event, borrowed from the parser (its buffers are reused, so parsing a
/// stream allocates nothing per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, if any (`None` means the default type, `message`).
    pub name: Option<&'a str>,
    /// The `data:` lines, joined with `\n`. Bytes, not text: checking UTF-8 costs, and most
    /// events are only looked at, not read.
    pub data: &'a [u8],
}

/// The stream broke the format's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an upstream event is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("an upstream event name is not UTF-8")]
    NotUtf8,
}

/// Parser state carried between frames.
#[derive(Debug)]
pub struct SseParser {
    /// The current line, not yet terminated.
    line: Vec<u8>,
    /// The previous frame ended in CR: an LF that starts this one belongs to it.
    after_cr: bool,
    name: String,
    has_name: bool,
    data: Vec<u8>,
    /// The pending event's data while it is one `data:` line of the current frame: where it
    /// sits in the frame, so the common event is never copied. Moved into `data` when a
    /// second line comes or the frame ends first.
    borrowed: Option<(usize, usize)>,
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
            name: String::new(),
            has_name: false,
            data: Vec::new(),
            borrowed: None,
            has_data: false,
            size: 0,
            max_event_bytes,
        }
    }

    /// Feeds the next frame; `on_event` gets every event it completes, with the offset in
    /// this frame just past the blank line that ends it. Returns the offset just past the
    /// last blank line in the frame (events and comment-only blocks alike): the bytes before
    /// it form whole blocks that can be forwarded; the rest belongs to a block not yet ended.
    pub fn feed<F: FnMut(Event<'_>, usize)>(
        &mut self,
        frame: &[u8],
        mut on_event: F,
    ) -> Result<Option<usize>, SseError> {
        let mut chunk = frame;
        let mut boundary = None;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (line, rest) = chunk.split_at(end);
            let blank = line.is_empty() && self.line.is_empty();
            self.grow(line.len())?;
            let dispatch = if self.line.is_empty() {
                let at = frame.len() - chunk.len();
                self.field(line, Some((frame, at)))?
            } else {
                self.line.extend_from_slice(line);
                let whole = std::mem::take(&mut self.line);
                let r = self.field(&whole, None);
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
            if dispatch {
                let data = match self.borrowed {
                    Some((from, to)) => &frame[from..to],
                    None => &self.data[..],
                };
                on_event(Event { name: self.has_name.then_some(self.name.as_str()), data }, end);
            }
            if blank {
                self.name.clear();
                self.has_name = false;
                self.data.clear();
                self.borrowed = None;
                self.has_data = false;
            }
        }
        // The frame goes away: an event still pending keeps its own copy.
        if let Some((from, to)) = self.borrowed.take() {
            self.data.extend_from_slice(&frame[from..to]);
        }
        self.grow(chunk.len())?;
        self.line.extend_from_slice(chunk);
        Ok(boundary)
    }

    /// Whether the stream stopped in the middle of an event (its bytes would be lost).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.has_name
    }

    fn grow(&mut self, n: usize) -> Result<(), SseError> {
        self.size += n;
        if self.size > self.max_event_bytes {
            return Err(SseError::TooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    /// Handles one complete line; `true` when a blank line ends an event with data (the
    /// caller dispatches it, then clears the pending fields).
    /// `in_frame`: the frame and where `line` starts in it, when the line is the frame's own
    /// bytes (not reassembled across frames).
    fn field(&mut self, line: &[u8], in_frame: Option<(&[u8], usize)>) -> Result<bool, SseError> {
        if line.is_empty() {
            self.size = 0;
            return Ok(self.has_data);
        }
        if line[0] == b':' {
            return Ok(false);
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if let Some((from, to)) = self.borrowed.take() {
                    if let Some((frame, _)) = in_frame {
                        self.data.extend_from_slice(&frame[from..to]);
                    }
                }
                match in_frame {
                    Some((_, at)) if !self.has_data => {
                        let from = at + (line.len() - value.len());
                        self.borrowed = Some((from, from + value.len()));
                    }
                    _ => {
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
                self.has_data = true;
            }
            b"event" => {
                let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                self.name.clear();
                self.name.push_str(value);
                self.has_name = true;
            }
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Option<String>, String);

    fn collect(p: &mut SseParser, frame: &[u8], out: &mut Vec<(Owned, usize)>) -> Result<Option<usize>, SseError> {
        p.feed(frame, |e, end| {
            out.push(((e.name.map(str::to_string), String::from_utf8_lossy(e.data).into_owned()), end))
        })
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            collect(&mut p, c, &mut out).unwrap();
        }
        out.into_iter().map(|(e, _)| e).collect()
    }

    #[test]
    fn reports_where_whole_blocks_end() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        let frame = b"data: a\n\n: ping\n\ndata: b";
        assert_eq!(collect(&mut p, frame, &mut out).unwrap(), Some(17));
        assert_eq!(out[0].1, 9);
        out.clear();
        assert_eq!(collect(&mut p, b"\n", &mut out).unwrap(), None);
        assert_eq!(collect(&mut p, b"\r\n", &mut out).unwrap(), Some(2));
        assert_eq!(out[0].0 .1, "b");
    }

    fn ev(name: Option<&str>, data: &str) -> Owned {
        (name.map(str::to_string), data.to_string())
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
        collect(&mut p, b"event: x\n\ndata: half", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
    }

    #[test]
    fn the_size_cap_holds_across_frames() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        collect(&mut p, b"data: 0123456789", &mut out).unwrap();
        assert_eq!(collect(&mut p, b"0123456789\n\n", &mut out), Err(SseError::TooLarge { limit: 16 }));
        let mut p = SseParser::new(16);
        for _ in 0..10 {
            collect(&mut p, b"data: 0123456789\n\n", &mut out).unwrap();
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
