//! Faults of the database answered as faults: a full disk (SQLite's file, or a PostgreSQL
//! database, on a small filesystem) and a PostgreSQL database that refuses connections.
//! Every refused request answers 503 with Retry-After, never 500; `/healthz` says so;
//! `/metrics` counts the refusals; nothing accepted is lost; all recovers by itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, api_app_with};
use crate::helpers::*;

const METRICS_TOKEN: &str = "metrics-token-for-tests";

/// A tmpfs of `mb` megabytes mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one (root only); `None` with a SKIP line when this machine cannot, and a
    /// failure under `MAILROOM_REQUIRE_ALL=1`.
    fn mount(mb: u32, owner: Option<&str>, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = format!("size={mb}m");
        if let Some(owner) = owner {
            options.push_str(&format!(",uid={owner},gid={owner},mode=0700"));
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !require_all(),
                    "{test} needs a small filesystem (mount -t tmpfs, as root): {why}"
                );
                println!("SKIP {test}: cannot mount a small filesystem ({why})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with a file, then gives `leave` bytes back.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        let len = file.metadata().expect("filler size").len();
        file.set_len(len.saturating_sub(leave))
            .expect("shrink filler");
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// A PostgreSQL database in a tablespace on a small filesystem; dropped with it.
struct PgOnSmallDisk {
    name: String,
    tablespace: String,
}

impl PgOnSmallDisk {
    fn create(disk: &SmallDisk) -> (Self, String) {
        let suffix = hex::encode(rand::random::<[u8; 6]>());
        let (name, tablespace) = (format!("mailroom_full_{suffix}"), format!("small_{suffix}"));
        let location = disk.path().join("pg");
        std::fs::create_dir(&location).expect("tablespace dir");
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&location)
            .status()
            .expect("chown");
        assert!(
            chown.success(),
            "the tablespace directory belongs to postgres"
        );
        let mut admin = PgConnection::establish(&pg_admin_url()).expect("PostgreSQL reachable");
        admin
            .batch_execute(&format!(
                "CREATE TABLESPACE \"{tablespace}\" LOCATION '{}'",
                location.display()
            ))
            .expect("create tablespace");
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TABLESPACE \"{tablespace}\""
            ))
            .expect("create database");
        let mut url = url::Url::parse(&pg_admin_url()).expect("url");
        url.set_path(&name);
        (Self { name, tablespace }, url.to_string())
    }
}

impl Drop for PgOnSmallDisk {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&pg_admin_url()) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
            let _ = admin.batch_execute(&format!(
                "DROP TABLESPACE IF EXISTS \"{}\"",
                self.tablespace
            ));
        }
    }
}

/// One API send with `size` bytes of text: the status, the Retry-After header and the body.
async fn send(api_key: &str, app: &TestApp, size: usize) -> (StatusCode, Option<String>, Value) {
    let body = json!({
        "to": ["ann@example.com"],
        "subject": "Fill the disk",
        "from": "ops@example.com",
        "provider": "Ops SMTP", "from": "ops@example.com",
        "text": "x".repeat(size),
    });
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/messages", app.base))
        .bearer_auth(api_key)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(kind, "application/problem+json", "{value}");
    }
    (status, retry_after, value)
}

/// The accepted message ids of a 202 answer.
fn accepted_ids(answer: &Value) -> Vec<i64> {
    answer["messages"]
        .as_array()
        .map(|list| list.iter().filter_map(|m| m["id"].as_i64()).collect())
        .unwrap_or_default()
}

async fn healthz(app: &TestApp) -> (StatusCode, String) {
    let response = reqwest::get(format!("{}/healthz", app.base))
        .await
        .expect("answers");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn refused_count(app: &TestApp, cause: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", app.base))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let prefix = format!("mailroom_requests_refused_total{{cause=\"{cause}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

/// Polls until `check` holds, for at most `seconds`.
async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {seconds} s");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends until one is accepted (at most `seconds`); its message ids.
async fn accepted_again(key: &str, app: &TestApp, seconds: u64) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (status, _, answer) = send(key, app, 100).await;
        if status == StatusCode::ACCEPTED {
            return accepted_ids(&answer);
        }
        assert!(
            Instant::now() < deadline,
            "a send is accepted again within {seconds} s: {answer}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The key an `Api` was made with is not readable; the tests keep their own.
async fn app_on(
    backend: Backend,
    database_url: String,
) -> Result<
    (
        TestApp,
        Browser,
        crate::smtp_server::SmtpServer,
        Api,
        String,
    ),
    Box<dyn std::error::Error>,
> {
    let (app, admin, server, api) = api_app_with(backend, |s| {
        s.database_url = Some(database_url);
        s.metrics_token = Some(METRICS_TOKEN.into());
    })
    .await?;
    let key = crate::api::create_key(&admin, SLUG, "Filler", "send+read", "").await?;
    Ok((app, admin, server, api, key))
}

/// Fills the disk under the database with sends; then frees it. Checks every answer on
/// the way, the console's page, `/healthz`, `/metrics`, recovery, and that every
/// accepted message is stored and delivered.
async fn a_full_disk_is_answered_503_and_nothing_accepted_is_lost(backend: Backend) -> TestResult {
    let test = "a_full_disk_is_answered_503_and_nothing_accepted_is_lost";
    let owner = (backend == Backend::Postgres).then_some("postgres");
    let Some(disk) = SmallDisk::mount(48, owner, test) else {
        return Ok(());
    };
    let (pg, database_url) = match backend {
        Backend::Sqlite => (
            None,
            format!("sqlite://{}", disk.path().join("mailroom.db").display()),
        ),
        Backend::Postgres => {
            let (pg, url) = PgOnSmallDisk::create(&disk);
            (Some(pg), url)
        }
    };
    let (app, admin, server, api, key) = app_on(backend, database_url).await?;
    let (status, first, _) = send(&key, &app, 100).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first:?}");

    let filler = disk.fill(256 * 1024);
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for _ in 0..600 {
        let (status, retry_after, answer) = send(&key, &app, 32 * 1024).await;
        match status {
            StatusCode::ACCEPTED => accepted.extend(accepted_ids(&answer)),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert!(
                    retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()) > Some(0),
                    "a 503 says when to retry"
                );
                assert!(
                    answer["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("disk is full"),
                    "the problem says why: {answer}"
                );
                if refused >= 20 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}: {answer}"),
        }
    }
    assert!(
        refused >= 20,
        "the disk filled up ({} accepted)",
        accepted.len()
    );

    // The console's compose form: the error page, with the reason and Retry-After.
    let (_, providers) = api.get("/providers").await?;
    let provider = providers["providers"][0]["id"].to_string();
    let file = ("big.bin", "application/octet-stream", vec![7u8; 1 << 20]);
    let fields = [("to", "ann@example.com"), ("from", "ops@example.com")];
    let response = crate::delivery::compose_at(&admin, SLUG, &provider, &fields, &[file]).await?;
    let status = response.status();
    if status != StatusCode::SERVICE_UNAVAILABLE {
        panic!("compose answered {status}: {}", response.text().await?);
    }
    assert!(response.headers().contains_key("retry-after"));
    let page = response.text().await?;
    assert!(
        page.contains("Temporarily unavailable") && page.contains("disk is full"),
        "{page}"
    );
    let (status, why) = healthz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(why.contains("disk is full"), "{why}");
    assert!(refused_count(&app, "disk_full").await > refused);

    // Room again: it recovers by itself.
    std::fs::remove_file(&filler)?;
    accepted.extend(accepted_again(&key, &app, 20).await);
    eventually(20, "/healthz is healthy again", || async {
        healthz(&app).await.0 == StatusCode::OK
    })
    .await;
    for id in &accepted {
        let record = api.settled(*id).await?;
        assert_eq!(record["status"], "sent", "{record}");
    }
    assert!(
        server.messages().len() > accepted.len(),
        "every accepted message was delivered"
    );
    drop(app);
    drop(pg);
    Ok(())
}
crate::both!(a_full_disk_is_answered_503_and_nothing_accepted_is_lost);

/// Stops a PostgreSQL database's connections (as a restart or failover does), then lets
/// them back.
#[actix_web::test]
async fn a_database_that_refuses_connections_is_answered_503_and_recovers() -> TestResult {
    if !postgres_or_skip("a_database_that_refuses_connections_is_answered_503_and_recovers") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (database_url, _guard) = fresh_database(Backend::Postgres, dir.path());
    let name = url::Url::parse(&database_url)?
        .path()
        .trim_start_matches('/')
        .to_owned();
    let (app, admin, _server, api, key) = app_on(Backend::Postgres, database_url).await?;
    let (status, answer, _) = send(&key, &app, 100).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer:?}");

    let mut pg = PgConnection::establish(&pg_admin_url())?;
    pg.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ))?;
    let sends = (0..4).map(|_| send(&key, &app, 100));
    for (status, retry_after, answer) in futures_util::future::join_all(sends).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert_eq!(retry_after.as_deref(), Some("5"));
    }
    let (status, page) = admin.page(&format!("/w/{SLUG}/messages")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains("cannot reach its database"), "{page}");
    let (status, why) = healthz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(refused_count(&app, "unreachable").await >= 5);

    pg.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))?;
    let accepted = accepted_again(&key, &app, 30).await;
    eventually(20, "/healthz is healthy again", || async {
        healthz(&app).await.0 == StatusCode::OK
    })
    .await;
    let (status, _) = admin.page(&format!("/w/{SLUG}/messages")).await?;
    assert_eq!(status, StatusCode::OK, "the console recovers");
    for id in accepted {
        assert_eq!(api.settled(id).await?["status"], "sent");
    }
    Ok(())
}
