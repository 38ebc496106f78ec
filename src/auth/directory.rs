//! Directory visibility: whom a caller sees and whose email, decided once
//! for every front end (`directory.visibility`).

use uuid::Uuid;

use crate::auth::principal::Principal;
use crate::config::Visibility;
use crate::domain::Permission;

/// Whether `caller` sees every enabled user in directory listings (else only
/// the people they share a project with, and themselves).
pub fn sees_everyone(visibility: Visibility, caller: &Principal) -> bool {
    caller.has(Permission::UserManagement) || visibility != Visibility::SharedProjects
}

/// Whether `caller` sees the email of user `subject`.
pub fn sees_email(visibility: Visibility, caller: &Principal, subject: Uuid) -> bool {
    caller.has(Permission::UserManagement) || caller.user_id == subject || visibility == Visibility::AllWithEmail
}
