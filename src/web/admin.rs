//! The admin console (USER_MANAGEMENT; the change log needs ADMIN, as in the
//! API): users, groups, projects, the change log, and bulk actions with a
//! preview. Every write calls the service or store function the API calls;
//! the route guard applies the administrator-target rule to every write on
//! `/admin/users/{username}/...`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use askama::Template;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::SecretString;
use serde::Deserialize;

use crate::audit::Audit;
use crate::auth::principal::Caller;
use crate::domain::Error;
use crate::service::bulk::{self, Action};
use crate::state::AppState;
use crate::store::{access_requests, change_log, groups, projects, sessions, users};
use crate::web::account::{refusal, when_opt, LogRow};
use crate::web::{render, see_other, seg, Button, Chrome, Form, PageError, PageResult};

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct UserQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    enabled: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    cursor: String,
}

pub struct UserRow {
    pub username: String,
    pub name: String,
    pub email: String,
    pub enabled: bool,
    pub verified: bool,
    pub locked: bool,
    pub roles: String,
    pub last_login: String,
}

impl UserRow {
    fn of(u: &users::User) -> UserRow {
        UserRow {
            username: u.username.clone(),
            name: format!("{} {}", u.first_name, u.last_name).trim().to_string(),
            email: u.email.clone(),
            enabled: u.enabled,
            verified: u.verified,
            locked: u.locked(),
            roles: u.roles.join(", "),
            last_login: when_opt(&u.last_successful_login),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    c: Chrome,
    q: String,
    enabled: String,
    role: String,
    roles: Vec<String>,
    rows: Vec<UserRow>,
    total: i64,
    next: Option<String>,
}

fn cursor_of(u: &users::User) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\u{0}{}", users::Sort::Username.key_of(u), u.id))
}

fn parse_cursor(raw: &str) -> Option<(String, uuid::Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let (key, id) = text.split_once('\u{0}')?;
    users::Sort::Username.valid_key(key).then_some(())?;
    Some((key.to_string(), id.parse().ok()?))
}

async fn role_names(state: &AppState) -> Result<Vec<String>, PageError> {
    Ok(crate::store::roles::list(&state.pool).await?.into_iter().map(|r| r.name).collect())
}

/// `GET /admin/users`: search, filter by enabled and role, cursor paging;
/// the table is the bulk form.
pub async fn users_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    q: web::Query<UserQuery>,
) -> PageResult {
    let q = q.into_inner();
    let filter = users::ListFilter {
        q: Some(q.q.trim().to_string()).filter(|s| !s.is_empty()),
        enabled: match q.enabled.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        role: Some(q.role.clone()).filter(|s| !s.is_empty()),
        after: if q.cursor.is_empty() {
            None
        } else {
            Some(parse_cursor(&q.cursor).ok_or_else(|| PageError::bad_request("This page link is not valid."))?)
        },
        limit: PAGE_SIZE + 1,
        ..Default::default()
    };
    let mut list = state.read(async |c| users::list(c, &filter).await).await?;
    let total = users::count_matching(&state.pool, &filter).await?;
    let more = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    let next = if more {
        list.last().map(|u| {
            serde_urlencoded::to_string([
                ("q", q.q.as_str()),
                ("enabled", q.enabled.as_str()),
                ("role", q.role.as_str()),
                ("cursor", cursor_of(u).as_str()),
            ])
            .unwrap_or_default()
        })
    } else {
        None
    };
    let page = UsersPage {
        c: Chrome::of(&state, &req, &caller.0),
        rows: list.iter().map(UserRow::of).collect(),
        roles: role_names(&state).await?,
        q: q.q,
        enabled: q.enabled,
        role: q.role,
        total,
        next,
    };
    Ok(render(&state, StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    user: Vec<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    group: String,
}

#[derive(Template)]
#[template(path = "admin/bulk.html")]
struct BulkPage {
    c: Chrome,
    preview: bool,
    action: String,
    group: String,
    what: String,
    outcomes: Vec<bulk::Outcome>,
}

async fn bulk_run(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    audit: &Audit,
    f: BulkForm,
    preview: bool,
) -> PageResult {
    let action = Action::parse(&f.action, &f.group)?;
    if f.user.is_empty() {
        return Err(PageError::bad_request("Select at least one user."));
    }
    let outcomes = bulk::run(state, &caller.0, audit, f.user, &action, preview).await?;
    let page = BulkPage {
        c: Chrome::of(state, req, &caller.0),
        preview,
        what: action.describe(),
        action: f.action,
        group: f.group,
        outcomes,
    };
    Ok(render(state, StatusCode::OK, &page))
}

/// `POST /admin/users/bulk`: the preview (a run rolled back): nothing changes.
pub async fn bulk_preview(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<BulkForm>,
) -> PageResult {
    bulk_run(&state, &req, &caller, &audit, form.0, true).await
}

/// `POST /admin/users/bulk/apply`: the same run, committed; a result per user.
pub async fn bulk_apply(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<BulkForm>,
) -> PageResult {
    bulk_run(&state, &req, &caller, &audit, form.0, false).await
}

#[derive(Template)]
#[template(path = "admin/new_user.html")]
struct NewUserPage {
    c: Chrome,
    f: NewUserForm,
    policy: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NewUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    password: String,
}

/// `GET /admin/users/new`.
pub async fn new_user_form(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let page = NewUserPage {
        c: Chrome::of(&state, &req, &caller.0),
        f: NewUserForm::default(),
        policy: crate::web::public::policy_text(&state),
        error: None,
    };
    Ok(render(&state, StatusCode::OK, &page))
}

/// `POST /admin/users/new`: `service::users::create_user`; without a
/// password (and with mail on) the user is mailed a welcome link.
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<NewUserForm>,
) -> PageResult {
    let f = form.0;
    let body = crate::service::users::CreateUser {
        username: f.username.clone(),
        email: f.email.clone(),
        first_name: f.first_name.clone(),
        last_name: f.last_name.clone(),
        password: Some(f.password.clone()).filter(|p| !p.is_empty()).map(SecretString::from),
        enabled: true,
        ..Default::default()
    };
    match crate::service::users::create_user(&state.pool, &state.hasher, &caller.0, &audit, body).await {
        Ok(user) => {
            // No password: a welcome link to choose one (it verifies the
            // address too); else a link that verifies the address.
            let m = if !user.has_password && crate::service::email::send_welcome(&state, &user).await? {
                "user-created-mailed"
            } else if user.has_password && crate::service::email::send_verification(&state, &user).await? {
                "user-created-verify"
            } else {
                "user-created"
            };
            Ok(see_other(&format!("/admin/users/{}?m={m}", seg(&user.username))))
        }
        Err(e) => {
            let (status, msg) = refusal(e);
            let page = NewUserPage {
                c: Chrome::of(&state, &req, &caller.0),
                f: NewUserForm { password: String::new(), ..f },
                policy: crate::web::public::policy_text(&state),
                error: Some(msg),
            };
            Ok(render(&state, status, &page))
        }
    }
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    c: Chrome,
    user: users::User,
    groups: Vec<String>,
    all_roles: Vec<String>,
    sessions: usize,
    projects: Vec<projects::ProjectWithLevel>,
    error: Option<String>,
}

async fn user_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    name: &str,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, name, false).await?;
    let groups = groups::of_user(&mut conn, user.id).await?;
    let sessions = sessions::list_active(&mut conn, user.id).await?.len();
    let projects = projects::of_user(&mut conn, user.id).await?;
    drop(conn);
    let page = UserPage {
        c: Chrome::of(state, req, &caller.0),
        all_roles: role_names(state).await?,
        user,
        groups,
        sessions,
        projects,
        error,
    };
    Ok(render(state, status, &page))
}

/// `GET /admin/users/{username}`.
pub async fn user_detail(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
) -> PageResult {
    user_page(&state, &req, &caller, &path, StatusCode::OK, None).await
}

/// After a write on a user's page: back to it with `message`, or the page
/// again with the refusal.
async fn after(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    name: &str,
    outcome: Result<&str, Error>,
) -> PageResult {
    match outcome {
        Ok(m) => Ok(see_other(&format!("/admin/users/{}?m={m}", seg(name)))),
        Err(e @ Error::NotFound { .. }) => Err(e.into()),
        Err(e) => {
            let (status, msg) = refusal(e);
            user_page(state, req, caller, name, status, Some(msg)).await
        }
    }
}

#[derive(Deserialize)]
pub struct EditForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
}

/// `POST /admin/users/{username}`: names and email.
pub async fn edit_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<EditForm>,
) -> PageResult {
    let f = form.0;
    let body = crate::service::users::UpdateUser {
        first_name: Some(f.first_name),
        last_name: Some(f.last_name),
        email: Some(f.email),
        ..Default::default()
    };
    let out = crate::service::users::update_user(&state.pool, &caller.0, &audit, &path, body, None).await;
    after(&state, &req, &caller, &path, out.map(|_| "saved")).await
}

#[derive(Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    enabled: String,
}

/// `POST /admin/users/{username}/enabled` (`enabled=true|false`).
pub async fn set_enabled(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<EnabledForm>,
) -> PageResult {
    let enabled = match form.0.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(PageError::bad_request("Say enabled=true or enabled=false.")),
    };
    let body = crate::service::users::UpdateUser { enabled: Some(enabled), ..Default::default() };
    let out = crate::service::users::update_user(&state.pool, &caller.0, &audit, &path, body, None).await;
    after(&state, &req, &caller, &path, out.map(|_| if enabled { "enabled" } else { "disabled" })).await
}

/// `POST /admin/users/{username}/verify`: marks the email verified.
pub async fn verify(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let body = crate::service::users::UpdateUser { verified: Some(true), ..Default::default() };
    let out = crate::service::users::update_user(&state.pool, &caller.0, &audit, &path, body, None).await;
    after(&state, &req, &caller, &path, out.map(|_| "verified")).await
}

/// `POST /admin/users/{username}/unlock`.
pub async fn unlock(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let out = crate::service::users::unlock(&state.pool, &caller.0, &audit, &path).await.map(|_| "unlocked");
    after(&state, &req, &caller, &path, out).await
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    password: String,
}

/// `POST /admin/users/{username}/password`: a manager's reset
/// (`service::users::change_password`; every session of the user ends).
pub async fn reset_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<ResetForm>,
) -> PageResult {
    let body = crate::service::users::PasswordChange {
        current_password: None,
        new_password: SecretString::from(form.0.password),
        revoke_api_keys: false,
        unlink_identities: false,
    };
    let out = crate::service::users::change_password(&state, &caller.0, &audit, &path, body).await;
    after(&state, &req, &caller, &path, out.map(|_| "password-reset")).await
}

/// `POST /admin/users/{username}/send-reset`: mails the user a reset link.
pub async fn send_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let out = crate::service::email::send_reset_for(&state, &caller.0, &audit, &path).await.map(|()| "reset-sent");
    after(&state, &req, &caller, &path, out).await
}

/// `POST /admin/users/{username}/revoke-sessions`.
pub async fn revoke_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let out = crate::service::sessions::revoke_all(&state, &caller.0, &audit, &path, false).await;
    after(&state, &req, &caller, &path, out.map(|_| "sessions-revoked")).await
}

#[derive(Deserialize)]
pub struct RolesForm {
    #[serde(default)]
    role: Vec<String>,
}

/// `POST /admin/users/{username}/roles`: makes the user's roles exactly the
/// ticked ones (`service::users::apply_roles_in`, one transaction).
pub async fn set_roles(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<RolesForm>,
) -> PageResult {
    let wanted = form.0.role;
    let out = async {
        let mut tx = state.pool.begin().await?;
        let user = users::get(&mut tx, &path, false).await?;
        let add: Vec<String> = wanted.iter().filter(|r| !user.roles.contains(r)).cloned().collect();
        let remove: Vec<String> = user.roles.iter().filter(|r| !wanted.contains(r)).cloned().collect();
        for (list, grant) in [(add, true), (remove, false)] {
            if list.is_empty() {
                continue;
            }
            let (_, results) =
                crate::service::users::apply_roles_in(&mut tx, &caller.0, &audit, &path, &list, grant).await?;
            if let Some(failed) = results.into_iter().find(|r| !r.ok) {
                return Err(failed.failure.unwrap_or_else(|| {
                    Error::conflict("role_refused", failed.error.unwrap_or_else(|| "refused".into()))
                }));
            }
        }
        tx.commit().await?;
        Ok("roles-saved")
    }
    .await;
    after(&state, &req, &caller, &path, out).await
}

#[derive(Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    group: String,
}

async fn change_group(
    state: &AppState,
    caller: &Caller,
    audit: &Audit,
    name: &str,
    group: &str,
    add: bool,
) -> Result<&'static str, Error> {
    // The console names accounts by username, and `me` is nobody on its
    // pages: it is not the caller here (the API's service reads it so).
    if name == crate::domain::ME {
        return Err(users::not_found(name));
    }
    // The administrator-target rule is checked on the locked account, in
    // the transaction that changes it.
    crate::service::memberships::apply_one(&state.pool, &caller.0, audit, name, group, add).await?;
    Ok(if add { "group-added" } else { "group-removed" })
}

/// `POST /admin/users/{username}/groups`: adds to a group.
pub async fn add_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<GroupForm>,
) -> PageResult {
    let out = change_group(&state, &caller, &audit, &path, form.0.group.trim(), true).await;
    after(&state, &req, &caller, &path, out).await
}

/// `POST /admin/users/{username}/groups/{group}/remove`.
pub async fn remove_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
    _f: Form<Button>,
) -> PageResult {
    let (name, group) = path.into_inner();
    let out = change_group(&state, &caller, &audit, &name, &group, false).await;
    after(&state, &req, &caller, &name, out).await
}

#[derive(Template)]
#[template(path = "admin/delete_user.html")]
struct DeletePage {
    c: Chrome,
    user: users::User,
}

/// `GET /admin/users/{username}/delete`: the confirmation.
pub async fn delete_form(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let user = users::get(&mut conn, &path, false).await?;
    Ok(render(&state, StatusCode::OK, &DeletePage { c: Chrome::of(&state, &req, &caller.0), user }))
}

/// `POST /admin/users/{username}/delete` (`service::users::delete_user_in`).
pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let out = async {
        let mut tx = state.pool.begin().await?;
        crate::service::users::delete_user_in(&mut tx, &state.role_permissions, &caller.0, &audit, &path).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match out {
        Ok(()) => Ok(see_other("/admin/users?m=user-deleted")),
        Err(e) => after(&state, &req, &caller, &path, Err(e)).await,
    }
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct GroupsPage {
    c: Chrome,
    groups: Vec<groups::Group>,
    error: Option<String>,
}

async fn groups_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let groups = groups::list(&mut conn).await?;
    Ok(render(state, status, &GroupsPage { c: Chrome::of(state, req, &caller.0), groups, error }))
}

/// `GET /admin/groups`.
pub async fn groups_list(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    groups_page(&state, &req, &caller, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct NewGroupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
}

/// `POST /admin/groups`: creates a group (as `POST /api/v1/groups`).
pub async fn create_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<NewGroupForm>,
) -> PageResult {
    let f = form.0;
    match crate::service::groups::create(&state.pool, &audit, &f.name, &f.display_name).await {
        Ok(g) => Ok(see_other(&format!("/admin/groups/{}?m=group-created", seg(&g.name)))),
        Err(e) => {
            let (status, msg) = refusal(e);
            groups_page(&state, &req, &caller, status, Some(msg)).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin/group.html")]
struct GroupPage {
    c: Chrome,
    group: groups::Group,
    members: Vec<UserRow>,
}

/// `GET /admin/groups/{group}`: the group and its members.
pub async fn group_detail(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let group = groups::get(&mut conn, &path).await?;
    let members = groups::members(&mut conn, &group.name).await?.iter().map(UserRow::of).collect();
    Ok(render(&state, StatusCode::OK, &GroupPage { c: Chrome::of(&state, &req, &caller.0), group, members }))
}

/// `POST /admin/groups/{group}/delete`.
pub async fn delete_group(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    match crate::service::groups::delete(&state.pool, &audit, &path).await {
        Ok(_) => Ok(see_other("/admin/groups?m=group-deleted")),
        Err(e) => {
            let (status, msg) = refusal(e);
            groups_page(&state, &req, &caller, status, Some(msg)).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin/projects.html")]
struct ProjectsPage {
    c: Chrome,
    projects: Vec<projects::Project>,
}

/// `GET /admin/projects`.
pub async fn projects_list(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let projects = projects::list(&mut conn).await?;
    Ok(render(&state, StatusCode::OK, &ProjectsPage { c: Chrome::of(&state, &req, &caller.0), projects }))
}

#[derive(Template)]
#[template(path = "admin/project.html")]
struct ProjectPage {
    c: Chrome,
    project: projects::Project,
    members: Vec<projects::Member>,
    requests: Vec<access_requests::AccessRequest>,
    error: Option<String>,
}

async fn project_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let project = projects::get(&mut conn, id, false).await?;
    let members = projects::members(&mut conn, &project.id).await?;
    let requests = access_requests::of_project(&mut conn, &project.id).await?;
    let page = ProjectPage { c: Chrome::of(state, req, &caller.0), project, members, requests, error };
    Ok(render(state, status, &page))
}

/// `GET /admin/projects/{project}`: members with levels, access requests.
pub async fn project_detail(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
) -> PageResult {
    project_page(&state, &req, &caller, &path, StatusCode::OK, None).await
}

async fn after_project(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    id: &str,
    outcome: Result<&str, Error>,
) -> PageResult {
    match outcome {
        Ok(m) => Ok(see_other(&format!("/admin/projects/{}?m={m}", seg(id)))),
        Err(e @ Error::NotFound { code: "project_not_found", .. }) => Err(e.into()),
        Err(e) => {
            let (status, msg) = refusal(e);
            project_page(state, req, caller, id, status, Some(msg)).await
        }
    }
}

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    level: String,
}

/// `POST /admin/projects/{project}/members`: adds a member or changes a level.
pub async fn set_member(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    form: Form<MemberForm>,
) -> PageResult {
    let f = form.0;
    let out = async {
        let level = crate::domain::Level::parse(&f.level)?;
        crate::service::projects::set_member(&state.pool, &audit, &path, f.username.trim(), level).await
    }
    .await
    .map(|()| "member-saved");
    after_project(&state, &req, &caller, &path, out).await
}

/// `POST /admin/projects/{project}/members/{username}/remove`.
pub async fn remove_member(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
    _f: Form<Button>,
) -> PageResult {
    let (project, username) = path.into_inner();
    let out = crate::service::projects::remove_member(&state.pool, &audit, &project, &username)
        .await
        .map(|()| "member-removed");
    after_project(&state, &req, &caller, &project, out).await
}

#[derive(Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    decision: String,
}

/// `POST /admin/projects/{project}/requests/{par_id}`: accepts or declines
/// a request to join (`service::access_requests::answer`).
pub async fn answer_request(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    path: web::Path<(String, String)>,
    form: Form<AnswerForm>,
) -> PageResult {
    let (project, par_id) = path.into_inner();
    let accept = match form.0.decision.as_str() {
        "accept" => true,
        "decline" => false,
        _ => return Err(PageError::bad_request("Choose accept or decline.")),
    };
    let out = crate::service::access_requests::answer(&state.pool, &caller.0, &audit, &par_id, accept).await;
    after_project(&state, &req, &caller, &project, out.map(|_| "request-answered")).await
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
}

#[derive(Template)]
#[template(path = "admin/change_log.html")]
struct ChangeLogPage {
    c: Chrome,
    q: LogQuery,
    rows: Vec<LogRow>,
    next: Option<String>,
}

/// A `datetime-local` or RFC 3339 value as a UTC time.
fn parse_time(field: &'static str, raw: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, PageError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(raw, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| PageError::bad_request(format!("The {field} time is not a date and time (UTC).")))
}

/// `GET /admin/change-log`: filter by actor, subject, action and time;
/// 100 entries a page, newest first.
pub async fn change_log_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    q: web::Query<LogQuery>,
) -> PageResult {
    let q = q.into_inner();
    let mut f = change_log::LogFilter {
        action: Some(q.action.trim().to_string()).filter(|s| !s.is_empty()),
        actor_username: Some(q.actor.trim().to_string()).filter(|s| !s.is_empty()),
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        before: if q.before.is_empty() {
            None
        } else {
            Some(q.before.parse().map_err(|_| PageError::bad_request("This page link is not valid."))?)
        },
        limit: 101,
        ..Default::default()
    };
    let subject = q.subject.trim();
    let mut entries = if subject.is_empty() {
        change_log::all(&state.pool, &f).await?
    } else {
        // A subject is a username (the entries about that account).
        match change_log::actor_named(&state.pool, subject).await? {
            Some(id) => change_log::about_user(&state.pool, id, &f).await?,
            None => Vec::new(),
        }
    };
    let more = entries.len() > 100;
    entries.truncate(100);
    f.before = entries.last().map(|e| e.id);
    let next = match (more, f.before) {
        (true, Some(before)) => Some(
            serde_urlencoded::to_string([
                ("actor", q.actor.as_str()),
                ("subject", q.subject.as_str()),
                ("action", q.action.as_str()),
                ("since", q.since.as_str()),
                ("until", q.until.as_str()),
                ("before", before.to_string().as_str()),
            ])
            .unwrap_or_default(),
        ),
        _ => None,
    };
    let rows = entries.iter().map(LogRow::of).collect();
    Ok(render(&state, StatusCode::OK, &ChangeLogPage { c: Chrome::of(&state, &req, &caller.0), q, rows, next }))
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    c: Chrome,
    clients: Vec<crate::store::oauth::Client>,
    created: Option<(String, Option<String>)>,
    error: Option<String>,
}

async fn clients_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    status: StatusCode,
    created: Option<(String, Option<String>)>,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let clients = crate::store::oauth::list_clients(&mut conn).await?;
    Ok(render(state, status, &ClientsPage { c: Chrome::of(state, req, &caller.0), clients, created, error }))
}

/// `GET /admin/clients`: the OpenID Provider's clients (ADMIN).
pub async fn clients(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    clients_page(&state, &req, &caller, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct ClientForm {
    #[serde(default)]
    name: String,
    /// One URI a line.
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    first_party: Option<String>,
    #[serde(default)]
    signing_alg: Option<String>,
}

/// `POST /admin/clients`: registers a client; its secret is shown on this answer only.
pub async fn create_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<ClientForm>,
) -> PageResult {
    let f = form.0;
    let lines = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>();
    let request = crate::service::oauth::ClientRequest {
        name: f.name,
        redirect_uris: lines(&f.redirect_uris),
        post_logout_redirect_uris: lines(&f.post_logout_redirect_uris),
        public: f.kind == "public",
        scopes: f.scope,
        grant_types: Vec::new(),
        first_party: f.first_party.is_some(),
        backchannel_logout_uri: None,
        signing_alg: f.signing_alg.filter(|a| !a.is_empty()),
    };
    let created = match crate::auth::reauth::require_factor(&caller.0) {
        Ok(()) => crate::service::oauth::create_client(&state.pool, &state.keys, &audit, request).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((client, secret)) => {
            clients_page(&state, &req, &caller, StatusCode::OK, Some((client.client_id, secret)), None).await
        }
        Err(e) => {
            let (status, msg) = refusal(e);
            clients_page(&state, &req, &caller, status, None, Some(msg)).await
        }
    }
}

/// `POST /admin/clients/{client_id}/delete`.
pub async fn delete_client(
    state: web::Data<AppState>,
    _caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    crate::service::oauth::delete_client(&state.pool, &audit, &path).await?;
    Ok(see_other("/admin/clients?m=client-deleted"))
}

#[derive(Template)]
#[template(path = "admin/scim.html")]
struct ScimPage {
    c: Chrome,
    base: String,
    credentials: Vec<crate::store::scim::CredentialView>,
    /// The credential just made (name, token): shown on this answer only.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn scim_page(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    status: StatusCode,
    created: Option<(String, String)>,
    error: Option<String>,
) -> PageResult {
    let mut conn = state.pool.acquire().await?;
    let credentials = crate::store::scim::credentials(&mut conn).await?;
    let base = format!("{}/scim/v2", state.settings.public_url.trim_end_matches('/'));
    let page = ScimPage { c: Chrome::of(state, req, &caller.0), base, credentials, created, error };
    let mut res = render(state, status, &page);
    res.headers_mut()
        .insert(actix_web::http::header::CACHE_CONTROL, actix_web::http::header::HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `GET /admin/scim`: the SCIM provisioning credentials (ADMIN).
pub async fn scim(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> PageResult {
    scim_page(&state, &req, &caller, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct ScimForm {
    #[serde(default)]
    name: String,
}

/// `POST /admin/scim`: a new provisioning credential, its token shown on
/// this answer only (the same rules as `POST /api/v1/scim/credentials`).
pub async fn create_scim(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    audit: Audit,
    form: Form<ScimForm>,
) -> PageResult {
    let made = async {
        if !crate::auth::reauth::is_recent(&state, &caller.0) {
            return Err(crate::auth::reauth::required());
        }
        crate::auth::reauth::require_factor(&caller.0)?;
        crate::service::scim::create_credential(&state.pool, &state.keys, &audit, caller.0.user_id, &form.0.name).await
    }
    .await;
    match made {
        Ok((view, key)) => scim_page(&state, &req, &caller, StatusCode::OK, Some((view.name, key)), None).await,
        Err(e) => {
            let (status, msg) = refusal(e);
            scim_page(&state, &req, &caller, status, None, Some(msg)).await
        }
    }
}

/// `POST /admin/scim/{id}/revoke`.
pub async fn revoke_scim(
    state: web::Data<AppState>,
    _caller: Caller,
    audit: Audit,
    path: web::Path<String>,
    _f: Form<Button>,
) -> PageResult {
    let id: uuid::Uuid =
        path.parse().map_err(|_| crate::domain::Error::not_found("credential_not_found", "no such credential"))?;
    crate::service::scim::revoke_credential(&state.pool, &audit, id).await?;
    Ok(see_other("/admin/scim?m=credential-revoked"))
}
