//! The queue pages: deliveries filtered and paged newest first (with live refresh), and the retry
//! or cancel of a filtered set (its count shown first). One delivery: [`super::delivery`].

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use outbox_admin::deliveries::{self, FINISHED, Filter, STATUSES, Selection};
use outbox_admin::{AdminError, webhooks};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Form, Ui};

/// Deliveries a page lists.
const PAGE: i64 = 100;

/// The queue's filters as the browser sends them (every value text, empty meaning any).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct FilterQuery {
    status: String,
    webhook: String,
    entity: String,
    entity_id: String,
    since: String,
    until: String,
}

impl FilterQuery {
    fn from_form(form: &Form) -> FilterQuery {
        FilterQuery {
            status: form.get("status").into(),
            webhook: form.get("webhook").into(),
            entity: form.get("entity").into(),
            entity_id: form.get("entity_id").into(),
            since: form.get("since").into(),
            until: form.get("until").into(),
        }
    }

    fn given(v: &str) -> Option<String> {
        Some(v.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn filter(&self) -> Result<Filter, AdminError> {
        Ok(Filter {
            status: Self::given(&self.status),
            webhook: Self::given(&self.webhook),
            entity: Self::given(&self.entity),
            entity_id: Self::given(&self.entity_id),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        })
    }

    fn selection(&self) -> Result<Selection, AdminError> {
        let f = self.filter()?;
        Ok(Selection {
            status: f.status.unwrap_or_default(),
            webhook: f.webhook,
            entity: f.entity,
            entity_id: f.entity_id,
            created_since: f.since,
            created_until: f.until,
            ..Default::default()
        })
    }

    /// The filters as a query string (for links that keep them).
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// A time filter: RFC 3339, or a duration meaning that long ago (`2h`).
fn time(field: &'static str, text: &str) -> Result<Option<DateTime<Utc>>, AdminError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    match outbox_core::parse_duration(text) {
        Ok(d) => Ok(Some(
            Utc::now() - chrono::Duration::from_std(d).unwrap_or_default(),
        )),
        Err(_) => Err(AdminError::BadInput {
            field,
            message: format!(
                "{field} {text:?} is neither an RFC 3339 time (2026-11-24T08:00:00Z) nor a duration (2h)"
            ),
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    filters: FilterQuery,
    before: Option<i64>,
    /// Only the table's rows (the live refresh).
    rows: Option<String>,
    /// How many a retry of the filtered set just re-queued.
    requeued: Option<usize>,
    /// How many a cancel of the filtered set just cancelled.
    cancelled: Option<usize>,
}

pub async fn list(ui: Ui, Query(q): Query<ListQuery>) -> Response {
    let client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), "/ui/"),
    };
    let names: Vec<String> = match webhooks::list(&**client).await {
        Ok(all) => all.into_iter().map(|w| w.name).collect(),
        Err(e) => return ui.error(e, "/ui/"),
    };
    let (page, error) = match q.filters.filter() {
        Ok(filter) => match deliveries::list(&**client, &filter, q.before, PAGE).await {
            Ok(page) => (page, None),
            Err(e @ AdminError::BadInput { .. }) => (empty(), Some(e.to_string())),
            Err(e) => return ui.error(e, "/ui/deliveries"),
        },
        Err(e) => (empty(), Some(e.to_string())),
    };
    let values = json!({
        "deliveries": page.deliveries,
        "next_before": page.next_before,
        "before": q.before,
        "f": q.filters,
        "query": q.filters.query(),
        "statuses": STATUSES,
        "webhook_names": names,
        "retryable": FINISHED.contains(&q.filters.status.as_str()),
        "limit": PAGE,
        "error": error,
        "flash": flash(&q),
    });
    if q.rows.is_some() {
        return match ui
            .console()
            .views
            .render_rows(ui.context("deliveries", values))
        {
            Ok(html) => Html(html).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    ui.page(StatusCode::OK, "deliveries.html", "deliveries", values)
}

/// What a bulk action just did.
fn flash(q: &ListQuery) -> Option<String> {
    let plural = |n: usize| if n == 1 { "y" } else { "ies" };
    match (q.requeued, q.cancelled) {
        (Some(n), _) => Some(format!("Re-queued {n} deliver{}.", plural(n))),
        (_, Some(n)) => Some(format!("Cancelled {n} deliver{}.", plural(n))),
        _ => None,
    }
}

fn empty() -> deliveries::Page {
    deliveries::Page {
        deliveries: Vec::new(),
        next_before: None,
    }
}

/// What a bulk action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bulk {
    /// Re-queue the finished deliveries of the filtered set.
    Retry,
    /// Cancel the pending deliveries of the filtered set.
    Cancel,
}

impl Bulk {
    fn verb(self) -> &'static str {
        match self {
            Bulk::Retry => "Retry",
            Bulk::Cancel => "Cancel",
        }
    }
}

/// The count of what **Retry** would re-queue, and the button that does it.
pub async fn retry_confirm(ui: Ui, Query(filters): Query<FilterQuery>) -> Response {
    confirm(ui, filters, Bulk::Retry).await
}

/// The count of what **Cancel** would cancel, and the button that does it.
pub async fn cancel_confirm(ui: Ui, Query(filters): Query<FilterQuery>) -> Response {
    confirm(ui, filters, Bulk::Cancel).await
}

async fn confirm(ui: Ui, filters: FilterQuery, bulk: Bulk) -> Response {
    let back = format!("/ui/deliveries?{}", filters.query());
    let client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), &back),
    };
    let count = match bulk {
        Bulk::Retry => match filters.selection() {
            Ok(s) => deliveries::count_selection(&**client, &s).await,
            Err(e) => Err(e),
        },
        Bulk::Cancel => match filters.filter() {
            Ok(f) => deliveries::count_pending(&**client, &f).await,
            Err(e) => Err(e),
        },
    };
    let (status, action, explain) = match bulk {
        Bulk::Retry => (
            filters.status.clone(),
            "/ui/deliveries/retry",
            "Each is re-queued with a fresh attempt budget and keeps its id (and webhook-id).",
        ),
        Bulk::Cancel => (
            "pending".to_string(),
            "/ui/deliveries/cancel",
            "Each is kept as cancelled and not sent; one being attempted when this runs is left alone.",
        ),
    };
    match count {
        Ok(count) => ui.page(
            StatusCode::OK,
            "bulk.html",
            "deliveries",
            json!({
                "verb": bulk.verb(),
                "action": action,
                "explain": explain,
                "count": count,
                "status": status,
                "webhook": FilterQuery::given(&filters.webhook),
                "entity": FilterQuery::given(&filters.entity),
                "entity_id": FilterQuery::given(&filters.entity_id),
                "filter": filters,
                "query": filters.query(),
            }),
        ),
        Err(e) => ui.error(e, &back),
    }
}

pub async fn retry_selection(ui: Ui, form: Form) -> Response {
    run_bulk(ui, form, Bulk::Retry).await
}

pub async fn cancel_selection(ui: Ui, form: Form) -> Response {
    run_bulk(ui, form, Bulk::Cancel).await
}

async fn run_bulk(ui: Ui, form: Form, bulk: Bulk) -> Response {
    let filters = FilterQuery::from_form(&form);
    let back = format!("/ui/deliveries?{}", filters.query());
    let client = match ui.state.pool.get().await {
        Ok(c) => c,
        Err(e) => return ui.error(e.into(), &back),
    };
    let done = match bulk {
        Bulk::Retry => match filters.selection() {
            Ok(s) => deliveries::retry_selection(&**client, &s)
                .await
                .map(|r| ("requeued", r.requeued.len())),
            Err(e) => Err(e),
        },
        Bulk::Cancel => match filters.filter() {
            Ok(f) => deliveries::cancel_selection(&**client, &f)
                .await
                .map(|c| ("cancelled", c.cancelled.len())),
            Err(e) => Err(e),
        },
    };
    match done {
        Ok((what, n)) => {
            // Their status changed: show the filtered queue whatever their status is now.
            let mut filters = filters;
            filters.status = String::new();
            Redirect::to(&format!("/ui/deliveries?{}&{what}={n}", filters.query())).into_response()
        }
        Err(e) => ui.error(e, &back),
    }
}
