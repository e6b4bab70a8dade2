//! Domain rules: names, selectors, keys sealed at rest, what a check does to a domain's
//! state, rotation, audit entries and alerts. No actix types.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{NaiveDateTime, TimeDelta};

use super::model::{Domain, DomainId, NewDomain, Report, Verdict};
use super::{dkim, queries, records};
use crate::audit;
use crate::crypto::Sealer;
use crate::db::{self, DbConn};
use crate::error::AppError;
use crate::workspaces::model::Workspace;
use crate::workspaces::service::Actor;

/// How long a required record must stay definitely wrong, seen by two checks, before an
/// authenticated domain loses its authentication (a DNS change in flight or one bad
/// answer never stops sending).
pub const GRACE: TimeDelta = TimeDelta::hours(1);

/// The default selectors: the first signs, the second waits for the next rotation.
pub const DEFAULT_SELECTORS: (&str, &str) = ("mr1", "mr2");

/// A domain name as typed, as stored: lower-case ASCII (an internationalized name as its
/// A-labels), no trailing dot, at least two labels of letters, digits and inner hyphens.
pub fn parse_name(input: &str) -> Result<String, String> {
    let trimmed = input.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("Enter the domain your senders' addresses end with, like example.com.".into());
    }
    if trimmed.contains('@') {
        return Err("Enter the domain only (example.com), not an address.".into());
    }
    let ascii = match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(ascii)) => ascii.to_ascii_lowercase(),
        Ok(_) => return Err("An IP address cannot be a sending domain.".into()),
        Err(_) => return Err(format!("{} is not a domain name.", dkim::shown(trimmed))),
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if ascii.len() > 253
        || labels.len() < 2
        || !labels.iter().all(label_ok)
        || labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{} is not a domain name: use letters, digits and hyphens, like mail.example.com.",
            dkim::shown(trimmed)
        ));
    }
    Ok(ascii)
}

/// A DKIM selector: one DNS label (letters, digits, inner hyphens), lower-cased.
pub fn parse_selector(input: &str) -> Result<String, String> {
    let s = input.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s)
    } else {
        Err("A selector is one DNS label: letters, digits and inner hyphens, like mr1.".into())
    }
}

/// The domains whose key may sign mail from `address`, most specific first: its own
/// domain, then each parent with at least two labels (`a@mail.example.com` is signed as
/// `mail.example.com`, or else as `example.com`; DMARC's relaxed alignment accepts both).
pub fn signing_candidates(address: &str) -> Vec<String> {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return Vec::new();
    };
    let Some(domain) = ascii_domain(domain.trim_end_matches('>')) else {
        return Vec::new();
    };
    let labels: Vec<&str> = domain.split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|skip| labels[skip..].join("."))
        .collect()
}

/// A domain as DNS and the domains table write it: lower-case ASCII, an internationalized
/// name as its A-labels (`bücher.example` → `xn--bcher-kva.example`); `None` for what is
/// not a domain name.
pub fn ascii_domain(domain: &str) -> Option<String> {
    match url::Host::parse(domain.trim().trim_end_matches('.')) {
        Ok(url::Host::Domain(ascii)) => Some(ascii.to_ascii_lowercase()),
        _ => None,
    }
}

/// A generated key, sealed for storing: (public base64 SPKI, sealed PKCS#8).
pub fn seal_key(sealer: &Sealer, key: &dkim::DkimKey, context: &str) -> (String, String) {
    let private = zeroize::Zeroizing::new(STANDARD.encode(key.private_pkcs8()));
    (
        STANDARD.encode(&key.public_spki),
        sealer.seal(&private, context),
    )
}

/// What the form asked for, parsed.
#[derive(Debug, Clone)]
pub struct NewDomainSpec {
    /// The domain.
    pub name: String,
    /// The signing selector.
    pub active_selector: String,
    /// The standby selector.
    pub standby_selector: String,
    /// DMARC report address.
    pub dmarc_rua: String,
}

/// Generates the token and both keys (CPU work: call it off the async threads) and the
/// row to store.
pub fn prepare(
    sealer: &Sealer,
    workspace: &Workspace,
    spec: &NewDomainSpec,
    now: NaiveDateTime,
) -> Result<NewDomain, AppError> {
    let context = Domain::seal_context(workspace.id, &spec.name);
    let generate = || dkim::generate().map_err(|e| AppError::Unexpected(e.into()));
    let (active_public, active_private) = seal_key(sealer, &generate()?, &context);
    let (standby_public, standby_private) = seal_key(sealer, &generate()?, &context);
    Ok(NewDomain {
        workspace_id: workspace.id,
        name: spec.name.clone(),
        token: records::new_token(),
        active_selector: spec.active_selector.clone(),
        active_public,
        active_private,
        standby_selector: spec.standby_selector.clone(),
        standby_public,
        standby_private,
        dmarc_rua: spec.dmarc_rua.clone(),
        authenticated: false,
        checks: String::new(),
        created_at: now,
        updated_at: now,
    })
}

fn entry(
    actor: Option<&Actor<'_>>,
    workspace: &Workspace,
    action: &str,
    target: &str,
    detail: String,
) -> audit::model::NewAuditEntry {
    let mut entry = match actor {
        Some(actor) => audit::entry(action, Some(actor.user), actor.ip),
        None => audit::entry(action, None, ""),
    };
    entry.workspace_id = Some(workspace.id.0);
    entry.target = target.to_owned();
    entry.detail = detail;
    entry
}

/// Stores a prepared domain; a name the workspace already has is a conflict.
pub fn create(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    row: &NewDomain,
) -> Result<DomainId, AppError> {
    if queries::find_by_name(conn, workspace.id, &row.name)?.is_some() {
        return Err(AppError::Conflict(format!(
            "{} is already one of this workspace's domains.",
            row.name
        )));
    }
    let id = queries::insert(conn, row)?;
    audit::record(
        conn,
        entry(
            Some(actor),
            workspace,
            "domain.added",
            &row.name,
            format!(
                "DKIM selectors {} (active) and {} (standby)",
                row.active_selector, row.standby_selector
            ),
        ),
    )?;
    Ok(id)
}

/// What a check changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// Every required record passed: the domain is authenticated now.
    Authenticated,
    /// An authenticated domain's required record was definitely wrong for the first time
    /// (still authenticated; the next check an hour or more later decides).
    FailingOnce,
    /// Wrong twice an hour apart: no longer authenticated.
    Lost,
}

/// The state after a check: (authenticated, failing since, what changed). Only a
/// definite failure counts; a check without answers (timeout, SERVFAIL) changes nothing.
pub fn transition(
    authenticated: bool,
    failing_since: Option<NaiveDateTime>,
    report: &Report,
    now: NaiveDateTime,
) -> (bool, Option<NaiveDateTime>, Change) {
    if report.authenticates() {
        let change = if authenticated {
            Change::None
        } else {
            Change::Authenticated
        };
        return (true, None, change);
    }
    if !authenticated || !report.definitely_fails() {
        return (authenticated, failing_since, Change::None);
    }
    match failing_since {
        None => (true, Some(now), Change::FailingOnce),
        Some(since) if now - since >= GRACE => (false, None, Change::Lost),
        Some(since) => (true, Some(since), Change::None),
    }
}

/// Records a check's report and applies its consequences: audit entries for every change
/// of state, and an alert to the admins when the domain loses its authentication.
/// `actor` is `None` for the background re-check. Returns the change (and whether alerts
/// were queued, to wake the engine).
pub fn record_check(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: Option<&Actor<'_>>,
    looked_up: &Domain,
    report: &Report,
    system_from: &str,
) -> Result<(Change, bool), AppError> {
    let domain = queries::find(conn, workspace.id, looked_up.id)?.ok_or(AppError::NotFound)?;
    // Rotated while its records were being looked up: the report is about other keys.
    if domain.active_public != looked_up.active_public
        || domain.standby_public != looked_up.standby_public
    {
        return Err(AppError::Conflict(format!(
            "The keys of {} were rotated during the check: check again.",
            domain.name
        )));
    }
    let id = domain.id;
    let now = db::now();
    let (authenticated, failing_since, change) =
        transition(domain.authenticated, domain.failing_since, report, now);
    let json = serde_json::to_string(report).map_err(|e| AppError::Unexpected(e.into()))?;
    queries::record_check(
        conn,
        workspace.id,
        id,
        &json,
        authenticated,
        failing_since,
        now,
    )?;
    let failed: Vec<String> = report
        .records
        .iter()
        .filter(|r| r.required && r.verdict == Verdict::Fail)
        .map(|r| format!("{}: {}", r.name, r.reason))
        .collect();
    // Mail held while the domain was not authenticated goes out now.
    // Mail held while the domain was not authenticated goes out now; at every check that
    // finds it authenticated, not only at the change (a message held while this check
    // ran is released by the next).
    let released = if authenticated {
        crate::messages::service::release_for_domain(conn, workspace, &domain.name)?
    } else {
        0
    };
    let (action, detail) = match change {
        Change::None => return Ok((change, released > 0)),
        Change::Authenticated => (
            "domain.authenticated",
            "every required record passed".to_owned(),
        ),
        Change::FailingOnce => (
            "domain.failing",
            format!(
                "still authenticated; checked again after an hour: {}",
                failed.join("; ")
            ),
        ),
        Change::Lost => ("domain.unauthenticated", failed.join("; ")),
    };
    audit::record(
        conn,
        entry(actor, workspace, action, &domain.name, detail.clone()),
    )?;
    if released > 0 {
        return Ok((change, true)); // wake the engine
    }
    if change == Change::Lost {
        let subject = format!("Domain {} is no longer authenticated", domain.name);
        let text = format!(
            "Two checks an hour apart found the DNS records of {} wrong:\n\n{}\n\nIts senders cannot send, and mail from it already queued is held, until the records pass again (Domains, Check domain).",
            domain.name,
            failed.join("\n")
        );
        crate::delivery::alerts::notify_admins(conn, workspace.id, system_from, &subject, &text)?;
        return Ok((change, true));
    }
    Ok((change, false))
}

/// Whether `domain`'s keys may rotate: the last check, made since the last rotation, saw
/// the standby key published. Why not, when not.
pub fn may_rotate(domain: &Domain) -> Result<(), String> {
    let standby_name = format!("{}._domainkey.{}", domain.standby_selector, domain.name);
    let published = domain
        .report()
        .and_then(|r| r.record(&standby_name).map(|c| c.verdict == Verdict::Pass))
        .unwrap_or(false);
    // A check made before the last rotation is about other keys.
    let current = domain
        .checked_at
        .is_some_and(|checked| checked >= domain.updated_at);
    if published && current {
        Ok(())
    } else {
        Err(format!(
            "Publish the standby key at {standby_name} and check the domain first: rotating to an unpublished key would make receivers reject the signatures."
        ))
    }
}

/// Rotates the keys: the standby key signs from now on, and a fresh standby (sealed, made
/// by the caller off the async threads) takes the old active key's selector. Refused
/// until the last check saw the standby key published, so rotating never stops signing.
pub fn rotate(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: DomainId,
    fresh: (String, String),
) -> Result<Domain, AppError> {
    let domain = queries::find(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    may_rotate(&domain).map_err(AppError::Conflict)?;
    queries::rotate(
        conn,
        workspace.id,
        id,
        (
            domain.standby_selector.clone(),
            domain.standby_public.clone(),
            domain.standby_private.clone(),
        ),
        (domain.active_selector.clone(), fresh.0, fresh.1),
        db::now(),
    )?;
    audit::record(
        conn,
        entry(
            Some(actor),
            workspace,
            "domain.rotated",
            &domain.name,
            format!(
                "{} signs now; a new standby key waits at {}",
                domain.standby_selector, domain.active_selector
            ),
        ),
    )?;
    queries::find(conn, workspace.id, id)?.ok_or(AppError::NotFound)
}

/// Deletes a domain.
pub fn delete(
    conn: &mut DbConn,
    workspace: &Workspace,
    actor: &Actor<'_>,
    id: DomainId,
) -> Result<Domain, AppError> {
    let domain = queries::find(conn, workspace.id, id)?.ok_or(AppError::NotFound)?;
    // What it held goes back to the queue: the engine decides again without it.
    crate::messages::service::release_for_domain(conn, workspace, &domain.name)?;
    queries::delete(conn, workspace.id, id)?;
    audit::record(
        conn,
        entry(
            Some(actor),
            workspace,
            "domain.deleted",
            &domain.name,
            String::new(),
        ),
    )?;
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::model::RecordCheck;

    #[test]
    fn mail_is_signed_by_its_own_domain_or_a_parent() {
        assert_eq!(
            signing_candidates("ann@Mail.Example.com"),
            ["mail.example.com", "example.com"]
        );
        assert_eq!(signing_candidates("ann@example.com"), ["example.com"]);
        assert_eq!(
            signing_candidates("ann@Bücher.example"),
            ["xn--bcher-kva.example"],
            "an internationalized domain as its A-labels"
        );
        assert!(signing_candidates("ann@localhost").is_empty());
        assert!(signing_candidates("nobody").is_empty());
    }

    #[test]
    fn names_are_stored_as_lower_case_ascii() {
        assert_eq!(
            parse_name(" Mail.Example.COM. "),
            Ok("mail.example.com".into())
        );
        assert_eq!(
            parse_name("bücher.example"),
            Ok("xn--bcher-kva.example".into())
        );
        for bad in [
            "",
            "example",
            "ann@example.com",
            "1.2.3.4",
            "-a.example",
            "a_b.example",
            "a..b",
            "x.123",
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_selector("MR1"), Ok("mr1".into()));
        assert!(parse_selector("a.b").is_err());
        assert!(parse_selector("").is_err());
    }

    fn report(verdicts: &[(bool, Verdict)]) -> Report {
        Report {
            records: verdicts
                .iter()
                .enumerate()
                .map(|(i, (required, verdict))| RecordCheck {
                    purpose: String::new(),
                    name: format!("r{i}"),
                    expected: String::new(),
                    observed: Vec::new(),
                    verdict: *verdict,
                    reason: String::new(),
                    required: *required,
                    nameserver: None,
                    at: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_definite_failure_seen_twice_an_hour_apart_unauthenticates() {
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .expect("time")
            .naive_utc();
        let ok = (true, Verdict::Pass);
        let pass = report(&[ok, ok, ok, (false, Verdict::Warn)]);
        let fail = report(&[(true, Verdict::Fail), ok, ok, (false, Verdict::Pass)]);
        let silent = report(&[(true, Verdict::Warn), ok, ok]);
        // A report missing a required record never authenticates.
        assert!(!report(&[ok, ok]).authenticates());
        assert!(!report(&[]).authenticates());
        assert_eq!(
            transition(false, None, &pass, t0),
            (true, None, Change::Authenticated)
        );
        assert_eq!(
            transition(true, None, &pass, t0),
            (true, None, Change::None)
        );
        assert_eq!(
            transition(false, None, &fail, t0),
            (false, None, Change::None)
        );
        // Timeouts and SERVFAIL never count.
        assert_eq!(
            transition(true, None, &silent, t0),
            (true, None, Change::None)
        );
        assert_eq!(
            transition(true, None, &fail, t0),
            (true, Some(t0), Change::FailingOnce)
        );
        let soon = t0 + TimeDelta::minutes(59);
        assert_eq!(
            transition(true, Some(t0), &fail, soon),
            (true, Some(t0), Change::None)
        );
        let later = t0 + GRACE;
        assert_eq!(
            transition(true, Some(t0), &fail, later),
            (false, None, Change::Lost)
        );
        // Passing again in between forgets the first failure.
        assert_eq!(
            transition(true, Some(t0), &pass, soon),
            (true, None, Change::None)
        );
    }
}
