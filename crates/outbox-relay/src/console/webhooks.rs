//! The webhook pages: the list, one webhook (configuration, queue, pause/resume, test, merge
//! fields), and the form that creates or changes one.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use outbox_admin::preview::{Preview, PreviewRequest};
use outbox_admin::{AdminError, deliveries, fields, preview, webhooks};
use outbox_matcher::Pattern;
use serde::Deserialize;
use serde_json::{Value, json};

use super::view::{RESERVED_NAME, webhook_href as href};
use super::{Form, Ui, form};

type Client = deadpool_postgres::Object;

async fn client(ui: &Ui, back: &str) -> Result<Client, Response> {
    ui.state
        .pool
        .get()
        .await
        .map_err(|e| ui.error(e.into(), back))
}

pub async fn list(ui: Ui) -> Response {
    let client = match client(&ui, "/ui/").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let result = async {
        let all = webhooks::list(&**client).await?;
        let stats = webhooks::stats(&**client).await?;
        Ok::<_, AdminError>(
            all.into_iter()
                .map(|w| {
                    json!({
                        "name": w.name,
                        "contact": w.config["contact"],
                        "events": w.events(),
                        "state": w.state(),
                        "error": w.error,
                        "disabled_reason": w.disabled_reason,
                        "stats": stats.get(&w.name).cloned().unwrap_or_default(),
                    })
                })
                .collect::<Vec<_>>(),
        )
    }
    .await;
    match result {
        Ok(rows) => ui.page(
            StatusCode::OK,
            "webhooks.html",
            "webhooks",
            json!({ "webhooks": rows }),
        ),
        Err(e) => ui.error(e, "/ui/"),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    entity: Option<String>,
    id: Option<String>,
    fields_id: Option<String>,
}

pub async fn detail(ui: Ui, Path(name): Path<String>, Query(q): Query<DetailQuery>) -> Response {
    let test = match (q.entity, q.id) {
        (Some(e), Some(i)) if !e.trim().is_empty() && !i.trim().is_empty() => Some((e, i)),
        _ => None,
    };
    render_detail(ui, name, test, false, q.fields_id).await
}

/// **Send test**: renders and sends the request once, then shows the page with the answer.
pub async fn send_test(ui: Ui, Path(name): Path<String>, form: Form) -> Response {
    let test = Some((form.get("entity").to_string(), form.get("id").to_string()));
    render_detail(ui, name, test, true, None).await
}

async fn render_detail(
    ui: Ui,
    name: String,
    test: Option<(String, String)>,
    send: bool,
    fields_id: Option<String>,
) -> Response {
    let mut client = match client(&ui, "/ui/webhooks").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let w = match webhooks::show(&**client, &name).await {
        Ok(w) => w,
        Err(e) => return ui.error(e, "/ui/webhooks"),
    };
    let stats = match webhooks::stats(&**client).await {
        Ok(mut s) => s.remove(&name).unwrap_or_default(),
        Err(e) => return ui.error(e, "/ui/webhooks"),
    };
    let filter = deliveries::Filter {
        webhook: Some(name.clone()),
        ..Default::default()
    };
    let latest = match deliveries::list(&**client, &filter, None, 20).await {
        Ok(page) => page.deliveries,
        Err(e) => return ui.error(e, "/ui/webhooks"),
    };

    let (mut preview_shown, mut test_error) = (None::<Preview>, None::<String>);
    if let Some((entity, id)) = &test {
        let wanted = PreviewRequest {
            webhook: name.clone(),
            entity: entity.trim().to_string(),
            id: id.trim().to_string(),
            send,
        };
        match preview::preview(&mut client, &wanted, Some(&ui.state.transport)).await {
            Ok(p) => preview_shown = Some(p),
            Err(e) => test_error = Some(e.to_string()),
        }
    }

    let patterns: Vec<Pattern> = w
        .events()
        .iter()
        .filter_map(|e| Pattern::parse(e).ok())
        .collect();
    let fields_id = fields_id.filter(|s| !s.trim().is_empty());
    let (mut merge, mut fields_error) = (None, None);
    if !patterns.is_empty() {
        match fields::for_patterns(&mut client, &patterns, fields_id.as_deref()).await {
            Ok(Some(f)) => merge = Some(f),
            Ok(None) if fields_id.is_some() => {
                fields_error = Some(format!(
                    "no event of its types for record id {:?}",
                    fields_id.as_deref().unwrap_or_default()
                ))
            }
            Ok(None) => {}
            Err(e) => fields_error = Some(e.to_string()),
        }
    }
    let state = w.state();
    let config = w.config.clone();
    // Every key the webhook sets, in the documented order, as text (strings as they are).
    let config_shown: Vec<(&str, String)> = webhooks::KEYS
        .iter()
        .filter_map(|key| match config.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some((*key, s.clone())),
            Some(other) => Some((*key, other.to_string())),
        })
        .collect();
    let field_rows: Vec<Value> = merge
        .iter()
        .flat_map(|f| f.fields.iter())
        .map(|f| json!({ "path": f.path, "example": f.example.to_string() }))
        .collect();
    ui.page(
        StatusCode::OK,
        "webhook.html",
        "webhooks",
        json!({
            "w": {
                "name": w.name, "active": w.active, "error": w.error,
                "disabled_reason": w.disabled_reason, "config": config, "state": state,
            },
            "config_shown": config_shown,
            "field_rows": field_rows,
            "stats": stats,
            "deliveries": latest,
            // The page of a webhook named like the create form is asked for by name (its GET
            // forms carry the name along).
            "by_name": w.name == RESERVED_NAME,
            "test": test.as_ref().map(|(e, i)| json!({ "entity": e, "id": i })),
            "preview": preview_shown,
            "test_error": test_error,
            "fields": merge,
            "fields_id": fields_id,
            "fields_error": fields_error,
        }),
    )
}

fn read_only(ui: &Ui) -> Option<Response> {
    (!ui.console().edit).then(|| {
        ui.page(
            StatusCode::FORBIDDEN,
            "error.html",
            "webhooks",
            json!({
                "heading": "Read-only console",
                "message": "This relay's console does not change webhooks (console_edit = false); change them with `outbox-relay apply`.",
                "back": "/ui/webhooks",
            }),
        )
    })
}

pub async fn pause(ui: Ui, Path(name): Path<String>) -> Response {
    set_active(ui, name, false).await
}

pub async fn resume(ui: Ui, Path(name): Path<String>) -> Response {
    set_active(ui, name, true).await
}

async fn set_active(ui: Ui, name: String, active: bool) -> Response {
    if let Some(r) = read_only(&ui) {
        return r;
    }
    let client = match client(&ui, "/ui/webhooks").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let done = if active {
        webhooks::resume(&**client, &name).await
    } else {
        webhooks::pause(&**client, &name).await
    };
    match done {
        Ok(()) => Redirect::to(&href(&name)).into_response(),
        Err(e) => ui.error(e, "/ui/webhooks"),
    }
}

pub async fn delete(ui: Ui, Path(name): Path<String>) -> Response {
    if let Some(r) = read_only(&ui) {
        return r;
    }
    let client = match client(&ui, "/ui/webhooks").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match webhooks::delete(&**client, &name).await {
        Ok(()) => Redirect::to("/ui/webhooks").into_response(),
        Err(e) => ui.error(e, "/ui/webhooks"),
    }
}

/// `/ui/webhooks/new`: the form that creates a webhook, or — asked with `?name=new` — the page
/// of the webhook named `new`, which cannot have `/ui/webhooks/new` as its own.
#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    name: Option<String>,
    #[serde(flatten)]
    detail: DetailQuery,
}

pub async fn new_form(ui: Ui, Query(q): Query<NewQuery>) -> Response {
    match q.name {
        Some(name) if name == RESERVED_NAME => {
            return detail(ui, Path(name), Query(q.detail)).await;
        }
        // Any other name has a page of its own.
        Some(name) if !name.is_empty() => return Redirect::to(&href(&name)).into_response(),
        _ => {}
    }
    if let Some(r) = read_only(&ui) {
        return r;
    }
    show_form(&ui, None, &form::blank(), &[], StatusCode::OK)
}

pub async fn edit_form(ui: Ui, Path(name): Path<String>) -> Response {
    if let Some(r) = read_only(&ui) {
        return r;
    }
    let client = match client(&ui, "/ui/webhooks").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match webhooks::stored(&**client, &name).await {
        Ok((_, Ok(spec))) => show_form(&ui, Some(&name), &form::of(&spec), &[], StatusCode::OK),
        Ok((_, Err(reason))) => {
            ui.error(AdminError::UnusableWebhook { name, reason }, "/ui/webhooks")
        }
        Err(e) => ui.error(e, "/ui/webhooks"),
    }
}

fn show_form(
    ui: &Ui,
    name: Option<&str>,
    values: &form::Values,
    problems: &[(String, String)],
    status: StatusCode,
) -> Response {
    ui.page(
        status,
        "webhook_form.html",
        "webhooks",
        json!({
            "creating": name.is_none(),
            "name": name,
            "action": match name {
                None => "/ui/webhooks/new".to_string(),
                Some(n) => format!("{}/edit", href(n)),
            },
            "fields": form::fields(values, problems, name.is_some()),
            "general": form::general(problems),
            "problems": problems.len(),
        }),
    )
}

pub async fn create(ui: Ui, form: Form) -> Response {
    if let Some(r) = read_only(&ui) {
        return r;
    }
    let values = form::submitted(&form);
    save(ui, None, values).await
}

pub async fn update(ui: Ui, Path(name): Path<String>, form: Form) -> Response {
    if let Some(r) = read_only(&ui) {
        return r;
    }
    let values = form::submitted(&form);
    save(ui, Some(name), values).await
}

/// Checks the form exactly as `apply` checks a file; writes only when nothing is wrong.
async fn save(ui: Ui, name: Option<String>, values: form::Values) -> Response {
    let client = match client(&ui, "/ui/webhooks").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let stored = match &name {
        None => None,
        Some(n) => match webhooks::stored(&**client, n).await {
            Ok((_, spec)) => spec.ok(),
            Err(e) => return ui.error(e, "/ui/webhooks"),
        },
    };
    let (item, form_problems) = form::to_item(&values, stored.as_ref());
    let result = if form_problems.is_empty() {
        match &name {
            None => webhooks::create(&**client, item).await,
            Some(n) => webhooks::update(&**client, n, item).await,
        }
    } else {
        // The form's own problems, together with every other one; nothing is written.
        let mut problems = form_problems;
        if let Err(AdminError::InvalidWebhook { problems: more, .. }) = webhooks::check(item) {
            problems.extend(more);
        }
        Err(AdminError::InvalidWebhook {
            name: name.clone().unwrap_or_default(),
            problems,
        })
    };
    match result {
        Ok(spec) => Redirect::to(&href(&spec.name)).into_response(),
        Err(AdminError::InvalidWebhook { problems, .. }) => show_form(
            &ui,
            name.as_deref(),
            &values,
            &problems,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e) => ui.error(e, "/ui/webhooks"),
    }
}
