//! Mailroom's own SMTP exchange: PIPELINING only where the server offers it, and a
//! STARTTLS that a man in the middle answered with extra plaintext is abandoned.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::both;
use crate::delivery::compose_at;
use crate::helpers::*;
use crate::providers::{SMTP_PASSWORD, provider_form};
use crate::smtp_server::{Fault, SmtpServer, Stage, Tls};

/// Waits (at most 15 s) until the server has accepted `count` messages.
async fn accepted(server: &SmtpServer, count: usize) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.messages().len() < count {
        if Instant::now() > deadline {
            return Err(format!("{} of {count} messages arrived", server.messages().len()).into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Where the server offers PIPELINING, MAIL, RCPT and DATA leave together (one round trip
/// instead of three); where it does not, every command waits for the previous reply.
async fn commands_are_pipelined_only_where_the_server_offers_it(backend: Backend) -> TestResult {
    for offered in [true, false] {
        let built = TestApp::build(backend).with_provider().start().await?;
        let server = built.smtp.ok_or("smtp")?;
        let provider = built.provider.ok_or("provider")?;
        if !offered {
            server.without_pipelining();
        }
        let to = "ann@example.com, bob@example.com, cy@example.com";
        let response = compose_at(&built.admin, "acme", &provider, &[("to", to)], &[]).await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        accepted(&server, 3).await?;
        let mut recipients: Vec<String> = server
            .messages()
            .iter()
            .flat_map(|m| m.to.clone())
            .collect();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ann@example.com", "bob@example.com", "cy@example.com"]
        );
        if offered {
            assert!(
                server.pipelined() >= 3,
                "each envelope was pipelined: {}",
                server.pipelined()
            );
        } else {
            assert_eq!(server.pipelined(), 0, "nothing pipelined unasked");
        }
        assert_eq!(
            server.early_commands(),
            0,
            "no command before its turn where PIPELINING was not offered"
        );
        drop(built.app);
    }
    Ok(())
}
both!(commands_are_pipelined_only_where_the_server_offers_it);

/// A reply injected after STARTTLS's answer, in plaintext, would be read as if it came
/// over TLS (CVE-2011-0411's kind): the session is abandoned before any password is sent.
async fn plaintext_injected_after_starttls_is_refused(backend: Backend) -> TestResult {
    let (server, _ca) = SmtpServer::start_tls(Tls::StartTls).await?;
    server.inject_after_starttls();
    let port = server.port.to_string();
    let mut form = provider_form(&port, SMTP_PASSWORD);
    form.retain(|(key, _)| *key != "tls");
    form.push(("tls", "starttls"));
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let response = admin.post_form("/w/acme/providers", &form).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("before TLS began"), "says why: {html}");
    assert_eq!(server.auth_attempts(), 0, "no password sent");
    Ok(())
}
both!(plaintext_injected_after_starttls_is_refused);

/// A hostile or broken server: a refusal followed by a closed connection is that refusal
/// (not a cut-off that may have been delivered), and a server that says more than it was
/// asked leaves the session marked out of step, so it carries no other message.
#[actix_web::test]
async fn a_refusal_stays_the_answer_and_a_server_out_of_step_is_left() -> TestResult {
    use lettre::Address;
    use lettre::transport::smtp::extension::ClientId;
    use mailroom::providers::egress::EgressPolicy;
    use mailroom::providers::model::TlsMode;
    use mailroom::providers::smtp::{Endpoint, connect};

    let server = SmtpServer::start().await?;
    let policy = EgressPolicy::parse("127.0.0.1/32")?;
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: server.port,
        tls: TlsMode::None,
        username: String::new(),
        password: None,
    };
    let hello = ClientId::default();
    let timeout = Duration::from_secs(5);
    let from = "from@example.com".parse::<Address>()?;
    let to = ["to@example.com".parse::<Address>()?];
    let body = b"Subject: hi\r\n\r\nhello\r\n";

    server.fail(
        Stage::Mail,
        Fault::ReplyAndClose("554 5.7.1 Rejected, closing".into()),
        1,
    );
    let mut session = connect(&endpoint, &policy, timeout, &hello).await?;
    let refused = session
        .send(Some(&from), &to, body)
        .await
        .err()
        .ok_or("refused")?;
    assert_eq!(refused.code, Some(554), "{refused}");

    server.fail(
        Stage::Data,
        Fault::Reply("250 2.0.0 Ok\r\n250 2.0.0 one reply too many".into()),
        1,
    );
    let mut session = connect(&endpoint, &policy, timeout, &hello).await?;
    session.send(Some(&from), &to, body).await?;
    assert!(!session.is_in_step(), "a surplus reply is noticed");

    let mut session = connect(&endpoint, &policy, timeout, &hello).await?;
    let reply = session.send(Some(&from), &to, body).await?;
    assert!(session.is_in_step());
    assert_eq!(u16::from(reply.code()), 250);
    assert_eq!(server.messages().len(), 1);
    Ok(())
}
