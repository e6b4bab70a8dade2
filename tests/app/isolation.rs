use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;
use crate::sessions::{member_id, member_id_in};

async fn a_member_of_one_workspace_gets_404_for_another(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let other = app.other_workspace("beta", "bea@example.com").await?;
    assert_eq!(other.page("/w/beta/").await?.0, StatusCode::OK);
    for path in [
        "/w/beta/",
        "/w/beta/members",
        "/w/beta/settings",
        "/w/beta/audit",
        "/w/nonexistent/",
    ] {
        assert_eq!(
            admin.page(path).await?.0,
            StatusCode::NOT_FOUND,
            "acme's admin GET {path}"
        );
    }
    let response = admin
        .post_form("/w/beta/settings", &[("name", "Taken over")])
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        !other
            .page("/w/beta/settings")
            .await?
            .1
            .contains("Taken over")
    );
    // Acting on another workspace's member through one's own workspace finds nobody.
    let bea = member_id_in(&other, "beta", "bea@example.com").await?;
    for action in ["role", "remove", "disable", "reset-link"] {
        let response = admin
            .post_form(
                &format!("/w/acme/members/{bea}/{action}"),
                &[("role", "viewer")],
            )
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{action} on a member of beta through acme"
        );
    }
    assert_eq!(
        other.page("/w/beta/members").await?.0,
        StatusCode::OK,
        "bea is still beta's admin"
    );
    Ok(())
}
both!(a_member_of_one_workspace_gets_404_for_another);

async fn an_admin_cannot_take_over_an_account_of_another_workspace(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let bea = app.other_workspace("beta", "bea@example.com").await?;
    // bea also joins acme as an editor; acme's admin may not disable her account or reset
    // her password, since she administers beta.
    admin
        .post_form(
            "/w/acme/members",
            &[("email", "bea@example.com"), ("role", "editor")],
        )
        .await?;
    let id = member_id(&admin, "bea@example.com").await?;
    admin
        .post_form(&format!("/w/acme/members/{id}/reset-link"), &[])
        .await?;
    let (_, html) = admin.page("/w/acme/members").await?;
    assert!(html.contains("also belongs to a workspace you do not administer"));
    admin
        .post_form(&format!("/w/acme/members/{id}/disable"), &[])
        .await?;
    assert_eq!(
        bea.page("/w/beta/").await?.0,
        StatusCode::OK,
        "still signed in"
    );
    Ok(())
}
both!(an_admin_cannot_take_over_an_account_of_another_workspace);

async fn the_switcher_lists_every_workspace_of_the_user(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let bea = app.other_workspace("beta", "bea@example.com").await?;
    admin
        .post_form(
            "/w/acme/members",
            &[("email", "bea@example.com"), ("role", "viewer")],
        )
        .await?;
    let (_, html) = bea.page("/w/beta/").await?;
    assert!(html.contains("href=\"/w/acme/\"") && html.contains("href=\"/w/beta/\""));
    assert_eq!(bea.page("/w/acme/").await?.0, StatusCode::OK);
    Ok(())
}
both!(the_switcher_lists_every_workspace_of_the_user);

async fn the_audit_log_shows_a_member_s_sign_ins_only_since_they_joined(
    backend: Backend,
) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let _bea = app.other_workspace("beta", "bea@example.com").await?;
    app.browser()
        .login("bea@example.com", "a wrong guess here")
        .await?;
    // Acme's admin adds bea (an existing account) and must not see her earlier history.
    admin
        .post_form(
            "/w/acme/members",
            &[("email", "bea@example.com"), ("role", "viewer")],
        )
        .await?;
    let (_, html) = admin.page("/w/acme/audit").await?;
    let bea_rows: Vec<&str> = html
        .split("<tr>")
        .skip(1)
        .filter(|r| r.contains("bea@example.com"))
        .collect();
    assert!(
        bea_rows.iter().all(|r| !r.contains("login.")),
        "earlier sign-ins leaked: {bea_rows:?}"
    );
    assert!(bea_rows.iter().any(|r| r.contains("member.added")));
    // From now on her sign-ins show.
    app.browser().login("bea@example.com", PASSWORD).await?;
    let (_, html) = admin.page("/w/acme/audit").await?;
    assert!(
        html.split("<tr>")
            .any(|r| r.contains("bea@example.com") && r.contains("login.success"))
    );
    Ok(())
}
both!(the_audit_log_shows_a_member_s_sign_ins_only_since_they_joined);
