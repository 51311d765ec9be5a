//! The top-level pass: one serde_json walk over the body's object that types
//! the fields the proxy reads, records the spans it may edit and hands the
//! conversation to [`extract`].

use std::{borrow::Cow, fmt, ops::Range};

use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::{error::Category, value::RawValue};
use tokenwarden_core::{classify::Role, workload::Endpoint};

use super::{
    BodyError, Layout, ParsedRequest, StreamOptions,
    extract::{self, Count, KeyIn, Parts, Sink},
};

/// A top-level member the proxy reads. Which keys map to which field depends
/// on the endpoint ([`Field::of`]); every other key is [`Field::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    Choices,
    PreviousResponseId,
    Conversation,
    Prompt,
    McpServers,
    Container,
    WebSearchOptions,
    Tools,
    Functions,
    Messages,
    System,
    Instructions,
    Input,
    Other,
}

/// The state of the walk.
struct Scan<'a> {
    endpoint: Endpoint,
    body: &'a [u8],
    /// The error to report, when the walk was stopped by a check of ours
    /// (serde only sees an opaque custom error).
    fail: Option<BodyError>,
    /// The field whose value is being read: a data error raised by serde
    /// while reading it is a type error of this field.
    current: Option<Field>,
    /// Fields seen so far, one bit each (duplicates are rejected).
    seen: u32,
    members: usize,
    model: Option<Range<usize>>,
    model_text: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    include_usage: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    choices: Option<u64>,
    tools: usize,
    sink: Sink<'a>,
}

/// Members of a small object (`stream_options`): how many, and the values
/// of the one key looked for, in order.
struct Members<'a> {
    count: usize,
    matches: Vec<&'a RawValue>,
}

const INCLUDE_USAGE: &str = "stream_options.include_usage";

pub(super) fn parse(
    endpoint: Endpoint,
    body: &[u8],
    keep_texts: bool,
) -> Result<ParsedRequest<'_>, BodyError> {
    // JSON text is UTF-8: serde_json checks it only in the strings it
    // decodes, not in those it skips or reads as bytes (found by fuzzing).
    // Nor raw control characters in strings it reads as bytes: outside
    // \t \n \r (whitespace) none may appear raw anywhere in JSON text.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(BodyError::InvalidJson {
            message: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        });
    }
    if let Some(at) = raw_control(body) {
        return Err(BodyError::InvalidJson {
            message: format!("raw control character at byte {at}"),
        });
    }
    let mut scan = Scan::new(endpoint, body, keep_texts);
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = (&mut de).deserialize_map(&mut scan).and_then(|()| de.end());
    match walked {
        Ok(()) => scan.finish(),
        Err(e) => Err(scan.error(&e)),
    }
}

/// The offset of the first control character other than `\t`, `\n`, `\r`
/// (checked 64 bytes at a time, which compiles to vector compares).
fn raw_control(body: &[u8]) -> Option<usize> {
    let bad = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    body.chunks(64)
        .position(|c| c.iter().fold(false, |acc, &b| acc | bad(b)))
        .and_then(|chunk| {
            let start = chunk * 64;
            body[start..]
                .iter()
                .position(|&b| bad(b))
                .map(|i| start + i)
        })
}

// === impl Field ===

impl Field {
    fn of(endpoint: Endpoint, key: &[u8]) -> Self {
        use Endpoint::{ChatCompletions as Chat, Embeddings, Messages, Responses};
        match (key, endpoint) {
            (b"model", _) => Self::Model,
            (b"stream", Chat | Responses | Messages) => Self::Stream,
            (b"stream_options", Chat) => Self::StreamOptions,
            (b"max_tokens", Chat | Messages) => Self::MaxTokens,
            (b"max_completion_tokens", Chat) => Self::MaxCompletionTokens,
            (b"max_output_tokens", Responses) => Self::MaxOutputTokens,
            (b"n", Chat) => Self::Choices,
            (b"previous_response_id", Responses) => Self::PreviousResponseId,
            (b"conversation", Responses) => Self::Conversation,
            (b"prompt", Responses) => Self::Prompt,
            (b"mcp_servers", Messages) => Self::McpServers,
            (b"container", Messages) => Self::Container,
            (b"web_search_options", Chat) => Self::WebSearchOptions,
            (b"tools", Chat | Responses | Messages) => Self::Tools,
            (b"functions", Chat) => Self::Functions,
            (b"messages", Chat | Messages) => Self::Messages,
            (b"system", Messages) => Self::System,
            (b"instructions", Responses) => Self::Instructions,
            (b"input", Responses | Embeddings) => Self::Input,
            _ => Self::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Stream => "stream",
            Self::StreamOptions => "stream_options",
            Self::MaxTokens => "max_tokens",
            Self::MaxCompletionTokens => "max_completion_tokens",
            Self::MaxOutputTokens => "max_output_tokens",
            Self::Choices => "n",
            Self::PreviousResponseId => "previous_response_id",
            Self::Conversation => "conversation",
            Self::Prompt => "prompt",
            Self::McpServers => "mcp_servers",
            Self::Container => "container",
            Self::WebSearchOptions => "web_search_options",
            Self::Tools => "tools",
            Self::Functions => "functions",
            Self::Messages => "messages",
            Self::System => "system",
            Self::Instructions => "instructions",
            Self::Input => "input",
            Self::Other => "",
        }
    }

    fn expected(self, endpoint: Endpoint) -> &'static str {
        match self {
            Self::Model | Self::Instructions => "a string",
            Self::Stream => "a boolean",
            Self::StreamOptions => "an object",
            Self::MaxTokens | Self::MaxCompletionTokens | Self::MaxOutputTokens | Self::Choices => {
                "a non-negative integer"
            }
            Self::Tools | Self::Functions => "an array",
            Self::PreviousResponseId
            | Self::Conversation
            | Self::Prompt
            | Self::McpServers
            | Self::Container
            | Self::WebSearchOptions => "valid JSON",
            Self::Messages => "an array of messages",
            Self::System => "a string or an array of content blocks",
            Self::Input if endpoint == Endpoint::Embeddings => "a string or an array",
            Self::Input => "a string or an array of input items",
            Self::Other => "valid JSON",
        }
    }

    fn bit(self) -> u32 {
        match self {
            Self::Other => 0,
            field => 1 << (field as u32),
        }
    }

    /// For a member that makes the provider bill input the body does not
    /// carry: what it references.
    fn reference(self) -> Option<&'static str> {
        Some(match self {
            Self::PreviousResponseId => "a previous_response_id",
            Self::Conversation => "a conversation",
            Self::Prompt => "a stored prompt",
            Self::McpServers => "MCP servers",
            Self::Container => "a container",
            Self::WebSearchOptions => "web search",
            _ => return None,
        })
    }

    fn type_error(self, endpoint: Endpoint) -> BodyError {
        BodyError::FieldType {
            field: self.name(),
            expected: self.expected(endpoint),
        }
    }
}

/// Reads a top-level key by its unescaped bytes (`deserialize_bytes`: keys
/// holding lone surrogates are accepted).
#[derive(Clone, Copy)]
struct Key(Endpoint);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Field;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
        Ok(Field::of(self.0, v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::of(self.0, v.as_bytes()))
    }
}

// === impl Scan ===

impl<'a> Scan<'a> {
    fn new(endpoint: Endpoint, body: &'a [u8], keep_texts: bool) -> Self {
        Self {
            endpoint,
            body,
            fail: None,
            current: None,
            seen: 0,
            members: 0,
            model: None,
            model_text: None,
            stream: None,
            stream_options: None,
            include_usage: None,
            max_tokens: None,
            max_completion_tokens: None,
            max_output_tokens: None,
            choices: None,
            tools: 0,
            sink: Sink::new(keep_texts),
        }
    }

    /// Stops the walk with `err` (reported by [`Scan::error`]).
    fn fail<E: de::Error>(&mut self, err: BodyError) -> E {
        let e = E::custom(&err);
        self.fail = Some(err);
        e
    }

    fn error(&mut self, e: &serde_json::Error) -> BodyError {
        if let Some(fail) = self.fail.take() {
            return fail;
        }
        match (e.classify(), self.current) {
            // The only data errors serde raises are type errors: of the field
            // being read, or of the body itself.
            (Category::Data, Some(field)) => field.type_error(self.endpoint),
            (Category::Data, None) => BodyError::NotAnObject,
            (Category::Io | Category::Syntax | Category::Eof, _) => BodyError::InvalidJson {
                message: e.to_string(),
            },
        }
    }

    /// The span of a borrowed raw value in the body.
    fn span<E: de::Error>(&mut self, raw: &RawValue) -> Result<Range<usize>, E> {
        let text = raw.get();
        let span = text
            .as_ptr()
            .addr()
            .checked_sub(self.body.as_ptr().addr())
            .and_then(|start| Some(start..start.checked_add(text.len())?))
            .filter(|span| span.end <= self.body.len());
        match span {
            Some(span) => Ok(span),
            // serde_json borrows raw values from a slice input; never reached.
            None => Err(self.fail(BodyError::InvalidJson {
                message: "internal error: a value was not borrowed from the body".into(),
            })),
        }
    }

    fn value<A: MapAccess<'a>>(&mut self, field: Field, map: &mut A) -> Result<(), A::Error> {
        let endpoint = self.endpoint;
        let sink = &mut self.sink;
        match field {
            Field::Model => {
                let raw: &'a RawValue = map.next_value()?;
                let span = self.span(raw)?;
                self.model_text = match raw.get().as_bytes().first() {
                    Some(b'"') => extract::raw_text(raw),
                    Some(b'n') => None,
                    _ => return Err(self.fail(field.type_error(endpoint))),
                };
                self.model = Some(span);
            }
            Field::Stream => self.stream = map.next_value()?,
            Field::StreamOptions => {
                let raw: &'a RawValue = map.next_value()?;
                self.stream_options(raw)?;
            }
            Field::MaxTokens => self.max_tokens = map.next_value()?,
            Field::MaxCompletionTokens => self.max_completion_tokens = map.next_value()?,
            Field::MaxOutputTokens => self.max_output_tokens = map.next_value()?,
            Field::Choices => self.choices = map.next_value()?,
            Field::Tools => {
                let (n, hidden) = map.next_value_seed(Tools(endpoint))?;
                self.tools = self.tools.saturating_add(n);
                if let Some(kind) = hidden {
                    sink.unseen(kind);
                }
            }
            Field::Functions => {
                self.tools = self.tools.saturating_add(map.next_value_seed(Count)?);
            }
            Field::PreviousResponseId
            | Field::Conversation
            | Field::Prompt
            | Field::McpServers
            | Field::Container
            | Field::WebSearchOptions => {
                let raw: &'a RawValue = map.next_value()?;
                // `{}` counts: `web_search_options: {}` turns search on.
                if !matches!(raw.get(), "null" | "[]")
                    && let Some(what) = field.reference()
                {
                    sink.unseen(what);
                }
            }
            Field::Messages => {
                let parts = match endpoint {
                    Endpoint::Messages => Parts::TextAndToolResults,
                    _ => Parts::Text,
                };
                map.next_value_seed(extract::Messages { sink, parts })?;
            }
            Field::System => map.next_value_seed(extract::System { sink })?,
            Field::Instructions => {
                map.next_value_seed(extract::Input {
                    sink,
                    role: Role::System,
                    turn: false,
                })?;
            }
            Field::Input if endpoint == Endpoint::Embeddings => {
                map.next_value_seed(extract::EmbeddingInput { sink })?;
            }
            Field::Input => {
                map.next_value_seed(extract::Input {
                    sink,
                    role: Role::User,
                    turn: true,
                })?;
            }
            Field::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn stream_options<E: de::Error>(&mut self, raw: &'a RawValue) -> Result<(), E> {
        let span = self.span(raw)?;
        let layout = match raw.get().as_bytes().first() {
            Some(b'n') => StreamOptions::Null(span),
            Some(b'{') => {
                let members = match members(raw, "include_usage") {
                    Ok(members) => members,
                    Err(e) => {
                        return Err(self.fail(BodyError::InvalidJson {
                            message: e.to_string(),
                        }));
                    }
                };
                let include_usage = match members.matches.as_slice() {
                    [] => None,
                    [value] => {
                        self.include_usage = match value.get() {
                            "true" => Some(true),
                            "false" => Some(false),
                            "null" => None,
                            _ => {
                                let expected = "a boolean";
                                let err = BodyError::FieldType {
                                    field: INCLUDE_USAGE,
                                    expected,
                                };
                                return Err(self.fail(err));
                            }
                        };
                        Some(self.span(value)?)
                    }
                    _ => {
                        return Err(self.fail(BodyError::DuplicateKey {
                            field: INCLUDE_USAGE,
                        }));
                    }
                };
                StreamOptions::Object {
                    close: span.end.saturating_sub(1),
                    has_members: members.count > 0,
                    include_usage,
                }
            }
            _ => return Err(self.fail(Field::StreamOptions.type_error(self.endpoint))),
        };
        self.stream_options = Some(layout);
        Ok(())
    }

    fn finish(self) -> Result<ParsedRequest<'a>, BodyError> {
        // After `end()` only JSON whitespace follows the object.
        let close = self
            .body
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        let Some(close) = close.filter(|&at| self.body.get(at) == Some(&b'}')) else {
            return Err(BodyError::InvalidJson {
                message: "internal error: the object's closing brace was not found".into(),
            });
        };
        let max_output_tokens = match self.endpoint {
            Endpoint::ChatCompletions => match (self.max_tokens, self.max_completion_tokens) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            Endpoint::Responses => self.max_output_tokens,
            Endpoint::Messages => self.max_tokens,
            Endpoint::Embeddings => None,
        };
        Ok(ParsedRequest {
            endpoint: self.endpoint,
            model: self.model_text,
            stream: self.stream.unwrap_or(false),
            include_usage: self.include_usage,
            max_output_tokens,
            choices: self.choices.unwrap_or(1).max(1),
            tool_definitions: self.tools,
            unseen_input: self.sink.unseen,
            messages: self.sink.texts,
            turns: self.sink.turns,
            layout: Layout {
                body_addr: self.body.as_ptr().addr(),
                body_len: self.body.len(),
                close,
                has_members: self.members > 0,
                model: self.model,
                stream_options: self.stream_options,
            },
        })
    }
}

impl<'a> Visitor<'a> for &mut Scan<'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key_seed(Key(self.endpoint))? {
            self.members += 1;
            if self.seen & field.bit() != 0 {
                return Err(self.fail(BodyError::DuplicateKey {
                    field: field.name(),
                }));
            }
            self.seen |= field.bit();
            self.current = Some(field);
            self.value(field, &mut map)?;
            self.current = None;
        }
        Ok(())
    }
}

/// Reads the members of the object `raw` (valid JSON: it was just walked).
fn members<'a>(raw: &'a RawValue, key: &'static str) -> Result<Members<'a>, serde_json::Error> {
    struct V(&'static str);

    impl<'a> Visitor<'a> for V {
        type Value = Members<'a>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
            let mut members = Members {
                count: 0,
                matches: Vec::new(),
            };
            let keys = [self.0];
            while let Some(k) = map.next_key_seed(KeyIn(&keys))? {
                members.count += 1;
                let value: &'a RawValue = map.next_value()?;
                if k.is_some() {
                    members.matches.push(value);
                }
            }
            Ok(members)
        }
    }

    serde_json::Deserializer::from_str(raw.get()).deserialize_map(V(key))
}

/// The `tools` array: how many, and whether one runs on the provider's side
/// (its results are input the body does not carry): returns the first such
/// tool's kind.
struct Tools(Endpoint);

impl<'de> DeserializeSeed<'de> for Tools {
    type Value = (usize, Option<&'static str>);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Tools {
    type Value = (usize, Option<&'static str>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, None))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut n, mut hidden) = (0usize, None);
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            n = n.saturating_add(1);
            if hidden.is_none() {
                hidden = server_side_tool(self.0, raw);
            }
        }
        Ok((n, hidden))
    }
}

/// A tool the provider runs itself (web search, file search, code
/// execution, MCP, image generation, …): its results are billed as input
/// the request does not carry. Client tools (functions, custom tools, and
/// the tools whose calls the client executes and answers in its next
/// request) are not.
fn server_side_tool(endpoint: Endpoint, raw: &RawValue) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Tool<'a> {
        #[serde(default, borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
    }
    let tool = serde_json::from_str::<Tool<'_>>(raw.get()).ok()?;
    let kind = tool.kind?;
    let client = match endpoint {
        Endpoint::ChatCompletions => matches!(kind.as_ref(), "function" | "custom"),
        Endpoint::Responses => matches!(
            kind.as_ref(),
            "function"
                | "custom"
                | "computer_use_preview"
                | "computer-preview"
                | "local_shell"
                | "shell"
                | "apply_patch"
        ),
        Endpoint::Messages => {
            kind == "custom"
                || ["bash_", "text_editor_", "computer_", "memory_"]
                    .iter()
                    .any(|p| kind.starts_with(p))
        }
        Endpoint::Embeddings => true,
    };
    (!client).then_some("a server-side tool")
}
