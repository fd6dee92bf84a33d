//! mTLS: client certificates and private CAs per webhook, against an HTTPS receiver that requires
//! a client certificate issued by a test CA (issue 5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use outbox_testkit::tls::TestCa;
use outbox_testkit::{Received, TestDb, TestReceiver};

use crate::support::*;

#[tokio::test]
async fn a_webhook_presents_its_client_certificate_and_trusts_its_private_ca() {
    let db = TestDb::new().await;
    let ca = TestCa::new("receiver CA");
    let client_cert = ca.client_cert("outbox-relay");
    let receiver = TestReceiver::start_tls(&ca.server_cert(), Some(&ca)).await;
    let identity_file = temp_file("client.pem", &client_cert.bundle_pem());
    let ca_file = temp_file("ca.pem", &ca.cert_pem());
    let identity_path = identity_file.to_str().unwrap();
    let ca_path = ca_file.to_str().unwrap();
    apply(
        &db,
        &format!(
            r#"[[webhook]]
name = "from-files"
events = ["order.*"]
url = "{files}"
tls = {{ client_cert = "{identity_path}", ca_cert = "{ca_path}" }}

[[webhook]]
name = "inline"
events = ["order.*"]
url = "{inline}"
[webhook.tls]
client_cert = '''
{bundle}'''
ca_cert = '''
{ca_pem}'''

[[webhook]]
name = "no-client-cert"
events = ["order.*"]
url = "{no_cert}"
max_attempts = 1
tls = {{ ca_cert = "{ca_path}" }}

[[webhook]]
name = "unknown-server-ca"
events = ["order.*"]
url = "{unknown_ca}"
max_attempts = 1
tls = {{ client_cert = "{identity_path}" }}
"#,
            files = receiver.url("/files"),
            inline = receiver.url("/inline"),
            no_cert = receiver.url("/no-cert"),
            unknown_ca = receiver.url("/unknown-ca"),
            bundle = client_cert.bundle_pem(),
            ca_pem = ca.cert_pem(),
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
    wait_for_status(&client, 2, "succeeded").await;
    let log = wait_for_status(&client, 2, "dead").await;
    relay.stop().await;

    let mut paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, vec!["/files", "/inline"]);
    for request in receiver.requests() {
        assert_eq!(
            request.client_cert.as_deref(),
            Some(client_cert.cert_der.as_slice()),
            "{} presented the webhook's certificate",
            request.path
        );
    }
    assert!(
        receiver.failed_handshakes() >= 2,
        "the receiver refused the handshake without a client certificate, and the relay refused the unknown server CA"
    );
    let error_of = |webhook: &str| {
        let id = log.iter().find(|d| d.webhook == webhook).unwrap().id;
        let client = &client;
        async move { attempt_errors(client, id).await.remove(0) }
    };
    let (_, status, outcome, error) = error_of("no-client-cert").await;
    assert_eq!((status, outcome.as_str()), (None, "connect_error"));
    let error = error.unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    let (_, status, outcome, error) = error_of("unknown-server-ca").await;
    assert_eq!((status, outcome.as_str()), (None, "connect_error"));
    let error = error.unwrap();
    assert!(error.contains("invalid peer certificate"), "{error}");

    // The inline private key is never shown.
    let (code, stdout, stderr) = cli(&db, &["webhooks", "show", "inline", "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    for line in client_cert.key_pem.lines().skip(1).take(3) {
        assert!(!stdout.contains(line), "{stdout}");
    }
}

#[tokio::test]
async fn a_changed_certificate_gets_a_new_client_whether_applied_or_rotated_on_disk() {
    let db = TestDb::new().await;
    let ca = TestCa::new("receiver CA");
    let receiver = TestReceiver::start_tls(&ca.server_cert(), Some(&ca)).await;
    let first = ca.client_cert("relay-2025");
    let second = ca.client_cert("relay-2026");
    let third = ca.client_cert("relay-2027");
    let ca_file = temp_file("ca.pem", &ca.cert_pem());
    let identity_file = temp_file("client.pem", &first.bundle_pem());
    let webhook = |path: &str, identity: &str| {
        format!(
            r#"[[webhook]]
name = "rotating"
events = ["order.*"]
url = "{}"
tls = {{ client_cert = "{identity}", ca_cert = "{}" }}
"#,
            receiver.url(path),
            ca_file.to_str().unwrap()
        )
    };
    apply(&db, &webhook("/v1", identity_file.to_str().unwrap())).await;
    let relay = start(&db).await;
    let client = db.connect().await;

    let sent = AtomicUsize::new(0);
    let presented = |r: &Received| r.client_cert.clone().unwrap().to_vec();

    send_until(
        &client,
        &receiver,
        &sent,
        "a request with the first certificate",
        &|r| presented(r) == first.cert_der,
    )
    .await;

    // Apply a new certificate (and a new path, to tell old and new configuration apart).
    let second_file = temp_file("client-2.pem", &second.bundle_pem());
    apply(&db, &webhook("/v2", second_file.to_str().unwrap())).await;
    send_until(
        &client,
        &receiver,
        &sent,
        "a request to the new configuration",
        &|r| r.path == "/v2",
    )
    .await;

    // Rotate the certificate inside the same file: picked up on the next reload.
    std::fs::write(&second_file, third.bundle_pem()).unwrap();
    client
        .execute("SELECT pg_notify('outbox_config', 'webhooks')", &[])
        .await
        .unwrap();
    send_until(
        &client,
        &receiver,
        &sent,
        "a request with the rotated certificate",
        &|r| presented(r) == third.cert_der,
    )
    .await;
    relay.stop().await;

    for r in receiver.requests() {
        let cert = presented(&r);
        match r.path.as_str() {
            "/v1" => assert_eq!(cert, first.cert_der),
            "/v2" => assert!(cert == second.cert_der || cert == third.cert_der),
            other => panic!("unexpected request to {other}"),
        }
    }
    let log = delivery_log(&client).await;
    assert!(log.iter().all(|d| d.status == "succeeded"), "{log:?}");
}

#[tokio::test]
async fn bad_tls_settings_are_rejected_by_apply_naming_the_field() {
    let db = TestDb::new().await;
    let ca = TestCa::new("some CA");
    let cert_only = temp_file("cert-only.pem", &ca.client_cert("x").cert_pem);
    let file = temp_file(
        "bad-tls.toml",
        &format!(
            r#"[[webhook]]
name = "missing-file"
events = ["*"]
url = "https://example.com/"
tls = {{ client_cert = "/nonexistent/relay.pem" }}

[[webhook]]
name = "no-key"
events = ["*"]
url = "https://example.com/"
tls = {{ client_cert = "{}" }}

[[webhook]]
name = "plain-http"
events = ["*"]
url = "http://example.com/"
tls = {{ ca_cert = '''
{}''' }}
"#,
            cert_only.to_str().unwrap(),
            ca.cert_pem()
        ),
    );
    let (code, _, stderr) = cli(&db, &["apply", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "webhook \"missing-file\": tls.client_cert: cannot read /nonexistent/relay.pem"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("webhook \"no-key\": tls.client_cert:")
            && stderr.contains("no private key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("webhook \"plain-http\": tls: ") && stderr.contains("https://"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
}

/// Sends events one at a time, each waited for, until one arrives that satisfies `done`.
async fn send_until(
    client: &tokio_postgres::Client,
    receiver: &TestReceiver,
    sent: &AtomicUsize,
    what: &str,
    done: &dyn Fn(&Received) -> bool,
) {
    let deadline = Instant::now() + SOON;
    loop {
        let n = sent.fetch_add(1, Ordering::Relaxed) + 1;
        emit(
            client,
            "order.updated",
            "order",
            "1",
            serde_json::json!({"n": n}),
        )
        .await;
        let got = receiver.wait_for(n, SOON).await;
        if done(&got[n - 1]) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// `openssl s_server` on an ephemeral loopback port, requiring a client certificate issued by
/// `client_ca`; answers every `GET` with 200 and a status page. Killed when dropped.
struct OpensslServer {
    child: std::process::Child,
    port: u16,
}

impl OpensslServer {
    fn start(
        dir: &std::path::Path,
        server: &outbox_testkit::tls::CertAndKey,
        client_ca: &str,
    ) -> OpensslServer {
        use std::io::BufRead;
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.join("client-ca.pem"), client_ca).unwrap();
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-Verify",
                "1",
                "-CAfile",
                "client-ca.pem",
                "-www",
            ])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server starts (these tests need the openssl command)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("ACCEPT 127.0.0.1:")
                    .and_then(|p| p.trim().parse().ok())
            })
            .expect("openssl s_server says where it listens");
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        OpensslServer { child, port }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_x509_v1_client_certificate_made_by_openssl_is_applied_and_presented() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = outbox_testkit::tls::openssl_v1_client(dir.path(), "relay-v1");
    let server_ca = TestCa::new("server CA");
    let server = OpensslServer::start(dir.path(), &server_ca.server_cert(), &v1.ca_pem);
    let identity = temp_file("v1-client.pem", &v1.client.bundle_pem());
    let url = format!("https://127.0.0.1:{}/hook?id={{{{ id }}}}", server.port);
    let hook = |name: &str, client_cert: Option<&str>| {
        let client_cert = client_cert
            .map(|c| format!("client_cert = \"{c}\"\n"))
            .unwrap_or_default();
        format!(
            "[[webhook]]\nname = \"{name}\"\nevents = [\"order.*\"]\nurl = \"{url}\"\nmethod = \"GET\"\nmax_attempts = 1\n[webhook.tls]\n{client_cert}ca_cert = '''\n{}'''\n",
            server_ca.cert_pem()
        )
    };
    // `apply` takes the v1 certificate (it used to refuse it: UnsupportedCertVersion).
    let file = temp_file(
        "hooks.toml",
        &[
            hook("v1-client", Some(identity.to_str().unwrap())),
            hook("no-client-cert", None),
        ]
        .concat(),
    );
    let (code, stdout, stderr) = cli(&db, &["apply", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");

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
    wait_for_webhook_status(&client, "v1-client", 1, "succeeded").await;
    let refused = wait_for_webhook_status(&client, "no-client-cert", 1, "dead").await;
    relay.stop().await;
    // The server requires a certificate from the v1 CA: only the webhook presenting the v1
    // certificate got through.
    let (_, status, outcome, error) = &attempt_errors(&client, refused[0].id).await[0];
    assert_eq!(
        (status, outcome.as_str()),
        (&None, "connect_error"),
        "{error:?}"
    );

    // `test --send` presents it too.
    let (code, stdout, stderr) = cli(
        &db,
        &[
            "test",
            "v1-client",
            "--entity",
            "order",
            "--id",
            "1",
            "--send",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let preview: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(preview["response"]["status"], 200, "{stdout}");
}
