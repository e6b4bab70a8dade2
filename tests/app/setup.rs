use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

async fn a_fresh_instance_leads_every_page_to_setup(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let browser = app.browser();
    for path in ["/", "/login", "/w/acme/", "/account"] {
        let response = browser.get(path).await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&response), "/setup", "{path}");
    }
    let (status, html) = browser.page("/setup").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Setup token"));
    Ok(())
}
both!(a_fresh_instance_leads_every_page_to_setup);

async fn setup_without_the_token_creates_nothing(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let browser = app.browser();
    let response = browser
        .post_form(
            "/setup",
            &[
                ("setup_token", "not-the-token"),
                ("email", ADMIN),
                ("password", PASSWORD),
                ("workspace_name", "Acme"),
                ("slug", "acme"),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(
        html.contains("This is not the setup token"),
        "the error names the field"
    );
    assert!(
        html.contains("value=\"admin@example.com\""),
        "typed values are kept"
    );
    assert!(
        !html.contains(PASSWORD),
        "the password is never echoed back"
    );
    // Still unclaimed: every page still leads to setup, and nobody can sign in.
    assert_eq!(location(&browser.get("/").await?), "/setup");
    Ok(())
}
both!(setup_without_the_token_creates_nothing);

async fn setup_with_the_token_creates_the_admin_and_workspace(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let (status, html) = admin.page("/w/acme/").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Overview") && html.contains("Acme"));
    // Setup is closed now, even with the right token.
    let again = app.browser();
    let response = again
        .post_form(
            "/setup",
            &[
                ("setup_token", &app.setup_token),
                ("email", "evil@example.com"),
                ("password", PASSWORD),
                ("workspace_name", "X"),
                ("slug", "xxx"),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        again.login("evil@example.com", PASSWORD).await?.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    Ok(())
}
both!(setup_with_the_token_creates_the_admin_and_workspace);

async fn setup_reports_each_wrong_field(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let response = app
        .browser()
        .post_form(
            "/setup",
            &[
                ("setup_token", &app.setup_token),
                ("email", "not an address"),
                ("password", "short"),
                ("workspace_name", ""),
                ("slug", "Bad Slug!"),
            ],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(html.contains("id=\"e-email\""));
    assert!(html.contains("at least 8 characters"));
    assert!(html.contains("Enter a workspace name."));
    assert!(html.contains("id=\"e-slug\""));
    assert!(html.contains("id=\"f-email\" name=\"email\" type=\"email\" value=\"not an address\" autocomplete=\"username\" autofocus"), "the first wrong field is focused");
    Ok(())
}
both!(setup_reports_each_wrong_field);
