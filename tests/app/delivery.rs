use std::time::{Duration, Instant};

use diesel::prelude::*;
use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;
use crate::providers::{SMTP_PASSWORD, SMTP_USER, add_provider, provider_form};
use crate::smtp_server::{Fault, SmtpServer, Stage, Tls};

/// A message's state as stored.
#[derive(Debug, Clone, Queryable)]
struct Row {
    id: i64,
    recipient: String,
    status: String,
    attempts: i32,
    smtp_code: Option<i32>,
    smtp_enhanced: Option<String>,
    message_id: String,
    result: String,
}

async fn rows(app: &TestApp) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let db = app.db();
    Ok(db
        .run(|conn| {
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .select((
                    id,
                    recipient,
                    status,
                    attempts,
                    smtp_code,
                    smtp_enhanced,
                    message_id,
                    result,
                ))
                .order(id.asc())
                .load::<Row>(conn)?)
        })
        .await?)
}

/// Waits (at most 15 s) until every message is in one of `done`.
async fn settle(app: &TestApp, done: &[&str]) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = rows(app).await?;
        if !now.is_empty() && now.iter().all(|r| done.contains(&r.status.as_str())) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(format!("messages did not settle in {done:?}: {now:?}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An app whose retries come at once, with an admin and a green provider.
async fn sending_app(
    backend: Backend,
) -> Result<(TestApp, Browser, SmtpServer, String), Box<dyn std::error::Error>> {
    let built = TestApp::build(backend)
        .with_settings(|s| s.retry_base_secs = 0)
        .with_provider()
        .start()
        .await?;
    let server = built.smtp.ok_or("smtp")?;
    let id = built.provider.ok_or("provider")?;
    Ok((built.app, built.admin, server, id))
}

async fn compose(
    admin: &Browser,
    provider: &str,
    fields: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    compose_at(admin, "acme", provider, fields, &[]).await
}

/// Posts the compose form as the page does (`multipart/form-data`, CSRF token in the
/// header htmx sends), with files.
pub async fn compose_at(
    browser: &Browser,
    slug: &str,
    provider: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, Vec<u8>)],
) -> reqwest::Result<reqwest::Response> {
    let token = browser.csrf().await?;
    // The ready sender of `provider` (the console's From is a sender).
    let (_, compose) = browser.page(&format!("/w/{slug}/compose")).await?;
    let marker = format!("data-provider=\"{provider}\"");
    let sender = compose
        .find(&marker)
        .and_then(|at| compose[..at].rfind("value=\""))
        .map(|at| {
            let rest = &compose[at + "value=\"".len()..];
            rest[..rest.find('"').unwrap_or(0)].to_owned()
        })
        .unwrap_or_default();
    let mut all = vec![
        ("sender", sender.as_str()),
        ("subject", "Hello"),
        ("text", "Hi there.\nSecond line."),
    ];
    all.retain(|(k, _)| !fields.iter().any(|(f, _)| f == k));
    all.extend_from_slice(fields);
    let mut form = reqwest::multipart::Form::new();
    for (key, value) in all {
        form = form.text(key.to_owned(), value.to_owned());
    }
    for (name, kind, data) in files {
        let part = reqwest::multipart::Part::bytes(data.clone())
            .file_name(name.to_string())
            .mime_str(kind)?;
        form = form.part("attachments", part);
    }
    browser
        .client
        .post(format!("{}/w/{slug}/compose", browser.base))
        .header("X-CSRF-Token", token)
        .multipart(form)
        .send()
        .await
}

async fn compose_sends_one_copy_to_every_address_of_to_cc_and_bcc(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    let response = compose(
        &admin,
        &provider,
        &[
            ("to", "ann@example.com, bob@example.com"),
            ("cc", "cat@example.com, Ann@Example.com"),
            ("bcc", "dan@example.com"),
        ],
    )
    .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/w/acme/messages?tab=web");
    let done = settle(&app, &["sent"]).await?;
    // One message per address: ann (To; her Cc listing is the same address), bob, cat,
    // dan.
    let mut recipients: Vec<&str> = done.iter().map(|r| r.recipient.as_str()).collect();
    recipients.sort_unstable();
    assert_eq!(
        recipients,
        [
            "ann@example.com",
            "bob@example.com",
            "cat@example.com",
            "dan@example.com"
        ]
    );
    for row in &done {
        assert_eq!(
            (row.attempts, row.smtp_code, row.smtp_enhanced.as_deref()),
            (1, Some(250), Some("2.0.0"))
        );
        assert!(row.result.starts_with("250 2.0.0"), "{}", row.result);
    }
    let captured = server.messages();
    assert_eq!(captured.len(), 4, "every address receives exactly one copy");
    let mut envelope: Vec<Vec<String>> = captured.iter().map(|m| m.to.clone()).collect();
    envelope.sort();
    assert_eq!(
        envelope,
        [
            vec!["ann@example.com".to_owned()],
            vec!["bob@example.com".to_owned()],
            vec!["cat@example.com".to_owned()],
            vec!["dan@example.com".to_owned()]
        ],
        "each copy's envelope names its recipient alone"
    );
    for mail in &captured {
        let row = done
            .iter()
            .find(|r| mail.to == vec![r.recipient.clone()])
            .ok_or("the row of this copy")?;
        assert_eq!(mail.from, "ops@example.com");
        assert!(mail.data.contains("Subject: [Acme] Hello\r\n"));
        assert!(
            mail.data
                .contains(&format!("Message-ID: {}\r\n", row.message_id))
        );
        // Every copy carries the send's headers, as a mail client writes them.
        assert!(
            mail.data
                .contains("To: ann@example.com, bob@example.com\r\n"),
            "{}",
            mail.data
        );
        assert!(
            mail.data
                .contains("Cc: cat@example.com, Ann@Example.com\r\n"),
            "{}",
            mail.data
        );
        let headers = mail.data.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !headers
                .lines()
                .any(|l| l.to_lowercase().starts_with("bcc:")),
            "BCC never in headers"
        );
        assert!(!headers.contains("dan@example.com"), "nor its address");
        assert!(
            mail.data
                .contains("From: \"Acme Ops\" <ops@example.com>\r\n"),
            "{}",
            mail.data
        );
    }
    let done: Vec<Row> = done
        .into_iter()
        .filter(|r| r.recipient == "ann@example.com")
        .collect();
    // The send record shows every field.
    let (status, html) = admin
        .page(&format!("/w/acme/messages/{}", done[0].id))
        .await?;
    assert_eq!(status, StatusCode::OK);
    for field in [
        "Message-ID",
        "Session",
        "admin@example.com",
        "Ops SMTP",
        "ann@example.com",
        "Successful",
        "250 2.0.0",
        "Sent at",
    ] {
        assert!(html.contains(field), "detail lacks {field}");
    }
    // The polled fragment carries the whole record, so nothing on the page goes stale.
    let fragment = admin
        .client
        .get(format!("{}/w/acme/messages/{}", admin.base, done[0].id))
        .header("HX-Request", "true")
        .header("HX-Target", "message-live")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        !fragment.contains("<html") && fragment.contains("<dt>Successful</dt><dd>yes</dd>"),
        "{fragment}"
    );
    let (_, history) = admin.page("/w/acme/messages?tab=web").await?;
    assert!(history.contains("bob@example.com") && history.contains("badge green\">sent"));
    let (_, sys) = admin.page("/w/acme/messages?tab=sys").await?;
    assert!(
        !sys.contains("bob@example.com"),
        "console mail is under Web, not Sys"
    );
    Ok(())
}
both!(compose_sends_one_copy_to_every_address_of_to_cc_and_bcc);

async fn a_lone_dot_after_a_bare_lf_does_not_end_data_early(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    let body = "first line\n.\nQUIT\nRSET\nlast line\r.\r\nend";
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("text", body)],
    )
    .await?;
    settle(&app, &["sent"]).await?;
    let mail = server.messages().pop().ok_or("captured")?;
    assert!(
        mail.data
            .contains("first line\r\n.\r\nQUIT\r\nRSET\r\nlast line\r\n.\r\nend"),
        "{:?}",
        mail.data
    );
    assert_eq!(
        server.messages().len(),
        1,
        "nothing after the dot was taken as a command"
    );
    Ok(())
}
both!(a_lone_dot_after_a_bare_lf_does_not_end_data_early);

async fn temporary_failures_retry_until_accepted(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(
        Stage::Rcpt,
        Fault::Reply("451 4.3.0 Try again later".into()),
        1,
    );
    server.fail(Stage::Data, Fault::Drop, 1);
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("retry_count", "3")],
    )
    .await?;
    let done = settle(&app, &["sent", "failed"]).await?;
    assert_eq!(
        (done[0].status.as_str(), done[0].attempts),
        ("sent", 3),
        "{done:?}"
    );
    let (_, html) = admin
        .page(&format!("/w/acme/messages/{}", done[0].id))
        .await?;
    assert!(
        html.contains("451 4.3.0") && html.matches(">retry<").count() >= 2,
        "the timeline shows each attempt"
    );
    Ok(())
}
both!(temporary_failures_retry_until_accepted);

async fn out_of_retries_a_message_fails_with_the_last_reply(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(Stage::Mail, Fault::Reply("421 4.7.0 Too busy".into()), 10);
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("retry_count", "1")],
    )
    .await?;
    let done = settle(&app, &["failed"]).await?;
    assert_eq!((done[0].attempts, done[0].smtp_code), (2, Some(421)));
    assert!(done[0].result.contains("no retries left"));
    Ok(())
}
both!(out_of_retries_a_message_fails_with_the_last_reply);

async fn a_permanent_refusal_fails_at_once(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(
        Stage::Rcpt,
        Fault::Reply("550 5.1.1 No such user here".into()),
        1,
    );
    compose(
        &admin,
        &provider,
        &[("to", "nobody@example.com"), ("retry_count", "5")],
    )
    .await?;
    let done = settle(&app, &["failed"]).await?;
    assert_eq!(
        (
            done[0].attempts,
            done[0].smtp_code,
            done[0].smtp_enhanced.as_deref()
        ),
        (1, Some(550), Some("5.1.1"))
    );
    // Retry now gives it one more attempt.
    let page = format!("/w/acme/messages/{}", done[0].id);
    assert!(admin.page(&page).await?.1.contains("Retry now"));
    admin.post_form(&format!("{page}/retry"), &[]).await?;
    let done = settle(&app, &["sent"]).await?;
    assert_eq!(done[0].attempts, 2);
    Ok(())
}
both!(a_permanent_refusal_fails_at_once);

async fn a_refused_sign_in_turns_the_provider_red_and_holds_its_messages(
    backend: Backend,
) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.require_credentials(SMTP_USER, "rotated elsewhere");
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com, bob@example.com")],
    )
    .await?;
    // The two messages are held; the admins get an alert through the system provider
    // (with nothing configured: an .eml file in data/outbox), logged under Sys.
    let settled = settle(&app, &["held", "sent"]).await?;
    let held: Vec<&Row> = settled.iter().filter(|r| r.recipient != ADMIN).collect();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter().all(|r| r.status == "held" && r.attempts == 0),
        "held, not counted as attempts: {held:?}"
    );
    let alert = settled
        .iter()
        .find(|r| r.recipient == ADMIN)
        .ok_or("an alert to the admin")?;
    assert_eq!(alert.status, "sent");
    assert!(alert.result.contains("outbox"), "{}", alert.result);
    let outbox: Vec<_> =
        std::fs::read_dir(app.dir.path().join("outbox"))?.collect::<Result<_, _>>()?;
    assert_eq!(outbox.len(), 1);
    let eml = std::fs::read_to_string(outbox[0].path())?;
    assert!(
        eml.contains("Subject: [Acme] Provider Ops SMTP turned red"),
        "{eml}"
    );
    assert!(eml.contains("To: admin@example.com"));
    let (_, sys) = admin.page("/w/acme/messages?tab=sys").await?;
    assert!(sys.contains("Provider Ops SMTP turned red") && !sys.contains("ann@example.com"));
    let page = format!("/w/acme/providers/{provider}");
    assert!(
        admin.page(&page).await?.1.contains("badge red"),
        "the provider turned red"
    );
    assert!(server.messages().is_empty());
    // Fixed on the server, checked green again: the held messages go out.
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    admin.post_form(&format!("{page}/check"), &[]).await?;
    let sent = settle(&app, &["sent"]).await?;
    assert_eq!(sent.len(), 3);
    assert_eq!(server.messages().len(), 2);
    Ok(())
}
both!(a_refused_sign_in_turns_the_provider_red_and_holds_its_messages);

async fn a_scheduled_message_waits_and_can_be_cancelled(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("send_at", LATER_FORM.as_str())],
    )
    .await?;
    let waiting = rows(&app).await?;
    assert_eq!(waiting[0].status, "scheduled");
    let page = format!("/w/acme/messages/{}", waiting[0].id);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("hx-trigger=\"every 2s\""),
        "the page polls while the message may move"
    );
    admin.post_form(&format!("{page}/cancel"), &[]).await?;
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("badge grey struck\">cancelled") && !html.contains("hx-trigger=\"every 2s\"")
    );
    app.run_queue_until_empty().await?;
    assert!(server.messages().is_empty());
    let again = admin.post_form(&format!("{page}/cancel"), &[]).await?;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(
        admin
            .page(&page)
            .await?
            .1
            .contains("can no longer be cancelled")
    );
    Ok(())
}
both!(a_scheduled_message_waits_and_can_be_cancelled);

async fn compose_rejects_header_injection_and_names_each_field(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    let response = compose(
        &admin,
        &provider,
        &[
            ("to", "ann@example.com%0d%0aBcc: x@evil.example"),
            ("cc", "not an address"),
            ("subject", "Hi\r\nBcc: x@evil.example"),
            ("text", ""),
            ("retry_count", "99"),
        ],
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    for field in ["to", "cc", "subject", "text", "retry_count"] {
        assert!(
            html.contains(&format!("id=\"e-{field}\"")),
            "no error on {field}"
        );
    }
    assert!(html.contains("cannot contain line breaks"));
    let crlf_to = compose(
        &admin,
        &provider,
        &[("to", "ann@example.com\r\nRCPT TO:<x@evil.example>")],
    )
    .await?;
    assert_eq!(crlf_to.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(rows(&app).await?.is_empty(), "nothing was stored");
    assert!(server.messages().is_empty());
    Ok(())
}
both!(compose_rejects_header_injection_and_names_each_field);

async fn only_editors_and_admins_compose_and_messages_stay_in_their_workspace(
    backend: Backend,
) -> TestResult {
    let (app, admin, _server, provider) = sending_app(backend).await?;
    compose(&admin, &provider, &[("to", "ann@example.com")]).await?;
    let done = settle(&app, &["sent"]).await?;
    let viewer = app.member(&admin, "view@example.com", "viewer").await?;
    assert_eq!(
        viewer.page("/w/acme/compose").await?.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        compose(&viewer, &provider, &[("to", "x@example.com")])
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );
    let page = format!("/w/acme/messages/{}", done[0].id);
    assert_eq!(
        viewer.page(&page).await?.0,
        StatusCode::OK,
        "viewers read the log"
    );
    assert_eq!(
        viewer
            .post_form(&format!("{page}/retry"), &[])
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );
    let other = app.other_workspace("beta", "bea@example.com").await?;
    assert_eq!(
        other
            .page(&format!("/w/beta/messages/{}", done[0].id))
            .await?
            .0,
        StatusCode::NOT_FOUND
    );
    // Beta cannot send as acme's sender.
    let (_, acme_compose) = admin.page("/w/acme/compose").await?;
    let at = acme_compose.find("data-provider=").ok_or("acme's sender")?;
    let start = acme_compose[..at].rfind("value=\"").ok_or("its id")? + "value=\"".len();
    let acme_sender = &acme_compose[start..start + acme_compose[start..].find('"').ok_or("id")?];
    let response = compose_at(
        &other,
        "beta",
        &provider,
        &[("to", "x@example.com"), ("sender", acme_sender)],
        &[],
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("No such sender in this workspace")
    );
    Ok(())
}
both!(only_editors_and_admins_compose_and_messages_stay_in_their_workspace);

async fn metrics_need_the_bearer_token_and_count_deliveries(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| {
        s.metrics_token = Some("metrics-secret-token-1234".into())
    })
    .await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    let page = add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let provider = page.rsplit('/').next().ok_or("id")?.to_owned();
    compose(&admin, &provider, &[("to", "ann@example.com")]).await?;
    settle(&app, &["sent"]).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", app.base);
    assert_eq!(
        client.get(&url).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client.get(&url).bearer_auth("wrong").send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = client
        .get(&url)
        .bearer_auth("metrics-secret-token-1234")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await?;
    let sent_line = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "mailroom_messages_sent_total{{provider=\"{provider}\"}}"
            ))
        })
        .ok_or("a sent counter for the provider")?;
    let sent: f64 = sent_line.rsplit(' ').next().unwrap_or("0").parse()?;
    assert!(sent >= 1.0, "{sent_line}");
    for series in [
        "mailroom_queue_messages{status=\"queued\"} ",
        "mailroom_smtp_transaction_seconds_bucket",
        "mailroom_lease_reclaims_total",
    ] {
        assert!(text.contains(series), "no {series}");
    }
    // Without a configured token the endpoint does not exist.
    let plain = TestApp::spawn(backend).await?;
    assert_eq!(
        reqwest::get(format!("{}/metrics", plain.base))
            .await?
            .status(),
        StatusCode::NOT_FOUND
    );
    Ok(())
}
both!(metrics_need_the_bearer_token_and_count_deliveries);

async fn attachments_ride_on_every_message(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    let files = vec![
        ("report.txt", "text/plain", b"quarterly numbers".to_vec()),
        (
            "../../etc/pass\"wd",
            "application/octet-stream",
            vec![0u8, 1, 2, 3, 255],
        ),
    ];
    let response = compose_at(
        &admin,
        "acme",
        &provider,
        &[("to", "ann@example.com, bob@example.com")],
        &files,
    )
    .await?;
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "{}",
        response
            .text()
            .await?
            .split("<main")
            .nth(1)
            .unwrap_or_default()
    );
    let done = settle(&app, &["sent"]).await?;
    assert_eq!(done.len(), 2);
    for mail in server.messages() {
        assert!(
            mail.data.contains("Content-Type: multipart/mixed"),
            "{}",
            mail.data
        );
        assert!(mail.data.contains("filename=\"report.txt\""));
        assert!(
            mail.data.contains("filename=\"passwd\""),
            "paths and quotes are stripped from names"
        );
        assert!(mail.data.contains("Hi there."));
    }
    let (_, html) = admin
        .page(&format!("/w/acme/messages/{}", done[0].id))
        .await?;
    assert!(html.contains("report.txt") && html.contains("17 bytes"));
    Ok(())
}
both!(attachments_ride_on_every_message);

async fn attachments_over_the_limit_are_refused_with_the_limit_named(
    backend: Backend,
) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.attachment_limit_mb = 1).await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    let page = add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let provider = page.rsplit('/').next().ok_or("id")?.to_owned();
    let big = vec![("big.bin", "application/octet-stream", vec![7u8; 1_600_000])];
    let response = compose_at(
        &admin,
        "acme",
        &provider,
        &[("to", "ann@example.com")],
        &big,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(
        html.contains("id=\"e-attachments\"") && html.contains("at most 1 MB"),
        "the error names the limit"
    );
    assert!(
        html.contains("value=\"ann@example.com\"") || html.contains(">ann@example.com</textarea>"),
        "typed values are kept"
    );
    let huge = vec![("huge.bin", "application/octet-stream", vec![7u8; 4_000_000])];
    let response = compose_at(
        &admin,
        "acme",
        &provider,
        &[("to", "ann@example.com")],
        &huge,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await?.contains("at most 1 MB"));
    assert!(rows(&app).await?.is_empty(), "nothing was stored");
    Ok(())
}
both!(attachments_over_the_limit_are_refused_with_the_limit_named);

async fn a_552_after_data_fails_at_once(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(
        Stage::Data,
        Fault::Reply("552 5.2.2 Mailbox full".into()),
        1,
    );
    compose(
        &admin,
        &provider,
        &[("to", "full@example.com"), ("retry_count", "3")],
    )
    .await?;
    let done = settle(&app, &["failed"]).await?;
    assert_eq!(
        (
            done[0].attempts,
            done[0].smtp_code,
            done[0].smtp_enhanced.as_deref()
        ),
        (1, Some(552), Some("5.2.2"))
    );
    assert!(server.messages().is_empty());
    Ok(())
}
both!(a_552_after_data_fails_at_once);

async fn a_stalled_server_times_out_and_the_message_is_retried(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| {
        s.retry_base_secs = 0;
        s.smtp_timeout_secs = 1;
    })
    .await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    let page = add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let provider = page.rsplit('/').next().ok_or("id")?.to_owned();
    server.fail(Stage::Mail, Fault::Stall, 1);
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("retry_count", "2")],
    )
    .await?;
    let done = settle(&app, &["sent", "failed"]).await?;
    assert_eq!(
        (done[0].status.as_str(), done[0].attempts),
        ("sent", 2),
        "{done:?}"
    );
    let (_, html) = admin
        .page(&format!("/w/acme/messages/{}", done[0].id))
        .await?;
    assert!(
        html.contains("no answer within"),
        "the timeline names the timeout"
    );
    Ok(())
}
both!(a_stalled_server_times_out_and_the_message_is_retried);

async fn deleting_a_provider_cancels_its_unsent_mail(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("send_at", LATER_FORM.as_str())],
    )
    .await?;
    let response = admin
        .post_form(&format!("/w/acme/providers/{provider}/delete"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let after = rows(&app).await?;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].status, "cancelled");
    assert_eq!(after[0].result, "provider deleted");
    // Retry now cannot send it some other way, and nothing reached the outbox.
    admin
        .post_form(&format!("/w/acme/messages/{}/retry", after[0].id), &[])
        .await?;
    app.run_queue_until_empty().await?;
    assert_eq!(rows(&app).await?[0].status, "cancelled");
    assert!(
        !app.dir.path().join("outbox").exists(),
        "nothing went through the system provider"
    );
    assert!(server.messages().is_empty());
    Ok(())
}
both!(deleting_a_provider_cancels_its_unsent_mail);

async fn a_send_cut_off_after_data_began_is_flagged_as_a_possible_duplicate(
    backend: Backend,
) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(Stage::Data, Fault::Drop, 1);
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com"), ("retry_count", "2")],
    )
    .await?;
    let done = settle(&app, &["sent"]).await?;
    assert_eq!(done[0].attempts, 2);
    let (_, html) = admin
        .page(&format!("/w/acme/messages/{}", done[0].id))
        .await?;
    assert!(
        html.contains("<dt>Possible duplicate</dt><dd>yes"),
        "the cut-off attempt may have been delivered"
    );
    assert!(html.contains("may have been delivered"));
    Ok(())
}
both!(a_send_cut_off_after_data_began_is_flagged_as_a_possible_duplicate);

async fn a_rate_limited_provider_does_not_starve_the_others(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.delivery_in_flight = 3).await?;
    let admin = app.setup().await?;
    let slow_server = SmtpServer::start().await?;
    let fast_server = SmtpServer::start().await?;
    let mut ids = Vec::new();
    for (name, server, per_minute, account) in [
        ("Slow", &slow_server, "1", "slow@example.com"),
        ("Fast", &fast_server, "", "fast@example.com"),
    ] {
        let port = server.port.to_string();
        let response = admin
            .post_form(
                "/w/acme/providers",
                &[
                    ("kind", "smtp"),
                    ("name", name),
                    ("host", "127.0.0.1"),
                    ("port", &port),
                    ("tls", "none"),
                    ("account_address", account),
                    ("max_connections", "1"),
                    ("per_minute", per_minute),
                ],
            )
            .await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let id = location(&response)
            .rsplit('/')
            .next()
            .ok_or("id")?
            .to_owned();
        crate::providers::ready_sender(&admin, server, &id, name, account).await?;
        ids.push(id);
    }
    compose(
        &admin,
        &ids[0],
        &[(
            "to",
            "a1@example.com, a2@example.com, a3@example.com, a4@example.com, a5@example.com",
        )],
    )
    .await?;
    compose(&admin, &ids[1], &[("to", "b@example.com")]).await?;
    // The slow provider sends one a minute; the fast one's message still goes at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fast_server.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the fast provider's message was starved"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slow_server.messages().len() <= 1,
        "the slow provider keeps to its limit"
    );
    Ok(())
}
both!(a_rate_limited_provider_does_not_starve_the_others);

async fn a_refusal_older_than_the_last_check_turns_nothing_red(backend: Backend) -> TestResult {
    use mailroom::delivery::outcome::{Outcome, OutcomeKind, Reply, apply};
    let dir = tempfile::tempdir()?;
    let (url, _guard) = fresh_database(backend, dir.path());
    let db = mailroom::db::Db::open(&url, 2)?;
    let workspace = mailroom::bench::seed(&db, "127.0.0.1:9".parse()?, 1, 64, 1).await?;
    let verdict = db
        .write(move |conn| {
            let now = mailroom::db::now();
            let provider = mailroom::delivery::queries::active_providers(conn)?
                .first()
                .map(|p| p.id);
            let claimed = mailroom::delivery::queries::claim_due(
                conn,
                "node-a",
                now,
                now + chrono::Duration::minutes(1),
                provider,
                10,
            )?;
            let message = claimed
                .into_iter()
                .next()
                .ok_or(mailroom::error::AppError::NotFound)?;
            let provider = message
                .provider_id
                .ok_or(mailroom::error::AppError::NotFound)?;
            // The pool saw the provider before its last (green) check.
            let seen = Some(now - chrono::Duration::hours(1));
            let refusal = Outcome {
                message,
                kind: OutcomeKind::ProviderRefused(Reply::text("535 5.7.8 stale"), seen),
            };
            apply(
                conn,
                "node-a",
                vec![refusal],
                std::time::Duration::ZERO,
                "mailroom@localhost",
            )?;
            let provider =
                mailroom::providers::queries::find_by_workspace_and_id(conn, workspace, provider)?
                    .ok_or(mailroom::error::AppError::NotFound)?;
            let rows = mailroom::messages::queries::page(
                conn,
                workspace,
                &mailroom::messages::queries::LogFilter::default(),
                10,
            )?;
            Ok((
                provider.status,
                rows[0].status.to_string(),
                rows[0].attempts,
            ))
        })
        .await?;
    assert_eq!(
        verdict,
        ("active".to_owned(), "queued".to_owned(), 0),
        "stale: provider stays green, message queued again, uncounted"
    );
    Ok(())
}
both!(a_refusal_older_than_the_last_check_turns_nothing_red);

/// Implicit TLS (port 465 style, over our own TCP_NODELAY socket) and STARTTLS: the server's
/// certificate is verified (an unknown CA turns the provider red), a CA the operator names
/// in `smtp_ca_file` is trusted, and the message travels encrypted.
async fn tls_providers_verify_the_certificate_and_send_encrypted(backend: Backend) -> TestResult {
    for (mode, tls) in [(Tls::Implicit, "tls"), (Tls::StartTls, "starttls")] {
        let (server, ca) = SmtpServer::start_tls(mode).await?;
        server.require_credentials(SMTP_USER, SMTP_PASSWORD);
        let port = server.port.to_string();
        let mut form = provider_form(&port, SMTP_PASSWORD);
        form.retain(|(key, _)| *key != "tls");
        form.push(("tls", tls));

        // Without the CA the certificate is refused: not saved, saying why.
        let (untrusting, admin) = TestApp::with_admin(backend).await?;
        let response = admin.post_form("/w/acme/providers", &form).await?;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = response.text().await?;
        assert!(html.contains("certificate"), "{tls}: says why: {html}");
        assert_eq!(
            server.auth_attempts(),
            0,
            "no password sent to an unverified server"
        );
        drop(untrusting);

        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca)?;
        let app = TestApp::spawn_with(backend, |s| {
            s.retry_base_secs = 0;
            s.smtp_ca_file = Some(ca_file.clone());
        })
        .await?;
        let admin = app.setup().await?;
        let response = admin.post_form("/w/acme/providers", &form).await?;
        let page = location(&response);
        let (_, html) = admin.page(&page).await?;
        assert!(html.contains("badge green\">active"), "{tls}: {html}");
        assert!(
            html.contains("over TLS"),
            "{tls}: the check says so: {html}"
        );
        let provider = page.rsplit('/').next().ok_or("provider id")?;
        crate::providers::ready_sender(&admin, &server, provider, "Acme Ops", "ops@example.com")
            .await?;
        let response = compose(&admin, provider, &[("to", "reader@example.net")]).await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{tls}");
        let sent = settle(&app, &["sent", "failed"]).await?;
        assert_eq!(sent[0].status, "sent", "{tls}: {sent:?}");
        let captured = server.messages();
        assert_eq!(captured.len(), 1, "{tls}");
        assert!(
            captured[0].encrypted,
            "{tls}: the message travelled over TLS"
        );
    }
    Ok(())
}
both!(tls_providers_verify_the_certificate_and_send_encrypted);

/// A deleted provider's pool is closed: its idle connection says QUIT instead of staying
/// open until the process restarts.
async fn a_deleted_providers_connections_are_closed(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.lease_secs = 5).await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let page = add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let provider = page.rsplit('/').next().ok_or("provider id")?;
    compose(&admin, provider, &[("to", "ann@example.com")]).await?;
    settle(&app, &["sent"]).await?;
    assert_eq!(
        server.open_connections(),
        1,
        "kept open for the next message"
    );
    let response = admin
        .post_form(&format!("/w/acme/providers/{provider}/delete"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the pool was never closed");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
both!(a_deleted_providers_connections_are_closed);

/// The ingest writer commits concurrent requests together; one that cannot be stored (its
/// provider vanished between the check and the insert) fails alone.
async fn a_request_that_cannot_be_stored_fails_alone(backend: Backend) -> TestResult {
    use mailroom::messages::ingest::{Ingest, Prepared};
    use mailroom::messages::model::{NewMessage, NewSend, Origin, Status};
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let db = app.db();
    let workspace = db
        .run(|conn| {
            mailroom::workspaces::queries::find_by_slug(conn, "acme")?
                .ok_or(mailroom::error::AppError::NotFound)
        })
        .await?;
    let ingest = Ingest::start(db.clone(), app.engine.clone(), 1);
    let request = |provider: Option<i64>, to: &str| {
        let now = mailroom::db::now();
        Prepared {
            send: NewSend::new(workspace.id, "ops@example.com", "S".into(), "x".into(), now),
            files: Vec::new(),
            rows: vec![NewMessage {
                provider_id: provider.map(mailroom::providers::model::ProviderId),
                status: Status::Held,
                hold_reason: Some("api".into()),
                max_attempts: 1,
                ..NewMessage::email(
                    workspace.id,
                    mailroom::messages::ingest::UNSTORED,
                    Origin::Sys,
                    "ops@example.com",
                    to.into(),
                    now,
                )
            }],
            after: None,
        }
    };
    let (good, bad, also_good) = futures_util::future::join3(
        ingest.submit(request(None, "a@example.com")),
        ingest.submit(request(Some(999_999), "b@example.com")),
        ingest.submit(request(None, "c@example.com")),
    )
    .await;
    assert_eq!(good?.len(), 1);
    assert_eq!(also_good?.len(), 1);
    assert!(
        matches!(bad, Err(mailroom::error::AppError::Conflict(_))),
        "no such provider: a conflict, not a server error: {bad:?}"
    );
    let stored: Vec<String> = rows(&app).await?.into_iter().map(|r| r.recipient).collect();
    assert_eq!(stored, vec!["a@example.com", "c@example.com"]);
    Ok(())
}
both!(a_request_that_cannot_be_stored_fails_alone);

/// Security review, item 3: API mail of a deleted provider never goes out through the
/// operator's system relay (nor anywhere): not on a Retry of a failed message, not after a
/// 4xx that arrives once the provider is gone, not when a dead node's lease is reclaimed.
async fn mail_of_a_deleted_provider_never_goes_out_through_the_system_relay(
    backend: Backend,
) -> TestResult {
    use serde_json::json;
    let relay = SmtpServer::start().await?;
    let relay_port = relay.port;
    let app = TestApp::spawn_with(backend, |s| {
        s.retry_base_secs = 0;
        // Leases renewed and reclaimed every 5/3 seconds.
        s.lease_secs = 5;
        s.system_smtp_host = Some("127.0.0.1".into());
        s.system_smtp_port = relay_port;
        s.system_smtp_tls = "none".into();
    })
    .await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let page = crate::providers::add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    let provider = page.rsplit('/').next().ok_or("provider id")?.to_owned();
    // With the operator's relay set, a sender's code comes through it.
    crate::providers::ready_sender(&admin, &relay, &provider, "Acme Ops", "ops@example.com")
        .await?;
    let key = crate::api::create_key(&admin, "acme", "Help desk", "send+read", "").await?;
    let api = crate::api::Api::new(&app, &key);
    let send = |to: &str| json!({"to": [to], "subject": "Order", "provider": "Ops SMTP", "from": "ops@example.com", "text": "Hi."});

    // 1. A failed API message.
    server.fail(
        Stage::Rcpt,
        Fault::Reply("550 5.1.1 No such user".into()),
        1,
    );
    let (_, answer) = api
        .post("/messages?wait=10", &send("gone@example.com"))
        .await?;
    assert_eq!(answer["messages"][0]["status"], "failed", "{answer}");
    let failed = answer["messages"][0]["id"].as_i64().ok_or("id")?;
    // 2. One in flight when the provider goes; its server answers 451 a little later.
    server.fail(
        Stage::Data,
        Fault::Slow(
            Duration::from_millis(1500),
            "451 4.3.0 Try again later".into(),
        ),
        1,
    );
    let (_, answer) = api.post("/messages", &send("slow@example.com")).await?;
    let in_flight = answer["messages"][0]["id"].as_i64().ok_or("id")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rows(&app)
        .await?
        .iter()
        .any(|r| r.id == in_flight && r.status == "sending")
    {
        assert!(Instant::now() < deadline, "the message never started");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // 3. One a node had claimed before the deletion and then died with (arranged below).
    let mut held = send("claimed@example.com");
    held["hold"] = json!(true);
    let (_, answer) = api.post("/messages", &held).await?;
    let claimed = answer["messages"][0]["id"].as_i64().ok_or("id")?;

    let response = admin
        .post_form(&format!("/w/acme/providers/{provider}/delete"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    app.db()
        .run(move |conn| {
            use mailroom::db::schema::messages::dsl::*;
            let past = mailroom::db::now() - chrono::Duration::minutes(1);
            Ok(diesel::update(messages.find(claimed))
                .set((
                    status.eq("sending"),
                    lease_owner.eq("a node that died"),
                    lease_until.eq(past),
                    attempts.eq(1),
                ))
                .execute(conn)?)
        })
        .await?;

    // The Retry is refused and says why; the page offers none.
    let retry = admin
        .post_form(&format!("/w/acme/messages/{failed}/retry"), &[])
        .await?;
    assert_eq!(retry.status(), StatusCode::SEE_OTHER);
    let (_, html) = admin.page(&format!("/w/acme/messages/{failed}")).await?;
    assert!(
        html.contains("cannot be retried: provider deleted"),
        "{html}"
    );
    assert!(!html.contains("Retry now"));

    let done = settle(&app, &["failed", "cancelled"]).await?;
    let by_id = |id: i64| done.iter().find(|r| r.id == id).cloned().ok_or("row");
    assert_eq!(by_id(failed)?.status, "failed");
    for id in [in_flight, claimed] {
        let row = by_id(id)?;
        assert_eq!(row.status, "cancelled", "{row:?}");
        assert_eq!(row.result, "provider deleted", "{row:?}");
    }
    // Another round of the engine sends nothing.
    app.run_queue_until_empty().await?;
    assert!(
        relay.messages().is_empty(),
        "nothing through the system relay"
    );
    assert!(
        server.messages().is_empty(),
        "nothing through the provider's server"
    );
    assert!(rows(&app).await?.iter().all(|r| r.status != "queued"));
    Ok(())
}
both!(mail_of_a_deleted_provider_never_goes_out_through_the_system_relay);

async fn running_the_queue_until_empty_waits_for_every_send_and_its_record(
    backend: Backend,
) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    // A slow server: a wait that returned early would find them unsent.
    server.delay_each(std::time::Duration::from_millis(300));
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com, bob@example.com, cy@example.com")],
    )
    .await?;
    app.run_queue_until_empty().await?;
    assert_eq!(server.messages().len(), 3);
    let done = rows(&app).await?;
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.status == "sent"), "{done:?}");
    Ok(())
}
both!(running_the_queue_until_empty_waits_for_every_send_and_its_record);

/// A hostile server decides the bytes of its replies: a NUL (which PostgreSQL cannot
/// store), line breaks and escapes are stored as spaces, and the other messages of the
/// batch are recorded all the same (before, the batch's write failed forever on
/// PostgreSQL and stopped every claim).
async fn a_hostile_reply_is_stored_cleaned_and_holds_back_nothing(backend: Backend) -> TestResult {
    let (app, admin, server, provider) = sending_app(backend).await?;
    server.fail(
        Stage::Data,
        Fault::Reply("250 2.0.0 queued\0 as \u{1b}[31mred\u{7f}".into()),
        1,
    );
    compose(
        &admin,
        &provider,
        &[("to", "ann@example.com, bob@example.com, cy@example.com")],
    )
    .await?;
    app.run_queue_until_empty().await?;
    let done = rows(&app).await?;
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.status == "sent"), "{done:?}");
    assert!(
        done.iter().all(|r| !r.result.chars().any(char::is_control)),
        "{done:?}"
    );
    // The reply stays in the attempt timeline, cleaned.
    let mut shown = 0;
    for row in &done {
        let (_, page) = admin.page(&format!("/w/acme/messages/{}", row.id)).await?;
        if page.contains("250 2.0.0 queued  as  [31mred") {
            shown += 1;
        }
    }
    assert_eq!(shown, 1, "one message shows the hostile reply, cleaned");
    Ok(())
}
both!(a_hostile_reply_is_stored_cleaned_and_holds_back_nothing);
