//! A provider's connection cap across nodes. On PostgreSQL every SMTP connection to a
//! provider holds one of its `max_connections` slots: a session advisory lock
//! `(provider, slot)` taken on this node's slot-keeper connection. Nodes on one database
//! therefore open at most `max_connections` connections to a provider together, and a
//! node that dies (or whose keeper connection drops) frees its slots at once, with its
//! session. On SQLite (one process) the pool's own worker count is the cap.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::prelude::*;

use crate::db::{Db, DbConn};
use crate::providers::model::ProviderId;

/// The slots of this node.
#[derive(Clone)]
pub(super) struct Slots {
    keeper: Option<Arc<Keeper>>,
}

/// A slot held by one worker of this node.
#[derive(Debug)]
pub(super) struct Slot {
    key: (i32, i32),
    generation: u64,
}

struct Keeper {
    db: Db,
    session: Mutex<Session>,
    /// Bumped at every new keeper connection: slots of an older one are no longer held.
    generation: AtomicU64,
}

#[derive(Default)]
struct Session {
    conn: Option<diesel::PgConnection>,
    /// The slots this node holds. A session may take the same advisory lock twice, so the
    /// node's own workers are kept apart here, not by PostgreSQL.
    held: HashSet<(i32, i32)>,
}

#[derive(QueryableByName)]
struct Got {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    got: bool,
}

/// Advisory locks take two 32-bit keys; a provider's id is the first (ids past 2^31 share
/// slots with a smaller one, which only makes both caps stricter).
fn provider_key(provider: ProviderId) -> i32 {
    (provider.0 & 0x7fff_ffff) as i32
}

impl Slots {
    /// The slots of a node on `db`: shared through PostgreSQL, none needed on SQLite.
    pub(super) fn for_db(db: &Db) -> Self {
        Self {
            keeper: db.is_postgres().then(|| {
                Arc::new(Keeper {
                    db: db.clone(),
                    session: Mutex::new(Session::default()),
                    generation: AtomicU64::new(0),
                })
            }),
        }
    }

    /// Waits for a free slot of `provider` (one of `max`), or `None` once `give_up` says
    /// so. Without a keeper (SQLite) a slot is always free.
    pub(super) async fn acquire(
        &self,
        provider: ProviderId,
        max: i32,
        give_up: impl Fn() -> bool,
    ) -> Option<Slot> {
        let Some(keeper) = &self.keeper else {
            return Some(Slot {
                key: (provider_key(provider), 0),
                generation: 0,
            });
        };
        loop {
            let keeper = keeper.clone();
            let taken =
                tokio::task::spawn_blocking(move || keeper.try_take(provider_key(provider), max))
                    .await;
            match taken {
                Ok(Ok(Some(slot))) => return Some(slot),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot take a connection slot"),
                Err(e) => tracing::warn!(error = %e, "the slot keeper failed"),
            }
            if give_up() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The slots this node holds, per provider; `None` when slots are not shared (SQLite).
    pub(super) fn mine(&self) -> Option<HashMap<ProviderId, usize>> {
        let keeper = self.keeper.as_ref()?;
        let session = keeper.session.lock().expect("lock");
        let mut counts = HashMap::new();
        for (provider, _) in &session.held {
            *counts.entry(ProviderId(i64::from(*provider))).or_insert(0) += 1;
        }
        Some(counts)
    }

    /// Whether slots are shared with other nodes (PostgreSQL).
    pub(super) fn shared(&self) -> bool {
        self.keeper.is_some()
    }

    /// Whether `slot` is still held (its keeper connection did not drop since).
    pub(super) fn holds(&self, slot: &Slot) -> bool {
        self.keeper
            .as_ref()
            .is_none_or(|k| k.generation.load(Ordering::Acquire) == slot.generation)
    }

    /// Frees `slot` for any node.
    pub(super) async fn release(&self, slot: Slot) {
        let Some(keeper) = self.keeper.clone() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || keeper.give_back(slot)).await;
    }
}

impl Keeper {
    fn try_take(&self, provider: i32, max: i32) -> Result<Option<Slot>, String> {
        let mut session = self.session.lock().expect("lock");
        if session.conn.is_none() {
            let DbConn::Pg(conn) = self.db.connect_dedicated()? else {
                return Err("the slot keeper needs PostgreSQL".into());
            };
            session.conn = Some(conn);
            session.held.clear();
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let generation = self.generation.load(Ordering::Acquire);
        for slot in 0..max.max(1) {
            if session.held.contains(&(provider, slot)) {
                continue;
            }
            let conn = session.conn.as_mut().ok_or("no keeper connection")?;
            let got: Result<Got, _> =
                diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS got")
                    .bind::<diesel::sql_types::Integer, _>(provider)
                    .bind::<diesel::sql_types::Integer, _>(slot)
                    .get_result(conn);
            match got {
                Ok(Got { got: true }) => {
                    session.held.insert((provider, slot));
                    return Ok(Some(Slot {
                        key: (provider, slot),
                        generation,
                    }));
                }
                Ok(Got { got: false }) => {}
                Err(e) => {
                    // The session is gone, and every slot it held with it.
                    session.conn = None;
                    session.held.clear();
                    return Err(e.to_string());
                }
            }
        }
        Ok(None)
    }

    fn give_back(&self, slot: Slot) {
        let mut session = self.session.lock().expect("lock");
        if self.generation.load(Ordering::Acquire) != slot.generation {
            return;
        }
        session.held.remove(&slot.key);
        let (provider, number) = slot.key;
        if let Some(conn) = session.conn.as_mut()
            && diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
                .bind::<diesel::sql_types::Integer, _>(provider)
                .bind::<diesel::sql_types::Integer, _>(number)
                .execute(conn)
                .is_err()
        {
            session.conn = None;
            session.held.clear();
        }
    }
}

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    provider: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    slots: i64,
}

/// The slots every node holds, per provider (read from `pg_locks`: two-key advisory locks
/// of this database).
pub(super) fn taken(conn: &mut DbConn) -> QueryResult<HashMap<ProviderId, usize>> {
    let DbConn::Pg(conn) = conn else {
        return Ok(HashMap::new());
    };
    let rows: Vec<Taken> = diesel::sql_query(
        "SELECT classid::bigint AS provider, count(*) AS slots FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         GROUP BY classid",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                ProviderId(r.provider),
                usize::try_from(r.slots).unwrap_or(0),
            )
        })
        .collect())
}
