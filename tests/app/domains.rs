//! Domains (issue 17): add a domain, publish its records at a real DNS server in the test
//! process, check it, rotate its keys, and who may do any of it.

use reqwest::StatusCode;

use crate::both;
use crate::dns_server::{Answer, DnsServer};
use crate::helpers::*;

/// The app with its checks pointed at `dns`.
async fn app_with_dns(
    backend: Backend,
    dns: &DnsServer,
) -> Result<(TestApp, Browser), Box<dyn std::error::Error>> {
    let servers = dns.addr.to_string();
    let app = TestApp::spawn_with(backend, move |s| {
        s.dns_servers = servers;
        s.smtp_timeout_secs = 2;
    })
    .await?;
    let admin = app.setup().await?;
    Ok((app, admin))
}

/// Adds `name`; returns the domain's page path.
async fn add_domain(admin: &Browser, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let response = admin
        .post_form("/w/acme/domains", &[("name", name)])
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await?
    );
    Ok(location(&response))
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#43;", "+")
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// The text of the element with `id` on a page (up to the next tag).
pub fn text_of(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('<')? + start;
    Some(unescape(&html[start..end]))
}

/// The records the page says to publish: (name, value) in the page's order.
fn records_on(html: &str) -> Vec<(String, String)> {
    (1..=4)
        .filter_map(|n| {
            Some((
                text_of(html, &format!("rec-{n}-name"))?,
                text_of(html, &format!("rec-{n}-value"))?,
            ))
        })
        .collect()
}

async fn check(admin: &Browser, page: &str) -> Result<String, Box<dyn std::error::Error>> {
    let response = admin.post_form(&format!("{page}/check"), &[]).await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, html) = admin.page(page).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(html)
}

/// Publishes every record the page lists (the DKIM keys split at 100 bytes, not where
/// the page splits them: joining must not depend on where the strings end).
fn publish(dns: &DnsServer, records: &[(String, String)]) {
    for (name, value) in records {
        dns.txt_split(name, value, 100);
    }
}

async fn a_domain_is_authenticated_once_its_records_pass(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin) = app_with_dns(backend, &dns).await?;
    let (_, empty) = admin.page("/w/acme/domains").await?;
    assert!(empty.contains("No domains yet"), "an empty state");
    let page = add_domain(&admin, "Example.TEST").await?;
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("Domain example.test added"),
        "stored lower-case"
    );
    let records = records_on(&html);
    let names: Vec<&str> = records.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "_mailroom.example.test",
            "mr1._domainkey.example.test",
            "mr2._domainkey.example.test",
            "_dmarc.example.test"
        ]
    );
    assert!(records[0].1.starts_with("mailroom-verification="));
    assert!(records[1].1.starts_with("v=DKIM1; k=rsa; p=MII"));
    assert_eq!(
        records[3].1,
        "v=DMARC1; p=none; rua=mailto:dmarc@example.test"
    );
    // Shown split too, every string at most 255 bytes.
    let split = text_of(&html, "rec-2-split").ok_or("the key as strings")?;
    assert!(split.matches("\" \"").count() >= 1, "{split}");
    assert!(
        split
            .split("\" \"")
            .all(|s| s.trim_matches('"').len() <= 255)
    );
    assert!(
        !html.contains("PRIVATE KEY") && !html.contains("v1:"),
        "no private key"
    );

    // Nothing published: every required record fails, and says why.
    let html = check(&admin, &page).await?;
    assert!(html.contains("not authenticated"), "{html}");
    assert!(html.contains("NXDOMAIN"));
    assert!(html.contains(&format!("answered by {}", dns.addr)));

    // Published (DKIM split at other places than the page's): authenticated. The standby
    // key is advised: a warning, not a failure.
    publish(&dns, &records[..2]);
    dns.txt("_dmarc.example.test", &["v=DMARC1; p=reject"]);
    let html = check(&admin, &page).await?;
    assert!(html.contains("is authenticated"), "{html}");
    assert!(html.contains("badge green\">authenticated"));
    assert!(html.contains("p=reject"), "any valid policy passes");
    assert!(
        html.contains("Publish it before rotating"),
        "the standby key is advised"
    );

    // A timeout or SERVFAIL changes nothing.
    dns.set("_mailroom.example.test", Answer::Silence);
    dns.set("_dmarc.example.test", Answer::ServFail);
    let html = check(&admin, &page).await?;
    assert!(html.contains("still authenticated"), "{html}");
    assert!(html.contains("not counted as a failure"));

    // A definite failure: still authenticated, marked; twice an hour apart: lost, and the
    // admins are alerted.
    dns.remove("_mailroom.example.test");
    dns.set(
        "_dmarc.example.test",
        Answer::Txt(vec![
            vec!["v=DMARC1; p=none".into()],
            vec!["v=DMARC1; p=reject".into()],
        ]),
    );
    let html = check(&admin, &page).await?;
    assert!(html.contains("stays authenticated until"), "{html}");
    assert!(html.contains("receivers ignore DMARC when there is more than one"));
    let db = app.db();
    db.write(|conn| {
        use diesel::prelude::*;
        use mailroom::db::schema::domains::dsl::*;
        Ok(diesel::update(domains)
            .set(failing_since.eq(mailroom::db::now() - chrono::Duration::minutes(61)))
            .execute(conn)?)
    })
    .await?;
    let html = check(&admin, &page).await?;
    assert!(html.contains("no longer authenticated"), "{html}");
    let alerts: i64 = db
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(origin.eq("alert"))
                .filter(recipient.eq(ADMIN))
                .count()
                .get_result(conn)?)
        })
        .await?;
    assert_eq!(alerts, 1, "the admin is alerted once");
    let (_, audit) = admin.page("/w/acme/audit").await?;
    for action in [
        "domain.added",
        "domain.authenticated",
        "domain.failing",
        "domain.unauthenticated",
    ] {
        assert!(audit.contains(action), "{action}");
    }
    Ok(())
}
both!(a_domain_is_authenticated_once_its_records_pass);

async fn keys_rotate_only_to_a_published_standby(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (_app, admin) = app_with_dns(backend, &dns).await?;
    let page = add_domain(&admin, "example.test").await?;
    let (_, html) = admin.page(&page).await?;
    let records = records_on(&html);
    publish(&dns, &records[..2]);
    publish(&dns, &records[3..]);
    check(&admin, &page).await?;
    // The standby key is not published: rotating would break signatures.
    let response = admin.post_form(&format!("{page}/rotate"), &[]).await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("Publish the standby key at mr2._domainkey.example.test"),
        "{html}"
    );
    assert_eq!(records_on(&html), records, "nothing changed");

    publish(&dns, &records[2..3]);
    check(&admin, &page).await?;
    admin.post_form(&format!("{page}/rotate"), &[]).await?;
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("mr2 signs now"), "{html}");
    let rotated = records_on(&html);
    assert_eq!(
        rotated[1].0, "mr2._domainkey.example.test",
        "the standby signs"
    );
    assert_eq!(rotated[1].1, records[2].1, "with the key already published");
    assert_eq!(rotated[2].0, "mr1._domainkey.example.test");
    assert_ne!(rotated[2].1, records[1].1, "a fresh standby key");
    assert!(html.contains("rotated after the last check"));
    // Still authenticated: the new signing key is in DNS; the new standby is not yet.
    let html = check(&admin, &page).await?;
    assert!(html.contains("still authenticated"), "{html}");
    let (_, audit) = admin.page("/w/acme/audit").await?;
    assert!(audit.contains("domain.rotated"));
    Ok(())
}
both!(keys_rotate_only_to_a_published_standby);

async fn bad_domains_are_refused_by_field(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (_app, admin) = app_with_dns(backend, &dns).await?;
    for (fields, field, why) in [
        (vec![("name", "ann@example.com")], "name", "not an address"),
        (vec![("name", "localhost")], "name", "not a domain name"),
        (vec![("name", "10.0.0.1")], "name", "IP address"),
        (
            vec![("name", "example.test"), ("standby_selector", "mr1")],
            "standby_selector",
            "selector of its own",
        ),
        (
            vec![("name", "example.test"), ("active_selector", "a.b")],
            "active_selector",
            "one DNS label",
        ),
        (
            vec![("name", "example.test"), ("dmarc_rua", "a;p=reject@x.test")],
            "dmarc_rua",
            "plain ASCII",
        ),
    ] {
        let response = admin.post_form("/w/acme/domains", &fields).await?;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = response.text().await?;
        assert!(
            html.contains(&format!("id=\"e-{field}\"")),
            "{field}: {html}"
        );
        assert!(html.contains(why), "{why}");
    }
    add_domain(&admin, "example.test").await?;
    let response = admin
        .post_form("/w/acme/domains", &[("name", "EXAMPLE.test.")])
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("already one of this workspace")
    );
    // A name like <script> is escaped wherever it is shown.
    let response = admin
        .post_form("/w/acme/domains", &[("name", "<script>x</script>.test")])
        .await?;
    let html = response.text().await?;
    assert!(!html.contains("<script>x"), "escaped");
    Ok(())
}
both!(bad_domains_are_refused_by_field);

async fn domains_belong_to_admins_of_their_workspace(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin) = app_with_dns(backend, &dns).await?;
    let page = add_domain(&admin, "example.test").await?;
    let editor = app.member(&admin, "editor@example.com", "editor").await?;
    for path in ["/w/acme/domains", page.as_str()] {
        assert_eq!(editor.page(path).await?.0, StatusCode::FORBIDDEN, "{path}");
    }
    for action in ["check", "rotate", "delete"] {
        let response = editor.post_form(&format!("{page}/{action}"), &[]).await?;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
    }
    let response = editor
        .post_form("/w/acme/domains", &[("name", "other.test")])
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Another workspace's admin: its id is not found under either workspace.
    let other = app.other_workspace("globex", "boss@globex.example").await?;
    let id = page.rsplit('/').next().ok_or("id")?;
    for path in [page.clone(), format!("/w/globex/domains/{id}")] {
        assert_eq!(other.page(&path).await?.0, StatusCode::NOT_FOUND, "{path}");
    }
    for action in ["check", "rotate", "delete"] {
        let response = other
            .post_form(&format!("/w/globex/domains/{id}/{action}"), &[])
            .await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    // Without the CSRF token, nothing happens.
    let response = admin
        .post_form_without_csrf(&format!("{page}/delete"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(admin.page(&page).await?.0, StatusCode::OK);
    // Delete asks first (a dialog on the page), then deletes.
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("Delete example.test?"));
    let response = admin.post_form(&format!("{page}/delete"), &[]).await?;
    assert_eq!(location(&response), "/w/acme/domains");
    assert_eq!(admin.page(&page).await?.0, StatusCode::NOT_FOUND);
    let (_, audit) = admin.page("/w/acme/audit").await?;
    assert!(audit.contains("domain.deleted"));
    Ok(())
}
both!(domains_belong_to_admins_of_their_workspace);

/// mail-auth's verifier, asking the test DNS server.
fn verifier(
    dns: &DnsServer,
) -> Result<mail_auth::MessageAuthenticator, Box<dyn std::error::Error>> {
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.addr.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        dns.addr.ip(),
        true,
        vec![udp, tcp],
    )]);
    Ok(mail_auth::MessageAuthenticator::new(
        config,
        ResolverOpts::default(),
    )?)
}

async fn dkim_results(
    verifier: &mail_auth::MessageAuthenticator,
    raw: &[u8],
) -> Result<Vec<mail_auth::DkimResult>, Box<dyn std::error::Error>> {
    let message = mail_auth::AuthenticatedMessage::parse(raw).ok_or("unparsable message")?;
    Ok(verifier
        .verify_dkim(&message)
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect())
}

async fn mail_from_an_authenticated_domain_is_signed_once(backend: Backend) -> TestResult {
    let dns = DnsServer::start().await?;
    let servers = dns.addr.to_string();
    let app = TestApp::spawn_with(backend, move |s| {
        s.dns_servers = servers;
        s.retry_base_secs = 1;
    })
    .await?;
    let admin = app.setup().await?;
    let smtp = crate::smtp_server::SmtpServer::start().await?;
    let provider =
        crate::providers::add_open_provider(&admin, &smtp, "ops@mail.example.test").await?;
    let send = |to: &'static str| {
        let (admin, provider) = (&admin, provider.clone());
        async move {
            let response =
                crate::delivery::compose_at(admin, SLUG, &provider, &[("to", to)], &[]).await?;
            assert!(response.status().is_redirection(), "{}", response.status());
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    crate::providers::ready_sender(&admin, &smtp, &provider, "Ops", "ops@mail.example.test")
        .await?;
    // Before the domain is authenticated: not signed.
    send("first@example.com").await?;
    app.run_queue_until_empty().await?;
    assert!(!smtp.messages()[0].data.contains("DKIM-Signature"));

    // example.test authenticated: mail from mail.example.test is signed as example.test.
    let page = add_domain(&admin, "example.test").await?;
    let (_, html) = admin.page(&page).await?;
    publish(&dns, &records_on(&html));
    assert!(check(&admin, &page).await?.contains("is authenticated"));
    send("second@example.com").await?;
    app.run_queue_until_empty().await?;
    let signed = smtp.messages()[1].clone();
    assert!(
        signed.data.starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=mr1;"
        ),
        "{}",
        signed.data
    );
    mailroom::delivery::build::check_wire(signed.data.as_bytes())?;
    let verifier = verifier(&dns)?;
    assert_eq!(
        dkim_results(&verifier, signed.data.as_bytes()).await?,
        [mail_auth::DkimResult::Pass],
        "an independent verifier says pass"
    );
    // A header changed on the way: fail.
    let altered = signed.data.replacen("Subject: ", "Subject: [changed] ", 1);
    let results = dkim_results(&verifier, altered.as_bytes()).await?;
    assert!(
        matches!(results.as_slice(), [mail_auth::DkimResult::Fail(_)]),
        "{results:?}"
    );

    // A temporary failure: the signature is kept, and the retry sends it as it was.
    smtp.fail(
        crate::smtp_server::Stage::Data,
        crate::smtp_server::Fault::Reply("451 4.3.0 Try again later".into()),
        1,
    );
    send("third@example.com").await?;
    app.run_queue_until_empty().await?;
    let db = app.db();
    let stored: Option<String> = db
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(recipient.eq("third@example.com"))
                .select(dkim_signature)
                .first(conn)?)
        })
        .await?;
    let stored = stored.ok_or("the signature is kept for the retry")?;
    assert!(stored.starts_with("DKIM-Signature: v=1;"));
    // Marked, to see that the retry sends what was kept instead of signing again.
    let marked = stored.replacen("v=1;", "v=1; x-kept=yes;", 1);
    let to_store = marked.clone();
    db.write(move |conn| {
        use diesel::prelude::*;
        use mailroom::db::schema::messages::dsl::*;
        Ok(
            diesel::update(messages.filter(recipient.eq("third@example.com")))
                .set(dkim_signature.eq(to_store))
                .execute(conn)?,
        )
    })
    .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while smtp.messages().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        app.engine.wake();
    }
    let retried = smtp
        .messages()
        .get(2)
        .cloned()
        .ok_or("the retry was delivered")?;
    assert!(retried.data.starts_with(&marked), "{}", retried.data);
    Ok(())
}
both!(mail_from_an_authenticated_domain_is_signed_once);

async fn the_daily_recheck_ends_authentication_only_after_two_failures_an_hour_apart(
    backend: Backend,
) -> TestResult {
    let dns = DnsServer::start().await?;
    let (app, admin) = app_with_dns(backend, &dns).await?;
    let page = add_domain(&admin, "example.test").await?;
    let (_, html) = admin.page(&page).await?;
    let records = records_on(&html);
    publish(&dns, &records);
    assert!(check(&admin, &page).await?.contains("is authenticated"));
    let db = app.db();
    let age = |checked: chrono::Duration, failing: Option<chrono::Duration>| {
        let db = db.clone();
        async move {
            db.write(move |conn| {
                use diesel::prelude::*;
                use mailroom::db::schema::domains::dsl::*;
                let now = mailroom::db::now();
                Ok(diesel::update(domains)
                    .set((
                        checked_at.eq(now - checked),
                        failing_since.eq(failing.map(|f| now - f)),
                    ))
                    .execute(conn)?)
            })
            .await
        }
    };
    // Checked an hour ago: not due.
    age(chrono::Duration::hours(1), None).await?;
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 0);
    // A day ago: due, and still passing.
    age(chrono::Duration::hours(25), None).await?;
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 1);
    assert_eq!(
        mailroom::domains::recheck::due(&app.state).await?,
        0,
        "checked now"
    );
    // The token is gone: the first definite failure keeps the domain authenticated, and
    // is looked at again an hour later, not a day later.
    dns.remove("_mailroom.example.test");
    age(chrono::Duration::hours(25), None).await?;
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 1);
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("records failing"), "{html}");
    assert!(html.contains("badge green\">authenticated"));
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 0);
    // A timeout at the next check changes nothing.
    dns.set("_mailroom.example.test", Answer::Silence);
    age(
        chrono::Duration::minutes(61),
        Some(chrono::Duration::minutes(61)),
    )
    .await?;
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 1);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("badge green\">authenticated"),
        "a timeout never ends it"
    );
    // Still missing an hour after the first failure: no longer authenticated, the admins
    // alerted, the audit log says so with no one as its actor.
    dns.remove("_mailroom.example.test");
    age(
        chrono::Duration::minutes(61),
        Some(chrono::Duration::minutes(61)),
    )
    .await?;
    assert_eq!(mailroom::domains::recheck::due(&app.state).await?, 1);
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("badge red\">not authenticated"), "{html}");
    let (_, audit) = admin.page("/w/acme/audit").await?;
    assert!(audit.contains("domain.unauthenticated"));
    let alerts: i64 = db
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(origin.eq("alert"))
                .count()
                .get_result(conn)?)
        })
        .await?;
    assert_eq!(alerts, 1);
    Ok(())
}
both!(the_daily_recheck_ends_authentication_only_after_two_failures_an_hour_apart);

async fn mail_queued_before_its_domain_lost_authentication_is_held_then_released(
    backend: Backend,
) -> TestResult {
    let dns = DnsServer::start().await?;
    let servers = dns.addr.to_string();
    let app = TestApp::spawn_with(backend, move |s| {
        s.dns_servers = servers;
        s.retry_base_secs = 4;
    })
    .await?;
    let admin = app.setup().await?;
    let smtp = crate::smtp_server::SmtpServer::start().await?;
    let provider = crate::providers::add_open_provider(&admin, &smtp, "ops@example.com").await?;
    let page = add_domain(&admin, "example.test").await?;
    let (_, html) = admin.page(&page).await?;
    let records = records_on(&html);
    publish(&dns, &records);
    assert!(check(&admin, &page).await?.contains("is authenticated"));
    crate::providers::ready_sender(&admin, &smtp, &provider, "News", "news@example.test").await?;
    // The first attempt meets a 451; before the retry the domain loses its authentication.
    smtp.fail(
        crate::smtp_server::Stage::Data,
        crate::smtp_server::Fault::Reply("451 4.3.0 Try again later".into()),
        1,
    );
    let response =
        crate::delivery::compose_at(&admin, SLUG, &provider, &[("to", "ann@example.com")], &[])
            .await?;
    assert!(response.status().is_redirection());
    app.run_queue_until_empty().await?;
    dns.remove("_mailroom.example.test");
    let db = app.db();
    db.write(|conn| {
        use diesel::prelude::*;
        use mailroom::db::schema::domains::dsl::*;
        Ok(diesel::update(domains)
            .set(failing_since.eq(mailroom::db::now() - chrono::Duration::minutes(61)))
            .execute(conn)?)
    })
    .await?;
    assert!(
        check(&admin, &page)
            .await?
            .contains("no longer authenticated")
    );
    let status = |db: mailroom::db::Db| async move {
        db.run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(recipient.eq("ann@example.com"))
                .select((status, hold_reason))
                .first::<(String, Option<String>)>(conn)?)
        })
        .await
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = status(db.clone()).await?;
        if now.0 == "held" {
            assert_eq!(now.1.as_deref(), Some("domain"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not held: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        app.engine.wake();
    }
    assert!(smtp.messages().is_empty(), "never sent unsigned");
    // Authenticated again: released, and sent signed.
    publish(&dns, &records[..1]);
    assert!(check(&admin, &page).await?.contains("is authenticated"));
    app.run_queue_until_empty().await?;
    let sent = smtp.messages();
    assert_eq!(sent.len(), 1, "{:?}", status(db.clone()).await?);
    assert!(sent[0].data.starts_with("DKIM-Signature: v=1;"));
    let id: i64 = db
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(recipient.eq("ann@example.com"))
                .select(id)
                .first(conn)?)
        })
        .await?;
    let (_, html) = admin.page(&format!("/w/acme/messages/{id}")).await?;
    assert!(
        html.contains("is not authenticated"),
        "the timeline says why it waited"
    );
    assert!(html.contains("domain example.test is authenticated again"));
    // One held while a check ran (arranged here) is released by the next check, though
    // nothing changes then.
    let later = LATER_FORM.as_str();
    crate::delivery::compose_at(
        &admin,
        SLUG,
        &provider,
        &[("to", "bob@example.com"), ("send_at", later)],
        &[],
    )
    .await?;
    db.write(|conn| {
        use diesel::prelude::*;
        use mailroom::db::schema::messages::dsl::*;
        Ok(
            diesel::update(messages.filter(recipient.eq("bob@example.com")))
                .set((status.eq("held"), hold_reason.eq("domain")))
                .execute(conn)?,
        )
    })
    .await?;
    assert!(check(&admin, &page).await?.contains("still authenticated"));
    let bob: String = db
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .filter(recipient.eq("bob@example.com"))
                .select(status)
                .first(conn)?)
        })
        .await?;
    assert_eq!(bob, "scheduled", "released, back to its schedule");
    Ok(())
}
both!(mail_queued_before_its_domain_lost_authentication_is_held_then_released);
