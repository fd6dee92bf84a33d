//! Bounds on what a template may be, checked on its source before MiniJinja parses it, and the
//! stack that compiling and rendering run on.
//!
//! MiniJinja parses and compiles recursively, and some of its recursion is unguarded: a chain of
//! operators (`{{ 1 + 1 + ... }}`), attributes (`event.data.data...`), filters (`x|f|f...`),
//! `not not ...` or `{% elif %}`s a few thousand long builds a syntax tree as deep as the chain,
//! and walking or freeing it overflows any thread's stack: the process aborts. At render time a
//! value nested deeply enough overflows the stack when it is printed, compared or freed. So:
//!
//! 1. [`check`] refuses, before parsing, a source longer than [`MAX_TEMPLATE_LEN`], a tag
//!    (`{{ ... }}` or `{% ... %}`) of more than [`MAX_TAG_TOKENS`] tokens or brackets nested
//!    more than [`MAX_TAG_NESTING`] deep, more than [`MAX_ELIFS`] `elif`s, and more than
//!    [`MAX_GROUPINGS`] brackets and commas in all tags together (each can nest a value one
//!    level deeper, so this bounds how deep a value a template can build).
//! 2. `namespace()` is removed from the environment: a namespace is MiniJinja's one mutable value,
//!    and with it a loop can nest a value a hundred thousand levels deep, or make a namespace
//!    contain itself, which no stack survives printing.
//! 3. Compiling and rendering run through [`on_big_stack`]: when less than [`STACK_NEEDED`] of the
//!    current thread's stack is left (tokio's workers have 2 MiB), the work runs on a fresh
//!    [`STACK_SIZE`] stack segment. The tests render the worst templates the limits let through,
//!    in debug builds, on a thread with a small stack.

/// Longest template source accepted: a template cannot usefully be longer than the output a
/// rendered field may have ([`crate::MAX_OUTPUT`]).
pub const MAX_TEMPLATE_LEN: usize = crate::MAX_OUTPUT;
/// Most tokens (names, literals, operators, brackets) one `{{ ... }}` or `{% ... %}` tag may have.
pub const MAX_TAG_TOKENS: usize = 256;
/// Deepest nesting of brackets inside one tag.
pub const MAX_TAG_NESTING: usize = 32;
/// Most `{% elif %}` tags in one template (each nests the parser one level deeper).
pub const MAX_ELIFS: usize = 256;
/// Most brackets and commas in all the tags of one template together.
pub const MAX_GROUPINGS: usize = 2_000;
/// Stack that must be left for compiling or rendering on the current thread; with less, the work
/// moves to a fresh segment of [`STACK_SIZE`]. The worst accepted template needs a few MiB in
/// debug builds and far less in release builds.
pub const STACK_NEEDED: usize = 16 * 1024 * 1024;
/// Size of the stack segment compiling and rendering move to when the thread's own is short. Only
/// the pages actually used are committed. Threads created with at least this much stack (the
/// relay's runtime threads) never need to switch.
pub const STACK_SIZE: usize = 32 * 1024 * 1024;

/// Runs `f` with at least [`STACK_NEEDED`] of stack.
pub(crate) fn on_big_stack<T>(f: impl FnOnce() -> T) -> T {
    stacker::maybe_grow(STACK_NEEDED, STACK_SIZE, f)
}

/// Why a template's source was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooLong { len: usize },
    LiteralTooLong { len: usize },
    TagTooLong { line: usize, tokens: usize },
    TagTooDeep { line: usize, depth: usize },
    TooManyElifs { count: usize },
    TooManyGroupings { count: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = crate::MAX_OUTPUT;
        match self {
            Refusal::TooLong { len } => write!(
                f,
                "the template is {len} bytes; the limit is {MAX_TEMPLATE_LEN} bytes (1 MiB, what a rendered field may be)"
            ),
            Refusal::LiteralTooLong { len } => write!(
                f,
                "the text is {len} bytes; a rendered field may be at most {max} bytes (1 MiB), literal text included"
            ),
            Refusal::TagTooLong { line, tokens } => write!(
                f,
                "line {line}: a tag of {tokens} tokens; the limit is {MAX_TAG_TOKENS} per {{{{ ... }}}} or {{% ... %}} (split a long chain with {{% set %}})"
            ),
            Refusal::TagTooDeep { line, depth } => write!(
                f,
                "line {line}: brackets nested {depth} deep; the limit is {MAX_TAG_NESTING}"
            ),
            Refusal::TooManyElifs { count } => write!(
                f,
                "{count} elif branches; the limit is {MAX_ELIFS} (look values up in a mapping instead, e.g. {{{{ {{'a': 1, 'b': 2}}[x] }}}})"
            ),
            Refusal::TooManyGroupings { count } => write!(
                f,
                "{count} brackets and commas in its tags; the limit is {MAX_GROUPINGS}"
            ),
        }
    }
}

/// Whether `source` has template syntax at all (else it is output as it is).
pub(crate) fn is_literal(source: &str) -> bool {
    !source.contains("{{") && !source.contains("{%") && !source.contains("{#")
}

/// Checks the bounds of the module docs on `source`, without parsing it. Errs on the side of
/// counting more than MiniJinja would parse.
pub(crate) fn check(source: &str) -> Result<(), Refusal> {
    if is_literal(source) {
        let len = crate::templates::literal_output(source).len();
        if len > crate::MAX_OUTPUT {
            return Err(Refusal::LiteralTooLong { len });
        }
        return Ok(());
    }
    if source.len() > MAX_TEMPLATE_LEN {
        return Err(Refusal::TooLong { len: source.len() });
    }
    let bytes = source.as_bytes();
    let (mut elifs, mut groupings) = (0usize, 0usize);
    let mut i = 0;
    while let Some(offset) = find_tag(&bytes[i..]) {
        let start = i + offset;
        let kind = bytes[start + 1];
        if kind == b'#' {
            i = find(bytes, start + 2, b"#}").map_or(bytes.len(), |e| e + 2);
            continue;
        }
        let tag = scan_tag(bytes, start + 2, kind);
        let line = || 1 + bytes[..start].iter().filter(|&&b| b == b'\n').count();
        if tag.tokens > MAX_TAG_TOKENS {
            return Err(Refusal::TagTooLong {
                line: line(),
                tokens: tag.tokens,
            });
        }
        if tag.nesting > MAX_TAG_NESTING {
            return Err(Refusal::TagTooDeep {
                line: line(),
                depth: tag.nesting,
            });
        }
        groupings += tag.groupings;
        i = tag.end;
        match tag.first_word {
            Some("elif") => elifs += 1,
            // The body of a raw block is text, up to its `{% endraw %}`.
            Some("raw") => i = find_endraw(bytes, i).unwrap_or(bytes.len()),
            _ => {}
        }
    }
    if elifs > MAX_ELIFS {
        return Err(Refusal::TooManyElifs { count: elifs });
    }
    if groupings > MAX_GROUPINGS {
        return Err(Refusal::TooManyGroupings { count: groupings });
    }
    Ok(())
}

/// The offset of the next `{{`, `{%` or `{#`.
fn find_tag(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(2)
        .position(|w| w[0] == b'{' && matches!(w[1], b'{' | b'%' | b'#'))
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Where the text of a raw block that starts at `from` ends: at its `{% endraw %}` tag.
fn find_endraw(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(open) = find(bytes, at, b"{%") {
        let mut j = open + 2;
        while j < bytes.len() && (bytes[j].is_ascii_whitespace() || bytes[j] == b'-') {
            j += 1;
        }
        if bytes[j..].starts_with(b"endraw") {
            return Some(open);
        }
        at = open + 2;
    }
    None
}

/// What one tag holds.
struct Tag<'a> {
    tokens: usize,
    nesting: usize,
    groupings: usize,
    first_word: Option<&'a str>,
    /// Index just past the tag's closing delimiter.
    end: usize,
}

/// Scans the tag whose body starts at `from` (just past `{{` or `{%`), up to its `}}` or `%}`
/// outside strings and brackets.
fn scan_tag(bytes: &[u8], from: usize, kind: u8) -> Tag<'_> {
    let close = if kind == b'{' { b'}' } else { b'%' };
    let mut tag = Tag {
        tokens: 0,
        nesting: 0,
        groupings: 0,
        first_word: None,
        end: bytes.len(),
    };
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        let c = bytes[i];
        if depth == 0 && c == close && bytes.get(i + 1) == Some(&b'}') {
            tag.end = i + 2;
            return tag;
        }
        match c {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if tag.tokens == 0 {
                    tag.first_word = std::str::from_utf8(&bytes[start..i]).ok();
                }
            }
            c if c.is_ascii_digit() => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                tag.nesting = tag.nesting.max(depth);
                tag.groupings += 1;
                i += 1;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' => {
                tag.groupings += 1;
                i += 1;
            }
            // `-` and `+` right after the opening delimiter are whitespace control.
            b'-' | b'+' if i == from => {
                i += 1;
                continue;
            }
            _ => i += 1,
        }
        tag.tokens += 1;
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(source: &str) -> usize {
        let bytes = source.as_bytes();
        let start = find_tag(bytes).unwrap();
        scan_tag(bytes, start + 2, bytes[start + 1]).tokens
    }

    #[test]
    fn tags_are_counted_in_tokens_outside_strings() {
        assert_eq!(tokens("{{ event.data.code }}"), 5);
        assert_eq!(tokens("{{- x -}}"), 2);
        assert_eq!(tokens("{{ '}} {{ ' ~ \"a\\\"b\" }}"), 3);
        assert_eq!(tokens("{% if a %}"), 2);
        assert_eq!(tokens("{{ {'a': {'b': 1}} }}"), 9);
    }

    #[test]
    fn templates_within_the_limits_pass() {
        for ok in [
            "https://x.example/{{ id }}",
            "{% for l in event.data.lines %}<l sku=\"{{ l.sku }}\"/>{% endfor %}",
            "{# {{ 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 }} #}",
            "{% raw %}{{ ((((((((((((((((((((((((((((((((((((((( }}{% endraw %}",
            &format!("{{{{ 1{} }}}}", " + 1".repeat(100)),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_could_overflow_the_stack_is_refused() {
        let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(10_000));
        assert!(matches!(
            check(&chain),
            Err(Refusal::TagTooLong { line: 1, .. })
        ));
        let deep = format!("\n{{{{ {}1{} }}}}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            check(&deep),
            Err(Refusal::TagTooDeep { line: 2, depth: 40 })
        );
        let elifs = format!("{{% if a %}}{}{{% endif %}}", "{% elif a %}".repeat(300));
        assert_eq!(check(&elifs), Err(Refusal::TooManyElifs { count: 300 }));
        let sets = "{% set x = [x] %}".repeat(2_001);
        assert_eq!(
            check(&sets),
            Err(Refusal::TooManyGroupings { count: 2_001 })
        );
        let long = format!("{{{{ x }}}}{}", "a".repeat(crate::MAX_OUTPUT));
        assert!(matches!(check(&long), Err(Refusal::TooLong { .. })));
        let literal = "a".repeat(crate::MAX_OUTPUT + 1);
        assert!(matches!(
            check(&literal),
            Err(Refusal::LiteralTooLong { .. })
        ));
        assert_eq!(check(&"a".repeat(crate::MAX_OUTPUT)), Ok(()));
    }
}
