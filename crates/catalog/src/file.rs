//! Reading an `apply` file: `${VAR}` substitution, every `[[webhook]]` and `[[relation]]` read and
//! checked, every problem reported at once naming the file, the entry and the field. Nothing here
//! touches a database except [`check_relation_sql`], which prepares a relation's query.

use std::collections::HashSet;
use std::path::Path;

use outbox_core::{RelationSpec, WebhookSpec};
use tokio_postgres::types::Type;

use crate::validate::{check_relation, compile, hide_quoted};

/// A file's contents after `${VAR}` substitution and validation.
#[derive(Debug)]
pub struct Parsed {
    pub webhooks: Vec<WebhookSpec>,
    pub relations: Vec<RelationSpec>,
}

/// Reads, substitutes and validates a file without touching a database (relation SQL is checked
/// separately, against the database). Returns every problem found.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, Vec<String>> {
    let (parsed, problems) = parse_all(path, text);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Like [`parse`], but returns what could be read along with every problem, so that the relation
/// queries of a file with other problems can still be checked and reported in the same run.
pub fn parse_all(path: &Path, text: &str) -> (Parsed, Vec<String>) {
    let file = path.display().to_string();
    let mut parsed = Parsed {
        webhooks: Vec::new(),
        relations: Vec::new(),
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return (
                parsed,
                vec![format!("{file}: {}", one_line(&e.to_string()))],
            );
        }
    };
    let mut problems = Vec::new();
    for key in table.keys() {
        if key != "webhook" && key != "relation" {
            problems.push(format!(
                "{file}: unknown top-level key {key:?}; a webhooks file has [[webhook]] and [[relation]] entries"
            ));
        }
    }
    for (key, what) in [("webhook", "[[webhook]]"), ("relation", "[[relation]]")] {
        if let Some(list) = table.get(key)
            && !matches!(list, toml::Value::Array(items) if items.iter().all(toml::Value::is_table))
        {
            problems.push(format!(
                "{file}: `{key}` must be an array of tables: write {what}"
            ));
            table.remove(key);
        }
    }

    let mut names = HashSet::new();
    if let Some(toml::Value::Array(items)) = table.remove("webhook") {
        for (i, item) in items.into_iter().enumerate() {
            let label = match item.get("name").and_then(|n| n.as_str()) {
                Some(name) => format!("{file}: webhook {name:?}"),
                None => format!("{file}: webhook #{}", i + 1),
            };
            let (spec, mut reported) = check_webhook(item);
            if let Some(spec) = spec {
                if !spec.name.is_empty() && !names.insert(spec.name.clone()) {
                    reported.push((
                        "name".into(),
                        "appears more than once; webhook names must be unique".into(),
                    ));
                }
                parsed.webhooks.push(spec);
            }
            problems.extend(
                reported
                    .into_iter()
                    .map(|(f, m)| field_problem(&label, &f, &m)),
            );
        }
    }

    let mut keys = HashSet::new();
    if let Some(toml::Value::Array(items)) = table.remove("relation") {
        for (i, mut item) in items.into_iter().enumerate() {
            let label = match (
                item.get("entity").and_then(|n| n.as_str()),
                item.get("name").and_then(|n| n.as_str()),
            ) {
                (Some(entity), Some(name)) => {
                    format!("{file}: relation {name:?} of entity {entity:?}")
                }
                _ => format!("{file}: relation #{}", i + 1),
            };
            let mut reported = Vec::new();
            substitute_env(&mut item, "", &mut reported);
            let (relation, errors) = deserialize_all::<RelationSpec>(item);
            reported.extend(errors);
            if let Some(r) = relation {
                if !keys.insert((r.entity.clone(), r.name.clone())) {
                    reported.push((
                        "name".into(),
                        format!(
                            "appears more than once for entity {:?}; relation names must be unique per entity",
                            r.entity
                        ),
                    ));
                }
                for e in check_relation(&r) {
                    if !reported.iter().any(|(f, _)| covers(f, &e.field)) {
                        reported.push((e.field, e.message));
                    }
                }
                parsed.relations.push(r);
            }
            problems.extend(
                reported
                    .into_iter()
                    .map(|(f, m)| field_problem(&label, &f, &m)),
            );
        }
    }
    (parsed, problems)
}

/// Checks one `[[webhook]]` table exactly as `apply` does: `${VAR}` references are replaced from
/// the environment, every key is read (unknown, mistyped and missing keys each reported) and the
/// result is validated and compiled. Returns the webhook when it could be read, and every problem
/// as `(field, message)`; the webhook is valid when there are none. Secrets are never quoted.
pub fn check_webhook(mut item: toml::Value) -> (Option<WebhookSpec>, Vec<(String, String)>) {
    let mut reported = Vec::new();
    substitute_env(&mut item, "", &mut reported);
    let (spec, errors) = deserialize_all::<WebhookSpec>(item);
    reported.extend(errors);
    if let Some(spec) = &spec
        && let Err(errors) = compile(0, spec)
    {
        for e in errors {
            if !reported.iter().any(|(f, _)| covers(f, &e.field)) {
                reported.push((e.field, e.message));
            }
        }
    }
    (spec, reported)
}

fn field_problem(label: &str, field: &str, message: &str) -> String {
    if field.is_empty() {
        format!("{label}: {message}")
    } else {
        format!("{label}: {field}: {message}")
    }
}

/// Whether a problem already reported for `reported` explains one found later for `field`.
fn covers(reported: &str, field: &str) -> bool {
    field == reported
        || field
            .strip_prefix(reported)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Deserializes `item`, reporting every unknown, mistyped or missing key as `(field, message)` —
/// not only the first, as serde alone would. Each offending key is taken out (a missing one is
/// filled with an empty string) and deserialization retried, so the other keys still get checked.
fn deserialize_all<T: serde::de::DeserializeOwned>(
    mut item: toml::Value,
) -> (Option<T>, Vec<(String, String)>) {
    let mut problems: Vec<(String, String)> = Vec::new();
    // Each round fixes one key; a table has far fewer keys than this.
    for _ in 0..64 {
        let error = match item.clone().try_into::<T>() {
            Ok(value) => return (Some(value), problems),
            Err(e) => e.to_string(),
        };
        let mut lines = error.lines();
        let message = lines.next().unwrap_or_default().trim().to_string();
        let context = lines
            .find_map(|l| l.trim().strip_prefix("in `")?.strip_suffix('`'))
            .unwrap_or("")
            .to_string();
        let join = |key: &str| {
            if context.is_empty() {
                key.to_string()
            } else {
                format!("{context}.{key}")
            }
        };
        let fixed = if let Some(key) = backticked(&message, "unknown field `") {
            let field = join(key);
            let hint = match suggestion(key, &message) {
                Some(known) => format!("unknown key; did you mean `{known}`?"),
                None => match message.split_once(", expected ") {
                    Some((_, expected)) => format!("unknown key; expected {expected}"),
                    None => "unknown key".into(),
                },
            };
            problems.push((field.clone(), hint));
            edit(&mut item, &field, None)
        } else if let Some(key) = backticked(&message, "missing field `") {
            let field = join(key);
            problems.push((field.clone(), "is required".into()));
            edit(&mut item, &field, Some(toml::Value::String(String::new())))
        } else if !context.is_empty() {
            // A mistyped secret must not be echoed back.
            let sensitive = ["auth", "signature", "tls", "headers"]
                .iter()
                .any(|key| context == *key || context.starts_with(&format!("{key}.")));
            let message = if sensitive {
                hide_quoted(&message)
            } else {
                message
            };
            problems.push((context.clone(), message));
            edit(&mut item, &context, None)
        } else {
            problems.push((String::new(), message));
            false
        };
        if !fixed {
            return (None, problems);
        }
    }
    (None, problems)
}

/// The name in `message` right after `prefix`, up to the closing backtick.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// The known key closest to a misspelt one, from serde's "expected one of `a`, `b`" list.
fn suggestion(key: &str, message: &str) -> Option<String> {
    let (_, expected) = message.split_once("expected ")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (distance(key, known), known))
        .filter(|(d, known)| *d <= 2.max(key.len() / 4) && *d < known.len())
        .min()
        .map(|(_, known)| known.to_string())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = current;
        }
    }
    row[b.len()]
}

/// Removes (`None`) or sets the key at dotted `path` of a table. Returns whether it could.
fn edit(item: &mut toml::Value, path: &str, value: Option<toml::Value>) -> bool {
    let mut keys: Vec<&str> = path.split('.').collect();
    let Some(last) = keys.pop() else {
        return false;
    };
    let mut table = item;
    for key in keys {
        match table.get_mut(key) {
            Some(next) => table = next,
            None => return false,
        }
    }
    let Some(table) = table.as_table_mut() else {
        return false;
    };
    match value {
        None => table.remove(last).is_some(),
        Some(v) => {
            table.insert(last.to_string(), v);
            true
        }
    }
}

/// Replaces `${VAR}` in every string with the environment variable's value (`$${` is a literal
/// `${`), reporting each variable that is not set as `(field, message)`.
fn substitute_env(value: &mut toml::Value, path: &str, problems: &mut Vec<(String, String)>) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand(s) {
            Ok(expanded) => *s = expanded,
            Err(var) => problems.push((
                path.to_string(),
                format!("environment variable {var} is not set (referenced as ${{{var}}}); set it, or write $${{ for a literal ${{"),
            )),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(v, &p, problems);
            }
        }
        _ => {}
    }
}

fn expand(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            match tail.find('}') {
                Some(end) => {
                    let var = &tail[..end];
                    match std::env::var(var) {
                        Ok(v) => out.push_str(&v),
                        Err(_) => return Err(var.to_string()),
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str(after);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks that a relation query prepares with one jsonb parameter and returns one json/jsonb column.
pub async fn check_relation_sql(
    client: &mut tokio_postgres::Client,
    r: &RelationSpec,
) -> Result<(), String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| outbox_core::db::describe(&e))?;
    let result = tx.prepare_typed(&r.query, &[Type::JSONB]).await;
    let _ = tx.rollback().await;
    let statement =
        result.map_err(|e| format!("does not prepare: {}", outbox_core::db::describe(&e)))?;
    let columns = statement.columns();
    if columns.len() != 1 {
        return Err(format!(
            "query must return exactly one json or jsonb column; it returns {}",
            columns.len()
        ));
    }
    let ty = columns[0].type_();
    if *ty != Type::JSON && *ty != Type::JSONB {
        return Err(format!(
            "query must return json or jsonb (e.g. SELECT to_jsonb(o) FROM ...); it returns {}",
            ty.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand() {
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var("RELAY_TEST_APPLY_PW", "s3cret") };
        assert_eq!(expand("a ${RELAY_TEST_APPLY_PW} b").unwrap(), "a s3cret b");
        assert_eq!(expand("$${LITERAL} $5").unwrap(), "${LITERAL} $5");
        assert_eq!(
            expand("${RELAY_TEST_NOT_SET_X}").unwrap_err(),
            "RELAY_TEST_NOT_SET_X"
        );
    }

    #[test]
    fn every_problem_is_reported_with_file_webhook_and_field() {
        let text = r#"
[[webhook]]
name = "a"
events = []
url = "ftp://x"
timeout = "soon"

[[webhook]]
name = "b"
events = ["order.*"]
url = "https://x.example/{{ id }}"
filter = "event.data.("
colour = "red"
max_atempts = 3
priority = "high"

[[webhook]]
name = "c"
events = ["order.*"]
url = "https://x.example/"
auth = { basic = { username = "u", password = "${RELAY_TEST_MISSING_PW}" } }

[[webhook]]
events = ["order.*"]
filter = "evnt.data.shop == 'nl'"
signature = { secrets = "whsec_x" }

[[webhook]]
name = "a"
events = ["*"]
url = "https://x.example/"
"#;
        let problems = parse(Path::new("hooks.toml"), text).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "hooks.toml: webhook \"a\": events: must list at least one",
            "hooks.toml: webhook \"a\": timeout: invalid duration \"soon\"",
            "hooks.toml: webhook \"a\": url:",
            "hooks.toml: webhook \"b\": colour: unknown key; expected one of `name`",
            "hooks.toml: webhook \"b\": max_atempts: unknown key; did you mean `max_attempts`?",
            "hooks.toml: webhook \"b\": priority: invalid type: string \"high\", expected i32",
            "hooks.toml: webhook \"b\": filter: the expression does not compile as CEL: line 1, column",
            "hooks.toml: webhook \"c\": auth.basic.password: environment variable RELAY_TEST_MISSING_PW is not set",
            "hooks.toml: webhook #4: name: is required",
            "hooks.toml: webhook #4: url: is required",
            "hooks.toml: webhook #4: signature.secrets: invalid type: string \"***\", expected a sequence",
            "hooks.toml: webhook #4: filter: line 1, column 1: the expression uses the unknown name `evnt`",
            "hooks.toml: webhook \"a\": name: appears more than once",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(problems.len(), 13, "{all}");
        assert!(
            !all.contains("whsec_x"),
            "a mistyped secret is not echoed: {all}"
        );
    }

    #[test]
    fn relations_report_every_problem_too() {
        let text = r#"
[[relation]]
entity = "shipment"
name = "order"
query = "SELECT 1"

[[relation]]
entity = "shipment"
name = "order"
query = ""

[[relation]]
entity = "shipment"
name = "bad name"
qeury = "SELECT 1"
"#;
        let problems = parse(Path::new("r.toml"), text).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "r.toml: relation \"order\" of entity \"shipment\": name: appears more than once",
            "r.toml: relation \"order\" of entity \"shipment\": query: must not be empty",
            "r.toml: relation \"bad name\" of entity \"shipment\": qeury: unknown key; did you mean `query`?",
            "r.toml: relation \"bad name\" of entity \"shipment\": query: is required",
            "r.toml: relation \"bad name\" of entity \"shipment\": name: \"bad name\" must be letters",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn a_valid_file_parses_with_every_key() {
        let text = r#"
[[relation]]
entity = "shipment"
name   = "order"
query  = "SELECT to_jsonb(o) FROM orders o WHERE o.id = ($1->>'order_id')::bigint"

[[webhook]]
name         = "carrier-shipments"
contact      = "it@example.com"
events       = ["shipment.created", "shipment.updated"]
filter       = 'event.data.carrier == "dhl" && event.old.status != event.data.status'
url          = "https://carrier.example/shipments/{{ entity_id }}"
method       = "POST"
headers      = { "X-Shop" = "{{ event.metadata.shop }}" }
content_type = "application/xml"
body         = '''<shipment id="{{ event.data.id }}"><order>{{ related.order.code }}</order></shipment>'''
priority     = 10
coalesce     = true
ordered      = false
active       = true
timeout      = "30s"
max_attempts = 10
retry_schedule = ["5s", "5m", "30m"]
max_in_flight  = 16

[webhook.auth]
basic = { username = "relay", password = "${RELAY_TEST_APPLY_PW2}" }

[webhook.signature]
scheme  = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#;
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var("RELAY_TEST_APPLY_PW2", "pw") };
        let parsed = parse(Path::new("ok.toml"), text).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(parsed.webhooks.len(), 1);
        assert_eq!(parsed.relations.len(), 1);
        let w = &parsed.webhooks[0];
        assert_eq!(
            w.auth.as_ref().unwrap().basic.as_ref().unwrap().password,
            "pw"
        );
        assert_eq!(w.retry_schedule.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn misspelt_keys_get_a_suggestion() {
        let msg = "unknown field `filters`, expected one of `name`, `filter`, `url`";
        assert_eq!(suggestion("filters", msg).as_deref(), Some("filter"));
        assert_eq!(suggestion("colour", msg), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
