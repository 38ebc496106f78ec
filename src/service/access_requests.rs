//! Project access requests: answering, shared by the native and XNAT APIs.

use crate::audit::Audit;
use crate::auth::principal::Principal;
use crate::domain::Permission;
use crate::domain::{Error, Result};
use crate::store::access_requests::{self as pars, AccessRequest, Answerer};
use sqlx::PgPool;

/// Answers an access request (accept or decline), in one transaction.
/// Shared by the native and XNAT routes.
pub async fn answer(
    pool: &PgPool,
    caller: &Principal,
    audit: &Audit,
    par_id: &str,
    accept: bool,
) -> Result<AccessRequest> {
    let par_id: i64 =
        par_id.parse().map_err(|_| Error::not_found("access_request_not_found", "access request not found"))?;
    let who = Answerer {
        user_id: caller.user_id,
        manages_users: caller.has(Permission::UserManagement),
        admin: caller.is_admin(),
    };
    let mut tx = pool.begin().await?;
    let par = pars::answer(&mut tx, audit, par_id, &who, accept).await?;
    tx.commit().await?;
    Ok(par)
}
