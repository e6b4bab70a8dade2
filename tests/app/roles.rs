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

async fn each_role_can_do_what_it_may(backend: Backend) -> TestResult {
    let built = TestApp::build(backend)
        .with_user("editor")
        .with_user("reviewer")
        .with_user("viewer")
        .with_messages(1)
        .start()
        .await?;
    let (app, provider) = (&built.app, built.provider.clone().ok_or("provider")?);
    let smtp = built.smtp.as_ref().ok_or("smtp")?;
    assert_eq!(smtp.messages().len(), 1, "the builder's message was sent");
    let (_, history) = built.admin.page("/w/acme/messages").await?;
    let sent_page = history
        .split("href=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|href| {
            href.starts_with("/w/acme/messages/")
                && href["/w/acme/messages/".len()..]
                    .chars()
                    .all(|c| c.is_ascii_digit())
        })
        .ok_or("a message link")?
        .to_owned();

    // (path, admin, editor, reviewer, viewer): may each role open it?
    let pages: [(&str, [bool; 4]); 11] = [
        ("/w/acme/", [true, true, true, true]),
        ("/w/acme/messages", [true, true, true, true]),
        ("/w/acme/messages?tab=sys", [true, true, true, true]),
        ("/w/acme/messages.csv", [true, true, true, true]),
        (&sent_page, [true, true, true, true]),
        ("/w/acme/api-reference", [true, true, true, true]),
        ("/w/acme/compose", [true, true, false, false]),
        ("/w/acme/providers", [true, false, false, false]),
        ("/w/acme/members", [true, false, false, false]),
        ("/w/acme/settings", [true, false, false, false]),
        ("/w/acme/audit", [true, false, false, false]),
    ];
    let roles = ["admin", "editor", "reviewer", "viewer"];
    for (i, role) in roles.iter().enumerate() {
        let browser = if *role == "admin" {
            &built.admin
        } else {
            built.user(role)
        };
        for (path, may) in &pages {
            let expected = if may[i] {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(browser.page(path).await?.0, expected, "{role} GET {path}");
        }
    }

    // Editors compose, cancel and retry; reviewers and viewers read only.
    let editor = built.user("editor");
    let response = crate::delivery::compose_at(
        editor,
        "acme",
        &provider,
        &[("to", "from-editor@example.com")],
        &[],
    )
    .await?;
    assert!(
        response.status().is_redirection() || response.status().is_success(),
        "the editor composes: {}",
        response.status()
    );
    app.run_queue_until_empty().await?;
    assert_eq!(smtp.messages().len(), 2, "the editor's message went out");
    crate::delivery::compose_at(
        editor,
        "acme",
        &provider,
        &[
            ("to", "later@example.com"),
            ("send_at", LATER_FORM.as_str()),
        ],
        &[],
    )
    .await?;
    let (_, history) = editor.page("/w/acme/messages?q=later").await?;
    let later = history
        .split("href=\"/w/acme/messages/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("the scheduled message")?
        .to_owned();
    for role in ["reviewer", "viewer"] {
        let browser = built.user(role);
        let response = crate::delivery::compose_at(
            browser,
            "acme",
            &provider,
            &[("to", "never@example.com")],
            &[],
        )
        .await?;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role} composes");
        for action in ["cancel", "retry"] {
            let response = browser
                .post_form(&format!("/w/acme/messages/{later}/{action}"), &[])
                .await?;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role} {action}");
        }
    }
    let response = editor
        .post_form(&format!("/w/acme/messages/{later}/cancel"), &[])
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the editor cancels"
    );
    let (_, page) = editor.page(&format!("/w/acme/messages/{later}")).await?;
    assert!(page.contains("badge grey struck\">cancelled"), "cancelled");
    app.run_queue_until_empty().await?;
    assert_eq!(
        smtp.messages().len(),
        2,
        "nothing from reviewers or viewers"
    );
    Ok(())
}
both!(each_role_can_do_what_it_may);
