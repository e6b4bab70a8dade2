//! Senders (issue 17): create one on a domain or a provider's own account, validate its
//! address with a one-time code mailed through the provider, and see when it is ready.

use reqwest::StatusCode;

use crate::both;
use crate::dns_server::DnsServer;
use crate::helpers::*;
use crate::smtp_server::{Fault, SmtpServer, Stage};

/// An app whose domain checks ask `dns`, with a green provider (account
/// `ops@example.com`, no sign-in) on a test SMTP server. Returns the provider's id.
async fn app_with_provider(
    backend: Backend,
    dns: &DnsServer,
) -> Result<(TestApp, Browser, SmtpServer, String), Box<dyn std::error::Error>> {
    let servers = dns.addr.to_string();
    let app = TestApp::spawn_with(backend, move |s| s.dns_servers = servers).await?;
    let admin = app.setup().await?;
    let smtp = SmtpServer::start().await?;
    let provider = crate::providers::add_open_provider(&admin, &smtp, "ops@example.com").await?;
    Ok((app, admin, smtp, provider))
}

async fn create_sender(
    admin: &Browser,
    provider: &str,
    name: &str,
    address: &str,
) -> reqwest::Result<reqwest::Response> {
    admin
        .post_form(
            "/w/acme/senders",
            &[("name", name), ("address", address), ("provider", provider)],
        )
        .await
}

/// The code in the last message the SMTP server took for `address`.
fn code_for(smtp: &SmtpServer, address: &str) -> Option<String> {
    let mail = smtp
        .messages()
        .into_iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == address))?;
    let at = mail.data.find("Your code is ")? + "Your code is ".len();
    Some(mail.data[at..at + 6].to_owned())
}

fn codes_mailed(smtp: &SmtpServer, address: &str) -> usize {
    smtp.messages()
        .iter()
        .filter(|m| m.to.iter().any(|t| t == address))
        .count()
}

async fn verify(
    admin: &Browser,
    page: &str,
    code: &str,
) -> Result<(StatusCode, String), Box<dyn std::error::Error>> {
    let response = admin
        .post_form(&format!("{page}/verify"), &[("code", code)])
        .await?;
    let status = response.status();
    if status == StatusCode::SEE_OTHER {
        return Ok((status, admin.page(page).await?.1));
    }
    Ok((status, response.text().await?))
}

async fn a_sender_on_a_domain_is_ready_once_validated_and_authenticated(
    backend: Backend,
) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin, smtp, provider) = app_with_provider(backend, &dns).await?;
    let (_, empty) = admin.page("/w/acme/senders").await?;
    assert!(empty.contains("No senders yet"));
    // The overview says what to do next, not nothing.
    let (_, overview) = admin.page("/w/acme/").await?;
    assert!(overview.contains("No sender is ready yet"), "{overview}");
    assert!(overview.contains("create a sender under"));
    // Not one of the workspace's domains, nor the provider's account: refused by name.
    let response = create_sender(&admin, &provider, "Acme News", "news@example.test").await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("id=\"e-address\""), "{html}");
    assert!(html.contains("Add its domain under Domains first"));

    let response = admin
        .post_form("/w/acme/domains", &[("name", "example.test")])
        .await?;
    let domain_page = location(&response);
    let response = create_sender(&admin, &provider, "Acme News", "news@Example.TEST").await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await?
    );
    let page = location(&response);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("A 6-digit code was mailed to news@example.test"),
        "{html}"
    );
    // Mailed through the sender's own provider, From the sender.
    let code = code_for(&smtp, "news@example.test").ok_or("a code was mailed")?;
    let mail = smtp.messages().last().cloned().ok_or("mail")?;
    assert_eq!(mail.from, "news@example.test");
    // The code is nowhere in the log, the database or the page.
    let (_, history) = admin.page("/w/acme/messages").await?;
    assert!(!history.contains(&code));
    assert!(!html.contains(&code));
    let stored: Vec<Option<String>> = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::senders::dsl::*;
            Ok(senders.select(code_hash).load(conn)?)
        })
        .await?;
    assert!(
        stored
            .iter()
            .flatten()
            .all(|h| !h.contains(&code) && h.len() == 64)
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, html) = verify(&admin, &page, wrong).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("4 tries left"), "{html}");
    let (status, html) = verify(&admin, &page, &format!("{} {}", &code[..3], &code[3..])).await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "spaces in the code are fine");
    assert!(html.contains("news@example.test is validated"));
    assert!(
        html.contains("not ready"),
        "the domain is not authenticated yet"
    );
    assert!(html.contains("Publish the DNS records of example.test"));

    // The domain authenticated: ready.
    let (_, html) = admin.page(&domain_page).await?;
    for n in 1..=4 {
        let name = crate::domains::text_of(&html, &format!("rec-{n}-name")).ok_or("name")?;
        let value = crate::domains::text_of(&html, &format!("rec-{n}-value")).ok_or("value")?;
        dns.txt_split(&name, &value, 200);
    }
    admin
        .post_form(&format!("{domain_page}/check"), &[])
        .await?;
    let (_, list) = admin.page("/w/acme/senders").await?;
    assert!(list.contains("badge green\">ready"), "{list}");
    // The overview: the sender, both validations, its send count; the domain's state.
    let (_, overview) = admin.page("/w/acme/").await?;
    assert!(!overview.contains("No sender is ready yet"));
    assert!(overview.contains("news@example.test"));
    assert_eq!(
        overview.matches("badge green\">yes").count(),
        2,
        "{overview}"
    );
    assert!(overview.contains("example.test <span class=\"badge green\">authenticated"));
    // The code worked once: it is gone.
    let (_, html) = verify(&admin, &page, &code).await?;
    assert!(html.contains("is validated"));
    let (_, audit) = admin.page("/w/acme/audit").await?;
    for action in ["sender.created", "sender.validated"] {
        assert!(audit.contains(action), "{action}");
    }
    assert!(!audit.contains(&code));
    Ok(())
}
both!(a_sender_on_a_domain_is_ready_once_validated_and_authenticated);

async fn codes_expire_lock_after_five_tries_and_are_throttled(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin, smtp, provider) = app_with_provider(backend, &dns).await?;
    // The provider's own account needs no domain.
    let response = create_sender(&admin, &provider, "Ops", "ops@example.com").await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = location(&response);
    let first = code_for(&smtp, "ops@example.com").ok_or("a code")?;
    // Another code at once: refused, nothing mailed.
    admin.post_form(&format!("{page}/code"), &[]).await?;
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("wait"), "{html}");
    assert_eq!(codes_mailed(&smtp, "ops@example.com"), 1);
    // Five wrong tries: then even the right code is refused.
    let wrong = if first == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        assert_eq!(
            verify(&admin, &page, wrong).await?.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let (status, html) = verify(&admin, &page, &first).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Too many wrong tries"), "{html}");

    let db = app.db();
    let age = |sent_ago: chrono::Duration, expires_in: chrono::Duration| {
        let db = db.clone();
        async move {
            db.write(move |conn| {
                use diesel::prelude::*;
                use mailroom::db::schema::senders::dsl::*;
                let now = mailroom::db::now();
                Ok(diesel::update(senders)
                    .set((
                        code_sent_at.eq(now - sent_ago),
                        code_expires_at.eq(now + expires_in),
                    ))
                    .execute(conn)?)
            })
            .await
        }
    };
    // A minute later a new code may be sent; it starts with five tries again.
    age(chrono::Duration::seconds(61), chrono::Duration::minutes(14)).await?;
    admin.post_form(&format!("{page}/code"), &[]).await?;
    assert_eq!(codes_mailed(&smtp, "ops@example.com"), 2);
    let second = code_for(&smtp, "ops@example.com").ok_or("a code")?;
    // Expired: refused.
    age(chrono::Duration::minutes(16), chrono::Duration::minutes(-1)).await?;
    let (status, html) = verify(&admin, &page, &second).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("expired"), "{html}");
    admin.post_form(&format!("{page}/code"), &[]).await?;
    let third = code_for(&smtp, "ops@example.com").ok_or("a code")?;
    assert_eq!(codes_mailed(&smtp, "ops@example.com"), 3);
    let (status, html) = verify(&admin, &page, &third).await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        html.contains("badge green\">ready"),
        "validated and the provider's own account: {html}"
    );
    Ok(())
}
both!(codes_expire_lock_after_five_tries_and_are_throttled);

async fn a_sender_the_provider_refuses_is_not_created(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (_app, admin, smtp, provider) = app_with_provider(backend, &dns).await?;
    smtp.fail(
        Stage::Mail,
        Fault::Reply("553 5.7.1 Sender address rejected: not owned by user".into()),
        1,
    );
    let response = create_sender(&admin, &provider, "Ops", "ops@example.com").await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("refused this sender"), "{html}");
    assert!(html.contains("553 5.7.1 Sender address rejected"));
    assert!(
        html.contains("value=\"ops@example.com\""),
        "what was typed is kept"
    );
    assert!(smtp.messages().is_empty(), "nothing was sent");
    let (_, list) = admin.page("/w/acme/senders").await?;
    assert!(list.contains("No senders yet"));
    // Header injection in the name or address is refused by field.
    for (field, name, address) in [
        ("name", "Ops\r\nBcc: x@evil.test", "ops@example.com"),
        ("address", "Ops", "ops@example.com\r\nBcc: x@evil.test"),
    ] {
        let response = create_sender(&admin, &provider, name, address).await?;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            response
                .text()
                .await?
                .contains(&format!("id=\"e-{field}\""))
        );
    }
    Ok(())
}
both!(a_sender_the_provider_refuses_is_not_created);

async fn senders_belong_to_admins_of_their_workspace(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin, _smtp, provider) = app_with_provider(backend, &dns).await?;
    let response = create_sender(&admin, &provider, "Ops", "ops@example.com").await?;
    let page = location(&response);
    let id = page.rsplit('/').next().ok_or("id")?.to_owned();
    let editor = app.member(&admin, "editor@example.com", "editor").await?;
    assert_eq!(editor.page(&page).await?.0, StatusCode::FORBIDDEN);
    assert_eq!(
        editor.page("/w/acme/senders").await?.0,
        StatusCode::FORBIDDEN
    );
    for action in ["code", "verify", "delete"] {
        let response = editor.post_form(&format!("{page}/{action}"), &[]).await?;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
    }
    let other = app.other_workspace("globex", "boss@globex.example").await?;
    assert_eq!(other.page(&page).await?.0, StatusCode::NOT_FOUND);
    for action in ["code", "verify", "delete"] {
        let response = other
            .post_form(&format!("/w/globex/senders/{id}/{action}"), &[])
            .await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    // Another workspace's provider cannot be picked.
    let response = other
        .post_form(
            "/w/globex/senders",
            &[
                ("name", "X"),
                ("address", "ops@example.com"),
                ("provider", &provider),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = admin
        .post_form_without_csrf(&format!("{page}/delete"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Delete asks first, saying how many messages are waiting.
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("Delete ops@example.com?"));
    assert!(html.contains("None of its messages are waiting"));
    let response = admin.post_form(&format!("{page}/delete"), &[]).await?;
    assert_eq!(location(&response), "/w/acme/senders");
    assert_eq!(admin.page(&page).await?.0, StatusCode::NOT_FOUND);
    let (_, audit) = admin.page("/w/acme/audit").await?;
    assert!(audit.contains("sender.deleted"));
    Ok(())
}
both!(senders_belong_to_admins_of_their_workspace);

async fn only_ready_senders_send_from_the_console_and_the_api(backend: Backend) -> TestResult {
    use serde_json::json;
    let dns = DnsServer::start().await?;
    let (app, admin, smtp, provider) = app_with_provider(backend, &dns).await?;
    // A sender whose address is not validated yet is not on the picker, and refused by id.
    let response = create_sender(&admin, &provider, "Ops", "ops@example.com").await?;
    let page = location(&response);
    let id = page.rsplit('/').next().ok_or("id")?.to_owned();
    let (_, compose) = admin.page("/w/acme/compose").await?;
    assert!(compose.contains("No sender is ready yet"), "{compose}");
    let response = crate::delivery::compose_at(
        &admin,
        "acme",
        &provider,
        &[("to", "ann@example.com"), ("sender", &id)],
        &[],
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("ops@example.com cannot send yet")
    );

    // Validated: it sends, From its name and address.
    let code = code_for(&smtp, "ops@example.com").ok_or("a code")?;
    verify(&admin, &page, &code).await?;
    smtp.forget_messages();
    let response =
        crate::delivery::compose_at(&admin, "acme", &provider, &[("to", "ann@example.com")], &[])
            .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    app.run_queue_until_empty().await?;
    let sent = smtp.messages();
    assert!(
        sent[0].data.contains("From: Ops <ops@example.com>"),
        "{}",
        sent[0].data
    );

    // The API: `from` names a ready sender; without it, the key's default sender.
    let key = crate::api::create_key(&admin, "acme", "Desk", "send+read", "").await?;
    let api = crate::api::Api::new(&app, &key);
    let body = json!({"to": ["bob@example.com"], "subject": "Hi", "text": "x"});
    let (status, problem) = api.post("/messages", &body).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(crate::api::field_of(&problem), vec!["from"]);
    let mut named = body.clone();
    named["from"] = json!("Ops <OPS@example.com>");
    let (status, answer) = api.post("/messages", &named).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let mut stranger = body.clone();
    stranger["from"] = json!("ceo@example.com");
    let (status, problem) = api.post("/messages", &stranger).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(crate::api::field_of(&problem), vec!["from"]);
    let mut elsewhere = named.clone();
    elsewhere["provider"] = json!("Another");
    let (status, problem) = api.post("/messages", &elsewhere).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(crate::api::field_of(&problem), vec!["provider"]);
    let mut far = named.clone();
    far["send_at"] = json!("2099-01-01T00:00:00Z");
    let (status, problem) = api.post("/messages", &far).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(crate::api::field_of(&problem), vec!["send_at"]);
    // The key's default sender, set by an admin on the keys page.
    let (_, keys) = admin.page("/w/acme/api-keys").await?;
    let at = keys.find("/api-keys/").ok_or("a key")? + "/api-keys/".len();
    let key_id = &keys[at..at + keys[at..].find('/').ok_or("id")?];
    let response = admin
        .post_form(
            &format!("/w/acme/api-keys/{key_id}/sender"),
            &[("sender", &id)],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, answer) = api.post("/messages?wait=10", &body).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let last = smtp.messages().last().cloned().ok_or("sent")?;
    assert_eq!(last.from, "ops@example.com");
    // Another workspace's sender cannot be a key's default.
    let other = app.other_workspace("globex", "boss@globex.example").await?;
    let response = other
        .post_form(
            &format!("/w/globex/api-keys/{key_id}/sender"),
            &[("sender", &id)],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    Ok(())
}
both!(only_ready_senders_send_from_the_console_and_the_api);

async fn tries_at_once_cannot_exceed_five_and_codes_are_capped_per_address(
    backend: Backend,
) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin, smtp, provider) = app_with_provider(backend, &dns).await?;
    let response = create_sender(&admin, &provider, "Ops", "ops@example.com").await?;
    let page = location(&response);
    let code = code_for(&smtp, "ops@example.com").ok_or("a code")?;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    // Eight wrong tries at once: five are counted, the rest refused; the code is dead.
    let tries: Vec<_> = (0..8).map(|_| verify(&admin, &page, wrong)).collect();
    for outcome in futures_util::future::join_all(tries).await {
        assert_eq!(outcome?.0, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (status, html) = verify(&admin, &page, &code).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Too many wrong tries"), "{html}");
    // Ten codes a day per address, counted from the audit log: deleting the sender and
    // creating it again does not reset them.
    app.db()
        .write(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::audit_log::dsl::*;
            use mailroom::db::schema::workspaces;
            let acme: i64 = workspaces::table
                .filter(workspaces::slug.eq("acme"))
                .select(workspaces::id)
                .first(conn)?;
            let now = mailroom::db::now();
            for _ in 0..9 {
                diesel::insert_into(audit_log)
                    .values((
                        workspace_id.eq(Some(acme)),
                        actor_email.eq("admin@example.com"),
                        action.eq("sender.code_mailed"),
                        target.eq("ops@example.com"),
                        detail.eq(""),
                        ip.eq(""),
                        created_at.eq(now),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await?;
    admin.post_form(&format!("{page}/delete"), &[]).await?;
    smtp.forget_messages();
    // Typed in another case: the same mailbox, the same count.
    let response = create_sender(&admin, &provider, "Ops", "OPS@example.com").await?;
    let page = location(&response);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("has been sent 10 codes in the last day"),
        "{html}"
    );
    assert!(html.contains("OPS@example.com"), "kept as typed");
    assert!(smtp.messages().is_empty(), "no code mailed");
    Ok(())
}
both!(tries_at_once_cannot_exceed_five_and_codes_are_capped_per_address);
