//! MLTE's user API (`mlte` 2.7.0, its `HttpUserStore` and web frontend)
//! under `/api`: MLTE's paths, bodies, status codes (200 for every success)
//! and error shape (`{"detail": "..."}`; the token endpoint answers OAuth's
//! `{"error", "error_description"}`), over the same service functions as
//! the native API.
//!
//! MLTE's model maps onto registrar's without loss:
//! - a user's `full_name` is `first_name` and `last_name` joined by one
//!   space (split at the first space); `disabled` is `!enabled`; role
//!   `admin` is holding Administrator; `groups` are the user's groups;
//! - a group is a registrar group; its permissions are registrar's resource
//!   permissions (`store::permissions`), enforced by the access guard
//!   (`Rule::ResourceOr`) and, for the two edits that name their target in
//!   the body, by `service::permissions::authorize` here;
//! - `hashed_password` is always `""`: MLTE's client requires the field,
//!   registrar never discloses a hash.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::Audit;
use crate::auth::principal::{resolve_me, Caller, Principal};
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;
use crate::store::permissions::{self, Permission};
use crate::store::{groups, users};

/// An error in MLTE's shape: the same status, `{"detail": message}`.
pub struct MlteError(ApiError);

impl<E: Into<ApiError>> From<E> for MlteError {
    fn from(e: E) -> MlteError {
        MlteError(e.into())
    }
}

impl std::fmt::Debug for MlteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for MlteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl ResponseError for MlteError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }
    fn error_response(&self) -> HttpResponse {
        self.0.log_cause();
        let mut resp = HttpResponse::build(self.0.status);
        if let Some(secs) = self.0.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        resp.insert_header((header::CACHE_CONTROL, "no-store")).json(json!({"detail": self.0.message}))
    }
}

type MResult<T> = Result<T, MlteError>;

/// MLTE's `Permission` check for one resource.
async fn authorize(state: &AppState, caller: &Principal, kind: &str, id: Option<&str>, method: &str) -> MResult<()> {
    let wanted = Permission { resource_type: kind.into(), resource_id: id.map(str::to_string), method: method.into() };
    Ok(service::permissions::authorize(&state.pool, caller, &wanted).await?)
}

// ---------------------------------------------------------------- token

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str, retry_after: Option<u64>) -> HttpResponse {
    let mut resp = HttpResponse::build(status);
    if let Some(secs) = retry_after {
        resp.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    resp.insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

/// `POST /api/token`: OAuth 2.0's password grant (form-encoded), as MLTE's
/// client logs in. The same login as everywhere (`service::auth`). Public.
#[utoipa::path(post, path = "/api/token", tag = "mlte", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "`{access_token, token_type: bearer, expires_in}`", body = Object),
    (status = 400, description = "`{error: invalid_grant | invalid_request | unsupported_grant_type, error_description}`")))]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    audit: Audit,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let form = form.into_inner();
    if form.grant_type.as_deref() != Some("password") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=password is supported",
            None,
        );
    }
    let (Some(username), Some(password)) = (form.username, form.password) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "username and password are required", None);
    };
    let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    match service::auth::password_only_login(&state, &audit, &username, password, ua).await {
        Ok(done) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
            "access_token": done.access_token,
            "token_type": "bearer",
            "expires_in": state.keys.access_ttl_secs,
        })),
        Err(e) => {
            let e = ApiError::from(e);
            if e.status.is_client_error() {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.message, e.retry_after)
            } else {
                let status = e.status;
                e.log_cause();
                oauth_error(status, "server_error", "the login could not be completed; try again", e.retry_after)
            }
        }
    }
}

// ---------------------------------------------------------------- users

/// A group as MLTE shows it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MlteGroup {
    pub name: String,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// A user as MLTE's client sends it (`UserWithPassword` or `BasicUser`).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MlteUserIn {
    username: String,
    email: Option<String>,
    full_name: Option<String>,
    /// Left out: unchanged on an edit, `false` on a creation.
    disabled: Option<bool>,
    /// `admin` or `regular`; left out: unchanged on an edit, `regular` on a creation.
    role: Option<String>,
    /// Left out: unchanged on an edit, none on a creation.
    groups: Option<Vec<MlteGroup>>,
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

/// A user as MLTE answers it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MlteUser {
    username: String,
    email: Option<String>,
    full_name: Option<String>,
    disabled: bool,
    role: &'static str,
    groups: Vec<MlteGroup>,
    /// Always empty: MLTE's client requires the field; no hash is ever shown.
    hashed_password: &'static str,
}

fn role_of(raw: &str) -> MResult<bool> {
    match raw {
        "admin" => Ok(true),
        "regular" => Ok(false),
        _ => Err(ApiError::unprocessable("invalid_role", "role must be admin or regular").into()),
    }
}

async fn group_out(conn: &mut sqlx::PgConnection, name: &str) -> MResult<MlteGroup> {
    Ok(MlteGroup { name: name.to_string(), permissions: permissions::of_group(conn, name).await? })
}

async fn user_out(conn: &mut sqlx::PgConnection, u: users::User) -> MResult<MlteUser> {
    let mut out_groups = Vec::new();
    for g in groups::of_user(conn, u.id).await? {
        out_groups.push(group_out(conn, &g).await?);
    }
    let full = crate::domain::full_name(&u.first_name, &u.last_name);
    Ok(MlteUser {
        role: if u.admin() { "admin" } else { "regular" },
        username: u.username,
        email: Some(u.email),
        full_name: (!full.is_empty()).then_some(full),
        disabled: !u.enabled,
        groups: out_groups,
        hashed_password: "",
    })
}

fn group_names(groups: &[MlteGroup]) -> Vec<String> {
    groups.iter().map(|g| g.name.clone()).collect()
}

/// `GET /api/user`: every username. Permission `user-get`.
#[utoipa::path(get, path = "/api/user", tag = "mlte", responses((status = 200, body = [String])))]
pub async fn list_users(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(users::usernames(&state.pool).await?))
}

/// `GET /api/users/details`: every user. Permission `user-get`.
#[utoipa::path(get, path = "/api/users/details", tag = "mlte", responses((status = 200, body = [MlteUser])))]
pub async fn users_details(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    let filter = users::ListFilter { limit: i64::MAX, ..Default::default() };
    let all = state.read(async |c| users::list(c, &filter).await).await?;
    let mut conn = state.pool.acquire().await?;
    let mut out = Vec::with_capacity(all.len());
    for u in all {
        out.push(user_out(&mut conn, u).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /api/user`: creates a user (and their groups). Permission `user-post`.
#[utoipa::path(post, path = "/api/user", tag = "mlte", request_body = MlteUserIn,
    responses((status = 200, body = MlteUser), (status = 400, description = "`me` is reserved"), (status = 409, description = "exists")))]
pub async fn create_user(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<MlteUserIn>,
) -> MResult<HttpResponse> {
    let b = body.into_inner();
    let (first_name, last_name) = crate::domain::split_full_name(b.full_name.as_deref().unwrap_or(""));
    let Some(email) = b.email else {
        // A taken name is the first thing MLTE's clients expect to hear of.
        let mut conn = state.pool.acquire().await?;
        if users::by_name(&mut conn, &b.username).await?.is_some() {
            return Err(ApiError::conflict("username_taken", format!("User {} already exists.", b.username)).into());
        }
        return Err(ApiError::unprocessable("email_required", "registrar needs an email for every user").into());
    };
    let create = service::users::CreateUser {
        username: b.username,
        email,
        first_name,
        last_name,
        password: b.password,
        enabled: !b.disabled.unwrap_or(false),
        verified: false,
        admin: role_of(b.role.as_deref().unwrap_or("regular"))?,
        roles: Vec::new(),
        ..Default::default()
    };
    let mut tx = state.pool.begin().await?;
    let user = service::users::create_user_in(&mut tx, &state.hasher, &caller.0, &audit, create).await?;
    if let Some(wanted) = b.groups.as_deref().filter(|g| !g.is_empty()) {
        service::memberships::set_plain_groups_in(&mut tx, &caller.0, &audit, &user.username, &group_names(wanted))
            .await?;
    }
    let user = users::get_by_id(&mut tx, user.id).await?;
    let out = user_out(&mut tx, user).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `PUT /api/user`: edits a user (`me`: the caller). A password sent for
/// another user resets it (a manager's reset); one's own password changes
/// through the native API, with the current one. Groups change only for
/// USER_MANAGEMENT holders (MLTE: administrators); others' are kept.
/// Permission `user-put` (everybody on themselves).
#[utoipa::path(put, path = "/api/user", tag = "mlte", request_body = MlteUserIn,
    responses((status = 200, body = MlteUser), (status = 404, description = "no such user")))]
pub async fn edit_user(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<MlteUserIn>,
) -> MResult<HttpResponse> {
    let b = body.into_inner();
    let name = resolve_me(&caller.0, &b.username).to_string();
    authorize(&state, &caller.0, "user", Some(&name), "put").await?;
    let mut tx = state.pool.begin().await?;
    // Locked: a concurrent grant of a managing role is seen here or waits.
    let target = users::get(&mut tx, &name, true).await?;
    service::permissions::may_touch_account(&caller.0, &target, &state.role_permissions.of(&target.roles))?;
    let reset_to = match b.password {
        Some(pw) => Some(service::users::reset_hash(&state.hasher, &caller.0, &target, pw).await?),
        None => None,
    };
    let (first_name, last_name) = match b.full_name.as_deref() {
        Some(full) => {
            let (f, l) = crate::domain::split_full_name(full);
            (Some(f), Some(l))
        }
        None => (None, None),
    };
    let patch = service::users::UpdateUser {
        email: b.email,
        first_name,
        last_name,
        enabled: b.disabled.map(|d| !d),
        verified: None,
        admin: b.role.as_deref().map(role_of).transpose()?,
        ..Default::default()
    };
    let (user, _) = service::users::update_user_in(&mut tx, &caller.0, &audit, &name, patch, reset_to).await?;
    if let Some(wanted) = b.groups.as_deref().filter(|_| caller.0.has(crate::domain::Permission::UserManagement)) {
        service::memberships::set_plain_groups_in(&mut tx, &caller.0, &audit, &user.username, &group_names(wanted))
            .await?;
    }
    let user = users::get_by_id(&mut tx, user.id).await?;
    let out = user_out(&mut tx, user).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /api/user/{username}` (`me`: the caller). Permission `user-get`
/// (everybody on themselves).
#[utoipa::path(get, path = "/api/user/{username}", tag = "mlte", params(("username" = String, Path)),
    responses((status = 200, body = MlteUser), (status = 404, description = "no such user")))]
pub async fn read_user(caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> MResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, &name, false).await?;
    Ok(HttpResponse::Ok().json(user_out(&mut conn, user).await?))
}

/// `GET /api/user/me`: the caller. Authenticated.
#[utoipa::path(get, path = "/api/user/me", tag = "mlte", responses((status = 200, body = MlteUser)))]
pub async fn read_me(caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    read_user(caller, state, web::Path::from(crate::domain::ME.to_string())).await
}

/// `DELETE /api/user/{username}`: answers the deleted user. Permission
/// `user-delete`; never oneself; an administrator only by an administrator.
#[utoipa::path(delete, path = "/api/user/{username}", tag = "mlte", params(("username" = String, Path)),
    responses((status = 200, body = MlteUser), (status = 404, description = "no such user")))]
pub async fn delete_user(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> MResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut tx = state.pool.begin().await?;
    let target = users::get(&mut tx, &name, false).await?;
    let out = user_out(&mut tx, target).await?;
    service::users::delete_user_in(&mut tx, &state.role_permissions, &caller.0, &audit, &name).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /api/user/{username}/models`: the model ids the user may read.
/// Permission `user-get` (everybody on themselves).
#[utoipa::path(get, path = "/api/user/{username}/models", tag = "mlte", params(("username" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn user_models(caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> MResult<HttpResponse> {
    let name = resolve_me(&caller.0, &path).to_string();
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, &name, false).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(service::permissions::readable_models(&state.pool, &user).await?))
}

/// `GET /api/user/me/models`. Authenticated.
#[utoipa::path(get, path = "/api/user/me/models", tag = "mlte", responses((status = 200, body = [String])))]
pub async fn my_models(caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    user_models(caller, state, web::Path::from(crate::domain::ME.to_string())).await
}

// ---------------------------------------------------------------- groups

/// `GET /api/group`: every group name. Permission `group-get`.
#[utoipa::path(get, path = "/api/group", tag = "mlte", responses((status = 200, body = [String])))]
pub async fn list_groups(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let names: Vec<String> = groups::list(&mut conn).await?.into_iter().map(|g| g.name).collect();
    Ok(HttpResponse::Ok().json(names))
}

/// `GET /api/groups/details`: every group with its permissions. Permission `group-get`.
#[utoipa::path(get, path = "/api/groups/details", tag = "mlte", responses((status = 200, body = [MlteGroup])))]
pub async fn groups_details(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let mut out = Vec::new();
    for g in groups::list(&mut conn).await? {
        out.push(group_out(&mut conn, &g.name).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /api/group`: creates a group with its permissions. Permission `group-post`.
#[utoipa::path(post, path = "/api/group", tag = "mlte", request_body = MlteGroup,
    responses((status = 200, body = MlteGroup), (status = 409, description = "exists")))]
pub async fn create_group(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<MlteGroup>,
) -> MResult<HttpResponse> {
    let name = crate::domain::parse_group_name(body.name.trim())?;
    let mut tx = state.pool.begin().await?;
    let g = groups::create(&mut tx, &audit, &name, &name).await?;
    let held = service::permissions::set_group_permissions(
        &mut tx,
        &state.pool,
        &caller.0,
        &audit,
        &g.name,
        &body.permissions,
    )
    .await?;
    let out = MlteGroup { name: g.name, permissions: held };
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `PUT /api/group`: replaces a group's permissions. Permission `group-put`.
#[utoipa::path(put, path = "/api/group", tag = "mlte", request_body = MlteGroup,
    responses((status = 200, body = MlteGroup), (status = 404, description = "no such group")))]
pub async fn edit_group(
    caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    body: web::Json<MlteGroup>,
) -> MResult<HttpResponse> {
    authorize(&state, &caller.0, "group", Some(&body.name), "put").await?;
    let mut tx = state.pool.begin().await?;
    let g = groups::get(&mut tx, &body.name).await?;
    let held = service::permissions::set_group_permissions(
        &mut tx,
        &state.pool,
        &caller.0,
        &audit,
        &g.name,
        &body.permissions,
    )
    .await?;
    let out = MlteGroup { name: g.name, permissions: held };
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /api/group/{name}`. Permission `group-get`.
#[utoipa::path(get, path = "/api/group/{name}", tag = "mlte", params(("name" = String, Path)),
    responses((status = 200, body = MlteGroup), (status = 404, description = "no such group")))]
pub async fn read_group(_caller: Caller, state: web::Data<AppState>, path: web::Path<String>) -> MResult<HttpResponse> {
    let mut conn = state.pool.acquire().await?;
    let g = groups::get(&mut conn, &path).await?;
    Ok(HttpResponse::Ok().json(group_out(&mut conn, &g.name).await?))
}

/// `DELETE /api/group/{name}`: answers the deleted group. Permission `group-delete`.
#[utoipa::path(delete, path = "/api/group/{name}", tag = "mlte", params(("name" = String, Path)),
    responses((status = 200, body = MlteGroup), (status = 404, description = "no such group")))]
pub async fn delete_group(
    _caller: Caller,
    state: web::Data<AppState>,
    audit: Audit,
    path: web::Path<String>,
) -> MResult<HttpResponse> {
    let mut tx = state.pool.begin().await?;
    let g = groups::get(&mut tx, &path).await?;
    let out = group_out(&mut tx, &g.name).await?;
    groups::delete(&mut tx, &audit, &g.name).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

// ---------------------------------------------------------------- permissions

/// `GET /api/groups/permissions`: every registered permission, by key
/// (`type-method[-id]`). Permission `group-get`, or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/groups/permissions", tag = "mlte", responses((status = 200, body = [String])))]
pub async fn list_permissions(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    let keys: Vec<String> = permissions::list(&state.pool).await?.iter().map(Permission::key).collect();
    Ok(HttpResponse::Ok().json(keys))
}

/// `GET /api/groups/permissions/details`: every registered permission. Permission `group-get`, or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/groups/permissions/details", tag = "mlte", responses((status = 200, body = [Permission])))]
pub async fn permissions_details(_caller: Caller, state: web::Data<AppState>) -> MResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(permissions::list(&state.pool).await?))
}

/// `GET /api/groups/permission/{permission}`: one permission by key. Permission `group-get`, or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/groups/permission/{permission}", tag = "mlte", params(("permission" = String, Path)),
    responses((status = 200, body = Permission), (status = 404, description = "not registered")))]
pub async fn read_permission(
    _caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> MResult<HttpResponse> {
    let p = Permission::from_key(&path)?;
    if !permissions::exists(&state.pool, &p).await? {
        let shown: String = path.chars().take(100).collect();
        return Err(ApiError::not_found("permission_not_found", format!("permission {shown} not found.")).into());
    }
    Ok(HttpResponse::Ok().json(p))
}

/// `GET /api/groups/permissions/{alias}`: where mlte 2.7.0's client sends
/// the two calls above (it writes the `/` of its ids as `---`):
/// `s---permissions---details` and `s---permission---{permission}`. Permission `group-get`, or USER_MANAGEMENT.
#[utoipa::path(get, path = "/api/groups/permissions/{alias}", tag = "mlte", params(("alias" = String, Path)),
    responses((status = 200, description = "as the call it stands for", body = Object), (status = 404, description = "unknown")))]
pub async fn permissions_alias(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> MResult<HttpResponse> {
    let alias = path.into_inner();
    if alias == "s---permissions---details" {
        return permissions_details(caller, state).await;
    }
    match alias.strip_prefix("s---permission---") {
        Some(key) => read_permission(caller, state, web::Path::from(key.to_string())).await,
        None => Err(ApiError::not_found("not_found", "no such permission route").into()),
    }
}
