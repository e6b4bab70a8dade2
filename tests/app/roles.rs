use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;
use crate::sessions::member_id;

async fn each_role_can_do_exactly_its_actions(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    let reviewer = app.member(&admin, "rev@example.com", "reviewer").await?;
    let viewer = app.member(&admin, "view@example.com", "viewer").await?;
    let target = member_id(&admin, "view@example.com").await?;

    for (who, browser) in [
        ("editor", &editor),
        ("reviewer", &reviewer),
        ("viewer", &viewer),
    ] {
        let (status, overview) = browser.page("/w/acme/").await?;
        assert_eq!(status, StatusCode::OK, "{who} reads the overview");
        assert!(
            !overview.contains("/w/acme/members\""),
            "{who} is not shown admin navigation"
        );
        for path in ["/w/acme/members", "/w/acme/settings", "/w/acme/audit"] {
            assert_eq!(
                browser.page(path).await?.0,
                StatusCode::FORBIDDEN,
                "{who} GET {path}"
            );
        }
        let posts: [(String, Vec<(&str, &str)>); 6] = [
            (
                "/w/acme/settings".into(),
                vec![("name", "Changed"), ("site_name", "")],
            ),
            (
                "/w/acme/members".into(),
                vec![("email", "new@example.com"), ("role", "admin")],
            ),
            (
                format!("/w/acme/members/{target}/role"),
                vec![("role", "admin")],
            ),
            (format!("/w/acme/members/{target}/remove"), vec![]),
            (format!("/w/acme/members/{target}/disable"), vec![]),
            (format!("/w/acme/members/{target}/reset-link"), vec![]),
        ];
        for (path, fields) in &posts {
            let response = browser.post_form(path, fields).await?;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{who} POST {path}"
            );
        }
    }
    // Nothing changed: the viewer is still a viewer, nobody new was added, the name stands.
    let (_, members) = admin.page("/w/acme/members").await?;
    assert!(!members.contains("new@example.com"));
    let viewer_row = members
        .split("<tr>")
        .find(|r| r.contains("view@example.com"))
        .ok_or("row")?;
    assert!(viewer_row.contains("value=\"viewer\" selected"));
    assert!(!admin.page("/w/acme/settings").await?.1.contains("Changed"));

    // The admin can do all of it.
    for path in ["/w/acme/members", "/w/acme/settings", "/w/acme/audit"] {
        assert_eq!(
            admin.page(path).await?.0,
            StatusCode::OK,
            "admin GET {path}"
        );
    }
    let response = admin
        .post_form(
            &format!("/w/acme/members/{target}/role"),
            &[("role", "editor")],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, members) = admin.page("/w/acme/members").await?;
    assert!(members.contains("view@example.com is now Editor."));
    Ok(())
}
both!(each_role_can_do_exactly_its_actions);
