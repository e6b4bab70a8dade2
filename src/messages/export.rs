//! `GET /w/{slug}/messages.csv`: the history as CSV, streamed in chunks, with the filters
//! and search of the page, spreadsheet formulas neutralized.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};

use super::model::SendId;
use super::queries;
use crate::error::AppError;
use crate::providers::model::ProviderId;
use crate::providers::queries as providers;
use crate::state::AppState;
use crate::web::forms::FieldErrors;
use crate::workspaces::extract::WorkspaceCtx;

use super::handlers::{HistoryQuery, filter_label, search_of, tab_of};

/// Messages with what the export shows of their sends (subject, Cc; no text).
fn with_sends(
    conn: &mut crate::db::DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
    rows: Vec<super::model::Message>,
) -> Result<
    (
        Vec<super::model::Message>,
        HashMap<SendId, queries::SendHead>,
    ),
    AppError,
> {
    let mut ids: Vec<SendId> = rows.iter().map(|m| m.send_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let sends = queries::find_send_heads_in(conn, workspace, &ids, Some(0))?
        .into_iter()
        .map(|head| (head.id, head))
        .collect();
    Ok((rows, sends))
}

/// Rows read per query while exporting.
const EXPORT_CHUNK: i64 = 1_000;

/// A cell a spreadsheet could take for a formula (`=`, `+`, `-`, `@`, tab, CR) gets a
/// leading `'`, so an exported log never runs what a sender typed (OWASP CSV injection).
fn cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// One chunk of CSV: the header first, then a line per message.
fn csv_chunk(
    (rows, sends): &(
        Vec<super::model::Message>,
        HashMap<SendId, queries::SendHead>,
    ),
    providers: &HashMap<ProviderId, String>,
    header: bool,
) -> Result<web::Bytes, AppError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| AppError::Unexpected(anyhow::anyhow!("writing CSV: {e}"));
    if header {
        out.write_record([
            "id",
            "created_at",
            "status",
            "recipient",
            "cc",
            "subject",
            "from",
            "provider",
            "origin",
            "attempts",
            "smtp_code",
            "smtp_enhanced",
            "result",
            "sent_at",
            "possible_duplicate",
            "message_id",
        ])
        .map_err(fail)?;
    }
    let time = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for m in rows {
        let send = sends.get(&m.send_id);
        out.write_record([
            m.id.0.to_string(),
            time(m.created_at),
            m.status.to_string(),
            cell(&m.recipient),
            cell(&send.map_or(String::new(), |s| s.cc.replace('\n', ", "))),
            cell(send.map_or("", |s| s.subject.as_str())),
            cell(&m.from_address),
            cell(
                m.provider_id
                    .and_then(|p| providers.get(&p))
                    .map_or("", String::as_str),
            ),
            m.origin.clone(),
            m.attempts.to_string(),
            m.smtp_code.map(|c| c.to_string()).unwrap_or_default(),
            m.smtp_enhanced.clone().unwrap_or_default(),
            cell(&m.result),
            m.sent_at.map(time).unwrap_or_default(),
            m.possible_duplicate.to_string(),
            m.message_id.clone(),
        ])
        .map_err(fail)?;
    }
    out.into_inner()
        .map(web::Bytes::from)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("writing CSV: {e}")))
}

/// `GET /w/{slug}/messages.csv`: the history as filtered, streamed a thousand rows at a
/// time (never built in memory).
pub async fn export(
    state: web::Data<AppState>,
    ctx: WorkspaceCtx,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let (_, shown) = tab_of(&query);
    let mut errors = FieldErrors::new();
    let filter = query.parse(shown, &mut errors);
    let search = search_of(&query, &mut errors);
    if let Some((field, message)) = errors.iter().next() {
        return Err(AppError::Validation(format!(
            "{}: {message}",
            filter_label(field)
        )));
    }
    let workspace = ctx.workspace.id;
    let db = state.db.clone();
    let providers: HashMap<ProviderId, String> = db
        .run(move |conn| Ok(providers::names(conn, workspace)?))
        .await?
        .into_iter()
        .collect();
    let attachment = (
        actix_web::http::header::CONTENT_DISPOSITION,
        "attachment; filename=\"messages.csv\"",
    );
    // A search exports what it shows: its newest matches, at most 100.
    if let Some(search) = search {
        let rows = db
            .run(move |conn| {
                let rows = queries::search(conn, workspace, &filter, &search)?;
                with_sends(conn, workspace, rows)
            })
            .await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(attachment)
            .body(csv_chunk(&rows, &providers, true)?));
    }
    let providers = std::sync::Arc::new(providers);
    // (the keyset cursor, whether the header went out, whether the end was reached)
    let start = (filter, false, false);
    let body = futures_util::stream::unfold(start, move |(filter, header_sent, done)| {
        let (db, providers) = (db.clone(), providers.clone());
        async move {
            if done {
                return None;
            }
            let wanted = filter.clone();
            let rows = db
                .run(move |conn| {
                    let rows = queries::page(conn, workspace, &wanted, EXPORT_CHUNK - 1)?;
                    with_sends(conn, workspace, rows)
                })
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => return Some((Err(e), (filter, true, true))),
            };
            let last = rows.0.len() < usize::try_from(EXPORT_CHUNK).unwrap_or(1_000);
            let next = queries::LogFilter {
                before: rows.0.last().map(|m| m.id),
                ..filter
            };
            let chunk = csv_chunk(&rows, &providers, !header_sent);
            Some((chunk, (next, true, last)))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(attachment)
        .streaming(body))
}
