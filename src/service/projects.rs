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

pub async fn visible(conn: &mut sqlx::PgConnection, caller: &Principal) -> Result<Visible> {
    if caller.has(Permission::UserManagement) {
        Ok(Visible::All(projects::list(conn).await?))
    } else {
        Ok(Visible::Mine(projects::of_user(conn, caller.user_id).await?))
    }
}
