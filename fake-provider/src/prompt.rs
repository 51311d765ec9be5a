//! A request's prompt as the providers' caches see it: its blocks in render order, as the raw
//! JSON bytes of the request body (never re-serialized), and Anthropic's `cache_control`
//! breakpoints with their validation.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de};
use serde_json::value::RawValue;

/// Most `cache_control` breakpoints Anthropic accepts in one request.
pub(crate) const MAX_BREAKPOINTS: usize = 4;

/// A breakpoint's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    FiveMinutes,
    OneHour,
}

impl Ttl {
    fn label(self) -> &'static str {
        match self {
            Ttl::FiveMinutes => "5m",
            Ttl::OneHour => "1h",
        }
    }
}

/// Where a block sits, for hashing and for error paths (`tools.0`, `system.1`,
/// `messages.2.content.0`).
#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    Tool(usize),
    /// `system` as a string (`None`) or its `n`th element.
    System(Option<usize>),
    /// Message `m` (with its raw `role`), its string content (`None`) or its `n`th element.
    Message {
        m: usize,
        n: Option<usize>,
        role: Option<&'a RawValue>,
    },
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Tool(i) => write!(f, "tools.{i}"),
            Place::System(None) => f.write_str("system"),
            Place::System(Some(i)) => write!(f, "system.{i}"),
            Place::Message { m, n: None, .. } => write!(f, "messages.{m}.content"),
            Place::Message { m, n: Some(n), .. } => write!(f, "messages.{m}.content.{n}"),
        }
    }
}

/// One block of an Anthropic prompt.
#[derive(Debug)]
pub(crate) struct Block<'a> {
    /// The block's bytes exactly as in the request body.
    pub raw: &'a RawValue,
    place: Place<'a>,
    /// The members of an object block, in body order.
    members: Option<Vec<(String, &'a RawValue)>>,
    breakpoint: Option<Ttl>,
}

impl Block<'_> {
    /// Feeds what identifies the block's content: its place in the structure (section, the
    /// message's role at the message's first block) and its bytes without the `cache_control`
    /// member, so moving a breakpoint does not change the cached content (as with the real API).
    pub(crate) fn feed(&self, write: &mut dyn FnMut(&[u8])) {
        let mut field = |bytes: &[u8]| {
            write(&(bytes.len() as u64).to_le_bytes());
            write(bytes);
        };
        match self.place {
            Place::Tool(_) => field(b"tool"),
            Place::System(_) => field(b"system"),
            Place::Message { n, role, .. } => {
                if n.is_none_or(|n| n == 0) {
                    field(b"message");
                    field(role.map_or(&b""[..], |r| r.get().as_bytes()));
                }
                field(b"block");
            }
        }
        // A string is shorthand for one text block (`"content": "hi"` renders as
        // `[{"type": "text", "text": "hi"}]`): both are the text's bytes.
        if let Some(text) = self.text() {
            field(b"text");
            field(text);
            return;
        }
        match &self.members {
            Some(members) => {
                for (k, v) in members.iter().filter(|(k, _)| k != "cache_control") {
                    field(k.as_bytes());
                    field(v.get().as_bytes());
                }
            }
            None => field(self.raw.get().as_bytes()),
        }
    }

    /// The string literal of a plain text block: a string, or an object whose members
    /// besides `cache_control` are exactly `type: "text"` and `text`.
    fn text(&self) -> Option<&[u8]> {
        let Some(members) = &self.members else {
            let raw = self.raw.get().as_bytes();
            return raw.starts_with(b"\"").then_some(raw);
        };
        let mut kept = members.iter().filter(|(k, _)| k != "cache_control");
        let (a, b) = (kept.next()?, kept.next()?);
        if kept.next().is_some() {
            return None;
        }
        let (ty, text) = if a.0 == "type" { (a, b) } else { (b, a) };
        (ty.0 == "type"
            && ty.1.get() == "\"text\""
            && text.0 == "text"
            && text.1.get().starts_with('"'))
        .then(|| text.1.get().as_bytes())
    }
}

/// An Anthropic prompt: tools, then system, then messages, one [`Block`] per tool, system
/// element (or the system string) and message content element (or string content).
#[derive(Debug, Default)]
pub(crate) struct AnthropicPrompt<'a> {
    pub blocks: Vec<Block<'a>>,
}

impl AnthropicPrompt<'_> {
    /// `(block index, TTL)` of every breakpoint, in render order.
    pub(crate) fn breakpoints(&self) -> impl Iterator<Item = (usize, Ttl)> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.breakpoint.map(|t| (i, t)))
    }
}

#[derive(Deserialize)]
struct RawAnthropic<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<RawMessage<'a>>>,
    #[serde(borrow, default)]
    cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// An object's members with their raw values, in order.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The elements of a JSON array, or the value itself as one element.
fn elements(raw: &RawValue) -> Vec<(Option<usize>, &RawValue)> {
    if raw.get().starts_with('[')
        && let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get())
    {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Some(i), v))
            .collect();
    }
    vec![(None, raw)]
}

/// A `cache_control` value's TTL, or Anthropic's 400 message; `null` is no breakpoint.
fn breakpoint(value: &RawValue, path: &str) -> Result<Option<Ttl>, String> {
    #[derive(Deserialize)]
    struct CacheControl {
        #[serde(rename = "type", default)]
        kind: Option<serde_json::Value>,
        #[serde(default)]
        ttl: Option<serde_json::Value>,
    }
    if value.get() == "null" {
        return Ok(None);
    }
    let cc: CacheControl = serde_json::from_str(value.get())
        .map_err(|_| format!("{path}.cache_control: Input should be a valid dictionary"))?;
    if cc.kind.as_ref().and_then(|k| k.as_str()) != Some("ephemeral") {
        return Err(format!(
            "{path}.cache_control.type: Input should be 'ephemeral'"
        ));
    }
    match cc.ttl.as_ref().map(|t| t.as_str()) {
        None | Some(Some("5m")) => Ok(Some(Ttl::FiveMinutes)),
        Some(Some("1h")) => Ok(Some(Ttl::OneHour)),
        Some(_) => Err(format!(
            "{path}.cache_control.ttl: Input should be '5m' or '1h'"
        )),
    }
}

fn block<'a>(raw: &'a RawValue, place: Place<'a>) -> Result<Block<'a>, String> {
    let members = if raw.get().starts_with('{') {
        serde_json::from_str::<Members<'a>>(raw.get())
            .ok()
            .map(|m| m.0)
    } else {
        None
    };
    let cc = members
        .as_ref()
        .and_then(|m| m.iter().find(|(k, _)| k == "cache_control"))
        .map(|(_, v)| *v);
    let breakpoint = match cc {
        Some(v) => breakpoint(v, &place.to_string())?,
        None => None,
    };
    Ok(Block {
        raw,
        place,
        members,
        breakpoint,
    })
}

/// The prompt of a `POST /v1/messages` body, or Anthropic's 400 message for its
/// `cache_control` markup: a bad `type` or `ttl`, more than [`MAX_BREAKPOINTS`] breakpoints, a
/// 1-hour breakpoint after a 5-minute one, or a top-level `cache_control` (automatic caching:
/// a breakpoint on the last block) whose TTL differs from the one already on that block. A body
/// without `cache_control` anywhere has nothing cached, and is not parsed.
pub(crate) fn anthropic(body: &[u8]) -> Result<AnthropicPrompt<'_>, String> {
    const NEEDLE: &[u8] = b"\"cache_control\"";
    if !body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return Ok(AnthropicPrompt::default());
    }
    // The body already parsed as JSON; a shape the fake does not understand caches nothing.
    let Ok(raw) = serde_json::from_slice::<RawAnthropic<'_>>(body) else {
        return Ok(AnthropicPrompt::default());
    };
    let mut blocks = Vec::new();
    for (i, tool) in raw.tools.iter().flatten().enumerate() {
        blocks.push(block(tool, Place::Tool(i))?);
    }
    for (n, element) in raw.system.map(elements).unwrap_or_default() {
        blocks.push(block(element, Place::System(n))?);
    }
    for (m, message) in raw.messages.iter().flatten().enumerate() {
        for (n, element) in message.content.map(elements).unwrap_or_default() {
            let place = Place::Message {
                m,
                n,
                role: message.role,
            };
            blocks.push(block(element, place)?);
        }
    }
    if let Some(top) = raw.cache_control
        && let Some(ttl) = breakpoint(top, "cache_control")?
        && let Some(last) = blocks.last_mut()
    {
        match last.breakpoint {
            None => last.breakpoint = Some(ttl),
            Some(own) if own == ttl => {}
            Some(own) => {
                return Err(format!(
                    "Top-level cache_control has ttl='{}' but the target block already has cache_control with ttl='{}'",
                    ttl.label(),
                    own.label()
                ));
            }
        }
    }
    let prompt = AnthropicPrompt { blocks };
    let found = prompt.breakpoints().count();
    if found > MAX_BREAKPOINTS {
        return Err(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        ));
    }
    let mut seen_5m = false;
    for (i, ttl) in prompt.breakpoints() {
        match ttl {
            Ttl::FiveMinutes => seen_5m = true,
            Ttl::OneHour if seen_5m => {
                return Err(format!(
                    "{}.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`.",
                    prompt.blocks[i].place
                ));
            }
            Ttl::OneHour => {}
        }
    }
    Ok(prompt)
}

/// An OpenAI prompt: its blocks' raw bytes in order, and the `prompt_cache_key`.
#[derive(Debug, Default)]
pub(crate) struct OpenAiPrompt<'a> {
    pub blocks: Vec<&'a [u8]>,
    pub cache_key: Option<String>,
}

#[derive(Deserialize)]
struct RawOpenAi<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "string_or_none")]
    prompt_cache_key: Option<String>,
}

/// A string, or `None` for anything else (the fake does not validate `prompt_cache_key`).
fn string_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d).map_err(de::Error::custom)?;
    Ok(v.as_str().map(str::to_string))
}

/// The prompt of a chat completion (`tools[]` then `messages[]`) or, with `responses`, of a
/// Responses request (`tools[]`, `instructions`, then each `input` item, a string input being
/// one block). A shape the fake does not understand is an empty prompt.
pub(crate) fn openai(body: &[u8], responses: bool) -> OpenAiPrompt<'_> {
    let Ok(raw) = serde_json::from_slice::<RawOpenAi<'_>>(body) else {
        return OpenAiPrompt::default();
    };
    fn bytes<'a>(v: &&'a RawValue) -> &'a [u8] {
        v.get().as_bytes()
    }
    let mut blocks: Vec<&[u8]> = raw.tools.iter().flatten().map(bytes).collect();
    if responses {
        blocks.extend(raw.instructions.iter().map(bytes));
        for (_, item) in raw.input.map(elements).unwrap_or_default() {
            blocks.push(item.get().as_bytes());
        }
    } else {
        blocks.extend(raw.messages.iter().flatten().map(bytes));
    }
    OpenAiPrompt {
        blocks,
        cache_key: raw.prompt_cache_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttls(body: &str) -> Vec<(usize, Ttl)> {
        anthropic(body.as_bytes()).unwrap().breakpoints().collect()
    }

    #[test]
    fn blocks_in_render_order() {
        let body = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]}],"system":"sys","tools":[{"name":"t","cache_control":{"type":"ephemeral","ttl":"1h"}}]}"#;
        let p = anthropic(body.as_bytes()).unwrap();
        let raws: Vec<&str> = p.blocks.iter().map(|b| b.raw.get()).collect();
        assert_eq!(
            raws,
            vec![
                r#"{"name":"t","cache_control":{"type":"ephemeral","ttl":"1h"}}"#,
                r#""sys""#,
                r#""hi""#,
                r#"{"type":"text","text":"a"}"#,
                r#"{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}"#,
            ]
        );
        assert_eq!(ttls(body), vec![(0, Ttl::OneHour), (4, Ttl::FiveMinutes)]);
    }

    #[test]
    fn a_string_and_one_text_block_are_the_same_content() {
        let hash = |body: &str| {
            let p = anthropic(body.as_bytes()).unwrap();
            p.blocks
                .iter()
                .map(|b| {
                    let mut bytes = Vec::new();
                    b.feed(&mut |x| bytes.extend_from_slice(x));
                    bytes
                })
                .collect::<Vec<_>>()
        };
        let plain = r#"{"system":"s","messages":[{"role":"user","content":"hi"}],"tools":[{"name":"t","cache_control":{"type":"ephemeral"}}]}"#;
        let block = r#"{"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"text":"hi","type":"text","cache_control":{"type":"ephemeral"}}]}],"tools":[{"name":"t","cache_control":{"type":"ephemeral"}}]}"#;
        assert_eq!(hash(plain), hash(block));
        let other = block.replace(r#""text":"hi""#, r#""text":"ho""#);
        assert_ne!(hash(plain), hash(&other));
        let image = block.replace(r#""type":"text""#, r#""type":"text","citations":[]"#);
        assert_ne!(hash(plain), hash(&image));
    }

    #[test]
    fn no_markup_is_not_parsed() {
        let p = anthropic(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(p.blocks.is_empty());
    }

    #[test]
    fn validation_messages() {
        let err = |body: &str| anthropic(body.as_bytes()).unwrap_err();
        let cc = r#"{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}"#;
        let five =
            format!(r#"{{"messages":[{{"role":"user","content":[{cc},{cc},{cc},{cc},{cc}]}}]}}"#);
        assert_eq!(
            err(&five),
            "A maximum of 4 blocks with cache_control may be provided. Found 5."
        );
        assert_eq!(
            err(
                r#"{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"text","text":"b","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[]}"#
            ),
            "system.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`."
        );
        assert_eq!(
            err(
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral","ttl":"10m"}}]}]}"#
            ),
            "messages.0.content.0.cache_control.ttl: Input should be '5m' or '1h'"
        );
        assert_eq!(
            err(r#"{"tools":[{"name":"a","cache_control":{"type":"persistent"}}],"messages":[]}"#),
            "tools.0.cache_control.type: Input should be 'ephemeral'"
        );
        assert_eq!(
            err(
                r#"{"cache_control":{"type":"ephemeral"},"messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}"#
            ),
            "Top-level cache_control has ttl='5m' but the target block already has cache_control with ttl='1h'"
        );
    }

    #[test]
    fn top_level_marks_the_last_block() {
        let body = r#"{"cache_control":{"type":"ephemeral","ttl":"1h"},"system":"s","messages":[{"role":"user","content":"a"}]}"#;
        assert_eq!(ttls(body), vec![(1, Ttl::OneHour)]);
    }

    #[test]
    fn content_hash_ignores_cache_control() {
        let fed = |raw: &str| {
            let body = format!(
                r#"{{"cache_control":null,"messages":[{{"role":"user","content":[{raw}]}}]}}"#
            );
            let prompt = anthropic(body.as_bytes()).unwrap();
            let mut out = Vec::new();
            for b in &prompt.blocks {
                b.feed(&mut |x| out.extend_from_slice(x));
            }
            out
        };
        assert_eq!(
            fed(r#"{"type":"text","text":"a","cache_control":{"type":"ephemeral"}}"#),
            fed(r#"{"type":"text","text":"a"}"#)
        );
        assert_ne!(
            fed(r#"{"type":"text","text":"a"}"#),
            fed(r#"{"type":"text","text":"b"}"#)
        );
    }

    #[test]
    fn openai_blocks() {
        let chat = openai(
            br#"{"model":"m","tools":[{"a":1}],"messages":[{"role":"user","content":"x"}],"prompt_cache_key":"k"}"#,
            false,
        );
        assert_eq!(
            chat.blocks,
            vec![&br#"{"a":1}"#[..], &br#"{"role":"user","content":"x"}"#[..]]
        );
        assert_eq!(chat.cache_key.as_deref(), Some("k"));
        let resp = openai(br#"{"instructions":"i","input":"hello"}"#, true);
        assert_eq!(resp.blocks, vec![&br#""i""#[..], &br#""hello""#[..]]);
        let items = openai(br#"{"input":[{"x":1},{"y":2}]}"#, true);
        assert_eq!(items.blocks.len(), 2);
    }
}
