//! `mailroom bench console`: the history page of a large log under concurrent load from
//! signed-in browsers, while the delivery engine is sending — what a busy console feels
//! like. Closed loop, like `wrk -c C`: each client asks again as soon as it is answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;

use super::search::Log;
use super::{database_url, percentile, seed_messages};
use crate::db::{self, Db};
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// What `mailroom bench console` measures.
#[derive(Debug, Clone)]
pub struct ConsoleBench {
    /// Messages in the generated log.
    pub messages: usize,
    /// The SMTP server the engine sends to meanwhile (e.g. Postfix's `smtp-sink`).
    pub smtp_addr: SocketAddr,
    /// A database URL; a fresh temporary SQLite file when absent.
    pub database: Option<String>,
    /// Use the log an earlier `bench search` or `bench console` loaded into `database`.
    pub reuse: bool,
    /// Concurrent signed-in clients.
    pub concurrency: usize,
    /// How long the load lasts.
    pub seconds: u64,
    /// Messages per second the engine sends meanwhile (the provider's rate limit).
    pub send_rate: u32,
}

/// The pages the clients ask for, in turn: the history's tabs, newest first.
const PAGES: [&str; 3] = ["", "?tab=web", "?tab=sys"];

/// Points the log's first provider at `smtp_addr`, limited to `per_second`, and marks it
/// green (the benchmark does not check it).
fn aim_provider(
    conn: &mut crate::db::DbConn,
    provider: ProviderId,
    smtp_addr: SocketAddr,
    per_second: u32,
) -> QueryResult<()> {
    use crate::db::schema::providers as p;
    diesel::update(p::table.filter(p::id.eq(provider)))
        .set((
            p::host.eq(smtp_addr.ip().to_string()),
            p::port.eq(i32::from(smtp_addr.port())),
            p::tls.eq("none"),
            p::username.eq(""),
            p::secret.eq(None::<String>),
            p::max_connections.eq(8),
            p::per_second.eq(i32::try_from(per_second).ok()),
            p::status.eq("active"),
        ))
        .execute(conn)
        .map(drop)
}

/// Messages of the workspace sent so far (from the tallies, as the console counts).
fn sent(conn: &mut crate::db::DbConn, workspace: WorkspaceId) -> QueryResult<i64> {
    crate::messages::queries::fold_tallies(conn)?;
    Ok(crate::messages::queries::status_counts(conn, workspace)?
        .into_iter()
        .filter(|(status, _)| status == "sent")
        .map(|(_, n)| n)
        .sum())
}

/// `name=value` of every cookie a response sets, joined for a `Cookie` header.
fn cookies<B>(response: &awc::ClientResponse<B>, jar: &mut Vec<String>) {
    for value in response
        .headers()
        .get_all(actix_web::http::header::SET_COOKIE)
    {
        let Ok(value) = value.to_str() else { continue };
        let pair = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let name = pair.split('=').next().unwrap_or_default().to_owned();
        jar.retain(|kept| !kept.starts_with(&format!("{name}=")));
        jar.push(pair);
    }
}

/// Signs in through the login form like a browser; returns the `Cookie` header value.
async fn sign_in(base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    // The session cookie comes with the redirect: it is not followed.
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut jar = Vec::new();
    let mut form = client
        .get(format!("{base}/login"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET /login: {e}"))?;
    cookies(&form, &mut jar);
    let html = String::from_utf8_lossy(&form.body().await?).into_owned();
    let token = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the login form has no CSRF token")?
        .to_owned();
    let answer = client
        .post(format!("{base}/login"))
        .insert_header(("Origin", base))
        .insert_header(("Cookie", jar.join("; ")))
        .send_form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", token.as_str()),
            ("next", ""),
        ])
        .await
        .map_err(|e| anyhow::anyhow!("POST /login: {e}"))?;
    let mut answer = answer;
    if !answer.status().is_redirection() {
        let page = String::from_utf8_lossy(&answer.body().await?).into_owned();
        let error = page
            .split("role=\"alert\"")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_default()
            .trim_start_matches('>')
            .trim()
            .to_owned();
        anyhow::bail!("signing in answered {}: {error}", answer.status());
    }
    cookies(&answer, &mut jar);
    Ok(jar.join("; "))
}

/// Loads (or reuses) the log, starts the console with the engine sending to `smtp_addr`,
/// and asks for history pages from `concurrency` signed-in clients for `seconds`.
pub async fn console(bench: ConsoleBench) -> anyhow::Result<String> {
    let (dir, url) = database_url(bench.database.clone())?;
    let database = Db::open(&url, 4)?;
    let log = Log::open(&database, bench.messages, bench.reuse).await?;
    let workspace = log.workspace;
    let provider = *log.providers.first().context("the log has no provider")?;

    // A reader with a known password, and the sending the engine will do meanwhile.
    let password = hex::encode(rand::random::<[u8; 16]>());
    let email = format!(
        "reader-{}@bench.example",
        hex::encode(rand::random::<[u8; 4]>())
    );
    let (smtp_addr, rate) = (bench.smtp_addr, bench.send_rate.max(1));
    let slug = {
        let (email, password, db) = (email.clone(), password.clone(), database.clone());
        db::blocking(move || {
            let mut conn = db.get()?;
            aim_provider(&mut conn, provider, smtp_addr, rate)?;
            // The log's other providers point nowhere: their unfinished messages are held,
            // so the engine does not spend the run retrying them.
            {
                use crate::db::schema::messages as m;
                diesel::update(
                    m::table
                        .filter(m::workspace_id.eq(workspace))
                        .filter(m::provider_id.ne(provider))
                        .filter(m::status.eq_any(["scheduled", "queued"])),
                )
                .set((m::status.eq("held"), m::hold_reason.eq("bench")))
                .execute(&mut conn)?;
            }
            let slug = crate::workspaces::queries::find_by_id(&mut conn, workspace)?
                .ok_or(crate::error::AppError::NotFound)?
                .slug;
            drop(conn);
            let spec = crate::workspaces::operator::AddUser {
                email: &email,
                workspace: &slug,
                role: "viewer",
                name: "Bench reader",
            };
            crate::workspaces::operator::add_user(&db, &spec, || Ok(password))
                .map_err(crate::error::AppError::Validation)?;
            Ok(slug)
        })
        .await?
    };
    // Enough to keep the engine busy past the end of the load.
    let queued = rate as usize * (bench.seconds as usize + 10);
    let (logged, newest) = database
        .run(move |conn| {
            use crate::db::schema::messages as m;
            Ok(m::table
                .filter(m::workspace_id.eq(workspace))
                .select((diesel::dsl::count_star(), diesel::dsl::max(m::id)))
                .first::<(i64, Option<i64>)>(conn)?)
        })
        .await?;
    let newest = newest.unwrap_or(0);
    seed_messages(&database, workspace, provider, queued, 2_048).await?;

    let settings = crate::config::Settings {
        bind: "127.0.0.1:0".into(),
        database_url: Some(url.clone()),
        data_dir: dir.path().to_path_buf(),
        egress_allow: format!("{}/32", smtp_addr.ip()),
        log: "warn".into(),
        ..Default::default()
    };
    let app = crate::startup::Application::build(settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (server, engine) = (app.server_handle(), app.engine());
    actix_web::rt::spawn(app.run_until_stopped());
    let cookie = sign_in(&base, &email, &password).await?;
    let sent_before = database.run(move |conn| Ok(sent(conn, workspace)?)).await?;

    let started = Instant::now();
    let until = started + Duration::from_secs(bench.seconds.max(1));
    let clients: Vec<_> = (0..bench.concurrency.max(1))
        .map(|n| {
            let (cookie, history) = (cookie.clone(), format!("{base}/w/{slug}/messages"));
            actix_web::rt::spawn(async move {
                let client = awc::Client::builder()
                    .disable_redirects()
                    .timeout(Duration::from_secs(30))
                    .finish();
                let (mut latencies, mut failures) = (Vec::new(), 0usize);
                let mut page = n;
                while Instant::now() < until {
                    let asked = Instant::now();
                    let answer = client
                        .get(format!("{history}{}", PAGES[page % PAGES.len()]))
                        .insert_header(("Cookie", cookie.as_str()))
                        .send()
                        .await;
                    page += 1;
                    match answer {
                        Ok(mut response) if response.status().is_success() => {
                            match response.body().limit(8 << 20).await {
                                Ok(_) => latencies.push(asked.elapsed()),
                                Err(_) => failures += 1,
                            }
                        }
                        Ok(_) | Err(_) => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut millis, mut failures) = (Vec::new(), 0);
    for client in clients {
        let (latencies, failed) = client.await?;
        millis.extend(latencies.iter().map(|d| d.as_secs_f64() * 1_000.0));
        failures += failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent_after = database.run(move |conn| Ok(sent(conn, workspace)?)).await?;
    server.stop(true).await;
    engine.stop(Duration::from_secs(5)).await;
    // What the engine had no time to send is cancelled: a log used again starts with an
    // empty queue.
    database
        .write(move |conn| {
            use crate::db::schema::messages as m;
            diesel::update(
                m::table
                    .filter(m::workspace_id.eq(workspace))
                    .filter(m::id.gt(newest))
                    .filter(m::status.eq_any(["scheduled", "queued", "sending"])),
            )
            .set(m::status.eq("cancelled"))
            .execute(conn)?;
            Ok(())
        })
        .await?;
    millis.sort_by(f64::total_cmp);
    Ok(format!(
        "bench console: messages={} concurrency={} seconds={seconds:.0} requests={} per_s={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} errors={failures} sent_per_s={:.0} {}",
        logged,
        bench.concurrency,
        millis.len(),
        millis.len() as f64 / seconds,
        percentile(&millis, 0.50),
        percentile(&millis, 0.99),
        millis.last().copied().unwrap_or_default(),
        (sent_after - sent_before) as f64 / seconds,
        super::machine()
    ))
}
