use diesel::prelude::*;
use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;
use crate::smtp_server::SmtpServer;

pub const SMTP_USER: &str = "relay-user";
pub const SMTP_PASSWORD: &str = "relay-password-never-shown";

pub fn provider_form<'a>(port: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("kind", "smtp"),
        ("name", "Ops SMTP"),
        ("host", "127.0.0.1"),
        ("port", port),
        ("tls", "none"),
        ("username", SMTP_USER),
        ("password", password),
        ("account_address", "ops@example.com"),
        ("from_name", "Acme Ops"),
        ("max_connections", "4"),
        ("per_second", "50"),
    ]
}

fn with(
    mut form: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    form.retain(|(k, _)| *k != key);
    form.push((key, value.to_owned()));
    form
}

fn owned(form: Vec<(&str, &str)>) -> Vec<(&'static str, String)> {
    form.into_iter()
        .map(|(k, v)| (leak(k), v.to_owned()))
        .collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

async fn post(
    browser: &Browser,
    path: &str,
    form: &[(&'static str, String)],
) -> reqwest::Result<reqwest::Response> {
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post_form(path, &fields).await
}

/// Adds the provider through the form; returns its page path.
/// Adds the provider through the form, and makes its account (`ops@example.com`) a ready
/// sender the way an admin does: created, its code read from the server, entered. The
/// code's message is forgotten by the server. Returns the provider's page path.
pub async fn add_provider(
    admin: &Browser,
    server: &SmtpServer,
    password: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let page = add_provider_alone(admin, server, password).await?;
    let id = page.rsplit('/').next().ok_or("provider id")?;
    ready_sender(admin, server, id, "Acme Ops", "ops@example.com").await?;
    Ok(page)
}

/// Makes `address` a ready sender through provider `id` (an address the provider signs
/// in as, or on an authenticated domain); returns its page path.
pub async fn ready_sender(
    admin: &Browser,
    server: &SmtpServer,
    provider: &str,
    name: &str,
    address: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    ready_sender_in(admin, "acme", server, provider, name, address).await
}

/// [`ready_sender`] in workspace `slug`; `server` is where the code arrives (the
/// provider's, or the operator's relay when one is set).
pub async fn ready_sender_in(
    admin: &Browser,
    slug: &str,
    server: &SmtpServer,
    provider: &str,
    name: &str,
    address: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let response = admin
        .post_form(
            &format!("/w/{slug}/senders"),
            &[("name", name), ("address", address), ("provider", provider)],
        )
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await?
    );
    let page = location(&response);
    let mail = server
        .messages()
        .into_iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
        .ok_or("the code was mailed")?;
    let at = mail.data.find("Your code is ").ok_or("a code")? + "Your code is ".len();
    let code = mail.data[at..at + 6].to_owned();
    let response = admin
        .post_form(&format!("{page}/verify"), &[("code", code.as_str())])
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the code is accepted"
    );
    server.forget_messages();
    Ok(page)
}

/// Adds "Ops SMTP" for `server` without a sign-in, signing in as the account `account`
/// (no sender); returns its id.
pub async fn add_open_provider(
    admin: &Browser,
    server: &SmtpServer,
    account: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let port = server.port.to_string();
    let mut form = provider_form(&port, "");
    form.retain(|(k, _)| !matches!(*k, "account_address" | "username" | "password"));
    form.extend([
        ("account_address", account),
        ("username", ""),
        ("password", ""),
    ]);
    let response = admin.post_form("/w/acme/providers", &form).await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await?
    );
    Ok(location(&response)
        .rsplit('/')
        .next()
        .ok_or("provider id")?
        .to_owned())
}

/// Adds the provider through the form (no sender); returns its page path.
pub async fn add_provider_alone(
    admin: &Browser,
    server: &SmtpServer,
    password: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let port = server.port.to_string();
    let response = admin
        .post_form("/w/acme/providers", &provider_form(&port, password))
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await?
    );
    Ok(location(&response))
}

async fn an_admin_adds_an_smtp_provider_that_checks_green(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let page = add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    assert!(page.starts_with("/w/acme/providers/"));
    let (status, html) = admin.page(&page).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Provider Ops SMTP saved and verified"),
        "the flash says what happened"
    );
    assert!(html.contains("badge green\">active"));
    assert!(html.contains("Stored — leave blank to keep"));
    assert!(
        !html.contains(SMTP_PASSWORD),
        "the password is never rendered back"
    );
    assert_eq!(server.auth_attempts(), 1, "the check signed in");
    let (_, list) = admin.page("/w/acme/providers").await?;
    assert!(list.contains("Ops SMTP") && list.contains("badge green\">active"));

    // At rest the password is sealed, not stored as typed.
    let db = app.db();
    let secret: Option<String> = db
        .run(|conn| {
            use mailroom::db::schema::providers::dsl::*;
            Ok(providers.select(secret).first(conn)?)
        })
        .await?;
    let secret = secret.ok_or("a stored secret")?;
    assert!(secret.starts_with("v1:") && !secret.contains(SMTP_PASSWORD));
    Ok(())
}
both!(an_admin_adds_an_smtp_provider_that_checks_green);

/// Seed 002: a provider whose sign-in is refused is not created; the form comes back with
/// the server's answer and every value kept but the password. An unreachable server the
/// same.
async fn a_provider_whose_sign_in_is_refused_is_not_created(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let port = server.port.to_string();
    let response = admin
        .post_form(
            "/w/acme/providers",
            &provider_form(&port, "not the password"),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("535"), "the server's reply is shown: {html}");
    assert!(html.contains("refused the sign-in"), "the form says why");
    assert!(html.contains("value=\"Ops SMTP\""), "values are kept");
    assert!(!html.contains("not the password"), "but not the password");
    let (_, list) = admin.page("/w/acme/providers").await?;
    assert!(list.contains("No providers yet"), "nothing was stored");
    // Nothing listening there: the same, on the server field.
    drop(server);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let response = admin
        .post_form(
            "/w/acme/providers",
            &provider_form(&closed.to_string(), SMTP_PASSWORD),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await?.contains("could not be reached"));
    let (_, list) = admin.page("/w/acme/providers").await?;
    assert!(list.contains("No providers yet"));
    Ok(())
}
both!(a_provider_whose_sign_in_is_refused_is_not_created);

async fn the_egress_policy_refuses_loopback_and_metadata_addresses(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.egress_allow = String::new()).await?;
    let admin = app.setup().await?;
    let server = SmtpServer::start().await?;
    let port = server.port.to_string();
    let response = admin
        .post_form("/w/acme/providers", &provider_form(&port, SMTP_PASSWORD))
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(
        html.contains("which the egress policy refuses (loopback)"),
        "a clear message on the field"
    );
    assert!(html.contains("MAILROOM_EGRESS_ALLOW"));
    let metadata = owned(provider_form(&port, SMTP_PASSWORD));
    let response = post(
        &admin,
        "/w/acme/providers",
        &with(metadata, "host", "169.254.169.254"),
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await?.contains("cloud metadata"));
    assert_eq!(server.auth_attempts(), 0, "nothing connected");
    let (_, list) = admin.page("/w/acme/providers").await?;
    assert!(list.contains("No providers yet"), "nothing was saved");
    Ok(())
}
both!(the_egress_policy_refuses_loopback_and_metadata_addresses);

/// A stored password is never sent to other settings: a change of server, port, TLS mode
/// or username needs it typed again, and a change whose sign-in fails is not saved (the
/// provider keeps its working settings and says why).
async fn a_provider_keeps_its_working_settings_when_a_change_fails(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let page = add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    let base = owned(provider_form(&server.port.to_string(), ""));

    // A rename keeps the password, and the provider stays green.
    let response = post(&admin, &page, &with(base.clone(), "name", "Ops relay")).await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(admin.page(&page).await?.1.contains("badge green\">active"));

    // Another server without the password: refused, asked for, never sent there.
    let other = SmtpServer::start().await?;
    other.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let moved = with(
        with(base.clone(), "name", "Ops relay"),
        "port",
        &other.port.to_string(),
    );
    let response = post(&admin, &page, &moved).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(
        html.contains("enter the password for the new settings"),
        "{html}"
    );
    assert_eq!(
        other.auth_attempts(),
        0,
        "the old password never went to the new server"
    );
    let (_, kept) = admin.page(&page).await?;
    assert!(kept.contains("badge green\">active"), "it keeps working");
    assert!(
        kept.contains(&format!("value=\"{}\"", server.port)),
        "on its old server"
    );

    // A wrong password for the new server: refused with the server's answer.
    let response = post(&admin, &page, &with(moved.clone(), "password", "wrong")).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await?.contains("535"));
    assert!(admin.page(&page).await?.1.contains("badge green\">active"));

    // The right one moves it, green.
    let response = post(
        &admin,
        &page,
        &with(moved.clone(), "password", SMTP_PASSWORD),
    )
    .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, moved_page) = admin.page(&page).await?;
    assert!(moved_page.contains("badge green\">active"));
    assert!(moved_page.contains(&format!("value=\"{}\"", other.port)));

    // A different username needs it again too.
    let response = post(&admin, &page, &with(moved, "username", "someone-else")).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("enter the password for the new settings")
    );
    Ok(())
}
both!(a_provider_keeps_its_working_settings_when_a_change_fails);

async fn check_now_turns_a_provider_red_when_the_server_refuses(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    let page = add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    server.require_credentials(SMTP_USER, "rotated by the mail admin");
    let response = admin.post_form(&format!("{page}/check"), &[]).await?;
    assert_eq!(location(&response), page);
    let (_, html) = admin.page(&page).await?;
    assert!(
        html.contains("badge red") && html.contains("535 5.7.8"),
        "{}",
        &html[html.find("<main").unwrap_or(0)..]
    );
    server.require_credentials(SMTP_USER, SMTP_PASSWORD);
    admin.post_form(&format!("{page}/check"), &[]).await?;
    assert!(admin.page(&page).await?.1.contains("badge green\">active"));
    Ok(())
}
both!(check_now_turns_a_provider_red_when_the_server_refuses);

async fn provider_fields_are_checked_and_reject_line_breaks(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let form = owned(provider_form("70000", "pw"));
    let form = with(form, "from_name", "Acme\r\nBcc: victim@example.com");
    let form = with(form, "account_address", "not-an-address");
    let form = with(form, "name", "");
    let form = with(form, "receive_enabled", "on");
    let form = with(form, "imap_host", "");
    let form = with(form, "host", "smtp.example.com\r\nRCPT TO:<x>");
    let response = post(&admin, "/w/acme/providers", &form).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    for field in [
        "name",
        "host",
        "port",
        "account_address",
        "from_name",
        "imap_host",
    ] {
        assert!(
            html.contains(&format!("id=\"e-{field}\"")),
            "no error on {field}"
        );
    }
    assert!(html.contains("Line breaks and control characters are not allowed here."));
    assert!(
        html.contains("value=\"not-an-address\""),
        "typed values are kept"
    );
    assert!(!html.contains("value=\"pw\""), "but never the password");
    Ok(())
}
both!(provider_fields_are_checked_and_reject_line_breaks);

async fn providers_are_for_admins_and_stay_in_their_workspace(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    let page = add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    assert_eq!(
        editor.page("/w/acme/providers").await?.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(editor.page(&page).await?.0, StatusCode::FORBIDDEN);
    let port = server.port.to_string();
    assert_eq!(
        editor
            .post_form("/w/acme/providers", &provider_form(&port, "x"))
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        editor
            .post_form(&format!("{page}/delete"), &[])
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );

    let other = app.other_workspace("beta", "bea@example.com").await?;
    let id = page.rsplit('/').next().ok_or("id")?;
    assert_eq!(
        other.page(&format!("/w/beta/providers/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );
    for action in ["check", "delete"] {
        let response = other
            .post_form(&format!("/w/beta/providers/{id}/{action}"), &[])
            .await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    assert!(
        admin.page(&page).await?.1.contains("Ops SMTP"),
        "still there"
    );
    Ok(())
}
both!(providers_are_for_admins_and_stay_in_their_workspace);

async fn deleting_a_provider_asks_first_and_is_audited(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    let page = add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    let (_, html) = admin.page(&page).await?;
    assert!(html.contains("<dialog id=\"delete-provider\"") && html.contains("Delete Ops SMTP?"));
    let response = admin.post_form(&format!("{page}/delete"), &[]).await?;
    assert_eq!(location(&response), "/w/acme/providers");
    assert_eq!(admin.page(&page).await?.0, StatusCode::NOT_FOUND);
    let (_, audit) = admin.page("/w/acme/audit").await?;
    for action in ["provider.created", "provider.deleted"] {
        assert!(audit.contains(action), "{action}");
    }
    assert!(!audit.contains(SMTP_PASSWORD));
    Ok(())
}
both!(deleting_a_provider_asks_first_and_is_audited);

async fn a_duplicate_provider_name_is_refused_on_the_field(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let server = SmtpServer::start().await?;
    add_provider_alone(&admin, &server, SMTP_PASSWORD).await?;
    let port = server.port.to_string();
    let response = admin
        .post_form("/w/acme/providers", &provider_form(&port, SMTP_PASSWORD))
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("Another provider is already called")
    );
    Ok(())
}
both!(a_duplicate_provider_name_is_refused_on_the_field);
