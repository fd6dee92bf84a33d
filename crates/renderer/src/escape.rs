//! Escaping by context: where a value lands decides how it is written.
//!
//! Every template gets an auto-escape mode from its field and the webhook's content type, and one
//! formatter writes every `{{ value }}` accordingly:
//!
//! | context | `{{ "R&D <x>" }}` | `{{ none }}` |
//! |---|---|---|
//! | `url` | `R%26D%20%3Cx%3E` (RFC 3986 unreserved kept; a value `.` or `..` as `%2E`) | empty |
//! | JSON body | `"R&D <x>"` (a JSON value) | `null` |
//! | XML body | `R&amp;D &lt;x&gt;` (`"` `'` too; tab/CR/LF as character references) | empty |
//! | HTML body | `R&amp;D &lt;x&gt;` (`"` `'` too) | empty |
//! | headers, other bodies | `R&D <x>` (raw) | empty |
//!
//! Strings marked safe (the `safe` filter, or a filter that already escaped for this context) are
//! written as they are.

use minijinja::value::Value;
use minijinja::{AutoEscape, Error, ErrorKind, Output, State};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left unencoded in URL values (RFC 3986 unreserved).
pub(crate) const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const URL: &str = "url";
const XML: &str = "xml";
const HTML: &str = "html";

/// How a template's output is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Url,
    Json,
    Xml,
    Html,
    Raw,
}

impl Context {
    /// The escaping of a body of this content type.
    pub(crate) fn for_body(content_type: &str) -> Context {
        let ct = content_type.to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence == "application/json" || essence.ends_with("+json") {
            Context::Json
        } else if essence.contains("xml") {
            // application/xml, text/xml, application/soap+xml, application/xhtml+xml, ...
            Context::Xml
        } else if essence.contains("html") {
            Context::Html
        } else {
            Context::Raw
        }
    }

    pub(crate) fn auto_escape(self) -> AutoEscape {
        match self {
            Context::Url => AutoEscape::Custom(URL.into()),
            Context::Json => AutoEscape::Json,
            Context::Xml => AutoEscape::Custom(XML.into()),
            Context::Html => AutoEscape::Custom(HTML.into()),
            Context::Raw => AutoEscape::None,
        }
    }

    pub(crate) fn of(state: &State) -> Context {
        match state.auto_escape() {
            AutoEscape::Json => Context::Json,
            AutoEscape::Custom(name) if name == URL => Context::Url,
            AutoEscape::Custom(name) if name == XML => Context::Xml,
            AutoEscape::Custom(name) if name == HTML => Context::Html,
            _ => Context::Raw,
        }
    }

    pub(crate) fn is_markup(self) -> bool {
        matches!(self, Context::Xml | Context::Html)
    }
}

/// The formatter of every environment: writes `value` escaped for the template's context.
pub(crate) fn format(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    let context = Context::of(state);
    if value.is_safe() {
        return out
            .write_str(value.as_str().unwrap_or_default())
            .map_err(write_failed);
    }
    if value.is_none() || value.is_undefined() {
        // JSON says null; everywhere else a missing value is simply empty (never "none").
        if context == Context::Json {
            return out.write_str("null").map_err(write_failed);
        }
        return Ok(());
    }
    match context {
        Context::Json => minijinja::escape_formatter(out, state, value),
        Context::Url => {
            let text = display(value);
            // `.` and `..` would be dot segments in a path (see url_path.rs): never write them
            // bare.
            if text == "." || text == ".." {
                return out
                    .write_str(&"%2E".repeat(text.len()))
                    .map_err(write_failed);
            }
            for part in utf8_percent_encode(&text, URL_VALUE) {
                out.write_str(part).map_err(write_failed)?;
            }
            Ok(())
        }
        Context::Xml => {
            let text = display(value);
            out.write_str(&escape_xml(&text)).map_err(write_failed)
        }
        Context::Html => {
            let text = display(value);
            out.write_str(&escape_html(&text)).map_err(write_failed)
        }
        Context::Raw => write!(out, "{value}").map_err(write_failed),
    }
}

fn write_failed(e: std::fmt::Error) -> Error {
    Error::new(ErrorKind::WriteFailure, e.to_string())
}

/// A value as text: strings as they are, everything else as MiniJinja displays it.
pub(crate) fn display(value: &Value) -> String {
    match value.as_str() {
        Some(s) => s.to_string(),
        None if value.is_none() || value.is_undefined() => String::new(),
        None => value.to_string(),
    }
}

/// Escapes text for XML content and attribute values (single- or double-quoted).
///
/// `&<>"'` become entities; tab, LF and CR become character references so attribute-value
/// normalisation cannot turn them into spaces; characters XML 1.0 forbids (most C0 controls,
/// U+FFFE, U+FFFF) cannot be written at all, not even as references, and become U+FFFD. `/` is
/// left alone: it needs no escaping in XML or HTML.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for HTML content and quoted attribute values: `&<>"'`.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, URL_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_covers_attributes_and_whitespace() {
        assert_eq!(
            escape_xml("a<b>&\"c\" 'd'\n\te\r/"),
            "a&lt;b&gt;&amp;&quot;c&quot; &#39;d&#39;&#10;&#9;e&#13;/"
        );
        assert_eq!(escape_xml("x\u{0}\u{1b}y"), "x\u{fffd}\u{fffd}y");
        assert_eq!(escape_xml("Größe 😀"), "Größe 😀");
    }

    #[test]
    fn html_escaping_covers_quotes_and_keeps_newlines() {
        assert_eq!(
            escape_html("<a href='x'>\"R&D\"</a>\n"),
            "&lt;a href=&#39;x&#39;&gt;&quot;R&amp;D&quot;&lt;/a&gt;\n"
        );
    }

    #[test]
    fn body_context_follows_the_content_type() {
        for (ct, expected) in [
            ("application/json", Context::Json),
            ("application/vnd.api+json; charset=utf-8", Context::Json),
            ("application/xml", Context::Xml),
            ("text/xml; charset=utf-8", Context::Xml),
            ("application/xhtml+xml", Context::Xml),
            ("text/html", Context::Html),
            ("text/csv", Context::Raw),
            ("text/plain", Context::Raw),
        ] {
            assert_eq!(Context::for_body(ct), expected, "{ct}");
        }
    }
}
