//! Counts from the tallies (messages per workspace, day, origin and status).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::messages::model::*;
use crate::workspaces::model::WorkspaceId;

/// `SUM(n)` of the counts as a BIGINT on both backends (PostgreSQL's SUM of a bigint is a
/// numeric).
pub(super) fn summed() -> diesel::expression::SqlLiteral<diesel::sql_types::BigInt> {
    diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(SUM(n) AS BIGINT)")
}

/// Messages per origin (`web`, `sys`), from the tallies, narrowed by status and by days
/// (`since` included, `until` excluded).
pub fn tab_counts(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    status: Option<Status>,
    since: Option<chrono::NaiveDate>,
    until: Option<chrono::NaiveDate>,
) -> QueryResult<Vec<(String, i64)>> {
    use crate::db::schema::message_counts as t;
    let mut query = t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::origin)
        .select((t::origin, summed()))
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(t::status.eq(status.as_str()));
    }
    if let Some(since) = since {
        query = query.filter(t::day.ge(since));
    }
    if let Some(until) = until {
        query = query.filter(t::day.lt(until));
    }
    query.load(conn)
}

/// Messages per creation day and status since a day (the overview's chart and totals).
pub fn daily_counts(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    since: chrono::NaiveDate,
) -> QueryResult<Vec<(chrono::NaiveDate, String, i64)>> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .filter(t::day.ge(since))
        .group_by((t::day, t::status))
        .select((t::day, t::status, summed()))
        .load(conn)
}

/// Messages per status over all days (the queue's depth).
pub fn status_counts(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<Vec<(String, i64)>> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::status)
        .select((t::status, summed()))
        .load(conn)
}

/// Folds the tallies' pending changes into them (PostgreSQL; nothing to do on SQLite).
pub fn fold_tallies(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT message_tallies_fold()").execute(c)?;
    }
    Ok(())
}

/// Vacuums the tallies and their pending changes (PostgreSQL; outside any transaction).
/// Every fold deletes what it folded and rewrites counter rows: without a vacuum the dead
/// rows pile up and every count reads them (measured with autovacuum off: the pending
/// changes grew to 780 pages in minutes, read by every history page). Both tables are
/// small, so this is cheap whatever autovacuum does.
pub fn vacuum_tallies(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Pg(c) = conn {
        c.batch_execute("VACUUM message_tally_deltas, message_tallies")?;
    }
    Ok(())
}
