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
    /// PKCS#8 DER of the private key. Secret: seal it before storing, never render it.
    pub private_pkcs8: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the public key.
    pub public_spki: Vec<u8>,
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
        private_pkcs8: private.as_ref().to_vec(),
        public_spki: public.as_ref().to_vec(),
    })
}

/// The TXT record value that publishes `public_spki` (`v=DKIM1; k=rsa; p=…`), joined.
pub fn record(public_spki: &[u8]) -> String {
    format!("v=DKIM1; k=rsa; p={}", STANDARD.encode(public_spki))
}

/// Most bytes in one character-string of a TXT record (RFC 1035 §3.3).
pub const TXT_STRING_MAX: usize = 255;

/// A record value as the character-strings of one TXT record, each at most 255 bytes
/// (the values are ASCII, so no character is cut). Joined again with nothing between
/// them, as RFC 6376 §3.6.2.2 and RFC 7489 §6.6.3 read them.
pub fn split_txt(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(TXT_STRING_MAX)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect()
}

/// The tags of a DKIM key record (`tag=value; …`, RFC 6376 §3.2), names lowercased and
/// whitespace around them dropped; `None` when a tag is malformed or repeated.
pub fn tags(record: &str) -> Option<Vec<(String, String)>> {
    let mut found: Vec<(String, String)> = Vec::new();
    for part in record.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || found.iter().any(|(n, _)| *n == name) {
            return None;
        }
        found.push((name, value.trim().to_owned()));
    }
    Some(found)
}

/// Whether a record seen in DNS publishes `public_spki`: `v` (if present) is `DKIM1`, `k`
/// (if present) is `rsa`, and `p` holds the key. Whitespace inside `p` is ignored (RFC
/// 6376 §3.6.1 allows folding there) and tag names are case-insensitive; other tags are
/// allowed. The reason when it does not.
pub fn matches(observed: &str, public_spki: &[u8]) -> Result<(), String> {
    let tags = tags(observed).ok_or("the record is not a list of tag=value pairs")?;
    let get = |name: &str| {
        tags.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(v) = get("v")
        && v != "DKIM1"
    {
        return Err(format!("v={v}, expected v=DKIM1"));
    }
    if let Some(k) = get("k")
        && !k.eq_ignore_ascii_case("rsa")
    {
        return Err(format!("k={k}, expected k=rsa"));
    }
    let p = get("p").ok_or("the record has no p= (public key) tag")?;
    let p: String = p.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if p.is_empty() {
        return Err("p= is empty: the key was revoked".into());
    }
    if p != STANDARD.encode(public_spki) {
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
        let pair = KeyPair::from_pkcs8(&key.private_pkcs8).expect("pkcs8");
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
        // Case of tag names, spaces, folded p=, extra tags, no trailing semicolon.
        for ok in [
            format!("v=DKIM1; k=rsa; p={p}"),
            format!("V=DKIM1;K=rsa;P={p};"),
            format!("v=DKIM1; k=rsa; t=s; p={head} {tail}"),
            format!("p={p}"),
        ] {
            assert_eq!(matches(&ok, &spki), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (format!("v=DKIM2; p={p}"), "v=DKIM2"),
            (format!("k=ed25519; p={p}"), "k=ed25519"),
            ("v=DKIM1; k=rsa; p=".to_owned(), "revoked"),
            ("v=DKIM1; k=rsa".to_owned(), "no p="),
            (format!("v=DKIM1; p={p}; p={p}"), "tag=value"),
            ("v=DKIM1; k=rsa; p=AAAA".to_owned(), "different public key"),
        ] {
            let err = matches(&bad, &spki).expect_err(&bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
