//! Plain groups: create and delete (the native API, MLTE's and the web
//! console's group routes).

use crate::audit::Audit;
use crate::domain::{parse_group_name, parse_text, Result};
use crate::store::groups::{self, Group};
use sqlx::PgPool;

/// Creates a group from a raw name and display name (checked here).
pub async fn create(pool: &PgPool, audit: &Audit, name: &str, display_name: &str) -> Result<Group> {
    let name = parse_group_name(name.trim())?;
    let display = parse_text("display_name", display_name, 200)?;
    let mut tx = pool.begin().await?;
    let g = groups::create(&mut tx, audit, &name, &display).await?;
    tx.commit().await?;
    Ok(g)
}

/// Deletes a plain group (a project's groups go with the project).
pub async fn delete(pool: &PgPool, audit: &Audit, name: &str) -> Result<Group> {
    let mut tx = pool.begin().await?;
    let g = groups::delete(&mut tx, audit, name).await?;
    tx.commit().await?;
    Ok(g)
}
