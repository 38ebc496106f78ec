//! Native HTTP API: thin handlers (parse, authorize, call the store, map).

pub mod api_keys;
pub mod auth;
pub mod change_log;
pub mod docs;
pub mod groups;
pub mod health;
pub mod meta;
pub mod mfa;
pub mod oauth_clients;
pub mod oidc;
pub mod projects;
pub mod scim_credentials;
pub mod sessions;
pub mod users;

pub use crate::auth::principal::resolve_me;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Page size: default 50, at most 500.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request("invalid_field", "`limit` must be between 1 and 500")
            .with_details(serde_json::json!({"field": "limit"}))),
    }
}

/// `limit` and `cursor` of every list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many items (1-500, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Every list of the native API: a page of items and the cursor of the
/// next page (`null` on the last).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
    /// How many items there are over every page.
    pub total: usize,
}

impl<T> Page<T> {
    /// Everything at once (a write's answer: the list as it now is).
    pub fn all(items: Vec<T>) -> Page<T> {
        Page { total: items.len(), items, next_cursor: None }
    }
}

/// Whether any of `fields` contains `q` (any case); everything matches no `q`.
pub fn matches(q: &Option<String>, fields: &[&str]) -> bool {
    match q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        None => true,
        Some(q) => {
            let q = q.to_lowercase();
            fields.iter().any(|f| f.to_lowercase().contains(&q))
        }
    }
}

/// Which way a list runs.
#[derive(Clone, Copy, PartialEq)]
pub enum Order {
    Ascending,
    /// Newest first (sessions, keys).
    Descending,
}

pub fn invalid_cursor() -> ApiError {
    ApiError::bad_request("invalid_field", "`cursor` is not one this server issued")
        .with_details(serde_json::json!({"field": "cursor"}))
}

/// A page of a list read whole (lists bounded by one user, group or
/// project): ordered by `key` (unique per item), the items after the
/// cursor, at most `limit`. The cursor is the last key shown, encoded.
pub fn page_of<T>(
    mut items: Vec<T>,
    q: &PageQuery,
    order: Order,
    key: impl Fn(&T) -> String,
) -> Result<Page<T>, ApiError> {
    let limit = page_limit(q.limit)? as usize;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| invalid_cursor())?;
            Some(String::from_utf8(raw).map_err(|_| invalid_cursor())?)
        }
    };
    items.sort_by_cached_key(|i| key(i));
    let total = items.len();
    if order == Order::Descending {
        items.reverse();
    }
    let mut rest: Vec<T> = match &after {
        None => items,
        Some(a) => items
            .into_iter()
            .filter(
                |i| if order == Order::Ascending { key(i).as_str() > a.as_str() } else { key(i).as_str() < a.as_str() },
            )
            .collect(),
    };
    let next_cursor = if rest.len() > limit {
        rest.truncate(limit);
        rest.last().map(|i| URL_SAFE_NO_PAD.encode(key(i)))
    } else {
        None
    };
    Ok(Page { items: rest, next_cursor, total })
}

/// The answer of every change to a user's roles or groups, one or many:
/// the user as they now are and one `{name, ok, error}` per item.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Changed {
    pub user: crate::store::users::UserView,
    pub results: Vec<crate::store::users::ItemResult>,
}

/// 200 when every item applied, 202 when some did; when none did, the
/// refusal of the first (its status and code), with every item's outcome
/// in `details.results`.
pub fn changed(
    user: crate::store::users::User,
    mut results: Vec<crate::store::users::ItemResult>,
) -> Result<actix_web::HttpResponse, ApiError> {
    use actix_web::http::StatusCode;
    let applied = results.iter().filter(|r| r.ok).count();
    if applied == 0 && !results.is_empty() {
        let outcomes = serde_json::to_value(&results).unwrap_or_default();
        let first = results.iter_mut().find_map(|r| r.failure.take());
        let err = first.map_or_else(|| ApiError::conflict("not_applied", "nothing could be changed"), ApiError::from);
        return Err(err.with_details(serde_json::json!({ "results": outcomes })));
    }
    let status = if applied == results.len() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(actix_web::HttpResponse::build(status).json(Changed { user: user.into(), results }))
}

/// The ordering key of an item listed by time: its time, then its id (so
/// items of the same instant keep one order).
pub fn time_key(at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}{id}", at.format("%Y%m%d%H%M%S%9f"))
}
