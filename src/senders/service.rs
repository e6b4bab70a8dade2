//! Sender rules: addresses, who may send as what, one-time codes, audit entries. No actix
//! types.

use chrono::{NaiveDateTime, TimeDelta};

use super::model::{NewSender, Sender, SenderId};
use super::queries;
use crate::audit;
use crate::crypto::Sealer;
use crate::db::{self, DbConn};
use crate::domains::model::Domain;
use crate::error::AppError;
use crate::providers::model::Provider;
use crate::workspaces::model::Workspace;
use crate::workspaces::service::Actor;

/// How long a code works.
pub const CODE_LIFETIME: TimeDelta = TimeDelta::minutes(15);
/// Wrong tries a code allows; then a new one must be sent.
pub const CODE_TRIES: i32 = 5;
/// How soon a new code may follow the last.
pub const CODE_RESEND: TimeDelta = TimeDelta::minutes(1);
/// The result of messages cancelled because their sender was deleted.
pub const SENDER_DELETED: &str = "sender deleted";
/// The audit action of a code mailed (never the code).
pub const CODE_MAILED: &str = "sender.code_mailed";
/// Codes a workspace may have mailed in an hour (the code mail reaches addresses the
/// workspace has not proven: it must not be a way to send mail).
pub const CODES_PER_WORKSPACE_HOUR: i64 = 20;
/// Codes one address may be sent in a day: with five tries each, 50 guesses a day of a
/// million codes (deleting the sender and creating it again does not reset it).
pub const CODES_PER_ADDRESS_DAY: i64 = 10;

/// An address as typed, as stored: one plain address (no display name), its domain
/// lower-cased.
pub fn parse_address(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("Enter the address mail will come from, like news@example.com.".into());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("An address cannot hold line breaks or control characters.".into());
    }
    let address: lettre::Address = trimmed.parse().map_err(|_| {
        format!(
            "{} is not an email address like news@example.com.",
            crate::domains::dkim::shown(trimmed)
        )
    })?;
    let domain = crate::domains::service::ascii_domain(address.domain()).ok_or_else(|| {
        format!(
            "{} is not an email address like news@example.com.",
            crate::domains::dkim::shown(trimmed)
        )
    })?;
    Ok(format!("{}@{domain}", address.user()))
}

/// A display name: one line, at most 100 characters.
pub fn parse_name(input: &str) -> Result<String, String> {
    let name = input.trim();
    if name.is_empty() {
        return Err("Enter the name recipients see, like Acme News.".into());
    }
    if name.chars().any(char::is_control) {
        return Err("The name cannot hold line breaks or control characters.".into());
    }
    if name.chars().count() > 100 {
        return Err("At most 100 characters.".into());
    }
    Ok(name.to_owned())
}

/// Whether the workspace may send as `address` through `provider`: its domain is one of
/// the workspace's domains, or it is the account the provider signs in as.
pub fn may_send_as(address: &str, provider: &Provider, domains: &[Domain]) -> Result<(), String> {
    let candidates = crate::domains::service::signing_candidates(address);
    let ours = candidates
        .iter()
        .any(|name| domains.iter().any(|d| &d.name == name));
    if ours || provider.account_address.eq_ignore_ascii_case(address) {
        Ok(())
    } else {
        Err(format!(
            "Add its domain under Domains first, or use {}, the account {} signs in as.",
            provider.account_address, provider.name
        ))
    }
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

/// Stores a sender whose address the provider accepted; an address the workspace already
/// has is a conflict.
pub fn create(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    row: &NewSender,
    provider_name: &str,
) -> Result<SenderId, AppError> {
    if queries::address_taken(conn, workspace.id, &row.address)? {
        return Err(AppError::Conflict(format!(
            "{} is already one of this workspace's senders.",
            row.address
        )));
    }
    let id = queries::insert(conn, row)?;
    audit::record(
        conn,
        entry(
            actor,
            workspace,
            "sender.created",
            &row.address,
            format!("{} through {provider_name}", row.name),
        ),
    )?;
    Ok(id)
}

fn context(sender: &Sender) -> String {
    format!(
        "sender-code:workspace:{}:sender:{}",
        sender.workspace_id.0, sender.id.0
    )
}

/// A new code for `sender`, stored hashed: 6 digits, 15 minutes, 5 tries. Refused within
/// a minute of the last one. Returns the code, to be mailed (never stored or shown).
pub fn new_code(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    sealer: &Sealer,
    sender: &Sender,
    now: NaiveDateTime,
) -> Result<String, AppError> {
    // Serializes code requests of the workspace on PostgreSQL (SQLite's writes are), so
    // requests at once cannot all pass the counts below.
    crate::workspaces::queries::lock_for_update(conn, workspace.id)?;
    // Counted per mailbox whatever the case it was typed in.
    let mailbox = sender.address.to_ascii_lowercase();
    let (hour, day) = queries::codes_mailed_since(
        conn,
        workspace.id,
        &mailbox,
        now - TimeDelta::hours(1),
        now - TimeDelta::days(1),
    )?;
    if hour >= CODES_PER_WORKSPACE_HOUR {
        return Err(AppError::Conflict(format!(
            "This workspace has had {CODES_PER_WORKSPACE_HOUR} codes mailed in the last hour: try again later."
        )));
    }
    if day >= CODES_PER_ADDRESS_DAY {
        return Err(AppError::Conflict(format!(
            "{} has been sent {CODES_PER_ADDRESS_DAY} codes in the last day: try again tomorrow.",
            sender.address
        )));
    }
    let code = format!("{:06}", rand::random_range(0..1_000_000u32));
    let hash = sealer.mac(&code, &context(sender));
    let stored = queries::set_code(
        conn,
        workspace.id,
        sender.id,
        &hash,
        now + CODE_LIFETIME,
        now,
        now - CODE_RESEND,
    )?;
    if stored == 0 {
        return Err(AppError::Conflict(
            "A code was sent less than a minute ago: wait a minute before asking for another."
                .into(),
        ));
    }
    audit::record(
        conn,
        entry(actor, workspace, CODE_MAILED, &mailbox, String::new()),
    )?;
    Ok(code)
}

/// What a code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The address is validated now.
    Validated,
    /// It was already.
    AlreadyValidated,
    /// Not accepted, and why (a wrong try counts).
    Refused(String),
}

/// Checks `code` for `sender`. A wrong code counts a try; after five, or once expired, the
/// code is dead and a new one must be sent. A right code works once.
pub fn verify(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    sealer: &Sealer,
    id: SenderId,
    code: &str,
    now: NaiveDateTime,
) -> Result<Verified, AppError> {
    let sender = queries::find(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    if sender.validated_at.is_some() {
        return Ok(Verified::AlreadyValidated);
    }
    let (Some(hash), Some(expires)) = (&sender.code_hash, sender.code_expires_at) else {
        return Ok(Verified::Refused(
            "No code is waiting: send a new one.".into(),
        ));
    };
    if now >= expires {
        return Ok(Verified::Refused(
            "The code has expired (codes work for 15 minutes): send a new one.".into(),
        ));
    }
    // The try is spent before the code is compared, in one statement: requests at once
    // cannot try more often than allowed.
    if !queries::spend_try(conn, workspace.id, sender.id, hash, CODE_TRIES, now)? {
        return Ok(Verified::Refused(
            "Too many wrong tries: send a new code.".into(),
        ));
    }
    let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let given = sealer.mac(&typed, &context(&sender));
    let right =
        typed.len() == 6 && subtle::ConstantTimeEq::ct_eq(given.as_bytes(), hash.as_bytes()).into();
    if !right || !queries::validate(conn, workspace.id, sender.id, hash, now)? {
        let left = CODE_TRIES - sender.code_tries - 1;
        return Ok(Verified::Refused(if left > 0 {
            format!("That is not the code: {left} tries left.")
        } else {
            "That is not the code, and it was the last try: send a new code.".into()
        }));
    }
    audit::record(
        conn,
        entry(
            actor,
            workspace,
            "sender.validated",
            &sender.address,
            String::new(),
        ),
    )?;
    Ok(Verified::Validated)
}

/// Every sender of the workspace with its provider and what it needs (one read of the
/// senders, providers and domains for all of them).
fn judged(
    conn: &mut DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
) -> Result<Vec<(Sender, Option<Provider>, super::model::Readiness)>, AppError> {
    let senders = queries::list(conn, workspace)?;
    let providers = crate::providers::queries::list_by_workspace(conn, workspace)?;
    let domains = crate::domains::queries::list(conn, workspace)?;
    Ok(senders
        .into_iter()
        .map(|sender| {
            let provider = providers
                .iter()
                .find(|p| Some(p.id) == sender.provider_id)
                .cloned();
            let readiness = super::model::Readiness::of(&sender, provider.as_ref(), &domains);
            (sender, provider, readiness)
        })
        .collect())
}

/// The workspace's senders as listed (the senders page and the overview): each with its
/// provider's name, what it needs, and the email sent as it.
pub fn rows(
    conn: &mut DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
) -> Result<Vec<super::model::SenderRow>, AppError> {
    let counts = queries::sent_counts(conn, workspace)?;
    Ok(judged(conn, workspace)?
        .into_iter()
        .map(|(sender, provider, readiness)| super::model::SenderRow {
            readiness,
            provider: provider.map(|p| p.name),
            sent: counts
                .iter()
                .find(|(id, _)| *id == sender.id)
                .map_or(0, |(_, n)| *n),
            sender,
        })
        .collect())
}

/// The workspace's senders that may send now, each with its provider, by name.
pub fn ready_senders(
    conn: &mut DbConn,
    workspace: &Workspace,
) -> Result<Vec<(Sender, Provider)>, AppError> {
    Ok(judged(conn, workspace.id)?
        .into_iter()
        .filter_map(|(sender, provider, readiness)| readiness.ready.then_some((sender, provider?)))
        .collect())
}

/// The sender a send goes out as: the workspace's, and ready (its address validated, its
/// domain authenticated or it is its provider's own account, its provider green). The
/// error names `field`.
pub fn ready_sender(
    conn: &mut DbConn,
    workspace: &Workspace,
    id: SenderId,
    field: &'static str,
) -> Result<crate::messages::service::FromSender, AppError> {
    let sender = queries::find(conn, workspace.id, id)?.ok_or_else(|| AppError::Invalid {
        field,
        message: "No such sender in this workspace.".into(),
    })?;
    let provider = match sender.provider_id {
        Some(p) => crate::providers::queries::find_by_workspace_and_id(conn, workspace.id, p)?,
        None => None,
    };
    let domains = crate::domains::queries::list(conn, workspace.id)?;
    let readiness = super::model::Readiness::of(&sender, provider.as_ref(), &domains);
    match provider {
        Some(provider) if readiness.ready => {
            Ok(crate::messages::service::FromSender::of(&sender, provider))
        }
        _ => Err(AppError::Invalid {
            field,
            message: format!(
                "{} cannot send yet: {}",
                sender.address,
                readiness.next_step()
            ),
        }),
    }
}

/// Deletes a sender: its messages not yet sent are cancelled ("sender deleted"); what was
/// sent keeps its history. Returns the sender and how many were cancelled.
pub fn delete(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: SenderId,
) -> Result<(Sender, usize), AppError> {
    let sender = queries::find(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    let cancelled = queries::cancel_unsent(conn, workspace.id, id, SENDER_DELETED, db::now())?;
    queries::delete(conn, workspace.id, id)?;
    audit::record(
        conn,
        entry(
            actor,
            workspace,
            "sender.deleted",
            &sender.address,
            format!("{cancelled} unsent messages cancelled"),
        ),
    )?;
    Ok((sender, cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_one_plain_address_with_a_lower_case_domain() {
        assert_eq!(
            parse_address(" News@Example.COM "),
            Ok("News@example.com".into())
        );
        assert_eq!(
            parse_address("news@bücher.example"),
            Ok("news@xn--bcher-kva.example".into())
        );
        for bad in [
            "",
            "news",
            "Ann <ann@example.com>",
            "a@b.c\r\nBcc: x@y.z",
            "a b@example.com",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
        assert!(parse_name("Acme\r\nBcc: x@y.z").is_err());
        assert!(parse_name(&"x".repeat(101)).is_err());
        assert_eq!(parse_name(" Acme News "), Ok("Acme News".into()));
    }
}
