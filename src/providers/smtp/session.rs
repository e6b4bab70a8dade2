//! One SMTP session on a socket we opened: greeting, EHLO, STARTTLS, AUTH, and mail sent
//! with PIPELINING (RFC 2920) when the server offers it: MAIL, RCPT and DATA leave in one
//! write and their replies are read together, so a message costs two round trips instead
//! of four. lettre's connection sends one command and waits for its reply each time and
//! does not give its socket back, so the exchange is ours; lettre still formats every
//! command and parses every reply.

use std::io::Write as _;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::commands::{Auth, Data, Ehlo, Mail, Noop, Quit, Rcpt, Rset, Starttls};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, ServerInfo,
};
use lettre::transport::smtp::response::Response;
use tokio::io::ReadBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{SmtpFailure, server_text};

/// Longest reply line read (bytes; Postfix's `line_length_limit`).
const MAX_LINE: usize = 1_000;
/// Longest reply read, all its lines together (Postfix's `smtp_response_limit`).
const MAX_REPLY: usize = 100_000;
/// Most AUTH challenges answered before giving up on a server that keeps asking.
const MAX_CHALLENGES: u8 = 10;

/// The socket, before or after TLS.
enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Wire {
    #[cfg(target_os = "linux")]
    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open SMTP session.
pub struct SmtpSession {
    wire: BufReader<Wire>,
    info: ServerInfo,
    /// The server offered PIPELINING in its last EHLO reply.
    pipelining: bool,
    /// The server sent more than a reply: the session is not used for another message.
    out_of_step: bool,
    /// What is written next, kept between messages so sending allocates nothing.
    out: Vec<u8>,
    /// The reply line being read, kept likewise.
    line: Vec<u8>,
}

fn network(e: std::io::Error) -> SmtpFailure {
    SmtpFailure::other(format!("connection to the server failed: {e}"))
}

/// A refusal by our side: retrying cannot help.
fn refused_here(detail: &str) -> SmtpFailure {
    SmtpFailure {
        code: None,
        detail: server_text(detail),
        client: true,
    }
}

/// What a step of the exchange must be answered with.
#[derive(Clone, Copy)]
enum Expect {
    /// 2xx.
    Done,
    /// 220 (the greeting, STARTTLS).
    Ready,
    /// 354 (DATA).
    GoAhead,
    /// 2xx, or 334 (an AUTH challenge).
    DoneOrChallenge,
}

impl Expect {
    fn accepts(self, code: u16) -> bool {
        match self {
            Expect::Done => (200..300).contains(&code),
            Expect::Ready => code == 220,
            Expect::GoAhead => code == 354,
            Expect::DoneOrChallenge => (200..300).contains(&code) || code == 334,
        }
    }
}

/// `Ok` for the reply the step expects; the server's words as a failure otherwise. Any
/// other code, a positive one included (a 250 where 354 was due: replies out of step),
/// fails the exchange, so a reply is never taken for another command's.
fn expect(reply: Response, wanted: Expect) -> Result<Response, SmtpFailure> {
    let code = u16::from(reply.code());
    if wanted.accepts(code) {
        return Ok(reply);
    }
    let said: Vec<&str> = reply.message().collect();
    Err(SmtpFailure {
        code: Some(code),
        detail: server_text(&format!("{code} {}", said.join(" "))),
        client: false,
    })
}

/// Writes `body` as DATA content: every line ending becomes CRLF (a bare CR or LF is
/// never passed on, so nothing in a message can end DATA early: SMTP smuggling), a line
/// starting with a dot gets a second one (RFC 5321 §4.5.2), and the terminating
/// `<CRLF>.<CRLF>` follows.
pub(super) fn encode_data(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut line_start = true;
    let mut rest = body;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                rest = tail.strip_prefix(b"\n").unwrap_or(tail);
                line_start = true;
                continue;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            b'.' if line_start => {
                out.extend_from_slice(b"..");
                line_start = false;
            }
            _ => {
                out.push(b);
                line_start = false;
            }
        }
        rest = tail;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

impl SmtpSession {
    /// Opens a session on a connected socket (TLS already on for implicit TLS): reads the
    /// greeting, says EHLO, and with `starttls` upgrades the connection and says EHLO again.
    pub(super) async fn open(
        stream: TcpStream,
        implicit_tls: Option<(Arc<rustls::ClientConfig>, &str)>,
        starttls: Option<(Arc<rustls::ClientConfig>, &str)>,
        hello: &ClientId,
    ) -> Result<Self, SmtpFailure> {
        let wire = match implicit_tls {
            Some((config, host)) => Wire::Tls(Box::new(tls(config, host, stream).await?)),
            None => Wire::Plain(stream),
        };
        let mut session = Self {
            wire: BufReader::new(wire),
            info: ServerInfo::default(),
            pipelining: false,
            out_of_step: false,
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(128),
        };
        expect(session.reply().await?, Expect::Ready)?;
        session.ehlo(hello).await?;
        let Some((config, host)) = starttls else {
            return Ok(session);
        };
        if !session.info.supports_feature(Extension::StartTls) {
            return Err(refused_here("STARTTLS is not supported on this server"));
        }
        session.command(Starttls, Expect::Ready).await?;
        // Anything the server sent after its answer would be read as if it came over TLS
        // (plaintext injection): a session that has it is not used.
        if !session.wire.buffer().is_empty() {
            return Err(SmtpFailure::other(
                "the server sent data before TLS began; not continuing",
            ));
        }
        let Wire::Plain(stream) = session.wire.into_inner() else {
            return Err(SmtpFailure::other(
                "STARTTLS on a connection already encrypted",
            ));
        };
        session.wire = BufReader::new(Wire::Tls(Box::new(tls(config, host, stream).await?)));
        session.ehlo(hello).await?;
        Ok(session)
    }

    /// Whether the session runs over TLS.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.wire.get_ref(), Wire::Tls(_))
    }

    async fn ehlo(&mut self, hello: &ClientId) -> Result<(), SmtpFailure> {
        let reply = self.command(Ehlo::new(hello.clone()), Expect::Done).await?;
        self.info = ServerInfo::from_response(&reply)
            .map_err(|e| SmtpFailure::other(format!("cannot read the EHLO reply: {e}")))?;
        self.pipelining = reply.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case("PIPELINING"))
        });
        Ok(())
    }

    /// Signs in with PLAIN or LOGIN, whichever the server offers.
    pub(super) async fn auth(&mut self, credentials: &Credentials) -> Result<(), SmtpFailure> {
        let mechanism = self
            .info
            .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login])
            .ok_or_else(|| refused_here("No compatible authentication mechanism was found"))?;
        let bad = |e: lettre::transport::smtp::Error| SmtpFailure::other(e.to_string());
        let first = Auth::new(mechanism, credentials.clone(), None).map_err(bad)?;
        let mut reply = self.command(first, Expect::DoneOrChallenge).await?;
        let mut challenges = MAX_CHALLENGES;
        while reply.has_code(334) {
            if challenges == 0 {
                return Err(SmtpFailure::other("the server kept asking to sign in"));
            }
            challenges -= 1;
            let answer = Auth::new_from_response(mechanism, credentials.clone(), &reply);
            reply = self
                .command(answer.map_err(bad)?, Expect::DoneOrChallenge)
                .await?;
        }
        Ok(())
    }

    /// Sends one message: the envelope, then `body` as DATA. The reply to the end of
    /// DATA is returned. After a failure the session must not be used again.
    pub async fn send(
        &mut self,
        from: Option<&Address>,
        to: &[Address],
        body: &[u8],
    ) -> Result<Response, SmtpFailure> {
        let mut parameters = Vec::new();
        if from
            .into_iter()
            .chain(to)
            .any(|a: &Address| !AsRef::<str>::as_ref(a).is_ascii())
        {
            if !self.info.supports_feature(Extension::SmtpUtfEight) {
                return Err(refused_here(
                    "the address is not ASCII and the server does not support SMTPUTF8",
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() {
            if !self.info.supports_feature(Extension::EightBitMime) {
                return Err(refused_here(
                    "the message is not ASCII and the server does not support 8BITMIME",
                ));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        self.out.clear();
        self.put(Mail::new(from.cloned(), parameters));
        if self.pipelining {
            for rcpt in to {
                self.put(Rcpt::new(rcpt.clone(), Vec::new()));
            }
            self.put(Data);
            self.flush().await?;
            // Every reply is read, in order; the first refusal is the answer, also when
            // the server then closes (a 421 says it does: nothing more is read).
            let mut refusal = None;
            for step in 0..to.len() + 2 {
                let wanted = if step == to.len() + 1 {
                    Expect::GoAhead
                } else {
                    Expect::Done
                };
                self.ack_at_once();
                let reply = match self.reply().await {
                    Ok(reply) => reply,
                    Err(lost) => return Err(refusal.unwrap_or(lost)),
                };
                let closing = reply.has_code(421);
                if let Err(e) = expect(reply, wanted) {
                    refusal.get_or_insert(e);
                    if closing {
                        break;
                    }
                }
            }
            if let Some(refusal) = refusal {
                return Err(refusal);
            }
        } else {
            self.flush().await?;
            expect(self.reply().await?, Expect::Done)?;
            for rcpt in to {
                self.command(Rcpt::new(rcpt.clone(), Vec::new()), Expect::Done)
                    .await?;
            }
            self.command(Data, Expect::GoAhead).await?;
        }
        self.out.clear();
        encode_data(body, &mut self.out);
        self.flush().await?;
        let reply = expect(self.reply().await?, Expect::Done)?;
        // More than the reply came: the server is out of step, and every later reply
        // would be read as the answer to the wrong command.
        self.out_of_step = !self.wire.buffer().is_empty();
        Ok(reply)
    }

    /// Asks whether the server takes `from` as envelope sender (`MAIL FROM`), then takes
    /// it back (`RSET`): nothing is sent. The server's answer to MAIL.
    pub async fn accepts_sender(&mut self, from: &Address) -> Result<Response, SmtpFailure> {
        let mut parameters = Vec::new();
        if !AsRef::<str>::as_ref(from).is_ascii() {
            if !self.info.supports_feature(Extension::SmtpUtfEight) {
                return Err(refused_here(
                    "the address is not ASCII and the server does not support SMTPUTF8",
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        let reply = self
            .command(Mail::new(Some(from.clone()), parameters), Expect::Done)
            .await?;
        self.command(Rset, Expect::Done).await?;
        Ok(reply)
    }

    /// Whether the session may carry another message (false once the server sent more
    /// than it was asked for).
    pub fn is_in_step(&self) -> bool {
        !self.out_of_step
    }

    /// Asks whether the server is still there (NOOP), waiting at most `within`.
    pub async fn is_connected(&mut self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.command(Noop, Expect::Done)).await,
            Ok(Ok(_))
        )
    }

    /// Says QUIT and closes the socket, waiting at most `within` for the server.
    pub async fn quit(mut self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            let _ = self.command(Quit, Expect::Done).await;
            let _ = self.wire.get_mut().shutdown().await;
        })
        .await;
    }

    /// Acknowledges what arrives at once instead of delaying the ACK (TCP_QUICKACK, which
    /// Linux clears again by itself). A server that writes each pipelined reply on its
    /// own with Nagle's algorithm on holds the second until the first is acknowledged:
    /// without this, every message would wait out the delayed ACK (40 ms).
    fn ack_at_once(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.wire.get_ref().tcp().set_quickack(true);
    }

    fn put(&mut self, command: impl std::fmt::Display) {
        // Writing to a Vec cannot fail; the commands end with their own CRLF.
        let _ = write!(self.out, "{command}");
    }

    async fn flush(&mut self) -> Result<(), SmtpFailure> {
        let wire = self.wire.get_mut();
        wire.write_all(&self.out).await.map_err(network)?;
        wire.flush().await.map_err(network)
    }

    /// Sends one command and reads its reply, which must be the one `wanted`.
    async fn command(
        &mut self,
        command: impl std::fmt::Display,
        wanted: Expect,
    ) -> Result<Response, SmtpFailure> {
        self.out.clear();
        self.put(command);
        self.flush().await?;
        expect(self.reply().await?, wanted)
    }

    /// Reads one reply, every line of it, within `MAX_LINE` and `MAX_REPLY`.
    async fn reply(&mut self) -> Result<Response, SmtpFailure> {
        let mut text = String::new();
        let line = &mut self.line;
        loop {
            line.clear();
            let read = (&mut self.wire)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', line)
                .await
                .map_err(network)?;
            if !line.ends_with(b"\n") {
                return Err(SmtpFailure::other(if read > MAX_LINE {
                    "the server's reply line is too long"
                } else {
                    "the server closed the connection"
                }));
            }
            let content = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(line);
            let said = String::from_utf8_lossy(content);
            if content.len() < 3 || !content[..3].iter().all(u8::is_ascii_digit) {
                return Err(SmtpFailure::other(format!(
                    "the server's reply is not SMTP: {said}"
                )));
            }
            text.push_str(&said);
            text.push_str("\r\n");
            if text.len() > MAX_REPLY {
                return Err(SmtpFailure::other("the server's reply is too long"));
            }
            if content.get(3) != Some(&b'-') {
                break;
            }
        }
        Response::from_str(&text).map_err(|e| {
            SmtpFailure::other(format!("cannot read the server's reply ({e}): {text}"))
        })
    }
}

async fn tls(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, SmtpFailure> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| SmtpFailure::other(format!("{host}: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| SmtpFailure::other(format!("TLS with {host}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::encode_data;

    fn encoded(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_data(body, &mut out);
        out
    }

    #[test]
    fn data_is_dot_stuffed_and_ends_once() {
        assert_eq!(encoded(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encoded(b".a"), b"..a\r\n.\r\n");
        assert_eq!(encoded(b"a"), b"a\r\n.\r\n");
        assert_eq!(encoded(b""), b".\r\n");
        assert_eq!(encoded(b"a.b\r\n"), b"a.b\r\n.\r\n");
    }

    #[test]
    fn bare_line_endings_cannot_end_data_early() {
        // Each of these would end DATA at a server that accepts a bare CR or LF.
        assert_eq!(encoded(b"x\n.\nMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(encoded(b"x\r.\rMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(encoded(b"x\r\n.\nMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
    }
}
