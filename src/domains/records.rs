//! The DNS records a workspace publishes for a sending domain (issue 17): the ownership
//! token, the two DKIM keys (active and standby), and DMARC. Each is shown joined and as
//! the 255-byte strings of its TXT record, for a copy button each.

use super::dkim;

/// The label under which the ownership token is published (`_mailroom.<domain>`).
pub const TOKEN_LABEL: &str = "_mailroom";

/// What a record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The ownership token.
    Token,
    /// The DKIM key that signs.
    ActiveKey,
    /// The DKIM key for the next rotation.
    StandbyKey,
    /// The DMARC policy.
    Dmarc,
    /// SPF (advice only).
    Spf,
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What it is for.
    pub kind: RecordKind,
    /// What it is for, in a few words.
    pub purpose: &'static str,
    /// The full name (`mr1._domainkey.example.com`).
    pub name: String,
    /// The value, joined.
    pub value: String,
    /// The value as the character-strings of one TXT record.
    pub strings: Vec<String>,
    /// Whether the domain needs it to be authenticated (the standby key is advised).
    pub required: bool,
}

impl Record {
    fn txt(
        kind: RecordKind,
        purpose: &'static str,
        name: String,
        value: String,
        required: bool,
    ) -> Self {
        Self {
            kind,
            purpose,
            strings: dkim::split_txt(&value),
            name,
            value,
            required,
        }
    }
}

/// A new ownership token: 128 random bits, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The value of the ownership record.
pub fn token_value(token: &str) -> String {
    format!("mailroom-verification={token}")
}

/// The DMARC record recommended when the domain has none: monitoring only (`p=none`),
/// aggregate reports to `rua`, an ASCII address without the characters a DMARC URI list
/// must not hold bare (RFC 7489 §6.2: `;`, `,`, `!`, spaces). Reports to an address on
/// another domain also need that domain's consent record (§7.1).
pub fn recommended_dmarc(rua: &str) -> Result<String, String> {
    let plain = rua.is_ascii()
        && !rua.is_empty()
        && rua.len() <= 200
        && !rua
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || ";,!\"<>\\".contains(c));
    match rua.split_once('@') {
        Some((local, domain)) if plain && !local.is_empty() && domain.contains('.') => {
            Ok(format!("v=DMARC1; p=none; rua=mailto:{rua}"))
        }
        _ => Err(format!(
            "DMARC reports need a plain ASCII address like dmarc@example.com, not {rua:?}"
        )),
    }
}

/// Everything to publish for `domain`: the token, the active and standby DKIM keys (each
/// a selector and its public key), and the recommended DMARC record.
pub fn to_publish(
    domain: &str,
    token: &str,
    active: (&str, &[u8]),
    standby: (&str, &[u8]),
    dmarc_rua: &str,
) -> Result<Vec<Record>, String> {
    let dkim_name = |selector: &str| format!("{selector}._domainkey.{domain}");
    let dmarc = recommended_dmarc(dmarc_rua)?;
    Ok(vec![
        Record::txt(
            RecordKind::Token,
            "Ownership token: proves the domain is yours",
            format!("{TOKEN_LABEL}.{domain}"),
            token_value(token),
            true,
        ),
        Record::txt(
            RecordKind::ActiveKey,
            "DKIM key that signs now",
            dkim_name(active.0),
            dkim::record(active.1),
            true,
        ),
        Record::txt(
            RecordKind::StandbyKey,
            "DKIM key for the next rotation",
            dkim_name(standby.0),
            dkim::record(standby.1),
            false,
        ),
        Record::txt(
            RecordKind::Dmarc,
            "DMARC policy (any valid existing one passes)",
            format!("_dmarc.{domain}"),
            dmarc,
            true,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_publishes_its_token_both_keys_and_dmarc() {
        let active = dkim::generate().expect("key");
        let standby = dkim::generate().expect("key");
        let token = new_token();
        assert_eq!(token.len(), 32);
        assert_ne!(token, new_token(), "random");
        let records = to_publish(
            "example.com",
            &token,
            ("mr1", &active.public_spki),
            ("mr2", &standby.public_spki),
            "dmarc@example.com",
        )
        .expect("records");
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "_mailroom.example.com",
                "mr1._domainkey.example.com",
                "mr2._domainkey.example.com",
                "_dmarc.example.com"
            ]
        );
        assert_eq!(records[0].value, format!("mailroom-verification={token}"));
        assert!(dkim::matches(&records[1].value, &active.public_spki).is_ok());
        assert!(dkim::matches(&records[2].value, &standby.public_spki).is_ok());
        assert!(dkim::matches(&records[2].value, &active.public_spki).is_err());
        assert_eq!(
            records[3].value,
            "v=DMARC1; p=none; rua=mailto:dmarc@example.com"
        );
        assert_eq!(
            records.iter().map(|r| r.required).collect::<Vec<_>>(),
            [true, true, false, true],
            "the standby key is advised, not required"
        );
        for record in &records {
            assert_eq!(record.strings.concat(), record.value);
            assert!(
                record
                    .strings
                    .iter()
                    .all(|s| s.len() <= dkim::TXT_STRING_MAX)
            );
        }
        assert!(records[1].strings.len() >= 2, "a 2048-bit key is split");
    }

    #[test]
    fn the_dmarc_report_address_must_be_plain() {
        for bad in [
            "",
            "dmarc",
            "a;p=reject@x.com",
            "a,b@x.com",
            "a b@x.com",
            "é@x.com",
            "a@x",
            "a\"b@x.com",
            "<a@x.com>",
        ] {
            assert!(recommended_dmarc(bad).is_err(), "{bad:?}");
        }
        assert!(recommended_dmarc("dmarc+reports@example.com").is_ok());
    }
}
