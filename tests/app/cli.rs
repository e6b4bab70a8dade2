use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;

use crate::both;
use crate::helpers::*;

/// Runs the `mailroom` binary in an empty directory with only the given settings.
fn mailroom(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> std::io::Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILROOM_")) {
        command.env_remove(key);
    }
    command.env("MAILROOM_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

#[test]
fn an_invalid_setting_is_named_in_one_line_with_exit_code_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (key, value, named) in [
        ("MAILROOM_BIND", "not-an-address", "bind (MAILROOM_BIND)"),
        ("MAILROOM_POOL_SIZE", "many", "pool_size"),
        (
            "MAILROOM_DATABASE_URL",
            "mysql://x",
            "database_url (MAILROOM_DATABASE_URL)",
        ),
        (
            "MAILROOM_SECRET_KEY",
            "abc",
            "secret_key (MAILROOM_SECRET_KEY)",
        ),
        (
            "MAILROOM_SMTP_CA_FILE",
            "/no/such/ca.pem",
            "smtp_ca_file (MAILROOM_SMTP_CA_FILE): /no/such/ca.pem",
        ),
        (
            "MAILROOM_SMTP_CA_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            "holds no PEM certificate",
        ),
    ] {
        let output = mailroom(dir.path(), &["migrate"], &[(key, value)], None)?;
        assert_eq!(output.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8(output.stderr)?;
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{key}: one line, got {stderr:?}"
        );
        assert!(stderr.contains(named), "{key}: {stderr}");
    }
    std::fs::write(
        dir.path().join("mailroom.toml"),
        "bind = \"127.0.0.1:9\"\nno_such_setting = 1\n",
    )?;
    let output = mailroom(dir.path(), &["migrate"], &[], None)?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr)?.contains("no_such_setting"));
    Ok(())
}

#[test]
fn a_broken_secret_key_file_is_named_with_exit_code_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    std::fs::write(dir.path().join("data/secret.key"), "not hex at all")?;
    let output = mailroom(
        dir.path(),
        &["serve"],
        &[("MAILROOM_BIND", "127.0.0.1:0")],
        None,
    )?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("secret_key") && stderr.contains("hexadecimal"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn an_unreachable_database_is_named_with_its_password_masked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = mailroom(
        dir.path(),
        &["migrate"],
        &[(
            "MAILROOM_DATABASE_URL",
            "postgres://mailroom:s3cret@127.0.0.1:1/mail",
        )],
        None,
    )?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("cannot open database postgres://mailroom:***@127.0.0.1:1/mail"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"));
    Ok(())
}

#[test]
fn the_secret_key_is_generated_once_with_mode_0600() -> TestResult {
    let dir = tempfile::tempdir()?;
    let settings = mailroom::config::Settings {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let first = settings.secret_key()?;
    let path = dir.path().join("data/secret.key");
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(first.len(), 64);
    assert_eq!(settings.secret_key()?, first, "read back, not regenerated");
    Ok(())
}

async fn user_add_creates_an_account_that_can_sign_in(backend: Backend) -> TestResult {
    let app = TestApp::spawn(backend).await?;
    let url = app.database_url.clone();
    let dir = app.dir.path().to_path_buf();
    let output = actix_web::web::block(move || {
        mailroom(
            &dir,
            &[
                "user",
                "add",
                "--email",
                "ops@example.com",
                "--workspace",
                "ops",
                "--role",
                "admin",
            ],
            &[("MAILROOM_DATABASE_URL", &url)],
            Some(&format!("{PASSWORD}\n")),
        )
    })
    .await??;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8(output.stdout)?.contains("created workspace ops"));
    // Setup is no longer offered: the instance has an admin.
    let browser = app.browser();
    assert_eq!(
        browser.login("ops@example.com", PASSWORD).await?.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(browser.page("/w/ops/members").await?.0, StatusCode::OK);

    let (url, dir) = (app.database_url.clone(), app.dir.path().to_path_buf());
    let again = actix_web::web::block(move || {
        mailroom(
            &dir,
            &[
                "user",
                "add",
                "--email",
                "ops@example.com",
                "--workspace",
                "ops",
            ],
            &[("MAILROOM_DATABASE_URL", &url)],
            None,
        )
    })
    .await??;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8(again.stderr)?.contains("already a member"));
    let (url, dir) = (app.database_url.clone(), app.dir.path().to_path_buf());
    let short = actix_web::web::block(move || {
        mailroom(
            &dir,
            &[
                "user",
                "add",
                "--email",
                "x@example.com",
                "--workspace",
                "ops",
            ],
            &[("MAILROOM_DATABASE_URL", &url)],
            Some("short\n"),
        )
    })
    .await??;
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8(short.stderr)?.contains("at least 8 characters"));
    let (url, dir) = (app.database_url.clone(), app.dir.path().to_path_buf());
    let headless = actix_web::web::block(move || {
        mailroom(
            &dir,
            &[
                "user",
                "add",
                "--email",
                "v@example.com",
                "--workspace",
                "newone",
                "--role",
                "viewer",
            ],
            &[("MAILROOM_DATABASE_URL", &url)],
            Some(&format!("{PASSWORD}\n")),
        )
    })
    .await??;
    assert_eq!(
        headless.status.code(),
        Some(1),
        "a new workspace needs an admin"
    );
    assert!(String::from_utf8(headless.stderr)?.contains("use --role admin"));
    Ok(())
}
both!(user_add_creates_an_account_that_can_sign_in);

/// `mailroom serve` as an operator runs it: JSON logs, the setup token in the log, one
/// span per request with its id, and no password or session key ever logged.
#[actix_web::test]
async fn serve_logs_json_with_the_setup_token_and_never_a_password() -> TestResult {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILROOM_")) {
        command.env_remove(key);
    }
    let mut child = command
        .arg("serve")
        .current_dir(dir.path())
        .env("MAILROOM_BIND", "127.0.0.1:0")
        .env("MAILROOM_LOG_FORMAT", "json")
        .env("MAILROOM_LOG", "info")
        .env("MAILROOM_WORKERS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let (mut token, mut port) = (None, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while token.is_none() || port.is_none() {
        let line =
            lines_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))?;
        let event: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("not JSON: {line}: {e}"))?;
        if let Some(t) = event.get("setup_token").and_then(|v| v.as_str()) {
            token = Some(t.to_owned());
        }
        if let Some(p) = event.get("port").and_then(|v| v.as_u64()) {
            port = Some(p);
        }
        log.push(line);
    }
    let base = format!("http://127.0.0.1:{}", port.ok_or("port")?);
    let browser = Browser::new_at(&base);
    let secret = "this-password-must-never-be-logged";
    let setup = browser
        .post_form(
            "/setup",
            &[
                ("setup_token", token.as_deref().ok_or("token")?),
                ("email", ADMIN),
                ("password", secret),
                ("workspace_name", "Ops"),
                ("slug", "ops"),
            ],
        )
        .await?;
    assert_eq!(setup.status(), StatusCode::SEE_OTHER);
    let wrong = app_login_failure(&browser, "another-secret-never-logged").await?;
    assert_eq!(wrong, StatusCode::UNPROCESSABLE_ENTITY);
    let response = browser.get("/w/ops/").await?;
    let request_id = response
        .headers()
        .get("x-request-id")
        .ok_or("request id")?
        .to_str()?
        .to_owned();
    let cookie = browser.cookie_header();
    let cookie_value = cookie.trim_start_matches("mailroom_session=").to_owned();
    assert!(cookie_value.len() > 20, "a session cookie");

    // Stop it (SIGTERM via kill(1)) and read the rest of the log.
    Command::new("kill").arg(child.id().to_string()).status()?;
    let status = child.wait()?;
    assert!(
        status.success() || status.code().is_none(),
        "clean shutdown: {status:?}"
    );
    log.extend(lines_rx.try_iter());
    let all = log.join("\n");
    for line in &log {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not JSON: {line}: {e}"))?;
    }
    assert!(
        all.contains(&request_id),
        "the request span carries the echoed id"
    );
    assert!(
        all.contains("\"status\":422"),
        "one line per request with its status"
    );
    assert!(
        !all.contains(secret) && !all.contains("another-secret-never-logged"),
        "a password was logged"
    );
    assert!(!all.contains(&cookie_value), "a session cookie was logged");
    Ok(())
}

async fn app_login_failure(browser: &Browser, password: &str) -> reqwest::Result<StatusCode> {
    let other = Browser::new_at(&browser.base);
    Ok(other.login(ADMIN, password).await?.status())
}

/// `mailroom api-key create` prints the key alone on stdout, and the key works.
async fn api_key_create_prints_a_working_key(backend: Backend) -> TestResult {
    let (app, _admin) = TestApp::with_admin(backend).await?;
    let run = |args: Vec<&'static str>| {
        let (url, dir) = (app.database_url.clone(), app.dir.path().to_path_buf());
        actix_web::web::block(move || {
            mailroom(&dir, &args, &[("MAILROOM_DATABASE_URL", &url)], None)
        })
    };
    let output = run(vec![
        "api-key",
        "create",
        "--workspace",
        "acme",
        "--name",
        "Automation",
        "--scope",
        "send+read",
    ])
    .await??;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    assert_eq!(stdout.lines().count(), 1, "the key alone: {stdout:?}");
    let key = stdout.trim();
    assert!(key.starts_with("mr_"), "{key}");
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/providers", app.base))
        .bearer_auth(key)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    for (args, says) in [
        (
            vec!["api-key", "create", "--workspace", "nope", "--name", "X"],
            "--workspace: no workspace",
        ),
        (
            vec![
                "api-key",
                "create",
                "--workspace",
                "acme",
                "--name",
                "X",
                "--scope",
                "all",
            ],
            "--scope",
        ),
    ] {
        let output = run(args).await??;
        assert_eq!(output.status.code(), Some(1));
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8(output.stderr)?;
        assert!(stderr.contains(says), "{stderr}");
    }
    Ok(())
}
both!(api_key_create_prints_a_working_key);
