//! `mailroom bench delivery --dkim`: the bench workspace's domain authenticated (no DNS:
//! the row is stored as checked), and the reference the figures are read against — the
//! RSA-2048 signing rate of the library Mailroom signs with, on one core and on all, and
//! `openssl speed rsa2048` on one core, all measured in the same run.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::crypto::Sealer;
use crate::db::{self, Db};
use crate::domains::model::{Domain, NewDomain};
use crate::domains::{dkim, queries, service};
use crate::workspaces::model::WorkspaceId;

/// Stores `example.com` (the bench's From domain) as authenticated in `workspace`, keys
/// sealed with `sealer` (the engine's). Returns the signing key's PKCS#8, for the
/// reference.
pub(super) async fn authenticate(
    database: &Db,
    workspace: WorkspaceId,
    sealer: &Sealer,
) -> anyhow::Result<Vec<u8>> {
    let context = Domain::seal_context(workspace, "example.com");
    let active = dkim::generate()?;
    let standby = dkim::generate()?;
    let (active_public, active_private) = service::seal_key(sealer, &active, &context);
    let (standby_public, standby_private) = service::seal_key(sealer, &standby, &context);
    let now = db::now();
    let row = NewDomain {
        workspace_id: workspace,
        name: "example.com".into(),
        token: crate::domains::records::new_token(),
        active_selector: "mr1".into(),
        active_public,
        active_private,
        standby_selector: "mr2".into(),
        standby_public,
        standby_private,
        dmarc_rua: "dmarc@example.com".into(),
        authenticated: true,
        checks: String::new(),
        created_at: now,
        updated_at: now,
    };
    database
        .write(move |conn| Ok(queries::insert(conn, &row)?))
        .await?;
    Ok(active.private_pkcs8().to_vec())
}

/// Signing rates measured in this run.
pub(super) struct SigningRates {
    /// The library's signatures a second on one core.
    pub single_core: f64,
    /// On every core at once.
    pub all_cores: f64,
    /// `openssl speed rsa2048` on one core, when installed.
    pub openssl: Option<f64>,
}

impl SigningRates {
    /// The figures for the final line.
    pub fn line(&self) -> String {
        let openssl = match self.openssl {
            Some(o) => format!(
                "openssl_rsa2048_signs_per_s={o:.0} lib_vs_openssl={:.2}",
                self.single_core / o
            ),
            None => "openssl=not-installed".into(),
        };
        format!(
            "lib_signs_per_s_1core={:.0} lib_signs_per_s_all_cores={:.0} {openssl}",
            self.single_core, self.all_cores
        )
    }
}

/// Signatures a second with `pkcs8` for `window`, on `threads` threads at once.
fn sign_rate(pkcs8: &[u8], threads: usize, window: Duration) -> anyhow::Result<f64> {
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = std::sync::Arc::new(key);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let key = key.clone();
                scope.spawn(move || {
                    let rng = aws_lc_rs::rand::SystemRandom::new();
                    let mut signature = vec![0; key.public_modulus_len()];
                    let mut n = 0u64;
                    while started.elapsed() < window {
                        // What a message's signature signs: about 400 bytes of headers.
                        if key
                            .sign(
                                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                                &rng,
                                &[b'x'; 400],
                                &mut signature,
                            )
                            .is_ok()
                        {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).collect()
    });
    Ok(counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64())
}

/// `openssl speed -seconds 3 rsa2048`: its sign/s on one core, or `None` when openssl is
/// not installed.
fn openssl_speed() -> anyhow::Result<Option<f64>> {
    let output = match std::process::Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.context("running openssl speed")?,
    };
    // The summary line: `rsa 2048 bits 0.000282s 0.000008s   3546.1 120481.9`.
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| {
            l.trim_start().starts_with("rsa 2048 bits")
                || l.trim_start().starts_with("rsa  2048 bits")
        })
        .context("openssl speed printed no rsa 2048 line")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sign_per_s = fields
        .iter()
        .rev()
        .nth(1)
        .and_then(|f| f.parse::<f64>().ok())
        .context("openssl speed's rsa 2048 line has no sign/s")?;
    Ok(Some(sign_per_s))
}

/// The reference figures, measured now.
pub(super) fn signing_rates(pkcs8: &[u8]) -> anyhow::Result<SigningRates> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = Duration::from_secs(3);
    Ok(SigningRates {
        single_core: sign_rate(pkcs8, 1, window)?,
        all_cores: sign_rate(pkcs8, cores, window)?,
        openssl: openssl_speed()?,
    })
}
