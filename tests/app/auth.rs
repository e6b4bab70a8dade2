use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

async fn sign_in_succeeds_with_the_right_password(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    let response = browser.login(ADMIN, PASSWORD).await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    let home = browser.get("/").await?;
    assert_eq!(location(&home), "/w/acme/");
    assert_eq!(browser.page("/w/acme/").await?.0, StatusCode::OK);
    Ok(())
}
both!(sign_in_succeeds_with_the_right_password);

async fn sign_in_follows_next_only_to_this_site(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    let to_settings = browser
        .post_form(
            "/login",
            &[
                ("email", ADMIN),
                ("password", PASSWORD),
                ("next", "/w/acme/settings"),
            ],
        )
        .await?;
    assert_eq!(location(&to_settings), "/w/acme/settings");
    let elsewhere = app.browser();
    let response = elsewhere
        .post_form(
            "/login",
            &[
                ("email", ADMIN),
                ("password", PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await?;
    assert_eq!(location(&response), "/");
    Ok(())
}
both!(sign_in_follows_next_only_to_this_site);

async fn unknown_address_and_wrong_password_answer_the_same(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let wrong_password = app.browser().login(ADMIN, "wrong password!").await?;
    let unknown_user = app.browser().login("nobody@example.com", PASSWORD).await?;
    assert_eq!(wrong_password.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown_user.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let a = wrong_password.text().await?;
    let b = unknown_user.text().await?;
    let message = "The email address or password is not right.";
    assert!(a.contains(message) && b.contains(message));
    // Same page but for the typed address and the per-session CSRF token.
    let strip = |html: &str, email: &str| {
        html.replace(email, "")
            .replace(&csrf_in(html).unwrap_or_default(), "")
    };
    assert_eq!(strip(&a, ADMIN), strip(&b, "nobody@example.com"));
    Ok(())
}
both!(unknown_address_and_wrong_password_answer_the_same);

async fn ten_failures_throttle_the_account(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    for attempt in 1..=10 {
        let response = browser.login(ADMIN, "wrong password!").await?;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "attempt {attempt}"
        );
    }
    // The eleventh is refused before the password is looked at, even the right one.
    let response = browser.login(ADMIN, PASSWORD).await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .ok_or("Retry-After")?
        .to_str()?
        .parse()?;
    assert!(
        retry_after > 800 && retry_after <= 900,
        "about 15 minutes, got {retry_after}"
    );
    assert!(response.text().await?.contains("Too many attempts"));
    Ok(())
}
both!(ten_failures_throttle_the_account);

async fn ten_failures_from_one_address_throttle_other_accounts_too(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let editor = app.member(&admin, "ed@example.com", "editor").await?;
    drop(editor);
    let attacker = app.browser();
    for n in 0..10 {
        let response = attacker
            .login(&format!("guess{n}@example.com"), "wrong password!")
            .await?;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let response = attacker.login("ed@example.com", PASSWORD).await?;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the client address is throttled"
    );
    Ok(())
}
both!(ten_failures_from_one_address_throttle_other_accounts_too);

async fn a_user_changes_their_password(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let wrong = admin
        .post_form(
            "/account/password",
            &[
                ("current", "not it at all"),
                ("password", "a brand new secret"),
                ("confirm", "a brand new secret"),
            ],
        )
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong
            .text()
            .await?
            .contains("This is not your current password.")
    );
    let mismatch = admin
        .post_form(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", "a brand new secret"),
                ("confirm", "something else"),
            ],
        )
        .await?;
    assert!(mismatch.text().await?.contains("The two passwords differ."));
    let done = admin
        .post_form(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", "a brand new secret"),
                ("confirm", "a brand new secret"),
            ],
        )
        .await?;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    // The current session goes on; the old password no longer works; the new one does.
    assert_eq!(admin.page("/w/acme/").await?.0, StatusCode::OK);
    assert_eq!(
        app.browser().login(ADMIN, PASSWORD).await?.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.browser()
            .login(ADMIN, "a brand new secret")
            .await?
            .status(),
        StatusCode::SEE_OTHER
    );
    Ok(())
}
both!(a_user_changes_their_password);

async fn passwords_are_checked_whole_and_within_limits(backend: Backend) -> TestResult {
    let (app, admin) = TestApp::with_admin(backend).await?;
    let long = "x".repeat(129);
    let too_long = admin
        .post_form(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", &long),
                ("confirm", &long),
            ],
        )
        .await?;
    assert!(too_long.text().await?.contains("at most 128 characters"));
    // 128 characters are kept whole: a password differing only in its last character fails.
    let max = format!("{}A", "y".repeat(127));
    let ok = admin
        .post_form(
            "/account/password",
            &[("current", PASSWORD), ("password", &max), ("confirm", &max)],
        )
        .await?;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let almost = format!("{}B", "y".repeat(127));
    assert_eq!(
        app.browser().login(ADMIN, &almost).await?.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.browser().login(ADMIN, &max).await?.status(),
        StatusCode::SEE_OTHER
    );
    Ok(())
}
both!(passwords_are_checked_whole_and_within_limits);

async fn next_with_hidden_characters_never_leaves_the_site(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/ok path",
    ] {
        let browser = app.browser();
        let response = browser
            .post_form(
                "/login",
                &[("email", ADMIN), ("password", PASSWORD), ("next", next)],
            )
            .await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(location(&response), "/", "{next:?}");
    }
    Ok(())
}
both!(next_with_hidden_characters_never_leaves_the_site);

async fn parallel_guesses_cannot_pass_the_throttle(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    let token = browser.csrf().await?;
    let guesses = (0..20).map(|n| {
        let password = format!("wrong guess {n}");
        let request = browser.client.post(format!("{}/login", app.base)).form(&[
            ("email", ADMIN),
            ("password", password.as_str()),
            ("csrf_token", token.as_str()),
        ]);
        async move { request.send().await.map(|r| r.status()) }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let wrong = statuses
        .iter()
        .filter(|s| matches!(s, Ok(StatusCode::UNPROCESSABLE_ENTITY)))
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| matches!(s, Ok(StatusCode::TOO_MANY_REQUESTS)))
        .count();
    assert_eq!((wrong, throttled), (10, 10), "{statuses:?}");
    Ok(())
}
both!(parallel_guesses_cannot_pass_the_throttle);

async fn an_htmx_sign_in_is_a_full_page_redirect(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let browser = app.browser();
    let token = browser.csrf().await?;
    let response = browser
        .client
        .post(format!("{}/login", app.base))
        .header("HX-Request", "true")
        .header("HX-Boosted", "true")
        .header("X-CSRF-Token", token)
        .form(&[("email", ADMIN), ("password", PASSWORD)])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("hx-redirect").ok_or("HX-Redirect")?,
        "/"
    );
    Ok(())
}
both!(an_htmx_sign_in_is_a_full_page_redirect);

async fn guess(
    base: &str,
    browser: &Browser,
    ip: &str,
    email: &str,
    password: &str,
) -> reqwest::Result<StatusCode> {
    let token = browser.csrf().await?;
    let response = browser
        .client
        .post(format!("{base}/login"))
        .header("X-Forwarded-For", ip)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await?;
    Ok(response.status())
}

async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    backend: Backend,
) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| s.trust_forwarded_for = true).await?;
    let admin = app.setup().await?;
    let attacker = app.browser();
    for n in 0..10 {
        // The first guess is at the admin's account, so the audit log shows this address.
        let email = if n == 0 {
            ADMIN.to_owned()
        } else {
            format!("someone{n}@example.com")
        };
        // The client writes whatever it likes left of what the proxy appends: rotating it
        // must not start a fresh count (security review, item 5).
        let status = guess(
            &app.base,
            &attacker,
            &format!("6.6.6.{n}, 203.0.113.7"),
            &email,
            "a wrong guess here",
        )
        .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let status = guess(
        &app.base,
        &attacker,
        "6.6.6.99, 203.0.113.7",
        ADMIN,
        PASSWORD,
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded address is throttled"
    );
    // Another client behind the same proxy is not throttled for the first one's guesses…
    let other = app.browser();
    assert_eq!(
        guess(&app.base, &other, "198.51.100.9", ADMIN, PASSWORD).await?,
        StatusCode::SEE_OTHER
    );
    // …and the audit log names the real clients.
    let (_, html) = admin.page("/w/acme/audit").await?;
    assert!(html.contains("198.51.100.9") && html.contains("203.0.113.7"));
    assert!(
        !html.contains("6.6.6."),
        "a forged address is never recorded"
    );
    Ok(())
}
both!(behind_a_trusted_proxy_the_forwarded_address_is_the_client);

/// A peer that is not one of the trusted proxies is the client, whatever it forwards.
async fn forwarded_addresses_from_an_untrusted_peer_are_ignored(backend: Backend) -> TestResult {
    let app = TestApp::spawn_with(backend, |s| {
        s.trust_forwarded_for = true;
        s.trusted_proxies = "10.0.0.0/8".into();
    })
    .await?;
    let admin = app.setup().await?;
    let attacker = app.browser();
    for n in 0..10 {
        let status = guess(
            &app.base,
            &attacker,
            &format!("203.0.113.{n}"),
            &format!("someone{n}@example.com"),
            "a wrong guess here",
        )
        .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(
        guess(&app.base, &attacker, "198.51.100.77", ADMIN, PASSWORD).await?,
        StatusCode::TOO_MANY_REQUESTS,
        "throttled as the peer it is"
    );
    let (_, html) = admin.page("/w/acme/audit").await?;
    assert!(html.contains("127.0.0.1") && !html.contains("203.0.113."));
    Ok(())
}
both!(forwarded_addresses_from_an_untrusted_peer_are_ignored);
