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
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub items: Vec<change_log::Entry>,
    pub next_cursor: Option<String>,
}

fn parse(q: &LogQuery) -> Result<(Option<i64>, i64), ApiError> {
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(crate::api::invalid_cursor))
        .transpose()?;
    Ok((before, page_limit(q.limit)?))
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

/// Changes made to a user, newest first. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/log", tag = "change-log", params(("username" = String, Path), LogQuery),
    responses((status = 200, body = LogPage)))]
pub async fn about(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<LogQuery>,
) -> ApiResult<HttpResponse> {
    let (before, limit) = parse(&q)?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(page(change_log::about_user(&state.pool, user.id, before, limit + 1).await?, limit)))
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
    let (before, limit) = parse(&q)?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(page(change_log::by_actor(&state.pool, user.id, before, limit + 1).await?, limit)))
}

/// The whole change log, newest first. ADMIN.
#[utoipa::path(get, path = "/api/v1/admin/change-log", tag = "change-log", params(LogQuery), responses((status = 200, body = LogPage)))]
pub async fn all(_caller: Caller, state: web::Data<AppState>, q: Query<LogQuery>) -> ApiResult<HttpResponse> {
    let (before, limit) = parse(&q)?;
    Ok(HttpResponse::Ok().json(page(change_log::all(&state.pool, before, limit + 1).await?, limit)))
}
