//! Judging what DNS answered for each record of a domain: pass, warn or fail, with the
//! reason. No DNS here (`dns` asks); every rule is a pure function of the answer.
//!
//! TXT records are read as RFC 6376 §3.6.2.2 and RFC 7489 §6.6.3 say: the strings of one
//! record joined with nothing between them. Whitespace DNS tools add around tags and the
//! case of tag names where the RFCs allow it never fail a check.

use chrono::NaiveDateTime;

use super::dkim;
use super::model::{RecordCheck, Verdict};
use super::records::{Record, RecordKind};

/// What a nameserver said about the TXT records at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The records, each as its character-strings.
    Records(Vec<Vec<String>>),
    /// Definitely none: NXDOMAIN, or the name has no TXT records.
    Missing(String),
    /// No answer to go by: timeout, SERVFAIL, refused.
    NoAnswer(String),
}

/// One lookup: the answer, who gave it, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The answer.
    pub answer: Answer,
    /// The nameserver that answered (`host:port`), or the last one asked.
    pub nameserver: Option<String>,
    /// When.
    pub at: NaiveDateTime,
}

/// Records shown on the page: at most this many per name, each at most `SHOWN_MAX` chars.
const SHOWN_RECORDS: usize = 10;
const SHOWN_MAX: usize = 1_024;

/// Each record joined, as shown: control characters as `?`, long ones cut.
fn joined(records: &[Vec<String>]) -> Vec<String> {
    records
        .iter()
        .take(SHOWN_RECORDS)
        .map(|strings| {
            let value = strings.concat();
            let mut shown: String = value
                .chars()
                .take(SHOWN_MAX)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            if value.chars().count() > SHOWN_MAX {
                shown.push('…');
            }
            shown
        })
        .collect()
}

fn check(
    record: &Record,
    lookup: &Lookup,
    verdict: Verdict,
    reason: impl Into<String>,
) -> RecordCheck {
    let observed = match &lookup.answer {
        Answer::Records(records) => joined(records),
        _ => Vec::new(),
    };
    // An advised record that is missing or wrong is a warning, never a failure.
    let (verdict, reason) = match verdict {
        Verdict::Fail if record.kind == RecordKind::StandbyKey => (
            Verdict::Warn,
            format!(
                "{} Publish it before rotating keys; sending does not need it.",
                reason.into()
            ),
        ),
        Verdict::Fail if !record.required => (Verdict::Warn, reason.into()),
        other => (other, reason.into()),
    };
    RecordCheck {
        purpose: record.purpose.to_owned(),
        name: record.name.clone(),
        expected: record.value.clone(),
        observed,
        verdict,
        reason,
        required: record.required,
        nameserver: lookup.nameserver.clone(),
        at: lookup
            .at
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The shared cases: no answer is a warning, a missing name a failure; `Some` records to
/// judge otherwise.
fn records_of(record: &Record, lookup: &Lookup) -> Result<Vec<String>, Box<RecordCheck>> {
    match &lookup.answer {
        Answer::Records(records) => Ok(records.iter().map(|s| s.concat()).collect()),
        Answer::Missing(why) => Err(Box::new(check(
            record,
            lookup,
            Verdict::Fail,
            format!("No TXT record at {} ({why}).", record.name),
        ))),
        Answer::NoAnswer(why) => Err(Box::new(check(
            record,
            lookup,
            Verdict::Warn,
            format!("No answer from DNS ({why}); this is not counted as a failure."),
        ))),
    }
}

/// The ownership token: one of the records at `_mailroom.<domain>` is
/// `mailroom-verification=<token>` (case and surrounding space do not matter).
pub fn token(record: &Record, lookup: &Lookup) -> RecordCheck {
    let found = match records_of(record, lookup) {
        Ok(found) => found,
        Err(done) => return *done,
    };
    if found
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case(&record.value))
    {
        return check(record, lookup, Verdict::Pass, "The token is published.");
    }
    let other = found
        .iter()
        .find(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("mailroom-verification=")
        })
        .map(|v| dkim::shown(v.trim()));
    let reason = match other {
        Some(other) => format!("{other} is not this domain's token."),
        None => "No record here says mailroom-verification=….".to_owned(),
    };
    check(record, lookup, Verdict::Fail, reason)
}

/// A DKIM key: exactly one TXT record at the selector, publishing this key.
pub fn dkim_key(record: &Record, public_spki: &[u8], lookup: &Lookup) -> RecordCheck {
    let found = match records_of(record, lookup) {
        Ok(found) => found,
        Err(done) => return *done,
    };
    let outcome = match found.as_slice() {
        [] => Err("No TXT record at the selector.".to_owned()),
        [one] => {
            dkim::matches(one, public_spki).map_err(|why| format!("The record is wrong: {why}."))
        }
        many => Err(format!(
            "{} TXT records at the selector: a receiver may read any of them, keep only this one.",
            many.len()
        )),
    };
    match outcome {
        Ok(()) => check(record, lookup, Verdict::Pass, "The key is published."),
        Err(why) => check(record, lookup, Verdict::Fail, why),
    }
}

/// A DMARC policy record's tags, names lower-cased (RFC 7489 tag names are
/// case-insensitive), or why it is not one.
fn dmarc_tags(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    for part in value.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (name, tag_value) = part
            .split_once('=')
            .ok_or_else(|| format!("{} is not a tag=value pair", dkim::shown(part.trim())))?;
        tags.push((
            name.trim().to_ascii_lowercase(),
            tag_value.trim().to_owned(),
        ));
    }
    Ok(tags)
}

/// Whether a record is a DMARC record at all: its first tag is `v=DMARC1` (records that
/// are not are discarded, RFC 7489 §6.6.3).
fn is_dmarc(value: &str) -> bool {
    dmarc_tags(value)
        .ok()
        .and_then(|tags| tags.into_iter().next())
        .is_some_and(|(name, version)| name == "v" && version == "DMARC1")
}

/// DMARC: exactly one record at `_dmarc.<domain>`, with a valid policy (any: an existing
/// `p=reject` passes as well as the recommended `p=none`).
pub fn dmarc(record: &Record, lookup: &Lookup) -> RecordCheck {
    let found = match records_of(record, lookup) {
        Ok(found) => found,
        Err(done) => return *done,
    };
    let policies: Vec<&String> = found.iter().filter(|v| is_dmarc(v)).collect();
    let one = match policies.as_slice() {
        [] => {
            return check(
                record,
                lookup,
                Verdict::Fail,
                "No record here starts with v=DMARC1: publish the recommended one.",
            );
        }
        [one] => one,
        many => {
            return check(
                record,
                lookup,
                Verdict::Fail,
                format!(
                    "{} DMARC records: receivers ignore DMARC when there is more than one (RFC 7489 §6.6.3). Keep one.",
                    many.len()
                ),
            );
        }
    };
    let tags = match dmarc_tags(one) {
        Ok(tags) => tags,
        Err(why) => {
            return check(
                record,
                lookup,
                Verdict::Fail,
                format!("The record is malformed: {why}."),
            );
        }
    };
    let policy = tags.iter().find(|(name, _)| name == "p").map(|(_, v)| v);
    match policy {
        Some(p) if ["none", "quarantine", "reject"].contains(&p.to_ascii_lowercase().as_str()) => {
            check(
                record,
                lookup,
                Verdict::Pass,
                format!(
                    "A DMARC policy is published (p={}).",
                    p.to_ascii_lowercase()
                ),
            )
        }
        Some(p) => check(
            record,
            lookup,
            Verdict::Fail,
            format!(
                "p={} is not a policy: use none, quarantine or reject.",
                dkim::shown(p)
            ),
        ),
        None => check(
            record,
            lookup,
            Verdict::Fail,
            "The record has no p= policy.",
        ),
    }
}

/// What an SPF record should include for one of the workspace's providers: the
/// `include:` domain of a known service, or `None` for a plain SMTP server (whose host
/// the record must authorize some other way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfHint {
    /// The provider's name.
    pub provider: String,
    /// The domain its SPF includes.
    pub include: Option<String>,
    /// The provider's SMTP host.
    pub host: String,
}

/// SPF, as advice only: does the domain's SPF record let the workspace's providers send?
pub fn spf(domain: &str, hints: &[SpfHint], lookup: &Lookup) -> RecordCheck {
    let includes: Vec<&str> = hints.iter().filter_map(|h| h.include.as_deref()).collect();
    let expected = if includes.is_empty() {
        "v=spf1 … ~all (authorizing your providers' servers)".to_owned()
    } else {
        let mut unique = includes.clone();
        unique.sort_unstable();
        unique.dedup();
        format!(
            "v=spf1 {} ~all",
            unique
                .iter()
                .map(|d| format!("include:{d}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let record = Record {
        kind: RecordKind::Spf,
        purpose: "SPF (advice: not needed to authenticate)",
        name: domain.to_owned(),
        value: expected,
        strings: Vec::new(),
        required: false,
    };
    let found = match records_of(&record, lookup) {
        Ok(found) => found,
        Err(done) => return *done,
    };
    let spf: Vec<&String> = found
        .iter()
        .filter(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "v=spf1" || v.starts_with("v=spf1 ")
        })
        .collect();
    let one = match spf.as_slice() {
        [] => {
            return check(
                &record,
                lookup,
                Verdict::Warn,
                "No SPF record: DKIM alone satisfies DMARC, but some receivers also want SPF.",
            );
        }
        [one] => one.to_ascii_lowercase(),
        many => {
            return check(
                &record,
                lookup,
                Verdict::Warn,
                format!(
                    "{} SPF records: receivers treat that as an error (RFC 7208 §4.5). Merge them.",
                    many.len()
                ),
            );
        }
    };
    let terms: Vec<&str> = one.split_ascii_whitespace().collect();
    let missing: Vec<&SpfHint> = hints
        .iter()
        .filter(|h| {
            h.include.as_deref().is_some_and(|d| {
                !terms
                    .iter()
                    .any(|t| t.trim_start_matches(['+', '~', '?']) == format!("include:{d}"))
            })
        })
        .collect();
    let plain: Vec<String> = hints
        .iter()
        .filter(|h| h.include.is_none())
        .map(|h| h.host.clone())
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|h| {
                format!(
                    "{} (include:{})",
                    h.provider,
                    h.include.as_deref().unwrap_or("")
                )
            })
            .collect();
        return check(
            &record,
            lookup,
            Verdict::Warn,
            format!("The SPF record does not include {}.", names.join(", ")),
        );
    }
    let reason = if plain.is_empty() {
        "The SPF record includes every provider.".to_owned()
    } else {
        format!(
            "An SPF record is published; make sure it authorizes {}.",
            plain.join(", ")
        )
    };
    check(&record, lookup, Verdict::Pass, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .expect("time")
            .naive_utc()
    }

    fn found(records: &[&[&str]]) -> Lookup {
        Lookup {
            answer: Answer::Records(
                records
                    .iter()
                    .map(|r| r.iter().map(|s| (*s).to_owned()).collect())
                    .collect(),
            ),
            nameserver: Some("127.0.0.1:53".into()),
            at: at(),
        }
    }

    fn answer(answer: Answer) -> Lookup {
        Lookup {
            answer,
            nameserver: Some("127.0.0.1:53".into()),
            at: at(),
        }
    }

    fn record(value: &str, required: bool) -> Record {
        Record {
            kind: RecordKind::Token,
            purpose: "test",
            name: "x.example.com".into(),
            value: value.into(),
            strings: dkim::split_txt(value),
            required,
        }
    }

    #[test]
    fn the_token_passes_among_other_records_whatever_its_case() {
        let r = record("mailroom-verification=abc123", true);
        let ok = token(
            &r,
            &found(&[
                &["google-site-verification=x"],
                &[" Mailroom-Verification=ABC123 "],
            ]),
        );
        assert_eq!(ok.verdict, Verdict::Pass, "{}", ok.reason);
        assert_eq!(ok.observed.len(), 2);
        let wrong = token(&r, &found(&[&["mailroom-verification=zzz"]]));
        assert_eq!(wrong.verdict, Verdict::Fail);
        assert!(
            wrong.reason.contains("not this domain's token"),
            "{}",
            wrong.reason
        );
        let missing = token(&r, &answer(Answer::Missing("NXDOMAIN".into())));
        assert_eq!(missing.verdict, Verdict::Fail);
        assert!(missing.reason.contains("NXDOMAIN"));
        let silent = token(&r, &answer(Answer::NoAnswer("timed out".into())));
        assert_eq!(silent.verdict, Verdict::Warn, "a timeout never fails");
    }

    #[test]
    fn a_dkim_key_split_over_strings_passes_and_two_records_fail() {
        let key = b"some public key bytes".to_vec();
        let value = dkim::record(&key);
        let r = record(&value, true);
        let (a, b) = value.split_at(12);
        assert_eq!(
            dkim_key(&r, &key, &found(&[&[a, b]])).verdict,
            Verdict::Pass
        );
        let two = dkim_key(&r, &key, &found(&[&[&value], &[&value]]));
        assert_eq!(two.verdict, Verdict::Fail);
        assert!(two.reason.contains("2 TXT records"), "{}", two.reason);
        let other = dkim_key(&r, b"other", &found(&[&[&value]]));
        assert!(
            other.reason.contains("different public key"),
            "{}",
            other.reason
        );
        // The standby key is advised: wrong or missing is a warning.
        let standby = Record {
            kind: RecordKind::StandbyKey,
            ..record(&value, false)
        };
        let missing = dkim_key(&standby, &key, &answer(Answer::Missing("NXDOMAIN".into())));
        assert_eq!(missing.verdict, Verdict::Warn);
        assert!(
            missing.reason.contains("before rotating"),
            "{}",
            missing.reason
        );
        let wrong = dkim_key(&standby, b"other", &found(&[&[&value]]));
        assert_eq!(wrong.verdict, Verdict::Warn);
        assert!(wrong.reason.contains("before rotating"), "{}", wrong.reason);
    }

    #[test]
    fn any_valid_dmarc_policy_passes_and_two_records_fail() {
        let r = record("v=DMARC1; p=none; rua=mailto:d@example.com", true);
        for ok in [
            "v=DMARC1; p=reject",
            "v=DMARC1;p=Quarantine;pct=50",
            " V = DMARC1 ; P=none ",
        ] {
            let c = dmarc(&r, &found(&[&["spf-ish other record"], &[ok]]));
            assert_eq!(c.verdict, Verdict::Pass, "{ok}: {}", c.reason);
        }
        let two = dmarc(
            &r,
            &found(&[&["v=DMARC1; p=none"], &["v=DMARC1; p=reject"]]),
        );
        assert_eq!(two.verdict, Verdict::Fail);
        assert!(two.reason.contains("more than one"), "{}", two.reason);
        for (bad, why) in [
            ("v=DMARC1; p=maybe", "not a policy"),
            ("v=DMARC1; rua=mailto:x@y.z", "no p="),
            ("p=none; v=DMARC1", "starts with v=DMARC1"),
            ("v=dmarc1; p=none", "starts with v=DMARC1"),
        ] {
            let c = dmarc(&r, &found(&[&[bad]]));
            assert_eq!(c.verdict, Verdict::Fail, "{bad}");
            assert!(c.reason.contains(why), "{bad}: {}", c.reason);
        }
        let split = dmarc(&r, &found(&[&["v=DMARC1; ", "p=none"]]));
        assert_eq!(split.verdict, Verdict::Pass, "strings joined");
    }

    #[test]
    fn spf_is_advice_naming_what_is_missing() {
        let hints = [
            SpfHint {
                provider: "Ops".into(),
                include: Some("amazonses.com".into()),
                host: "email-smtp.eu-west-1.amazonaws.com".into(),
            },
            SpfHint {
                provider: "Relay".into(),
                include: None,
                host: "smtp.example.com".into(),
            },
        ];
        let ok = spf(
            "example.com",
            &hints,
            &found(&[&["v=spf1 include:amazonses.com -all"]]),
        );
        assert_eq!(ok.verdict, Verdict::Pass);
        assert!(ok.reason.contains("smtp.example.com"), "{}", ok.reason);
        assert!(!ok.required);
        let missing = spf("example.com", &hints, &found(&[&["v=spf1 mx -all"]]));
        assert_eq!(missing.verdict, Verdict::Warn);
        assert!(
            missing.reason.contains("Ops (include:amazonses.com)"),
            "{}",
            missing.reason
        );
        let none = spf(
            "example.com",
            &hints,
            &answer(Answer::Missing("NXDOMAIN".into())),
        );
        assert_eq!(none.verdict, Verdict::Warn, "advice never fails");
    }

    #[test]
    fn a_hostile_record_is_shown_short_and_without_control_characters() {
        let long = format!("<b>\u{7}{}", "x".repeat(5_000));
        let c = token(
            &record("mailroom-verification=a", true),
            &found(&[&[&long]]),
        );
        assert!(c.observed[0].chars().count() <= SHOWN_MAX + 1);
        assert!(!c.observed[0].contains('\u{7}'));
    }
}
