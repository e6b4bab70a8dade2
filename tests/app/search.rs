//! Searching the history: words of subjects and texts, parts of addresses, the 100-result
//! cap, marks that escape, tabs and filters, workspaces kept apart, tab counts.

use reqwest::StatusCode;
use serde_json::json;

use crate::api::{Api, create_key};
use crate::both;
use crate::helpers::*;
use crate::history::{recipients, unescape};
use crate::providers::{SMTP_PASSWORD, SMTP_USER, add_provider, provider_form};
use crate::smtp_server::SmtpServer;

/// Recipients listed by a history page, the marks taken out.
fn found(html: &str) -> Vec<String> {
    recipients(&html.replace("<mark>", "").replace("</mark>", ""))
}

/// The history of workspace `acme` for a search (and more of the query).
async fn search(
    admin: &Browser,
    q: &str,
    rest: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let (status, html) = admin.page(&format!("/w/acme/messages?q={q}{rest}")).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    Ok(found(&html))
}

/// Stores a held message (nothing is delivered) through the API.
async fn held(api: &Api, to: &[&str], subject: &str, text: &str) -> TestResult {
    let (status, answer) = api
        .post(
            "/messages",
            &json!({"to": to, "subject": subject, "provider": "Ops SMTP", "from": "ops@example.com", "text": text, "hold": true}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    Ok(())
}

/// A workspace `acme` with a provider and an API key.
async fn workspace_with_key(
    backend: Backend,
) -> Result<(TestApp, Browser, Api, SmtpServer), Box<dyn std::error::Error>> {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    add_provider(&admin, &server, SMTP_PASSWORD).await?;
    let api = Api::new(
        &app,
        &create_key(&admin, "acme", "Desk", "send+read", "").await?,
    );
    Ok((app, admin, api, server))
}

async fn search_finds_words_of_subjects_and_texts_and_parts_of_addresses(
    backend: Backend,
) -> TestResult {
    let (_app, admin, api, _server) = workspace_with_key(backend).await?;
    held(
        &api,
        &["alice@example.com"],
        "Quarterly Invoice",
        "Please find the numbers attached.",
    )
    .await?;
    held(
        &api,
        &["bob@another.org"],
        "Lunch",
        "The quarterly numbers look great; see the invoice.",
    )
    .await?;
    held(
        &api,
        &["jo@example.com"],
        "Crème brûlée",
        "Nothing to report.",
    )
    .await?;

    assert_eq!(
        search(&admin, "invoice", "").await?,
        ["bob@another.org", "alice@example.com"],
        "subject and text, newest first"
    );
    assert_eq!(
        search(&admin, "NUMBERS", "").await?,
        ["bob@another.org", "alice@example.com"],
        "any case"
    );
    assert_eq!(
        search(&admin, "lunch", "").await?,
        ["bob@another.org"],
        "a subject word"
    );
    assert_eq!(
        search(&admin, "attached", "").await?,
        ["alice@example.com"],
        "a text word"
    );
    assert_eq!(
        search(&admin, "invoice lunch", "").await?,
        ["bob@another.org"],
        "every word must match"
    );
    assert_eq!(
        search(&admin, "quart", "").await?,
        ["bob@another.org", "alice@example.com"],
        "the word being typed is a prefix"
    );
    assert_eq!(
        search(&admin, "\"quarterly invoice\"", "").await?,
        ["alice@example.com"],
        "quotes keep words together"
    );
    assert_eq!(
        search(&admin, "jo@exam", "").await?,
        ["jo@example.com"],
        "a part of a recipient address"
    );
    assert_eq!(search(&admin, "another.o", "").await?, ["bob@another.org"]);
    assert_eq!(
        search(&admin, "ops@exa", "").await?.len(),
        3,
        "a part of the sender address"
    );
    assert_eq!(
        search(&admin, "Acme", "").await?.len(),
        3,
        "a part of the sender name"
    );
    assert!(search(&admin, "nowhere", "").await?.is_empty());
    assert!(
        search(&admin, "invoice OR lunch", "").await?.is_empty(),
        "FTS syntax is only words"
    );

    // Tabs and filters still apply.
    assert_eq!(search(&admin, "invoice", "&tab=sys").await?.len(), 2);
    assert!(
        search(&admin, "invoice", "&tab=web").await?.is_empty(),
        "API sends are not under Web"
    );
    assert_eq!(search(&admin, "invoice", "&status=held").await?.len(), 2);
    assert!(search(&admin, "invoice", "&status=sent").await?.is_empty());
    assert!(
        search(&admin, "invoice", "&sender=someone%40else.org")
            .await?
            .is_empty()
    );
    assert!(
        search(&admin, "invoice", "&from=2999-01-01")
            .await?
            .is_empty()
    );

    // The matches are marked; the tabs and the pager keep the search.
    let (_, html) = admin.page("/w/acme/messages?q=invoice").await?;
    assert!(html.contains("<mark>invoice</mark>"), "{html}");
    assert!(html.contains("<mark>Invoice</mark>"), "the text as written");
    assert!(
        unescape(&html).contains("tab=web&q=invoice"),
        "the tabs keep the search"
    );
    assert!(html.contains("2 matches, newest first"));
    let csv = admin.get("/w/acme/messages.csv?q=invoice").await?;
    assert_eq!(csv.status(), StatusCode::OK);
    let csv = csv.text().await?;
    assert_eq!(
        csv.lines().count(),
        3,
        "the header and the two matches: {csv}"
    );
    assert!(csv.contains("alice@example.com") && csv.contains("bob@another.org"));
    assert!(
        !csv.contains("jo@example.com"),
        "only what the search shows"
    );

    // A wrong search says what is wrong, in the page and in the swapped table.
    let long = "x".repeat(201);
    let (status, html) = admin.page(&format!("/w/acme/messages?q={long}")).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Search for at most 200 characters."));
    let response = admin
        .client
        .get(format!("{}/w/acme/messages?q=%21%21", admin.base))
        .header("HX-Request", "true")
        .header("HX-Target", "history-table")
        .send()
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "htmx swaps the explanation in"
    );
    let html = response.text().await?;
    assert!(html.contains("Nothing to search for"), "{html}");
    assert!(!html.contains("class=\"tabs\""), "the table alone");
    Ok(())
}
both!(search_finds_words_of_subjects_and_texts_and_parts_of_addresses);

async fn search_marks_escape_html_and_answer_the_table_alone_for_htmx(
    backend: Backend,
) -> TestResult {
    let (_app, admin, api, _server) = workspace_with_key(backend).await?;
    held(
        &api,
        &["x@example.com"],
        "<script>alert(1)</script> news",
        "<img src=x onerror=alert(2)> script",
    )
    .await?;
    let (_, html) = admin.page("/w/acme/messages?q=script").await?;
    assert!(!html.contains("<script>alert"), "never raw");
    assert!(!html.contains("<img src=x"), "never raw");
    assert!(
        html.contains("&#60;<mark>script</mark>&#62;")
            || html.contains("&lt;<mark>script</mark>&gt;"),
        "{html}"
    );
    let response = admin
        .client
        .get(format!("{}/w/acme/messages?q=news", admin.base))
        .header("HX-Request", "true")
        .header("HX-Target", "history-table")
        .send()
        .await?;
    let html = response.text().await?;
    assert!(
        html.trim_start().starts_with("<div id=\"history-table\""),
        "{html}"
    );
    assert_eq!(found(&html), ["x@example.com"]);
    Ok(())
}
both!(search_marks_escape_html_and_answer_the_table_alone_for_htmx);

async fn search_stops_at_the_100_newest_matches(backend: Backend) -> TestResult {
    let (_app, admin, api, _server) = workspace_with_key(backend).await?;
    for batch in 0..3 {
        let to: Vec<String> = (0..if batch < 2 { 50 } else { 5 })
            .map(|i| format!("r{batch}-{i}@example.com"))
            .collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        held(&api, &to, "Weekly digest", "Everything that happened.").await?;
    }
    let (_, html) = admin.page("/w/acme/messages?q=digest").await?;
    let rows = found(&html);
    assert_eq!(rows.len(), 100, "capped");
    assert_eq!(rows[0], "r2-4@example.com", "newest first");
    assert!(
        !rows.contains(&"r0-0@example.com".to_owned()),
        "the oldest are left out"
    );
    assert!(html.contains("The 100 newest matches"));
    assert!(!html.contains("before="), "no pager on a search");
    let (_, html) = admin.page("/w/acme/messages?tab=all").await?;
    assert!(
        html.contains(">105</span>"),
        "the All tab counts every message"
    );
    Ok(())
}
both!(search_stops_at_the_100_newest_matches);

async fn a_workspace_never_finds_another_s_messages(backend: Backend) -> TestResult {
    let (app, admin, api, server) = workspace_with_key(backend).await?;
    held(
        &api,
        &["alice@example.com"],
        "Acme invoice",
        "Acme's numbers.",
    )
    .await?;
    let beta = app
        .other_workspace("beta", "beta-admin@example.com")
        .await?;
    let port = server.port.to_string();
    let response = beta
        .post_form("/w/beta/providers", &provider_form(&port, SMTP_PASSWORD))
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let beta_provider = location(&response)
        .rsplit('/')
        .next()
        .ok_or("id")?
        .to_owned();
    crate::providers::ready_sender_in(
        &beta,
        "beta",
        &server,
        &beta_provider,
        "Beta Ops",
        "ops@example.com",
    )
    .await?;
    let beta_api = Api::new(
        &app,
        &create_key(&beta, "beta", "Beta desk", "send+read", "").await?,
    );
    held(
        &beta_api,
        &["zed@beta.example"],
        "Beta invoice",
        "Beta's numbers.",
    )
    .await?;

    for q in ["invoice", "numbers", "exam", "ops@example"] {
        let (_, html) = beta.page(&format!("/w/beta/messages?q={q}")).await?;
        assert_eq!(
            found(&html),
            ["zed@beta.example"],
            "beta sees its own only for {q}"
        );
        assert_eq!(
            search(&admin, q, "").await?,
            ["alice@example.com"],
            "acme sees its own only for {q}"
        );
    }
    let (status, _) = beta.page("/w/acme/messages?q=invoice").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, html) = beta.page("/w/beta/messages").await?;
    assert!(html.contains(">1</span>"), "beta's counts are its own");
    Ok(())
}
both!(a_workspace_never_finds_another_s_messages);

async fn tab_counts_follow_inserts_status_changes_and_filters(backend: Backend) -> TestResult {
    let (app, admin, api, _server) = workspace_with_key(backend).await?;
    held(&api, &["a@example.com", "b@example.com"], "One", "x").await?;
    let (_, sent) = api
        .post("/messages?wait=10", &json!({"to": ["c@example.com"], "subject": "Two", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"}))
        .await?;
    assert_eq!(sent["messages"][0]["status"], "sent", "{sent}");
    let counts = |html: &str| -> Vec<String> {
        html.split("<span class=\"count\"")
            .skip(1)
            .filter_map(|s| s.split('>').nth(1)?.split('<').next().map(str::to_owned))
            .collect()
    };
    let (_, html) = admin.page("/w/acme/messages").await?;
    assert_eq!(counts(&html), ["3", "0", "3"], "All, Web, Sys");
    let (_, html) = admin.page("/w/acme/messages?status=held").await?;
    assert_eq!(
        counts(&html),
        ["2", "0", "2"],
        "the status filter narrows the counts"
    );
    let (_, html) = admin.page("/w/acme/messages?status=sent&tab=sys").await?;
    assert_eq!(
        counts(&html),
        ["1", "0", "1"],
        "a status change moved the count"
    );
    let (_, html) = admin.page("/w/acme/messages?status=queued").await?;
    assert_eq!(counts(&html), ["0", "0", "0"]);
    let (_, html) = admin.page("/w/acme/messages?from=2999-01-01").await?;
    assert_eq!(counts(&html), ["0", "0", "0"], "days narrow the counts");
    let (_, html) = admin
        .page("/w/acme/messages?sender=ops%40example.com")
        .await?;
    assert!(counts(&html).is_empty(), "no counts rather than wrong ones");
    // PostgreSQL appends changes and folds them in later: the counts stay the same.
    app.db()
        .write(|conn| Ok(mailroom::messages::queries::fold_tallies(conn)?))
        .await?;
    let (_, html) = admin.page("/w/acme/messages").await?;
    assert_eq!(counts(&html), ["3", "0", "3"], "after folding");
    let (_, html) = admin.page("/w/acme/messages?status=sent").await?;
    assert_eq!(counts(&html), ["1", "0", "1"]);
    let pending = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::message_tally_deltas::dsl::*;
            Ok(message_tally_deltas.count().get_result::<i64>(conn)?)
        })
        .await?;
    assert_eq!(pending, 0, "nothing left to fold");
    // The server vacuums both tables now and then, outside any transaction.
    app.db()
        .run(|conn| Ok(mailroom::messages::queries::vacuum_tallies(conn)?))
        .await?;
    let (_, html) = admin.page("/w/acme/messages").await?;
    assert_eq!(counts(&html), ["3", "0", "3"], "after vacuuming");
    Ok(())
}
both!(tab_counts_follow_inserts_status_changes_and_filters);

async fn the_overview_counts_charts_and_lists_the_queue_and_providers(
    backend: Backend,
) -> TestResult {
    let (app, admin, api, _server) = workspace_with_key(backend).await?;
    let (_, html) = admin.page("/w/acme").await?;
    assert!(html.contains("No messages yet"), "an empty state first");
    held(&api, &["a@example.com", "b@example.com"], "One", "x").await?;
    let (_, sent) = api
        .post(
            "/messages?wait=10",
            &json!({"to": ["c@example.com"], "subject": "Two", "provider": "Ops SMTP", "from": "ops@example.com", "text": "x"}),
        )
        .await?;
    assert_eq!(sent["messages"][0]["status"], "sent", "{sent}");
    let (status, html) = admin.page("/w/acme").await?;
    assert_eq!(status, StatusCode::OK);
    let today = mailroom::db::now().date().format("%Y-%m-%d").to_string();
    assert!(
        html.contains("<svg class=\"chart\""),
        "a chart drawn on the server"
    );
    assert!(
        html.contains(&format!(
            "<title>{today}: 3 messages — 1 sent, 0 failed, 2 waiting, 0 cancelled</title>"
        )),
        "today's bar says its numbers on hover: {html}"
    );
    assert!(
        html.contains(&format!("<time datetime=\"{today}\">{today}</time></td><td class=\"num\">1</td><td class=\"num\">0</td><td class=\"num\">2</td><td class=\"num\">0</td><td class=\"num\">3</td>")),
        "and in the table under it"
    );
    assert_eq!(html.matches("<g class=\"bar\">").count(), 30, "30 days");
    assert!(html.contains(">1 sent</span>"), "today's totals");
    assert!(
        html.contains("<dt>Held</dt><dd><span class=\"badge amber\">2</span>"),
        "the queue"
    );
    assert!(
        html.contains(">Ops SMTP</a> <span class=\"badge green\">active</span>"),
        "the providers"
    );
    let beta = app
        .other_workspace("beta", "beta-admin@example.com")
        .await?;
    let (_, html) = beta.page("/w/beta").await?;
    assert!(
        html.contains("No messages yet"),
        "another workspace counts its own"
    );
    assert!(html.contains("<dt>Held</dt><dd><span class=\"badge amber\">0</span>"));
    Ok(())
}
both!(the_overview_counts_charts_and_lists_the_queue_and_providers);

/// Stores messages straight into a workspace's log, as the API would, `days_ago` days old;
/// `text(i)` gives the i-th message's recipient, text and status. Returns their ids.
async fn log_of(
    app: &TestApp,
    slug: &str,
    days_ago: i64,
    count: usize,
    text: impl Fn(usize) -> (String, String, &'static str) + Send + 'static,
) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    use mailroom::messages::model::{NewMessage, NewSend, Origin, Status};
    use mailroom::messages::queries as q;
    let slug = slug.to_owned();
    let ids = app
        .db()
        .write(move |conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::workspaces;
            let workspace = workspaces::table
                .filter(workspaces::slug.eq(&slug))
                .select(workspaces::id)
                .first::<mailroom::workspaces::model::WorkspaceId>(conn)?;
            let at = mailroom::db::now() - chrono::Duration::days(days_ago);
            let rows: Vec<(String, String, &str)> = (0..count).map(&text).collect();
            let sends: Vec<NewSend> = rows
                .iter()
                .map(|(_, text, _)| NewSend {
                    from_name: "Acme News".into(),
                    ..NewSend::new(
                        workspace,
                        "news@acme.example",
                        "Weekly letter".into(),
                        text.clone(),
                        at,
                    )
                })
                .collect();
            let send_ids = q::insert_sends(conn, &sends)?;
            let messages: Vec<NewMessage> = rows
                .into_iter()
                .zip(send_ids)
                .enumerate()
                .map(|(i, ((to, _, status), send))| NewMessage {
                    message_id: format!("<{slug}.{days_ago}.{i}@acme.example>"),
                    status: Status::parse(status).unwrap_or(Status::Sent),
                    attempts: 1,
                    ..NewMessage::email(workspace, send, Origin::Sys, "news@acme.example", to, at)
                })
                .collect();
            Ok(q::insert_batch(conn, &messages)?
                .into_iter()
                .map(|id| id.0)
                .collect::<Vec<i64>>())
        })
        .await?;
    Ok(ids)
}

/// PostgreSQL checks the newest `WINDOW` messages one by one, then reads older days
/// through the GIN indexes a group at a time: matches there come back, newest first,
/// only the workspace's, filters applying; the same answers from SQLite.
async fn search_reaches_older_days_newest_first_and_keeps_to_the_workspace(
    backend: Backend,
) -> TestResult {
    use mailroom::messages::queries::{LogFilter, WINDOW};
    use mailroom::messages::search::Search;
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let _beta = app
        .other_workspace("beta", "beta-admin@example.com")
        .await?;
    // Six days of 250 messages each (more than the window), the oldest first. Every
    // tenth says "tenth" (a fifth of those failed), days 5 and 4 hold a rare "zephyr"
    // and "comet trail" (while every day has "trail of a comet" and "comet" alone), day
    // 5's recipients are kiwi.N@fruit.example, the others rD.N@example.com but for
    // tenth.fanN@example.com on day 0; beta says "zephyr" every day.
    let per_day = 250;
    let mut ids: Vec<(i64, i64, usize)> = Vec::new();
    for days_ago in (0..6).rev() {
        let stored = log_of(&app, "acme", days_ago, per_day, move |i| {
            let to = if days_ago == 5 {
                format!("kiwi.{i}@fruit.example")
            } else if days_ago == 0 && i % 10 == 5 {
                format!("tenth.fan{i}@example.com")
            } else {
                format!("r{days_ago}.{i}@example.com")
            };
            let mut text = String::from("Our common news.");
            if i % 10 == 0 {
                text.push_str(" The tenth one.");
            }
            if days_ago >= 4 && i % 50 == 7 {
                text.push_str(" A zephyr passed.");
            }
            if days_ago >= 4 && i % 50 == 9 {
                text.push_str(" A comet trail.");
            }
            match i % 50 {
                19 => text.push_str(" The trail of a comet."),
                29 => text.push_str(" Comet only."),
                _ => {}
            }
            let status = if i % 50 == 0 { "failed" } else { "sent" };
            (to, text, status)
        })
        .await?;
        ids.extend(
            stored
                .into_iter()
                .enumerate()
                .map(|(i, id)| (id, days_ago, i)),
        );
        log_of(&app, "beta", days_ago, 20, |i| {
            (
                format!("kiwi.{i}@beta.example"),
                "A zephyr in beta, the tenth.".into(),
                "sent",
            )
        })
        .await?;
    }
    assert!(
        ids.len() as i64 > WINDOW,
        "older days lie beyond the window"
    );
    let newest = |keep: &dyn Fn(i64, usize) -> bool| -> Vec<i64> {
        let mut wanted: Vec<i64> = ids
            .iter()
            .filter(|(_, days_ago, i)| keep(*days_ago, *i))
            .map(|(id, _, _)| *id)
            .collect();
        wanted.sort_unstable_by(|a, b| b.cmp(a));
        wanted.truncate(100);
        wanted
    };
    let search = |q: &'static str, filter: LogFilter| {
        let db = app.db();
        async move {
            let search = Search::parse(q)?.ok_or("a search")?;
            let found = db
                .run(move |conn| {
                    use diesel::prelude::*;
                    use mailroom::db::schema::workspaces;
                    let acme = workspaces::table
                        .filter(workspaces::slug.eq("acme"))
                        .select(workspaces::id)
                        .first(conn)?;
                    Ok(mailroom::messages::queries::search(
                        conn, acme, &filter, &search,
                    )?)
                })
                .await?;
            Ok::<Vec<i64>, Box<dyn std::error::Error>>(found.into_iter().map(|m| m.id.0).collect())
        }
    };
    // A rare word only in days beyond the window: all six, newest first, no beta.
    let zephyr = newest(&|days_ago, i| days_ago >= 4 && i % 50 == 7);
    assert_eq!(zephyr.len(), 10);
    assert_eq!(search("zephyr", LogFilter::default()).await?, zephyr);
    // A part of the oldest day's addresses.
    let kiwi = newest(&|days_ago, _| days_ago == 5);
    assert_eq!(search("kiwi.", LogFilter::default()).await?, kiwi);
    // A part of an address with punctuation (PostgreSQL looks up the trigrams of the
    // addresses without it, then checks the address as written: r4.31@… holds "431exa"
    // too, not "4.1@exa").
    let r4_1 = newest(&|days_ago, i| days_ago == 4 && i == 1);
    assert_eq!(search("4.1@exa", LogFilter::default()).await?, r4_1);
    // A word in one message of ten, or in the newest day's fans' addresses: the window
    // holds 100 of the words, so the addresses are read only as far back as those.
    let tenth = newest(&|days_ago, i| i % 10 == 0 || (days_ago == 0 && i % 10 == 5));
    assert_eq!(search("tenth", LogFilter::default()).await?, tenth);
    // A phrase whose words are in every day, in order only in the oldest two; a word
    // and a short prefix of another (PostgreSQL reads the word's messages and checks
    // the prefix on each).
    let comet_trail = newest(&|days_ago, i| days_ago >= 4 && i % 50 == 9);
    assert_eq!(
        search("\"comet trail\"", LogFilter::default()).await?,
        comet_trail
    );
    assert_eq!(
        search("comet tr", LogFilter::default()).await?,
        newest(&|days_ago, i| i % 50 == 19 || (days_ago >= 4 && i % 50 == 9))
    );
    // Under a status: one in fifty, over all six days.
    let failed = LogFilter {
        status: Some(mailroom::messages::model::Status::Failed),
        ..LogFilter::default()
    };
    assert_eq!(search("tenth", failed).await?, newest(&|_, i| i % 50 == 0));
    // A phrase, and a date range reaching back to the oldest days only.
    assert_eq!(
        search("\"zephyr passed\"", LogFilter::default()).await?,
        zephyr
    );
    let today = mailroom::db::now().date();
    let oldest = LogFilter {
        since: (today - chrono::Duration::days(5)).and_hms_opt(0, 0, 0),
        until: (today - chrono::Duration::days(4)).and_hms_opt(0, 0, 0),
        ..LogFilter::default()
    };
    assert_eq!(
        search("tenth", oldest).await?,
        newest(&|days_ago, i| days_ago == 5 && i % 10 == 0)
    );
    Ok(())
}
both!(search_reaches_older_days_newest_first_and_keeps_to_the_workspace);

/// Security review, item 5: a small workspace's search reads its own matches, not the
/// largest workspace's (SQLite intersects each workspace's token inside FTS5, reads a small
/// workspace's matches oldest first and scans its addresses). Whatever the sizes, each
/// workspace finds exactly its own newest matches.
async fn a_small_workspace_beside_a_large_one_finds_its_own_matches(
    backend: Backend,
) -> TestResult {
    use mailroom::messages::queries::LogFilter;
    use mailroom::messages::search::Search;
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let _beta = app
        .other_workspace("beta", "beta-admin@example.com")
        .await?;
    // beta's 30 messages are the oldest; acme's 12,000 (more than a small workspace)
    // all say "harbor" too, and are newer.
    let beta_ids = log_of(&app, "beta", 5, 30, |i| {
        let to = if i == 3 {
            "ÉMILE.Zola@beta.example".to_owned()
        } else {
            format!("crew.{i}@beta.example")
        };
        (to, format!("The harbor log, entry {i}."), "sent")
    })
    .await?;
    let mut acme_ids = Vec::new();
    for chunk in 0..4 {
        acme_ids.extend(
            log_of(&app, "acme", 3 - chunk, 3_000, |i| {
                (
                    format!("dock.{i}@acme.example"),
                    "Harbor news, and émile's crew.".into(),
                    "sent",
                )
            })
            .await?,
        );
    }
    let search = |slug: &'static str, q: &'static str| {
        let db = app.db();
        async move {
            let search = Search::parse(q)?.ok_or("a search")?;
            let found = db
                .run(move |conn| {
                    use diesel::prelude::*;
                    use mailroom::db::schema::workspaces;
                    let workspace = workspaces::table
                        .filter(workspaces::slug.eq(slug))
                        .select(workspaces::id)
                        .first(conn)?;
                    Ok(mailroom::messages::queries::search(
                        conn,
                        workspace,
                        &LogFilter::default(),
                        &search,
                    )?)
                })
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(found.iter().map(|m| m.id.0).collect::<Vec<_>>())
        }
    };
    let newest = |ids: &[i64], n: usize| {
        let mut ids = ids.to_vec();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(n);
        ids
    };
    assert_eq!(search("beta", "harbor").await?, newest(&beta_ids, 30));
    assert_eq!(
        search("beta", "harb").await?,
        newest(&beta_ids, 30),
        "typing"
    );
    assert_eq!(search("acme", "harbor").await?, newest(&acme_ids, 100));
    // A part of an address, any letter's case folded, in the small workspace and the
    // large one.
    assert_eq!(search("beta", "émile.z").await?, vec![beta_ids[3]]);
    assert_eq!(search("beta", "crew.2@").await?, vec![beta_ids[2]]);
    assert_eq!(search("acme", "dock.29").await?.len(), 100);
    assert!(search("acme", "émile.z").await?.is_empty());
    Ok(())
}
both!(a_small_workspace_beside_a_large_one_finds_its_own_matches);
