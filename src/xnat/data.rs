//! `/data/...`: XNAT's older REST surface as the clients use it for users,
//! projects, project members and project access requests (PARs).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::audit::Audit;
use crate::auth::directory;
use crate::auth::principal::Caller;
use crate::domain::{Email, Level};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::access_requests::{self as pars, Invitee};
use crate::store::{projects, users};
use crate::table::{project_par_table, user_par_table};
use crate::table::{Format, Table};

type Params = web::Query<HashMap<String, String>>;

fn format_of(q: &Params) -> Result<Format, ApiError> {
    Format::parse(q.get("format").map(String::as_str))
}

/// Keeps only the requested `columns=A,B` (XNAT's column selection).
fn select_columns(mut t: Table, q: &Params) -> Table {
    let Some(wanted) = q.get("columns") else { return t };
    let wanted: Vec<String> = wanted.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    let keep: Vec<usize> =
        (0..t.columns.len()).filter(|i| wanted.iter().any(|w| w.eq_ignore_ascii_case(t.columns[*i]))).collect();
    if keep.is_empty() {
        return t;
    }
    t.columns = keep.iter().map(|i| t.columns[*i]).collect();
    for row in &mut t.rows {
        *row = keep.iter().map(|i| std::mem::take(&mut row[*i])).collect();
    }
    t
}

fn result_set(t: &Table) -> Value {
    t.result_set()
}

/// `GET /data/users`: `xdat_user_id, login, firstname, lastname, email` of
/// the enabled users the caller may see (`directory.visibility`: by default
/// the people they share a project with, emails only to USER_MANAGEMENT
/// and of oneself). Authenticated.
#[utoipa::path(get, path = "/data/users", tag = "xnat", responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn data_users(caller: Caller, state: web::Data<AppState>, q: Params) -> ApiResult<HttpResponse> {
    let format = format_of(&q)?;
    let visibility = state.settings.directory.visibility;
    let list = if directory::sees_everyone(visibility, &caller.0) {
        let filter = users::ListFilter { enabled: Some(true), limit: i64::MAX, ..Default::default() };
        state.read(async |c| users::list(c, &filter).await).await?
    } else {
        users::sharing_projects_with(&state.pool, caller.0.user_id).await?
    };
    let mut t = Table::new("Users", &["xdat_user_id", "login", "firstname", "lastname", "email"]);
    for u in list {
        let email = if directory::sees_email(visibility, &caller.0, u.id) { u.email } else { String::new() };
        t.push(vec![u.xdat_user_id.to_string(), u.username, u.first_name, u.last_name, email]);
    }
    select_columns(t, &q).respond(format, result_set)
}

async fn project_table(state: &AppState, caller: &Caller) -> ApiResult<Table> {
    let mut conn = state.pool.acquire().await?;
    use crate::service::projects::{visible, Visible};
    let rows: Vec<(String, String, String, String)> = match visible(&mut conn, &caller.0).await? {
        Visible::All(list) => list.into_iter().map(|p| (p.id, p.name, p.description, p.pi)).collect(),
        Visible::Mine(list) => list.into_iter().map(|p| (p.id, p.name, p.description, p.pi)).collect(),
    };
    let mut t =
        Table::new("Projects", &["ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"]);
    for (id, name, description, pi) in rows {
        let (first, last) =
            pi.rsplit_once(' ').map(|(f, l)| (f.to_string(), l.to_string())).unwrap_or((String::new(), pi));
        let uri = format!("/data/projects/{id}");
        t.push(vec![id, name.clone(), name, description, first, last, uri]);
    }
    Ok(t)
}

/// `GET /data/projects` (and `/data/archive/projects`): the projects the
/// caller may read (all for USER_MANAGEMENT), `columns=` honoured. Authenticated.
#[utoipa::path(get, path = "/data/projects", tag = "xnat", responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn projects_list(state: web::Data<AppState>, caller: Caller, q: Params) -> ApiResult<HttpResponse> {
    let format = format_of(&q)?;
    select_columns(project_table(&state, &caller).await?, &q).respond(format, result_set)
}

/// Same as `/data/projects`. Authenticated.
#[utoipa::path(get, path = "/data/archive/projects", tag = "xnat", responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn archive_projects(state: web::Data<AppState>, caller: Caller, q: Params) -> ApiResult<HttpResponse> {
    projects_list(state, caller, q).await
}

fn display_name(level: &str) -> &'static str {
    match level {
        "owner" => "Owners",
        "member" => "Members",
        _ => "Collaborators",
    }
}

/// `GET /data/projects/{project}/users`: `GROUP_ID, displayname, login,
/// firstname, lastname, email`. Project members or USER_MANAGEMENT.
#[utoipa::path(get, path = "/data/projects/{project}/users", tag = "xnat", params(("project" = String, Path)),
    responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn project_users(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Params,
) -> ApiResult<HttpResponse> {
    let format = format_of(&q)?;
    let mut conn = state.pool.acquire().await?;
    let p = projects::get(&mut conn, &path, false).await?;
    let mut t = Table::new(
        format!("Users of {}", p.id),
        &["GROUP_ID", "displayname", "login", "firstname", "lastname", "email", "xdat_user_id"],
    );
    let mut members = projects::members(&mut conn, &p.id).await?;
    projects::hide_emails(&mut members, state.settings.directory.visibility, &caller.0);
    for m in members {
        let id = m.xdat_user_id.to_string();
        t.push(vec![
            Level::parse(&m.level)?.group(&p.id),
            display_name(&m.level).into(),
            m.username,
            m.first_name,
            m.last_name,
            m.email,
            id,
        ]);
    }
    select_columns(t, &q).respond(format, result_set)
}

/// `{group}` may be `P_owner`, `owner` or `Owners` (and likewise for members
/// and collaborators).
pub fn parse_group_level(project: &str, group: &str) -> Result<Level, ApiError> {
    let g = group.to_ascii_lowercase();
    let g = g.strip_prefix(&format!("{}_", project.to_ascii_lowercase())).unwrap_or(&g);
    let g = g.strip_suffix('s').unwrap_or(g);
    Level::parse(g).map_err(|_| {
        ApiError::unprocessable(
            "invalid_level",
            format!("'{group}' is not a group of project '{project}' (owner, member or collaborator)"),
        )
    })
}

/// A `{user}` of XNAT's membership routes: a login, an email or a numeric id.
enum Target {
    Login(String),
    Email(Email),
}

async fn resolve_target(conn: &mut sqlx::PgConnection, raw: &str) -> ApiResult<Target> {
    let raw = raw.trim();
    // A username wins over an XNAT numeric id (new usernames cannot be all
    // digits, but older ones may be).
    if users::by_name(conn, raw).await?.is_some() {
        return Ok(Target::Login(raw.to_string()));
    }
    if let Ok(id) = raw.parse::<i32>() {
        return users::name_by_xdat_id(conn, id)
            .await?
            .map(Target::Login)
            .ok_or_else(|| ApiError::not_found("user_not_found", format!("no user with id {id}")));
    }
    if raw.contains('@') {
        // Only a verified address names an account; any other becomes an
        // invitation that waits for an account to verify it.
        let email = Email::parse(raw)?;
        return Ok(match users::by_email(conn, &email).await? {
            Some(u) if u.verified => Target::Login(u.username),
            _ => Target::Email(email),
        });
    }
    Ok(Target::Login(raw.to_string()))
}

fn split_users(raw: &str) -> Result<Vec<&str>, ApiError> {
    let list: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if list.is_empty() || list.len() > 100 {
        return Err(ApiError::bad_request("invalid_user_list", "give between 1 and 100 users"));
    }
    Ok(list)
}

/// `PUT /data/projects/{project}/users/{group}/{user}`: adds users (logins,
/// emails, numeric ids, comma-separated) at the group's level; each must
/// exist (404 `user_not_found`) and be enabled (409 `user_disabled`); an
/// email with no account becomes an invitation (a PAR). All or nothing.
/// Project owners or USER_MANAGEMENT.
#[utoipa::path(put, path = "/data/projects/{project}/users/{group}/{user}", tag = "xnat",
    params(("project" = String, Path), ("group" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "added", body = Object), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn add_project_user(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, group, who) = path.into_inner();
    let level = parse_group_level(&project, &group)?;
    let mut tx = state.pool.begin().await?;
    let p = projects::get(&mut tx, &project, false).await?;
    let mut targets = Vec::new();
    for raw in split_users(&who)? {
        targets.push(resolve_target(&mut tx, raw).await?);
    }
    // The members' rows first, in id order, then the project (`set_level`):
    // users before projects, as every other write takes them.
    let logins: Vec<&str> =
        targets.iter().filter_map(|t| if let Target::Login(l) = t { Some(l.as_str()) } else { None }).collect();
    crate::store::users::lock_many(&mut tx, &logins).await?;
    let mut invited = Vec::new();
    for target in targets {
        match target {
            Target::Login(login) => {
                projects::set_level(&mut tx, &audit, &p.id, &login, level, projects::Grant::Managed).await?;
            }
            Target::Email(email) => {
                let ttl = state.settings.access_requests.invitation_ttl_days;
                let par =
                    pars::invite(&mut tx, &audit, &p.id, level, Invitee::Email(email), caller.0.user_id, ttl).await?;
                invited.push(par);
            }
        }
    }
    tx.commit().await?;
    for par in &invited {
        crate::service::email::invitation_sent(&state, par);
    }
    let invited: Vec<i64> = invited.iter().map(|p| p.par_id).collect();
    Ok(HttpResponse::Ok().json(json!({"project": p.id, "group": level.group(&p.id), "invitations": invited})))
}

/// `DELETE /data/projects/{project}/users/{group}/{user}`: removes users; 200.
/// Project owners or USER_MANAGEMENT.
#[utoipa::path(delete, path = "/data/projects/{project}/users/{group}/{user}", tag = "xnat",
    params(("project" = String, Path), ("group" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "removed", body = Object), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_project_user(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (project, group, who) = path.into_inner();
    let level = parse_group_level(&project, &group)?;
    let mut tx = state.pool.begin().await?;
    let p = projects::get(&mut tx, &project, false).await?;
    for raw in split_users(&who)? {
        let Target::Login(login) = resolve_target(&mut tx, raw).await? else {
            return Err(ApiError::not_found("user_not_found", format!("no user with email '{raw}'")));
        };
        let user = users::get(&mut tx, &login, false).await?;
        if projects::level_in(&mut *tx, user.id, &p.id).await? != Some(level) {
            return Err(ApiError::not_found(
                "not_a_member",
                format!("'{}' is not in {}", user.username, level.group(&p.id)),
            ));
        }
        projects::remove_member(&mut tx, &audit, &p.id, &user.username).await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({"project": p.id, "group": level.group(&p.id)})))
}

/// `GET /xapi/access/projects`: the caller's projects with their role. Authenticated.
#[utoipa::path(get, path = "/xapi/access/projects", tag = "xnat", responses((status = 200, description = "list of projects with role", body = [Object])))]
pub async fn access_projects(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let list: Vec<Value> = projects::of_user(&mut conn, caller.0.user_id)
        .await?
        .into_iter()
        .map(|p| {
            json!({"ID": p.id, "id": p.id, "name": p.name, "secondary_ID": p.name, "description": p.description,
                   "role": display_name(&p.level), "level": p.level, "URI": format!("/data/projects/{}", p.id)})
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /data/pars`: the caller's open invitations. Authenticated.
#[utoipa::path(get, path = "/data/pars", tag = "xnat", responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn my_pars(state: web::Data<AppState>, caller: Caller, q: Params) -> ApiResult<HttpResponse> {
    let format = format_of(&q)?;
    let mut conn = state.pool.acquire().await?;
    let list = pars::open_for_user(&mut conn, caller.0.user_id).await?;
    user_par_table(&list).respond(format, result_set)
}

/// `PUT /data/pars/{par_id}?accept` (or `?decline`, `?accept=true`):
/// answers, then lists the caller's remaining open invitations. Authenticated.
#[utoipa::path(put, path = "/data/pars/{par_id}", tag = "xnat", params(("par_id" = i64, Path)),
    responses((status = 200, description = "remaining open PARs", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html"))), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    q: Params,
) -> ApiResult<HttpResponse> {
    let truthy = |k: &str| q.get(k).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"));
    let raw = req.query_string();
    let accept = truthy("accept") || raw.split('&').any(|p| p == "accept");
    let decline = truthy("decline") || raw.split('&').any(|p| p == "decline");
    let accept = match (accept, decline) {
        (true, false) => true,
        (false, true) => false,
        _ => return Err(ApiError::bad_request("invalid_action", "give ?accept or ?decline")),
    };
    // Everything is checked before anything is written.
    let format = format_of(&q)?;
    crate::service::access_requests::answer(&state.pool, &caller.0, &audit, &path, accept).await?;
    let mut conn = state.pool.acquire().await?;
    let list = pars::open_for_user(&mut conn, caller.0.user_id).await?;
    user_par_table(&list).respond(format, result_set)
}

/// `GET /data/projects/{project}/pars`: every request of a project. Project
/// owners or USER_MANAGEMENT.
#[utoipa::path(get, path = "/data/projects/{project}/pars", tag = "xnat", params(("project" = String, Path)),
    responses((status = 200, description = "ResultSet, CSV, XML or HTML", content((Object = "application/json"), (String = "text/csv"), (String = "application/xml"), (String = "text/html")))))]
pub async fn project_pars(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: Params,
) -> ApiResult<HttpResponse> {
    let format = format_of(&q)?;
    let mut conn = state.pool.acquire().await?;
    let p = projects::get(&mut conn, &path, false).await?;
    let mut list = pars::of_project(&mut conn, &p.id).await?;
    pars::hide_emails(&mut list, state.settings.directory.visibility, &caller.0);
    project_par_table(&p.id, &list).respond(format, result_set)
}
