//! Token usage as the providers report it, mapped so that every token is counted once:
//! OpenAI's `prompt_tokens` include the cached ones and `completion_tokens` include the
//! reasoning ones, so warden splits them out; Anthropic reports cache reads and writes
//! apart from `input_tokens` already.

use serde::Deserialize;

use super::ApiFamily;

/// Tokens of one exchange, each counted in exactly one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens not read from a prompt cache.
    pub input: u64,
    pub output: u64,
    /// Input tokens read from the prompt cache (OpenAI `cached_tokens`, Anthropic
    /// `cache_read_input_tokens`).
    pub cached_input: u64,
    /// Input tokens written to the prompt cache (Anthropic `cache_creation_input_tokens`).
    pub cache_write: u64,
    /// Output tokens spent on reasoning (OpenAI `reasoning_tokens`), not also in `output`.
    pub reasoning: u64,
    /// No usage was reported (a cut stream, a provider without usage): estimated from the
    /// text sent and streamed.
    pub estimated: bool,
}

impl Usage {
    /// Both, added; either alone; or none.
    pub fn sum(a: Option<Usage>, b: Option<Usage>) -> Option<Usage> {
        match (a, b) {
            (Some(mut u), Some(p)) => {
                u.add(&p);
                Some(u)
            }
            (u, p) => u.or(p),
        }
    }

    /// Adds another exchange's usage (the attempts of one request, each metered).
    pub fn add(&mut self, o: &Usage) {
        self.input += o.input;
        self.output += o.output;
        self.cached_input += o.cached_input;
        self.cache_write += o.cache_write;
        self.reasoning += o.reasoning;
        self.estimated |= o.estimated;
    }

    /// `(direction label, tokens)` for the metric.
    /// Every token of the exchange, each once.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cached_input + self.cache_write + self.reasoning
    }

    pub fn directions(&self) -> [(&'static str, u64); 5] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("reasoning", self.reasoning),
        ]
    }

    /// A rough count from text length: about four bytes a token in English prose.
    pub fn estimate(input_bytes: usize, output_bytes: usize) -> Usage {
        let tokens = |b: usize| (b as u64).div_ceil(4);
        Usage { input: tokens(input_bytes), output: tokens(output_bytes), estimated: true, ..Usage::default() }
    }
}

#[derive(Deserialize, Default)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// Every usage field either API uses, in one shape.
#[derive(Deserialize, Default)]
pub struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
}

impl RawUsage {
    /// Maps a reported usage object to [`Usage`], or folds it into `into` (Anthropic streams
    /// report input in `message_start` and the final output in `message_delta`).
    pub fn fold(self, family: ApiFamily, into: &mut Usage) {
        match family {
            ApiFamily::OpenAi => {
                let input_total = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
                let cached = self
                    .prompt_tokens_details
                    .or(self.input_tokens_details)
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0)
                    .min(input_total);
                let output_total = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
                let reasoning = self
                    .completion_tokens_details
                    .or(self.output_tokens_details)
                    .and_then(|d| d.reasoning_tokens)
                    .unwrap_or(0)
                    .min(output_total);
                *into = Usage {
                    input: input_total - cached,
                    output: output_total - reasoning,
                    cached_input: cached,
                    cache_write: 0,
                    reasoning,
                    estimated: false,
                };
            }
            ApiFamily::Anthropic => {
                into.estimated = false;
                if let Some(v) = self.input_tokens {
                    into.input = v;
                }
                if let Some(v) = self.output_tokens {
                    into.output = v;
                }
                if let Some(v) = self.cache_read_input_tokens {
                    into.cached_input = v;
                }
                if let Some(v) = self.cache_creation_input_tokens {
                    into.cache_write = v;
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
    /// Responses streams: `response.completed` carries the response, usage inside.
    response: Option<Box<WithUsage>>,
    /// Anthropic `message_start` carries the message, usage inside.
    message: Option<Box<WithUsage>>,
}

impl WithUsage {
    fn into_usage(self) -> Option<RawUsage> {
        self.usage
            .or_else(|| self.response.and_then(|r| r.into_usage()))
            .or_else(|| self.message.and_then(|m| m.into_usage()))
    }
}

/// The usage object of a JSON body or event, wherever the API puts it.
pub fn find(json: &[u8]) -> Option<RawUsage> {
    read(json).ok().flatten()
}

/// The usage object that opens at the start of `json` (what follows it is not read).
pub fn read_object(json: &[u8]) -> Option<RawUsage> {
    let mut de = serde_json::Deserializer::from_slice(json);
    RawUsage::deserialize(&mut de).ok()
}

/// Like [`find`], but a body that is not JSON is an error: the parse that looks for usage
/// also validates the whole document.
pub fn read(json: &[u8]) -> Result<Option<RawUsage>, serde_json::Error> {
    serde_json::from_slice::<WithUsage>(json).map(WithUsage::into_usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(family: ApiFamily, json: &str) -> Usage {
        let mut u = Usage::default();
        find(json.as_bytes()).unwrap().fold(family, &mut u);
        u
    }

    #[test]
    fn every_token_counts_once() {
        let openai = r#"{"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
            "prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        let u = usage(ApiFamily::OpenAi, openai);
        assert_eq!((u.input, u.cached_input, u.output, u.reasoning), (70, 30, 30, 20));
        let responses = r#"{"type":"response.completed","response":{"usage":{"input_tokens":9,"output_tokens":4,
            "input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}}"#;
        let u = usage(ApiFamily::OpenAi, responses);
        assert_eq!((u.input, u.cached_input, u.output, u.reasoning), (7, 2, 3, 1));
        let anthropic = r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"cache_read_input_tokens":100,
            "cache_creation_input_tokens":40,"output_tokens":1}}}"#;
        let mut u = usage(ApiFamily::Anthropic, anthropic);
        assert_eq!((u.input, u.cached_input, u.cache_write, u.output), (12, 100, 40, 1));
        find(br#"{"type":"message_delta","usage":{"output_tokens":23}}"#).unwrap().fold(ApiFamily::Anthropic, &mut u);
        assert_eq!((u.input, u.output), (12, 23));
        assert!(find(br#"{"choices":[]}"#).is_none());
    }
}
