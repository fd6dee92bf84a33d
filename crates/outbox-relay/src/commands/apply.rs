//! `apply FILE [--dry-run] [--prune]`: validate every webhook and relation of a TOML file, then
//! write them in one transaction (upsert by name). Any problem: every problem is reported, each
//! naming the file, the webhook and the field; exit code 2; nothing is written. The checks are
//! [`outbox_catalog::file`]'s, which the console's form shares; webhooks are written by
//! [`outbox_admin::webhooks::upsert`].

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use outbox_catalog::{WEBHOOK_COLUMNS, check_relation_sql, parse_all, webhook_row};
use outbox_core::WebhookSpec;

pub use outbox_catalog::{Parsed, parse};

use crate::error::Failure;

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
    let (parsed, mut problems) = parse_all(path, &text);

    let mut client = match super::connect_migrated(url).await {
        Ok(client) => client,
        // The file's own problems are the news; the database can wait for a fixed file.
        Err(_) if !problems.is_empty() => return Err(report(problems)),
        Err(e) => return Err(e),
    };
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
    outbox_admin::webhooks::upsert_many(&tx, &writes).await?;
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
