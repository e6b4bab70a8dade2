//! Handlers of the audit slice.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::queries::{self, Cursor};
use super::views::AuditPage;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::render;
use crate::workspaces::extract::WorkspaceCtx;

/// Entries per page.
const PAGE: i64 = 50;

/// Keyset pagination: `?before=ID` for older, `?after=ID` for newer.
#[derive(Deserialize)]
pub struct PageQuery {
    before: Option<i64>,
    after: Option<i64>,
}

/// `GET /w/{slug}/audit` (admins).
pub async fn index(
    state: web::Data<AppState>,
    session: Session,
    ctx: WorkspaceCtx,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, AppError> {
    ctx.require_admin()?;
    let cursor = match (query.before, query.after) {
        (Some(id), _) => Cursor::Before(id),
        (None, Some(id)) => Cursor::After(id),
        (None, None) => Cursor::Newest,
    };
    let workspace_id = ctx.workspace.id.0;
    let (entries, more) = state
        .db
        .run(move |conn| {
            Ok(queries::page_for_workspace(
                conn,
                workspace_id,
                cursor,
                PAGE,
            )?)
        })
        .await?;
    let base = ctx.path("/audit");
    let (first, last) = (entries.first().map(|e| e.id), entries.last().map(|e| e.id));
    let older = match cursor {
        Cursor::After(_) => last.map(|id| format!("{base}?before={id}")),
        _ if more => last.map(|id| format!("{base}?before={id}")),
        _ => None,
    };
    let newer = match cursor {
        Cursor::Newest => None,
        Cursor::Before(_) => first.map(|id| format!("{base}?after={id}")),
        Cursor::After(_) if more => first.map(|id| format!("{base}?after={id}")),
        Cursor::After(_) => None,
    };
    render(&AuditPage {
        frame: ctx.frame(&session, "audit", "Audit log"),
        entries,
        newer,
        older,
    })
}
