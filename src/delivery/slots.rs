//! A provider's connection cap across nodes. On PostgreSQL every SMTP connection to a
//! provider holds one of its `max_connections` slots: a session advisory lock
//! `(provider, slot)` taken on this node's slot-keeper connection. Nodes on one database
//! therefore open at most `max_connections` connections to a provider together, and a
//! node that dies (or whose keeper session is lost) frees its slots at once, with its
//! session. On SQLite (one process) the pool's own worker count is the cap.
//!
//! The keeper's session is checked every second; once it is found lost, every slot taken
//! on it stops counting as held (`holds`), and the workers close their connections before
//! sending again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use diesel::connection::SimpleConnection;
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
    /// The keeper's session. Locked only on blocking threads, never on the engine's.
    conn: Mutex<Option<diesel::PgConnection>>,
    /// The slots this node holds on the current session. A session may take the same
    /// advisory lock twice, so the node's own workers are kept apart here. Locked briefly,
    /// never across SQL: the engine's thread reads it at every claim.
    held: Mutex<HashSet<(i32, i32)>>,
    /// Bumped whenever the session is found lost: slots of an older generation are no
    /// longer held.
    generation: AtomicU64,
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
        let keeper = db.is_postgres().then(|| {
            Arc::new(Keeper {
                db: db.clone(),
                conn: Mutex::new(None),
                held: Mutex::new(HashSet::new()),
                generation: AtomicU64::new(0),
            })
        });
        if let Some(keeper) = &keeper {
            watch(Arc::downgrade(keeper));
        }
        Self { keeper }
    }

    /// Whether slots are shared with other nodes (PostgreSQL).
    pub(super) fn shared(&self) -> bool {
        self.keeper.is_some()
    }

    /// The slots this node holds, per provider; `None` when slots are not shared (SQLite).
    pub(super) fn mine(&self) -> Option<HashMap<ProviderId, usize>> {
        let keeper = self.keeper.as_ref()?;
        let held = keeper.held.lock().expect("lock");
        let mut counts = HashMap::new();
        for (provider, _) in held.iter() {
            *counts.entry(ProviderId(i64::from(*provider))).or_insert(0) += 1;
        }
        Some(counts)
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
            if give_up() {
                return None;
            }
            let keeper = keeper.clone();
            let taken =
                tokio::task::spawn_blocking(move || keeper.try_take(provider_key(provider), max))
                    .await;
            match taken {
                Ok(Ok(Some(slot))) => return Some(slot),
                Ok(Ok(None)) => {}
                // The watcher says a lost session once; retrying says nothing more.
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot take a connection slot"),
                Err(e) => tracing::debug!(error = %e, "the slot keeper failed"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `slot` is still held (its keeper session was not lost since).
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
    /// The session is gone, and every slot taken on it with it.
    fn lost(&self, conn: &mut Option<diesel::PgConnection>) {
        *conn = None;
        self.held.lock().expect("lock").clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn try_take(&self, provider: i32, max: i32) -> Result<Option<Slot>, String> {
        let mut conn = self.conn.lock().expect("lock");
        if conn.is_none() {
            let DbConn::Pg(opened) = self.db.connect_dedicated()? else {
                return Err("the slot keeper needs PostgreSQL".into());
            };
            *conn = Some(opened);
        }
        let generation = self.generation.load(Ordering::Acquire);
        for slot in 0..max.max(1) {
            if self.held.lock().expect("lock").contains(&(provider, slot)) {
                continue;
            }
            let session = conn.as_mut().ok_or("no keeper session")?;
            let got: Result<Got, _> =
                diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS got")
                    .bind::<diesel::sql_types::Integer, _>(provider)
                    .bind::<diesel::sql_types::Integer, _>(slot)
                    .get_result(session);
            match got {
                Ok(Got { got: true }) => {
                    self.held.lock().expect("lock").insert((provider, slot));
                    return Ok(Some(Slot {
                        key: (provider, slot),
                        generation,
                    }));
                }
                Ok(Got { got: false }) => {}
                Err(e) => {
                    self.lost(&mut conn);
                    return Err(e.to_string());
                }
            }
        }
        Ok(None)
    }

    fn give_back(&self, slot: Slot) {
        let mut conn = self.conn.lock().expect("lock");
        if self.generation.load(Ordering::Acquire) != slot.generation {
            return;
        }
        self.held.lock().expect("lock").remove(&slot.key);
        let (provider, number) = slot.key;
        if let Some(session) = conn.as_mut()
            && diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
                .bind::<diesel::sql_types::Integer, _>(provider)
                .bind::<diesel::sql_types::Integer, _>(number)
                .execute(session)
                .is_err()
        {
            self.lost(&mut conn);
        }
    }

    /// Checks the session (`SELECT 1`); a lost one frees this node's claim to its slots.
    fn check(&self) {
        let mut conn = self.conn.lock().expect("lock");
        if let Some(session) = conn.as_mut()
            && let Err(e) = session.batch_execute("SELECT 1")
        {
            tracing::warn!(error = %e, "the connection-slot session was lost; its connections close");
            self.lost(&mut conn);
        }
    }
}

/// Checks the keeper's session every second, for as long as the keeper lives.
fn watch(keeper: Weak<Keeper>) {
    let spawned = std::thread::Builder::new()
        .name("slot-keeper".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(keeper) = keeper.upgrade() else {
                    return;
                };
                keeper.check();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the connection-slot session");
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
