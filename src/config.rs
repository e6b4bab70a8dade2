//! Settings: an optional `mailroom.toml`, overridden by `MAILROOM_*` environment variables.
//! Every setting is documented in the README's configuration table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Names of the settings, as keys of `mailroom.toml` and (upper-cased, `MAILROOM_` prefix)
/// environment variables. Other `MAILROOM_*` variables (tests, CI) are not settings.
const KEYS: &[&str] = &[
    "bind",
    "database_url",
    "data_dir",
    "secret_key",
    "public_url",
    "log",
    "log_format",
    "pool_size",
    "workers",
    "session_ttl_hours",
    "secure_cookies",
    "trust_forwarded_for",
    "trusted_proxies",
    "egress_allow",
    "per_request_smtp_allow",
    "per_request_smtp_ports",
    "per_request_smtp_limit",
    "smtp_ca_file",
    "smtp_timeout_secs",
    "retry_count",
    "retry_base_secs",
    "lease_secs",
    "delivery_batch",
    "delivery_in_flight",
    "metrics_token",
    "system_from",
    "system_smtp_host",
    "dns_servers",
    "system_smtp_port",
    "system_smtp_tls",
    "system_smtp_username",
    "system_smtp_password",
    "attachment_limit_mb",
    "body_retention_days",
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// All settings of a Mailroom process. Its `Debug` never shows the secrets.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the console listens on.
    pub bind: String,
    /// `sqlite://path` or `postgres://…`; default `sqlite://<data_dir>/mailroom.db`.
    pub database_url: Option<String>,
    /// Directory for the SQLite database and the generated secret key.
    pub data_dir: PathBuf,
    /// 128 hex characters (64 bytes); generated into `<data_dir>/secret.key` when absent.
    pub secret_key: Option<String>,
    /// The URL users reach the console at (e.g. `https://mail.example.com`): used in
    /// one-time links, the Origin check and to decide whether cookies are `Secure`.
    pub public_url: Option<String>,
    /// Log filter in `tracing` syntax (e.g. `info`, `mailroom=debug`).
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Database connections in the pool.
    pub pool_size: u32,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// How long a sign-in lasts without activity that changes the session.
    pub session_ttl_hours: u32,
    /// Force the `Secure` cookie flag on or off; default: on when `public_url` is https.
    pub secure_cookies: Option<bool>,
    /// Take the client address from `X-Forwarded-For` (only behind a
    /// reverse proxy that sets it); otherwise the TCP peer is the client.
    pub trust_forwarded_for: bool,
    /// Comma-separated CIDRs of the reverse proxies whose `X-Forwarded-For` entries are
    /// believed (with `trust_forwarded_for`): the client is the rightmost address that is
    /// not one of them. Default: loopback.
    pub trusted_proxies: String,
    /// Comma-separated CIDRs that providers' SMTP/IMAP hosts may resolve to even though
    /// the egress policy refuses them by default (loopback, link-local, metadata), e.g.
    /// `127.0.0.1/32` for a local relay.
    pub egress_allow: String,
    /// Comma-separated CIDRs that per-request SMTP servers (an API call's own `smtp`
    /// settings) may resolve to although they are private, shared, unique-local or
    /// refused by the egress policy.
    pub per_request_smtp_allow: String,
    /// Ports per-request SMTP may use besides 25, 465, 587 and 2525: comma-separated
    /// numbers or ranges (`2500-2599`).
    pub per_request_smtp_ports: String,
    /// Per-request SMTP servers a workspace may have at once; past it, one with nothing
    /// queued is replaced, or the call is refused with 429.
    pub per_request_smtp_limit: u32,
    /// A PEM file of certificate authorities to trust for TLS to SMTP servers besides the
    /// public web roots (a private relay's own CA).
    pub smtp_ca_file: Option<PathBuf>,
    /// Connect, TLS and each SMTP reply must come within this many seconds.
    pub smtp_timeout_secs: u64,
    /// Retries a message gets by default after a temporary failure (4xx, timeout, dropped
    /// connection); the composer may choose another count per message.
    pub retry_count: i32,
    /// First retry delay in seconds; it doubles each attempt (±25 % jitter, at most 1 h).
    pub retry_base_secs: u64,
    /// How long a node holds a claimed message without renewing; after that, another node
    /// (or the next start) takes it over.
    pub lease_secs: u64,
    /// Messages claimed per transaction.
    pub delivery_batch: i64,
    /// Messages claimed and not yet recorded, at most.
    pub delivery_in_flight: usize,
    /// Bearer token that `/metrics` requires; unset, `/metrics` answers 404.
    pub metrics_token: Option<String>,
    /// From address of the mail Mailroom sends itself (alerts, codes).
    pub system_from: String,
    /// The operator's SMTP server for that mail; unset, it is written as `.eml` files into
    /// `<data_dir>/outbox/`.
    pub system_smtp_host: Option<String>,
    /// Its port.
    pub system_smtp_port: u16,
    /// Nameservers that domain checks ask, comma-separated `ip:port` (port 53 when left
    /// out); empty: the system's (`/etc/resolv.conf`).
    pub dns_servers: String,
    /// `starttls`, `tls` or `none`.
    pub system_smtp_tls: String,
    /// Its username (empty: no AUTH).
    pub system_smtp_username: String,
    /// Its password.
    pub system_smtp_password: Option<String>,
    /// Total size of the files attached to one compose, in MB.
    pub attachment_limit_mb: usize,
    /// Delete message contents (text, HTML, files) older than this many days, keeping each
    /// message's record; 0 keeps them forever.
    pub body_retention_days: u32,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field(
                "database_url",
                &self.database_url.as_deref().map(|u| {
                    crate::db::DbTarget::parse(u)
                        .map(|t| t.masked())
                        .unwrap_or_default()
                }),
            )
            .field("data_dir", &self.data_dir)
            .field("secret_key", &hidden(&self.secret_key))
            .field("public_url", &self.public_url)
            .field("metrics_token", &hidden(&self.metrics_token))
            .field("system_smtp_host", &self.system_smtp_host)
            .field("system_smtp_password", &hidden(&self.system_smtp_password))
            .finish_non_exhaustive()
    }
}

/// Database connections for requests: two per CPU core, at least four. The database's
/// work is CPU-bound, so more connections only queue there, and take CPU time from the
/// delivery engine (measured on 2 cores, 32 clients on the history page: with 10
/// connections the engine sent 111 messages a second of the 1,000 it was allowed; with 4,
/// all of them, and the history's p99 stayed under 100 ms).
fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    u32::try_from(cores * 2).unwrap_or(u32::MAX).max(4)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: None,
            data_dir: PathBuf::from("./data"),
            secret_key: None,
            public_url: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            pool_size: default_pool_size(),
            workers: 0,
            session_ttl_hours: 12,
            secure_cookies: None,
            trust_forwarded_for: false,
            trusted_proxies: "127.0.0.0/8, ::1/128".into(),
            egress_allow: String::new(),
            per_request_smtp_allow: String::new(),
            per_request_smtp_ports: String::new(),
            per_request_smtp_limit: 10,
            smtp_ca_file: None,
            smtp_timeout_secs: 15,
            retry_count: 3,
            retry_base_secs: 60,
            lease_secs: 120,
            delivery_batch: 500,
            delivery_in_flight: 2_000,
            metrics_token: None,
            system_from: "mailroom@localhost".into(),
            system_smtp_host: None,
            system_smtp_port: 587,
            dns_servers: String::new(),
            system_smtp_tls: "starttls".into(),
            system_smtp_username: String::new(),
            system_smtp_password: None,
            attachment_limit_mb: 10,
            body_retention_days: 0,
        }
    }
}

impl Settings {
    /// The egress policy these settings describe: allowed ranges and trusted CAs.
    pub fn egress_policy(&self) -> Result<crate::providers::egress::EgressPolicy, ConfigError> {
        let policy = crate::providers::egress::EgressPolicy::parse(&self.egress_allow)
            .map_err(|why| bad("egress_allow", why))?;
        match &self.smtp_ca_file {
            Some(path) => policy
                .trusting_pem_file(path)
                .map_err(|why| bad("smtp_ca_file", why)),
            None => Ok(policy),
        }
    }

    /// The policy for per-request SMTP servers (see
    /// [`EgressPolicy::for_per_request`](crate::providers::egress::EgressPolicy::for_per_request)).
    pub fn per_request_policy(
        &self,
        egress: &crate::providers::egress::EgressPolicy,
    ) -> Result<crate::providers::egress::EgressPolicy, ConfigError> {
        egress
            .for_per_request(&self.per_request_smtp_allow, "")
            .map_err(|why| bad("per_request_smtp_allow", why))?;
        egress
            .for_per_request(&self.per_request_smtp_allow, &self.per_request_smtp_ports)
            .map_err(|why| bad("per_request_smtp_ports", why))
    }

    /// The nameservers domain checks ask (`dns_servers`); empty: the system's.
    pub fn dns_servers(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.dns_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        bad(
                            "dns_servers",
                            format!("{s:?} is not a nameserver address like 192.0.2.53:53 or [2001:db8::53]:53"),
                        )
                    })
            })
            .collect()
    }

    /// The reverse proxies whose forwarded addresses are believed.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        bad(
                            "trusted_proxies",
                            format!("{s:?} is not an address or CIDR range like 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }
}

/// The error for one setting: its name, its variable, why.
fn bad(key: &str, why: String) -> ConfigError {
    ConfigError(format!("{key} (MAILROOM_{}): {why}", key.to_uppercase()))
}

/// A setting is missing or wrong: names the setting, says why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads `path` (when it exists; `MAILROOM_CONFIG` names another file) and the
    /// environment, then checks every value.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os("MAILROOM_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("mailroom.toml"));
        if std::env::var_os("MAILROOM_CONFIG").is_some() && !path.exists() {
            return Err(ConfigError(format!(
                "MAILROOM_CONFIG names {}, which does not exist",
                path.display()
            )));
        }
        Self::from_figment(
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Toml::file(&path))
                .merge(
                    Env::prefixed("MAILROOM_")
                        .filter(|k| KEYS.iter().any(|key| k.as_str().eq_ignore_ascii_case(key))),
                ),
        )
    }

    /// Extracts and validates settings from a prepared figment (tests use this).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|errors| {
            let first = errors.into_iter().next();
            ConfigError(
                first
                    .map(describe)
                    .unwrap_or_else(|| "unreadable settings".into()),
            )
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.bind
            .parse::<SocketAddr>()
            .map_err(|e| bad("bind", format!("{:?} is not HOST:PORT ({e})", self.bind)))?;
        if let Some(url) = &self.database_url {
            crate::db::DbTarget::parse(url).map_err(|why| bad("database_url", why))?;
        }
        if let Some(key) = &self.secret_key {
            decode_key(key).map_err(|why| bad("secret_key", why))?;
        }
        if let Some(url) = &self.public_url {
            let parsed =
                url::Url::parse(url).map_err(|e| bad("public_url", format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad(
                    "public_url",
                    "must start with http:// or https://".into(),
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| bad("log", format!("{:?}: {e}", self.log)))?;
        if self.pool_size == 0 {
            return Err(bad("pool_size", "must be at least 1".into()));
        }
        let egress = self.egress_policy()?;
        self.per_request_policy(&egress)?;
        self.dns_servers()?;
        if self.per_request_smtp_limit == 0 {
            return Err(bad("per_request_smtp_limit", "must be at least 1".into()));
        }
        self.trusted_proxies()?;
        if self.smtp_timeout_secs == 0 {
            return Err(bad("smtp_timeout_secs", "must be at least 1".into()));
        }
        self.system_from.parse::<lettre::Address>().map_err(|e| {
            bad(
                "system_from",
                format!("{:?} is not an email address: {e}", self.system_from),
            )
        })?;
        if crate::providers::model::TlsMode::parse(&self.system_smtp_tls).is_none() {
            return Err(bad(
                "system_smtp_tls",
                "must be starttls, tls or none".into(),
            ));
        }
        if self
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            return Err(bad(
                "metrics_token",
                "must be at least 16 characters (or unset to turn /metrics off)".into(),
            ));
        }
        if !(0..=10).contains(&self.retry_count) {
            return Err(bad("retry_count", "must be from 0 to 10".into()));
        }
        if self.lease_secs < 5 {
            return Err(bad("lease_secs", "must be at least 5".into()));
        }
        if self.delivery_batch < 1 || self.delivery_in_flight < 1 {
            return Err(bad(
                "delivery_batch",
                "delivery_batch and delivery_in_flight must be at least 1".into(),
            ));
        }
        if self.body_retention_days > 36_500 {
            return Err(bad(
                "body_retention_days",
                "must be from 0 (keep forever) to 36500".into(),
            ));
        }
        if self.session_ttl_hours == 0 {
            return Err(bad("session_ttl_hours", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("mailroom.db").display()))
    }

    /// Whether cookies carry the `Secure` flag.
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies.unwrap_or_else(|| {
            self.public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        })
    }

    /// The secret key: from the settings, or read from (first start: generated into)
    /// `<data_dir>/secret.key` with mode 0600.
    pub fn secret_key(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(key) = &self.secret_key {
            return decode_key(key).map_err(anyhow::Error::msg);
        }
        let path = self.data_dir.join("secret.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            return decode_key(text.trim())
                .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()));
        }
        let key: [u8; 64] = rand::random();
        write_private(&path, &hex::encode(key))?;
        tracing::info!(path = %path.display(), "generated a new secret key");
        Ok(key.to_vec())
    }
}

/// One line naming the setting, where it came from, and what is wrong with it.
fn describe(error: figment::Error) -> String {
    let source = error
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| "settings".into());
    let kind = error.kind.to_string().replace('\n', " ");
    match error.path.join(".").to_lowercase() {
        key if key.is_empty() => format!("{kind} (in {source})"),
        key => format!(
            "{key} (MAILROOM_{}, from {source}): {kind}",
            key.to_uppercase()
        ),
    }
}

fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = hex::decode(text).map_err(|_| "must be hexadecimal".to_string())?;
    if bytes.len() < 64 {
        return Err(format!(
            "must be at least 64 bytes (128 hex characters), got {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
