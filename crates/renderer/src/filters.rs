//! The filters templates need beyond MiniJinja's built-ins, and context-aware replacements for a
//! few built-ins.
//!
//! A filter that escapes for a context (`xml_escape`, `urlencode`, `tojson`, `escape`) marks its
//! result safe only when the template's own context is that one, so the result is not escaped
//! twice; anywhere else the result is an ordinary string and the context escapes it as usual
//! (`{{ x | tojson }}` in an XML body is JSON text with its quotes escaped, in a JSON body it is
//! the JSON itself).

use std::fmt::Write;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, Utc};
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::escape::{Context, display, escape_html, escape_xml, percent_encode};

pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("tojson", tojson);
    env.add_filter("csv", csv);
    env.add_filter("xml_escape", xml_escape);
    env.add_filter("urlencode", urlencode);
    env.add_filter("date", date);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("escape", escape);
    env.add_filter("e", escape);
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// `text` as a value: safe (written as is) when `escaped_for` is the template's context.
fn escaped(state: &State, text: String, escaped_for: impl Fn(Context) -> bool) -> Value {
    if escaped_for(Context::of(state)) {
        Value::from_safe_string(text)
    } else {
        Value::from(text)
    }
}

/// `{{ x | tojson }}`, `{{ x | tojson(indent=2) }}`: the value as JSON text.
fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let pretty = indent.is_some_and(|i| i.is_true());
    let text = if value.is_undefined() {
        return Err(invalid("tojson: the value is undefined"));
    } else if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| invalid(format!("tojson: {e}")))?;
    Ok(escaped(state, text, |c| c == Context::Json))
}

/// `{{ x | csv }}`: one RFC 4180 field (quoted when it holds the separator, a quote or a line
/// break; quotes doubled). A list gives a whole row: `{{ [a, b, c] | csv }}`. `csv(";")` picks
/// another separator.
fn csv(value: &Value, sep: Option<String>) -> Result<Value, Error> {
    let sep = sep.unwrap_or_else(|| ",".into());
    if sep.is_empty() || sep.contains(['"', '\r', '\n']) {
        return Err(invalid(format!(
            "csv: separator {sep:?} cannot be used; use e.g. \",\" or \";\""
        )));
    }
    if value.is_undefined() {
        return Err(invalid("csv: the value is undefined"));
    }
    let row = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let mut fields = Vec::new();
            for item in value.try_iter()? {
                fields.push(csv_field(&display(&item), &sep));
            }
            fields.join(&sep)
        }
        _ => csv_field(&display(value), &sep),
    };
    Ok(Value::from(row))
}

pub(crate) fn csv_field(text: &str, sep: &str) -> String {
    if text.contains(sep) || text.contains(['"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `{{ x | xml_escape }}`: `&<>"'` as entities (for building XML in a non-XML body).
fn xml_escape(state: &State, value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(invalid("xml_escape: the value is undefined"));
    }
    Ok(escaped(
        state,
        escape_xml(&display(value)),
        Context::is_markup,
    ))
}

/// `{{ x | escape }}` / `e`: markup escaping (XML rules in XML bodies, HTML rules elsewhere).
fn escape(state: &State, value: &Value) -> Result<Value, Error> {
    if value.is_safe() {
        return Ok(value.clone());
    }
    let text = display(value);
    let out = match Context::of(state) {
        Context::Xml => escape_xml(&text),
        _ => escape_html(&text),
    };
    Ok(escaped(state, out, Context::is_markup))
}

/// `{{ x | urlencode }}`: percent-encoding (RFC 3986 unreserved kept); a map becomes a query
/// string `k=v&k2=v2`.
fn urlencode(state: &State, value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(invalid("urlencode: the value is undefined"));
    }
    let text = if value.kind() == ValueKind::Map {
        let mut pairs = Vec::new();
        for key in value.try_iter()? {
            let v = value.get_item(&key)?;
            pairs.push(format!(
                "{}={}",
                percent_encode(&display(&key)),
                percent_encode(&display(&v))
            ));
        }
        pairs.join("&")
    } else {
        percent_encode(&display(value))
    };
    Ok(escaped(state, text, |c| c == Context::Url))
}

/// `{{ x | default("n/a") }}`: the fallback when `x` is missing or null; `default("n/a", true)`
/// also replaces every falsy value (empty string, 0, false, empty list).
fn default(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if args.len() > 2 {
        return Err(invalid(
            "default takes at most two arguments: default(fallback, also_when_falsy)",
        ));
    }
    let fallback = args.first().cloned().unwrap_or_else(|| Value::from(""));
    let lax = args.get(1).is_some_and(Value::is_true);
    if value.is_undefined() || value.is_none() || (lax && !value.is_true()) {
        Ok(fallback)
    } else {
        Ok(value.clone())
    }
}

/// `{{ event.created_at | date("%Y-%m-%d") }}`, `date("%d.%m.%Y %H:%M", tz="Europe/Amsterdam")`.
///
/// Reads RFC 3339 / ISO 8601 timestamps (with `T` or a space, with or without fractional seconds
/// and offset), plain dates and unix seconds. Formats with strftime (`%Y-%m-%d` by default).
/// `tz` (an IANA name, `UTC` or an offset like `+02:00`) converts timestamps that carry an
/// offset; values without one are formatted as they are. A null gives null.
fn date(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    if args.len() > 2 {
        return Err(invalid(
            "date takes at most two arguments: date(format, tz)",
        ));
    }
    let arg = |i: usize, name: &str| -> Result<Option<String>, Error> {
        match args.get(i) {
            Some(v) => Ok(Some(display(v))),
            None => kwargs.get::<Option<String>>(name),
        }
    };
    let format = arg(0, "format")?.unwrap_or_else(|| "%Y-%m-%d".into());
    let tz = arg(1, "tz")?;
    kwargs.assert_all_used()?;
    if value.is_undefined() || value.is_none() {
        return Ok(value.clone());
    }
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(invalid(format!(
            "date: {format:?} is not a valid strftime format; use e.g. \"%Y-%m-%d %H:%M:%S\""
        )));
    }
    let stamp = parse_stamp(value).ok_or_else(|| {
        invalid(format!(
            "date: cannot read {} as a date or time; expected RFC 3339 (2024-06-10T12:30:00Z), a date (2024-06-10) or unix seconds",
            value_for_message(value)
        ))
    })?;
    let mut out = String::new();
    let written = match (stamp, tz.as_deref()) {
        (Stamp::Zoned(t), None) => write!(out, "{}", t.format_with_items(items.iter())),
        (Stamp::Zoned(t), Some(zone)) => match zone_of(zone)? {
            Zone::Fixed(offset) => write!(
                out,
                "{}",
                t.with_timezone(&offset).format_with_items(items.iter())
            ),
            Zone::Named(tz) => write!(
                out,
                "{}",
                t.with_timezone(&tz).format_with_items(items.iter())
            ),
        },
        (Stamp::Naive(t), _) => write!(out, "{}", t.format_with_items(items.iter())),
        (Stamp::Date(d), _) => write!(out, "{}", d.format_with_items(items.iter())),
    };
    written.map_err(|_| {
        invalid(format!(
            "date: format {format:?} needs a time or offset that {} does not have",
            value_for_message(value)
        ))
    })?;
    Ok(Value::from(out))
}

enum Stamp {
    Zoned(DateTime<FixedOffset>),
    Naive(NaiveDateTime),
    Date(NaiveDate),
}

enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

fn zone_of(name: &str) -> Result<Zone, Error> {
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(Zone::Fixed(Utc.fix()));
    }
    if let Ok(t) = DateTime::parse_from_str(
        &format!("2000-01-01T00:00:00{name}"),
        "%Y-%m-%dT%H:%M:%S%:z",
    ) {
        return Ok(Zone::Fixed(*t.offset()));
    }
    name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
        invalid(format!(
            "date: unknown time zone {name:?}; use an IANA name such as \"Europe/Amsterdam\", \"UTC\" or an offset such as \"+02:00\""
        ))
    })
}

fn parse_stamp(value: &Value) -> Option<Stamp> {
    if value.is_number() {
        let secs = f64::try_from(value.clone()).ok()?;
        if !secs.is_finite() {
            return None;
        }
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
        let t = DateTime::from_timestamp(whole as i64, nanos)?;
        return Some(Stamp::Zoned(t.fixed_offset()));
    }
    let text = value.as_str()?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(Stamp::Zoned(t));
    }
    // Postgres and friends: a space instead of T, offsets like +02 or +0200.
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Some(Stamp::Zoned(t));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return Some(Stamp::Naive(t));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(Stamp::Date)
}

fn value_for_message(value: &Value) -> String {
    let text = match value.as_str() {
        Some(s) => format!("{s:?}"),
        None => value.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}
