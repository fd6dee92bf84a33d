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

/// Every webhook and relation of a database, secrets included, in name order.
async fn configuration(
    db: &TestDb,
) -> (Vec<outbox_core::WebhookSpec>, Vec<(String, String, String)>) {
    let client = db.connect().await;
    let webhooks = client
        .query(
            &format!(
                "SELECT {} FROM outbox.webhooks ORDER BY name",
                outbox_relay::catalog::WEBHOOK_COLUMNS
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| outbox_relay::catalog::webhook_row(r).unwrap().spec.unwrap())
        .collect();
    let relations = client
        .query(
            "SELECT entity, name, query FROM outbox.relations ORDER BY entity, name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    (webhooks, relations)
}

#[tokio::test]
async fn webhooks_export_round_trips_through_apply_without_writing_a_secret() {
    let db = TestDb::new().await;
    let ca = outbox_testkit::tls::TestCa::new("export test CA");
    let identity = ca.client_cert("relay");
    let source = format!(
        r#"
[[relation]]
entity = "shipment"
name   = "order"
query  = "SELECT jsonb_build_object('code', 'SO-' || ($1->>'order_id'))"

[[relation]]
entity = "invoice"
name   = "customer"
query  = "SELECT jsonb_build_object('name', $1->>'customer')"

[[webhook]]
name           = "carrier-shipments"
contact        = "it@example.com"
events         = ["shipment.created", "shipment.updated"]
filter         = 'event.data.carrier == "dhl"'
url            = "https://relay:UrlPass_1@carrier.example/s/{{{{ id }}}}?api_key=QueryKey_2&id={{{{ id }}}}"
method         = "PUT"
headers        = {{ "X-Api-Key" = "HeaderKey_3", "X-Shop" = "{{{{ event.metadata.shop }}}}" }}
content_type   = "application/xml"
body           = '''<s id="{{{{ event.data.id }}}}" note="$${{literal}}">
  <o>{{{{ related.order.code }}}}</o>
</s>'''
priority       = 10
coalesce       = true
ordered        = true
active         = false
timeout        = "10s"
max_attempts   = 3
retry_schedule = ["5s", "1m"]
max_in_flight  = 4

[webhook.auth]
basic = {{ username = "relay", password = "BasicPass_4" }}

[webhook.signature]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"]

[webhook.tls]
client_cert = """{bundle}"""
ca_cert     = """{ca_pem}"""

[[webhook]]
name   = "token-hook"
events = ["*"]
url    = "https://Token_5@h.example/x"

[webhook.signature]
scheme   = "hmac-sha256"
secrets  = ["HmacSecret_6"]
header   = "x-sig"
prefix   = ""
encoding = "base64"
"#,
        bundle = identity.bundle_pem(),
        ca_pem = ca.cert_pem(),
    );
    apply(&db, &source).await;
    let (webhooks, relations) = configuration(&db).await;
    assert_eq!((webhooks.len(), relations.len()), (2, 2));

    let (code, exported, stderr) = cli(&db, &["webhooks", "export"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let key_lines: Vec<&str> = identity.key_pem.lines().skip(1).collect();
    for secret in [
        "UrlPass_1",
        "QueryKey_2",
        "HeaderKey_3",
        "BasicPass_4",
        "Token_5",
        "HmacSecret_6",
        "whsec_",
    ]
    .into_iter()
    .chain(key_lines.iter().copied())
    {
        assert!(!exported.contains(secret), "{secret} in:\n{exported}");
    }
    assert!(exported.contains("note=\"$${literal}\""), "{exported}");
    // The comment names every variable, and the secret each stands for.
    let carrier = &webhooks[0];
    let token = &webhooks[1];
    let signature = carrier.signature.as_ref().unwrap();
    let env: Vec<(&str, String)> = vec![
        ("CARRIER_SHIPMENTS_URL_PASSWORD", "UrlPass_1".into()),
        ("CARRIER_SHIPMENTS_URL_API_KEY", "QueryKey_2".into()),
        ("CARRIER_SHIPMENTS_HEADER_X_API_KEY", "HeaderKey_3".into()),
        ("CARRIER_SHIPMENTS_PASSWORD", "BasicPass_4".into()),
        (
            "CARRIER_SHIPMENTS_SIGNING_SECRET_1",
            signature.secrets[0].clone(),
        ),
        (
            "CARRIER_SHIPMENTS_SIGNING_SECRET_2",
            signature.secrets[1].clone(),
        ),
        (
            "CARRIER_SHIPMENTS_CLIENT_CERT",
            carrier.tls.as_ref().unwrap().client_cert.clone().unwrap(),
        ),
        ("TOKEN_HOOK_URL_USER", "Token_5".into()),
        (
            "TOKEN_HOOK_SIGNING_SECRET",
            token.signature.as_ref().unwrap().secrets[0].clone(),
        ),
    ];
    for (var, _) in &env {
        assert!(
            exported
                .lines()
                .any(|l| l.starts_with("#   ") && l.contains(var)),
            "{var} is not named in the comment:\n{exported}"
        );
        assert!(
            exported.contains(&format!("${{{var}}}")),
            "{var}:\n{exported}"
        );
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Applied to another database, it gives exactly the same configuration.
    let file = temp_file("exported.toml", &exported);
    let file = file.to_str().unwrap();
    let copy = TestDb::new().await;
    let (code, _, stderr) = cli(&copy, &["apply", file], &env_refs);
    assert_eq!(code, 0, "{stderr}\n{exported}");
    assert_eq!(configuration(&copy).await, (webhooks, relations));
    // Applied to the original, it changes nothing.
    let (code, plan, stderr) = cli(&db, &["apply", file, "--dry-run"], &env_refs);
    assert_eq!(code, 0, "{stderr}");
    let changes: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("webhook") || l.contains("relation"))
        .filter(|l| !l.starts_with("unchanged"))
        .collect();
    assert!(changes.is_empty(), "{plan}");
    // Without the variables, apply says which are missing and writes nothing.
    let (code, _, stderr) = cli(&TestDb::new().await, &["apply", file], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("CARRIER_SHIPMENTS_PASSWORD is not set"),
        "{stderr}"
    );

    // Named webhooks come with the relations their templates use.
    let (code, one, _) = cli(&db, &["webhooks", "export", "carrier-shipments"], &[]);
    assert_eq!(code, 0);
    assert!(
        one.contains("name = \"order\"") && !one.contains("customer"),
        "{one}"
    );
    assert!(!one.contains("token-hook"), "{one}");
    let (code, one, _) = cli(&db, &["webhooks", "export", "token-hook"], &[]);
    assert_eq!(code, 0);
    assert!(
        !one.contains("[[relation]]") && one.contains("token-hook"),
        "{one}"
    );
    let (code, _, stderr) = cli(&db, &["webhooks", "export", "token-hook", "nope"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no webhook named \"nope\""), "{stderr}");
}
