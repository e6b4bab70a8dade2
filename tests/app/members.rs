use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;
use crate::sessions::member_id;

async fn an_invited_member_sets_a_password_once(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let page = admin
        .post_form(
            "/w/acme/members",
            &[("email", "New@Example.com"), ("role", "editor")],
        )
        .await?;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await?;
    assert!(html.contains("new@example.com was invited as Editor."));
    let link = one_time_link(&html).ok_or("link shown")?;
    assert!(link.starts_with(&format!("{}/password/set?token=", app.base)));
    // Shown once: the members page does not show it again.
    assert!(one_time_link(&admin.page("/w/acme/members").await?.1).is_none());
    // Before setting a password the invited account cannot sign in.
    assert_eq!(
        app.browser()
            .login("new@example.com", PASSWORD)
            .await?
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let member = app.browser();
    let path = link.trim_start_matches(&app.base).to_owned();
    let (status, form) = member.page(&path).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("new@example.com"));
    let short = member.set_password_with_link(&link, "short").await?;
    assert_eq!(
        short.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "rules apply; the link stays usable"
    );
    let set = member.set_password_with_link(&link, PASSWORD).await?;
    assert_eq!(location(&set), "/login");
    assert_eq!(
        member.login("new@example.com", PASSWORD).await?.status(),
        StatusCode::SEE_OTHER
    );
    // Used once, never again.
    let again = app
        .browser()
        .set_password_with_link(&link, "an attacker's choice")
        .await?;
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(again.text().await?.contains("expired or was already used"));
    assert_eq!(app.browser().page(&path).await?.0, StatusCode::GONE);
    assert_eq!(
        app.browser()
            .login("new@example.com", "an attacker's choice")
            .await?
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    Ok(())
}
both!(an_invited_member_sets_a_password_once);

async fn a_reset_link_replaces_a_forgotten_password(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    let id = member_id(&admin, "ed@example.com").await?;
    let page = admin
        .post_form(&format!("/w/acme/members/{id}/reset-link"), &[])
        .await?;
    let link = one_time_link(&page.text().await?).ok_or("reset link shown")?;
    let set = app
        .browser()
        .set_password_with_link(&link, "remembered at last")
        .await?;
    assert_eq!(location(&set), "/login");
    assert_eq!(
        editor.get("/w/acme/").await?.status(),
        StatusCode::SEE_OTHER,
        "the reset signs out old sessions"
    );
    assert_eq!(
        app.browser()
            .login("ed@example.com", PASSWORD)
            .await?
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.browser()
            .login("ed@example.com", "remembered at last")
            .await?
            .status(),
        StatusCode::SEE_OTHER
    );
    Ok(())
}
both!(a_reset_link_replaces_a_forgotten_password);

async fn the_last_admin_cannot_be_demoted_or_removed(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let id = member_id(&admin, ADMIN).await?;
    admin
        .post_form(&format!("/w/acme/members/{id}/role"), &[("role", "editor")])
        .await?;
    let (_, html) = admin.page("/w/acme/members").await?;
    assert!(html.contains("You cannot demote the last active admin"));
    admin
        .post_form(&format!("/w/acme/members/{id}/remove"), &[])
        .await?;
    let (_, html) = admin.page("/w/acme/members").await?;
    assert!(html.contains("You cannot remove the last active admin"));
    assert_eq!(
        admin.page("/w/acme/members").await?.0,
        StatusCode::OK,
        "still admin"
    );

    // With a second admin, the first may step down.
    app.member(&admin, "second@example.com", "admin").await?;
    let response = admin
        .post_form(&format!("/w/acme/members/{id}/role"), &[("role", "viewer")])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        admin.page("/w/acme/members").await?.0,
        StatusCode::FORBIDDEN,
        "now a viewer"
    );
    Ok(())
}
both!(the_last_admin_cannot_be_demoted_or_removed);

async fn a_removed_member_loses_the_workspace(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    let id = member_id(&admin, "ed@example.com").await?;
    let response = admin
        .post_form(&format!("/w/acme/members/{id}/remove"), &[])
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(editor.page("/w/acme/").await?.0, StatusCode::NOT_FOUND);
    Ok(())
}
both!(a_removed_member_loses_the_workspace);

async fn adding_an_existing_member_again_says_so(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    app.member(&admin, "ed@example.com", "editor").await?;
    let response = admin
        .post_form(
            "/w/acme/members",
            &[("email", "ed@example.com"), ("role", "viewer")],
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await?
            .contains("ed@example.com is already a member.")
    );
    let bad = admin
        .post_form(
            "/w/acme/members",
            &[("email", "a\r\nBcc: x@evil.example"), ("role", "owner")],
        )
        .await?;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await?;
    assert!(html.contains("cannot contain spaces or line breaks"));
    assert!(html.contains("is not a role"));
    Ok(())
}
both!(adding_an_existing_member_again_says_so);

async fn an_invited_or_disabled_admin_does_not_count_as_the_last_admin(
    backend: Backend,
) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let me = member_id(&admin, ADMIN).await?;
    // An invited admin who never set a password cannot take over.
    admin
        .post_form(
            "/w/acme/members",
            &[("email", "invited@example.com"), ("role", "admin")],
        )
        .await?;
    admin
        .post_form(&format!("/w/acme/members/{me}/role"), &[("role", "viewer")])
        .await?;
    assert!(
        admin
            .page("/w/acme/members")
            .await?
            .1
            .contains("last active admin")
    );
    // A disabled admin neither.
    app.member(&admin, "second@example.com", "admin").await?;
    let second = member_id(&admin, "second@example.com").await?;
    let disabled = admin
        .post_form(&format!("/w/acme/members/{second}/disable"), &[])
        .await?;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    admin
        .post_form(&format!("/w/acme/members/{me}/remove"), &[])
        .await?;
    assert!(
        admin
            .page("/w/acme/members")
            .await?
            .1
            .contains("last active admin")
    );
    assert_eq!(
        admin.page("/w/acme/members").await?.0,
        StatusCode::OK,
        "still an admin"
    );
    Ok(())
}
both!(an_invited_or_disabled_admin_does_not_count_as_the_last_admin);

/// Security review, item 1: admin A of `acme` keeps a one-time link; admin B of `globex`
/// then adds the same account to `globex` as an admin. A's link must no longer set the
/// password, or A would sign in to `globex` as its admin.
async fn a_kept_link_dies_when_another_workspace_takes_the_account_in(
    backend: Backend,
) -> TestResult {
    let (app, admin_a) = TestApp::with_admin(backend).await?;
    let admin_b = app.other_workspace("globex", "b@example.com").await?;

    // An invitation not accepted yet: B cannot take the account in (that would void the
    // invitation, and no admin of one workspace could make a new link for an account of
    // two), and says why; the invitee's link keeps working for them.
    let page = admin_a
        .post_form(
            "/w/acme/members",
            &[("email", "victim@corp.example"), ("role", "viewer")],
        )
        .await?;
    let invite = one_time_link(&page.text().await?).ok_or("invitation link")?;
    let refused = admin_b
        .post_form(
            "/w/globex/members",
            &[("email", "victim@corp.example"), ("role", "admin")],
        )
        .await?;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .text()
            .await?
            .contains("has not accepted their invitation")
    );
    let path = invite.trim_start_matches(&app.base).to_owned();
    assert_eq!(app.browser().page(&path).await?.0, StatusCode::OK);

    // …and a reset link A made while the account belonged to acme alone.
    let victim = app
        .member(&admin_a, "victim2@corp.example", "viewer")
        .await?;
    let id = member_id(&admin_a, "victim2@corp.example").await?;
    let page = admin_a
        .post_form(&format!("/w/acme/members/{id}/reset-link"), &[])
        .await?;
    let reset = one_time_link(&page.text().await?).ok_or("reset link")?;
    let joined = admin_b
        .post_form(
            "/w/globex/members",
            &[("email", "victim2@corp.example"), ("role", "admin")],
        )
        .await?;
    assert_eq!(
        joined.status(),
        StatusCode::SEE_OTHER,
        "an existing account joins"
    );
    // Voided at the join (not only refused at redemption).
    let open_links = app
        .db()
        .run(|conn| {
            use diesel::prelude::*;
            use mailroom::db::schema::{password_tokens as t, users as u};
            Ok(t::table
                .inner_join(u::table)
                .filter(u::email.eq("victim2@corp.example"))
                .filter(t::used_at.is_null())
                .count()
                .get_result::<i64>(conn)?)
        })
        .await?;
    assert_eq!(open_links, 0, "joining another workspace voids open links");
    let path = reset.trim_start_matches(&app.base).to_owned();
    assert_eq!(app.browser().page(&path).await?.0, StatusCode::GONE);
    let taken = app
        .browser()
        .set_password_with_link(&reset, "chosen by admin A")
        .await?;
    assert_eq!(taken.status(), StatusCode::GONE);
    assert!(taken.text().await?.contains("expired or was already used"));
    let attacker = app.browser();
    assert_eq!(
        attacker
            .login("victim2@corp.example", "chosen by admin A")
            .await?
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        attacker.page("/w/globex/members").await?.0,
        StatusCode::SEE_OTHER
    );
    // The victim's own password and session still work; globex is theirs to use.
    assert_eq!(
        app.browser()
            .login("victim2@corp.example", PASSWORD)
            .await?
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(victim.page("/w/acme/messages").await?.0, StatusCode::OK);
    Ok(())
}
both!(a_kept_link_dies_when_another_workspace_takes_the_account_in);

/// A link also dies when its creator can no longer manage the account at the moment it is
/// redeemed (here: demoted), even if nothing voided it.
async fn a_link_dies_when_its_creator_stops_being_an_admin(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let second = app.member(&admin, "second@example.com", "admin").await?;
    let page = second
        .post_form(
            "/w/acme/members",
            &[("email", "late@example.com"), ("role", "viewer")],
        )
        .await?;
    let invite = one_time_link(&page.text().await?).ok_or("invitation link")?;
    let id = member_id(&admin, "second@example.com").await?;
    let demoted = admin
        .post_form(&format!("/w/acme/members/{id}/role"), &[("role", "viewer")])
        .await?;
    assert!(demoted.status().is_success() || demoted.status().is_redirection());
    let taken = app
        .browser()
        .set_password_with_link(&invite, "any password at all")
        .await?;
    assert_eq!(taken.status(), StatusCode::GONE);
    // The same link made by an admin who still is one works.
    let page = admin
        .post_form(
            &format!(
                "/w/acme/members/{}/reset-link",
                member_id(&admin, "late@example.com").await?
            ),
            &[],
        )
        .await?;
    let fresh = one_time_link(&page.text().await?).ok_or("new link")?;
    let set = app
        .browser()
        .set_password_with_link(&fresh, PASSWORD)
        .await?;
    assert_eq!(location(&set), "/login");
    Ok(())
}
both!(a_link_dies_when_its_creator_stops_being_an_admin);
