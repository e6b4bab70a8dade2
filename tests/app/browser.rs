//! A real browser (Debian's chromium through chromedriver) walks setup → sign in → overview.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::helpers::*;

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> Option<String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([
            std::path::PathBuf::from("/usr/bin"),
            std::path::PathBuf::from("/usr/lib/chromium"),
        ])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Starts chromedriver, or says SKIP (fails under `MAILROOM_REQUIRE_ALL=1`).
async fn chromedriver(test: &str) -> Result<Option<(Driver, String)>, Box<dyn std::error::Error>> {
    let (Some(driver), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
        if require_all() {
            return Err("chromium and chromedriver are required (MAILROOM_REQUIRE_ALL=1); apt-get install chromium chromium-driver".into());
        }
        println!(
            "SKIP {test}: chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
        );
        return Ok(None);
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("chromedriver did not start".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Some((driver, chromium)))
}

async fn connect(
    driver: &Driver,
    chromium: &str,
    profile: &std::path::Path,
) -> Result<Client, Box<dyn std::error::Error>> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1440,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    // The browser's console and failed loads, read back by `assert_quiet_console`.
    caps.insert(
        "goog:loggingPrefs".into(),
        serde_json::json!({ "browser": "ALL" }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    Ok(ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await?)
}

/// Chromedriver's browser log since the last read: console messages, script errors and
/// resources that failed to load.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// Fails on any console error or failed resource load of the pages visited so far (a
/// missing favicon, a script error, a blocked inline script all show up here).
async fn assert_quiet_console(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    let log = client.issue_cmd(BrowserLog).await?;
    let entries = log.as_array().ok_or("the browser log is a list")?;
    let errors: Vec<&str> = entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(errors.is_empty(), "the browser console: {errors:#?}");
    Ok(())
}

async fn wait_for_path(client: &Client, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = client.current_url().await?;
        if url.path() == path {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("expected {path}, still at {url}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(client: &Client, id: &str, text: &str) -> Result<(), Box<dyn std::error::Error>> {
    client.find(Locator::Id(id)).await?.send_keys(text).await?;
    Ok(())
}

async fn screenshot(client: &Client, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir)?;
    let png = client.screenshot().await?;
    assert!(png.len() > 1000, "a real picture");
    std::fs::write(dir.join(name), png)?;
    Ok(())
}

#[actix_web::test]
async fn setup_sign_in_and_overview_in_a_real_browser() -> TestResult {
    let Some((driver, chromium)) =
        chromedriver("setup_sign_in_and_overview_in_a_real_browser").await?
    else {
        return Ok(());
    };
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let profile = tempfile::tempdir()?;
    let client = connect(&driver, &chromium, profile.path()).await?;
    let result = async {
        client.goto(&format!("{}/", app.base)).await?;
        wait_for_path(&client, "/setup").await?;
        screenshot(&client, "setup.png").await?;
        fill(&client, "f-setup_token", &app.setup_token).await?;
        fill(&client, "f-name", "Ada Admin").await?;
        fill(&client, "f-email", ADMIN).await?;
        fill(&client, "f-password", PASSWORD).await?;
        fill(&client, "f-workspace_name", "Acme").await?;
        fill(&client, "f-slug", "acme").await?;
        fill(&client, "f-site_name", "Acme").await?;
        client
            .find(Locator::Css("form[action='/setup'] button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_path(&client, "/w/acme/").await?;
        let source = client.source().await?;
        assert!(
            source.contains("Mailroom is set up"),
            "the flash says what happened"
        );

        // Sign out, then sign in again.
        client
            .find(Locator::Css("form[action='/logout'] button"))
            .await?
            .click()
            .await?;
        wait_for_path(&client, "/login").await?;
        fill(&client, "f-email", ADMIN).await?;
        fill(&client, "f-password", PASSWORD).await?;
        client
            .find(Locator::Css("form[action='/login'] button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_path(&client, "/w/acme/").await?;
        let heading = client.find(Locator::Css("main h1")).await?.text().await?;
        assert_eq!(heading, "Overview");
        screenshot(&client, "overview-1440.png").await?;

        // The members page, with its confirm dialog, on a laptop and on a phone.
        client.goto(&format!("{}/w/acme/members", app.base)).await?;
        screenshot(&client, "members-1440.png").await?;
        client
            .goto(&format!("{}/w/acme/providers/new?kind=smtp", app.base))
            .await?;
        screenshot(&client, "provider-form-1440.png").await?;
        client.set_window_size(390, 844).await?;
        client.goto(&format!("{}/w/acme/", app.base)).await?;
        screenshot(&client, "overview-390.png").await?;
        assert_quiet_console(&client).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    client.close().await?;
    result
}

async fn wait_for_text(
    client: &Client,
    css: &str,
    text: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.text().await.unwrap_or_default().contains(text)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never showed {text:?}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn add_a_provider_compose_and_watch_it_turn_sent_in_a_real_browser() -> TestResult {
    let Some((driver, chromium)) =
        chromedriver("add_a_provider_compose_and_watch_it_turn_sent_in_a_real_browser").await?
    else {
        return Ok(());
    };
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let admin = app.setup().await?;
    let server = crate::smtp_server::SmtpServer::start().await?;
    server.require_credentials("relay", "relay-secret");
    let profile = tempfile::tempdir()?;
    let client = connect(&driver, &chromium, profile.path()).await?;
    let result = async {
        sign_in_as_admin(&client, &app.base).await?;

        client
            .goto(&format!("{}/w/acme/providers/new?kind=smtp", app.base))
            .await?;
        fill(&client, "f-name", "Ops SMTP").await?;
        fill(&client, "f-host", "127.0.0.1").await?;
        client.find(Locator::Id("f-port")).await?.clear().await?;
        fill(&client, "f-port", &server.port.to_string()).await?;
        client
            .find(Locator::Css("#f-tls option[value='none']"))
            .await?
            .click()
            .await?;
        fill(&client, "f-username", "relay").await?;
        fill(&client, "f-password", "relay-secret").await?;
        fill(&client, "f-account_address", "ops@example.com").await?;
        client
            .find(Locator::Css("form.stack button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_text(&client, ".status-card", "active").await?;
        screenshot(&client, "provider-active-1440.png").await?;

        // Its account becomes a sender: created, then validated with the mailed code.
        let status =
            validate_sender(&client, &app.base, &server, "Acme Ops", "ops@example.com").await?;
        assert_eq!(status, "ready", "validated, and the provider's own account");
        screenshot(&client, "sender-ready-1440.png").await?;

        client.goto(&format!("{}/w/acme/compose", app.base)).await?;
        fill(&client, "f-to", "ann@example.com").await?;
        fill(&client, "f-subject", "Hello from the browser").await?;
        fill(&client, "f-text", "It works.").await?;
        client
            .find(Locator::Css("form.stack button[type=submit]"))
            .await?
            .click()
            .await?;
        // The message page polls until the engine has sent it.
        wait_for_text(&client, "#message-live .status-line", "sent").await?;
        screenshot(&client, "message-sent-1440.png").await?;
        client
            .goto(&format!("{}/w/acme/messages", app.base))
            .await?;
        screenshot(&client, "history-1440.png").await?;
        assert_quiet_console(&client).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    client.close().await?;
    drop(admin);
    result?;
    let mail = server
        .messages()
        .pop()
        .ok_or("the server got the message")?;
    assert!(mail.data.contains("Subject: [Acme] Hello from the browser"));
    Ok(())
}

/// Creates a sender on the senders page, enters the code `server` received for it, and
/// returns the status badge of its page afterwards.
async fn validate_sender(
    client: &Client,
    base: &str,
    server: &crate::smtp_server::SmtpServer,
    name: &str,
    address: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    client.goto(&format!("{base}/w/acme/senders")).await?;
    fill(client, "f-name", name).await?;
    fill(client, "f-address", address).await?;
    client
        .find(Locator::Css("form.stack button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for_text(client, ".flash", "code was mailed").await?;
    let mail = server.messages().pop().ok_or("the code was mailed")?;
    let at = mail.data.find("Your code is ").ok_or("a code")? + "Your code is ".len();
    fill(client, "f-code", &mail.data[at..at + 6]).await?;
    client
        .find(Locator::Css("form.stack button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for_text(client, ".flash", "is validated").await?;
    Ok(client
        .find(Locator::Css(".status-card .badge"))
        .await?
        .text()
        .await?)
}

/// Signs the harness's admin in through the page (the harness's session is not the
/// browser's) and waits for the overview.
async fn sign_in_as_admin(client: &Client, base: &str) -> Result<(), Box<dyn std::error::Error>> {
    client.goto(&format!("{base}/login")).await?;
    fill(client, "f-email", ADMIN).await?;
    fill(client, "f-password", PASSWORD).await?;
    client
        .find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for_path(client, "/w/acme/").await
}

/// Waits until the element's text holds `present` and not `absent`.
async fn wait_for_swap(
    client: &Client,
    css: &str,
    present: &str,
    absent: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            let text = element.text().await.unwrap_or_default();
            if text.contains(present) && !text.contains(absent) {
                return Ok(text);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never showed {present:?} without {absent:?}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    }
}

#[actix_web::test]
async fn typing_in_the_search_box_updates_the_history_in_a_real_browser() -> TestResult {
    let Some((driver, chromium)) =
        chromedriver("typing_in_the_search_box_updates_the_history_in_a_real_browser").await?
    else {
        return Ok(());
    };
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let admin = app.setup().await?;
    let server = crate::smtp_server::SmtpServer::start().await?;
    server.require_credentials(crate::providers::SMTP_USER, crate::providers::SMTP_PASSWORD);
    crate::providers::add_provider(&admin, &server, crate::providers::SMTP_PASSWORD).await?;
    let key = crate::api::create_key(&admin, "acme", "Desk", "send+read", "").await?;
    let api = crate::api::Api::new(&app, &key);
    for (to, subject, text) in [
        (
            "alice@example.com",
            "Quarterly invoice",
            "The numbers are attached.",
        ),
        ("bob@another.org", "Lunch plans", "Shall we meet at noon?"),
    ] {
        let (status, _) = api
            .post(
                "/messages",
                &serde_json::json!({"to": [to], "subject": subject, "provider": "Ops SMTP", "from": "ops@example.com",
                                    "text": text, "hold": true}),
            )
            .await?;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    }
    // Enough rows for a page longer than the window.
    let fillers: Vec<String> = (0..30).map(|i| format!("filler{i}@example.net")).collect();
    let (status, _) = api
        .post(
            "/messages",
            &serde_json::json!({"to": fillers, "subject": "Filler", "provider": "Ops SMTP", "from": "ops@example.com",
                                "text": "x", "hold": true}),
        )
        .await?;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    let profile = tempfile::tempdir()?;
    let client = connect(&driver, &chromium, profile.path()).await?;
    let result = async {
        sign_in_as_admin(&client, &app.base).await?;
        screenshot(&client, "overview-messages-1440.png").await?;

        client
            .goto(&format!("{}/w/acme/messages", app.base))
            .await?;
        wait_for_swap(
            &client,
            "#history-table",
            "alice@example.com",
            "no such text",
        )
        .await?;
        // A long page scrolled to its end: the sidebar's background still reaches the
        // bottom of the window.
        let reach = client
            .execute(
                "window.scrollTo(0, document.body.scrollHeight);
                 const side = document.querySelector('.sidebar').getBoundingClientRect();
                 return [document.body.scrollHeight, window.innerHeight, side.top, side.bottom];",
                vec![],
            )
            .await?;
        let reach: Vec<f64> = serde_json::from_value(reach)?;
        assert!(reach[0] > reach[1] * 1.5, "a long page: {reach:?}");
        assert!(
            reach[2] <= 0.5 && reach[3] >= reach[1] - 0.5,
            "the sidebar covers the window: {reach:?}"
        );
        screenshot(&client, "history-long-bottom-1440.png").await?;
        client.execute("window.scrollTo(0, 0);", vec![]).await?;
        // Typing (no Enter): htmx asks 300 ms after the last key and swaps the table.
        fill(&client, "f-q", "lunc").await?;
        let text = wait_for_swap(&client, "#history-table", "bob@another.org", "alice@").await?;
        assert!(text.contains("1 match"), "{text}");
        let marked = client.find(Locator::Css("#history-table mark")).await?;
        assert_eq!(
            marked.text().await?,
            "Lunch",
            "the word being typed is marked"
        );
        let url = client.current_url().await?;
        assert_eq!(
            url.query_pairs()
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.into_owned()),
            Some("lunc".to_owned()),
            "the URL follows the search"
        );
        screenshot(&client, "history-search-1440.png").await?;

        // A part of an address.
        client.find(Locator::Id("f-q")).await?.clear().await?;
        fill(&client, "f-q", "alice@exa").await?;
        wait_for_swap(&client, "#history-table", "alice@example.com", "bob@").await?;
        // Nothing matches: the table says so.
        fill(&client, "f-q", "zzz").await?;
        wait_for_swap(&client, "#history-table", "No message matches", "alice@").await?;

        client.set_window_size(390, 844).await?;
        client.goto(&format!("{}/w/acme/", app.base)).await?;
        screenshot(&client, "overview-messages-390.png").await?;
        assert_quiet_console(&client).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    client.close().await?;
    drop(admin);
    result
}

/// Seed 001 end to end in a real browser: a domain, its records published at a DNS
/// server, checked; a sender on it, validated with its code; ready; a message sent from
/// it, DKIM-signed.
#[actix_web::test]
async fn domain_records_check_sender_code_ready_and_send_in_a_real_browser() -> TestResult {
    let Some((driver, chromium)) =
        chromedriver("domain_records_check_sender_code_ready_and_send_in_a_real_browser").await?
    else {
        return Ok(());
    };
    let dns = crate::dns_server::DnsServer::start().await?;
    let servers = dns.addr.to_string();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| s.dns_servers = servers).await?;
    let admin = app.setup().await?;
    let server = crate::smtp_server::SmtpServer::start().await?;
    server.require_credentials(crate::providers::SMTP_USER, crate::providers::SMTP_PASSWORD);
    crate::providers::add_provider_alone(&admin, &server, crate::providers::SMTP_PASSWORD).await?;
    let profile = tempfile::tempdir()?;
    let client = connect(&driver, &chromium, profile.path()).await?;
    let result = async {
        sign_in_as_admin(&client, &app.base).await?;
        // The domain, and the records to publish.
        client.goto(&format!("{}/w/acme/domains", app.base)).await?;
        fill(&client, "f-name", "example.test").await?;
        client
            .find(Locator::Css("form.stack button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_text(&client, ".flash", "Publish its records").await?;
        screenshot(&client, "domain-records-1440.png").await?;
        for n in 1..=4 {
            let name = client
                .find(Locator::Id(&format!("rec-{n}-name")))
                .await?
                .text()
                .await?;
            let value = client
                .find(Locator::Id(&format!("rec-{n}-value")))
                .await?
                .text()
                .await?;
            dns.txt_split(&name, &value, 255);
        }
        client
            .find(Locator::Css(".status-card button.primary"))
            .await?
            .click()
            .await?;
        wait_for_text(&client, ".flash", "is authenticated").await?;
        screenshot(&client, "domain-authenticated-1440.png").await?;

        // A sender on it: created, its code entered, ready.
        let status = validate_sender(
            &client,
            &app.base,
            &server,
            "Acme News",
            "news@example.test",
        )
        .await?;
        assert_eq!(status, "ready");

        // Sent from it.
        client.goto(&format!("{}/w/acme/compose", app.base)).await?;
        fill(&client, "f-to", "ann@example.com").await?;
        fill(&client, "f-subject", "Signed").await?;
        fill(&client, "f-text", "From an authenticated domain.").await?;
        client
            .find(Locator::Css("form.stack button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_text(&client, "#message-live .status-line", "sent").await?;
        client.goto(&format!("{}/w/acme/", app.base)).await?;
        screenshot(&client, "overview-senders-1440.png").await?;
        assert_quiet_console(&client).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    client.close().await?;
    drop(admin);
    result?;
    let mail = server.messages().pop().ok_or("the message arrived")?;
    assert!(
        mail.data
            .starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test;"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("From: \"Acme News\" <news@example.test>")
            || mail.data.contains("From: Acme News <news@example.test>"),
        "{}",
        mail.data
    );
    Ok(())
}
