//! `mailroom bench search`: a log of N realistic messages, then a fixed mix of searches
//! and history pages, timed as the console runs them (the same service call on the
//! blocking pool).

use std::time::Instant;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{database_url, percentile};
use crate::db::{self, Db, DbConn};
use crate::messages::model::{MessageId, Status, Tab};
use crate::messages::queries::{self as messages, LogFilter};
use crate::messages::search::Search;
use crate::messages::service::{self, Rows};
use crate::providers::model::ProviderId;
use crate::workspaces::model::WorkspaceId;

/// What `mailroom bench search` measures.
#[derive(Debug, Clone)]
pub struct SearchBench {
    /// Messages to generate.
    pub messages: usize,
    /// A database URL; a fresh temporary SQLite file when absent.
    pub database: Option<String>,
    /// Time the mix on the log an earlier run loaded into `database` (no load).
    pub reuse: bool,
    /// Messages of a small workspace beside the large one (loaded first, so its messages
    /// are the oldest: a search of it that walked the large workspace's matches would
    /// read them all); its searches are timed apart. 0: none.
    pub small: usize,
}

/// The workspace, providers and newest message id of a log an earlier run loaded: the
/// bench workspace holding the most messages, or (`smallest`) the fewest.
fn loaded_log(
    conn: &mut DbConn,
    smallest: bool,
) -> anyhow::Result<Option<(WorkspaceId, Vec<ProviderId>, i64)>> {
    use crate::db::schema::{messages, providers, workspaces};
    use diesel::prelude::*;
    let query = workspaces::table
        .inner_join(messages::table.on(messages::workspace_id.eq(workspaces::id)))
        .filter(workspaces::slug.like("bench-%"))
        .group_by(workspaces::id)
        .select((workspaces::id, diesel::dsl::max(messages::id)))
        .into_boxed();
    let query = if smallest {
        query.order(diesel::dsl::count(messages::id).asc())
    } else {
        query.order(diesel::dsl::count(messages::id).desc())
    };
    let Some((workspace, max_id)): Option<(WorkspaceId, Option<i64>)> =
        query.first(conn).optional()?
    else {
        return Ok(None);
    };
    let providers = providers::table
        .filter(providers::workspace_id.eq(workspace))
        .order(providers::id)
        .select(providers::id)
        .load(conn)?;
    Ok(Some((workspace, providers, max_id.unwrap_or(0))))
}

mod generate;
use generate::*;

/// One timed request of the mix.
struct Probe {
    kind: &'static str,
    filter: LogFilter,
    search: Option<String>,
}

fn filter(tab: Option<Tab>, status: Option<Status>) -> LogFilter {
    LogFilter {
        tab,
        status,
        ..LogFilter::default()
    }
}

/// The fixed mix: 200 searches (common and rare words, words being typed, parts of
/// addresses, two-word phrases, some under a tab or status) and 200 history pages (tabs,
/// older pages, statuses, day ranges, providers and senders).
fn mix(corpus: &Corpus, providers: &[ProviderId], max_id: i64) -> Vec<Probe> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut probes = Vec::new();
    let search = |kind, q: String, filter: LogFilter| Probe {
        kind,
        filter,
        search: Some(q),
    };
    let common = |rng: &mut StdRng| corpus.words[rng.random_range(0..150)].clone();
    let rare = |rng: &mut StdRng| corpus.words[rng.random_range(8_000..corpus.words.len())].clone();
    for _ in 0..40 {
        probes.push(search(
            "common",
            format!("{} ", common(&mut rng)),
            filter(None, None),
        ));
    }
    for _ in 0..20 {
        let word = corpus.words[rng.random_range(40..2_000)].clone();
        let typed: String = word.chars().take(rng.random_range(2..=4)).collect();
        probes.push(search("typing", typed, filter(None, None)));
    }
    for _ in 0..40 {
        probes.push(search(
            "rare",
            format!("{} ", rare(&mut rng)),
            filter(None, None),
        ));
    }
    for _ in 0..30 {
        let address = corpus.address(&mut rng);
        let start = rng.random_range(0..address.len() / 2);
        let len = rng.random_range(4..=9).min(address.len() - start);
        let part = address[start..start + len].trim().to_owned();
        probes.push(search("address", part, filter(None, None)));
    }
    for _ in 0..30 {
        let body = corpus.body(&mut rng);
        let words: Vec<&str> = body
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let at = rng.random_range(0..words.len().saturating_sub(1).max(1));
        let phrase = format!(
            "\"{} {}\"",
            words[at],
            words.get(at + 1).copied().unwrap_or("the")
        );
        probes.push(search("phrase", phrase, filter(None, None)));
    }
    for i in 0..40 {
        let (q, f) = match i % 4 {
            0 => (
                format!("{} ", common(&mut rng)),
                filter(Some(Tab::Web), None),
            ),
            1 => (format!("{} ", rare(&mut rng)), filter(Some(Tab::Sys), None)),
            2 => (
                format!("{} ", common(&mut rng)),
                filter(None, Some(Status::Failed)),
            ),
            _ => (
                corpus.address(&mut rng)[..5].to_owned(),
                filter(None, Some(Status::Sent)),
            ),
        };
        probes.push(search("filtered", q, f));
    }
    let page = |kind, filter: LogFilter| Probe {
        kind,
        filter,
        search: None,
    };
    let tabs = [None, Some(Tab::Web), Some(Tab::Sys)];
    for i in 0..50 {
        probes.push(page("first page", filter(tabs[i % 3], None)));
    }
    for i in 0..50 {
        probes.push(page(
            "older page",
            LogFilter {
                before: Some(MessageId(rng.random_range(1..=max_id.max(1)))),
                ..filter(tabs[i % 3], None)
            },
        ));
    }
    let statuses = [
        Status::Failed,
        Status::Held,
        Status::Cancelled,
        Status::Queued,
    ];
    for i in 0..40 {
        probes.push(page("status", filter(tabs[i % 2], Some(statuses[i % 4]))));
    }
    let today = db::now().date();
    for i in 0..30 {
        let since = today - chrono::Duration::days(rng.random_range(1..DAYS));
        let days = if i % 2 == 0 { 1 } else { 7 };
        probes.push(page(
            "days",
            LogFilter {
                since: since.and_hms_opt(0, 0, 0),
                until: (since + chrono::Duration::days(days)).and_hms_opt(0, 0, 0),
                ..filter(tabs[i % 3], None)
            },
        ));
    }
    for i in 0..30 {
        probes.push(page(
            "provider/sender",
            LogFilter {
                provider: (i % 2 == 0).then(|| providers[i % providers.len()]),
                sender: (i % 2 == 1).then(|| SENDERS[i % SENDERS.len()].0.to_owned()),
                ..LogFilter::default()
            },
        ));
    }
    probes
}

/// Size of the database in MB.
fn size_mb(database: &Db, url: &str) -> anyhow::Result<f64> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let bytes: u64 = ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{path}{suffix}")).ok())
            .map(|m| m.len())
            .sum();
        return Ok(bytes as f64 / 1_048_576.0);
    }
    #[derive(diesel::QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
    }
    let mut conn = database.get().map_err(|e| anyhow::anyhow!("{e}"))?;
    let DbConn::Pg(pg) = &mut *conn else {
        anyhow::bail!("not PostgreSQL");
    };
    use diesel::RunQueryDsl;
    let size: Size =
        diesel::sql_query("SELECT pg_database_size(current_database()) AS bytes").get_result(pg)?;
    Ok(size.bytes as f64 / 1_048_576.0)
}

/// Generates the log, runs the mix, returns the final line.
/// A generated log in a database: its workspace, providers and vocabulary.
pub(super) struct Log {
    pub(super) workspace: WorkspaceId,
    pub(super) providers: Vec<ProviderId>,
    corpus: std::sync::Arc<Corpus>,
    /// The newest message id.
    pub(super) max_id: i64,
    /// How long loading took (0 for a reused log).
    pub(super) load_seconds: f64,
}

impl Log {
    /// The log an earlier run loaded into `database`, or a new one of `messages`.
    pub(super) async fn open(database: &Db, messages: usize, reuse: bool) -> anyhow::Result<Log> {
        if reuse {
            let found = database
                .run(|conn| loaded_log(conn, false).map_err(crate::error::AppError::Unexpected))
                .await?;
            let (workspace, providers, max_id) =
                found.context("no log to reuse: run once without --reuse first")?;
            eprintln!(
                "reusing the log of workspace {} (newest id {max_id})",
                workspace.0
            );
            return Ok(Log {
                workspace,
                providers,
                corpus: corpus(),
                max_id,
                load_seconds: 0.0,
            });
        }
        Self::load(database, messages).await
    }

    /// The small workspace beside the log: the one an earlier run loaded (`reuse`), or a
    /// new one of `messages`.
    async fn open_small(database: &Db, messages: usize, reuse: bool) -> anyhow::Result<Log> {
        if reuse {
            let found = database
                .run(|conn| loaded_log(conn, true).map_err(crate::error::AppError::Unexpected))
                .await?;
            if let Some((workspace, providers, max_id)) =
                found.filter(|(_, _, max)| *max <= messages as i64 * 4)
            {
                return Ok(Log {
                    workspace,
                    providers,
                    corpus: corpus(),
                    max_id,
                    load_seconds: 0.0,
                });
            }
            eprintln!(
                "no small workspace in this log: loading one after it (its messages are the newest, the easy case)"
            );
        }
        Self::load(database, messages).await
    }

    /// Loads a new workspace of `messages` generated messages.
    async fn load(database: &Db, messages: usize) -> anyhow::Result<Log> {
        let corpus = corpus();
        let addr: std::net::SocketAddr = "127.0.0.1:25".parse()?;
        let (workspace, first) = super::seed_provider(database, addr, 1).await?;
        let mut providers = vec![first];
        for name in ["backup", "bulk"] {
            let other = super::another_provider(database, workspace, name).await?;
            providers.push(other);
        }
        let postgres = matches!(&*database.get()?, DbConn::Pg(_));
        let started = Instant::now();
        {
            let (database, corpus, providers) =
                (database.clone(), corpus.clone(), providers.clone());
            let writers = if postgres { 2 } else { 1 };
            db::blocking(move || {
                load(&database, corpus, workspace, providers, messages, writers)
                    .map_err(crate::error::AppError::Unexpected)
            })
            .await
            .context("loading the messages")?;
        }
        let load_seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "loaded {messages} messages in {load_seconds:.1} s ({:.0}/s)",
            messages as f64 / load_seconds
        );
        if postgres {
            // What the server does every 2 s (fold the tallies' changes) and autovacuum
            // soon after a load this size: the planner's statistics, the visibility map,
            // the hint bits on every new row and the GIN indexes' pending lists, which
            // the first searches after a load would otherwise pay for (measured: a
            // search's heap reads 25 µs a row before, 2 µs after). Timed apart from the
            // load.
            let started = std::time::Instant::now();
            database
                .run(|conn| {
                    use diesel::connection::SimpleConnection;
                    messages::fold_tallies(conn)?;
                    Ok(conn.batch_execute("VACUUM ANALYZE")?)
                })
                .await?;
            eprintln!(
                "vacuumed and analyzed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let max_id = database
            .run(move |conn| {
                use crate::db::schema::messages::dsl as m;
                use diesel::prelude::*;
                Ok(m::messages
                    .filter(m::workspace_id.eq(workspace))
                    .select(diesel::dsl::max(m::id))
                    .first::<Option<i64>>(conn)?
                    .unwrap_or(0))
            })
            .await?;
        Ok(Log {
            workspace,
            providers,
            corpus,
            max_id,
            load_seconds,
        })
    }
}

/// The generated vocabulary (the same in every run).
fn corpus() -> std::sync::Arc<Corpus> {
    let mut rng = StdRng::seed_from_u64(3);
    std::sync::Arc::new(Corpus::new(&mut rng, 24_000))
}

/// Generates the log (or reuses one), runs the mix, returns the final line.
pub async fn search(bench: SearchBench) -> anyhow::Result<String> {
    let (_dir, url) = database_url(bench.database.clone())?;
    let database = Db::open(&url, 8)?;
    // The small workspace first: its messages are the oldest.
    let small = match bench.small {
        0 => None,
        n if !bench.reuse => Some(Log::open_small(&database, n, false).await?),
        _ => None,
    };
    let log = Log::open(&database, bench.messages, bench.reuse).await?;
    let small = match (small, bench.small) {
        (Some(small), _) => Some(small),
        (None, 0) => None,
        (None, n) => Some(Log::open_small(&database, n, true).await?),
    };
    let (line, _) = run_mix(&database, &log, "").await?;
    let mut line = format!(
        "bench search: messages={} load_seconds={:.1} {line}",
        bench.messages, log.load_seconds
    );
    if let Some(small) = &small {
        eprintln!(
            "the small workspace ({} messages, beside the large one):",
            bench.small
        );
        let (_, small_p95) = run_mix(&database, small, "small ").await?;
        line.push_str(&format!(
            " small_messages={} small_search_p95_ms={small_p95:.2}",
            bench.small
        ));
    }
    line.push_str(&format!(" db_mb={:.0}", size_mb(&database, &url)?));
    // The bars the log is held to (the targets), beside the machine.
    line.push_str(&format!(
        " bar_search_p95_ms=50 bar_page_p95_ms=20 {}",
        super::machine()
    ));
    Ok(line)
}

/// Times the mix on a loaded log; returns its figures (each name after `prefix`) and the
/// searches' p95.
async fn run_mix(database: &Db, log: &Log, prefix: &str) -> anyhow::Result<(String, f64)> {
    let Log {
        workspace,
        providers,
        corpus,
        max_id,
        ..
    } = log;
    let (workspace, max_id) = (*workspace, *max_id);
    let probes = mix(corpus, providers, max_id);
    let mut searches = Vec::new();
    let mut pages = Vec::new();
    let mut by_kind: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut slowest = Vec::new();
    for probe in probes {
        let parsed = match &probe.search {
            Some(q) => match Search::parse(q) {
                Ok(Some(s)) => Some(s),
                _ => continue,
            },
            None => None,
        };
        let filter = probe.filter.clone();
        let started = Instant::now();
        let shown = database
            .run(move |conn| {
                let rows = match &parsed {
                    Some(search) => Rows::Search(search),
                    None => Rows::Page(50),
                };
                let history = service::history(conn, workspace, &filter, rows, true)?;
                // What the page shows of each row: the marked subject and text.
                let shown: usize = history
                    .messages
                    .iter()
                    .map(|m| {
                        let send = history.sends.get(&m.send_id);
                        let text = send.map_or("", |s| s.text.as_str());
                        match &parsed {
                            Some(s) => {
                                s.mark(send.map_or("", |h| h.subject.as_str())).len()
                                    + s.snippet(text, 120).len()
                            }
                            None => text.len().min(80),
                        }
                    })
                    .sum();
                Ok(shown)
            })
            .await?;
        let ms = started.elapsed().as_secs_f64() * 1_000.0;
        std::hint::black_box(shown);
        by_kind.entry(probe.kind).or_default().push(ms);
        if let Some(q) = probe.search {
            slowest.push((ms, probe.kind, q));
            searches.push(ms);
        } else {
            pages.push(ms);
        }
    }
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, kind, q) in slowest.iter().take(12) {
        eprintln!("  slow: {ms:>7.2} ms  {kind:<9} {q:?}");
    }
    for (kind, mut times) in by_kind {
        times.sort_by(f64::total_cmp);
        eprintln!(
            "  {kind:<16} n={:<3} p50={:>7.2} ms  p95={:>7.2} ms  max={:>7.2} ms",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            times.last().copied().unwrap_or_default()
        );
    }
    searches.sort_by(f64::total_cmp);
    pages.sort_by(f64::total_cmp);
    let p95 = percentile(&searches, 0.95);
    Ok((
        format!(
            "{prefix}search_p50_ms={:.2} {prefix}search_p95_ms={p95:.2} {prefix}page_p95_ms={:.2}",
            percentile(&searches, 0.50),
            percentile(&pages, 0.95),
        ),
        p95,
    ))
}
