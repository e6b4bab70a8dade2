use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::Text;
use mailroom::db::{DbConn, DbTarget, migrate};

use crate::helpers::*;

fn migration_names(backend: &str) -> BTreeSet<String> {
    std::fs::read_dir(format!(
        "{}/migrations/{backend}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("migrations directory")
    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
    .collect()
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = migration_names("sqlite");
    let postgres = migration_names("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must have the same directories"
    );
    for name in &sqlite {
        for backend in ["sqlite", "postgres"] {
            for file in ["up.sql", "down.sql"] {
                let path = format!(
                    "{}/migrations/{backend}/{name}/{file}",
                    env!("CARGO_MANIFEST_DIR")
                );
                assert!(std::path::Path::new(&path).exists(), "{path} is missing");
            }
        }
    }
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    nullable: String,
}

#[derive(QueryableByName)]
struct Index {
    #[diesel(sql_type = Text)]
    index_name: String,
}

/// Every column as `table.column NULL|NOT NULL`, and every explicitly created index.
fn schema(conn: &mut DbConn) -> (BTreeSet<String>, BTreeSet<String>) {
    let (columns, indexes): (Vec<Column>, Vec<Index>) = match conn {
        DbConn::Sqlite(c) => (
            diesel::sql_query(
                "SELECT m.name AS table_name, p.name AS column_name, \
                 CASE WHEN p.\"notnull\" = 1 OR p.pk > 0 THEN 'NO' ELSE 'YES' END AS nullable \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' \
                 AND m.name NOT LIKE '\\_\\_diesel%' ESCAPE '\\'",
            )
            .load(c)
            .expect("columns"),
            diesel::sql_query(
                "SELECT name AS index_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
            )
            .load(c)
            .expect("indexes"),
        ),
        DbConn::Pg(c) => (
            diesel::sql_query(
                "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                 is_nullable::text AS nullable FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_diesel%'",
            )
            .load(c)
            .expect("columns"),
            diesel::sql_query(
                "SELECT indexname::text AS index_name FROM pg_indexes WHERE schemaname = 'public' \
                 AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key' \
                 AND tablename NOT LIKE '\\_\\_diesel%'",
            )
            .load(c)
            .expect("indexes"),
        ),
    };
    (
        columns
            .into_iter()
            .map(|c| {
                format!(
                    "{}.{} {}",
                    c.table_name,
                    c.column_name,
                    if c.nullable == "YES" {
                        "NULL"
                    } else {
                        "NOT NULL"
                    }
                )
            })
            .collect(),
        indexes.into_iter().map(|i| i.index_name).collect(),
    )
}

/// Search is built differently by design: FTS5 virtual tables (and their shadow tables)
/// on SQLite, a tsvector side table on PostgreSQL. Everything else must match.
fn without_search(
    (columns, indexes): (BTreeSet<String>, BTreeSet<String>),
) -> (BTreeSet<String>, BTreeSet<String>) {
    let search = |name: &String| {
        ["message_words", "message_addresses", "message_search"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    (
        columns.into_iter().filter(|c| !search(c)).collect(),
        indexes.into_iter().filter(|i| !search(i)).collect(),
    )
}

#[actix_web::test]
async fn both_backends_end_with_the_same_tables_and_columns() -> TestResult {
    if !postgres_or_skip("both_backends_end_with_the_same_tables_and_columns") {
        return Ok(());
    }
    let sqlite_app = TestApp::spawn(Backend::Sqlite).await?;
    let pg_app = TestApp::spawn(Backend::Postgres).await?;
    let mut sqlite = DbTarget::parse(&sqlite_app.database_url)?.connect()?;
    let mut pg = DbTarget::parse(&pg_app.database_url)?.connect()?;
    // Already applied at start; applying again is a no-op.
    migrate(&mut sqlite)?;
    migrate(&mut pg)?;
    let (sqlite_columns, sqlite_indexes) = without_search(schema(&mut sqlite));
    let (pg_columns, pg_indexes) = without_search(schema(&mut pg));
    assert!(sqlite_columns.contains("users.email NOT NULL"));
    assert!(sqlite_columns.contains("users.disabled_at NULL"));
    assert!(sqlite_indexes.contains("memberships_user"));
    assert_eq!(
        sqlite_columns, pg_columns,
        "the two backends' columns differ"
    );
    assert_eq!(
        sqlite_indexes, pg_indexes,
        "the two backends' indexes differ"
    );
    Ok(())
}

#[test]
fn the_bundled_sqlite_has_fts5_trigram_and_returning() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("probe.db").display());
    let DbConn::Sqlite(mut conn) = DbTarget::parse(&url)?.connect()? else {
        return Err("a sqlite:// URL opens SQLite".into());
    };
    use diesel::connection::SimpleConnection;
    conn.batch_execute(
        "CREATE VIRTUAL TABLE words USING fts5(body); \
         CREATE VIRTUAL TABLE grams USING fts5(body, tokenize = 'trigram'); \
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
    )?;
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let row: Id =
        diesel::sql_query("INSERT INTO t (v) VALUES ('x') RETURNING id").get_result(&mut conn)?;
    assert_eq!(row.id, 1);
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode").get_result(&mut conn)?;
    assert_eq!(mode.journal_mode, "wal");
    #[derive(QueryableByName)]
    struct Flag {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        foreign_keys: i32,
    }
    let fk: Flag = diesel::sql_query("PRAGMA foreign_keys").get_result(&mut conn)?;
    assert_eq!(fk.foreign_keys, 1);
    #[derive(QueryableByName)]
    struct Sync {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }
    let sync: Sync = diesel::sql_query("PRAGMA synchronous").get_result(&mut conn)?;
    assert_eq!(sync.synchronous, 2, "FULL");
    Ok(())
}

#[actix_web::test]
async fn postgres_connections_run_without_jit() -> TestResult {
    if !postgres_or_skip("postgres_connections_run_without_jit") {
        return Ok(());
    }
    let app = TestApp::spawn(Backend::Postgres).await?;
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        jit: String,
    }
    let setting = app
        .db()
        .run(|conn| {
            let DbConn::Pg(pg) = conn else {
                return Err(mailroom::error::AppError::NotFound);
            };
            Ok(diesel::sql_query("SHOW jit").get_result::<Setting>(pg)?)
        })
        .await?;
    assert_eq!(setting.jit, "off", "a short lookup must not pay for JIT");
    Ok(())
}

/// The messages every upgrade test arranges on a database of the release before alerts had
/// their own origin: an alert (`sys`, no provider, key or user), an API message whose
/// provider was deleted, and a console message.
const BEFORE_ALERT_ORIGIN: &str = "
    INSERT INTO workspaces (id, name, slug, site_name, created_at) VALUES (1, 'Acme', 'acme', '', '2026-11-30 10:00:00');
    INSERT INTO users (id, email, name, created_at) VALUES (1, 'ed@example.com', '', '2026-11-30 10:00:00');
    INSERT INTO api_keys (id, workspace_id, name, scope, prefix, secret_hash, created_at)
        VALUES (1, 1, 'Help desk', 'send', 'mr_abc', 'x', '2026-11-30 10:00:00');
    INSERT INTO message_bodies (id, workspace_id, text_body, created_at) VALUES
        (1, 1, 'Ops SMTP refused the sign-in', '2026-11-30 10:00:00'),
        (2, 1, 'Your order shipped', '2026-11-30 10:00:00'),
        (3, 1, 'Hi Bob', '2026-11-30 10:00:00'),
        (4, 1, 'Waiting', '2026-11-30 10:00:00');
    INSERT INTO messages (id, workspace_id, origin, user_id, provider_id, api_key_id, from_address, from_name,
        recipient, cc, bcc, subject, body_id, message_id, status, attempts, max_attempts, due_at,
        possible_duplicate, result, created_at, updated_at) VALUES
        (1, 1, 'sys', NULL, NULL, NULL, 'mailroom@localhost', 'Mailroom', 'admin@example.com', '', '', 'Provider turned red',
         1, '<1@x>', 'sent', 1, 4, '2026-11-30 10:00:00', FALSE, '250 ok', '2026-11-30 10:00:00', '2026-11-30 10:00:00'),
        (2, 1, 'sys', NULL, NULL, 1, 'ops@example.com', '', 'ann@example.com', 'cc@example.com', '', 'Order',
         2, '<2@x>', 'failed', 1, 4, '2026-11-30 10:00:00', FALSE, '550 no', '2026-11-30 10:00:00', '2026-11-30 10:00:00'),
        (3, 1, 'web', 1, NULL, NULL, 'ops@example.com', '', 'bob@example.com', '', '', 'Hello',
         3, '<3@x>', 'sent', 1, 4, '2026-11-30 10:00:00', FALSE, '250 ok', '2026-11-30 11:00:00', '2026-11-30 11:00:00'),
        (4, 1, 'web', 1, NULL, NULL, 'ops@example.com', '', 'cy@example.com', '', '', 'Stuck',
         4, '<4@x>', 'queued', 1, 4, '2026-11-30 10:00:00', FALSE, '', '2026-11-30 11:00:00', '2026-11-30 11:00:00');
    INSERT INTO message_events (message_id, kind, attempt, detail, created_at)
        VALUES (1, 'sent', 1, '250 ok', '2026-11-30 10:00:00');
";

/// A database written by the previous release upgrades in place: every message and its
/// events kept, each content a send of its own, the search index and tallies right, old
/// alerts given the `alert` origin
/// (and moves their counts), and never gives out a used id again.
async fn a_database_of_the_previous_release_upgrades_in_place(backend: Backend) -> TestResult {
    use diesel::connection::SimpleConnection;
    use diesel_migrations::MigrationHarness;
    use mailroom::db::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

    let dir = tempfile::tempdir()?;
    let (url, _pg) = fresh_database(backend, dir.path());
    let mut conn = DbTarget::parse(&url)?.connect()?;
    // The schema of the release before (its ten migrations), and a log written by it.
    for _ in 0..10 {
        match &mut conn {
            DbConn::Sqlite(c) => drop(
                c.run_next_migration(SQLITE_MIGRATIONS)
                    .map_err(|e| e.to_string())?,
            ),
            DbConn::Pg(c) => drop(
                c.run_next_migration(POSTGRES_MIGRATIONS)
                    .map_err(|e| e.to_string())?,
            ),
        }
    }
    conn.batch_execute(BEFORE_ALERT_ORIGIN)?;
    // Providers of that release (no senders then): a console one and an API call's own.
    conn.batch_execute(
        "INSERT INTO providers (id, workspace_id, name, kind, host, port, tls, username,
            account_address, from_name, max_connections, receive_enabled, status, status_detail,
            created_at, updated_at, per_request) VALUES
            (1, 1, 'Ops SMTP', 'smtp', 'smtp.example.com', 587, 'starttls', '', 'ops@example.com',
             'Acme Ops', 2, FALSE, 'active', '', '2026-11-30 10:00:00', '2026-11-30 10:00:00', FALSE),
            (2, 1, 'per-request', 'smtp', 'relay.example.net', 587, 'starttls', '', 'api@example.net',
             '', 2, FALSE, 'active', '', '2026-11-30 10:00:00', '2026-11-30 10:00:00', TRUE)",
    )?;
    if let DbConn::Pg(c) = &mut conn {
        // Rows given their ids leave the sequence behind; the release's own inserts did not.
        c.batch_execute("SELECT setval('messages_id_seq', 4)")?;
    }
    if let DbConn::Sqlite(c) = &mut conn {
        // A message deleted at the top of the log: its id is used up.
        c.batch_execute(
            "INSERT INTO messages (id, workspace_id, origin, from_address, from_name, recipient, cc, bcc,
                subject, body_id, message_id, status, attempts, max_attempts, due_at, possible_duplicate,
                result, created_at, updated_at) SELECT 9, workspace_id, origin, from_address, from_name,
                recipient, cc, bcc, subject, body_id, '<9@x>', status, attempts, max_attempts, due_at,
                possible_duplicate, result, created_at, updated_at FROM messages WHERE id = 3;
             DELETE FROM messages WHERE id = 9;",
        )?;
        // That release counted new messages in code (PostgreSQL's trigger does it there).
        c.batch_execute(
            "INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
             SELECT workspace_id, date(created_at), origin, status, count(*), min(id), max(id)
             FROM messages GROUP BY 1, 2, 3, 4",
        )?;
    }
    migrate(&mut conn)?;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        origin: String,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT id, origin FROM messages ORDER BY id").load(&mut conn)?;
    let origins: Vec<(i64, &str)> = rows.iter().map(|r| (r.id, r.origin.as_str())).collect();
    assert_eq!(
        origins,
        vec![(1, "alert"), (2, "sys"), (3, "web"), (4, "web")]
    );
    // Mail of a deleted provider that was still waiting can go nowhere: cancelled.
    #[derive(QueryableByName)]
    struct Fate {
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Text)]
        result: String,
    }
    let stuck: Fate = diesel::sql_query("SELECT status, result FROM messages WHERE id = 4")
        .get_result(&mut conn)?;
    assert_eq!(
        (stuck.status.as_str(), stuck.result.as_str()),
        ("cancelled", "provider deleted")
    );

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = Text)]
        origin: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let counts: Vec<Count> = diesel::sql_query(
        "SELECT origin, CAST(SUM(n) AS BIGINT) AS n FROM message_counts GROUP BY origin ORDER BY origin",
    )
    .load(&mut conn)?;
    let counts: Vec<(&str, i64)> = counts.iter().map(|c| (c.origin.as_str(), c.n)).collect();
    assert_eq!(counts, vec![("alert", 1), ("sys", 1), ("web", 2)]);

    #[derive(QueryableByName)]
    struct Events {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let events: Events =
        diesel::sql_query("SELECT count(*) AS n FROM message_events WHERE message_id = 1")
            .get_result(&mut conn)?;
    assert_eq!(events.n, 1, "the alert's events are kept");

    // One send per content: what every message repeated now lives once on it, lists of
    // addresses one per line; each message keeps its recipient (as a To copy).
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Sent {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        subject: String,
        #[diesel(sql_type = Text)]
        from_name: String,
        #[diesel(sql_type = Text)]
        to_addresses: String,
        #[diesel(sql_type = Text)]
        recipient_kind: String,
        #[diesel(sql_type = Text)]
        channel: String,
    }
    let sent: Vec<Sent> = diesel::sql_query(
        "SELECT m.id, s.subject, s.from_name, s.to_addresses, m.recipient_kind, m.channel \
         FROM messages m JOIN sends s ON s.id = m.send_id ORDER BY m.id",
    )
    .load(&mut conn)?;
    assert_eq!(sent.len(), 4, "every message kept, each with its send");
    assert_eq!(
        (sent[0].subject.as_str(), sent[0].from_name.as_str()),
        ("Provider turned red", "Mailroom")
    );
    let heads: Vec<(&str, &str)> = sent
        .iter()
        .map(|s| (s.subject.as_str(), s.to_addresses.as_str()))
        .collect();
    assert_eq!(
        heads,
        [
            ("Provider turned red", "admin@example.com"),
            ("Order", "ann@example.com"),
            ("Hello", "bob@example.com"),
            ("Stuck", "cy@example.com")
        ]
    );
    #[derive(QueryableByName)]
    struct Copied {
        #[diesel(sql_type = Text)]
        cc: String,
    }
    let copied: Copied =
        diesel::sql_query("SELECT cc FROM sends WHERE id = 2").get_result(&mut conn)?;
    assert_eq!(copied.cc, "cc@example.com");
    // The search index reads the moved subjects and texts (SQLite rebuilt it from the log;
    // PostgreSQL's trigger filled it when the rows were written).
    let workspace = mailroom::workspaces::model::WorkspaceId(1);
    for (q, want) in [("order", vec![2]), ("hello", vec![3]), ("shipped", vec![2])] {
        let search = mailroom::messages::search::Search::parse(q)?.ok_or("a search")?;
        let found = mailroom::messages::queries::search(
            &mut conn,
            workspace,
            &mailroom::messages::queries::LogFilter::default(),
            &search,
        )?;
        let ids: Vec<i64> = found.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, want, "{q}");
    }
    assert!(
        sent.iter()
            .all(|s| s.recipient_kind == "to" && s.channel == "email")
    );

    // Each provider's account became a sender to validate (API calls' own servers not).
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Senders {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        address: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        provider_id: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
        validated_at: Option<chrono::NaiveDateTime>,
    }
    let senders: Vec<Senders> = diesel::sql_query(
        "SELECT name, address, provider_id, validated_at FROM senders ORDER BY id",
    )
    .load(&mut conn)?;
    assert_eq!(
        senders,
        vec![Senders {
            name: "Acme Ops".into(),
            address: "ops@example.com".into(),
            provider_id: Some(1),
            validated_at: None,
        }]
    );

    // The new origin is accepted; a new message gets an id never used before.
    conn.batch_execute(
        "INSERT INTO messages (workspace_id, send_id, channel, direction, recipient_kind, origin,
            from_address, recipient, message_id, status, attempts, max_attempts, due_at,
            possible_duplicate, result, created_at, updated_at) VALUES (1, 1, 'email', 'outbound',
            'to', 'alert', 'mailroom@localhost', 'admin@example.com', '<10@x>', 'queued', 0, 4,
            '2026-12-07 10:00:00', FALSE, '', '2026-12-07 10:00:00', '2026-12-07 10:00:00')",
    )?;
    let newest: Row = diesel::sql_query("SELECT id, origin FROM messages ORDER BY id DESC LIMIT 1")
        .get_result(&mut conn)?;
    if backend == Backend::Sqlite {
        assert!(newest.id > 9, "id {} reused", newest.id);
        let broken: Vec<Events> =
            diesel::sql_query("SELECT 1 AS n FROM pragma_foreign_key_check").load(&mut conn)?;
        assert!(broken.is_empty(), "foreign keys hold after the rebuild");
    }
    assert_eq!(newest.origin, "alert");
    // `bounced` is a status the log can hold, and reads back as itself.
    conn.batch_execute("UPDATE messages SET status = 'bounced' WHERE id = 2")?;
    let bounced = mailroom::messages::queries::page(
        &mut conn,
        workspace,
        &mailroom::messages::queries::LogFilter {
            status: Some(mailroom::messages::model::Status::Bounced),
            ..Default::default()
        },
        10,
    )?;
    assert_eq!(
        bounced
            .iter()
            .map(|m| (m.id.0, m.status()))
            .collect::<Vec<_>>(),
        vec![(2, mailroom::messages::model::Status::Bounced)]
    );
    Ok(())
}
crate::both!(a_database_of_the_previous_release_upgrades_in_place);
