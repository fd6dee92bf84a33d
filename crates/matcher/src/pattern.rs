/// An event type pattern of a webhook's `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every event.
    Any,
    /// `order.*`: every type starting with `order.` (stored with the dot).
    Prefix(String),
    /// `order.created`
    Exact(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty event pattern; write an event type such as \"order.created\", a prefix such as \"order.*\", or \"*\"".into());
        }
        if t != text {
            return Err(format!(
                "event pattern {text:?} has leading or trailing spaces"
            ));
        }
        if t == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(prefix) = t.strip_suffix(".*") {
            if prefix.is_empty() || prefix.contains('*') {
                return Err(format!(
                    "invalid event pattern {text:?}: only a trailing \".*\" or a lone \"*\" may be a wildcard"
                ));
            }
            return Ok(Pattern::Prefix(format!("{prefix}.")));
        }
        if t.contains('*') {
            return Err(format!(
                "invalid event pattern {text:?}: only a trailing \".*\" (\"order.*\") or a lone \"*\" may be a wildcard"
            ));
        }
        Ok(Pattern::Exact(t.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Pattern::parse("*").unwrap(), Pattern::Any);
        assert_eq!(
            Pattern::parse("order.*").unwrap(),
            Pattern::Prefix("order.".into())
        );
        assert_eq!(
            Pattern::parse("order.created").unwrap(),
            Pattern::Exact("order.created".into())
        );
        assert!(Pattern::parse("*.created").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse(".*").is_err());
    }
}
