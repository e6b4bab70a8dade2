use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

async fn pages_carry_security_headers_and_a_request_id(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let response = app.browser().get("/login").await?;
    let headers = response.headers();
    let csp = headers
        .get("content-security-policy")
        .ok_or("CSP")?
        .to_str()?;
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        headers.get("x-content-type-options").ok_or("nosniff")?,
        "nosniff"
    );
    assert_eq!(
        headers.get("referrer-policy").ok_or("referrer")?,
        "same-origin"
    );
    assert!(headers.contains_key("x-request-id"));
    let html = response.text().await?;
    assert!(!html.contains("<script>"), "no inline script");
    assert!(html.contains("/static/htmx.min.js?v="));
    Ok(())
}
both!(pages_carry_security_headers_and_a_request_id);

async fn an_unknown_page_answers_404_with_the_request_id(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let response = admin.get("/no/such/page").await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let id = response
        .headers()
        .get("x-request-id")
        .ok_or("id")?
        .to_str()?
        .to_owned();
    let html = response.text().await?;
    assert!(
        html.contains("Not found") && html.contains(&id),
        "the page names the request id"
    );
    // A targeted htmx request gets a fragment, not a page.
    let fragment = admin
        .client
        .get(format!("{}/no/such/page", admin.base))
        .header("HX-Request", "true")
        .send()
        .await?;
    assert_eq!(fragment.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        fragment.headers().get("hx-retarget").ok_or("retarget")?,
        "#htmx-error"
    );
    let body = fragment.text().await?;
    assert!(body.contains("alert error") && !body.contains("<html"));
    Ok(())
}
both!(an_unknown_page_answers_404_with_the_request_id);

async fn healthz_checks_the_database(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let (status, body) = app.browser().page("/healthz").await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    Ok(())
}
both!(healthz_checks_the_database);

async fn user_text_is_escaped(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let evil = "<script>alert(1)</script>";
    let response = admin
        .post_form(
            "/w/acme/settings",
            &[
                ("name", evil),
                ("site_name", "\"><img src=x onerror=alert(1)>"),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    for path in ["/w/acme/", "/w/acme/settings", "/w/acme/audit"] {
        let (_, html) = admin.page(path).await?;
        assert!(
            !html.contains(evil) && !html.contains("<img src=x"),
            "{path} renders user text raw"
        );
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path}: {}",
            &html[html.find("<main").unwrap_or(0)..]
        );
    }
    let bad = admin
        .post_form(
            "/w/acme/settings",
            &[("name", "Line\r\nBreak"), ("site_name", "")],
        )
        .await?;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await?.contains("cannot contain line breaks"));
    Ok(())
}
both!(user_text_is_escaped);

async fn static_files_are_served_with_long_cache_headers(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let (_, html) = app.browser().page("/setup").await?;
    let start = html
        .find("/static/app.css?v=")
        .ok_or("versioned stylesheet")?;
    let url = &html[start..start + html[start..].find('"').ok_or("end")?];
    let response = app.browser().get(url).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("cache-control")
            .ok_or("cache")?
            .to_str()?
            .contains("immutable")
    );
    assert!(
        response
            .headers()
            .get("content-type")
            .ok_or("type")?
            .to_str()?
            .starts_with("text/css")
    );
    let htmx = app.browser().get("/static/htmx.min.js").await?;
    assert_eq!(htmx.status(), StatusCode::OK);
    assert!(htmx.text().await?.contains("htmx"));
    Ok(())
}
both!(static_files_are_served_with_long_cache_headers);

async fn the_audit_log_records_sign_ins_and_changes(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    app.browser().login(ADMIN, "wrong password!").await?;
    app.member(&admin, "ed@example.com", "editor").await?;
    admin
        .post_form(
            "/w/acme/settings",
            &[("name", "Acme Ltd"), ("site_name", "ACME")],
        )
        .await?;
    let (status, html) = admin.page("/w/acme/audit").await?;
    assert_eq!(status, StatusCode::OK);
    for action in [
        "setup.completed",
        "login.failure",
        "login.success",
        "member.added",
        "password.set",
        "settings.changed",
    ] {
        assert!(html.contains(action), "audit log lacks {action}");
    }
    assert!(html.contains("wrong password"));
    assert!(html.contains("127.0.0.1"));
    Ok(())
}
both!(the_audit_log_records_sign_ins_and_changes);

async fn the_audit_log_pages_with_a_keyset(backend: Backend) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    for n in 0..55 {
        admin
            .post_form(
                "/w/acme/settings",
                &[("name", &format!("Name {n}")), ("site_name", "")],
            )
            .await?;
    }
    let (_, first) = admin.page("/w/acme/audit").await?;
    assert!(first.contains("Name 54") && !first.contains("&#34;Name 3&#34;"));
    let start = first.find("/w/acme/audit?before=").ok_or("older link")?;
    let older = &first[start..start + first[start..].find('"').ok_or("end")?];
    let (_, second) = admin.page(older).await?;
    assert!(
        second.contains("setup.completed"),
        "the oldest entry is on the second page"
    );
    assert!(
        second.contains("/w/acme/audit?after="),
        "and a link back to newer"
    );
    Ok(())
}
both!(the_audit_log_pages_with_a_keyset);

/// PostgreSQL ended every connection (a restart, an administrator): each dead pooled
/// connection fails at most one use and is dropped; then the console serves again, on its
/// own, within its health check's refusal window.
#[actix_web::test]
async fn the_pool_recovers_when_postgresql_drops_its_connections() -> TestResult {
    use diesel::prelude::*;
    if !postgres_or_skip("the_pool_recovers_when_postgresql_drops_its_connections") {
        return Ok(());
    }
    let app = TestApp::spawn(Backend::Postgres).await?;
    let browser = app.browser();
    let warm = (0..4).map(|_| browser.page("/healthz"));
    for answer in futures_util::future::join_all(warm).await {
        assert_eq!(answer?.0, StatusCode::OK);
    }
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .ok_or("database name")?
        .to_owned();
    let mut admin = diesel::PgConnection::establish(&pg_admin_url())?;
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)?;
    // A request on a dropped connection fails once (the pool then discards it), and
    // `/healthz` says so for its refusal window (5 s) after any refused request, the
    // engine's own included: recovery is measured in time, not in requests.
    let started = std::time::Instant::now();
    let mut failures = 0;
    let mut in_a_row = 0;
    while in_a_row < 5 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "not serving again 20 s after its connections were dropped ({failures} failed)"
        );
        match browser.page("/healthz").await?.0 {
            StatusCode::OK => in_a_row += 1,
            _ => {
                failures += 1;
                in_a_row = 0;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

/// Security review, item 5: no signed-in page, and no answer that shows a secret once, may
/// be kept by a browser's or a proxy's cache.
async fn pages_and_one_time_secrets_are_never_cached(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let no_store = |response: &reqwest::Response| {
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    for path in [
        "/w/acme/messages",
        "/w/acme/members",
        "/w/acme/api-keys",
        "/account",
    ] {
        let response = admin.get(path).await?;
        assert_eq!(no_store(&response), "no-store", "{path}");
    }
    let key = admin
        .post_form(
            "/w/acme/api-keys",
            &[("name", "Desk"), ("scope", "send"), ("per_minute", "")],
        )
        .await?;
    assert_eq!(key.status(), StatusCode::CREATED);
    assert_eq!(no_store(&key), "no-store", "a new API key");
    let invite = admin
        .post_form(
            "/w/acme/members",
            &[("email", "new@example.com"), ("role", "viewer")],
        )
        .await?;
    assert_eq!(no_store(&invite), "no-store", "a set-password link");
    let link = one_time_link(&invite.text().await?).ok_or("link")?;
    let form = app
        .browser()
        .get(link.trim_start_matches(&app.base))
        .await?;
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(no_store(&form), "no-store", "the set-password form");
    // Static files keep their own long cache policy.
    let css = app.browser().get("/static/app.css").await?;
    assert_ne!(no_store(&css), "no-store");
    Ok(())
}
both!(pages_and_one_time_secrets_are_never_cached);
