//! The console: web pages for operators at `/ui/`, served on the relay's HTTP endpoint next to
//! `/api` (docs/operations.md, "Console").
//!
//! Every page is a thin face over the admin service (`outbox-admin`), rendered on the server with
//! MiniJinja from templates embedded in the binary, with one stylesheet and one small script of
//! its own (no other host is ever contacted; every page reads without JavaScript).
//!
//! Security: [`session`] signs a session cookie (`HttpOnly`, `SameSite=Strict`) that sign-in with
//! the admin token upgrades; every POST carries a CSRF token bound to that session, checked here
//! before any handler runs; every answer carries `Content-Security-Policy: default-src 'self'` and
//! `Cache-Control: no-store`; templates escape everything they print (event data and response
//! bodies are attacker-controlled) and the admin service never hands out a secret.

mod deliveries;
mod delivery;
mod form;
mod pages;
mod session;
mod view;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use session::Session;

use crate::state::AppState;

/// The console's own state: whether it may change webhooks, the key its cookies are signed
/// with, and its templates.
pub struct Console {
    pub edit: bool,
    keys: session::Keys,
    views: view::Views,
}

impl Console {
    /// A console with a fresh random signing key (sessions end when the relay restarts).
    pub fn new(edit: bool) -> Console {
        Console {
            edit,
            keys: session::Keys::random(),
            views: view::Views::new(),
        }
    }
}

/// The most a form may send (the webhook form's templates included).
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login_page).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/assets/console.css", get(pages::stylesheet))
        .route("/ui/assets/console.js", get(pages::script))
        .route("/ui/assets/favicon.svg", get(pages::favicon))
        .route("/ui/webhooks", get(webhooks::list))
        .route(
            "/ui/webhooks/new",
            get(webhooks::new_form).post(webhooks::create),
        )
        .route("/ui/webhooks/{name}", get(webhooks::detail))
        .route(
            "/ui/webhooks/{name}/edit",
            get(webhooks::edit_form).post(webhooks::update),
        )
        .route("/ui/webhooks/{name}/test", post(webhooks::send_test))
        .route("/ui/webhooks/{name}/pause", post(webhooks::pause))
        .route("/ui/webhooks/{name}/resume", post(webhooks::resume))
        .route("/ui/webhooks/{name}/delete", post(webhooks::delete))
        .route("/ui/deliveries", get(deliveries::list))
        .route(
            "/ui/deliveries/retry",
            get(deliveries::retry_confirm).post(deliveries::retry_selection),
        )
        .route(
            "/ui/deliveries/cancel",
            get(deliveries::cancel_confirm).post(deliveries::cancel_selection),
        )
        .route("/ui/deliveries/{id}", get(delivery::detail))
        .route("/ui/deliveries/{id}/retry", post(delivery::retry))
        .route("/ui/deliveries/{id}/cancel", post(delivery::cancel))
        .route("/ui/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Runs before every console request: security headers on every answer; a session (signed in
/// when a token is configured) for every page but the sign-in page and the assets; a valid CSRF
/// token on every POST. The session is handed to the handlers as an extension, and a POST's form
/// fields (already read) as another.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !path.starts_with("/ui") {
        return next.run(request).await;
    }
    let console = &state.console;
    let token_required = state.admin_token.is_some();
    let existing = session::read(&console.keys, request.headers());
    let (session, fresh) = match existing {
        Some(s) => (s, false),
        None => (session::Session::issue(false), true),
    };
    let public = path.starts_with("/ui/assets/") || path == "/ui/login";
    let mut response = if token_required && !session.signed_in && !public {
        if request.method() == Method::GET {
            Redirect::to("/ui/login").into_response()
        } else {
            view::forbidden("Sign in first: this action needs the admin token.")
        }
    } else if request.method() == Method::POST {
        match read_form(request).await {
            Err(response) => response,
            Ok((mut request, fields)) => {
                let presented = fields.get("csrf").map(String::as_str).unwrap_or("");
                if fresh || !session.csrf_matches(&console.keys, presented) {
                    view::forbidden(
                        "The form's security token is missing or out of date; reload the page and try again.",
                    )
                } else {
                    request.extensions_mut().insert(session.clone());
                    request.extensions_mut().insert(Form(fields));
                    next.run(request).await
                }
            }
        }
    } else {
        let mut request = request;
        request.extensions_mut().insert(session.clone());
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if fresh
        && !headers.contains_key(header::SET_COOKIE)
        && let Ok(cookie) = HeaderValue::from_str(&session.cookie(&console.keys))
    {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// A POST's form fields, read by [`guard`].
#[derive(Debug, Clone, Default)]
pub struct Form(pub HashMap<String, String>);

impl Form {
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Reads an `application/x-www-form-urlencoded` body, giving the request back (bodiless).
async fn read_form(request: Request) -> Result<(Request, HashMap<String, String>), Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than the console accepts (2 MiB)",
            )
                .into_response()
        })?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
        view::forbidden(
            "The request is not a form the console sent; reload the page and try again.",
        )
    })?;
    Ok((
        Request::from_parts(parts, Body::empty()),
        fields.into_iter().collect(),
    ))
}

/// What every handler needs: the console, its session, and the relay's state.
pub struct Ui {
    pub state: AppState,
    pub session: Session,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ui
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Ui, Response> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| view::forbidden("No console session."))?;
        Ok(Ui {
            state: axum::extract::FromRef::from_ref(state),
            session,
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Form {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Form, Response> {
        Ok(parts.extensions.get::<Form>().cloned().unwrap_or_default())
    }
}

impl Ui {
    pub fn console(&self) -> &Arc<Console> {
        &self.state.console
    }
}
