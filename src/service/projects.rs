//! Which projects a caller may see.

use crate::auth::principal::Principal;
use crate::domain::Permission;
use crate::domain::Result;
use crate::store::projects::{self, Project, ProjectWithLevel};

/// The projects a caller may read: all of them with USER_MANAGEMENT, else
/// those they are a member of (with their level).
pub enum Visible {
    All(Vec<Project>),
    Mine(Vec<ProjectWithLevel>),
}

/// Adds a member, or changes a member's level (owners or USER_MANAGEMENT;
/// the route checked which). The native API and the web console.
pub async fn set_member(
    pool: &sqlx::PgPool,
    audit: &crate::audit::Audit,
    project: &str,
    username: &str,
    level: crate::domain::Level,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    projects::set_level(&mut tx, audit, project, username, level, projects::Grant::Managed).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a member (a project keeps at least one owner).
pub async fn remove_member(
    pool: &sqlx::PgPool,
    audit: &crate::audit::Audit,
    project: &str,
    username: &str,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    projects::remove_member(&mut tx, audit, project, username).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn visible(conn: &mut sqlx::PgConnection, caller: &Principal) -> Result<Visible> {
    if caller.has(Permission::UserManagement) {
        Ok(Visible::All(projects::list(conn).await?))
    } else {
        Ok(Visible::Mine(projects::of_user(conn, caller.user_id).await?))
    }
}
