//! Reading the change log: about a user, by a user, everything.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::{page_limit, resolve_me};
use crate::auth::principal::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::Query;
use crate::state::AppState;
use crate::store::{change_log, users};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// One action (`user.updated`), or a prefix ending with a dot (`user.`).
    pub action: Option<String>,
    /// Who made the change: a username (as it was then) or a user id.
    pub actor: Option<String>,
    /// `user`, `session`, `api_key`, `group`, `project`, `access_request`, ...
    pub subject_type: Option<String>,
    /// From this time (RFC 3339, inclusive).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Before this time (RFC 3339).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub items: Vec<change_log::Entry>,
    pub next_cursor: Option<String>,
}

async fn parse(pool: &sqlx::PgPool, q: &LogQuery) -> Result<change_log::LogFilter, ApiError> {
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(crate::api::invalid_cursor))
        .transpose()?;
    let text = |field: &'static str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        match v.as_deref().map(str::trim) {
            Some(t) if t.is_empty() || t.len() > 200 || t.chars().any(char::is_control) => {
                Err(ApiError::bad_request("invalid_field", format!("`{field}` must be 1-200 characters"))
                    .with_details(serde_json::json!({ "field": field })))
            }
            other => Ok(other.map(str::to_string)),
        }
    };
    let actor = text("actor", &q.actor)?;
    // A name means the user who has it now, or had it before a rename, so
    // a rename keeps their history together and a reused name does not
    // take someone else's; a name nobody has or had matches the name the
    // entries recorded (an account since deleted).
    let actor_id = match actor.as_deref() {
        None => None,
        Some(a) => match crate::domain::user_id_in(a) {
            Some(id) => Some(id),
            None => change_log::actor_named(pool, a).await?,
        },
    };
    Ok(change_log::LogFilter {
        action: text("action", &q.action)?,
        actor_username: actor.filter(|_| actor_id.is_none()),
        actor_id,
        subject_type: text("subject_type", &q.subject_type)?,
        since: q.since,
        until: q.until,
        before,
        // One more than asked: whether there is a next page.
        limit: page_limit(q.limit)? + 1,
    })
}

fn page(mut items: Vec<change_log::Entry>, limit: i64) -> LogPage {
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    LogPage { items, next_cursor }
}

/// Changes made to a user, newest first; narrowed by `action`, `actor`,
/// `subject_type`, `since`, `until`. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/log", tag = "change-log", params(("username" = String, Path), LogQuery),
    responses((status = 200, body = LogPage)))]
pub async fn about(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<LogQuery>,
) -> ApiResult<HttpResponse> {
    let f = parse(&state.pool, &q).await?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(page(change_log::about_user(&state.pool, user.id, &f).await?, f.limit - 1)))
}

/// Changes made by a user, newest first. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/actions", tag = "change-log", params(("username" = String, Path), LogQuery),
    responses((status = 200, body = LogPage)))]
pub async fn actions(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<LogQuery>,
) -> ApiResult<HttpResponse> {
    let f = parse(&state.pool, &q).await?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(page(change_log::by_actor(&state.pool, user.id, &f).await?, f.limit - 1)))
}

/// The whole change log, newest first, with the same filters. ADMIN.
#[utoipa::path(get, path = "/api/v1/admin/change-log", tag = "change-log", params(LogQuery), responses((status = 200, body = LogPage)))]
pub async fn all(_caller: Caller, state: web::Data<AppState>, q: Query<LogQuery>) -> ApiResult<HttpResponse> {
    let f = parse(&state.pool, &q).await?;
    Ok(HttpResponse::Ok().json(page(change_log::all(&state.pool, &f).await?, f.limit - 1)))
}
