//! Alerts Mailroom raises itself, sent through the system provider to a workspace's admins
//! and recorded in that workspace's log under Sys, with their own origin (`alert`).

use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{memberships, users, workspaces};
use crate::messages::model::{MessageId, NewMessage, NewSend, Origin};
use crate::messages::queries as messages;
use crate::workspaces::model::WorkspaceId;

/// Queues one system message per active admin of the workspace; returns their ids.
pub fn notify_admins(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    from: &str,
    subject: &str,
    text: &str,
) -> QueryResult<Vec<MessageId>> {
    let admins: Vec<String> = memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(workspace))
        .filter(memberships::role.eq("admin"))
        .filter(users::disabled_at.is_null())
        .select(users::email)
        .load(conn)?;
    if admins.is_empty() {
        return Ok(Vec::new());
    }
    let site: String = workspaces::table
        .find(workspace)
        .select(workspaces::site_name)
        .first(conn)?;
    let subject = match site.trim() {
        "" => subject.to_owned(),
        site => format!("[{site}] {subject}"),
    };
    let now = crate::db::now();
    // One send per admin: an alert is addressed to each of them alone.
    let sends: Vec<NewSend> = admins
        .iter()
        .map(|admin| NewSend {
            from_name: "Mailroom".into(),
            to_addresses: admin.clone(),
            ..NewSend::new(
                workspace,
                from,
                subject.clone(),
                crate::messages::compose::crlf(text),
                now,
            )
        })
        .collect();
    let send_ids = messages::insert_sends(conn, &sends)?;
    let rows: Vec<NewMessage> = admins
        .into_iter()
        .zip(send_ids)
        .map(|(recipient, send)| {
            NewMessage::email(workspace, send, Origin::Alert, from, recipient, now)
        })
        .collect();
    messages::insert_batch(conn, &rows)
}
