//! Alerts Mailroom raises itself, sent through the system provider to a workspace's admins
//! and recorded in that workspace's log under Sys, with their own origin (`alert`).

use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{memberships, users, workspaces};
use crate::messages::model::{MessageId, NewMessage, NewMessageBody, Origin, Status};
use crate::messages::queries as messages;
use crate::messages::service::new_message_id;
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
    let body = NewMessageBody {
        workspace_id: workspace,
        text_body: crate::delivery::build::crlf(text),
        html_body: None,
        attachments: 0,
        created_at: now,
    };
    let body_id = messages::insert_bodies(conn, &[body])?[0];
    let rows: Vec<NewMessage> = admins
        .into_iter()
        .map(|recipient| NewMessage {
            workspace_id: workspace,
            origin: Origin::Alert.as_str().into(),
            user_id: None,
            session_public_id: None,
            provider_id: None,
            from_address: from.to_owned(),
            from_name: "Mailroom".into(),
            recipient,
            cc: String::new(),
            bcc: String::new(),
            subject: subject.clone(),
            body_id,
            message_id: new_message_id(from),
            status: Status::Queued.as_str().into(),
            hold_reason: None,
            attempts: 0,
            max_attempts: 4,
            due_at: now,
            send_at: None,
            possible_duplicate: false,
            result: String::new(),
            created_at: now,
            updated_at: now,
            api_key_id: None,
            references_header: None,
            contact_ids: None,
        })
        .collect();
    messages::insert_batch(conn, &rows)
}
