//! The history page: tabs, filters, keyset pages that keep the filters.

use reqwest::StatusCode;
use serde_json::json;

use crate::api::{Api, create_key};
use crate::both;
use crate::helpers::*;
use crate::providers::{SMTP_PASSWORD, SMTP_USER, add_provider};
use crate::smtp_server::SmtpServer;

/// Undoes the HTML escaping of an attribute value (named and numeric references).
pub fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find(';') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let entity = &after[..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[start..=start + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The pager's link to older rows.
fn older_link(html: &str) -> Option<String> {
    html.split("href=\"")
        .filter_map(|s| s.split('"').next())
        .map(unescape)
        .find(|href| href.contains("before="))
}

/// Recipients listed on a history page, in order.
pub fn recipients(html: &str) -> Vec<String> {
    html.split("/messages/")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find("\">")? + 2;
            let end = rest[start..].find("</a>")? + start;
            let text = &rest[start..end];
            text.contains('@').then(|| text.to_owned())
        })
        .collect()
}

async fn the_history_filters_by_status_provider_sender_and_day(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let api = Api::new(
        &app,
        &create_key(&admin, "acme", "Desk", "send+read", "").await?,
    );
    let send = |to: &str, extra: serde_json::Value| {
        let mut body = json!({"to": [to], "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let (status, _) = api
        .post("/messages?wait=10", &send("sent@example.com", json!({})))
        .await?;
    assert_eq!(status, StatusCode::OK);
    api.post(
        "/messages",
        &send("held@example.com", json!({"hold": true})),
    )
    .await?;
    api.post(
        "/messages",
        &send(
            "later@example.com",
            json!({"send_at": LATER_RFC3339.as_str()}),
        ),
    )
    .await?;

    let page = |query: &str| {
        let path = format!("/w/acme/messages?{query}");
        let admin = &admin;
        async move { admin.page(&path).await }
    };
    let (status, html) = page("tab=all").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        recipients(&html),
        vec!["later@example.com", "held@example.com", "sent@example.com"]
    );
    let (_, html) = page("tab=all&status=held").await?;
    assert_eq!(recipients(&html), vec!["held@example.com"]);
    let (_, html) = page("tab=sys&status=scheduled").await?;
    assert_eq!(recipients(&html), vec!["later@example.com"]);
    let (_, html) = page("tab=web&status=held").await?;
    assert!(recipients(&html).is_empty(), "API sends are not under Web");
    assert!(
        unescape(&html).contains("tab=all&status=held"),
        "the tabs keep the filters"
    );
    let (_, html) = page("status=sent&sender=ops%40example.com").await?;
    assert_eq!(recipients(&html), vec!["sent@example.com"]);
    let (_, html) = page("sender=someone%40else.example").await?;
    assert!(recipients(&html).is_empty());
    let provider: i64 = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::providers::dsl::*;
            Ok(providers.select(id).first(conn)?)
        })
        .await?;
    let (_, html) = page(&format!("provider={provider}&status=held")).await?;
    assert_eq!(recipients(&html), vec!["held@example.com"]);
    let (_, html) = page(&format!("provider={}", provider + 1000)).await?;
    assert!(recipients(&html).is_empty());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, html) = page(&format!("from={today}&to={today}")).await?;
    assert_eq!(recipients(&html).len(), 3);
    let (_, html) = page("from=2000-01-01&to=2000-01-31").await?;
    assert!(recipients(&html).is_empty());
    // Wrong filters are named, not a bare 400.
    for (query, says) in [
        ("status=lost", "is not a status"),
        ("from=yesterday", "is not a date like"),
        ("provider=abc", "Choose a provider"),
        ("from=2026-02-01&to=2026-01-01", "end date is before"),
    ] {
        let (status, html) = page(query).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(html.contains(says), "{query}");
    }
    Ok(())
}
both!(the_history_filters_by_status_provider_sender_and_day);

async fn older_pages_keep_the_filters_and_stay_stable(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let api = Api::new(
        &app,
        &create_key(&admin, "acme", "Desk", "send+read", "").await?,
    );
    let to: Vec<String> = (0..50).map(|i| format!("r{i:02}@example.com")).collect();
    for chunk in to.chunks(25) {
        let (status, _) = api
            .post(
                "/messages",
                &json!({"to": chunk, "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "hold": true}),
            )
            .await?;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    api.post(
        "/messages",
        &json!({"to": ["queued@example.com"], "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "send_at": LATER_RFC3339.as_str()}),
    )
    .await?;
    let (_, first) = admin.page("/w/acme/messages?tab=sys&status=held").await?;
    let first_rows = recipients(&first);
    assert_eq!(first_rows.len(), 50, "a page of 50");
    assert!(!first_rows.contains(&"queued@example.com".to_owned()));
    // A new message arrives; the next page still continues where the first stopped.
    api.post(
        "/messages",
        &json!({"to": ["new@example.com"], "subject": "S", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "hold": true}),
    )
    .await?;
    let older = older_link(&first);
    // 50 held rows exactly fit one page: no older link.
    assert!(older.is_none(), "no older page when everything fit");
    let (_, again) = admin.page("/w/acme/messages?tab=sys&status=held").await?;
    let again_rows = recipients(&again);
    assert_eq!(
        again_rows.first().map(String::as_str),
        Some("new@example.com")
    );
    let older = older_link(&again).ok_or("an older page")?;
    assert!(
        older.contains("status=held"),
        "the pager keeps the filters: {older}"
    );
    let (_, rest) = admin.page(&older).await?;
    assert_eq!(
        recipients(&rest),
        vec!["r00@example.com"],
        "the oldest held row, once"
    );
    Ok(())
}
both!(older_pages_keep_the_filters_and_stay_stable);

async fn the_filtered_history_exports_as_csv_with_formulas_defused(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let api = Api::new(
        &app,
        &create_key(&admin, "acme", "Desk", "send+read", "").await?,
    );
    // More rows than one export chunk (1,000), all held.
    for batch in 0..21 {
        let to: Vec<String> = (0..50)
            .map(|i| format!("r{batch:02}-{i:02}@example.com"))
            .collect();
        let (status, _) = api
            .post(
                "/messages",
                &json!({"to": to, "subject": "Batch", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "hold": true}),
            )
            .await?;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    api.post(
        "/messages",
        &json!({"to": ["=1+2@example.com"], "subject": "=HYPERLINK(\"http://evil.example\",\"click\")",
                "provider": "Ops SMTP", "from": "ops@example.com", "text": "x", "send_at": LATER_RFC3339.as_str()}),
    )
    .await?;
    let response = admin
        .client
        .get(format!(
            "{}/w/acme/messages.csv?tab=sys&status=held",
            app.base
        ))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()?
            .contains("attachment")
    );
    let body = response.text().await?;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    assert_eq!(header[..4], ["id", "created_at", "status", "recipient"]);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 1_050, "every held row, once, across chunks");
    let ids: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r.get(0)).collect();
    assert_eq!(ids.len(), 1_050, "no row twice");
    assert!(rows.iter().all(|r| r.get(2) == Some("held")));
    // The scheduled one, unfiltered: its formula is defused, its quotes escaped.
    let all = admin
        .client
        .get(format!("{}/w/acme/messages.csv?status=scheduled", app.base))
        .send()
        .await?
        .text()
        .await?;
    let mut reader = csv::Reader::from_reader(all.as_bytes());
    let row = reader.records().next().ok_or("one row")??;
    assert_eq!(
        row.get(3),
        Some("'=1+2@example.com"),
        "a formula-like cell is defused"
    );
    assert_eq!(
        row.get(5),
        Some("[Acme] =HYPERLINK(\"http://evil.example\",\"click\")"),
        "quotes survive the CSV quoting"
    );
    // Another workspace's export holds none of these.
    let other = app.other_workspace("globex", "boss@globex.example").await?;
    let theirs = other
        .client
        .get(format!("{}/w/globex/messages.csv", app.base))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(theirs.lines().count(), 1, "the header only");
    let response = admin
        .client
        .get(format!("{}/w/acme/messages.csv?status=lost", app.base))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
both!(the_filtered_history_exports_as_csv_with_formulas_defused);

async fn retention_deletes_old_contents_and_keeps_the_records(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.body_retention_days = 30).await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let api = Api::new(
        &app,
        &create_key(&admin, "acme", "Desk", "send+read", "").await?,
    );
    let body = |extra: serde_json::Value| {
        let mut body = json!({"to": ["ann@example.com"], "subject": "Old news", "provider": "Ops SMTP", "from": "ops@example.com",
                              "text": "The secret plan.", "html": "<p>The secret plan.</p>"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let (_, sent) = api.post("/messages?wait=10", &body(json!({}))).await?;
    let sent = sent["messages"][0]["id"].as_i64().ok_or("id")?;
    let (_, held) = api.post("/messages", &body(json!({"hold": true}))).await?;
    let held = held["messages"][0]["id"].as_i64().ok_or("id")?;
    let db = app.db();
    let (old, db2) = (mailroom::db::now() - chrono::Duration::days(31), db.clone());
    db.run(move |conn| {
        use diesel::prelude::*;
        use mailroom::db::schema::sends::dsl::*;
        Ok(diesel::update(sends)
            .set(created_at.eq(old))
            .execute(conn)?)
    })
    .await?;
    let purged =
        actix_web::web::block(move || mailroom::messages::service::apply_retention(&db2, 30))
            .await??;
    assert_eq!(
        purged, 1,
        "the sent message's content; the held one still waits"
    );
    let (_, page) = admin.page(&format!("/w/acme/messages/{sent}")).await?;
    assert!(page.contains("was deleted on"), "the page says so");
    assert!(!page.contains("The secret plan."));
    assert!(page.contains("Old news"), "the record stays");
    let (_, page) = admin.page(&format!("/w/acme/messages/{held}")).await?;
    assert!(
        page.contains("The secret plan."),
        "a message still waiting keeps its content"
    );
    let (_, record) = api.get(&format!("/messages/{sent}")).await?;
    assert_eq!(record["status"], "sent");
    let (_, html) = admin.page("/w/acme/messages?q=secret").await?;
    let found: Vec<String> = html
        .match_indices("/w/acme/messages/")
        .filter_map(|(at, _)| html[at + 17..].split('"').next().map(str::to_owned))
        .collect();
    assert_eq!(
        found,
        [held.to_string()],
        "a deleted content's words leave the index"
    );
    let (_, html) = admin.page("/w/acme/messages?q=news").await?;
    assert!(html.contains("2 matches"), "its subject stays searchable");
    let db3 = db.clone();
    let none = actix_web::web::block(move || mailroom::messages::service::apply_retention(&db3, 0))
        .await??;
    assert_eq!(none, 0, "0 keeps everything");
    Ok(())
}
both!(retention_deletes_old_contents_and_keeps_the_records);

/// `mailroom bench console` end to end on a small log: it signs in through the login
/// form, loads the history from several clients and has the engine send meanwhile.
#[actix_web::test]
async fn the_console_benchmark_signs_in_and_loads_the_history_while_sending() -> TestResult {
    let server = SmtpServer::start().await?;
    let bench = mailroom::bench::console::ConsoleBench {
        messages: 2_000,
        smtp_addr: format!("127.0.0.1:{}", server.port).parse()?,
        database: None,
        reuse: false,
        concurrency: 4,
        seconds: 2,
        send_rate: 100,
    };
    let line = mailroom::bench::console::console(bench).await?;
    let figure = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(line.starts_with("bench console: messages=2000 "), "{line}");
    assert!(figure("requests") > 0.0, "{line}");
    assert_eq!(figure("errors"), 0.0, "{line}");
    assert!(figure("sent_per_s") > 0.0, "{line}");
    assert!(!server.messages().is_empty(), "the engine sent meanwhile");
    Ok(())
}
