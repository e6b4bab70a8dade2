//! A real SMTP server inside the test process: speaks enough of RFC 5321 (EHLO, AUTH
//! PLAIN/LOGIN per RFC 4954, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT),
//! captures every accepted message, and can be told to answer with a failure code at a
//! given stage, drop the connection in the middle of DATA, or stall. It can speak TLS,
//! implicit (RFC 8314) or after STARTTLS (RFC 3207), with a certificate from a CA of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A conversation's byte stream: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the server offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// Plain until the client asks for STARTTLS.
    StartTls,
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Captured {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TOs.
    pub to: Vec<String>,
    /// The message as received, dot-unstuffed, CRLF line endings.
    pub data: String,
    /// The bytes between DATA's 354 and the final dot line, exactly as they came (still
    /// dot-stuffed).
    pub raw: Vec<u8>,
    /// Whether it arrived over TLS.
    pub encrypted: bool,
    /// When the server accepted it.
    pub at: std::time::Instant,
}

/// Where in the conversation a fault happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The AUTH command.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// After the message data.
    Data,
}

/// What the server does at a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this line, e.g. `451 4.3.0 try later`.
    Reply(String),
    /// Close the connection in the middle of DATA.
    Drop,
    /// Answer with this line, then close the connection without reading more.
    ReplyAndClose(String),
    /// Never answer.
    Stall,
    /// Answer with this line after a while (to catch a message mid-send).
    Slow(Duration, String),
}

#[derive(Default)]
struct State {
    credentials: Option<(String, String)>,
    faults: Vec<(Stage, Fault, usize)>,
    messages: Vec<Captured>,
    auth_attempts: usize,
    delay: Duration,
    open: usize,
    peak: usize,
    /// PIPELINING is not offered.
    no_pipelining: bool,
    /// STARTTLS's answer comes with a forged reply in the same plaintext write.
    inject_after_starttls: bool,
    /// MAIL commands that came with more commands behind them in the same read.
    pipelined: usize,
    /// Commands that came before the previous one was answered, where PIPELINING was not
    /// offered (RFC 2920: a client must not).
    early: usize,
}

/// Counts a conversation as open until it ends, however it ends.
struct Open(Arc<Mutex<State>>);

impl Open {
    fn new(state: &Arc<Mutex<State>>) -> Self {
        let mut guard = state.lock().expect("lock");
        guard.open += 1;
        guard.peak = guard.peak.max(guard.open);
        drop(guard);
        Self(state.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().expect("lock").open -= 1;
    }
}

/// The running server.
#[derive(Clone)]
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<State>>,
    tls: Option<(Tls, TlsAcceptor)>,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 that accepts any sender and recipient.
    pub async fn start() -> std::io::Result<Self> {
        Self::listen(None).await
    }

    /// Starts a server that speaks TLS with a certificate for 127.0.0.1 and localhost,
    /// issued by a fresh CA; returns the CA certificate (PEM) a client must trust.
    pub async fn start_tls(mode: Tls) -> Result<(Self, String), Box<dyn std::error::Error>> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Mailroom test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
            .signed_by(&key, &issuer)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok((Self::listen(Some((mode, acceptor))).await?, ca_cert.pem()))
    }

    async fn listen(tls: Option<(Tls, TlsAcceptor)>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = Self {
            port,
            state: Arc::default(),
            tls,
        };
        let accepting = server.clone();
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let session = accepting.clone();
                actix_web::rt::spawn(async move {
                    let _open = Open::new(&session.state);
                    let _ = match &session.tls {
                        Some((Tls::Implicit, acceptor)) => match acceptor.accept(stream).await {
                            Ok(tls) => session.serve(Box::new(tls), true).await,
                            Err(_) => Ok(()),
                        },
                        _ => session.serve(Box::new(stream), false).await,
                    };
                });
            }
        });
        Ok(server)
    }

    /// Requires AUTH with these credentials.
    pub fn require_credentials(&self, username: &str, password: &str) {
        self.state.lock().expect("lock").credentials = Some((username.into(), password.into()));
    }

    /// Makes the next `times` conversations reaching `stage` meet `fault`.
    pub fn fail(&self, stage: Stage, fault: Fault, times: usize) {
        self.state
            .lock()
            .expect("lock")
            .faults
            .push((stage, fault, times));
    }

    /// Waits this long before accepting each message (to catch a sender mid-delivery).
    pub fn delay_each(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    /// Stops offering PIPELINING (RFC 2920) in the EHLO reply.
    pub fn without_pipelining(&self) {
        self.state.lock().expect("lock").no_pipelining = true;
    }

    /// Answers STARTTLS with a forged `250` in the same plaintext write, as a
    /// man in the middle would inject a reply the client then reads as if over TLS.
    pub fn inject_after_starttls(&self) {
        self.state.lock().expect("lock").inject_after_starttls = true;
    }

    /// MAIL commands that arrived with the commands after them already behind (pipelined).
    pub fn pipelined(&self) -> usize {
        self.state.lock().expect("lock").pipelined
    }

    /// Commands sent before the previous one was answered although PIPELINING was not
    /// offered.
    pub fn early_commands(&self) -> usize {
        self.state.lock().expect("lock").early
    }

    /// Everything accepted so far.
    pub fn messages(&self) -> Vec<Captured> {
        self.state.lock().expect("lock").messages.clone()
    }

    /// Forgets what was accepted and counted so far, sign-ins aside (a test's
    /// arrangement, e.g. a sender's code).
    pub fn forget_messages(&self) {
        let mut state = self.state.lock().expect("lock");
        state.messages.clear();
        state.pipelined = 0;
        state.early = 0;
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.state.lock().expect("lock").open
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.state.lock().expect("lock").peak
    }

    /// How many AUTH commands arrived.
    pub fn auth_attempts(&self) -> usize {
        self.state.lock().expect("lock").auth_attempts
    }

    fn fault_at(&self, stage: Stage) -> Option<Fault> {
        let mut state = self.state.lock().expect("lock");
        let slot = state
            .faults
            .iter_mut()
            .find(|(s, _, times)| *s == stage && *times > 0)?;
        slot.2 -= 1;
        Some(slot.1.clone())
    }

    async fn serve(&self, stream: Box<dyn Io>, encrypted: bool) -> std::io::Result<()> {
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read);
        if !encrypted
            || self
                .tls
                .as_ref()
                .is_some_and(|(mode, _)| *mode == Tls::Implicit)
        {
            write
                .write_all(b"220 mailroom-test ESMTP ready\r\n")
                .await?;
        }
        let offers_starttls = !encrypted && self.tls.is_some();
        let mut from = String::new();
        let mut to = Vec::new();
        // A MAIL was accepted and its transaction has not ended.
        let mut in_mail = false;
        let mut authenticated = false;
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let upper = command.to_ascii_uppercase();
            let more_behind = !lines.buffer().is_empty();
            let (no_pipelining, inject) = {
                let mut state = self.state.lock().expect("lock");
                if more_behind && state.no_pipelining {
                    state.early += 1;
                }
                if more_behind && upper.starts_with("MAIL FROM:") {
                    state.pipelined += 1;
                }
                (state.no_pipelining, state.inject_after_starttls)
            };
            let reply: String = if upper.starts_with("EHLO") {
                format!(
                    "250-mailroom-test\r\n{}250-AUTH PLAIN LOGIN\r\n250-SIZE 52428800\r\n{}250 8BITMIME",
                    if offers_starttls {
                        "250-STARTTLS\r\n"
                    } else {
                        ""
                    },
                    if no_pipelining {
                        ""
                    } else {
                        "250-PIPELINING\r\n"
                    }
                )
            } else if upper == "STARTTLS" && offers_starttls {
                let answer: &[u8] = if inject {
                    b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 forged\r\n"
                } else {
                    b"220 2.0.0 Ready to start TLS\r\n"
                };
                write.write_all(answer).await?;
                let Some((_, acceptor)) = &self.tls else {
                    return Ok(());
                };
                let plain = lines.into_inner().unsplit(write);
                let tls = acceptor.accept(plain).await?;
                // A new conversation over TLS (RFC 3207 §4.2: the client says EHLO again).
                return Box::pin(self.serve(Box::new(tls), true)).await;
            } else if upper.starts_with("HELO") {
                "250 mailroom-test".into()
            } else if upper.starts_with("AUTH") {
                self.state.lock().expect("lock").auth_attempts += 1;
                if let Some(fault) = self.fault_at(Stage::Auth) {
                    match self.fault_reply(fault, &mut write).await? {
                        Some(reply) => reply,
                        None => return Ok(()),
                    }
                } else {
                    let (user, pass) = self
                        .read_credentials(&command, &mut lines, &mut write)
                        .await?;
                    let expected = self.state.lock().expect("lock").credentials.clone();
                    if expected.is_none_or(|(u, p)| u == user && p == pass) {
                        authenticated = true;
                        "235 2.7.0 Authentication successful".into()
                    } else {
                        "535 5.7.8 Authentication credentials invalid".into()
                    }
                }
            } else if upper.starts_with("MAIL FROM:") {
                let needs_auth = self.state.lock().expect("lock").credentials.is_some();
                if needs_auth && !authenticated {
                    "530 5.7.0 Authentication required".into()
                } else if let Some(fault) = self.fault_at(Stage::Mail) {
                    match self.fault_reply(fault, &mut write).await? {
                        Some(reply) => reply,
                        None => return Ok(()),
                    }
                } else {
                    from = address_of(&command[10..]);
                    to.clear();
                    in_mail = true;
                    "250 2.1.0 Ok".into()
                }
            } else if upper.starts_with("RCPT TO:") {
                if let Some(fault) = self.fault_at(Stage::Rcpt) {
                    match self.fault_reply(fault, &mut write).await? {
                        Some(reply) => reply,
                        None => return Ok(()),
                    }
                } else {
                    to.push(address_of(&command[8..]));
                    "250 2.1.5 Ok".into()
                }
            } else if upper == "DATA" && !in_mail {
                "503 5.5.1 Error: need MAIL command".into()
            } else if upper == "DATA" && to.is_empty() {
                // RFC 2920 §3.1: a pipelined DATA after every RCPT was refused.
                "554 5.5.1 Error: no valid recipients".into()
            } else if upper == "DATA" {
                in_mail = false;
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let fault = self.fault_at(Stage::Data);
                if fault == Some(Fault::Drop) {
                    let mut first = String::new();
                    lines.read_line(&mut first).await?;
                    return Ok(());
                }
                let mut data = Vec::new();
                let mut raw = Vec::new();
                loop {
                    let mut line = Vec::new();
                    if lines.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    // Lenient like the servers SMTP smuggling abuses: a lone dot ends DATA
                    // whether its line ends in CRLF or in a bare LF. A message that puts
                    // such a line on the wire shows up here as more than one message.
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    raw.extend_from_slice(&line);
                    // RFC 5321 §4.5.2: a leading dot was doubled by the client.
                    data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                }
                let data = String::from_utf8_lossy(&data).into_owned();
                match fault {
                    Some(fault) => match self.fault_reply(fault, &mut write).await? {
                        Some(reply) => reply,
                        None => return Ok(()),
                    },
                    None => {
                        let delay = self.state.lock().expect("lock").delay;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut state = self.state.lock().expect("lock");
                        state.messages.push(Captured {
                            from: from.clone(),
                            to: to.clone(),
                            data,
                            raw,
                            encrypted,
                            at: std::time::Instant::now(),
                        });
                        format!("250 2.0.0 Ok: queued as {}", state.messages.len())
                    }
                }
            } else if upper == "RSET" {
                from.clear();
                to.clear();
                in_mail = false;
                "250 2.0.0 Ok".into()
            } else if upper == "NOOP" {
                "250 2.0.0 Ok".into()
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            } else {
                "502 5.5.2 Command not recognized".into()
            };
            write.write_all(format!("{reply}\r\n").as_bytes()).await?;
        }
    }

    /// The reply for a fault, or `None` when the connection should end.
    async fn fault_reply(
        &self,
        fault: Fault,
        write: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<Option<String>> {
        Ok(match fault {
            Fault::Reply(line) => Some(line),
            Fault::Drop => None,
            Fault::ReplyAndClose(line) => {
                write.write_all(format!("{line}\r\n").as_bytes()).await?;
                None
            }
            Fault::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
            Fault::Slow(delay, line) => {
                tokio::time::sleep(delay).await;
                Some(line)
            }
        })
    }

    async fn read_credentials(
        &self,
        command: &str,
        lines: &mut BufReader<impl AsyncRead + Unpin>,
        write: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<(String, String)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| {
            String::from_utf8(b64.decode(s.trim()).unwrap_or_default()).unwrap_or_default()
        };
        let mut parts = command.split_whitespace().skip(1);
        let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
        let mut next_line = async |prompt: &str| -> std::io::Result<String> {
            write
                .write_all(format!("334 {prompt}\r\n").as_bytes())
                .await?;
            let mut line = String::new();
            lines.read_line(&mut line).await?;
            Ok(line)
        };
        if mechanism == "LOGIN" {
            let user = match parts.next() {
                Some(initial) => decode(initial),
                None => decode(&next_line("VXNlcm5hbWU6").await?),
            };
            let pass = decode(&next_line("UGFzc3dvcmQ6").await?);
            return Ok((user, pass));
        }
        let initial = match parts.next() {
            Some(initial) => initial.to_owned(),
            None => next_line("").await?,
        };
        let plain = decode(&initial);
        let mut fields = plain.split('\0').skip(1);
        Ok((
            fields.next().unwrap_or_default().to_owned(),
            fields.next().unwrap_or_default().to_owned(),
        ))
    }
}

fn address_of(arg: &str) -> String {
    let arg = arg.trim();
    let start = arg.find('<').map(|i| i + 1).unwrap_or(0);
    let end = arg[start..]
        .find('>')
        .map(|i| i + start)
        .unwrap_or(arg.len());
    arg[start..end].to_owned()
}

#[actix_web::test]
async fn the_test_smtp_server_captures_fails_and_drops_on_demand() -> crate::helpers::TestResult {
    use lettre::Address;
    use lettre::address::Envelope;
    use lettre::transport::smtp::extension::ClientId;
    use mailroom::providers::egress::EgressPolicy;
    use mailroom::providers::model::TlsMode;
    use mailroom::providers::smtp::{Endpoint, connect};

    let server = SmtpServer::start().await?;
    server.require_credentials("u", "p");
    let policy = EgressPolicy::parse("127.0.0.1/32")?;
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: server.port,
        tls: TlsMode::None,
        username: "u".into(),
        password: Some("p".into()),
    };
    let envelope = Envelope::new(
        Some("from@example.com".parse::<Address>()?),
        vec!["to@example.com".parse::<Address>()?],
    )?;
    let hello = ClientId::default();
    let timeout = Duration::from_secs(5);

    let mut conn = connect(&endpoint, &policy, timeout, &hello).await?;
    let body = b"Subject: hi\r\n\r\nline one\r\n.\r\n..two dots\r\nend\r\n";
    let reply = conn.send(envelope.from(), envelope.to(), body).await?;
    assert_eq!(u16::from(reply.code()), 250);
    let captured = server.messages();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].from, "from@example.com");
    assert_eq!(captured[0].to, vec!["to@example.com".to_owned()]);
    assert!(
        captured[0].data.contains("\r\n.\r\n..two dots\r\n"),
        "dot-stuffed on the wire, unstuffed here: {:?}",
        captured[0].data
    );

    server.fail(
        Stage::Rcpt,
        Fault::Reply("550 5.1.1 No such user".into()),
        1,
    );
    let error = conn
        .send(envelope.from(), envelope.to(), body)
        .await
        .expect_err("refused");
    assert_eq!(error.code, Some(550));

    server.fail(Stage::Data, Fault::Drop, 1);
    let mut conn = connect(&endpoint, &policy, timeout, &hello).await?;
    assert!(
        conn.send(envelope.from(), envelope.to(), body)
            .await
            .is_err(),
        "the connection dropped mid-DATA"
    );
    assert_eq!(server.messages().len(), 1, "nothing more was captured");

    server.fail(Stage::Mail, Fault::Stall, 1);
    let mut conn = connect(&endpoint, &policy, timeout, &hello).await?;
    let stalled = tokio::time::timeout(
        Duration::from_millis(300),
        conn.send(envelope.from(), envelope.to(), body),
    )
    .await;
    assert!(stalled.is_err(), "the server stalls");

    let wrong = Endpoint {
        password: Some("nope".into()),
        ..endpoint
    };
    let refused = connect(&wrong, &policy, timeout, &hello)
        .await
        .err()
        .ok_or("refused")?;
    assert!(
        refused.is_auth_failure() && refused.detail.contains("5.7.8"),
        "{refused}"
    );
    Ok(())
}

#[actix_web::test]
async fn the_egress_policy_is_applied_again_at_connect() -> crate::helpers::TestResult {
    use mailroom::providers::egress::EgressPolicy;
    use mailroom::providers::model::TlsMode;
    use mailroom::providers::smtp::{Endpoint, check};

    let server = SmtpServer::start().await?;
    let endpoint = Endpoint {
        host: "localhost".into(),
        port: server.port,
        tls: TlsMode::None,
        username: String::new(),
        password: None,
    };
    let timeout = Duration::from_secs(5);
    // Allowed when saved…
    let allowed = EgressPolicy::parse("127.0.0.0/8, ::1/128")?;
    assert!(check(&endpoint, &allowed, timeout).await.is_ok());
    // …and refused at the next connect once the operator's policy no longer allows it
    // (the same holds when a name starts resolving somewhere else).
    let strict = EgressPolicy::parse("")?;
    let refused = check(&endpoint, &strict, timeout)
        .await
        .err()
        .ok_or("refused at connect")?;
    assert!(
        refused.detail.contains("egress policy refuses"),
        "{refused}"
    );
    assert_eq!(server.auth_attempts(), 0);
    Ok(())
}
