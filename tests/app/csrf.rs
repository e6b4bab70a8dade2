use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

async fn a_state_change_without_a_csrf_token_is_refused_and_changes_nothing(
    backend: Backend,
) -> TestResult {
    let (_app, admin) = TestApp::with_admin(backend).await?;
    let response = admin
        .post_form_without_csrf(
            "/w/acme/settings",
            &[("name", "Hijacked"), ("site_name", "x")],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await?.contains("came from another site"));
    let (_, html) = admin.page("/w/acme/settings").await?;
    assert!(!html.contains("Hijacked"));
    // A wrong token is no better.
    let response = admin
        .post_form_without_csrf(
            "/w/acme/settings",
            &[("name", "Hijacked"), ("csrf_token", "guess")],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Sign-out without a token does not sign out.
    assert_eq!(
        admin.post_form_without_csrf("/logout", &[]).await?.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(admin.page("/w/acme/").await?.0, StatusCode::OK);
    Ok(())
}
both!(a_state_change_without_a_csrf_token_is_refused_and_changes_nothing);

async fn the_csrf_token_is_accepted_from_the_htmx_header(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let token = admin.csrf().await?;
    let response = admin
        .client
        .post(format!("{}/w/acme/settings", app.base))
        .header("X-CSRF-Token", token)
        .header("HX-Request", "true")
        .form(&[("name", "Acme Corp"), ("site_name", "Acme")])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().contains_key("hx-location"),
        "htmx is told where to go"
    );
    assert!(
        admin
            .page("/w/acme/settings")
            .await?
            .1
            .contains("Acme Corp")
    );
    Ok(())
}
both!(the_csrf_token_is_accepted_from_the_htmx_header);

async fn a_cross_origin_post_is_refused_even_with_the_token(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let token = admin.csrf().await?;
    let response = admin
        .client
        .post(format!("{}/w/acme/settings", app.base))
        .header("Origin", "https://evil.example")
        .form(&[("name", "Hijacked"), ("csrf_token", &token)])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let same_origin = admin
        .client
        .post(format!("{}/w/acme/settings", app.base))
        .header("Origin", app.base.as_str())
        .form(&[("name", "Acme Two"), ("csrf_token", &token)])
        .send()
        .await?;
    assert_eq!(same_origin.status(), StatusCode::SEE_OTHER);
    let (_, html) = admin.page("/w/acme/settings").await?;
    assert!(html.contains("Acme Two") && !html.contains("Hijacked"));
    Ok(())
}
both!(a_cross_origin_post_is_refused_even_with_the_token);

async fn a_stale_htmx_header_falls_back_to_the_form_field(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let token = admin.csrf().await?;
    // An error page has no session token, so htmx may send an empty or stale header.
    for header in ["", "stale-token"] {
        let response = admin
            .client
            .post(format!("{}/w/acme/settings", app.base))
            .header("X-CSRF-Token", header)
            .form(&[
                ("name", "Acme Fallback"),
                ("site_name", ""),
                ("csrf_token", token.as_str()),
            ])
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "header {header:?}"
        );
    }
    let response = admin
        .client
        .post(format!("{}/w/acme/settings", app.base))
        .header("X-CSRF-Token", "stale-token")
        .form(&[("name", "Hijacked"), ("site_name", "")])
        .send()
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "neither header nor field valid"
    );
    assert!(
        admin
            .page("/w/acme/settings")
            .await?
            .1
            .contains("Acme Fallback")
    );
    Ok(())
}
both!(a_stale_htmx_header_falls_back_to_the_form_field);
