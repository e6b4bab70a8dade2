//! Talking to a provider's SMTP server: connect to an address the egress policy checked,
//! with TCP_NODELAY (Nagle's algorithm against delayed ACKs would stall every reply),
//! EHLO, STARTTLS (RFC 3207) or implicit TLS (RFC 8314), AUTH (RFC 4954), all under one
//! timeout; then messages through the session (`session`).

mod session;

use std::net::SocketAddr;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

pub use self::session::SmtpSession;
use super::egress::EgressPolicy;
use super::model::TlsMode;

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Username; empty means no AUTH.
    pub username: String,
    /// Password (opened from its sealed form just before use).
    pub password: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why a connection failed, in words for the provider's status, with the SMTP reply code
/// when the server gave one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct SmtpFailure {
    /// The basic reply code (e.g. 535), if the server answered.
    pub code: Option<u16>,
    /// What happened, e.g. `535 5.7.8 Authentication credentials invalid`.
    pub detail: String,
    /// Refused by the client side (e.g. an address the server cannot take): retrying
    /// cannot help.
    pub client: bool,
}

/// Longest server text kept (characters): a reply is a line or a few, not a document.
const MAX_SERVER_TEXT: usize = 1_000;

/// What a server said, made safe to store and show: every control character (a NUL,
/// which PostgreSQL cannot store in text and which would stop the recording of every
/// outcome in its batch; line breaks; escapes) becomes a space, and at most
/// `MAX_SERVER_TEXT` characters are kept. A hostile server decides these bytes.
pub fn server_text(raw: &str) -> String {
    let mut text: String = raw
        .chars()
        .take(MAX_SERVER_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if raw.chars().nth(MAX_SERVER_TEXT).is_some() {
        text.push('…');
    }
    text.trim().to_owned()
}

impl SmtpFailure {
    fn other(detail: impl Into<String>) -> Self {
        Self {
            code: None,
            detail: server_text(&detail.into()),
            client: false,
        }
    }

    /// Whether the server refused the credentials (535, or 534/530 asking for other auth).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.code, Some(535 | 534 | 530))
    }
}

/// Opens an authenticated session, or says why not.
pub async fn connect(
    endpoint: &Endpoint,
    policy: &EgressPolicy,
    timeout: Duration,
    hello: &ClientId,
) -> Result<SmtpSession, SmtpFailure> {
    tokio::time::timeout(timeout, connect_inner(endpoint, policy, hello))
        .await
        .map_err(|_| {
            SmtpFailure::other(format!(
                "no answer from {}:{} within {} s",
                endpoint.host,
                endpoint.port,
                timeout.as_secs()
            ))
        })?
}

async fn connect_inner(
    endpoint: &Endpoint,
    policy: &EgressPolicy,
    hello: &ClientId,
) -> Result<SmtpSession, SmtpFailure> {
    let addrs = policy
        .resolve(&endpoint.host, endpoint.port)
        .await
        .map_err(|e| SmtpFailure::other(e.to_string()))?;
    let tls = || {
        policy
            .tls_config()
            .map(|config| (config, endpoint.host.as_str()))
            .map_err(|e| SmtpFailure::other(format!("TLS settings: {e}")))
    };
    let mut last = SmtpFailure::other("no address to connect to");
    for addr in addrs {
        let attempt = async {
            let stream = open_stream(addr, &endpoint.host, endpoint.port).await?;
            let (implicit, starttls) = match endpoint.tls {
                TlsMode::Tls => (Some(tls()?), None),
                TlsMode::StartTls => (None, Some(tls()?)),
                TlsMode::None => (None, None),
            };
            let mut session = SmtpSession::open(stream, implicit, starttls, hello).await?;
            if !endpoint.username.is_empty() {
                let password = endpoint.password.clone().ok_or_else(|| {
                    SmtpFailure::other("no password is stored: enter it on the provider's page")
                })?;
                session
                    .auth(&Credentials::new(endpoint.username.clone(), password))
                    .await?;
            }
            Ok::<_, SmtpFailure>(session)
        };
        match attempt.await {
            Ok(session) => return Ok(session),
            // A refusal by the server is final; a network fault may pass on another address.
            Err(e) if e.code.is_some() => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to an address the policy checked, with TCP_NODELAY: every SMTP command waits
/// for its reply, and Nagle's algorithm against delayed ACKs would stall each message by
/// ~40 ms. Every TLS mode runs over this socket (lettre's own implicit-TLS connect would
/// open one without the option). A failure names the host as it was given, never the
/// address it resolved to (per-request SMTP callers must not learn where names point).
async fn open_stream(addr: SocketAddr, host: &str, port: u16) -> Result<TcpStream, SmtpFailure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| SmtpFailure::other(format!("cannot connect to {host}:{port}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| SmtpFailure::other(e.to_string()))?;
    Ok(stream)
}

/// Asks a provider's server whether it takes `address` as envelope sender: connect, EHLO,
/// TLS, AUTH, `MAIL FROM`, `RSET`, QUIT; nothing is sent. What the server answered.
pub async fn accepts_sender(
    endpoint: &Endpoint,
    policy: &EgressPolicy,
    timeout: Duration,
    address: &lettre::Address,
) -> Result<String, SmtpFailure> {
    let hello = ClientId::default();
    let mut session = connect(endpoint, policy, timeout, &hello).await?;
    let answer = tokio::time::timeout(timeout, session.accepts_sender(address))
        .await
        .map_err(|_| {
            SmtpFailure::other(format!(
                "no answer to MAIL FROM within {} s",
                timeout.as_secs()
            ))
        });
    session.quit(timeout).await;
    let reply = answer??;
    Ok(server_text(&reply.message().collect::<Vec<_>>().join(" ")))
}

/// Verifies a provider: connect, EHLO, TLS, AUTH, QUIT. Returns what the server said.
pub async fn check(
    endpoint: &Endpoint,
    policy: &EgressPolicy,
    timeout: Duration,
) -> Result<String, SmtpFailure> {
    let hello = ClientId::default();
    let session = connect(endpoint, policy, timeout, &hello).await?;
    let encrypted = session.is_encrypted();
    session.quit(timeout).await;
    Ok(format!(
        "Connected to {}:{}{}{}",
        endpoint.host,
        endpoint.port,
        if encrypted { " over TLS" } else { "" },
        if endpoint.username.is_empty() {
            ""
        } else {
            " and signed in"
        }
    ))
}
