//! `apply FILE [--dry-run] [--prune]`: validate every webhook and relation of a TOML file, then
//! write them in one transaction (upsert by name). Any problem: every problem is reported, each
//! naming the file, the webhook and the field; exit code 2; nothing is written.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use outbox_core::{RelationSpec, WebhookSpec};
use serde_json::Value;
use tokio_postgres::types::Type;

use crate::catalog::{WEBHOOK_COLUMNS, check_relation, compile, webhook_row};
use crate::error::Failure;

/// A file's contents after `${VAR}` substitution and validation.
#[derive(Debug)]
pub struct Parsed {
    pub webhooks: Vec<WebhookSpec>,
    pub relations: Vec<RelationSpec>,
}

/// Reads, substitutes and validates a file without touching a database (relation SQL is checked
/// separately, against the database). Returns every problem found.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, Vec<String>> {
    let file = path.display().to_string();
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return Err(vec![format!("{file}: {}", one_line(&e.to_string()))]),
    };
    let mut problems = Vec::new();
    for key in table.keys() {
        if key != "webhook" && key != "relation" {
            problems.push(format!(
                "{file}: unknown top-level key {key:?}; a webhooks file has [[webhook]] and [[relation]] entries"
            ));
        }
    }
    let mut webhooks = Vec::new();
    if let Some(list) = table.remove("webhook") {
        let toml::Value::Array(items) = list else {
            return Err(vec![format!(
                "{file}: `webhook` must be an array of tables: write [[webhook]]"
            )]);
        };
        for (i, mut item) in items.into_iter().enumerate() {
            let label = match item.get("name").and_then(|n| n.as_str()) {
                Some(name) => format!("{file}: webhook {name:?}"),
                None => format!("{file}: webhook #{}", i + 1),
            };
            substitute_env(&mut item, "", &label, &mut problems);
            match item.try_into::<WebhookSpec>() {
                Ok(spec) => webhooks.push(spec),
                Err(e) => problems.push(format!("{label}: {}", one_line(&e.to_string()))),
            }
        }
    }
    let mut relations = Vec::new();
    if let Some(list) = table.remove("relation") {
        let toml::Value::Array(items) = list else {
            return Err(vec![format!(
                "{file}: `relation` must be an array of tables: write [[relation]]"
            )]);
        };
        for (i, mut item) in items.into_iter().enumerate() {
            let label = format!("{file}: relation #{}", i + 1);
            substitute_env(&mut item, "", &label, &mut problems);
            match item.try_into::<RelationSpec>() {
                Ok(r) => relations.push(r),
                Err(e) => problems.push(format!("{label}: {}", one_line(&e.to_string()))),
            }
        }
    }

    let mut names = HashSet::new();
    for spec in &webhooks {
        let label = format!("{file}: webhook {:?}", spec.name);
        if !names.insert(spec.name.clone()) {
            problems.push(format!(
                "{label}: name: appears more than once; webhook names must be unique"
            ));
        }
        if let Err(errors) = compile(0, spec) {
            for e in errors {
                problems.push(format!("{label}: {}: {}", e.field, e.message));
            }
        }
    }
    let mut keys = HashSet::new();
    for r in &relations {
        let label = format!("{file}: relation {:?} of entity {:?}", r.name, r.entity);
        if !keys.insert((r.entity.clone(), r.name.clone())) {
            problems.push(format!("{label}: appears more than once"));
        }
        for e in check_relation(r) {
            problems.push(format!("{label}: {}: {}", e.field, e.message));
        }
    }
    if problems.is_empty() {
        Ok(Parsed {
            webhooks,
            relations,
        })
    } else {
        Err(problems)
    }
}

/// Replaces `${VAR}` in every string with the environment variable's value (`$${` is a literal `${`).
fn substitute_env(value: &mut toml::Value, path: &str, label: &str, problems: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand(s) {
            Ok(expanded) => *s = expanded,
            Err(var) => problems.push(format!(
                "{label}: {path}: environment variable {var} is not set (referenced as ${{{var}}})"
            )),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), label, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(v, &p, label, problems);
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
async fn check_relation_sql(
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
        result.map_err(|e| format!("query does not prepare: {}", outbox_core::db::describe(&e)))?;
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

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Create,
    Update,
    Unchanged,
    Remove,
}

impl Change {
    fn word(&self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Unchanged => "unchanged",
            Change::Remove => "remove",
        }
    }
}

pub async fn run(url: &str, path: &Path, dry_run: bool, prune: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    let parsed = parse(path, &text).map_err(report)?;

    let mut client = super::connect_migrated(url).await?;
    let mut problems = Vec::new();
    for r in &parsed.relations {
        if let Err(e) = check_relation_sql(&mut client, r).await {
            problems.push(format!(
                "{}: relation {:?} of entity {:?}: query: {e}",
                path.display(),
                r.name,
                r.entity
            ));
        }
    }
    if !problems.is_empty() {
        return Err(report(problems));
    }

    let current: BTreeMap<String, Option<WebhookSpec>> = client
        .query(
            &format!("SELECT {WEBHOOK_COLUMNS} FROM outbox.webhooks"),
            &[],
        )
        .await?
        .iter()
        .map(|row| webhook_row(row).map(|w| (w.name, w.spec.ok())))
        .collect::<Result<_, _>>()?;
    let current_relations: BTreeMap<(String, String), String> = client
        .query("SELECT entity, name, query FROM outbox.relations", &[])
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();

    let mut plan: Vec<(Change, String)> = Vec::new();
    let mut writes: Vec<&WebhookSpec> = Vec::new();
    for spec in &parsed.webhooks {
        let change = match current.get(&spec.name) {
            None => Change::Create,
            Some(Some(existing)) if existing == spec => Change::Unchanged,
            Some(_) => Change::Update,
        };
        if change != Change::Unchanged {
            writes.push(spec);
        }
        plan.push((change, format!("webhook {}", spec.name)));
    }
    let in_file: HashSet<&str> = parsed.webhooks.iter().map(|w| w.name.as_str()).collect();
    let removed: Vec<&String> = current
        .keys()
        .filter(|n| !in_file.contains(n.as_str()))
        .collect();
    if prune {
        for name in &removed {
            plan.push((Change::Remove, format!("webhook {name}")));
        }
    }
    let mut relation_writes = Vec::new();
    for r in &parsed.relations {
        let change = match current_relations.get(&(r.entity.clone(), r.name.clone())) {
            None => Change::Create,
            Some(q) if *q == r.query => Change::Unchanged,
            Some(_) => Change::Update,
        };
        if change != Change::Unchanged {
            relation_writes.push(r);
        }
        plan.push((change, format!("relation {}.{}", r.entity, r.name)));
    }
    let relation_keys: HashSet<(&str, &str)> = parsed
        .relations
        .iter()
        .map(|r| (r.entity.as_str(), r.name.as_str()))
        .collect();
    let removed_relations: Vec<&(String, String)> = current_relations
        .keys()
        .filter(|(e, n)| !relation_keys.contains(&(e.as_str(), n.as_str())))
        .collect();
    if prune {
        for (e, n) in &removed_relations {
            plan.push((Change::Remove, format!("relation {e}.{n}")));
        }
    }

    for (change, what) in &plan {
        println!("{:<9}  {what}", change.word());
    }
    if !prune && !removed.is_empty() {
        println!(
            "({} webhook(s) in the database are not in the file and are kept; --prune removes them)",
            removed.len()
        );
    }
    if dry_run {
        println!("dry run: nothing written");
        return Ok(());
    }

    let tx = client.transaction().await?;
    let upsert = tx
        .prepare(&format!(
            r#"INSERT INTO outbox.webhooks AS w (name, contact, events, filter, url, method, headers, content_type, body,
                   priority, "coalesce", ordered, active, timeout, max_attempts, retry_schedule, max_in_flight,
                   auth, signature, tls)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
               ON CONFLICT (name) DO UPDATE SET
                   contact = EXCLUDED.contact, events = EXCLUDED.events, filter = EXCLUDED.filter,
                   url = EXCLUDED.url, method = EXCLUDED.method, headers = EXCLUDED.headers,
                   content_type = EXCLUDED.content_type, body = EXCLUDED.body, priority = EXCLUDED.priority,
                   "coalesce" = EXCLUDED."coalesce", ordered = EXCLUDED.ordered, active = EXCLUDED.active,
                   timeout = EXCLUDED.timeout, max_attempts = EXCLUDED.max_attempts,
                   retry_schedule = EXCLUDED.retry_schedule, max_in_flight = EXCLUDED.max_in_flight,
                   auth = EXCLUDED.auth, signature = EXCLUDED.signature, tls = EXCLUDED.tls,
                   valid = true, error = NULL,
                   disabled_reason = CASE WHEN EXCLUDED.active THEN NULL ELSE w.disabled_reason END,
                   updated_at = now()
               RETURNING {}"#,
            "id"
        ))
        .await?;
    for spec in writes {
        let headers = serde_json::to_value(&spec.headers).unwrap_or(Value::Null);
        let auth = spec
            .auth
            .as_ref()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null));
        let signature = spec
            .signature
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
        let tls = spec
            .tls
            .as_ref()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null));
        tx.query_one(
            &upsert,
            &[
                &spec.name,
                &spec.contact,
                &spec.events,
                &spec.filter,
                &spec.url,
                &spec.method.to_ascii_uppercase(),
                &headers,
                &spec.content_type,
                &spec.body,
                &spec.priority,
                &spec.coalesce,
                &spec.ordered,
                &spec.active,
                &spec.timeout,
                &spec.max_attempts,
                &spec.retry_schedule,
                &spec.max_in_flight,
                &auth,
                &signature,
                &tls,
            ],
        )
        .await?;
    }
    for r in relation_writes {
        tx.execute(
            "INSERT INTO outbox.relations (entity, name, query) VALUES ($1, $2, $3)
             ON CONFLICT (entity, name) DO UPDATE SET query = EXCLUDED.query",
            &[&r.entity, &r.name, &r.query],
        )
        .await?;
    }
    if prune {
        let names: Vec<&str> = removed.iter().map(|s| s.as_str()).collect();
        tx.execute(
            "DELETE FROM outbox.webhooks WHERE name = ANY($1)",
            &[&names],
        )
        .await?;
        for (e, n) in removed_relations {
            tx.execute(
                "DELETE FROM outbox.relations WHERE entity = $1 AND name = $2",
                &[e, n],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn report(problems: Vec<String>) -> Failure {
    let count = problems.len();
    let mut message = problems.join("\n");
    if count > 1 {
        message.push_str(&format!("\n{count} problems; nothing was written"));
    } else {
        message.push_str("\nnothing was written");
    }
    Failure::invalid(message)
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

[[webhook]]
name = "c"
events = ["order.*"]
url = "https://x.example/"
auth = { basic = { username = "u", password = "${RELAY_TEST_MISSING_PW}" } }
"#;
        let problems = parse(Path::new("hooks.toml"), text).unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("hooks.toml: webhook \"a\": events:"), "{all}");
        assert!(all.contains("hooks.toml: webhook \"a\": timeout:"), "{all}");
        assert!(all.contains("hooks.toml: webhook \"a\": url:"), "{all}");
        assert!(
            all.contains("hooks.toml: webhook \"b\": unknown field `colour`"),
            "{all}"
        );
        assert!(all.contains("RELAY_TEST_MISSING_PW"), "{all}");
        assert!(all.contains("webhook \"c\": auth.basic.password"), "{all}");
    }
}
