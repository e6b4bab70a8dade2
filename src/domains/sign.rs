//! DKIM signatures (RFC 6376): `rsa-sha256`, relaxed/relaxed, made with `aws-lc-rs` (the
//! library `dkim` generates keys with; on this machine it signs RSA-2048 as fast as
//! `openssl speed`).
//!
//! Signing is canonicalization, two SHA-256 hashes and one RSA signature; the
//! canonicalization is the few rules of RFC 6376 §3.4.2 and §3.4.4, written here rather
//! than taken from a crate whose RSA support would bring a second TLS provider and a
//! platform certificate verifier into the binary. The tests check every signature with
//! `mail-auth`, an independent verifier, against a real DNS server.

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The headers every signature covers, in this order. A header a message lacks is signed
/// as absent (RFC 6376 §5.4: nobody can add it later without breaking the signature);
/// `List-Unsubscribe` and `List-Unsubscribe-Post` are signed whenever present, as RFC 8058
/// §4 requires.
pub const SIGNED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot DKIM-sign: {0}")]
pub struct SignError(String);

/// A domain's signing key, ready to sign (load it once, sign many times).
pub struct Signer {
    domain: String,
    selector: String,
    key: KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `d=domain; s=selector` with the PKCS#8 private key.
    pub fn new(domain: &str, selector: &str, pkcs8: &[u8]) -> Result<Self, SignError> {
        let key = KeyPair::from_pkcs8(pkcs8).map_err(|e| SignError(format!("the key: {e}")))?;
        Ok(Self {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key,
        })
    }

    /// The domain it signs for (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `header` is a signature this signer's key made (its `d=` and `s=`).
    pub fn made(&self, header: &str) -> bool {
        header.contains(&format!("; d={}; s={};", self.domain, self.selector))
    }

    /// The `DKIM-Signature` header field for `message` (headers, CRLF CRLF, body), folded
    /// into lines well under 998 characters and ending in CRLF, to put in front of it.
    /// `timestamp` is the `t=` tag (seconds since the epoch).
    pub fn sign(&self, message: &[u8], timestamp: i64) -> Result<String, SignError> {
        let (headers, body) = split(message);
        let body_hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &relaxed_body(body));
        let fields = header_fields(headers);
        let mut signed = Vec::with_capacity(1024);
        let mut names = Vec::new();
        // Each name once per instance present (bottom-up, §5.4.2), and once more so that
        // an instance added later breaks the signature.
        let mut used = vec![false; fields.len()];
        for name in SIGNED_HEADERS {
            let mut instances: Vec<usize> = fields
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                .map(|(i, _)| i)
                .collect();
            instances.reverse();
            for i in instances {
                if !used[i] {
                    used[i] = true;
                    relaxed_header(&mut signed, fields[i].0, fields[i].1);
                    names.push(*name);
                }
            }
            names.push(*name);
        }
        let value = format!(
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d={}; s={}; t={timestamp};\r\n\th={};\r\n\tbh={}; b=",
            self.domain,
            self.selector,
            names.join(":"),
            STANDARD.encode(body_hash.as_ref()),
        );
        let mut own = Vec::with_capacity(value.len() + 20);
        relaxed_header(&mut own, "dkim-signature", value.as_bytes());
        // The signature's own header goes in without its final CRLF (§3.7).
        own.truncate(own.len() - 2);
        signed.extend_from_slice(&own);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, &signed, &mut signature)
            .map_err(|e| SignError(e.to_string()))?;
        let b = STANDARD.encode(&signature);
        let mut header = format!("DKIM-Signature: {value}");
        for (i, chunk) in b.as_bytes().chunks(76).enumerate() {
            if i > 0 {
                header.push_str("\r\n\t");
            }
            header.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        }
        header.push_str("\r\n");
        Ok(header)
    }
}

/// The header block (with its final CRLF) and the body.
fn split(message: &[u8]) -> (&[u8], &[u8]) {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&message[..at + 2], &message[at + 4..]),
        None => (message, &[]),
    }
}

/// Each header field as (name, raw value with its folding, without the final CRLF).
fn header_fields(headers: &[u8]) -> Vec<(&str, &[u8])> {
    let mut fields: Vec<(&str, &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        if headers[i] == b'\n' {
            let next = headers.get(i + 1);
            // A line that does not continue the field (no leading space or tab) ends it.
            if !matches!(next, Some(b' ' | b'\t')) {
                let line = &headers[start..i.saturating_sub(1).max(start)];
                if let Some(colon) = line.iter().position(|&b| b == b':')
                    && let Ok(name) = std::str::from_utf8(&line[..colon])
                {
                    fields.push((name.trim_end(), &line[colon + 1..]));
                }
                start = i + 1;
            }
        }
        i += 1;
    }
    fields
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Relaxed header canonicalization (§3.4.2): the name lower-cased, the value unfolded,
/// runs of whitespace as one space, none at either end; `name:value` CRLF.
fn relaxed_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend(name.trim().bytes().map(|b| b.to_ascii_lowercase()));
    out.push(b':');
    let mut pending_space = false;
    let mut wrote = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b if is_wsp(b) => pending_space = true,
            b => {
                if pending_space && wrote {
                    out.push(b' ');
                }
                pending_space = false;
                wrote = true;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Relaxed body canonicalization (§3.4.4): whitespace at line ends removed, runs of
/// whitespace inside a line as one space, empty lines at the end removed; a body that is
/// not empty ends in CRLF.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut empty_lines = 0usize;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let last = lines.peek().is_none();
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if last && line.is_empty() {
            break; // what follows the final CRLF
        }
        let mut canonical = Vec::with_capacity(line.len());
        let mut pending_space = false;
        for &b in line {
            if is_wsp(b) {
                pending_space = true;
            } else {
                if pending_space {
                    canonical.push(b' ');
                }
                pending_space = false;
                canonical.push(b);
            }
        }
        if canonical.is_empty() {
            empty_lines += 1;
            continue;
        }
        for _ in 0..empty_lines {
            out.extend_from_slice(b"\r\n");
        }
        empty_lines = 0;
        out.extend_from_slice(&canonical);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalization_follows_the_rfc_example() {
        // RFC 6376 §3.4.5.
        let mut out = Vec::new();
        relaxed_header(&mut out, "A", b" X");
        relaxed_header(&mut out, "B ", b" Y\t\r\n\tZ  ");
        assert_eq!(out, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        assert_eq!(relaxed_body(b"no end"), b"no end\r\n");
        assert_eq!(relaxed_body(b"a\r\n\r\nb\r\n"), b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn fields_are_read_with_their_folding() {
        let headers = b"From: a@x.test\r\nSubject: one\r\n two\r\nTo:b@x.test\r\n";
        let fields = header_fields(headers);
        assert_eq!(
            fields,
            vec![
                ("From", &b" a@x.test"[..]),
                ("Subject", &b" one\r\n two"[..]),
                ("To", &b"b@x.test"[..]),
            ]
        );
    }

    #[test]
    fn a_signature_verifies_with_the_published_key_and_fits_on_the_wire() {
        let key = crate::domains::dkim::generate().expect("key");
        let signer = Signer::new("example.test", "mr1", key.private_pkcs8()).expect("signer");
        let message = b"From: Ann <ann@example.test>\r\nTo: bob@example.com\r\nSubject: Hi\r\nDate: Tue, 8 Dec 2026 02:00:00 +0000\r\n\r\nHello.\r\n";
        let header = signer.sign(message, 1_800_000_000).expect("signed");
        assert!(header.starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=mr1; t=1800000000;"));
        assert!(
            header.contains("h=from:from:to:to:cc:reply-to:subject:subject:date:date:"),
            "{header}"
        );
        let mut signed = header.clone().into_bytes();
        signed.extend_from_slice(message);
        crate::delivery::build::check_wire(&signed).expect("lines end in CRLF, none too long");
        // The signature is the RSA signature of the canonical headers and its own header.
        let b: String = header
            .split("b=")
            .last()
            .expect("b=")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let signature = STANDARD.decode(b).expect("base64");
        let mut input = Vec::new();
        for (name, value) in [
            ("from", &b" Ann <ann@example.test>"[..]),
            ("to", b" bob@example.com"),
            ("subject", b" Hi"),
            ("date", b" Tue, 8 Dec 2026 02:00:00 +0000"),
        ] {
            relaxed_header(&mut input, name, value);
        }
        let unsigned = &header["DKIM-Signature:".len()..header.rfind("b=").expect("b=") + 2];
        relaxed_header(&mut input, "dkim-signature", unsigned.as_bytes());
        input.truncate(input.len() - 2);
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            {
                use aws_lc_rs::signature::KeyPair as _;
                KeyPair::from_pkcs8(key.private_pkcs8())
                    .expect("key")
                    .public_key()
                    .as_ref()
                    .to_vec()
            },
        );
        public.verify(&input, &signature).expect("verifies");
    }
}
