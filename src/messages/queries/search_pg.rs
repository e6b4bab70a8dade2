//! PostgreSQL's search: the newest messages checked one by one, then older days through
//! GIN, a group at a time.

use diesel::prelude::*;

use crate::db::DbConn;
use crate::workspaces::model::WorkspaceId;

use super::LogFilter;
use super::search::*;
use super::tallies::summed;
use crate::db::schema::messages;

/// How many of a workspace's newest messages PostgreSQL checks one by one before it turns
/// to the indexes (a word in one message of 10 finds its 100 there).
pub const WINDOW: i64 = 1_000;

/// How many matches a group of days is chosen to hold, at the rate seen so far.
const GROUP_MATCHES: f64 = 300.0;

/// How many candidates the first group of days is chosen to hold (doubling with each
/// group): rows GIN finds that are read to be checked (a phrase's word order), a few µs
/// each.
const GROUP_CANDIDATES: f64 = 4_000.0;

/// Up to how many matches expected in all the older days are read in one query.
const EVERYTHING_MATCHES: f64 = 2_000.0;

/// Up to how many candidates expected in all the older days are read in one query (a
/// rare phrase of common words: its rows all read in one pass, ~3 µs each, rather than
/// group after group).
const EVERYTHING_CANDIDATES: f64 = 20_000.0;

/// Matches seen before their rate is trusted over the planner's estimate.
const TRUSTED_HITS: f64 = 20.0;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct TableRows {
    #[diesel(sql_type = diesel::sql_types::Double)]
    rows: f64,
}

/// The rows a line of `EXPLAIN` expects (`… (cost=0.00..1.00 rows=42 width=8)`).
fn plan_rows(line: &str) -> Option<f64> {
    line.split(" rows=").nth(1)?.split(' ').next()?.parse().ok()
}

/// The share of a search table's rows PostgreSQL's statistics expect to pass `test` (the
/// row count of its plan over the table's), 0 when unknown. A fraction of a
/// millisecond: planned, not run.
fn estimated_rate(
    conn: &mut DbConn,
    table: &str,
    test: &str,
    values: &[(&str, Bind)],
) -> QueryResult<f64> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let DbConn::Pg(c) = conn else {
        return Ok(0.0);
    };
    let mut text = format!("EXPLAIN SELECT 1 FROM {table} WHERE {test}");
    let mut binds = Vec::new();
    for (name, value) in values {
        if text.contains(&format!("{{{name}}}")) {
            binds.push(value.clone());
            text = text.replace(&format!("{{{name}}}"), &format!("${}", binds.len()));
        }
    }
    let mut query = diesel::sql_query(text).into_boxed();
    for value in binds {
        query = match value {
            Bind::Int(v) => query.bind::<BigInt, _>(v),
            Bind::Text(v) => query.bind::<Text, _>(v),
            Bind::Time(v) => query.bind::<Timestamp, _>(v),
        };
    }
    let plan: Vec<PlanLine> = query.load(c)?;
    let expected = plan
        .first()
        .and_then(|first| plan_rows(&first.line))
        .unwrap_or(0.0);
    let total: TableRows = diesel::sql_query(format!(
        "SELECT reltuples::float8 AS rows FROM pg_class WHERE oid = '{table}'::regclass"
    ))
    .get_result(c)?;
    // A table never analyzed has no statistics to go by (`reltuples` is -1).
    if total.rows < 1.0 {
        return Ok(0.0);
    }
    Ok((expected / total.rows).clamp(0.0, 1.0))
}

/// The search bucket of a workspace's day, as SQL's `message_bucket` computes it.
fn bucket(workspace: WorkspaceId, day: chrono::NaiveDate) -> i64 {
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    workspace.0 * 100_000 + (day - epoch).num_days()
}

/// A day of a workspace's log older than the window: its search bucket, how many messages
/// it holds and the newest id among them.
#[derive(Debug, Clone, Copy)]
struct Day {
    bucket: i64,
    messages: i64,
    last_id: i64,
}

/// The workspace's days (within the filter's dates) holding messages at or below `floor`,
/// newest first, from the tallies; the newest id of each is counted at most `floor`.
fn days_below(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    floor: i64,
) -> QueryResult<Vec<Day>> {
    use crate::db::schema::message_counts as t;
    let mut query = t::table
        .filter(t::workspace_id.eq(workspace))
        .group_by(t::day)
        .select((
            t::day,
            summed(),
            diesel::dsl::min(t::first_id),
            diesel::dsl::max(t::last_id),
        ))
        .order(t::day.desc())
        .into_boxed();
    if let Some(since) = filter.since {
        query = query.filter(t::day.ge(since.date()));
    }
    if let Some(until) = filter.until {
        query = query.filter(t::day.le(until.date()));
    }
    let rows: Vec<(chrono::NaiveDate, i64, Option<i64>, Option<i64>)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(day, messages, first, last)| {
            let (first, last_id) = (first?, last?);
            (messages > 0 && first <= floor).then(|| Day {
                bucket: bucket(workspace, day),
                messages,
                last_id: last_id.min(floor),
            })
        })
        .collect())
}

/// PostgreSQL, in steps, each with a plan that cannot go wrong (read with EXPLAIN
/// ANALYZE): first the workspace's `WINDOW` newest messages read backwards, the condition
/// checked on each (a common word or a short prefix finds 100 at once; a GIN bitmap would
/// collect every match of the log before sorting them); then, if fewer than 100 matched,
/// the older days through the GIN indexes, newest first, a group of days at a time sized
/// by the rate of matches seen so far, until 100 are found or the days run out. The
/// address condition only looks for messages newer than the 100th the words found.
pub(super) fn search_pg(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    search: &crate::messages::search::Search,
) -> QueryResult<Vec<i64>> {
    let floor: Option<i64> = messages::table
        .filter(messages::workspace_id.eq(workspace))
        .select(messages::id)
        .order(messages::id.desc())
        .offset(WINDOW)
        .first(conn)
        .optional()?;
    let words = |query: &str| format!("to_tsquery('simple'::regconfig, {query})");
    let conditions = [
        search.tsquery().map(|query| {
            let mut values = vec![("q", Bind::Text(query))];
            match search.tsquery_candidates() {
                Some(candidates) => {
                    values.push(("c", Bind::Text(candidates)));
                    Condition {
                        table: "message_search",
                        gin: format!("words @@ {}", words("{c}")),
                        // The function behind `@@`: a check on each candidate that the
                        // planner cannot hand to GIN as well.
                        check: Some(format!("ts_match_vq(words, {})", words("{q}"))),
                        values,
                        estimate: format!("words @@ {}", words("{q}")),
                    }
                }
                None => Condition {
                    table: "message_search",
                    gin: format!("words @@ {}", words("{q}")),
                    check: None,
                    values,
                    estimate: format!("words @@ {}", words("{q}")),
                },
            }
        }),
        search.like_fragment().map(|query| {
            let mut values = vec![("q", Bind::Text(query))];
            let gin = match search.like_squashed() {
                Some(squashed) => {
                    values.push(("s", Bind::Text(squashed)));
                    "squashed LIKE lower({s}) AND addresses ILIKE {q}"
                }
                None => "addresses ILIKE {q}",
            };
            Condition {
                table: "message_search_addresses",
                gin: gin.to_owned(),
                check: None,
                values,
                estimate: "addresses ILIKE {q}".to_owned(),
            }
        }),
    ];
    let days = match floor {
        Some(floor) => days_below(conn, workspace, filter, floor)?,
        None => Vec::new(),
    };
    let limit = crate::messages::search::LIMIT as usize;
    let mut ids: Vec<i64> = Vec::new();
    for condition in conditions.into_iter().flatten() {
        // Only what is newer than the 100th match so far can still be shown.
        let above = (ids.len() >= limit).then(|| ids[limit - 1]);
        ids.extend(search_days(
            conn, workspace, filter, &condition, floor, &days, above,
        )?);
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit);
    }
    Ok(ids)
}

/// What a search looks for in one of PostgreSQL's search tables (each row a message's
/// `message_id` and `bucket`).
struct Condition {
    table: &'static str,
    /// The test GIN answers: its rows are the candidates.
    gin: String,
    /// What a candidate must also pass to match (read from its row), when GIN's rows
    /// are not all matches (a phrase's word order, words being typed).
    check: Option<String>,
    /// The values `gin` and `check` name (`{q}`, …).
    values: Vec<(&'static str, Bind)>,
    /// A test of a match the planner's statistics can estimate (names the same values).
    estimate: String,
}

/// One condition of `search_pg`: the window, then the days below `floor`; only messages
/// newer than `above` when given.
fn search_days(
    conn: &mut DbConn,
    workspace: WorkspaceId,
    filter: &LogFilter,
    condition: &Condition,
    floor: Option<i64>,
    days: &[Day],
    above: Option<i64>,
) -> QueryResult<Vec<i64>> {
    let limit = crate::messages::search::LIMIT as usize;
    let Condition {
        table,
        gin,
        check,
        values,
        estimate,
    } = condition;
    let newer = above.map_or(String::new(), |above| format!(" AND m.id > {above}"));
    let window = floor.map_or(String::new(), |floor| format!(" AND m.id > {floor}"));
    // The window: the log read backwards, each message's row looked up (the `OFFSET 0`
    // keeps the subquery a lookup per message rather than a join the planner may turn
    // into a scan of the whole index). Candidates that need a check come back with
    // whether they pass it: their rate sizes the groups of days below, where each one
    // is read.
    let found = search_index(
        conn,
        workspace,
        filter,
        IndexQuery {
            from: format!(
                "messages m JOIN LATERAL (SELECT {hit} AS hit FROM {table} x \
                 WHERE x.message_id = m.id AND {gin} OFFSET 0) c ON TRUE \
                 WHERE TRUE{window}{newer}",
                hit = check.as_deref().unwrap_or("TRUE"),
            ),
            hit: "c.hit",
            order: "m.id DESC",
            limited: check.is_none(),
            values: values.clone(),
        },
    )?;
    let candidates = found.len() as f64;
    let mut found: Vec<i64> = found.into_iter().filter(|f| f.hit).map(|f| f.id).collect();
    let Some(floor) = floor else {
        return Ok(found);
    };
    // The rates of matches so far, and of candidates in the window, size the next
    // group of days; groups of candidates grow, so a rare match costs a few groups.
    // Until enough matches were seen, the planner's estimate over the whole log counts
    // too: the newest messages may be unlike the rest (a mailing of 185,000 copies of one
    // text made a common word look rare, and the whole log was read for it in one
    // query: 1.2 s, measured).
    let (mut hits, mut seen) = (found.len() as f64, WINDOW as f64);
    let prior = if found.len() >= limit {
        0.0
    } else {
        estimated_rate(conn, table, estimate, values)?
    };
    let candidate_prior = match check {
        Some(_) if found.len() < limit => estimated_rate(conn, table, gin, values)?,
        _ => prior,
    };
    let candidate_rate = ((candidates + 0.5) / WINDOW as f64).max(candidate_prior);
    let mut group_candidates = GROUP_CANDIDATES;
    let mut days = days
        .iter()
        .filter(|day| above.is_none_or(|above| day.last_id > above))
        .peekable();
    let check = check
        .as_ref()
        .map_or(String::new(), |check| format!(" AND {check}"));
    loop {
        // The query for all older days also reads the days groups read before it.
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        found.truncate(limit);
        // Done with 100 unless an older day still holds newer ids (ids and creation
        // times of concurrent writers may cross at midnight).
        let complete = found.len() >= limit;
        let Some(next) = days.peek() else { break };
        if complete && found.last().is_some_and(|oldest| next.last_id < *oldest) {
            break;
        }
        let rate = if hits >= TRUSTED_HITS {
            hits / seen
        } else {
            ((hits + 0.5) / seen).max(prior)
        };
        // Few matches and candidates expected in all the older days: one query for them
        // all, by the words alone (a rare word's posting list read once rather than once
        // per day: 91 days of a word in 0.6 % of a log, 25 ms against 2 ms, measured); a
        // date filter keeps to its days, and only newer messages than `above` are wanted
        // from the few days that hold them.
        let left: f64 = days.clone().map(|day| day.messages as f64).sum();
        let everything = rate * left <= EVERYTHING_MATCHES
            && candidate_rate * left <= EVERYTHING_CANDIDATES
            && above.is_none()
            && filter.since.is_none()
            && filter.until.is_none();
        // The candidates of these days through GIN (bucket first), checked, then their
        // messages looked up by id, the filter checked on each.
        let mut values = values.clone();
        let rows = if everything {
            days.by_ref().for_each(drop);
            format!("SELECT message_id FROM {table} WHERE {gin}{check} AND message_id <= {floor}")
        } else {
            let mut buckets = Vec::new();
            let (mut expected, mut expected_candidates) = (0.0, 0.0);
            while let Some(day) =
                days.next_if(|_| expected < GROUP_MATCHES && expected_candidates < group_candidates)
            {
                buckets.push(day.bucket.to_string());
                expected += rate * day.messages as f64;
                expected_candidates += candidate_rate * day.messages as f64;
                seen += day.messages as f64;
            }
            group_candidates *= 2.0;
            values.push(("b", Bind::Text(format!("{{{}}}", buckets.join(",")))));
            // One GIN scan per day, each keyed by its bucket: with `bucket = ANY(…)` the
            // planner may check the buckets after a scan of the whole log instead (seen
            // once statistics were taken: 746 ms for a phrase, against 9 ms).
            format!(
                "SELECT x.message_id FROM unnest(CAST({{b}} AS BIGINT[])) AS d(bucket) \
                 CROSS JOIN LATERAL (SELECT message_id FROM {table} s \
                 WHERE s.bucket = d.bucket AND {gin}{check} AND message_id <= {floor}) x"
            )
        };
        let group = search_index(
            conn,
            workspace,
            filter,
            IndexQuery {
                from: format!(
                    "messages m WHERE m.id = ANY(ARRAY({rows})) AND m.id <= {floor}{newer}"
                ),
                hit: "TRUE",
                order: "m.id DESC",
                limited: true,
                values,
            },
        )?;
        hits += group.len() as f64;
        found.extend(group.into_iter().map(|f| f.id));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::plan_rows;

    #[test]
    fn the_rows_a_plan_expects_are_read_from_its_first_line() {
        assert_eq!(
            plan_rows("Bitmap Heap Scan on message_search  (cost=12.50..345.00 rows=1234 width=8)"),
            Some(1234.0)
        );
        assert_eq!(
            plan_rows("Result  (cost=0.00..0.01 rows=1 width=4)"),
            Some(1.0)
        );
        assert_eq!(plan_rows("nothing here"), None);
    }
}
