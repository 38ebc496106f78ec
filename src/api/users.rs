//! Users: create, read, list, update, delete, password, unlock, roles.

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{page_limit, resolve_me};
use crate::audit::Audit;
use crate::auth::principal::{Caller, Principal};
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::service;
pub use crate::service::users::{CreateUser, PasswordChange, UpdateUser};
use crate::state::AppState;
use crate::store::users::{self, User, UserView};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (with the same `sort`).
    pub cursor: Option<String>,
    /// Case-insensitive text found in the username, email, first, last or full name.
    pub q: Option<String>,
    /// Case-insensitive text found in the email address (`@example.org`).
    pub email: Option<String>,
    pub enabled: Option<bool>,
    /// Whether locked out now.
    pub locked: Option<bool>,
    pub verified: Option<bool>,
    /// Only users holding this role.
    pub role: Option<String>,
    /// Only members of this group (plain or a project's).
    pub group: Option<String>,
    /// Only members of this project, at any level.
    pub project: Option<String>,
    /// `username` (default), `created_at` or `last_login`; `-` in front for
    /// descending (`-last_login`: most recent first, never last).
    pub sort: Option<String>,
    /// `json` (default: a page) or `csv` (every matching user, one row each).
    pub format: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage {
    #[schema(value_type = Vec<UserView>)]
    pub items: Vec<users::ViewRow>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// How many users match, over every page: counted for the first page
    /// (no `cursor`) and carried by the cursors, so every page of one
    /// listing repeats the first page's count.
    pub total: i64,
}

/// A list of role names, as a bare array or `{"roles": [...]}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RoleList {
    Bare(Vec<String>),
    Wrapped { roles: Vec<String> },
}

impl RoleList {
    fn into_vec(self) -> Result<Vec<String>, ApiError> {
        let v = match self {
            RoleList::Bare(v) | RoleList::Wrapped { roles: v } => v,
        };
        if v.is_empty() || v.len() > 100 {
            return Err(ApiError::bad_request("invalid_roles", "give between 1 and 100 role names"));
        }
        Ok(v)
    }
}

/// The cursor after `u`: the sort, its key and id, and the listing's total
/// (counted on its first page and carried along, so that later pages need
/// not count again).
fn encode_cursor(sort: users::Sort, (key, id): (String, Uuid), total: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{key}\n{id}\n{total}", sort.name()))
}

/// Decodes a user-list cursor made for `sort`; anything else (malformed, or
/// made for another sort) is a 400.
pub fn decode_cursor(c: &str, sort: users::Sort) -> Result<(String, Uuid), ApiError> {
    decode_page_cursor(c, sort).map(|(after, _)| after)
}

/// `decode_cursor`, with the total the cursor carries (none in a cursor
/// made before totals were carried).
fn decode_page_cursor(c: &str, sort: users::Sort) -> Result<((String, Uuid), Option<i64>), ApiError> {
    let bad = crate::api::invalid_cursor;
    if c.len() > 256 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(4, '\n');
    let (Some(made_for), Some(key), Some(id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    if made_for != sort.name() || !sort.valid_key(key) {
        return Err(bad());
    }
    let total = match parts.next() {
        None => None,
        Some(t) => Some(t.parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(bad)?),
    };
    Ok(((key.to_string(), id.parse().map_err(|_| bad())?), total))
}

fn invalid(field: &'static str, message: &str) -> ApiError {
    ApiError::bad_request("invalid_field", message).with_details(serde_json::json!({ "field": field }))
}

pub use crate::service::import::EXPORT_COLUMNS;

fn export(list: Vec<User>) -> crate::table::Table {
    let mut t = crate::table::Table::new("Users", &EXPORT_COLUMNS);
    let time = |v: Option<chrono::DateTime<chrono::Utc>>| v.map(|d| d.to_rfc3339()).unwrap_or_default();
    for u in list {
        t.push(vec![
            u.id.to_string(),
            u.username.clone(),
            u.email.clone(),
            u.first_name.clone(),
            u.last_name.clone(),
            u.affiliation.clone(),
            u.contact.clone(),
            u.orcid.clone(),
            u.url.clone(),
            u.enabled.to_string(),
            u.verified.to_string(),
            u.admin().to_string(),
            u.roles.join(";"),
            u.locked().to_string(),
            u.created_at.to_rfc3339(),
            time(u.last_successful_login),
            time(u.password_updated),
        ]);
    }
    t
}

/// Lists users with their details, a page at a time (keyset pagination by
/// the sort key), with the number matching; or, with `format=csv`, every
/// matching user as CSV (cells a spreadsheet would run as formulas are
/// quoted with `'`). Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, description = "a page of users, or CSV", content((UserPage = "application/json"), (String = "text/csv")))))]
pub async fn list(_caller: Caller, state: web::Data<AppState>, query: Query<ListQuery>) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(invalid("format", "`format` must be json or csv")),
    };
    let limit = page_limit(q.limit)?;
    let (sort, descending) = match q.sort.as_deref() {
        None => (users::Sort::Username, false),
        Some(raw) => {
            let (name, desc) = raw.strip_prefix('-').map_or((raw, false), |n| (n, true));
            let sort = users::Sort::parse(name).ok_or_else(|| {
                invalid("sort", "`sort` must be username, created_at or last_login (- for descending)")
            })?;
            (sort, desc)
        }
    };
    let cursor = q.cursor.as_deref().map(|c| decode_page_cursor(c, sort)).transpose()?;
    let (after, carried_total) = cursor.map_or((None, None), |(after, total)| (Some(after), total));
    let text = |v: Option<String>| v.filter(|s| !s.is_empty()).map(|s| s.chars().take(200).collect::<String>());
    let mut filter = users::ListFilter {
        q: text(q.q),
        email: text(q.email),
        enabled: q.enabled,
        locked: q.locked,
        verified: q.verified,
        role: text(q.role),
        group: text(q.group),
        project: text(q.project),
        sort,
        descending,
        after,
        limit: limit + 1,
    };
    if csv {
        filter.after = None;
        filter.limit = i64::MAX;
        let all = state.read(async |c| users::list(c, &filter).await).await?;
        let table = export(all);
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("Content-Disposition", "attachment; filename=\"users.csv\""))
            .body(table.csv()?));
    }
    let total = match carried_total {
        Some(total) => total,
        None => users::count_matching(&state.pool, &filter).await?,
    };
    let mut items = state.read(async |c| users::list_views(c, &filter).await).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        match items.last() {
            Some(last) => Some(encode_cursor(sort, last.key(sort)?, total)),
            None => None,
        }
    } else {
        None
    };
    let body = serde_json::to_vec(&UserPage { items, next_cursor, total }).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(actix_web::http::header::ContentType::json()).body(body))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Report what would happen, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// `all_or_nothing` (default: any refused row and nothing is written) or
    /// `per_row` (refused rows are skipped).
    pub mode: Option<String>,
}

/// Imports users from a JSON array (`application/json`) or CSV (`text/csv`,
/// a header row; the export's columns are accepted): each row creates a
/// user or brings an existing one (by username) up to date, under the same
/// rules as the API. `dry_run=true` runs it all and rolls back: its report
/// is what the real run will do. At most 10,000 rows and
/// `limits.import_bytes`. Needs USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/import/users", tag = "users", params(ImportQuery),
    request_body(content = String, description = "a JSON array of users, or CSV", content_type = "text/csv"),
    responses((status = 200, body = crate::service::import::Report), (status = 422, body = crate::error::ErrorBody,
    description = "all_or_nothing with a refused row: nothing written, the report in `details.report`")))]
pub async fn import(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    req: actix_web::HttpRequest,
    q: Query<ImportQuery>,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    use crate::service::import;
    use futures_util::StreamExt;
    let mode = match q.mode.as_deref() {
        None | Some("all_or_nothing") => import::Mode::AllOrNothing,
        Some("per_row") => import::Mode::PerRow,
        Some(_) => return Err(invalid("mode", "`mode` must be all_or_nothing or per_row")),
    };
    let limit = state.settings.limits.import_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("invalid_body", "could not read the request body"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("an import is at most {limit} bytes (limits.import_bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let kind = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let rows = if kind.starts_with("text/csv") {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("invalid_csv", "CSV must be UTF-8"))?;
        import::rows_from_csv(text)?
    } else if kind.starts_with("application/json") {
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize::<_, Vec<import::Row>>(&mut de).map_err(|e| {
            let field = e.path().to_string();
            ApiError::bad_request("invalid_json", "the body must be a JSON array of users")
                .with_details(serde_json::json!({ "field": field }))
        })?
    } else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (an array of users) or text/csv",
        ));
    };
    let report = import::import(&state.pool, &state.hasher, &caller.0, &audit, rows, mode, q.dry_run).await?;
    if !q.dry_run && !report.applied {
        return Err(ApiError::unprocessable(
            "import_refused",
            "a row was refused, so nothing was imported (see details.report)",
        )
        .with_details(serde_json::json!({ "report": report })));
    }
    Ok(HttpResponse::Ok().json(report))
}

/// All usernames. Needs USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/usernames", tag = "users", params(crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<String>)))]
pub async fn usernames(
    _caller: Caller,
    state: web::Data<AppState>,
    q: Query<crate::api::PageQuery>,
) -> ApiResult<HttpResponse> {
    let list = users::usernames(&state.pool).await?;
    let page = crate::api::page_of(list, &q, crate::api::Order::Ascending, |u| u.to_ascii_lowercase())?;
    Ok(HttpResponse::Ok().json(page))
}

/// Creates a user. Needs USER_MANAGEMENT (ADMIN to create an administrator).
/// 409 when the username or email (case-insensitive) is taken.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser, responses(
    (status = 201, body = UserView), (status = 400, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: Json<CreateUser>,
) -> ApiResult<HttpResponse> {
    let user = service::users::create_user(&state.pool, &state.hasher, &caller.0, &audit, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.username)))
        .json(UserView::from(user)))
}

/// Reads a user. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path, description = "username or `me`")),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path);
    if caller.0.is(name) {
        // Read moments ago, with the credentials: no second query. The JSON
        // is made once per cached credential (`Principal::own_view`), unless
        // the account is locked (`locked` turns false when the lock ends).
        if caller.0.user.locked() {
            return Ok(HttpResponse::Ok().json(UserView::from(crate::store::users::User::clone(&caller.0.user))));
        }
        let body = match caller.0.own_view.get() {
            Some(body) => body.clone(),
            None => {
                let view = UserView::from((*caller.0.user).clone());
                let made = web::Bytes::from(serde_json::to_vec(&view).map_err(ApiError::internal)?);
                caller.0.own_view.get_or_init(|| made).clone()
            }
        };
        return Ok(HttpResponse::Ok().content_type(actix_web::http::header::ContentType::json()).body(body));
    }
    let user = state.read(async |c| users::get(c, name, false).await).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Updates profile fields, and (USER_MANAGEMENT only) `enabled`, `verified`;
/// `admin` needs ADMIN. A user edits their own profile but not their own
/// privileged fields. The last enabled administrator cannot be disabled or demoted.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UpdateUser,
    params(("username" = String, Path, description = "username or `me`")),
    responses((status = 200, body = UserView), (status = 403, body = crate::error::ErrorBody),
    (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<UpdateUser>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let (user, _) = service::users::update_user(&state.pool, &caller.0, &audit, &name, body.into_inner(), None).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Deletes a user with their sessions and API keys. Needs USER_MANAGEMENT
/// (ADMIN for an administrator). The last enabled administrator cannot be deleted.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut tx = state.pool.begin().await?;
    let user = service::users::delete_user_in(&mut tx, &state.role_permissions, &caller.0, &audit, &name).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Changes a password. The user themself (with `current_password`; other
/// sessions are revoked) or USER_MANAGEMENT (a reset: every session is revoked).
#[utoipa::path(put, path = "/api/v1/users/{username}/password", tag = "users", request_body = PasswordChange,
    params(("username" = String, Path)), responses((status = 204, description = "changed"),
    (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn set_password(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<PasswordChange>,
) -> ApiResult<HttpResponse> {
    service::users::change_password(&state, &caller.0, &audit, &path, body.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lifts a lockout. Needs USER_MANAGEMENT.
#[utoipa::path(post, path = "/api/v1/users/{username}/unlock", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView)))]
pub async fn unlock(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let user = crate::service::users::unlock(&state.pool, &caller.0, &audit, &name).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// A user's roles. The user themself or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/v1/users/{username}/roles", tag = "roles", params(("username" = String, Path), crate::api::PageQuery),
    responses((status = 200, body = crate::api::Page<String>)))]
pub async fn roles(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<crate::api::PageQuery>,
) -> ApiResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path);
    let mut conn = state.pool.acquire().await?;
    let roles = users::get(&mut conn, name, false).await?.roles;
    Ok(HttpResponse::Ok().json(crate::api::page_of(roles, &q, crate::api::Order::Ascending, String::clone)?))
}

async fn change_roles(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    username: &str,
    roles: Vec<String>,
    grant: bool,
) -> ApiResult<HttpResponse> {
    let (user, results) = service::users::apply_roles(&state.pool, caller, audit, username, roles, grant).await?;
    crate::api::changed(user, results)
}

/// Grants several roles: `{user, results: [{name, ok, error}]}`, 200 when
/// all applied, 202 when only some did; when none did, the first refusal
/// (with every outcome in `details.results`). Needs USER_MANAGEMENT (ADMIN
/// for the Administrator role).
#[utoipa::path(put, path = "/api/v1/users/{username}/roles", tag = "roles", request_body = RoleList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn add_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<RoleList>,
) -> ApiResult<HttpResponse> {
    change_roles(&state, &caller.0, &audit, &path, body.into_inner().into_vec()?, true).await
}

/// Removes several roles; 200 or 202 as for granting.
#[utoipa::path(delete, path = "/api/v1/users/{username}/roles", tag = "roles", request_body = RoleList,
    params(("username" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 202, body = crate::api::Changed)))]
pub async fn remove_roles(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    body: Json<RoleList>,
) -> ApiResult<HttpResponse> {
    change_roles(&state, &caller.0, &audit, &path, body.into_inner().into_vec()?, false).await
}

/// Grants one role (404 if the role does not exist).
#[utoipa::path(put, path = "/api/v1/users/{username}/roles/{role}", tag = "roles",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn add_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    one_role(&state, &caller.0, &audit, &user, role, true).await
}

/// Removes one role.
#[utoipa::path(delete, path = "/api/v1/users/{username}/roles/{role}", tag = "roles",
    params(("username" = String, Path), ("role" = String, Path)), responses((status = 200, body = crate::api::Changed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_role(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user, role) = path.into_inner();
    one_role(&state, &caller.0, &audit, &user, role, false).await
}

async fn one_role(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    user: &str,
    role: String,
    grant: bool,
) -> ApiResult<HttpResponse> {
    let (user, results) = service::users::apply_roles(&state.pool, caller, audit, user, vec![role], grant).await?;
    crate::api::changed(user, results)
}
