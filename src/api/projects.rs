//! Projects, their members, and project access requests.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{page_of, resolve_me, Order, Page, PageQuery};
use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::domain::{parse_text, Email, Level, Permission, ProjectId};
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service;
use crate::state::AppState;
use crate::store::access_requests::{self as pars, AccessRequest, Answerer, Invitee};
use crate::store::projects::{self, Member, NewProject, Project, ProjectPatch, ProjectWithLevel};
use crate::store::users;
use crate::table::{Format, Table};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Principal investigator.
    #[serde(default)]
    pub pi: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    pub name: Option<String>,
    pub description: Option<String>,
    pub pi: Option<String>,
    /// Let non-members find the project (`GET /api/v1/discoverable-projects`) to ask to join.
    pub discoverable: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLevel {
    pub level: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccessRequest {
    /// Invite this user (owners only).
    pub username: Option<String>,
    /// Invite this email address, with or without an account (owners only).
    pub email: Option<String>,
    pub level: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// `accept` or `decline`.
    pub action: String,
}

/// The caller's list: `FormatQuery` and `kind`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MineQuery {
    /// `invitation` or `request` (default: both).
    pub kind: Option<String>,
    /// json (default), csv, xml or html.
    pub format: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// json (default), csv, xml or html (a table of every item).
    pub format: Option<String>,
    /// json: at most this many items (1-500, default 50).
    pub limit: Option<i64>,
    /// json: `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn name_field(raw: &str) -> Result<String, ApiError> {
    let name = parse_text("name", raw, 200)?;
    if name.is_empty() {
        return Err(ApiError::unprocessable("invalid_text", "name must not be empty"));
    }
    Ok(name)
}

/// Projects: all of them for USER_MANAGEMENT, else those the caller is a member of.
/// (A member's projects carry their `level`.)
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(ProjectQuery), responses((status = 200, body = Page<Project>)))]
pub async fn list(state: web::Data<AppState>, caller: Caller, q: Query<ProjectQuery>) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let paging = PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let mut conn = state.pool.acquire().await?;
    let found = |fields: &[&str]| crate::api::matches(&q.q, fields);
    Ok(match service::projects::visible(&mut conn, &caller.0).await? {
        service::projects::Visible::All(mut list) => {
            list.retain(|p| found(&[&p.id, &p.name, &p.description, &p.pi]));
            HttpResponse::Ok().json(page_of(list, &paging, Order::Ascending, |p| p.id.to_ascii_lowercase())?)
        }
        service::projects::Visible::Mine(mut list) => {
            list.retain(|p| found(&[&p.id, &p.name, &p.description, &p.pi]));
            HttpResponse::Ok().json(page_of(list, &paging, Order::Ascending, |p| p.id.to_ascii_lowercase())?)
        }
    })
}

/// The project list's search and paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProjectQuery {
    /// Case-insensitive text in the id, name, description or investigator.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Creates a project, its groups `{id}_owner`, `{id}_member`,
/// `{id}_collaborator`, and makes the caller its owner. Any authenticated user.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<CreateProject>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let new = NewProject {
        id: ProjectId::parse(body.id.trim())?,
        name: name_field(&body.name)?,
        description: parse_text("description", &body.description, 4000)?,
        pi: parse_text("pi", &body.pi, 200)?,
    };
    let mut tx = state.pool.begin().await?;
    let p = projects::create(&mut tx, &audit, caller.0.user_id, new).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/projects/{}", p.id))).json(p))
}

/// A project. Its members or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = Project), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(_caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(projects::get(&mut conn, &path, false).await?))
}

/// Updates name, description or PI. Its owners or USER_MANAGEMENT.
#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", request_body = UpdateProject,
    params(("project" = String, Path)), responses((status = 200, body = Project)))]
pub async fn update(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
    body: Json<UpdateProject>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let patch = ProjectPatch {
        name: body.name.as_deref().map(name_field).transpose()?,
        description: body.description.as_deref().map(|d| parse_text("description", d, 4000)).transpose()?,
        pi: body.pi.as_deref().map(|d| parse_text("pi", d, 200)).transpose()?,
        discoverable: body.discoverable,
    };
    let mut tx = state.pool.begin().await?;
    let p = projects::update(&mut tx, &audit, &path, patch).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(p))
}

/// Deletes a project with its groups, memberships and requests. Its owners or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = Project)))]
pub async fn delete(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let mut tx = state.pool.begin().await?;
    let p = projects::delete(&mut tx, &audit, &path).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(p))
}

/// Members with their level. Its members or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/projects/{project}/members", tag = "projects", params(("project" = String, Path), PageQuery),
    responses((status = 200, body = Page<Member>)))]
pub async fn members(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let p = projects::get(&mut conn, &path, false).await?;
    let mut items = projects::members(&mut conn, &p.id).await?;
    projects::hide_emails(&mut items, state.settings.directory.visibility, &caller.0);
    Ok(HttpResponse::Ok().json(page_of(items, &q, Order::Ascending, |m| m.username.to_ascii_lowercase())?))
}

/// Adds a user at a level or changes their level (one level per project).
/// The user must exist (404 `user_not_found`) and be enabled (409
/// `user_disabled`). Its owners or USER_MANAGEMENT.
#[utoipa::path(put, path = "/api/v1/projects/{project}/members/{username}", tag = "projects", request_body = SetLevel,
    params(("project" = String, Path), ("username" = String, Path)),
    responses((status = 200, body = Page<Member>), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn set_member(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
    body: Json<SetLevel>,
) -> ApiResult<HttpResponse> {
    let (project, username) = path.into_inner();
    let level = Level::parse(&body.level)?;
    let username = resolve_me(&caller.0, &username).to_string();
    crate::service::projects::set_member(&state.pool, &audit, &project, &username, level).await?;
    let mut tx = state.pool.begin().await?;
    let id = projects::get(&mut tx, &project, false).await?.id;
    let mut items = projects::members(&mut tx, &id).await?;
    tx.commit().await?;
    projects::hide_emails(&mut items, state.settings.directory.visibility, &caller.0);
    Ok(HttpResponse::Ok().json(Page::all(items)))
}

/// Removes a member (a project keeps at least one owner). Its owners or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{username}", tag = "projects",
    params(("project" = String, Path), ("username" = String, Path)), responses((status = 200, body = Page<Member>)))]
pub async fn remove_member(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, username) = path.into_inner();
    let username = resolve_me(&caller.0, &username).to_string();
    crate::service::projects::remove_member(&state.pool, &audit, &project, &username).await?;
    let mut tx = state.pool.begin().await?;
    let id = projects::get(&mut tx, &project, false).await?.id;
    let mut items = projects::members(&mut tx, &id).await?;
    tx.commit().await?;
    projects::hide_emails(&mut items, state.settings.directory.visibility, &caller.0);
    Ok(HttpResponse::Ok().json(Page::all(items)))
}

/// The projects a user may read, with their level. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/projects", tag = "projects", params(("username" = String, Path), PageQuery),
    responses((status = 200, body = Page<ProjectWithLevel>)))]
pub async fn of_user(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, resolve_me(&caller.0, &path), false).await?;
    let list = projects::of_user(&mut conn, user.id).await?;
    Ok(HttpResponse::Ok().json(page_of(list, &q, Order::Ascending, |p| p.id.to_ascii_lowercase())?))
}

/// An owner (or USER_MANAGEMENT) invites `{"username"}` or `{"email"}` at a
/// level; anyone else asks to join at a level. Authenticated.
#[utoipa::path(post, path = "/api/v1/projects/{project}/access-requests", tag = "access-requests", request_body = NewAccessRequest,
    params(("project" = String, Path)), responses((status = 201, body = AccessRequest), (status = 403, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_request(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<NewAccessRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let level = Level::parse(&body.level)?;
    let mut tx = state.pool.begin().await?;
    let project = projects::get(&mut tx, &path, false).await?;
    let level_in = projects::level_in(&mut *tx, caller.0.user_id, &project.id).await?;
    let owner = caller.0.has(Permission::UserManagement) || level_in == Some(Level::Owner);
    let is_reader = level_in.is_some();
    let par = match (body.username, body.email) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable("invalid_invitee", "give either username or email, not both"))
        }
        (None, None) => pars::ask(&mut tx, &audit, &project.id, level, caller.0.user_id).await?,
        (username, email) => {
            if !owner {
                return Err(ApiError::forbidden("only an owner of the project may invite people"));
            }
            let invitee = match (username, email) {
                (Some(u), _) => Invitee::Username(u),
                (_, Some(e)) => Invitee::Email(Email::parse(&e)?),
                _ => unreachable!("handled above"),
            };
            let ttl = state.settings.access_requests.invitation_ttl_days;
            pars::invite(&mut tx, &audit, &project.id, level, invitee, caller.0.user_id, ttl).await?
        }
    };
    tx.commit().await?;
    if par.kind == "invitation" {
        crate::service::email::invitation_sent(&state, &par);
    }
    let mut par = par;
    pars::hide_emails(std::slice::from_mut(&mut par), state.settings.directory.visibility, &caller.0);
    // A private project's details are for its members: someone asking to
    // join learns only what they asked for.
    if !owner && !is_reader {
        par.project_description.clear();
        par.project_pi.clear();
    }
    Ok(HttpResponse::Created().json(par))
}

/// Withdraws a pending request or invitation: whoever made it, an owner of
/// the project or USER_MANAGEMENT (others get 404). Authenticated.
#[utoipa::path(delete, path = "/api/v1/access-requests/{par_id}", tag = "access-requests",
    params(("par_id" = i64, Path)), responses((status = 200, body = AccessRequest), (status = 404, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody)))]
pub async fn withdraw(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let par_id: i64 =
        path.parse().map_err(|_| ApiError::not_found("access_request_not_found", "access request not found"))?;
    let who = Answerer {
        user_id: caller.0.user_id,
        manages_users: caller.0.has(Permission::UserManagement),
        admin: caller.0.is_admin(),
    };
    let mut tx = state.pool.begin().await?;
    let mut par = pars::withdraw(&mut tx, &audit, par_id, &who).await?;
    tx.commit().await?;
    pars::hide_emails(std::slice::from_mut(&mut par), state.settings.directory.visibility, &caller.0);
    Ok(HttpResponse::Ok().json(par))
}

use crate::table::native_par_table;

/// The JSON answer of an access-request list: a page, newest first.
fn native_json(list: Vec<AccessRequest>, q: &FormatQuery) -> Result<impl FnOnce(&Table) -> Value, ApiError> {
    let paging = PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let page = page_of(list, &paging, Order::Descending, |r| format!("{:020}", r.par_id))?;
    Ok(move |_: &Table| json!(page))
}

/// Every access request of a project in `format` json (default), csv, xml
/// or html (the columns are the JSON fields). Its owners or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/projects/{project}/access-requests", tag = "access-requests",
    params(("project" = String, Path), FormatQuery), responses((status = 200, body = Page<AccessRequest>, description = "a page of access requests, or a table (`format`)")))]
pub async fn project_requests(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Query<FormatQuery>,
) -> ApiResult<HttpResponse> {
    let format = Format::parse(q.format.as_deref())?;
    let mut conn = state.pool.acquire().await?;
    let p = projects::get(&mut conn, &path, false).await?;
    let mut list = pars::of_project(&mut conn, &p.id).await?;
    pars::hide_emails(&mut list, state.settings.directory.visibility, &caller.0);
    let table = native_par_table(&format!("Access requests of {}", p.id), &list);
    table.respond(format, native_json(list, &q)?)
}

/// The projects their owners let anyone find, to ask to join
/// (`POST /api/v1/projects/{project}/access-requests`). Authenticated.
#[utoipa::path(get, path = "/api/v1/discoverable-projects", tag = "projects", params(ProjectQuery),
    responses((status = 200, body = Page<Project>)))]
pub async fn discoverable(
    _caller: Caller,
    state: web::Data<AppState>,
    q: Query<ProjectQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let mut conn = state.pool.acquire().await?;
    let mut list = projects::discoverable(&mut conn).await?;
    list.retain(|p| crate::api::matches(&q.q, &[&p.id, &p.name, &p.description, &p.pi]));
    let paging = PageQuery { limit: q.limit, cursor: q.cursor };
    Ok(HttpResponse::Ok().json(page_of(list, &paging, Order::Ascending, |p| p.id.to_ascii_lowercase())?))
}

/// What the caller has pending: invitations to them and their own requests
/// to join (`kind` = `invitation` or `request` narrows), newest first, in
/// `format` json (default), csv, xml or html. Authenticated.
#[utoipa::path(get, path = "/api/v1/access-requests", tag = "access-requests", params(MineQuery),
    responses((status = 200, body = Page<AccessRequest>, description = "a page of access requests, or a table (`format`)")))]
pub async fn mine(state: web::Data<AppState>, caller: Caller, q: Query<MineQuery>) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let format = Format::parse(q.format.as_deref())?;
    let kind = q.kind.as_deref();
    if kind.is_some_and(|k| !matches!(k, "invitation" | "request")) {
        return Err(ApiError::bad_request("invalid_field", "`kind` must be invitation or request")
            .with_details(json!({"field": "kind"})));
    }
    let mut conn = state.pool.acquire().await?;
    let mut list = pars::pending_for(&mut conn, caller.0.user_id).await?;
    list.retain(|r| kind.is_none_or(|k| r.kind == k));
    // Someone asking to join is not a member yet: they see no more of the
    // project than its id and name (as when they asked).
    for r in list.iter_mut().filter(|r| r.kind == "request") {
        r.project_description.clear();
        r.project_pi.clear();
    }
    let q = FormatQuery { format: q.format, limit: q.limit, cursor: q.cursor };
    let table = native_par_table("Open access requests", &list);
    table.respond(format, native_json(list, &q)?)
}

/// Parses `accept`/`decline`.
pub fn parse_action(raw: &str) -> Result<bool, ApiError> {
    match raw.to_ascii_lowercase().as_str() {
        "accept" => Ok(true),
        "decline" => Ok(false),
        _ => Err(ApiError::unprocessable("invalid_action", "action must be accept or decline")),
    }
}

/// Answers a request: the invitee accepts or declines an invitation (accepting
/// adds the membership in the same transaction); an owner answers a request
/// to join. A second answer is 409 `already_answered`. Authenticated.
#[utoipa::path(put, path = "/api/v1/access-requests/{par_id}", tag = "access-requests", request_body = Answer,
    params(("par_id" = i64, Path)), responses((status = 200, body = AccessRequest), (status = 404, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody)))]
pub async fn answer(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<Answer>,
) -> ApiResult<HttpResponse> {
    let accept = parse_action(&body.action)?;
    let mut par = service::access_requests::answer(&state.pool, &caller.0, &audit, &path, accept).await?;
    pars::hide_emails(std::slice::from_mut(&mut par), state.settings.directory.visibility, &caller.0);
    Ok(HttpResponse::Ok().json(par))
}
