//! Groups and a user's groups.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::api::{page_of, resolve_me, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::domain::parse_group_name;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service;
use crate::state::AppState;
use crate::store::users::{ItemResult, UserView};
use crate::store::{groups, users};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
}

/// A list of group names, as a bare array or `{"groups": [...]}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum GroupList {
    Bare(Vec<String>),
    Wrapped { groups: Vec<String> },
}

impl GroupList {
    pub fn into_vec(self) -> Result<Vec<String>, ApiError> {
        let v = match self {
            GroupList::Bare(v) | GroupList::Wrapped { groups: v } => v,
        };
        if v.is_empty() || v.len() > 100 {
            return Err(ApiError::bad_request("invalid_groups", "give between 1 and 100 group names"));
        }
        Ok(v)
    }
}

/// The target of a group change. Whether the caller may change their own
/// memberships is the one rule of `store::projects::set_level` and
/// `store::groups::add` (join or raise: never; leave or lower: yes).
pub fn target(caller: &Caller, username: &str) -> String {
    resolve_me(&caller.0, username).to_string()
}

/// Every group. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", params(GroupQuery), responses((status = 200, body = Page<groups::Group>)))]
pub async fn list(_caller: Caller, state: web::Data<AppState>, q: Query<GroupQuery>) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let mut conn = state.pool.acquire().await?;
    let mut all = groups::list(&mut conn).await?;
    all.retain(|g| {
        crate::api::matches(&q.q, &[&g.name, &g.display_name])
            && q.project.as_deref().is_none_or(|p| g.project_id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(p)))
    });
    let paging = PageQuery { limit: q.limit, cursor: q.cursor };
    Ok(HttpResponse::Ok().json(page_of(all, &paging, Order::Ascending, |g| g.name.clone())?))
}

/// The group list's filters and paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GroupQuery {
    /// Case-insensitive text in the name or display name.
    pub q: Option<String>,
    /// Only the groups of this project.
    pub project: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Creates a plain group. Needs USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = CreateGroup,
    responses((status = 201, body = groups::Group), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: Json<CreateGroup>,
) -> ApiResult<HttpResponse> {
    let g = crate::service::groups::create(&state.pool, &audit, &body.name, &body.display_name).await?;
    Ok(HttpResponse::Created().json(g))
}

/// One group. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/groups/{group}", tag = "groups", params(("group" = String, Path)),
    responses((status = 200, body = groups::Group), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(_caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(groups::get(&mut conn, &path).await?))
}

/// The body of `PATCH /api/v1/groups/{group}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// A new name: members and resource permissions follow it.
    pub name: Option<String>,
    pub display_name: Option<String>,
}

/// Renames a plain group or changes its display name (a project's groups
/// are named after it: 409). Needs USER_MANAGEMENT.
#[utoipa::path(patch, path = "/api/v1/groups/{group}", tag = "groups", params(("group" = String, Path)), request_body = UpdateGroup,
    responses((status = 200, body = groups::Group), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
    body: Json<UpdateGroup>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let name = b.name.as_deref().map(|n| parse_group_name(n.trim())).transpose()?;
    let display = b.display_name.as_deref().map(|d| crate::domain::parse_text("display_name", d, 200)).transpose()?;
    let mut tx = state.pool.begin().await?;
    let g = groups::update(&mut tx, &audit, &path, name.as_deref(), display.as_deref()).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(g))
}

/// Deletes a plain group (a project's groups go with the project: 409).
/// Needs USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/groups/{group}", tag = "groups", params(("group" = String, Path)),
    responses((status = 200, body = groups::Group), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let g = crate::service::groups::delete(&state.pool, &audit, &path).await?;
    Ok(HttpResponse::Ok().json(g))
}

/// A group's members. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/groups/{group}/members", tag = "groups", params(("group" = String, Path), PageQuery),
    responses((status = 200, body = Page<UserView>)))]
pub async fn members(
    _caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let members: Vec<UserView> = groups::members(&mut conn, &path).await?.into_iter().map(UserView::from).collect();
    Ok(HttpResponse::Ok().json(page_of(members, &q, Order::Ascending, |u| u.username.to_ascii_lowercase())?))
}

/// A user's groups. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/groups", tag = "groups", params(("username" = String, Path), PageQuery),
    responses((status = 200, body = Page<String>)))]
pub async fn of_user(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = groups::of_user(&mut conn, user.id).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, String::clone)?))
}

async fn bulk(
    state: &AppState,
    caller: &Caller,
    audit: &Audit,
    username: &str,
    list: Vec<String>,
    add: bool,
) -> ApiResult<HttpResponse> {
    let results = service::memberships::apply_groups(&state.pool, &caller.0, audit, username, list, add).await?;
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, username), false).await?;
    crate::api::changed(user, results)
}

/// Adds a user to several groups: `{user, results: [{name, ok, error}]}`,
/// 200 when all applied, 202 when only some did; when none did, the first
/// refusal (every outcome in `details.results`). Needs USER_MANAGEMENT.
#[utoipa::path(put, path = "/api/v1/users/{username}/groups", tag = "groups", request_body = GroupList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn add_many(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<GroupList>,
) -> ApiResult<HttpResponse> {
    bulk(&state, &caller, &audit, &path, body.into_inner().into_vec()?, true).await
}

/// Removes a user from several groups; 200 or 202 as for adding.
#[utoipa::path(delete, path = "/api/v1/users/{username}/groups", tag = "groups", request_body = GroupList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn remove_many(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<GroupList>,
) -> ApiResult<HttpResponse> {
    bulk(&state, &caller, &audit, &path, body.into_inner().into_vec()?, false).await
}

/// Adds a user to one group (for a project group: sets their level).
#[utoipa::path(put, path = "/api/v1/users/{username}/groups/{group}", tag = "groups",
    params(("username" = String, Path), ("group" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn add_one(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    one(&state, &caller, &audit, path.into_inner(), true).await
}

/// Removes a user from one group.
#[utoipa::path(delete, path = "/api/v1/users/{username}/groups/{group}", tag = "groups",
    params(("username" = String, Path), ("group" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_one(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    one(&state, &caller, &audit, path.into_inner(), false).await
}

/// Adds to or removes from one group; answers like a bulk change of one.
async fn one(
    state: &AppState,
    caller: &Caller,
    audit: &Audit,
    (username, group): (String, String),
    add: bool,
) -> ApiResult<HttpResponse> {
    let user = service::memberships::apply_one(&state.pool, &caller.0, audit, &username, &group, add).await?;
    crate::api::changed(user, vec![ItemResult::ok(&group)])
}

/// Every registered resource permission (what groups may hold). Authenticated.
#[utoipa::path(get, path = "/api/v1/resource-permissions", tag = "groups", params(PageQuery),
    responses((status = 200, body = Page<crate::store::permissions::Permission>)))]
pub async fn resource_permissions(
    _caller: Caller,
    state: web::Data<AppState>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let all = crate::store::permissions::list(&state.pool).await?;
    Ok(HttpResponse::Ok().json(page_of(all, &q, Order::Ascending, |p| p.key())?))
}

/// The resource permissions a group holds. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/groups/{group}/permissions", tag = "groups", params(("group" = String, Path), PageQuery),
    responses((status = 200, body = Page<crate::store::permissions::Permission>)))]
pub async fn permissions(
    _caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let g = groups::get(&mut conn, &path).await?;
    let held = crate::store::permissions::of_group(&mut conn, &g.name).await?;
    Ok(HttpResponse::Ok().json(page_of(held, &q, Order::Ascending, |p| p.key())?))
}

/// The body of `PUT /api/v1/groups/{group}/permissions`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPermissions {
    /// Every permission the group is to hold (at most 1,000).
    pub permissions: Vec<crate::store::permissions::Permission>,
}

/// Replaces the resource permissions a group holds (logged as
/// `group.permissions_changed`). Needs USER_MANAGEMENT.
#[utoipa::path(put, path = "/api/v1/groups/{group}/permissions", tag = "groups", params(("group" = String, Path)),
    request_body = GroupPermissions, responses((status = 200, body = Page<crate::store::permissions::Permission>)))]
pub async fn set_permissions(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
    body: Json<GroupPermissions>,
) -> ApiResult<HttpResponse> {
    let mut tx = state.pool.begin().await?;
    let g = groups::get(&mut tx, &path).await?;
    let held = service::permissions::set_group_permissions(
        &mut tx,
        &state.pool,
        &caller.0,
        &audit,
        &g.name,
        &body.permissions,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(Page::all(held)))
}
