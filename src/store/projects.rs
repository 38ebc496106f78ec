//! Projects and membership. A member holds exactly one level, carried by the
//! project's group `{project}_{level}` (XNAT naming).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::{Error, Result};
use crate::domain::{Level, ProjectId};
use crate::store::users;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub pi: String,
    /// Whether non-members may find it to ask to join.
    pub discoverable: bool,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    #[serde(skip)]
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    pub level: String,
    /// XNAT's integer user id (for the XNAT tables, not shown natively).
    #[serde(skip)]
    pub xdat_user_id: i32,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProjectWithLevel {
    pub id: String,
    pub name: String,
    pub description: String,
    pub pi: String,
    /// The user's level: owner, member or collaborator.
    pub level: String,
}

/// `sqlx::query_as!` of `Project` rows from `projects`, then `$tail`.
macro_rules! select_projects {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(Project, "SELECT id, name, description, pi, discoverable, created_at, last_modified FROM projects " + $tail $(, $arg)*)
    };
}

fn not_found(id: &str) -> Error {
    Error::not_found("project_not_found", format!("project '{id}' not found"))
}

pub async fn get(conn: &mut PgConnection, id: &str, lock: bool) -> Result<Project, Error> {
    let project = if lock {
        select_projects!("WHERE lower(id) = lower($1) FOR UPDATE", id).fetch_optional(conn).await?
    } else {
        select_projects!("WHERE lower(id) = lower($1)", id).fetch_optional(conn).await?
    };
    project.ok_or_else(|| not_found(id))
}

/// A user's level in a project, if any (also used by the access middleware).
pub async fn level_in<'e, E: sqlx::PgExecutor<'e>>(exec: E, user: Uuid, project: &str) -> Result<Option<Level>, Error> {
    let level: Option<String> = sqlx::query_scalar!(
        r#"SELECT g.level AS "level!" FROM user_groups ug JOIN groups g ON g.name = ug.group_name
         WHERE ug.user_id = $1 AND lower(ug.project_id) = lower($2)"#,
        user,
        project
    )
    .fetch_optional(exec)
    .await?;
    Ok(level.and_then(|l| Level::parse(&l).ok()))
}

pub struct NewProject {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub pi: String,
}

/// Creates the project, its three groups, and makes `creator` its owner.
pub async fn create(conn: &mut PgConnection, audit: &Audit, creator: Uuid, new: NewProject) -> Result<Project, Error> {
    let id = new.id.as_str();
    sqlx::query!(
        "INSERT INTO projects (id, name, description, pi, created_by) VALUES ($1, $2, $3, $4, $5)",
        id,
        new.name,
        new.description,
        new.pi,
        creator
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        Error::on_constraint(e, |c| {
            (c == "projects_pkey" || c == "projects_id_key")
                .then(|| Error::conflict("project_exists", format!("project '{id}' already exists")))
        })
    })?;
    for level in Level::ALL {
        sqlx::query!(
            "INSERT INTO groups (name, display_name, project_id, level) VALUES ($1, $2, $3, $4)",
            level.group(id),
            format!("{} {}s", new.name, level.as_str()),
            id,
            level.as_str()
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            Error::on_constraint(e, |c| {
                (c == "groups_pkey" || c == "groups_name_ci").then(|| {
                    Error::conflict("group_exists", format!("a group named '{}' already exists", level.group(id)))
                })
            })
        })?;
    }
    let changes = Changes::new()
        .field("id", serde_json::Value::Null, id)
        .field("name", serde_json::Value::Null, new.name.as_str())
        .field("description", serde_json::Value::Null, new.description.as_str())
        .field("pi", serde_json::Value::Null, new.pi.as_str());
    audit::record(&mut *conn, audit, "project", id, "project.created", changes).await?;
    let creator_name: String =
        sqlx::query_scalar!("SELECT username FROM users WHERE id = $1", creator).fetch_one(&mut *conn).await?;
    set_level(conn, audit, id, &creator_name, Level::Owner, Grant::Creator).await?;
    get(conn, id, false).await
}

#[derive(Debug, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub pi: Option<String>,
    pub discoverable: Option<bool>,
}

pub async fn update(conn: &mut PgConnection, audit: &Audit, id: &str, patch: ProjectPatch) -> Result<Project, Error> {
    let before = get(conn, id, true).await?;
    let name = patch.name.unwrap_or_else(|| before.name.clone());
    let description = patch.description.unwrap_or_else(|| before.description.clone());
    let pi = patch.pi.unwrap_or_else(|| before.pi.clone());
    let discoverable = patch.discoverable.unwrap_or(before.discoverable);
    let changes = Changes::new()
        .field("name", before.name.as_str(), name.as_str())
        .field("description", before.description.as_str(), description.as_str())
        .field("pi", before.pi.as_str(), pi.as_str())
        .field("discoverable", before.discoverable, discoverable);
    if changes.is_empty() {
        return Ok(before);
    }
    sqlx::query!(
        "UPDATE projects SET name = $2, description = $3, pi = $4, discoverable = $5, last_modified = now()
         WHERE id = $1",
        before.id,
        name,
        description,
        pi,
        discoverable
    )
    .execute(&mut *conn)
    .await?;
    audit::record(&mut *conn, audit, "project", &before.id, "project.updated", changes).await?;
    get(conn, &before.id, false).await
}

/// Deletes the project with its groups, memberships and access requests.
pub async fn delete(conn: &mut PgConnection, audit: &Audit, id: &str) -> Result<Project, Error> {
    // The members' rows first, in id order, then the project's (users
    // before groups and projects, as membership changes take them).
    let found = get(conn, id, false).await?;
    sqlx::query_scalar!(
        "SELECT u.id FROM users u WHERE u.id IN (SELECT user_id FROM user_groups WHERE project_id = $1)
         ORDER BY u.id FOR NO KEY UPDATE",
        found.id
    )
    .fetch_all(&mut *conn)
    .await?;
    let p = get(conn, &found.id, true).await?;
    let members = members(conn, &p.id).await?;
    let changes = Changes::new().field("name", p.name.as_str(), serde_json::Value::Null).field(
        "members",
        members.iter().map(|m| format!("{}:{}", m.username, m.level)).collect::<Vec<_>>(),
        serde_json::Value::Null,
    );
    audit::record(&mut *conn, audit, "project", &p.id, "project.deleted", changes).await?;
    sqlx::query!("DELETE FROM projects WHERE id = $1", p.id).execute(&mut *conn).await?;
    Ok(p)
}

/// The projects their owners let anyone find.
pub async fn discoverable(conn: &mut PgConnection) -> Result<Vec<Project>, Error> {
    Ok(select_projects!("WHERE discoverable ORDER BY lower(id)").fetch_all(conn).await?)
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<Project>, Error> {
    Ok(select_projects!("ORDER BY lower(id)").fetch_all(conn).await?)
}

pub async fn members(conn: &mut PgConnection, project: &str) -> Result<Vec<Member>, Error> {
    Ok(sqlx::query_as!(
        Member,
        r#"SELECT u.id AS user_id, u.username, u.email, u.first_name, u.last_name, u.enabled, g.level AS "level!",
                  u.xdat_user_id
         FROM user_groups ug JOIN groups g ON g.name = ug.group_name JOIN users u ON u.id = ug.user_id
         WHERE ug.project_id = $1
         ORDER BY array_position(ARRAY['owner','member','collaborator'], g.level), lower(u.username)"#,
        project
    )
    .fetch_all(conn)
    .await?)
}

/// Blanks the emails `caller` may not see (`directory.visibility`).
pub fn hide_emails(
    members: &mut [Member],
    visibility: crate::config::Visibility,
    caller: &crate::auth::principal::Principal,
) {
    for m in members {
        if !crate::auth::directory::sees_email(visibility, caller, m.user_id) {
            m.email.clear();
        }
    }
}

/// The projects a user may read, with their level.
pub async fn of_user(conn: &mut PgConnection, user: Uuid) -> Result<Vec<ProjectWithLevel>, Error> {
    Ok(sqlx::query_as!(
        ProjectWithLevel,
        r#"SELECT p.id, p.name, p.description, p.pi, g.level AS "level!"
         FROM user_groups ug JOIN groups g ON g.name = ug.group_name JOIN projects p ON p.id = ug.project_id
         WHERE ug.user_id = $1 ORDER BY lower(p.id)"#,
        user
    )
    .fetch_all(conn)
    .await?)
}

/// Why a membership is being set: the one rule about memberships (see
/// `set_level`) tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// By an owner or a user manager through a membership route (native,
    /// XNAT, or a project group added to a user).
    Managed,
    /// The creator of a new project becomes its owner.
    Creator,
    /// An access request was accepted (by the invitee, or by an owner).
    Accepted,
}

/// The refusal of a membership its target gave themselves.
pub fn self_grant_refused() -> Error {
    Error::forbidden(
        "you cannot add yourself to a project or group or raise your own level; ask an owner or send an access request",
    )
    .with_code("self_grant")
}

/// Gives `username` `level` in `project`, replacing any other level. The
/// user must exist (404 `user_not_found`) and be enabled (409 `user_disabled`).
/// The one rule for every path that changes memberships: nobody adds
/// themselves or raises their own level by managing (administrators
/// included; lowering or leaving is fine, a project keeps one owner).
/// Returns the previous level.
pub async fn set_level(
    conn: &mut PgConnection,
    audit: &Audit,
    project: &str,
    username: &str,
    level: Level,
    why: Grant,
) -> Result<Option<Level>, Error> {
    // Locked, the member before the project (users before groups and
    // projects, as every other write takes them): the rules about the
    // member (an administrator's membership is an administrator's call)
    // see a concurrent grant of Administrator.
    let user = users::get(conn, username, true).await?;
    let p = get(conn, project, true).await?;
    if !user.enabled {
        return Err(Error::conflict("user_disabled", format!("user '{}' is disabled", user.username)));
    }
    let previous: Option<String> = sqlx::query_scalar!(r#"SELECT g.level AS "level!" FROM user_groups ug JOIN groups g ON g.name = ug.group_name WHERE ug.user_id = $1 AND ug.project_id = $2"#, user.id, p.id)
    .fetch_optional(&mut *conn)
    .await?;
    let previous = previous.and_then(|l| Level::parse(&l).ok());
    if previous == Some(level) {
        return Ok(previous);
    }
    if why == Grant::Managed {
        ensure_may_manage_member(conn, audit, &p.id, &user).await?;
    }
    let raises = previous.is_none_or(|p| level.rank() > p.rank());
    if why == Grant::Managed && raises && audit.actor_id == Some(user.id) {
        return Err(self_grant_refused());
    }
    if previous == Some(Level::Owner) {
        ensure_other_owner(conn, &p.id, user.id).await?;
    }
    sqlx::query!("DELETE FROM user_groups WHERE user_id = $1 AND project_id = $2", user.id, p.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO user_groups (user_id, group_name, project_id) VALUES ($1, $2, $3)",
        user.id,
        level.group(&p.id),
        p.id
    )
    .execute(&mut *conn)
    .await?;
    let changes =
        Changes::new().set("user", user.username.as_str()).field("level", previous.map(Level::as_str), level.as_str());
    audit::record(&mut *conn, audit, "project", &p.id, "project.member_set", changes).await?;
    Ok(previous)
}

/// The administrator-target rule for memberships: an administrator's
/// membership is changed by an administrator, by an owner of the project, or
/// by themselves; never by a UserManager acting on USER_MANAGEMENT alone.
async fn ensure_may_manage_member(
    conn: &mut PgConnection,
    audit: &Audit,
    project: &str,
    target: &users::User,
) -> Result<(), Error> {
    let Some(actor) = audit.actor_id else { return Ok(()) };
    if !target.admin() || actor == target.id {
        return Ok(());
    }
    let allowed: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1 AND role = $2)
             OR EXISTS (SELECT 1 FROM user_groups WHERE user_id = $1 AND group_name = $3) AS "allowed!""#,
        actor,
        users::ADMIN_ROLE,
        Level::Owner.group(project)
    )
    .fetch_one(&mut *conn)
    .await?;
    if allowed {
        Ok(())
    } else {
        Err(crate::auth::access::admin_target_refused())
    }
}

/// Refuses (409 `last_owner`) when `user` is the only owner of a project:
/// deleting them would leave it with none.
pub async fn ensure_not_sole_owner(conn: &mut PgConnection, user: Uuid) -> Result<(), Error> {
    // Lock the user's owned projects first (as every membership change locks
    // its project), so two owners deleted at once cannot both pass.
    sqlx::query!(
        "SELECT p.id FROM projects p WHERE p.id IN (
             SELECT ug.project_id FROM user_groups ug JOIN groups g ON g.name = ug.group_name
             WHERE ug.user_id = $1 AND g.level = 'owner')
         ORDER BY p.id FOR UPDATE",
        user
    )
    .fetch_all(&mut *conn)
    .await?;
    let sole: Option<String> = sqlx::query_scalar!(
        r#"SELECT ug.project_id AS "project_id!" FROM user_groups ug JOIN groups g ON g.name = ug.group_name
         WHERE ug.user_id = $1 AND g.level = 'owner'
           AND NOT EXISTS (SELECT 1 FROM user_groups o WHERE o.group_name = ug.group_name AND o.user_id <> $1)
         ORDER BY ug.project_id LIMIT 1"#,
        user
    )
    .fetch_optional(&mut *conn)
    .await?;
    match sole {
        Some(p) => Err(Error::conflict(
            "last_owner",
            format!("this user is the only owner of project '{p}': make someone else owner first"),
        )),
        None => Ok(()),
    }
}

/// A project always keeps one owner.
async fn ensure_other_owner(conn: &mut PgConnection, project: &str, leaving: Uuid) -> Result<(), Error> {
    let others: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM user_groups WHERE project_id = $1 AND group_name = $2 AND user_id <> $3"#,
        project,
        Level::Owner.group(project),
        leaving
    )
    .fetch_one(&mut *conn)
    .await?;
    if others == 0 {
        return Err(Error::conflict("last_owner", "a project must keep at least one owner"));
    }
    Ok(())
}

pub async fn remove_member(
    conn: &mut PgConnection,
    audit: &Audit,
    project: &str,
    username: &str,
) -> Result<Level, Error> {
    // Locked, the member before the project (users before groups and
    // projects, as every other write takes them): the rules about the
    // member (an administrator's membership is an administrator's call)
    // see a concurrent grant of Administrator.
    let user = users::get(conn, username, true).await?;
    let p = get(conn, project, true).await?;
    let level: Option<String> = sqlx::query_scalar!(r#"SELECT g.level AS "level!" FROM user_groups ug JOIN groups g ON g.name = ug.group_name WHERE ug.user_id = $1 AND ug.project_id = $2"#, user.id, p.id)
    .fetch_optional(&mut *conn)
    .await?;
    let level = level.and_then(|l| Level::parse(&l).ok()).ok_or_else(|| {
        Error::not_found("not_a_member", format!("'{}' is not a member of '{}'", user.username, p.id))
    })?;
    ensure_may_manage_member(conn, audit, &p.id, &user).await?;
    if level == Level::Owner {
        ensure_other_owner(conn, &p.id, user.id).await?;
    }
    sqlx::query!("DELETE FROM user_groups WHERE user_id = $1 AND project_id = $2", user.id, p.id)
        .execute(&mut *conn)
        .await?;
    let changes =
        Changes::new().set("user", user.username.as_str()).field("level", level.as_str(), serde_json::Value::Null);
    audit::record(&mut *conn, audit, "project", &p.id, "project.member_removed", changes).await?;
    Ok(level)
}
