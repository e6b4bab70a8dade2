//! `mailroom bench …`: measurements operators can run too. Each prints one final line of
//! figures.

pub mod console;
pub mod search;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;

use crate::db::{self, Db};
use crate::delivery::{self, EngineConfig};
use crate::messages::model::{NewMessage, NewSend, Origin};
use crate::messages::queries as messages;
use crate::providers::egress::EgressPolicy;
use crate::providers::model::{
    Kind, ProviderRow, Settings as ProviderSettings, Status as ProviderStatus, TlsMode,
};
use crate::providers::queries as providers;
use crate::workspaces::model::NewWorkspace;
use crate::workspaces::queries as workspaces;

mod dkim;

/// What `mailroom bench delivery` measures.
#[derive(Debug, Clone)]
pub struct DeliveryBench {
    /// Messages to deliver.
    pub messages: usize,
    /// The SMTP server (e.g. Postfix's `smtp-sink`).
    pub smtp_addr: SocketAddr,
    /// A database URL; a fresh temporary SQLite file when absent.
    pub database: Option<String>,
    /// Approximate size of each message body in bytes.
    pub size: usize,
    /// SMTP connections.
    pub connections: u32,
    /// Every message from an authenticated domain, DKIM-signed.
    pub dkim: bool,
}

/// The machine, for every final line: the cores this process may use.
pub fn machine() -> String {
    format!(
        "cores={}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

/// Postfix's `smtp-source` sending the same number of messages of the same size over the
/// same number of sessions to the same server, in this run: messages per second, or `None`
/// when it is not installed (Debian's `postfix` package has it in `/usr/sbin`).
fn smtp_source(
    addr: SocketAddr,
    messages: usize,
    size: usize,
    sessions: u32,
) -> anyhow::Result<Option<f64>> {
    for program in ["smtp-source", "/usr/sbin/smtp-source"] {
        let started = Instant::now();
        let status = std::process::Command::new(program)
            .args([
                "-d",
                "-s",
                &sessions.to_string(),
                "-m",
                &messages.to_string(),
            ])
            .args(["-l", &size.to_string(), &addr.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).context("running smtp-source"),
            Ok(status) if !status.success() => anyhow::bail!("smtp-source failed: {status}"),
            Ok(_) => return Ok(Some(messages as f64 / started.elapsed().as_secs_f64())),
        }
    }
    Ok(None)
}

/// What SQLite itself can commit on this disk, in this run, as the API stores messages
/// (WAL, `synchronous = FULL`, rows of about 2 KB): (single-row transactions per second,
/// rows per second in 100-row transactions). The API's ceiling on SQLite.
fn sqlite_ceiling(dir: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    use diesel::connection::SimpleConnection;
    let path = dir.join("ceiling.db");
    let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())?;
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    let row = format!("INSERT INTO t (body) VALUES ('{}');", body(2_048));
    let run = |conn: &mut diesel::SqliteConnection, per_tx: usize| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut rows = 0usize;
        let batch = format!("BEGIN; {} COMMIT;", row.repeat(per_tx));
        while started.elapsed() < Duration::from_millis(1_500) {
            conn.batch_execute(&batch)?;
            rows += per_tx;
        }
        Ok(rows as f64 / started.elapsed().as_secs_f64())
    };
    let single = run(&mut conn, 1)?;
    let hundred = run(&mut conn, 100)?;
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok((single, hundred))
}

fn body(size: usize) -> String {
    let line = "The quick brown fox jumps over the lazy dog; Mailroom bench body line.\r\n";
    line.repeat(size.div_ceil(line.len()).max(1))
}

/// The database a benchmark uses: the URL given, or a fresh SQLite file in a temporary
/// directory that lives as long as the returned guard.
fn database_url(given: Option<String>) -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let url =
        given.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    Ok((dir, url))
}

/// The `q` quantile (0–1) of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// The bytes this process has caused to be written to storage (Linux `/proc/self/io`,
/// counted when pages are dirtied), if known.
fn written_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A workspace with an active SMTP provider pointing at `smtp_addr` and `messages` queued
/// messages of about `size` bytes, each with its own content (as API calls would make them).
/// Returns the workspace. Used by the benchmark and by the crash test.
pub async fn seed(
    database: &Db,
    smtp_addr: SocketAddr,
    messages: usize,
    size: usize,
    connections: u32,
) -> anyhow::Result<crate::workspaces::model::WorkspaceId> {
    seed_limited(database, smtp_addr, messages, size, connections, None).await
}

/// [`seed`] with a provider limited to `per_second` messages a second.
pub async fn seed_limited(
    database: &Db,
    smtp_addr: SocketAddr,
    messages: usize,
    size: usize,
    connections: u32,
    per_second: Option<i32>,
) -> anyhow::Result<crate::workspaces::model::WorkspaceId> {
    let (workspace, provider) =
        seed_provider_limited(database, smtp_addr, connections, per_second).await?;
    seed_messages(database, workspace, provider, messages, size).await?;
    Ok(workspace)
}

/// Settings of a benchmark's SMTP provider for `smtp_addr`.
fn bench_settings(smtp_addr: SocketAddr, connections: u32) -> ProviderSettings {
    ProviderSettings {
        name: "bench".into(),
        kind: Kind::Smtp,
        host: smtp_addr.ip().to_string(),
        port: smtp_addr.port(),
        tls: TlsMode::None,
        region: None,
        username: String::new(),
        account_address: "bench@example.com".into(),
        from_name: "Mailroom bench".into(),
        max_connections: i32::try_from(connections.clamp(1, 100)).unwrap_or(8),
        per_second: None,
        per_minute: None,
        per_hour: None,
        receive_enabled: false,
        imap_host: None,
        imap_port: None,
    }
}

/// A workspace with one green provider named `bench` for `smtp_addr`.
async fn seed_provider(
    database: &Db,
    smtp_addr: SocketAddr,
    connections: u32,
) -> anyhow::Result<(
    crate::workspaces::model::WorkspaceId,
    crate::providers::model::ProviderId,
)> {
    seed_provider_limited(database, smtp_addr, connections, None).await
}

/// [`seed_provider`] with a rate limit.
async fn seed_provider_limited(
    database: &Db,
    smtp_addr: SocketAddr,
    connections: u32,
    per_second: Option<i32>,
) -> anyhow::Result<(
    crate::workspaces::model::WorkspaceId,
    crate::providers::model::ProviderId,
)> {
    let slug = format!("bench-{}", hex::encode(rand::random::<[u8; 4]>()));
    let settings = ProviderSettings {
        per_second,
        ..bench_settings(smtp_addr, connections)
    };
    let (workspace, provider) = database
        .write(move |conn| {
            let now = db::now();
            let workspace = workspaces::insert(
                conn,
                &NewWorkspace {
                    name: &slug,
                    slug: &slug,
                    site_name: "",
                    created_at: now,
                },
            )?;
            let provider = green_provider(conn, workspace, &settings)?;
            Ok((workspace, provider))
        })
        .await?;
    Ok((workspace, provider))
}

/// Stores a provider already checked green (benchmarks skip the check).
fn green_provider(
    conn: &mut crate::db::DbConn,
    workspace: crate::workspaces::model::WorkspaceId,
    settings: &ProviderSettings,
) -> Result<crate::providers::model::ProviderId, crate::error::AppError> {
    let now = db::now();
    let provider = providers::insert(
        conn,
        &ProviderRow::from_settings(workspace, settings, now),
        None,
        now,
    )?;
    providers::update_status(
        conn,
        workspace,
        provider,
        ProviderStatus::Active,
        "bench",
        now,
    )?;
    Ok(provider)
}

/// A ready sender of `workspace` (its address validated, stored as such: benchmarks mail
/// no codes) sending through `provider`, whose own account `address` is.
async fn ready_sender(
    database: &Db,
    workspace: crate::workspaces::model::WorkspaceId,
    provider: crate::providers::model::ProviderId,
    address: &str,
) -> anyhow::Result<()> {
    let address = address.to_owned();
    database
        .write(move |conn| {
            use diesel::prelude::*;
            let now = db::now();
            let id = crate::senders::queries::insert(
                conn,
                &crate::senders::model::NewSender {
                    workspace_id: workspace,
                    name: "Mailroom bench".into(),
                    address,
                    provider_id: Some(provider),
                    reply_to: String::new(),
                    code_tries: 0,
                    created_at: now,
                    updated_at: now,
                },
            )?;
            diesel::update(crate::db::schema::senders::table.find(id))
                .set(crate::db::schema::senders::validated_at.eq(now))
                .execute(conn)?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Another green provider named `name` in `workspace` (its address is never dialled).
async fn another_provider(
    database: &Db,
    workspace: crate::workspaces::model::WorkspaceId,
    name: &str,
) -> anyhow::Result<crate::providers::model::ProviderId> {
    let mut settings = bench_settings("127.0.0.1:25".parse()?, 1);
    settings.name = name.to_owned();
    Ok(database
        .write(move |conn| green_provider(conn, workspace, &settings))
        .await?)
}

/// `messages` queued messages through `provider`, each with its own content of `size`.
async fn seed_messages(
    database: &Db,
    workspace: crate::workspaces::model::WorkspaceId,
    provider: crate::providers::model::ProviderId,
    messages: usize,
    size: usize,
) -> anyhow::Result<()> {
    let text = body(size);
    for chunk_start in (0..messages).step_by(10_000) {
        let end = (chunk_start + 10_000).min(messages);
        let text = text.clone();
        // Each message its own send, as API calls would (a mailing would share one).
        let sends: Vec<NewSend> = (chunk_start..end)
            .map(|i| NewSend {
                from_name: "Mailroom bench".into(),
                to_addresses: format!("r{i}@example.com"),
                ..NewSend::new(
                    workspace,
                    "bench@example.com",
                    format!("Bench message {i}"),
                    text.clone(),
                    db::now(),
                )
            })
            .collect();
        let send_ids = database
            .write(move |conn| Ok(messages::insert_sends(conn, &sends)?))
            .await?;
        let rows: Vec<NewMessage> = (chunk_start..end)
            .map(|i| NewMessage {
                provider_id: Some(provider),
                ..NewMessage::email(
                    workspace,
                    send_ids[i - chunk_start],
                    Origin::Sys,
                    "bench@example.com",
                    format!("r{i}@example.com"),
                    db::now(),
                )
            })
            .collect();
        database
            .write(move |conn| Ok(messages::insert_batch(conn, &rows)?))
            .await?;
    }
    Ok(())
}

/// Enqueues the messages through the real ingest path, delivers them with the real engine,
/// and returns the final line once every outcome is committed.
pub async fn delivery(bench: DeliveryBench) -> anyhow::Result<String> {
    let (dir, url) = database_url(bench.database.clone())?;
    let database = Db::open(&url, 8)?;
    let enqueue_started = Instant::now();
    let workspace = seed(
        &database,
        bench.smtp_addr,
        bench.messages,
        bench.size,
        bench.connections,
    )
    .await?;
    let enqueue_seconds = enqueue_started.elapsed().as_secs_f64();
    eprintln!(
        "enqueued {} messages in {enqueue_seconds:.2} s ({:.0}/s)",
        bench.messages,
        bench.messages as f64 / enqueue_seconds
    );

    // The reference right before and right after (a shared machine drifts within a
    // minute): the ratio is to their mean.
    let reference = || {
        smtp_source(
            bench.smtp_addr,
            bench.messages,
            bench.size,
            bench.connections,
        )
    };
    let before = reference()?;
    let egress =
        EgressPolicy::parse(&format!("{}/32", bench.smtp_addr.ip())).map_err(anyhow::Error::msg)?;
    let key: [u8; 64] = rand::random();
    let signing = if bench.dkim {
        let sealer = crate::crypto::Sealer::new(&key, "bench");
        Some(dkim::authenticate(&database, workspace, &sealer).await?)
    } else {
        None
    };
    let started = Instant::now();
    let engine = delivery::start(
        database.clone(),
        crate::crypto::Sealer::new(&key, "bench"),
        egress.clone(),
        egress,
        crate::delivery::system::SystemProvider::from_settings(&crate::config::Settings {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        }),
        EngineConfig {
            batch: 1_000,
            max_in_flight: 20_000,
            lease: Duration::from_secs(120),
            poll: Duration::from_millis(20),
            retry_base: Duration::from_secs(1),
            smtp_timeout: Duration::from_secs(15),
        },
    );
    engine.wake();
    let target = bench.messages as u64;
    let deadline = Instant::now() + Duration::from_secs(3_600);
    // Every outcome is committed before it is counted; retries are counted again, so wait
    // for the final states in the database once the counter says all were tried.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if engine.recorded() >= target {
            let (open, _) = counts(&database, workspace).await?;
            if open == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("delivery did not finish within an hour");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    engine.stop(Duration::from_secs(5)).await;
    let (_, (sent, duplicates)) = counts(&database, workspace).await?;
    let lost = bench.messages as i64 - sent;
    let rate = bench.messages as f64 / seconds;
    let peer = match (before, reference()?) {
        (Some(before), Some(after)) => {
            let peer = (before + after) / 2.0;
            format!(
                "smtp_source_msgs_per_s={peer:.0} smtp_source_before={before:.0} smtp_source_after={after:.0} ratio={:.2}",
                rate / peer
            )
        }
        _ => "smtp_source=not-installed".to_owned(),
    };
    let signed = match signing {
        Some(pkcs8) => {
            let rates = dkim::signing_rates(&pkcs8)?;
            format!(
                "dkim=rsa2048 {} ratio_to_signing={:.2} ",
                rates.line(),
                rate / rates.all_cores
            )
        }
        None => String::new(),
    };
    Ok(format!(
        "bench delivery: messages={} seconds={seconds:.3} msgs_per_s={rate:.0} lost={lost} duplicates={duplicates} peak_rss_mb={:.1} {signed}{peer} {}",
        bench.messages,
        peak_rss_mb(),
        machine()
    ))
}

/// Messages not yet final, and (sent, flagged as possible duplicates).
async fn counts(
    database: &Db,
    workspace: crate::workspaces::model::WorkspaceId,
) -> anyhow::Result<(i64, (i64, i64))> {
    database
        .run(move |conn| {
            use crate::db::schema::messages::dsl::*;
            let scope = messages.filter(workspace_id.eq(workspace));
            let open: i64 = scope
                .filter(status.eq_any(["queued", "scheduled", "sending"]))
                .count()
                .get_result(conn)?;
            let sent: i64 = scope.filter(status.eq("sent")).count().get_result(conn)?;
            let dups: i64 = scope
                .filter(possible_duplicate.eq(true))
                .count()
                .get_result(conn)?;
            Ok((open, (sent, dups)))
        })
        .await
        .context("counting results")
}

/// What `mailroom bench api` measures.
#[derive(Debug, Clone)]
pub struct ApiBench {
    /// Messages to post.
    pub messages: usize,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
    /// A database URL; a fresh temporary SQLite file when absent.
    pub database: Option<String>,
}

/// Starts the server on a fresh database, posts `messages` messages (2 KB, `hold: true`)
/// from `concurrency` clients over keep-alive connections, and counts what was stored.
pub async fn api(bench: ApiBench) -> anyhow::Result<String> {
    let (dir, url) = database_url(bench.database.clone())?;
    let settings = crate::config::Settings {
        bind: "127.0.0.1:0".into(),
        database_url: Some(url.clone()),
        data_dir: dir.path().to_path_buf(),
        log: "warn".into(),
        ..Default::default()
    };
    let app = crate::startup::Application::build(settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = format!("http://127.0.0.1:{}/api/v1/messages", app.port());
    let (server, engine) = (app.server_handle(), app.engine());
    actix_web::rt::spawn(app.run_until_stopped());
    let database = Db::open(&url, 2)?;
    let addr: SocketAddr = "127.0.0.1:9".parse()?;
    let (workspace, provider) = seed_provider(&database, addr, 1).await?;
    ready_sender(&database, workspace, provider, "bench@example.com").await?;
    let key = database
        .write(move |conn| {
            let now = db::now();
            let owner = crate::accounts::queries::insert_user(
                conn,
                &crate::accounts::model::NewUser {
                    email: "bench@example.com",
                    name: "bench",
                    password_hash: None,
                    password_changed_at: None,
                    created_at: now,
                },
            )?;
            let workspace =
                workspaces::find_by_id(conn, workspace)?.ok_or(crate::error::AppError::NotFound)?;
            let request = crate::api::model::KeyRequest {
                name: "bench".into(),
                scope: crate::api::model::Scope::Send,
                per_minute: None,
            };
            let (_, key) = crate::api::service::create(
                conn,
                &workspace,
                &crate::api::service::Creator::Cli(owner),
                &request,
            )?;
            Ok(key)
        })
        .await?;
    let payload = serde_json::json!({
        "to": ["reader@example.com"],
        "subject": "Benchmark",
        "from": "bench@example.com",
        "text": body(2_048),
        "hold": true,
    })
    .to_string();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written_before = written_bytes();
    let started = Instant::now();
    let clients: Vec<_> = (0..bench.concurrency.max(1))
        .map(|_| {
            let (next, base, key, payload) =
                (next.clone(), base.clone(), key.clone(), payload.clone());
            let total = bench.messages;
            actix_web::rt::spawn(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .finish();
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let answer = client
                        .post(&base)
                        .bearer_auth(&key)
                        .content_type("application/json")
                        .send_body(payload.clone())
                        .await;
                    match answer {
                        Ok(mut response) if response.status().as_u16() == 202 => {
                            let _ = response.body().await;
                            latencies.push(sent.elapsed());
                        }
                        Ok(mut response) => {
                            let _ = response.body().await;
                            failures += 1;
                        }
                        Err(_) => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(bench.messages);
    let mut failures = 0;
    for client in clients {
        let (mut mine, failed) = client.await?;
        latencies.append(&mut mine);
        failures += failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    // What storing the messages wrote to the disk, per message accepted: WAL pages of
    // every table and index touched, and checkpoints.
    let written = match (written_before, written_bytes()) {
        (Some(before), Some(after)) if !latencies.is_empty() => format!(
            "{:.1}",
            after.saturating_sub(before) as f64 / 1_024.0 / latencies.len() as f64
        ),
        _ => "unknown".to_owned(),
    };
    let mut millis: Vec<f64> = latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1_000.0)
        .collect();
    millis.sort_by(f64::total_cmp);
    let quantile = |q: f64| percentile(&millis, q);
    let accepted = latencies.len();
    let stored: i64 = database
        .run(move |conn| {
            use crate::db::schema::messages::dsl as m;
            Ok(m::messages
                .filter(m::workspace_id.eq(workspace))
                .count()
                .get_result(conn)?)
        })
        .await?;
    if failures > 0 {
        eprintln!("{failures} requests were not accepted");
    }
    server.stop(true).await;
    engine.stop(Duration::from_secs(5)).await;
    let lost = (accepted as i64 - stored).max(0);
    let ceiling = match url.starts_with("sqlite") {
        true => {
            let (single, hundred) = sqlite_ceiling(dir.path())?;
            format!(
                " sqlite_commits_per_s={single:.0} sqlite_rows_per_s_in_100_row_tx={hundred:.0}"
            )
        }
        false => String::new(),
    };
    Ok(format!(
        "bench api: messages={} concurrency={} accepted_per_s={:.0} p50_ms={:.1} p99_ms={:.1} lost={lost} written_kb_per_message={written}{ceiling} {}",
        bench.messages,
        bench.concurrency,
        accepted as f64 / seconds,
        quantile(0.50),
        quantile(0.99),
        machine()
    ))
}
