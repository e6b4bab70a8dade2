//! Workspace rules: creation, members and roles (never without an admin), account
//! disabling and reset links (only by someone who administers every workspace of the
//! account), settings. Every change writes an audit entry in the same transaction.

use super::model::*;
use super::queries;
use crate::accounts::model::{EmailAddress, NewUser, TokenPurpose, User, UserId};
use crate::accounts::{queries as accounts, service as account_rules};
use crate::audit;
use crate::db::{self, DbConn};
use crate::error::AppError;

/// Who makes a change, and from where (for the audit log).
pub struct Actor<'a> {
    /// The signed-in user.
    pub user: &'a User,
    /// Client address.
    pub ip: &'a str,
}

impl Actor<'_> {
    fn entry(
        &self,
        workspace: &Workspace,
        action: &str,
        target: &str,
        detail: String,
    ) -> audit::model::NewAuditEntry {
        let mut entry = audit::entry(action, Some(self.user), self.ip);
        entry.workspace_id = Some(workspace.id.0);
        entry.target = target.to_owned();
        entry.detail = detail;
        entry
    }
}

/// Creates a workspace with `admin` as its first admin. Fails with a conflict if the slug
/// is taken.
pub fn create_with_admin(
    conn: &mut DbConn,
    name: &str,
    slug: &Slug,
    site_name: &str,
    admin: UserId,
) -> Result<WorkspaceId, AppError> {
    if queries::find_by_slug(conn, slug.as_str())?.is_some() {
        return Err(AppError::Conflict(format!(
            "The URL name {:?} is taken.",
            slug.as_str()
        )));
    }
    let now = db::now();
    let id = queries::insert(
        conn,
        &NewWorkspace {
            name,
            slug: slug.as_str(),
            site_name,
            created_at: now,
        },
    )?;
    queries::insert_membership(
        conn,
        &NewMembership {
            workspace_id: id,
            user_id: admin,
            role: Role::Admin.as_str(),
            created_at: now,
        },
    )?;
    Ok(id)
}

/// What adding a member did.
pub enum AddedMember {
    /// The address already had an account; it now belongs to the workspace too.
    Existing(User),
    /// A new account was created; the link (shown once) lets its owner set a password.
    Invited {
        /// The new account.
        user: User,
        /// The one-time set-password token.
        token: String,
    },
}

/// Adds a member by address: an existing account joins, or a new one is invited.
pub fn add_member(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    email: &EmailAddress,
    role: Role,
) -> Result<AddedMember, AppError> {
    let now = db::now();
    let (user, invited) = match accounts::find_user_by_email(conn, email.as_str())? {
        Some(user) => {
            if queries::find_membership(conn, workspace.id, user.id)?.is_some() {
                return Err(AppError::Conflict(format!(
                    "{} is already a member.",
                    user.email
                )));
            }
            // An invitation not accepted yet would be voided below, and no admin of one
            // workspace could make a new link for an account of two: wait until it is.
            if !user.has_password() {
                return Err(AppError::Conflict(format!(
                    "{} has not accepted their invitation to another workspace yet (no password is set): add them once they have.",
                    user.email
                )));
            }
            // Links made before the account joined this workspace were made by people who
            // may no longer manage it: none of them may set its password from now on.
            accounts::void_password_tokens_of_user(conn, user.id, now)?;
            (user, false)
        }
        None => {
            let id = accounts::insert_user(
                conn,
                &NewUser {
                    email: email.as_str(),
                    name: "",
                    password_hash: None,
                    password_changed_at: None,
                    created_at: now,
                },
            )?;
            let user = accounts::find_user_by_id(conn, id)?.ok_or(AppError::NotFound)?;
            (user, true)
        }
    };
    queries::insert_membership(
        conn,
        &NewMembership {
            workspace_id: workspace.id,
            user_id: user.id,
            role: role.as_str(),
            created_at: now,
        },
    )?;
    let how = if invited {
        "invited as a new account"
    } else {
        "existing account"
    };
    audit::record(
        conn,
        actor.entry(
            workspace,
            "member.added",
            &user.email,
            format!("role {}, {how}", role.as_str()),
        ),
    )?;
    if invited {
        let token = account_rules::create_password_link(
            conn,
            user.id,
            TokenPurpose::Invite,
            Some(actor.user.id),
        )?;
        Ok(AddedMember::Invited { user, token })
    } else {
        Ok(AddedMember::Existing(user))
    }
}

fn member(
    conn: &mut DbConn,
    workspace: &Workspace,
    user: UserId,
) -> Result<(User, Membership), AppError> {
    let membership =
        queries::find_membership(conn, workspace.id, user)?.ok_or(AppError::NotFound)?;
    let user = accounts::find_user_by_id(conn, user)?.ok_or(AppError::NotFound)?;
    Ok((user, membership))
}

/// Refuses a change that would leave the workspace without an admin who can act (enabled,
/// password set): an invited or disabled admin does not count.
fn ensure_another_admin(
    conn: &mut DbConn,
    workspace: &Workspace,
    member: &User,
    membership: &Membership,
    what: &str,
) -> Result<(), AppError> {
    let member_is_active_admin =
        membership.role().is_admin() && !member.is_disabled() && member.has_password();
    if member_is_active_admin && queries::count_active_admins(conn, workspace.id)? <= 1 {
        return Err(AppError::Conflict(format!(
            "You cannot {what} the last active admin: make another member admin first (one who has set a password and is not disabled)."
        )));
    }
    Ok(())
}

/// Changes a member's role; the last admin cannot be demoted.
pub fn change_role(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    target: UserId,
    role: Role,
) -> Result<User, AppError> {
    queries::lock_for_update(conn, workspace.id)?;
    let (user, membership) = member(conn, workspace, target)?;
    if membership.role() == role {
        return Ok(user);
    }
    if !role.is_admin() {
        ensure_another_admin(conn, workspace, &user, &membership, "demote")?;
    }
    queries::update_role(conn, workspace.id, target, role)?;
    let detail = format!("{} → {}", membership.role().as_str(), role.as_str());
    audit::record(
        conn,
        actor.entry(workspace, "member.role_changed", &user.email, detail),
    )?;
    Ok(user)
}

/// Removes a member from the workspace (the account stays); the last admin cannot be removed.
pub fn remove_member(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    target: UserId,
) -> Result<User, AppError> {
    queries::lock_for_update(conn, workspace.id)?;
    let (user, membership) = member(conn, workspace, target)?;
    ensure_another_admin(conn, workspace, &user, &membership, "remove")?;
    queries::delete_membership(conn, workspace.id, target)?;
    let detail = format!("was {}", membership.role().as_str());
    audit::record(
        conn,
        actor.entry(workspace, "member.removed", &user.email, detail),
    )?;
    Ok(user)
}

/// An admin may disable an account or make a reset link for it only if they administer
/// every workspace the account belongs to: one workspace's admin never takes over an
/// account that another workspace relies on.
fn ensure_can_manage_account(
    conn: &mut DbConn,
    actor: &User,
    target: &User,
) -> Result<(), AppError> {
    if !accounts::administers_every_workspace_of(conn, actor.id, target.id)? {
        return Err(AppError::Conflict(format!(
            "{} also belongs to a workspace you do not administer; an admin of every one of their workspaces must do this.",
            target.email
        )));
    }
    Ok(())
}

/// Disables or re-enables a member's account. Disabling signs out all of its sessions.
pub fn set_disabled(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    target: UserId,
    disabled: bool,
) -> Result<User, AppError> {
    queries::lock_for_update(conn, workspace.id)?;
    let (user, membership) = member(conn, workspace, target)?;
    if user.id == actor.user.id {
        return Err(AppError::Conflict(
            "You cannot disable your own account.".into(),
        ));
    }
    if disabled {
        ensure_another_admin(conn, workspace, &user, &membership, "disable")?;
    }
    ensure_can_manage_account(conn, actor.user, &user)?;
    accounts::update_disabled(conn, user.id, disabled.then(db::now))?;
    if disabled {
        accounts::revoke_sessions(conn, user.id, db::now(), None)?;
    }
    let action = if disabled {
        "account.disabled"
    } else {
        "account.enabled"
    };
    audit::record(
        conn,
        actor.entry(workspace, action, &user.email, String::new()),
    )?;
    Ok(user)
}

/// Makes a one-time link with which the member sets a new password (or their first one,
/// if they were invited and never set it). Returns the member and the token.
pub fn create_reset_link(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    target: UserId,
) -> Result<(User, String), AppError> {
    let (user, _) = member(conn, workspace, target)?;
    if user.id != actor.user.id {
        ensure_can_manage_account(conn, actor.user, &user)?;
    }
    let purpose = if user.has_password() {
        TokenPurpose::Reset
    } else {
        TokenPurpose::Invite
    };
    let token = account_rules::create_password_link(conn, user.id, purpose, Some(actor.user.id))?;
    audit::record(
        conn,
        actor.entry(
            workspace,
            "password.link_created",
            &user.email,
            purpose.as_str().into(),
        ),
    )?;
    Ok((user, token))
}

/// Renames the workspace and sets its site name (the subject prefix).
pub fn update_settings(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    name: &str,
    site_name: &str,
) -> Result<(), AppError> {
    queries::update_settings(conn, workspace.id, name, site_name)?;
    let detail = format!(
        "name {:?} → {:?}, site name {:?} → {:?}",
        workspace.name, name, workspace.site_name, site_name
    );
    audit::record(
        conn,
        actor.entry(workspace, "settings.changed", &workspace.slug, detail),
    )?;
    Ok(())
}
