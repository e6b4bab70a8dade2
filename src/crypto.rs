//! Secrets at rest: provider passwords are sealed with ChaCha20-Poly1305 (RFC 8439) under a
//! key derived from the instance's secret key with HKDF-SHA256 (RFC 5869), bound to their
//! workspace as associated data, so a sealed value copied to another workspace's row does
//! not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Prefix of the stored form, naming the scheme for a later rotation.
const VERSION: &str = "v1:";

/// Seals and opens secrets.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// Key of [`Sealer::mac`].
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

/// A sealed value could not be opened (wrong key, wrong workspace, or corrupted).
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (was the secret key changed?)")]
pub struct OpenError;

impl Sealer {
    /// A sealer whose key is derived from the instance secret for `purpose`.
    pub fn new(instance_secret: &[u8], purpose: &str) -> Self {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"mailroom"), instance_secret)
            .expand(purpose.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut mac_key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"mailroom"), instance_secret)
            .expand(format!("{purpose}: mac").as_bytes(), &mut mac_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            mac_key,
        }
    }

    /// HMAC-SHA256 of `value` bound to `context`, hex: how short secrets (one-time codes)
    /// are stored, so a copy of the database alone cannot try every code offline.
    pub fn mac(&self, value: &str, context: &str) -> String {
        use hkdf::hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key)
            .expect("HMAC takes a key of any length");
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals `plain` bound to `context` (e.g. `workspace:7`).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory input");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!(
            "{VERSION}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// Opens what [`Sealer::seal`] made with the same context.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, OpenError> {
        let encoded = stored.strip_prefix(VERSION).ok_or(OpenError)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| OpenError)?;
        if bytes.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

/// A fresh random token (256 bits, URL-safe): one-time links, CSRF, the setup token.
pub fn token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let sealer = Sealer::new(&[7u8; 64], "provider secrets v1");
        let sealed = sealer.seal("hunter2", "workspace:1");
        assert!(sealed.starts_with("v1:") && !sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            sealer.seal("hunter2", "workspace:1"),
            "a fresh nonce each time"
        );
        assert_eq!(
            sealer.open(&sealed, "workspace:1").expect("opens"),
            "hunter2"
        );
        assert!(
            sealer.open(&sealed, "workspace:2").is_err(),
            "bound to its workspace"
        );
        assert!(
            Sealer::new(&[8u8; 64], "provider secrets v1")
                .open(&sealed, "workspace:1")
                .is_err()
        );
        assert!(
            Sealer::new(&[7u8; 64], "other purpose")
                .open(&sealed, "workspace:1")
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(sealer.open(&tampered, "workspace:1").is_err());
    }
}
