use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

/// Sends a request with exactly this Cookie header (a copied cookie, replayed).
async fn replay(app: &TestApp, cookie: &str, path: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
}

async fn a_cookie_replayed_after_sign_out_is_refused(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let copied = admin.cookie_header();
    assert_eq!(
        replay(&app, &copied, "/w/acme/").await?.status(),
        StatusCode::OK,
        "the copy works while signed in"
    );
    let response = admin.post_form("/logout", &[]).await?;
    assert_eq!(location(&response), "/login");
    let replayed = replay(&app, &copied, "/w/acme/").await?;
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&replayed).starts_with("/login?next="),
        "sent to sign in"
    );
    assert_eq!(admin.get("/w/acme/").await?.status(), StatusCode::SEE_OTHER);
    Ok(())
}
both!(a_cookie_replayed_after_sign_out_is_refused);

async fn a_password_change_signs_out_other_sessions(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let laptop = app.browser();
    assert_eq!(
        laptop.login(ADMIN, PASSWORD).await?.status(),
        StatusCode::SEE_OTHER
    );
    let copied = laptop.cookie_header();
    let before = admin.cookie_header();
    let response = admin
        .post_form(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", "another good one"),
                ("confirm", "another good one"),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        replay(&app, &copied, "/w/acme/").await?.status(),
        StatusCode::SEE_OTHER,
        "the other session is gone"
    );
    assert_eq!(
        laptop.get("/w/acme/").await?.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        admin.page("/w/acme/").await?.0,
        StatusCode::OK,
        "the changing session goes on"
    );
    assert_ne!(admin.cookie_header(), before, "with a renewed session id");
    assert_eq!(
        replay(&app, &before, "/w/acme/").await?.status(),
        StatusCode::SEE_OTHER,
        "its old id is void"
    );
    Ok(())
}
both!(a_password_change_signs_out_other_sessions);

async fn disabling_an_account_revokes_its_sessions(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    let copied = editor.cookie_header();
    assert_eq!(editor.page("/w/acme/").await?.0, StatusCode::OK);
    let id = member_id(&admin, "ed@example.com").await?;
    let response = admin
        .post_form(&format!("/w/acme/members/{id}/disable"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        replay(&app, &copied, "/w/acme/").await?.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.browser()
            .login("ed@example.com", PASSWORD)
            .await?
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, members) = admin.page("/w/acme/members").await?;
    assert!(members.contains("disabled"));
    // Enabled again, they can sign in again, but the old session stays revoked.
    admin
        .post_form(&format!("/w/acme/members/{id}/enable"), &[])
        .await?;
    assert_eq!(
        replay(&app, &copied, "/w/acme/").await?.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        editor.get("/w/acme/").await?.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.browser()
            .login("ed@example.com", PASSWORD)
            .await?
            .status(),
        StatusCode::SEE_OTHER
    );
    Ok(())
}
both!(disabling_an_account_revokes_its_sessions);

async fn the_session_id_changes_at_sign_in(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    browser.page("/login").await?;
    let anonymous = browser.cookie_header();
    assert!(
        anonymous.contains("mailroom_session="),
        "an anonymous session holds the CSRF token"
    );
    browser.login(ADMIN, PASSWORD).await?;
    assert_ne!(browser.cookie_header(), anonymous);
    assert_eq!(
        replay(&app, &anonymous, "/w/acme/").await?.status(),
        StatusCode::SEE_OTHER,
        "the pre-login id never becomes signed in"
    );
    Ok(())
}
both!(the_session_id_changes_at_sign_in);

async fn session_cookies_are_http_only_and_same_site(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    let response = browser.get("/login").await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .ok_or("a session cookie")?
        .to_str()?
        .to_owned();
    assert!(cookie.starts_with("mailroom_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(
        !cookie.contains("Secure"),
        "plain http in tests: Secure only when served over https"
    );
    Ok(())
}
both!(session_cookies_are_http_only_and_same_site);

/// The user id of a member, read from acme's members page.
pub async fn member_id(admin: &Browser, email: &str) -> Result<String, Box<dyn std::error::Error>> {
    member_id_in(admin, SLUG, email).await
}

/// The user id of a member, read from a workspace's members page.
pub async fn member_id_in(
    admin: &Browser,
    slug: &str,
    email: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let (_, html) = admin.page(&format!("/w/{slug}/members")).await?;
    let row = html
        .split("<tr>")
        .skip(1)
        .find(|row| row.contains(email))
        .ok_or("member row")?;
    let marker = "/members/";
    let start = row.find(marker).ok_or("member action")? + marker.len();
    let end = row[start..].find('/').ok_or("id end")? + start;
    Ok(row[start..end].to_owned())
}
