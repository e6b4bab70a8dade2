//! Search over the log: the statements both backends share, and SQLite's FTS5 reading.

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::LogFilter;
use super::find_many;
use super::search_pg::search_pg;
use crate::db::DbConn;
use crate::db::schema::messages;
use crate::messages::model::*;
use crate::per_backend;
use crate::workspaces::model::WorkspaceId;

/// A value bound to a search statement.
#[derive(Clone)]
pub(super) enum Bind {
    Int(i64),
    Text(String),
    Time(NaiveDateTime),
}

/// A statement of raw SQL and its values, with the backend's placeholders.
pub(super) struct RawSql {
    pub(super) text: String,
    pub(super) binds: Vec<Bind>,
    pub(super) pg: bool,
}

impl RawSql {
    /// Binds a value; returns its placeholder.
    pub(super) fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        if self.pg {
            format!("${}", self.binds.len())
        } else {
            "?".to_owned()
        }
    }

    /// Appends ` AND m.{column} {op} {value}`.
    pub(super) fn and(&mut self, column: &str, op: &str, value: Bind) {
        let placeholder = self.bind(value);
        self.text
            .push_str(&format!(" AND m.{column} {op} {placeholder}"));
    }

    /// The workspace and the log filter, on `messages m` (the filter `page` applies,
    /// written for the search's raw SQL; every field named, as there).
    pub(super) fn narrow(&mut self, workspace: WorkspaceId, filter: &LogFilter) {
        let LogFilter {
            tab,
            key,
            status,
            provider,
            sender,
            since,
            until,
            before,
        } = filter;
        self.and("workspace_id", "=", Bind::Int(workspace.0));
        if let Some(tab) = tab {
            let placeholders: Vec<String> = tab
                .origins()
                .iter()
                .map(|o| self.bind(Bind::Text((*o).into())))
                .collect();
            self.text
                .push_str(&format!(" AND m.origin IN ({})", placeholders.join(", ")));
        }
        if let Some(key) = key {
            let placeholder = self.bind(Bind::Int(key.0));
            self.text.push_str(&format!(
                " AND m.send_id IN (SELECT id FROM sends WHERE api_key_id = {placeholder})"
            ));
        }
        if let Some(status) = status {
            self.and("status", "=", Bind::Text(status.as_str().into()));
        }
        if let Some(provider) = provider {
            self.and("provider_id", "=", Bind::Int(provider.0));
        }
        if let Some(sender) = sender {
            self.and("from_address", "=", Bind::Text(sender.clone()));
        }
        if let Some(since) = since {
            self.and("created_at", ">=", Bind::Time(*since));
        }
        if let Some(until) = until {
            self.and("created_at", "<", Bind::Time(*until));
        }
        if let Some(before) = before {
            self.and("id", "<", Bind::Int(before.0));
        }
    }
}

#[derive(QueryableByName)]
pub(super) struct Found {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) id: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(super) hit: bool,
}

/// A statement of `search_index`: what it reads and how it answers.
pub(super) struct IndexQuery<'a> {
    /// Names `messages m` and holds a `{name}` for each value (in the order the values
    /// come: SQLite's placeholders are positional).
    pub(super) from: String,
    /// Whether a row is a match (`TRUE`, or a test a candidate must pass).
    pub(super) hit: &'a str,
    /// The order, e.g. `m.id DESC` (an FTS5 index must be ordered by its own rowid to
    /// stop at the limit instead of sorting every match).
    pub(super) order: &'a str,
    /// At most `search::LIMIT` rows, or every one (candidates counted by the caller).
    pub(super) limited: bool,
    /// The values of the `{name}`s of `from`.
    pub(super) values: Vec<(&'a str, Bind)>,
}

/// Ids of messages `m` matching a search, each with whether it is a match or only a
/// candidate; the workspace and the filter are appended to `query.from`.
pub(super) fn search_index(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    query: IndexQuery,
) -> QueryResult<Vec<Found>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let mut sql = RawSql {
        text: String::new(),
        binds: Vec::new(),
        pg: matches!(conn, DbConn::Pg(_)),
    };
    let IndexQuery {
        from,
        hit,
        order,
        limited,
        values,
    } = query;
    let mut text = format!("SELECT m.id AS id, {hit} AS hit FROM {from}");
    for (name, value) in values {
        let placeholder = sql.bind(value);
        text = text.replace(&format!("{{{name}}}"), &placeholder);
    }
    sql.text = text;
    sql.narrow(workspace, filter);
    sql.text.push_str(&format!(" ORDER BY {order}"));
    if limited {
        sql.text
            .push_str(&format!(" LIMIT {}", crate::messages::search::LIMIT));
    }
    let RawSql { text, binds, .. } = sql;
    per_backend!(conn, |c| {
        let mut query = diesel::sql_query(text).into_boxed();
        for value in binds {
            query = match value {
                Bind::Int(v) => query.bind::<BigInt, _>(v),
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Time(v) => query.bind::<Timestamp, _>(v),
            };
        }
        query.load(c)
    })
}

/// Messages whose subject or text holds every searched word, or whose addresses hold the
/// searched fragment, narrowed by the filter: at most `search::LIMIT`, newest first. No
/// ranking of every match: each index is read newest first and stops at the limit.
pub fn search(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &crate::messages::search::Search,
) -> QueryResult<Vec<Message>> {
    let mut ids = if let DbConn::Pg(_) = conn {
        // Every step has one good plan (GIN, or a lookup per message); a sequential
        // scan or parallel workers are never it, whatever the estimates say (a
        // common word made the planner scan the whole search table in parallel).
        conn.transaction(|conn| {
            conn.batch_execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0",
            )?;
            search_pg(conn, workspace, filter, search)
        })?
    } else {
        let mut ids = Vec::new();
        // How to read FTS5 for this workspace (see migration `search_by_workspace`):
        // * a small one: its own token and the search intersected inside the index, every
        //   match read oldest first, the newest kept below. FTS5 reads a doclist backwards
        //   slowly (a common word of a 1,000-message workspace beside a 1,000,000-message
        //   one: 5–13 ms newest first for 100 rows, 0.2–0.4 ms oldest first for all 980);
        // * one under a tenth of the log: intersected too, the newest 100 read backwards
        //   (without it, the other workspaces' matches would be read and dropped);
        // * a larger one: the search alone, newest first, the others' matches dropped by
        //   the join (one in ten at most). Its own token's doclist is nearly the whole
        //   index, and reading it backwards costs more than it saves (a phrase at 1M:
        //   11.6 ms alone, 27.3 ms intersected).
        let size = workspace_size(conn, workspace)?;
        let small = size <= FORWARD_SEARCH;
        let own = if small || size.saturating_mul(10) < newest_id(conn)? {
            format!("ws : w{}w AND ", workspace.0)
        } else {
            String::new()
        };
        let (order, limited) = if small {
            ("x.rowid ASC", false)
        } else {
            ("x.rowid DESC", true)
        };
        // A part of an address is a phrase of trigrams, which FTS5 matches against the
        // whole index whatever the workspace (a fragment no address has: 10 ms at 1M
        // messages): a small workspace reads its own addresses instead (0.4 ms for 1,000).
        let fragment = match search.fts5_fragment() {
            Some(_) if small => {
                ids.extend(scan_addresses(conn, workspace, filter, search)?);
                None
            }
            other => other,
        };
        let indexes = [
            (
                search
                    .fts5()
                    .map(|q| format!("{own}{{subject body}} : ({q})")),
                "message_words",
            ),
            (
                fragment.map(|q| format!("{own}addresses : {q}")),
                "message_addresses",
            ),
        ];
        for (query, index) in indexes {
            if let Some(query) = query {
                let found = search_index(
                    conn,
                    workspace,
                    filter,
                    IndexQuery {
                        from: format!(
                            "{index} x JOIN messages m ON m.id = x.rowid WHERE {index} MATCH {{q}}"
                        ),
                        hit: "1 = 1",
                        order,
                        limited,
                        values: vec![("q", Bind::Text(query))],
                    },
                )?;
                ids.extend(found.into_iter().map(|f| f.id));
            }
        }
        ids
    };
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    ids.truncate(crate::messages::search::LIMIT as usize);
    let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
    find_many(conn, workspace, &ids)
}

#[derive(QueryableByName)]
pub(super) struct Addressed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    addresses: String,
}

/// The messages of a (small) workspace, under the filter, whose addresses hold the
/// search's fragment: at most `search::LIMIT`, newest first.
pub(super) fn scan_addresses(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &crate::messages::search::Search,
) -> QueryResult<Vec<i64>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let mut sql = RawSql {
        text: "SELECT m.id AS id, m.recipient || ' ' || s.cc || ' ' || s.bcc || ' ' || \
               s.from_address || ' ' || s.from_name AS addresses \
               FROM messages m JOIN sends s ON s.id = m.send_id WHERE 1 = 1"
            .into(),
        binds: Vec::new(),
        pg: false,
    };
    sql.narrow(workspace, filter);
    sql.text.push_str(" ORDER BY m.id DESC");
    let RawSql { text, binds, .. } = sql;
    let rows: Vec<Addressed> = per_backend!(conn, |c| {
        let mut query = diesel::sql_query(text).into_boxed();
        for value in binds {
            query = match value {
                Bind::Int(v) => query.bind::<BigInt, _>(v),
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Time(v) => query.bind::<Timestamp, _>(v),
            };
        }
        query.load(c)
    })?;
    Ok(rows
        .into_iter()
        .filter(|r| search.fragment_in(&r.addresses))
        .map(|r| r.id)
        .take(crate::messages::search::LIMIT as usize)
        .collect())
}

/// Up to how many messages a workspace's SQLite search reads every match oldest first
/// (each match a rowid: 10,000 of them take a few ms) instead of the newest 100 backwards.
pub(super) const FORWARD_SEARCH: i64 = 10_000;

/// The newest message id of the whole log (about how many messages it holds).
pub(super) fn newest_id(conn: &mut DbConn) -> QueryResult<i64> {
    messages::table
        .select(diesel::dsl::max(messages::id))
        .first::<Option<MessageId>>(conn)
        .map(|id| id.map_or(0, |id| id.0))
}

/// A workspace's messages, from the tallies.
pub(super) fn workspace_size(conn: &mut DbConn, workspace: WorkspaceId) -> QueryResult<i64> {
    use crate::db::schema::message_counts as t;
    t::table
        .filter(t::workspace_id.eq(workspace))
        .select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        >("CAST(SUM(n) AS BIGINT)"))
        .first::<Option<i64>>(conn)
        .map(Option::unwrap_or_default)
}
