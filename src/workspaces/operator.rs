//! What the operator does from the command line: add an account to a workspace (creating
//! either when it does not exist). Also used by the benchmarks.

use crate::accounts::model::{EmailAddress, NewUser, Password};
use crate::accounts::{queries as accounts, service as account_rules};
use crate::db::{self, Db};
use crate::error::AppError;
use crate::workspaces::model::{NewMembership, Role, Slug};
use crate::workspaces::{queries as workspaces, service as workspace_rules};

/// What `mailroom user add` creates.
pub struct AddUser<'a> {
    /// Sign-in address.
    pub email: &'a str,
    /// Workspace URL name (created if missing).
    pub workspace: &'a str,
    /// Role in the workspace.
    pub role: &'a str,
    /// Display name.
    pub name: &'a str,
}

/// Creates an account (asking `password` for its password only when the address is new)
/// and makes it a member of a workspace, creating the workspace if it does not exist.
/// Returns a one-line summary.
pub fn add_user(
    db: &Db,
    spec: &AddUser<'_>,
    password: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    let email = EmailAddress::parse(spec.email).map_err(|e| format!("--email: {e}"))?;
    let slug = Slug::parse(spec.workspace).map_err(|e| format!("--workspace: {e}"))?;
    let role = Role::parse(spec.role).map_err(|e| format!("--role: {e}"))?;
    let name = crate::accounts::model::parse_name(spec.name).map_err(|e| format!("--name: {e}"))?;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let existing =
        accounts::find_user_by_email(&mut conn, email.as_str()).map_err(|e| e.to_string())?;
    let hash = match existing {
        Some(_) => None,
        None => {
            let password =
                Password::parse(&password()?).map_err(|e| format!("password (stdin): {e}"))?;
            Some(account_rules::hash_password(&password).map_err(|e| e.to_string())?)
        }
    };
    db::write(&mut conn, |conn| -> Result<String, AppError> {
        let now = db::now();
        let (user_id, created) = match accounts::find_user_by_email(conn, email.as_str())? {
            // As in the console: voiding an invitation not accepted yet would strand it.
            Some(user) if !user.has_password() => {
                return Err(AppError::Conflict(format!(
                    "{} has not accepted their invitation yet (no password is set): add them once they have",
                    email.as_str()
                )));
            }
            Some(user) => (user.id, false),
            None => {
                let id = accounts::insert_user(
                    conn,
                    &NewUser {
                        email: email.as_str(),
                        name: &name,
                        password_hash: hash.as_deref(),
                        password_changed_at: Some(now),
                        created_at: now,
                    },
                )?;
                (id, true)
            }
        };
        let mut entry = crate::audit::entry("cli.user_added", None, "cli");
        entry.actor_email = "mailroom user add".into();
        entry.target = email.as_str().to_owned();
        let message = match workspaces::find_by_slug(conn, slug.as_str())? {
            None if role != Role::Admin => {
                return Err(AppError::Validation(format!(
                    "workspace {} does not exist yet, and a new workspace needs an admin: use --role admin",
                    slug.as_str()
                )));
            }
            None => {
                let id =
                    workspace_rules::create_with_admin(conn, slug.as_str(), &slug, "", user_id)?;
                entry.workspace_id = Some(id.0);
                format!(
                    "created workspace {} with {} as {}",
                    slug.as_str(),
                    email.as_str(),
                    role.as_str()
                )
            }
            Some(ws) => {
                if workspaces::find_membership(conn, ws.id, user_id)?.is_some() {
                    return Err(AppError::Conflict(format!(
                        "{} is already a member of {}",
                        email.as_str(),
                        slug.as_str()
                    )));
                }
                workspaces::insert_membership(
                    conn,
                    &NewMembership {
                        workspace_id: ws.id,
                        user_id,
                        role: role.as_str(),
                        created_at: now,
                    },
                )?;
                entry.workspace_id = Some(ws.id.0);
                format!(
                    "added {} to {} as {}",
                    email.as_str(),
                    slug.as_str(),
                    role.as_str()
                )
            }
        };
        if !created {
            // As in the console: open links of an account that joins another workspace
            // were made by people who may no longer manage it.
            accounts::void_password_tokens_of_user(conn, user_id, now)?;
        }
        entry.detail = format!(
            "role {}{}",
            role.as_str(),
            if created {
                ", new account"
            } else {
                ", existing account (password unchanged)"
            }
        );
        crate::audit::record(conn, entry)?;
        Ok(message)
    })
    .map_err(|e| e.to_string())
}
