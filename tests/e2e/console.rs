//! The console's HTTP contract (the browser suite in tests/console drives the pages themselves):
//! `/` leads to `/ui/`, sign-in guards every page when a token is set, POSTs need the session's
//! CSRF token, and `console_edit = false` leaves webhooks alone while queue actions still work.

use outbox_relay::relay::Relay;
use outbox_testkit::{Reply, TestDb, TestReceiver};
use serde_json::json;

use crate::support::*;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session cookie a page set and the CSRF token of its forms.
pub async fn session(base: &str, path: &str) -> (String, String) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let html = response.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_string();
    (cookie, csrf)
}

pub async fn post(base: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_read_only_console_leaves_webhooks_alone_but_retries() {
    let db = TestDb::new().await;
    let receiver = TestReceiver::start().await;
    receiver.handle(|_| Reply::status(500));
    apply(
        &db,
        &format!(
            "[[webhook]]\nname = \"w\"\nevents = [\"order.*\"]\nurl = \"{}\"\nmax_attempts = 1\n",
            receiver.url("/hook")
        ),
    )
    .await;
    let mut settings = settings(&db);
    settings.console_edit = false;
    let relay = Relay::start(settings).await.unwrap();
    let base = format!("http://{}", relay.addr());
    let client_db = db.connect().await;
    emit(&client_db, "order.created", "order", "1", json!({})).await;
    let dead = wait_for_status(&client_db, 1, "dead").await[0].id;

    let root = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui/");

    let (cookie, csrf) = session(&base, &format!("/ui/deliveries/{dead}")).await;
    for path in [
        "/ui/webhooks/w/pause",
        "/ui/webhooks/w/delete",
        "/ui/webhooks/new",
    ] {
        let (status, body) = post(&base, path, &cookie, &[("csrf", &csrf)]).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("console_edit = false"), "{path}: {body}");
    }
    let (status, _) = post(&base, "/ui/webhooks/w/pause", &cookie, &[]).await;
    assert_eq!(status, 403, "no CSRF token");
    let active: bool = client_db
        .query_one("SELECT active FROM outbox.webhooks WHERE name = 'w'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(active, "the webhook was left alone");
    let page = client()
        .get(format!("{base}/ui/webhooks/w"))
        .header("cookie", &cookie);
    let html = page.send().await.unwrap().text().await.unwrap();
    assert!(
        !html.contains(">Pause<") && !html.contains(">Edit<"),
        "{html}"
    );

    // Queue actions stay.
    receiver.handle(|_| Reply::ok());
    let (status, body) = post(
        &base,
        &format!("/ui/deliveries/{dead}/retry"),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    wait_for_status(&client_db, 1, "succeeded").await;
    relay.stop().await;
}

#[tokio::test]
async fn with_a_token_every_page_needs_a_signed_in_session() {
    let db = TestDb::new().await;
    let mut settings = settings(&db);
    settings.admin_token = Some("t0ken-console".into());
    let relay = Relay::start(settings).await.unwrap();
    let base = format!("http://{}", relay.addr());
    for path in ["/ui/", "/ui/webhooks", "/ui/deliveries", "/ui/deliveries/1"] {
        let response = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/ui/login", "{path}");
        assert_eq!(
            response.headers()["content-security-policy"],
            "default-src 'self'"
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    let (cookie, csrf) = session(&base, "/ui/login").await;
    let (status, _) = post(
        &base,
        "/ui/login",
        &cookie,
        &[("csrf", &csrf), ("token", "nope")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&base, "/ui/login", &cookie, &[("token", "t0ken-console")]).await;
    assert_eq!(status, 403, "sign-in needs the CSRF token too");
    let response = client()
        .post(format!("{base}/ui/login"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([("csrf", csrf.as_str()), ("token", "t0ken-console")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains("t0ken-console"),
        "the token is not in the cookie"
    );
    let signed_in = set.split(';').next().unwrap();
    let overview = client()
        .get(format!("{base}/ui/"))
        .header("cookie", signed_in)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    // The admin API keeps its own rule: the session cookie does not open it.
    let (status, _) = http("GET", &format!("{base}/api/webhooks"), None).await;
    assert_eq!(status, 401);
    relay.stop().await;
}
