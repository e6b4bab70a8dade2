//! Per-request SMTP: the hidden provider an API call's own `smtp` settings become.

use super::*;
use crate::error::AppError;
use crate::providers::model::{Provider, ProviderId};
use crate::providers::queries as providers;
use crate::state::AppState;

/// The hidden provider for a call's own SMTP settings: only when the workspace allows
/// them, only to public hosts on SMTP ports (the per-request egress policy); reused for
/// the same server, port, TLS mode and user (a new password replaces the sealed one, and
/// its pool is rebuilt). A workspace has at most `per_request_smtp_limit` of them: past
/// it, the least recently changed one with nothing left to send is replaced (deleted: its
/// history stays, and its failed messages can no longer be retried, so no mail moves to
/// another server), or the call is refused with 429.
pub(super) async fn per_request_provider(
    state: &AppState,
    workspace: &crate::workspaces::model::Workspace,
    smtp: &SmtpOverride,
    from: &str,
) -> Result<Provider, AppError> {
    use crate::providers::model::{Kind, ProviderRow, Settings, TlsMode};
    if !workspace.per_request_smtp {
        return Err(AppError::field(
            "smtp",
            "Per-request SMTP is off for this workspace; an admin can turn it on under API keys.",
        ));
    }
    let server = smtp.server.trim().to_owned();
    state
        .per_request_egress
        .resolve(&server, smtp.port)
        .await
        .map_err(|e| {
            let field = match e {
                crate::providers::egress::EgressError::Refused(ref why)
                    if why.starts_with("port ") =>
                {
                    "smtp.port"
                }
                _ => "smtp.server",
            };
            AppError::field(field, e.to_string())
        })?;
    let tls = smtp
        .tls
        .as_deref()
        .and_then(TlsMode::parse)
        .unwrap_or(TlsMode::StartTls);
    let username = smtp.user.clone().unwrap_or_default();
    let settings = Settings {
        name: match username.as_str() {
            "" => format!("API SMTP {server}:{} ({})", smtp.port, tls.as_str()),
            user => format!("API SMTP {user}@{server}:{} ({})", smtp.port, tls.as_str()),
        },
        kind: Kind::Smtp,
        host: server,
        port: smtp.port,
        tls,
        region: None,
        username,
        account_address: from.trim().to_owned(),
        from_name: String::new(),
        max_connections: 2,
        per_second: None,
        per_minute: None,
        per_hour: None,
        receive_enabled: false,
        imap_host: None,
        imap_port: None,
    };
    let context = Provider::seal_context(workspace.id);
    let sealed = smtp
        .password
        .as_deref()
        .map(|password| state.sealer.seal(password, &context));
    let (sealer, password, workspace) = (
        state.sealer.clone(),
        smtp.password.clone(),
        workspace.clone(),
    );
    let limit = state.settings.per_request_smtp_limit;
    let provider = state
        .db
        .write(move |conn| {
            let now = crate::db::now();
            // Finding, counting and inserting under the workspace's lock: parallel calls
            // can neither each see room under the limit nor each insert the same settings
            // (PostgreSQL; SQLite writes one transaction at a time).
            crate::workspaces::queries::lock_for_update(conn, workspace.id)?;
            let existing = providers::find_per_request(
                conn,
                workspace.id,
                &settings.host,
                settings.port,
                settings.tls,
                &settings.username,
            )?;
            let id = match existing {
                Some(found) => {
                    let stored = found
                        .secret
                        .as_deref()
                        .and_then(|s| sealer.open(s, &context).ok());
                    if stored != password {
                        providers::set_secret(conn, found.id, sealed.as_deref(), now)?;
                    }
                    found.id
                }
                None => {
                    if providers::count_per_request(conn, workspace.id)? >= i64::from(limit) {
                        let Some(idle) = idle_per_request(conn, workspace.id)? else {
                            return Ok(None);
                        };
                        let gone = providers::find_by_workspace_and_id(conn, workspace.id, idle)?
                            .map(|p| p.name)
                            .unwrap_or_default();
                        providers::delete(conn, workspace.id, idle)?;
                        let mut entry =
                            crate::audit::entry("provider.per_request_replaced", None, "api");
                        entry.workspace_id = Some(workspace.id.0);
                        entry.target = gone;
                        entry.detail = format!(
                            "replaced by {} (at most {limit} per-request SMTP servers)",
                            settings.name
                        );
                        crate::audit::record(conn, entry)?;
                    }
                    let id = providers::insert_per_request(
                        conn,
                        &ProviderRow::from_settings(workspace.id, &settings, now),
                        sealed.as_deref(),
                        now,
                    )?;
                    let mut entry = crate::audit::entry("provider.per_request", None, "api");
                    entry.workspace_id = Some(workspace.id.0);
                    entry.target = settings.name.clone();
                    entry.detail = "SMTP settings of an API call".into();
                    crate::audit::record(conn, entry)?;
                    id
                }
            };
            providers::find_by_workspace_and_id(conn, workspace.id, id)
                .map_err(AppError::from)?
                .ok_or(AppError::NotFound)
                .map(Some)
        })
        .await?
        .ok_or_else(|| AppError::Limited {
            message: format!(
                "This workspace already has {limit} per-request SMTP servers (the limit, MAILROOM_PER_REQUEST_SMTP_LIMIT), each with mail still to send; retry once one of them has sent its mail, or use a provider."
            ),
            retry_after: 60,
        })?;
    // Its From is the call's: the provider's account follows the latest call.
    Ok(Provider {
        account_address: from.trim().to_owned(),
        ..provider
    })
}

/// The least recently changed per-request provider of the workspace with nothing left to
/// send, locked (a message being stored for it meanwhile either committed before, and is
/// seen here, or fails on its foreign key after).
fn idle_per_request(
    conn: &mut crate::db::DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
) -> Result<Option<ProviderId>, AppError> {
    for id in providers::list_per_request(conn, workspace)? {
        if providers::lock(conn, id)? && !providers::has_unfinished(conn, id)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
