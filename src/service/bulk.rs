//! One action on several users at once (the admin console's bulk action):
//! disable, enable, add to a group, or end every session. A preview is the
//! real run rolled back, so it shows exactly what applying would change,
//! refusals included; applying runs the same code and commits. Each user
//! is applied or refused whole (a savepoint each).

use crate::audit::Audit;
use crate::auth::principal::Principal;
use crate::domain::{Error, Permission, Result};
use crate::service::users::{lock_managed, update_user_in, UpdateUser};
use crate::state::AppState;
use crate::store::{groups, sessions, users};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Disable,
    Enable,
    AddToGroup(String),
    RevokeSessions,
}

impl Action {
    /// `disable`, `enable`, `add_to_group` (with `group`) or `revoke_sessions`.
    pub fn parse(name: &str, group: &str) -> Result<Action> {
        match name {
            "disable" => Ok(Action::Disable),
            "enable" => Ok(Action::Enable),
            "revoke_sessions" => Ok(Action::RevokeSessions),
            "add_to_group" if group.trim().is_empty() => {
                Err(Error::invalid("missing_group", "name the group to add the users to").on_field("group"))
            }
            "add_to_group" => Ok(Action::AddToGroup(crate::domain::parse_group_name(group.trim())?)),
            _ => Err(Error::invalid("invalid_action", "choose disable, enable, add_to_group or revoke_sessions")
                .on_field("action")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Action::Disable => "disable".into(),
            Action::Enable => "enable".into(),
            Action::AddToGroup(g) => format!("add to group {g}"),
            Action::RevokeSessions => "end every session".into(),
        }
    }
}

/// What happened (or, in a preview, would happen) to one user.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub username: String,
    /// `done`, `unchanged` or `refused`.
    pub status: &'static str,
    /// The change in words ("enabled: yes → no"), or why it was refused.
    pub detail: String,
}

/// Runs `action` on every named user (at most 100) in one transaction,
/// committed unless `preview`.
pub async fn run(
    state: &AppState,
    caller: &Principal,
    audit: &Audit,
    usernames: Vec<String>,
    action: &Action,
    preview: bool,
) -> Result<Vec<Outcome>> {
    if !caller.has(Permission::UserManagement) {
        return Err(Error::forbidden("bulk actions need USER_MANAGEMENT"));
    }
    let mut names = crate::service::bounded_list(usernames, "invalid_selection", "users")?;
    names.dedup();
    let mut tx = state.pool.begin().await?;
    // Every selected user's row locked first, in id order (the report keeps
    // the request's): two bulk runs over the same users in opposite orders,
    // or a bulk run and a role's deletion, would otherwise deadlock.
    users::lock_many(&mut tx, &names.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match one(caller, audit, &mut sp, &name, action).await {
            Ok((changed, detail)) => {
                sp.commit().await?;
                out.push(Outcome { username: name, status: if changed { "done" } else { "unchanged" }, detail });
            }
            Err(e @ Error::Internal(_)) | Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                out.push(Outcome { username: name, status: "refused", detail: e.to_string() });
            }
        }
    }
    if preview {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(out)
}

async fn one(
    caller: &Principal,
    audit: &Audit,
    tx: &mut sqlx::PgConnection,
    name: &str,
    action: &Action,
) -> Result<(bool, String)> {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    match action {
        Action::Disable | Action::Enable => {
            let want = *action == Action::Enable;
            let before = users::get(tx, name, false).await?;
            let live = sessions::list_active(tx, before.id).await?.len();
            let body = UpdateUser { enabled: Some(want), ..Default::default() };
            let (_, changed) = update_user_in(tx, caller, audit, name, body, None).await?;
            let detail = if changed {
                let mut d = format!("enabled: {} → {}", yes_no(before.enabled), yes_no(want));
                if !want {
                    d.push_str(&format!("; {live} active sessions end"));
                }
                d
            } else {
                format!("no change (already {})", if want { "enabled" } else { "disabled" })
            };
            Ok((changed, detail))
        }
        Action::AddToGroup(group) => {
            let target = lock_managed(tx, caller, name).await?;
            if groups::of_user(tx, target.id).await?.iter().any(|g| g.eq_ignore_ascii_case(group)) {
                return Ok((false, format!("no change (already in {group})")));
            }
            let mut results =
                groups::apply_many(tx, audit, &target.username, std::slice::from_ref(group), true).await?;
            match results.pop() {
                Some(r) if r.ok => Ok((true, format!("groups: + {group}"))),
                Some(r) => Err(Error::conflict("refused", r.error.unwrap_or_else(|| "refused".into()))),
                None => Err(Error::internal(anyhow::anyhow!("no result for the group"))),
            }
        }
        Action::RevokeSessions => {
            let target = lock_managed(tx, caller, name).await?;
            let n = sessions::revoke_all(tx, audit, target.id, "revoked by request").await?;
            Ok((n > 0, if n > 0 { format!("{n} sessions end") } else { "no change (no active session)".into() }))
        }
    }
}
