//! Project access requests (XNAT PARs): an owner's invitation (by username
//! or by email, for a person who may not have an account yet) or a user's
//! request to join. Accepting adds the membership on the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit, Changes};
use crate::domain::{Email, Level};
use crate::domain::{Error, Result};
use crate::store::{projects, users};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccessRequest {
    pub par_id: i64,
    pub project_id: String,
    pub project_name: String,
    pub project_description: String,
    pub project_pi: String,
    pub level: String,
    /// `invitation` (from an owner) or `request` (a user asking to join).
    pub kind: String,
    /// The invitee or requester's username, once they have an account.
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Who created it (the inviting owner, or the requester).
    pub created_by: Option<String>,
    pub created_by_first_name: Option<String>,
    pub created_by_last_name: Option<String>,
    pub created_at: DateTime<Utc>,
    /// `pending`, `accepted`, `declined`, `withdrawn` or `expired`.
    pub status: String,
    /// When an invitation stops being valid (`access_requests.invitation_ttl_days`).
    pub expires_at: Option<DateTime<Utc>>,
    /// XNAT's `approved` (true: accepted, false: declined); the native
    /// API says `status`.
    #[serde(skip)]
    pub approved: Option<bool>,
    /// When it was accepted, declined, withdrawn or expired.
    pub decided_at: Option<DateTime<Utc>>,
    /// The person's account, once known (for the email rule, not shown).
    #[serde(skip)]
    pub user_id: Option<Uuid>,
    /// The address an email invitation was sent to (not shown as such).
    #[serde(skip)]
    pub invited_email: Option<String>,
}

/// `sqlx::query_as!` of `AccessRequest` rows (with their project and the
/// people named), then `$tail`.
macro_rules! select_requests {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AccessRequest,
            r#"SELECT r.par_id, r.project_id, p.name AS project_name, p.description AS project_description,
                      p.pi AS project_pi, r.level, r.kind, u.username AS "username?", COALESCE(u.email, r.email) AS email,
                      u.first_name AS "first_name?", u.last_name AS "last_name?", c.username AS "created_by?",
                      c.first_name AS "created_by_first_name?", c.last_name AS "created_by_last_name?", r.created_at,
                      r.status, CASE r.status WHEN 'accepted' THEN true WHEN 'declined' THEN false END AS approved,
                      r.decided_at, r.expires_at, r.user_id, r.email AS invited_email
               FROM access_requests r JOIN projects p ON p.id = r.project_id
               LEFT JOIN users u ON u.id = r.user_id LEFT JOIN users c ON c.id = r.created_by "# + $tail $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, par_id: i64) -> Result<AccessRequest, Error> {
    select_requests!("WHERE r.par_id = $1", par_id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::not_found("access_request_not_found", format!("access request {par_id} not found")))
}

/// Every request of a project, newest first.
pub async fn of_project(conn: &mut PgConnection, project: &str) -> Result<Vec<AccessRequest>, Error> {
    Ok(select_requests!("WHERE r.project_id = $1 ORDER BY r.par_id DESC", project).fetch_all(conn).await?)
}

/// A user's open invitations.
/// What a user has pending: invitations to them (still valid) and their
/// own requests to join, newest first.
pub async fn pending_for(conn: &mut PgConnection, user: Uuid) -> Result<Vec<AccessRequest>, Error> {
    Ok(select_requests!(
        "WHERE r.status = 'pending'
           AND ((r.kind = 'invitation' AND r.user_id = $1 AND (r.expires_at IS NULL OR r.expires_at > now()))
             OR (r.kind = 'request' AND r.created_by = $1))
         ORDER BY r.par_id DESC",
        user,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn open_for_user(conn: &mut PgConnection, user: Uuid) -> Result<Vec<AccessRequest>, Error> {
    Ok(select_requests!(
        "WHERE r.user_id = $1 AND r.status = 'pending' AND r.kind = 'invitation'
           AND (r.expires_at IS NULL OR r.expires_at > now()) ORDER BY r.par_id",
        user,
    )
    .fetch_all(conn)
    .await?)
}

/// Who an invitation is for.
pub enum Invitee {
    Username(String),
    Email(Email),
}

fn duplicate(e: sqlx::Error) -> Error {
    Error::on_constraint(e, |c| {
        c.starts_with("access_requests_open").then(|| {
            Error::conflict("request_exists", "an open access request for this person and project already exists")
        })
    })
}

/// Blanks the account emails `caller` may not see (`directory.visibility`):
/// an email invitation keeps the address its inviter typed.
pub fn hide_emails(
    list: &mut [AccessRequest],
    visibility: crate::config::Visibility,
    caller: &crate::auth::principal::Principal,
) {
    for r in list {
        if let Some(uid) = r.user_id {
            if !crate::auth::directory::sees_email(visibility, caller, uid) {
                r.email = r.invited_email.clone();
                // Nor which account an address typed into a pending
                // invitation belongs to: inviting is no directory lookup.
                if r.kind == "invitation" && r.invited_email.is_some() && r.status == "pending" {
                    r.username = None;
                    r.first_name = None;
                    r.last_name = None;
                }
            }
        }
    }
}

/// Marks the project's lapsed invitations `expired` (so they no longer
/// block a new invitation to the same person).
async fn expire(conn: &mut PgConnection, project: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE access_requests SET status = 'expired', decided_at = now()
         WHERE project_id = $1 AND status = 'pending' AND expires_at <= now()",
        project
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether the user who made an invitation may still grant it: enabled, and
/// an owner of the project or holding USER_MANAGEMENT (or ADMIN).
async fn inviter_may_grant(conn: &mut PgConnection, inviter: Option<Uuid>, project: &str) -> Result<bool, Error> {
    let Some(inviter) = inviter else { return Ok(false) };
    Ok(sqlx::query_scalar!(
        r#"SELECT u.enabled AND (
             EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.name = ur.role
                     WHERE ur.user_id = u.id AND r.permissions && ARRAY['ADMIN', 'USER_MANAGEMENT'])
             OR EXISTS (SELECT 1 FROM user_groups ug WHERE ug.user_id = u.id AND ug.group_name = $2)) AS "may!"
         FROM users u WHERE u.id = $1"#,
        inviter,
        Level::Owner.group(project)
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(false))
}

/// An owner invites a person. An email that belongs to a user whose email is
/// verified targets that user at once; otherwise the invitation waits for
/// such an account.
pub async fn invite(
    conn: &mut PgConnection,
    audit: &Audit,
    project: &str,
    level: Level,
    invitee: Invitee,
    inviter: Uuid,
    ttl_days: u32,
) -> Result<AccessRequest, Error> {
    let p = projects::get(conn, project, true).await?;
    expire(conn, &p.id).await?;
    let (user_id, email, email_key) = match invitee {
        Invitee::Username(name) => {
            let u = users::get(conn, &name, false).await?;
            if !u.enabled {
                return Err(Error::conflict("user_disabled", format!("user '{}' is disabled", u.username)));
            }
            (Some(u.id), None, None)
        }
        Invitee::Email(email) => {
            let verified: Option<Uuid> =
                sqlx::query_scalar!("SELECT id FROM users WHERE email_key = $1 AND verified AND enabled", email.key())
                    .fetch_optional(&mut *conn)
                    .await?;
            (verified, Some(email.as_str().to_string()), Some(email.key().to_string()))
        }
    };
    if user_id == Some(inviter) {
        return Err(projects::self_grant_refused());
    }
    if let Some(uid) = user_id {
        if projects::level_in(&mut *conn, uid, &p.id).await?.is_some() {
            return Err(Error::conflict("already_member", "this person is already a member of the project"));
        }
    }
    let par_id: i64 = sqlx::query_scalar!(
        "INSERT INTO access_requests (project_id, level, kind, user_id, email, created_by, email_key, expires_at)
         VALUES ($1, $2, 'invitation', $3, $4, $5, $6, now() + make_interval(days => $7)) RETURNING par_id",
        p.id,
        level.as_str(),
        user_id,
        email,
        inviter,
        email_key,
        i32::try_from(ttl_days).unwrap_or(30)
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(duplicate)?;
    let changes = Changes::new()
        .set("project", p.id.as_str())
        .set("level", level.as_str())
        .set("user_id", user_id.map(|u| u.to_string()))
        .set("email", email);
    audit::record(&mut *conn, audit, "access_request", &par_id.to_string(), "access_request.invited", changes).await?;
    get(conn, par_id).await
}

/// A user asks to join a project.
pub async fn ask(
    conn: &mut PgConnection,
    audit: &Audit,
    project: &str,
    level: Level,
    requester: Uuid,
) -> Result<AccessRequest, Error> {
    if level == Level::Owner {
        return Err(Error::invalid(
            "invalid_level",
            "a request to join may ask for member or collaborator; an owner invites other owners",
        ));
    }
    let p = projects::get(conn, project, true).await?;
    if projects::level_in(&mut *conn, requester, &p.id).await?.is_some() {
        return Err(Error::conflict("already_member", "you are already a member of this project"));
    }
    let par_id: i64 = sqlx::query_scalar!(
        "INSERT INTO access_requests (project_id, level, kind, user_id, created_by)
         VALUES ($1, $2, 'request', $3, $3) RETURNING par_id",
        p.id,
        level.as_str(),
        requester
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(duplicate)?;
    let changes = Changes::new().set("project", p.id.as_str()).set("level", level.as_str());
    audit::record(&mut *conn, audit, "access_request", &par_id.to_string(), "access_request.requested", changes)
        .await?;
    get(conn, par_id).await
}

/// Who is answering a request: the invitee answers an invitation; an owner
/// (or a USER_MANAGEMENT holder) answers a request to join.
pub struct Answerer {
    pub user_id: Uuid,
    pub manages_users: bool,
    /// Holds ADMIN (an administrator's request is answered by one, or by
    /// the project's owners).
    pub admin: bool,
}

/// A request as `answer` reads it, locked.
struct Answerable {
    project_id: String,
    level: String,
    kind: String,
    user_id: Option<Uuid>,
    status: String,
    created_by: Option<Uuid>,
    expired: bool,
}

fn request_not_found(par_id: i64) -> Error {
    Error::not_found("access_request_not_found", format!("access request {par_id} not found"))
}

/// Accepts or declines. The row is locked, so of two parallel accepts one
/// wins and the other gets 409 `already_answered`.
pub async fn answer(
    conn: &mut PgConnection,
    audit: &Audit,
    par_id: i64,
    who: &Answerer,
    accept: bool,
) -> Result<AccessRequest, Error> {
    // The user's row and the project's first, then the request's: users,
    // then projects, then what hangs off them. A deletion of the user, the
    // project or the inviter takes them in that order and reaches the
    // request last (its cascade); the request first deadlocked with each.
    let about = sqlx::query!("SELECT user_id, project_id FROM access_requests WHERE par_id = $1", par_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(about) = about {
        if let Some(user) = about.user_id {
            sqlx::query_scalar!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user)
                .fetch_optional(&mut *conn)
                .await?;
        }
        sqlx::query_scalar!("SELECT id FROM projects WHERE id = $1 FOR UPDATE", about.project_id)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let row = lock_for_answer(conn, par_id, who).await?;
    refuse_answer(&row, par_id, who, accept)?;
    if accept {
        // An invitation grants what its inviter could grant when it is
        // accepted, not when it was sent.
        if row.kind == "invitation" && !inviter_may_grant(conn, row.created_by, &row.project_id).await? {
            return Err(Error::conflict(
                "invitation_void",
                "whoever sent this invitation can no longer grant this access; ask a current owner",
            ));
        }
        let user_id = row.user_id.ok_or_else(|| request_not_found(par_id))?;
        let user = users::get_by_id(conn, user_id).await?;
        let level = Level::parse(&row.level)?;
        projects::set_level(conn, audit, &row.project_id, &user.username, level, projects::Grant::Accepted).await?;
    }
    decide(conn, audit, par_id, who, if accept { "accepted" } else { "declined" }).await
}

/// Locks the request `who` may answer: the invitee answers an invitation, an
/// owner or a USER_MANAGEMENT holder a request to join. Any other request
/// is not disclosed (404).
async fn lock_for_answer(conn: &mut PgConnection, par_id: i64, who: &Answerer) -> Result<Answerable, Error> {
    let row = sqlx::query_as!(
        Answerable,
        r#"SELECT project_id, level, kind, user_id, status, created_by,
                  COALESCE(expires_at <= now(), false) AS "expired!"
           FROM access_requests WHERE par_id = $1 FOR UPDATE"#,
        par_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| request_not_found(par_id))?;
    let allowed = match row.kind.as_str() {
        "invitation" => row.user_id == Some(who.user_id),
        _ => {
            let owner = projects::level_in(&mut *conn, who.user_id, &row.project_id).await? == Some(Level::Owner);
            // USER_MANAGEMENT answers for the project, but an administrator's
            // membership changes only by an administrator (or the owners).
            let managed = who.manages_users
                && (who.admin || !matches!(row.user_id, Some(u) if users::holds_admin_id_conn(&mut *conn, u).await?));
            owner || managed
        }
    };
    if allowed {
        Ok(row)
    } else {
        Err(request_not_found(par_id))
    }
}

/// The rules of an answer that need no lookup: only a pending, unexpired
/// request is answered, and nobody grants themselves access through one
/// (not by approving their own request to join, not by accepting their own
/// invitation).
fn refuse_answer(row: &Answerable, par_id: i64, who: &Answerer, accept: bool) -> Result<(), Error> {
    if row.status != "pending" {
        return Err(Error::conflict("already_answered", format!("access request {par_id} was already {}", row.status)));
    }
    if row.expired {
        return Err(Error::conflict("invitation_expired", format!("access request {par_id} has expired")));
    }
    let own_request = row.kind == "request" && row.user_id == Some(who.user_id);
    let own_invitation = row.kind == "invitation" && row.created_by.is_some() && row.created_by == row.user_id;
    if accept && (own_request || own_invitation) {
        return Err(projects::self_grant_refused());
    }
    Ok(())
}

/// Ends a pending request with `status` (accepted, declined, withdrawn),
/// logged as `access_request.<status>`.
async fn decide(
    conn: &mut PgConnection,
    audit: &Audit,
    par_id: i64,
    who: &Answerer,
    status: &str,
) -> Result<AccessRequest, Error> {
    sqlx::query!(
        "UPDATE access_requests SET status = $2, decided_at = now(), decided_by = $3 WHERE par_id = $1",
        par_id,
        status,
        who.user_id
    )
    .execute(&mut *conn)
    .await?;
    audit::record(
        &mut *conn,
        audit,
        "access_request",
        &par_id.to_string(),
        &format!("access_request.{status}"),
        Changes::new().field("status", "pending", status),
    )
    .await?;
    get(conn, par_id).await
}

/// Gives a user the pending email invitations addressed to their (verified)
/// email (`email_key`: `Email::key`). Called whenever a user ends up enabled
/// with a verified email.
pub async fn attach_email_invitations(
    conn: &mut PgConnection,
    audit: &Audit,
    user_id: Uuid,
    email_key: &str,
) -> Result<u64, Error> {
    let ids: Vec<i64> = sqlx::query_scalar!("UPDATE access_requests r SET user_id = $1
         WHERE r.user_id IS NULL AND r.status = 'pending' AND r.email_key = $2
           AND NOT EXISTS (SELECT 1 FROM access_requests o WHERE o.project_id = r.project_id AND o.user_id = $1 AND o.status = 'pending')
         RETURNING r.par_id", user_id, email_key)
    .fetch_all(&mut *conn)
    .await?;
    for id in &ids {
        audit::record(
            &mut *conn,
            audit,
            "access_request",
            &id.to_string(),
            "access_request.matched",
            Changes::new().set("user_id", user_id.to_string()),
        )
        .await?;
    }
    Ok(ids.len() as u64)
}

/// Withdraws a pending request: whoever made it, an owner of the project or
/// a USER_MANAGEMENT holder. Others are told it does not exist.
pub async fn withdraw(
    conn: &mut PgConnection,
    audit: &Audit,
    par_id: i64,
    who: &Answerer,
) -> Result<AccessRequest, Error> {
    let not_found = || Error::not_found("access_request_not_found", format!("access request {par_id} not found"));
    let row =
        sqlx::query!("SELECT project_id, created_by, status FROM access_requests WHERE par_id = $1 FOR UPDATE", par_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (project, created_by, status) = row.map(|r| (r.project_id, r.created_by, r.status)).ok_or_else(not_found)?;
    let allowed = created_by == Some(who.user_id)
        || who.manages_users
        || projects::level_in(&mut *conn, who.user_id, &project).await? == Some(Level::Owner);
    if !allowed {
        return Err(not_found());
    }
    if status != "pending" {
        return Err(Error::conflict("already_answered", format!("access request {par_id} was already {status}")));
    }
    decide(conn, audit, par_id, who, "withdrawn").await
}
