//! Database access: one [`DbConn`] over SQLite and PostgreSQL, our own r2d2 manager that
//! picks the backend from the URL scheme, embedded migrations, and [`Db::run`], the one
//! way request handlers reach the database (through `web::block`, never on the reactor).

pub mod fault;
pub mod schema;

use std::path::PathBuf;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::AppError;
use fault::Fault;

/// Migrations for the embedded SQLite default.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// Migrations for PostgreSQL (multi-node); same directory names as the SQLite ones.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// One connection to either backend. Code written against the common subset of diesel's
/// DSL takes `&mut DbConn`; anything backend-specific goes through [`per_backend!`].
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    /// PostgreSQL, for multi-node deployments.
    Pg(PgConnection),
    /// SQLite, the embedded default.
    Sqlite(SqliteConnection),
}

/// Runs one body once per concrete connection type, for what the common subset of both
/// backends cannot express (batch inserts, upserts, `FOR UPDATE SKIP LOCKED`, raw SQL).
/// Use it only inside a slice's `queries.rs`.
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Pg($c) => $body,
            $crate::db::DbConn::Sqlite($c) => $body,
        }
    };
}

/// Which database a URL names; the backend is chosen from the scheme, never by trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// `postgres://…` or `postgresql://…`: the URL as given.
    Postgres(String),
    /// `sqlite://path`: the file path.
    Sqlite(PathBuf),
}

impl DbTarget {
    /// Parses a database URL. Only the `sqlite://` and `postgres(ql)://` schemes are known.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "a sqlite:// URL needs a file path, e.g. sqlite://./data/mailroom.db".into(),
                );
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err("the URL must start with sqlite:// or postgres://".into())
        }
    }

    /// The URL with any password replaced by `***`, safe for logs and error messages.
    pub fn masked(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => mask_password(url),
        }
    }

    /// Opens one connection, applying the per-connection settings of the backend.
    pub fn connect(&self) -> Result<DbConn, String> {
        match self {
            Self::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
                }
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(|e| e.to_string())?;
                // WAL for concurrent readers; synchronous=FULL because the queue must not
                // lose a committed row (https://www.sqlite.org/pragma.html#pragma_synchronous).
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .map_err(|e| e.to_string())?;
                Ok(DbConn::Sqlite(conn))
            }
            Self::Postgres(url) => {
                let mut conn = PgConnection::establish(url)
                    .map_err(|e| e.to_string().trim().replace('\n', " "))?;
                // No JIT compilation: our statements are short lookups whose estimated
                // cost can still cross `jit_above_cost`, and compiling one then costs
                // more than running it.
                conn.batch_execute("SET jit = off")
                    .map_err(|e| e.to_string())?;
                Ok(DbConn::Pg(conn))
            }
        }
    }
}

fn mask_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Applies pending migrations of the connection's backend. On PostgreSQL an advisory lock
/// keeps two nodes starting at once from racing each other.
pub fn migrate(conn: &mut DbConn) -> anyhow::Result<()> {
    let applied = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        DbConn::Pg(c) => {
            c.batch_execute("SELECT pg_advisory_lock(7310)")?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            c.batch_execute("SELECT pg_advisory_unlock(7310)")?;
            result
        }
    }
    .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(())
}

/// r2d2 manager that opens connections of the backend named by the URL.
#[derive(Debug, Clone)]
pub struct DbManager {
    target: DbTarget,
}

impl DbManager {
    /// A manager for this target.
    pub fn new(target: DbTarget) -> Self {
        Self { target }
    }
}

/// A connection failure reported to r2d2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl r2d2::ManageConnection for DbManager {
    type Connection = DbConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConn, ConnectError> {
        self.target.connect().map_err(ConnectError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectError> {
        conn.batch_execute("SELECT 1")
            .map_err(|e| ConnectError(e.to_string()))
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        // diesel marks a connection whose server went away (ClosedConnection) as broken.
        <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
    }
}

/// The connection pool.
pub type DbPool = r2d2::Pool<DbManager>;

/// Shared handle to the pool; every handler reaches the database through [`Db::run`].
#[derive(Clone)]
pub struct Db {
    pool: DbPool,
    target: DbTarget,
    faults: std::sync::Arc<fault::Faults>,
}

impl Db {
    /// Opens the database named by `url`: connects once (so a bad URL fails fast with a
    /// clear reason), applies migrations, then builds the pool.
    pub fn open(url: &str, pool_size: u32) -> Result<Self, StartupDbError> {
        let target = DbTarget::parse(url).map_err(|why| StartupDbError {
            url: url.to_owned(),
            why,
        })?;
        let mut first = target.connect().map_err(|why| StartupDbError {
            url: target.masked(),
            why,
        })?;
        migrate(&mut first).map_err(|e| StartupDbError {
            url: target.masked(),
            why: format!("{e:#}"),
        })?;
        Self::pool(target, pool_size)
    }

    /// Another pool of `pool_size` connections to the same database, for work that must
    /// not wait behind the console's requests for a connection (the delivery engine).
    pub fn another(&self, pool_size: u32) -> Result<Self, StartupDbError> {
        let mut another = Self::pool(self.target.clone(), pool_size)?;
        another.faults = self.faults.clone();
        Ok(another)
    }

    /// Whether this is a PostgreSQL database (several nodes may share it).
    pub fn is_postgres(&self) -> bool {
        matches!(self.target, DbTarget::Postgres(_))
    }

    /// A connection of its own, outside the pool, for a session that must outlive any
    /// request (the delivery engine's slot keeper).
    pub fn connect_dedicated(&self) -> Result<DbConn, String> {
        match &self.target {
            // A server that does not answer must not hold the caller for minutes.
            DbTarget::Postgres(url) if !url.contains("connect_timeout") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                DbTarget::Postgres(format!("{url}{sep}connect_timeout=5")).connect()
            }
            target => target.connect(),
        }
    }

    /// This database's faults: incidents, refusals, the health probe.
    pub fn faults(&self) -> &fault::Faults {
        &self.faults
    }

    /// For background work that retries by itself: a database fault is logged once per
    /// incident, anything else as a warning each time.
    pub fn warn_unless_fault(&self, error: &AppError, what: &str) {
        match error {
            AppError::Unavailable(fault) => {
                self.faults.met_in_background(*fault, what);
            }
            other => tracing::warn!(error = %other, "{what}"),
        }
    }

    fn pool(target: DbTarget, pool_size: u32) -> Result<Self, StartupDbError> {
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            // Not pinged at every checkout (a round trip per use: a fifth of the API's
            // throughput on PostgreSQL, measured); a connection the server dropped fails
            // once, diesel marks it broken, and the pool replaces it (tested).
            .test_on_check_out(false)
            // A request waits this long for a connection before it is answered 503 (a server
            // that is down is retried for this long too).
            .connection_timeout(std::time::Duration::from_secs(5))
            .build(DbManager::new(target.clone()))
            .map_err(|e| StartupDbError {
                url: target.masked(),
                why: e.to_string(),
            })?;
        Ok(Self {
            pool,
            target,
            faults: Default::default(),
        })
    }

    /// Runs `f` with a pooled connection on actix's blocking thread pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let result = blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| AppError::Unavailable(Fault::of_pool(&e)))?;
            f(&mut conn)
        })
        .await;
        if let Err(AppError::Unavailable(fault)) = &result {
            fault::note(*fault);
        }
        result
    }

    /// Runs `f` inside a write transaction (see [`write`]).
    pub async fn write<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(move |conn| write(conn, f)).await
    }

    /// A connection for code that is already off the reactor (CLI, background jobs).
    pub fn get(&self) -> Result<r2d2::PooledConnection<DbManager>, AppError> {
        self.pool
            .get()
            .map_err(|e| AppError::Unavailable(Fault::of_pool(&e)))
    }
}

/// The database could not be opened at start: which URL (password masked) and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot open database {url}: {why}")]
pub struct StartupDbError {
    /// The masked URL.
    pub url: String,
    /// The reason, in one line.
    pub why: String,
}

/// Runs blocking work (diesel, argon2) on actix's blocking pool: the one helper for it.
pub async fn blocking<T, F>(f: F) -> Result<T, AppError>
where
    F: FnOnce() -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    actix_web::web::block(f)
        .await
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("blocking task failed: {e}")))?
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite, so the write lock is
/// taken up front and a concurrent writer waits on `busy_timeout` instead of failing
/// at the upgrade from reader to writer; a plain transaction on PostgreSQL.
pub fn write<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConn::Pg(_) => <DbConn as Connection>::TransactionManager::begin_transaction(conn)?,
    }
    match f(conn) {
        Ok(value) => {
            <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            // The original error matters more than a failed rollback, which leaves the
            // connection marked broken so the pool discards it.
            let _ = <DbConn as Connection>::TransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Runs `f` with SQLite's statement journals in memory, for writes whose statements are
/// bounded (the ingest writer's: at most `INSERT_CHUNK` rows each). A multi-row INSERT
/// inside a transaction keeps a statement journal; in a temporary file (past 64 KiB) it
/// cost a write per page, a tenth of the ingest writer (measured). Only here: a huge
/// statement elsewhere (a provider's deletion nulling a large history) keeps spilling to
/// a file instead of holding its journal in memory. Set outside any transaction (SQLite
/// refuses it inside one); PostgreSQL has nothing to set.
pub fn with_journals_in_memory<T>(conn: &mut DbConn, f: impl FnOnce(&mut DbConn) -> T) -> T {
    let DbConn::Sqlite(c) = conn else {
        return f(conn);
    };
    // A refusal only costs speed.
    let _ = c.batch_execute("PRAGMA temp_store = MEMORY");
    let result = f(conn);
    if let DbConn::Sqlite(c) = conn {
        let _ = c.batch_execute("PRAGMA temp_store = DEFAULT");
    }
    result
}

/// Now, as the naive UTC timestamp every table stores.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use super::DbConn;

    #[derive(QueryableByName)]
    struct TempStore {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        temp_store: i32,
    }

    fn temp_store(conn: &mut DbConn) -> i32 {
        let DbConn::Sqlite(c) = conn else {
            unreachable!("an SQLite connection");
        };
        diesel::sql_query("PRAGMA temp_store")
            .get_result::<TempStore>(c)
            .expect("temp_store")
            .temp_store
    }

    /// Memory (2) inside, the default (0: a file past the spill size) again after.
    #[test]
    fn statement_journals_are_in_memory_only_inside_the_writers_work() {
        let mut conn = DbConn::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("in-memory SQLite"),
        );
        assert_eq!(temp_store(&mut conn), 0);
        let inside = super::with_journals_in_memory(&mut conn, temp_store);
        assert_eq!(inside, 2);
        assert_eq!(temp_store(&mut conn), 0);
    }
}
