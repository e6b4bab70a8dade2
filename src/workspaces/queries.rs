//! All SQL of the workspaces slice.

use diesel::prelude::*;

use super::model::*;
use crate::accounts::model::{User, UserId};
use crate::db::DbConn;
use crate::db::schema::{memberships, users, workspaces};

/// The workspace with this slug.
pub fn find_by_slug(conn: &mut DbConn, slug: &str) -> QueryResult<Option<Workspace>> {
    workspaces::table
        .filter(workspaces::slug.eq(slug))
        .select(Workspace::as_select())
        .first(conn)
        .optional()
}

/// The workspace with this id.
pub fn find_by_id(conn: &mut DbConn, id: WorkspaceId) -> QueryResult<Option<Workspace>> {
    workspaces::table
        .find(id)
        .select(Workspace::as_select())
        .first(conn)
        .optional()
}

/// Turns per-request SMTP settings in API calls on or off.
pub fn set_per_request_smtp(conn: &mut DbConn, id: WorkspaceId, on: bool) -> QueryResult<usize> {
    diesel::update(workspaces::table.find(id))
        .set(workspaces::per_request_smtp.eq(on))
        .execute(conn)
}

/// Creates a workspace.
pub fn insert(conn: &mut DbConn, new: &NewWorkspace<'_>) -> QueryResult<WorkspaceId> {
    diesel::insert_into(workspaces::table)
        .values(new)
        .returning(workspaces::id)
        .get_result(conn)
}

/// Renames a workspace and sets its subject prefix.
pub fn update_settings(
    conn: &mut DbConn,
    id: WorkspaceId,
    name: &str,
    site_name: &str,
) -> QueryResult<()> {
    diesel::update(workspaces::table.find(id))
        .set((
            workspaces::name.eq(name),
            workspaces::site_name.eq(site_name),
        ))
        .execute(conn)
        .map(drop)
}

/// Serializes membership changes of one workspace (so two admins demoting each other at once
/// cannot leave it without an admin). SQLite's immediate transaction already serializes writers.
pub fn lock_for_update(conn: &mut DbConn, id: WorkspaceId) -> QueryResult<()> {
    match conn {
        DbConn::Pg(c) => workspaces::table
            .find(id)
            .select(workspaces::id)
            .for_update()
            .first::<WorkspaceId>(c)
            .map(drop),
        DbConn::Sqlite(_) => Ok(()),
    }
}

/// Every workspace the user belongs to, with the role, by name.
pub fn list_for_user(conn: &mut DbConn, user: UserId) -> QueryResult<Vec<(Workspace, Membership)>> {
    workspaces::table
        .inner_join(memberships::table)
        .filter(memberships::user_id.eq(user))
        .select((Workspace::as_select(), Membership::as_select()))
        .order(workspaces::name.asc())
        .load(conn)
}

/// The user's membership of a workspace.
pub fn find_membership(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    user: UserId,
) -> QueryResult<Option<Membership>> {
    memberships::table
        .filter(memberships::workspace_id.eq(workspace))
        .filter(memberships::user_id.eq(user))
        .select(Membership::as_select())
        .first(conn)
        .optional()
}

/// The members of a workspace with their accounts, by address.
pub fn list_members(
    conn: &mut DbConn,
    workspace: WorkspaceId,
) -> QueryResult<Vec<(User, Membership)>> {
    memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(workspace))
        .select((User::as_select(), Membership::as_select()))
        .order(users::email.asc())
        .load(conn)
}

/// How many admins of the workspace can act: enabled, and with a password set.
pub fn count_active_admins(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<i64> {
    memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(workspace))
        .filter(memberships::role.eq(Role::Admin.as_str()))
        .filter(users::disabled_at.is_null())
        .filter(users::password_hash.is_not_null())
        .count()
        .get_result(conn)
}

/// Adds a member.
pub fn insert_membership(conn: &mut DbConn, new: &NewMembership<'_>) -> QueryResult<()> {
    diesel::insert_into(memberships::table)
        .values(new)
        .execute(conn)
        .map(drop)
}

/// Changes a member's role.
pub fn update_role(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    user: UserId,
    role: Role,
) -> QueryResult<usize> {
    diesel::update(
        memberships::table
            .filter(memberships::workspace_id.eq(workspace))
            .filter(memberships::user_id.eq(user)),
    )
    .set(memberships::role.eq(role.as_str()))
    .execute(conn)
}

/// Removes a member.
pub fn delete_membership(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    user: UserId,
) -> QueryResult<usize> {
    diesel::delete(
        memberships::table
            .filter(memberships::workspace_id.eq(workspace))
            .filter(memberships::user_id.eq(user)),
    )
    .execute(conn)
}
