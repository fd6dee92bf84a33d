//! Overview, sign-in and the console's own assets.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::{Form, Ui, session::Session};

pub async fn overview(ui: Ui) -> Response {
    let client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), "/ui/"),
    };
    match outbox_admin::overview::overview(&**client).await {
        Ok(o) => ui.page(
            StatusCode::OK,
            "overview.html",
            "overview",
            json!({ "o": o }),
        ),
        Err(e) => ui.error(e, "/ui/"),
    }
}

pub async fn login_page(ui: Ui) -> Response {
    if ui.state.admin_token.is_none() || ui.session.signed_in {
        return Redirect::to("/ui/").into_response();
    }
    ui.page(StatusCode::OK, "login.html", "", json!({}))
}

pub async fn login(ui: Ui, form: Form) -> Response {
    let Some(token) = ui.state.admin_token.as_deref() else {
        return Redirect::to("/ui/").into_response();
    };
    if !crate::auth::token_matches(form.get("token"), token) {
        tracing::warn!("console sign-in with a wrong token");
        return ui.page(
            StatusCode::UNAUTHORIZED,
            "login.html",
            "",
            json!({ "error": "That is not the admin token. Use the relay's OUTBOX_ADMIN_TOKEN." }),
        );
    }
    with_session(
        Redirect::to("/ui/").into_response(),
        &ui,
        Session::issue(true),
    )
}

pub async fn logout(ui: Ui) -> Response {
    with_session(
        Redirect::to("/ui/login").into_response(),
        &ui,
        Session::issue(false),
    )
}

fn with_session(mut response: Response, ui: &Ui, session: Session) -> Response {
    if let Ok(cookie) = HeaderValue::from_str(&session.cookie(&ui.console().keys)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

pub async fn favicon() -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml")],
        include_str!("assets/favicon.svg"),
    )
        .into_response()
}

pub async fn not_found(ui: Ui) -> Response {
    ui.page(
        StatusCode::NOT_FOUND,
        "error.html",
        "",
        json!({ "heading": "Not found", "message": "There is no such console page." }),
    )
}
