//! What scripts rely on (issue 14): exit codes (0 success, 1 runtime failure, 2 bad usage or
//! invalid input), JSON without duplicate keys, the documented fields of the admin API.

use outbox_testkit::{Reply, TestDb, TestReceiver};

use crate::support::*;

/// Top-level keys of a JSON object as written (a parser keeps only the last of duplicates).
fn top_level_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut current = String::new();
    let mut expecting_key = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                if depth == 1 && expecting_key {
                    keys.push(std::mem::take(&mut current));
                    expecting_key = false;
                }
                continue;
            }
            if depth == 1 && expecting_key {
                current.push(c);
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    expecting_key = true;
                }
            }
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => expecting_key = true,
            _ => {}
        }
    }
    keys
}

#[tokio::test]
async fn a_delivery_shows_its_attempt_count_and_attempts_under_distinct_keys() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(500));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"failing\"\nevents = [\"*\"]\nurl = \"{}\"\nmax_attempts = 2\nretry_schedule = [\"50ms\"]\n",
            receiver.url("/x")
        ),
    )
    .await;
    let client = db.connect().await;
    // A row that is not webhook-shaped, but active.
    client
        .batch_execute(
            "INSERT INTO outbox.webhooks (name, events, url, signature)
             VALUES ('odd-shape', '{*}', 'https://example.com/', '\"not a table\"')",
        )
        .await
        .unwrap();
    let (mut relay, addr) = spawn_relay(&db, &[]).await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    let log = wait_for_webhook_status(&client, "failing", 1, "dead").await;
    let id = log[0].id;

    let (code, stdout, stderr) = cli(&db, &["deliveries", "show", &id.to_string(), "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let (status, api) = http("GET", &format!("http://{addr}/api/deliveries/{id}"), None).await;
    assert_eq!(status, 200, "{api}");
    for text in [&stdout, &api] {
        let keys = top_level_keys(text);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "duplicate keys in {keys:?}");
        let shown: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(shown["attempt_count"], 2, "{text}");
        assert_eq!(shown["attempts"].as_array().unwrap().len(), 2, "{text}");
        assert_eq!(shown["attempts"][1]["status"], 500, "{text}");
        assert_eq!(shown["id"], id);
        assert_eq!(shown["status"], "dead");
    }

    // GET /api/webhooks: the documented `config`, the same as `webhooks list --json`.
    let (status, api) = http("GET", &format!("http://{addr}/api/webhooks"), None).await;
    assert_eq!(status, 200, "{api}");
    let listed: serde_json::Value = serde_json::from_str(&api).unwrap();
    let (code, stdout, _) = cli(&db, &["webhooks", "list", "--json"], &[]);
    assert_eq!(code, 0);
    let cli_listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed, cli_listed, "one service, two faces");
    let failing = &listed[0];
    assert_eq!(failing["name"], "failing");
    assert_eq!(failing["config"]["url"], receiver.url("/x"));
    assert_eq!(failing["config"]["max_attempts"], 2);
    let odd = &listed[1];
    assert_eq!(odd["name"], "odd-shape");
    assert_eq!(odd["valid"], false);
    assert_eq!(odd["active"], true, "the row is active: {odd}");
    assert_eq!(odd["config"], serde_json::Value::Null);

    let (_, table, _) = cli(&db, &["webhooks", "list"], &[]);
    let row = table
        .lines()
        .find(|l| l.starts_with("odd-shape"))
        .unwrap_or_else(|| panic!("{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[1..3], ["yes", "NO"], "ACTIVE yes, VALID NO: {row}");
    assert_eq!(relay.terminate().await, Some(0));
}

/// Arguments, extra environment, expected exit code.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32);

#[tokio::test]
async fn exit_codes_follow_the_rule() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(500));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"a\"\nevents = [\"*\"]\nurl = \"{}\"\nmax_attempts = 1\n",
            receiver.url("/a")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "1",
        serde_json::json!({}),
    )
    .await;
    let dead = wait_for_status(&client, 1, "dead").await[0].id.to_string();
    relay.stop().await;
    let file = temp_file(
        "hooks.toml",
        "[[webhook]]\nname = \"b\"\nevents = [\"*\"]\nurl = \"https://example.com/\"\n",
    );
    let file = file.to_str().unwrap();
    let unreachable = "postgres://postgres@127.0.0.1:1/nowhere";

    let cases: &[Case] = &[
        (&["deliveries", "retry", "99999"], &[], 2),
        (&["deliveries", "retry", &dead, "99999"], &[], 2),
        (&["deliveries", "retry", &dead, "99999", "--json"], &[], 2),
        (&["deliveries", "show", "99999"], &[], 2),
        (&["deliveries", "show", "abc"], &[], 2),
        (&["deliveries", "list", "--limit", "0"], &[], 2),
        (&["deliveries", "list", "--status", "nope"], &[], 2),
        (&["webhooks", "show", "nope"], &[], 2),
        (&["test", "nope", "--entity", "order", "--id", "1"], &[], 2),
        (&["fields", "nothing.yet"], &[], 2),
        (&["apply", "/nonexistent/hooks.toml"], &[], 2),
        (&["--bogus"], &[], 2),
        (&[], &[], 2),
        (&["webhooks", "list"], &[("DATABASE_URL", "notaurl")], 2),
        (&["deliveries", "list"], &[("DATABASE_URL", "notaurl")], 2),
        (&["migrate"], &[("DATABASE_URL", "notaurl")], 2),
        (&["apply", file], &[("DATABASE_URL", "notaurl")], 2),
        (&["run"], &[("DATABASE_URL", "notaurl")], 2),
        (&["demo", "--once"], &[("DATABASE_URL", "notaurl")], 2),
        (&["webhooks", "list"], &[("DATABASE_URL", unreachable)], 1),
        (&["migrate"], &[("DATABASE_URL", unreachable)], 1),
        (&["--help"], &[], 0),
        (&["webhooks", "list"], &[], 0),
        (&["deliveries", "show", &dead], &[], 0),
    ];
    for (args, env, want) in cases {
        let (code, stdout, stderr) = cli(&db, args, env);
        assert_eq!(
            code, *want,
            "outbox-relay {args:?} with {env:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        if *want != 0 {
            assert!(
                stderr.trim_start().starts_with("error:") && !stderr.contains("panicked"),
                "{args:?}: {stderr}"
            );
        }
    }
    let (_, _, stderr) = cli(&db, &["deliveries", "retry", "99999", "99998"], &[]);
    assert!(stderr.contains("99999 99998"), "{stderr}");
    // The refused calls naming the dead delivery next to an unknown id re-queued nothing.
    assert_eq!(delivery_log(&client).await[0].status, "dead");
    let (code, stdout, stderr) = cli(&db, &["deliveries", "retry", &dead], &[]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "re-queued 1 delivery"),
        "{stderr}"
    );
    assert_eq!(delivery_log(&client).await[0].status, "pending");
}
