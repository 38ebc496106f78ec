//! Groups. Project groups (`{project}_{level}`) are managed through the
//! project's membership rules; other groups are plain named sets of users.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::Level;
use crate::domain::{Error, Result};
use crate::store::projects;
use crate::store::users::{self, ItemResult};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Group {
    pub name: String,
    pub display_name: String,
    /// Set for a project's group.
    pub project_id: Option<String>,
    pub level: Option<String>,
    pub members: i64,
    pub created_at: DateTime<Utc>,
}

/// `sqlx::query_as!` of `Group` rows from `groups g`, then `$tail`.
macro_rules! select_groups {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Group,
            r#"SELECT g.name, g.display_name, g.project_id, g.level,
                      (SELECT count(*) FROM user_groups ug WHERE ug.group_name = g.name) AS "members!", g.created_at
               FROM groups g "# + $tail $(, $arg)*
        )
    };
}

fn not_found(name: &str) -> Error {
    Error::not_found("group_not_found", format!("group '{name}' not found"))
}

pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Group, Error> {
    select_groups!("WHERE lower(g.name) = lower($1)", name).fetch_optional(conn).await?.ok_or_else(|| not_found(name))
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<Group>, Error> {
    Ok(select_groups!("ORDER BY lower(g.name)").fetch_all(conn).await?)
}

pub async fn create(conn: &mut PgConnection, audit: &Audit, name: &str, display_name: &str) -> Result<Group, Error> {
    sqlx::query!("INSERT INTO groups (name, display_name) VALUES ($1, $2)", name, display_name)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            Error::on_constraint(e, |c| {
                (c == "groups_pkey" || c == "groups_name_ci")
                    .then(|| Error::conflict("group_exists", format!("group '{name}' already exists")))
            })
        })?;
    audit::record(
        &mut *conn,
        audit,
        "group",
        name,
        "group.created",
        Changes::new().field("display_name", serde_json::Value::Null, display_name),
    )
    .await?;
    get(conn, name).await
}

/// Renames a plain group and/or changes its display name; memberships and
/// resource permissions follow the name (foreign keys `ON UPDATE CASCADE`).
/// A project's groups are named after it (409 `project_group`).
pub async fn update(
    conn: &mut PgConnection,
    audit: &Audit,
    name: &str,
    new_name: Option<&str>,
    display_name: Option<&str>,
) -> Result<Group, Error> {
    let g = get(conn, name).await?;
    if g.project_id.is_some() {
        return Err(Error::conflict("project_group", "a project's groups are named after the project"));
    }
    let to = new_name.unwrap_or(&g.name);
    let display = display_name.unwrap_or(&g.display_name);
    let changes =
        Changes::new().field("name", g.name.as_str(), to).field("display_name", g.display_name.as_str(), display);
    if changes.is_empty() {
        return Ok(g);
    }
    sqlx::query!("UPDATE groups SET name = $2, display_name = $3 WHERE name = $1", g.name, to, display)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            Error::on_constraint(e, |c| {
                (c == "groups_pkey" || c == "groups_name_ci")
                    .then(|| Error::conflict("group_exists", format!("group '{to}' already exists")))
            })
        })?;
    let action = if to != g.name { "group.renamed" } else { "group.updated" };
    audit::record(&mut *conn, audit, "group", to, action, changes).await?;
    get(conn, to).await
}

/// Deletes a plain group; a project's groups go with their project (409).
pub async fn delete(conn: &mut PgConnection, audit: &Audit, name: &str) -> Result<Group, Error> {
    let g = get(conn, name).await?;
    if g.project_id.is_some() {
        return Err(Error::conflict("project_group", "a project's groups are deleted with the project"));
    }
    lock_members(conn, &g.name).await?;
    sqlx::query_scalar!("SELECT name FROM groups WHERE name = $1 FOR UPDATE", g.name)
        .fetch_optional(&mut *conn)
        .await?;
    let members = member_names(conn, &g.name).await?;
    audit::record(
        &mut *conn,
        audit,
        "group",
        &g.name,
        "group.deleted",
        Changes::new().field("members", members, serde_json::Value::Null),
    )
    .await?;
    sqlx::query!("DELETE FROM groups WHERE name = $1", g.name).execute(&mut *conn).await?;
    Ok(g)
}

/// Locks the rows of `group`'s members (its exact name), in id order: a
/// deletion of the group takes them before the group's row, users before
/// groups, as a membership change (the user's row, then the group's, by
/// `registrar_group_touched`) takes them. The group first deadlocked with
/// a member's removal or deletion.
pub async fn lock_members(conn: &mut PgConnection, group: &str) -> Result<(), Error> {
    sqlx::query_scalar!(
        "SELECT u.id FROM users u WHERE u.id IN (SELECT user_id FROM user_groups WHERE group_name = $1)
         ORDER BY u.id FOR NO KEY UPDATE",
        group
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

async fn member_names(conn: &mut PgConnection, group: &str) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT u.username FROM user_groups ug JOIN users u ON u.id = ug.user_id WHERE ug.group_name = $1 ORDER BY lower(u.username)",
        group,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn members(conn: &mut PgConnection, group: &str) -> Result<Vec<users::User>, Error> {
    let g = get(conn, group).await?;
    Ok(users::select_users!(
        "FROM user_groups ug JOIN users u ON u.id = ug.user_id WHERE ug.group_name = $1 ORDER BY lower(u.username)",
        g.name,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn of_user(conn: &mut PgConnection, user: Uuid) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!("SELECT group_name FROM user_groups WHERE user_id = $1 ORDER BY lower(group_name)", user)
        .fetch_all(conn)
        .await?)
}

/// One membership of a user: the group, and for a project's level group
/// the project and the level.
pub struct Membership {
    pub group_name: String,
    pub project_id: Option<String>,
    pub level: Option<String>,
}

/// Every membership of a user, by group name (one query for the `groups`
/// and `projects` claims).
pub async fn memberships_of(conn: &mut PgConnection, user: Uuid) -> Result<Vec<Membership>, Error> {
    Ok(sqlx::query_as!(
        Membership,
        r#"SELECT ug.group_name, ug.project_id, g.level
           FROM user_groups ug JOIN groups g ON g.name = ug.group_name
           WHERE ug.user_id = $1 ORDER BY lower(ug.group_name)"#,
        user
    )
    .fetch_all(conn)
    .await?)
}

/// Adds a user to one group. For a project group this sets the user's level
/// in that project (replacing another level).
pub async fn add(conn: &mut PgConnection, audit: &Audit, username: &str, group: &str) -> Result<(), Error> {
    let g = get(conn, group).await?;
    if let (Some(project), Some(level)) = (&g.project_id, &g.level) {
        projects::set_level(conn, audit, project, username, Level::parse(level)?, projects::Grant::Managed).await?;
        return Ok(());
    }
    let user = users::get(conn, username, false).await?;
    if audit.actor_id == Some(user.id) {
        return Err(projects::self_grant_refused());
    }
    let res = sqlx::query!(
        "INSERT INTO user_groups (user_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user.id,
        g.name
    )
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() > 0 {
        audit::record(
            &mut *conn,
            audit,
            "group",
            &g.name,
            "group.member_added",
            Changes::new().set("user", user.username.as_str()),
        )
        .await?;
    }
    Ok(())
}

pub async fn remove(conn: &mut PgConnection, audit: &Audit, username: &str, group: &str) -> Result<(), Error> {
    let g = get(conn, group).await?;
    let user = users::get(conn, username, false).await?;
    if let Some(project) = &g.project_id {
        let current = projects::level_in(&mut *conn, user.id, project).await?;
        if current.map(|l| l.group(project)).as_deref() != Some(g.name.as_str()) {
            return Err(Error::not_found("not_a_member", format!("'{}' is not in group '{}'", user.username, g.name)));
        }
        projects::remove_member(conn, audit, project, &user.username).await?;
        return Ok(());
    }
    let res = sqlx::query!("DELETE FROM user_groups WHERE user_id = $1 AND group_name = $2", user.id, g.name)
        .execute(&mut *conn)
        .await?;
    if res.rows_affected() == 0 {
        return Err(Error::not_found("not_a_member", format!("'{}' is not in group '{}'", user.username, g.name)));
    }
    audit::record(
        &mut *conn,
        audit,
        "group",
        &g.name,
        "group.member_removed",
        Changes::new().set("user", user.username.as_str()),
    )
    .await?;
    Ok(())
}

/// Applies `add` or `remove` for each group in its own savepoint: what can be
/// applied is, each failure is reported, and no group is left half-changed.
pub async fn apply_many(
    conn: &mut PgConnection,
    audit: &Audit,
    username: &str,
    groups: &[String],
    add_to: bool,
) -> Result<Vec<ItemResult>, Error> {
    users::get(conn, username, false).await?;
    let mut results = Vec::with_capacity(groups.len());
    for group in groups {
        let mut sp = conn.begin().await?;
        let outcome = if add_to {
            add(&mut sp, audit, username, group).await
        } else {
            remove(&mut sp, audit, username, group).await
        };
        match outcome {
            Ok(()) => {
                sp.commit().await?;
                results.push(ItemResult::ok(group));
            }
            Err(e) if e.is_refusal() => {
                sp.rollback().await?;
                results.push(ItemResult::failed(group, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(results)
}
