//! Provider rules: unique names, sealed passwords that are cleared when the server or
//! account they were given for changes, check outcomes, audit entries. No actix types.

use super::model::*;
use super::queries;
use super::smtp::{Endpoint, SmtpFailure};
use crate::audit;
use crate::crypto::Sealer;
use crate::db::{self, DbConn};
use crate::error::AppError;
use crate::workspaces::model::Workspace;
use crate::workspaces::service::Actor;

/// What saving a provider did to its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOutcome {
    /// A new password was stored.
    Replaced,
    /// The stored one was kept.
    Kept,
    /// The server or account changed and no new password came: the old one was cleared.
    Cleared,
    /// There is none (none given, none stored).
    Absent,
}

fn entry(
    actor: &Actor<'_>,
    workspace: &Workspace,
    action: &str,
    target: &str,
    detail: String,
) -> audit::model::NewAuditEntry {
    let mut entry = audit::entry(action, Some(actor.user), actor.ip);
    entry.workspace_id = Some(workspace.id.0);
    entry.target = target.to_owned();
    entry.detail = detail;
    entry
}

fn ensure_name_free(
    conn: &mut DbConn,
    workspace: &Workspace,
    name: &str,
    except: Option<ProviderId>,
) -> Result<(), AppError> {
    if queries::name_taken(conn, workspace.id, name, except)? {
        return Err(AppError::Conflict(format!(
            "Another provider is already called {name:?}."
        )));
    }
    Ok(())
}

/// Creates a provider; `sealed` is the sealed password, if one was typed.
pub fn create(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    settings: &Settings,
    sealed: Option<&str>,
) -> Result<ProviderId, AppError> {
    ensure_name_free(conn, workspace, &settings.name, None)?;
    let now = db::now();
    let id = queries::insert(
        conn,
        &ProviderRow::from_settings(workspace.id, settings, now),
        sealed,
        now,
    )?;
    let detail = format!(
        "{} {}:{} ({})",
        settings.kind.label(),
        settings.host,
        settings.port,
        settings.tls.as_str()
    );
    audit::record(
        conn,
        entry(actor, workspace, "provider.created", &settings.name, detail),
    )?;
    Ok(id)
}

/// Updates a provider. A new password replaces the stored one; without one, the stored
/// password is kept unless host, port, TLS mode or username changed, in which case it is
/// cleared (it must never be sent to a server it was not given for).
pub fn update(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: ProviderId,
    settings: &Settings,
    sealed: Option<&str>,
) -> Result<SecretOutcome, AppError> {
    let old =
        queries::find_by_workspace_and_id(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    ensure_name_free(conn, workspace, &settings.name, Some(id))?;
    let (secret, outcome) = match (sealed, old.secret.as_deref()) {
        (Some(new), _) => (Some(new), SecretOutcome::Replaced),
        (None, Some(_)) if settings.endangers_secret_of(&old) => (None, SecretOutcome::Cleared),
        (None, Some(kept)) => (Some(kept), SecretOutcome::Kept),
        (None, None) => (None, SecretOutcome::Absent),
    };
    let detail = if outcome == SecretOutcome::Cleared {
        "The server settings changed, so the stored password was cleared: enter it again."
    } else {
        ""
    };
    queries::update(
        conn,
        id,
        &ProviderRow::from_settings(workspace.id, settings, db::now()),
        secret,
        detail,
    )?;
    let what = match outcome {
        SecretOutcome::Replaced => "password replaced",
        SecretOutcome::Kept => "password kept",
        SecretOutcome::Cleared => "password cleared (server settings changed)",
        SecretOutcome::Absent => "no password",
    };
    let detail = format!(
        "{}:{} ({}), {what}",
        settings.host,
        settings.port,
        settings.tls.as_str()
    );
    audit::record(
        conn,
        entry(actor, workspace, "provider.updated", &settings.name, detail),
    )?;
    Ok(outcome)
}

/// Records a check's outcome on the provider. A provider that turns red alerts the
/// workspace's admins through the system provider; returns whether it did.
pub fn record_check(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: ProviderId,
    outcome: &Result<String, SmtpFailure>,
    system_from: &str,
) -> Result<bool, AppError> {
    let was = queries::find_by_workspace_and_id(conn, workspace.id, id)?;
    let (status, detail) = match outcome {
        Ok(detail) => (Status::Active, detail.as_str()),
        Err(failure) => (Status::Error, failure.detail.as_str()),
    };
    queries::update_status(conn, workspace.id, id, status, detail, db::now())?;
    match was.filter(Provider::is_active) {
        Some(was) if status == Status::Error => {
            let text = format!(
                "The provider {} turned red when it was checked:\n\n{detail}\n\nIt cannot send until it checks green again.",
                was.name
            );
            let subject = format!("Provider {} turned red", was.name);
            crate::delivery::alerts::notify_admins(
                conn,
                workspace.id,
                system_from,
                &subject,
                &text,
            )?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Deletes a provider.
pub fn delete(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: ProviderId,
) -> Result<Provider, AppError> {
    let provider =
        queries::find_by_workspace_and_id(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    let cancelled =
        crate::delivery::queries::cancel_for_provider(conn, workspace.id, id, db::now())?;
    if cancelled > 0 {
        tracing::info!(cancelled, provider = %provider.name, "unsent messages of a deleted provider cancelled");
    }
    queries::delete(conn, workspace.id, id)?;
    audit::record(
        conn,
        entry(
            actor,
            workspace,
            "provider.deleted",
            &provider.name,
            String::new(),
        ),
    )?;
    Ok(provider)
}

/// Where and how to reach a stored provider, with its password opened.
pub fn endpoint(provider: &Provider, sealer: &Sealer) -> Result<Endpoint, AppError> {
    let password = provider
        .secret
        .as_deref()
        .map(|sealed| sealer.open(sealed, &Provider::seal_context(provider.workspace_id)))
        .transpose()
        .map_err(|e| AppError::Unexpected(e.into()))?;
    Ok(Endpoint {
        host: provider.host.clone(),
        port: u16::try_from(provider.port).unwrap_or(587),
        tls: provider.tls(),
        username: provider.username.clone(),
        password,
    })
}

/// Like [`endpoint`], for a check: a stored password that cannot be opened (the secret key
/// changed) counts as none, so the check turns the provider red with "no password is
/// stored" instead of failing the request.
pub fn endpoint_for_check(provider: &Provider, sealer: &Sealer) -> Endpoint {
    endpoint(provider, sealer).unwrap_or_else(|e| {
        tracing::warn!(provider = %provider.name, error = %e, "stored provider password cannot be decrypted");
        Endpoint {
            host: provider.host.clone(),
            port: u16::try_from(provider.port).unwrap_or(587),
            tls: provider.tls(),
            username: provider.username.clone(),
            password: None,
        }
    })
}
