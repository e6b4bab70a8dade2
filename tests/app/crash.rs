//! Crash safety: `mailroom serve` is killed with SIGKILL three times in the middle of
//! delivering 1,200 messages through a rate-limited provider, and started again. Nothing
//! may be lost; a message delivered twice must be flagged as a possible duplicate and keep
//! its Message-ID; no more is flagged than was handed to a connection. A SIGTERM lets
//! in-flight messages finish and gives the rest back. Two nodes on one PostgreSQL database
//! keep to a provider's rate together.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;

use crate::both;
use crate::helpers::*;
use crate::smtp_server::SmtpServer;

fn serve(dir: &std::path::Path, url: &str) -> std::io::Result<Child> {
    serve_with(dir, url, &[])
}

fn serve_with(dir: &std::path::Path, url: &str, extra: &[(&str, &str)]) -> std::io::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILROOM_")) {
        command.env_remove(key);
    }
    command
        .arg("serve")
        .current_dir(dir)
        .env("MAILROOM_BIND", "127.0.0.1:0")
        .env("MAILROOM_DATABASE_URL", url)
        .env("MAILROOM_EGRESS_ALLOW", "127.0.0.1/32")
        .env("MAILROOM_LEASE_SECS", "5")
        .env("MAILROOM_RETRY_BASE_SECS", "1")
        .env("MAILROOM_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

#[derive(Queryable, Debug)]
struct Final {
    message_id: String,
    status: String,
    possible_duplicate: bool,
}

async fn finals(db: &mailroom::db::Db) -> Result<Vec<Final>, Box<dyn std::error::Error>> {
    Ok(db
        .run(|conn| {
            use mailroom::db::schema::messages::dsl::*;
            Ok(messages
                .select((message_id, status, possible_duplicate))
                .load::<Final>(conn)?)
        })
        .await?)
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> Result<bool, Box<dyn std::error::Error>>,
) -> TestResult {
    let deadline = Instant::now() + limit;
    while !done().await? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn a_killed_node_loses_nothing_and_flags_what_may_be_duplicated(
    backend: Backend,
) -> TestResult {
    const COUNT: usize = 1_200;
    const KILLS: usize = 3;
    const CONNECTIONS: usize = 4;
    let dir = tempfile::tempdir()?;
    let (url, _guard) = fresh_database(backend, dir.path());
    let server = SmtpServer::start().await?;
    server.delay_each(Duration::from_millis(2));
    let db = mailroom::db::Db::open(&url, 2)?;
    let addr = format!("127.0.0.1:{}", server.port).parse()?;
    // A provider limited to 150 messages a second: a node that claimed far ahead of it
    // would have hundreds claimed and unsent at each kill.
    mailroom::bench::seed_limited(&db, addr, COUNT, 512, CONNECTIONS as u32, Some(150)).await?;

    for kill in 1..=KILLS {
        let mut node = serve(dir.path(), &url)?;
        let target = kill * COUNT / (KILLS + 1);
        wait_until(
            "more messages were delivered",
            Duration::from_secs(60),
            async || Ok(server.messages().len() >= target),
        )
        .await?;
        node.kill()?; // SIGKILL: no chance to finish or release anything.
        node.wait()?;
    }
    let at_kill = server.messages().len();
    assert!(
        at_kill < COUNT,
        "killed mid-delivery ({at_kill} of {COUNT})"
    );

    let mut last = serve(dir.path(), &url)?;
    let waited = wait_until(
        "every message is final",
        Duration::from_secs(90),
        async || Ok(finals(&db).await?.iter().all(|m| m.status == "sent")),
    )
    .await;
    last.kill()?;
    last.wait()?;
    waited?;

    let stored = finals(&db).await?;
    let mut captured: HashMap<String, usize> = HashMap::new();
    for mail in server.messages() {
        let id = mail
            .data
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .ok_or("every message carries a Message-ID")?
            .trim()
            .to_owned();
        *captured.entry(id).or_default() += 1;
    }
    let lost: Vec<&Final> = stored
        .iter()
        .filter(|m| !captured.contains_key(&m.message_id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} messages never reached the server",
        lost.len()
    );
    let unflagged: Vec<&Final> = stored
        .iter()
        .filter(|m| captured.get(&m.message_id).copied().unwrap_or(0) > 1 && !m.possible_duplicate)
        .collect();
    assert!(
        unflagged.is_empty(),
        "{} duplicates were not flagged",
        unflagged.len()
    );
    assert_eq!(stored.len(), COUNT);
    let flagged = stored.iter().filter(|m| m.possible_duplicate).count();
    println!(
        "crash test: {COUNT} messages at 150/s, {KILLS} kills, {} duplicates (all flagged), {flagged} flagged in all",
        captured.values().filter(|n| **n > 1).count(),
    );
    // Only what was handed to a connection may be flagged: 8 per connection per kill.
    assert!(
        flagged <= KILLS * CONNECTIONS * 8,
        "{flagged} flagged after {KILLS} kills with {CONNECTIONS} connections"
    );
    Ok(())
}
both!(a_killed_node_loses_nothing_and_flags_what_may_be_duplicated);

async fn sigterm_finishes_what_is_in_flight_and_gives_back_the_rest(
    backend: Backend,
) -> TestResult {
    const COUNT: usize = 600;
    let dir = tempfile::tempdir()?;
    let (url, _guard) = fresh_database(backend, dir.path());
    let server = SmtpServer::start().await?;
    server.delay_each(Duration::from_millis(5));
    let db = mailroom::db::Db::open(&url, 2)?;
    let addr = format!("127.0.0.1:{}", server.port).parse()?;
    mailroom::bench::seed(&db, addr, COUNT, 256, 2).await?;

    // A small in-flight window: most messages are still unclaimed when the signal comes.
    let mut node = serve_with(
        dir.path(),
        &url,
        &[
            ("MAILROOM_DELIVERY_IN_FLIGHT", "40"),
            ("MAILROOM_DELIVERY_BATCH", "20"),
        ],
    )?;
    wait_until(
        "some messages were delivered",
        Duration::from_secs(60),
        async || Ok(server.messages().len() >= 50),
    )
    .await?;
    Command::new("kill")
        .arg("-TERM")
        .arg(node.id().to_string())
        .status()?;
    let started = Instant::now();
    // Wait off the test's runtime: the SMTP server lives on it and must keep answering.
    let status = actix_web::web::block(move || node.wait()).await??;
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "within the grace period"
    );
    let after = finals(&db).await?;
    assert!(
        after
            .iter()
            .all(|m| m.status == "sent" || m.status == "queued"),
        "nothing left mid-send"
    );
    assert!(
        after.iter().all(|m| !m.possible_duplicate),
        "a graceful stop flags nothing"
    );
    assert!(
        after.iter().any(|m| m.status == "queued"),
        "the rest was left for the next start"
    );
    let sent = after.iter().filter(|m| m.status == "sent").count();
    assert_eq!(
        sent,
        server.messages().len(),
        "every message the server accepted is recorded as sent"
    );

    // The next start sends the rest, at once (no lease to wait for).
    let mut next = serve(dir.path(), &url)?;
    let waited = wait_until("the rest is sent", Duration::from_secs(60), async || {
        Ok(finals(&db).await?.iter().all(|m| m.status == "sent"))
    })
    .await;
    next.kill()?;
    next.wait()?;
    waited?;
    assert_eq!(server.messages().len(), COUNT, "each message exactly once");
    Ok(())
}
both!(sigterm_finishes_what_is_in_flight_and_gives_back_the_rest);

/// Two nodes on one PostgreSQL database and a provider limited to 200 messages a second:
/// together they send at that rate, not twice it (measured at the SMTP server).
#[actix_web::test]
async fn two_nodes_together_keep_to_a_providers_rate() -> TestResult {
    const COUNT: usize = 3_000;
    const RATE: f64 = 200.0;
    if !postgres_or_skip("two_nodes_together_keep_to_a_providers_rate") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (url, _guard) = fresh_database(Backend::Postgres, dir.path());
    let server = SmtpServer::start().await?;
    let db = mailroom::db::Db::open(&url, 2)?;
    let addr = format!("127.0.0.1:{}", server.port).parse()?;
    mailroom::bench::seed_limited(&db, addr, COUNT, 256, 8, Some(RATE as i32)).await?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = serve(dir_a.path(), &url)?;
    let mut b = serve(dir_b.path(), &url)?;
    let waited = wait_until(
        "every message is sent",
        Duration::from_secs(60),
        async || Ok(server.messages().len() >= COUNT),
    )
    .await;
    a.kill()?;
    b.kill()?;
    a.wait()?;
    b.wait()?;
    waited?;
    let times: Vec<std::time::Instant> = server.messages().iter().map(|m| m.at).collect();
    assert_eq!(times.len(), COUNT, "each message once");
    // The steady rate, past the first second (a bucket starts full: one second's worth).
    let skip = RATE as usize;
    let seconds = (times[COUNT - 1] - times[skip]).as_secs_f64();
    let rate = (COUNT - 1 - skip) as f64 / seconds;
    println!("two nodes: {COUNT} messages at {rate:.1} msgs/s against a limit of {RATE}");
    assert!(
        (rate - RATE).abs() <= RATE * 0.1,
        "{rate:.1} msgs/s is not within 10 % of {RATE}"
    );
    Ok(())
}

/// A provider's connection cap is the provider's too: two nodes on one PostgreSQL
/// database open at most its `max_connections` to it together (each holds a slot, a
/// session advisory lock, for every connection), and still send everything once.
#[actix_web::test]
async fn two_nodes_together_keep_to_a_providers_connection_cap() -> TestResult {
    const COUNT: usize = 400;
    const CONNECTIONS: u32 = 2;
    if !postgres_or_skip("two_nodes_together_keep_to_a_providers_connection_cap") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (url, _guard) = fresh_database(Backend::Postgres, dir.path());
    let server = SmtpServer::start().await?;
    // Slow enough that both nodes have work at once.
    server.delay_each(Duration::from_millis(10));
    let db = mailroom::db::Db::open(&url, 2)?;
    let addr = format!("127.0.0.1:{}", server.port).parse()?;
    mailroom::bench::seed_limited(&db, addr, COUNT, 256, CONNECTIONS, None).await?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = serve(dir_a.path(), &url)?;
    let mut b = serve(dir_b.path(), &url)?;
    let waited = wait_until(
        "every message is sent",
        Duration::from_secs(60),
        async || Ok(server.messages().len() >= COUNT),
    )
    .await;
    a.kill()?;
    b.kill()?;
    a.wait()?;
    b.wait()?;
    waited?;
    assert_eq!(server.messages().len(), COUNT, "each message once");
    let peak = server.peak_connections();
    println!("two nodes: at most {peak} connections at once against a cap of {CONNECTIONS}");
    assert!(
        peak <= CONNECTIONS as usize,
        "{peak} connections at once against a cap of {CONNECTIONS}"
    );
    Ok(())
}
