//! Signatures, basic auth and custom headers, checked the way a receiver would check them: with
//! an independent HMAC implementation here, not the relay's own signer (issue 5).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use outbox_testkit::{Received, TestDb, TestReceiver};
use sha2::Sha256;

use crate::support::*;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Standard Webhooks receiver's check: does any `v1,` signature in the header match
/// HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")?
fn standard_verifies(request: &Received, secret: &str) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = request.header("webhook-id").unwrap();
    let timestamp = request.header("webhook-timestamp").unwrap();
    let expected = BASE64.encode(hmac_sha256(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            &request.body,
        ],
    ));
    request
        .header("webhook-signature")
        .unwrap()
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[tokio::test]
async fn standard_signatures_verify_with_every_rotated_secret() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "signed"
events = ["order.*"]
url = "{}"
[webhook.signature]
scheme = "standard"
secrets = ["{OLD_SECRET}", "{NEW_SECRET}"]
"#,
            receiver.url("/signed")
        ),
    )
    .await;
    let relay = start(&db).await;
    let client = db.connect().await;
    emit(
        &client,
        "order.created",
        "order",
        "7",
        serde_json::json!({"id": 7, "note": "ünïcode & \"quotes\""}),
    )
    .await;
    let got = receiver.wait_for(1, SOON).await;
    relay.stop().await;

    let request = &got[0];
    let signatures: Vec<&str> = request
        .header("webhook-signature")
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(
        signatures.len(),
        2,
        "one signature per secret: {signatures:?}"
    );
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    assert_ne!(signatures[0], signatures[1]);
    // A receiver that knows only the old secret, or only the new one, accepts the request.
    assert!(standard_verifies(request, OLD_SECRET));
    assert!(standard_verifies(request, NEW_SECRET));
    // ... and one that knows neither does not.
    assert!(!standard_verifies(
        request,
        "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw="
    ));
    let mut tampered = request.clone();
    tampered.body = request.text().replace("7", "8").into();
    assert!(!standard_verifies(&tampered, OLD_SECRET));
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!((timestamp - chrono::Utc::now().timestamp()).abs() < 300);
    assert_eq!(request.json()["data"]["note"], "ünïcode & \"quotes\"");
}

#[tokio::test]
async fn hmac_sha256_signs_the_raw_body_with_the_configured_header_prefix_and_encoding() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    apply(
        &db,
        &format!(
            r#"# The published test vector (docs/sending.md): a plain-text body signed with the defaults.
[[webhook]]
name = "vector"
events = ["order.*"]
url = "{vector}"
content_type = "text/plain"
body = "{{'test':'test2'}}"
signature = {{ scheme = "hmac-sha256", secrets = ["secret123"] }}

[[webhook]]
name = "hex-lower"
events = ["order.*"]
url = "{hex}"
signature = {{ scheme = "hmac-sha256", secrets = ["old-secret", "new-secret"], header = "X-Hub-Signature-256", prefix = "sha256=", encoding = "hex" }}

[[webhook]]
name = "base64"
events = ["order.*"]
url = "{b64}"
signature = {{ scheme = "hmac-sha256", secrets = ["s3cr3t"], header = "X-Signature", prefix = "", encoding = "base64" }}
"#,
            vector = receiver.url("/vector"),
            hex = receiver.url("/hex"),
            b64 = receiver.url("/base64"),
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
        serde_json::json!({"id": 1}),
    )
    .await;
    let got = receiver.wait_for(3, SOON).await;
    relay.stop().await;
    let by_path = |p: &str| got.iter().find(|r| r.path == p).unwrap().clone();

    let vector = by_path("/vector");
    assert_eq!(vector.text(), "{'test':'test2'}");
    assert_eq!(
        vector.header("ms-signature"),
        Some("sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A")
    );
    assert!(vector.header("webhook-signature").is_none());

    let hex_req = by_path("/hex");
    let expected: Vec<String> = ["old-secret", "new-secret"]
        .iter()
        .map(|s| {
            format!(
                "sha256={}",
                hex(&hmac_sha256(s.as_bytes(), &[&hex_req.body]))
            )
        })
        .collect();
    assert_eq!(
        hex_req.header("x-hub-signature-256"),
        Some(expected.join(", ").as_str()),
        "one signature per secret, comma-separated"
    );

    let b64_req = by_path("/base64");
    assert_eq!(
        b64_req.header("x-signature"),
        Some(
            BASE64
                .encode(hmac_sha256(b"s3cr3t", &[&b64_req.body]))
                .as_str()
        )
    );
}

#[tokio::test]
async fn basic_auth_and_templated_headers_are_sent_and_secrets_stay_hidden() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    let file = temp_file(
        "auth.toml",
        &format!(
            r#"[[webhook]]
name = "carrier"
events = ["shipment.*"]
url = "{}"
headers = {{ "X-Shop" = "{{{{ event.metadata.shop }}}}", "X-Record" = "{{{{ type }}}}/{{{{ id }}}}", "Webhook-Id" = "spoofed" }}
[webhook.auth]
basic = {{ username = "relay", password = "${{RELAY_E2E_CARRIER_PASSWORD}}" }}
"#,
            receiver.url("/carrier")
        ),
    );
    // `${VAR}` is resolved by `apply`, from its own environment.
    let (code, _, stderr) = cli(
        &db,
        &["apply", file.to_str().unwrap()],
        &[("RELAY_E2E_CARRIER_PASSWORD", "pa:ss wörd")],
    );
    assert_eq!(code, 0, "{stderr}");

    let relay = start(&db).await;
    let client = db.connect().await;
    client
        .execute(
            "INSERT INTO outbox.events (event_type, entity, entity_id, data, metadata)
             VALUES ('shipment.created', 'shipment', 'S/42', '{}', '{\"shop\": \"nl\"}')",
            &[],
        )
        .await
        .unwrap();
    let got = receiver.wait_for(1, SOON).await;
    relay.stop().await;

    let request = &got[0];
    let expected = format!("Basic {}", BASE64.encode("relay:pa:ss wörd"));
    assert_eq!(request.header("authorization"), Some(expected.as_str()));
    assert_eq!(request.header("x-shop"), Some("nl"));
    assert_eq!(request.header("x-record"), Some("shipment/S/42"));
    assert!(
        request.header("webhook-id").unwrap().starts_with("msg_"),
        "a webhook's own headers cannot replace webhook-id"
    );

    for args in [
        &["webhooks", "show", "carrier", "--json"][..],
        &["webhooks", "list", "--json"][..],
        &["webhooks", "show", "carrier"][..],
    ] {
        let (code, stdout, stderr) = cli(&db, args, &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            !stdout.contains("pa:ss"),
            "{args:?} shows the password: {stdout}"
        );
        assert!(stdout.contains("***"), "{args:?}: {stdout}");
    }
}
