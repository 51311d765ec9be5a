//! Feature extraction: one pass over a bounded amount of text.

use serde::{Deserialize, Serialize};

use super::keywords::{self, Hits};
use super::{RequestView, Role};

/// Of the first user message (the task statement), at most this many leading
/// bytes are scanned for text features.
pub const SCAN_FIRST_USER_BYTES: usize = 8 * 1024;

/// Of the last user message, at most this many bytes are scanned: all of it
/// when it fits, otherwise its first and last `SCAN_LAST_USER_BYTES / 2`
/// bytes (the question is usually at one end of a pasted log or file).
pub const SCAN_LAST_USER_BYTES: usize = 16 * 1024;

/// What the classifier measured. Counts come from the scanned text (see
/// [`SCAN_FIRST_USER_BYTES`], [`SCAN_LAST_USER_BYTES`]); `prompt_bytes`,
/// `tool_definitions` and `conversation_turns` cover the whole request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// UTF-8 bytes of the conversation's message texts. System messages are
    /// not counted: an agent's system prompt (instructions, repository
    /// rules, tool manuals) is the same on every call and says nothing about
    /// how hard this request is.
    pub prompt_bytes: u64,
    /// Bytes actually scanned for the text features below.
    pub scanned_bytes: u64,
    /// Fenced code blocks (```` ``` ```` or `~~~`).
    pub code_blocks: u32,
    /// Code-like lines.
    pub code_lines: u32,
    /// Stack-trace / error-dump lines.
    pub stack_trace_lines: u32,
    /// Reasoning keyword hits.
    pub reasoning_keywords: u32,
    /// Design / architecture keyword hits.
    pub design_keywords: u32,
    /// Concurrency / performance / security keyword hits.
    pub concurrency_keywords: u32,
    /// Debugging keyword hits.
    pub debugging_keywords: u32,
    /// Simple-task marker hits (push down).
    pub simple_markers: u32,
    /// "The fix is in the request" hits (push down).
    pub solution_hints: u32,
    /// Tool definitions sent with the request.
    pub tool_definitions: u32,
    /// Non-system messages, consecutive messages of one role counted once.
    pub conversation_turns: u32,
}

/// Extracts the features of a request.
pub fn extract(req: &RequestView<'_>) -> Features {
    let mut f = Features {
        tool_definitions: u32::try_from(req.tool_definitions).unwrap_or(u32::MAX),
        ..Features::default()
    };
    let mut last_role = None;
    for &(role, text) in req.messages {
        if role != Role::System {
            f.prompt_bytes = f.prompt_bytes.saturating_add(text.len() as u64);
        }
        if role != Role::System && last_role != Some(role) {
            f.conversation_turns = f.conversation_turns.saturating_add(1);
        }
        if role != Role::System {
            last_role = Some(role);
        }
    }

    let first_user = req.messages.iter().position(|(r, _)| *r == Role::User);
    let last_user = req.messages.iter().rposition(|(r, _)| *r == Role::User);
    let mut scan = Scan::default();
    if let Some(first) = first_user
        && last_user != Some(first)
    {
        let text = req.messages[first].1.as_bytes();
        scan.window(&text[..text.len().min(SCAN_FIRST_USER_BYTES)]);
    }
    if let Some(last) = last_user {
        let text = req.messages[last].1.as_bytes();
        if text.len() <= SCAN_LAST_USER_BYTES {
            scan.window(text);
        } else {
            let half = SCAN_LAST_USER_BYTES / 2;
            scan.window(&text[..half]);
            scan.window(&text[text.len() - half..]);
        }
    }

    f.scanned_bytes = scan.bytes;
    f.code_blocks = scan.code_blocks;
    f.code_lines = scan.code_lines;
    f.stack_trace_lines = scan.trace_lines;
    f.reasoning_keywords = scan.hits.reasoning;
    f.design_keywords = scan.hits.design;
    f.concurrency_keywords = scan.hits.concurrency;
    f.debugging_keywords = scan.hits.debugging;
    f.simple_markers = scan.hits.simple;
    f.solution_hints = scan.hits.hint;
    f
}

#[derive(Default)]
struct Scan {
    bytes: u64,
    code_blocks: u32,
    code_lines: u32,
    trace_lines: u32,
    hits: Hits,
}

impl Scan {
    /// Scans one contiguous window (line state starts fresh).
    fn window(&mut self, text: &[u8]) {
        self.bytes = self.bytes.saturating_add(text.len() as u64);
        keywords::scan(text, &mut self.hits);
        let mut in_fence = false;
        for raw in text.split(|&b| b == b'\n') {
            let line = raw.trim_ascii();
            if line.starts_with(b"```") || line.starts_with(b"~~~") {
                if !in_fence {
                    self.code_blocks = self.code_blocks.saturating_add(1);
                }
                in_fence = !in_fence;
                continue;
            }
            if line.len() > MAX_CLASSIFIED_LINE_BYTES {
                continue;
            }
            let code = if in_fence {
                is_code_in_fence(line)
            } else {
                is_code_in_prose(line)
            };
            if code {
                self.code_lines = self.code_lines.saturating_add(1);
            }
            if is_trace_line(line) {
                self.trace_lines = self.trace_lines.saturating_add(1);
            }
        }
    }
}

/// Longer lines (minified code, base64, one-line logs) are neither code nor
/// trace lines; this keeps the per-line checks linear in the scanned bytes.
const MAX_CLASSIFIED_LINE_BYTES: usize = 1024;

/// Line starts that mark code (case-sensitive: "For example" is prose).
const CODE_STARTS: &[&[u8]] = &[
    b"def ",
    b"class ",
    b"fn ",
    b"func ",
    b"pub ",
    b"import ",
    b"from ",
    b"return ",
    b"#include",
    b"let ",
    b"const ",
    b"var ",
    b">>> ",
    b"$ ",
    b"if ",
    b"for ",
    b"while ",
    b"}",
];

/// Extra line starts that mark code inside a fence.
const FENCE_CODE_STARTS: &[&[u8]] = &[
    b"else",
    b"elif ",
    b"try",
    b"except",
    b"catch",
    b"package ",
    b"namespace ",
    b"struct ",
    b"impl ",
    b"use ",
    b"export ",
    b"public ",
    b"private ",
    b"static ",
    b"@",
    b"#[",
    b"#define",
    b"#if",
    b"#endif",
    b"#pragma",
    b"throw ",
    b"raise ",
    b"assert ",
];

/// Outside a fence, a line is code if it ends like a statement or block, or
/// starts with a declaration keyword. `line` is trimmed.
fn is_code_in_prose(line: &[u8]) -> bool {
    if line.is_empty() {
        return false;
    }
    line.ends_with(b";")
        || line.ends_with(b"{")
        || line.ends_with(b"}")
        || line.ends_with(b"):")
        || CODE_STARTS.iter().any(|s| line.starts_with(s))
}

/// Inside a fence, a line is code if it has code syntax; prose in
/// docstrings, sample output and blank lines do not count. `line` is trimmed.
fn is_code_in_fence(line: &[u8]) -> bool {
    let Some(&last) = line.last() else {
        return false;
    };
    (matches!(
        last,
        b';' | b'{' | b'}' | b'(' | b')' | b',' | b'[' | b']' | b':'
    ) && !line.ends_with(b"::"))
        || CODE_STARTS
            .iter()
            .chain(FENCE_CODE_STARTS)
            .any(|s| line.starts_with(s))
        || [&b" = "[..], b"=>", b"->", b"::", b"()", b"=="]
            .iter()
            .any(|n| contains(line, n))
}

/// Stack-trace and error-dump lines (Python, JVM, JS, Rust, Go, native).
/// `line` is trimmed.
fn is_trace_line(line: &[u8]) -> bool {
    const STARTS: &[&[u8]] = &[
        b"Traceback (most recent call last)",
        b"Exception in thread",
        b"Caused by:",
        b"stack backtrace:",
        b"----> ",
        b"---> ",
        b"E   ",
        b"goroutine ",
    ];
    if STARTS.iter().any(|s| line.starts_with(s)) {
        return true;
    }
    if line.starts_with(b"File \"") && contains(line, b"\", line ") {
        return true;
    }
    if line.starts_with(b"at ") && is_frame_location(line) {
        return true;
    }
    if contains(line, b"panicked at") || is_error_header(line) {
        return true;
    }
    // Native frames "#3 0x…", Rust backtrace frames "12: core::…".
    let digits = line
        .iter()
        .skip(usize::from(line.first() == Some(&b'#')))
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > 0 {
        let after = &line[digits + usize::from(line.first() == Some(&b'#'))..];
        if line.first() == Some(&b'#') && after.trim_ascii_start().starts_with(b"0x") {
            return true;
        }
        if after.starts_with(b": ") && contains(after, b"::") {
            return true;
        }
    }
    contains_ignore_case(line, b"segmentation fault") || contains_ignore_case(line, b"core dumped")
}

/// JVM / JS / .NET frame tails: `…(Foo.java:42)`, `… (/app/x.js:1:2)`,
/// `…(Native Method)`, `at /app/x.js:10:5`.
fn is_frame_location(line: &[u8]) -> bool {
    let tail = line.strip_suffix(b")").unwrap_or(line);
    let digits = tail.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    (digits > 0 && tail.len() > digits && tail[tail.len() - digits - 1] == b':')
        || line.ends_with(b"(Native Method)")
        || line.ends_with(b"(Unknown Source)")
}

/// `FooError: …`, `java.lang.IllegalStateException: …`.
fn is_error_header(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    match name.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return false,
    }
    name.iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
        && (name.ends_with(b"Error") || name.ends_with(b"Exception"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Features {
        extract(&RequestView {
            messages: &[(Role::User, text)],
            tool_definitions: 0,
        })
    }

    #[test]
    fn trace_lines() {
        for line in [
            "Traceback (most recent call last):",
            "  File \"/x/y.py\", line 12, in foo",
            "    at com.example.Foo.bar(Foo.java:42)",
            "    at Object.<anonymous> (/app/index.js:1:20)",
            "thread 'main' panicked at src/main.rs:3:5:",
            "ValueError: math domain error",
            "java.lang.IllegalStateException: boom",
            "#3  0x00007f in foo () at foo.c:12",
            "  12: core::panicking::panic",
            "Segmentation fault (core dumped)",
        ] {
            assert!(is_trace_line(line.trim_ascii().as_bytes()), "{line:?}");
        }
        for line in [
            "Raise a ValueError if the input is invalid.",
            "Error handling is up to you.",
            "at least one item (maybe two)",
            "1: first item",
        ] {
            assert!(!is_trace_line(line.as_bytes()), "{line:?}");
        }
    }

    #[test]
    fn code_lines_and_blocks() {
        let f = one(
            "Fix this:\n```python\ndef f(x):\n    \"\"\"Return x.\n    pass\n    return x == 1\n```\nFor example, call it.\nlet y = 2;\n",
        );
        assert_eq!(f.code_blocks, 1);
        // def f(x):, return x == 1, let y = 2;
        assert_eq!(f.code_lines, 3);
    }

    #[test]
    fn turns_count_role_runs_and_skip_system() {
        let msgs = [
            (Role::System, "be brief"),
            (Role::User, "a"),
            (Role::User, "b"),
            (Role::Assistant, "c"),
            (Role::Tool, "d"),
            (Role::User, "e"),
        ];
        let f = extract(&RequestView {
            messages: &msgs,
            tool_definitions: 3,
        });
        assert_eq!(f.conversation_turns, 4);
        assert_eq!(f.tool_definitions, 3);
        assert_eq!(f.prompt_bytes, 5, "the system message is not counted");
    }

    #[test]
    fn scanning_is_capped() {
        let big = "deadlock ".repeat(20_000); // 180 KB
        let f = one(&big);
        assert_eq!(f.prompt_bytes, big.len() as u64);
        assert_eq!(f.scanned_bytes, SCAN_LAST_USER_BYTES as u64);
        // First user message is scanned up to its cap, the last one in full.
        let msgs = [
            (Role::User, big.as_str()),
            (Role::Assistant, "ok"),
            (Role::User, "why?"),
        ];
        let f = extract(&RequestView {
            messages: &msgs,
            tool_definitions: 0,
        });
        assert_eq!(f.scanned_bytes, (SCAN_FIRST_USER_BYTES + 4) as u64);
        assert_eq!(f.reasoning_keywords, 1);
    }
}
