//! Checking one webhook or relation: every problem at once, each naming its field. The same
//! checks run for an `apply` file, a row written with SQL, and a form in the console.

use std::sync::Arc;

use outbox_core::{RelationSpec, WebhookSpec};
use outbox_matcher::{Filter, Pattern};
use outbox_sender::{Endpoint, FieldError};

/// A webhook compiled for routing and sending.
pub struct Compiled {
    pub patterns: Vec<Pattern>,
    pub filter: Option<Arc<Filter>>,
    pub endpoint: Arc<Endpoint>,
}

/// Validates and compiles one webhook, reporting every problem at once.
pub fn compile(id: i64, spec: &WebhookSpec) -> Result<Compiled, Vec<FieldError>> {
    let mut errors = Vec::new();
    if spec.name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if spec.name.trim() != spec.name {
        errors.push(FieldError::new(
            "name",
            format!("{:?} must not start or end with spaces", spec.name),
        ));
    } else if spec.name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters (line breaks, tabs)",
        ));
    } else if spec.name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if !is_media_type(&spec.content_type) {
        errors.push(FieldError::new(
            "content_type",
            format!(
                "{:?} is not a media type; write e.g. \"application/json\", \"application/xml\" or \"text/plain; charset=utf-8\"",
                spec.content_type
            ),
        ));
    }
    if spec.events.is_empty() {
        errors.push(FieldError::new(
            "events",
            "must list at least one event type pattern, e.g. [\"order.created\"], [\"order.*\"] or [\"*\"]",
        ));
    }
    let mut patterns = Vec::new();
    for (i, text) in spec.events.iter().enumerate() {
        match Pattern::parse(text) {
            Ok(p) => patterns.push(p),
            Err(e) => errors.push(FieldError::new(format!("events[{i}]"), e)),
        }
    }
    let filter = match spec.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(source) => match Filter::compile(source) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                errors.push(FieldError::new("filter", e.to_string()));
                None
            }
        },
    };
    let endpoint = match Endpoint::compile(id, spec) {
        Ok(e) => Some(Arc::new(e)),
        Err(errs) => {
            errors.extend(errs);
            None
        }
    };
    match (errors.is_empty(), endpoint) {
        (true, Some(endpoint)) => Ok(Compiled {
            patterns,
            filter,
            endpoint,
        }),
        _ => Err(errors),
    }
}

/// Longest webhook name accepted (names label metrics and appear in every listing).
const MAX_NAME_CHARS: usize = 200;

/// `type/subtype`, optionally followed by `; parameters`, as a `content-type` header needs.
fn is_media_type(text: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    !text.chars().any(char::is_control)
        && essence
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub))
}

/// `message` with the text of every double-quoted value replaced by `***`, for messages that may
/// quote a secret (serde's "invalid type: string \"…\", expected …").
pub fn hide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for (i, part) in rest.iter().enumerate() {
        out.push('"');
        // Odd pieces are inside quotes, unless the last quote is unmatched.
        if i % 2 == 0 && i + 1 < rest.len() {
            out.push_str("***");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// One line naming every problem.
pub fn describe_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a relation's fields (not its SQL, which needs a database).
pub fn check_relation(relation: &RelationSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if relation.entity.trim().is_empty() {
        errors.push(FieldError::new("entity", "must not be empty"));
    }
    if relation.name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if !relation
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        errors.push(FieldError::new(
            "name",
            format!(
                "{:?} must be letters, digits and _ only (templates use it as related.<name>)",
                relation.name
            ),
        ));
    }
    if relation.query.trim().is_empty() {
        errors.push(FieldError::new("query", "must not be empty"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> WebhookSpec {
        toml::from_str(&format!(
            "name = \"w\"\nevents = [\"*\"]\nurl = \"https://example.com/\"\n{extra}"
        ))
        .unwrap()
    }

    fn fields(extra: &str) -> Vec<String> {
        match compile(1, &spec(extra)) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn quoted_values_can_be_hidden() {
        assert_eq!(
            hide_quoted(r#"invalid type: string "whsec_x", expected a sequence"#),
            r#"invalid type: string "***", expected a sequence"#
        );
        assert_eq!(hide_quoted("no quotes"), "no quotes");
        assert_eq!(hide_quoted(r#"a "b" c "d"#), r#"a "***" c "d"#);
    }

    #[test]
    fn content_types_must_be_media_types() {
        for ok in [
            "application/json",
            "application/xml",
            "text/plain; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in ["json", "", "text/", "/plain", "text/plain\r\nX: y", "a b/c"] {
            assert!(!is_media_type(bad), "{bad}");
        }
        assert_eq!(fields("content_type = \"xml\""), ["content_type"]);
    }

    #[test]
    fn names_are_checked() {
        let mut s = spec("");
        s.name = " w".into();
        let errors = compile(1, &s).err().unwrap();
        assert_eq!(errors[0].field, "name");
        s.name = "a\nb".into();
        assert!(compile(1, &s).is_err());
        s.name = "x".repeat(201);
        assert!(compile(1, &s).is_err());
    }

    #[test]
    fn every_problem_of_a_webhook_is_reported() {
        let mut s = spec(
            "filter = \"event.(\"\ntimeout = \"soon\"\nmax_attempts = 0\ncontent_type = \"json\"",
        );
        s.events = vec!["a*".into()];
        let got: Vec<String> = compile(1, &s)
            .err()
            .unwrap()
            .into_iter()
            .map(|e| e.field)
            .collect();
        for field in [
            "events[0]",
            "filter",
            "timeout",
            "max_attempts",
            "content_type",
        ] {
            assert!(
                got.iter().any(|f| f == field),
                "{field} missing from {got:?}"
            );
        }
    }
}
